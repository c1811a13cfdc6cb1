using Xfbtree.Btree;
using Xfbtree.Buffers;
using Xfbtree.Xfs.Trees;
using Xunit.Abstractions;

namespace Xfbtree.Xfs.Tests.Trees;

/// <summary>
/// Flips random bytes in the tree blocks of a restored fixture (as the block is read, so the image stays
/// pristine). Half the rounds also fix up the CRC so the structural checks, not just the checksum, are hit.
/// Walks, lookups, queries and the checker must finish or end in <see cref="CorruptionException"/>, nothing else.
/// </summary>
public sealed class BtreeFixtureCorruptionTests(ITestOutputHelper output)
{
    struct BlockList : IBtreeBlockVisitor
    {
        public List<(int Level, long Ptr)> Blocks;
        public void Visit(int level, long pointer, ReadOnlySpan<byte> block) => (Blocks ??= new()).Add((level, pointer));
    }

    [Theory]
    [InlineData("aged-small")]
    [InlineData("geom-bs1k")]
    public void BtreeFlippedFixtureBlocksEndInCorruptionErrors(string name)
    {
        int rounds = Environment.GetEnvironmentVariable("XFBTREE_LONG_TESTS") == "1" ? 2000 : 200;
        var (geo, fh) = BtreeFixtureTreeTests.Open(name);
        using var _ = fh;
        var ag = BtreeFixtureTreeTests.ReadAg(geo, fh, 0);
        uint agLen = ag.U32(ag.Agf, 12);
        var clean = new ImageBlockStore(fh, geo, 0);
        var rmapClean = BtreeFixtureTreeTests.Tree(new RmapbtOps(false, agLen), geo, clean, ag.U32(ag.Agf, 24), ag.U32(ag.Agf, 36), 0);
        var inoClean = BtreeFixtureTreeTests.Tree(new InobtOps(false, geo.SparseInodes), geo, clean, ag.U32(ag.Agi, 20), ag.U32(ag.Agi, 24), 0);
        var rmapBlocks = new BlockList();
        var inoBlocks = new BlockList();
        using (var c = rmapClean.CreateCursor()) c.VisitBlocks(ref rmapBlocks);
        using (var c = inoClean.CreateCursor()) c.VisitBlocks(ref inoBlocks);
        var rnd = new Random(name.Length);
        int detected = 0, survived = 0;
        for (int round = 0; round < rounds; round++)
        {
            var store = new ImageBlockStore(fh, geo, 0);
            bool rmap = round % 3 != 0;
            var blocks = rmap ? rmapBlocks.Blocks : inoBlocks.Blocks;
            bool fixCrc = round % 2 == 0;
            for (int f = rnd.Next(1, 4); f > 0; f--)
            {
                var (_, ptr) = blocks[rnd.Next(blocks.Count)];
                long daddr = store.PointerToDaddr(ptr);
                if (!store.Flips.TryGetValue(daddr, out var list)) store.Flips[daddr] = list = new();
                int at = rnd.Next(2) == 0 ? rnd.Next(0, 56) : rnd.Next(56, geo.BlockSize);
                if (at is >= 52 and < 56) at = 51; // the CRC field itself
                list.Add((at, (byte)rnd.Next(1, 256), fixCrc));
            }
            try
            {
                if (rmap) Exercise(BtreeFixtureTreeTests.Tree(new RmapbtOps(false, agLen), geo, store, ag.U32(ag.Agf, 24), ag.U32(ag.Agf, 36), 0), rnd, store);
                else Exercise(BtreeFixtureTreeTests.Tree(new InobtOps(false, geo.SparseInodes), geo, store, ag.U32(ag.Agi, 20), ag.U32(ag.Agi, 24), 0), rnd, store);
                survived++;
            }
            catch (CorruptionException)
            {
                detected++;
            }
        }
        output.WriteLine($"{name}: {rounds} rounds over {rmapBlocks.Blocks.Count} rmapbt + {inoBlocks.Blocks.Count} inobt blocks: {detected} CorruptionException, {survived} completed");
        Assert.True(detected > 0);
    }

    static void Exercise<TOps>(Btree<TOps> tree, Random rnd, ImageBlockStore store) where TOps : struct, IBtreeOps
    {
        using (var cur = tree.CreateCursor())
        {
            cur.CountRecords();
            var all = new RecordList();
            cur.QueryAll(ref all);
            Span<byte> key = stackalloc byte[tree.Geometry.KeySize];
            Span<byte> high = stackalloc byte[tree.Geometry.KeySize];
            for (int i = 0; i < 20; i++)
            {
                rnd.NextBytes(key);
                cur.Lookup(key, (BtreeLookup)rnd.Next(0, 3));
                if (cur.HasRecord) { cur.Increment(); cur.Decrement(); }
            }
            rnd.NextBytes(key);
            high.Fill(0xff);
            var q = new RecordList();
            cur.Query(key, high, ref q);
        }
        tree.Check();
        Assert.Equal(0, store.Holds);
    }
}
