using CsCheck;
using Xfbtree.InMemory;
using Xunit.Abstractions;
using Xfbtree.Tests.Support;

namespace Xfbtree.Tests.InMemory;

/// <summary>Orders unsigned 64-bit keys.</summary>
public readonly struct ULongOrder : IRecordComparer<ulong>
{
    public int Compare(in ulong x, in ulong y) => x.CompareTo(y);
}

/// <summary>A 16-byte value for the dictionary-shaped map tests.</summary>
public readonly record struct Payload(ulong A, uint B, uint C);

/// <summary>
/// The batch writes, upserts, clears, first/last and descending ranges of the typed maps, and the dictionary-shaped
/// <see cref="ShmemMap{TKey, TValue, TComparer}"/>, each against a model (SortedSet / SortedDictionary) after every
/// step, with the structure checker; and that none of them allocates.
/// </summary>
public sealed class ShmemMapAndBatchTests(ITestOutputHelper output)
{
    static readonly bool Long = Environment.GetEnvironmentVariable("XFBTREE_LONG_TESTS") == "1";

    [Fact]
    public void OrderedMapBatchesUpsertsAndClearsMatchTheModel()
    {
        var op = Gen.Select(Gen.Int[0, 9], Gen.UInt[0, 3000], Gen.UInt[1, 9], Gen.Int[1, 400], (kind, s, l, n) => (kind, s, l, n));
        op.Array[1, 60].Sample(ops =>
        {
            using var map = new ShmemBTree<MapRecord, MapRecordComparer>();
            var model = new SortedDictionary<(uint, ulong, ulong), MapRecord>();
            var rnd = new Random((int)ops[0].s);
            foreach (var (kind, s, l, n) in ops)
            {
                var batch = Enumerable.Range(0, n).Select(_ => new MapRecord((uint)rnd.Next(3000), l, (ulong)rnd.Next(3), 0)).ToArray();
                switch (kind)
                {
                    case 0:
                    case 1:
                    {
                        int added = map.InsertMany(batch);
                        int expected = 0;
                        foreach (var r in batch.DistinctBy(Key))
                            if (model.TryAdd(Key(r), r)) expected++;
                        Assert.Equal(expected, added);
                        break;
                    }
                    case 2:
                    {
                        int removed = map.RemoveMany(batch);
                        Assert.Equal(batch.DistinctBy(Key).Count(r => model.Remove(Key(r))), removed);
                        break;
                    }
                    case 3:
                    {
                        var r = new MapRecord(s, l, s % 3, 0);
                        Assert.Equal(model.ContainsKey(Key(r)), map.Upsert(r));
                        model[Key(r)] = r;
                        break;
                    }
                    case 4:
                        if (n % 7 == 0)
                        {
                            map.Clear();
                            model.Clear();
                        }
                        break;
                    case 5:
                    {
                        bool any = map.TryGetFirst(out var first);
                        Assert.Equal(model.Count > 0, any);
                        if (any) Assert.Equal(model.First().Value, first);
                        any = map.TryGetLast(out var last);
                        Assert.Equal(model.Count > 0, any);
                        if (any) Assert.Equal(model.Last().Value, last);
                        break;
                    }
                    default:
                    {
                        var low = new MapRecord(s, 0, 0, 0);
                        var high = new MapRecord(s + (uint)n * 10, 0, 3, 0);
                        var expected = model.Values.Where(r => Cmp(r, low) >= 0 && Cmp(r, high) <= 0).ToList();
                        var down = new List<MapRecord>();
                        foreach (ref readonly var r in map.RangeDescending(low, high)) down.Add(r);
                        down.Reverse();
                        Assert.Equal(expected, down);
                        var up = new List<MapRecord>();
                        foreach (ref readonly var r in map.Range(low, high)) up.Add(r);
                        Assert.Equal(expected, up);
                        break;
                    }
                }
                Assert.Equal(model.Count, map.Count);
            }
            var all = new List<MapRecord>();
            foreach (ref readonly var r in map.Descending()) all.Add(r);
            all.Reverse();
            Assert.Equal(model.Values.ToList(), all);
            Assert.Empty(map.CheckStructure());
        }, iter: Long ? 400 : 40);
    }

