using Xfbtree.Buffers;
using Xfbtree.Native;

namespace Xfbtree.Tests.Buffers;

/// <summary>
/// The DiskBufferTarget fault hook (test-only) injects EIO, short reads and ENOSPC into the real pread/pwrite
/// path: every failure names the address, nothing bad is cached, holds are returned, and once the fault is gone
/// the cache carries on with the right bytes.
/// </summary>
public sealed class BufferFaultInjectionTests
{
    sealed class Faults
    {
        public readonly Dictionary<(bool Write, long Daddr), DiskBufferTarget.DiskFault> Plan = new();
        public int Injected;
        public DiskBufferTarget.DiskFault Hook(bool write, long daddr, int lengthBB)
        {
            lock (Plan)
            {
                if (Plan.TryGetValue((write, daddr), out var f)) { Injected++; return f; }
                return DiskBufferTarget.DiskFault.None;
            }
        }
    }

    [Fact]
    public void BufferFault_ReadEioAndShortRead_NameTheAddress_AndAreNotCached()
    {
        using var img = BufferTestSupport.NewImage(64 * 4096);
        using var target = DiskBufferTarget.Open(img.Path);
        var faults = new Faults();
        target.FaultHook = faults.Hook;
        faults.Plan[(false, 16)] = DiskBufferTarget.DiskFault.Error(NativeErrors.EIO);
        faults.Plan[(false, 24)] = DiskBufferTarget.DiskFault.Short(1000);
        using var cache = new BufferCache();

        var eio = Assert.Throws<BufferIOException>(() => cache.Read(target, 16, 8, null));
        Assert.Equal(16, eio.Daddr);
        Assert.Equal(8, eio.LengthBB);
        Assert.Contains("daddr 16", eio.Message);
        Assert.Contains("errno 5", eio.Message);
        Assert.IsType<NativeCallException>(eio.InnerException);

        var shortRead = Assert.Throws<BufferIOException>(() => cache.Read(target, 24, 8, null, BufferLockMode.Shared));
        Assert.Equal(24, shortRead.Daddr);
        Assert.Contains("short read: 1000 of 4096", shortRead.Message);

        var st = cache.Statistics;
        Assert.Equal(0, st.CachedBuffers);
        Assert.Equal(0, st.CachedBytes);

        // Fault cleared: the same blocks read fine and hold the file's bytes (nothing half-read was kept).
        faults.Plan.Clear();
        foreach (long d in new long[] { 16, 24 })
        {
            var b = cache.Read(target, d, 8, null);
            Assert.True(BufferTestSupport.HasPattern(b.Span, d));
            Assert.Equal(1, b.HoldCount);
            cache.Release(b);
        }
        Assert.Equal(2, cache.Statistics.CachedBuffers);
    }

    [Fact]
    public void BufferFault_ConcurrentWaitersOfAFailedRead_RetryCleanly()
    {
        using var img = BufferTestSupport.NewImage(64 * 4096);
        using var target = DiskBufferTarget.Open(img.Path);
        using var cache = new BufferCache();
        int calls = 0;
        using var gate = new ManualResetEventSlim();
        target.FaultHook = (write, daddr, len) =>
        {
            if (Interlocked.Increment(ref calls) == 1)
            {
                gate.Wait(TimeSpan.FromSeconds(2)); // let the other readers queue up behind the locked miss
                return DiskBufferTarget.DiskFault.Error(NativeErrors.EIO);
            }
            return DiskBufferTarget.DiskFault.None;
        };
        var results = new int[4];
        var threads = Enumerable.Range(0, 4).Select(i => new Thread(() =>
        {
            try
            {
                var b = cache.Read(target, 8, 8, null, BufferLockMode.Shared);
                results[i] = BufferTestSupport.HasPattern(b.Span, 8) ? 1 : -1;
                cache.Release(b);
            }
            catch (BufferIOException) { results[i] = 2; }
        })).ToList();
        threads.ForEach(t => t.Start());
        Thread.Sleep(200);
        gate.Set();
        threads.ForEach(t => t.Join());
        Assert.Equal(1, results.Count(r => r == 2));       // exactly the thread whose read failed sees the error
        Assert.Equal(3, results.Count(r => r == 1));       // the others re-read and got good bytes
        Assert.Equal(1, cache.Statistics.CachedBuffers);
    }

