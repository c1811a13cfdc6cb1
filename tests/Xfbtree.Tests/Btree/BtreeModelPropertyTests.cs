using System.Buffers.Binary;
using System.Diagnostics;
using CsCheck;
using Xfbtree.Btree;
using Xunit.Abstractions;

namespace Xfbtree.Tests.Btree;

/// <summary>One step of a model-based run; ToString is what a shrunk failure prints.</summary>
public sealed record BtreeStep(string Kind, ulong A, ulong B, ulong C)
{
    public override string ToString() => Kind switch
    {
        "insert" => $"insert({A},{B},{C})",
        "delete" => $"delete({A},{C})",
        "update" => $"update({A},{B},{C})",
        "lookup" => $"lookup({A},{(BtreeLookup)(int)B})",
        "range" => $"range({A},{B})",
        "fill" => $"fill(from {A}, {B} records, stride {C})",
        "drain" => $"drain(every {A}th)",
        _ => Kind,
    };
}

/// <summary>
/// Model-based property tests of the generic engine: random insert/delete/update/lookup/range/overlapped-query
/// sequences are applied to a tree and to a sorted-dictionary model; after every step the structure checker
/// must find nothing, the record count and the full ordered scan must equal the model, and no block may stay
/// held. CsCheck shrinks a failure to a short, readable step list. Long runs: XFBTREE_LONG_TESTS=1.
/// </summary>
public sealed class BtreeModelPropertyTests(ITestOutputHelper output)
{
    static readonly bool Long = Environment.GetEnvironmentVariable("XFBTREE_LONG_TESTS") == "1";

    static Gen<BtreeStep> Steps(uint keyRange, int fillMax) => Gen.Frequency(
        (8, Gen.Select(Gen.UInt[0, keyRange], Gen.UInt[1, 40], Gen.UInt[0, 3], (a, b, c) => new BtreeStep("insert", a, b, c))),
        (4, Gen.Select(Gen.UInt[0, keyRange], Gen.UInt[0, 3], (a, c) => new BtreeStep("delete", a, 0, c))),
        (2, Gen.Select(Gen.UInt[0, keyRange], Gen.UInt[1, 40], Gen.UInt[0, 3], (a, b, c) => new BtreeStep("update", a, b, c))),
        (2, Gen.Select(Gen.UInt[0, keyRange], Gen.Int[0, 2], (a, m) => new BtreeStep("lookup", a, (ulong)m, 0))),
        (2, Gen.Select(Gen.UInt[0, keyRange], Gen.UInt[0, keyRange], (a, b) => new BtreeStep("range", Math.Min(a, b), Math.Max(a, b), 0))),
        (1, Gen.Select(Gen.UInt[0, keyRange], Gen.Int[1, fillMax], Gen.UInt[1, 7], (a, n, s) => new BtreeStep("fill", a, (ulong)n, s))),
        (1, Gen.UInt[1, 4].Select(e => new BtreeStep("drain", e, 0, 0))));

    public static IEnumerable<object[]> BlockSizes() => [[512], [1024], [4096], [65536]];

    [Theory]
    [MemberData(nameof(BlockSizes))]
    public void BtreeNonOverlappingMatchesModel(int blockSize)
    {
        var (iter, len, fill, keyRange) = Budget(blockSize);
        var sw = Stopwatch.StartNew();
        int maxSize = 0, maxHeight = 0;
        Steps(keyRange, fill).Array[1, len].Sample(steps =>
        {
            var (size, height) = RunU64(steps, blockSize, checkEvery: blockSize >= 65536 ? 8 : 1);
            maxSize = Math.Max(maxSize, size);
            maxHeight = Math.Max(maxHeight, height);
        }, iter: iter, threads: 1, print: s => string.Join(" ", s.Select(x => x.ToString())));
        output.WriteLine($"u64 bs={blockSize}: {iter} runs in {sw.Elapsed.TotalSeconds:F1}s, max records {maxSize}, max height {maxHeight}");
    }

