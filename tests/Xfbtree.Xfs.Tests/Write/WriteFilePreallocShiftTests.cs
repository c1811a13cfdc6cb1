using Xfbtree.Xfs.Tests.Repair;
using Xfbtree.Xfs.Write;
using Xfbtree.Xfs.Write.Engine;
using Xfbtree.Xfs.Write.Files;
using Xfbtree.Xfs.Write.Namespace;
using Xunit.Abstractions;
using static Xfbtree.Xfs.Tests.Write.WriteEngineTestSupport;

namespace Xfbtree.Xfs.Tests.Write;

/// <summary>
/// fallocate with KEEP_SIZE (unwritten blocks past EOF), COLLAPSE_RANGE and INSERT_RANGE, and renameat2 with
/// RENAME_WHITEOUT, as the kernel's XFS does them; each judged by a byte model, the engine's invariants, xfs_repair -n,
/// the rmap check, the scrub and a read-only kernel mount.
/// </summary>
public sealed class WriteFilePreallocShiftTests(ITestOutputHelper output)
{
    public static TheoryData<string> Fixtures => new() { "fresh-4ag", "geom-bs1k" };

    [Theory]
    [MemberData(nameof(Fixtures))]
    public void KeepSizePreallocationPastEof_CountsItsBlocks_ReadsAsNothing_AndTruncateFreesIt(string fixture)
    {
        using var scratch = new RepairScratch();
        string image = scratch.CopyFixture(fixture);
        var model = new FileModel();
        int bs;
        using (var fs = XfsFileSystem.Open(image, WriteFileHarness.Options))
        {
            bs = fs.Engine.Geometry.BlockSize;
            fs.Create("/k");
            Write(fs, model, 0, WriteFileHarness.Pattern(3 * bs + 100, 1));
            long blocks = fs.Stat("/k").Blocks;
            Assert.Equal(4, blocks);
            // Blocks 2 and 3 are written already: 16 new unwritten blocks past EOF, the size stays.
            fs.Fallocate("/k", 2L * bs, 18L * bs, FallocateFlags.KeepSize);
            Assert.Equal(model.Size, fs.Stat("/k").Size);
            Assert.Equal(blocks + 16, fs.Stat("/k").Blocks);
            Assert.Equal(0, fs.Read("/k", model.Size, new byte[bs]));
            Assert.Equal(0, fs.Read("/k", 10L * bs, new byte[bs]));
            AssertFile(fs, "/k", model);
            AssertInvariants(fs.Engine, "after the preallocation past EOF");
            fs.Close();
        }
        AssertOracles(image, "after the preallocation past EOF");
        AssertKernel(image, ("k", model, 20L * bs / 512));

        using (var fs = XfsFileSystem.Open(image, WriteFileHarness.Options))
        {
            // A write into the preallocation converts it without allocating; the gap to the old EOF reads as zeros.
            Write(fs, model, 10L * bs + 5, WriteFileHarness.Pattern(100, 2));
            Assert.Equal(20, fs.Stat("/k").Blocks);
            // Growing the size over unwritten blocks allocates nothing and shows zeros.
            fs.Truncate("/k", 15L * bs + 3);
            model.Resize(15L * bs + 3);
            Assert.Equal(20, fs.Stat("/k").Blocks);
            fs.Fallocate("/k", 30L * bs, 10L * bs, FallocateFlags.KeepSize);
            Assert.Equal(30, fs.Stat("/k").Blocks);
            AssertFile(fs, "/k", model);
            // A truncate to the same size frees the blocks past EOF (the kernel's xfs_setattr_size): 16..19, 30..39.
            fs.Truncate("/k", model.Size);
            Assert.Equal(16, fs.Stat("/k").Blocks);
            fs.Fallocate("/k", 20L * bs, 4L * bs, FallocateFlags.KeepSize);
            fs.Truncate("/k", 12L * bs + 1);
            model.Resize(12L * bs + 1);
            Assert.Equal(13, fs.Stat("/k").Blocks);
            // Zero range with KEEP_SIZE over the EOF (what the mount does): punch, then unwritten blocks over the range.
            fs.PunchHole("/k", 5L * bs, 100L * bs);
            fs.Fallocate("/k", 5L * bs, 100L * bs, FallocateFlags.KeepSize);
            model.Zero(5L * bs, 100L * bs);
            Assert.Equal(model.Size, fs.Stat("/k").Size);
            Assert.Equal(105, fs.Stat("/k").Blocks);
            AssertFile(fs, "/k", model);
            AssertInvariants(fs.Engine, "after the conversions and truncates");
            fs.Close();
        }
        AssertOracles(image, "after the conversions and truncates");
        AssertKernel(image, ("k", model, 105L * bs / 512));

        // Removal frees the preallocation with the rest.
        using (var fs = XfsFileSystem.Open(image, WriteFileHarness.Options))
        {
            fs.Unlink("/k");
            AssertInvariants(fs.Engine, "after the unlink");
            fs.Close();
        }
        AssertOracles(image, "after the unlink");
    }

