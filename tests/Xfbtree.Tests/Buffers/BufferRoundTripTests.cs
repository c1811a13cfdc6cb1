using Xfbtree.Buffers;
using Xfbtree.Storage;

namespace Xfbtree.Tests.Buffers;

/// <summary>Read/modify/write round trips on both targets, GetNew, statistics, short reads, read-only and size limits.</summary>
public sealed unsafe class BufferRoundTripTests
{
    [Theory]
    [InlineData(false, false)]
    [InlineData(true, false)]
    [InlineData(false, true)]
    public void DiskBufferRoundTrip_ReadModifyFlushReopen(bool direct, bool portable)
    {
        using var img = BufferTestSupport.NewImage(1 << 20);
        var v = new TestBlockVerifier();
        using (var target = DiskBufferTarget.Open(img.Path, new DiskTargetOptions { ReadOnly = false, Direct = direct, ForcePortable = portable }))
        using (var cache = new BufferCache())
        {
            Assert.Equal(2048, target.SizeInBasicBlocks);
            Assert.False(target.IsInMemory);
            Assert.Equal(direct && !portable, target.IsDirect);
            // Plain reads: the file's pattern, no verifier.
            for (long d = 0; d < 2048; d += 8)
            {
                var b = cache.Read(target, d, 8, null, BufferLockMode.Shared);
                Assert.Equal(0, (long)b.Data % DiskBufferTarget.MemoryAlignment);
                Assert.True(BufferTestSupport.HasPattern(b.Span, d));
                cache.Release(b);
            }
            // Format blocks 10..19 (4 KiB) as test blocks, and rewrite one sector of block 0 without a verifier.
            for (long i = 10; i < 20; i++)
            {
                var b = cache.GetNew(target, i * 8, 8, v);
                Assert.True(b.IsLockedExclusive);
                TestBlockVerifier.Format(b.Span, i * 8, (byte)i);
                b.MarkDirty();
                cache.Release(b);
            }
            var s = cache.Read(target, 0, 8, null);
            s.Span[100] = 0xAB;
            s.MarkDirty(100, 1);
            Assert.Equal([(0, 128)], s.GetDirtyRanges());
            cache.Release(s);
            var before = cache.Statistics;
            cache.FlushAndSync(target);
            var after = cache.Statistics;
            Assert.Equal(11, after.Writes - before.Writes);
            Assert.Equal(11 * 4096, after.BytesWritten - before.BytesWritten);
            Assert.Equal(11, target.WriteCount);
            cache.Flush();
            Assert.Equal(after.Writes, cache.Statistics.Writes); // nothing dirty any more
        }
        using (var target = DiskBufferTarget.Open(img.Path))
        using (var cache = new BufferCache())
        {
            for (long i = 10; i < 20; i++)
            {
                var b = cache.Read(target, i * 8, 8, v);
                Assert.Equal((byte)i, b.Span[100]);
                cache.Release(b);
            }
            var s = cache.Read(target, 0, 8, null);
            Assert.Equal(0xAB, s.Span[100]);
            Span<byte> original = stackalloc byte[4096];
            BufferTestSupport.Pattern(original, 0);
            s.Span[100] = original[100];
            Assert.True(BufferTestSupport.HasPattern(s.Span, 0)); // only byte 100 had changed
            cache.Release(s);
            Assert.Equal(11, cache.Statistics.Reads);
            Assert.Equal(11, cache.Statistics.Misses);
        }
    }

