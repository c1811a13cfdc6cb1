using System.Buffers.Binary;
using Xfbtree.Btree;
using Xfbtree.InMemory;
using Xfbtree.Storage;
using Xfbtree.Tests.Btree;
using Xunit.Abstractions;

namespace Xfbtree.Tests.InMemory;

/// <summary>
/// The insert fast paths of in-memory trees: a cursor keeps its path after a plain leaf insert and puts the next
/// record straight into that leaf when it belongs there; an append to the last block of a level moves many entries
/// into the left sibling. The kept path must never be trusted once any other cursor wrote to the tree.
/// </summary>
public sealed class KeptInsertPathTests(ITestOutputHelper output)
{
    static readonly bool Long = Environment.GetEnvironmentVariable("XFBTREE_LONG_TESTS") == "1";

    /// <summary>
    /// Two cursors write the same tree in turns (ascending and descending runs, random inserts, deletes that join and
    /// free blocks, which later splits reuse), and neither releases its path between turns: after every turn the
    /// checker is clean (in the overlapping tree: every node's high key exact) and the records equal the model.
    /// </summary>
    [Fact]
    public void TwoCursorsInTurnsNeverTrustAStalePath()
    {
        long plain = RunTwoCursors(new U64Ops(true), k => U64Ops.Record(k, k * 3), k => U64Ops.Key(k), r => BinaryPrimitives.ReadUInt64BigEndian(r));
        long overlapping = RunTwoCursors(new IntervalOps(true), k => IntervalOps.Record((uint)k, (uint)(1 + k % 37), 0), k => IntervalOps.Key((uint)k, 0), r => IntervalOps.Decode(r).Start);
        output.WriteLine($"inserts that took the kept path: {plain} (plain tree), {overlapping} (overlapping tree)");
        Assert.True(plain > 1000 && overlapping > 1000, "the test does not exercise the kept path");
    }

    /// <summary>
    /// The case the tree's write stamp exists for: cursor a keeps its path to leaf L; cursor b splits leaves left of L,
    /// so L's slot in the parent moves; a then inserts into L a record whose high key raises L's parent slot. Through
    /// the stale path the raise would land in another child's slot (the checker then finds a wrong high key).
    /// </summary>
    [Fact]
    public void AStalePathAfterAnotherCursorSplitIsNotUsed()
    {
        using var xfile = Xfile.Create(new XfileOptions { MaxSize = 1L << 32, Name = "kept-path-test" });
        using var tree = new Xfbtree<IntervalOps>(new IntervalOps(true), xfile, owner: 1);
        using (var fill = tree.CreateCursor())
            for (uint k = 0; k < 20_000; k++) Assert.True(fill.Insert(IntervalOps.Record(k * 10, 1, 0)));
        using var a = tree.CreateCursor();
        using var b = tree.CreateCursor();
        Assert.True(a.Insert(IntervalOps.Record(100_001, 1, 0)));       // the full leaf of 100,000 splits or shifts
        Assert.True(a.Insert(IntervalOps.Record(100_003, 1, 0)));       // a's path: the leaf of 100,000
        long keptBefore = a.KeptPathInserts;
        Assert.True(a.Insert(IntervalOps.Record(100_004, 1, 0)));       // and it is kept
        Assert.Equal(keptBefore + 1, a.KeptPathInserts);
        for (uint k = 5_000; k < 5_900; k++) Assert.True(b.Insert(IntervalOps.Record(k * 10 + 5, 1, 0))); // splits left of it
        Assert.True(a.Insert(IntervalOps.Record(100_002, 5_000, 0)));   // raises its leaf's high key
        Assert.Equal(keptBefore + 1, a.KeptPathInserts);                // not through the stale path
        var report = tree.Tree.Check();
        Assert.True(report.IsClean, report.ToString());
    }

