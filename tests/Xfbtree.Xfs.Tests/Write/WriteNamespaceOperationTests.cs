using System.Text;
using Xfbtree.Xfs.Directories;
using Xfbtree.Xfs.Tests.Repair;
using Xfbtree.Xfs.Tests.Scan;
using Xfbtree.Xfs.Tests.Trees;
using Xfbtree.Xfs.Write;
using Xfbtree.Xfs.Write.Engine;
using Xfbtree.Xfs.Write.Files;
using Xfbtree.Xfs.Write.Namespace;
using Xunit.Abstractions;

namespace Xfbtree.Xfs.Tests.Write;

/// <summary>
/// create / mkdir / unlink / list / stat through the write engine on copies of real images, judged by three
/// oracles after a clean close: xfs_repair -n (connectivity, link counts, inode btrees, directories), xfbtree's
/// rmap check, and the kernel (loop mount read-only: the changed subtree lists as the engine's model says).
/// </summary>
public sealed class WriteNamespaceOperationTests(ITestOutputHelper output)
{
    /// <summary>A private copy of a fixture opened by the engine.</summary>
    sealed class Session : IDisposable
    {
        readonly RepairScratch _scratch = new();

        public Session(string fixture)
        {
            Image = _scratch.CopyFixture(fixture);
            Engine = WriteEngine.Open(Image, new WriteEngineOptions { SyncCommits = false });
            Ops = new NamespaceOperations(Engine, new FileOperations(Engine));
        }

        public string Image { get; }
        public string Directory => _scratch.Directory;
        public WriteEngine Engine { get; private set; }
        public NamespaceOperations Ops { get; }

        public void Close() => Engine.Close();

        public void Dispose()
        {
            Engine.Dispose();
            _scratch.Dispose();
        }
    }

    /// <summary>xfs_repair -n and xfbtree rmap check both clean (without an rmapbt: xfs_repair -n and the scrub).</summary>
    static void AssertClean(string image)
    {
        if (!WriteEngineTestSupport.HasRmapbt(image))
        {
            WriteEngineTestSupport.AssertOraclesClean(image, "without an rmapbt");
            return;
        }
        var repair = RepairTools.XfsRepairCheck(image);
        Assert.True(repair.ExitCode == 0, $"xfs_repair -n: {repair}");
        var check = XfsCli.Run("check", image);
        Assert.True(check.ExitCode == 0, $"xfbtree rmap check: {check.Stdout}{check.Stderr}");
    }

    /// <summary>The subtree under <paramref name="top"/> as (relative path, inode) pairs, read by our read-only walker.</summary>
    static SortedSet<string> OurTree(string image, string top)
    {
        using var img = XfsImage.Open(image, WriteEngineTestSupport.EitherRmapbt);
        var walker = new PathWalker(img, new ImageNamespaceSource(img));
        var result = new SortedSet<string>(StringComparer.Ordinal);
        var todo = new Stack<string>([top]);
        while (todo.Count > 0)
        {
            string dir = todo.Pop();
            foreach (var e in walker.List(dir))
            {
                string p = dir + "/" + DirectoryFormat.Show(e.Name);
                result.Add($"{p[(top.Length + 1)..]} {e.Ino}");
                if (e.FileType == DirectoryFormat.FtDirectory) todo.Push(p);
            }
        }
        return result;
    }

    /// <summary>The same subtree as the kernel lists it (read-only loop mount).</summary>
    SortedSet<string> KernelTree(string image, string scratchDir, string top)
    {
        RepairSafetyTests.RequireRoot();
        string mnt = System.IO.Directory.CreateDirectory(Path.Combine(scratchDir, "mnt")).FullName;
        // Copies of one fixture (other tests, other engineers) may be mounted at the same time: a fresh sb_uuid
        // (the metadata UUID stays) keeps mounts without nouuid elsewhere from clashing with this one.
        WriteNamespaceOperationTests.FreshUuid(image);
        string marker = $"xfbtree-namespace-kernel-tree-{Environment.ProcessId}-{Guid.NewGuid():N}";
        KernelLog.Mark(marker);
        TreeFixtures.Run("/bin/mount", ["-o", "ro,loop,nouuid", image, mnt]);
        string listing, device;
        try
        {
            device = Path.GetFileName(TreeFixtures.Run("/usr/bin/findmnt", ["-n", "-o", "SOURCE", mnt]).Trim());
            listing = TreeFixtures.Run("/usr/bin/find", [mnt + top, "-mindepth", "1", "-printf", "%P %i\n"]);
        }
        finally
        {
            TreeFixtures.Run("/bin/umount", [mnt]);
        }
        output.WriteLine($"kernel listed {listing.Count(c => c == '\n')} entries under {top}");
        var mine = KernelLog.DeviceMessagesSince(marker, device);
        Assert.DoesNotContain(mine, l => l.Contains("orrupt", StringComparison.Ordinal) || l.Contains("shut", StringComparison.OrdinalIgnoreCase));
        return new SortedSet<string>(listing.Split('\n', StringSplitOptions.RemoveEmptyEntries), StringComparer.Ordinal);
    }

