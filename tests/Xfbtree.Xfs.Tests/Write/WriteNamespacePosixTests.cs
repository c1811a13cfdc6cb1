using System.Text;
using Xfbtree.Xfs.Tests.Repair;
using Xfbtree.Xfs.Write;
using Xfbtree.Xfs.Write.Namespace;
using Xunit.Abstractions;

namespace Xfbtree.Xfs.Tests.Write;

/// <summary>
/// rename (every kind), link, chmod/chown/utimes/setattr and their errnos on copies of real images, judged by
/// xfs_repair -n, xfbtree rmap check and the kernel's stat of every path; concurrent renames across directories.
/// </summary>
public sealed class WriteNamespacePosixTests(ITestOutputHelper output)
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
    public void RenameLinkAndAttributesMatchTheKernel(string fixture)
    {
        using var scratch = new RepairScratch();
        string image = scratch.CopyFixture(fixture);
        SortedSet<string> engineView;
        using (var fs = XfsFileSystem.Open(image, WriteEngineTestSupport.Fast))
        {
            var ns = fs.Namespace;
            ns.Mkdir("/t");
            foreach (var d in new[] { "/t/a", "/t/b", "/t/a/inner", "/t/b/victim-dir", "/t/c" }) ns.Mkdir(d);
            foreach (var f in new[] { "/t/a/f1", "/t/a/f2", "/t/b/f3", "/t/b/target", "/t/c/x", "/t/c/y" }) ns.Create(f);
            fs.Write("/t/a/f1", 0, new byte[5000]);

            // same directory, to a new name and over an existing file
            ns.Rename("/t/a/f2", "/t/a/f2-renamed");
            ns.Rename("/t/a/f2-renamed", "/t/b/target");
            Assert.Equal(1u, fs.GetAttr("/t/b/target").Links);
            // a directory to another parent: '..' and both parents' link counts
            uint aLinks = fs.GetAttr("/t/a").Links, bLinks = fs.GetAttr("/t/b").Links;
            ns.Rename("/t/a/inner", "/t/b/inner");
            Assert.Equal(aLinks - 1, fs.GetAttr("/t/a").Links);
            Assert.Equal(bLinks + 1, fs.GetAttr("/t/b").Links);
            Assert.Equal(fs.GetAttr("/t/b").Ino, ns.Lookup(fs.GetAttr("/t/b/inner").Ino, N("..")).Ino);
            // a directory over an empty directory in another parent
            ns.Mkdir("/t/a/mover");
            ns.Create("/t/a/mover/inside");
            ns.Rename("/t/a/mover", "/t/b/victim-dir");
            Assert.Equal(fs.GetAttr("/t/b").Ino, ns.Lookup(fs.GetAttr("/t/b/victim-dir").Ino, N("..")).Ino);
            Assert.Single(fs.List("/t/b/victim-dir"));
            // NOREPLACE and EXCHANGE
            Fails(WriteErrorKind.Exists, () => ns.Rename("/t/c/x", "/t/c/y", RenameFlags.NoReplace));
            ns.Rename("/t/c/x", "/t/c/z", RenameFlags.NoReplace);
            ulong y = fs.GetAttr("/t/c/y").Ino, z = fs.GetAttr("/t/c/z").Ino;
            ns.Rename("/t/c/y", "/t/c/z", RenameFlags.Exchange);
            Assert.Equal((z, y), (fs.GetAttr("/t/c/y").Ino, fs.GetAttr("/t/c/z").Ino));
            // exchange a directory with a file across directories: '..' and link counts follow
            uint cLinks = fs.GetAttr("/t/c").Links;
            bLinks = fs.GetAttr("/t/b").Links;
            ns.Rename("/t/b/inner", "/t/c/y", RenameFlags.Exchange);
            Assert.Equal(InodeType.Directory, fs.GetAttr("/t/c/y").Type);
            Assert.Equal((cLinks + 1, bLinks - 1), (fs.GetAttr("/t/c").Links, fs.GetAttr("/t/b").Links));
            Assert.Equal(fs.GetAttr("/t/c").Ino, ns.Lookup(fs.GetAttr("/t/c/y").Ino, N("..")).Ino);
            // hard links, then a rename onto another name of the same inode does nothing
            ns.Link("/t/a/f1", "/t/b/f1-link");
            ns.Link("/t/a/f1", "/t/c/f1-link2");
            Assert.Equal(3u, fs.GetAttr("/t/a/f1").Links);
            ns.Rename("/t/b/f1-link", "/t/c/f1-link2");
            Assert.Equal(3u, fs.GetAttr("/t/a/f1").Links);
            // a hard-linked file replaced by a rename keeps its other names
            ns.Rename("/t/b/f3", "/t/c/f1-link2");
            Assert.Equal(2u, fs.GetAttr("/t/a/f1").Links);
            // symlinks and devices move like files
            fs.Symlink("../a/f1", "/t/c/link");
            ns.Rename("/t/c/link", "/t/b/link");
            Assert.Equal("../a/f1", fs.ReadLink("/t/b/link"));
            fs.Mknod("/t/b/tty", 0x2000 | 0x1A4, DeviceNumbers.MakeDev(4, 64));

            // attributes
            ns.Chmod("/t/a/f1", 0x9ED); // 04755
            ns.Chown("/t/a/f1", 1000, 1001); // clears set-user-ID
            Assert.Equal(0x1ED, fs.GetAttr("/t/a/f1").Permissions);
            ns.Chmod("/t/b", 0x3FD); // 01775
            ns.Chown("/t/b", null, 50);
            ns.Utimes("/t/c/z", new InodeTime(1_000_000_000, 123_456_789), new InodeTime(4_102_444_800, 987_654_321)); // 2100
            ns.Utimes("/t/c/y", new InodeTime(-86_400, 0), null);
            var before = fs.GetAttr("/t/b/target");
            ns.Utimes("/t/b/target", null, null); // both omitted: nothing changes
            Assert.Equal(before, fs.GetAttr("/t/b/target"));
            var big = ns.SetAttr(fs.GetAttr("/t/a/f1").Handle, new SetAttrRequest(SetAttrMask.Size | SetAttrMask.AtimeNow, Size: 1234));
            Assert.Equal(1234, big.Size);
            Assert.True(big.Mtime.Seconds >= before.Mtime.Seconds);

            engineView = PosixKernelOracle.EngineView(ns, "/t");
            fs.Close();
        }
        WriteEngineTestSupport.AssertOraclesClean(image, fixture);
        PosixKernelOracle.AssertKernelAgrees(engineView, image, scratch.Directory, "/t");
        output.WriteLine($"{fixture}: {engineView.Count} paths agree with the kernel");
    }

    [Fact]
    public void RenameLinkAndSetAttrRefuseWhatTheKernelRefusesAndChangeNothing()
    {
        using var scratch = new RepairScratch();
        string image = scratch.CopyFixture("fresh-4ag");
        using var fs = XfsFileSystem.Open(image, WriteEngineTestSupport.Fast);
        var ns = fs.Namespace;
        foreach (var d in new[] { "/d", "/d/sub", "/d/sub/deep", "/e", "/full" }) ns.Mkdir(d);
        foreach (var f in new[] { "/file", "/full/x", "/d/f" }) ns.Create(f);
        string before = string.Join('\n', PosixKernelOracle.EngineView(ns, "/d")) + string.Join('\n', PosixKernelOracle.EngineView(ns, "/e"));
        Fails(WriteErrorKind.InvalidArgument, () => ns.Rename("/d", "/d/sub/deep/d"));
        Fails(WriteErrorKind.InvalidArgument, () => ns.Rename("/d/sub", "/d/sub/x"));
        Fails(WriteErrorKind.NotEmpty, () => ns.Rename("/d/sub/deep", "/d"));
        Fails(WriteErrorKind.NotEmpty, () => ns.Rename("/e", "/full"));
        Fails(WriteErrorKind.NotDirectory, () => ns.Rename("/e", "/file"));
        Fails(WriteErrorKind.IsDirectory, () => ns.Rename("/file", "/e"));
        Fails(WriteErrorKind.NotFound, () => ns.Rename("/missing", "/e2"));
        Fails(WriteErrorKind.NotFound, () => ns.Rename("/file", "/missing", RenameFlags.Exchange));
        Fails(WriteErrorKind.Exists, () => ns.Rename("/file", "/d", RenameFlags.NoReplace));
        Fails(WriteErrorKind.InvalidArgument, () => ns.Rename("/file", "/x", RenameFlags.NoReplace | RenameFlags.Exchange));
        Fails(WriteErrorKind.Busy, () => ns.Rename("/d/.", "/x"));
        Fails(WriteErrorKind.Busy, () => ns.Rename("/file", "/d/.."));
        Fails(WriteErrorKind.NameTooLong, () => ns.Rename("/file", "/" + new string('n', 256)));
        Fails(WriteErrorKind.NotDirectory, () => ns.Rename("/file/x", "/y"));
        Fails(WriteErrorKind.NotPermitted, () => ns.Link("/d", "/d-link"));
        Fails(WriteErrorKind.Exists, () => ns.Link("/file", "/d/f"));
        Fails(WriteErrorKind.IsDirectory, () => ns.SetAttr(fs.GetAttr("/d").Ino, new SetAttrRequest(SetAttrMask.Size, Size: 0)));
        Fails(WriteErrorKind.InvalidArgument, () => ns.SetAttr(fs.GetAttr("/file").Ino, new SetAttrRequest(SetAttrMask.Size, Size: -1)));
        Fails(WriteErrorKind.InvalidArgument, () => ns.SetAttr(fs.GetAttr("/file").Ino, new SetAttrRequest(SetAttrMask.Atime, Atime: new InodeTime(0, 1_000_000_000))));
        var gone = fs.GetAttr("/d/f");
        ns.Unlink("/d/f");
        Fails(WriteErrorKind.Stale, () => ns.SetAttr(gone.Handle, new SetAttrRequest(SetAttrMask.Mode, Mode: 0x1FF)));
        Fails(WriteErrorKind.Stale, () => ns.Link(gone.Handle, ns.RootIno, N("back")));
        ns.Create("/d/f");
        string after = string.Join('\n', PosixKernelOracle.EngineView(ns, "/d")) + string.Join('\n', PosixKernelOracle.EngineView(ns, "/e"));
        Assert.Equal(before.Split('\n').Length, after.Split('\n').Length);
        fs.Close();
        WriteEngineTestSupport.AssertOraclesClean(image, "refusals");
    }

    /// <summary>
    /// Threads rename directories back and forth between two shared parents (and into each other's subtrees, which
    /// the ancestry check must refuse or allow exactly as the tree stands), while creating and removing files: no
    /// loop may ever form (every directory stays reachable from the root), and the image stays consistent.
    /// </summary>
    [Theory]
    [InlineData(2, 1)]
    [InlineData(4, 2)]
    public void ConcurrentCrossDirectoryRenamesNeverDetachADirectory(int threads, int seed)
    {
        using var scratch = new RepairScratch();
        string image = scratch.CopyFixture("fresh-4ag");
        int renamed = 0, refused = 0, other = 0;
        using (var fs = XfsFileSystem.Open(image, WriteEngineTestSupport.Fast))
        {
            var ns = fs.Namespace;
            ns.Mkdir("/p");
            ns.Mkdir("/q");
            string[] dirs = ["d0", "d1", "d2", "d3"];
            foreach (var d in dirs) ns.Mkdir("/p/" + d);
            using var start = new Barrier(threads);
            var errors = new List<Exception>();
            var workers = Enumerable.Range(0, threads).Select(t => new Thread(() =>
            {
                var rnd = new Random(seed * 100 + t);
                start.SignalAndWait();
                for (int i = 0; i < 120; i++)
                {
                    try
                    {
                        // Find a directory wherever it is now, move it somewhere (possibly under another one).
                        string name = dirs[rnd.Next(dirs.Length)];
                        string? from = FindDir(fs, name);
                        if (from is null) { Interlocked.Increment(ref other); continue; }
                        string? to = rnd.Next(3) switch
                        {
                            0 => "/p",
                            1 => "/q",
                            _ => FindDir(fs, dirs[rnd.Next(dirs.Length)]),
                        };
                        if (to is null) { Interlocked.Increment(ref other); continue; }
                        if (rnd.Next(4) == 0)
                        {
                            try { ns.Create($"{from}/f{t}-{i}"); } catch (XfsWriteException) { }
                        }
                        ns.Rename(from, $"{to}/{name}");
                        Interlocked.Increment(ref renamed);
                    }
                    catch (XfsWriteException e) when (e.Kind is WriteErrorKind.InvalidArgument or WriteErrorKind.NotEmpty or WriteErrorKind.NotFound or WriteErrorKind.Exists)
                    {
                        Interlocked.Increment(ref refused);
                    }
                    catch (Exception e)
                    {
                        lock (errors) errors.Add(e);
                    }
                }
            })).ToList();
            workers.ForEach(w => w.Start());
            workers.ForEach(w => w.Join());
            Assert.True(errors.Count == 0, string.Join("\n", errors));
            foreach (var d in dirs) Assert.NotNull(FindDir(fs, d));
            fs.Close();
        }
        output.WriteLine($"{threads} threads: {renamed} renames, {refused} refused, {other} skipped");
        Assert.True(renamed > 20, $"only {renamed} renames happened");
        WriteEngineTestSupport.AssertOraclesClean(image, "concurrent renames");
    }

    /// <summary>The path of directory <paramref name="name"/> under /p or /q (searched breadth first), or null.</summary>
    static string? FindDir(XfsFileSystem fs, string name)
    {
        var todo = new Queue<string>(["/p", "/q"]);
        while (todo.Count > 0)
        {
            string dir = todo.Dequeue();
            IReadOnlyList<DirectoryEntry> entries;
            try { entries = fs.List(dir); }
            catch (XfsWriteException) { continue; }
            foreach (var e in entries)
            {
                if (e.Type != InodeType.Directory) continue;
                string path = dir + "/" + e.Name;
                if (e.Name == name) return path;
                todo.Enqueue(path);
            }
        }
        return null;
    }
}
