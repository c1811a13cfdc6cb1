using Xfbtree.Btree;
using Xfbtree.Buffers;

namespace Xfbtree.Tests.Btree;

/// <summary>
/// The one-pass bulk loader (leaf keys and high keys taken while the records are in cache, nodes written from a
/// scratch of key slots, header-only init plus one clear of the unused tail) against the previous algorithm kept
/// here as the reference (every leaf filled, then each node level built by reading its children back); and the
/// leaf-walk scan (<c>BtreeCursor.VisitLeafRecords</c>) against <c>QueryAll</c>.
/// </summary>
public sealed class BtreeBulkLoadFastPathTests
{
    public static IEnumerable<object[]> Shapes()
    {
        foreach (int bs in new[] { 512, 4096 })
            foreach (bool longPointers in new[] { false, true })
                foreach (int slack in new[] { -1, 0, 2 })
                    yield return [bs, longPointers, slack];
    }

    static List<byte[]> U64Records(long n) => Enumerable.Range(0, (int)n).Select(i => U64Ops.Record((ulong)i * 3, (ulong)i)).ToList();

    // Interval records whose high keys go up and down (long extents early in a block), so the node high key is not
    // simply the last record's.
    static List<byte[]> IntervalRecords(long n) => Enumerable.Range(0, (int)n)
        .Select(i => IntervalOps.Record((uint)(i * 4), (uint)(i % 13 == 0 ? 500 + i % 97 : 1 + i % 5), (ulong)(i % 3))).ToList();

    /// <summary>Claims blocks from the store and fills each with garbage first: the loader must clear what it does not write.</summary>
    sealed class GarbageClaims(BtreeTestStore store)
    {
        public readonly List<long> Claimed = new();
        public long Claim()
        {
            long p = store.AllocateBlock();
            store.RawBlock(p).AsSpan().Fill(0xA5);
            Claimed.Add(p);
            return p;
        }
    }

    [Theory]
    [MemberData(nameof(Shapes))]
    public void BulkLoadWritesTheSameBlocksAsTheReferenceLoader(int blockSize, bool longPointers, int slack)
    {
        var u64Geo = new BtreeGeometry(blockSize, longPointers, 16, 8, false);
        var ivGeo = new BtreeGeometry(blockSize, longPointers, 16, 12, true);
        foreach (long n in Counts(u64Geo))
            SameBlocks(new U64Ops(longPointers), U64Records(n), blockSize, slack);
        foreach (long n in Counts(ivGeo))
            SameBlocks(new IntervalOps(longPointers), IntervalRecords(n), blockSize, slack);
    }

    static long[] Counts(BtreeGeometry g) =>
        [0, 1, 2, g.LeafMaxRecords - 1, g.LeafMaxRecords, g.LeafMaxRecords + 1, (long)g.LeafMaxRecords * g.NodeMaxRecords + 1, 7777];

    static void SameBlocks<TOps>(TOps ops, List<byte[]> records, int blockSize, int slack) where TOps : struct, IBtreeOps
    {
        {
            var fastStore = new BtreeTestStore(blockSize);
            var fastRoot = new BtreeRootValue(BtreeHeader.NullPointer, 1);
            var fast = new Btree<TOps>(ops, fastStore, fastRoot, BtreeTestTrees.Uuid, 7);
            var plan = BtreeBulkLoader.ComputeGeometry(fast.Geometry, records.Count, slack, slack);
            var claims = new GarbageClaims(fastStore);
            var source = new ListSource(records);
            long used = BtreeBulkLoader.Load(fast, plan, ref source, claims.Claim);
            fastStore.AssertNoHolds();

            var refStore = new BtreeTestStore(blockSize);
            var refRoot = new BtreeRootValue(BtreeHeader.NullPointer, 1);
            var reference = new Btree<TOps>(ops, refStore, refRoot, BtreeTestTrees.Uuid, 7);
            var refClaims = new GarbageClaims(refStore);
            var refSource = new ListSource(records);
            long refUsed = ReferenceLoad(reference, plan, ref refSource, refClaims.Claim);

            Assert.Equal(plan.TotalBlocks, used);
            Assert.Equal(refUsed, used);
            Assert.Equal(refClaims.Claimed, claims.Claimed);
            Assert.Equal(refRoot.Pointer, fastRoot.Pointer);
            Assert.Equal(refRoot.Height, fastRoot.Height);
            Assert.Equal(used, fastRoot.BlockCount);
            foreach (long p in claims.Claimed)
                Assert.True(refStore.RawBlock(p).AsSpan().SequenceEqual(fastStore.RawBlock(p)), $"{ops.Name} n={records.Count} bs={blockSize} slack={slack}: block {p} differs");
            var report = fast.Check();
            Assert.True(report.IsClean, report.ToString());
            Assert.Equal(records.Count, report.Records);
            for (int l = 0; l < plan.Height; l++) Assert.Equal(plan.BlocksPerLevel[l], report.BlocksPerLevel[l]);
        }
    }

