using System.Diagnostics;
using Xfbtree.Xfs.Scan;

namespace Xfbtree.Xfs.Scrub;

/// <summary>
/// Offline scrub of an unmounted image: every piece of AG metadata and every link count, each checked against an
/// independent source of truth (see docs/scrub.md). One rmap scan (two workers) computes the expected rmap set of
/// every AG from all other metadata; then, per AG: free space (bnobt, cntbt), inodes (inobt, finobt, inode cores,
/// feeding the link count scan), rmapbt, refcountbt, and the AG headers' counters from what those walks counted;
/// last, the superblock's summary counters and the link counts (whole image only). Read-only.
/// </summary>
public static class Scrubber
{
    /// <summary>
    /// Repairs, in place, every damaged structure that <paramref name="findings"/> (a <see cref="Run"/> of the same
    /// unmounted image, closed since) names, in the repair order of docs/scrub.md: each per-AG rebuild is one write
    /// engine transaction under that AG's lock, and the image carries NEEDSREPAIR until the engine's clean close.
    /// Scrub the image again afterwards for the verdict. Throws <see cref="Xfbtree.Xfs.Write.XfsWriteException"/>
    /// when the image cannot be opened for writing (in use, read-only, pending journal).
    /// </summary>
    public static IReadOnlyList<ScrubRepairOutcome> Repair(string imagePath, ScrubReport findings, ScrubOptions? options = null, CancellationToken cancel = default)
    {
        ArgumentNullException.ThrowIfNull(imagePath);
        return ScrubRepairs.RepairImage(imagePath, findings, options ?? new ScrubOptions(), cancel);
    }

    /// <summary>Scrubs <paramref name="image"/> (opened read-only by the caller, log clean).</summary>
    public static ScrubReport Run(XfsImage image, ScrubOptions? options = null, CancellationToken cancel = default)
    {
        ArgumentNullException.ThrowIfNull(image);
        options ??= new ScrubOptions();
        if (options.OnlyAg is { } only && only >= image.Geometry.AgCount)
            throw new ArgumentOutOfRangeException(nameof(options), $"AG {only} does not exist (the filesystem has {image.Geometry.AgCount} AGs)");
        var sw = Stopwatch.StartNew();
        using var scan = RmapScanner.Scan(image, new RmapScanOptions
        {
            OnlyAg = options.OnlyAg,
            IncludeOwnAg = true,
            Parallelism = options.Parallelism,
            Progress = options.Progress,
        }, cancel);
        var scanElapsed = sw.Elapsed;
        bool whole = options.OnlyAg == null;
        var links = whole ? new LinkCountScrubber(image, options) : null;
        var findings = new List<ScrubFinding>();
        var contexts = new List<AgScrubContext>();
        var scratch = new ScrubScratch();
        bool scanComplete = scan.Ags.All(a => a.Problems.Total == 0 && (a.Expected == null || a.MetadataComplete));
        foreach (var ag in scan.Ags)
        {
            if (ag.Expected == null) continue;
            cancel.ThrowIfCancellationRequested();
            options.Progress?.Invoke($"scrubbing AG {ag.AgNumber}/{image.Geometry.AgCount}");
            var ctx = new AgScrubContext(image, ag, scanComplete, options, scratch);
            contexts.Add(ctx);
            int scanAt = CheckAgStructures(ctx, links, findings, withRmapbt: image.Superblock.HasRmapbt);
            // No rmapbt: the damage the scan met while computing the expected set still needs a line of its own.
            if (!image.Superblock.HasRmapbt) findings.Insert(scanAt, RmapbtScrubber.ScanWithoutRmapbt(ctx));
            ctx.ReleaseScratch();
            ag.Dispose();   // the AG's expected set: its pages go back now (the headers stay for the superblock counters)
        }
        InodeCoreScrubber.AddMissingReflinkFlags(image, scratch.SharedOwners, findings);
        List<LinkCountMismatch> mismatches = [];
        long mismatchTotal = 0;
        if (whole)
        {
            // The image opened, so its primary verified (magic, CRC, geometry); a damaged one is restored before the
            // check (xfbtree scrub --repair) or the image does not open.
            var primary = new ScrubFinding(OnlineScrubber.PrimarySuperblock, null, options.ProblemLimit) { Note = "verified when the image was opened" };
            findings.Add(primary);
            findings.Add(SummaryCounterScrubber.Check(image, contexts, options));
            findings.Add(BmapScrubber.FromScan(scan, options));
            var t = Stopwatch.StartNew();
            var (linkFinding, wrong, total) = links!.Finish(options.LinkMismatchLimit);
            linkFinding.Elapsed = t.Elapsed;
            findings.Add(links.FinishDirectories());
            findings.Add(linkFinding);
            mismatches = wrong;
            mismatchTotal = total;
        }
        return new ScrubReport(findings, mismatches, mismatchTotal, sw.Elapsed, scanElapsed);
    }

    /// <summary>
    /// The checks of one AG in report order (secondary superblock, AGF, AGFL, AGI, bnobt, cntbt, inobt, finobt,
    /// rmapbt, refcountbt), appended to <paramref name="findings"/>; the headers last in time, as the tree walks supply
    /// their counts. Without <paramref name="withRmapbt"/> (online: the rmapbt is checked apart, against a scan with
    /// live hooks) the rmapbt is left out and the return value is where it goes in the list.
    /// </summary>
    internal static int CheckAgStructures(AgScrubContext ctx, LinkCountScrubber? links, List<ScrubFinding> findings, bool withRmapbt)
    {
        var t = Stopwatch.StartNew();
        ctx.Links = links;
        var (bno, cnt) = FreeSpaceScrubber.Check(ctx);
        bno.Elapsed = t.Elapsed;   // both trees' walks: the cntbt's share is not split out
        t.Restart();
        var (ino, fino) = InodeBtreeScrubber.Check(ctx, links);
        ino.Elapsed = t.Elapsed;
        t.Restart();
        ScrubFinding? rmap = null;
        if (withRmapbt)
        {
            rmap = RmapbtScrubber.Check(ctx);
            rmap.Elapsed = ctx.RmapCompareElapsed + t.Elapsed;   // the compare ran first, in the context's one pass
            t.Restart();
        }
        var refc = RefcountScrubber.Check(ctx);
        if (refc != null) refc.Elapsed = t.Elapsed;
        t.Restart();
        if (AgHeaderScrubber.CheckSecondarySuperblock(ctx) is { } sb) findings.Add(sb);
        findings.Add(AgHeaderScrubber.CheckAgf(ctx));
        findings.Add(AgHeaderScrubber.CheckAgfl(ctx));
        findings.Add(AgHeaderScrubber.CheckAgi(ctx));
        findings[^3].Elapsed = t.Elapsed;   // the AGF line carries the headers' time (the superblock's included)
        findings.Add(bno);
        findings.Add(cnt);
        findings.Add(ino);
        if (fino != null) findings.Add(fino);
        // Offline: the scan judged every in-use core beside its forks; online they are checked apart, each inode under
        // its lock (OnlineScrubber.CheckInodes).
        if (!ctx.IsOnline)
        {
            findings.Add(InodeCoreScrubber.Check(ctx));
            findings.Add(InodeCoreScrubber.CheckAttrForks(ctx));
        }
        int rmapAt = findings.Count;
        if (rmap != null) findings.Add(rmap);
        if (refc != null) findings.Add(refc);
        return rmapAt;
    }
}
