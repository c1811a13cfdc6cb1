using System.Buffers.Binary;
using Xfbtree.Btree;
using Xunit;

namespace Xfbtree.Tests.Btree;

/// <summary>
/// Writes through an inode-fork root (bmbt-like: long pointers, 16-byte records, 8-byte keys): inserts into the
/// root image while it has room, new_iroot when it is full, kill_iroot when a single child fits again, the
/// level-1 floor, and the fork write-back (bmdr layout with pointers at 4 + maxrecs(fork) * keysize). Every batch
/// of random operations is checked against a model, by the structure checker, and by re-parsing the fork bytes
/// the owner copied in its Changed callback.
/// </summary>
public sealed class BtreeInodeRootWriteTests
{
    const ulong Owner = 7;

    /// <summary>An owner that keeps the fork bytes in step with the image, as an inode would.</summary>
    sealed class ForkOwner
    {
        public byte[] Fork;
        public int ChangedCalls;
        public readonly List<int> HeightsSeen = new();

        public ForkOwner(int forkBytes) => Fork = new byte[forkBytes];

        public void OnChanged(BtreeInodeRoot root)
        {
            ChangedCalls++;
            root.WriteTo(Fork);
            if (HeightsSeen.Count == 0 || HeightsSeen[^1] != root.Height) HeightsSeen.Add(root.Height);
        }
    }

    static (Btree<TOps> Tree, BtreeInodeRoot Root, BtreeTestStore Store, ForkOwner Owner) NewInodeRootedTree<TOps>(TOps ops, int blockSize, int forkBytes)
        where TOps : struct, IBtreeOps
    {
        var store = new BtreeTestStore(blockSize);
        var owner = new ForkOwner(forkBytes);
        var geo = BtreeGeometry.For(ops, blockSize);
        var root = new BtreeInodeRoot(geo, ops.Magic, owner.Fork) { Changed = null };
        root.Changed = owner.OnChanged;
        var tree = new Btree<TOps>(ops, store, root, BtreeTestTrees.Uuid, (long)Owner);
        tree.CreateEmpty();
        return (tree, root, store, owner);
    }

    static List<byte[]> Walk<TOps>(Btree<TOps> tree) where TOps : struct, IBtreeOps
    {
        var all = new List<byte[]>();
        using var c = tree.CreateCursor();
        if (c.MoveFirst())
            do all.Add(c.Current.ToArray()); while (c.Increment());
        return all;
    }

    /// <summary>The tree as re-read from the owner's fork bytes only: it must be clean and hold exactly the model.</summary>
    static void AssertForkRoundTrip<TOps>(TOps ops, Btree<TOps> tree, BtreeInodeRoot root, ForkOwner owner, IReadOnlyList<byte[]> expected)
        where TOps : struct, IBtreeOps
    {
        var reparsed = new BtreeInodeRoot(tree.Geometry, ops.Magic, owner.Fork);
        Assert.Equal(root.Level, reparsed.Level);
        Assert.Equal(root.NumRecords, reparsed.NumRecords);
        var copy = new byte[owner.Fork.Length];
        reparsed.WriteTo(copy);
        Assert.Equal(owner.Fork, copy);
        var again = new Btree<TOps>(ops, tree.Store, reparsed, BtreeTestTrees.Uuid, (long)Owner);
        var report = again.Check();
        Assert.True(report.IsClean, report.ToString());
        var records = Walk(again);
        Assert.Equal(expected.Count, records.Count);
        for (int i = 0; i < records.Count; i++) Assert.Equal(expected[i], records[i]);
    }

    static void AssertMatchesModel(Btree<U64Ops> tree, BtreeTestStore store, SortedDictionary<ulong, ulong> model, BtreeInodeRoot root, ForkOwner owner)
    {
        store.AssertNoHolds();
        var report = tree.Check();
        Assert.True(report.IsClean, report.ToString());
        Assert.Equal(model.Count, report.Records);
        Assert.Equal(root.Height, report.Height);
        var expected = model.Select(kv => U64Ops.Record(kv.Key, kv.Value)).ToList();
        var records = Walk(tree);
        Assert.Equal(expected.Count, records.Count);
        for (int i = 0; i < records.Count; i++) Assert.Equal(expected[i], records[i]);
        AssertForkRoundTrip(new U64Ops(true), tree, root, owner, expected);
        Assert.Equal(root.Height, owner.HeightsSeen[^1]);
        store.AssertNoHolds();
    }

