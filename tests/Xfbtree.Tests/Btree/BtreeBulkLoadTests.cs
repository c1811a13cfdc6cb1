using System.Buffers.Binary;
using System.Diagnostics;
using Xfbtree.Btree;
using Xunit.Abstractions;

namespace Xfbtree.Tests.Btree;

internal struct U64Source(ulong stride) : IBtreeRecordSource
{
    ulong _next;
    public void Fill(Span<byte> destination, int count)
    {
        for (int i = 0; i < count; i++, _next++)
        {
            BinaryPrimitives.WriteUInt64BigEndian(destination[(i * 16)..], _next * stride);
            BinaryPrimitives.WriteUInt64BigEndian(destination[(i * 16 + 8)..], _next);
        }
    }
}

internal struct ListSource(List<byte[]> records) : IBtreeRecordSource
{
    int _next;
    public void Fill(Span<byte> destination, int count)
    {
        for (int i = 0; i < count; i++) records[_next++].CopyTo(destination[(i * records[0].Length)..]);
    }
}

/// <summary>Bulk loader: geometry, fill rules (minrecs..maxrecs per non-root block), exact high keys, equality with insert-built trees.</summary>
public sealed class BtreeBulkLoadTests(ITestOutputHelper output)
{
    public static IEnumerable<object[]> Cases()
    {
        foreach (int bs in new[] { 512, 4096, 65536 })
            foreach (int slack in new[] { -1, 0, 2 })
                yield return [bs, slack];
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void BtreeBulkLoadBoundaryCounts(int blockSize, int slack)
    {
        var geo = new BtreeGeometry(blockSize, false, 16, 8, false);
        long leafMax = geo.LeafMaxRecords;
        foreach (long n in new[] { 0, 1, leafMax, leafMax + 1, leafMax * geo.NodeMaxRecords + 1, 20000 })
        {
            var (tree, store) = Load(blockSize, n, slack, out var plan);
            var report = tree.Check();
            Assert.True(report.IsClean, $"n={n}: {report}");
            Assert.Equal(n, report.Records);
            Assert.Equal(plan.TotalBlocks, report.Blocks);
            Assert.Equal(plan.TotalBlocks, store.LiveBlocks);
            Assert.Equal(plan.Height, tree.Root.Height);
            for (int l = 0; l < plan.Height; l++) Assert.Equal(plan.BlocksPerLevel[l], report.BlocksPerLevel[l]);
            using var cur = tree.CreateCursor();
            Assert.Equal(n, cur.CountRecords());
            if (n > 0)
            {
                Assert.True(cur.Lookup(U64Ops.Key((ulong)(n - 1) * 3), BtreeLookup.Equal));
                Assert.False(cur.Lookup(U64Ops.Key(1), BtreeLookup.Equal));
            }
            // The loaded tree keeps working under inserts and deletes.
            for (ulong k = 1; k < 3000; k += 3) Assert.True(cur.Insert(U64Ops.Record(k, k)));
            for (ulong k = 0; k < (ulong)Math.Min(n, 2000); k++)
            {
                Assert.True(cur.Lookup(U64Ops.Key(k * 3), BtreeLookup.Equal));
                cur.Delete();
            }
            cur.Release();
            Assert.True(tree.Check().IsClean);
        }
    }

    static (Btree<U64Ops> Tree, BtreeTestStore Store) Load(int blockSize, long n, int slack, out BtreeBulkGeometry plan)
    {
        var store = new BtreeTestStore(blockSize);
        var staged = new BtreeRootValue(BtreeHeader.NullPointer, 1);
        var tree = new Btree<U64Ops>(new U64Ops(false), store, staged, BtreeTestTrees.Uuid, 7);
        plan = BtreeBulkLoader.ComputeGeometry(tree.Geometry, n, slack, slack);
        var source = new U64Source(3);
        long used = BtreeBulkLoader.Load(tree, plan, ref source, store.AllocateBlock);
        Assert.Equal(plan.TotalBlocks, used);
        Assert.Equal(used, staged.BlockCount);
        store.AssertNoHolds();
        return (tree, store);
    }

    [Fact]
    public void BtreeCheckHandsEveryRecordToTheCallbackInKeyOrder()
    {
        var (tree, store) = Load(512, 20_000, -1, out _);
        ulong expected = 0;
        long seen = 0;
        var report = tree.Check(long.MaxValue, rec =>
        {
            Assert.Equal(expected * 3, BinaryPrimitives.ReadUInt64BigEndian(rec));
            expected++;
            seen++;
        });
        Assert.True(report.IsClean, report.ToString());
        Assert.Equal(20_000, seen);
        Assert.Equal(report.Records, seen);
        store.AssertNoHolds();
    }

    [Fact]
    public void BtreeBulkLoadMillionRecords()
    {
        var sw = Stopwatch.StartNew();
        var (tree, store) = Load(4096, 1_000_000, -1, out var plan);
        var loadTime = sw.Elapsed;
        var report = tree.Check();
        Assert.True(report.IsClean, report.ToString());
        Assert.Equal(1_000_000, report.Records);
        output.WriteLine($"1M records: height {plan.Height}, {plan.TotalBlocks} blocks, load {loadTime.TotalMilliseconds:F0} ms, check {(sw.Elapsed - loadTime).TotalMilliseconds:F0} ms");
        store.AssertNoHolds();
    }

    [Fact]
    public void BtreeBulkLoadEqualsInsertBuiltOverlappingTree()
    {
        var rnd = new Random(11);
        var set = new SortedDictionary<(uint, ulong), uint>();
        while (set.Count < 15000) set[((uint)rnd.Next(0, 100000), (ulong)rnd.Next(0, 5))] = (uint)rnd.Next(1, rnd.Next(10) == 0 ? 5000 : 20);
        var records = set.Select(kv => IntervalOps.Record(kv.Key.Item1, kv.Value, kv.Key.Item2)).ToList();

        var (inserted, _) = BtreeTestTrees.NewTree(new IntervalOps(true), 1024);
        using (var cur = inserted.CreateCursor())
            foreach (var r in records.OrderBy(_ => rnd.Next())) Assert.True(cur.Insert(r));

        var store = new BtreeTestStore(1024);
        var staged = new BtreeRootValue(BtreeHeader.NullPointer, 1);
        var loaded = new Btree<IntervalOps>(new IntervalOps(true), store, staged, BtreeTestTrees.Uuid, 7);
        var plan = BtreeBulkLoader.ComputeGeometry(loaded.Geometry, records.Count);
        var source = new ListSource(records);
        BtreeBulkLoader.Load(loaded, plan, ref source, store.AllocateBlock);
        Assert.True(loaded.Check().IsClean);
        Assert.True(inserted.Check().IsClean);

        var a = new CollectVisitor();
        var b = new CollectVisitor();
        using (var c1 = inserted.CreateCursor()) c1.QueryAll(ref a);
        using (var c2 = loaded.CreateCursor()) c2.QueryAll(ref b);
        Assert.Equal(records.Count, a.Records.Count);
        Assert.Equal(a.Records.Count, b.Records.Count);
        for (int i = 0; i < a.Records.Count; i++) Assert.True(a.Records[i].AsSpan().SequenceEqual(b.Records[i]));
        // Same answers to overlapped queries.
        using var q1 = inserted.CreateCursor();
        using var q2 = loaded.CreateCursor();
        for (int q = 0; q < 200; q++)
        {
            uint lo = (uint)rnd.Next(0, 100000), hi = lo + (uint)rnd.Next(0, 200);
            var x = new CollectVisitor();
            var y = new CollectVisitor();
            q1.Query(IntervalOps.Key(lo, 0), IntervalOps.Key(hi, ulong.MaxValue), ref x);
            q2.Query(IntervalOps.Key(lo, 0), IntervalOps.Key(hi, ulong.MaxValue), ref y);
            Assert.Equal(x.Records?.Count ?? 0, y.Records?.Count ?? 0);
        }
    }

    [Fact]
    public void BtreeBulkLoadRejectsUnsortedInput()
    {
        var store = new BtreeTestStore(512);
        var tree = new Btree<U64Ops>(new U64Ops(false), store, new BtreeRootValue(-1, 1), BtreeTestTrees.Uuid, 7);
        var records = new List<byte[]> { U64Ops.Record(5, 0), U64Ops.Record(3, 0) };
        var plan = BtreeBulkLoader.ComputeGeometry(tree.Geometry, 2);
        var source = new ListSource(records);
        Assert.Throws<ArgumentException>(() => BtreeBulkLoader.Load(tree, plan, ref source, store.AllocateBlock));
    }

    [Fact]
    public void BtreeBulkGeometryMatchesXfsRules()
    {
        // rmapbt at 4 KiB: 168 records per leaf, 91 per node; default slack gives ~75 % full leaves.
        var geo = new BtreeGeometry(4096, false, 24, 20, true);
        Assert.Equal(168, geo.LeafMaxRecords);
        Assert.Equal(91, geo.NodeMaxRecords);
        var plan = BtreeBulkLoader.ComputeGeometry(geo, 100000);
        long recs = 0;
        for (long i = 0; i < plan.BlocksPerLevel[0]; i++)
        {
            int per = plan.RecordsPerBlock[0] + (i < plan.ExtraBlocks[0] ? 1 : 0);
            Assert.InRange(per, geo.LeafMinRecords, geo.LeafMaxRecords);
            recs += per;
        }
        Assert.Equal(100000, recs);
        // xfs_btree_bload_level_geometry: 168 - 168/4 slack = 126 wanted per leaf; 100000 = 793 * 126 + 82, and
        // 82 < minrecs (84) gives no 794th leaf, so the 82 left over go one each to the first 82 of 793 leaves.
        Assert.Equal(126, plan.RecordsPerBlock[0]);
        Assert.Equal(793, plan.BlocksPerLevel[0]);
        Assert.Equal(82, plan.ExtraBlocks[0]);
        var full = BtreeBulkLoader.ComputeGeometry(geo, 168 * 10, 0, 0);
        Assert.Equal(10, full.BlocksPerLevel[0]);
        Assert.Equal(2, full.Height);
    }
}
