using Xunit.Abstractions;
using Xfbtree.TestSupport;
using Xfbtree.Xfs.Tests.Repair;
using Xfbtree.Xfs.Write;
using Xfbtree.Xfs.Write.Engine;
using static Xfbtree.Xfs.Tests.Write.WriteEngineTestSupport;

namespace Xfbtree.Xfs.Tests.Write;

/// <summary>
/// Ordered data (docs/write-engine.md): a transaction's fresh file data of at least
/// <see cref="WriteEngineOptions.OrderedDataMinBytes"/> goes to the image, synced, before its journal record, which then
/// holds the mapping only. The data must be written once (not journaled too), must be on disk whenever its record is
/// (a power loss that keeps the journal but drops unsynced image writes shows the new bytes, never the blocks' old
/// ones), and must never land where a replay would put older journaled bytes back.
/// </summary>
public sealed class WriteOrderedDataTests(ITestOutputHelper output)
{
    const int Mib = 1 << 20;

    static byte[] Pattern(int length, int seed)
    {
        var bytes = new byte[length];
        new Random(seed).NextBytes(bytes);
        return bytes;
    }

    static byte[] ReadAll(XfsFileSystem fs, string path, int length)
    {
        var buffer = new byte[length];
        Assert.Equal(length, fs.Read(path, 0, buffer));
        return buffer;
    }

    /// <summary>A 1 MiB write into a hole: its record holds no data (it held the whole MiB before), the bytes are
    /// counted as ordered, and after a crash (no clean close) the replay leaves them as written.</summary>
    [Fact]
    public void ALargeWriteIsWrittenOnce_NotJournaled()
    {
        using var scratch = new RepairScratch();
        string image = scratch.CopyFixture("fresh-4ag");
        byte[] data = Pattern(Mib, 1);
        using (var fs = XfsFileSystem.Open(image, Fast))
        {
            fs.Create("/big");
            long recordsBefore = fs.Engine.LargestRecordBytes;
            fs.Write("/big", 0, data);
            output.WriteLine($"largest record {fs.Engine.LargestRecordBytes} bytes (before the write {recordsBefore}); ordered {fs.Engine.OrderedData}");
            Assert.Equal((long)Mib, fs.Engine.OrderedData.Bytes);
            Assert.True(fs.Engine.LargestRecordBytes < 64 << 10, $"the write's record holds {fs.Engine.LargestRecordBytes} bytes: the data was journaled");
            // A small write stays journaled (below the threshold): one fsync less.
            fs.Create("/small");
            fs.Write("/small", 0, Pattern(8192, 2));
            Assert.Equal((long)Mib, fs.Engine.OrderedData.Bytes);
        }
        using (var fs = XfsFileSystem.Open(image, Fast))
        {
            Assert.True(fs.Engine.RecordsReplayed >= 4, $"{fs.Engine.RecordsReplayed} records replayed");
            Assert.True(data.AsSpan().SequenceEqual(ReadAll(fs, "/big", Mib)), "the ordered data is not what was written");
            Assert.True(Pattern(8192, 2).AsSpan().SequenceEqual(ReadAll(fs, "/small", 8192)));
            AssertInvariants(fs.Engine, "after the replay");
            fs.Close();
        }
        AssertOraclesClean(image, "ordered data replayed");
    }

