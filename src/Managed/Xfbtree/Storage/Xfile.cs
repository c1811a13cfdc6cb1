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
    /// <summary>
    /// A private anonymous mapping (MAP_PRIVATE|MAP_ANONYMOUS|MAP_NORESERVE, 2 MiB aligned), Linux only: the backend
    /// that gets transparent huge pages where shmem huge pages are off (<c>shmem_enabled=never</c>). Differences from
    /// the file backends: the memory is this process's alone (no descriptor, not shareable with another process);
    /// <see cref="Xfile.Discard"/> is MADV_DONTNEED; a commit cannot reserve memory the way fallocate does, it faults
    /// the pages in now (MADV_POPULATE_WRITE), so an allocation failure the kernel reports becomes an
    /// <see cref="IOException"/>, but when memory (or the memory cgroup) is exhausted the kernel's OOM killer may end
    /// this or another process instead. Cap it with <see cref="XfileOptions.CommitLimit"/>.
    /// <see cref="Xfile.BytesUsed"/> is the mapping's resident memory (Rss in /proc/self/smaps).
    /// </summary>
    Anonymous,
}

/// <summary>How an xfile's pages will be accessed (madvise of the whole mapping; see <see cref="Xfile.AdviseAccess"/>).</summary>
public enum XfileAccessPattern
{
    /// <summary>The kernel's default read-around on a page-cache miss (MADV_NORMAL: up to the device's read_ahead_kb around the fault).</summary>
    Normal = 0,
    /// <summary>No read-around: a miss reads the one page (MADV_RANDOM; the default of the Linux file backends).</summary>
    Random,
    /// <summary>Aggressive read-ahead, for a long in-order pass over a disk-backed xfile (MADV_SEQUENTIAL).</summary>
    Sequential,
}

/// <summary>Whether an <see cref="Xfile"/> should be backed by 2 MiB (transparent huge) pages.</summary>
public enum XfileHugePages
{
    /// <summary>4 KiB pages (the default; on the anonymous backend MADV_NOHUGEPAGE is set).</summary>
    Off = 0,
    /// <summary>Huge pages where the system allows them, else 4 KiB pages; <see cref="Xfile.HugePageDescription"/> says which.</summary>
    Preferred,
    /// <summary>Huge pages or <see cref="NotSupportedException"/> from <see cref="Xfile.Create"/>.</summary>
    Required,
}

/// <summary>What kind of huge pages an <see cref="Xfile"/> got.</summary>
public enum XfileHugePageMode
{
    /// <summary>None: 4 KiB pages.</summary>
    None = 0,
    /// <summary>Anonymous transparent huge pages (MADV_HUGEPAGE on the private mapping of <see cref="XfileBackendKind.Anonymous"/>).</summary>
    AnonymousThp,
    /// <summary>shmem/tmpfs transparent huge pages (memfd or tmpfs file; needs <c>shmem_enabled</c> or the tmpfs <c>huge=</c> option).</summary>
    ShmemThp,
}

/// <summary>Memory of an xfile's mapping as the kernel reports it (/proc/self/smaps), for diagnostics and benchmarks.</summary>
/// <param name="ResidentBytes">Rss of the mapping.</param>
/// <param name="AnonHugePagesBytes">AnonHugePages: anonymous memory mapped by 2 MiB pages.</param>
/// <param name="ShmemPmdMappedBytes">ShmemPmdMapped: shmem memory mapped by 2 MiB pages.</param>
/// <param name="FilePmdMappedBytes">FilePmdMapped: file memory mapped by 2 MiB pages.</param>
/// <param name="Available">False when it could not be measured (not Linux, portable backend, no smaps).</param>
public readonly record struct XfileMemoryUsage(long ResidentBytes, long AnonHugePagesBytes, long ShmemPmdMappedBytes, long FilePmdMappedBytes, bool Available)
{
    /// <summary>Bytes mapped by 2 MiB pages, any kind.</summary>
    public long HugePageBytes => AnonHugePagesBytes + ShmemPmdMappedBytes + FilePmdMappedBytes;
}

