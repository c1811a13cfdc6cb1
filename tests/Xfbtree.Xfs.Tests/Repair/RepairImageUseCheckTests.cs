using Xfbtree.Xfs.Format;
using Xfbtree.Xfs.Repair;

namespace Xfbtree.Xfs.Tests.Repair;

/// <summary>The in-use check on a fake sysfs: finds the loop device backed by the image, and fails closed.</summary>
public sealed class RepairImageUseCheckTests : IDisposable
{
    readonly RepairScratch _scratch = new();

    public void Dispose() => _scratch.Dispose();

    string Image()
    {
        string image = Path.Combine(_scratch.Directory, "image.img");
        File.WriteAllBytes(image, new byte[512]);
        return image;
    }

    string FakeSysBlock(params (string Loop, string? Backing)[] loops)
    {
        string root = Directory.CreateDirectory(Path.Combine(_scratch.Directory, "sys-block-" + Guid.NewGuid().ToString("N"))).FullName;
        foreach (var (loop, backing) in loops)
        {
            string dir = Directory.CreateDirectory(Path.Combine(root, loop)).FullName;
            if (backing is null) continue;   // an unconfigured loop device has no loop/ attributes
            Directory.CreateDirectory(Path.Combine(dir, "loop"));
            File.WriteAllText(Path.Combine(dir, "loop", "backing_file"), backing + "\n");
        }
        return root;
    }

    [Fact]
    public void RepairImageUseCheckFindsTheLoopDeviceOfTheImage()
    {
        string image = Image();
        string sys = FakeSysBlock(("loop0", null), ("loop1", "/some/other.img"), ("loop2", image), ("loop3", image + " (deleted)"));
        Assert.Equal(["/dev/loop2"], ImageUseCheck.LoopDevicesBacking(image, sys));
        Assert.Empty(ImageUseCheck.LoopDevicesBacking(image, FakeSysBlock()));
    }

    [Fact]
    public void RepairImageUseCheckRefusesWhenSysBlockCannotBeRead()
    {
        string image = Image();
        var e = Assert.Throws<XfsFormatException>(() => ImageUseCheck.LoopDevicesBacking(image, Path.Combine(_scratch.Directory, "no-sysfs")));
        Assert.Contains("cannot tell whether the image is in use", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void RepairImageUseCheckRefusesWhenABackingFileCannotBeRead()
    {
        string image = Image();
        string sys = FakeSysBlock(("loop0", "/some/other.img"));
        // A directory where the attribute file should be: reading it fails (as root, permissions would not).
        Directory.CreateDirectory(Path.Combine(sys, "loop1", "loop", "backing_file"));
        var e = Assert.Throws<XfsFormatException>(() => ImageUseCheck.LoopDevicesBacking(image, sys));
        Assert.Contains("backing_file cannot be read", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void RepairImageUseCheckSkipsALoopDeviceDetachedWhileItIsRead()
    {
        string image = Image();
        string sys = FakeSysBlock(("loop0", "/some/other.img"), ("loop1", "/detached.img"), ("loop2", image));
        string detaching = Path.Combine(sys, "loop1", "loop");
        // As the kernel does when a device is detached between the listing and the read: the attributes go away
        // and the read of the already-open file fails with ENODEV.
        string Read(string path)
        {
            if (path.StartsWith(detaching, StringComparison.Ordinal))
            {
                Directory.Delete(detaching, recursive: true);
                throw new IOException("No such device", 19);
            }
            return File.ReadAllText(path);
        }
        Assert.Equal(["/dev/loop2"], ImageUseCheck.LoopDevicesBacking(image, sys, Read));
    }

    [Fact]
    public void RepairImageUseCheckStillRefusesAFailedReadOfADeviceThatStaysSetUp()
    {
        string image = Image();
        string sys = FakeSysBlock(("loop1", "/other.img"));
        var e = Assert.Throws<XfsFormatException>(() => ImageUseCheck.LoopDevicesBacking(image, sys, _ => throw new IOException("No such device", 19)));
        Assert.Contains("backing_file cannot be read", e.Message, StringComparison.Ordinal);
    }
}