    [Theory]
    [MemberData(nameof(Fixtures))]
    public void CollapseAndInsertRange_MoveTheMappingsWithTheirRmapsAndRefcounts(string fixture)
    {
        using var scratch = new RepairScratch();
        string image = scratch.CopyFixture(fixture);
        var a = new FileModel();
        var b = new FileModel();
        int bs;
        long blocksBefore, blocksAfter;
        using (var fs = XfsFileSystem.Open(image, WriteFileHarness.Options))
        {
            bs = fs.Engine.Geometry.BlockSize;
            fs.Create("/a");
            fs.Create("/b");
            Write(fs, a, 0, WriteFileHarness.Pattern(48 * bs + 123, 3), "/a");
            // Fragmented (every third block a hole), an unwritten stretch, and blocks shared with /b.
            for (int i = 1; i < 48; i += 3)
            {
                fs.PunchHole("/a", (long)i * bs, bs);
                a.Zero((long)i * bs, bs);
            }
            fs.PunchHole("/a", 20L * bs, 6L * bs);
            a.Zero(20L * bs, 6L * bs);
            fs.Fallocate("/a", 20L * bs, 6L * bs, FallocateFlags.KeepSize);
            fs.Reflink("/a", 0, "/b", 0, 24L * bs);
            b.CopyFrom(a, 0, 0, 24L * bs);
            blocksBefore = fs.Stat("/a").Blocks;

            Collapse(fs, a, 4L * bs, 3L * bs);
            Insert(fs, a, 2L * bs, 5L * bs);
            Collapse(fs, a, 0, bs);
            Insert(fs, a, (a.Size - 1) / bs * bs, 2L * bs);
            Collapse(fs, a, 18L * bs, 7L * bs); // across the unwritten stretch
            Insert(fs, a, 19L * bs, 1L * bs);
            blocksAfter = fs.Stat("/a").Blocks;
            AssertFile(fs, "/a", a);
            AssertFile(fs, "/b", b);

            // The kernel's refusals, each changing nothing.
            AssertRefused(fs, a, WriteErrorKind.InvalidArgument, () => fs.CollapseRange("/a", 1, bs));
            AssertRefused(fs, a, WriteErrorKind.InvalidArgument, () => fs.InsertRange("/a", bs, bs + 1));
            AssertRefused(fs, a, WriteErrorKind.InvalidArgument, () => fs.CollapseRange("/a", 0, (a.Size + bs - 1) / bs * bs));
            AssertRefused(fs, a, WriteErrorKind.InvalidArgument, () => fs.CollapseRange("/a", (a.Size - 1) / bs * bs, bs));
            AssertRefused(fs, a, WriteErrorKind.InvalidArgument, () => fs.InsertRange("/a", (a.Size + bs - 1) / bs * bs, bs));
            AssertRefused(fs, a, WriteErrorKind.InvalidArgument, () => fs.InsertRange("/a", 0, 0));
            AssertRefused(fs, a, WriteErrorKind.FileTooBig, () => fs.InsertRange("/a", 0, FileOperations.MaxFileSize / bs * bs));
            AssertInvariants(fs.Engine, "after the shifts");
            fs.Close();
        }
        output.WriteLine($"/a: {blocksBefore} blocks before, {blocksAfter} after");
        Assert.True(blocksAfter < blocksBefore, "collapse frees the blocks of its ranges");
        AssertOracles(image, "after the shifts");
        using (var fs = XfsFileSystem.Open(image, WriteFileHarness.Options))
        {
            AssertFile(fs, "/a", a);
            AssertFile(fs, "/b", b);
            fs.Close();
        }
        AssertKernel(image, ("a", a, -1), ("b", b, -1));

        // The kernel's own shifts on the file the engine shifted (its bmbt, rmaps and refcounts as the kernel's code
        // expects them), then the engine reads what the kernel made.
        string mnt = Directory.CreateTempSubdirectory("xfbtree-shift-rw-").FullName;
        var mount = RepairTools.Exec("/bin/mount", ["-o", "loop,nouuid", image, mnt]);
        Assert.True(mount.ExitCode == 0, $"mount: {mount}");
        try
        {
            var io = RepairTools.Exec("/usr/sbin/xfs_io", ["-c", $"fcollapse {2 * bs} {3 * bs}", "-c", $"finsert {bs} {2 * bs}", Path.Combine(mnt, "a")]);
            Assert.True(io.ExitCode == 0 && io.Stderr.Length == 0 && io.Stdout.Length == 0, $"xfs_io: {io}");
        }
        finally
        {
            var umount = RepairTools.Exec("/bin/umount", [mnt]);
            try { Directory.Delete(mnt); } catch (IOException) { }
            Assert.True(umount.ExitCode == 0, $"umount: {umount}");
        }
        var tail = a.Data.AsSpan(5 * bs).ToArray();
        a.Resize(2L * bs);
        a.Write(2L * bs, tail);
        tail = a.Data.AsSpan(bs).ToArray();
        a.Resize(bs + 2L * bs);
        Array.Clear(a.Data, bs, 2 * bs);
        a.Write(3L * bs, tail);
        AssertOracles(image, "after the kernel's shifts");
        using (var fs = XfsFileSystem.Open(image, WriteFileHarness.Options))
        {
            AssertFile(fs, "/a", a);
            AssertFile(fs, "/b", b);
            fs.Close();
        }
    }

