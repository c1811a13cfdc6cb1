using System.Runtime.InteropServices;
using CsCheck;
using Xfbtree.InMemory;
using Xunit.Abstractions;
using Xfbtree.Tests.Support;

namespace Xfbtree.Tests.InMemory;

/// <summary>A 24-byte rmap-like record for the typed map tests.</summary>
[StructLayout(LayoutKind.Sequential)]
public readonly record struct MapRecord(uint Start, uint Length, ulong Owner, ulong Offset);

/// <summary>Orders by (Start, Owner, Offset); Length is payload.</summary>
public readonly struct MapRecordComparer : IRecordComparer<MapRecord>
{
    public int Compare(in MapRecord x, in MapRecord y)
    {
        if (x.Start != y.Start) return x.Start < y.Start ? -1 : 1;
        if (x.Owner != y.Owner) return x.Owner < y.Owner ? -1 : 1;
        return x.Offset.CompareTo(y.Offset);
    }
}

sealed class MapRecordClassComparer : IComparer<MapRecord>
{
    public static readonly MapRecordClassComparer Instance = new();
    public int Compare(MapRecord x, MapRecord y) => default(MapRecordComparer).Compare(x, y);
}

/// <summary>API tests of the typed ordered map: model-based against SortedSet, range enumeration, bulk load, disposal, allocation.</summary>
public sealed class ShmemBTreeOrderedMapTests(ITestOutputHelper output)
{
    [Fact]
    public void OrderedMapMatchesSortedSetModel()
    {
        var op = Gen.Select(Gen.Int[0, 3], Gen.UInt[0, 4000], Gen.UInt[1, 9], Gen.ULong[0, 2], (kind, s, l, o) => (kind, rec: new MapRecord(s, l, o, s * 2UL)));
        op.Array[1, 400].Sample(ops =>
        {
            using var map = new ShmemBTree<MapRecord, MapRecordComparer>();
            var model = new SortedSet<MapRecord>(MapRecordClassComparer.Instance);
            foreach (var (kind, rec) in ops)
            {
                switch (kind)
                {
                    case 0:
                    case 1: Assert.Equal(model.Add(rec), map.Insert(rec)); break;
                    case 2: Assert.Equal(model.Remove(rec), map.Remove(rec)); break;
                    default:
                        {
                            bool found = map.TryFind(rec, out var got);
                            Assert.Equal(model.TryGetValue(rec, out var want), found);
                            if (found) Assert.Equal(want, got);
                            var high = rec with { Start = rec.Start + 50 };
                            var expected = model.GetViewBetween(rec, high).ToList();
                            var actual = new List<MapRecord>();
                            foreach (ref readonly var r in map.Range(rec, high)) actual.Add(r);
                            Assert.Equal(expected, actual);
                            break;
                        }
                }
                Assert.Equal(model.Count, map.Count);
            }
            var all = new List<MapRecord>();
            foreach (ref readonly var r in map) all.Add(r);
            Assert.Equal(model.ToList(), all);
            Assert.Empty(map.CheckStructure());
        }, iter: 60, threads: 1);
    }

    [StructLayout(LayoutKind.Sequential, Size = 72)]
    struct Record72 { public ulong Key; }

    struct Record72Comparer : IRecordComparer<Record72>
    {
        public int Compare(in Record72 x, in Record72 y) => x.Key.CompareTo(y.Key);
    }

    [StructLayout(LayoutKind.Sequential, Size = 64)]
    struct Record64 { public ulong Key; }

    struct Record64Comparer : IRecordComparer<Record64>
    {
        public int Compare(in Record64 x, in Record64 y) => x.Key.CompareTo(y.Key);
    }