/// <summary>Creation options of an <see cref="Xfile"/>.</summary>
public sealed record XfileOptions
{
    /// <summary>Largest byte offset + 1 the xfile will ever accept (virtual, sparse). Default 1 TiB.</summary>
    public long MaxSize { get; init; } = 1L << 40;
    /// <summary>Backend selection.</summary>
    public XfileBackendKind Backend { get; init; } = XfileBackendKind.Auto;
    /// <summary>
    /// Directory for <see cref="XfileBackendKind.TmpFile"/> (spill to disk when larger than RAM). With
    /// <see cref="XfileBackendKind.Auto"/> a directory means "TmpFile there" (no memfd); with
    /// <see cref="XfileBackendKind.Portable"/> a delete-on-close file there is mapped.
    /// </summary>
    public string? Directory { get; init; }
    /// <summary>Name shown in /proc/self/fd and maps (memfd name).</summary>
    public string Name { get; init; } = "xfbtree-xfile";
    /// <summary>
    /// Most bytes the xfile may commit (null: no limit beyond the system's own). Committing past it throws
    /// <see cref="XfileFullException"/>; useful to cap a repair's memory and on backends (memfd) that are not
    /// bounded by a file system size.
    /// </summary>
    public long? CommitLimit { get; init; }
    /// <summary>
    /// 2 MiB pages (default <see cref="XfileHugePages.Off"/>). With <see cref="XfileBackendKind.Auto"/> and no
    /// <see cref="Directory"/>, <see cref="XfileHugePages.Preferred"/> picks memfd with MADV_HUGEPAGE when shmem huge pages
    /// are enabled (/sys/kernel/mm/transparent_hugepage/shmem_enabled = always, within_size, advise or force), else
    /// the <see cref="XfileBackendKind.Anonymous"/> backend when anonymous ones are (enabled = always or madvise), else
    /// 4 KiB memfd pages. An explicit backend is kept: memfd needs shmem_enabled, a tmpfs directory its <c>huge=</c>
    /// mount option; disk directories and the portable backend have none. See <see cref="Xfile.HugePageMode"/>.
    /// </summary>
    public XfileHugePages HugePages { get; init; } = XfileHugePages.Off;
}

/// <summary>
/// A sparse, pageable, byte-addressable scratch file (the kernel's xfile). Pages are committed
/// (fallocate) before they are exposed, so running out of memory is an exception, never SIGBUS.
/// </summary>
/// <remarks>
/// Thread safety: every member may be called from any number of threads at once. Bytes are plain shared
/// memory: concurrent writers of the same bytes (or a reader racing a writer) see some interleaving, as with
/// any memory; callers coordinate that. Committing a page happens once, under a lock, before any thread can
/// touch it. <see cref="Discard"/> refuses pinned pages, but must not race with Load/Store of the same pages.
/// After <see cref="Dispose"/> calls throw <see cref="ObjectDisposedException"/>, except <see cref="UnpinPage"/>:
/// the memory stays mapped until the last pin is dropped, so a pinned pointer is valid until its UnpinPage.
/// </remarks>
public sealed unsafe partial class Xfile : IDisposable
{
    private readonly XfileBackend backend;
    private readonly XfileLease lease;
    private readonly XfilePageTable pages;
    private readonly Lock commitLock = new();
    private readonly int pageShift;
    private readonly long commitLimitPages;
    private long committedPages;
    private int disposed;

    private Xfile(XfileBackend backend, long commitLimitPages)
    {
        this.backend = backend;
        pageShift = backend.PageShift;
        this.commitLimitPages = commitLimitPages;
        pages = new XfilePageTable(backend.MaxSize >> pageShift);
        lease = new XfileLease(backend);
    }

    /// <summary>Largest accepted <see cref="XfileOptions.MaxSize"/>: 128 TiB (x86-64 user address space; keeps bookkeeping bounded).</summary>
    public const long MaxSupportedSize = 1L << 47;

    /// <summary>Creates an xfile.</summary>
    /// <exception cref="ArgumentOutOfRangeException">MaxSize or CommitLimit is not positive.</exception>
    /// <exception cref="PlatformNotSupportedException">A Linux-only backend was requested elsewhere.</exception>
    /// <exception cref="IOException">The OS refused to create or map the backing file.</exception>
    public static Xfile Create(XfileOptions? options = null)
    {
        options ??= new XfileOptions();
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(options.MaxSize, nameof(options.MaxSize));
        if (options.CommitLimit is { } limit)
        {
            ArgumentOutOfRangeException.ThrowIfNegative(limit, nameof(options.CommitLimit));
        }
        int pageSize = Environment.SystemPageSize;
        int shift = BitOperationsLog2(pageSize);
        long pageMask = pageSize - 1L;
        if (options.MaxSize > MaxSupportedSize)
        {
            throw new ArgumentOutOfRangeException(nameof(options), options.MaxSize,
                $"MaxSize is larger than the supported {MaxSupportedSize} bytes (128 TiB, the x86-64 user address space)");
        }
        long maxSize = (options.MaxSize + pageMask) & ~pageMask;
        long limitPages = options.CommitLimit is { } bytes ? bytes >> shift : long.MaxValue;

        XfileBackend backend = CreateBackend(options, maxSize, shift);
        return new Xfile(backend, limitPages);
    }

