using Xfbtree.Btree;
using Xfbtree.InMemory;
using Xunit;

namespace Xfbtree.Tests.InMemory;

/// <summary>
/// Key-prefix sidecars beside the blocks (comparers that implement <see cref="IRecordKeyPrefix{TRecord}"/>): every sidecar
/// that carries its block's version describes the block, lookups through them agree with a model, readers really use
/// them, a reader caught in a leaf's sidecar while a batch rebuilds it looks again, and prefixes out of order are refused.
/// The concurrency tests of <see cref="ShmemConcurrentReadTests"/> run with a prefix comparer too.
/// </summary>
public sealed unsafe class ShmemSidecarTests
{
    static readonly bool Long = Environment.GetEnvironmentVariable("XFBTREE_LONG_TESTS") == "1";

    /// <summary>Orders by Start; the prefix is Start itself (every key told apart).</summary>
    public readonly struct ExactPrefix : IRecordComparer<MapRecord>, IRecordKeyPrefix<MapRecord>
    {
        public int Compare(in MapRecord x, in MapRecord y) => x.Start.CompareTo(y.Start);
        public ulong GetKeyPrefix(in MapRecord record) => record.Start;
    }

    /// <summary>Orders by Start; sixteen keys share a prefix (the searches meet runs of equal prefixes and call the comparer among them).</summary>
    public readonly struct CoarsePrefix : IRecordComparer<MapRecord>, IRecordKeyPrefix<MapRecord>
    {
        public int Compare(in MapRecord x, in MapRecord y) => x.Start.CompareTo(y.Start);
        public ulong GetKeyPrefix(in MapRecord record) => record.Start >> 4;
    }

    /// <summary>A prefix that breaks the contract: it runs against the order.</summary>
    public readonly struct ReversedPrefix : IRecordComparer<MapRecord>, IRecordKeyPrefix<MapRecord>
    {
        public int Compare(in MapRecord x, in MapRecord y) => x.Start.CompareTo(y.Start);
        public ulong GetKeyPrefix(in MapRecord record) => uint.MaxValue - record.Start;
    }

    /// <summary>Orders ulong keys by value, with the value as prefix (for the dictionary-shaped map).</summary>
    public readonly struct ULongKeys : IRecordComparer<ulong>, IRecordKeyPrefix<ulong>
    {
        public int Compare(in ulong x, in ulong y) => x.CompareTo(y);
        public ulong GetKeyPrefix(in ulong record) => record;
    }

    static MapRecord Rec(uint key, uint generation) => new(key, generation, key * 31UL, generation);
    static MapRecord Key(uint key) => new(key, 0, 0, 0);

    [Fact]
    public void SidecarsDescribeTheirBlocksAndLookupsAgreeWithAModel_ExactPrefix() => RunAgainstModel<ExactPrefix>(1);

    [Fact]
    public void SidecarsDescribeTheirBlocksAndLookupsAgreeWithAModel_CoarsePrefix() => RunAgainstModel<CoarsePrefix>(2);