    /// <summary>With steps of 4 mappings a shift over 40 extents takes several transactions; killed at its writes
    /// (every other one; every one with XFBTREE_LONG_TESTS=1), the replayed file is valid and each data block is where
    /// it was or where it moves, never both, never lost (outside a collapsed range).</summary>
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void AShiftInBoundedSteps_CrashedAtAnyWrite_LeavesAValidFileWithEveryBlockOnce(bool insert)
    {
        using var scratch = new RepairScratch();
        string probe = scratch.CopyFixture("fresh-4ag");
        string pristine = scratch.Copy(probe, "pristine.img");
        const int extents = 40;
        var options = WriteFileHarness.Options with { StepPieces = 4 };
        int bs = 0;
        long shiftAt = 0, shiftBy = 0;
        void Fragmented(XfsFileSystem fs)
        {
            bs = fs.Engine.Geometry.BlockSize;
            shiftAt = 10L * bs;
            shiftBy = 4L * bs;
            fs.Create("/f");
            // Block 2i holds byte i + 1 in its first byte: one-block extents with holes between.
            for (int i = 0; i < extents; i++) fs.Write("/f", 2L * i * bs, new[] { (byte)(i + 1) });
        }
        void Shift(XfsFileSystem fs)
        {
            if (insert) fs.InsertRange("/f", shiftAt, shiftBy);
            else fs.CollapseRange("/f", shiftAt, shiftBy);
        }

        var counter = new WriteFaultInjector(int.MaxValue, () => { });
        int before, after;
        long oldSize, records;
        using (var fs = XfsFileSystem.Open(probe, options with { Faults = counter }))
        {
            Fragmented(fs);
            oldSize = fs.Stat("/f").Size;
            before = counter.Writes;
            long r0 = fs.Engine.CommittedRecords;
            Shift(fs);
            records = fs.Engine.CommittedRecords - r0;
            after = counter.Writes;
            AssertInvariants(fs.Engine, "after the whole shift");
            fs.Close();
        }
        output.WriteLine($"{(insert ? "insert" : "collapse")}: {records} transactions, {after - before} writes");
        Assert.True(records >= 4, $"a shift of {extents} one-block extents in steps of 4 committed {records} records");
        int crashes = 0;
        int stride = Environment.GetEnvironmentVariable("XFBTREE_LONG_TESTS") == "1" ? 1 : 2;
        for (int k = before + 1; k <= after; k += stride)
        {
            string image = scratch.Copy(pristine, $"crash-{k}.img");
            var fs = XfsFileSystem.Open(image, options with { Faults = new WriteFaultInjector(k, () => { }) });
            try
            {
                Fragmented(fs);
                try { Shift(fs); }
                catch (XfsWriteException) { }
                catch (IOException) { }
            }
            finally
            {
                fs.Dispose(); // a crash: the next open replays the journal
            }
            using (var reopened = XfsFileSystem.Open(image, WriteFileHarness.Options))
            {
                AssertInvariants(reopened.Engine, $"crash at write {k}");
                long size = reopened.Stat("/f").Size;
                long newSize = insert ? oldSize + shiftBy : oldSize - shiftBy;
                Assert.True(size == oldSize || size == newSize, $"crash at write {k}: size {size}, neither {oldSize} nor {newSize}");
                var data = new byte[size];
                Assert.Equal((int)size, reopened.Read("/f", 0, data));
                var seen = new int[extents + 1];
                for (long block = 0; block * bs < size; block++)
                {
                    for (int i = 1; i < bs && block * bs + i < size; i++)
                        Assert.True(data[block * bs + i] == 0, $"crash at write {k}: byte {block * bs + i} is not zero");
                    byte v = data[block * bs];
                    if (v == 0) continue;
                    long orig = 2L * (v - 1) * bs, moved = insert ? orig + shiftBy : orig - shiftBy;
                    bool movable = orig >= (insert ? shiftAt : shiftAt + shiftBy);
                    Assert.True(block * bs == orig || movable && block * bs == moved,
                        $"crash at write {k}: block {block} holds the data of block {orig / bs}");
                    seen[v]++;
                }
                for (int v = 1; v <= extents; v++)
                {
                    long orig = 2L * (v - 1) * bs;
                    // A collapsed block may still be there when the crash came before its part of the punch.
                    bool collapsedAway = !insert && orig >= shiftAt && orig < shiftAt + shiftBy;
                    Assert.True(collapsedAway ? seen[v] <= 1 : seen[v] == 1, $"crash at write {k}: the data of block {orig / bs} appears {seen[v]} times");
                }
                reopened.Close();
            }
            if ((k - before) % 8 == 1) AssertOracles(image, $"crash at write {k}");
            File.Delete(image);
            crashes++;
        }
        output.WriteLine($"{crashes} crash points checked");
        Assert.Equal((after - before + stride - 1) / stride, crashes);
        Assert.True(crashes > 0, "no write to crash at");
    }

