using System.Buffers.Binary;
using Xfbtree.Xfs.Format;
using Xfbtree.Xfs.Tests.Repair;
using Xfbtree.Xfs.Write;
using Xfbtree.Xfs.Write.Engine;
using static Xfbtree.Xfs.Tests.Write.WriteEngineTestSupport;

namespace Xfbtree.Xfs.Tests.Write;

/// <summary>Transactions: buffers, inodes, data, commit and cancel.</summary>
public sealed class WriteEngineTransactionTests
{
    const int AtimeOffset = 32;

    [Fact]
    public void WriteEngine_CommittedInodeAndDataSurviveReopen()
    {
        using var scratch = new RepairScratch();
        string image = scratch.CopyFixture("fresh-4ag");
        ulong root;
        ulong stamp = 0x1234_5678_9abc_def0UL;
        ulong dataFsbno;
        byte[] payload;
        using (var engine = WriteEngine.Open(image, Fast))
        {
            root = engine.Image.Superblock.RootIno;
            int bs = engine.Geometry.BlockSize;
            // A free block of AG 1 (data in free space is invisible to every checker).
            Agf agf1 = engine.Image.ReadAgf(1);
            using (var cur = engine.Image.OpenCntbt(agf1).CreateCursor())
            {
                Assert.True(cur.MoveLast());
                dataFsbno = engine.Geometry.AgbToFsb(1, Xfbtree.Xfs.Trees.AllocRecord.StartBlock(cur.Current) + 7);
            }
            payload = new byte[2 * bs];
            new Random(5).NextBytes(payload);
            engine.Execute("touch root", tx =>
            {
                IncoreInode inode = engine.GetInode(root);
                tx.LockInodes(inode);
                BinaryPrimitives.WriteUInt64BigEndian(inode.Core.AsSpan(AtimeOffset), stamp);
                tx.LogInode(inode);
                tx.WriteData(dataFsbno, payload);
                var seen = new byte[payload.Length];
                tx.ReadData(dataFsbno, seen);
                Assert.Equal(payload, seen);
            });
            var back = new byte[payload.Length];
            engine.ReadData(dataFsbno, back);
            Assert.Equal(payload, back);
            engine.Close();
        }
        using (var engine = WriteEngine.Open(image, Fast))
        {
            IncoreInode inode = engine.GetInode(root);
            Assert.Equal(stamp, BinaryPrimitives.ReadUInt64BigEndian(inode.Core.AsSpan(AtimeOffset)));
            var back = new byte[payload.Length];
            engine.ReadData(dataFsbno, back);
            Assert.Equal(payload, back);
            engine.Close();
        }
        AssertOraclesClean(image, "after an inode and data commit");
    }

    [Fact]
    public void WriteEngine_CancelRestoresBuffersAndInodes()
    {
        using var scratch = new RepairScratch();
        string image = scratch.CopyFixture("aged-small");
        string before = scratch.Copy(image, "before.img");
        using (var engine = WriteEngine.Open(image, Fast))
        {
            ulong root = engine.Image.Superblock.RootIno;
            IncoreInode inode = engine.GetInode(root);
            byte[] coreBefore = (byte[])inode.Core.Clone();
            uint newinoBefore = engine.Image.ReadAgi(0).NewIno;
            uint freeBefore = engine.Image.ReadAgf(0).FreeBlocks;
            var e = Assert.Throws<InvalidOperationException>(() => engine.Execute("doomed", tx =>
            {
                tx.LockInodes(inode);
                inode.Core.AsSpan(AtimeOffset, 8).Fill(0xEE);
                tx.LogInode(inode);
                tx.LockAg(0);
                var agi = tx.ReadAgHeader(AgHeaderKind.Agi, 0);
                BinaryPrimitives.WriteUInt32BigEndian(agi.Span[32..], 12345);
                tx.LogBuffer(agi, 32, 4);
                // Space changes too: an allocation and its free list upkeep.
                tx.Allocate(new AllocationRequest(engine.Geometry.AgbToFsb(0, 100), 3, 9, AllocationPurpose.FileData));
                throw new InvalidOperationException("the body fails");
            }));
            Assert.Equal("the body fails", e.Message);
            Assert.Equal(coreBefore, inode.Core);
            Assert.Equal(newinoBefore, engine.Image.ReadAgi(0).NewIno);
            Assert.Equal(freeBefore, engine.Image.ReadAgf(0).FreeBlocks);
            AssertInvariants(engine, "after a cancel");
            engine.Close();
        }
        Assert.Empty(RepairTools.DifferingRanges(before, image, 512));
    }

    [Fact]
    public void WriteEngine_BadInodeNumbersAndNestedTransactionsAreRefused()
    {
        using var scratch = new RepairScratch();
        string image = scratch.CopyFixture("fresh-4ag");
        using var engine = WriteEngine.Open(image, Fast);
        Assert.Equal(WriteErrorKind.NotFound, Assert.Throws<XfsWriteException>(() => engine.GetInode(3)).Kind);
        Assert.Equal(WriteErrorKind.NotFound, Assert.Throws<XfsWriteException>(() => engine.GetInode(ulong.MaxValue)).Kind);
        Assert.Throws<InvalidOperationException>(() => engine.Execute("outer", _ => engine.Execute("inner", _ => { })));
        engine.Close();
    }
}
