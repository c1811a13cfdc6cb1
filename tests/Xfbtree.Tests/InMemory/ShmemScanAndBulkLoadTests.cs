using Xfbtree.Btree;
using Xfbtree.InMemory;
using Xfbtree.Tests.Support;

namespace Xfbtree.Tests.InMemory;

/// <summary>
/// The typed maps' fast paths: the range enumerator that walks a leaf's records in place (bounds at leaf edges,
/// after deletes and joins, empty trees, invalidation), the interval map's VisitAll, and bulk load (exact geometry,
/// checker clean, unsorted input refused with nothing kept).
/// </summary>
public sealed class ShmemScanAndBulkLoadTests
{
    static MapRecord Rec(int i) => new((uint)i * 4, (uint)(i % 13 == 0 ? 40 : 1 + i % 3), (ulong)(i % 5), (ulong)i);

    static List<MapRecord> Enumerate(ShmemBTree<MapRecord, MapRecordComparer> map, MapRecord low, MapRecord high)
    {
        var got = new List<MapRecord>();
        foreach (ref readonly var r in map.Range(low, high)) got.Add(r);
        return got;
    }

    static List<MapRecord> All(ShmemBTree<MapRecord, MapRecordComparer> map)
    {
        var got = new List<MapRecord>();
        foreach (ref readonly var r in map) got.Add(r);
        return got;
    }

    /// <summary>Index of the first record of each leaf of a map bulk loaded with <paramref name="n"/> records (the plan's split).</summary>
    static List<int> LeafStarts(int n)
    {
        var geo = new BtreeGeometry(4096, true, 24, 24, false);
        var plan = BtreeBulkLoader.ComputeGeometry(geo, n);
        var starts = new List<int>();
        int at = 0;
        for (long i = 0; i < plan.BlocksPerLevel[0]; i++)
        {
            starts.Add(at);
            at += plan.RecordsPerBlock[0] + (i < plan.ExtraBlocks[0] ? 1 : 0);
        }
        Assert.Equal(n, at);
        return starts;
    }

    [Fact]
    public void RangesWithBoundsAtLeafEdgesMatchTheModel()
    {
        const int n = 3000;
        var records = Enumerable.Range(0, n).Select(Rec).ToArray();
        using var map = new ShmemBTree<MapRecord, MapRecordComparer>();
        map.BulkLoad(records);
        var starts = LeafStarts(n);
        Assert.True(starts.Count >= 10);
        // Every leaf's first and last record, their neighbours, and keys between records (not in the map).
        var edges = new SortedSet<int>();
        foreach (int s in starts)
            foreach (int d in new[] { -2, -1, 0, 1 })
                if (s + d >= 0 && s + d < n) edges.Add(s + d);
        edges.Add(n - 1);
        var bounds = new List<MapRecord>();
        foreach (int i in edges)
        {
            bounds.Add(records[i]);
            bounds.Add(records[i] with { Offset = records[i].Offset + 1 });   // just above record i
            bounds.Add(records[i] with { Start = records[i].Start - 1 });      // just below record i
        }
        bounds.Add(new MapRecord(0, 0, 0, 0));
        bounds.Add(new MapRecord(uint.MaxValue, 0, ulong.MaxValue, ulong.MaxValue));
        var cmp = MapRecordClassComparer.Instance;
        var rnd = new Random(1);
        for (int q = 0; q < 4000; q++)
        {
            var low = bounds[rnd.Next(bounds.Count)];
            var high = rnd.Next(4) == 0 ? low : bounds[rnd.Next(bounds.Count)];
            var expected = records.Where(r => cmp.Compare(r, low) >= 0 && cmp.Compare(r, high) <= 0).ToList();
            Assert.Equal(expected, Enumerate(map, low, high));
        }
        Assert.Equal(records, All(map));
    }

