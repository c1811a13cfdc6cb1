using System.Diagnostics;

namespace Xfbtree.Cli.Stress;

/// <summary>
/// Keeps repairs run back to back beside the writers to a share of one CPU (<c>stress --repair-cpu-share</c>): after
/// each repair (a rebuild and its verification, no lock held) the rotation waits so that its working time is at most
/// that share of the time passed, as <see cref="Xfbtree.Xfs.Online.OnlineLinkCountOptions.CpuShare"/> paces the link
/// count check between inode chunks. A rate limit, not a synchronization: nothing waits for it, it holds nothing.
/// Working time is wall time, so on a busy machine the rotation is paced a little more than its share.
/// </summary>
internal sealed class RepairPacer(double share)
{
    private long waitedTicks;

    /// <summary>The share of one CPU (1 = not paced).</summary>
    public double Share => share;

    /// <summary>Time spent waiting so far.</summary>
    public TimeSpan Waited => TimeSpan.FromTicks(Interlocked.Read(ref waitedTicks));

    /// <summary>A timestamp to give <see cref="After"/> when the repair is done.</summary>
    public static long Start() => Stopwatch.GetTimestamp();

    /// <summary>The repair begun at <paramref name="started"/> is done: wait its time x (1 - share) / share.</summary>
    public void After(long started)
    {
        if (share >= 1)
        {
            return;
        }
        TimeSpan worked = Stopwatch.GetElapsedTime(started);
        var wait = TimeSpan.FromTicks((long)(worked.Ticks * (1 - share) / share));
        long before = Stopwatch.GetTimestamp();
        Thread.Sleep(wait); // the pace itself (a rate limit), not a wait for another thread
        Interlocked.Add(ref waitedTicks, Stopwatch.GetElapsedTime(before).Ticks);
    }
}
