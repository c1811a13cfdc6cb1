using System.Diagnostics;

namespace Xfbtree.Xfs.Online;

/// <summary>
/// Keeps work run back to back beside the writers to a share of one CPU, as xfs_scrub's service runs at idle
/// priority: after a stretch of work (no lock held) it rests that stretch's time x (1 - share) / share. A rate limit,
/// not a synchronization: nothing waits for it and it holds nothing. Working time is wall time, so on a busy machine
/// the work is paced a little more than its share. Used by the online scans between inode chunks (<see cref="ScanPacer"/>) and by
/// `stress --repair-cpu-share` between repairs.
/// </summary>
internal sealed class CpuSharePacer(double share)
{
    /// <summary><paramref name="value"/> when it is a share of one CPU, more than 0 and at most 1; otherwise
    /// throws. The options that carry a share call it in their setters, so a bad share is refused where it is
    /// given, before any work.</summary>
    public static double Checked(double value, string name) => value is > 0 and <= 1
        ? value
        : throw new ArgumentOutOfRangeException(name, value, "a CPU share must be more than 0 and at most 1");

    private readonly double share = Checked(share, nameof(share));
    private long waitedTicks;

    /// <summary>The share of one CPU (1 = not paced).</summary>
    public double Share => share;

    /// <summary>Time spent resting so far.</summary>
    public TimeSpan Waited => TimeSpan.FromTicks(Interlocked.Read(ref waitedTicks));

    /// <summary>Rests after <paramref name="worked"/> of work (nothing when not paced); a cancellation ends the rest
    /// and throws.</summary>
    public void Rest(TimeSpan worked, CancellationToken cancel = default)
    {
        if (share >= 1)
        {
            return;
        }
        var rest = TimeSpan.FromTicks((long)(worked.Ticks * (1 - share) / share));
        long before = Stopwatch.GetTimestamp();
        cancel.WaitHandle.WaitOne(rest); // the pace itself, not a wait for another thread
        Interlocked.Add(ref waitedTicks, Stopwatch.GetElapsedTime(before).Ticks);
        cancel.ThrowIfCancellationRequested();
    }
}

/// <summary>
/// Keeps a scan to a share of one CPU between its batches (the link count scans, the online rmap scan): the working
/// time between batches is added up, and once it reaches a slice the scan rests slice x (1 - share) / share through
/// <see cref="CpuSharePacer"/>. Called with no lock held; cancellation ends the rest.
/// </summary>
internal sealed class ScanPacer(double share, Action? beforeRest = null)
{
    private static readonly long Slice = Stopwatch.Frequency / 500; // 2 ms: longer than a timer's slack
    private readonly CpuSharePacer pacer = new(share);
    private long since = Stopwatch.GetTimestamp();
    private long worked;

    /// <summary>Time spent resting so far.</summary>
    public TimeSpan Waited => pacer.Waited;

    /// <summary>After a batch (an inode chunk): the work since the last rest is paced once it reaches a slice.</summary>
    public void AfterBatch(CancellationToken cancel)
    {
        if (pacer.Share >= 1)
        {
            return;
        }
        long now = Stopwatch.GetTimestamp();
        worked += now - since;
        if (worked >= Slice)
        {
            beforeRest?.Invoke();
            pacer.Rest(TimeSpan.FromSeconds((double)worked / Stopwatch.Frequency), cancel);
            worked = 0;
            now = Stopwatch.GetTimestamp();
        }
        since = now;
    }
}
