using Xfbtree.Xfs.Check;

namespace Xfbtree.Xfs.Scrub;

/// <summary>
/// rmapbt of one AG: the existing two-way compare with the expected rmap set (<see cref="RmapChecker"/>: records
/// missing, extra or different, structure, AGF rmap counters) and the damage the scan met while computing that set
/// (AG headers, tree nodes, inodes, forks), which is reported here because it is what the set could not include.
/// </summary>
internal static class RmapbtScrubber
{
    /// <summary>The rmapbt finding, from the compare the context ran when it was made (<see cref="AgScrubContext.RmapReport"/>).</summary>
    public static ScrubFinding Check(AgScrubContext ctx)
        => FromReport(ctx.RmapReport, ctx.ScanComplete, ctx.Options);

    /// <summary>The name of the finding that stands in for the rmapbt's on a filesystem without one.</summary>
    public const string MetadataScan = "metadata scan";

    /// <summary>
    /// A filesystem without an rmapbt: the finding carries what the scan met while computing the expected rmap set
    /// (AG headers, tree nodes, inodes, forks: what the set could not include), as the rmapbt's finding does otherwise.
    /// </summary>
    public static ScrubFinding ScanWithoutRmapbt(AgScrubContext ctx)
    {
        var rep = ctx.RmapReport;
        var f = new ScrubFinding(MetadataScan, rep.AgNumber, ctx.Options.ProblemLimit);
        foreach (var p in rep.ScanProblems) f.Damage($"scan: {p.Where}: {p.What}");
        if (rep.ScanProblemTotal > rep.ScanProblems.Count) f.Damage(rep.ScanProblemTotal - rep.ScanProblems.Count, $"{rep.ScanProblemTotal - rep.ScanProblems.Count} more scan problems");
        f.Note = $"{rep.ExpectedRecords} rmap records implied; no rmapbt on this filesystem";
        f.Elapsed = ctx.RmapCompareElapsed;
        return f;
    }

    /// <summary>The options of the comparison behind an rmapbt finding.</summary>
    public static RmapCheckOptions CheckOptions(ScrubOptions options) => new() { SampleLimit = 1, StructureLimit = options.ProblemLimit };

    /// <summary>The rmapbt finding of a comparison (offline with the scan's set, online with the shadow tree of a
    /// scan with live hooks); <paramref name="judgeExtra"/>: the expected set is complete, so records on disk and
    /// not expected are damage.</summary>
    public static ScrubFinding FromReport(AgCheckReport rep, bool judgeExtra, ScrubOptions options)
    {
        var f = new ScrubFinding("rmapbt", rep.AgNumber, options.ProblemLimit);
        string Sample(RmapDifferenceKind kind)
        {
            foreach (var s in rep.Samples)
                if (s.Kind == kind) return $" (first {(kind == RmapDifferenceKind.Extra ? s.OnDisk : s.Expected)})";
            return "";
        }
        f.Damage(rep.Missing, $"{rep.Missing} records missing{Sample(RmapDifferenceKind.Missing)}");
        // An inode the scan could not read (in any AG) leaves its records out of every AG's expected set, so records
        // on disk but not expected are damage only when the scan saw everything.
        if (judgeExtra || rep.Extra == 0) f.Damage(rep.Extra, $"{rep.Extra} records extra{Sample(RmapDifferenceKind.Extra)}");
        else f.Skip($"{rep.Extra} records on disk but not expected not judged: the scan met damage in another AG");
        f.Damage(rep.Different, $"{rep.Different} records differ{Sample(RmapDifferenceKind.Different)}");
        foreach (var s in rep.Structure) f.Damage(s);
        if (rep.StructureTotal > rep.Structure.Count) f.Damage(rep.StructureTotal - rep.Structure.Count, $"{rep.StructureTotal - rep.Structure.Count} more structure problems");
        foreach (var p in rep.ScanProblems) f.Damage($"scan: {p.Where}: {p.What}");
        if (rep.ScanProblemTotal > rep.ScanProblems.Count) f.Damage(rep.ScanProblemTotal - rep.ScanProblems.Count, $"{rep.ScanProblemTotal - rep.ScanProblems.Count} more scan problems");
        f.Note = $"{rep.OnDiskRecords} records";
        return f;
    }
}
