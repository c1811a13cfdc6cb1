using System.Diagnostics;
using Xfbtree.Native;
using Xfbtree.Storage;

namespace Xfbtree.Tests.Storage;

/// <summary>Counts /proc/self/fd and /proc/self/maps, so nothing else may create xfiles meanwhile.</summary>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class XfileResourceCollection
{
    public const string Name = "Xfile process resources";
}

[Collection(XfileResourceCollection.Name)]
public sealed class XfileResourceLeakTests
{
    public static TheoryData<XfileBackendKind, bool> Backends => new()
    {
        { XfileBackendKind.Memfd, false },
        { XfileBackendKind.TmpFile, false },
        { XfileBackendKind.TmpFile, true },
        { XfileBackendKind.Portable, false },
        { XfileBackendKind.Portable, true },
        { XfileBackendKind.Auto, false },
    };

    [Theory]
    [MemberData(nameof(Backends))]
    public void ThousandCreateDisposeCycles_LeaveFdCountAndMappingsUnchanged(XfileBackendKind kind, bool onDisk)
    {
        string? directory = onDisk ? XfileTestDirectories.CreateDiskDirectory() : null;
        try
        {
            var options = new XfileOptions
            {
                Backend = kind,
                Directory = directory,
                MaxSize = 1L << 30,
                Name = "xfbtree-leakcheck",
            };
            // Warm up once so lazily created runtime fds (e.g. for the BCL) are not counted as leaks.
            Cycle(options);
            GC.Collect();
            GC.WaitForPendingFinalizers();
            // The counts are process-wide, and descriptors of earlier tests (pipes of child processes they started)
            // may still close meanwhile. A leak shows as a difference of about a thousand in every attempt; such
            // unrelated closes do not repeat, so the measurement is repeated (not waited for) a few times.
            var attempts = new List<string>();
            for (int attempt = 0; attempt < 3; attempt++)
            {
                int fdsBefore = CountFds();
                int mapsBefore = CountXfileMappings();
                for (int i = 0; i < 1000; i++)
                {
                    Cycle(options);
                }
                int fdsAfter = CountFds();
                int mapsAfter = CountXfileMappings();
                if (fdsAfter == fdsBefore && mapsAfter == mapsBefore)
                {
                    break;
                }
                attempts.Add($"fds {fdsBefore} -> {fdsAfter}, xfile mappings {mapsBefore} -> {mapsAfter}");
            }
            Assert.True(attempts.Count < 3, "1000 create/dispose cycles changed the process's resources every time: " + string.Join("; ", attempts));
            if (directory is not null)
            {
                Assert.Empty(Directory.EnumerateFileSystemEntries(directory));
            }
        }
        finally
        {
            if (directory is not null)
            {
                Directory.Delete(directory, recursive: true);
            }
        }
    }

    [Fact]
    public void ForgottenXfile_IsReleasedByTheFinalizer()
    {
        GC.Collect();
        GC.WaitForPendingFinalizers();
        int fdsBefore = CountFds();
        int mapsBefore = CountXfileMappings();
        CreateAndForget();
        Assert.Equal(fdsBefore + 1, CountFds());
        for (int i = 0; i < 3; i++)
        {
            GC.Collect();
            GC.WaitForPendingFinalizers();
        }
        Assert.Equal(fdsBefore, CountFds());
        Assert.Equal(mapsBefore, CountXfileMappings());
    }

    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.NoInlining)]
    private static void CreateAndForget()
    {
        Xfile xfile = Xfile.Create(new XfileOptions { Backend = XfileBackendKind.Memfd, Name = "xfbtree-leakcheck" });
        xfile.Store(0, [1]);
    }

    private static unsafe void Cycle(XfileOptions options)
    {
        using Xfile xfile = Xfile.Create(options);
        xfile.Store(12345, [1, 2, 3]);
        byte* page = xfile.PinPage(1L << 20);
        page[0] = 1;
        xfile.UnpinPage(1L << 20);
    }

    private static int CountFds() => Directory.GetFileSystemEntries("/proc/self/fd").Length;

    private static int CountXfileMappings() =>
        File.ReadLines("/proc/self/maps").Count(line =>
            line.Contains("xfbtree-leakcheck", StringComparison.Ordinal)
            || line.Contains(".xfbtree-xfile-", StringComparison.Ordinal)
            || line.Contains("/dev/shm/#", StringComparison.Ordinal));
}

/// <summary>
/// ENOSPC on a real 1 MiB tmpfs must surface as an exception (a SIGBUS would kill the test host).
/// Needs root for mount(8); fails loudly otherwise.
/// </summary>
public sealed unsafe class XfileOutOfSpaceTests : IDisposable
{
    private readonly string mountPoint;