    /// <summary>
    /// A power loss that keeps every journal write but drops every image write no sync covered (the worst order the
    /// host may choose): the record of a 1 MiB write into blocks that held another file's bytes is replayed, so its
    /// data must be on disk. Without the image sync before the record the file shows the old file's bytes.
    /// </summary>
    [Fact]
    public void PowerLossAfterTheRecord_TheDataIsThere()
    {
        using var scratch = new RepairScratch();
        string image = scratch.CopyFixture("fresh-4ag");
        byte[] secret = Pattern(2 * Mib, 3), data = Pattern(Mib, 4);
        var crash = new CrashAfterWrites(0, CrashModel.PowerLoss);
        using (var fs = XfsFileSystem.Open(image, Fast))
        {
            fs.Create("/old");
            fs.Write("/old", 0, secret);
            fs.Unlink("/old");
            fs.Engine.Checkpoint(); // the old bytes and their free are durable; the blocks are free space now
            fs.Engine.Disk.WriteInterceptor = crash;
            fs.Create("/new");
            fs.Write("/new", 0, data);
            Assert.Equal((long)Mib, fs.Engine.OrderedData.Bytes - 2 * Mib);
            crash.PowerOff();
        }
        output.WriteLine($"image writes lost at the power loss: {crash.Lost}, syncs before it: {crash.Syncs}");
        using (var fs = XfsFileSystem.Open(image, Fast))
        {
            Assert.True(fs.Engine.RecordsReplayed >= 2, $"{fs.Engine.RecordsReplayed} records replayed");
            byte[] read = ReadAll(fs, "/new", Mib);
            Assert.False(read.AsSpan(0, 4096).SequenceEqual(secret.AsSpan(0, 4096)), "the new file shows the removed file's bytes");
            Assert.True(data.AsSpan().SequenceEqual(read), "the replayed write's data is not on disk");
            AssertInvariants(fs.Engine, "after the power loss");
            fs.Close();
        }
        AssertOraclesClean(image, "power loss after an ordered write");
    }

    /// <summary>
    /// Blocks whose data a record since the checkpoint journaled (a write below the threshold), freed and allocated
    /// again by a larger write: the replay writes the journaled old bytes there, so the larger write must be journaled
    /// too (it is replayed after them). Written in place without a journal entry, the file would read the old bytes
    /// after the crash. The threshold is raised to 2 MiB so that the old write fills 1 MiB of blocks the new one
    /// takes again.
    /// </summary>
    [Fact]
    public void BlocksWithJournaledDataSinceTheCheckpointStayJournaled()
    {
        using var scratch = new RepairScratch();
        string image = scratch.CopyFixture("fresh-4ag");
        byte[] old = Pattern(Mib, 5), data = Pattern(2 * Mib, 6);
        var options = Fast with { OrderedDataMinBytes = 2 * Mib };
        using (var fs = XfsFileSystem.Open(image, options))
        {
            fs.Create("/f");
            fs.Write("/f", 0, old);
            Assert.Equal(0, fs.Engine.OrderedData.Bytes);
            fs.Truncate("/f", 0);
            // The free made durable, so its blocks are no longer busy (file data avoids busy space while other space
            // serves): the allocator takes them again (same hint: the inode's), while the journal, not yet
            // checkpointed, still holds their old bytes.
            fs.Engine.Journal.Sync();
            fs.Write("/f", 0, data);
            Assert.True(fs.Engine.OrderedData.Bytes == 0,
                $"{fs.Engine.OrderedData.Bytes} bytes written without a journal entry over blocks whose old data the journal holds (or the freed blocks were not reused, and this test no longer proves anything)");
        }
        using (var fs = XfsFileSystem.Open(image, options))
        {
            Assert.True(data.AsSpan().SequenceEqual(ReadAll(fs, "/f", 2 * Mib)), "the replay put the old journaled bytes back over the new write");
            AssertInvariants(fs.Engine, "after the replay");
            fs.Close();
        }
        // After a checkpoint the journal holds nothing of those blocks: the same rewrite is ordered.
        using (var fs = XfsFileSystem.Open(image, options))
        {
            fs.Truncate("/f", 0);
            fs.Write("/f", 0, old);
            fs.Engine.Checkpoint();
            fs.Truncate("/f", 0);
            fs.Write("/f", 0, data);
            Assert.Equal(2L * Mib, fs.Engine.OrderedData.Bytes);
        }
        using (var fs = XfsFileSystem.Open(image, options))
        {
            Assert.True(data.AsSpan().SequenceEqual(ReadAll(fs, "/f", 2 * Mib)));
            fs.Close();
        }
        AssertOraclesClean(image, "journaled then ordered data");
    }
}
