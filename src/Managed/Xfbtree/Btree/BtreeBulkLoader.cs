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
/// Optional for an ops table (<see cref="IBtreeOps"/>): the bulk loader's per-leaf pass as one loop over the records
/// as the ops' own type, instead of one span-based <see cref="IBtreeOps.RecordsInOrder"/>,
/// <see cref="IBtreeOps.GetHighKey"/> and <see cref="IBtreeOps.CompareKeys"/> call per record. The typed in-memory
/// maps implement it; the result must equal the generic pass's.
/// </summary>
public interface IBtreeLeafRunOps
{
    /// <summary>
    /// For the <paramref name="count"/> (at least 1) records at the start of <paramref name="records"/>: when
    /// <paramref name="checkOrder"/>, returns the index of the first record not in order after the one before it
    /// (<see cref="IBtreeOps.RecordsInOrder"/>), else -1; when <paramref name="highKey"/> is not empty, writes the
    /// highest of their high keys into it.
    /// </summary>
    int CheckLeafRun(ReadOnlySpan<byte> records, int count, bool checkOrder, Span<byte> highKey);
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
    /// When the load fails, the blocks claimed so far are handed to <paramref name="unclaimBlock"/> (if given).
    /// </summary>
    /// <remarks>
    /// Blocks are claimed level by level, leaves first, each level left to right (the order XFS uses, so the layout
    /// does not depend on this implementation). Each leaf gets its records in one <see cref="IBtreeRecordSource.Fill"/>;
    /// while they are in cache, one pass checks the order of each adjacent pair and (overlapping trees) takes the
    /// maximum high key. The leaf's low key and high key go to a native scratch array (one node key slot per block of
    /// the level, about 1/125 of the records' size) and its pointer to a list of the claimed blocks; each node is
    /// written with one copy of its children's key slots and their pointers; the next level's slots reuse the same
    /// array. No block is read back, and the blocks are the ones the previous read-back loader wrote, byte for byte.
    /// </remarks>
    public static unsafe long Load<TOps, TSource>(Btree<TOps> tree, BtreeBulkGeometry plan, ref TSource source, Func<long> claimBlock, bool checkOrder = true, Action<long>? unclaimBlock = null)
        where TOps : struct, IBtreeOps where TSource : IBtreeRecordSource, allows ref struct
    {
        ArgumentNullException.ThrowIfNull(tree);
        ArgumentNullException.ThrowIfNull(plan);
        ArgumentNullException.ThrowIfNull(claimBlock);
        var geo = tree.Geometry;
        CheckPlan(geo, plan);
        // Scratch: one key slot per block of the widest level (the leaves), [low key | high key (overlapping)],
        // reused level after level; and the pointer of every block claimed, in claim order.
        int slot = geo.KeySlotSize;
        nuint keyBytes = (checked((nuint)plan.BlocksPerLevel[0] * (nuint)slot) + 7) & ~(nuint)7; // pointers 8-aligned
        byte* keys = (byte*)System.Runtime.InteropServices.NativeMemory.Alloc(keyBytes + checked((nuint)plan.TotalBlocks * sizeof(long)));
        long* claimedBlocks = (long*)(keys + keyBytes);
        long claimed = 0;
        bool done = false;
        try
        {
            long used = LoadLevels(tree, plan, ref source, claimBlock, checkOrder, keys, claimedBlocks, ref claimed);
            done = true;
            return used;
        }
        finally
        {
            if (!done && unclaimBlock is not null)
                for (long i = 0; i < claimed; i++) unclaimBlock(claimedBlocks[i]);
            System.Runtime.InteropServices.NativeMemory.Free(keys);
        }
    }

    static void CheckPlan(BtreeGeometry geo, BtreeBulkGeometry plan)
    {
        if (plan.Height < 1 || plan.Height > geo.MaxLevels) throw new ArgumentException($"plan of height {plan.Height} outside 1..{geo.MaxLevels}", nameof(plan));
        long items = plan.RecordCount;
        for (int level = 0; level < plan.Height; level++)
        {
            long blocks = plan.BlocksPerLevel[level];
            int per = plan.RecordsPerBlock[level];
            long extra = plan.ExtraBlocks[level];
            if (blocks < 1 || per < 0 || extra < 0 || extra >= blocks
                || per + (extra > 0 ? 1 : 0) > geo.MaxRecords(level)
                || (long)per * blocks + extra != items
                || level > 0 && per < 1)
                throw new ArgumentException($"plan level {level} ({blocks} blocks of {per} (+1 for {extra})) does not fit {items} entries into blocks of at most {geo.MaxRecords(level)}", nameof(plan));
            items = blocks;
        }
        if (items != 1) throw new ArgumentException("plan does not end in a single root block", nameof(plan));
    }

