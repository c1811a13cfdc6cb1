namespace Xfbtree.Xfs.Scrub;

/// <summary>
/// The superblock's summary counters against the AG headers: sb_icount = Σ agi_count, sb_ifree = Σ agi_freecount,
/// sb_fdblocks = Σ (agf_freeblks + agf_flcount + agf_btreeblks) (the AGFL and the non-root blocks of the free-space
/// and rmap btrees count as free space in the superblock: the kernel hands them out through per-AG reservations).
/// The AG headers' own counters are checked against their sources per AG.
/// </summary>
internal static class SummaryCounterScrubber
{
    /// <summary>The "superblock counters" finding.</summary>
    public static ScrubFinding Check(XfsImage image, IReadOnlyList<AgScrubContext> ags, ScrubOptions options)
    {
        var f = new ScrubFinding("superblock counters", null, options.ProblemLimit);
        ulong icount = 0, ifree = 0, fdblocks = 0;
        foreach (var ctx in ags)
        {
            if (ctx.Scan.Agf is not { } agf || ctx.Scan.Agi is not { } agi) { f.Skip($"AG {ctx.AgNumber} headers unreadable"); return f; }
            icount += agi.Count;
            ifree += agi.FreeCount;
            fdblocks += (ulong)agf.FreeBlocks + agf.FlCount + agf.BtreeBlocks;
        }
        var sb = image.Superblock;
        if (sb.InodeCount != icount) f.Damage($"sb_icount {sb.InodeCount}, but the AGIs hold {icount} inodes");
        if (sb.FreeInodes != ifree) f.Damage($"sb_ifree {sb.FreeInodes}, but the AGIs hold {ifree} free inodes");
        if (sb.FreeDataBlocks != fdblocks) f.Damage($"sb_fdblocks {sb.FreeDataBlocks}, but the AGFs hold {fdblocks} free blocks");
        f.Note = $"{icount} inodes, {ifree} free, {fdblocks} free blocks";
        return f;
    }
}