    [Fact]
    public void BufferFault_EnospcDuringFlush_KeepsUnwrittenBuffersDirty_ThenCompletes()
    {
        using var img = BufferTestSupport.NewImage(64 * 4096);
        using var target = BufferTestSupport.OpenRw(img.Path);
        var faults = new Faults();
        target.FaultHook = faults.Hook;
        faults.Plan[(true, 40)] = DiskBufferTarget.DiskFault.Error(NativeErrors.ENOSPC);
        using var cache = new BufferCache();
        foreach (long d in new long[] { 56, 8, 40, 24 })
        {
            var b = cache.Read(target, d, 8, null);
            BufferTestSupport.Pattern(b.Span, d, salt: 1);
            b.MarkDirty();
            cache.Release(b);
        }
        var e = Assert.Throws<BufferIOException>(() => cache.Flush(target));
        Assert.Equal(40, e.Daddr);
        Assert.Contains("No space left on device", e.Message);
        // Ascending order: 8 and 24 were written, 40 failed, 56 was not tried; 40 and 56 are still dirty.
        Assert.Equal(2, cache.Statistics.Writes);
        Assert.Throws<InvalidOperationException>(() => cache.Purge(target));
        using (var check = DiskBufferTarget.Open(img.Path))
        using (var other = new BufferCache())
        {
            foreach (var (d, salt) in new[] { (8L, 1UL), (24L, 1UL), (40L, 0UL), (56L, 0UL) })
            {
                var b = other.Read(check, d, 8, null);
                Assert.True(BufferTestSupport.HasPattern(b.Span, d, salt), $"daddr {d}");
                other.Release(b);
            }
        }
        foreach (long d in new long[] { 8, 24, 40, 56 })
        {
            var b = cache.Read(target, d, 8, null, BufferLockMode.Shared);
            Assert.Equal(d >= 40, b.IsDirty);
            Assert.True(BufferTestSupport.HasPattern(b.Span, d, salt: 1)); // the changes are still in the cache
            cache.Release(b);
        }
        faults.Plan.Clear();
        cache.Flush(target);
        Assert.Equal(4, cache.Statistics.Writes);
        cache.Purge(target);
        Assert.Equal(0, cache.Statistics.CachedBuffers);
    }

    [Fact]
    public void BufferFault_EnospcDuringCommit_LeavesTheCacheMirroringTheDisk()
    {
        using var img = BufferTestSupport.NewImage(64 * 4096);
        using var target = BufferTestSupport.OpenRw(img.Path);
        var faults = new Faults();
        target.FaultHook = faults.Hook;
        faults.Plan[(true, 24)] = DiskBufferTarget.DiskFault.Error(NativeErrors.ENOSPC);
        using var cache = new BufferCache();
        var tx = new BufferTransaction(cache);
        foreach (long d in new long[] { 32, 8, 24, 16 })
        {
            var b = tx.Read(target, d, 8, null);
            BufferTestSupport.Pattern(b.Span, d, salt: 2);
            tx.LogRange(b, 0, b.Length);
        }
        var e = Assert.Throws<BufferIOException>(tx.Commit);
        Assert.Equal(24, e.Daddr);
        Assert.Equal(2, cache.Statistics.Writes); // 8 and 16
        faults.Plan.Clear();
        // Written blocks hold the new bytes, the failed and the unwritten ones are re-read: the old bytes.
        foreach (var (d, salt) in new[] { (8L, 2UL), (16L, 2UL), (24L, 0UL), (32L, 0UL) })
        {
            var b = cache.Read(target, d, 8, null, BufferLockMode.Shared);
            Assert.False(b.IsDirty);
            Assert.True(BufferTestSupport.HasPattern(b.Span, d, salt), $"daddr {d}");
            cache.Release(b);
        }
        Assert.Equal(4 + 2, cache.Statistics.Reads); // only the two invalidated blocks were read again
    }
}