    /// <summary>The kernel holds the inode's I/O lock for a whole shift; the engine locks it per step, so another
    /// operation can run between two steps (driven here by the step hook): one that changes the size stops the shift
    /// with Busy, part way, and no moved data is left past EOF (an insert that went on after a truncate down moved
    /// written blocks beyond the new EOF, where a later growth showed them).</summary>
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void AShiftWhoseFileChangesSizeBetweenSteps_StopsWithBusy_AndLeavesNoDataPastEof(bool insert)
    {
        using var scratch = new RepairScratch();
        string image = scratch.CopyFixture("fresh-4ag");
        XfsFileSystem? self = null;
        int steps = 0;
        long cut = 0;
        var options = WriteFileHarness.Options with
        {
            StepPieces = 4,
            StepCommitted = op =>
            {
                if (op.EndsWith(" range", StringComparison.Ordinal) && ++steps == 2) self!.Truncate("/f", cut);
            },
        };
        using (var fs = XfsFileSystem.Open(image, options))
        {
            self = fs;
            int bs = fs.Engine.Geometry.BlockSize;
            fs.Create("/f");
            for (int i = 0; i < 40; i++) fs.Write("/f", 2L * i * bs, new[] { (byte)(i + 1) });
            cut = 30L * bs;
            var failure = Assert.Throws<XfsWriteException>(() =>
            {
                if (insert) fs.InsertRange("/f", 10L * bs, 4L * bs);
                else fs.CollapseRange("/f", 10L * bs, 4L * bs);
            });
            output.WriteLine(failure.Message);
            Assert.Equal(WriteErrorKind.Busy, failure.Kind);
            Assert.StartsWith($"{(insert ? "insert" : "collapse")} range stopped part way", failure.Message, StringComparison.Ordinal);
            Assert.Equal(cut, fs.Stat("/f").Size);
            // Growing the file again must show zeros past the cut: nothing moved there after it.
            fs.Truncate("/f", 100L * bs);
            var data = new byte[100 * bs];
            Assert.Equal(data.Length, fs.Read("/f", 0, data));
            int stray = data.AsSpan((int)cut).IndexOfAnyExcept((byte)0);
            Assert.True(stray < 0, $"byte {cut + stray} past the cut holds data");
            AssertInvariants(fs.Engine, "after the stopped shift");
            fs.Close();
        }
        AssertOracles(image, "after the stopped shift");
    }

