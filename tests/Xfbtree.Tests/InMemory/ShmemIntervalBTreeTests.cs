using Xfbtree.InMemory;
using Xunit;

namespace Xfbtree.Tests.InMemory;

/// <summary>Orders by (Start, Owner, Offset); the high key covers Start + Length - 1 (as the rmapbt).</summary>
public readonly struct MapIntervalComparer : IIntervalRecordComparer<MapRecord>
{
    public int Compare(in MapRecord x, in MapRecord y) => default(MapRecordComparer).Compare(x, y);
    public void GetHighKey(in MapRecord record, out MapRecord highKey) => highKey = record with { Start = record.Start + record.Length - 1 };
}

/// <summary>The interval map: overlapped queries through the engine's interval walk agree with a brute-force model.</summary>
public sealed class ShmemIntervalBTreeTests
{
    struct Collect : IRecordVisitor<MapRecord>
    {
        public List<MapRecord> Found;
        public bool Visit(in MapRecord record) { (Found ??= new()).Add(record); return true; }
    }

    struct Count : IRecordVisitor<MapRecord>
    {
        public long N;
        public bool Visit(in MapRecord record) { N++; return true; }
    }

    static List<MapRecord> Expected(SortedSet<MapRecord> model, uint low, uint high)
        => model.Where(r => r.Start <= high && r.Start + r.Length - 1 >= low).ToList();

    [Fact]
    public void OverlappedQueries_InsertsAndRemoves_MatchBruteForce()
    {
        using var map = new ShmemIntervalBTree<MapRecord, MapIntervalComparer>();
        var model = new SortedSet<MapRecord>(MapRecordClassComparer.Instance);
        var rnd = new Random(9);
        for (int round = 0; round < 6; round++)
        {
            for (int i = 0; i < 15_000; i++)
            {
                // Long intervals (up to 5000 blocks) make the high keys matter: a record far left can overlap.
                var r = new MapRecord((uint)rnd.Next(0, 2_000_000), (uint)rnd.Next(1, rnd.Next(2) == 0 ? 8 : 5000), (ulong)rnd.Next(4), (ulong)rnd.Next(3));
                if (rnd.Next(4) == 0 && model.Count > 0)
                {
                    var victim = model.ElementAt(rnd.Next(model.Count));
                    Assert.True(map.Remove(victim));
                    model.Remove(victim);
                }
                else Assert.Equal(model.Add(r), map.Insert(r));
            }
            Assert.Equal(model.Count, map.Count);
            Assert.Empty(map.CheckStructure());
            for (int q = 0; q < 200; q++)
            {
                uint low = (uint)rnd.Next(0, 2_010_000), high = low + (uint)rnd.Next(0, 3000);
                var v = new Collect();
                Assert.True(map.QueryOverlapping(new MapRecord(low, 0, 0, 0), new MapRecord(high, 0, ulong.MaxValue, ulong.MaxValue), ref v));
                Assert.Equal(Expected(model, low, high), v.Found ?? []);
            }
        }
        Assert.True(map.Height >= 3);
        var all = new Collect();
        Assert.True(map.VisitAll(ref all));
        Assert.Equal(model.ToList(), all.Found);
    }

    [Fact]
    public void BulkLoaded_AnswersLikeInserted_AndLookupsWork()
    {
        var rnd = new Random(4);
        var sorted = new List<MapRecord>();
        uint at = 10;
        for (int i = 0; i < 200_000; i++)
        {
            uint len = (uint)rnd.Next(1, 9);
            sorted.Add(new MapRecord(at, len, (ulong)rnd.Next(100), 0));
            at += len + (uint)rnd.Next(0, 2);
        }
        using var bulk = new ShmemIntervalBTree<MapRecord, MapIntervalComparer>();
        bulk.BulkLoad(sorted.ToArray());
        Assert.Empty(bulk.CheckStructure());
        var model = new SortedSet<MapRecord>(sorted, MapRecordClassComparer.Instance);
        for (int q = 0; q < 300; q++)
        {
            uint low = (uint)rnd.Next(0, (int)at), high = low + 63;
            var v = new Count();
            bulk.QueryOverlapping(new MapRecord(low, 0, 0, 0), new MapRecord(high, 0, ulong.MaxValue, ulong.MaxValue), ref v);
            Assert.Equal(Expected(model, low, high).Count, v.N);
        }
        var keys = sorted.Where((_, i) => i % 97 == 0).Select(r => r with { Length = 0 }).ToArray();
        var found = new MapRecord[keys.Length];
        var hit = new bool[keys.Length];
        Assert.Equal(keys.Length, bulk.TryFindMany(keys, found, hit));
        for (int i = 0; i < keys.Length; i++) Assert.True(bulk.TryFind(keys[i], out var one) && one == found[i]);
    }
}
