using System.Collections.Concurrent;
using Xfbtree.Xfs.Check;
using Xfbtree.Xfs.Format;
using Xfbtree.Cli.Stress;
using Xfbtree.Xfs.Online;
using Xfbtree.Xfs.Scan;
using Xfbtree.Xfs.Tests.Repair;
using Xfbtree.Xfs.Trees;
using Xfbtree.Xfs.Write;
using Xfbtree.Xfs.Write.Engine;

namespace Xfbtree.Xfs.Tests.Online;

/// <summary>Helpers of the online repair tests: the offline oracle at an instant, fork placement, decisions seen by the hook.</summary>
internal static class OnlineTestSupport
{
    public static WriteEngineOptions Fast => new() { SyncCommits = false, CheckLoggedRanges = true, CheckWriteAhead = true };

    /// <summary>
    /// The offline oracle: with commits paused (everything committed is in place), copies the image (the engine's
    /// flock keeps a second reader of the same file out), resumes, then scans the copy offline and compares AG
    /// <paramref name="agno"/>'s on-disk rmapbt with the scan (records both ways, structure, AGF counters).
    /// </summary>
    public static AgCheckReport OfflineCheck(WriteEngine engine, string image, uint agno, string scratchDir)
    {
        // Both oracles: the library's read view (what --verify-repairs uses) and a copy scanned by a fresh image.
        OnlineRepairVerdict verdict = OnlineRepairOracle.Verify(engine, agno);
        Assert.True(verdict.IsClean, $"AG {agno}: read-view oracle: missing {verdict.Missing} extra {verdict.Extra} different {verdict.Different} structure {verdict.Structure}: {verdict.Detail}");
        string copy = Path.Combine(scratchDir, $"oracle-{Guid.NewGuid():N}.img");
        using (engine.PauseCommits())
        {
            ToolResult cp = RepairTools.Exec("/bin/cp", ["--sparse=always", image, copy]);
            Assert.True(cp.ExitCode == 0, $"cp: {cp}");
        }
        try
        {
            return CheckCopy(copy, agno);
        }
        finally
        {
            File.Delete(copy);
        }
    }

    public static AgCheckReport CheckCopy(string copy, uint agno)
    {
        using var xfs = XfsImage.Open(copy);
        using RmapScanResult scan = RmapScanner.Scan(xfs, new RmapScanOptions { OnlyAg = agno, Parallelism = 1 });
        return RmapChecker.CheckAg(xfs, scan.Ags[(int)agno]);
    }

    public static void AssertClean(AgCheckReport report, string when)
    {
        Assert.True(report.IsClean,
            $"{when}: AG {report.AgNumber} missing {report.Missing} extra {report.Extra} different {report.Different} structure {report.StructureTotal} scan problems {report.ScanProblemTotal}: "
            + string.Join("; ", report.Samples.Take(8).Select(s => $"{s.Kind} expected {s.Expected} on disk {s.OnDisk}"))
            + " | " + string.Join("; ", report.Structure.Take(5))
            + " | " + string.Join("; ", report.ScanProblems.Take(5).Select(p => p.ToString())));
    }

    /// <summary>The AG of the first data extent of <paramref name="ino"/> (extents format), or null when it has none.</summary>
    public static uint? FirstDataAg(WriteEngine engine, ulong ino)
    {
        IncoreInode inode = engine.GetInode(ino);
        using (engine.LockInodeForRead(inode))
        {
            var d = new Dinode(inode.Core);
            if (d.Format != ForkFormat.Extents || d.DataExtents == 0)
            {
                return null;
            }
            return engine.Geometry.FsbToAgno(BmbtExtent.Read(d.DataFork).StartBlock);
        }
    }

    /// <summary>AGF rmap root, level and block count as the engine's image shows them.</summary>
    public static (uint Root, uint Level, uint Blocks) RmapRoot(WriteEngine engine, uint agno)
    {
        Agf agf = engine.Image.ReadAgf(agno);
        return (agf.RmapRoot, agf.RmapLevel, agf.RmapBlocks);
    }

    public static byte[] Pattern(int length, int seed)
    {
        var b = new byte[length];
        new Random(seed).NextBytes(b);
        return b;
    }
}

/// <summary>The live-update decisions of a repair's hook (thread-safe).</summary>
internal sealed class DecisionLog
{
    private readonly ConcurrentQueue<(RmapUpdate Update, bool Applied)> log = new();

    public void Add(RmapUpdate update, bool applied) => log.Enqueue((update, applied));

    public IReadOnlyList<(RmapUpdate Update, bool Applied)> All => log.ToArray();

    public IEnumerable<(RmapUpdate Update, bool Applied)> ForOwner(ulong owner) => All.Where(d => d.Update.Record.Owner == owner);

    public bool AnyApplied(ulong owner) => ForOwner(owner).Any(d => d.Applied);

    public bool AnyIgnored(ulong owner) => ForOwner(owner).Any(d => !d.Applied);

    public override string ToString() => string.Join(", ", All.Take(30).Select(d => $"{d.Update.Kind} {d.Update.Record} {(d.Applied ? "applied" : "ignored")}"));
}
