using System.Diagnostics;
using Xfbtree.Buffers;

namespace Xfbtree.Tests.Buffers;

/// <summary>
/// DiskBufferTarget on a real block device (a loop device, as root): detected as a block device, sized by
/// lseek, claimed O_EXCL (a second opener and a mounted device are refused with a clear IOException).
/// Needs root, losetup and mkfs.xfs: their absence fails loudly. Always detaches and unmounts.
/// </summary>
public sealed class BufferBlockDeviceTests
{
    [Fact]
    public void BufferBlockDevice_OpenedExclusively_MountedDeviceRefused()
    {
        if (Environment.UserName != "root" && Environment.GetEnvironmentVariable("USER") != "root")
            throw new InvalidOperationException("this test needs root (loop devices); run the suite as root");
        string losetup = BufferTestSupport.Tool("losetup"), mkfs = BufferTestSupport.Tool("mkfs.xfs");
        using var img = BufferTestSupport.NewImage(512L << 20, patterned: false);
        using (var fs = new FileStream(img.Path, FileMode.Open, FileAccess.Write))
        {
            var block = new byte[4096];
            BufferTestSupport.Pattern(block, 8);
            fs.Position = 4096;
            fs.Write(block);
        }
        string dev = Run(losetup, "-f", "--show", img.Path).Trim();
        string mnt = Path.Combine(Path.GetTempPath(), $"xfbtree-mnt-{Guid.NewGuid():N}");
        bool mounted = false;
        try
        {
            using (var target = DiskBufferTarget.Open(dev))
            {
                Assert.True(target.IsBlockDevice);
                Assert.Equal((512L << 20) / 512, target.SizeInBasicBlocks);
                using var cache = new BufferCache();
                var b = cache.Read(target, 8, 8, null);
                Assert.True(BufferTestSupport.HasPattern(b.Span, 8));
                cache.Release(b);
                var busy = Assert.Throws<IOException>(() => DiskBufferTarget.Open(dev));
                Assert.Contains("in use", busy.Message);
            }
            using (var again = DiskBufferTarget.Open(dev)) Assert.True(again.IsBlockDevice); // the claim went with Dispose

            Run(mkfs, "-q", "-f", dev);
            Directory.CreateDirectory(mnt);
            Run(BufferTestSupport.Tool("mount"), "-t", "xfs", dev, mnt);
            mounted = true;
            var e = Assert.Throws<IOException>(() => DiskBufferTarget.Open(dev, new DiskTargetOptions { ReadOnly = true }));
            Assert.Contains(dev, e.Message);
            Assert.Contains("mounted", e.Message);
        }
        finally
        {
            if (mounted) Run(BufferTestSupport.Tool("umount"), mnt);
            try { Directory.Delete(mnt); } catch (IOException) { }
            Run(losetup, "-d", dev);
        }
    }

    static string Run(string file, params string[] args)
    {
        var psi = new ProcessStartInfo(file) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var a in args) psi.ArgumentList.Add(a);
        using var p = Process.Start(psi)!;
        var stdout = p.StandardOutput.ReadToEndAsync();
        string err = p.StandardError.ReadToEnd();
        p.WaitForExit();
        if (p.ExitCode != 0) throw new InvalidOperationException($"{file} {string.Join(' ', args)} failed ({p.ExitCode}): {err}");
        return stdout.GetAwaiter().GetResult();
    }
}