    /// <summary>
    /// The kernel edits what the engine made (mounted read-write): removes every other entry of the engine's
    /// directories, adds 80 names to <paramref name="top"/> (growing our block directory, into leaf form if needed),
    /// removes the deepest empty directory and adds one; then xfs_repair -n must be clean and the kernel log must
    /// hold no XFS error for this device.
    /// </summary>
    void KernelEdits(string image, string scratchDir, string top)
    {
        RepairSafetyTests.RequireRoot();
        string mnt = System.IO.Directory.CreateDirectory(Path.Combine(scratchDir, "mnt-rw")).FullName;
        string marker = $"xfbtree-namespace-kernel-edits-{Environment.ProcessId}-{Guid.NewGuid():N}";
        KernelLog.Mark(marker);
        FreshUuid(image);
        TreeFixtures.Run("/bin/mount", ["-o", "loop,nouuid", image, mnt]);
        string dev;
        try
        {
            dev = TreeFixtures.Run("/usr/bin/findmnt", ["-n", "-o", "SOURCE", mnt]).Trim();
            string script = $"cd '{mnt}{top}' && i=0; for f in $(find . -mindepth 1 -type f | sort); do i=$((i+1)); [ $((i % 2)) = 0 ] && rm -f \"$f\"; done; " +
                $"for n in $(seq 1 80); do : > kernel-made-$n; done; " +
                $"d=$(find . -mindepth 1 -type d -empty | sort | tail -n 1); [ -n \"$d\" ] && rmdir \"$d\"; mkdir kernel-dir && : > kernel-dir/inside";
            TreeFixtures.Sh(script);
        }
        finally
        {
            TreeFixtures.Run("/bin/umount", [mnt]);
        }
        string device = dev[(dev.LastIndexOf('/') + 1)..];
        var mine = KernelLog.DeviceMessagesSince(marker, device);
        output.WriteLine(string.Join("\n", mine));
        Assert.DoesNotContain(mine, l => l.Contains("orrupt", StringComparison.Ordinal) || l.Contains("shut", StringComparison.OrdinalIgnoreCase)
            || l.Contains("Internal error", StringComparison.Ordinal) || l.Contains("I/O error", StringComparison.Ordinal));
        var repair = RepairTools.XfsRepairCheck(image);
        Assert.True(repair.ExitCode == 0, $"xfs_repair -n after the kernel's edits: {repair}");
    }

    /// <summary>Gives an unmounted image a new sb_uuid (xfs_admin -U generate; headers keep the metadata UUID).</summary>
    internal static void FreshUuid(string image) => TreeFixtures.Run(TreeFixtures.Tool("xfs_admin"), ["-U", "generate", image]);

    static List<string> Names(NamespaceOperations ops, string dir) => ops.List(dir).Select(e => e.Name).Order(StringComparer.Ordinal).ToList();