    /// <summary>The loader as it was before the one-pass rewrite (commit b866496), kept as the reference layout.</summary>
    static unsafe long ReferenceLoad<TOps, TSource>(Btree<TOps> tree, BtreeBulkGeometry plan, ref TSource source, Func<long> claimBlock)
        where TOps : struct, IBtreeOps where TSource : IBtreeRecordSource
    {
        var geo = tree.Geometry;
        var store = tree.Store;
        var ops = tree.Ops;
        bool lf = geo.LongPointers;
        int rs = geo.RecordSize, ks = geo.KeySize;
        long used = 0;
        long firstOfLevel = BtreeHeader.NullPointer;
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
            for (long i = 0; i < count; i++)
            {
                int entries = perBlock + (i < extra ? 1 : 0);
                long ptr = claimBlock();
                used++;
                var cur = store.GetNew(ptr, tree.Verifier);
                var b = new Span<byte>(cur.Data, geo.BlockSize);
                BtreeHeader.Initialize(b, lf, ops.Magic, level, store.PointerToDaddr(ptr), tree.Verifier.Uuid, tree.Owner);
                if (level == 0)
                {
                    if (entries > 0) source.Fill(b.Slice(geo.RecordOffset(0), entries * rs), entries);
                }
                else
                {
                    for (int e = 0; e < entries; e++)
                    {
                        var child = store.Read(childCursor, tree.Verifier);
                        var c = new ReadOnlySpan<byte>(child.Data, geo.BlockSize);
                        BtreeKeys.ComputeBlockKeys(ops, geo, c, level - 1, low, high, tmp);
                        low.CopyTo(b[geo.KeyOffset(e)..]);
                        if (geo.Overlapping) high.CopyTo(b[(geo.KeyOffset(e) + ks)..]);
                        BtreeHeader.WritePointer(b[geo.PointerOffset(e, geo.NodeMaxRecords)..], lf, childCursor);
                        childCursor = BtreeHeader.RightSibling(c, lf);
                        store.Release(child);
                    }
                }
                BtreeHeader.SetNumRecords(b, entries);
                if (!prev.IsNull)
                {
                    BtreeHeader.SetLeftSibling(b, lf, prev.Pointer);
                    BtreeHeader.SetRightSibling(new Span<byte>(prev.Data, geo.BlockSize), lf, ptr);
                    store.Release(prev);
                }
                else first = ptr;
                prev = cur;
            }
            if (!prev.IsNull) store.Release(prev);
            firstOfLevel = first;
        }
        tree.Root.Set(firstOfLevel, plan.Height);
        return used;
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void BulkLoadRefusesRecordsOutOfOrderAnywhereAndHandsItsBlocksBack(bool overlapping)
    {
        var geo = overlapping ? new BtreeGeometry(512, false, 16, 12, true) : new BtreeGeometry(512, false, 16, 8, false);
        int n = 5000;
        var plan = BtreeBulkLoader.ComputeGeometry(geo, n);
        int firstLeaf = plan.RecordsPerBlock[0] + (plan.ExtraBlocks[0] > 0 ? 1 : 0);
        // Inside the first leaf, the first record of the second leaf (order across leaves), in the last leaf, the very last.
        foreach (int at in new[] { 1, 7, firstLeaf, firstLeaf + 1, n / 2, n - 1 })
        {
            foreach (bool duplicate in new[] { false, true })
            {
                var records = overlapping ? IntervalRecords(n) : U64Records(n);
                // Record `at` becomes equal to (duplicate) or below (swap) the one before it.
                if (duplicate) records[at] = (byte[])records[at - 1].Clone();
                else (records[at - 1], records[at]) = (records[at], records[at - 1]);
                var store = new BtreeTestStore(512);
                var root = new BtreeRootValue(BtreeHeader.NullPointer, 1);
                var claimed = new List<long>();
                var returned = new List<long>();
                long Claim() { long p = store.AllocateBlock(); claimed.Add(p); return p; }
                void Unclaim(long p) { returned.Add(p); store.FreeBlock(p); }
                var source = new ListSource(records);
                var e = overlapping
                    ? Assert.Throws<ArgumentException>(() => BtreeBulkLoader.Load(new Btree<IntervalOps>(new IntervalOps(false), store, root, BtreeTestTrees.Uuid, 7), plan, ref source, Claim, true, Unclaim))
                    : Assert.Throws<ArgumentException>(() => BtreeBulkLoader.Load(new Btree<U64Ops>(new U64Ops(false), store, root, BtreeTestTrees.Uuid, 7), plan, ref source, Claim, true, Unclaim));
                Assert.Contains("out of order", e.Message, StringComparison.Ordinal);
                Assert.Equal(claimed, returned);
                Assert.Equal(0, store.LiveBlocks);
                store.AssertNoHolds();
                Assert.Equal(BtreeHeader.NullPointer, root.Pointer);
                // The refused record is in the leaf the plan puts it in: blocks up to and including that leaf were claimed.
                Assert.InRange(claimed.Count, 1, plan.BlocksPerLevel[0]);
            }
        }
    }

