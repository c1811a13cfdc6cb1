using Xfbtree.Xfs.Format;

namespace Xfbtree.Xfs.Scrub;

/// <summary>
/// AGF, AGFL and AGI of one AG: each field against the kernel's rules (the parsers' problem lists), and each
/// counter against its source of truth: free blocks and longest free extent against the free space the rmap
/// implies (the bnobt when the rmap set is not usable), tree levels and block counts against the trees walked,
/// the AGFL count against the list and its blocks against the on-disk rmapbt's OWN_AG records, the inode counts
/// against the inobt records (themselves checked against the inode cores by <see cref="InodeBtreeScrubber"/>).
/// Run after the tree checks, whose walks supply the counts.
/// </summary>
internal static class AgHeaderScrubber
{
    /// <summary>The AGF finding.</summary>
    public static ScrubFinding CheckAgf(AgScrubContext ctx)
    {
        var f = new ScrubFinding("AGF", ctx.AgNumber, ctx.Options.ProblemLimit);
        var agf = ctx.Scan.Agf;
        if (agf == null) { f.Damage(HeaderProblem(ctx, "AGF") ?? "unreadable"); return f; }
        foreach (var p in agf.Problems) f.Damage(p);
        RootIsTree(ctx, f, agf.TreeRootUsable(AgfTree.Bnobt, ctx.Geometry), "bnobt", agf.BnoRoot, Xfbtree.Xfs.Trees.BnobtOps.MagicValue);
        RootIsTree(ctx, f, agf.TreeRootUsable(AgfTree.Cntbt, ctx.Geometry), "cntbt", agf.CntRoot, Xfbtree.Xfs.Trees.CntbtOps.MagicValue);
        long beforeRmapRoot = f.ProblemTotal;
        RootIsTree(ctx, f, agf.TreeRootUsable(AgfTree.Rmapbt, ctx.Geometry), "rmapbt", agf.RmapRoot, Xfbtree.Xfs.Trees.RmapbtOps.MagicValue);
        long rmapRootDamage = f.ProblemTotal - beforeRmapRoot;
        if (ctx.Image.Superblock.HasReflink)
            RootIsTree(ctx, f, agf.TreeRootUsable(AgfTree.Refcountbt, ctx.Geometry), "refcountbt", agf.RefcountRoot, Xfbtree.Xfs.Trees.RefcountbtOps.MagicValue);
        if (ctx.FreeExtents is { } free)
        {
            long blocks = 0, longest = 0;
            foreach (ulong e in free) { blocks += AgScrubContext.LengthOf(e); longest = Math.Max(longest, AgScrubContext.LengthOf(e)); }
            if (agf.FreeBlocks != blocks) f.Damage($"agf_freeblks {agf.FreeBlocks}, but the rmap leaves {blocks} blocks free");
            if (agf.Longest != longest) f.Damage($"agf_longest {agf.Longest}, but the longest free extent per the rmap is {longest}");
        }
        else f.Skip("free space counters not compared with the rmap: " + ctx.RmapUnusable);
        if (ctx.BnobtHeight >= 0 && agf.BnoLevel != ctx.BnobtHeight) f.Damage($"bnobt level {agf.BnoLevel}, but the tree is {ctx.BnobtHeight} high");
        if (ctx.CntbtHeight >= 0 && agf.CntLevel != ctx.CntbtHeight) f.Damage($"cntbt level {agf.CntLevel}, but the tree is {ctx.CntbtHeight} high");
        long rmapBlocks = ctx.RmapbtBlockCount;
        // The scan collects the rmapbt's blocks without judging it: count them only when the rmapbt reads whole.
        if (!ctx.HasRmapbt && ctx.BnobtBlocks > 0 && ctx.CntbtBlocks > 0)
        {
            long btreeblks = ctx.BnobtBlocks - 1 + ctx.CntbtBlocks - 1;
            if (btreeblks != agf.BtreeBlocks) f.Damage($"agf_btreeblks {agf.BtreeBlocks}, but bnobt+cntbt have {btreeblks} non-root blocks");
            if (agf.RmapRoot != 0 || agf.RmapLevel != 0 || agf.RmapBlocks != 0)
                f.Damage($"rmapbt root {agf.RmapRoot} level {agf.RmapLevel} blocks {agf.RmapBlocks} on a filesystem without an rmapbt: each must be 0");
        }
        else if (ctx.BnobtBlocks > 0 && ctx.CntbtBlocks > 0 && rmapBlocks > 0 && ctx.OnDiskRmapUnusable == null)
        {
            long btreeblks = ctx.BnobtBlocks - 1 + ctx.CntbtBlocks - 1 + rmapBlocks - 1;
            if (btreeblks != agf.BtreeBlocks) f.Damage($"agf_btreeblks {agf.BtreeBlocks}, but bnobt+cntbt+rmapbt have {btreeblks} non-root blocks");
        }
        if (ctx.RefcountHeight >= 0 && agf.RefcountLevel != ctx.RefcountHeight) f.Damage($"refcountbt level {agf.RefcountLevel}, but the tree is {ctx.RefcountHeight} high");
        if (ctx.RefcountBlocks >= 0 && agf.RefcountBlocks != ctx.RefcountBlocks)
            f.Damage($"agf_refcount_blocks {agf.RefcountBlocks}, but the refcountbt has {ctx.RefcountBlocks} blocks");
        f.Note = $"{agf.FreeBlocks} free blocks";
        f.OnlyRmapbtRootDamage = rmapRootDamage > 0 && f.ProblemTotal == rmapRootDamage;
        return f;
    }