    public XfileOutOfSpaceTests()
    {
        mountPoint = Path.Combine(Path.GetTempPath(), "xfbtree-enospc-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(mountPoint);
        (int rc, string output) = Run("mount", $"-t tmpfs -o size=1m xfbtree-enospc {mountPoint}");
        if (rc != 0)
        {
            Directory.Delete(mountPoint);
            Assert.Fail($"mounting a 1 MiB tmpfs failed (this test needs root and mount(8)): {output}");
        }
    }

    public void Dispose()
    {
        (int rc, string output) = Run("umount", mountPoint);
        Assert.True(rc == 0, $"umount {mountPoint} failed: {output}");
        Directory.Delete(mountPoint);
    }

    [Fact]
    public void TmpFileBackend_OnFullTmpfs_ThrowsNativeCallExceptionWithEnospc()
    {
        using Xfile xfile = Xfile.Create(new XfileOptions
        {
            Backend = XfileBackendKind.TmpFile,
            Directory = mountPoint,
            MaxSize = 64L << 20,
        });
        NativeCallException error = FillUntilFull<NativeCallException>(xfile, out long storedPages);
        Assert.Equal("fallocate", error.Call);
        Assert.Equal(28, error.ErrorNumber);
        Assert.True(error.IsOutOfSpace);
        Assert.Contains("fallocate", error.Message, StringComparison.Ordinal);
        Assert.Contains("28", error.Message, StringComparison.Ordinal);
        Assert.Contains(NativeErrors.Describe(28), error.Message, StringComparison.Ordinal);
        Assert.Throws<NativeCallException>(() => xfile.PinPage(60L << 20));
        AssertStillUsable(xfile, storedPages);
    }

    [Fact]
    public void PortableBackend_OnFullTmpfs_ThrowsIOException()
    {
        using Xfile xfile = Xfile.Create(new XfileOptions
        {
            Backend = XfileBackendKind.Portable,
            Directory = mountPoint,
            MaxSize = 64L << 20,
        });
        FillUntilFull<IOException>(xfile, out long storedPages);
        // The BCL cannot punch holes, so Discard does not give space back here: only committed pages stay writable.
        AssertStillUsable(xfile, storedPages, discardFreesSpace: false);
    }

    [Fact]
    public void AutoBackend_InChosenDirectory_OnFullTmpfs_ThrowsNativeCallException()
    {
        using Xfile xfile = Xfile.Create(new XfileOptions { Directory = mountPoint, MaxSize = 64L << 20 });
        Assert.Equal(XfileBackendKind.TmpFile, xfile.Backend);
        NativeCallException error = FillUntilFull<NativeCallException>(xfile, out long storedPages);
        Assert.Equal(28, error.ErrorNumber);
        AssertStillUsable(xfile, storedPages);
    }

    [Fact]
    public void MemfdBackend_WithCommitLimit_ThrowsXfileFullException()
    {
        // A memfd is not bounded by any mount; the commit limit is its quota.
        using Xfile xfile = Xfile.Create(new XfileOptions
        {
            Backend = XfileBackendKind.Memfd,
            MaxSize = 64L << 20,
            CommitLimit = 512 * 1024,
        });
        FillUntilFull<XfileFullException>(xfile, out long storedPages);
        Assert.Equal(512 * 1024 / xfile.PageSize, storedPages);
        AssertStillUsable(xfile, storedPages);
    }

    private static T FillUntilFull<T>(Xfile xfile, out long storedPages) where T : Exception
    {
        byte[] page = new byte[xfile.PageSize];
        for (long i = 0; i < xfile.MaxSize / xfile.PageSize; i++)
        {
            page[0] = (byte)(i | 1);
            try
            {
                xfile.Store(i * xfile.PageSize, page);
            }
            catch (Exception e)
            {
                storedPages = i;
                Assert.IsAssignableFrom<T>(e);
                Assert.True(i > 0, "nothing could be stored at all");
                return (T)e;
            }
        }
        throw new Xunit.Sdk.XunitException("the xfile never ran out of space");
    }

    private static void AssertStillUsable(Xfile xfile, long storedPages, bool discardFreesSpace = true)
    {
        byte[] page = new byte[xfile.PageSize];
        for (long i = 0; i < storedPages; i++)
        {
            xfile.Load(i * xfile.PageSize, page);
            Assert.Equal((byte)(i | 1), page[0]);
        }
        // The failed page was not committed, reads as zeros, and freeing space lets a store succeed.
        xfile.Load(storedPages * xfile.PageSize, page);
        Assert.All(page, b => Assert.Equal(0, b));
        xfile.Store(xfile.PageSize + 1, new byte[] { 1 });
        if (discardFreesSpace)
        {
            xfile.Discard(0, 4L * xfile.PageSize);
            xfile.Store(storedPages * xfile.PageSize, new byte[] { 1 });
        }
    }

    private static (int ExitCode, string Output) Run(string program, string arguments)
    {
        try
        {
            using var process = Process.Start(new ProcessStartInfo(program, arguments)
            {
                RedirectStandardError = true,
                RedirectStandardOutput = true,
            })!;
            string output = process.StandardOutput.ReadToEnd() + process.StandardError.ReadToEnd();
            process.WaitForExit();
            return (process.ExitCode, output);
        }
        catch (System.ComponentModel.Win32Exception e)
        {
            return (-1, $"{program}: {e.Message}");
        }
    }
}
