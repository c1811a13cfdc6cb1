// CONTRACT SKELETON (lead): public signatures are fixed; the Buffers owner fills in bodies and may split
// this file into one file per type. Add members freely; do not change or remove these.
using Xfbtree.Storage;

namespace Xfbtree.Buffers;

/// <summary>How a buffer is locked while held.</summary>
public enum BufferLockMode
{
    /// <summary>Several readers.</summary>
    Shared,
    /// <summary>One writer.</summary>
    Exclusive,
}

/// <summary>A block device, image file or xfile that buffers are read from and written to.</summary>
public abstract class BufferTarget : IDisposable
{
    /// <summary>Name used in error messages (path, or xfile name).</summary>
    public abstract string Name { get; }
    /// <summary>True when writes are refused.</summary>
    public abstract bool IsReadOnly { get; }
    /// <summary>True when buffer memory is the target's own memory (xfile: zero copy, no I/O).</summary>
    public abstract bool IsInMemory { get; }
    /// <summary>Size of the target in 512-byte basic blocks.</summary>
    public abstract long SizeInBasicBlocks { get; }
    /// <summary>Releases the target.</summary>
    public void Dispose() { Dispose(true); GC.SuppressFinalize(this); }
    /// <summary>Releases resources.</summary>
    protected virtual void Dispose(bool disposing) { }
}

/// <summary>Buffers whose memory is pinned xfile pages (block size = page size in practice).</summary>
public sealed class XfileBufferTarget : BufferTarget
{
    /// <summary>A target over the whole xfile, or over the partition [start, start+length).</summary>
    public XfileBufferTarget(Xfile xfile, long partitionStart = 0, long partitionLength = -1) => throw new NotImplementedException();
    public Xfile Xfile => throw new NotImplementedException();
    public override string Name => throw new NotImplementedException();
    public override bool IsReadOnly => false;
    public override bool IsInMemory => true;
    public override long SizeInBasicBlocks => throw new NotImplementedException();
}

/// <summary>Options for opening an image file or block device.</summary>
public sealed record DiskTargetOptions
{
    /// <summary>Open read-only (the default).</summary>
    public bool ReadOnly { get; init; } = true;
    /// <summary>Use O_DIRECT when alignment allows.</summary>
    public bool Direct { get; init; }
}

/// <summary>An XFS image file or block device read with pread and written with pwrite.</summary>
public sealed class DiskBufferTarget : BufferTarget
{
    /// <summary>Opens a target; block devices are opened O_EXCL so a mounted device is refused.</summary>
    public static DiskBufferTarget Open(string path, DiskTargetOptions? options = null) => throw new NotImplementedException();
    public override string Name => throw new NotImplementedException();
    public override bool IsReadOnly => throw new NotImplementedException();
    public override bool IsInMemory => false;
    public override long SizeInBasicBlocks => throw new NotImplementedException();
}

/// <summary>Read and write verification for one block type (magic, CRC, structure).</summary>
public interface IBufferVerifier
{
    /// <summary>Block type name used in corruption messages, e.g. "rmapbt block".</summary>
    string Name { get; }
    /// <summary>Checks a freshly read buffer; throws <see cref="CorruptionException"/> on failure.</summary>
    void VerifyRead(BlockBuffer buffer);
    /// <summary>Prepares a buffer for writing (recompute CRC); may throw <see cref="CorruptionException"/>.</summary>
    void PrepareWrite(BlockBuffer buffer);
}

/// <summary>Detected metadata corruption: names the block type, its address and the failed check.</summary>
public class CorruptionException : Exception
{
    public CorruptionException(string blockType, long daddr, string check)
        : base($"corrupt {blockType} at daddr {daddr}: {check}")
    { BlockType = blockType; Daddr = daddr; Check = check; }
    public string BlockType { get; }
    public long Daddr { get; }
    public string Check { get; }
}

/// <summary>An I/O failure on a target, naming the address.</summary>
public class BufferIOException : IOException
{
    public BufferIOException(string target, long daddr, int lengthBB, string message, Exception? inner = null)
        : base($"{target}: I/O error at daddr {daddr} (+{lengthBB} BB): {message}", inner)
    { TargetName = target; Daddr = daddr; LengthBB = lengthBB; }
    public string TargetName { get; }
    public long Daddr { get; }
    public int LengthBB { get; }
}

