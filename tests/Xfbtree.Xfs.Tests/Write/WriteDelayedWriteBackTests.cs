using System.Buffers.Binary;
using Xunit.Abstractions;
using Xfbtree.Buffers;
using Xfbtree.Xfs.Format;
using Xfbtree.Xfs.Tests.Repair;
using Xfbtree.Xfs.Write;
using Xfbtree.Xfs.Write.Engine;
using static Xfbtree.Xfs.Tests.Write.WriteEngineTestSupport;

namespace Xfbtree.Xfs.Tests.Write;

/// <summary>
/// The delayed write-back (docs/write-engine.md): committed metadata buffers stay pinned in the cache and are written
/// in place once per checkpoint, after the journal is durable. Crashes at every write of a checkpoint (the first of
/// them is the moment between the journal's fsync and the first in-place write), a checkpoint while a transaction
/// changes a pinned buffer, a cancel of such a transaction, the write-ahead check firing, and the write count of a
/// buffer changed by many commits.
/// </summary>
public sealed class WriteDelayedWriteBackTests(ITestOutputHelper output)
{
    const int AtimeOffset = 32;

    static void Stamp(WriteEngine engine, int j, Random rnd, int reshape)
    {
        ulong root = engine.Image.Superblock.RootIno;
        engine.Execute($"stamp {j}", tx =>
        {
            IncoreInode inode = engine.GetInode(root);
            tx.LockInodes(inode);
            BinaryPrimitives.WriteUInt64BigEndian(inode.Core.AsSpan(AtimeOffset), (ulong)j);
            tx.LogInode(inode);
            WriteSpaceAllocationTests.NetZeroTransaction(tx, rnd, reshape);
        });
    }

    /// <summary>The stamp in the root inode and every AGF and AGFL sector, through the engine's cache.</summary>
    static (ulong Stamp, string Headers) Fingerprint(WriteEngine engine)
    {
        var sb = new System.Text.StringBuilder();
        for (uint a = 0; a < engine.Geometry.AgCount; a++)
        {
            foreach (var kind in new[] { AgHeaderKind.Agf, AgHeaderKind.Agfl })
            {
                BlockBuffer b = engine.Image.ReadHeaderBuffer(kind, a);
                try { sb.Append(Convert.ToHexString(b.Span)); }
                finally { engine.Image.Cache.Release(b); }
            }
        }
        ulong stamp = BinaryPrimitives.ReadUInt64BigEndian(engine.GetInode(engine.Image.Superblock.RootIno).Core.AsSpan(AtimeOffset));
        return (stamp, sb.ToString());
    }

    /// <summary>The same AG header sectors as the image file holds them (no cache).</summary>
    static string FileHeaders(WriteEngine engine)
    {
        var sb = new System.Text.StringBuilder();
        var sector = new byte[engine.Geometry.SectorSize];
        for (uint a = 0; a < engine.Geometry.AgCount; a++)
        {
            foreach (var kind in new[] { AgHeaderKind.Agf, AgHeaderKind.Agfl })
            {
                WriteEngine.ReadRaw(engine.Disk, engine.Geometry.AgHeaderDaddr(a, (int)kind), sector);
                sb.Append(Convert.ToHexString(sector));
            }
        }
        return sb.ToString();
    }