    /// <summary>
    /// Random single writes, batches, upserts, bulk loads and clears on a small-key space (splits, joins, root changes,
    /// block reuse); after every step every current sidecar equals one built from its block now, and point lookups,
    /// batch lookups and floor/ceiling lookups agree with a sorted model. Counts the sidecars it found current.
    /// </summary>
    static void RunAgainstModel<TComparer>(int seed) where TComparer : struct, IRecordComparer<MapRecord>, IRecordKeyPrefix<MapRecord>
    {
        var rnd = new Random(seed);
        using var map = new ShmemBTree<MapRecord, TComparer>();
        Assert.NotNull(map.SidecarsForTests);
        var model = new SortedDictionary<uint, MapRecord>();
        long currentSeen = 0, leafSidecarsAfterBatches = 0;
        int steps = Long ? 3000 : 400;
        const int keySpace = 20_000;
        var batch = new MapRecord[600];
        var probes = new MapRecord[300];
        var found = new MapRecord[300];
        var hit = new bool[300];
        for (int step = 0; step < steps; step++)
        {
            int op = rnd.Next(100);
            if (op < 30)
            {
                for (int i = 0; i < 50; i++)
                {
                    var r = Rec((uint)rnd.Next(keySpace), (uint)step);
                    if (map.Insert(r)) model.Add(r.Start, r);
                    else Assert.True(model.ContainsKey(r.Start));
                }
            }
            else if (op < 50)
            {
                for (int i = 0; i < 50; i++)
                {
                    uint k = (uint)rnd.Next(keySpace);
                    Assert.Equal(model.Remove(k), map.Remove(Key(k)));
                }
            }
            else if (op < 70)
            {
                int n = rnd.Next(1, batch.Length);
                var seen = new HashSet<uint>();
                int expected = 0;
                for (int i = 0; i < n; i++)
                {
                    batch[i] = Rec((uint)rnd.Next(keySpace), (uint)step);
                    if (seen.Add(batch[i].Start) && !model.ContainsKey(batch[i].Start)) expected++;
                }
                Assert.Equal(expected, map.InsertMany(batch.AsSpan(0, n)));
                foreach (var r in batch.AsSpan(0, n))
                    model.TryAdd(r.Start, r); // the first of a key wins; equal keys here have equal records
                leafSidecarsAfterBatches += CurrentSidecars(map);
            }
            else if (op < 85)
            {
                int n = rnd.Next(1, batch.Length);
                var keys = new HashSet<uint>();
                for (int i = 0; i < n; i++)
                {
                    batch[i] = Key((uint)rnd.Next(keySpace));
                    keys.Add(batch[i].Start);
                }
                int expected = keys.Count(model.ContainsKey);
                Assert.Equal(expected, map.RemoveMany(batch.AsSpan(0, n)));
                foreach (uint k in keys) model.Remove(k);
            }
            else if (op < 95)
            {
                for (int i = 0; i < 20; i++)
                {
                    var r = Rec((uint)rnd.Next(keySpace), (uint)step + 1_000_000);
                    Assert.Equal(model.ContainsKey(r.Start), map.Upsert(r));
                    model[r.Start] = r;
                }
            }
            else if (op < 98)
            {
                map.Clear();
                model.Clear();
                if (rnd.Next(2) == 0)
                {
                    var sorted = Enumerable.Range(0, rnd.Next(1, 8000)).Select(i => Rec((uint)(i * 3), (uint)step)).ToArray();
                    map.BulkLoad(sorted);
                    foreach (var r in sorted) model.Add(r.Start, r);
                }
            }
            else
            {
                map.Clear();
                model.Clear();
            }

            Assert.Equal(0, map.CheckSidecars(out long current));
            currentSeen += current;
            Assert.Equal(model.Count, map.Count);
            for (int i = 0; i < probes.Length; i++) probes[i] = Key((uint)rnd.Next(keySpace));
            map.TryFindMany(probes, found, hit);
            for (int i = 0; i < probes.Length; i++)
            {
                uint k = probes[i].Start;
                Assert.Equal(model.TryGetValue(k, out var expected), hit[i]);
                if (hit[i]) Assert.Equal(expected, found[i]);
                Assert.Equal(hit[i], map.TryFind(probes[i], out var single));
                if (hit[i]) Assert.Equal(expected, single);
            }
            for (int i = 0; i < 20; i++)
            {
                uint k = (uint)rnd.Next(keySpace);
                var below = model.Keys.Where(x => x <= k).DefaultIfEmpty(uint.MaxValue).Max();
                var above = model.Keys.Where(x => x >= k).DefaultIfEmpty(uint.MaxValue).Min();
                Assert.Equal(below != uint.MaxValue, map.TryFindLessOrEqual(Key(k), out var le));
                if (below != uint.MaxValue) Assert.Equal(model[below], le);
                Assert.Equal(above != uint.MaxValue, map.TryFindGreaterOrEqual(Key(k), out var ge));
                if (above != uint.MaxValue) Assert.Equal(model[above], ge);
            }
        }
        Assert.Empty(map.CheckStructure());
        // The checks above must have compared sidecars, leaves' included (rebuilt by the batches).
        Assert.True(currentSeen > steps, $"only {currentSeen} current sidecars were checked in {steps} steps");
        Assert.True(leafSidecarsAfterBatches > 0, "no sidecar was current after a batch");
    }

    static long CurrentSidecars<TComparer>(ShmemBTree<MapRecord, TComparer> map) where TComparer : struct, IRecordComparer<MapRecord>
    {
        Assert.Equal(0, map.CheckSidecars(out long current));
        return current;
    }

