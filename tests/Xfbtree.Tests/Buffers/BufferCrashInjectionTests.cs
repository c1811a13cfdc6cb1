using System.Diagnostics;
using Xfbtree.Buffers;
using Xfbtree.TestSupport;

namespace Xfbtree.Tests.Buffers;

/// <summary>
/// The test-only crash models (<see cref="CrashAfterWrites"/> installed as a disk target's write interceptor): a
/// process kill keeps every write made, a power loss keeps only synced writes. In process, and for real (SIGKILL)
/// in a child test host.
/// </summary>
public sealed class BufferCrashInjectionTests
{
    const string ChildImageVariable = "XFBTREE_TEST_CRASH_CHILD_IMAGE";

    [Fact]
    public void BufferCrashProcessKill_KeepsExactlyTheFirstKWrites()
    {
        using var img = BufferTestSupport.NewImage(64 * 4096);
        var crash = new CrashAfterWrites(3, CrashModel.ProcessKill);
        using (var target = BufferTestSupport.OpenRw(img.Path))
        {
            target.WriteInterceptor = crash;
            using var cache = new BufferCache();
            Dirty(cache, target, 10);
            Assert.ThrowsAny<Exception>(() => cache.Flush(target));
            Assert.True(crash.Crashed);
            Assert.Equal(3, crash.Writes);
        }
        AssertFirstWritten(img.Path, 3, 10);
    }

    [Fact]
    public void BufferCrashPowerLoss_KeepsOnlySyncedWrites()
    {
        using var img = BufferTestSupport.NewImage(64 * 4096);
        var crash = new CrashAfterWrites(13, CrashModel.PowerLoss);
        using (var target = BufferTestSupport.OpenRw(img.Path))
        {
            target.WriteInterceptor = crash;
            using var cache = new BufferCache();
            Dirty(cache, target, 5);
            cache.Flush(target);
            target.Sync();                          // writes 1-5 are durable
            for (long i = 5; i < 10; i++)           // writes 6-10: flushed, read back (they show), never synced
            {
                var b = cache.Read(target, i * 8, 8, null);
                BufferTestSupport.Pattern(b.Span, i * 8, salt: 5);
                b.MarkDirty();
                cache.Release(b);
            }
            cache.Flush(target);
            using (var other = new BufferCache())
            {
                var b = other.Read(target, 7 * 8, 8, null);
                Assert.True(BufferTestSupport.HasPattern(b.Span, 7 * 8, 5UL), "an unsynced write must be visible to reads");
                other.Release(b);
            }
            Dirty(cache, target, 3, salt: 9);       // writes 11-13: the 13th crashes
            Assert.Throws<SimulatedCrashException>(() => cache.Flush(target));
            Assert.Equal(1, crash.Syncs);
            Assert.Equal(8, crash.Lost);
        }
        AssertFirstWritten(img.Path, 5, 10);
    }

    [Fact]
    public void BufferCrashPowerOffAfterTheRun_LosesWhatWasNeverSynced()
    {
        using var img = BufferTestSupport.NewImage(64 * 4096);
        var crash = new CrashAfterWrites(0, CrashModel.PowerLoss);
        using (var target = BufferTestSupport.OpenRw(img.Path))
        {
            target.WriteInterceptor = crash;
            using var cache = new BufferCache();
            Dirty(cache, target, 4);
            cache.Flush(target);
        }
        crash.PowerOff();
        Assert.Equal(4, crash.Lost);
        AssertFirstWritten(img.Path, 0, 4);
    }

    /// <summary>The real thing: a child test host is killed by SIGKILL mid-flush; the writes before it are on disk.</summary>
    [Fact]
    public async Task BufferCrashSigkill_KillsTheProcessAndKeepsItsWrites()
    {
        using var img = BufferTestSupport.NewImage(64 * 4096);
        string marker = img.Path + ".survived";
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var a in new[] { "test", typeof(BufferCrashInjectionTests).Assembly.Location, "--filter", $"FullyQualifiedName={typeof(BufferCrashInjectionTests).FullName}.{nameof(CrashChild)}", "--nologo" })
            psi.ArgumentList.Add(a);
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

    /// <summary>Runs only inside the child host of <see cref="BufferCrashSigkill_KillsTheProcessAndKeepsItsWrites"/>; reported as skipped elsewhere.</summary>
    [CrashChildFact]
    public void CrashChild()
    {
        string path = Environment.GetEnvironmentVariable(ChildImageVariable)!;
        File.WriteAllText(path + ".started", "");
        using var target = BufferTestSupport.OpenRw(path);
        target.WriteInterceptor = new KillAfterWrites(4);
        using var cache = new BufferCache();
        Dirty(cache, target, 10);
        cache.Flush(target);
        File.WriteAllText(path + ".survived", "");
    }

    sealed class CrashChildFactAttribute : FactAttribute
    {
        public CrashChildFactAttribute()
        {
            if (Environment.GetEnvironmentVariable(ChildImageVariable) is null)
                Skip = "runs only in the child test host that BufferCrashSigkill_KillsTheProcessAndKeepsItsWrites starts";
        }
    }

    /// <summary>Passes writes through and SIGKILLs the process right after the k-th.</summary>
    sealed class KillAfterWrites(int k) : DiskWriteInterceptor
    {
        int _writes;

        public override void Write(ReadOnlySpan<byte> bytes, long offset, DiskBufferTarget.DiskPassThrough file)
        {
            file.Write(bytes, offset);
            if (++_writes == k)
            {
                Tmds.Linux.LibC.kill(Tmds.Linux.LibC.getpid(), Tmds.Linux.LibC.SIGKILL);
                Environment.FailFast("SIGKILL did not end the process");
            }
        }

        public override void Sync(DiskBufferTarget.DiskPassThrough file) => file.Sync();
    }

    static void Dirty(BufferCache cache, BufferTarget target, int blocks, ulong salt = 5)
    {
        for (long i = 0; i < blocks; i++)
        {
            var b = cache.Read(target, i * 8, 8, null);
            BufferTestSupport.Pattern(b.Span, i * 8, salt);
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