    /// <summary>
    /// Three transactions, then a checkpoint that writes their pinned buffers back; the engine stops at every write of
    /// that checkpoint in turn (the first: right after the journal's fsync, before any in-place write; the others:
    /// part of the write-back done). The reopen replays the journal over whatever part reached the image: always the
    /// state after the three, the invariants hold, xfs_repair -n is clean.
    /// </summary>
    [Fact]
    public void CrashAtEveryWriteOfACheckpointLeavesTheCommittedState()
    {
        using var scratch = new RepairScratch();
        string original = scratch.CopyFixture("fresh-4ag");
        string reference = scratch.Copy(original, "reference.img");
        var counter = new WriteFaultInjector(int.MaxValue, () => { });
        int before, after;
        string expected;
        long writtenBack;
        using (var engine = WriteEngine.Open(reference, Fast with { Faults = counter }))
        {
            var rnd = new Random(5);
            for (int j = 1; j <= 3; j++) Stamp(engine, j, rnd, j == 2 ? 120 : 20);
            Assert.Equal(0, engine.WrittenBack.Buffers);
            before = counter.Writes;
            expected = Fingerprint(engine).Headers;
            engine.Checkpoint();
            after = counter.Writes;
            writtenBack = engine.WrittenBack.Buffers;
            Assert.Equal(0, engine.PinnedBytes);
            Assert.Equal(expected, FileHeaders(engine));
            engine.Close();
        }
        AssertOraclesClean(reference, "reference run");
        output.WriteLine($"checkpoint: {after - before} in-place writes ({writtenBack} buffers written back)");
        Assert.Equal(writtenBack, after - before);
        Assert.True(writtenBack >= 8, $"only {writtenBack} buffers were written back");
        int checkedPoints = 0;
        for (int k = before + 1; k <= after; k++)
        {
            string image = scratch.Copy(original, $"crash-{k}.img");
            var faults = new WriteFaultInjector(k, () => { });
            WriteEngine? engine = null;
            try
            {
                engine = WriteEngine.Open(image, Fast with { Faults = faults });
                var rnd = new Random(5);
                for (int j = 1; j <= 3; j++) Stamp(engine, j, rnd, j == 2 ? 120 : 20);
                Assert.Throws<SimulatedCrashException>(() => engine.Checkpoint());
            }
            finally
            {
                engine?.Dispose();
            }
            Assert.True(faults.Crashed, $"k={k}: the crash point was not reached");
            using (var reopened = WriteEngine.Open(image, Fast))
            {
                Assert.True(reopened.RecordsReplayed == 3, $"k={k}: {reopened.RecordsReplayed} records replayed, expected the 3 of the run");
                var (stamp, headers) = Fingerprint(reopened);
                Assert.Equal(3ul, stamp);
                Assert.True(expected == headers, $"k={k}: the AG headers after the replay are not those of the three transactions");
                AssertInvariants(reopened, $"k={k}");
                reopened.Close();
            }
            if (k == before + 1 || k == after || k % 5 == 0) AssertOraclesClean(image, $"crash at write {k} of the checkpoint");
            checkedPoints++;
            File.Delete(image);
        }
        output.WriteLine($"{checkedPoints} crash points inside the checkpoint, each replayed to the committed state");
    }

    /// <summary>Takes four blocks from every AG (no rmap, no owner): the AGFs in memory then differ from the committed
    /// ones until the transaction is cancelled, which it must be.</summary>
    static void TakeBlocksEverywhere(WriteTransaction tx)
    {
        XfsGeometry geo = tx.Engine.Geometry;
        for (uint a = 0; a < geo.AgCount; a++)
        {
            tx.Allocate(new AllocationRequest(geo.AgbToFsb(a, (uint)geo.FirstFreeBlock), 4, 4, AllocationPurpose.FileData));
        }
    }

    /// <summary>
    /// A checkpoint while another thread's transaction has changed pinned buffers (every AGF and free-space tree) and
    /// not committed: it must neither wait for that transaction (which would wait for the checkpoint at its commit) nor
    /// write its uncommitted changes, but the committed contents saved when the transaction joined the buffers.
    /// </summary>
    [Fact]
    public void ACheckpointDuringATransactionWritesTheCommittedContents()
    {
        using var scratch = new RepairScratch();
        string image = scratch.CopyFixture("fresh-4ag");
        using (var fs = XfsFileSystem.Open(image, Fast))
        {
            WriteEngine engine = fs.Engine;
            fs.Create("/f");
            fs.Write("/f", 0, new byte[256 << 10]);
            var committed = Fingerprint(engine);
            Assert.True(engine.PinnedBytes > 0);
            Assert.NotEqual(committed.Headers, FileHeaders(engine));
            using var changed = new ManualResetEventSlim();
            using var checkpointed = new ManualResetEventSlim();
            Exception? inTransaction = null;
            var writer = new Thread(() =>
            {
                try
                {
                    engine.Execute("changes, then cancels", tx =>
                    {
                        TakeBlocksEverywhere(tx);
                        changed.Set();
                        checkpointed.Wait();
                        throw new InvalidOperationException("cancel on purpose");
                    });
                }
                catch (Exception e)
                {
                    inTransaction = e;
                }
            });
            writer.Start();
            changed.Wait();
            engine.Checkpoint();
            Assert.True(committed.Headers == FileHeaders(engine), "the checkpoint did not write the committed AG headers");
            checkpointed.Set();
            writer.Join();
            Assert.True(inTransaction is InvalidOperationException { Message: "cancel on purpose" }, $"the transaction ended with {inTransaction}");
            Assert.Equal(committed, Fingerprint(engine));
            // A commit after the cancel, then a crash without checkpoint: the replay starts from the checkpointed image.
            fs.Create("/g");
            fs.Write("/g", 0, new byte[64 << 10]);
        }
        using (var fs = XfsFileSystem.Open(image, Fast))
        {
            Assert.True(fs.Engine.RecordsReplayed >= 1);
            Assert.Equal(256 << 10, fs.Stat("/f").Size);
            Assert.Equal(64 << 10, fs.Stat("/g").Size);
            AssertInvariants(fs.Engine, "after the replay");
            fs.Close();
        }
        AssertOraclesClean(image, "after the checkpoint during a transaction");
    }