    /// <summary>A root pointer (inside the AG) must name a block of its own tree: one that reads with another magic
    /// (another tree's block, a data block) is the header's damage, whatever the tree's own check says.</summary>
    static void RootIsTree(AgScrubContext ctx, ScrubFinding f, bool usable, string tree, uint root, uint magic)
    {
        if (!usable) return;
        Xfbtree.Buffers.BlockBuffer buf;
        try { buf = ctx.Image.Cache.Read(ctx.Image.Target, ctx.Geometry.AgBlockToDaddr(ctx.AgNumber, root), ctx.Geometry.BasicBlocksPerBlock, null, Xfbtree.Buffers.BufferLockMode.Shared); }
        catch (IOException e) { f.Damage($"{tree} root {root} does not read: {e.Message}"); return; }
        try
        {
            uint found = System.Buffers.Binary.BinaryPrimitives.ReadUInt32BigEndian(buf.Span);
            if (found != magic) f.Damage($"{tree} root {root} is not a {tree} block (magic 0x{found:x8})");
        }
        finally { ctx.Image.Cache.Release(buf); }
    }

    /// <summary>The AGFL finding.</summary>
    public static ScrubFinding CheckAgfl(AgScrubContext ctx)
    {
        var f = new ScrubFinding("AGFL", ctx.AgNumber, ctx.Options.ProblemLimit);
        var agf = ctx.Scan.Agf;
        var agfl = ctx.Scan.Agfl;
        if (agf == null) { f.Skip("the AGF is unreadable"); return f; }
        if (agfl == null) { f.Damage(HeaderProblem(ctx, "AGFL") ?? "unreadable"); return f; }
        foreach (var p in agfl.Problems) f.Damage(p);
        if (!agf.FreeListConsistent(ctx.Geometry.AgflSlots)) f.Damage($"agf_flfirst {agf.FlFirst} / fllast {agf.FlLast} / flcount {agf.FlCount} do not describe one list");
        if (agfl.Blocks.Count != agf.FlCount) f.Damage($"agf_flcount {agf.FlCount}, but the list holds {agfl.Blocks.Count} blocks");
        var seen = new HashSet<uint>();
        foreach (uint b in agfl.Blocks)
        {
            if (b < ctx.Geometry.FirstFreeBlock || b >= ctx.AgLength) { f.Damage($"block {b} outside the AG's free space"); continue; }
            if (!seen.Add(b)) f.Damage($"block {b} listed twice");
        }
        if (ctx.OnDiskOwnAg is { } ownAg)
        {
            foreach (uint b in seen)
                if (!Covers(ownAg, b)) f.Damage($"block {b} is not OWN_AG in the rmapbt");
        }
        else if (ctx.HasRmapbt) f.Skip("blocks not compared with the rmapbt: " + ctx.OnDiskRmapUnusable);
        f.Note = $"{agfl.Blocks.Count} blocks";
        return f;
    }

