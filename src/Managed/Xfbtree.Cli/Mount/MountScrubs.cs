using System.Globalization;
using Xfbtree.Fuse;
using Xfbtree.Xfs.Online;
using Xfbtree.Xfs.Scrub;
using Xfbtree.Xfs.Write;

namespace Xfbtree.Cli.Mount;

/// <summary>
/// The mount's side of <c>xfbtree scrub DIR</c>: each control request checks one AG (or the filesystem-wide
/// structures) online with <see cref="OnlineScrubber"/> while the other workers keep serving requests, or repairs;
/// one at a time with every other repair of the mount (<see cref="MountRepairs.Exclusive{T}"/>). The reply's text is
/// the findings (<see cref="ScrubWire"/>).
/// </summary>
[System.Runtime.Versioning.SupportedOSPlatform("linux")]
internal sealed class MountScrubs(MountRepairs repairs, Action<string> log)
{
    public MountControlHeader CheckAg(uint agno, double cpuShare, int room, out string text)
    {
        var reply = new MountControlHeader { Ag = agno, AgCount = repairs.AgCount };
        IReadOnlyList<ScrubFinding>? findings = Guard(ref reply, () => OnlineScrubber.CheckAg(repairs.Engine, agno, new ScrubOptions { CpuShare = cpuShare }, repairs.Stopping), out string? failure);
        text = findings is null ? failure! : ScrubWire.Findings(findings, [], 0, room);
        return reply;
    }

    public MountControlHeader CheckFilesystem(double cpuShare, int room, out string text)
    {
        var reply = new MountControlHeader { AgCount = repairs.AgCount };
        var found = Guard(ref reply, () =>
        {
            ScrubFinding primary = OnlineScrubber.CheckPrimarySuperblock(repairs.Engine);
            ScrubFinding counters = OnlineScrubber.CheckSummaryCounters(repairs.Engine);
            var (bmap, directories) = OnlineScrubber.CheckBlockMaps(repairs.Engine, new ScrubOptions { CpuShare = cpuShare }, repairs.Stopping);
            var (links, mismatches, total) = OnlineScrubber.CheckLinkCounts(repairs.Engine, new ScrubOptions { CpuShare = cpuShare }, repairs.Stopping);
            return (Findings: new[] { primary, counters, bmap, directories, links }, Mismatches: mismatches, Total: total);
        }, out string? failure);
        text = failure ?? ScrubWire.Findings(found.Findings, found.Mismatches, found.Total, room);
        return reply;
    }

    /// <summary>Checks (one AG, or everything) and repairs what is damaged, with an online re-check between rounds.</summary>
    public MountControlHeader Repair(uint? agno, uint asker, double cpuShare, int room, out string text)
    {
        var reply = new MountControlHeader { Ag = agno ?? MountControl.AllAgs, AgCount = repairs.AgCount };
        var options = new ScrubOptions { OnlyAg = agno, CpuShare = cpuShare };
        IReadOnlyList<ScrubRepairOutcome>? outcomes = Guard(ref reply, () =>
        {
            ScrubReport found = OnlineScrubber.Run(repairs.Engine, options, null, repairs.Stopping);
            return found.IsDamaged ? OnlineScrubber.Repair(repairs.Engine, found, options, repairs.Stopping) : [];
        }, out string? failure);
        // A repair changes inodes and names the kernel may cache (a failure may come after some repairs committed).
        if (outcomes is not { Count: 0 }) repairs.KernelCachesStale?.Invoke();
        if (outcomes is null)
        {
            text = failure!;
            return reply;
        }
        foreach (ScrubRepairOutcome o in outcomes)
        {
            log(string.Create(CultureInfo.InvariantCulture, $"xfbtree: mount: scrub repair (asked by uid {asker}): {o}"));
        }
        text = ScrubWire.Outcomes(outcomes, room);
        return reply;
    }

    /// <summary>Runs a check or repair alone among the mount's repairs; a failure becomes the reply's errno and text.</summary>
    T? Guard<T>(ref MountControlHeader reply, Func<T> body, out string? failure)
    {
        failure = null;
        try
        {
            return repairs.Exclusive(body);
        }
        catch (OperationCanceledException)
        {
            failure = "cancelled: the mount is ending";
            reply.Error = FuseErrno.EINTR;
        }
        catch (Exception e) when (e is OnlineRepairException or XfsWriteException or IOException)
        {
            failure = e.Message.ReplaceLineEndings(" ");
            reply.Error = e is XfsWriteException w ? w.Errno : FuseErrno.EIO;
            log($"xfbtree: mount: scrub: {failure}");
        }
        return default;
    }
}
