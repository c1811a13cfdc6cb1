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
    /// A chmod's record is the only copy of it until a checkpoint (its inode's cluster buffer stays pinned in the cache,
    /// nothing is written in place at the commit); the engine then goes away without a close, as a kill -9 there: the
    /// image file still has the old mode, and the reopen replays the record's ranges (an inode core and the chunks of
    /// the blocks it touched) over it: the mode is there, the image clean.
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
        string before = scratch.Copy(image, "before.img");
        var counter = new WriteFaultInjector(int.MaxValue, () => { });
        using (var fs = XfsFileSystem.Open(image, Fast with { Faults = counter }))
        {
            int openWrites = counter.Writes;
            fs.Chmod("/f", 0x1C0);
            // The record is one write (body and trailer together); no in-place write follows it.
            Assert.Equal(openWrites + 1, counter.Writes);
            Assert.True(fs.Engine.PinnedBytes > 0, "the chmod's inode buffer is not pinned");
            Assert.Equal(0, fs.Engine.WrittenBack.Buffers);
        }
        Assert.True(ImageDataEquals(before, image), "the image file changed outside the superblock before any checkpoint");
        using (var fs = XfsFileSystem.Open(image, Fast))
        {
            Assert.True(fs.Engine.RecordsReplayed >= 1, "nothing was replayed");
            Assert.Equal(0x1C0, fs.Stat("/f").Mode & 0xFFF);
            fs.Close();
        }
        AssertOraclesClean(image, "after the replay of a record of ranges");
    }

    /// <summary>Equal bytes except the primary superblock's sector (the open sets NEEDSREPAIR there).</summary>
    private static bool ImageDataEquals(string a, string b)
    {
        using var fa = File.OpenRead(a);
        using var fb = File.OpenRead(b);
        if (fa.Length != fb.Length) return false;
        var x = new byte[1 << 20];
        var y = new byte[1 << 20];
        long at = 0;
        while (at < fa.Length)
        {
            int n = fa.ReadAtLeast(x, x.Length, throwOnEndOfStream: false);
            fb.ReadExactly(y, 0, n);
            int skip = at == 0 ? 512 : 0;
            if (!x.AsSpan(skip, n - skip).SequenceEqual(y.AsSpan(skip, n - skip))) return false;
            at += n;
        }
        return true;
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
