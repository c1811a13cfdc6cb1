using Xunit.Abstractions;
using Xfbtree.Xfs.Format;
using Xfbtree.Xfs.Tests.Repair;
using Xfbtree.Xfs.Write;
using Xfbtree.Xfs.Write.Engine;
using static Xfbtree.Xfs.Tests.Write.WriteEngineTestSupport;

namespace Xfbtree.Xfs.Tests.Write;

/// <summary>
/// Busy extents (docs/write-engine.md, "Busy extents"): file data is written in place at commit, so a block freed by
/// a journal record that is not durable yet must not receive another file's data before that record is durable, or a
/// power loss (the journal loses the free, the data stays on disk) leaves the old owner mapping the new file's bytes.
/// The power loss is modelled in process: the fault injector stops the engine at a chosen write, the journal is cut
/// back to what its last fsync covered, and the image keeps every write made (the worst case: in-place data reached
/// the disk). After the replay the old file holds its own bytes or the result of the free, never the new file's, and
/// the image is clean.
/// </summary>
public sealed class WriteBusyExtentCrashTests(ITestOutputHelper output)
{
    const byte Old = 0xAA, New = 0xBB, Source = 0xCC;

    /// <summary>How the old file's blocks are freed, and what the old file may hold after the replay when the free
    /// was durable (null: the file is gone).</summary>
    sealed record FreeKind(string Name, Action<XfsFileSystem, int> Free, Func<int, byte[]?> AfterFree, bool Xattrs = false);

    static readonly FreeKind[] Kinds =
    [
        new("truncate", (fs, size) => fs.Truncate("/old", 0), size => []),
        new("punch", (fs, size) => fs.PunchHole("/old", 0, size), size => new byte[size]),
        new("unlink", (fs, size) => fs.Unlink("/old"), size => null),
        new("reflink-over", (fs, size) => fs.Reflink("/src", 0, "/old", 0, size), size => Filled(size, Source)),
        new("unlink-with-attr-block", (fs, size) => fs.Unlink("/old"), size => null, Xattrs: true),
    ];

    public static TheoryData<string> KindNames()
    {
        var data = new TheoryData<string>();
        foreach (FreeKind k in Kinds) data.Add(k.Name);
        return data;
    }

    static byte[] Filled(int size, byte value)
    {
        var b = new byte[size];
        b.AsSpan().Fill(value);
        return b;
    }

    /// <summary>The old file (with xattrs in an attr leaf block when asked, and a reflink source), checkpointed: all of
    /// it durable in place.</summary>
    static void Setup(XfsFileSystem fs, FreeKind kind, int size)
    {
        ulong old = fs.Create("/old");
        fs.Write("/old", 0, Filled(size, Old));
        if (kind.Xattrs)
        {
            for (int i = 0; i < 12; i++) fs.SetXattr(old, $"user.attribute-{i}", Filled(200, (byte)i));
            var core = new Dinode(fs.Engine.GetInode(old).Core);
            Assert.True(core.AttrFormat == ForkFormat.Extents && core.AttrExtents == 1, $"/old's xattrs are not in one attr block (format {core.AttrFormat})");
        }
        if (kind.Name == "reflink-over")
        {
            fs.Create("/src");
            fs.Write("/src", 0, Filled(size, Source));
        }
        fs.Engine.Checkpoint();
    }

    /// <summary>Image blocks of a file's data fork (extents format).</summary>
    static List<(ulong Start, uint Count)> DataBlocks(XfsFileSystem fs, string path)
    {
        var core = new Dinode(fs.Engine.GetInode(fs.Lookup(path)).Core);
        Assert.Equal(ForkFormat.Extents, core.Format);
        var list = new List<(ulong, uint)>();
        for (int i = 0; i < (int)core.DataExtents; i++)
        {
            BmbtExtent e = BmbtExtent.Read(core.DataFork.Slice(i * Dinode.ExtentSize, Dinode.ExtentSize));
            list.Add((e.StartBlock, e.BlockCount));
        }
        return list;
    }

