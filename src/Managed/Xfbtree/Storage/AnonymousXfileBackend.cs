using System.Runtime.Versioning;
using Xfbtree.Native;

namespace Xfbtree.Storage;

/// <summary>
/// <see cref="XfileBackendKind.Anonymous"/>: one private anonymous mapping of the full maximum size
/// (MAP_PRIVATE|MAP_ANONYMOUS|MAP_NORESERVE), aligned to 2 MiB so transparent huge pages line up with it, with
/// MADV_HUGEPAGE when huge pages were asked for (MADV_NOHUGEPAGE otherwise, so "off" stays off where THP is
/// <c>always</c>). Commit = MADV_POPULATE_WRITE (the pages are faulted in now and an error the kernel reports is an
/// exception; under exhaustion the OOM killer may act instead, see the enum). Release = MADV_DONTNEED (the range
/// reads as zeros afterwards and its memory is freed). Addresses never move.
/// </summary>
[SupportedOSPlatform("linux")]
internal sealed unsafe class AnonymousXfileBackend : XfileBackend
{
    /// <summary>Alignment of the mapping: the x86-64 / arm64 (4 KiB granule) PMD size.</summary>
    internal const long HugePageSize = 2L << 20;

    private readonly SafeMappingHandle mapping;
    private readonly byte* baseAddress;
    private int released;
    private bool populateUnsupported;

    private AnonymousXfileBackend(SafeMappingHandle mapping, long maxSize, int pageShift, bool hugePages)
        : base(maxSize, pageShift)
    {
        this.mapping = mapping;
        baseAddress = mapping.Address;
        Description = hugePages ? "private anonymous mapping (MADV_HUGEPAGE)" : "private anonymous mapping";
    }

    public override XfileBackendKind Kind => XfileBackendKind.Anonymous;

    public override string Description { get; }

    /// <summary>Resident bytes of the mapping (smaps Rss): with huge pages one committed page may hold 2 MiB resident.</summary>
    public override long? AllocatedBytes
    {
        get
        {
            XfileMemoryUsage usage = XfileSmaps.Measure((nint)baseAddress, MaxSize);
            return usage.Available ? usage.ResidentBytes : null;
        }
    }

    public override (nint Start, long Length)? MappedRange => ((nint)baseAddress, MaxSize);

    public override void AdviseAccess(XfileAccessPattern pattern) => LinuxFiles.Advise(mapping, 0, MaxSize, ToAdvice(pattern));

    public static AnonymousXfileBackend Create(long maxSize, int pageShift, bool hugePages)
    {
        SafeMappingHandle map = LinuxFiles.MapAnonymous(maxSize, HugePageSize);
        try
        {
            LinuxFiles.Advise(map, 0, maxSize, MemoryAdvice.DontFork);
            LinuxFiles.Advise(map, 0, maxSize, MemoryAdvice.DontDump);
            if (hugePages)
            {
                LinuxFiles.Advise(map, 0, maxSize, MemoryAdvice.HugePage);
            }
            else
            {
                // Refused only by kernels without THP, where "off" holds anyway.
                LinuxFiles.TryAdvise(map, 0, maxSize, MemoryAdvice.NoHugePage);
            }
            return new AnonymousXfileBackend(map, maxSize, pageShift, hugePages);
        }
        catch
        {
            map.Dispose();
            throw;
        }
    }

    public override byte* PageAddress(long page) => baseAddress + (page << PageShift);

    public override void Commit(long first, long count)
    {
        long offset = first << PageShift;
        long length = count << PageShift;
        if (!Volatile.Read(ref populateUnsupported))
        {
            int error = LinuxFiles.TryAdvise(mapping, offset, length, MemoryAdvice.PopulateWrite);
            if (error == 0)
            {
                return;
            }
            if (error != NativeErrors.EINVAL)
            {
                // ENOMEM (no memory could be charged), EFAULT/EHWPOISON: nothing is exposed; the pages stay uncommitted.
                if (error == NativeErrors.ENOMEM)
                {
                    throw new XfileFullException($"no memory to commit {length} bytes of the anonymous xfile (MADV_POPULATE_WRITE: ENOMEM)",
                        NativeErrors.Create("madvise(MADV_POPULATE_WRITE)", error, $"offset {offset} length {length}"));
                }
                NativeErrors.Throw("madvise(MADV_POPULATE_WRITE)", error, $"offset {offset} length {length}");
            }
            // Kernel before 5.14: no populate; touch the pages instead (a fault the kernel cannot serve is the OOM killer's).
            Volatile.Write(ref populateUnsupported, true);
        }
        for (long done = 0; done < length; done += 1L << PageShift)
        {
            Volatile.Write(ref baseAddress[offset + done], (byte)0);
        }
    }

    public override void Release(long first, long count) =>
        LinuxFiles.Advise(mapping, first << PageShift, count << PageShift, MemoryAdvice.DontNeed);

    public override void ReleaseResources()
    {
        if (Interlocked.Exchange(ref released, 1) != 0)
        {
            return;
        }
        mapping.Dispose();
    }
}
