using System.Buffers.Binary;
using Xfbtree.Buffers;
using Xfbtree.Storage;
using Xfbtree.Tests.Support;

namespace Xfbtree.Tests.Buffers;

/// <summary>Memory limit under random access, holds and dirty buffers versus reclaim, parallel readers with an exclusive writer, no allocation on a hit.</summary>
public sealed class BufferCacheBehaviourTests
{
    [Theory]
    [InlineData("disk")]
    [InlineData("xfile")]
    public void BufferCacheMemoryLimit_RespectedUnderRandomAccessOverTenTimesMoreBlocks(string kind)
    {
        const int blocks = 2560, fit = 256, bs = 4096;
        using var img = kind == "disk" ? BufferTestSupport.NewImage((long)blocks * bs) : null;
        using var xfile = kind == "xfile" ? Xfile.Create(new XfileOptions { MaxSize = (long)blocks * bs }) : null;
        if (xfile != null)
        {
            var page = new byte[bs];
            for (long i = 0; i < blocks; i++) { BufferTestSupport.Pattern(page, i * 8); xfile.Store(i * bs, page); }
        }
        using BufferTarget target = img != null ? DiskBufferTarget.Open(img.Path) : new XfileBufferTarget(xfile!);
        var limit = (long)fit * bs;
        using var cache = new BufferCache(new BufferCacheOptions { MemoryLimitBytes = limit });
        var rng = new Random(7);
        var held = new List<BlockBuffer>();
        for (int i = 0; i < 20000; i++)
        {
            long d = rng.Next(blocks) * 8L;
            if (held.Exists(h => h.Daddr == d)) continue;
            var b = cache.Read(target, d, 8, null, BufferLockMode.Shared);
            Assert.True(BufferTestSupport.HasPattern(b.Span, d));
            if (i % 1000 == 0 && held.Count < 40) { held.Add(b); continue; } // held buffers: never reclaimed
            cache.Release(b);
            var st = cache.Statistics;
            Assert.True(st.IdleBytes <= limit, $"idle {st.IdleBytes} > limit {limit}");
            Assert.True(st.CachedBytes <= limit + (long)held.Count * bs);
        }
        var s = cache.Statistics;
        Assert.True(s.Reclaimed > 10000, s.ToString());
        Assert.True(s.Hits > 1000 && s.Misses > 10000, s.ToString());
        if (kind == "disk") Assert.Equal(s.Misses, s.Reads);
        foreach (var b in held) Assert.True(BufferTestSupport.HasPattern(b.Span, b.Daddr)); // memory still valid
        foreach (var b in held) cache.Release(b);
        Assert.True(cache.Statistics.IdleBytes <= limit);
    }

    [Fact]
    public void BufferCacheDirtyBuffers_AreNeverReclaimed_UntilFlushed()
    {
        using var img = BufferTestSupport.NewImage(512 * 4096);
        using var target = BufferTestSupport.OpenRw(img.Path);
        using var cache = new BufferCache(new BufferCacheOptions { MemoryLimitBytes = 4 * 4096 });
        for (long i = 0; i < 100; i++)
        {
            var b = cache.Read(target, i * 8, 8, null);
            BufferTestSupport.Pattern(b.Span, i * 8, salt: 99);
            b.MarkDirty();
            cache.Release(b);
        }
        Assert.Equal(100, cache.Statistics.CachedBuffers);
        Assert.Equal(0, cache.Statistics.IdleBytes);
        cache.Flush();
        var st = cache.Statistics;
        Assert.True(st.CachedBuffers <= 4, st.ToString());
        Assert.Equal(100, st.Writes);
        using var check = DiskBufferTarget.Open(img.Path);
        for (long i = 0; i < 100; i++)
        {
            var b = cache.Read(check, i * 8, 8, null, BufferLockMode.Shared);
            Assert.True(BufferTestSupport.HasPattern(b.Span, i * 8, salt: 99));
            cache.Release(b);
        }
    }

