namespace Xfbtree.Xfs.Repair;

/// <summary>What an AG looks like to the rmapbt rebuild, every set given as a block bitmap of the AG.</summary>
/// <param name="FixedUsed">Blocks owned by anything but OWN_AG: headers, log, inode btrees and chunks, refcountbt,
/// CoW staging, file data and attr extents, bmbt blocks (a union: shared blocks count once).</param>
/// <param name="Free">Blocks inside bnobt records.</param>
/// <param name="FreeSpaceTreeBlocks">bnobt and cntbt blocks.</param>
/// <param name="AgflBlocks">The live AGFL entries, in list order.</param>
/// <param name="AgflCapacity">Slots of the AGFL: (sector size - 36) / 4.</param>
internal sealed record AgSpaceSnapshot(
    AgBlockBitmap FixedUsed,
    AgBlockBitmap Free,
    AgBlockBitmap FreeSpaceTreeBlocks,
    IReadOnlyList<uint> AgflBlocks,
    int AgflCapacity);

/// <summary>Where the new rmapbt goes and what the AG headers become.</summary>
/// <param name="NewTreeBlocks">Blocks for the new tree, ascending; exactly as many as the tree needs.</param>
/// <param name="NewAgfl">The whole new AGFL list (old live entries, then the surplus), to be written from slot 0.</param>
/// <param name="OwnAg">Every OWN_AG block: bnobt, cntbt, AGFL and new rmapbt blocks.</param>
/// <param name="RecordCount">Records of the new tree: the non-OWN_AG records plus the OWN_AG extents.</param>
/// <param name="ReusableBlocks">Blocks that were neither fixed, free, free-space btree nor AGFL: the old rmapbt plus leaks.</param>
internal sealed record RmapbtRebuildPlan(
    IReadOnlyList<uint> NewTreeBlocks,
    IReadOnlyList<uint> NewAgfl,
    AgBlockBitmap OwnAg,
    long RecordCount,
    long ReusableBlocks);

/// <summary>Why a rebuild cannot be planned in place.</summary>
internal sealed class RebuildPlanException(string message) : Exception(message);

