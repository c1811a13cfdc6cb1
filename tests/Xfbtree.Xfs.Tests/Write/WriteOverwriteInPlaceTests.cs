using Xunit.Abstractions;
using Xfbtree.TestSupport;
using Xfbtree.Xfs.Tests.Repair;
using Xfbtree.Xfs.Write;
using Xfbtree.Xfs.Write.Engine;
using Xfbtree.Xfs.Write.Namespace;
using static Xfbtree.Xfs.Tests.Write.WriteEngineTestSupport;

namespace Xfbtree.Xfs.Tests.Write;

/// <summary>
/// Overwrites in place (docs/write-engine.md): a write into blocks the file holds written, unshared, not busy and not
/// held by any journal record since the checkpoint goes to the image without a transaction, and fdatasync then syncs
/// the image only. An fdatasync'd overwrite must survive a power loss at any write; blocks that are shared,
/// unwritten, busy or journaled since the checkpoint must still go the journaled (or copy-on-write) way.
/// </summary>
public sealed class WriteOverwriteInPlaceTests(ITestOutputHelper output)
{
    const int FileBytes = 64 << 10;
    const byte Old = 0xAA;

    static byte[] Filled(int length, byte value)
    {
        var b = new byte[length];
        b.AsSpan().Fill(value);
        return b;
    }

    static byte[] ReadAll(XfsFileSystem fs, string path)
    {
        var buffer = new byte[fs.Stat(path).Size];
        Assert.Equal(buffer.Length, fs.Read(path, 0, buffer));
        return buffer;
    }

    /// <summary>The overwrites of the crash sweep: whole blocks, a partial block, a write across two blocks.</summary>
    static readonly (long Offset, int Length, byte Value)[] Overwrites =
    [
        (8192, 4096, 0x11),
        (20000, 100, 0x22),
        (40000, 8192, 0x33),
    ];

    /// <summary>A file of written blocks, checkpointed: nothing in the journal holds its data.</summary>
    static InodeHandle Setup(XfsFileSystem fs)
    {
        fs.Create("/f");
        fs.Write("/f", 0, Filled(FileBytes, Old));
        fs.Engine.Checkpoint();
        return fs.GetAttr("/f").Handle;
    }

    static byte[] Expected(int upTo)
    {
        var content = Filled(FileBytes, Old);
        for (int i = 0; i < upTo; i++) content.AsSpan((int)Overwrites[i].Offset, Overwrites[i].Length).Fill(Overwrites[i].Value);
        return content;
    }

