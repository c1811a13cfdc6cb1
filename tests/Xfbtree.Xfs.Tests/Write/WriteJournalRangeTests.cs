using Xfbtree.Buffers;
using Xfbtree.Xfs.Format;
using Xfbtree.Xfs.Tests.Repair;
using Xfbtree.Xfs.Write;
using Xfbtree.Xfs.Write.Engine;
using Xunit.Abstractions;
using static Xfbtree.Xfs.Tests.Write.WriteEngineTestSupport;

namespace Xfbtree.Xfs.Tests.Write;

/// <summary>
/// The journal logs the changed 128-byte chunks of a metadata buffer, not the whole block (docs/write-engine.md,
/// "Crash safety"): small operations journal a fraction of the blocks they touch, a record of such ranges replays
/// to the committed state, and the checking aid that guards the ranges (every buffer byte changed must be in a
/// logged range) refuses a commit that changed a byte it did not log.
/// </summary>
public sealed class WriteJournalRangeTests(ITestOutputHelper output)
{
    /// <summary>
    /// A chmod changes one chunk of an inode core (the mode, ctime and CRC are in its first 128 bytes); a one-block
    /// append changes one data
    /// block plus a few records of bnobt, cntbt, rmapbt, the AGF counters and the inode. Whole blocks made these
    /// records 4 KiB and at least 5 blocks.
    /// </summary>
    [Fact]
    public void SmallOperationsJournalTheChangedChunksOnly()
    {
        using var scratch = new RepairScratch();
        string image = scratch.CopyFixture("fresh-4ag");
        using (var fs = XfsFileSystem.Open(image, Fast))
        {
            fs.Create("/f");
            fs.Write("/f", 0, new byte[4096]);
            fs.Close();
        }
        using (var fs = XfsFileSystem.Open(image, Fast))
        {
            int bs = fs.Engine.Geometry.BlockSize;
            fs.Chmod("/f", 0x180);
            long chmod = fs.Engine.LargestRecordBytes;
            output.WriteLine($"chmod: largest record {chmod} bytes");
            Assert.True(chmod <= 256, $"a chmod journaled {chmod} bytes (its mode, ctime and CRC are in the first 128 of the inode's 512)");
            fs.Close();
        }
        using (var fs = XfsFileSystem.Open(image, Fast))
        {
            int bs = fs.Engine.Geometry.BlockSize;
            fs.Write("/f", bs, new byte[bs]);
            long append = fs.Engine.LargestRecordBytes;
            output.WriteLine($"one-block append: largest record {append} bytes");
            Assert.True(append < bs + bs / 2, $"a one-block append journaled {append} bytes: more than the data block and a few records");
            fs.Close();
        }
        AssertOraclesClean(image, "after the small operations");
    }

    /// <summary>
    /// The engine stops at the first in-place write after a chmod's record is in the journal (what a kill -9 there
    /// leaves): the reopen replays the record's ranges (an inode core and the chunks of the blocks it touched) over
    /// the image, and the mode is there, the image clean.
    /// </summary>
    [Fact]
    public void ARecordOfRangesReplaysToTheCommittedState()
    {
        using var scratch = new RepairScratch();
        string image = scratch.CopyFixture("fresh-4ag");
        using (var fs = XfsFileSystem.Open(image, Fast))
        {
            fs.Create("/f");
            fs.Close();
        }
        string reference = scratch.Copy(image, "reference.img");
        var counter = new WriteFaultInjector(int.MaxValue, () => { });
        int openWrites;
        using (var fs = XfsFileSystem.Open(reference, Fast with { Faults = counter }))
        {
            openWrites = counter.Writes;
            fs.Chmod("/f", 0x1C0);
        }
        // The record is two writes (body, trailer); the next one is the first in-place write, which does not happen.
        var faults = new WriteFaultInjector(openWrites + 3, () => { });
        using (var fs = XfsFileSystem.Open(image, Fast with { Faults = faults }))
        {
            Assert.ThrowsAny<Exception>(() => fs.Chmod("/f", 0x1C0));
            Assert.True(faults.Crashed, "the crash point was not reached");
        }
        using (var fs = XfsFileSystem.Open(image, Fast))
        {
            Assert.Equal(0x1C0, fs.Stat("/f").Mode & 0xFFF);
            fs.Close();
        }
        AssertOraclesClean(image, "after the replay of a record of ranges");
    }

    /// <summary>With the check on, a byte changed outside the logged ranges fails the commit and nothing is written.</summary>
    [Fact]
    public void CheckRefusesAChangeOutsideTheLoggedRanges()
    {
        using var scratch = new RepairScratch();
        string image = scratch.CopyFixture("fresh-4ag");
        using var engine = WriteEngine.Open(image, Fast);
        const int Unlogged = 400; // in the AGF sector, past the header's fields: zeros the kernel never reads
        long records = engine.CommittedRecords;
        var e = Assert.ThrowsAny<Exception>(() => engine.Execute("unlogged change", tx =>
        {
            tx.LockAg(1);
            BlockBuffer agf = tx.ReadAgHeader(AgHeaderKind.Agf, 1);
            agf.Span[Unlogged] ^= 0xFF;
            tx.LogBuffer(agf, 0, 4);
        }));
        output.WriteLine(e.Message);
        Assert.Contains($"changed at byte {Unlogged} outside the ranges it logged", e.ToString(), StringComparison.Ordinal);
        Assert.Equal(records, engine.CommittedRecords);
        BlockBuffer after = engine.Image.ReadHeaderBuffer(AgHeaderKind.Agf, 1);
        try
        {
            Assert.Equal(0, after.Span[Unlogged]);
        }
        finally
        {
            engine.Image.Cache.Release(after);
        }
        engine.Close();
    }
}