    [Theory]
    [InlineData(512, 100, 1, 200, 4)]   // fork maxrecs 6, block maxrecs 27: tall trees from a few thousand records
    [InlineData(512, 52, 2, 200, 4)]    // fork maxrecs 3
    [InlineData(1024, 336, 3, 600, 3)]  // a v5 512-byte inode's literal area: fork maxrecs 20, block maxrecs 59
    public void RandomInsertsAndDeletes_MatchModel_GrowAndShrinkThroughTheInodeRoot(int blockSize, int forkBytes, int seed, int opsPerBatch, int minPeakHeight)
    {
        var ops = new U64Ops(true);
        var (tree, root, store, owner) = NewInodeRootedTree(ops, blockSize, forkBytes);
        Assert.Equal(2, root.Height);
        Assert.Equal(BtreeInodeRoot.MaxRecordsForFork(tree.Geometry, forkBytes), root.MaxRecords);
        var model = new SortedDictionary<ulong, ulong>();
        var keys = new List<ulong>();
        var rng = new Random(seed);
        using var c = tree.CreateCursor();
        int maxHeight = 0;
        int kills = 0, lastHeight = root.Height;
        void Op(bool insertBias)
        {
            bool insert = keys.Count == 0 || rng.Next(100) < (insertBias ? 80 : 25);
            if (insert)
            {
                ulong k = (ulong)rng.Next(60_000);
                ulong v = (ulong)rng.Next();
                bool inserted = c.Insert(U64Ops.Record(k, v));
                Assert.Equal(!model.ContainsKey(k), inserted);
                if (inserted) { model[k] = v; keys.Add(k); }
            }
            else
            {
                int i = rng.Next(keys.Count);
                ulong k = keys[i];
                keys[i] = keys[^1];
                keys.RemoveAt(keys.Count - 1);
                Assert.True(c.Lookup(U64Ops.Key(k), BtreeLookup.Equal));
                c.Delete();
                Assert.True(model.Remove(k));
            }
            if (root.Height < lastHeight) kills++;
            lastHeight = root.Height;
            maxHeight = Math.Max(maxHeight, root.Height);
        }
        for (int batch = 0; batch < 30; batch++)
        {
            for (int i = 0; i < opsPerBatch; i++) Op(insertBias: true);
            c.Release();
            AssertMatchesModel(tree, store, model, root, owner);
        }
        Assert.True(maxHeight >= minPeakHeight, $"tree only reached height {maxHeight}");
        for (int batch = 0; batch < 60 && keys.Count > 0; batch++)
        {
            for (int i = 0; i < opsPerBatch && keys.Count > 0; i++) Op(insertBias: false);
            c.Release();
            AssertMatchesModel(tree, store, model, root, owner);
        }
        // Drain what is left; the root stops at level 1 over one (possibly empty) leaf.
        while (keys.Count > 0)
        {
            ulong k = keys[^1];
            keys.RemoveAt(keys.Count - 1);
            Assert.True(c.Lookup(U64Ops.Key(k), BtreeLookup.Equal));
            c.Delete();
            model.Remove(k);
            if (root.Height < lastHeight) kills++;
            lastHeight = root.Height;
        }
        c.Release();
        AssertMatchesModel(tree, store, model, root, owner);
        Assert.True(kills >= minPeakHeight - 2, $"only {kills} height decreases (kill_iroot) seen");
        Assert.Equal(2, root.Height);
        Assert.Equal(1, root.NumRecords);
        Assert.Equal(1, store.LiveBlocks);
        Assert.Equal(maxHeight, owner.HeightsSeen.Max());
        Assert.Equal(2, owner.HeightsSeen[^1]);
        // Heights went up and came back down, each step reported to the owner.
        int peak = owner.HeightsSeen.IndexOf(maxHeight);
        for (int i = 1; i <= peak; i++) Assert.Equal(owner.HeightsSeen[i - 1] + 1, owner.HeightsSeen[i]);
        Assert.True(owner.HeightsSeen.Count > peak + 1, "height never decreased");

        // The empty tree takes records again.
        for (ulong k = 0; k < 500; k++) { Assert.True(c.Insert(U64Ops.Record(k * 3, k))); model[k * 3] = k; }
        c.Release();
        AssertMatchesModel(tree, store, model, root, owner);
    }

