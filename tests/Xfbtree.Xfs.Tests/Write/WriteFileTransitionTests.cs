using Xfbtree.Xfs.Format;
using Xfbtree.Xfs.Tests.Repair;
using Xfbtree.Xfs.Write.Engine;
using Xfbtree.Xfs.Write.Files;

namespace Xfbtree.Xfs.Tests.Write;

/// <summary>Extents -> btree -> extents: many discontiguous small writes grow the fork past its literal area (and the
/// bmbt past one level on 1 KiB blocks), punches shrink it back; every step keeps the image clean.</summary>
public sealed class WriteFileTransitionTests
{
    static (ForkFormat Format, int Level) ForkShape(WriteEngine engine, ulong ino)
    {
        var inode = engine.GetInode(ino);
        using (engine.LockInodeForRead(inode))
        {
            var d = new Dinode(inode.Core);
            int level = d.Format == ForkFormat.Btree ? System.Buffers.Binary.BinaryPrimitives.ReadUInt16BigEndian(d.DataFork) : 0;
            return (d.Format, level);
        }
    }

    [Theory]
    [InlineData("aged-small", 300)]
    [InlineData("geom-bs1k", 1300)]
    public void DiscontiguousWritesConvertToBtreeAndPunchesConvertBack(string fixture, int writes)
    {
        using var scratch = new RepairScratch();
        string image = scratch.CopyFixture(fixture);
        var file = WriteFileHarness.Manifest(fixture)["prealloc"];
        var model = new FileModel();
        int maxLevel = 0;
        using (var engine = WriteEngine.Open(image, WriteFileHarness.Options))
        {
            var files = new FileOperations(engine);
            int bs = engine.Geometry.BlockSize;
            files.Truncate(file.Ino, 0);
            Assert.Equal(ForkFormat.Extents, ForkShape(engine, file.Ino).Format);
            // Every other block, so no two extents can merge.
            for (int i = 0; i < writes; i++)
            {
                var data = WriteFileHarness.Pattern(bs, i);
                files.Write(file.Ino, 2L * i * bs, data);
                model.Write(2L * i * bs, data);
                maxLevel = Math.Max(maxLevel, ForkShape(engine, file.Ino).Level);
            }
            Assert.Equal(ForkFormat.Btree, ForkShape(engine, file.Ino).Format);
            if (fixture == "geom-bs1k") Assert.True(maxLevel >= 2, $"the bmbt never grew past one level below the root (max root level {maxLevel})");
            WriteFileHarness.AssertContent(files, file.Ino, model, "after the writes");
            engine.Close();
        }
        WriteFileHarness.AssertClean(image);
        using (var engine = WriteEngine.Open(image, WriteFileHarness.Options))
        {
            var files = new FileOperations(engine);
            int bs = engine.Geometry.BlockSize;
            var order = Enumerable.Range(0, writes).ToArray();
            new Random(7).Shuffle(order);
            bool sawExtents = false;
            foreach (int i in order)
            {
                files.PunchHole(file.Ino, 2L * i * bs, bs);
                model.Zero(2L * i * bs, bs);
                sawExtents |= ForkShape(engine, file.Ino).Format == ForkFormat.Extents;
            }
            Assert.True(sawExtents);
            Assert.Equal(ForkFormat.Extents, ForkShape(engine, file.Ino).Format);
            WriteFileHarness.AssertContent(files, file.Ino, model, "after the punches");
            engine.Close();
        }
        WriteFileHarness.AssertClean(image);
        var stat = WriteFileHarness.Stat(image, file.Ino);
        Assert.Equal(0UL, stat.Extents);
        Assert.Equal(0UL, stat.NBlocks);
        Assert.Equal(model.Size, stat.Size);
        WriteFileHarness.AssertKernelReads(image, [(file.Path, model)]);
    }
}

