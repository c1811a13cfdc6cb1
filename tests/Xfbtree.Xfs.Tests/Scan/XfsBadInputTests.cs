using System.Buffers.Binary;
using Xfbtree.Buffers;
using Xfbtree.Xfs.Format;
using Xfbtree.Xfs.Tests.Repair;
using Xfbtree.Xfs.Tests.Trees;
using Xunit.Abstractions;

namespace Xfbtree.Xfs.Tests.Scan;

/// <summary>
/// Bad input: every case ends with exit 2 and exactly one line on stderr naming the cause (or exit 1 with a report
/// for damaged metadata, other AGs still checked), never an exception escaping the command.
/// </summary>
public sealed class XfsBadInputTests(ITestOutputHelper output) : IDisposable
{
    readonly RepairScratch _scratch = new();

    public void Dispose() => _scratch.Dispose();

    string Path(string name) => System.IO.Path.Combine(_scratch.Directory, name);

    void ExpectUnusable(CliResult r, string cause)
    {
        output.WriteLine(r.ToString());
        Assert.True(r.ExitCode == 2, r.ToString());
        Assert.Equal("", r.Stdout);
        string[] lines = r.Stderr.TrimEnd('\n').Split('\n');
        Assert.True(lines.Length == 1, $"one line expected: {r.Stderr}");
        Assert.StartsWith("xfbtree: ", lines[0], StringComparison.Ordinal);
        Assert.Contains(cause, lines[0], StringComparison.OrdinalIgnoreCase);
    }

    void ForBothCommands(string image, string cause, params string[] extra)
    {
        ExpectUnusable(XfsCli.Run(["check", image, .. extra]), cause);
        ExpectUnusable(XfsCli.Run(["dump", image, .. extra]), cause);
        ExpectUnusable(XfsCli.Run(["dump", image, "--source", "ondisk", .. extra]), cause);
    }

    /// <summary>Rewrites primary superblock fields of a copy and fixes its CRC.</summary>
    string PatchSuperblock(string fixture, string name, Action<byte[]> patch)
    {
        string img = _scratch.Copy(TreeFixtures.Image(fixture), name);
        using var fh = File.OpenHandle(img, FileMode.Open, FileAccess.ReadWrite);
        var sector = new byte[512];
        RandomAccess.Read(fh, sector, 0);
        patch(sector);
        XfsCrc.Update(sector, Superblock.CrcOffset);
        RandomAccess.Write(fh, sector, 0);
        return img;
    }

    [Fact]
    public void XfsMissingFile() => ForBothCommands(Path("nope.img"), "no such file");

    [Fact]
    public void XfsDirectory() => ForBothCommands(_scratch.Directory, "is a directory");

    [Fact]
    public void XfsEmptyFile()
    {
        File.WriteAllBytes(Path("empty.img"), []);
        ForBothCommands(Path("empty.img"), "empty file");
    }

    [Fact]
    public void XfsRandomBytes()
    {
        var bytes = new byte[1 << 20];
        new Random(7).NextBytes(bytes);
        File.WriteAllBytes(Path("random.img"), bytes);
        ForBothCommands(Path("random.img"), "not an XFS filesystem");
        File.WriteAllBytes(Path("short.img"), bytes.AsSpan(0, 300).ToArray());
        ForBothCommands(Path("short.img"), "too short");
    }

    [Fact]
    public void XfsTruncatedImage()
    {
        string img = _scratch.CopyFixture("aged-small");
        using (var fh = File.OpenHandle(img, FileMode.Open, FileAccess.ReadWrite)) RandomAccess.SetLength(fh, 600L << 20);
        ForBothCommands(img, "truncated image");
    }

