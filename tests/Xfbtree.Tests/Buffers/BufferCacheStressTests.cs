using System.Buffers.Binary;
using Xfbtree.Buffers;

namespace Xfbtree.Tests.Buffers;

/// <summary>
/// Concurrent misses, hits, writers, reclaim and flushes on a cache far smaller than the working set: no torn
/// block, no lost update (a block's generation never goes back, even after it was reclaimed and re-read from
/// disk), the memory limit holds, and at the end the disk holds every block's last generation.
/// </summary>
public sealed class BufferCacheStressTests
{
    const int Blocks = 64;

    static void Fill(Span<byte> s, long daddr, ulong gen)
    {
        for (int i = 0; i < s.Length; i += 8) BinaryPrimitives.WriteUInt64LittleEndian(s[i..], i == 0 ? gen : gen * 0x9E3779B97F4A7C15UL ^ (ulong)daddr ^ (ulong)i);
    }

    static ulong Check(ReadOnlySpan<byte> s, long daddr)
    {
        ulong gen = BinaryPrimitives.ReadUInt64LittleEndian(s);
        for (int i = 8; i < s.Length; i += 8)
            if (BinaryPrimitives.ReadUInt64LittleEndian(s[i..]) != (gen * 0x9E3779B97F4A7C15UL ^ (ulong)daddr ^ (ulong)i))
                throw new InvalidOperationException($"torn or wrong block at daddr {daddr} (gen {gen})");
        return gen;
    }

    [Fact]
    public void BufferCacheStress_ConcurrentMissesReclaimWritersAndFlushes()
    {
        using var img = BufferTestSupport.NewImage(Blocks * 4096L, patterned: false);
        using (var fs = new FileStream(img.Path, FileMode.Open, FileAccess.Write))
        {
            var b = new byte[4096];
            for (long i = 0; i < Blocks; i++) { Fill(b, i * 8, 0); fs.Write(b); }
        }
        using var target = BufferTestSupport.OpenRw(img.Path);
        long limit = 6 * 4096;
        using var cache = new BufferCache(new BufferCacheOptions { MemoryLimitBytes = limit });
        var lastWritten = new ulong[Blocks];
        var stop = DateTime.UtcNow.AddSeconds(1.5);
        var errors = new List<string>();
        long ops = 0;
        var workers = Enumerable.Range(0, 3).Select(w => new Thread(() =>
        {
            var rng = new Random(w);
            var seen = new ulong[Blocks];
            try
            {
                while (DateTime.UtcNow < stop)
                {
                    int blk = rng.Next(Blocks);
                    long d = blk * 8L;
                    bool write = rng.Next(5) == 0;
                    var buf = cache.Read(target, d, 8, null, write ? BufferLockMode.Exclusive : BufferLockMode.Shared);
                    try
                    {
                        ulong gen = Check(buf.Span, d);
                        if (gen < seen[blk]) throw new InvalidOperationException($"daddr {d}: generation went back {seen[blk]} -> {gen}");
                        seen[blk] = gen;
                        if (write)
                        {
                            Fill(buf.Span, d, gen + 1);
                            buf.MarkDirty();
                            Volatile.Write(ref lastWritten[blk], gen + 1);
                        }
                    }
                    finally { cache.Release(buf); }
                    Interlocked.Increment(ref ops);
                    if (cache.Statistics.IdleBytes > limit) throw new InvalidOperationException("idle bytes above the limit");
                }
            }
            catch (Exception e) { lock (errors) errors.Add(e.Message); }
        })).ToList();
        var flusher = new Thread(() =>
        {
            try { while (DateTime.UtcNow < stop) { cache.Flush(target); Thread.Sleep(20); } }
            catch (Exception e) { lock (errors) errors.Add("flush: " + e.Message); }
        });
        workers.ForEach(t => t.Start());
        flusher.Start();
        workers.ForEach(t => t.Join());
        flusher.Join();
        Assert.Empty(errors);
        cache.Flush(target);
        var st = cache.Statistics;
        Assert.True(st.Reclaimed > 100 && ops > 1000, $"{ops} ops, {st}");
        using var check = DiskBufferTarget.Open(img.Path);
        using var fresh = new BufferCache();
        for (int blk = 0; blk < Blocks; blk++)
        {
            var b = fresh.Read(check, blk * 8L, 8, null);
            Assert.Equal(lastWritten[blk], Check(b.Span, blk * 8L));
            fresh.Release(b);
        }
    }
}