    [Theory]
    [MemberData(nameof(BlockSizes))]
    public void BtreeOverlappingMatchesIntervalModel(int blockSize)
    {
        var (iter, len, fill, keyRange) = Budget(blockSize);
        var sw = Stopwatch.StartNew();
        int maxSize = 0, maxHeight = 0;
        Steps(keyRange, fill).Array[1, len].Sample(steps =>
        {
            var (size, height) = RunInterval(steps, blockSize, checkEvery: blockSize >= 65536 ? 8 : 1);
            maxSize = Math.Max(maxSize, size);
            maxHeight = Math.Max(maxHeight, height);
        }, iter: iter, threads: 1, print: s => string.Join(" ", s.Select(x => x.ToString())));
        output.WriteLine($"interval bs={blockSize}: {iter} runs in {sw.Elapsed.TotalSeconds:F1}s, max records {maxSize}, max height {maxHeight}");
    }

    [Theory]
    [MemberData(nameof(BlockSizes))]
    public void BtreeMatchesModelsOnDiskImageTarget(int blockSize)
    {
        var (iter, len, fill, keyRange) = Budget(blockSize);
        iter = blockSize >= 65536 ? (Long ? 30 : 2) : Math.Max(4, iter / 3);
        var sw = Stopwatch.StartNew();
        int maxU = 0, maxI = 0;
        var gen = Steps(keyRange, fill).Array[1, len];
        gen.Sample(steps => { maxU = Math.Max(maxU, RunU64(steps, blockSize, blockSize >= 65536 ? 8 : 1, o => TestTree<U64Ops>.OnImageFile(new U64Ops(blockSize == 1024), blockSize)).Size); },
            iter: iter, threads: 1, print: s => string.Join(" ", s.Select(x => x.ToString())));
        gen.Sample(steps => { maxI = Math.Max(maxI, RunInterval(steps, blockSize, blockSize >= 65536 ? 8 : 1, o => TestTree<IntervalOps>.OnImageFile(new IntervalOps(blockSize == 4096), blockSize)).Size); },
            iter: iter, threads: 1, print: s => string.Join(" ", s.Select(x => x.ToString())));
        output.WriteLine($"image file bs={blockSize}: {iter}+{iter} runs in {sw.Elapsed.TotalSeconds:F1}s, max records {maxU} (u64) / {maxI} (interval)");
    }

    static (long Iter, int Len, int Fill, uint KeyRange) Budget(int blockSize) => blockSize switch
    {
        512 => (Long ? 3000 : 300, 200, 300, 3000),
        1024 => (Long ? 1500 : 150, 160, 600, 6000),
        4096 => (Long ? 600 : 60, 100, 3000, 60000),
        _ => (Long ? 150 : 12, 40, 20000, 400000),
    };

    [Fact]
    public void BtreeHeightBoundsAreXfsBounds()
    {
        // rmapbt at 4 KiB: leaves 84-168 records, nodes 45-91 entries.
        var geo = new BtreeGeometry(4096, false, 24, 20, true);
        AssertHeightWithinXfsBounds(geo, 0, 1);
        AssertHeightWithinXfsBounds(geo, 168, 1);
        Assert.ThrowsAny<Exception>(() => AssertHeightWithinXfsBounds(geo, 169, 1));     // two leaves need a root node
        AssertHeightWithinXfsBounds(geo, 100000, 3);
        Assert.ThrowsAny<Exception>(() => AssertHeightWithinXfsBounds(geo, 100000, 2));  // 168 * 91 < 100000
        Assert.ThrowsAny<Exception>(() => AssertHeightWithinXfsBounds(geo, 100000, 5));  // 100000 / 84 leaves / 45 / 45 <= 1: 3 at most
    }

    /// <summary>
    /// The height XFS allows for <paramref name="records"/>: at most xfs_btree_compute_maxlevels with the minrecs
    /// limits (every non-root block at least half full), at least what maxrecs-full blocks need.
    /// </summary>
    internal static void AssertHeightWithinXfsBounds(BtreeGeometry geo, long records, int height)
    {
        int tallest = 1;
        for (long blocks = (records + geo.LeafMinRecords - 1) / geo.LeafMinRecords; blocks > 1; blocks = (blocks + geo.NodeMinRecords - 1) / geo.NodeMinRecords)
            tallest++;
        int shortest = 1;
        for (long capacity = geo.LeafMaxRecords; capacity < records; capacity *= geo.NodeMaxRecords)
            shortest++;
        Assert.True(height >= shortest && height <= tallest,
            $"height {height} for {records} records is outside the XFS bounds [{shortest}, {tallest}] (leaf {geo.LeafMinRecords}-{geo.LeafMaxRecords}, node {geo.NodeMinRecords}-{geo.NodeMaxRecords})");
    }

