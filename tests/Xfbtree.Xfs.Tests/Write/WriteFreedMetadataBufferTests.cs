using Xfbtree.Xfs.Format;
using Xfbtree.Xfs.Tests.Repair;
using Xfbtree.Xfs.Tests.Trees;
using Xfbtree.Xfs.Write;
using static Xfbtree.Xfs.Tests.Write.WriteEngineTestSupport;

namespace Xfbtree.Xfs.Tests.Write;

/// <summary>
/// A transaction that frees a block that held metadata leaves no buffer of it in the cache (the kernel's
/// xfs_trans_binval): a later allocation of the block as something else must not find the old buffer, whose
/// verifier would reject the new contents at commit and mark the AG sick.
/// </summary>
public sealed class WriteFreedMetadataBufferTests
{
    /// <summary>Whichever path frees the block (the directory editor shrinking an emptied directory, which stales
    /// its own buffers, or the rmdir's free of a directory's remaining blocks), no buffer of it may stay.</summary>
    [Fact]
    public void RemovedDirectoryLeavesNoBufferOfItsBlock()
    {
        using var scratch = new RepairScratch();
        string image = scratch.Copy(TreeFixtures.Image("fresh-4ag"), "dir.img");
        using var fs = XfsFileSystem.Open(image, Fast);
        ulong dir = fs.Mkdir("/d");
        for (int i = 0; i < 60; i++)
        {
            fs.Create($"/d/entry-with-a-long-name-{i}"); // past the inline (shortform) size: a block directory
        }
        var core = new Dinode(fs.Engine.GetInode(dir).Core);
        Assert.True(core.Format == ForkFormat.Extents && core.DataExtents == 1, $"/d is not a one-extent block directory (format {core.Format}, {core.DataExtents} extents)");
        BmbtExtent block = BmbtExtent.Read(core.DataFork);
        XfsGeometry geo = fs.Engine.Geometry;
        long daddr = geo.AgBlockToDaddr(geo.FsbToAgno(block.StartBlock), geo.FsbToAgbno(block.StartBlock));
        int lengthBB = geo.BasicBlocksPerBlock << fs.Engine.Image.Superblock.DirBlockLog;
        Assert.True(Cached(fs, daddr, lengthBB), "the directory block has no cached buffer: the test lost its point");
        // The block is freed by the last unlink (a directory that shrinks back to shortform) or by the rmdir.
        for (int i = 0; i < 60; i++)
        {
            fs.Unlink($"/d/entry-with-a-long-name-{i}");
        }
        fs.Unlink("/d");
        Assert.False(Cached(fs, daddr, lengthBB), "the freed directory block still has a buffer in the cache");
        AssertInvariants(fs.Engine, "after the rmdir");
        fs.Close();
    }

    private static bool Cached(XfsFileSystem fs, long daddr, int lengthBB)
    {
        if (fs.Engine.Image.Cache.TryGetCached(fs.Engine.Disk, daddr, lengthBB) is not { } buffer)
        {
            return false;
        }
        fs.Engine.Image.Cache.Release(buffer);
        return true;
    }
}
