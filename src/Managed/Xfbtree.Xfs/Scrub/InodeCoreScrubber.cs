namespace Xfbtree.Xfs.Scrub;

/// <summary>
/// The inode cores of one AG (offline): every in-use inode the scan read, judged against its own forks and the rules
/// of <see cref="Format.InodeCoreRules"/> (the kernel's inode verifier and scrubber, xfs_repair's phases 3 and 4).
/// Source of truth: the inode's forks (what they map gives di_nblocks and the extent counts), the file type (which
/// flags and hints it may carry) and the superblock's features. One line per damaged inode.
/// </summary>
internal static class InodeCoreScrubber
{
    /// <summary>The structure's name in the report.</summary>
    public const string Structure = "inode cores";

    /// <summary>The attr forks' structure name in the report.</summary>
    public const string AttrForks = "attr forks";

    /// <summary>The finding, from what the scan judged.</summary>
    public static ScrubFinding Check(AgScrubContext ctx) => Finding(ctx, Structure, ctx.Scan.DamagedInodes, ctx.Scan.DamagedInodeTotal);

    /// <summary>
    /// The attr forks of one AG (offline): every in-use inode's attr fork the scan read, checked whole by
    /// <see cref="Attributes.AttrForkChecker"/> (a shortform list, or every leaf, node and remote value block reached
    /// from the root). One line per damaged fork.
    /// </summary>
    public static ScrubFinding CheckAttrForks(AgScrubContext ctx) => Finding(ctx, AttrForks, ctx.Scan.DamagedAttrForks, ctx.Scan.DamagedAttrForkTotal);

    static ScrubFinding Finding(AgScrubContext ctx, string structure, List<Scan.DamagedInode>? damaged, long total)
    {
        var f = new ScrubFinding(structure, ctx.AgNumber, Scan.AgScanResult.DamagedInodeLimit) { ProblemLines = true, ProblemUnit = "inodes" };
        if (damaged == null)
        {
            f.Skip("the inode btree cannot be walked (see inobt), so the inodes cannot be found");
            return f;
        }
        var inodes = new List<ulong>(damaged.Count);
        foreach (var d in damaged)
        {
            f.Damage(d.ToString());
            inodes.Add(d.Ino);
        }
        long more = total - damaged.Count;
        if (more > 0) f.Damage(more, $"and {more} more damaged inodes");
        f.DamagedInodes = inodes;
        f.DamagedInodesComplete = more == 0;
        f.Note = $"{ctx.Scan.InodesScanned} in-use inodes";
        return f;
    }
}