    private static XfileBackend CreateBackend(XfileOptions options, long maxSize, int shift)
    {
        XfileHugePagePlan plan = XfileHugePagePolicy.Plan(options, OperatingSystem.IsLinux() ? TransparentHugePageSettings.Read() : null);
        XfileBackend backend;
        if (plan.Backend == XfileBackendKind.Portable)
        {
            backend = PortableXfileBackend.Create(options, maxSize, shift);
        }
        else if (OperatingSystem.IsLinux())
        {
            backend = plan.Backend == XfileBackendKind.Anonymous
                ? AnonymousXfileBackend.Create(maxSize, shift, plan.Mode == XfileHugePageMode.AnonymousThp)
                : LinuxXfileBackend.Create(options with { Backend = plan.Backend }, maxSize, shift, plan.Mode == XfileHugePageMode.ShmemThp);
        }
        else if (plan.Backend == XfileBackendKind.Auto)
        {
            backend = PortableXfileBackend.Create(options, maxSize, shift);
        }
        else
        {
            throw new PlatformNotSupportedException($"xfile backend {options.Backend} needs Linux; use Portable or Auto");
        }
        backend.HugePageMode = plan.Mode;
        backend.HugePageDescription = plan.Description;
        return backend;
    }

    private static int BitOperationsLog2(int pageSize)
    {
        if (pageSize <= 0 || (pageSize & (pageSize - 1)) != 0)
        {
            throw new PlatformNotSupportedException($"page size {pageSize} is not a power of two");
        }
        return System.Numerics.BitOperations.Log2((uint)pageSize);
    }

    /// <summary>Page size in bytes (the OS page size, 4096 on x86-64 Linux).</summary>
    public int PageSize => 1 << pageShift;

    /// <summary>Maximum size in bytes.</summary>
    public long MaxSize => backend.MaxSize;

    /// <summary>Backend actually in use.</summary>
    public XfileBackendKind Backend => backend.Kind;

    /// <summary>What backs this xfile, e.g. "memfd:xfbtree-xfile" or "O_TMPFILE in /dev/shm".</summary>
    public string BackingDescription => backend.Description;

    /// <summary>The huge pages this xfile asked the kernel for (see <see cref="XfileOptions.HugePages"/>).</summary>
    /// <remarks>Transparent huge pages are best effort: the kernel may still use 4 KiB pages (fragmented memory,
    /// khugepaged not yet run); <see cref="MeasureMemory"/> says how much really is in 2 MiB pages.</remarks>
    public XfileHugePageMode HugePageMode => backend.HugePageMode;

    /// <summary>Why <see cref="HugePageMode"/> is what it is, e.g. "anonymous THP (MADV_HUGEPAGE; enabled=madvise, shmem_enabled=never)".</summary>
    public string HugePageDescription => backend.HugePageDescription;

    /// <summary>
    /// Resident memory of the mapping and how much of it is mapped by 2 MiB pages (sums /proc/self/smaps
    /// Rss, AnonHugePages, ShmemPmdMapped and FilePmdMapped over the mapping's ranges). Reads a /proc file:
    /// for diagnostics, not for hot paths.
    /// </summary>
    public XfileMemoryUsage MeasureMemory()
    {
        EnterOperation();
        try
        {
            return backend.MappedRange is { } range ? XfileSmaps.Measure(range.Start, range.Length) : default;
        }
        finally
        {
            lease.DangerousRelease();
        }
    }

    /// <summary>Bytes of memory (or disk) really allocated to the backing file.</summary>
    /// <remarks>fstat st_blocks on Linux backends; the committed-page count on the portable backend, whose
    /// BCL API cannot report (or free) allocation.</remarks>
    public long BytesUsed
    {
        get
        {
            EnterOperation();
            try
            {
                return backend.AllocatedBytes ?? CommittedBytes;
            }
            finally
            {
                lease.DangerousRelease();
            }
        }
    }

    /// <summary>Bytes in pages this xfile has committed (written or pinned, and not discarded since).</summary>
    public long CommittedBytes => Volatile.Read(ref committedPages) << pageShift;