    /// <summary>
    /// Readers trust a sidecar that carries its block's version: with every current sidecar's samples made to say "all
    /// below the key", a lookup of the smallest key searches only the last segment of each block and misses. So lookups
    /// do go through the sidecars (a reader that ignored them would still find the key).
    /// </summary>
    [Fact]
    public void LookupsGoThroughTheSidecars()
    {
        using var map = new ShmemBTree<MapRecord, ExactPrefix>();
        var records = Enumerable.Range(0, 50_000).Select(i => Rec((uint)i * 2 + 10, 1)).ToArray();
        Assert.Equal(records.Length, map.InsertMany(records));
        Assert.Equal(0, map.CheckSidecars(out long current));
        Assert.Equal(map.BlockCount, current); // after a batch, leaves' and nodes' sidecars are all current
        Assert.True(map.TryFind(Key(10), out _));
        var keys = new[] { Key(10), Key(12) };
        var found = new MapRecord[2];
        var hit = new bool[2];
        Assert.Equal(2, map.TryFindMany(keys, found, hit));

        var sidecars = map.SidecarsForTests!;
        for (long p = 0; p < map.BlockCount + 64; p++)
        {
            byte* sc = sidecars.At(p);
            if ((ulong)p >= (ulong)sidecars.ReservedBlocks || *(long*)sc == 0) continue;
            int count = *(int*)(sc + 12);
            long* samples = (long*)(sc + BtreeSidecars.HeaderBytes);
            for (int i = 0; i < count; i++) samples[i] = long.MinValue; // prefix 0: below every key
        }
        Assert.False(map.TryFind(Key(10), out _));
        Assert.Equal(0, map.TryFindMany(keys, found, hit));
    }

    /// <summary>
    /// A batch lookup stopped in a leaf, right after it matched the leaf's sidecar with the version it noted, while a
    /// batch insert changes that leaf (splitting it) and rebuilds its sidecar: the lookup must not trust what it reads
    /// afterwards, look the keys up again and find every record where it went.
    /// </summary>
    [Fact]
    public void ABatchLookupInALeafsSidecarWhileABatchRebuildsItLooksAgain()
    {
        using var map = new ShmemBTree<MapRecord, ExactPrefix>();
        var records = Enumerable.Range(0, 2_000).Select(i => Rec((uint)i * 4, 1)).ToArray();
        map.InsertMany(records);
        Assert.Equal(0, map.CheckSidecars(out long current));
        Assert.Equal(map.BlockCount, current);
        Assert.True(map.Height >= 2);
        MapRecord[] keys = [Key(400), Key(404), Key(401), Key(7_996)];
        var found = new MapRecord[keys.Length];
        var hit = new bool[keys.Length];
        long blocks = map.BlockCount;
        int attempts = 0;
        using var inLeaf = new ManualResetEventSlim();
        using var go = new ManualResetEventSlim();
        var cursor = map.CursorForTests;
        cursor.ConcurrentReadHook = level =>
        {
            if (level == -1) Interlocked.Increment(ref attempts);
            else if (level == 0 && !inLeaf.IsSet)
            {
                inLeaf.Set();
                go.Wait();
            }
        };
        Exception? failure = null;
        int hits = -1;
        var reader = new Thread(() =>
        {
            try { hits = map.TryFindMany(keys, found, hit); }
            catch (Exception e) { failure = e; }
        });
        try
        {
            reader.Start();
            Assert.True(inLeaf.Wait(TimeSpan.FromSeconds(30)), "the reader never entered a leaf");
            // Odd keys around 400: the leaf of the first key takes them and splits; its sidecar is rebuilt.
            var more = Enumerable.Range(0, 300).Select(i => Rec(300 + (uint)i * 2 + 1, 2)).ToArray();
            Assert.Equal(more.Length, map.InsertMany(more));
            Assert.True(map.BlockCount > blocks, "the batch did not split a leaf");
        }
        finally
        {
            go.Set();
            reader.Join();
            cursor.ConcurrentReadHook = null;
        }
        Assert.Null(failure);
        Assert.Equal(4, hits);
        Assert.Equal([true, true, true, true], hit);
        Assert.Equal(Rec(400, 1), found[0]);
        Assert.Equal(Rec(404, 1), found[1]);
        Assert.Equal(Rec(401, 2), found[2]);
        Assert.Equal(Rec(7_996, 1), found[3]);
        Assert.True(attempts > keys.Length, $"the batch read a changed leaf and did not look again ({attempts} validations)");
        Assert.Equal(0, map.CheckSidecars(out _));
    }

