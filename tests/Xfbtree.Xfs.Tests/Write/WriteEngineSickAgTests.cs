using System.Buffers.Binary;
using Xfbtree.Xfs.Tests.Repair;
using Xfbtree.Xfs.Tests.Trees;
using Xfbtree.Xfs.Write;
using Xfbtree.Xfs.Write.Engine;
using static Xfbtree.Xfs.Tests.Write.WriteEngineTestSupport;

namespace Xfbtree.Xfs.Tests.Write;

/// <summary>Corruption inside an AG marks it sick; the other AGs carry on; superblock counters at close.</summary>
public sealed class WriteEngineSickAgTests
{
    [Fact]
    public void WriteEngine_CorruptAgIsMarkedSickAndAllocationGoesElsewhere()
    {
        using var scratch = new RepairScratch();
        string image = scratch.CopyFixture("fresh-4ag");
        // A bnobt root with a wrong magic (CRC rewritten by xfs_db, so only the structure is wrong).
        TreeFixtures.Run(TreeFixtures.Tool("xfs_db"), ["-x", "-c", "agf 2", "-c", "addr bnoroot", "-c", "write -d magic 0x12345678", image]);
        Assert.Contains("0x12345678", TreeFixtures.XfsDb(image, "agf 2", "addr bnoroot", "print magic"), StringComparison.Ordinal);
        string damaged = scratch.Copy(image, "damaged.img");
        using (var engine = WriteEngine.Open(image, Fast))
        {
            ulong hint = engine.Geometry.AgbToFsb(2, 100);
            var e = Assert.Throws<XfsWriteException>(() => engine.Execute("alloc in AG 2", tx =>
                tx.Allocate(new AllocationRequest(hint, 8, 8, AllocationPurpose.FileData))));
            Assert.Equal(WriteErrorKind.Corrupt, e.Kind);
            Assert.Contains("AG 2", e.Message, StringComparison.Ordinal);
            Assert.True(engine.Ag(2).IsSick);
            Assert.False(engine.Ag(3).IsSick);
            // The next allocation hinted at AG 2 lands in another AG; touching AG 2 directly fails at once.
            AllocatedExtent got = engine.Execute("alloc again", tx =>
            {
                AllocatedExtent x = tx.Allocate(new AllocationRequest(hint, 8, 8, AllocationPurpose.FileData));
                tx.Free(x.AgNumber, x.AgBlock, x.Length);
                return x;
            });
            Assert.NotEqual(2u, got.AgNumber);
            var lockFail = Assert.Throws<XfsWriteException>(() => engine.Execute("lock AG 2", tx => tx.LockAg(2)));
            Assert.Equal(WriteErrorKind.Corrupt, lockFail.Kind);
            engine.Close();
        }
        // Nothing changed in the sick AG, and nothing but free-list upkeep elsewhere: xfs_repair sees only the damage we made.
        ToolResult repair = RepairTools.XfsRepairCheck(image);
        Assert.NotEqual(0, repair.ExitCode);
        Assert.False(NeedsRepair(image));
    }

    [Fact]
    public void WriteEngine_CloseRecomputesTheSuperblockCountersAsTheKernelDoes()
    {
        using var scratch = new RepairScratch();
        string image = scratch.CopyFixture("aged-small");
        string original = scratch.Copy(image, "original.img");
        string xfsDb = TreeFixtures.Tool("xfs_db");
        TreeFixtures.Run(xfsDb, ["-x", "-c", "sb 0", "-c", "write fdblocks 12345", "-c", "write icount 64", "-c", "write ifree 7", image]);
        Assert.NotEqual(0, RepairTools.XfsRepairCheck(image).ExitCode);
        using (var engine = WriteEngine.Open(image, Fast))
        {
            engine.Close();
        }
        byte[] fixedSb = SuperblockSector(image), originalSb = SuperblockSector(original);
        foreach (int offset in new[] { 128, 136, 144 })
        {
            Assert.Equal(BinaryPrimitives.ReadUInt64BigEndian(originalSb.AsSpan(offset)), BinaryPrimitives.ReadUInt64BigEndian(fixedSb.AsSpan(offset)));
        }
        AssertOraclesClean(image, "counters recomputed");
    }

    [Fact]
    public void WriteEngine_InodesLockedOutOfOrderRestartWithTheLowerInodeFirst()
    {
        using var scratch = new RepairScratch();
        string image = scratch.CopyFixture("fresh-4ag");
        using (var engine = WriteEngine.Open(image, Fast))
        {
            ulong low = engine.Image.Superblock.RootIno, high = low + 1;
            IncoreInode lowInode = engine.GetInode(low), highInode = engine.GetInode(high);
            using var bHoldsLow = new ManualResetEventSlim();
            using var aRestarted = new ManualResetEventSlim();
            int attempts = 0;
            Exception? failure = null;
            var a = new Thread(() =>
            {
                try
                {
                    engine.Execute("A", tx =>
                    {
                        int attempt = Interlocked.Increment(ref attempts);
                        if (attempt == 2) aRestarted.Set();
                        tx.LockInodes(highInode);
                        if (attempt == 1) Assert.True(bHoldsLow.Wait(TimeSpan.FromSeconds(60)));
                        tx.LockInodes(lowInode); // below a held inode: restarts the first time
                        Assert.True(tx.HoldsInode(lowInode) && tx.HoldsInode(highInode));
                    });
                }
                catch (Exception e) { failure = e; }
            });
            var b = new Thread(() =>
            {
                try
                {
                    engine.Execute("B", tx =>
                    {
                        tx.LockInodes(lowInode);
                        bHoldsLow.Set();
                        Assert.True(aRestarted.Wait(TimeSpan.FromSeconds(60)), "A did not restart");
                    });
                }
                catch (Exception e) { failure = e; }
            });
            a.Start();
            b.Start();
            Assert.True(a.Join(TimeSpan.FromSeconds(90)) && b.Join(TimeSpan.FromSeconds(90)), "deadlock");
            Assert.Null(failure);
            Assert.Equal(2, attempts);
            engine.Close();
        }
    }

    [Fact]
    public void WriteJournal_CheckpointKeepsTheJournalBounded()
    {
        using var scratch = new RepairScratch();
        string image = scratch.CopyFixture("fresh-4ag");
        // Records hold the changed chunks of each block (about 3 KiB for this workload's transactions): a bound of a
        // few records makes the 20 transactions checkpoint several times.
        const long Bound = 16 << 10;
        using (var engine = WriteEngine.Open(image, Fast with { CheckpointBytes = Bound }))
        {
            var rnd = new Random(8);
            int checkpoints = 0;
            long previous = engine.Journal.Length;
            long largest = 0;
            for (int t = 0; t < 20; t++)
            {
                engine.Execute("reshape", tx => WriteSpaceAllocationTests.NetZeroTransaction(tx, rnd, 30));
                long length = engine.Journal.Length;
                Assert.True(length <= Bound, $"journal at {length} bytes after a commit, bound {Bound}");
                if (length < previous) checkpoints++;
                largest = Math.Max(largest, length);
                previous = length;
            }
            Assert.True(checkpoints > 0, $"no checkpoint happened (largest journal {largest} bytes)");
            Assert.True(largest > 64, "no transaction was journaled");
            AssertInvariants(engine, "after checkpoints");
            engine.Close();
        }
        AssertOraclesClean(image, "checkpoints");
    }
}
