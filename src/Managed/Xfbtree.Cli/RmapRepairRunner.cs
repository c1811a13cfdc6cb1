using System.Diagnostics;
using Xfbtree.Btree;
using Xfbtree.Buffers;
using Xfbtree.Xfs;
using Xfbtree.Xfs.Check;
using Xfbtree.Xfs.Format;
using Xfbtree.Xfs.Repair;
using Xfbtree.Xfs.Scan;
using Xfbtree.Xfs.Trees;

namespace Xfbtree.Cli;

/// <summary>Options of an offline rmapbt repair.</summary>
internal sealed record RmapRepairOptions
{
    /// <summary>Repair only this AG (others are still scanned: their inodes may own blocks in it).</summary>
    public uint? OnlyAg { get; init; }
    /// <summary>Report what would change; write nothing.</summary>
    public bool DryRun { get; init; }
    /// <summary>Progress lines (per phase and AG); null = quiet.</summary>
    public Action<string>? Progress { get; init; }
    /// <summary>Tests: called with the image's disk target when it is opened for writing (crash models).</summary>
    internal Action<DiskBufferTarget>? ConfigureWritableTarget { get; init; }
}

/// <summary>
/// `xfbtree rmap repair`: scan every inode and AG into in-memory rmap btrees, check each AG's on-disk rmapbt
/// against them, and rebuild the damaged ones in place (reusing the old tree's blocks, surplus to the AGFL) under
/// the NEEDSREPAIR protocol. Exit codes: 0 = the AG(s) are consistent afterwards (or were already),
/// 1 = something is damaged and was not (or, with -n, would be) repaired, 2 = could not run.
/// </summary>
internal static class RmapRepairRunner
{
    public const int ExitClean = 0, ExitDamaged = 1, ExitUnusable = 2;

    /// <summary>Runs the repair; <paramref name="stdout"/> gets the report, <paramref name="stderr"/> one-line errors.</summary>
    public static int Run(string path, RmapRepairOptions options, TextWriter stdout, TextWriter stderr)
    {
        ArgumentNullException.ThrowIfNull(path);
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(stdout);
        ArgumentNullException.ThrowIfNull(stderr);
        var watch = Stopwatch.StartNew();
        RmapRepairPreconditions.BeforeOpen(path, willWrite: !options.DryRun);
        // One writer per image: held until the repair has committed (or failed), released with the descriptor.
        using Xfbtree.Native.ImageFileLock? writerLock = options.DryRun ? null : RmapRepairPreconditions.LockForWriting(path);
        using var image = XfsImage.Open(path, new XfsImageOptions { Writable = !options.DryRun, ConfigureWritableTarget = options.ConfigureWritableTarget });
        if (options.OnlyAg is { } only && only >= image.Geometry.AgCount)
        {
            throw new XfsFormatException($"AG {only} does not exist (the filesystem has {N(image.Geometry.AgCount, "AG")})");
        }
        RmapRepairPreconditions.AfterOpen(image);

        options.Progress?.Invoke("scanning inodes and AG metadata");
        using RmapScanResult scan = RmapScanner.Scan(image, new RmapScanOptions { Progress = options.Progress });
        string? untrusted = UntrustedScan(scan);

        var damaged = new List<AgScanResult>();
        foreach (AgScanResult ag in scan.Ags)
        {
            if (options.OnlyAg is { } o && ag.AgNumber != o)
            {
                continue;
            }
            options.Progress?.Invoke($"AG {ag.AgNumber}: checking the rmapbt");
            AgCheckReport report = RmapChecker.CheckAg(image, ag);
            if (report.IsClean)
            {
                stdout.WriteLine($"AG {ag.AgNumber}: rmapbt consistent ({N(report.OnDiskRecords, "record")})");
                continue;
            }
            stdout.WriteLine($"AG {ag.AgNumber}: rmapbt damaged: {Describe(report)}");
            damaged.Add(ag);
        }
        if (damaged.Count == 0)
        {
            stdout.WriteLine($"nothing to repair ({watch.Elapsed.TotalSeconds:F1} s)");
            return ExitClean;
        }
        if (untrusted is not null)
        {
            stdout.WriteLine($"cannot rebuild: the scan could not read everything it needs ({untrusted}); run xfs_repair");
            return ExitDamaged;
        }

        var rebuilds = new List<AgRmapbtRebuild>();
        bool failed = false;
        foreach (AgScanResult ag in damaged)
        {
            try
            {
                AgRmapbtRebuild rebuild = AgRmapbtRebuild.Prepare(image, ag.AgNumber, ag.Expected!.Tree.Tree);
                rebuilds.Add(rebuild);
                RmapbtRebuildPlan p = rebuild.Plan;
                stdout.WriteLine($"AG {ag.AgNumber}: {(options.DryRun ? "would rebuild" : "rebuilding")} the rmapbt: {N(p.RecordCount, "record")} in " +
                    $"{N(p.NewTreeBlocks.Count, "block")} (height {rebuild.NewHeight}; old tree {N(rebuild.OldRmapBlocks, "block")}, {p.ReusableBlocks} reusable), " +
                    $"free list {rebuild.OldAgflCount} -> {N(p.NewAgfl.Count, "block")}");
            }
            catch (Exception e) when (e is RebuildPlanException or CorruptionException)
            {
                stdout.WriteLine($"AG {ag.AgNumber}: cannot rebuild the rmapbt in place: {e.Message}");
                failed = true;
            }
        }
        if (options.DryRun)
        {
            stdout.WriteLine("no changes written (-n)");
            return ExitDamaged;
        }
        if (failed)
        {
            // All-or-nothing: a partial repair would leave a mix the report could not describe simply.
            stdout.WriteLine("nothing written: at least one damaged AG cannot be rebuilt in place; run xfs_repair");
            return ExitDamaged;
        }

        RmapRepairWriter.Commit(image, rebuilds, options.Progress);
        int bad = 0;
        foreach (AgRmapbtRebuild rebuild in rebuilds)
        {
            string? problem = VerifyRebuilt(image, rebuild, scan.Ags[(int)rebuild.AgNumber]);
            if (problem is null)
            {
                stdout.WriteLine($"AG {rebuild.AgNumber}: rmapbt rebuilt and verified");
            }
            else
            {
                stdout.WriteLine($"AG {rebuild.AgNumber}: rebuilt tree failed verification: {problem}");
                bad++;
            }
        }
        stdout.WriteLine($"repaired {rebuilds.Count - bad} of {N(rebuilds.Count, "AG")} in {watch.Elapsed.TotalSeconds:F1} s");
        return bad == 0 ? ExitClean : ExitDamaged;
    }