    static unsafe long LoadLevels<TOps, TSource>(Btree<TOps> tree, BtreeBulkGeometry plan, ref TSource source, Func<long> claimBlock, bool checkOrder,
        byte* keys, long* claimedBlocks, ref long claimed)
        where TOps : struct, IBtreeOps where TSource : IBtreeRecordSource, allows ref struct
    {
        var geo = tree.Geometry;
        var store = tree.Store;
        var ops = tree.Ops;
        bool lf = geo.LongPointers;
        int rs = geo.RecordSize, ks = geo.KeySize, slot = geo.KeySlotSize, hs = geo.HeaderSize, bs = geo.BlockSize;
        int ptrOffset = geo.PointerOffset(0, geo.NodeMaxRecords), ps = geo.PointerSize;
        bool overlapping = geo.Overlapping;
        Span<byte> prevRecord = stackalloc byte[BtreeGeometry.MaxRecordSize];
        bool havePrev = false;
        Span<byte> tmp = stackalloc byte[BtreeGeometry.MaxKeySize];
        tmp = tmp[..ks];
        var uuid = tree.Verifier.Uuid;
        uint magic = ops.Magic;

        for (int level = 0; level < plan.Height; level++)
        {
            long count = plan.BlocksPerLevel[level];
            int perBlock = plan.RecordsPerBlock[level];
            long extra = plan.ExtraBlocks[level];
            var prev = default(BtreeBlockRef);
            long consumed = 0;                          // entries of the level below taken so far (node levels)
            long* below = claimedBlocks + claimed - (level == 0 ? 0 : plan.BlocksPerLevel[level - 1]); // the level below's blocks
            long* mine = claimedBlocks + claimed;       // this level's blocks
            try
            {
                for (long i = 0; i < count; i++)
                {
                    int entries = perBlock + (i < extra ? 1 : 0);
                    long ptr = claimBlock();
                    mine[i] = ptr;
                    claimed++;
                    var cur = store.GetNew(ptr, tree.Verifier);
                    System.Diagnostics.Debug.Assert(!cur.IsNull, "store returned a null block");
                    var b = new Span<byte>(cur.Data, bs);
                    // Header only: the entries are written next and the rest of the block is cleared once below.
                    BtreeHeader.Initialize(b[..hs], lf, magic, level, store.PointerToDaddr(ptr), uuid, tree.Owner);
                    var entryKeys = new Span<byte>(keys + i * slot, slot);
                    try
                    {
                        if (level == 0)
                        {
                            var recs = b.Slice(hs, entries * rs);
                            b[(hs + entries * rs)..].Clear();
                            if (entries > 0)
                            {
                                source.Fill(recs, entries);
                                ScanLeaf(ops, recs, entries, rs, checkOrder, havePrev ? prevRecord[..rs] : default, overlapping, entryKeys, tmp, i);
                                if (checkOrder)
                                {
                                    recs.Slice((entries - 1) * rs, rs).CopyTo(prevRecord);
                                    havePrev = true;
                                }
                            }
                        }
                        else
                        {
                            // Key slots of the children are contiguous in the scratch (written there by the level below,
                            // in the same layout as a node's key area), their pointers too.
                            new ReadOnlySpan<byte>(keys + consumed * slot, entries * slot).CopyTo(b[hs..]);
                            b[(hs + entries * slot)..ptrOffset].Clear();
                            var ptrs = b[ptrOffset..];
                            for (int e = 0; e < entries; e++) BtreeHeader.WritePointer(ptrs[(e * ps)..], lf, below[consumed + e]);
                            b[(ptrOffset + entries * ps)..].Clear();
                            // This node's keys: its first slot's low key; the highest of its slots' high keys.
                            var first = new ReadOnlySpan<byte>(keys + consumed * slot, slot);
                            if (overlapping)
                            {
                                int best = 0;
                                for (int e = 1; e < entries; e++)
                                    if (ops.CompareKeys(b.Slice(hs + e * slot + ks, ks), b.Slice(hs + best * slot + ks, ks)) > 0) best = e;
                                first[..ks].CopyTo(entryKeys);
                                b.Slice(hs + best * slot + ks, ks).CopyTo(entryKeys[ks..]);
                            }
                            else
                            {
                                first.CopyTo(entryKeys);
                            }
                            consumed += entries;
                        }
                    }
                    catch
                    {
                        store.Release(cur);
                        throw;
                    }
                    BtreeHeader.SetNumRecords(b, entries);
                    if (!prev.IsNull)
                    {
                        BtreeHeader.SetLeftSibling(b, lf, prev.Pointer);
                        BtreeHeader.SetRightSibling(new Span<byte>(prev.Data, bs), lf, ptr);
                        store.MarkDirty(prev);
                        store.Release(prev);
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
        }
        System.Diagnostics.Debug.Assert(claimed == plan.TotalBlocks, "claimed blocks differ from the plan");
        tree.Root.Set(claimedBlocks[claimed - 1], plan.Height);
        if (tree.Root is BtreeRootValue staged) staged.BlockCount = claimed;
        return claimed;
    }

    /// <summary>
    /// The per-leaf pass over records just copied in (in L1): order of every adjacent pair (and of the first record
    /// after the previous leaf's last), the leaf's low key and, for overlapping trees, the highest high key.
    /// </summary>
    static void ScanLeaf<TOps>(in TOps ops, ReadOnlySpan<byte> recs, int entries, int rs, bool checkOrder, ReadOnlySpan<byte> before,
        bool overlapping, Span<byte> entryKeys, Span<byte> tmp, long block) where TOps : struct, IBtreeOps
    {
        int ks = tmp.Length;
        if (checkOrder && !before.IsEmpty && !ops.RecordsInOrder(before, recs[..rs]))
            throw new ArgumentException($"bulk-load records out of order at block {block}, record 0");
        ops.GetKey(recs[..rs], entryKeys[..ks]);
        if (LeafRun<TOps>.Runner is { } run)
        {
            // One typed loop of the ops' own.
            int bad = run(in ops, recs, entries, checkOrder, overlapping ? entryKeys.Slice(ks, ks) : default);
            if (bad >= 0) throw new ArgumentException($"bulk-load records out of order at block {block}, record {bad}");
            return;
        }
        ref byte first = ref System.Runtime.InteropServices.MemoryMarshal.GetReference(recs);
        if (checkOrder)
        {
            // Unchecked slices: r and r - 1 are below entries, and recs holds entries * rs bytes.
            for (int r = 1; r < entries; r++)
            {
                var a = System.Runtime.InteropServices.MemoryMarshal.CreateReadOnlySpan(ref System.Runtime.CompilerServices.Unsafe.Add(ref first, (r - 1) * rs), rs);
                var c = System.Runtime.InteropServices.MemoryMarshal.CreateReadOnlySpan(ref System.Runtime.CompilerServices.Unsafe.Add(ref first, r * rs), rs);
                if (!ops.RecordsInOrder(a, c)) throw new ArgumentException($"bulk-load records out of order at block {block}, record {r}");
            }
        }
        if (!overlapping) return;
        // The highest high key so far lives in one of two buffers; a higher one (the usual case: extents ascend) is
        // computed into the other and the two swap, so no key is copied per record.
        var high = entryKeys.Slice(ks, ks);
        var best = high;
        var other = tmp;
        ops.GetHighKey(recs[..rs], best);
        for (int r = 1; r < entries; r++)
        {
            ops.GetHighKey(System.Runtime.InteropServices.MemoryMarshal.CreateReadOnlySpan(ref System.Runtime.CompilerServices.Unsafe.Add(ref first, r * rs), rs), other);
            if (ops.CompareKeys(other, best) > 0)
            {
                var swap = best;
                best = other;
                other = swap;
            }
        }
        if (best != high) best.CopyTo(high);
    }

    delegate int LeafRunner<TOps>(in TOps ops, ReadOnlySpan<byte> records, int count, bool checkOrder, Span<byte> highKey);

    /// <summary>
    /// <typeparamref name="TOps"/>'s <see cref="IBtreeLeafRunOps.CheckLeafRun"/>, when it has one: a delegate to
    /// <see cref="RunTyped"/> instantiated for it, a constrained call, so the struct is never boxed (a cast to the
    /// interface in the loader would box it once per leaf, at least until the JIT's optimized tier removes the box).
    /// </summary>
    static class LeafRun<TOps> where TOps : struct, IBtreeOps
    {
        internal static readonly LeafRunner<TOps>? Runner = typeof(IBtreeLeafRunOps).IsAssignableFrom(typeof(TOps))
            ? typeof(BtreeBulkLoader).GetMethod(nameof(RunTyped), System.Reflection.BindingFlags.NonPublic | System.Reflection.BindingFlags.Static)!
                .MakeGenericMethod(typeof(TOps)).CreateDelegate<LeafRunner<TOps>>()
            : null;
    }

    static int RunTyped<T>(in T ops, ReadOnlySpan<byte> records, int count, bool checkOrder, Span<byte> highKey)
        where T : struct, IBtreeOps, IBtreeLeafRunOps
        => ops.CheckLeafRun(records, count, checkOrder, highKey);
}
