using Xfbtree.Xfs.Format;
using Xfbtree.Xfs.Tests.Repair;
using Xfbtree.Xfs.Tests.Trees;
using Xfbtree.Xfs.Write;
using Xfbtree.Xfs.Write.Engine;
using Xfbtree.Xfs.Write.Files;

namespace Xfbtree.Xfs.Tests.Write;

/// <summary>Reflink chains, copy-on-write, unshare, and the refusals around them.</summary>
public sealed class WriteFileReflinkTests
{
    [Theory]
    [InlineData("aged-small")]
    [InlineData("geom-nrext64")]
    [InlineData("aged-small-normap")]
    public void ReflinkChainsAndCopyOnWriteKeepEveryFileAndTheRefcountsRight(string fixture)
    {
        using var scratch = new RepairScratch();
        string image = scratch.CopyFixture(fixture);
        var manifest = WriteFileHarness.Manifest(fixture);
        var a = manifest["prealloc"];
        var b = manifest["fragmented"];
        var c = manifest["frag_clone"];
        var m = new Dictionary<ulong, FileModel> { [a.Ino] = new(), [b.Ino] = new(), [c.Ino] = new() };
        using (var engine = WriteEngine.Open(image, WriteFileHarness.Options))
        {
            var files = new FileOperations(engine);
            int bs = engine.Geometry.BlockSize;
            foreach (var ino in m.Keys) files.Truncate(ino, 0);
            var data = WriteFileHarness.Pattern(16 * bs, 11);
            files.Write(a.Ino, 0, data);
            m[a.Ino].Write(0, data);
            // a -> b -> c -> a (chain through three files, one range back into a at another offset).
            files.Reflink(a.Ino, 0, b.Ino, 0, 16L * bs);
            m[b.Ino].CopyFrom(m[a.Ino], 0, 0, 16L * bs);
            files.Reflink(b.Ino, 4L * bs, c.Ino, 2L * bs, 8L * bs);
            m[c.Ino].CopyFrom(m[b.Ino], 4L * bs, 2L * bs, 8L * bs);
            files.Reflink(c.Ino, 2L * bs, a.Ino, 20L * bs, 8L * bs);
            m[a.Ino].CopyFrom(m[c.Ino], 2L * bs, 20L * bs, 8L * bs);
            // Same-file reflink, non-overlapping.
            files.Reflink(a.Ino, 0, a.Ino, 40L * bs, 4L * bs);
            m[a.Ino].CopyFrom(m[a.Ino], 0, 40L * bs, 4L * bs);
            // CoW writes (partial blocks, spanning shared and private blocks), punch and truncate of shared ranges.
            WriteFileOperationTests.Apply(files, m[b.Ino], b.Ino, WriteFileOperationTests.Op.Write(5L * bs + 3, WriteFileHarness.Pattern(3 * bs, 12)));
            WriteFileOperationTests.Apply(files, m[a.Ino], a.Ino, WriteFileOperationTests.Op.Write(22L * bs - 10, WriteFileHarness.Pattern(20, 13)));
            WriteFileOperationTests.Apply(files, m[c.Ino], c.Ino, WriteFileOperationTests.Op.Punch(3L * bs, 2L * bs));
            WriteFileOperationTests.Apply(files, m[b.Ino], b.Ino, WriteFileOperationTests.Op.Truncate(6L * bs + 1));
            WriteFileOperationTests.Apply(files, m[a.Ino], a.Ino, WriteFileOperationTests.Op.Unshare(0, 44L * bs));
            WriteFileOperationTests.Apply(files, m[c.Ino], c.Ino, WriteFileOperationTests.Op.Write(0, WriteFileHarness.Pattern(bs, 14)));
            // Partial last block: allowed when it is the source EOF and becomes the destination EOF.
            files.Truncate(b.Ino, 3L * bs + 100);
            m[b.Ino].Resize(3L * bs + 100);
            files.Reflink(b.Ino, 2L * bs, c.Ino, 30L * bs, bs + 100);
            m[c.Ino].CopyFrom(m[b.Ino], 2L * bs, 30L * bs, bs + 100);
            foreach (var (ino, model) in m) WriteFileHarness.AssertContent(files, ino, model, $"inode {ino}");

            // Refusals: unaligned offsets, overlapping same-file ranges, past the source EOF, partial block not at EOF.
            AssertRefused(WriteErrorKind.InvalidArgument, () => files.Reflink(a.Ino, 1, b.Ino, 0, bs));
            AssertRefused(WriteErrorKind.InvalidArgument, () => files.Reflink(a.Ino, 0, a.Ino, 2L * bs, 4L * bs));
            AssertRefused(WriteErrorKind.InvalidArgument, () => files.Reflink(b.Ino, 0, c.Ino, 0, 100L * bs));
            AssertRefused(WriteErrorKind.InvalidArgument, () => files.Reflink(a.Ino, 0, c.Ino, 0, bs + 1));
            foreach (var (ino, model) in m) WriteFileHarness.AssertContent(files, ino, model, $"inode {ino} after the refusals");
            engine.Close();
        }
        WriteFileHarness.AssertClean(image);
        foreach (var ino in m.Keys) Assert.NotEqual(0UL, WriteFileHarness.Stat(image, ino).Flags2 & Dinode.Flag2Reflink);
        using (var engine = WriteEngine.Open(image, WriteFileHarness.Options))
        {
            var files = new FileOperations(engine);
            foreach (var (ino, model) in m) WriteFileHarness.AssertContent(files, ino, model, $"inode {ino} after reopen");
            engine.Close();
        }
        WriteFileHarness.AssertKernelReads(image, [(a.Path, m[a.Ino]), (b.Path, m[b.Ino]), (c.Path, m[c.Ino])]);
        // The kernel's own read-write workload (a third of the files deleted): on the small fixture by default,
        // on aged-small (30k files, slow) in the long mode.
        if (fixture != "aged-small" || Environment.GetEnvironmentVariable("XFBTREE_LONG_TESTS") == "1") WriteFileHarness.AssertKernelWorkload(image);
    }