    static bool Overlap(List<(ulong Start, uint Count)> a, List<(ulong Start, uint Count)> b)
    {
        foreach (var x in a)
            foreach (var y in b)
                if (x.Start < y.Start + y.Count && y.Start < x.Start + x.Count) return true;
        return false;
    }

    /// <summary>After the replay: the old file holds its own bytes, or what the free left; never a byte of the new
    /// file. Then a clean close and, with <paramref name="oracles"/>, xfs_repair -n and rmap check.</summary>
    static string CheckAfterPowerLoss(string image, FreeKind kind, int size, string what, bool oracles = true)
    {
        string outcome;
        using (var fs = XfsFileSystem.Open(image, Fast))
        {
            bool exists = fs.Namespace.TryLookup(fs.Engine.Image.Superblock.RootIno, "old"u8, out _);
            if (!exists)
            {
                Assert.True(kind.AfterFree(size) is null, $"{what}: /old is gone, but the free ({kind.Name}) does not remove it");
                outcome = "freed";
            }
            else
            {
                long length = fs.Stat("/old").Size;
                var content = new byte[length];
                int read = length == 0 ? 0 : fs.Read("/old", 0, content);
                Assert.Equal(length, read);
                int newBytes = content.AsSpan().Count(New);
                Assert.True(newBytes == 0, $"{what}: /old shows {newBytes} bytes of the new file's data after the power loss (a block freed by a record that was not durable got the new file's data)");
                byte[]? afterFree = kind.AfterFree(size);
                bool original = content.AsSpan().SequenceEqual(Filled(size, Old));
                bool freed = afterFree is not null && content.AsSpan().SequenceEqual(afterFree);
                Assert.True(original || freed, $"{what}: /old is neither its original content nor the result of the {kind.Name}");
                outcome = original ? "original" : "freed";
                if (kind.Xattrs && original)
                {
                    ulong ino = fs.Lookup("/old");
                    var value = new byte[200];
                    for (int i = 0; i < 12; i++)
                    {
                        Assert.Equal(200, fs.GetXattr(ino, $"user.attribute-{i}", value));
                        Assert.True(value.AsSpan().SequenceEqual(Filled(200, (byte)i)), $"{what}: xattr {i} of /old changed");
                    }
                }
            }
            AssertInvariants(fs.Engine, what);
            fs.Close();
        }
        if (oracles) AssertOraclesClean(image, what);
        return outcome;
    }