    /// <summary>A cancelled transaction on pinned buffers, no checkpoint: memory is the committed state again, from the
    /// contents saved when it joined them (the image holds an older state: re-reading it, as a cancel did before
    /// buffers stayed pinned, loses the committed write), and a clean close writes that state.</summary>
    [Fact]
    public void ACancelOnPinnedBuffersKeepsTheCommittedState()
    {
        using var scratch = new RepairScratch();
        string image = scratch.CopyFixture("fresh-4ag");
        (ulong, string) committed;
        using (var fs = XfsFileSystem.Open(image, Fast))
        {
            fs.Create("/f");
            fs.Write("/f", 0, new byte[256 << 10]);
            committed = Fingerprint(fs.Engine);
            Assert.ThrowsAny<Exception>(() => fs.Engine.Execute("changes, then cancels", tx =>
            {
                TakeBlocksEverywhere(tx);
                throw new InvalidOperationException("cancel on purpose");
            }));
            Assert.True(committed == Fingerprint(fs.Engine), "the cancel did not leave the committed AG headers");
            AssertInvariants(fs.Engine, "after the cancel");
            fs.Close();
        }
        using (var fs = XfsFileSystem.Open(image, Fast))
        {
            Assert.Equal(committed, Fingerprint(fs.Engine));
            Assert.Equal(256 << 10, fs.Stat("/f").Size);
            fs.Close();
        }
        AssertOraclesClean(image, "after a cancel on pinned buffers");
    }

    /// <summary>The check is live: an in-place write of a sector whose journal record is not durable (commits are not
    /// synced here) fails; after the journal's fsync the same write passes.</summary>
    [Fact]
    public void TheWriteAheadCheckFailsAnEarlyInPlaceWrite()
    {
        using var scratch = new RepairScratch();
        string image = scratch.CopyFixture("fresh-4ag");
        using var engine = WriteEngine.Open(image, Fast);
        Assert.True(engine.Options.CheckWriteAhead && !engine.Options.SyncCommits);
        Stamp(engine, 1, new Random(3), 10);
        long agf = engine.Geometry.AgHeaderDaddr(0, (int)AgHeaderKind.Agf);
        var sector = new byte[engine.Geometry.SectorSize];
        WriteEngine.ReadRaw(engine.Disk, agf, sector);
        var e = Assert.ThrowsAny<InvalidOperationException>(() => WriteEngine.WriteRaw(engine.Disk, agf * 512, sector));
        Assert.Contains("write-ahead rule broken", e.Message);
        engine.SyncJournal();
        WriteEngine.WriteRaw(engine.Disk, agf * 512, sector);
        engine.Dispose();
    }

    /// <summary>A buffer changed by many commits is written in place once per checkpoint: 300 chmods of one file
    /// write its inode cluster block back once at the close.</summary>
    [Fact]
    public void ABufferChangedByManyCommitsIsWrittenOnce()
    {
        using var scratch = new RepairScratch();
        string image = scratch.CopyFixture("fresh-4ag");
        using (var fs = XfsFileSystem.Open(image, Fast))
        {
            fs.Create("/f");
            fs.Engine.Checkpoint();
            var (buffers0, _) = fs.Engine.WrittenBack;
            for (int i = 0; i < 300; i++) fs.Chmod("/f", 0x100 | (i & 0xFF));
            Assert.Equal(buffers0, fs.Engine.WrittenBack.Buffers);
            fs.Engine.Checkpoint();
            long written = fs.Engine.WrittenBack.Buffers - buffers0;
            output.WriteLine($"300 chmods: {written} buffer(s) written in place at the checkpoint");
            Assert.Equal(1, written);
            fs.Close();
        }
        AssertOraclesClean(image, "after 300 chmods");
    }
}
