using System.Buffers.Binary;
using Xfbtree.Btree;
using Xunit.Abstractions;

namespace Xfbtree.Tests.Btree;

/// <summary>Edge cases: empty tree, root growth and collapse, splits and joins at every level, overlapping duplicates.</summary>
public sealed class BtreeEdgeCaseTests(ITestOutputHelper output)
{
    [Fact]
    public void BtreeEmptyTreeBehaves()
    {
        var (tree, store) = BtreeTestTrees.NewTree(new U64Ops(false), 512);
        using var cur = tree.CreateCursor();
        Assert.False(cur.Lookup(U64Ops.Key(5), BtreeLookup.Equal));
        Assert.False(cur.Lookup(U64Ops.Key(5), BtreeLookup.LessOrEqual));
        Assert.False(cur.Lookup(U64Ops.Key(5), BtreeLookup.GreaterOrEqual));
        Assert.False(cur.HasRecord);
        Assert.Throws<InvalidOperationException>(() => cur.Delete());
        Assert.False(cur.MoveFirst());
        Assert.False(cur.MoveLast());
        Assert.Equal(0, cur.CountRecords());
        Assert.False(cur.HasRecords(U64Ops.Key(0), U64Ops.Key(ulong.MaxValue)));
        cur.Release();
        Assert.True(tree.Check().IsClean);
        store.AssertNoHolds();
    }

    public static IEnumerable<object[]> Orders() => [["ascending"], ["descending"], ["random"]];

    [Theory]
    [MemberData(nameof(Orders))]
    public void BtreeGrowsAndCollapsesThroughEveryLevel(string order)
    {
        // 512-byte blocks: 28 records per leaf, 38 entries per node: 100k records make a 4-level tree in any order.
        const int n = 100000;
        var (tree, store) = BtreeTestTrees.NewTree(new U64Ops(false), 512);
        var keys = Enumerable.Range(0, n).Select(i => (ulong)i * 3).ToArray();
        if (order == "descending") Array.Reverse(keys);
        if (order == "random") new Random(42).Shuffle(keys);
        using var cur = tree.CreateCursor();
        int maxHeight = 1;
        for (int i = 0; i < n; i++)
        {
            Assert.True(cur.Insert(U64Ops.Record(keys[i], keys[i] + 1)));
            maxHeight = Math.Max(maxHeight, tree.Root.Height);
            if (i % 20000 == 0) AssertClean(tree, cur, i + 1);
        }
        AssertClean(tree, cur, n);
        Assert.True(maxHeight >= 4, $"height {maxHeight}");
        var deleteOrder = (ulong[])keys.Clone();
        new Random(7).Shuffle(deleteOrder);
        if (order != "random") Array.Sort(deleteOrder);
        if (order == "descending") Array.Reverse(deleteOrder);
        for (int i = 0; i < n; i++)
        {
            Assert.True(cur.Lookup(U64Ops.Key(deleteOrder[i]), BtreeLookup.Equal));
            Assert.Equal(deleteOrder[i] + 1, BinaryPrimitives.ReadUInt64BigEndian(cur.Current[8..]));
            cur.Delete();
            if (i % 20000 == 0) AssertClean(tree, cur, n - i - 1);
        }
        AssertClean(tree, cur, 0);
        Assert.Equal(1, tree.Root.Height);
        Assert.Equal(1, store.LiveBlocks);
        output.WriteLine($"{order}: max height {maxHeight}, store reads {store.Reads}");
    }

    static void AssertClean<TOps>(Btree<TOps> tree, BtreeCursor<TOps> cur, long records) where TOps : struct, IBtreeOps
    {
        cur.Release();
        var report = tree.Check();
        Assert.True(report.IsClean, report.ToString());
        Assert.Equal(records, report.Records);
        if (records > 0)
        {
            // Every non-root level is at least half full, so the height is bounded by the minrecs fan-out.
            Assert.True(report.Height <= tree.Geometry.MaxLevels);
        }
    }