    internal static (int Size, int Height) RunU64(BtreeStep[] steps, int blockSize, int checkEvery, Func<U64Ops, TestTree<U64Ops>>? factory = null)
    {
        using var t = (factory ?? (o => TestTree<U64Ops>.OnTestStore(o, blockSize)))(new U64Ops(longPointers: blockSize == 1024 || factory != null));
        var (tree, store) = (t.Tree, t);
        var model = new SortedDictionary<ulong, ulong>();
        using var cur = tree.CreateCursor();
        int stepNo = 0;
        foreach (var s in steps)
        {
            switch (s.Kind)
            {
                case "insert":
                    {
                        bool expected = !model.ContainsKey(s.A);
                        Assert.Equal(expected, cur.Insert(U64Ops.Record(s.A, s.B)));
                        if (expected) model[s.A] = s.B;
                        break;
                    }
                case "delete":
                    {
                        bool found = cur.Lookup(U64Ops.Key(s.A), BtreeLookup.Equal);
                        Assert.Equal(model.ContainsKey(s.A), found);
                        if (found) { cur.Delete(); model.Remove(s.A); }
                        break;
                    }
                case "update":
                    if (cur.Lookup(U64Ops.Key(s.A), BtreeLookup.Equal))
                    {
                        cur.Update(U64Ops.Record(s.A, s.B));
                        model[s.A] = s.B;
                    }
                    else Assert.False(model.ContainsKey(s.A));
                    break;
                case "lookup":
                    CheckLookup(cur, model, s.A, (BtreeLookup)(int)s.B);
                    break;
                case "range":
                    {
                        var v = new CollectVisitor();
                        cur.Query(U64Ops.Key(s.A), U64Ops.Key(s.B), ref v);
                        var got = (v.Records ?? new()).Select(r => BinaryPrimitives.ReadUInt64BigEndian(r)).ToList();
                        var want = model.Keys.Where(k => k >= s.A && k <= s.B).ToList();
                        Assert.Equal(want, got);
                        break;
                    }
                case "fill":
                    for (ulong i = 0; i < s.B; i++)
                    {
                        ulong k = s.A + i * s.C;
                        bool expected = !model.ContainsKey(k);
                        Assert.Equal(expected, cur.Insert(U64Ops.Record(k, k)));
                        if (expected) model[k] = k;
                    }
                    break;
                case "drain":
                    {
                        int n = 0;
                        foreach (var k in model.Keys.ToList())
                        {
                            if (n++ % (int)s.A != 0) continue;
                            Assert.True(cur.Lookup(U64Ops.Key(k), BtreeLookup.Equal));
                            cur.Delete();
                            model.Remove(k);
                        }
                        break;
                    }
            }
            if (++stepNo % checkEvery == 0 || stepNo == steps.Length) Verify(tree, store, cur, model.Select(kv => U64Ops.Record(kv.Key, kv.Value)).ToList(), s);
        }
        AssertHeightWithinXfsBounds(tree.Geometry, model.Count, tree.Root.Height);
        return (model.Count, tree.Root.Height);
    }