    /// <summary>
    /// The old file's blocks are freed by a record that is not durable, then a new file is written: with free space
    /// elsewhere the new data avoids the busy blocks (no journal fsync needed), and a power cut at every write from the
    /// free to after the new file's in-place data leaves the old file its own bytes or the free's result.
    /// </summary>
    [Theory]
    [MemberData(nameof(KindNames))]
    public void PowerLossAfterAFreeAndANewFilesData_NeverShowsTheNewDataInTheOldFile(string name)
    {
        FreeKind kind = Kinds.Single(k => k.Name == name);
        const int size = 64 << 10;
        using var scratch = new RepairScratch();
        string original = scratch.CopyFixture("fresh-4ag");

        // Reference run: where the free and the new file's writes fall in the engine's write sequence.
        string reference = scratch.Copy(original, "reference.img");
        var counter = new WriteFaultInjector(int.MaxValue, () => { });
        int first, last;
        bool overlap, syncedMeanwhile;
        using (var fs = XfsFileSystem.Open(reference, Fast with { Faults = counter }))
        {
            Setup(fs, kind, size);
            var oldBlocks = DataBlocks(fs, "/old");
            long synced = fs.Engine.Journal.SyncedEnd;
            first = counter.Writes + 1;
            kind.Free(fs, size);
            fs.Create("/new");
            fs.Write("/new", 0, Filled(size, New));
            last = counter.Writes + 1;
            var newBlocks = DataBlocks(fs, "/new");
            output.WriteLine($"{name}: /old had {string.Join(' ', oldBlocks)}, /new got {string.Join(' ', newBlocks)}; writes {first}..{last}");
            overlap = Overlap(oldBlocks, newBlocks);
            syncedMeanwhile = synced != fs.Engine.Journal.SyncedEnd;
            fs.Close();
        }
        AssertOraclesClean(reference, "reference run");

        var outcomes = new Dictionary<string, int>();
        for (int k = first; k <= last; k++)
        {
            string image = scratch.Copy(original, $"power-{k}.img");
            XfsFileSystem? fs = null;
            long synced = -1;
            var faults = new WriteFaultInjector(k, () => synced = fs!.Engine.Journal.SyncedEnd);
            try
            {
                fs = XfsFileSystem.Open(image, Fast with { Faults = faults });
                Setup(fs, kind, size);
                kind.Free(fs, size);
                fs.Create("/new");
                fs.Write("/new", 0, Filled(size, New));
                fs.Create("/later"); // the first write after the new file's data: the power goes off there
            }
            catch (Exception e) when (faults.Crashed && (e is SimulatedCrashException || e.InnerException is SimulatedCrashException || e is XfsWriteException))
            {
            }
            finally
            {
                fs?.Dispose();
            }
            Assert.True(faults.Crashed && synced >= WriteJournal.HeaderLength, $"k={k}: the power cut was not reached");
            CutJournal(image, synced);
            // The oracles where it matters most: the cut after the new file's data (the others: invariants and content).
            string outcome = CheckAfterPowerLoss(image, kind, size, $"{name}, power cut at write {k}", oracles: k == last);
            outcomes[outcome] = outcomes.GetValueOrDefault(outcome) + 1;
            File.Delete(image);
        }
        output.WriteLine($"{name}: {last - first + 1} power cuts: {string.Join(", ", outcomes.Select(o => $"{o.Key} {o.Value}x"))}");
        // Correct either way; the cheap way: the allocator kept the new data off the busy blocks, so no fsync was needed.
        Assert.False(overlap, "the new file's data went into blocks a record that is not durable freed: the allocator did not prefer free space that is not busy");
        Assert.False(syncedMeanwhile, "the journal was fsynced although free space that is not busy was there");
    }

    /// <summary>
    /// No free space but the busy blocks: the new file's data must reuse them, so the journal is fsynced before its
    /// in-place write (the free is durable first), and a power cut right after the data leaves the old file freed.
    /// </summary>
    [Fact]
    public void PowerLossWhenOnlyBusySpaceIsLeft_TheFreeIsDurableBeforeTheNewData()
    {
        FreeKind kind = Kinds.Single(k => k.Name == "truncate");
        const int size = 32 << 20;
        using var scratch = new RepairScratch();
        string image = scratch.CopyFixture("fresh-4ag");
        XfsFileSystem? fs = null;
        long synced = -1;
        var faults = new WriteFaultInjector(int.MaxValue, () => synced = fs!.Engine.Journal.SyncedEnd);
        long before, written = 0;
        bool fsyncedBeforeReuse;
        try
        {
            fs = XfsFileSystem.Open(image, Fast with { Faults = faults });
            fs.Create("/old");
            var chunk = Filled(1 << 20, Old);
            for (int at = 0; at < size; at += chunk.Length) fs.Write("/old", at, chunk);
            long filled = FillWithPreallocation(fs);
            fs.Engine.Checkpoint();
            output.WriteLine($"old file {size >> 20} MiB, filler {filled >> 20} MiB preallocated");
            before = fs.Engine.Journal.SyncedEnd;
            kind.Free(fs, size);
            fs.Create("/new");
            chunk.AsSpan().Fill(New);
            for (int at = 0; at < size; at += chunk.Length)
            {
                try
                {
                    fs.Write("/new", at, chunk);
                    written += chunk.Length;
                }
                catch (XfsWriteException e) when (e.Kind == WriteErrorKind.NoSpace)
                {
                    break;
                }
            }
            output.WriteLine($"new file: {written >> 20} MiB written into the freed space");
            Assert.True(written >= size / 2, $"only {written} bytes of the new file fit: the free space was not the old file's");
            fsyncedBeforeReuse = fs.Engine.Journal.SyncedEnd > before;
            // The power goes off at the next write.
            faults.CrashAtNextWrite();
            Assert.ThrowsAny<Exception>(() => fs.Create("/later"));
            Assert.True(faults.Crashed, "the power cut was not reached");
        }
        finally
        {
            fs?.Dispose();
        }
        CutJournal(image, synced);
        string outcome = CheckAfterPowerLoss(image, kind, size, "power cut after the new file's data");
        Assert.True(fsyncedBeforeReuse, "the new data reused busy blocks without the journal fsync that makes their free durable");
        Assert.Equal("freed", outcome);
    }

