using Xunit.Abstractions;
using Xfbtree.Xfs.Format;
using Xfbtree.Xfs.Tests.Repair;
using Xfbtree.Xfs.Trees;
using Xfbtree.Xfs.Write;
using Xfbtree.Xfs.Write.Engine;
using Xfbtree.Xfs.Write.Space;
using static Xfbtree.Xfs.Tests.Write.WriteEngineTestSupport;

namespace Xfbtree.Xfs.Tests.Write;

/// <summary>Allocation, free, the free list, reservations and NoSpace, checked by the invariant checker and xfs_repair.</summary>
public sealed class WriteSpaceAllocationTests(ITestOutputHelper output)
{
    static readonly bool Long = Environment.GetEnvironmentVariable("XFBTREE_LONG_TESTS") == "1";

    /// <summary>Exact re-allocations that succeeded (they must, unless the AG is too full).</summary>
    internal static int ExactHits;

    /// <summary>sb_fdblocks as the kernel derives it from the AGFs (Σ freeblks + flcount + btreeblks).</summary>
    static ulong Fdblocks(WriteEngine engine) => engine.ComputeSuperblockCounters().Fdblocks;

    /// <summary>
    /// One transaction of the net-zero workload: allocations of every kind (near, exact, by size, aligned),
    /// half of them mapped in the rmapbt under a fake owner, then everything unmapped and freed again in a
    /// shuffled order. Splits and joins of bnobt, cntbt and rmapbt, free-list refills and shrinks happen on the way.
    /// </summary>
    internal static (int Allocations, long Blocks) NetZeroTransaction(WriteTransaction tx, Random rnd, int count)
    {
        XfsGeometry geo = tx.Engine.Geometry;
        var got = new List<(AllocatedExtent Extent, bool Mapped)>();
        long blocks = 0;
        ulong owner = 1UL << 40; // an inode number no fixture uses: the records vanish again before commit
        for (int i = 0; i < count; i++)
        {
            uint agno = (uint)rnd.Next((int)geo.AgCount);
            ulong hint = geo.AgbToFsb(agno, (uint)rnd.Next((int)geo.FirstFreeBlock, (int)geo.AgLength(agno)));
            uint min = (uint)rnd.Next(1, 4);
            uint max = min + (uint)rnd.Next(0, 12);
            int kind = rnd.Next(4);
            AllocationRequest request = kind switch
            {
                0 => new(hint, min, max, AllocationPurpose.FileData),
                1 => new(AllocationRequest.NullFsbno, min, max, AllocationPurpose.FileData),
                2 => new(hint, min, max, AllocationPurpose.FileData, Alignment: (uint)(1 << rnd.Next(1, 4))),
                _ => new(hint, 1, max, AllocationPurpose.DirectoryBlock),
            };
            AllocatedExtent e = tx.Allocate(request);
            Assert.InRange(e.Length, request.MinLength, request.MaxLength);
            Assert.True(e.AgBlock % request.Alignment == 0, $"extent {e} not aligned to {request.Alignment}");
            if (e.Length >= 2 && rnd.Next(3) == 0)
            {
                // Exact: give back the tail and take it again at exactly that place.
                uint keep = e.Length / 2;
                tx.Free(e.AgNumber, e.AgBlock + keep, e.Length - keep);
                ulong at = geo.AgbToFsb(e.AgNumber, e.AgBlock + keep);
                uint tail = e.Length - keep;
                try
                {
                    AllocatedExtent exact = tx.Allocate(new AllocationRequest(at, tail, tail, AllocationPurpose.FileData, Exact: true));
                    Assert.Equal(at, exact.Fsbno);
                    Assert.Equal(tail, exact.Length);
                    Interlocked.Increment(ref ExactHits);
                }
                catch (XfsWriteException x) when (x.Kind == WriteErrorKind.NoSpace)
                {
                    // Only the kernel's space rule may refuse it: the AG is too full once the free list's needs and
                    // the reservations file data may not use are set aside (the transaction holds many extents).
                    AgSpace space = tx.Space(e.AgNumber);
                    uint need = space.MinFreeList();
                    long room = (long)space.FreeBlocks + Math.Min(space.FlCount, need) - need - AgReservations.Needed(tx, space, AllocationPurpose.FileData);
                    Assert.True(room < tail + 0L || space.Longest < tail, $"exact re-allocation of [{e.AgBlock + keep}, +{tail}) in AG {e.AgNumber} refused with {room} blocks of room: {x.Message}");
                    e = e with { Length = keep };
                }
            }
            bool map = rnd.Next(2) == 0;
            if (map)
            {
                tx.RmapMap(e.AgNumber, new RmapRecord(e.AgBlock, e.Length, owner + (ulong)i, 0), shared: false);
            }
            got.Add((e, map));
            blocks += e.Length;
        }
        foreach (var (e, mapped) in got.OrderBy(_ => rnd.Next()))
        {
            if (mapped)
            {
                tx.RmapUnmap(e.AgNumber, new RmapRecord(e.AgBlock, e.Length, owner + (ulong)got.FindIndex(g => g.Extent == e), 0), shared: false);
            }
            tx.Free(e.AgNumber, e.AgBlock, e.Length);
        }
        return (got.Count, blocks);
    }