    static void CheckLookup(BtreeCursor<U64Ops> cur, SortedDictionary<ulong, ulong> model, ulong key, BtreeLookup mode)
    {
        bool found = cur.Lookup(U64Ops.Key(key), mode);
        ulong? want = mode switch
        {
            BtreeLookup.Equal => model.ContainsKey(key) ? key : null,
            BtreeLookup.LessOrEqual => model.Keys.Where(k => k <= key).Select(k => (ulong?)k).LastOrDefault(),
            _ => model.Keys.Where(k => k >= key).Select(k => (ulong?)k).FirstOrDefault(),
        };
        Assert.Equal(want.HasValue, found);
        if (!found) return;
        var rec = cur.Current;
        Assert.Equal(want!.Value, BinaryPrimitives.ReadUInt64BigEndian(rec));
        Assert.Equal(model[want.Value], BinaryPrimitives.ReadUInt64BigEndian(rec[8..]));
        // Neighbours through increment and decrement (crossing leaves and parents).
        ulong? next = model.Keys.Where(k => k > want.Value).Select(k => (ulong?)k).FirstOrDefault();
        Assert.Equal(next.HasValue, cur.Increment());
        if (next.HasValue) Assert.Equal(next.Value, BinaryPrimitives.ReadUInt64BigEndian(cur.Current));
        Assert.True(cur.Decrement()); // back on the record found (from past-the-end too)
        Assert.Equal(want.Value, BinaryPrimitives.ReadUInt64BigEndian(cur.Current));
        ulong? prev = model.Keys.Where(k => k < want.Value).Select(k => (ulong?)k).LastOrDefault();
        Assert.Equal(prev.HasValue, cur.Decrement());
        if (prev.HasValue) Assert.Equal(prev.Value, BinaryPrimitives.ReadUInt64BigEndian(cur.Current));
    }

    internal static (int Size, int Height) RunInterval(BtreeStep[] steps, int blockSize, int checkEvery, Func<IntervalOps, TestTree<IntervalOps>>? factory = null)
    {
        using var t = (factory ?? (o => TestTree<IntervalOps>.OnTestStore(o, blockSize)))(new IntervalOps(longPointers: blockSize == 4096 || factory != null));
        var (tree, store) = (t.Tree, t);
        var model = new SortedDictionary<(uint Start, ulong Owner), uint>();
        using var cur = tree.CreateCursor();
        int stepNo = 0;
        foreach (var s in steps)
        {
            uint start = (uint)s.A;
            switch (s.Kind)
            {
                case "insert":
                    {
                        bool expected = !model.ContainsKey((start, s.C));
                        Assert.Equal(expected, cur.Insert(IntervalOps.Record(start, (uint)s.B, s.C)));
                        if (expected) model[(start, s.C)] = (uint)s.B;
                        break;
                    }
                case "delete":
                    {
                        bool found = cur.Lookup(IntervalOps.Key(start, s.C), BtreeLookup.Equal);
                        Assert.Equal(model.ContainsKey((start, s.C)), found);
                        if (found) { cur.Delete(); model.Remove((start, s.C)); }
                        break;
                    }
                case "update":
                    if (cur.Lookup(IntervalOps.Key(start, s.C), BtreeLookup.Equal))
                    {
                        // Changing the length moves the high key: node high keys must follow.
                        cur.Update(IntervalOps.Record(start, (uint)s.B, s.C));
                        model[(start, s.C)] = (uint)s.B;
                    }
                    break;
                case "lookup":
                    {
                        bool found = cur.Lookup(IntervalOps.Key(start, 1), (BtreeLookup)(int)s.B);
                        var keys = model.Keys.ToList();
                        (uint, ulong)? want = (BtreeLookup)(int)s.B switch
                        {
                            BtreeLookup.Equal => model.ContainsKey((start, 1)) ? (start, 1UL) : null,
                            BtreeLookup.LessOrEqual => keys.Where(k => k.CompareTo((start, 1UL)) <= 0).Select(k => ((uint, ulong)?)k).LastOrDefault(),
                            _ => keys.Where(k => k.CompareTo((start, 1UL)) >= 0).Select(k => ((uint, ulong)?)k).FirstOrDefault(),
                        };
                        Assert.Equal(want.HasValue, found);
                        if (found)
                        {
                            var d = IntervalOps.Decode(cur.Current);
                            Assert.Equal(want!.Value, (d.Start, d.Owner));
                        }
                        break;
                    }
                case "range":
                    {
                        // Overlapped query on the physical range [A, B] across all owners.
                        var v = new CollectVisitor();
                        cur.Query(IntervalOps.Key((uint)s.A, 0), IntervalOps.Key((uint)s.B, ulong.MaxValue), ref v);
                        var got = (v.Records ?? new()).Select(r => IntervalOps.Decode(r)).Select(d => (d.Start, d.Owner)).ToList();
                        var want = model.Where(kv => kv.Key.Start <= s.B && kv.Key.Start + kv.Value - 1 >= s.A).Select(kv => kv.Key).ToList();
                        Assert.Equal(want, got);
                        Assert.Equal(want.Count > 0, cur.HasRecords(IntervalOps.Key((uint)s.A, 0), IntervalOps.Key((uint)s.B, ulong.MaxValue)));
                        break;
                    }
                case "fill":
                    for (ulong i = 0; i < s.B; i++)
                    {
                        uint st = (uint)(s.A + i * s.C);
                        ulong owner = i % 3;
                        uint len = (uint)(1 + (i * 7919 % 50));
                        bool expected = !model.ContainsKey((st, owner));
                        Assert.Equal(expected, cur.Insert(IntervalOps.Record(st, len, owner)));
                        if (expected) model[(st, owner)] = len;
                    }
                    break;
                case "drain":
                    {
                        int n = 0;
                        foreach (var k in model.Keys.ToList())
                        {
                            if (n++ % (int)s.A != 0) continue;
                            Assert.True(cur.Lookup(IntervalOps.Key(k.Start, k.Owner), BtreeLookup.Equal));
                            cur.Delete();
                            model.Remove(k);
                        }
                        break;
                    }
            }
            if (++stepNo % checkEvery == 0 || stepNo == steps.Length)
                Verify(tree, store, cur, model.Select(kv => IntervalOps.Record(kv.Key.Start, kv.Value, kv.Key.Owner)).ToList(), s);
        }
        AssertHeightWithinXfsBounds(tree.Geometry, model.Count, tree.Root.Height);
        return (model.Count, tree.Root.Height);
    }