    /// <summary>
    /// The cost side: short-lived files (create, write 64 KiB, unlink), as a build or a mail spool makes them. Each
    /// file's blocks are busy when the next one is written; with the allocator avoiding them no journal fsync is
    /// needed (with reuse, every file would cost one). The fsyncs are counted, not timed.
    /// </summary>
    [Fact]
    public void ShortLivedFilesNeedNoJournalFsync()
    {
        const int files = 300;
        using var scratch = new RepairScratch();
        string image = scratch.CopyFixture("fresh-4ag");
        using (var fs = XfsFileSystem.Open(image, Fast))
        {
            var data = Filled(64 << 10, New);
            long synced = fs.Engine.Journal.SyncedEnd, busySyncs = fs.Engine.BusyDataSyncs;
            var watch = System.Diagnostics.Stopwatch.StartNew();
            for (int i = 0; i < files; i++)
            {
                fs.Create("/tmp-file");
                fs.Write("/tmp-file", 0, data);
                fs.Unlink("/tmp-file");
            }
            watch.Stop();
            long forced = fs.Engine.BusyDataSyncs - busySyncs;
            output.WriteLine($"{files} create+write 64 KiB+unlink: {watch.Elapsed.TotalMilliseconds:F0} ms, {forced} journal fsyncs forced by busy blocks, " +
                $"{fs.Engine.Coverage.FullSyncs + fs.Engine.Busy.FullSyncs} when a tracker was full, {fs.Engine.Coverage.Count} logged and {fs.Engine.Busy.Count} busy ranges held at the end");
            Assert.Equal(0, forced);
            Assert.Equal(synced, fs.Engine.Journal.SyncedEnd);
            fs.Close();
        }
        AssertOraclesClean(image, "after the short-lived files");
    }

    /// <summary>Unwritten preallocation of every block data may still take (16 MiB, then 64 KiB, then one block at a
    /// time until NoSpace); the bytes preallocated.</summary>
    static long FillWithPreallocation(XfsFileSystem fs)
    {
        fs.Create("/filler");
        long at = 0;
        foreach (long piece in new long[] { 16 << 20, 64 << 10, fs.Engine.Geometry.BlockSize })
        {
            while (true)
            {
                try
                {
                    fs.Fallocate("/filler", at, piece);
                    at += piece;
                }
                catch (XfsWriteException e) when (e.Kind == WriteErrorKind.NoSpace)
                {
                    at = fs.Stat("/filler").Size;
                    break;
                }
            }
        }
        return at;
    }

    /// <summary>The power loss: the journal keeps only what its last fsync covered.</summary>
    static void CutJournal(string image, long synced)
    {
        string journal = WriteEngine.DefaultJournalPath(image);
        using var h = File.OpenHandle(journal, FileMode.Open, FileAccess.ReadWrite);
        Assert.True(RandomAccess.GetLength(h) >= synced);
        RandomAccess.SetLength(h, synced);
    }
}
