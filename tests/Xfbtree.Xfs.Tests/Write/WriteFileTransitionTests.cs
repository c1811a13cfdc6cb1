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