    /// <summary>True when the page at <paramref name="pageOffset"/> has backing store (was written or pinned).</summary>
    public bool IsCommitted(long pageOffset)
    {
        CheckPageOffset(pageOffset);
        return pages.IsCommitted(pageOffset >> pageShift);
    }

    /// <summary>
    /// Offset of the first committed page at or after <paramref name="position"/>'s page, or -1 when there is
    /// none (the xfile's SEEK_DATA: lets sparse-array users skip never-written regions).
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="position"/> is not inside [0, MaxSize].</exception>
    public long NextCommittedOffset(long position)
    {
        CheckRange(position, 0);
        long end = pages.PageCount;
        long page = pages.NextCommitted(position >> pageShift, end);
        return page >= end ? -1 : page << pageShift;
    }

    /// <summary>Copies bytes out; holes read as zeros and allocate nothing.</summary>
    /// <exception cref="ArgumentOutOfRangeException">The range is not inside [0, MaxSize).</exception>
    public void Load(long position, Span<byte> destination)
    {
        CheckRange(position, destination.Length);
        EnterOperation();
        try
        {
            CopyOut(position, destination);
        }
        finally
        {
            lease.DangerousRelease();
        }
    }

    /// <summary>Copies bytes in, committing the pages touched.</summary>
    /// <exception cref="ArgumentOutOfRangeException">The range is not inside [0, MaxSize).</exception>
    /// <exception cref="IOException">No space/memory to commit a page (the xfile is unchanged for that page).</exception>
    public void Store(long position, ReadOnlySpan<byte> source)
    {
        CheckRange(position, source.Length);
        if (source.IsEmpty)
        {
            return;
        }
        EnterOperation();
        try
        {
            long first = position >> pageShift;
            long last = (position + source.Length - 1) >> pageShift;
            for (long page = first; page <= last; page++)
            {
                if (!pages.IsCommitted(page))
                {
                    CommitRange(page, last + 1);
                    break;
                }
            }
            CopyIn(position, source);
        }
        finally
        {
            lease.DangerousRelease();
        }
    }

