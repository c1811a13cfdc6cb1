namespace Xfbtree.Btree;

/// <summary>The shape of a bulk-loaded tree, computed before any block is claimed.</summary>
public sealed class BtreeBulkGeometry
{
    internal BtreeBulkGeometry(long records, long[] blocksPerLevel, int[] perBlock, long[] extra, long[] items)
    {
        RecordCount = records;
        BlocksPerLevel = blocksPerLevel;
        RecordsPerBlock = perBlock;
        ExtraBlocks = extra;
        ItemsPerLevel = items;
        long total = 0;
        foreach (long b in blocksPerLevel) total += b;
        TotalBlocks = total;
    }

    /// <summary>Records to load.</summary>
    public long RecordCount { get; }
    /// <summary>Levels of the new tree.</summary>
    public int Height => BlocksPerLevel.Count;
    /// <summary>Blocks at each level, leaves first.</summary>
    public IReadOnlyList<long> BlocksPerLevel { get; }
    /// <summary>Entries per block at each level (the first <see cref="ExtraBlocks"/> blocks hold one more).</summary>
    public IReadOnlyList<int> RecordsPerBlock { get; }
    /// <summary>Blocks at each level holding one entry more than <see cref="RecordsPerBlock"/>.</summary>
    public IReadOnlyList<long> ExtraBlocks { get; }
    /// <summary>Entries (records, then child pointers) at each level.</summary>
    public IReadOnlyList<long> ItemsPerLevel { get; }
    /// <summary>Blocks to reserve: the sum over all levels.</summary>
    public long TotalBlocks { get; }
}