    /// <summary>Overwrites of written blocks take no journal record for their data (only a times-only one, at most once
    /// per tick), the data is in the image at once, fdatasync syncs the image and not the journal, and fsync makes the
    /// times durable too.</summary>
    [Fact]
    public void AnOverwriteOfWrittenBlocks_IsWrittenInPlace_AndFdatasyncSyncsOnlyTheImage()
    {
        using var scratch = new RepairScratch();
        string image = scratch.CopyFixture("fresh-4ag");
        var sync = new CrashAfterWrites(0, CrashModel.ProcessKill);
        using (var fs = XfsFileSystem.Open(image, Fast))
        {
            var file = Setup(fs);
            fs.SetTimes("/f", null, new InodeTime(1_000_000, 0)); // an old mtime: the first overwrite moves it
            fs.Engine.Checkpoint();
            var before = fs.GetAttr("/f");
            fs.Engine.Disk.WriteInterceptor = sync;
            long overwrites = fs.Engine.OverwritesWritten, records = fs.Engine.CommittedRecords;
            foreach (var (offset, length, value) in Overwrites) fs.Write("/f", offset, Filled(length, value));
            // One block, one partial block, and a write over blocks 9-11: a partial head, a whole block, a partial tail.
            Assert.Equal(overwrites + 5, fs.Engine.OverwritesWritten);
            long timesRecords = fs.Engine.CommittedRecords - records;
            Assert.True(timesRecords is >= 1 and <= 3, $"{timesRecords} records for three overwrites: only their times may be logged");
            Assert.True(Expected(Overwrites.Length).AsSpan().SequenceEqual(ReadAll(fs, "/f")));
            var after = fs.GetAttr("/f");
            Assert.True(after.Mtime.Seconds > before.Mtime.Seconds || (after.Mtime.Seconds == before.Mtime.Seconds && after.Mtime.Nanoseconds > before.Mtime.Nanoseconds),
                $"mtime did not move: {before.Mtime} -> {after.Mtime}");
            long journalSynced = fs.Engine.Journal.SyncedEnd;
            Assert.True(fs.Engine.Journal.Length > journalSynced, "the times' record is not in the journal");
            int imageSyncs = sync.Syncs;
            fs.Files.SyncData(file);
            Assert.Equal(journalSynced, fs.Engine.Journal.SyncedEnd);
            Assert.Equal(imageSyncs + 1, sync.Syncs);
            Assert.Equal(fs.Engine.OverwritesWritten, fs.Engine.OverwritesSynced);
            // Nothing new: no sync at all.
            fs.Files.SyncData(file);
            Assert.Equal(imageSyncs + 1, sync.Syncs);
            // fsync: the times' record too.
            fs.Engine.SyncJournal();
            Assert.Equal(fs.Engine.Journal.Length, fs.Engine.Journal.SyncedEnd);
            output.WriteLine($"overwrites {fs.Engine.OverwritesWritten - overwrites}, journal {journalSynced} -> {fs.Engine.Journal.SyncedEnd} bytes");
            fs.Close();
        }
        using (var fs = XfsFileSystem.Open(image, Fast))
        {
            Assert.True(Expected(Overwrites.Length).AsSpan().SequenceEqual(ReadAll(fs, "/f")));
            fs.Close();
        }
        AssertOraclesClean(image, "overwrites in place");
    }

    /// <summary>
    /// A power cut at every write of a run of overwrites, fdatasyncs and a new file (the image loses every write no
    /// sync covered, the journal is cut back to its last fsync): each overwrite that an fdatasync returned for is
    /// there, each other block holds its old bytes or its new ones, nothing else; the image is clean.
    /// </summary>
    [Fact]
    public void PowerLossAtEveryWrite_KeepsEveryFdatasyncedOverwrite()
    {
        using var scratch = new RepairScratch();
        string original = scratch.CopyFixture("fresh-4ag");

        // Reference run: the writes from the first overwrite to the end.
        int first, last;
        var counter = new WriteFaultInjector(int.MaxValue, () => { });
        string reference = scratch.Copy(original, "reference.img");
        using (var fs = XfsFileSystem.Open(reference, Fast with { Faults = counter }))
        {
            var file = Setup(fs);
            first = counter.Writes + 1;
            Run(fs, file, _ => { });
            last = counter.Writes;
            fs.Close();
        }
        int runs = 0;
        bool ended = false;
        // The number of writes varies a little (a times record only when the clock passed a tick): the cuts go on until a
        // run ends before its cut, checked the same way.
        for (int k = first; k <= last + 64; k++)
        {
            string image = scratch.Copy(original, $"power-{k}.img");
            XfsFileSystem? fs = null;
            long synced = -1;
            var power = new CrashAfterWrites(0, CrashModel.PowerLoss);
            var faults = new WriteFaultInjector(k, () =>
            {
                synced = fs!.Engine.Journal.SyncedEnd;
                power.PowerOff();
            });
            int durable = 0;
            try
            {
                fs = XfsFileSystem.Open(image, Fast with { Faults = faults });
                var file = Setup(fs);
                fs.Engine.Disk.WriteInterceptor = power;
                Run(fs, file, done => durable = done);
            }
            catch (Exception e) when (faults.Crashed && (e is Xfbtree.Xfs.Write.Engine.SimulatedCrashException || e.InnerException is Xfbtree.Xfs.Write.Engine.SimulatedCrashException || e is XfsWriteException))
            {
            }
            finally
            {
                fs?.Dispose();
            }
            bool completed = !faults.Crashed;
            if (completed)
            {
                synced = new FileInfo(WriteEngine.DefaultJournalPath(image)).Length; // the run ended with an fsync of everything
                power.PowerOff();
            }
            Assert.True(synced >= WriteJournal.HeaderLength, $"k={k}: no journal length at the power cut");
            CutJournal(image, synced);
            using (var after = XfsFileSystem.Open(image, Fast))
            {
                byte[] content = ReadAll(after, "/f");
                Assert.Equal(FileBytes, content.Length);
                for (int i = 0; i < Overwrites.Length; i++)
                {
                    var (offset, length, value) = Overwrites[i];
                    var piece = content.AsSpan((int)offset, length);
                    if (i < durable)
                    {
                        Assert.True(piece.IndexOfAnyExcept(value) < 0, $"k={k}: overwrite {i} was fdatasynced but is not all there after the power loss");
                    }
                    else
                    {
                        Assert.True(piece.IndexOfAnyExcept(value, Old) < 0, $"k={k}: overwrite {i} holds bytes that are neither its own nor the file's old ones");
                    }
                }
                var rest = Expected(Overwrites.Length);
                for (int i = 0; i < Overwrites.Length; i++) content.AsSpan((int)Overwrites[i].Offset, Overwrites[i].Length).CopyTo(rest.AsSpan((int)Overwrites[i].Offset));
                Assert.True(rest.AsSpan().SequenceEqual(content), $"k={k}: bytes outside the overwrites changed");
                AssertInvariants(after.Engine, $"power cut at write {k}");
                after.Close();
            }
            if (k == last || completed) AssertOraclesClean(image, $"power cut at write {k}");
            File.Delete(image);
            runs++;
            if (completed)
            {
                ended = true;
                break;
            }
        }
        Assert.True(ended, "every run reached its power cut: the sweep did not cover the whole run");
        output.WriteLine($"{runs} power cuts (writes {first}..{last})");
    }