    /// <summary>
    /// Commits every page of [<paramref name="position"/>, +<paramref name="length"/>) now, in as few fallocate
    /// calls as there are uncommitted runs, so that later pins of those pages do not commit one page at a time
    /// (about 5 µs per call on tmpfs). The range is clamped to <see cref="MaxSize"/>.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">The position is negative or not below MaxSize.</exception>
    /// <exception cref="IOException">No space/memory to commit (pages committed before the failure stay committed).</exception>
    public void Reserve(long position, long length)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(length);
        CheckRange(position, 0);
        long end = Math.Min(MaxSize, position + length);
        if (end <= position)
        {
            return;
        }
        EnterOperation();
        try
        {
            CommitRange(position >> pageShift, (end + PageSize - 1) >> pageShift);
        }
        finally
        {
            lease.DangerousRelease();
        }
    }

    /// <summary>
    /// Commits (if needed) the page at the page-aligned <paramref name="pageOffset"/> and returns a pointer
    /// to it. The address is stable for the lifetime of the xfile. Must be balanced by <see cref="UnpinPage"/>.
    /// </summary>
    /// <remarks>SAFETY: the pointer covers exactly <see cref="PageSize"/> bytes and is valid until the matching
    /// <see cref="UnpinPage"/> (even if the xfile is disposed meanwhile). Pinning a committed page allocates nothing.</remarks>
    /// <exception cref="ArgumentOutOfRangeException">The offset is not page aligned or not below MaxSize.</exception>
    /// <exception cref="IOException">No space/memory to commit the page.</exception>
    public byte* PinPage(long pageOffset)
    {
        CheckPageOffset(pageOffset);
        EnterOperation();
        long page = pageOffset >> pageShift;
        try
        {
            if (!pages.IsCommitted(page))
            {
                CommitRange(page, page + 1);
            }
            pages.Pin(page);
        }
        catch
        {
            lease.DangerousRelease();
            throw;
        }
        // The lease reference taken above is kept until UnpinPage.
        return backend.PageAddress(page);
    }

    /// <summary>
    /// Keeps the mapping alive (as a pin does) without pinning any page; balance with <see cref="ReleaseMapping"/>.
    /// For owners of many pages (the in-memory btree store) that track their pages themselves.
    /// </summary>
    internal void RetainMapping() => EnterOperation();

    /// <summary>Drops a reference taken by <see cref="RetainMapping"/>.</summary>
    internal void ReleaseMapping() => lease.DangerousRelease();

    /// <summary>
    /// Commits (if needed) the page at <paramref name="pageOffset"/> and returns its address without pinning it.
    /// SAFETY: the caller holds <see cref="RetainMapping"/> while it uses the address, owns the page (nobody else
    /// discards it), and the pointer covers exactly <see cref="PageSize"/> bytes. Pin-free, so committing a page
    /// allocates no pin bookkeeping (the in-memory btree's zero-allocation growth depends on it).
    /// </summary>
    internal byte* CommitPageUnpinned(long pageOffset)
    {
        CheckPageOffset(pageOffset);
        EnterOperation();
        try
        {
            long page = pageOffset >> pageShift;
            if (!pages.IsCommitted(page))
            {
                CommitRange(page, page + 1);
            }
            return backend.PageAddress(page);
        }
        finally
        {
            lease.DangerousRelease();
        }
    }

    /// <summary>
    /// Tells the kernel how the pages will be accessed next. It only matters when the xfile's pages can be evicted to
    /// disk (<see cref="XfileBackendKind.TmpFile"/> in a disk directory, larger than the memory allowed): the Linux file
    /// backends start with <see cref="XfileAccessPattern.Random"/>, because btree blocks are visited at random and
    /// read-around on a miss (read_ahead_kb, often 128 KiB to 8 MiB) reads and charges pages nobody asked for, which
    /// thrashes a memory-limited process; switch to <see cref="XfileAccessPattern.Sequential"/> for a long in-order
    /// scan of blocks that were allocated in order. No effect on the portable backend.
    /// </summary>
    public void AdviseAccess(XfileAccessPattern pattern)
    {
        EnterOperation();
        try
        {
            backend.AdviseAccess(pattern);
        }
        finally
        {
            lease.DangerousRelease();
        }
    }

    /// <summary>Pages that may still be committed before <see cref="XfileOptions.CommitLimit"/> (long.MaxValue-ish without a limit).</summary>
    internal long CommitHeadroomPages => commitLimitPages - Volatile.Read(ref committedPages);

    /// <summary>
    /// Address of the page at <paramref name="pageOffset"/>, with no check and no lease. SAFETY: the caller holds
    /// <see cref="RetainMapping"/>, the offset is page aligned and below MaxSize, and the page is committed.
    /// </summary>
    internal byte* PageAddressUnchecked(long pageOffset) => backend.PageAddress(pageOffset >> pageShift);

    /// <summary>
    /// The address of offset 0 when the whole xfile is one mapping that never moves (the Linux backends; every page's
    /// address is then this plus its offset), else null. For prefetch hints that must not wait for a table load.
    /// </summary>
    internal byte* ContiguousBase => backend.MappedRange is { } range ? (byte*)range.Start : null;
    /// <summary>True when the xfile is one mapping that never moves (<see cref="ContiguousBase"/> is not null).</summary>
    internal bool IsOneMapping => backend.MappedRange is not null;

    /// <summary>Pins a page like <see cref="PinPage"/> and returns it as a span (balance with <see cref="UnpinPage"/>).</summary>
    public Span<byte> PinPageSpan(long pageOffset) => new(PinPage(pageOffset), PageSize);

    /// <summary>Drops a pin taken by <see cref="PinPage"/>.</summary>
    /// <exception cref="ArgumentOutOfRangeException">The offset is not page aligned or not below MaxSize.</exception>
    /// <exception cref="InvalidOperationException">The page is not pinned.</exception>
    public void UnpinPage(long pageOffset)
    {
        CheckPageOffset(pageOffset);
        if (!pages.TryUnpin(pageOffset >> pageShift))
        {
            throw new InvalidOperationException($"xfile page at offset {pageOffset} is not pinned");
        }
        lease.DangerousRelease();
    }

    /// <summary>Number of outstanding pins on the page at <paramref name="pageOffset"/>.</summary>
    public int PinCount(long pageOffset)
    {
        CheckPageOffset(pageOffset);
        return pages.PinCount(pageOffset >> pageShift);
    }

    /// <summary>Returns the memory of the whole pages inside the range (punch hole); they read as zeros afterwards.</summary>
    /// <remarks>Bytes of partially covered pages at either end are zeroed (they stay allocated), so the whole
    /// range reads as zeros afterwards.</remarks>
    /// <exception cref="ArgumentOutOfRangeException">The range is not inside [0, MaxSize).</exception>
    /// <exception cref="InvalidOperationException">A page in the range is pinned; nothing was changed.</exception>
    public void Discard(long position, long count)
    {
        CheckRange(position, count);
        if (count == 0)
        {
            return;
        }
        EnterOperation();
        try
        {
            long end = position + count;
            long firstTouched = position >> pageShift;
            long lastTouched = (end - 1) >> pageShift;
            long firstWhole = (position + PageSize - 1) >> pageShift;
            long endWhole = end >> pageShift;
            lock (commitLock)
            {
                long pinned = pages.FindPinned(firstTouched, lastTouched + 1);
                if (pinned >= 0)
                {
                    throw new InvalidOperationException($"cannot discard xfile page at offset {pinned << pageShift}: it is pinned");
                }
                ZeroPartialPage(position, Math.Min(end, (firstTouched + 1) << pageShift), firstTouched, firstWhole, endWhole);
                if (lastTouched != firstTouched)
                {
                    ZeroPartialPage(lastTouched << pageShift, end, lastTouched, firstWhole, endWhole);
                }
                // Clear the bits first so no reader touches a page while its backing store goes away.
                for (long run = pages.NextCommitted(firstWhole, endWhole); run < endWhole;)
                {
                    long runEnd = pages.NextUncommitted(run, endWhole);
                    long cleared = pages.ClearCommitted(run, runEnd);
                    Interlocked.Add(ref committedPages, -cleared);
                    backend.Release(run, runEnd - run);
                    run = pages.NextCommitted(runEnd, endWhole);
                }
            }
        }
        finally
        {
            lease.DangerousRelease();
        }
    }

    /// <summary>Releases the mapping and the backing file. Safe to call twice.</summary>
    /// <remarks>Outstanding pins keep the mapping alive until their <see cref="UnpinPage"/>.</remarks>
    public void Dispose()
    {
        if (Interlocked.Exchange(ref disposed, 1) != 0)
        {
            return;
        }
        lease.Dispose();
    }

    private void ZeroPartialPage(long from, long to, long page, long firstWhole, long endWhole)
    {
        bool isWhole = page >= firstWhole && page < endWhole;
        if (!isWhole && pages.IsCommitted(page))
        {
            ZeroBytes(from, to - from);
        }
    }

    /// <summary>Commits every uncommitted page of [first, end) under the commit lock.</summary>
    private void CommitRange(long first, long end)
    {
        lock (commitLock)
        {
            for (long run = pages.NextUncommitted(first, end); run < end;)
            {
                long runEnd = pages.NextCommitted(run, end);
                long count = runEnd - run;
                if (Volatile.Read(ref committedPages) + count > commitLimitPages)
                {
                    throw new XfileFullException(
                        $"xfile commit limit of {commitLimitPages << pageShift} bytes reached ({committedPages << pageShift} committed, {count << pageShift} more requested)");
                }
                backend.Commit(run, count);
                for (long page = run; page < runEnd; page++)
                {
                    pages.SetCommitted(page);
                }
                Interlocked.Add(ref committedPages, count);
                run = pages.NextUncommitted(runEnd, end);
            }
        }
    }

    private void EnterOperation()
    {
        ObjectDisposedException.ThrowIf(Volatile.Read(ref disposed) != 0, this);
        bool added = false;
        try
        {
            lease.DangerousAddRef(ref added);
        }
        catch (ObjectDisposedException)
        {
            throw new ObjectDisposedException(nameof(Xfile));
        }
    }

    private void CheckRange(long position, long length)
    {
        if (position < 0 || length < 0 || position > backend.MaxSize - length)
        {
            ThrowOutOfRange(position, length);
        }
    }

    private void CheckPageOffset(long pageOffset)
    {
        if (pageOffset < 0 || pageOffset >= backend.MaxSize || (pageOffset & (PageSize - 1)) != 0)
        {
            ThrowBadPageOffset(pageOffset);
        }
    }

    private void ThrowOutOfRange(long position, long length) =>
        throw new ArgumentOutOfRangeException(nameof(position), position,
            $"xfile range [{position}, +{length}) is outside [0, {backend.MaxSize})");

    private void ThrowBadPageOffset(long pageOffset) =>
        throw new ArgumentOutOfRangeException(nameof(pageOffset), pageOffset,
            $"xfile page offset must be a multiple of {PageSize} below {backend.MaxSize}");
}
