using System.Text;
using Xfbtree.Xfs.Tests.Repair;
using Xfbtree.Xfs.Write;
using Xfbtree.Xfs.Write.Namespace;
using Xunit.Abstractions;

namespace Xfbtree.Xfs.Tests.Write;

/// <summary>
/// The inode-based namespace API (lookup, getattr, readdir with cookies, create/mkdir/mknod/symlink with owners,
/// unlink, rmdir) and its errnos, on copies of real images, judged by xfs_repair -n, xfbtree rmap check and the
/// kernel (stat of every path: type, mode, owner, links, size, times to the nanosecond, devices, symlink targets).
/// </summary>
public sealed class WriteNamespaceInodeApiTests(ITestOutputHelper output)
{
    static byte[] N(string s) => Encoding.UTF8.GetBytes(s);

    static XfsWriteException Fails(WriteErrorKind kind, Action action)
    {
        var e = Assert.Throws<XfsWriteException>(action);
        Assert.True(e.Kind == kind, $"expected {kind}, got {e.Kind}: {e.Message}");
        return e;
    }

    [Theory]
    [InlineData("fresh-4ag")]
    [InlineData("aged-small")]
    [InlineData("geom-bs1k")]
    [InlineData("geom-nrext64")]
    public void InodeOperationsMatchTheKernel(string fixture)
    {
        using var scratch = new RepairScratch();
        string image = scratch.CopyFixture(fixture);
        SortedSet<string> engineView;
        using (var fs = XfsFileSystem.Open(image, WriteEngineTestSupport.Fast))
        {
            var ns = fs.Namespace;
            var top = ns.Mkdir(ns.RootIno, N("posix"), 0x1ED, 0, 0);
            Assert.Equal(InodeType.Directory, top.Type);
            Assert.Equal(2u, top.Links);
            var sub = ns.Mkdir(top.Ino, N("sub"), 0x1C0, 1000, 100);
            var file = ns.Create(sub.Ino, N("file"), 0x180, 1234, 5678);
            Assert.Equal((1234u, 5678u, 0x8180), (file.Uid, file.Gid, (int)file.Mode));
            ns.Create(top.Ino, N("plain"), 0x1A4, 0, 0);
            var fifo = ns.Mknod(top.Ino, N("fifo"), 0x1000 | 0x1B6, 0, 7, 8);
            Assert.Equal(InodeType.Fifo, fifo.Type);
            ns.Mknod(top.Ino, N("sock"), 0xC000 | 0x1ED, 0, 0, 0);
            var chr = ns.Mknod(top.Ino, N("null"), 0x2000 | 0x1B6, DeviceNumbers.MakeDev(1, 3), 0, 0);
            Assert.Equal((1u, 3u), (chr.RdevMajor, chr.RdevMinor));
            var blk = ns.Mknod(top.Ino, N("disk"), 0x6000 | 0x1B0, DeviceNumbers.MakeDev(511, 262143), 0, 6);
            Assert.Equal((511u, 262143u), (blk.RdevMajor, blk.RdevMinor));
            string shortTarget = "sub/file", longTarget = string.Concat(Enumerable.Repeat("a-long-component/", 61))[..1023];
            var local = ns.Symlink(top.Ino, N("short"), N(shortTarget), 0, 0);
            var remote = ns.Symlink(top.Ino, N("long"), N(longTarget), 42, 43);
            Assert.Equal(shortTarget, Encoding.UTF8.GetString(ns.ReadLink(local.Ino)));
            Assert.Equal(longTarget, Encoding.UTF8.GetString(ns.ReadLink(remote.Handle)));
            Assert.True(remote.Blocks > 0, "the longest target (1023 bytes, xfs_repair's and the kernel's limit) is kept in remote blocks");
            Assert.Equal(0x1FF, remote.Permissions);
            Assert.Equal(sub.Ino, ns.Lookup(top.Ino, N("sub")).Ino);
            Assert.Equal(top.Ino, ns.Lookup(sub.Ino, N("..")).Ino);
            Assert.Equal(3u, ns.GetAttr(top.Ino).Links);

            // errnos
            Fails(WriteErrorKind.Exists, () => ns.Create(top.Ino, N("plain"), 0x1A4, 0, 0));
            Fails(WriteErrorKind.Exists, () => ns.Mkdir(top.Ino, N("."), 0x1ED, 0, 0));
            Fails(WriteErrorKind.Exists, () => ns.Mkdir(top.Ino, N(".."), 0x1ED, 0, 0));
            Fails(WriteErrorKind.NameTooLong, () => ns.Create(top.Ino, N(new string('x', 256)), 0x1A4, 0, 0));
            Fails(WriteErrorKind.NameTooLong, () => ns.Lookup(top.Ino, N(new string('x', 256))));
            Fails(WriteErrorKind.InvalidArgument, () => ns.Create(top.Ino, N("a/b"), 0x1A4, 0, 0));
            Fails(WriteErrorKind.InvalidArgument, () => ns.Create(top.Ino, [(byte)'a', 0], 0x1A4, 0, 0));
            Fails(WriteErrorKind.NotFound, () => ns.Lookup(top.Ino, N("missing")));
            Fails(WriteErrorKind.NotDirectory, () => ns.Lookup(file.Ino, N("x")));
            Fails(WriteErrorKind.NotDirectory, () => ns.Create(file.Ino, N("x"), 0x1A4, 0, 0));
            Fails(WriteErrorKind.IsDirectory, () => ns.Unlink(top.Ino, N("sub")));
            Fails(WriteErrorKind.NotDirectory, () => ns.Rmdir(top.Ino, N("plain")));
            Fails(WriteErrorKind.NotEmpty, () => ns.Rmdir(top.Ino, N("sub")));
            Fails(WriteErrorKind.InvalidArgument, () => ns.Rmdir(top.Ino, N(".")));
            Fails(WriteErrorKind.NotEmpty, () => ns.Rmdir(top.Ino, N("..")));
            Fails(WriteErrorKind.IsDirectory, () => ns.Unlink(top.Ino, N("..")));
            Fails(WriteErrorKind.NameTooLong, () => ns.Symlink(top.Ino, N("toolong"), new byte[1025].Select(_ => (byte)'a').ToArray(), 0, 0));
            // XFS_SYMLINK_MAXLEN itself is too long (the kernel refuses it; xfs_repair clears such an inode).
            Fails(WriteErrorKind.NameTooLong, () => ns.Symlink(top.Ino, N("toolong"), new byte[1024].Select(_ => (byte)'a').ToArray(), 0, 0));
            Fails(WriteErrorKind.InvalidArgument, () => ns.Mknod(top.Ino, N("bad"), 0x8000 | 0x1A4, 0, 0, 0));
            Fails(WriteErrorKind.InvalidArgument, () => ns.Mknod(top.Ino, N("bigdev"), 0x2000, DeviceNumbers.MakeDev(512, 0), 0, 0));
            Fails(WriteErrorKind.InvalidArgument, () => ns.Mknod(top.Ino, N("bigminor"), 0x6000, DeviceNumbers.MakeDev(1, 1 << 18), 0, 0));
            var e = Fails(WriteErrorKind.NotFound, () => ns.GetAttr(ns.Lookup(top.Ino, N("missing")).Ino));
            Assert.Equal(2, e.Errno);
            Assert.Equal("ENOENT", e.ErrnoName);

            // unlink and rmdir; the removed directory can no longer be changed through its number
            ns.Create(sub.Ino, N("gone"), 0x1A4, 0, 0);
            ns.Unlink(sub.Ino, N("gone"));
            var empty = ns.Mkdir(top.Ino, N("empty"), 0x1ED, 0, 0);
            ns.Rmdir(top.Ino, N("empty"));
            Fails(WriteErrorKind.NotFound, () => ns.Create(empty.Ino, N("x"), 0x1A4, 0, 0));
            Fails(WriteErrorKind.Stale, () => ns.GetAttr(empty.Handle));
            Assert.Equal(3u, ns.GetAttr(top.Ino).Links);

            engineView = PosixKernelOracle.EngineView(ns, "/posix");
            Assert.Equal(9, engineView.Count);
            fs.Close();
        }
        WriteEngineTestSupport.AssertOraclesClean(image, fixture);
        PosixKernelOracle.AssertKernelAgrees(engineView, image, scratch.Directory, "/posix");
        output.WriteLine($"{fixture}: {engineView.Count} paths agree with the kernel");
    }