    static (uint, ulong, ulong) Key(MapRecord r) => (r.Start, r.Owner, r.Offset);
    static int Cmp(MapRecord a, MapRecord b) => default(MapRecordComparer).Compare(a, b);

    [Fact]
    public void IntervalMapBatchesUpsertsAndClearsMatchTheModel()
    {
        var rnd = new Random(11);
        using var map = new ShmemIntervalBTree<MapRecord, MapIntervalComparer>();
        var model = new SortedDictionary<(uint, ulong, ulong), MapRecord>();
        for (int round = 0; round < (Long ? 400 : 60); round++)
        {
            var batch = Enumerable.Range(0, rnd.Next(1, 500)).Select(_ => new MapRecord((uint)rnd.Next(20_000), (uint)rnd.Next(1, 60), (ulong)rnd.Next(3), 0)).ToArray();
            switch (rnd.Next(6))
            {
                case 0:
                case 1:
                    Assert.Equal(batch.DistinctBy(Key).Count(r => model.TryAdd(Key(r), r)), map.InsertMany(batch));
                    break;
                case 2:
                    Assert.Equal(batch.DistinctBy(Key).Count(r => model.Remove(Key(r))), map.RemoveMany(batch));
                    break;
                case 3:
                    foreach (var r in batch.Take(20))
                    {
                        Assert.Equal(model.ContainsKey(Key(r)), map.Upsert(r)); // a longer or shorter extent: the high keys move
                        model[Key(r)] = r;
                    }
                    break;
                case 4:
                    if (rnd.Next(8) == 0)
                    {
                        map.Clear();
                        model.Clear();
                    }
                    break;
                default:
                {
                    uint low = (uint)rnd.Next(20_000), high = low + (uint)rnd.Next(500);
                    var visitor = new Collect();
                    map.QueryOverlapping(new MapRecord(low, 0, 0, 0), new MapRecord(high, 0, ulong.MaxValue, ulong.MaxValue), ref visitor);
                    var expected = model.Values.Where(r => r.Start <= high && r.Start + r.Length - 1 >= low).ToList();
                    Assert.Equal(expected, visitor.Seen ?? new List<MapRecord>());
                    break;
                }
            }
            Assert.Equal(model.Count, map.Count);
            Assert.Equal(model.Count > 0, map.TryGetFirst(out var first));
            if (model.Count > 0)
            {
                Assert.Equal(model.First().Value, first);
                Assert.True(map.TryGetLast(out var last));
                Assert.Equal(model.Last().Value, last);
            }
        }
        var all = new Collect();
        map.VisitAll(ref all);
        Assert.Equal(model.Values.ToList(), all.Seen ?? new List<MapRecord>());
        Assert.Empty(map.CheckStructure());
    }

    struct Collect : IRecordVisitor<MapRecord>
    {
        public List<MapRecord>? Seen;
        public bool Visit(in MapRecord record)
        {
            (Seen ??= new()).Add(record);
            return true;
        }
    }