    [Fact]
    public void OrderedMapTakesRecordsUpTo64Bytes()
    {
        using (var map = new ShmemBTree<Record64, Record64Comparer>())
        {
            Assert.True(map.Insert(new Record64 { Key = 3 }));
            Assert.True(map.Contains(new Record64 { Key = 3 }));
        }
        var e = Assert.Throws<ArgumentException>(() => new ShmemBTree<Record72, Record72Comparer>());
        Assert.Contains("64 bytes", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void OrderedMapBulkLoadsSortedInput()
    {
        var records = Enumerable.Range(0, 200_000).Select(i => new MapRecord((uint)i * 4, 3, (ulong)(i % 7), 0)).ToArray();
        using var map = new ShmemBTree<MapRecord, MapRecordComparer>();
        map.BulkLoad(records);
        Assert.Equal(records.Length, map.Count);
        Assert.Empty(map.CheckStructure());
        Assert.True(map.TryFind(records[12345], out var got));
        Assert.Equal(records[12345], got);
        long i = 0;
        foreach (ref readonly var r in map) Assert.Equal(records[i++], r);
        Assert.Equal(records.Length, i);
        double perRecord = (double)map.MemoryBytes / map.Count;
        output.WriteLine($"bulk 200k: {perRecord:F1} bytes/record, height {map.Height}");
        Assert.True(perRecord <= 35, $"{perRecord} bytes per record");
        // Still a normal tree afterwards.
        Assert.True(map.Insert(new MapRecord(1, 1, 0, 0)));
        Assert.True(map.Remove(records[0]));
        Assert.Empty(map.CheckStructure());

        using var other = new ShmemBTree<MapRecord, MapRecordComparer>();
        Assert.Throws<ArgumentException>(() => other.BulkLoad(new[] { records[5], records[2] }));
        Assert.Throws<InvalidOperationException>(() => map.BulkLoad(records));
    }

    [Fact]
    public void OrderedMapEnumerationSeesChangesAheadOfItAndNotBehind()
    {
        // Enumerations are safe while the tree is written (any number of readers and one writer): a record inserted
        // ahead of the enumeration is seen, one removed ahead is not, changes behind it are not seen, and another
        // enumeration does not disturb it.
        using var map = new ShmemBTree<MapRecord, MapRecordComparer>();
        for (uint i = 0; i < 1000; i++) map.Insert(new MapRecord(i * 2, 1, 0, 0));
        var e = map.GetEnumerator();
        Assert.True(e.MoveNext());
        Assert.Equal(0u, e.Current.Start);
        map.Insert(new MapRecord(5000, 1, 0, 0));     // ahead
        map.Remove(new MapRecord(4, 1, 0, 0));        // ahead
        map.Remove(new MapRecord(0, 1, 0, 0));        // the current record: Current is a copy and stays
        Assert.Equal(0u, e.Current.Start);
        var other = map.GetEnumerator();
        Assert.True(other.MoveNext());
        var seen = new List<uint>();
        while (e.MoveNext())
        {
            seen.Add(e.Current.Start);
            if (e.Current.Start == 100) map.Insert(new MapRecord(1, 1, 0, 0)); // behind
        }
        var expected = Enumerable.Range(1, 999).Select(i => (uint)i * 2).Where(k => k != 4).Append(5000u).ToList();
        Assert.Equal(expected, seen);
        Assert.Equal(2u, other.Current.Start); // the other enumeration moved on from its own position
    }

    [Fact]
    public void OrderedMapUseAfterDisposeThrowsObjectDisposed()
    {
        var map = new ShmemBTree<MapRecord, MapRecordComparer>();
        map.Insert(new MapRecord(1, 1, 1, 1));
        map.Dispose();
        map.Dispose(); // twice is fine
        var r = new MapRecord(1, 1, 1, 1);
        Assert.Throws<ObjectDisposedException>(() => map.Insert(r));
        Assert.Throws<ObjectDisposedException>(() => map.Remove(r));
        Assert.Throws<ObjectDisposedException>(() => map.TryFind(r, out _));
        Assert.Throws<ObjectDisposedException>(() => map.Contains(r));
        Assert.Throws<ObjectDisposedException>(() => map.Count);
        Assert.Throws<ObjectDisposedException>(() => map.MemoryBytes);
        Assert.Throws<ObjectDisposedException>(() => map.BulkLoad(new[] { r }));
        Assert.Throws<ObjectDisposedException>(() => { map.GetEnumerator(); });
        Assert.Throws<ObjectDisposedException>(() => { map.Range(r, r); });
    }

    [Fact]
    public void OrderedMapOperationsAllocateNothing()
    {
        using var map = new ShmemBTree<MapRecord, MapRecordComparer>();
        var rnd = new Random(1);
        var keys = Enumerable.Range(0, 50_000).Select(_ => new MapRecord((uint)rnd.Next(), 1, (ulong)rnd.Next(4), 0)).ToArray();
        foreach (var k in keys) map.Insert(k); // warm up: blocks, JIT, internal arrays
        foreach (var k in keys) map.Remove(k);
        long sum = 0;
        long allocated = AllocationProbe.Measure(() =>
        {
            foreach (var k in keys) map.Insert(k);
            foreach (var k in keys) if (map.TryFind(k, out var f)) sum += f.Length;
            foreach (ref readonly var r in map.Range(keys[0], keys[0] with { Start = keys[0].Start + 1_000_000 })) sum += r.Length;
            foreach (var k in keys) map.Remove(k);
        });
        output.WriteLine($"allocated {allocated} bytes over {keys.Length * 3} operations (sum {sum})");
        Assert.Equal(0, allocated);
    }

    [Fact]
    public void OrderedMapGrowthAllocatesNothing_FromTheFirstInsert()
    {
        // No warm-up of the map's own tables: growing from one block to thousands (block table, free list,
        // xfile page bookkeeping) must not allocate on the managed heap either. A second map warms the JIT only, over
        // the same sizes and operations: a method first called mid-measurement (a deeper root split, a table growth)
        // is compiled on this thread, and whether a parallel test already did that differs from run to run.
        var rnd = new Random(3);
        var keys = Enumerable.Range(0, 300_000).Select(_ => new MapRecord((uint)rnd.Next(), 1, (ulong)rnd.Next(4), 0)).ToArray();
        using (var warm = new ShmemBTree<MapRecord, MapRecordComparer>())
        {
            foreach (var k in keys) warm.Insert(k);
            for (int i = 0; i + 256 <= keys.Length; i += 256) warm.TryFindMany(keys.AsSpan(i, 256), new MapRecord[256], new bool[256]);
            for (int i = 0; i < keys.Length; i += 2) warm.Remove(keys[i]);
            foreach (var k in keys) warm.Insert(k);
        }
        var found = new MapRecord[256];
        var hit = new bool[256];
        int hits = 0;
        long grownTo = 0;
        long allocated = AllocationProbe.Measure(() =>
        {
            using var map = new ShmemBTree<MapRecord, MapRecordComparer>(); // a fresh map each attempt: growth is what is measured
            hits = 0;
            long before = GC.GetAllocatedBytesForCurrentThread();
            foreach (var k in keys) map.Insert(k);
            for (int i = 0; i + 256 <= keys.Length; i += 256) hits += map.TryFindMany(keys.AsSpan(i, 256), found, hit);
            for (int i = 0; i < keys.Length; i += 2) map.Remove(keys[i]);
            foreach (var k in keys) map.Insert(k);
            long bytes = GC.GetAllocatedBytesForCurrentThread() - before;
            grownTo = map.MemoryBytes;
            return bytes;
        });
        output.WriteLine($"allocated {allocated} bytes over {keys.Length * 3.5:F0} operations growing to {grownTo} bytes (hits {hits})");
        Assert.True(grownTo > 4L << 20, "the map did not grow to thousands of blocks");
        Assert.Equal(0, allocated);
    }

    [Fact]
    public void OrderedMapBatchLookupAgreesWithSingleLookups()
    {
        using var map = new ShmemBTree<MapRecord, MapRecordComparer>();
        var rnd = new Random(5);
        var present = new List<MapRecord>();
        for (int i = 0; i < 100_000; i++)
        {
            var r = new MapRecord((uint)rnd.Next(0, 1_000_000), (uint)rnd.Next(1, 9), (ulong)rnd.Next(3), 0);
            if (map.Insert(r)) present.Add(r);
        }
        Assert.True(map.Height >= 3);
        // Present keys (with a different payload in the probe), absent keys and the extremes, in batches of odd sizes.
        var probes = new List<MapRecord>();
        for (int i = 0; i < 20_000; i++)
        {
            var p = present[rnd.Next(present.Count)];
            probes.Add(rnd.Next(3) == 0 ? p with { Owner = p.Owner + 7 } : p with { Length = 0 });
        }
        probes.Add(new MapRecord(0, 0, 0, 0));
        probes.Add(new MapRecord(uint.MaxValue, 0, ulong.MaxValue, ulong.MaxValue));
        int at = 0;
        foreach (int size in new[] { 1, 7, 8, 9, 255, 1000, probes.Count })
        {
            if (at + size > probes.Count) at = 0;
            var batch = probes.GetRange(at, Math.Min(size, probes.Count - at)).ToArray();
            var found = new MapRecord[batch.Length];
            var hit = new bool[batch.Length];
            int hits = map.TryFindMany(batch, found, hit);
            int expectedHits = 0;
            for (int i = 0; i < batch.Length; i++)
            {
                bool single = map.TryFind(batch[i], out var one);
                Assert.Equal(single, hit[i]);
                if (single) { Assert.Equal(one, found[i]); expectedHits++; }
            }
            Assert.Equal(expectedHits, hits);
            at += batch.Length;
        }
        Assert.Throws<ArgumentException>(() => map.TryFindMany(new MapRecord[4], new MapRecord[3], new bool[4]));
        Assert.Empty(map.CheckStructure());
    }

    [Fact]
    public void OrderedMapSharesOneXfileThroughPartitions()
    {
        using var xfile = Xfbtree.Storage.Xfile.Create(new Xfbtree.Storage.XfileOptions { MaxSize = 1L << 34 });
        var parts = new XfilePartitions(xfile);
        var maps = Enumerable.Range(0, 50).Select(_ => new ShmemBTree<MapRecord, MapRecordComparer>(default, new ShmemBTreeOptions { Xfile = xfile, PartitionStart = parts.Reserve(64 << 20), PartitionLength = 64 << 20 })).ToList();
        for (int m = 0; m < maps.Count; m++)
            for (uint i = 0; i < 2000; i++) Assert.True(maps[m].Insert(new MapRecord(i, 1, (ulong)m, 0)));
        for (int m = 0; m < maps.Count; m++)
        {
            Assert.Equal(2000, maps[m].Count);
            Assert.True(maps[m].TryFind(new MapRecord(7, 0, (ulong)m, 0), out _));
            Assert.False(maps[m].TryFind(new MapRecord(7, 0, (ulong)m + 1, 0), out _));
        }
        foreach (var m in maps) m.Dispose();
    }

    readonly struct ByKey : IRecordComparer<(long Key, long Value)>
    {
        public int Compare(in (long Key, long Value) x, in (long Key, long Value) y) => x.Key.CompareTo(y.Key);
    }

    /// <summary>The README's example, as written there.</summary>
    [Fact]
    public void OrderedMapReadmeExampleWorks()
    {
        using var map = new ShmemBTree<(long Key, long Value), ByKey>();
        map.Insert((42, 1));
        Assert.True(map.TryFind((42, 0), out var found));
        Assert.Equal(1, found.Value);
        int n = 0;
        foreach (ref readonly var r in map.Range((0, 0), (100, 0))) { n++; Assert.Equal(42, r.Key); }
        Assert.Equal(1, n);
    }
}
