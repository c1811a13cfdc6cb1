using System.Buffers.Binary;
using Xfbtree.Btree;
using Xfbtree.Buffers;
using Xfbtree.Xfs.Format;
using Xfbtree.Xfs.Trees;

namespace Xfbtree.Xfs.Repair;

/// <summary>
/// Rebuilds the rmapbt of one AG from the expected record set (an in-memory rmapbt the scan filled), offline.
/// <see cref="Prepare"/> reads everything and plans without writing; <see cref="WriteTreeAndAgfl"/> and
/// <see cref="WriteAgf"/> are the two write stages the caller separates with flush + sync barriers (new blocks
/// and the free list become durable before the AGF points at them).
/// </summary>
internal sealed class AgRmapbtRebuild
{
    readonly XfsImage _image;
    readonly Btree<RmapbtOps> _expected;
    BtreeBulkGeometry? _geometry;

    AgRmapbtRebuild(XfsImage image, uint agno, Btree<RmapbtOps> expected)
    {
        _image = image;
        AgNumber = agno;
        _expected = expected;
    }

    /// <summary>The AG.</summary>
    public uint AgNumber { get; }
    /// <summary>The plan (blocks of the new tree, new AGFL, OWN_AG set).</summary>
    public RmapbtRebuildPlan Plan { get; private set; } = null!;
    /// <summary>Height of the new tree.</summary>
    public int NewHeight => _geometry!.Height;
    /// <summary>Blocks of the old tree as the AGF counted them.</summary>
    public uint OldRmapBlocks { get; private set; }
    /// <summary>Live AGFL entries before the rebuild.</summary>
    public int OldAgflCount { get; private set; }
    /// <summary>bnobt + cntbt blocks (for agf_btreeblks).</summary>
    public long FreeSpaceTreeBlocks { get; private set; }
    long _bnoBlocks, _cntBlocks;
    /// <summary>This AG's share of sb_fdblocks before (freeblks + flcount + btreeblks, as the AGF says).</summary>
    public long OldFreeShare { get; private set; }
    /// <summary>This AG's share of sb_fdblocks after.</summary>
    public long NewFreeShare { get; private set; }
    /// <summary>New root agbno (after <see cref="WriteTreeAndAgfl"/>).</summary>
    public uint NewRoot { get; private set; }

    /// <summary>
    /// Reads the AG's headers and free-space trees, classifies every block and plans the new tree. Writes nothing.
    /// Throws <see cref="RebuildPlanException"/> when the AG cannot be rebuilt in place (with the reason) and
    /// <see cref="CorruptionException"/> when metadata the rebuild relies on (AGF, AGFL, bnobt, cntbt) is damaged.
    /// </summary>
    public static AgRmapbtRebuild Prepare(XfsImage image, uint agno, Btree<RmapbtOps> expected)
    {
        ArgumentNullException.ThrowIfNull(image);
        ArgumentNullException.ThrowIfNull(expected);
        var rebuild = new AgRmapbtRebuild(image, agno, expected);
        rebuild.PlanCore();
        return rebuild;
    }