    /// <summary>
    /// A batch call of several chunks rebuilds its leaves' sidecars once, at its end: between its chunks the leaves it
    /// changed carry stale sidecars. Readers between chunks must search those leaves themselves: with every stale
    /// sidecar's samples made to say "all below the key" (a reader that trusted one would miss), point, batch and
    /// floor/ceiling lookups from another thread still find exactly the records the applied chunks put in. At the end every
    /// sidecar is current again and describes its block.
    /// </summary>
    [Fact]
    public void ReadersBetweenTheChunksOfABatchSearchLeavesWhoseSidecarsAreStale()
    {
        using var map = new ShmemBTree<MapRecord, ExactPrefix>();
        Assert.Equal(20_000, map.InsertMany(Enumerable.Range(0, 20_000).Select(i => Rec((uint)i * 2 + 10, 1)).ToArray()));
        var rnd = new Random(5);
        var odd = Enumerable.Range(0, 3_000).Select(i => Rec((uint)i * 13 % 40_000 | 1, 2)).DistinctBy(r => r.Start).ToArray();
        rnd.Shuffle(odd);
        const int Chunk = 500;
        int chunks = 0, staleSeen = 0;
        var sidecars = map.SidecarsForTests!;
        var store = map.StoreForTests;
        BatchTestHooks.ChunkLimit = Chunk;
        BatchTestHooks.AfterChunk = () =>
        {
            chunks++;
            Assert.Equal(0, map.CheckSidecars(out long current));
            // Poison every sidecar that does not carry its block's version.
            var table = store.CurrentTable;
            for (long p = 0; p < map.BlockCount + 64 && (ulong)p < (ulong)sidecars.ReservedBlocks; p++)
            {
                byte* sc = sidecars.At(p);
                if (*(long*)sc == 0 || table[p].Page <= 0 || *(long*)sc == table[p].Version) continue;
                staleSeen++;
                int count = *(int*)(sc + 12);
                long* samples = (long*)(sc + BtreeSidecars.HeaderBytes);
                for (int i = 0; i < Math.Min(count, BtreeSidecars.MaxSamples); i++) samples[i] = long.MinValue;
            }
            var applied = new HashSet<uint>(odd.Take(chunks * Chunk).Select(r => r.Start));
            Exception? failure = null;
            var reader = new Thread(() =>
            {
                try
                {
                    var keys = odd.Select(r => Key(r.Start)).Concat(Enumerable.Range(0, 500).Select(i => Key((uint)i * 80 + 10))).ToArray();
                    var found = new MapRecord[keys.Length];
                    var hit = new bool[keys.Length];
                    map.TryFindMany(keys, found, hit);
                    for (int i = 0; i < keys.Length; i++)
                    {
                        uint k = keys[i].Start;
                        bool present = (k & 1) == 0 || applied.Contains(k);
                        var expected = (k & 1) == 0 ? Rec(k, 1) : Rec(k, 2);
                        Assert.Equal(present, hit[i]);
                        if (present) Assert.Equal(expected, found[i]);
                        Assert.Equal(present, map.TryFind(keys[i], out var single));
                        if (present) Assert.Equal(expected, single);
                        Assert.True(map.TryFindGreaterOrEqual(keys[i], out var ceiling));
                        Assert.True(ceiling.Start >= k && (ceiling.Start != k || present));
                    }
                }
                catch (Exception e) { failure = e; }
            });
            reader.Start();
            reader.Join();
            if (failure != null) throw new InvalidOperationException("a reader between chunks went wrong", failure);
        };
        try { Assert.Equal(odd.Length, map.InsertMany(odd)); }
        finally
        {
            BatchTestHooks.ChunkLimit = 0;
            BatchTestHooks.AfterChunk = null;
        }
        Assert.Equal((odd.Length + Chunk - 1) / Chunk, chunks);
        Assert.True(staleSeen > 0, "no leaf sidecar was stale between chunks");
        Assert.Equal(0, map.CheckSidecars(out long after));
        Assert.Equal(map.BlockCount, after);
        Assert.Empty(map.CheckStructure());
    }