    [Fact]
    public void DictionaryMapMatchesSortedDictionary()
    {
        var op = Gen.Select(Gen.Int[0, 9], Gen.ULong[0, 5000], Gen.UInt, Gen.Int[1, 300], (kind, k, v, n) => (kind, k, v, n));
        op.Array[1, 80].Sample(ops =>
        {
            using var map = new ShmemMap<ulong, Payload, ULongOrder>();
            var model = new SortedDictionary<ulong, Payload>();
            var rnd = new Random((int)ops[0].v);
            foreach (var (kind, k, v, n) in ops)
            {
                var value = new Payload(k * 3, v, (uint)n);
                switch (kind)
                {
                    case 0:
                        Assert.Equal(model.TryAdd(k, value), map.TryAdd(k, value));
                        break;
                    case 1:
                        Assert.Equal(model.ContainsKey(k), map.Set(k, value));
                        model[k] = value;
                        break;
                    case 2:
                        Assert.Equal(model.Remove(k), map.Remove(k));
                        break;
                    case 3:
                    {
                        Assert.Equal(model.TryGetValue(k, out var expected), map.TryGetValue(k, out var got));
                        Assert.Equal(expected, got);
                        Assert.Equal(model.ContainsKey(k), map.ContainsKey(k));
                        break;
                    }
                    case 4:
                    {
                        // Repeated keys too: the last value given for a key wins.
                        var keys = Enumerable.Range(0, n).Select(_ => (ulong)rnd.Next(5000)).ToArray();
                        var values = keys.Select((x, i) => new Payload(x, v, (uint)i)).ToArray();
                        int added = keys.Distinct().Count(x => !model.ContainsKey(x));
                        for (int i = 0; i < keys.Length; i++) model[keys[i]] = values[i];
                        Assert.Equal(added, map.SetMany(keys, values));
                        break;
                    }
                    case 5:
                    {
                        var keys = Enumerable.Range(0, n).Select(_ => (ulong)rnd.Next(5000)).ToArray();
                        var values = new Payload[n];
                        var found = new bool[n];
                        int hits = map.TryGetValues(keys, values, found);
                        Assert.Equal(keys.Count(model.ContainsKey), hits);
                        for (int i = 0; i < n; i++)
                        {
                            Assert.Equal(model.TryGetValue(keys[i], out var expected), found[i]);
                            if (found[i]) Assert.Equal(expected, values[i]);
                        }
                        break;
                    }
                    case 6:
                        if (n % 9 == 0)
                        {
                            map.Clear();
                            model.Clear();
                        }
                        break;
                    case 7:
                    {
                        Assert.Equal(model.Count > 0, map.TryGetFirst(out var fk, out var fv));
                        if (model.Count > 0) Assert.Equal(model.First(), new KeyValuePair<ulong, Payload>(fk, fv));
                        Assert.Equal(model.Count > 0, map.TryGetLast(out var lk, out var lv));
                        if (model.Count > 0) Assert.Equal(model.Last(), new KeyValuePair<ulong, Payload>(lk, lv));
                        break;
                    }
                    default:
                    {
                        ulong high = k + (ulong)n * 5;
                        var expected = model.Where(e => e.Key >= k && e.Key <= high).ToList();
                        var got = new List<KeyValuePair<ulong, Payload>>();
                        foreach (ref readonly var e in map.Range(k, high)) got.Add(new(e.Key, e.Value));
                        Assert.Equal(expected, got);
                        got.Clear();
                        foreach (ref readonly var e in map.RangeDescending(k, high)) got.Add(new(e.Key, e.Value));
                        got.Reverse();
                        Assert.Equal(expected, got);
                        break;
                    }
                }
                Assert.Equal(model.Count, map.Count);
            }
            var all = new List<KeyValuePair<ulong, Payload>>();
            foreach (ref readonly var e in map) all.Add(new(e.Key, e.Value));
            Assert.Equal(model.ToList(), all);
            Assert.Empty(map.CheckStructure());
        }, iter: Long ? 300 : 30);
    }