    long RunTwoCursors<TOps>(TOps ops, Func<ulong, byte[]> record, Func<ulong, byte[]> key, Func<byte[], ulong> keyOf) where TOps : struct, IBtreeOps
    {
        int seeds = Long ? 200 : 25;
        long fastInserts = 0;
        for (int seed = 0; seed < seeds; seed++)
        {
            var random = new Random(seed);
            using var xfile = Xfile.Create(new XfileOptions { MaxSize = 1L << 32, Name = "kept-path-test" });
            using var tree = new Xfbtree<TOps>(ops, xfile, owner: 1);
            using var a = tree.CreateCursor();
            using var b = tree.CreateCursor();
            var model = new SortedSet<ulong>();
            for (int turn = 0; turn < 60; turn++)
            {
                var cur = random.Next(2) == 0 ? a : b;
                switch (random.Next(5))
                {
                    case 0:
                    case 1:
                        {
                            // A run of neighbouring keys, ascending or descending: the kept path takes most of them.
                            ulong start = (ulong)random.Next(0, 20000);
                            int count = random.Next(1, 600);
                            int step = random.Next(1, 4) * (random.Next(3) == 0 ? -1 : 1);
                            for (int i = 0; i < count; i++)
                            {
                                long k = (long)start + (long)i * step;
                                if (k < 0) break;
                                Assert.Equal(model.Add((ulong)k), cur.Insert(record((ulong)k)));
                            }
                            break;
                        }
                    case 2:
                        for (int i = 0; i < 200; i++)
                        {
                            ulong k = (ulong)random.Next(0, 20000);
                            Assert.Equal(model.Add(k), cur.Insert(record(k)));
                        }
                        break;
                    default:
                        {
                            // Delete a contiguous stretch: leaves empty out, join, and their blocks are freed for reuse.
                            ulong from = (ulong)random.Next(0, 20000);
                            foreach (ulong k in model.GetViewBetween(from, from + (ulong)random.Next(1, 3000)).ToList())
                            {
                                Assert.True(cur.Lookup(key(k), BtreeLookup.Equal));
                                cur.Delete();
                                model.Remove(k);
                            }
                            break;
                        }
                }
                // Checked through a third cursor: a and b keep their paths.
                string where = $"{ops.Name} seed {seed} turn {turn}";
                var report = tree.Tree.Check();
                Assert.True(report.IsClean, $"{where}: {report}");
                using var reader = tree.CreateCursor();
                var all = new CollectVisitor();
                reader.QueryAll(ref all);
                var got = (all.Records ?? new()).Select(keyOf).ToList();
                Assert.True(got.SequenceEqual(model), $"{where}: {got.Count} records, model {model.Count}");
            }
            fastInserts += a.KeptPathInserts + b.KeptPathInserts;
        }
        return fastInserts;
    }

    /// <summary>
    /// Keys that leave the kept leaf (a sorted batch against a large tree puts each key into another leaf) are found from
    /// the kept path: the descent starts at the lowest block whose subtree a descent from the root would also choose.
    /// Ascending keys spread over the leaves, descending ones (below the path's blocks: their lower bounds matter) and
    /// random ones all end in the right leaf: the checker is clean and the records equal the model after each pass.
    /// </summary>
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void KeysInOtherLeavesAreFoundFromTheKeptPath(bool overlapping)
    {
        using var xfile = Xfile.Create(new XfileOptions { MaxSize = 1L << 32, Name = "kept-path-test" });
        if (overlapping) Run(new IntervalOps(true), k => IntervalOps.Record((uint)k, 1 + (uint)(k % 7), 0), r => IntervalOps.Decode(r).Start);
        else Run(new U64Ops(true), k => U64Ops.Record(k, k), r => BinaryPrimitives.ReadUInt64BigEndian(r));

        void Run<TOps>(TOps ops, Func<ulong, byte[]> record, Func<byte[], ulong> keyOf) where TOps : struct, IBtreeOps
        {
            using var tree = new Xfbtree<TOps>(ops, xfile, owner: 1);
            using var cur = tree.CreateCursor();
            var model = new SortedSet<ulong>();
            var random = new Random(5);
            foreach (ulong k in Enumerable.Range(0, 150_000).Select(i => (ulong)i * 16).OrderBy(_ => random.Next()))
            {
                Assert.True(cur.Insert(record(k)));
                model.Add(k);
            }
            Assert.True(tree.Root.Height >= 3, $"height {tree.Root.Height}: too low to start a descent between the root and a leaf");
            long before = cur.KeptPathDescents, inLeafBefore = cur.KeptPathInserts;
            int inserted = 0;
            void Pass(IEnumerable<ulong> keys, string what)
            {
                foreach (ulong k in keys)
                {
                    Assert.Equal(model.Add(k), cur.Insert(record(k)));
                    inserted++;
                }
                var report = tree.Tree.Check();
                Assert.True(report.IsClean, $"{ops.Name}, {what}: {report}");
                using var reader = tree.CreateCursor();
                var all = new CollectVisitor();
                reader.QueryAll(ref all);
                Assert.True((all.Records ?? new()).Select(keyOf).SequenceEqual(model), $"{ops.Name}, {what}: records differ from the model");
            }
            Pass(Enumerable.Range(0, 4_000).Select(i => 5 + (ulong)i * 16 * 37 % 2_400_000).Order(), "ascending, spread");
            Pass(Enumerable.Range(0, 4_000).Select(i => 2_399_990 - (ulong)i * 16 * 41 % 2_399_000).OrderDescending(), "descending, spread");
            Pass(Enumerable.Range(0, 4_000).Select(_ => (ulong)random.Next(0, 2_400_000)), "random");
            Pass(Enumerable.Range(0, 4_000).Select(i => 2_400_000 + (ulong)i * 3), "appended");
            // Of the inserts that needed a descent (not into the kept leaf itself), those of the two spread passes (about
            // one per leaf they pass) start below the root unless the insert before split or shifted blocks.
            long descents = cur.KeptPathDescents - before, needed = inserted - (cur.KeptPathInserts - inLeafBefore);
            output.WriteLine($"{ops.Name}: {descents} of the {needed} inserts that needed a descent started below the root, height {tree.Root.Height}");
            Assert.True(descents > needed / 4, $"{ops.Name}: only {descents} of {needed} descents started from the kept path");
        }
    }