    /// <summary>The AGI finding.</summary>
    public static ScrubFinding CheckAgi(AgScrubContext ctx)
    {
        var f = new ScrubFinding("AGI", ctx.AgNumber, ctx.Options.ProblemLimit);
        var agi = ctx.Scan.Agi;
        if (agi == null) { f.Damage(HeaderProblem(ctx, "AGI") ?? "unreadable"); return f; }
        foreach (var p in agi.Problems) f.Damage(p);
        if (ctx.InobtInodes >= 0)
        {
            if (agi.Count != ctx.InobtInodes) f.Damage($"agi_count {agi.Count}, but the inobt holds {ctx.InobtInodes} inodes");
            if (agi.FreeCount != ctx.InobtFreeInodes) f.Damage($"agi_freecount {agi.FreeCount}, but the inobt holds {ctx.InobtFreeInodes} free inodes");
        }
        if (ctx.InobtHeight >= 0 && agi.Level != ctx.InobtHeight) f.Damage($"inobt level {agi.Level}, but the tree is {ctx.InobtHeight} high");
        if (ctx.FinobtHeight >= 0 && agi.FreeLevel != ctx.FinobtHeight) f.Damage($"finobt level {agi.FreeLevel}, but the tree is {ctx.FinobtHeight} high");
        if (ctx.Image.Superblock.HasInobtCounts)
        {
            if (ctx.InobtBlocks >= 0 && agi.InobtBlocks != ctx.InobtBlocks) f.Damage($"agi_iblocks {agi.InobtBlocks}, but the inobt has {ctx.InobtBlocks} blocks");
            if (ctx.FinobtBlocks >= 0 && agi.FinobtBlocks != ctx.FinobtBlocks) f.Damage($"agi_fblocks {agi.FinobtBlocks}, but the finobt has {ctx.FinobtBlocks} blocks");
        }
        long onLists = 0, before = f.ProblemTotal;
        var cache = ctx.Image.Cache;
        var sector = cache.Read(ctx.Image.Target, ctx.Geometry.AgHeaderDaddr(ctx.AgNumber, (int)AgHeaderKind.Agi), ctx.Geometry.SectorBasicBlocks, null, Xfbtree.Buffers.BufferLockMode.Shared);
        try { UnlinkedListScrubber.Check(ctx, f, sector.Span, out onLists); }
        finally { cache.Release(sector); }
        f.OnlyUnlinkedListDamage = before == 0 && f.ProblemTotal > 0;
        f.Note = $"{agi.Count} inodes, {agi.FreeCount} free" + (onLists > 0 ? $", {onLists} unlinked inodes pending on its lists" : "");
        return f;
    }

    /// <summary>The secondary superblock finding of an AG other than 0: it verifies and agrees with the primary on
    /// every field mkfs fixes (<see cref="SecondarySuperblock"/>); null for AG 0.</summary>
    public static ScrubFinding? CheckSecondarySuperblock(AgScrubContext ctx)
    {
        if (ctx.AgNumber == 0) return null;
        var f = new ScrubFinding("superblock", ctx.AgNumber, ctx.Options.ProblemLimit);
        var geo = ctx.Geometry;
        var cache = ctx.Image.Cache;
        var primary = ctx.PrimarySuperblock is null ? cache.Read(ctx.Image.Target, geo.AgHeaderDaddr(0, 0), geo.SectorBasicBlocks, null, Xfbtree.Buffers.BufferLockMode.Shared) : null;
        try
        {
            var secondary = cache.Read(ctx.Image.Target, geo.AgHeaderDaddr(ctx.AgNumber, 0), geo.SectorBasicBlocks, null, Xfbtree.Buffers.BufferLockMode.Shared);
            try
            {
                ReadOnlySpan<byte> source = primary is null ? ctx.PrimarySuperblock : primary.Span;
                foreach (string p in SecondarySuperblock.Differences(source, secondary.Span, geo.SectorSize)) f.Damage(p);
            }
            finally { cache.Release(secondary); }
        }
        finally { if (primary is not null) cache.Release(primary); }
        f.Note = "matches the primary";
        return f;
    }

    /// <summary>True when a record of the sorted, non-overlapping list covers block <paramref name="b"/>.</summary>
    internal static bool Covers(List<(uint Start, uint Length)> records, uint b)
    {
        int lo = 0, hi = records.Count - 1;
        while (lo <= hi)
        {
            int mid = (lo + hi) >>> 1;
            var (s, l) = records[mid];
            if (b < s) hi = mid - 1;
            else if (b >= (ulong)s + l) lo = mid + 1;
            else return true;
        }
        return false;
    }

    static string? HeaderProblem(AgScrubContext ctx, string where)
    {
        foreach (var p in ctx.Scan.Problems.Items)
            if (p.Where == where) return p.What;
        return null;
    }
}