    [Theory]
    [InlineData("fresh-4ag", 11)]
    [InlineData("geom-bs1k", 12)]
    [InlineData("aged-small", 13)]
    [InlineData("geom-nrext64", 14)]
    public void WriteSpace_NetZeroTransactionsKeepEveryInvariant(string fixture, int seed)
    {
        using var scratch = new RepairScratch();
        string image = scratch.CopyFixture(fixture);
        var rnd = new Random(seed);
        int transactions = Long ? 60 : 8;
        long totalAllocations = 0, totalBlocks = 0;
        using (var engine = WriteEngine.Open(image, Fast))
        {
            ulong fd = Fdblocks(engine);
            for (int t = 0; t < transactions; t++)
            {
                int count = rnd.Next(2) == 0 ? rnd.Next(1, 20) : rnd.Next(150, 400);
                var (n, blocks) = engine.Execute($"net-zero {t}", tx => NetZeroTransaction(tx, rnd, count));
                totalAllocations += n;
                totalBlocks += blocks;
                AssertInvariants(engine, $"{fixture} after transaction {t}");
                Assert.Equal(fd, Fdblocks(engine));
            }
            engine.Close();
        }
        output.WriteLine($"{fixture}: {transactions} transactions, {totalAllocations} allocations of {totalBlocks} blocks");
        Assert.True(ExactHits > 0, "no exact allocation ran");
        AssertOraclesClean(image, $"{fixture} after the net-zero workload");
    }

    [Fact]
    public void WriteSpace_ManyFragmentsSplitAndJoinTheTreesThroughTheFreeList()
    {
        using var scratch = new RepairScratch();
        string image = scratch.CopyFixture("geom-bs1k");
        using (var engine = WriteEngine.Open(image, Fast))
        {
            uint agno = 1;
            Agf before = engine.Image.ReadAgf(agno);
            uint levelBefore = 0, levelFragmented = 0, flBefore = 0, flFragmented = 0;
            engine.Execute("fragment", tx =>
            {
                // Every other block of the AG's largest free extent: hundreds of fragments, free-space trees grow.
                tx.LockAg(agno);
                AgSpace space = tx.Space(agno);
                levelBefore = space.BtreeBlocks;
                flBefore = space.FlCount;
                uint start, length;
                using (var cur = space.Cntbt().CreateCursor())
                {
                    Assert.True(cur.MoveLast());
                    start = AllocRecord.StartBlock(cur.Current);
                    length = AllocRecord.BlockCount(cur.Current);
                }
                var taken = new List<uint>();
                for (uint b = start + 1; b + 1 < start + length && taken.Count < 700; b += 2)
                {
                    AllocatedExtent e = tx.Allocate(new AllocationRequest(engine.Geometry.AgbToFsb(agno, b), 1, 1, AllocationPurpose.FileData, Exact: true));
                    Assert.Equal(b, e.AgBlock);
                    tx.RmapMap(agno, new RmapRecord(b, 1, 1UL << 40, b), shared: false);
                    taken.Add(b);
                }
                Assert.True(taken.Count > 300, $"only {taken.Count} fragments");
                levelFragmented = space.BtreeBlocks;
                flFragmented = space.FlCount;
                foreach (uint b in taken.OrderBy(x => (x * 2654435761u) % 1000003))
                {
                    tx.RmapUnmap(agno, new RmapRecord(b, 1, 1UL << 40, b), shared: false);
                    tx.Free(agno, b, 1);
                }
            });
            output.WriteLine($"agf_btreeblks {levelBefore} -> {levelFragmented}; free list {flBefore} -> {flFragmented}");
            Assert.True(levelFragmented >= levelBefore + 8, "the free-space and rmap trees did not grow by splits");
            AssertInvariants(engine, "after fragmenting and merging again");
            Agf after = engine.Image.ReadAgf(agno);
            Assert.Equal(before.FreeBlocks + before.FlCount + before.BtreeBlocks, after.FreeBlocks + after.FlCount + after.BtreeBlocks);
            engine.Close();
        }
        AssertOraclesClean(image, "fragment and merge");
    }

