using Xfbtree.Xfs.Repair;

namespace Xfbtree.Xfs.Tests.Repair;

public sealed class RepairPlannerTests
{
    private static AgBlockBitmap Bits(uint length, params (uint Start, uint Length)[] extents)
    {
        var bitmap = new AgBlockBitmap(length);
        foreach (var (start, len) in extents)
        {
            bitmap.Set(start, len);
        }
        return bitmap;
    }

    [Fact]
    public void BitmapFindsExtentsAcrossWordBoundaries()
    {
        var bitmap = Bits(200, (60, 10), (127, 2), (199, 1));
        Assert.Equal(13, bitmap.CountSet());
        Assert.True(bitmap.NextExtent(0, out uint s, out uint l));
        Assert.Equal((60u, 10u), (s, l));
        Assert.True(bitmap.NextExtent(70, out s, out l));
        Assert.Equal((127u, 2u), (s, l));
        Assert.True(bitmap.NextExtent(129, out s, out l));
        Assert.Equal((199u, 1u), (s, l));
        Assert.Equal(3, RmapbtRebuildPlanner.CountExtents(bitmap));
        AgBlockBitmap complement = bitmap.Complement();
        Assert.Equal(200 - 13, complement.CountSet());
        Assert.False(complement.IsSet(199));
        Assert.Throws<ArgumentOutOfRangeException>(() => bitmap.Set(195, 10));
    }

    [Fact]
    public void RepairPlanReusesOldTreeBlocksAndPutsSurplusOnTheAgfl()
    {
        // AG of 100 blocks: 0 headers, 1-2 bnobt/cntbt, 3-4 inobt, 5-7 old rmapbt (pool), 8-9 AGFL, 10-59 data, 60-99 free.
        var space = new AgSpaceSnapshot(
            FixedUsed: Bits(100, (0, 1), (3, 2), (10, 50)),
            Free: Bits(100, (60, 40)),
            FreeSpaceTreeBlocks: Bits(100, (1, 2)),
            AgflBlocks: [8, 9],
            AgflCapacity: 119);
        RmapbtRebuildPlan plan = RmapbtRebuildPlanner.Plan(space, nonOwnAgRecordCount: 3, treeBlocksForRecords: (_, _) => 1);
        Assert.Equal(3, plan.ReusableBlocks);
        Assert.Equal([5u], plan.NewTreeBlocks);
        Assert.Equal([8u, 9u, 6u, 7u], plan.NewAgfl);
        // OWN_AG covers 1-2 and 5-9: two extents.
        Assert.Equal(3 + 2, plan.RecordCount);
        Assert.True(plan.OwnAg.IsSet(7) && plan.OwnAg.IsSet(1) && !plan.OwnAg.IsSet(3));
    }

    [Fact]
    public void RepairPlanRefusesCrossLinkedSpace()
    {
        var space = new AgSpaceSnapshot(Bits(50, (0, 20)), Bits(50, (19, 5)), Bits(50, (30, 1)), [31], 119);
        var e = Assert.Throws<RebuildPlanException>(() => RmapbtRebuildPlanner.Plan(space, 1, (_, _) => 1));
        Assert.Contains("block 19", e.Message);
    }

    [Fact]
    public void RepairPlanRefusesWhenThePoolIsTooSmall()
    {
        var space = new AgSpaceSnapshot(Bits(50, (0, 40)), Bits(50, (41, 9)), Bits(50, (40, 1)), [], 119);
        var e = Assert.Throws<RebuildPlanException>(() => RmapbtRebuildPlanner.Plan(space, 1, (_, _) => 2));
        Assert.Contains("needs 2 blocks", e.Message);
    }

    [Fact]
    public void RepairPlanRefusesAnOverfullAgfl()
    {
        var space = new AgSpaceSnapshot(Bits(50, (0, 10)), Bits(50, (40, 10)), Bits(50, (10, 1)), [11, 12], 4);
        var e = Assert.Throws<RebuildPlanException>(() => RmapbtRebuildPlanner.Plan(space, 1, (_, _) => 1));
        Assert.Contains("do not fit on the AGFL", e.Message);
    }

    [Fact]
    public void RepairPlanBuildsASparserTreeWhenTheSurplusWouldOverflowTheAgfl()
    {
        // Pool = 10..39 (30 blocks), AGFL has 2 of 4 slots used: the tree must take at least 28 blocks.
        var space = new AgSpaceSnapshot(Bits(50, (0, 10)), Bits(50, (41, 9)), Bits(50, (40, 1)), [], 2);
        long askedMinimum = -1;
        RmapbtRebuildPlan plan = RmapbtRebuildPlanner.Plan(space, 1, (_, minimum) => { askedMinimum = minimum; return 29; });
        Assert.Equal(28, askedMinimum);
        Assert.Equal(29, plan.NewTreeBlocks.Count);
        Assert.Single(plan.NewAgfl);
    }
}