    [Fact]
    public void ReadDirectoryResumesFromACookieWithoutRepeatsOrGaps()
    {
        using var scratch = new RepairScratch();
        string image = scratch.CopyFixture("fresh-4ag");
        using var fs = XfsFileSystem.Open(image, WriteEngineTestSupport.Fast);
        var ns = fs.Namespace;
        var dir = ns.Mkdir(ns.RootIno, N("d"), 0x1ED, 0, 0);
        // 40 names: the directory turns from shortform into a block directory half way (cookies survive it).
        for (int i = 0; i < 40; i++)
        {
            ns.Create(dir.Ino, N($"name-{i:D3}"), 0x1A4, 0, 0);
        }
        var all = new List<string>();
        ns.ReadDirectory(dir.Ino, 0, (name, ino, type, next) => { all.Add(Encoding.UTF8.GetString(name)); return true; });
        Assert.Equal(42, all.Count);
        Assert.Equal([".", ".."], all.Take(2));

        // Read three at a time; between pieces remove a name already listed and one not yet listed, add one.
        var seen = new List<string>();
        ulong cookie = 0;
        int round = 0;
        var removedAhead = new HashSet<string>();
        while (true)
        {
            int taken = 0;
            ulong last = cookie;
            ns.ReadDirectory(dir.Ino, cookie, (name, ino, type, next) =>
            {
                if (taken == 3) return false;
                seen.Add(Encoding.UTF8.GetString(name));
                taken++;
                last = next;
                return true;
            });
            if (taken == 0) break;
            cookie = last;
            round++;
            if (round % 2 == 0 && round < 20)
            {
                ns.Unlink(dir.Ino, N(seen[^1] is "." or ".." ? "name-000" : seen[^1]));
                string ahead = $"name-{39 - round:D3}";
                if (!seen.Contains(ahead)) { ns.Unlink(dir.Ino, N(ahead)); removedAhead.Add(ahead); }
                ns.Create(dir.Ino, N($"added-{round}"), 0x1A4, 0, 0);
            }
        }
        Assert.Equal(seen.Count, seen.Distinct().Count());
        var stayed = all.Where(n => !removedAhead.Contains(n)).ToList();
        Assert.Empty(stayed.Except(seen));
        output.WriteLine($"{seen.Count} entries in {round} pieces, {removedAhead.Count} removed ahead of the cursor");
        fs.Close();
        WriteEngineTestSupport.AssertOraclesClean(image, "readdir");
    }

