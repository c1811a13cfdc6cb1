using System.Diagnostics;
using Xfbtree.Buffers;

namespace Xfbtree.Tests.Buffers;

/// <summary>
/// XFBTREE_FAULT_CRASH_AFTER_WRITES=k: the process dies (SIGKILL) right after the k-th successful write to a
/// writable disk target. In process with the crash action replaced, and for real in a child test host.
/// </summary>
public sealed class BufferCrashInjectionTests
{
    const string ChildImageVariable = "XFBTREE_TEST_CRASH_CHILD_IMAGE";

    sealed class CrashedException : Exception { }

    [Fact]
    public void BufferCrashAfterWrites_ParsesTheVariable()
    {
        Assert.Equal(0, DiskBufferTarget.ParseCrashAfterWrites(null));
        Assert.Equal(0, DiskBufferTarget.ParseCrashAfterWrites(" "));
        Assert.Equal(7, DiskBufferTarget.ParseCrashAfterWrites("7"));
        Assert.Throws<InvalidOperationException>(() => DiskBufferTarget.ParseCrashAfterWrites("-1"));
        Assert.Throws<InvalidOperationException>(() => DiskBufferTarget.ParseCrashAfterWrites("x"));
    }

    [Fact]
    public void BufferCrashAfterWrites_FiresRightAfterTheKthWrite()
    {
        using var img = BufferTestSupport.NewImage(64 * 4096);
        using var target = BufferTestSupport.OpenRw(img.Path);
        target.CrashAfterWrites = 3;
        target.CrashAction = () => throw new CrashedException();
        using var cache = new BufferCache();
        Dirty(cache, target, 10);
        Assert.ThrowsAny<Exception>(() => cache.Flush(target));
        Assert.Equal(3, target.WriteCount);
        AssertFirstWritten(img.Path, 3, 10);
    }

    /// <summary>The real thing: a child test host with the variable set is killed by SIGKILL mid-flush.</summary>
    [Fact]
    public async Task BufferCrashAfterWrites_KillsTheProcess()
    {
        using var img = BufferTestSupport.NewImage(64 * 4096);
        string marker = img.Path + ".survived";
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var a in new[] { "test", typeof(BufferCrashInjectionTests).Assembly.Location, "--filter", $"FullyQualifiedName={typeof(BufferCrashInjectionTests).FullName}.{nameof(CrashChild)}", "--nologo" })
            psi.ArgumentList.Add(a);
        psi.Environment[DiskBufferTarget.CrashAfterWritesVariable] = "4";
        psi.Environment[ChildImageVariable] = img.Path;
        using var p = Process.Start(psi)!;
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        using (var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(120)))
            await p.WaitForExitAsync(timeout.Token);
        string output = await stdout + await stderr;
        Assert.NotEqual(0, p.ExitCode);
        Assert.False(File.Exists(marker), "the child survived its crash point:\n" + output);
        Assert.True(File.Exists(img.Path + ".started"), "the child never ran:\n" + output);
        AssertFirstWritten(img.Path, 4, 10);
    }

    /// <summary>Runs only inside the child host of <see cref="BufferCrashAfterWrites_KillsTheProcess"/>.</summary>
    [Fact]
    public void CrashChild()
    {
        string? path = Environment.GetEnvironmentVariable(ChildImageVariable);
        if (path is null) return; // not the child: nothing to do
        File.WriteAllText(path + ".started", "");
        using var target = BufferTestSupport.OpenRw(path);
        Assert.Equal(4, target.CrashAfterWrites);
        using var cache = new BufferCache();
        Dirty(cache, target, 10);
        cache.Flush(target);
        File.WriteAllText(path + ".survived", "");
    }

    static void Dirty(BufferCache cache, BufferTarget target, int blocks)
    {
        for (long i = 0; i < blocks; i++)
        {
            var b = cache.Read(target, i * 8, 8, null);
            BufferTestSupport.Pattern(b.Span, i * 8, salt: 5);
            b.MarkDirty();
            cache.Release(b);
        }
    }

    static void AssertFirstWritten(string path, int written, int blocks)
    {
        using var check = DiskBufferTarget.Open(path);
        using var cache = new BufferCache();
        for (long i = 0; i < blocks; i++)
        {
            var b = cache.Read(check, i * 8, 8, null);
            Assert.True(BufferTestSupport.HasPattern(b.Span, i * 8, i < written ? 5UL : 0UL), $"block {i}");
            cache.Release(b);
        }
    }
}