    [Fact]
    public void RenameWhiteout_LeavesACharacterDevice00UnderTheSourceName_InOneTransaction()
    {
        using var scratch = new RepairScratch();
        string image = scratch.CopyFixture("fresh-4ag");
        var content = new FileModel();
        using (var fs = XfsFileSystem.Open(image, WriteFileHarness.Options))
        {
            fs.Mkdir("/d");
            fs.Mkdir("/e");
            fs.Create("/d/a");
            Write(fs, content, 0, WriteFileHarness.Pattern(5000, 4), "/d/a");
            fs.Create("/d/b");
            fs.Create("/e/t");
            fs.Create("/d/x");
            fs.Create("/d/y");

            long records = fs.Engine.CommittedRecords;
            fs.Namespace.Rename("/d/a", "/d/a2", RenameFlags.Whiteout);
            Assert.Equal(1, fs.Engine.CommittedRecords - records);
            AssertWhiteout(fs, "/d/a", 0);
            AssertFile(fs, "/d/a2", content);
            // Over an existing target: the target loses its name (and is freed), the source name is a whiteout.
            ulong replaced = fs.Lookup("/e/t");
            fs.Namespace.Rename("/d/b", "/e/t", RenameFlags.Whiteout);
            AssertWhiteout(fs, "/d/b", 0);
            Assert.NotEqual(replaced, fs.Lookup("/e/t"));
            // NOREPLACE with it: EEXIST and nothing changed; EXCHANGE with it: EINVAL.
            var exists = Assert.Throws<XfsWriteException>(() => fs.Namespace.Rename("/d/a2", "/e/t", RenameFlags.Whiteout | RenameFlags.NoReplace));
            Assert.Equal(WriteErrorKind.Exists, exists.Kind);
            AssertFile(fs, "/d/a2", content);
            var invalid = Assert.Throws<XfsWriteException>(() => fs.Namespace.Rename("/d/x", "/d/y", RenameFlags.Whiteout | RenameFlags.Exchange));
            Assert.Equal(WriteErrorKind.InvalidArgument, invalid.Kind);
            fs.Namespace.Rename("/d/a2", "/e/new", RenameFlags.Whiteout | RenameFlags.NoReplace);
            AssertWhiteout(fs, "/d/a2", 0);
            // A directory moved with a whiteout: the old parent loses its link, the new one gains it.
            fs.Mkdir("/d/sub");
            uint dLinks = fs.GetAttr("/d").Links, eLinks = fs.GetAttr("/e").Links;
            fs.Namespace.Rename("/d/sub", "/e/sub", RenameFlags.Whiteout);
            AssertWhiteout(fs, "/d/sub", 0);
            Assert.Equal(dLinks - 1, fs.GetAttr("/d").Links);
            Assert.Equal(eLinks + 1, fs.GetAttr("/e").Links);
            // A set-group-ID destination directory gives the whiteout its group (made where the kernel makes it).
            fs.Chown("/e", null, 77);
            fs.Chmod("/e", 0x400 | 0x1FD);
            fs.Create("/d/g");
            fs.Namespace.Rename("/d/g", "/e/g", RenameFlags.Whiteout);
            AssertWhiteout(fs, "/d/g", 77);
            // EXCHANGE and NOREPLACE alone still behave.
            fs.Namespace.Rename("/d/x", "/d/y", RenameFlags.Exchange);
            Assert.Equal(WriteErrorKind.Exists, Assert.Throws<XfsWriteException>(() => fs.Namespace.Rename("/d/x", "/d/y", RenameFlags.NoReplace)).Kind);
            AssertInvariants(fs.Engine, "after the whiteouts");
            fs.Close();
        }
        AssertOracles(image, "after the whiteouts");
        WithKernelMount(image, mnt =>
        {
            foreach (var (path, group) in new[] { ("d/a", "0"), ("d/b", "0"), ("d/a2", "0"), ("d/sub", "0"), ("d/g", "77") })
                Assert.Equal($"character special file 0:0 0 1 0:{group}", Stat(mnt, path, "%F %t:%T %a %h %u:%g"));
            Assert.Equal("5000", Stat(mnt, "e/new", "%s"));
            Assert.Equal("directory", Stat(mnt, "e/sub", "%F"));
        });
    }

    // ------------------------------------------------------------------ helpers

