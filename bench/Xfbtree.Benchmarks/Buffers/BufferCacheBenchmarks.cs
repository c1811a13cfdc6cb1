using BenchmarkDotNet.Attributes;
using Xfbtree.Buffers;
using Xfbtree.Storage;

namespace Xfbtree.Benchmarks.Buffers;

/// <summary>
/// Cache-hit cost: Read + Release of a cached 4 KiB buffer, on a disk target (image file) and on an xfile
/// target (pinned memfd page). 1,024 operations per invocation: over one block (hot) or over 1,024 cached
/// blocks in a pseudo-random order. Allocated bytes per operation must be 0.
/// </summary>
[MemoryDiagnoser]
public class BufferCacheHitBenchmarks
{
    private const int Operations = 1024;
    private readonly long[] daddrs = new long[Operations];
    private string? imagePath;
    private Xfile? xfile;
    private BufferTarget? target;
    private BufferCache? cache;

    [Params("disk", "xfile")]
    public string Target { get; set; } = "disk";

    [Params(BufferLockMode.Shared, BufferLockMode.Exclusive)]
    public BufferLockMode Mode { get; set; }

    [GlobalSetup]
    public void Setup()
    {
        if (Target == "disk")
        {
            imagePath = Path.Combine(Path.GetTempPath(), $"xfbtree-bench-hit-{Guid.NewGuid():N}.img");
            using (var fs = File.Create(imagePath)) fs.SetLength((long)Operations * 4096);
            target = DiskBufferTarget.Open(imagePath);
        }
        else
        {
            xfile = Xfile.Create(new XfileOptions { MaxSize = 1L << 30, Name = "xfbtree-bench-hit" });
            target = new XfileBufferTarget(xfile);
        }
        cache = new BufferCache();
        var random = new Random(42);
        for (int i = 0; i < Operations; i++)
        {
            daddrs[i] = random.Next(Operations) * 8L;
            cache.Release(cache.Read(target, i * 8L, 8, null));
        }
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        cache?.Dispose();
        target?.Dispose();
        xfile?.Dispose();
        if (imagePath != null) File.Delete(imagePath);
    }

    [Benchmark(OperationsPerInvoke = Operations, Description = "hit, same block")]
    public void HitSameBlock()
    {
        var c = cache!;
        var t = target!;
        var mode = Mode;
        for (int i = 0; i < Operations; i++)
        {
            c.Release(c.Read(t, 64, 8, null, mode));
        }
    }

    [Benchmark(OperationsPerInvoke = Operations, Description = "hit, 1024 blocks random")]
    public void HitRandomBlocks()
    {
        var c = cache!;
        var t = target!;
        var mode = Mode;
        var d = daddrs;
        for (int i = 0; i < d.Length; i++)
        {
            c.Release(c.Read(t, d[i], 8, null, mode));
        }
    }
}

/// <summary>
/// Cold reads from an image file through the cache: 64 MiB of 4 KiB blocks, the OS page cache of the file
/// dropped (posix_fadvise DONTNEED) and the buffer cache purged before every iteration, read in ascending
/// daddr order or in a pseudo-random order, buffered or O_DIRECT. One operation = one 4 KiB block;
/// MB/s = 4096 / (ns per op) * 1000.
/// </summary>
[MemoryDiagnoser]
public class BufferColdReadBenchmarks
{
    private const int Blocks = 16384;
    private readonly long[] order = new long[Blocks];
    private string? imagePath;
    private DiskBufferTarget? target;
    private BufferCache? cache;

    [Params(false, true)]
    public bool Direct { get; set; }

    [Params(false, true)]
    public bool RandomOrder { get; set; }

    [GlobalSetup]
    public void Setup()
    {
        imagePath = Path.Combine(Path.GetTempPath(), $"xfbtree-bench-cold-{Guid.NewGuid():N}.img");
        var random = new Random(7);
        var block = new byte[1 << 20];
        using (var fs = new FileStream(imagePath, FileMode.CreateNew, FileAccess.Write))
        {
            for (int i = 0; i < Blocks * 4096 / block.Length; i++)
            {
                random.NextBytes(block);
                fs.Write(block);
            }
            fs.Flush(flushToDisk: true);
        }
        for (int i = 0; i < Blocks; i++) order[i] = i * 8L;
        if (RandomOrder) random.Shuffle(order);
        target = DiskBufferTarget.Open(imagePath, new DiskTargetOptions { Direct = Direct });
        if (Direct && !target.IsDirect) throw new InvalidOperationException("O_DIRECT refused by the temp file system");
        cache = new BufferCache(new BufferCacheOptions { MemoryLimitBytes = 256L << 20 });
    }

    [IterationSetup]
    public void Drop()
    {
        cache!.Purge(target!);
        target!.DropOsCache();
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        cache?.Dispose();
        target?.Dispose();
        if (imagePath != null) File.Delete(imagePath);
    }

    [Benchmark(OperationsPerInvoke = Blocks, Description = "cold 4 KiB block read")]
    public long ColdRead()
    {
        var c = cache!;
        var t = target!;
        long sum = 0;
        foreach (long d in order)
        {
            var b = c.Read(t, d, 8, null, BufferLockMode.Shared);
            sum += b.Span[17];
            c.Release(b);
        }
        return sum;
    }
}