    [Fact]
    public void XfsVersion4AndNoRmapbtAreRefused()
    {
        string mkfs = TreeFixtures.Tool("mkfs.xfs");
        string v4 = Path("v4.img"), plain = Path("normap.img");
        foreach (var f in new[] { v4, plain }) using (var fh = File.Create(f)) fh.SetLength(512L << 20);   // mkfs.xfs 6.1 wants > 300 MB
        // mkfs.xfs 6.1 still makes v4 filesystems (deprecated); -m crc=0 implies no rmapbt.
        TreeFixtures.Run(mkfs, ["-q", "-f", "-m", "crc=0", v4]);
        TreeFixtures.Run(mkfs, ["-q", "-f", "-m", "rmapbt=0", plain]);
        ForBothCommands(v4, "v4");
        ForBothCommands(plain, "no reverse-mapping btree");
    }

    [Fact]
    public void XfsUnknownIncompatFeatureIsRefused()
    {
        string img = PatchSuperblock("fresh-4ag", "incompat.img", s =>
            BinaryPrimitives.WriteUInt32BigEndian(s.AsSpan(216), BinaryPrimitives.ReadUInt32BigEndian(s.AsSpan(216)) | 0x100));
        ForBothCommands(img, "unsupported incompatible feature");
    }

    [Fact]
    public void XfsRealtimeDeviceIsRefused()
    {
        string img = PatchSuperblock("fresh-4ag", "rt.img", s =>
        {
            BinaryPrimitives.WriteUInt64BigEndian(s.AsSpan(16), 4096);   // rblocks
            BinaryPrimitives.WriteUInt64BigEndian(s.AsSpan(24), 4096);   // rextents
        });
        ForBothCommands(img, "realtime");
    }

    [Fact]
    public void XfsCorruptPrimarySuperblockIsRefused()
    {
        string img = _scratch.CopyFixture("fresh-4ag");
        using (var fh = File.OpenHandle(img, FileMode.Open, FileAccess.ReadWrite)) RandomAccess.Write(fh, new byte[] { 0x77 }, 130);
        ForBothCommands(img, "superblock CRC");
        string geo = PatchSuperblock("fresh-4ag", "geo.img", s => BinaryPrimitives.WriteUInt32BigEndian(s.AsSpan(84), 17));
        ForBothCommands(geo, "agblocks");
    }

    [Fact]
    public void XfsDirtyLogIsRefusedUnlessForced()
    {
        // log_incompat set means the log holds items only newer code understands: dirty.
        string img = PatchSuperblock("aged-small", "logincompat.img", s => BinaryPrimitives.WriteUInt32BigEndian(s.AsSpan(220), 1));
        ForBothCommands(img, "the log is dirty");
        var forced = XfsCli.Run("check", img, "--force");
        Assert.True(forced.ExitCode == 0, forced.ToString());

        // A real dirty log: loop-mount a copy (root), write, sync, and copy the image while it is still mounted (the
        // copy's log ends without an unmount record). No forced shutdown: the kernel-workload oracle of the repair
        // tests, which may run at the same time, treats any XFS shutdown message in the kernel log as a failure.
        string live = _scratch.CopyFixture("fresh-4ag");
        string img2 = Path("dirty.img");
        string mnt = Directory.CreateDirectory(Path("mnt")).FullName;
        TreeFixtures.Run(TreeFixtures.Tool("mount"), ["-o", "loop,nouuid", live, mnt]);
        try
        {
            File.WriteAllText(System.IO.Path.Combine(mnt, "file"), "dirty");
            TreeFixtures.Run("/bin/sync", []);
            TreeFixtures.Run("/bin/cp", ["--sparse=always", live, img2]);
        }
        finally { TreeFixtures.Run(TreeFixtures.Tool("umount"), [mnt]); }
        Assert.Contains("<DIRTY>", TreeFixtures.Run(TreeFixtures.Tool("xfs_logprint"), ["-t", img2]), StringComparison.Ordinal);
        using (var xfs = XfsImage.Open(img2)) Assert.Equal(LogState.Dirty, xfs.InspectLog().State);
        ForBothCommands(img2, "the log is dirty");
        Assert.True(XfsCli.Run("check", img2, "--force").ExitCode is 0 or 1);
    }

