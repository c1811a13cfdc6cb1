namespace Xfbtree.Storage;

/// <summary>
/// The kernel object behind an <see cref="Xfile"/>. The xfile does the bookkeeping (bounds, committed bits,
/// pins, lifetime); a backend only maps pages, commits backing store and gives it back.
/// Page addresses must be stable from the first commit until <see cref="ReleaseResources"/>.
/// </summary>
internal abstract unsafe class XfileBackend
{
    protected XfileBackend(long maxSize, int pageShift)
    {
        MaxSize = maxSize;
        PageShift = pageShift;
    }

    /// <summary>Virtual size in bytes (a multiple of the page size).</summary>
    public long MaxSize { get; }

    /// <summary>log2 of the page size.</summary>
    public int PageShift { get; }

    /// <summary>The kind actually in use (never <see cref="XfileBackendKind.Auto"/>).</summary>
    public abstract XfileBackendKind Kind { get; }

    /// <summary>Human-readable description of the backing object (for diagnostics and tests).</summary>
    public abstract string Description { get; }

    /// <summary>Bytes the OS really allocated, or null when the backend cannot tell (the xfile then reports its own count).</summary>
    public abstract long? AllocatedBytes { get; }

    /// <summary>Huge pages asked for (set once by <see cref="Xfile"/> after creation).</summary>
    public XfileHugePageMode HugePageMode { get; set; }

    /// <summary>Why <see cref="HugePageMode"/> is what it is.</summary>
    public string HugePageDescription { get; set; } = "off (not requested)";

    /// <summary>The one virtual address range mapping the whole xfile, or null when there is none (portable views).</summary>
    public virtual (nint Start, long Length)? MappedRange => null;

    /// <summary>madvise of the whole mapping for <paramref name="pattern"/> (no-op where there is no single mapping).</summary>
    public virtual void AdviseAccess(XfileAccessPattern pattern)
    {
    }

    /// <summary>The madvise advice for an access pattern (shared by the backends with one mapping).</summary>
    protected static Xfbtree.Native.MemoryAdvice ToAdvice(XfileAccessPattern pattern) => pattern switch
    {
        XfileAccessPattern.Random => Xfbtree.Native.MemoryAdvice.Random,
        XfileAccessPattern.Sequential => Xfbtree.Native.MemoryAdvice.Sequential,
        _ => Xfbtree.Native.MemoryAdvice.Normal,
    };

    /// <summary>Address of a page. Only called for committed pages (or pages being committed) under a lease.</summary>
    public abstract byte* PageAddress(long page);

    /// <summary>
    /// Allocates backing store for [first, first+count) (none of which is committed yet) so that touching
    /// those pages can never fault fatally, and leaves them reading as zeros. Throws an IOException on ENOSPC.
    /// </summary>
    public abstract void Commit(long first, long count);

    /// <summary>Gives back the backing store of committed pages [first, first+count); nobody touches them now.</summary>
    public abstract void Release(long first, long count);

    /// <summary>Unmaps and closes everything. Called exactly once, when the last lease is gone; must not throw.</summary>
    public abstract void ReleaseResources();
}