    /// <summary>The run of the sweep: each overwrite, then fdatasync (durable counts the overwrites it returned for),
    /// then a new file, whose writes are the last ones.</summary>
    static void Run(XfsFileSystem fs, InodeHandle file, Action<int> durable)
    {
        for (int i = 0; i < Overwrites.Length; i++)
        {
            var (offset, length, value) = Overwrites[i];
            fs.Write("/f", offset, Filled(length, value));
            fs.Files.SyncData(file);
            durable(i + 1);
        }
        fs.Create("/later");
        fs.Write("/later", 0, Filled(4096, 0x44));
        fs.Engine.SyncJournal();
    }

    /// <summary>
    /// Blocks that must not be overwritten in place: a reflink's shared blocks (copy-on-write: the other file keeps its
    /// bytes), unwritten blocks (converted in a transaction), blocks whose data a record since the checkpoint holds
    /// (a replay would put the older bytes back), blocks a record not yet durable freed (busy), and a write past EOF
    /// (the size changes). Each goes the journaled way, and its result survives a crash and a replay.
    /// </summary>
    [Fact]
    public void SharedUnwrittenJournaledAndBusyBlocks_GoTheJournaledWay()
    {
        using var scratch = new RepairScratch();
        string image = scratch.CopyFixture("fresh-4ag");
        using (var fs = XfsFileSystem.Open(image, Fast))
        {
            Setup(fs);
            fs.Create("/h");
            fs.Write("/h", 0, Filled(FileBytes, Old));
            fs.Create("/copy");
            fs.Reflink("/f", 0, "/copy", 0, FileBytes);
            fs.Create("/prealloc");
            fs.Fallocate("/prealloc", 0, FileBytes);
            fs.Engine.Checkpoint();
            long overwrites = fs.Engine.OverwritesWritten;
            // Shared: copy-on-write; /f keeps its bytes.
            fs.Write("/copy", 4096, Filled(4096, 0x55));
            Assert.Equal(overwrites, fs.Engine.OverwritesWritten);
            Assert.True(ReadAll(fs, "/f").AsSpan().IndexOfAnyExcept(Old) < 0, "a write to a reflinked copy reached the source's blocks");
            // Unwritten.
            fs.Write("/prealloc", 0, Filled(4096, 0x66));
            Assert.Equal(overwrites, fs.Engine.OverwritesWritten);
            // Journaled since the checkpoint: the block just converted holds journaled data now.
            fs.Write("/prealloc", 0, Filled(4096, 0x77));
            Assert.Equal(overwrites, fs.Engine.OverwritesWritten);
            Assert.False(fs.Engine.MayOverwriteInPlace(FirstBlockByteOffset(fs, "/prealloc"), 4096), "a block whose data a record since the checkpoint holds may be overwritten in place");
            // Past EOF.
            fs.Create("/g");
            fs.Write("/g", 0, Filled(4096, Old));
            fs.Engine.Checkpoint();
            fs.Write("/g", 2048, Filled(4096, 0x88));
            Assert.Equal(overwrites, fs.Engine.OverwritesWritten);
            // Busy: the blocks of /f freed by a record not durable yet are refused in place.
            var blocks = FirstBlockByteOffset(fs, "/h");
            Assert.True(fs.Engine.MayOverwriteInPlace(blocks, 4096));
            fs.Truncate("/h", 0);
            output.WriteLine($"after the truncate: busy {fs.Engine.Busy.LatestRecordOver(blocks, 4096)}, coverage {fs.Engine.Coverage.LatestRecordOver(blocks, 4096)}, journal {fs.Engine.Journal.SyncedEnd}/{fs.Engine.Journal.Length}, block at byte {blocks}");
            Assert.False(fs.Engine.MayOverwriteInPlace(blocks, 4096), "a block freed by a record that is not durable may be overwritten in place");
            fs.Engine.SyncJournal();
            Assert.True(fs.Engine.MayOverwriteInPlace(blocks, 4096), "the free is durable: the block is no longer busy");
            fs.Engine.Checkpoint();
            Assert.True(fs.Engine.MayOverwriteInPlace(FirstBlockByteOffset(fs, "/prealloc"), 4096));
            fs.Write("/prealloc", 0, Filled(4096, 0x99));
            Assert.Equal(overwrites + 1, fs.Engine.OverwritesWritten);
            fs.Engine.SyncJournal();
        }
        // Crashed (no close): the replay keeps every result.
        using (var fs = XfsFileSystem.Open(image, Fast))
        {
            Assert.Equal(0, fs.Stat("/h").Size);
            Assert.True(ReadAll(fs, "/f").AsSpan().IndexOfAnyExcept(Old) < 0);
            var copy = ReadAll(fs, "/copy");
            Assert.True(copy.AsSpan(4096, 4096).IndexOfAnyExcept((byte)0x55) < 0 && copy.AsSpan(0, 4096).IndexOfAnyExcept(Old) < 0);
            Assert.True(ReadAll(fs, "/prealloc").AsSpan(0, 4096).IndexOfAnyExcept((byte)0x99) < 0);
            var g = ReadAll(fs, "/g");
            Assert.Equal(6144, g.Length);
            Assert.True(g.AsSpan(0, 2048).IndexOfAnyExcept(Old) < 0 && g.AsSpan(2048).IndexOfAnyExcept((byte)0x88) < 0);
            AssertInvariants(fs.Engine, "after the replay");
            fs.Close();
        }
        AssertOraclesClean(image, "journaled-way writes replayed");
    }

    /// <summary>Image byte offset of a file's first data block (extents format).</summary>
    static long FirstBlockByteOffset(XfsFileSystem fs, string path)
    {
        var core = new Format.Dinode(fs.Engine.GetInode(fs.Lookup(path)).Core);
        Assert.Equal(Format.ForkFormat.Extents, core.Format);
        var e = Format.BmbtExtent.Read(core.DataFork[..Format.Dinode.ExtentSize]);
        var geo = fs.Engine.Geometry;
        return geo.AgBlockToByte(geo.FsbToAgno(e.StartBlock), geo.FsbToAgbno(e.StartBlock));
    }

    static void CutJournal(string image, long synced)
    {
        string journal = WriteEngine.DefaultJournalPath(image);
        using var h = File.OpenHandle(journal, FileMode.Open, FileAccess.ReadWrite);
        Assert.True(RandomAccess.GetLength(h) >= synced);
        RandomAccess.SetLength(h, synced);
    }
}