    [Fact]
    public void BulkLoadThatRunsOutOfBlocksHandsEveryClaimedBlockBack()
    {
        var records = IntervalRecords(20_000);
        var geo = new BtreeGeometry(512, true, 16, 12, true);
        var plan = BtreeBulkLoader.ComputeGeometry(geo, records.Count);
        Assert.True(plan.Height >= 3);
        // Fail at the first leaf, the last leaf, the first node, and the root.
        foreach (long failAt in new[] { 0, plan.BlocksPerLevel[0] - 1, plan.BlocksPerLevel[0], plan.TotalBlocks - 1 })
        {
            var store = new BtreeTestStore(512);
            var root = new BtreeRootValue(BtreeHeader.NullPointer, 1);
            var tree = new Btree<IntervalOps>(new IntervalOps(true), store, root, BtreeTestTrees.Uuid, 7);
            var claimed = new List<long>();
            var returned = new List<long>();
            long Claim()
            {
                if (claimed.Count == failAt) throw new XfbtreeTestFullException();
                long p = store.AllocateBlock();
                claimed.Add(p);
                return p;
            }
            void Unclaim(long p) { returned.Add(p); store.FreeBlock(p); }
            var source = new ListSource(records);
            Assert.Throws<XfbtreeTestFullException>(() => BtreeBulkLoader.Load(tree, plan, ref source, Claim, true, Unclaim));
            Assert.Equal(failAt, claimed.Count);
            Assert.Equal(claimed, returned);
            Assert.Equal(0, store.LiveBlocks);
            store.AssertNoHolds();
            Assert.Equal(BtreeHeader.NullPointer, root.Pointer);
        }
    }

    sealed class XfbtreeTestFullException : Exception;

    [Fact]
    public void BulkLoadRefusesAPlanThatDoesNotFitTheTree()
    {
        var store = new BtreeTestStore(512);
        var tree = new Btree<U64Ops>(new U64Ops(false), store, new BtreeRootValue(BtreeHeader.NullPointer, 1), BtreeTestTrees.Uuid, 7);
        // Full 4 KiB leaves hold more records than a 512-byte block can.
        var plan = BtreeBulkLoader.ComputeGeometry(new BtreeGeometry(4096, false, 16, 8, false), 10_000, 0, 0);
        var source = new U64Source(3);
        Assert.Throws<ArgumentException>(() => BtreeBulkLoader.Load(tree, plan, ref source, store.AllocateBlock));
        Assert.Equal(0, store.LiveBlocks);
    }

    struct StopAfter(int limit) : IBtreeRecordVisitor
    {
        public List<byte[]>? Records;
        public bool Visit(ReadOnlySpan<byte> record)
        {
            (Records ??= new()).Add(record.ToArray());
            return Records.Count < limit;
        }
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void LeafWalkVisitsWhatQueryAllVisits_AcrossLeaves_AfterDeletesAndJoins(bool overlapping)
    {
        if (overlapping) LeafWalk(new IntervalOps(true), IntervalRecords(6000), r => IntervalOps.Key(IntervalOps.Decode(r).Start, IntervalOps.Decode(r).Owner));
        else LeafWalk(new U64Ops(false), U64Records(6000), r => r[..8]);
    }