    /// <summary>
    /// Batches longer than one sort chunk (1 MiB of 24-byte records: three chunks here) with repeats across chunks: the
    /// first of a key wins in InsertMany, the last in SetMany, RemoveMany counts each key once; checked against models.
    /// </summary>
    [Fact]
    public void BatchesOfSeveralChunksKeepTheFirstOrLastOfAKey()
    {
        var rnd = new Random(23);
        const int n = 100_000;
        var records = Enumerable.Range(0, n).Select(i => new MapRecord((uint)rnd.Next(60_000), (uint)i + 1, 0, 0)).ToArray();
        using var tree = new ShmemBTree<MapRecord, MapRecordComparer>();
        var firsts = records.DistinctBy(Key).ToDictionary(Key);
        Assert.Equal(firsts.Count, tree.InsertMany(records));
        var all = new List<MapRecord>();
        foreach (ref readonly var r in tree.Range(new MapRecord(0, 0, 0, 0), new MapRecord(uint.MaxValue, 0, ulong.MaxValue, ulong.MaxValue))) all.Add(r);
        Assert.Equal(firsts.Values.OrderBy(r => r.Start).ToList(), all);
        var removals = records.AsSpan(0, n / 2).ToArray();
        int expectedRemoved = removals.DistinctBy(Key).Count();
        Assert.Equal(expectedRemoved, tree.RemoveMany(removals));
        Assert.Equal(firsts.Count - expectedRemoved, tree.Count);
        Assert.Empty(tree.CheckStructure());

        using var map = new ShmemMap<ulong, Payload, ULongOrder>();
        var keys = records.Select(r => (ulong)r.Start).ToArray();
        var values = records.Select(r => new Payload(r.Start, r.Length, 0)).ToArray();
        var lasts = new Dictionary<ulong, Payload>();
        for (int i = 0; i < n; i++) lasts[keys[i]] = values[i];
        Assert.Equal(lasts.Count, map.SetMany(keys, values));
        Assert.Equal(lasts.Count, map.Count);
        foreach (var (k, v) in lasts)
        {
            Assert.True(map.TryGetValue(k, out var got));
            Assert.Equal(v, got);
        }
        Assert.Empty(map.CheckStructure());
    }

    /// <summary>
    /// Batches whose keys share leaves go in (and out) as runs: one merge per leaf instead of one shift per record. The
    /// records end as the model says, the structure is sound, and the runs did the work (counted by the cursor).
    /// </summary>
    [Fact]
    public void BatchesSharingLeavesAreMergedAsRuns()
    {
        var rnd = new Random(29);
        using var tree = new ShmemBTree<MapRecord, MapRecordComparer>();
        var model = new SortedDictionary<(uint, ulong, ulong), MapRecord>();
        for (int round = 0; round < 6; round++)
        {
            var batch = Enumerable.Range(0, 3000).Select(_ => new MapRecord((uint)rnd.Next(20_000), (uint)round, (ulong)rnd.Next(2), 0)).ToArray();
            int expected = 0;
            foreach (var r in batch)
                if (model.TryAdd(Key(r), r)) expected++;
            Assert.Equal(expected, tree.InsertMany(batch));
            var removals = batch.Where((_, i) => i % 3 == 0).Select(r => r with { Length = 99 }).ToArray();
            int expectedRemoved = removals.DistinctBy(Key).Count(r => model.Remove(Key(r)));
            Assert.Equal(expectedRemoved, tree.RemoveMany(removals));
            Assert.Equal(model.Count, tree.Count);
            Assert.Empty(tree.CheckStructure());
        }
        var all = new List<MapRecord>();
        foreach (ref readonly var r in tree.Range(new MapRecord(0, 0, 0, 0), new MapRecord(uint.MaxValue, 0, ulong.MaxValue, ulong.MaxValue))) all.Add(r);
        Assert.Equal(model.Values.ToList(), all);
        var cursor = tree.WriterCursorForTests;
        output.WriteLine($"run inserts {cursor.RunInserts}, run deletes {cursor.RunDeletes}, records {tree.Count}");
        Assert.True(cursor.RunInserts > 5000, $"only {cursor.RunInserts} records went in by runs");
        Assert.True(cursor.RunDeletes > 1000, $"only {cursor.RunDeletes} records went out by runs");
    }

    /// <summary>The same for the interval map, whose parents' high keys must follow a run (checked by the structure checker).</summary>
    [Fact]
    public void IntervalMapRunsKeepHighKeys()
    {
        var rnd = new Random(31);
        using var tree = new ShmemIntervalBTree<MapRecord, MapIntervalComparer>();
        var model = new SortedDictionary<(uint, ulong, ulong), MapRecord>();
        for (int round = 0; round < 4; round++)
        {
            var batch = Enumerable.Range(0, 2000).Select(_ => new MapRecord((uint)rnd.Next(10_000), (uint)rnd.Next(1, 500), (ulong)rnd.Next(2), 0)).ToArray();
            int expected = 0;
            foreach (var r in batch)
                if (model.TryAdd(Key(r), r)) expected++;
            Assert.Equal(expected, tree.InsertMany(batch));
            Assert.Empty(tree.CheckStructure());
            var removals = batch.Where((_, i) => i % 2 == 0).ToArray();
            Assert.Equal(removals.DistinctBy(Key).Count(r => model.Remove(Key(r))), tree.RemoveMany(removals));
            Assert.Equal(model.Count, tree.Count);
            Assert.Empty(tree.CheckStructure());
        }
    }