    [Fact]
    public void XfsNeedsRepairIsReportedAsDamage()
    {
        string img = PatchSuperblock("fresh-4ag", "needsrepair.img", s =>
            BinaryPrimitives.WriteUInt32BigEndian(s.AsSpan(216), BinaryPrimitives.ReadUInt32BigEndian(s.AsSpan(216)) | 0x10));
        var r = XfsCli.Run("check", img);
        Assert.True(r.ExitCode == 1, r.ToString());
        Assert.Contains("NEEDSREPAIR", r.Stdout, StringComparison.Ordinal);
    }

    [Fact]
    public void XfsUsageErrors()
    {
        string img = TreeFixtures.Image("fresh-4ag");
        foreach (var args in new[] { Array.Empty<string>(), ["frobnicate", img], ["check"], ["check", img, "--bogus"], ["check", img, "--ag"],
                                     ["check", img, "--ag", "x"], ["dump", img, "--source", "both"], ["check", img, img] })
        {
            var r = XfsCli.Run(args);
            Assert.True(r.ExitCode == 2, $"{string.Join(' ', args)}: {r}");
            Assert.StartsWith("xfbtree: rmap: ", r.Stderr, StringComparison.Ordinal);
        }
        ExpectUnusable(XfsCli.Run("check", img, "--ag", "4"), "AG 4 does not exist");
        Assert.Equal(0, XfsCli.Run("--help").ExitCode);
    }

    [Fact]
    public void CheckReportsUnreadableAgfAndGoesOnWithOtherAgs()
    {
        string img = _scratch.CopyFixture("aged-small");
        using (var xfs = XfsImage.Open(img))
        {
            long agf = xfs.Geometry.AgHeaderDaddr(2, 1) * 512;
            using var fh = File.OpenHandle(img, FileMode.Open, FileAccess.ReadWrite);
            RandomAccess.Write(fh, new byte[] { 0xAA }, agf + 52);   // freeblks byte, CRC left stale
        }
        var r = XfsCli.Run("check", img);
        output.WriteLine(r.Stdout);
        Assert.True(r.ExitCode == 1, r.ToString());
        Assert.Contains("AG 2: DAMAGED", r.Stdout, StringComparison.Ordinal);
        Assert.Contains("AGF: corrupt AGF at daddr", r.Stdout, StringComparison.Ordinal);
        foreach (uint ag in new uint[] { 0, 1, 3 }) Assert.Contains($"AG {ag}: clean", r.Stdout, StringComparison.Ordinal);
        var dump = XfsCli.Run("dump", img, "--source", "ondisk");
        Assert.Equal(1, dump.ExitCode);
        Assert.Contains("AG 2: AGF", dump.Stderr, StringComparison.Ordinal);
    }

    [Fact]
    public void CheckReportsCorruptInodeAndInodeBtree()
    {
        string img = _scratch.CopyFixture("aged-small");
        const ulong ino = 1573048;   // manifest "fragmented": btree data fork, 2048 extents
        uint inobtRoot;
        using (var xfs = XfsImage.Open(img))
        {
            var geo = xfs.Geometry;
            long at = geo.InodeByteOffset(geo.InoToAgno(ino), geo.InoToAgino(ino));
            inobtRoot = xfs.ReadAgi(1).Root;
            using var fh = File.OpenHandle(img, FileMode.Open, FileAccess.ReadWrite);
            RandomAccess.Write(fh, new byte[] { 0x5A }, at + 60);                                   // di_size, CRC left stale
            RandomAccess.Write(fh, new byte[64], geo.AgBlockToByte(1, inobtRoot) + 8);              // AG 1 inobt root header zeroed
        }
        var r = XfsCli.Run("check", img);
        output.WriteLine(r.Stdout);
        Assert.True(r.ExitCode == 1, r.ToString());
        Assert.Contains($"inode {ino}: bad CRC", r.Stdout, StringComparison.Ordinal);
        Assert.Contains("inobt", r.Stdout, StringComparison.Ordinal);
        Assert.Contains("AG 1: DAMAGED", r.Stdout, StringComparison.Ordinal);
    }