    void PlanCore()
    {
        var geo = _image.Geometry;
        uint agLength = geo.AgLength(AgNumber);
        Agf agf = _image.ReadAgf(AgNumber);
        foreach (string problem in agf.Problems)
        {
            // rmap fields may be wrong (that is what we repair); free-space fields must be sane.
            if (!problem.Contains("rmap", StringComparison.OrdinalIgnoreCase))
            {
                throw new RebuildPlanException($"AGF: {problem}");
            }
        }
        if (!agf.TreeRootUsable(AgfTree.Bnobt, geo) || !agf.TreeRootUsable(AgfTree.Cntbt, geo))
        {
            throw new RebuildPlanException("the AGF's free-space btree roots are unusable; rebuild the free-space btrees with xfs_repair");
        }
        Agfl agfl = _image.ReadAgfl(AgNumber, agf);
        if (agfl.Problems.Count > 0)
        {
            throw new RebuildPlanException($"AGFL: {agfl.Problems[0]}");
        }
        OldRmapBlocks = agf.RmapBlocks;
        OldAgflCount = agfl.Blocks.Count;
        OldFreeShare = (long)agf.FreeBlocks + agf.FlCount + agf.BtreeBlocks;

        // Fixed-used: every expected extent but OWN_AG (a union: reflinked blocks count once).
        var fixedUsed = new AgBlockBitmap(agLength);
        long nonOwnAg = 0;
        using (var cursor = _expected.CreateCursor())
        {
            for (bool ok = cursor.MoveFirst(); ok; ok = cursor.Increment())
            {
                ReadOnlySpan<byte> rec = cursor.Current;
                if (BinaryPrimitives.ReadUInt64BigEndian(rec[8..]) == RmapOwner.Ag)
                {
                    continue;
                }
                uint start = BinaryPrimitives.ReadUInt32BigEndian(rec), length = BinaryPrimitives.ReadUInt32BigEndian(rec[4..]);
                if (length == 0 || (ulong)start + length > agLength)
                {
                    throw new RebuildPlanException($"expected record [{start}, +{length}] lies outside the AG ({agLength} blocks)");
                }
                fixedUsed.Set(start, length);
                nonOwnAg++;
            }
        }

        // Free space (bnobt records) and the free-space btrees' own blocks.
        var free = new AgBlockBitmap(agLength);
        var store = _image.CreateAgStore(AgNumber);
        var bnobt = _image.OpenBnobt(agf, store);
        using (var cursor = bnobt.CreateCursor())
        {
            long guard = agLength;
            for (bool ok = cursor.MoveFirst(); ok; ok = cursor.Increment())
            {
                ReadOnlySpan<byte> rec = cursor.Current;
                uint start = BinaryPrimitives.ReadUInt32BigEndian(rec), length = BinaryPrimitives.ReadUInt32BigEndian(rec[4..]);
                if (length == 0 || (ulong)start + length > agLength || free.AnySet(start, length) || --guard < 0)
                {
                    throw new RebuildPlanException($"bnobt record [{start}, +{length}] is invalid or overlaps another; rebuild the free-space btrees with xfs_repair");
                }
                free.Set(start, length);
            }
        }
        var treeBlocks = new AgBlockBitmap(agLength);
        var visitor = new BlockCollector(treeBlocks);
        using (var cursor = bnobt.CreateCursor())
        {
            _bnoBlocks = cursor.VisitBlocks(ref visitor);
        }
        using (var cursor = _image.OpenCntbt(agf, store).CreateCursor())
        {
            _cntBlocks = cursor.VisitBlocks(ref visitor);
        }
        if (visitor.Duplicates > 0)
        {
            throw new RebuildPlanException($"{visitor.Duplicates} free-space btree blocks are claimed twice");
        }
        FreeSpaceTreeBlocks = _bnoBlocks + _cntBlocks;

        var space = new AgSpaceSnapshot(fixedUsed, free, treeBlocks, agfl.Blocks, geo.AgflSlots);
        var btreeGeometry = BtreeGeometry.For(new RmapbtOps(false, agLength), geo.BlockSize, XfsTreeLimits.MaxRecords(geo, AgfTree.Rmapbt));
        Plan = RmapbtRebuildPlanner.Plan(space, nonOwnAg, (records, minimumBlocks) =>
        {
            _geometry = ChooseGeometry(btreeGeometry, records, minimumBlocks);
            return _geometry.TotalBlocks;
        });
        NewFreeShare = (long)agf.FreeBlocks + Plan.NewAgfl.Count + NewBtreeBlocks;
    }

    /// <summary>agf_btreeblks after the rebuild: non-root blocks of bnobt, cntbt and the new rmapbt.</summary>
    public long NewBtreeBlocks => (_bnoBlocks - 1) + (_cntBlocks - 1) + (Plan.NewTreeBlocks.Count - 1);