    [Fact]
    public void EnumerationMatchesTheModelAfterDeletesJoinsAndSplits()
    {
        var rnd = new Random(2);
        var records = Enumerable.Range(0, 20_000).Select(Rec).ToArray();
        using var map = new ShmemBTree<MapRecord, MapRecordComparer>();
        map.BulkLoad(records);
        var model = new SortedSet<MapRecord>(records, MapRecordClassComparer.Instance);
        for (int round = 0; round < 5; round++)
        {
            // Remove most of the records in runs (leaves drop below minrecs: borrows and joins), add some back (splits).
            int start = rnd.Next(model.Count);
            foreach (var victim in model.Skip(start).Take(3000).ToList())
            {
                Assert.True(map.Remove(victim));
                model.Remove(victim);
            }
            foreach (var victim in model.Where(_ => rnd.Next(3) == 0).ToList())
            {
                Assert.True(map.Remove(victim));
                model.Remove(victim);
            }
            for (int i = 0; i < 1500; i++)
            {
                var r = new MapRecord((uint)rnd.Next(0, 80_000), 1, (ulong)rnd.Next(5), (ulong)rnd.Next(1000));
                Assert.Equal(model.Add(r), map.Insert(r));
            }
            Assert.Empty(map.CheckStructure());
            Assert.Equal(model.ToList(), All(map));
            for (int q = 0; q < 200; q++)
            {
                var low = new MapRecord((uint)rnd.Next(0, 80_000), 0, 0, 0);
                var high = low with { Start = low.Start + (uint)rnd.Next(0, 3000), Owner = ulong.MaxValue };
                Assert.Equal(model.GetViewBetween(low, high).ToList(), Enumerate(map, low, high));
            }
        }
    }

    [Fact]
    public void EmptyTreesEnumerateNothing()
    {
        using var map = new ShmemBTree<MapRecord, MapRecordComparer>();
        Assert.Empty(All(map));
        Assert.Empty(Enumerate(map, new MapRecord(0, 0, 0, 0), new MapRecord(uint.MaxValue, 0, ulong.MaxValue, ulong.MaxValue)));
        var e = map.GetEnumerator();
        Assert.False(e.MoveNext());
        Assert.False(e.MoveNext());
        // Emptied after a bulk load (the last leaf's records removed one by one; the root collapses to a leaf).
        var records = Enumerable.Range(0, 2000).Select(Rec).ToArray();
        map.BulkLoad(records);
        foreach (var r in records) Assert.True(map.Remove(r));
        Assert.Empty(All(map));
        Assert.Empty(map.CheckStructure());
        // A range above everything and an inverted range.
        map.BulkLoad(records);
        Assert.Empty(Enumerate(map, new MapRecord(uint.MaxValue, 0, 0, 0), new MapRecord(uint.MaxValue, 0, ulong.MaxValue, ulong.MaxValue)));
        Assert.Empty(Enumerate(map, records[50], records[10]));
        Assert.Equal(new[] { records[10] }, Enumerate(map, records[10], records[10]));
    }

    [Fact]
    public void EnumeratorsContinueThroughChangesAndCurrentIsNeverStale()
    {
        var records = Enumerable.Range(0, 5000).Select(Rec).ToArray();
        var map = new ShmemBTree<MapRecord, MapRecordComparer>();
        map.BulkLoad(records);

        var e = map.GetEnumerator();
        Assert.IsType<InvalidOperationException>(CurrentThrows(ref e));  // before the first MoveNext
        for (int i = 0; i < 400; i++) Assert.True(e.MoveNext());        // past the first leaf boundaries
        Assert.Equal(records[399], e.Current);
        map.Insert(new MapRecord(1, 1, 9, 9));                          // behind: not seen, and Current is a copy
        Assert.Equal(records[399], e.Current);
        Assert.True(e.MoveNext());
        Assert.Equal(records[400], e.Current);

        // Changes behind the enumeration, reads and other enumerations leave it on its way; a removal ahead is skipped
        // and an insertion ahead is seen.
        var changes = new (Action<ShmemBTree<MapRecord, MapRecordComparer>> Change, MapRecord Next)[]
        {
            (m => m.Remove(records[3]), records[400]),
            (m => m.Insert(records[3]), records[400]),
            (m => m.TryFind(records[7], out _), records[400]),
            (m => m.Contains(records[4001]), records[400]),
            (m => { var f = m.GetEnumerator(); f.MoveNext(); }, records[400]),
            (m => { var f = m.Range(records[0], records[1]); f.MoveNext(); }, records[400]),
            (m => m.Remove(records[400]), records[401]),
            (m => m.Insert(records[400]), records[400]),
            (m => m.Insert(records[399] with { Offset = records[399].Offset + 1 }), records[399] with { Offset = records[399].Offset + 1 }),
        };
        foreach (var (change, next) in changes)
        {
            var r = map.Range(records[100], records[4000]);
            for (int i = 0; i < 300; i++) Assert.True(r.MoveNext());
            Assert.Equal(records[399], r.Current);
            change(map);
            Assert.Equal(records[399], r.Current);
            Assert.True(r.MoveNext());
            Assert.Equal(next, r.Current);
        }

        // Finished enumerators have no current record.
        var done = map.Range(records[10], records[11]);
        Assert.True(done.MoveNext());
        Assert.True(done.MoveNext());
        Assert.Equal(records[11], done.Current);
        Assert.False(done.MoveNext());
        Assert.IsType<InvalidOperationException>(CurrentThrows(ref done));
        Assert.False(done.MoveNext());

        // Dispose: moving on throws ObjectDisposedException (the current record is a copy and stays readable).
        var live = map.GetEnumerator();
        Assert.True(live.MoveNext());
        map.Dispose();
        Assert.IsType<ObjectDisposedException>(MoveNextThrows(ref live));
    }