    [Fact]
    public void CheckReportsABtreeForkTooSmallForItsRootAsDamage()
    {
        // A btree data fork squeezed to 8 bytes by the attr fork offset (CRC fixed): metadata damage (exit 1), never
        // an internal error. AgScanner no longer turns every ArgumentException into "damage", so this must be
        // recognised as bad metadata before the engine is asked to open the root.
        string img = _scratch.CopyFixture("aged-small");
        const ulong ino = 1573048;   // manifest "fragmented": btree data fork
        using (var xfs = XfsImage.Open(img))
        {
            var geo = xfs.Geometry;
            long at = geo.InodeByteOffset(geo.InoToAgno(ino), geo.InoToAgino(ino));
            using var fh = File.OpenHandle(img, FileMode.Open, FileAccess.ReadWrite);
            var inode = new byte[geo.InodeSize];
            RandomAccess.Read(fh, inode, at);
            inode[82] = 1;                                             // di_forkoff: data fork of 8 bytes
            inode[83] = (byte)ForkFormat.Extents;                      // di_aformat
            BinaryPrimitives.WriteUInt16BigEndian(inode.AsSpan(80), 0); // di_anextents
            XfsCrc.Update(inode, Dinode.CrcOffset);
            RandomAccess.Write(fh, inode, at);
        }
        var r = XfsCli.Run("check", img);
        output.WriteLine(r.ToString());
        Assert.True(r.ExitCode == 1, r.ToString());
        Assert.Contains($"inode {ino}", r.Stdout, StringComparison.Ordinal);
        Assert.Contains("too small", r.Stdout, StringComparison.Ordinal);
        Assert.DoesNotContain("internal error", r.Stderr, StringComparison.Ordinal);
    }

    [Fact]
    public void XfsRandomMetadataDamageNeverEscapes()
    {
        // Byte flips in the first blocks of every AG (headers, free-space/inode/refcount/rmap btree roots, the first
        // inode chunk): every run ends with 0, 1 or 2 and no internal error. A flip that changes a byte of an AGF,
        // AGI or AGFL sector (CRC left stale) is certain damage: check must then not say "clean".
        var rng = new Random(1234);
        string pristine = TreeFixtures.Image("aged-small");
        int certainRounds = 0;
        for (int round = 0; round < 12; round++)
        {
            string img = _scratch.Copy(pristine, $"fuzz{round}.img");
            bool certain = false;
            using (var fh = File.OpenHandle(img, FileMode.Open, FileAccess.ReadWrite))
            {
                for (int k = 0; k < 40; k++)
                {
                    long ag = rng.Next(4);
                    // One flip in ten aims at the AGF/AGI/AGFL sectors (bytes 512-2047 of the AG), the rest anywhere.
                    long inAg = rng.Next(10) == 0 ? rng.Next(512, 2048) : rng.Next(0, 24 * 4096);
                    long off = ag * (65536L * 4096) + inAg;
                    var old = new byte[1];
                    RandomAccess.Read(fh, old, off);
                    byte value = (byte)rng.Next(256);
                    RandomAccess.Write(fh, new byte[] { value }, off);
                    certain |= value != old[0] && inAg is >= 512 and < 2048;
                }
            }
            if (certain) certainRounds++;
            foreach (var args in new[] { new[] { "check", img, "--force" }, new[] { "dump", img, "--force" }, new[] { "dump", img, "--source", "ondisk", "--force" } })
            {
                var r = XfsCli.Run(args);
                Assert.True(r.ExitCode is 0 or 1 or 2, r.ToString());
                Assert.DoesNotContain("internal error", r.Stderr, StringComparison.Ordinal);
                if (r.ExitCode == 2) Assert.Single(r.Stderr.TrimEnd('\n').Split('\n'));
                if (certain && args[0] == "check") Assert.True(r.ExitCode != 0, $"round {round}: an AG header sector changed but check says clean: {r}");
            }
        }
        Assert.True(certainRounds >= 3, $"only {certainRounds} of 12 rounds changed an AG header sector");
    }
}