    /// <summary>
    /// The densest tree (leaves and nodes full) when its surplus fits; otherwise the least slack that uses at least
    /// <paramref name="minimumBlocks"/> blocks, so the pool's surplus fits on the AGFL. Every choice keeps each
    /// non-root block at or above minrecs (the loader clamps slack to maxrecs - minrecs).
    /// </summary>
    static BtreeBulkGeometry ChooseGeometry(BtreeGeometry geometry, long records, long minimumBlocks)
    {
        int maxSlack = geometry.LeafMaxRecords - geometry.LeafMinRecords;
        BtreeBulkGeometry best = BtreeBulkLoader.ComputeGeometry(geometry, records, 0, 0);
        for (int slack = 0; slack <= maxSlack && best.TotalBlocks < minimumBlocks; slack++)
        {
            best = BtreeBulkLoader.ComputeGeometry(geometry, records, slack, slack);
        }
        return best;
    }

    /// <summary>Stage 1: writes the new tree into its planned blocks and the new AGFL (dirty in the cache; the caller flushes).</summary>
    public void WriteTreeAndAgfl()
    {
        var geo = _image.Geometry;
        uint agLength = geo.AgLength(AgNumber);
        var staged = new BtreeRootValue(BtreeHeader.NullPointer, 1);
        var store = _image.CreateAgStore(AgNumber);
        var tree = new Btree<RmapbtOps>(new RmapbtOps(false, agLength), store, staged, geo.MetaUuid, AgNumber, XfsTreeLimits.MaxRecords(geo, AgfTree.Rmapbt));
        IReadOnlyList<uint> blocks = Plan.NewTreeBlocks;
        int next = 0;
        long Claim()
        {
            if (next >= blocks.Count)
            {
                throw new InvalidOperationException("the bulk loader claimed more blocks than planned");
            }
            return blocks[next++];
        }
        using (var expectedCursor = _expected.CreateCursor())
        {
            var source = new RebuiltRmapRecordSource(expectedCursor, Plan.OwnAg);
            long used = BtreeBulkLoader.Load(tree, _geometry!, ref source, Claim);
            if (used != blocks.Count)
            {
                throw new InvalidOperationException($"the bulk loader used {used} blocks, {blocks.Count} were planned");
            }
        }
        NewRoot = checked((uint)staged.Pointer);

        BlockBuffer agflBuffer = _image.ReadHeaderBuffer(AgHeaderKind.Agfl, AgNumber, BufferLockMode.Exclusive);
        try
        {
            AgHeaderEditor.WriteAgfl(agflBuffer.Span[..geo.SectorSize], Plan.NewAgfl);
            agflBuffer.MarkDirty();
        }
        finally
        {
            _image.Cache.Release(agflBuffer);
        }
    }

    /// <summary>Stage 2: points the AGF at the new tree and free list (dirty in the cache; the caller flushes).</summary>
    public void WriteAgf()
    {
        var geo = _image.Geometry;
        BlockBuffer agfBuffer = _image.ReadHeaderBuffer(AgHeaderKind.Agf, AgNumber, BufferLockMode.Exclusive);
        try
        {
            AgHeaderEditor.PointAgfAtNewRmapbt(agfBuffer.Span[..geo.SectorSize], NewRoot, _geometry!.Height,
                (uint)Plan.NewTreeBlocks.Count, checked((uint)NewBtreeBlocks), Plan.NewAgfl.Count, geo.AgflSlots);
            agfBuffer.MarkDirty();
        }
        finally
        {
            _image.Cache.Release(agfBuffer);
        }
    }

    struct BlockCollector(AgBlockBitmap blocks) : IBtreeBlockVisitor
    {
        public long Duplicates;

        public void Visit(int level, long pointer, ReadOnlySpan<byte> block)
        {
            uint b = (uint)pointer;
            if (blocks.IsSet(b))
            {
                Duplicates++;
                return;
            }
            blocks.Set(b, 1);
        }
    }
}