    struct SumLengths : IRecordVisitor<MapRecord>
    {
        public long Sum;
        public bool Visit(in MapRecord record)
        {
            Sum += record.Length;
            return true;
        }
    }

    [Fact]
    public void NewOperationsAllocateNothing()
    {
        var rnd = new Random(5);
        var records = Enumerable.Range(0, 40_000).Select(_ => new MapRecord((uint)rnd.Next(), 1, (ulong)rnd.Next(4), 0)).ToArray();
        var keys = records.Select(r => (ulong)r.Start << 2 | r.Owner).ToArray();
        var values = keys.Select(k => new Payload(k, 1, 2)).ToArray();
        var got = new Payload[256];
        var found = new bool[256];
        using var tree = new ShmemBTree<MapRecord, MapRecordComparer>();
        using var map = new ShmemMap<ulong, Payload, ULongOrder>();
        using var intervals = new ShmemIntervalBTree<MapRecord, MapIntervalComparer>();
        using var prefixed = new ShmemBTree<MapRecord, ShmemSidecarTests.ExactPrefix>(); // key-prefix sidecars
        var recs = new MapRecord[256];
        var sumVisitor = new SumLengths();
        long sum = 0;
        void Round()
        {
            intervals.InsertMany(records);
            for (uint q = 0; q < 200; q++)
                intervals.QueryOverlapping(new MapRecord(q << 22, 0, 0, 0), new MapRecord((q << 22) + (1u << 20), 0, ulong.MaxValue, ulong.MaxValue), ref sumVisitor);
            intervals.RemoveMany(records);
            tree.InsertMany(records);
            foreach (var r in records.AsSpan(0, 1000)) tree.Upsert(r with { Length = 2 });
            if (tree.TryGetFirst(out var f)) sum += f.Length;
            if (tree.TryGetLast(out var l)) sum += l.Length;
            foreach (ref readonly var r in tree.RangeDescending(records[0], records[0] with { Start = records[0].Start + 10_000_000 })) sum += r.Length;
            tree.RemoveMany(records.AsSpan(0, 20_000));
            tree.Clear();
            map.SetMany(keys, values);
            foreach (var k in keys.AsSpan(0, 1000)) { map.Set(k, values[0]); map.TryAdd(k + 1, values[1]); }
            for (int i = 0; i + 256 <= 4096; i += 256) sum += map.TryGetValues(keys.AsSpan(i, 256), got, found);
            foreach (var k in keys.AsSpan(0, 1000)) if (map.TryGetValue(k, out var v)) sum += v.B;
            foreach (ref readonly var e in map.Range(keys[0], keys[0] + 100_000_000)) sum += e.Value.C;
            foreach (var k in keys.AsSpan(0, 1000)) map.Remove(k);
            map.Clear();
            prefixed.InsertMany(records);
            for (int i = 0; i + 256 <= 4096; i += 256) sum += prefixed.TryFindMany(records.AsSpan(i, 256), recs, found);
            foreach (var r in records.AsSpan(0, 1000))
            {
                if (prefixed.TryFind(r, out var x)) sum += x.Length;
                prefixed.Remove(r);
                prefixed.Insert(r);
            }
            prefixed.RemoveMany(records.AsSpan(0, 20_000));
            prefixed.Clear();
        }
        Round(); // warm up: JIT, the tables' sizes
        long allocated = AllocationProbe.Measure(Round);
        output.WriteLine($"allocated {allocated} bytes (sum {sum}, {sumVisitor.Sum})");
        Assert.Equal(0, allocated);
    }
}
