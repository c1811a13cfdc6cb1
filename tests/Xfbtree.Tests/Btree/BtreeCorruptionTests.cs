using Xfbtree.Btree;
using Xfbtree.Buffers;
using Xunit.Abstractions;

namespace Xfbtree.Tests.Btree;

/// <summary>
/// Random byte flips in the blocks of a tree: every walk, lookup, query, insert, delete and the checker must
/// either succeed or end in <see cref="CorruptionException"/> (the test store turns any read of an invalid
/// pointer or a double hold, i.e. a would-be deadlock, into a different exception, which fails the test).
/// </summary>
public sealed class BtreeCorruptionTests(ITestOutputHelper output)
{
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void BtreeRandomByteFlipsEndInCorruptionErrors(bool overlapping)
    {
        int rounds = Environment.GetEnvironmentVariable("XFBTREE_LONG_TESTS") == "1" ? 3000 : 300;
        var rnd = new Random(overlapping ? 5 : 6);
        int corrupt = 0, clean = 0;
        for (int round = 0; round < rounds; round++)
        {
            bool detected = overlapping ? Round(new IntervalOps(round % 2 == 0), rnd, r => IntervalOps.Record((uint)(r * 5), (uint)(1 + r % 17), (ulong)(r % 3)), r => IntervalOps.Key((uint)r, 0))
                                        : Round(new U64Ops(round % 2 == 0), rnd, r => U64Ops.Record((ulong)r * 5, (ulong)r), r => U64Ops.Key((ulong)r));
            if (detected) corrupt++; else clean++;
        }
        output.WriteLine($"{rounds} rounds: {corrupt} ended in CorruptionException, {clean} completed");
        Assert.True(corrupt > rounds / 4, "flips in headers and keys should mostly be detected");
    }

    static bool Round<TOps>(TOps ops, Random rnd, Func<int, byte[]> record, Func<int, byte[]> key) where TOps : struct, IBtreeOps
    {
        var store = new BtreeTestStore(512);
        var root = new BtreeRootValue(BtreeHeader.NullPointer, 1);
        var tree = new Btree<TOps>(ops, store, root, BtreeTestTrees.Uuid, 7);
        int n = rnd.Next(1, 3000);
        var records = Enumerable.Range(0, n).Select(record).ToList();
        var plan = BtreeBulkLoader.ComputeGeometry(tree.Geometry, n);
        var source = new ListSource(records);
        BtreeBulkLoader.Load(tree, plan, ref source, store.AllocateBlock);
        // Flip 1..4 random bytes in random blocks, biased to the header and the first keys.
        int flips = rnd.Next(1, 5);
        for (int f = 0; f < flips; f++)
        {
            long ptr = rnd.Next(1, (int)plan.TotalBlocks + 1);
            var raw = store.RawBlock(ptr);
            int at = rnd.Next(3) == 0 ? rnd.Next(0, 72) : rnd.Next(0, raw.Length);
            raw[at] ^= (byte)rnd.Next(1, 256);
        }
        try
        {
            using var cur = tree.CreateCursor();
            cur.CountRecords();
            var all = new CollectVisitor();
            cur.QueryAll(ref all);
            for (int i = 0; i < 20; i++) cur.Lookup(key(rnd.Next(0, n * 5)), (BtreeLookup)rnd.Next(0, 3));
            var q = new CollectVisitor();
            cur.Query(key(rnd.Next(0, n * 5)), key(rnd.Next(n * 5, n * 6)), ref q);
            var v = new CountingBlockVisitor();
            cur.VisitBlocks(ref v);
            cur.Release();
            tree.Check();
            for (int i = 0; i < 50; i++) cur.Insert(record(n + rnd.Next(0, 5000)));
            for (int i = 0; i < 50; i++)
                if (cur.Lookup(key(rnd.Next(0, n * 5)), BtreeLookup.GreaterOrEqual)) cur.Delete();
            cur.Release();
            tree.Check();
            store.AssertNoHolds();
            return false;
        }
        catch (CorruptionException)
        {
            return true;
        }
    }

    struct CountingBlockVisitor : IBtreeBlockVisitor
    {
        public long Blocks;
        public void Visit(int level, long pointer, ReadOnlySpan<byte> block) => Blocks++;
    }
}