/// <summary>
/// Plans an rmapbt rebuild that reuses the blocks of the old tree (the first way of docs/xfs-format.md §8.2):
/// the free-space btrees are untouched, so bnobt/cntbt/freeblks/longest stay valid and no block outside the old
/// rmapbt, the AG headers and leaked space changes. The reusable pool is everything that no other class claims:
/// the old rmapbt blocks plus leaked blocks. It can be found even when the old tree is destroyed. Because every pool
/// block becomes OWN_AG either as a tree block or as an AGFL block, the record set is fixed before we choose which
/// pool blocks hold the tree, so no fixpoint iteration is needed.
/// </summary>
internal static class RmapbtRebuildPlanner
{
    /// <summary>Plans the rebuild.</summary>
    /// <param name="space">The AG's block classes.</param>
    /// <param name="nonOwnAgRecordCount">Merged expected records whose owner is not OWN_AG.</param>
    /// <param name="treeBlocksForRecords">Blocks the bulk loader will use for a record count when it should use at
    /// least the given number of blocks (the surplus of the pool must fit on the AGFL, so a big old tree is rebuilt
    /// less densely rather than overflowing the AGFL): the smallest achievable count at or above the minimum, or the
    /// largest achievable one when none reaches it.</param>
    public static RmapbtRebuildPlan Plan(AgSpaceSnapshot space, long nonOwnAgRecordCount, Func<long, long, long> treeBlocksForRecords)
    {
        ArgumentNullException.ThrowIfNull(space);
        ArgumentNullException.ThrowIfNull(treeBlocksForRecords);
        uint agLength = space.FixedUsed.AgLength;

        var agfl = new AgBlockBitmap(agLength);
        foreach (uint b in space.AgflBlocks)
        {
            if (b >= agLength)
            {
                throw new RebuildPlanException($"AGFL entry {b} lies outside the AG ({agLength} blocks)");
            }
            if (agfl.IsSet(b))
            {
                throw new RebuildPlanException($"AGFL lists block {b} twice");
            }
            agfl.Set(b, 1);
        }

        RequireDisjoint(space.FixedUsed, "in-use metadata or file data", space.Free, "free space");
        RequireDisjoint(space.FixedUsed, "in-use metadata or file data", space.FreeSpaceTreeBlocks, "a free-space btree block");
        RequireDisjoint(space.FixedUsed, "in-use metadata or file data", agfl, "the AGFL");
        RequireDisjoint(space.Free, "free space", space.FreeSpaceTreeBlocks, "a free-space btree block");
        RequireDisjoint(space.Free, "free space", agfl, "the AGFL");
        RequireDisjoint(space.FreeSpaceTreeBlocks, "a free-space btree block", agfl, "the AGFL");

        var claimed = new AgBlockBitmap(agLength);
        claimed.UnionWith(space.FixedUsed);
        claimed.UnionWith(space.Free);
        claimed.UnionWith(space.FreeSpaceTreeBlocks);
        claimed.UnionWith(agfl);
        AgBlockBitmap pool = claimed.Complement();
        long poolCount = pool.CountSet();

        var ownAg = new AgBlockBitmap(agLength);
        ownAg.UnionWith(space.FreeSpaceTreeBlocks);
        ownAg.UnionWith(agfl);
        ownAg.UnionWith(pool);
        long recordCount = nonOwnAgRecordCount + CountExtents(ownAg);

        long freeAgflSlots = space.AgflCapacity - space.AgflBlocks.Count;
        long needed = treeBlocksForRecords(recordCount, Math.Max(1, poolCount - freeAgflSlots));
        if (needed < 1)
        {
            throw new RebuildPlanException($"the bulk loader planned {needed} blocks for {recordCount} records");
        }
        if (needed > poolCount)
        {
            throw new RebuildPlanException(
                $"the new rmapbt needs {needed} blocks but only {poolCount} blocks are reusable (old rmapbt and leaked space); " +
                "rebuilding the free-space btrees as well is needed");
        }

        List<uint> poolBlocks = pool.TakeLowest(poolCount);
        var treeBlocks = poolBlocks.GetRange(0, (int)needed);
        var newAgfl = new List<uint>(space.AgflBlocks);
        newAgfl.AddRange(poolBlocks.GetRange((int)needed, poolBlocks.Count - (int)needed));
        if (newAgfl.Count > space.AgflCapacity)
        {
            throw new RebuildPlanException(
                $"{poolCount - needed} surplus reusable blocks do not fit on the AGFL ({space.AgflBlocks.Count} of {space.AgflCapacity} slots in use)");
        }
        return new RmapbtRebuildPlan(treeBlocks, newAgfl, ownAg, recordCount, poolCount);
    }

    /// <summary>Number of maximal runs of set blocks: the OWN_AG records after XFS's merge rule.</summary>
    public static long CountExtents(AgBlockBitmap bitmap)
    {
        ArgumentNullException.ThrowIfNull(bitmap);
        long n = 0;
        uint from = 0;
        while (from < bitmap.AgLength && bitmap.NextExtent(from, out uint start, out uint length))
        {
            n++;
            from = start + length;
        }
        return n;
    }

    private static void RequireDisjoint(AgBlockBitmap a, string aName, AgBlockBitmap b, string bName)
    {
        uint from = 0;
        while (from < a.AgLength && a.NextExtent(from, out uint start, out uint length))
        {
            if (b.AnySet(start, length))
            {
                for (uint i = start; i < start + length; i++)
                {
                    if (b.IsSet(i))
                    {
                        throw new RebuildPlanException($"block {i} is both {aName} and {bName}: the AG is cross-linked");
                    }
                }
            }
            from = start + length;
        }
    }
}
