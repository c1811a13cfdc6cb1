using Xfbtree.Xfs.Tests.Repair;
using Xfbtree.Xfs.Write;
using Xfbtree.Xfs.Write.Namespace;

namespace Xfbtree.Xfs.Tests.Write;

/// <summary>
/// The by-path operations a library user reaches on <see cref="XfsFileSystem"/> itself (rename, link, chmod,
/// chown, times; the operation classes behind them are internal): each changes the image, the change survives a
/// close and reopen, errors come as <see cref="XfsWriteException"/> with the kernel's errno, and xfs_repair -n
/// finds the image clean afterwards.
/// </summary>
public sealed class XfsFileSystemPathApiTests
{
    /// <summary>0640: rw-r-----.</summary>
    const int ModeRwR = 0b110_100_000;

    [Fact]
    public void RenameLinkChmodChownAndTimesByPathPersist()
    {
        using var scratch = new RepairScratch();
        string image = scratch.CopyFixture("fresh-4ag");
        var atime = new InodeTime(1_000_000_000, 5);
        var mtime = new InodeTime(1_100_000_000, 7);
        ulong ino;
        using (var fs = XfsFileSystem.Open(image, WriteEngineTestSupport.Fast))
        {
            fs.Mkdir("/api");
            ino = fs.Create("/api/a");
            fs.Write("/api/a", 0, new byte[] { 1, 2, 3 });
            fs.Rename("/api/a", "/api/b");
            fs.Link("/api/b", "/api/c");
            Assert.Equal(ModeRwR, fs.Chmod("/api/b", ModeRwR).Permissions);
            InodeAttributes owned = fs.Chown("/api/c", 1234, null);
            Assert.Equal((1234u, 0u), (owned.Uid, owned.Gid));
            InodeAttributes timed = fs.SetTimes("/api/b", atime, mtime);
            Assert.Equal((atime, mtime), (timed.Atime, timed.Mtime));

            fs.Create("/api/d");
            var e = Assert.Throws<XfsWriteException>(() => fs.Rename("/api/b", "/api/d", RenameFlags.NoReplace));
            Assert.Equal(WriteErrorKind.Exists, e.Kind);
            Assert.Equal(WriteErrorKind.NotFound, Assert.Throws<XfsWriteException>(() => fs.Link("/api/gone", "/api/e")).Kind);
            fs.Close();
        }
        using (var fs = XfsFileSystem.Open(image, WriteEngineTestSupport.Fast))
        {
            Assert.Equal(WriteErrorKind.NotFound, Assert.Throws<XfsWriteException>(() => fs.GetAttr("/api/a")).Kind);
            InodeAttributes b = fs.GetAttr("/api/b");
            Assert.Equal(ino, b.Ino);
            Assert.Equal(ino, fs.Lookup("/api/c"));
            Assert.Equal(2u, b.Links);
            Assert.Equal(ModeRwR, b.Permissions);
            Assert.Equal(1234u, b.Uid);
            Assert.Equal((atime, mtime), (b.Atime, b.Mtime));
            fs.Close();
        }
        ToolResult repair = RepairTools.XfsRepairCheck(image);
        Assert.True(repair.ExitCode == 0, $"xfs_repair -n: {repair}");
    }
}
