using Xfbtree.Xfs.Tests.Repair;
using Xfbtree.Xfs.Tests.Trees;
using Xfbtree.Xfs.Write;
using Xfbtree.Xfs.Write.Engine;
using static Xfbtree.Xfs.Tests.Write.WriteEngineTestSupport;

namespace Xfbtree.Xfs.Tests.Write;

/// <summary>Open, refusals, NEEDSREPAIR while open, clean close.</summary>
public sealed class WriteEngineOpenCloseTests
{
    [Theory]
    [InlineData("aged-small")]
    [InlineData("geom-bs1k")]
    [InlineData("geom-nrext64")]
    [InlineData("fresh-4ag")]
    public void WriteEngine_OpenCloseChangesNothingButTheNeedsRepairRoundTrip(string fixture)
    {
        using var scratch = new RepairScratch();
        string original = TreeFixtures.Image(fixture);
        string image = scratch.CopyFixture(fixture);
        var engine = WriteEngine.Open(image, Fast);
        try
        {
            Assert.True((IncompatViaXfsDb(image) & 0x10) != 0, "NEEDSREPAIR is not set on disk while the engine holds the image");
            Assert.True(File.Exists(image + ".xfbtree-journal"), "no journal while open");
            AssertInvariants(engine, $"{fixture} as opened");
        }
        finally
        {
            engine.Close();
        }
        Assert.False(File.Exists(image + ".xfbtree-journal"), "the journal stayed after a clean close");
        Assert.False(NeedsRepair(image));
        var differing = RepairTools.DifferingRanges(original, image, 512);
        Assert.True(differing.Count == 0, $"open/close changed {differing.Count} ranges, first at byte {(differing.Count > 0 ? differing[0].Start : 0)}");
        AssertOraclesClean(image, fixture);
    }

    [Fact]
    public void WriteEngine_SecondOpenerIsBusyAndTheLockGoesWithClose()
    {
        using var scratch = new RepairScratch();
        string image = scratch.CopyFixture("fresh-4ag");
        using (var engine = WriteEngine.Open(image, Fast))
        {
            XfsWriteException e = OpenFails(image);
            Assert.Equal(WriteErrorKind.Busy, e.Kind);
            // The offline repair takes the same writer lock.
            ToolResult repair = RepairTools.Xfbtree("rmap", "repair", image);
            Assert.True(repair.ExitCode == 2, $"rmap repair ran while the engine held the image: {repair}");
            engine.Close();
        }
        using var again = WriteEngine.Open(image, Fast);
        again.Close();
    }

    [Fact]
    public void WriteEngine_RefusesNeedsRepairSetBySomeoneElse()
    {
        using var scratch = new RepairScratch();
        string image = scratch.CopyFixture("fresh-4ag");
        uint incompat = IncompatViaXfsDb(image);
        TreeFixtures.Run(TreeFixtures.Tool("xfs_db"), ["-x", "-c", "sb 0", "-c", $"write features_incompat {incompat | 0x10}", image]);
        Assert.True(NeedsRepair(image));
        string before = scratch.Copy(image, "before.img");
        XfsWriteException e = OpenFails(image);
        Assert.Equal(WriteErrorKind.NotSupported, e.Kind);
        Assert.Contains("NEEDSREPAIR", e.Message, StringComparison.Ordinal);
        Assert.Empty(RepairTools.DifferingRanges(before, image, 4096));
        Assert.False(File.Exists(image + ".xfbtree-journal"));
    }