    [Theory]
    [InlineData("fresh-4ag")]
    [InlineData("aged-small")]
    [InlineData("geom-bs1k")]
    [InlineData("geom-nrext64")]
    [InlineData("geom-sect4k")]
    [InlineData("proto-small")]
    [InlineData("aged-small-normap")]
    public void CreateMkdirUnlinkSequenceLeavesAConsistentImage(string fixture)
    {
        using var s = new Session(fixture);
        var ops = s.Ops;
        var rootBefore = Names(ops, "/");
        ulong top = ops.Mkdir("/wns");
        Assert.Equal(top, ops.Lookup("/wns"));
        Assert.Equal(InodeType.Directory, ops.Stat("/wns").Type);
        Assert.Equal("local", ops.Stat("/wns").DataForkFormat);
        var expected = new SortedSet<string>(StringComparer.Ordinal);
        for (int i = 0; i < 40; i++)
        {
            ops.Create($"/wns/file{i:D3}");
            expected.Add($"file{i:D3}");
        }
        // 40 entries do not fit the 336-byte literal area: the directory went to block format.
        var st = ops.Stat("/wns");
        Assert.Equal("extents", st.DataForkFormat);
        Assert.Equal(s.Engine.Image.Superblock.BlockSize << s.Engine.Image.Superblock.DirBlockLog, (uint)st.Size);
        Assert.Equal(2u, st.Links);

        // A deep path of shortform directories, a file at the bottom.
        string deep = "/wns";
        for (int d = 0; d < 12; d++)
        {
            deep += $"/level{d}";
            ops.Mkdir(deep);
        }
        expected.Add("level0");
        ulong leaf = ops.Create(deep + "/bottom.txt");
        Assert.Equal(leaf, ops.Lookup(deep + "/bottom.txt"));
        Assert.Equal(3u, ops.Stat("/wns").Links);
        Assert.Equal(InodeType.RegularFile, ops.Stat(deep + "/bottom.txt").Type);
        Assert.Equal(1u, ops.Stat(deep + "/bottom.txt").Links);

        // Unlink every third file (block directory removes), then the bottom file and dir (shortform removes).
        for (int i = 0; i < 40; i += 3)
        {
            ops.Unlink($"/wns/file{i:D3}");
            expected.Remove($"file{i:D3}");
        }
        ops.Unlink(deep + "/bottom.txt");
        ops.Unlink(deep);
        Assert.Equal(WriteErrorKind.NotFound, Assert.Throws<XfsWriteException>(() => ops.Lookup(deep)).Kind);
        // Re-adding into the block directory reuses free space and stale leaf entries.
        for (int i = 0; i < 5; i++)
        {
            ops.Create($"/wns/again{i}");
            expected.Add($"again{i}");
        }
        Assert.Equal(expected.ToList(), Names(ops, "/wns"));
        Assert.Equal(rootBefore.Append("wns").Order(StringComparer.Ordinal).ToList(), Names(ops, "/"));
        s.Close();

        AssertClean(s.Image);
        var ours = OurTree(s.Image, "/wns");
        Assert.Equal(ours, KernelTree(s.Image, s.Directory, "/wns"));
        KernelEdits(s.Image, s.Directory, "/wns");
        // Our reader follows what the kernel made of our directories (the block directory may have grown to leaf form).
        var after = OurTree(s.Image, "/wns");
        Assert.Contains(after, l => l.StartsWith("kernel-made-80 ", StringComparison.Ordinal));
        Assert.Contains(after, l => l.StartsWith("kernel-dir/inside ", StringComparison.Ordinal));
        Assert.Equal(after, KernelTree(s.Image, s.Directory, "/wns"));
    }

    [Theory]
    [InlineData("fresh-4ag")]
    [InlineData("geom-bs1k")]
    public void CreatingPastTheFreeInodesAllocatesANewChunk(string fixture)
    {
        using var s = new Session(fixture);
        var ops = s.Ops;
        var sb = s.Engine.Image.Superblock;
        long creates = (long)sb.FreeInodes + 10;
        ops.Mkdir("/many");
        int perDir = 100, made = 0, inodes = 1;
        for (int d = 0; made < creates; d++)
        {
            ops.Mkdir($"/many/d{d}");
            inodes++;
            for (int i = 0; i < perDir && made < creates; i++, made++) ops.Create($"/many/d{d}/f{i}");
        }
        s.Close();
        AssertClean(s.Image);
        string sbAfter = TreeFixtures.XfsDb(s.Image, "sb 0", "p icount ifree");
        output.WriteLine(sbAfter);
        inodes += made;
        // The parent's AG is used up first, then grows by whole chunks (as the kernel prefers the parent's AG).
        var numbers = sbAfter.Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(l => ulong.Parse(l.Split('=')[1].Trim(), System.Globalization.CultureInfo.InvariantCulture)).ToArray();
        ulong grown = numbers[0] - sb.InodeCount;
        Assert.True(grown >= 64 && grown % 64 == 0, $"icount grew by {grown}");
        Assert.Equal(sb.FreeInodes + grown - (ulong)inodes, numbers[1]);
        Assert.Equal(OurTree(s.Image, "/many"), KernelTree(s.Image, s.Directory, "/many"));
    }