    internal static void Verify<TOps>(Btree<TOps> tree, TestTree<TOps> store, BtreeCursor<TOps> cur, List<byte[]> expected, BtreeStep after)
        where TOps : struct, IBtreeOps
    {
        cur.Release();
        store.AssertNoHolds();
        var report = tree.Check();
        if (!report.IsClean) throw new InvalidOperationException($"after {after}: {report}");
        Assert.Equal(expected.Count, report.Records);
        Assert.Equal(expected.Count, cur.CountRecords());
        var all = new CollectVisitor();
        cur.QueryAll(ref all);
        var got = all.Records ?? new();
        Assert.Equal(expected.Count, got.Count);
        for (int i = 0; i < got.Count; i++)
            if (!got[i].AsSpan().SequenceEqual(expected[i])) throw new InvalidOperationException($"after {after}: record {i} differs");
        Assert.Equal(report.Blocks, store.LiveBlocks);
        cur.Release();
        store.AssertNoHolds();
    }
}

/// <summary>A tree under test and what the model test needs to know about its store.</summary>
public sealed class TestTree<TOps>(Btree<TOps> tree, Func<long> liveBlocks, Action assertNoHolds, IDisposable? owner) : IDisposable
    where TOps : struct, IBtreeOps
{
    public Btree<TOps> Tree => tree;
    public long LiveBlocks => liveBlocks();
    public void AssertNoHolds() => assertNoHolds();
    public void Dispose() => owner?.Dispose();

    internal static TestTree<TOps> OnImageFile(TOps ops, int blockSize)
    {
        var store = new BtreeImageFileStore(blockSize);
        var tree = new Btree<TOps>(ops, store, new BtreeRootValue(BtreeHeader.NullPointer, 1), BtreeTestTrees.Uuid, owner: 7);
        tree.CreateEmpty();
        return new TestTree<TOps>(tree, () => store.LiveBlocks, store.AssertNoHolds, store);
    }

    internal static TestTree<TOps> OnTestStore(TOps ops, int blockSize)
    {
        var (t, store) = BtreeTestTrees.NewTree(ops, blockSize);
        return new TestTree<TOps>(t, () => store.LiveBlocks, store.AssertNoHolds, null);
    }
}