    /// <summary>
    /// Ascending inserts leave the leaves full (the append moves many entries into the left sibling instead of one
    /// per record) and every block within [minrecs, maxrecs] (checker); descending inserts too, through the kept path.
    /// </summary>
    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void AscendingAndDescendingRunsFillLeaves(bool ascending)
    {
        const int Count = 100_000;
        using var map = new ShmemBTree<long, LongComparer>();
        for (int i = 0; i < Count; i++) Assert.True(map.Insert(ascending ? i : Count - 1 - i));
        Assert.Empty(map.CheckStructure());
        long expected = 0;
        foreach (ref readonly long v in map) Assert.Equal(expected++, v);
        Assert.Equal(Count, expected);
        // Long-form leaves of 4 KiB hold (4096 - 72) / 8 = 503 records.
        long leaves = (Count + 502) / 503;
        long blocks = map.MemoryBytes / 4096;
        output.WriteLine($"{(ascending ? "ascending" : "descending")}: {blocks} blocks for {Count} records (full leaves: {leaves})");
        if (ascending) Assert.True(blocks <= leaves + leaves / 20 + 4, $"{blocks} blocks: leaves are not filled by appends");
        else Assert.True(blocks <= 2 * leaves + 4, $"{blocks} blocks for {leaves} full leaves");
    }

    /// <summary>The interval map: ascending runs keep every node's high key exact (checker) and overlapped queries right.</summary>
    [Fact]
    public void IntervalMapAscendingRunsKeepHighKeys()
    {
        using var map = new ShmemIntervalBTree<Span3, Span3Comparer>();
        var random = new Random(7);
        var model = new List<Span3>();
        uint start = 0;
        for (int i = 0; i < 50_000; i++)
        {
            var r = new Span3(start, (uint)random.Next(1, 40), (uint)random.Next(0, 4));
            start += (uint)random.Next(1, 20);
            Assert.True(map.Insert(r));
            model.Add(r);
        }
        Assert.Empty(map.CheckStructure());
        for (int q = 0; q < 200; q++)
        {
            uint low = (uint)random.Next(0, (int)start), high = low + (uint)random.Next(0, 100);
            var visitor = new CountVisitor();
            map.QueryOverlapping(new Span3(low, 0, 0), new Span3(high, 0, uint.MaxValue), ref visitor);
            Assert.Equal(model.Count(r => r.Start <= high && r.Start + r.Length - 1 >= low), visitor.Count);
        }
    }

    readonly struct LongComparer : IRecordComparer<long>
    {
        public int Compare(in long x, in long y) => x.CompareTo(y);
    }

    readonly record struct Span3(uint Start, uint Length, uint Owner);

    readonly struct Span3Comparer : IIntervalRecordComparer<Span3>
    {
        public int Compare(in Span3 x, in Span3 y) => x.Start != y.Start ? x.Start.CompareTo(y.Start) : x.Owner.CompareTo(y.Owner);
        public void GetHighKey(in Span3 record, out Span3 highKey) => highKey = record with { Start = record.Start + record.Length - 1 };
    }

    struct CountVisitor : IRecordVisitor<Span3>
    {
        public int Count;
        public bool Visit(in Span3 record)
        {
            Count++;
            return true;
        }
    }
}