    /// <summary>
    /// A removal locks the directory, finds the name under its lock, then locks the child: a child numbered below
    /// its directory is locked out of order, tried, and when another holds it the removal starts over with the
    /// child first. Here the child's lock is held while the unlink runs (it cannot finish meanwhile), then let go:
    /// the unlink ends, the other name and the images are sound.
    /// </summary>
    [Fact]
    public void Unlink_OfAChildNumberedBelowItsDirectory_WaitsForTheChildAndRemovesTheRightName()
    {
        using var s = new Session("fresh-4ag");
        var ops = s.Ops;
        ulong file = ops.Create("/low");
        ulong dir = ops.Mkdir("/dir-above");
        ulong subdir = ops.Mkdir("/dir-above/sub");
        Assert.True(file < dir, $"the file ({file}) must be numbered below the directory ({dir})");
        ops.Link("/low", "/dir-above/second");

        var child = s.Engine.GetInode(file);
        Exception? failure = null;
        using var done = new ManualResetEventSlim();
        var unlink = new Thread(() =>
        {
            try
            {
                ops.Unlink("/dir-above/second");
            }
            catch (Exception e)
            {
                failure = e;
            }
            finally
            {
                done.Set();
            }
        });
        using (s.Engine.LockInodeForRead(child))
        {
            unlink.Start();
            // Bounded check, not a synchronization: the unlink needs the child's lock, which this thread holds.
            Assert.False(done.Wait(TimeSpan.FromMilliseconds(200)), "the unlink finished without the child's lock");
        }
        Assert.True(done.Wait(TimeSpan.FromSeconds(60)), "the unlink did not finish once the child's lock was free");
        unlink.Join();
        Assert.Null(failure);
        Assert.Equal(1u, ops.Stat("/low").Links);
        Assert.Throws<XfsWriteException>(() => ops.Stat("/dir-above/second"));
        ops.Rmdir("/dir-above/sub");
        Assert.True(subdir > dir);
        ops.Unlink("/low");
        ops.Rmdir("/dir-above");
        s.Close();
        AssertClean(s.Image);
    }

    [Fact]
    public void RefusalsAreClearAndChangeNothing()
    {
        using var s = new Session("aged-small");
        var ops = s.Ops;
        ops.Create("/plain");
        ops.Mkdir("/full");
        ops.Create("/full/x");
        XfsWriteException Fails(WriteErrorKind kind, Action a)
        {
            var e = Assert.Throws<XfsWriteException>(a);
            Assert.True(e.Kind == kind, $"expected {kind}, got {e.Kind}: {e.Message}");
            output.WriteLine($"{kind}: {e.Message}");
            return e;
        }
        Fails(WriteErrorKind.Exists, () => ops.Create("/plain"));
        Fails(WriteErrorKind.Exists, () => ops.Mkdir("/full"));
        Fails(WriteErrorKind.NotFound, () => ops.Create("/no/such/dir/file"));
        Fails(WriteErrorKind.NotFound, () => ops.Unlink("/nothing-here"));
        Fails(WriteErrorKind.NotDirectory, () => ops.Create("/plain/child"));
        Fails(WriteErrorKind.NotDirectory, () => ops.List("/plain"));
        Fails(WriteErrorKind.NotEmpty, () => ops.Unlink("/full"));
        Fails(WriteErrorKind.NameTooLong, () => ops.Create("/" + new string('n', 256)));
        Fails(WriteErrorKind.InvalidArgument, () => ops.Create("/bad\0name"));
        Fails(WriteErrorKind.InvalidArgument, () => ops.Create("relative"));
        Fails(WriteErrorKind.IsDirectory, () => ops.Unlink("/"));
        Fails(WriteErrorKind.Exists, () => ops.Mkdir("/full/.."));
        // A node directory the kernel made takes new names, and refuses a name it has.
        int before = ops.List("/feat/bigdir").Count;
        Assert.True(before > 1000);
        ops.Create("/feat/bigdir/newname");
        Fails(WriteErrorKind.Exists, () => ops.Create("/feat/bigdir/newname"));
        Assert.Equal(before + 1, ops.List("/feat/bigdir").Count);
        s.Close();
        AssertClean(s.Image);
    }

