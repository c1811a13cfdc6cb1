using Xfbtree.Native;

namespace Xfbtree.Tests.Native;

/// <summary>The one-writer-per-image lock: exclusive across descriptors, released with Dispose, fails closed.</summary>
[System.Runtime.Versioning.SupportedOSPlatform("linux")]
public sealed class NativeImageFileLockTests : IDisposable
{
    readonly string _path = Path.Combine(Path.GetTempPath(), $"xfbtree-lock-{Environment.ProcessId}-{Guid.NewGuid():N}.img");

    public NativeImageFileLockTests() => File.WriteAllBytes(_path, new byte[4096]);

    public void Dispose() => File.Delete(_path);

    [Fact]
    public void ImageFileLock_SecondExclusiveLockIsRefusedUntilTheFirstIsReleased()
    {
        ImageFileLock? first = ImageFileLock.TryAcquireExclusive(_path);
        Assert.NotNull(first);
        // flock locks belong to the open file description: a second open in the same process conflicts too.
        Assert.Null(ImageFileLock.TryAcquireExclusive(_path));
        first.Dispose();
        using ImageFileLock? again = ImageFileLock.TryAcquireExclusive(_path);
        Assert.NotNull(again);
        Assert.Equal(_path, again.Path);
    }

    [Fact]
    public unsafe void ImageFileLock_ReleaseEndsTheLockWhileACopyOfTheDescriptorLivesOn()
    {
        // A child forked by Process.Start holds a copy of every descriptor until it execs; dup() makes the same
        // copy here. Dispose must end the lock even so (the write engine's crash tests reopened too early otherwise).
        ImageFileLock? held = ImageFileLock.TryAcquireExclusive(_path);
        Assert.NotNull(held);
        int lockFd = Directory.GetFiles("/proc/self/fd")
            .Select(link => (Fd: int.Parse(Path.GetFileName(link), System.Globalization.CultureInfo.InvariantCulture), Target: new FileInfo(link).LinkTarget))
            .Single(e => e.Target == _path).Fd;
        int copy = Tmds.Linux.LibC.dup(lockFd);
        Assert.True(copy >= 0, "dup failed");
        try
        {
            held.Dispose();
            using ImageFileLock? again = ImageFileLock.TryAcquireExclusive(_path);
            Assert.NotNull(again);
        }
        finally
        {
            Tmds.Linux.LibC.close(copy);
        }
    }

    [Fact]
    public void ImageFileLock_LeavesDotNetFileOpensAlone()
    {
        // .NET takes flock(LOCK_SH) on every open; the writer lock must not collide with it (the writer itself and
        // its readers open the image with File.OpenHandle). Another process's view is tested by
        // RepairSafetyTests.RepairRefusesWhileAnotherWriterHoldsTheImage.
        using ImageFileLock? held = ImageFileLock.TryAcquireExclusive(_path);
        Assert.NotNull(held);
        using (var read = File.OpenHandle(_path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite))
            Assert.Equal(4096, RandomAccess.GetLength(read));
        using (var write = File.OpenHandle(_path, FileMode.Open, FileAccess.ReadWrite, FileShare.ReadWrite))
            RandomAccess.Write(write, new byte[] { 1 }, 0);
        Assert.Null(ImageFileLock.TryAcquireExclusive(_path));
    }

    [Fact]
    public void ImageFileLock_AFileThatCannotBeOpenedIsAnErrorNotFree()
    {
        var e = Assert.Throws<NativeCallException>(() => ImageFileLock.TryAcquireExclusive(_path + ".missing"));
        Assert.Equal(2, e.ErrorNumber);
    }
}