    /// <summary>
    /// The race a path-based write had: the path is resolved, then (before the write acts) another thread removes the
    /// file and a create reuses its inode number. The write must not land in the new file: it resolves again and
    /// finds the name gone (ENOENT).
    /// </summary>
    [Fact]
    public void WriteByPathNeverLandsInAFileThatReusedTheInode()
    {
        using var scratch = new RepairScratch();
        string image = scratch.CopyFixture("fresh-4ag");
        using var fs = XfsFileSystem.Open(image, WriteEngineTestSupport.Fast);
        ulong victim = fs.Create("/victim");
        fs.Write("/victim", 0, new byte[] { 1, 2, 3 });
        ulong reused = 0;
        fs.AfterResolveForTest = path =>
        {
            fs.AfterResolveForTest = null;
            fs.Unlink("/victim");
            reused = fs.Create("/other");
        };
        Fails(WriteErrorKind.NotFound, () => fs.Write("/victim", 0, new byte[] { 9, 9, 9, 9 }));
        Assert.True(reused == victim, $"the test needs the create to reuse inode {victim} (got {reused})");
        var attributes = fs.GetAttr("/other");
        Assert.Equal(0, attributes.Size);
        Fails(WriteErrorKind.Stale, () => fs.Files.Write(new InodeHandle(victim, attributes.Generation - 1), 0, new byte[] { 1 }));
        fs.Close();
        WriteEngineTestSupport.AssertOraclesClean(image, "write race");
    }
}