    [Fact]
    public void BtreeOverlappingDuplicateStartsAndLongExtents()
    {
        // Many records share a start block (different owners) and long extents end far to the right of
        // later records: the node high keys must carry the subtree maximum, not the last record's.
        var (tree, store) = BtreeTestTrees.NewTree(new IntervalOps(false), 512);
        var model = new List<(uint S, uint L, ulong O)>();
        var rnd = new Random(3);
        using var cur = tree.CreateCursor();
        for (int i = 0; i < 6000; i++)
        {
            uint s = (uint)rnd.Next(0, 400);
            ulong o = (ulong)rnd.Next(0, 40);
            uint l = rnd.Next(10) == 0 ? (uint)rnd.Next(100, 2000) : (uint)rnd.Next(1, 5);
            if (model.Any(m => m.S == s && m.O == o)) { Assert.False(cur.Insert(IntervalOps.Record(s, l, o))); continue; }
            Assert.True(cur.Insert(IntervalOps.Record(s, l, o)));
            model.Add((s, l, o));
        }
        cur.Release();
        var checkReport = tree.Check();
        Assert.True(checkReport.IsClean, checkReport.ToString());
        for (int q = 0; q < 300; q++)
        {
            uint a = (uint)rnd.Next(0, 2500), b = a + (uint)rnd.Next(0, 30);
            var v = new CollectVisitor();
            cur.Query(IntervalOps.Key(a, 0), IntervalOps.Key(b, ulong.MaxValue), ref v);
            var got = (v.Records ?? new()).Select(r => IntervalOps.Decode(r)).Select(d => (d.Start, d.Len, d.Owner)).ToList();
            var want = model.Where(m => m.S <= b && m.S + m.L - 1 >= a).OrderBy(m => m.S).ThenBy(m => m.O).ToList();
            Assert.Equal(want, got);
        }
        // Delete half, then shrink every long extent with Update: high keys must come down again.
        foreach (var m in model.Where((_, i) => i % 2 == 0).ToList())
        {
            Assert.True(cur.Lookup(IntervalOps.Key(m.S, m.O), BtreeLookup.Equal));
            cur.Delete();
            model.Remove(m);
        }
        for (int i = 0; i < model.Count; i++)
        {
            var m = model[i];
            if (m.L < 100) continue;
            Assert.True(cur.Lookup(IntervalOps.Key(m.S, m.O), BtreeLookup.Equal));
            cur.Update(IntervalOps.Record(m.S, 1, m.O));
            model[i] = (m.S, 1, m.O);
        }
        cur.Release();
        var report = tree.Check();
        Assert.True(report.IsClean, report.ToString());
        Assert.Equal(model.Count, report.Records);
        store.AssertNoHolds();
    }

    [Fact]
    public void BtreeCursorWalksBothWaysAcrossLeaves()
    {
        var (tree, _) = BtreeTestTrees.NewTree(new U64Ops(true), 512);
        using var cur = tree.CreateCursor();
        for (ulong k = 0; k < 5000; k++) Assert.True(cur.Insert(U64Ops.Record(k * 2, k)));
        Assert.True(cur.MoveFirst());
        ulong expect = 0;
        do { Assert.Equal(expect, BinaryPrimitives.ReadUInt64BigEndian(cur.Current)); expect += 2; } while (cur.Increment());
        Assert.Equal(10000UL, expect);
        Assert.True(cur.MoveLast());
        expect = 9998;
        int count = 0;
        do { Assert.Equal(expect, BinaryPrimitives.ReadUInt64BigEndian(cur.Current)); expect -= 2; count++; } while (cur.Decrement());
        Assert.Equal(5000, count);
        // GE lookup past the end of a leaf lands on the next leaf's first record.
        for (ulong k = 1; k < 9998; k += 2)
        {
            Assert.True(cur.Lookup(U64Ops.Key(k), BtreeLookup.GreaterOrEqual));
            Assert.Equal(k + 1, BinaryPrimitives.ReadUInt64BigEndian(cur.Current));
            Assert.True(cur.Lookup(U64Ops.Key(k), BtreeLookup.LessOrEqual));
            Assert.Equal(k - 1, BinaryPrimitives.ReadUInt64BigEndian(cur.Current));
        }
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void BtreeDeleteUnderOneChildRootCollapsesTheRoot(bool emptyTheLeaf)
    {
        // A block root node with a single child is legal (only the root may be underfull), but its child has no
        // sibling to borrow from or join with: deleting it below minrecs must make the child the root rather
        // than leave an underfull non-root block (or, when it empties, report corruption on a healthy tree).
        var ops = new U64Ops(false);
        var (tree, store) = BtreeTestTrees.NewTree(ops, 512);
        var geo = tree.Geometry;
        int count = geo.LeafMinRecords + 2;
        using var cur = tree.CreateCursor();
        for (int i = 0; i < count; i++) Assert.True(cur.Insert(U64Ops.Record((ulong)i, (ulong)i + 1)));
        cur.Release();
        Assert.Equal(1, tree.Root.Height);
        long leaf = tree.Root.Pointer;
        long node = store.AllocateBlock();
        var raw = store.RawBlock(node);
        BtreeHeader.Initialize(raw, geo.LongPointers, ops.Magic, 1, store.PointerToDaddr(node), BtreeTestTrees.Uuid, 7);
        BtreeHeader.SetNumRecords(raw, 1);
        U64Ops.Key(0).CopyTo(raw.AsSpan(geo.KeyOffset(0)));
        BtreeHeader.WritePointer(raw.AsSpan(geo.PointerOffset(0, geo.NodeMaxRecords)), geo.LongPointers, leaf);
        tree.Root.Set(node, 2);
        var before = tree.Check();
        Assert.True(before.IsClean, before.ToString());

        int deletes = emptyTheLeaf ? count : 3; // 3 takes the leaf one below minrecs
        for (int i = 0; i < deletes; i++)
        {
            Assert.True(cur.Lookup(U64Ops.Key((ulong)i), BtreeLookup.Equal));
            cur.Delete();
        }
        cur.Release();
        var after = tree.Check();
        Assert.True(after.IsClean, after.ToString());
        Assert.Equal(count - deletes, after.Records);
        Assert.Equal(1, tree.Root.Height);
        Assert.Equal(leaf, tree.Root.Pointer);
        store.AssertNoHolds();
    }
}