    static Exception? CurrentThrows(ref ShmemBTree<MapRecord, MapRecordComparer>.RangeEnumerator e)
    {
        try { _ = e.Current; return null; }
        catch (Exception ex) { return ex; }
    }

    static Exception? MoveNextThrows(ref ShmemBTree<MapRecord, MapRecordComparer>.RangeEnumerator e)
    {
        try { e.MoveNext(); return null; }
        catch (Exception ex) { return ex; }
    }

    [Fact]
    public void EnumerationAndVisitAllAllocateNothing()
    {
        var records = Enumerable.Range(0, 100_000).Select(Rec).ToArray();
        using var map = new ShmemBTree<MapRecord, MapRecordComparer>();
        map.BulkLoad(records);
        using var imap = new ShmemIntervalBTree<MapRecord, MapIntervalComparer>();
        imap.BulkLoad(records);
        long sum = 0;
        var v = new SumVisitor();
        for (int warm = 0; warm < 2; warm++)
        {
            foreach (ref readonly var r in map) sum += r.Length;
            foreach (ref readonly var r in map.Range(records[10], records[90_000])) sum += r.Length;
            imap.VisitAll(ref v);
        }
        long Scan()
        {
            long before = GC.GetAllocatedBytesForCurrentThread();
            foreach (ref readonly var r in map) sum += r.Length;
            foreach (ref readonly var r in map.Range(records[10], records[90_000])) sum += r.Length;
            imap.VisitAll(ref v);
            return GC.GetAllocatedBytesForCurrentThread() - before;
        }
        Assert.Equal(0, AllocationProbe.Measure(Scan));
        Assert.True(sum > 0 && v.Sum > 0);
    }

    [Fact]
    public void BulkLoadAllocatesOnlyItsPlanWhateverTheSize()
    {
        // Warm-up at the same size: every size-dependent first use (the plan's height, commit-ahead chunk sizes, the
        // JIT's tiering of the per-leaf loops) happens outside the measurement. Then three identical rounds on fresh
        // maps: the tree's code is deterministic for the same input, so an allocation of the tree's shows in every round;
        // the runtime's own occasional bookkeeping charged to the thread (one run once saw 8200 bytes, and the runtime's
        // own tests allow GetAllocatedBytesForCurrentThread kilobytes of slack) shows in one. The bound is on the least.
        var large = Enumerable.Range(0, 300_000).Select(Rec).ToArray();
        using (var warm = new ShmemIntervalBTree<MapRecord, MapIntervalComparer>()) warm.BulkLoad(large);
        using (var warm = new ShmemBTree<MapRecord, MapRecordComparer>()) warm.BulkLoad(large);
        var interval = new List<long>();
        var plain = new List<long>();
        for (int round = 0; round < 3; round++)
        {
            using var imap = new ShmemIntervalBTree<MapRecord, MapIntervalComparer>();
            using var map = new ShmemBTree<MapRecord, MapRecordComparer>();
            long before = GC.GetAllocatedBytesForCurrentThread();
            imap.BulkLoad(large);
            interval.Add(GC.GetAllocatedBytesForCurrentThread() - before);
            before = GC.GetAllocatedBytesForCurrentThread();
            map.BulkLoad(large);
            plain.Add(GC.GetAllocatedBytesForCurrentThread() - before);
        }
        // The geometry plan (a few small arrays); nothing per leaf or per record (2400 leaves here).
        Assert.True(interval.Min() < 2048, $"interval map bulk load allocated {string.Join(", ", interval)} bytes in three rounds");
        Assert.True(plain.Min() < 2048, $"plain map bulk load allocated {string.Join(", ", plain)} bytes in three rounds");
    }

    struct SumVisitor : IRecordVisitor<MapRecord>
    {
        public long Sum;
        public bool Visit(in MapRecord record) { Sum += record.Length; return true; }
    }

    struct StopAt(int limit) : IRecordVisitor<MapRecord>
    {
        public List<MapRecord>? Seen;
        public bool Visit(in MapRecord record)
        {
            (Seen ??= new()).Add(record);
            return Seen.Count < limit;
        }
    }

