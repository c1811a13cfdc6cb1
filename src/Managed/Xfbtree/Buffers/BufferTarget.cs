namespace Xfbtree.Buffers;

/// <summary>A block device, image file or xfile that buffers are read from and written to.</summary>
/// <remarks>
/// The cache talks to a target through four internal operations: attach memory to a new buffer (disk: aligned
/// native memory; xfile: pin the page, which <em>is</em> the buffer), read into it, write from it, and detach.
/// All of them may be called from several threads at once for different addresses.
/// </remarks>
public abstract class BufferTarget : IDisposable
{
    private static long nextId;

    /// <summary>Creates a target with a process-unique <see cref="Id"/>.</summary>
    protected BufferTarget() => Id = Interlocked.Increment(ref nextId);

    /// <summary>Name used in error messages (path, or xfile name).</summary>
    public abstract string Name { get; }
    /// <summary>True when writes are refused.</summary>
    public abstract bool IsReadOnly { get; }
    /// <summary>True when buffer memory is the target's own memory (xfile: zero copy, no I/O).</summary>
    public abstract bool IsInMemory { get; }
    /// <summary>Size of the target in 512-byte basic blocks.</summary>
    public abstract long SizeInBasicBlocks { get; }
    /// <summary>Process-unique number: orders targets in a flush and keys the cache.</summary>
    public long Id { get; }
    /// <summary>Releases the target.</summary>
    public void Dispose() { Dispose(true); GC.SuppressFinalize(this); }
    /// <summary>Releases resources.</summary>
    protected virtual void Dispose(bool disposing) { }

    /// <inheritdoc/>
    public override string ToString() => Name;

    /// <summary>Memory for a new buffer of [daddr, +lengthBB): allocated (disk) or the pinned xfile page(s).</summary>
    /// <remarks>SAFETY: the pointer covers lengthBB*512 bytes until <see cref="DetachMemory"/>.</remarks>
    internal abstract unsafe byte* AttachMemory(long daddr, int lengthBB);
    /// <summary>Gives back what <see cref="AttachMemory"/> returned.</summary>
    internal abstract unsafe void DetachMemory(byte* data, long daddr, int lengthBB);
    /// <summary>Fills the buffer from the target (no-op in memory). Throws <see cref="BufferIOException"/>.</summary>
    internal abstract unsafe void ReadInto(byte* data, long daddr, int lengthBB);
    /// <summary>Writes the buffer to the target (no-op in memory). Throws <see cref="BufferIOException"/>.</summary>
    internal abstract unsafe void WriteFrom(byte* data, long daddr, int lengthBB);
    /// <summary>The block was freed and its buffer dropped (memory already detached): xfile targets punch it out.</summary>
    internal virtual void Forget(long daddr, int lengthBB) { }
    /// <summary>Durability barrier for a flush (disk: fsync; memory: nothing).</summary>
    internal virtual void SyncForFlush() { }

    /// <summary>Throws when [daddr, +lengthBB) cannot be a buffer of this target (negative, overflow, or outside an xfile partition).</summary>
    internal virtual void CheckAddress(long daddr, int lengthBB)
    {
        if (daddr < 0 || lengthBB <= 0 || lengthBB > int.MaxValue / 512 || daddr > long.MaxValue / 512 - lengthBB)
        {
            throw new BufferIOException(Name, daddr, lengthBB, "invalid buffer address or length");
        }
    }
}