/// <summary>A cached block: its memory stays valid while held.</summary>
public sealed unsafe class BlockBuffer
{
    public BufferTarget Target => throw new NotImplementedException();
    /// <summary>Address in 512-byte basic blocks.</summary>
    public long Daddr => throw new NotImplementedException();
    /// <summary>Length in basic blocks.</summary>
    public int LengthBB => throw new NotImplementedException();
    /// <summary>Length in bytes.</summary>
    public int Length => throw new NotImplementedException();
    /// <summary>SAFETY: valid only while the buffer is held.</summary>
    public byte* Data => throw new NotImplementedException();
    /// <summary>The block bytes; valid only while the buffer is held.</summary>
    public Span<byte> Span => throw new NotImplementedException();
    public IBufferVerifier? Verifier => throw new NotImplementedException();
    public bool IsDirty => throw new NotImplementedException();
    public bool IsStale => throw new NotImplementedException();
    /// <summary>Records that [offset, offset+length) changed.</summary>
    public void MarkDirty(int offset, int length) => throw new NotImplementedException();
    /// <summary>Records that the whole buffer changed.</summary>
    public void MarkDirty() => throw new NotImplementedException();
    /// <summary>The block was freed: never write it back (xfile targets punch the page on commit).</summary>
    public void MarkStale() => throw new NotImplementedException();
}

/// <summary>Cache options.</summary>
public sealed record BufferCacheOptions
{
    /// <summary>Memory the cache may keep in unheld, clean buffers before LRU reclaim. Default 256 MiB.</summary>
    public long MemoryLimitBytes { get; init; } = 256L << 20;
}

/// <summary>Counters readable by callers.</summary>
public readonly record struct BufferCacheStatistics(long Hits, long Misses, long Reads, long Writes, long BytesRead, long BytesWritten, long CachedBuffers, long CachedBytes);

/// <summary>Block number to pinned frame map with hold/lock, dirty tracking, verifiers and LRU reclaim.</summary>
public sealed class BufferCache : IDisposable
{
    public BufferCache(BufferCacheOptions? options = null) => throw new NotImplementedException();
    /// <summary>Returns the held and locked buffer, reading and verifying it on a miss.</summary>
    public BlockBuffer Read(BufferTarget target, long daddr, int lengthBB, IBufferVerifier? verifier, BufferLockMode mode = BufferLockMode.Exclusive) => throw new NotImplementedException();
    /// <summary>Returns a held, exclusively locked buffer for a block about to be formatted: no read, contents zeroed unless cached.</summary>
    public BlockBuffer GetNew(BufferTarget target, long daddr, int lengthBB, IBufferVerifier? verifier) => throw new NotImplementedException();
    /// <summary>Unlocks and drops a hold.</summary>
    public void Release(BlockBuffer buffer) => throw new NotImplementedException();
    /// <summary>Writes every dirty buffer (of one target, or all) in ascending daddr order, running write verifiers.</summary>
    public void Flush(BufferTarget? target = null) => throw new NotImplementedException();
    /// <summary>Drops every unheld buffer of a target (dirty ones are an error).</summary>
    public void Purge(BufferTarget target) => throw new NotImplementedException();
    public BufferCacheStatistics Statistics => throw new NotImplementedException();
    public void Dispose() => throw new NotImplementedException();
}

/// <summary>Joins buffers, logs dirty ranges, then commits (write-verify + write) or cancels.</summary>
public sealed class BufferTransaction : IDisposable
{
    public BufferTransaction(BufferCache cache) => throw new NotImplementedException();
    /// <summary>Attaches a held buffer; the transaction takes over the caller's hold and releases it at commit/cancel.</summary>
    public void Join(BlockBuffer buffer) => throw new NotImplementedException();
    /// <summary>Marks a range of a joined buffer dirty.</summary>
    public void LogRange(BlockBuffer buffer, int offset, int length) => throw new NotImplementedException();
    public void Commit() => throw new NotImplementedException();
    public void Cancel() => throw new NotImplementedException();
    /// <summary>Cancels when neither committed nor cancelled.</summary>
    public void Dispose() => throw new NotImplementedException();
}

/// <summary>XFS CRC-32C: standard Castagnoli CRC over the block with the CRC field taken as zero, stored little-endian.</summary>
public static class XfsCrc
{
    /// <summary>CRC of <paramref name="block"/> with the 4 bytes at <paramref name="crcOffset"/> taken as zero.</summary>
    public static uint Compute(ReadOnlySpan<byte> block, int crcOffset) => throw new NotImplementedException();
    /// <summary>True when the stored CRC matches.</summary>
    public static bool Verify(ReadOnlySpan<byte> block, int crcOffset) => throw new NotImplementedException();
    /// <summary>Computes and stores the CRC.</summary>
    public static void Update(Span<byte> block, int crcOffset) => throw new NotImplementedException();
}
