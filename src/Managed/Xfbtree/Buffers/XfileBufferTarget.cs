using Xfbtree.Storage;

namespace Xfbtree.Buffers;

/// <summary>Buffers whose memory is pinned xfile pages (block size = page size in practice).</summary>
/// <remarks>
/// The buffer for [daddr, +lengthBB) is the xfile memory at <c>partitionStart + daddr * 512</c>: the cache pins
/// the page(s) when it instantiates the buffer and unpins them when it drops it, so a change through the buffer
/// is a change of the xfile (no copy, no read, no write; upstream's xmbuf). A buffer may be smaller than a page
/// or span several pages when the xfile maps them contiguously (always on Linux). Stale buffers (freed blocks)
/// are punched out of the xfile when dropped. The target does not own the xfile.
/// </remarks>
public sealed unsafe class XfileBufferTarget : BufferTarget
{
    private readonly long start;
    private readonly long length;
    private readonly int pageSize;
    private int poisoned;

    /// <summary>A target over the whole xfile, or over the partition [start, start+length).</summary>
    /// <exception cref="ArgumentOutOfRangeException">The start is not page aligned or the partition is not inside the xfile.</exception>
    public XfileBufferTarget(Xfile xfile, long partitionStart = 0, long partitionLength = -1)
    {
        ArgumentNullException.ThrowIfNull(xfile);
        pageSize = xfile.PageSize;
        if (partitionStart < 0 || partitionStart % pageSize != 0 || partitionStart >= xfile.MaxSize)
        {
            throw new ArgumentOutOfRangeException(nameof(partitionStart), partitionStart, "partition start must be page aligned and inside the xfile");
        }
        if (partitionLength < 0)
        {
            partitionLength = xfile.MaxSize - partitionStart;
        }
        if (partitionLength < 512 || partitionLength > xfile.MaxSize - partitionStart)
        {
            throw new ArgumentOutOfRangeException(nameof(partitionLength), partitionLength, "partition must hold at least 512 bytes and end inside the xfile");
        }
        Xfile = xfile;
        start = partitionStart;
        length = partitionLength;
        Name = $"xfile {xfile.BackingDescription} [{partitionStart}, +{partitionLength})";
    }

    /// <summary>The xfile whose memory the buffers are.</summary>
    public Xfile Xfile { get; }
    /// <inheritdoc />
    public override string Name { get; }
    /// <inheritdoc />
    public override bool IsReadOnly => false;
    /// <inheritdoc />
    public override bool IsInMemory => true;
    /// <inheritdoc />
    public override long SizeInBasicBlocks => length / 512;
    /// <summary>Byte offset of the partition in the xfile.</summary>
    public long PartitionStart => start;
    /// <summary>Bytes in the partition.</summary>
    public long PartitionLength => length;

    /// <summary>
    /// True after a transaction was cancelled with changed buffers of this target. Memory changes cannot be
    /// undone (as upstream), so the structure they belong to is garbage: the cache refuses further Read/GetNew
    /// until the owner calls <see cref="ClearPoison"/> (after discarding or rebuilding that structure).
    /// </summary>
    public bool IsPoisoned => Volatile.Read(ref poisoned) != 0;

    /// <summary>Accepts the target again after a cancelled transaction (the caller has dealt with the garbage).</summary>
    public void ClearPoison() => Volatile.Write(ref poisoned, 0);

    internal void Poison() => Volatile.Write(ref poisoned, 1);

    internal override void CheckAddress(long daddr, int lengthBB)
    {
        base.CheckAddress(daddr, lengthBB);
        if (daddr + lengthBB > SizeInBasicBlocks)
        {
            throw new BufferIOException(Name, daddr, lengthBB, $"beyond the end of the xfile partition ({SizeInBasicBlocks} BB)");
        }
        if (IsPoisoned)
        {
            throw new InvalidOperationException($"{Name}: a cancelled transaction left changes that cannot be undone; discard the structure and call ClearPoison");
        }
    }

    internal override byte* AttachMemory(long daddr, int lengthBB)
    {
        long offset = start + daddr * 512;
        long firstPage = offset & ~(long)(pageSize - 1);
        long end = offset + lengthBB * 512L;
        byte* first = null;
        long pinned = firstPage;
        try
        {
            for (; pinned < end; pinned += pageSize)
            {
                byte* p = Xfile.PinPage(pinned);
                if (first == null)
                {
                    first = p;
                }
                else if (p != first + (pinned - firstPage))
                {
                    Xfile.UnpinPage(pinned);
                    throw new NotSupportedException($"{Name}: buffer at daddr {daddr} (+{lengthBB} BB) spans xfile pages that are not mapped contiguously");
                }
            }
        }
        catch
        {
            for (long q = firstPage; q < pinned; q += pageSize)
            {
                Xfile.UnpinPage(q);
            }
            throw;
        }
        return first + (offset - firstPage);
    }

    internal override void DetachMemory(byte* data, long daddr, int lengthBB)
    {
        long offset = start + daddr * 512;
        long end = offset + lengthBB * 512L;
        for (long page = offset & ~(long)(pageSize - 1); page < end; page += pageSize)
        {
            Xfile.UnpinPage(page);
        }
    }

    internal override void ReadInto(byte* data, long daddr, int lengthBB) { }

    internal override void WriteFrom(byte* data, long daddr, int lengthBB) { }

    internal override void Forget(long daddr, int lengthBB)
    {
        try
        {
            Xfile.Discard(start + daddr * 512, lengthBB * 512L);
        }
        catch (InvalidOperationException)
        {
            // Another user still pins the page (its memory cannot be returned now; harmless, it is reused
            // later), or the xfile is already disposed (ObjectDisposedException; the memory is gone anyway).
        }
    }
}