    /// <summary>
    /// Readers share a buffer while a writer updates it under the exclusive lock: every reader sees a block whose
    /// 64 bytes all hold the same generation number (never a torn update), generations only grow, and the writer
    /// makes progress while readers keep coming.
    /// </summary>
    [Theory]
    [InlineData("disk")]
    [InlineData("xfile")]
    public unsafe void BufferLock_ParallelReadersAndExclusiveWriter(string kind)
    {
        using var img = kind == "disk" ? BufferTestSupport.NewImage(64 * 4096, patterned: false) : null;
        using var xfile = kind == "xfile" ? Xfile.Create(new XfileOptions { MaxSize = 1 << 20 }) : null;
        using BufferTarget target = img != null ? BufferTestSupport.OpenRw(img.Path) : new XfileBufferTarget(xfile!);
        using var cache = new BufferCache();
        const int slots = 8;
        var stop = DateTime.UtcNow.AddSeconds(1.5);
        long reads = 0, writes = 0, maxSharers = 0;
        var failures = new List<string>();
        var readers = Enumerable.Range(0, 3).Select(r => new Thread(() =>
        {
            var last = new ulong[slots];
            while (DateTime.UtcNow < stop)
            {
                int slot = (int)(Interlocked.Increment(ref reads) % slots);
                var b = cache.Read(target, slot * 8L, 8, null, BufferLockMode.Shared);
                try
                {
                    InterlockedMax(ref maxSharers, b.SharedLockCount);
                    Assert.False(b.IsLockedExclusive);
                    ulong g = BinaryPrimitives.ReadUInt64LittleEndian(b.Span);
                    for (int i = 8; i < 64; i += 8)
                        if (BinaryPrimitives.ReadUInt64LittleEndian(b.Span[i..]) != g) lock (failures) failures.Add($"torn read slot {slot}");
                    if (g < last[slot]) lock (failures) failures.Add($"generation went back on slot {slot}");
                    last[slot] = g;
                    Thread.SpinWait(50);
                }
                finally { cache.Release(b); }
            }
        })).ToList();
        var writer = new Thread(() =>
        {
            var gen = new ulong[slots];
            while (DateTime.UtcNow < stop)
            {
                int slot = (int)(writes % slots);
                var b = cache.Read(target, slot * 8L, 8, null, BufferLockMode.Exclusive);
                try
                {
                    Assert.Equal(0, b.SharedLockCount);
                    gen[slot]++;
                    for (int i = 0; i < 64; i += 8)
                    {
                        BinaryPrimitives.WriteUInt64LittleEndian(b.Span[i..], gen[slot]);
                        Thread.SpinWait(5); // widen the window a torn read would need
                    }
                    b.MarkDirty(0, 64);
                }
                finally { cache.Release(b); }
                writes++;
                if (writes % 500 == 0) cache.Flush(target);
            }
        });
        readers.ForEach(t => t.Start());
        writer.Start();
        readers.ForEach(t => t.Join());
        writer.Join();
        Assert.Empty(failures);
        Assert.True(writes > 100, $"writer starved: {writes} writes");
        Assert.True(reads > 1000, $"{reads} reads");
        Assert.True(maxSharers >= 2, "readers never shared a buffer");
        cache.Flush();
    }

    static void InterlockedMax(ref long target, long value)
    {
        long seen;
        while (value > (seen = Volatile.Read(ref target)) && Interlocked.CompareExchange(ref target, value, seen) != seen) { }
    }

    [Fact]
    public void BufferLock_RecursiveExclusiveThrowsInsteadOfDeadlocking_AndSharedReadersCoexist()
    {
        using var img = BufferTestSupport.NewImage(16 * 4096);
        using var target = DiskBufferTarget.Open(img.Path);
        using var cache = new BufferCache();
        var a = cache.Read(target, 0, 8, null);
        Assert.Throws<InvalidOperationException>(() => cache.Read(target, 0, 8, null));
        Assert.Equal(1, a.HoldCount); // the failed attempt gave its hold back
        Assert.Throws<ArgumentOutOfRangeException>(() => a.MarkDirty(4096, 1));
        cache.Release(a);
        var s1 = cache.Read(target, 0, 8, null, BufferLockMode.Shared);
        var s2 = cache.Read(target, 0, 8, null, BufferLockMode.Shared);
        Assert.Same(s1, s2);
        Assert.Equal(2, s1.SharedLockCount);
        Assert.Throws<InvalidOperationException>(() => s1.MarkDirty()); // shared holders may not change it
        cache.Release(s1);
        cache.Release(s2);
        Assert.Throws<InvalidOperationException>(() => cache.Release(s2)); // not held any more
        Assert.Equal(0, s2.HoldCount);
    }

    [Theory]
    [InlineData("disk")]
    [InlineData("xfile")]
    public void BufferCacheHit_AllocatesNothing(string kind)
    {
        using var img = kind == "disk" ? BufferTestSupport.NewImage(64 * 4096) : null;
        using var xfile = kind == "xfile" ? Xfile.Create(new XfileOptions { MaxSize = 1 << 20 }) : null;
        using BufferTarget target = img != null ? DiskBufferTarget.Open(img.Path) : new XfileBufferTarget(xfile!);
        using var cache = new BufferCache();
        var v = new MagicCrcVerifier("none", 0, 0); // attached once on the miss; a hit with the same verifier does not re-verify
        for (long d = 0; d < 64 * 8; d += 8) cache.Release(cache.Read(target, d, 8, null));
        void Hits()
        {
            for (int i = 0; i < 10000; i++)
            {
                var b = cache.Read(target, (i % 64) * 8L, 8, null, (i & 1) == 0 ? BufferLockMode.Shared : BufferLockMode.Exclusive);
                cache.Release(b);
            }
        }
        Hits(); // warm-up: everything JIT-compiled and tiered
        Assert.Equal(0, AllocationProbe.Measure(Hits));
        Assert.Equal(64, cache.Statistics.Misses);
        GC.KeepAlive(v);
    }
}