    /// <summary>v4 and read-only files are refused; a filesystem without an rmapbt (mkfs.xfs's default, refused
    /// before) opens, takes a file with data, a directory, an xattr and a reflinked copy, and closes clean.</summary>
    [Fact]
    public void WriteEngine_RefusesV4AndReadOnlyFiles_WritesWithoutAnRmapbt()
    {
        using var scratch = new RepairScratch();
        string plain = Path.Combine(scratch.Directory, "normap.img");
        TreeFixtures.Run("/usr/bin/truncate", ["-s", "300M", plain]);
        TreeFixtures.Run(TreeFixtures.Tool("mkfs.xfs"), ["-q", "-f", "-m", "rmapbt=0,reflink=1", plain]);
        using (var fs = XfsFileSystem.Open(plain, Fast))
        {
            ulong ino = fs.Create("/file");
            fs.Write("/file", 0, new byte[256 << 10].AsSpan());
            fs.Mkdir("/dir");
            fs.SetXattr(ino, "user.key", new byte[3000]);
            fs.Create("/dir/copy");
            fs.Reflink("/file", 0, "/dir/copy", 0, 256 << 10);
            fs.Write("/dir/copy", 4096, new byte[4096].AsSpan());   // copy on write of one shared block
            fs.PunchHole("/file", 64 << 10, 64 << 10);
            AssertInvariants(fs.Engine, "no rmapbt, before close");
            fs.Close();
        }
        Assert.False(NeedsRepair(plain));
        AssertOraclesClean(plain, "no rmapbt");
        foreach (var (name, options, cause) in new[] { ("v4.img", "crc=0", "v4") })
        {
            string image = Path.Combine(scratch.Directory, name);
            TreeFixtures.Run("/usr/bin/truncate", ["-s", "300M", image]);
            TreeFixtures.Run(TreeFixtures.Tool("mkfs.xfs"), ["-q", "-f", "-m", options, image]);
            XfsWriteException e = OpenFails(image);
            Assert.Equal(WriteErrorKind.NotSupported, e.Kind);
            Assert.Contains(cause, e.Message, StringComparison.OrdinalIgnoreCase);
        }
        string ro = scratch.CopyFixture("fresh-4ag");
        TreeFixtures.Run("/bin/chmod", ["0444", ro]);
        XfsWriteException r = OpenFails(ro);
        Assert.Contains("read-only", r.Message, StringComparison.Ordinal);
        Assert.Equal(WriteErrorKind.NotFound, OpenFails(Path.Combine(scratch.Directory, "missing.img")).Kind);
    }

    [Fact]
    public void WriteEngine_RefusesAMountedImageAndADirtyLog()
    {
        RepairSafetyTests.RequireRoot();
        using var scratch = new RepairScratch();
        string image = scratch.CopyFixture("fresh-4ag");
        string mnt = Directory.CreateDirectory(Path.Combine(scratch.Directory, "mnt")).FullName;
        string dirty;
        TreeFixtures.Run("/bin/mount", ["-o", "loop,nouuid", image, mnt]);
        try
        {
            File.WriteAllText(Path.Combine(mnt, "file"), "data");
            XfsWriteException busy = OpenFails(image);
            Assert.Equal(WriteErrorKind.Busy, busy.Kind);
            TreeFixtures.Run("/bin/sync", ["-f", mnt]);
            dirty = scratch.Copy(image, "dirty.img");
        }
        finally
        {
            TreeFixtures.Run("/bin/umount", [mnt]);
        }
        XfsWriteException e = OpenFails(dirty);
        Assert.Equal(WriteErrorKind.NotSupported, e.Kind);
        Assert.Contains("log", e.Message, StringComparison.Ordinal);
        Assert.False(NeedsRepair(dirty));
    }

    [Fact]
    public void WriteEngine_KernelRefusesToMountWhileTheEngineHoldsTheImage()
    {
        RepairSafetyTests.RequireRoot();
        using var scratch = new RepairScratch();
        string image = scratch.CopyFixture("fresh-4ag");
        string mnt = Directory.CreateDirectory(Path.Combine(scratch.Directory, "mnt")).FullName;
        string copyWhileOpen;
        using (var engine = WriteEngine.Open(image, Fast))
        {
            // A copy taken while open is what another program would see: NEEDSREPAIR makes the kernel refuse it.
            copyWhileOpen = scratch.Copy(image, "held.img");
            engine.Close();
        }
        ToolResult mount = RepairTools.Exec("/bin/mount", ["-o", "loop,ro,nouuid", copyWhileOpen, mnt]);
        if (mount.ExitCode == 0)
        {
            TreeFixtures.Run("/bin/umount", [mnt]);
        }
        Assert.True(mount.ExitCode != 0, "the kernel mounted an image the engine was holding");
    }
}