    /// <summary>
    /// The expected set is only complete when the scan read every inode and every other tree: a problem anywhere
    /// but in the rmapbt itself (or the AGF's rmap fields) means records could be missing, and a rebuild would
    /// then drop them. Returns the first such problem, or null.
    /// </summary>
    static string? UntrustedScan(RmapScanResult scan)
    {
        foreach (AgScanResult ag in scan.Ags)
        {
            if (ag.Expected is null)
            {
                return $"AG {ag.AgNumber}: no expected record set";
            }
            if (ag.Problems.Total > ag.Problems.Items.Count)
            {
                return $"AG {ag.AgNumber}: {N(ag.Problems.Total, "problem")}";
            }
            foreach (ScanProblem p in ag.Problems.Items)
            {
                // OWN_AG double claims come from the old rmapbt's blocks (e.g. a root pointing into the bnobt); the
                // planner re-derives bnobt, cntbt and AGFL blocks itself and refuses any overlap among them.
                bool rmapOnly = p.Where is "rmapbt" or "OWN_AG" || (p.Where == "AGF" && p.What.Contains("rmap", StringComparison.OrdinalIgnoreCase));
                if (!rmapOnly)
                {
                    return p.ToString();
                }
            }
        }
        return null;
    }

    /// <summary>"1 block", "2 blocks".</summary>
    static string N(long count, string singular) => string.Create(System.Globalization.CultureInfo.InvariantCulture, $"{count} {singular}{(count == 1 ? "" : "s")}");

    static string Describe(AgCheckReport r)
    {
        var parts = new List<string>();
        if (!r.RmapbtReadable) parts.Add("tree unreadable");
        if (r.Missing > 0) parts.Add($"{r.Missing} missing");
        if (r.Extra > 0) parts.Add($"{r.Extra} extra");
        if (r.Different > 0) parts.Add($"{r.Different} different");
        if (r.StructureTotal > 0) parts.Add(N(r.StructureTotal, "structural problem"));
        if (r.ScanProblemTotal > 0) parts.Add(N(r.ScanProblemTotal, "scan problem"));
        return parts.Count == 0 ? "inconsistent" : string.Join(", ", parts);
    }

    /// <summary>Re-reads the new tree from disk (cache purged): structure checker, then record-by-record against the rebuilt set.</summary>
    static string? VerifyRebuilt(XfsImage image, AgRmapbtRebuild rebuild, AgScanResult ag)
    {
        image.Cache.Purge(image.Target);
        Agf agf = image.ReadAgf(rebuild.AgNumber);
        var tree = image.OpenRmapbt(agf);
        BtreeCheckReport structure = tree.Check();
        if (structure.Violations.Count > 0)
        {
            return structure.Violations[0];
        }
        using var onDisk = tree.CreateCursor();
        using var expected = ag.Expected!.Tree.CreateCursor();
        var source = new RebuiltRmapRecordSource(expected, rebuild.Plan.OwnAg);
        Span<byte> want = stackalloc byte[RmapbtOps.RecordLength];
        long n = 0;
        for (bool ok = onDisk.MoveFirst(); ok; ok = onDisk.Increment(), n++)
        {
            if (n >= rebuild.Plan.RecordCount)
            {
                return $"more than the {rebuild.Plan.RecordCount} records written";
            }
            source.Fill(want, 1);
            if (!onDisk.Current.SequenceEqual(want))
            {
                return $"record {n} differs from what was written";
            }
        }
        return n == rebuild.Plan.RecordCount ? null : $"{n} records read back, {rebuild.Plan.RecordCount} written";
    }
}