    [Theory]
    [InlineData("fresh-4ag")]
    [InlineData("aged-small")]
    [InlineData("geom-bs1k")]
    [InlineData("geom-nrext64")]
    [InlineData("fresh-4ag-normap")]
    public void UnlinkFreesWrittenFilesAndAnEmptiedBlockDirectory(string fixture)
    {
        using var s = new Session(fixture);
        var ops = s.Ops;
        var files = new FileOperations(s.Engine);
        ops.Mkdir("/gone");
        var data = new byte[100 * 1024];
        new Random(5).NextBytes(data);
        for (int i = 0; i < 30; i++)
        {
            ulong ino = ops.Create($"/gone/file-{i:D2}");
            if (i % 10 == 0)
            {
                files.Write(ino, 0, data);
                files.Write(ino, 1 << 20, data.AsSpan(0, 5000));
            }
        }
        Assert.Equal("extents", ops.Stat("/gone").DataForkFormat);
        Assert.True(ops.Stat("/gone/file-10").Blocks > 0);
        ops.Mkdir("/gone/sub");
        Assert.Equal(3u, ops.Stat("/gone").Links);
        for (int i = 0; i < 30; i++) ops.Unlink($"/gone/file-{i:D2}");
        ops.Unlink("/gone/sub");
        Assert.Empty(ops.List("/gone"));
        Assert.Equal(2u, ops.Stat("/gone").Links);
        ops.Unlink("/gone"); // an empty block-format directory: its block is freed too
        Assert.Equal(WriteErrorKind.NotFound, Assert.Throws<XfsWriteException>(() => ops.Stat("/gone")).Kind);
        s.Close();
        AssertClean(s.Image);
        Assert.DoesNotContain(KernelTree(s.Image, s.Directory, ""), l => l.StartsWith("gone", StringComparison.Ordinal));
    }

    [Fact]
    public void UnlinkOfExistingBtreeReflinkedSymlinkAndHardLinkedFiles()
    {
        using var s = new Session("aged-small");
        var ops = s.Ops;
        Assert.Equal("btree", ops.Stat("/feat/fragmented.bin").DataForkFormat);
        Assert.True(ops.Stat("/feat/reflink/fragmented.clone").Reflink);
        Assert.Equal(6u, ops.Stat("/feat/special/one-block").Links);
        ops.Unlink("/feat/fragmented.bin");
        ops.Unlink("/feat/reflink/fragmented.clone");
        // A leaf directory the kernel made loses a name.
        ops.Unlink("/feat/links/l0007");
        Assert.Equal(WriteErrorKind.NotFound, Assert.Throws<XfsWriteException>(() => ops.Lookup("/feat/links/l0007")).Kind);
        ulong shared = ops.Lookup("/feat/special/one-block");
        for (int i = 0; i < 4; i++) ops.Unlink($"/feat/special/hardlink{i}");
        var st = ops.Stat("/feat/special/one-block");
        Assert.Equal((shared, 2u), (st.Ino, st.Links));
        s.Close();
        AssertClean(s.Image);
        var kernel = KernelTree(s.Image, s.Directory, "/feat");
        Assert.Equal(OurTree(s.Image, "/feat"), kernel);
        Assert.DoesNotContain("fragmented.bin " + 1573048, kernel);
        Assert.DoesNotContain(kernel, l => l.StartsWith("special/hardlink0 ", StringComparison.Ordinal));
        Assert.Contains($"special/one-block {shared}", kernel);
        Assert.DoesNotContain(kernel, l => l.StartsWith("links/l0007 ", StringComparison.Ordinal));
        Assert.Contains(kernel, l => l.StartsWith("links/l0008 ", StringComparison.Ordinal));
    }

