using Xfbtree.Buffers;

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
    public static ScrubFinding Check(AgScrubContext ctx) => Finding(ctx.AgNumber, Structure, ctx.Scan.DamagedInodes, ctx.Scan.DamagedInodeTotal, ctx.Scan.InodesScanned);

    /// <summary>
    /// The attr forks of one AG (offline): every in-use inode's attr fork the scan read, checked whole by
    /// <see cref="Attributes.AttrForkChecker"/> (a shortform list, or every leaf, node and remote value block reached
    /// from the root). One line per damaged fork.
    /// </summary>
    public static ScrubFinding CheckAttrForks(AgScrubContext ctx) => Finding(ctx.AgNumber, AttrForks, ctx.Scan.DamagedAttrForks, ctx.Scan.DamagedAttrForkTotal, ctx.Scan.InodesScanned);

    /// <summary>
    /// Offline, once every AG's expected rmap set was swept: each inode whose data records share blocks
    /// (<see cref="ScrubScratch.SharedOwners"/>, from the AGs whose set was complete) that is a regular file without
    /// the reflink flag is damaged, on its AG's inode cores line (its own line gets the problem added when it has one).
    /// The source of truth is the overlaps of the rmap records, as for the refcountbt (xfs_repair's phase 4 sets the
    /// flag from the reference counts it computes from the same records).
    /// </summary>
    internal static void AddMissingReflinkFlags(XfsImage image, IReadOnlyCollection<ulong> sharedOwners, List<ScrubFinding> findings)
    {
        if (!image.Superblock.HasReflink || sharedOwners.Count == 0) return;
        var geo = image.Geometry;
        var byAg = new Dictionary<uint, ScrubFinding>();
        foreach (var f in findings)
        {
            if (f.Structure == Structure && f.AgNumber is { } ag && f.DamagedInodes != null) byAg[ag] = f;
        }
        var core = new byte[geo.InodeSize];
        foreach (ulong ino in sharedOwners.Order())
        {
            uint agno = geo.InoToAgno(ino), agino = geo.InoToAgino(ino);
            if (agno >= geo.AgCount || !byAg.TryGetValue(agno, out var finding)) continue;
            long daddr = geo.AgBlockToDaddr(agno, geo.AginoToAgbno(agino));
            BlockBuffer buf;
            try { buf = image.Cache.Read(image.Target, daddr, geo.BasicBlocksPerBlock, null, BufferLockMode.Shared); }
            catch (Exception e) when (e is CorruptionException or IOException) { continue; }   // the scan reported it
            try { buf.Span.Slice(geo.AginoToSlot(agino) * geo.InodeSize, geo.InodeSize).CopyTo(core); }
            finally { image.Cache.Release(buf); }
            var d = new Format.Dinode(core);
            if (d.IsFree || d.VerifyStructure(geo, ino) != null) continue;
            if (Format.InodeCoreRules.MissingReflinkFlag(core, geo)) finding.DamageInode(ino, "core", Format.InodeCoreRules.ReflinkFlagMissing);
        }
    }

    /// <summary>The finding of <paramref name="structure"/> (inode cores or attr forks) of AG <paramref name="agno"/>:
    /// one problem line per damaged inode, the inodes kept for the repair; null <paramref name="damaged"/>: the inodes
    /// could not be found.</summary>
    internal static ScrubFinding Finding(uint agno, string structure, List<Scan.DamagedInode>? damaged, long total, long inodesScanned)
    {
        var f = new ScrubFinding(structure, agno, Scan.AgScanResult.DamagedInodeLimit) { ProblemLines = true, ProblemUnit = "inodes" };
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
        f.Note = $"{inodesScanned} in-use inodes";
        return f;
    }
}
