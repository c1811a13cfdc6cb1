using Xfbtree.Xfs.Tests.Repair;
using Xfbtree.Xfs.Write.Engine;
using Xfbtree.Xfs.Write.Files;

namespace Xfbtree.Xfs.Tests.Write;

/// <summary>A transaction that changed a file's mapping (CoW, unmap, bmbt updates, the cached extent list) and
/// then failed leaves nothing behind: reads, later operations and xfs_repair see the state before it.</summary>
public sealed class WriteFileCancelTests
{
    [Theory]
    [InlineData("aged-small")]
    [InlineData("geom-bs1k")]
    public void AFailedOperationLeavesTheMappingAndTheCacheAsTheyWere(string fixture)
    {
        using var scratch = new RepairScratch();
        string image = scratch.CopyFixture(fixture);
        var manifest = WriteFileHarness.Manifest(fixture);
        var file = manifest["fragmented"];   // btree format, shares blocks with frag_clone
        var model = new FileModel();
        using (var engine = WriteEngine.Open(image, WriteFileHarness.Options))
        {
            var files = new FileOperations(engine);
            int bs = engine.Geometry.BlockSize;
            var inode = engine.GetInode(file.Ino);
            model.Resize(WriteFileOperationTests.ReadSize(files, file.Ino));
            var data = WriteFileHarness.Pattern(40 * bs, 1);
            files.Write(file.Ino, 0, data);
            model.Write(0, data);
            for (int round = 0; round < 3; round++)
            {
                var e = Assert.ThrowsAny<Exception>(() => engine.Execute("doomed", tx =>
                {
                    var edit = FileEdit.Begin(tx, inode);
                    edit.Modify(bs / 2, 5L * bs, WriteFileHarness.Pattern(5 * bs - bs / 2, 2), ModifyMode.Data);
                    edit.Unmap(10, 20);
                    edit.Modify(100L * bs, 130L * bs, WriteFileHarness.Pattern(30 * bs, 3), ModifyMode.Data);
                    edit.Size = 200L * bs;
                    edit.Finish();
                    throw new InvalidOperationException("cancel after the fork was stored");
                }));
                Assert.Contains("cancel after the fork was stored", e.ToString(), StringComparison.Ordinal);
                WriteFileHarness.AssertContent(files, file.Ino, model, $"after cancelled round {round}");
                // A committed operation right after must start from the pre-cancel mapping.
                var more = WriteFileHarness.Pattern(3 * bs, 10 + round);
                files.Write(file.Ino, (12L + round) * bs + 1, more);
                model.Write((12L + round) * bs + 1, more);
                files.PunchHole(file.Ino, (30L + round) * bs, 2L * bs);
                model.Zero((30L + round) * bs, 2L * bs);
            }
            WriteFileHarness.AssertContent(files, file.Ino, model, "before close");
            engine.Close();
        }
        WriteFileHarness.AssertClean(image);
        using (var engine = WriteEngine.Open(image, WriteFileHarness.Options))
        {
            WriteFileHarness.AssertContent(new FileOperations(engine), file.Ino, model, "after reopen");
            engine.Close();
        }
    }
}