    /// <summary>
    /// The queue of leaves a batch call rebuilds is bounded: with a bound of four, fewer than four leaves are ever left
    /// stale between the chunks of a call (the queue is rebuilt whenever it fills), and at the end all are current.
    /// </summary>
    [Fact]
    public void TheQueueOfLeavesToRebuildIsBounded()
    {
        using var map = new ShmemBTree<MapRecord, ExactPrefix>();
        map.StoreForTests.RefreshQueueLimit = 4;
        Assert.Equal(20_000, map.InsertMany(Enumerable.Range(0, 20_000).Select(i => Rec((uint)i * 2 + 10, 1)).ToArray()));
        var odd = Enumerable.Range(0, 2_000).Select(i => Rec((uint)i * 38 + 11, 2)).ToArray();
        new Random(6).Shuffle(odd);
        int chunks = 0;
        BatchTestHooks.ChunkLimit = 300;
        BatchTestHooks.AfterChunk = () =>
        {
            chunks++;
            Assert.Equal(0, map.CheckSidecars(out long current));
            Assert.InRange(map.BlockCount - current, 0, 3);
        };
        try { Assert.Equal(odd.Length, map.InsertMany(odd)); }
        finally
        {
            BatchTestHooks.ChunkLimit = 0;
            BatchTestHooks.AfterChunk = null;
        }
        Assert.Equal(7, chunks);
        Assert.Equal(0, map.CheckSidecars(out long after));
        Assert.Equal(map.BlockCount, after);
        foreach (var r in odd.Where((_, i) => i % 7 == 0))
        {
            Assert.True(map.TryFind(Key(r.Start), out var got));
            Assert.Equal(r, got);
        }
    }

    /// <summary>
    /// A prefix that runs against the comparer's order is caught when a sidecar is built: the write that found it
    /// throws after it completed, the records are all there, and the map goes on without sidecars (no further throw).
    /// </summary>
    [Fact]
    public void PrefixesAgainstTheOrderAreRefusedAndTheMapGoesOnWithoutThem()
    {
        using var map = new ShmemBTree<MapRecord, ReversedPrefix>();
        var records = Enumerable.Range(0, 5_000).Select(i => Rec((uint)i, 1)).ToArray();
        var e = Assert.Throws<InvalidOperationException>(() => map.InsertMany(records));
        Assert.Contains("GetKeyPrefix", e.Message);
        Assert.Equal(records.Length, map.Count);
        foreach (var r in records.Where((_, i) => i % 37 == 0))
        {
            Assert.True(map.TryFind(Key(r.Start), out var got));
            Assert.Equal(r, got);
        }
        var more = Enumerable.Range(0, 5_000).Select(i => Rec(10_000 + (uint)i, 2)).ToArray();
        Assert.Equal(more.Length, map.InsertMany(more));
        Assert.True(map.Insert(Rec(20_000, 3)));
        var keys = new[] { Key(3), Key(10_003), Key(20_000), Key(9_999) };
        var found = new MapRecord[4];
        var hit = new bool[4];
        Assert.Equal(3, map.TryFindMany(keys, found, hit));
        Assert.Empty(map.CheckStructure());
    }

    /// <summary>The dictionary-shaped map with a key prefix: batch and single lookups agree with a model; its sidecars describe its blocks.</summary>
    [Fact]
    public void TheMapSearchesItsSidecars()
    {
        using var map = new ShmemMap<ulong, ulong, ULongKeys>();
        var rnd = new Random(3);
        var model = new Dictionary<ulong, ulong>();
        for (int round = 0; round < 20; round++)
        {
            var keys = Enumerable.Range(0, 2_000).Select(_ => (ulong)rnd.NextInt64(0, 1L << 40)).ToArray();
            var values = keys.Select(k => k ^ (ulong)round).ToArray();
            map.SetMany(keys, values);
            for (int i = 0; i < keys.Length; i++) model[keys[i]] = values[i];
            for (int i = 0; i < 100; i++)
            {
                ulong k = keys[rnd.Next(keys.Length)];
                Assert.Equal(model.Remove(k), map.Remove(k));
            }
            Assert.Equal(0, map.CheckSidecars(out long current));
            Assert.True(current > 0);
            var probes = keys.Take(500).Concat(Enumerable.Range(0, 100).Select(i => (ulong)i)).ToArray();
            var got = new ulong[probes.Length];
            var hit = new bool[probes.Length];
            map.TryGetValues(probes, got, hit);
            for (int i = 0; i < probes.Length; i++)
            {
                Assert.Equal(model.TryGetValue(probes[i], out var v), hit[i]);
                if (hit[i]) Assert.Equal(v, got[i]);
                Assert.Equal(hit[i], map.TryGetValue(probes[i], out var single));
                if (hit[i]) Assert.Equal(v, single);
            }
        }
    }
}