    [Fact]
    public void XfileBufferRoundTrip_BufferIsThePinnedPage()
    {
        using var xfile = Xfile.Create(new XfileOptions { MaxSize = 64L << 20 });
        int page = xfile.PageSize, pageBB = page / 512;
        using var target = new XfileBufferTarget(xfile, partitionStart: 16L * page, partitionLength: 1024L * page);
        using var cache = new BufferCache();
        Assert.True(target.IsInMemory);
        Assert.Equal(1024L * pageBB, target.SizeInBasicBlocks);
        var v = new TestBlockVerifier();
        for (long i = 0; i < 100; i++)
        {
            var b = cache.GetNew(target, i * pageBB, pageBB, v);
            TestBlockVerifier.Format(b.Span, i * pageBB, (byte)i);
            b.MarkDirty();
            cache.Release(b);
        }
        // Zero copy: the bytes are already in the xfile, before any flush; the page is pinned while cached.
        var probe = new byte[page];
        xfile.Load((16L + 7) * page, probe);
        Assert.Equal(7, probe[100]);
        Assert.Equal(1, xfile.PinCount((16L + 7) * page));
        var b7 = cache.Read(target, 7L * pageBB, pageBB, v);
        fixed (byte* p = b7.Span) Assert.True(p == b7.Data);
        b7.Span[200] = 0x5A;
        b7.MarkDirty(200, 1);
        cache.Release(b7);
        xfile.Load((16L + 7) * page, probe);
        Assert.Equal(0x5A, probe[200]);
        cache.Flush(target); // xfile: runs the write verifiers (CRC update here), no I/O
        var st = cache.Statistics;
        Assert.Equal(0, st.Reads);
        Assert.Equal(0, st.Writes);
        Assert.Equal(100, st.CachedBuffers);
        Assert.Equal(100, v.WritePrepares); // 100 dirty buffers (one dirtied twice)
        cache.Purge(target);
        Assert.Equal(0, cache.Statistics.CachedBuffers);
        Assert.Equal(0, xfile.PinCount((16L + 7) * page));
        // Re-instantiated from the xfile and verified (the CRC written by the flush above is valid).
        var again = cache.Read(target, 7L * pageBB, pageBB, v, BufferLockMode.Shared);
        Assert.Equal(0x5A, again.Span[200]);
        Assert.Equal(7, again.Span[100]);
        cache.Release(again);
        // Sub-page and multi-page buffers map the same xfile bytes.
        var sector = cache.Read(target, 7L * pageBB + 1, 1, null);
        Assert.Equal(7, sector.Span[100 - 512 + 512]);
        cache.Release(sector);
        var two = cache.Read(target, 6L * pageBB, 2 * pageBB, null);
        Assert.Equal(0x5A, two.Span[page + 200]);
        cache.Release(two);
        Assert.Throws<BufferIOException>(() => cache.Read(target, 1024L * pageBB, pageBB, null));
    }

    [Fact]
    public void DiskBufferShortReadPastEnd_IsAnErrorNamingTheAddress()
    {
        using var img = BufferTestSupport.NewImage(10 * 4096 + 1024);
        using var target = DiskBufferTarget.Open(img.Path);
        using var cache = new BufferCache();
        var e = Assert.Throws<BufferIOException>(() => cache.Read(target, 80, 8, null));
        Assert.Equal(80, e.Daddr);
        Assert.Contains("daddr 80", e.Message);
        Assert.Contains("short read: 1024 of 4096", e.Message);
        e = Assert.Throws<BufferIOException>(() => cache.Read(target, 1000, 8, null));
        Assert.Contains("short read: 0 of 4096", e.Message);
        Assert.Equal(0, cache.Statistics.CachedBuffers); // the failed buffers are not cached
        var ok = cache.Read(target, 80, 2, null); // the last whole sectors are fine
        cache.Release(ok);
    }

    [Fact]
    public void DiskBufferReadOnly_RefusesWrites_AndWritesNeverExtend()
    {
        using var img = BufferTestSupport.NewImage(64 * 1024);
        using var cache = new BufferCache();
        using (var ro = DiskBufferTarget.Open(img.Path))
        {
            var b = cache.Read(ro, 8, 8, null);
            b.Span[0] ^= 1;
            b.MarkDirty();
            cache.Release(b);
            var e = Assert.Throws<BufferIOException>(() => cache.Flush(ro));
            Assert.Contains("read-only", e.Message);
            Assert.Equal(8, e.Daddr);
            Assert.True(cache.Statistics.CachedBuffers == 1);
            Assert.Throws<InvalidOperationException>(() => cache.Purge(ro)); // still dirty: the cache stays consistent
            using (var tx = new BufferTransaction(cache))
            {
                tx.Read(ro, 8, 8, null).MarkStale(); // drop the change
                tx.Commit();
            }
            cache.Purge(ro);
        }
        using (var rw = BufferTestSupport.OpenRw(img.Path))
        {
            var b = cache.GetNew(rw, 128, 8, null); // exactly past the end
            b.MarkDirty();
            cache.Release(b);
            var e = Assert.Throws<BufferIOException>(() => cache.Flush(rw));
            Assert.Contains("never extended", e.Message);
            Assert.Equal(64 * 1024, new FileInfo(img.Path).Length);
        }
    }

    [Fact]
    public void DiskBufferOpen_MissingFileAndBadArguments()
    {
        Assert.Throws<FileNotFoundException>(() => DiskBufferTarget.Open("/nonexistent/xfbtree.img"));
        using var img = BufferTestSupport.NewImage(8192);
        using var t = DiskBufferTarget.Open(img.Path);
        using var cache = new BufferCache();
        Assert.Throws<BufferIOException>(() => cache.Read(t, -1, 1, null));
        Assert.Throws<BufferIOException>(() => cache.Read(t, 0, 0, null));
        Assert.Throws<BufferIOException>(() => cache.Read(t, 0, int.MaxValue, null));
    }
}