    [Fact]
    public void FullRoot_NewIroot_MovesEntriesIntoOneChild_AndForkKeepsPointersAtForkMaxrecs()
    {
        var ops = new U64Ops(true);
        const int forkBytes = 100; // maxrecs (100 - 4) / 16 = 6
        var (tree, root, store, owner) = NewInodeRootedTree(ops, 512, forkBytes);
        Assert.Equal(6, root.MaxRecords);
        using var c = tree.CreateCursor();
        ulong next = 0;
        // Fill the level-1 root with exactly 6 leaves (appending splits each full leaf in two).
        while (root.NumRecords < 6 || root.Height > 2) { Assert.True(c.Insert(U64Ops.Record(next, next))); next++; if (root.Height > 2) break; }
        Assert.Equal(2, root.Height);
        Assert.Equal(6, root.NumRecords);
        var leaves = LevelPointers(tree, 0);
        Assert.Equal(6, leaves.Count);
        // bmdr layout: level, numrecs, keys at 4, pointers at 4 + maxrecs(fork) * 8.
        Assert.Equal(1, BinaryPrimitives.ReadUInt16BigEndian(owner.Fork));
        Assert.Equal(6, BinaryPrimitives.ReadUInt16BigEndian(owner.Fork.AsSpan(2)));
        for (int i = 0; i < 6; i++)
            Assert.Equal(leaves[i], BinaryPrimitives.ReadInt64BigEndian(owner.Fork.AsSpan(4 + 6 * 8 + i * 8)));
        Assert.Equal(0UL, BinaryPrimitives.ReadUInt64BigEndian(owner.Fork.AsSpan(4)));

        // One more leaf split: the full root moves its 6 entries into a new level-1 block and becomes level 2.
        int before = store.LiveBlocks;
        while (root.Height == 2) { Assert.True(c.Insert(U64Ops.Record(next, next))); next++; }
        Assert.Equal(3, root.Height);
        Assert.Equal(1, root.NumRecords);
        Assert.Equal(before + 2, store.LiveBlocks); // the new child of the root and the new leaf
        var level1 = LevelPointers(tree, 1);
        Assert.Single(level1);
        Assert.Equal(level1[0], BinaryPrimitives.ReadInt64BigEndian(owner.Fork.AsSpan(4 + 6 * 8)));
        Assert.Equal(2, BinaryPrimitives.ReadUInt16BigEndian(owner.Fork));
        var report = tree.Check();
        Assert.True(report.IsClean, report.ToString());
        Assert.Equal(new long[] { 7, 1, 1 }, report.BlocksPerLevel);

        // The same root written into a larger fork (e.g. the attr fork went away) puts its pointers further out.
        var big = new byte[200]; // maxrecs 12
        root.WriteTo(big);
        Assert.Equal(level1[0], BinaryPrimitives.ReadInt64BigEndian(big.AsSpan(4 + 12 * 8)));
        var fromBig = new Btree<U64Ops>(ops, store, new BtreeInodeRoot(tree.Geometry, ops.Magic, big), BtreeTestTrees.Uuid, (long)Owner);
        Assert.Equal(Walk(tree).Count, Walk(fromBig).Count);
        Assert.True(fromBig.Check().IsClean);
        // A fork too small for the entries is refused, not truncated.
        Assert.Throws<ArgumentException>(() => root.WriteTo(new byte[4]));
        store.AssertNoHolds();
    }

    [Fact]
    public void DeletingEverything_StopsAtLevelOneOverAnEmptyLeaf()
    {
        var ops = new U64Ops(true);
        var (tree, root, store, owner) = NewInodeRootedTree(ops, 512, 52); // fork maxrecs 3
        using var c = tree.CreateCursor();
        const ulong count = 3000;
        for (ulong k = 0; k < count; k++) Assert.True(c.Insert(U64Ops.Record(k, k)));
        Assert.True(root.Height >= 4, $"height {root.Height}");
        int calls = owner.ChangedCalls;
        for (ulong k = 0; k < count; k++)
        {
            Assert.True(c.Lookup(U64Ops.Key(k), BtreeLookup.Equal));
            c.Delete();
        }
        Assert.True(owner.ChangedCalls > calls);
        Assert.Equal(2, root.Height);
        Assert.Equal(1, root.NumRecords);
        var report = tree.Check();
        Assert.True(report.IsClean, report.ToString());
        Assert.Equal(0, report.Records);
        Assert.False(c.MoveFirst());
        Assert.False(c.Lookup(U64Ops.Key(5), BtreeLookup.GreaterOrEqual));
        c.Release();
        AssertForkRoundTrip(ops, tree, root, owner, []);
        Assert.True(c.Insert(U64Ops.Record(9, 9)));
        Assert.True(c.Lookup(U64Ops.Key(9), BtreeLookup.Equal));
        c.Release();
        AssertForkRoundTrip(ops, tree, root, owner, [U64Ops.Record(9, 9)]);
        c.Release();
        store.AssertNoHolds();
    }

