using System.Diagnostics;
using Xfbtree.Xfs.Online;

namespace Xfbtree.Cli.Stress;

/// <summary>
/// Keeps repairs run back to back beside the writers to a share of one CPU (<c>stress --repair-cpu-share</c>): after
/// each repair (a rebuild and its verification, no lock held) the rotation rests as <see cref="CpuSharePacer"/> says,
/// as the link count check does between inode chunks.
/// </summary>
internal sealed class RepairPacer(double share)
{
    private readonly CpuSharePacer pacer = new(share);

    /// <summary>The share of one CPU (1 = not paced).</summary>
    public double Share => pacer.Share;

    /// <summary>Time spent waiting so far.</summary>
    public TimeSpan Waited => pacer.Waited;

    /// <summary>A timestamp to give <see cref="After"/> when the repair is done.</summary>
    public static long Start() => Stopwatch.GetTimestamp();

    /// <summary>The repair begun at <paramref name="started"/> is done: rest its time x (1 - share) / share.</summary>
    public void After(long started) => pacer.Rest(Stopwatch.GetElapsedTime(started));
}