    static void Write(XfsFileSystem fs, FileModel model, long offset, byte[] data, string path = "/k")
    {
        fs.Write(path, offset, data);
        model.Write(offset, data);
    }

    static void Collapse(XfsFileSystem fs, FileModel model, long offset, long length)
    {
        fs.CollapseRange("/a", offset, length);
        var tail = model.Data.AsSpan((int)(offset + length)).ToArray();
        model.Resize(offset);
        model.Write(offset, tail);
        AssertFile(fs, "/a", model);
    }

    static void Insert(XfsFileSystem fs, FileModel model, long offset, long length)
    {
        long blocks = fs.Stat("/a").Blocks;
        fs.InsertRange("/a", offset, length);
        var tail = model.Data.AsSpan((int)offset).ToArray();
        model.Resize(offset + length);
        Array.Clear(model.Data, (int)offset, (int)length);
        model.Write(offset + length, tail);
        Assert.Equal(blocks, fs.Stat("/a").Blocks);
        AssertFile(fs, "/a", model);
    }

    static void AssertRefused(XfsFileSystem fs, FileModel model, WriteErrorKind kind, Action op)
    {
        long blocks = fs.Stat("/a").Blocks;
        Assert.Equal(kind, Assert.Throws<XfsWriteException>(op).Kind);
        Assert.Equal(blocks, fs.Stat("/a").Blocks);
        AssertFile(fs, "/a", model);
    }

    static void AssertFile(XfsFileSystem fs, string path, FileModel model)
    {
        Assert.Equal(model.Size, fs.Stat(path).Size);
        var data = new byte[model.Size + 10];
        Assert.Equal((int)model.Size, fs.Read(path, 0, data));
        int same = data.AsSpan(0, (int)model.Size).CommonPrefixLength(model.Data);
        Assert.True(same == model.Size, $"{path}: byte {same} differs from the model");
    }

    static void AssertWhiteout(XfsFileSystem fs, string path, uint gid)
    {
        var attr = fs.GetAttr(path);
        Assert.Equal(0x2000, attr.Mode);
        Assert.Equal(0UL, attr.Rdev);
        Assert.Equal(1u, attr.Links);
        Assert.Equal(0u, attr.Uid);
        Assert.Equal(gid, attr.Gid);
    }

    /// <summary>xfs_repair -n, rmap check and the offline scrub all clean.</summary>
    static void AssertOracles(string image, string when)
    {
        AssertOraclesClean(image, when);
        var scrub = RepairTools.Xfbtree("scrub", image);
        Assert.True(scrub.ExitCode == 0, $"{when}: xfbtree scrub: {scrub}");
    }

    /// <summary>The kernel reads each file as its model, and st_blocks (512-byte units) is as given when not -1.</summary>
    static void AssertKernel(string image, params (string Path, FileModel Model, long Blocks512)[] files)
    {
        WithKernelMount(image, mnt =>
        {
            foreach (var (path, model, blocks) in files)
            {
                byte[] got = File.ReadAllBytes(Path.Combine(mnt, path));
                Assert.True(got.AsSpan().SequenceEqual(model.Data), $"kernel: {path} differs from the model ({got.Length} bytes, model {model.Size})");
                if (blocks >= 0) Assert.Equal(blocks.ToString(System.Globalization.CultureInfo.InvariantCulture), Stat(mnt, path, "%b"));
            }
        });
    }

    static string Stat(string mnt, string path, string format)
    {
        var r = RepairTools.Exec("/usr/bin/stat", ["-c", format, Path.Combine(mnt, path)]);
        Assert.True(r.ExitCode == 0, $"stat {path}: {r}");
        return r.Stdout.TrimEnd('\n');
    }

    static void WithKernelMount(string image, Action<string> body)
    {
        string mnt = Directory.CreateTempSubdirectory("xfbtree-shift-mnt-").FullName;
        // nouuid: other tests may have a copy of the same fixture mounted.
        var mount = RepairTools.Exec("/bin/mount", ["-o", "ro,loop,nouuid", image, mnt]);
        Assert.True(mount.ExitCode == 0, $"mount: {mount}");
        try
        {
            body(mnt);
        }
        finally
        {
            var umount = RepairTools.Exec("/bin/umount", [mnt]);
            try { Directory.Delete(mnt); } catch (IOException) { }
            Assert.True(umount.ExitCode == 0, $"umount: {umount}");
        }
    }
}