    /// <summary>A full block directory grows into leaf format (xfs_dir2_block_to_leaf); on a filesystem with
    /// no free space left that growth fails with NoSpace and the cancelled transaction leaves nothing behind: no
    /// block, the directory still in block form with its entries, the space invariants holding.</summary>
    [Theory]
    [InlineData("fresh-4ag")]
    [InlineData("geom-bs1k")]
    public void AFullBlockDirectoryGrowsIntoLeafFormatAndWithoutSpaceChangesNothing(string fixture)
    {
        using var s = new Session(fixture);
        var ops = s.Ops;
        var reader = new DirectoryReader(s.Engine.Image);
        DirectoryLayout LayoutOf(string dir)
        {
            ulong ino = ops.Lookup(dir);
            return s.Engine.Execute("layout", tx =>
            {
                var inode = s.Engine.GetInode(ino);
                tx.LockInodes(inode);
                return new DirectoryEditor(tx, inode, reader, dir).Layout;
            });
        }
        ops.Mkdir("/big");
        int n = 0;
        while (LayoutOf("/big") != DirectoryLayout.Leaf && n < 1000) ops.Create($"/big/entry-with-a-longer-name-{n++:D4}");
        output.WriteLine($"block form held {n - 1} entries");
        Assert.Equal(DirectoryLayout.Leaf, LayoutOf("/big"));
        Assert.True(n > 40, $"only {n} entries fit");

        // The same directory again, one entry short of leaf format, then all free space taken.
        ops.Mkdir("/full");
        for (int i = 0; i < n - 1; i++) ops.Create($"/full/entry-with-a-longer-name-{i:D4}");
        Assert.Equal(DirectoryLayout.Block, LayoutOf("/full"));
        var files = new FileOperations(s.Engine);
        ulong fill = ops.Create("/fill");
        long at = 0;
        for (long size = 1L << 30; size >= s.Engine.Geometry.BlockSize;)
        {
            try { files.Fallocate(fill, at, size); at += size; }
            catch (XfsWriteException e) when (e.Kind == WriteErrorKind.NoSpace) { size /= 2; }
        }
        var refused = Assert.Throws<XfsWriteException>(() => ops.Create($"/full/entry-with-a-longer-name-{n - 1:D4}"));
        output.WriteLine($"full filesystem: {refused.Message}");
        Assert.Equal(WriteErrorKind.NoSpace, refused.Kind);
        WriteEngineTestSupport.AssertInvariants(s.Engine, "after the refusal");
        Assert.Equal(DirectoryLayout.Block, LayoutOf("/full"));
        Assert.Equal(n - 1, ops.List("/full").Count);
        // With room again the same name goes in and the directory becomes a leaf directory.
        files.Truncate(fill, 0);
        ops.Create($"/full/entry-with-a-longer-name-{n - 1:D4}");
        Assert.Equal(DirectoryLayout.Leaf, LayoutOf("/full"));
        s.Close();
        AssertClean(s.Image);
        Assert.Equal(OurTree(s.Image, "/full"), KernelTree(s.Image, s.Directory, "/full"));
    }

    /// <summary>64 KiB blocks hold 128 inodes: a new chunk is one block with two inobt/finobt records (an image
    /// made here by mkfs.xfs, as no fixture has this geometry).</summary>
    [Fact]
    public void SixtyFourKilobyteBlocksGetTwoRecordChunks()
    {
        using var scratch = new RepairScratch();
        string image = Path.Combine(scratch.Directory, "bs64k.img");
        TreeFixtures.Run("/usr/bin/truncate", ["-s", "2G", image]);
        TreeFixtures.Run(TreeFixtures.Tool("mkfs.xfs"), ["-q", "-f", "-b", "size=65536", "-m", "crc=1,rmapbt=1,reflink=1,finobt=1", image]);
        ulong icount;
        int created = 0;
        using (var engine = WriteEngine.Open(image, WriteEngineTestSupport.Fast))
        {
            var ops = new NamespaceOperations(engine, new FileOperations(engine));
            icount = engine.Image.Superblock.InodeCount;
            long creates = (long)engine.Image.Superblock.FreeInodes + 3;
            ops.Mkdir("/d");
            created++;
            for (int i = 0; i < creates; i++, created++) ops.Create($"/d/f{i}");
            ops.Unlink("/d/f7");
            created--;
            engine.Close();
        }
        AssertClean(image);
        string counts = TreeFixtures.XfsDb(image, "sb 0", "p icount", "agi 0", "p count freecount");
        output.WriteLine(counts);
        Assert.Contains($"icount = {icount + 128}", counts, StringComparison.Ordinal);
        Assert.Contains($"count = {icount + 128}", counts, StringComparison.Ordinal);
        Assert.Contains($"freecount = {icount + 128 - 3 - (ulong)created}", counts, StringComparison.Ordinal);
    }
}