    internal static void AssertRefused(WriteErrorKind kind, Action action)
    {
        var e = Assert.Throws<XfsWriteException>(action);
        Assert.True(e.Kind == kind, $"expected {kind}, got {e.Kind}: {e.Message}");
    }
}

/// <summary>Bad arguments and files the data operations do not handle: one clear error, nothing changed.</summary>
public sealed class WriteFileRefusalTests
{
    [Fact]
    public void BadArgumentsAndUnsupportedFilesAreRefusedAndChangeNothing()
    {
        using var scratch = new RepairScratch();
        string image = scratch.CopyFixture("aged-small");
        // A second, untouched copy under its own name (CopyFixture would return the same path: a self-comparison).
        string control = scratch.Copy(TreeFixtures.Image("aged-small"), "control.img");
        var manifest = WriteFileHarness.Manifest("aged-small");
        var file = manifest["prealloc"];
        using (var engine = WriteEngine.Open(image, WriteFileHarness.Options))
        {
            var files = new FileOperations(engine);
            ulong root = engine.Geometry.Superblock.RootIno;
            var refused = WriteFileReflinkTests.AssertRefused;
            refused(WriteErrorKind.IsDirectory, () => files.Write(root, 0, new byte[10]));
            refused(WriteErrorKind.IsDirectory, () => files.Truncate(manifest["bigdir"].Ino, 0));
            refused(WriteErrorKind.Loop, () => files.Write(manifest["long_symlink"].Ino, 0, new byte[10])); // not followed: ELOOP, as open(O_NOFOLLOW)
            refused(WriteErrorKind.InvalidArgument, () => files.Write(file.Ino, -1, new byte[10]));
            refused(WriteErrorKind.InvalidArgument, () => files.Write(file.Ino, long.MaxValue - 5, new byte[10]));
            refused(WriteErrorKind.InvalidArgument, () => files.Fallocate(file.Ino, 0, -4));
            refused(WriteErrorKind.InvalidArgument, () => files.PunchHole(file.Ino, 0, 0));
            refused(WriteErrorKind.InvalidArgument, () => files.Truncate(file.Ino, -1));
            refused(WriteErrorKind.InvalidArgument, () => files.Read(file.Ino, -1, new byte[1]));
            engine.Close();
        }
        using (var engine = WriteEngine.Open(control, WriteFileHarness.Options)) engine.Close();
        Assert.Empty(RepairTools.DifferingRanges(image, control, 512));
        WriteFileHarness.AssertClean(image);
    }

