// CONTRACT SKELETON (lead): signatures are fixed; the Storage owner fills in the bodies.
namespace Xfbtree.Storage;

/// <summary>Which kernel object backs an <see cref="Xfile"/>.</summary>
public enum XfileBackendKind
{
    /// <summary>memfd_create, falling back to O_TMPFILE in /dev/shm, then in $TMPDIR (Linux default).</summary>
    Auto = 0,
    /// <summary>memfd_create(MFD_CLOEXEC) only.</summary>
    Memfd,
    /// <summary>O_TMPFILE (or create+unlink) in <see cref="XfileOptions.Directory"/>; /dev/shm when that is null.</summary>
    TmpFile,
    /// <summary>BCL memory-mapped files; the only backend off Linux.</summary>
    Portable,
}

/// <summary>Creation options of an <see cref="Xfile"/>.</summary>
public sealed record XfileOptions
{
    /// <summary>Largest byte offset + 1 the xfile will ever accept (virtual, sparse). Default 1 TiB.</summary>
    public long MaxSize { get; init; } = 1L << 40;
    /// <summary>Backend selection.</summary>
    public XfileBackendKind Backend { get; init; } = XfileBackendKind.Auto;
    /// <summary>Directory for <see cref="XfileBackendKind.TmpFile"/> (spill to disk when larger than RAM).</summary>
    public string? Directory { get; init; }
    /// <summary>Name shown in /proc/self/fd and maps (memfd name).</summary>
    public string Name { get; init; } = "xfbtree-xfile";
}

/// <summary>
/// A sparse, pageable, byte-addressable scratch file (the kernel's xfile). Pages are committed
/// (fallocate) before they are exposed, so running out of memory is an exception, never SIGBUS.
/// </summary>
public sealed unsafe partial class Xfile : IDisposable
{
    /// <summary>Creates an xfile.</summary>
    public static Xfile Create(XfileOptions? options = null) => throw new NotImplementedException();

    /// <summary>Page size in bytes (the OS page size, 4096 on x86-64 Linux).</summary>
    public int PageSize => throw new NotImplementedException();

    /// <summary>Maximum size in bytes.</summary>
    public long MaxSize => throw new NotImplementedException();

    /// <summary>Backend actually in use.</summary>
    public XfileBackendKind Backend => throw new NotImplementedException();

    /// <summary>Bytes of memory (or disk) really allocated to the backing file.</summary>
    public long BytesUsed => throw new NotImplementedException();

    /// <summary>Copies bytes out; holes read as zeros and allocate nothing.</summary>
    public void Load(long position, Span<byte> destination) => throw new NotImplementedException();

    /// <summary>Copies bytes in, committing the pages touched.</summary>
    public void Store(long position, ReadOnlySpan<byte> source) => throw new NotImplementedException();

    /// <summary>
    /// Commits (if needed) the page at the page-aligned <paramref name="pageOffset"/> and returns a pointer
    /// to it. The address is stable for the lifetime of the xfile. Must be balanced by <see cref="UnpinPage"/>.
    /// </summary>
    public byte* PinPage(long pageOffset) => throw new NotImplementedException();

    /// <summary>Drops a pin taken by <see cref="PinPage"/>.</summary>
    public void UnpinPage(long pageOffset) => throw new NotImplementedException();

    /// <summary>Returns the memory of the whole pages inside the range (punch hole); they read as zeros afterwards.</summary>
    public void Discard(long position, long count) => throw new NotImplementedException();

    /// <summary>Releases the mapping and the backing file. Safe to call twice.</summary>
    public void Dispose() => throw new NotImplementedException();
}