    [Fact]
    public void WriteSpace_NoSpaceLeavesTheImageUnchanged()
    {
        using var scratch = new RepairScratch();
        string image = scratch.CopyFixture("fresh-4ag");
        string before = scratch.Copy(image, "before.img");
        using (var engine = WriteEngine.Open(image, Fast))
        {
            ulong fd = Fdblocks(engine);
            var e = Assert.Throws<XfsWriteException>(() => engine.Execute("too big", tx =>
            {
                tx.Allocate(new AllocationRequest(engine.Geometry.AgbToFsb(2, 50), 10, 10, AllocationPurpose.FileData));
                tx.Allocate(new AllocationRequest(AllocationRequest.NullFsbno, engine.Geometry.AgBlocks, engine.Geometry.AgBlocks, AllocationPurpose.FileData));
            }));
            Assert.Equal(WriteErrorKind.NoSpace, e.Kind);
            var e2 = Assert.Throws<XfsWriteException>(() => engine.Execute("ensure", tx => tx.EnsureSpace((long)fd + 1, AllocationPurpose.FileData)));
            Assert.Equal(WriteErrorKind.NoSpace, e2.Kind);
            engine.Execute("ensure little", tx => tx.EnsureSpace(1000, AllocationPurpose.FileData));
            engine.Close();
        }
        Assert.Empty(RepairTools.DifferingRanges(before, image, 512));
    }

    [Fact]
    public void WriteSpace_FileDataNeverDipsIntoTheReservations()
    {
        using var scratch = new RepairScratch();
        string image = scratch.CopyFixture("geom-bs1k");
        using (var engine = WriteEngine.Open(image, Fast))
        {
            uint agno = 1;
            engine.Execute("fill an AG", tx =>
            {
                var got = new List<AllocatedExtent>();
                while (true)
                {
                    try
                    {
                        got.Add(tx.Allocate(new AllocationRequest(AllocationRequest.NullFsbno, 1, 1u << 20, AllocationPurpose.FileData, OnlyAg: agno)));
                    }
                    catch (XfsWriteException e) when (e.Kind == WriteErrorKind.NoSpace)
                    {
                        break;
                    }
                }
                AgSpace space = tx.Space(agno);
                var (meta, rmap) = AgReservations.Reserved(tx, space);
                long left = (long)space.FreeBlocks + Math.Min(space.FlCount, space.MinFreeList()) - space.MinFreeList();
                output.WriteLine($"AG {agno}: {got.Count} extents taken, {space.FreeBlocks} free left, reservations {meta} + {rmap}");
                Assert.True(meta + rmap > 0, "this geometry has no reservation to protect");
                long setAside = AgReservations.SetAside(engine.Geometry);
                Assert.True(left >= meta + rmap + setAside, $"file data left {left} blocks, less than the reservations {meta} + {rmap} and the kernel's set-aside {setAside}");
                // Metadata entitled to the METADATA pool still gets a block.
                if (meta > 0)
                {
                    AllocatedExtent refc = tx.Allocate(new AllocationRequest(AllocationRequest.NullFsbno, 1, 1, AllocationPurpose.RefcountBtreeBlock, OnlyAg: agno));
                    got.Add(refc);
                }
                foreach (AllocatedExtent e in got)
                {
                    tx.Free(e.AgNumber, e.AgBlock, e.Length);
                }
            });
            AssertInvariants(engine, "after filling and emptying an AG");
            engine.Close();
        }
        AssertOraclesClean(image, "fill and empty");
    }
}