/// <summary>Files created by the engine on a fresh filesystem (fresh-4ag), written, shared and unlinked; plus the
/// largest offsets a file may use, and freeing every block of forks in btree format (data and attr).</summary>
public sealed class WriteFileFreshTests
{
    [Fact]
    public void CreatedFilesAreWrittenSharedAndUnlinkedCleanly()
    {
        using var scratch = new RepairScratch();
        string image = scratch.CopyFixture("fresh-4ag");
        var models = new Dictionary<string, FileModel>();
        using (var fs = Xfbtree.Xfs.Write.XfsFileSystem.Open(image, WriteFileHarness.Options))
        {
            int bs = fs.Engine.Geometry.BlockSize;
            var rng = new Random(5);
            fs.Mkdir("/d");
            for (int i = 0; i < 8; i++)
            {
                string path = $"/d/f{i}";
                ulong ino = fs.Create(path);
                var model = new FileModel();
                models[path] = model;
                for (int k = 0; k < 30; k++)
                {
                    long off = rng.NextInt64(64L * bs);
                    var data = WriteFileHarness.Pattern(rng.Next(1, 3 * bs), rng.Next());
                    fs.Files.Write(ino, off, data);
                    model.Write(off, data);
                }
            }
            fs.Reflink("/d/f0", 0, "/d/f1", 4L * bs, 8L * bs);
            models["/d/f1"].CopyFrom(models["/d/f0"], 0, 4L * bs, 8L * bs);
            fs.Reflink("/d/f1", 4L * bs, "/d/f2", 0, 8L * bs);
            models["/d/f2"].CopyFrom(models["/d/f1"], 4L * bs, 0, 8L * bs);
            fs.Write("/d/f2", 5, WriteFileHarness.Pattern(bs, 77));
            models["/d/f2"].Write(5, WriteFileHarness.Pattern(bs, 77));
            // f0 and f1 go; f2 keeps the blocks it shared with them.
            fs.Unlink("/d/f0");
            fs.Unlink("/d/f1");
            models.Remove("/d/f0");
            models.Remove("/d/f1");
            fs.Fallocate("/d/f3", 100L * bs, 10L * bs);
            models["/d/f3"].Extend(110L * bs);
            fs.PunchHole("/d/f4", bs, 5L * bs);
            models["/d/f4"].Zero(bs, 5L * bs);
            fs.Truncate("/d/f5", 3L * bs + 7);
            models["/d/f5"].Resize(3L * bs + 7);
            foreach (var (path, model) in models) WriteFileHarness.AssertContent(fs.Files, fs.Namespace.Lookup(path), model, path);
            fs.Close();
        }
        WriteFileHarness.AssertClean(image);
        WriteFileHarness.AssertKernelReads(image, models.Select(kv => (kv.Key.TrimStart('/'), kv.Value)));
        WriteFileHarness.AssertKernelWorkload(image);
    }

    [Fact]
    public void TheLargestOffsetsWorkAndOneBeyondIsRefused()
    {
        using var scratch = new RepairScratch();
        string image = scratch.CopyFixture("aged-small");
        var file = WriteFileHarness.Manifest("aged-small")["prealloc"];
        using (var engine = WriteEngine.Open(image, WriteFileHarness.Options))
        {
            var files = new FileOperations(engine);
            files.Truncate(file.Ino, 0);
            var data = WriteFileHarness.Pattern(10, 3);
            files.Write(file.Ino, FileOperations.MaxFileSize - 10, data);
            var back = new byte[30];
            Assert.Equal(20, files.Read(file.Ino, FileOperations.MaxFileSize - 20, back));
            Assert.True(back.AsSpan(0, 10).SequenceEqual(new byte[10]));
            Assert.True(back.AsSpan(10, 10).SequenceEqual(data));
            WriteFileReflinkTests.AssertRefused(Xfbtree.Xfs.Write.WriteErrorKind.InvalidArgument, () => files.Write(file.Ino, FileOperations.MaxFileSize - 5, data));
            WriteFileReflinkTests.AssertRefused(Xfbtree.Xfs.Write.WriteErrorKind.InvalidArgument, () => files.Truncate(file.Ino, FileOperations.MaxFileSize + 1));
            files.Fallocate(file.Ino, FileOperations.MaxFileSize - 3 * 4096, 4096);
            engine.Close();
        }
        WriteFileHarness.AssertClean(image);
        Assert.Equal(FileOperations.MaxFileSize, WriteFileHarness.Stat(image, file.Ino).Size);
    }

    [Fact]
    public void FreeAllBlocksEmptiesBtreeDataAndAttrForksOfSharedFiles()
    {
        using var scratch = new RepairScratch();
        string image = scratch.CopyFixture("aged-small");
        var manifest = WriteFileHarness.Manifest("aged-small");
        var targets = new[] { manifest["many_attrs"].Ino, manifest["fragmented"].Ino, manifest["remote_attr"].Ino };
        using (var engine = WriteEngine.Open(image, WriteFileHarness.Options))
        {
            var files = new FileOperations(engine);
            foreach (ulong ino in targets)
            {
                var inode = engine.GetInode(ino);
                engine.Execute("free all", tx =>
                {
                    tx.LockInodes(inode);
                    files.FreeAllBlocks(tx, inode);
                    tx.LogInode(inode);
                });
            }
            engine.Close();
        }
        WriteFileHarness.AssertClean(image);
        foreach (ulong ino in targets)
        {
            var stat = WriteFileHarness.Stat(image, ino);
            Assert.Equal(0UL, stat.NBlocks);
            Assert.Equal(ForkFormat.Extents, stat.Format);
        }
    }
}