    [Fact]
    public void IntervalVisitAllMatchesTheModelAndStops()
    {
        var rnd = new Random(5);
        using var map = new ShmemIntervalBTree<MapRecord, MapIntervalComparer>();
        var none = new StopAt(1);
        Assert.True(map.VisitAll(ref none));
        Assert.Null(none.Seen);
        var records = Enumerable.Range(0, 12_000).Select(Rec).ToArray();
        map.BulkLoad(records);
        var model = new SortedSet<MapRecord>(records, MapRecordClassComparer.Instance);
        foreach (var victim in model.Where(_ => rnd.Next(2) == 0).ToList())
        {
            Assert.True(map.Remove(victim));
            model.Remove(victim);
        }
        var all = new StopAt(int.MaxValue);
        Assert.True(map.VisitAll(ref all));
        Assert.Equal(model.ToList(), all.Seen);
        foreach (int stop in new[] { 1, 2, 90, 91, 92, model.Count / 2, model.Count })
        {
            var s = new StopAt(stop);
            Assert.False(map.VisitAll(ref s));
            Assert.Equal(model.Take(stop).ToList(), s.Seen);
        }
        Assert.Empty(map.CheckStructure());
    }

    public static IEnumerable<object[]> BulkSizes() => new[] { 1, 2, 126, 168, 169, 170, 25_000, 400_000 }.Select(n => new object[] { n });

    [Theory]
    [MemberData(nameof(BulkSizes))]
    public void BulkLoadBuildsTheExactGeometryAndAClearTree(int n)
    {
        var records = Enumerable.Range(0, n).Select(Rec).ToArray();
        using var map = new ShmemBTree<MapRecord, MapRecordComparer>();
        map.BulkLoad(records);
        using var imap = new ShmemIntervalBTree<MapRecord, MapIntervalComparer>();
        imap.BulkLoad(records);
        var plain = BtreeBulkLoader.ComputeGeometry(new BtreeGeometry(4096, true, 24, 24, false), n);
        var interval = BtreeBulkLoader.ComputeGeometry(new BtreeGeometry(4096, true, 24, 24, true), n);
        Assert.Equal(plain.Height, map.Height);
        Assert.Equal(interval.Height, imap.Height);
        // Exactly the planned blocks (the empty root leaf the map started with was freed).
        Assert.Equal(plain.TotalBlocks, map.BlockCount);
        Assert.Equal(interval.TotalBlocks, imap.BlockCount);
        Assert.Empty(map.CheckStructure());
        Assert.Empty(imap.CheckStructure());
        Assert.Equal(n, map.Count);
        Assert.Equal(n, imap.Count);
        Assert.Equal(records, All(map));
        var v = new StopAt(int.MaxValue);
        imap.VisitAll(ref v);
        Assert.Equal(records, v.Seen);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void UnsortedBulkLoadIsRefusedAndKeepsNothing(bool interval)
    {
        const int n = 10_000;
        var starts = LeafStarts(n);
        foreach (int at in new[] { 1, starts[1] - 1, starts[1], starts[5], n - 1 })
        {
            foreach (bool duplicate in new[] { false, true })
            {
                var records = Enumerable.Range(0, n).Select(Rec).ToArray();
                if (duplicate) records[at] = records[at - 1];
                else (records[at - 1], records[at]) = (records[at], records[at - 1]);
                if (interval)
                {
                    using var map = new ShmemIntervalBTree<MapRecord, MapIntervalComparer>();
                    Assert.Equal(1, map.BlockCount);
                    Assert.Throws<ArgumentException>(() => map.BulkLoad(records));
                    Assert.Equal(1, map.BlockCount);
                    Assert.Equal(0, map.Count);
                    Assert.Equal(1, map.Height);
                    Assert.Empty(map.CheckStructure());
                    // Still usable, and a sorted load still works.
                    Assert.True(map.Insert(Rec(1)));
                    Assert.True(map.Remove(Rec(1)));
                    map.BulkLoad(Enumerable.Range(0, n).Select(Rec).ToArray());
                    Assert.Equal(n, map.Count);
                    Assert.Empty(map.CheckStructure());
                }
                else
                {
                    using var map = new ShmemBTree<MapRecord, MapRecordComparer>();
                    Assert.Equal(1, map.BlockCount);
                    Assert.Throws<ArgumentException>(() => map.BulkLoad(records));
                    Assert.Equal(1, map.BlockCount);
                    Assert.Equal(0, map.Count);
                    Assert.Empty(All(map));
                    Assert.Empty(map.CheckStructure());
                    var sorted = Enumerable.Range(0, n).Select(Rec).ToArray();
                    map.BulkLoad(sorted);
                    Assert.Equal(sorted, All(map));
                }
            }
        }
    }
}