    [Fact]
    public void UpdateOfTheFirstRecord_RewritesTheRootKey_AndReportsIt()
    {
        var ops = new U64Ops(true);
        var (tree, root, _, owner) = NewInodeRootedTree(ops, 512, 100);
        using var c = tree.CreateCursor();
        for (ulong k = 10; k < 200; k++) Assert.True(c.Insert(U64Ops.Record(k, k)));
        Assert.True(c.Lookup(U64Ops.Key(10), BtreeLookup.Equal));
        int calls = owner.ChangedCalls;
        c.Update(U64Ops.Record(5, 1)); // still first in key order: the root's first key becomes 5
        Assert.Equal(calls + 1, owner.ChangedCalls);
        Assert.Equal(5UL, BinaryPrimitives.ReadUInt64BigEndian(owner.Fork.AsSpan(4)));
        c.Release();
        Assert.True(tree.Check().IsClean);
        Assert.True(c.Lookup(U64Ops.Key(150), BtreeLookup.Equal));
        calls = owner.ChangedCalls;
        c.Update(U64Ops.Record(150, 2)); // a value change inside a leaf does not touch the root
        Assert.Equal(calls, owner.ChangedCalls);
    }

    [Fact]
    public void OverlappingTree_InodeRootKeepsHighKeys_ThroughGrowthAndShrink()
    {
        var ops = new IntervalOps(true);
        var (tree, root, store, owner) = NewInodeRootedTree(ops, 512, 124); // slot 24 + ptr 8: maxrecs 3
        var model = new SortedDictionary<(uint, ulong), byte[]>();
        var rng = new Random(11);
        using var c = tree.CreateCursor();
        int maxHeight = 0;
        for (int round = 0; round < 20; round++)
        {
            for (int i = 0; i < 300; i++)
            {
                bool insert = model.Count == 0 || rng.Next(100) < (round < 10 ? 80 : 20);
                if (insert)
                {
                    uint start = (uint)rng.Next(100_000);
                    ulong own = (ulong)rng.Next(4);
                    var rec = IntervalOps.Record(start, (uint)rng.Next(1, 3000), own);
                    bool inserted = c.Insert(rec);
                    Assert.Equal(!model.ContainsKey((start, own)), inserted);
                    if (inserted) model[(start, own)] = rec;
                }
                else
                {
                    var key = model.Keys.ElementAt(rng.Next(model.Count));
                    Assert.True(c.Lookup(IntervalOps.Key(key.Item1, key.Item2), BtreeLookup.Equal));
                    c.Delete();
                    model.Remove(key);
                }
                maxHeight = Math.Max(maxHeight, root.Height);
            }
            c.Release();
            store.AssertNoHolds();
            var report = tree.Check();
            Assert.True(report.IsClean, report.ToString());
            AssertForkRoundTrip(ops, tree, root, owner, model.Values.ToList());
            // The overlapped query through the root image agrees with a brute-force filter of the model.
            uint lo = (uint)rng.Next(100_000), hi = lo + 5000;
            var v = new CollectVisitor();
            Assert.True(c.Query(IntervalOps.Key(lo, 0), IntervalOps.Key(hi, ulong.MaxValue), ref v));
            var expected = model.Values.Where(r =>
            {
                var (s, l, _) = IntervalOps.Decode(r);
                return s <= hi && s + l - 1 >= lo;
            }).ToList();
            var got = v.Records ?? [];
            Assert.Equal(expected.Count, got.Count);
            for (int i = 0; i < got.Count; i++) Assert.Equal(expected[i], got[i]);
        }
        Assert.True(maxHeight >= 4, $"tree only reached height {maxHeight}");
        Assert.True(root.Height < maxHeight, "the tree never shrank");
    }

    static List<long> LevelPointers<TOps>(Btree<TOps> tree, int level) where TOps : struct, IBtreeOps
    {
        var v = new LevelCollector { Level = level, Pointers = new() };
        using var c = tree.CreateCursor();
        c.VisitBlocks(ref v);
        return v.Pointers;
    }

    struct LevelCollector : IBtreeBlockVisitor
    {
        public int Level;
        public List<long> Pointers;
        public void Visit(int level, long pointer, ReadOnlySpan<byte> block) { if (level == Level) Pointers.Add(pointer); }
    }
}