    static void LeafWalk<TOps>(TOps ops, List<byte[]> records, Func<byte[], byte[]> keyOf) where TOps : struct, IBtreeOps
    {
        var store = new BtreeTestStore(512);
        var tree = new Btree<TOps>(ops, store, new BtreeRootValue(BtreeHeader.NullPointer, 1), BtreeTestTrees.Uuid, 7);
        using var cur = tree.CreateCursor();
        // Empty tree (a single empty root leaf).
        tree.CreateEmpty();
        var none = new CollectVisitor();
        Assert.True(cur.VisitLeafRecords(ref none));
        Assert.Null(none.Records);
        cur.Release();
        var plan = BtreeBulkLoader.ComputeGeometry(tree.Geometry, records.Count);
        var source = new ListSource(records);
        var store2 = new BtreeTestStore(512);
        var loaded = new Btree<TOps>(ops, store2, new BtreeRootValue(BtreeHeader.NullPointer, 1), BtreeTestTrees.Uuid, 7);
        BtreeBulkLoader.Load(loaded, plan, ref source, store2.AllocateBlock);
        using var c = loaded.CreateCursor();
        var rnd = new Random(3);
        var model = records.ToList();
        for (int round = 0; round < 6; round++)
        {
            var walk = new CollectVisitor();
            Assert.True(c.VisitLeafRecords(ref walk));
            var all = new CollectVisitor();
            Assert.True(c.QueryAll(ref all));
            Assert.Equal(model.Count, walk.Records?.Count ?? 0);
            for (int i = 0; i < model.Count; i++) Assert.True(model[i].AsSpan().SequenceEqual(walk.Records![i]) && model[i].AsSpan().SequenceEqual(all.Records![i]), $"record {i}");
            // Stopping: at the end of a leaf, the start of the next one, in the middle; the cursor stays on that record.
            foreach (int stop in new[] { 1, plan.RecordsPerBlock[0], plan.RecordsPerBlock[0] + 1, model.Count / 2, model.Count })
            {
                if (stop > model.Count || stop < 1) continue;
                var v = new StopAfter(stop);
                Assert.False(c.VisitLeafRecords(ref v));
                Assert.Equal(stop, v.Records!.Count);
                Assert.True(c.HasRecord);
                Assert.True(c.Current.SequenceEqual(model[stop - 1]));
            }
            // Deletes (borrows and joins: leaves go below minrecs and merge), then the walk again.
            for (int d = 0; d < model.Count / 3 && model.Count > 1; d++)
            {
                int victim = rnd.Next(model.Count);
                Assert.True(c.Lookup(keyOf(model[victim]), BtreeLookup.Equal));
                c.Delete();
                model.RemoveAt(victim);
            }
            c.Release();
            Assert.True(loaded.Check().IsClean);
        }
        store2.AssertNoHolds();
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void LeafWalkOverDamagedTreesEndsInCorruptionOrAgreesWithQueryAll(bool overlapping)
    {
        var rnd = new Random(overlapping ? 21 : 22);
        int corrupt = 0;
        for (int round = 0; round < 300; round++)
        {
            var store = new BtreeTestStore(512);
            int n = rnd.Next(1, 3000);
            bool detected = overlapping
                ? DamagedRound(new IntervalOps(round % 2 == 0), store, IntervalRecords(n), rnd)
                : DamagedRound(new U64Ops(round % 2 == 0), store, U64Records(n), rnd);
            if (detected) corrupt++;
            store.AssertNoHolds();
        }
        Assert.True(corrupt > 300 / 4, $"only {corrupt} of 300 damaged trees were detected");
    }

    static bool DamagedRound<TOps>(TOps ops, BtreeTestStore store, List<byte[]> records, Random rnd) where TOps : struct, IBtreeOps
    {
        var tree = new Btree<TOps>(ops, store, new BtreeRootValue(BtreeHeader.NullPointer, 1), BtreeTestTrees.Uuid, 7);
        var plan = BtreeBulkLoader.ComputeGeometry(tree.Geometry, records.Count);
        var source = new ListSource(records);
        BtreeBulkLoader.Load(tree, plan, ref source, store.AllocateBlock);
        for (int f = rnd.Next(1, 5); f > 0; f--)
        {
            var raw = store.RawBlock(rnd.Next(1, (int)plan.TotalBlocks + 1));
            // Biased to the header (siblings, numrecs, level) and the first records/keys.
            raw[rnd.Next(3) == 0 ? rnd.Next(0, 96) : rnd.Next(0, raw.Length)] ^= (byte)rnd.Next(1, 256);
        }
        using var cur = tree.CreateCursor();
        List<byte[]>? walked = null, queried = null;
        bool walkFailed = false, queryFailed = false;
        try
        {
            var w = new CollectVisitor();
            cur.VisitLeafRecords(ref w);
            walked = w.Records ?? [];
        }
        catch (CorruptionException) { walkFailed = true; }
        cur.Release();
        try
        {
            var q = new CollectVisitor();
            cur.QueryAll(ref q);
            queried = q.Records ?? [];
        }
        catch (CorruptionException) { queryFailed = true; }
        cur.Release();
        // Both walks make the same checks on the same blocks: they fail together or give the same records.
        Assert.Equal(queryFailed, walkFailed);
        if (!walkFailed)
        {
            Assert.Equal(queried!.Count, walked!.Count);
            for (int i = 0; i < walked.Count; i++) Assert.True(queried[i].AsSpan().SequenceEqual(walked[i]));
        }
        return walkFailed;
    }
}
