using Xfbtree.Native;

namespace Xfbtree.Tests.Native;

/// <summary>The Linux OS boundary on its own: memfd/O_TMPFILE creation, sizing, fallocate, punch hole, pread/pwrite, mmap.</summary>
[System.Runtime.Versioning.SupportedOSPlatform("linux")]
public sealed unsafe class NativeLinuxFilesTests
{
    private const int Page = 4096;

    [Fact]
    public void ErrnoTranslator_NamesCallErrnoAndText()
    {
        NativeCallException e = NativeErrors.Create("fallocate", 28, "offset 0 length 4096");
        Assert.Equal("fallocate", e.Call);
        Assert.Equal(28, e.ErrorNumber);
        Assert.Equal("No space left on device", e.ErrorText);
        Assert.True(e.IsOutOfSpace);
        Assert.Equal("fallocate failed: errno 28 (No space left on device) [offset 0 length 4096]", e.Message);
        Assert.IsAssignableFrom<IOException>(e);
        var thrown = Assert.Throws<NativeCallException>(() => NativeErrors.Throw("open", 2));
        Assert.Equal("open failed: errno 2 (No such file or directory)", thrown.Message);
        Assert.False(thrown.IsOutOfSpace);
    }

    [Fact]
    public void RealFailure_IsTranslated_WithTheKernelsErrno()
    {
        var e = Assert.Throws<NativeCallException>(() => LinuxFiles.CreateUnnamedFile("/nonexistent-xfbtree-dir", out _));
        Assert.Equal("open(O_TMPFILE)", e.Call);
        Assert.Equal(2, e.ErrorNumber); // ENOENT
        Assert.Contains("/nonexistent-xfbtree-dir", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Memfd_SizeAllocatePunch_AndStBlocks()
    {
        using SafeFdHandle fd = LinuxFiles.CreateMemfd("xfbtree-native-test");
        Assert.False(fd.IsInvalid);
        Assert.Equal("/memfd:xfbtree-native-test (deleted)", new FileInfo($"/proc/self/fd/{fd.Fd}").LinkTarget);
        LinuxFiles.SetSize(fd, 1L << 30);
        Assert.Equal(1L << 30, LinuxFiles.FileSize(fd));
        Assert.Equal(0, LinuxFiles.AllocatedBytes(fd));

        LinuxFiles.Allocate(fd, 10 * Page, 4 * Page);
        Assert.Equal(4 * Page, LinuxFiles.AllocatedBytes(fd));

        Assert.True(LinuxFiles.TryPunchHole(fd, 11 * Page, 2 * Page));
        Assert.Equal(2 * Page, LinuxFiles.AllocatedBytes(fd));
        Assert.Equal(1L << 30, LinuxFiles.FileSize(fd)); // KEEP_SIZE
    }

    [Fact]
    public void PreadPwrite_RoundTrip_AndHolesReadZero()
    {
        using SafeFdHandle fd = LinuxFiles.CreateMemfd("xfbtree-native-rw");
        LinuxFiles.SetSize(fd, 16 * Page);
        byte[] data = new byte[3 * Page + 5];
        new Random(1).NextBytes(data);
        LinuxFiles.WriteAt(fd, data, Page - 7);
        byte[] back = new byte[data.Length];
        Assert.Equal(back.Length, LinuxFiles.ReadAt(fd, back, Page - 7));
        Assert.Equal(data, back);

        byte[] hole = Enumerable.Repeat((byte)1, Page).ToArray();
        Assert.Equal(Page, LinuxFiles.ReadAt(fd, hole, 10 * Page));
        Assert.All(hole, b => Assert.Equal(0, b));
        // Reading across end of file returns the bytes that exist.
        Assert.Equal(100, LinuxFiles.ReadAt(fd, new byte[200], 16 * Page - 100));
    }

    [Fact]
    public void Mmap_SharesBytesWithPreadPwrite_AndMadviseWorks()
    {
        using SafeFdHandle fd = LinuxFiles.CreateMemfd("xfbtree-native-map");
        LinuxFiles.SetSize(fd, 1L << 40); // 1 TiB virtual: NORESERVE makes this free
        using SafeMappingHandle map = LinuxFiles.MapShared(fd, 1L << 40, noReserve: true);
        Assert.Equal(1L << 40, map.Length);
        LinuxFiles.Advise(map, 0, 1L << 40, MemoryAdvice.DontDump);
        LinuxFiles.Advise(map, 0, 1L << 40, MemoryAdvice.Random);

        LinuxFiles.Allocate(fd, 5 * Page, Page);
        map.Address[5 * Page + 3] = 0x77;
        byte[] one = new byte[1];
        LinuxFiles.ReadAt(fd, one, 5 * Page + 3);
        Assert.Equal(0x77, one[0]);
        LinuxFiles.WriteAt(fd, new byte[] { 0x66 }, 5 * Page + 4);
        Assert.Equal(0x66, map.Address[5 * Page + 4]);

        // MADV_REMOVE frees the backing store like punch hole.
        Assert.Equal(Page, LinuxFiles.AllocatedBytes(fd));
        LinuxFiles.Advise(map, 5 * Page, Page, MemoryAdvice.Remove);
        Assert.Equal(0, LinuxFiles.AllocatedBytes(fd));

        var e = Assert.Throws<NativeCallException>(() => LinuxFiles.Advise(map, 1, Page, MemoryAdvice.Normal));
        Assert.Equal(22, e.ErrorNumber); // EINVAL: unaligned address
    }

    [Fact]
    public void TmpFile_InDevShm_AndCreateUnlink_LeaveNoNames()
    {
        string directory = Path.Combine("/dev/shm", "xfbtree-native-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(directory);
        try
        {
            using (SafeFdHandle tmp = LinuxFiles.CreateUnnamedFile(directory, out bool usedTmpFile))
            {
                Assert.True(usedTmpFile);
                LinuxFiles.SetSize(tmp, 8 * Page);
                LinuxFiles.Allocate(tmp, 0, Page);
                Assert.Equal(Page, LinuxFiles.AllocatedBytes(tmp));
            }
            using (SafeFdHandle unlinked = LinuxFiles.CreateAndUnlink(directory))
            {
                LinuxFiles.WriteAt(unlinked, new byte[] { 1 }, 0);
                Assert.Empty(Directory.EnumerateFileSystemEntries(directory));
            }
        }
        finally
        {
            Directory.Delete(directory, recursive: true);
        }
    }

    [Fact]
    public void SafeFdHandle_ClosesTheDescriptor_OnceAndUseAfterDisposeThrows()
    {
        SafeFdHandle fd = LinuxFiles.CreateMemfd("xfbtree-native-close");
        int number = fd.Fd;
        Assert.True(File.Exists($"/proc/self/fd/{number}") || Directory.Exists($"/proc/self/fd/{number}")
            || new FileInfo($"/proc/self/fd/{number}").LinkTarget is not null);
        fd.Dispose();
        fd.Dispose();
        Assert.True(fd.IsClosed);
        Assert.Throws<ObjectDisposedException>(() => LinuxFiles.SetSize(fd, Page));
        Assert.Throws<ObjectDisposedException>(() => LinuxFiles.AllocatedBytes(fd));
    }

    [Fact]
    public void SafeMappingHandle_DefersUnmap_WhileReferenced()
    {
        using SafeFdHandle fd = LinuxFiles.CreateMemfd("xfbtree-native-lease");
        LinuxFiles.SetSize(fd, Page);
        LinuxFiles.Allocate(fd, 0, Page);
        SafeMappingHandle map = LinuxFiles.MapShared(fd, Page, noReserve: true);
        bool added = false;
        map.DangerousAddRef(ref added);
        map.Dispose();
        map.Address[0] = 1; // still mapped: the reference defers munmap
        Assert.Equal(1, map.Address[0]);
        map.DangerousRelease();
        Assert.True(map.IsClosed);
    }
}
