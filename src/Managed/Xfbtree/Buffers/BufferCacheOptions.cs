namespace Xfbtree.Buffers;

/// <summary>Cache options.</summary>
public sealed record BufferCacheOptions
{
    /// <summary>Memory the cache may keep in unheld, clean buffers before LRU reclaim. Default 256 MiB.</summary>
    public long MemoryLimitBytes { get; init; } = 256L << 20;
}

/// <summary>Counters readable by callers.</summary>
/// <param name="Hits">Read/GetNew calls that found the buffer cached.</param>
/// <param name="Misses">Read/GetNew calls that had to instantiate it.</param>
/// <param name="Reads">Reads from a target (disk: pread; xfile targets never read: their buffers are the pages).</param>
/// <param name="Writes">Writes to a target (disk: pwrite; xfile targets never write).</param>
/// <param name="BytesRead">Bytes of <paramref name="Reads"/>.</param>
/// <param name="BytesWritten">Bytes of <paramref name="Writes"/>.</param>
/// <param name="CachedBuffers">Buffers currently in the cache (held, dirty or idle).</param>
/// <param name="CachedBytes">Their bytes.</param>
public readonly record struct BufferCacheStatistics(long Hits, long Misses, long Reads, long Writes, long BytesRead, long BytesWritten, long CachedBuffers, long CachedBytes)
{
    /// <summary>Bytes in idle (unheld, clean) buffers: the part <see cref="BufferCacheOptions.MemoryLimitBytes"/> bounds.</summary>
    public long IdleBytes { get; init; }
    /// <summary>Buffers dropped by LRU reclaim.</summary>
    public long Reclaimed { get; init; }
}