    [Theory]
    [InlineData("geom-bs1k")]
    [InlineData("geom-bs1k-normap")]
    public void NoSpaceLeavesTheImageUnchanged(string fixture)
    {
        using var scratch = new RepairScratch();
        string image = scratch.CopyFixture(fixture);
        string control = scratch.Copy(TreeFixtures.Image(fixture), "control.img");
        var file = WriteFileHarness.Manifest(fixture)["prealloc"];
        using (var engine = WriteEngine.Open(image, WriteFileHarness.Options))
        {
            var files = new FileOperations(engine);
            long fsBytes = engine.Geometry.DataBlocks * engine.Geometry.BlockSize;
            WriteFileReflinkTests.AssertRefused(WriteErrorKind.NoSpace, () => files.Fallocate(file.Ino, 0, fsBytes));
            WriteFileReflinkTests.AssertRefused(WriteErrorKind.NoSpace, () => files.Fallocate(file.Ino, 1L << 40, fsBytes - fsBytes / 16));
            engine.Close();
        }
        using (var engine = WriteEngine.Open(control, WriteFileHarness.Options)) engine.Close();
        Assert.Empty(RepairTools.DifferingRanges(image, control, 512));
    }

    /// <summary>Preallocation until the filesystem is full: large requests carved from many small free extents
    /// (bnobt/cntbt joins feeding rmapbt splits in one transaction), then NoSpace, then a clean image.</summary>
    [Fact]
    public void FillingTheFilesystemEndsInNoSpaceWithACleanImage()
    {
        using var scratch = new RepairScratch();
        string image = scratch.CopyFixture("geom-bs1k");
        var file = WriteFileHarness.Manifest("geom-bs1k")["prealloc"];
        long size = 0;
        using (var engine = WriteEngine.Open(image, WriteFileHarness.Options))
        {
            var files = new FileOperations(engine);
            files.Truncate(file.Ino, 0);
            long chunk = 16L << 20;
            long offset = 0;
            XfsWriteException? error = null;
            for (int i = 0; i < 200 && error is null; i++)
            {
                try
                {
                    files.Fallocate(file.Ino, offset, chunk);
                    offset += chunk;
                }
                catch (XfsWriteException e) { error = e; }
            }
            Assert.NotNull(error);
            Assert.Equal(WriteErrorKind.NoSpace, error!.Kind);
            // Smaller requests still fit until the space is gone; then a write fails too and nothing breaks.
            for (long small = chunk / 2; small >= engine.Geometry.BlockSize; small /= 2)
            {
                try
                {
                    files.Fallocate(file.Ino, offset, small);
                    offset += small;
                }
                catch (XfsWriteException e) when (e.Kind == WriteErrorKind.NoSpace) { }
            }
            size = offset;
            Assert.True(size > 100L << 20, $"only {size} bytes preallocated before NoSpace");
            var tail = new byte[20];
            Assert.Equal(10, files.Read(file.Ino, size - 10, tail));
            Assert.True(tail.All(x => x == 0));
            engine.Close();
        }
        WriteFileHarness.AssertClean(image);
        Assert.Equal(size, WriteFileHarness.Stat(image, file.Ino).Size);
    }
}