/// <summary>
/// Builds a tree from records in key order, XFS style: geometry first (so the caller reserves exactly the
/// blocks needed), blocks claimed through a callback, leaves filled left to right, node levels built from the
/// children's exact keys, the result staged under a fake root and committed by one root update.
/// Every non-root block holds between minrecs and maxrecs entries (entries split evenly per level), so
/// <c>xfs_repair -n</c> accepts the result.
/// </summary>
public static class BtreeBulkLoader
{
    /// <summary>
    /// Computes the geometry. A negative slack means XFS's default (about 75 % full:
    /// <c>maxrecs - (maxrecs + minrecs) / 2</c>); slack is clamped to <c>maxrecs - minrecs</c>.
    /// Use 0 to fill blocks completely, 2 for "almost full" (XFS when the AG is short of space).
    /// </summary>
    public static BtreeBulkGeometry ComputeGeometry(BtreeGeometry geometry, long records, int leafSlack = -1, int nodeSlack = -1)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(records);
        var blocks = new List<long>();
        var per = new List<int>();
        var extra = new List<long>();
        var items = new List<long>();
        long n = records;
        for (int level = 0; ; level++)
        {
            if (level >= geometry.MaxLevels) throw new InvalidOperationException($"{records} records need more than {geometry.MaxLevels} levels");
            int max = geometry.MaxRecords(level), min = geometry.MinRecords(level);
            int slack = level == 0 ? leafSlack : nodeSlack;
            if (slack < 0) slack = max - (max + min) / 2;
            slack = Math.Min(slack, max - min);
            int desired = Math.Max(Math.Max(min, max - slack), 1);
            long count = Math.Max(1, n / desired);
            long perBlock = n / count, rem = n % count;
            if (perBlock > max || (perBlock == max && rem > 0))
            {
                count++;
                perBlock = n / count;
                rem = n % count;
            }
            blocks.Add(count);
            per.Add((int)perBlock);
            extra.Add(rem);
            items.Add(n);
            if (count == 1) break;
            n = count;
        }
        return new BtreeBulkGeometry(records, blocks.ToArray(), per.ToArray(), extra.ToArray(), items.ToArray());
    }

    /// <summary>
    /// Loads <paramref name="plan"/>.RecordCount records from <paramref name="source"/> into new blocks claimed
    /// from <paramref name="claimBlock"/>, then sets <paramref name="tree"/>'s root (normally a staging
    /// <see cref="BtreeRootValue"/>: commit by copying it into the real root location). Returns the blocks used.
    /// Throws <see cref="ArgumentException"/> when the records are not in key order (when <paramref name="checkOrder"/>).
    /// </summary>
    public static unsafe long Load<TOps, TSource>(Btree<TOps> tree, BtreeBulkGeometry plan, ref TSource source, Func<long> claimBlock, bool checkOrder = true)
        where TOps : struct, IBtreeOps where TSource : IBtreeRecordSource, allows ref struct
    {
        var geo = tree.Geometry;
        var store = tree.Store;
        var ops = tree.Ops;
        bool lf = geo.LongPointers;
        int rs = geo.RecordSize, ks = geo.KeySize;
        long used = 0;
        long firstOfLevel = BtreeHeader.NullPointer;
        Span<byte> prevRecord = stackalloc byte[BtreeGeometry.MaxRecordSize];
        bool havePrev = false;
        Span<byte> scratch = stackalloc byte[3 * BtreeGeometry.MaxKeySize];
        var low = scratch[..ks];
        var high = scratch.Slice(BtreeGeometry.MaxKeySize, ks);
        var tmp = scratch.Slice(2 * BtreeGeometry.MaxKeySize, ks);

        for (int level = 0; level < plan.Height; level++)
        {
            long count = plan.BlocksPerLevel[level];
            int perBlock = plan.RecordsPerBlock[level];
            long extra = plan.ExtraBlocks[level];
            var prev = default(BtreeBlockRef);
            long childCursor = firstOfLevel;
            long first = BtreeHeader.NullPointer;
            try
            {
                for (long i = 0; i < count; i++)
                {
                    int entries = perBlock + (i < extra ? 1 : 0);
                    long ptr = claimBlock();
                    used++;
                    var cur = store.GetNew(ptr, tree.Verifier);
                    System.Diagnostics.Debug.Assert(!cur.IsNull, "store returned a null block");
                    var b = new Span<byte>(cur.Data, geo.BlockSize);
                    tree.InitializeBlock(cur, level);
                    if (level == 0)
                    {
                        if (entries > 0) source.Fill(b.Slice(geo.RecordOffset(0), entries * rs), entries);
                        if (checkOrder && entries > 0)
                        {
                            // Adjacent records are compared in place; only a leaf's last record is kept for the next leaf.
                            var recs = b.Slice(geo.RecordOffset(0), entries * rs);
                            for (int r = 0; r < entries; r++)
                            {
                                var rec = recs.Slice(r * rs, rs);
                                var before = r > 0 ? recs.Slice((r - 1) * rs, rs) : havePrev ? prevRecord[..rs] : default;
                                if ((r > 0 || havePrev) && !ops.RecordsInOrder(before, rec))
                                {
                                    store.Release(cur);
                                    throw new ArgumentException($"{tree.Name}: bulk-load records out of order at block {i}, record {r}");
                                }
                            }
                            recs.Slice((entries - 1) * rs, rs).CopyTo(prevRecord);
                            havePrev = true;
                        }
                    }
                    else
                    {
                        for (int e = 0; e < entries; e++)
                        {
                            if (childCursor == BtreeHeader.NullPointer) { store.Release(cur); throw new InvalidOperationException("bulk load: fewer children than planned"); }
                            var child = store.Read(childCursor, tree.Verifier);
                            try
                            {
                                var c = new ReadOnlySpan<byte>(child.Data, geo.BlockSize);
                                BtreeKeys.ComputeBlockKeys(ops, geo, c, level - 1, low, high, tmp);
                                low.CopyTo(b[geo.KeyOffset(e)..]);
                                if (geo.Overlapping) high.CopyTo(b[(geo.KeyOffset(e) + ks)..]);
                                BtreeHeader.WritePointer(b[geo.PointerOffset(e, geo.NodeMaxRecords)..], lf, childCursor);
                                childCursor = BtreeHeader.RightSibling(c, lf);
                            }
                            finally { store.Release(child); }
                        }
                    }
                    BtreeHeader.SetNumRecords(b, entries);
                    if (!prev.IsNull)
                    {
                        BtreeHeader.SetLeftSibling(b, lf, prev.Pointer);
                        BtreeHeader.SetRightSibling(new Span<byte>(prev.Data, geo.BlockSize), lf, ptr);
                        store.MarkDirty(prev);
                        store.Release(prev);
                    }
                    else
                    {
                        first = ptr;
                    }
                    prev = cur;
                }
            }
            finally
            {
                if (!prev.IsNull)
                {
                    store.MarkDirty(prev);
                    store.Release(prev);
                }
            }
            firstOfLevel = first;
        }
        tree.Root.Set(firstOfLevel, plan.Height);
        if (tree.Root is BtreeRootValue staged) staged.BlockCount = used;
        return used;
    }
}
