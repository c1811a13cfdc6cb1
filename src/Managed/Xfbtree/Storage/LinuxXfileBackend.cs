using System.Runtime.Versioning;
using Xfbtree.Native;

namespace Xfbtree.Storage;

/// <summary>
/// memfd or O_TMPFILE backing: the file is ftruncated (sparse) to the full maximum size and mapped once,
/// MAP_SHARED|MAP_NORESERVE, so page addresses never move and one mapping covers any size (vm.max_map_count is
/// never a concern). Pages are committed with fallocate before they are touched.
/// </summary>
[SupportedOSPlatform("linux")]
internal sealed unsafe class LinuxXfileBackend : XfileBackend
{
    private readonly SafeFdHandle file;
    private readonly SafeMappingHandle mapping;
    private readonly byte* baseAddress;
    private int released;

    private LinuxXfileBackend(SafeFdHandle file, SafeMappingHandle mapping, long maxSize, int pageShift, XfileBackendKind kind, string description)
        : base(maxSize, pageShift)
    {
        this.file = file;
        this.mapping = mapping;
        baseAddress = mapping.Address;
        Kind = kind;
        Description = description;
    }

    public override XfileBackendKind Kind { get; }

    public override string Description { get; }

    public override long? AllocatedBytes => LinuxFiles.AllocatedBytes(file);

    /// <summary>The descriptor owner (tests use it to cross-check with fstat).</summary>
    internal SafeFdHandle File => file;

    public static LinuxXfileBackend Create(XfileOptions options, long maxSize, int pageShift, bool hugePages = false)
    {
        SafeFdHandle fd;
        XfileBackendKind kind;
        string description;
        switch (options.Backend)
        {
            case XfileBackendKind.Memfd:
                fd = LinuxFiles.CreateMemfd(options.Name);
                kind = XfileBackendKind.Memfd;
                description = "memfd:" + options.Name;
                break;
            case XfileBackendKind.TmpFile:
                fd = OpenInDirectory(options.Directory ?? "/dev/shm", out description);
                kind = XfileBackendKind.TmpFile;
                break;
            default:
                if (options.Directory is { } chosen)
                {
                    // An explicit directory is the caller's choice of where the bytes live (e.g. spill to disk).
                    fd = OpenInDirectory(chosen, out description);
                    kind = XfileBackendKind.TmpFile;
                }
                else
                {
                    (fd, kind, description) = OpenAuto(options);
                }
                break;
        }

        SafeMappingHandle? map = null;
        try
        {
            LinuxFiles.SetSize(fd, maxSize);
            map = LinuxFiles.MapShared(fd, maxSize, noReserve: true);
            // A child process must not inherit (and copy page tables of) a huge scratch mapping, and a core dump
            // should not try to write a terabyte of holes.
            LinuxFiles.Advise(map, 0, maxSize, MemoryAdvice.DontFork);
            LinuxFiles.Advise(map, 0, maxSize, MemoryAdvice.DontDump);
            // Btree blocks are visited at random: no read-around when a page evicted to disk is faulted back
            // (read_ahead_kb is 8 MiB on some machines; each miss would read and charge 8 MiB). See Xfile.AdviseAccess.
            LinuxFiles.Advise(map, 0, maxSize, MemoryAdvice.Random);
            if (hugePages)
            {
                // shmem_enabled=advise (or a tmpfs mounted huge=advise) only uses huge pages for madvised ranges.
                LinuxFiles.Advise(map, 0, maxSize, MemoryAdvice.HugePage);
            }
            return new LinuxXfileBackend(fd, map, maxSize, pageShift, kind, description);
        }
        catch
        {
            map?.Dispose();
            fd.Dispose();
            throw;
        }
    }

    private static (SafeFdHandle, XfileBackendKind, string) OpenAuto(XfileOptions options)
    {
        // Order from the design: memfd, then O_TMPFILE in /dev/shm, then in $TMPDIR.
        var failures = new List<Exception>();
        try
        {
            return (LinuxFiles.CreateMemfd(options.Name), XfileBackendKind.Memfd, "memfd:" + options.Name);
        }
        catch (NativeCallException e)
        {
            failures.Add(e);
        }
        foreach (string directory in new[] { "/dev/shm", Path.GetTempPath() })
        {
            try
            {
                return (OpenInDirectory(directory, out string description), XfileBackendKind.TmpFile, description);
            }
            catch (NativeCallException e)
            {
                failures.Add(e);
            }
        }
        throw new IOException("no xfile backing store could be created (memfd, O_TMPFILE in /dev/shm and $TMPDIR)",
            new AggregateException(failures));
    }

    private static SafeFdHandle OpenInDirectory(string directory, out string description)
    {
        SafeFdHandle fd = LinuxFiles.CreateUnnamedFile(directory, out bool usedTmpFile);
        description = (usedTmpFile ? "O_TMPFILE in " : "create+unlink in ") + directory;
        return fd;
    }

    public override byte* PageAddress(long page) => baseAddress + (page << PageShift);

    public override (nint Start, long Length)? MappedRange => ((nint)baseAddress, MaxSize);

    public override void AdviseAccess(XfileAccessPattern pattern) => LinuxFiles.Advise(mapping, 0, MaxSize, ToAdvice(pattern));

    public override void Commit(long first, long count) =>
        LinuxFiles.Allocate(file, first << PageShift, count << PageShift);

    public override void Release(long first, long count)
    {
        long offset = first << PageShift;
        long length = count << PageShift;
        if (!LinuxFiles.TryPunchHole(file, offset, length))
        {
            // File system without hole punching: the memory stays allocated, but the contents must read as zeros.
            for (long done = 0; done < length; done += 1 << 30)
            {
                new Span<byte>(baseAddress + offset + done, (int)Math.Min(length - done, 1 << 30)).Clear();
            }
        }
    }

    public override void ReleaseResources()
    {
        if (Interlocked.Exchange(ref released, 1) != 0)
        {
            return;
        }
        mapping.Dispose();
        file.Dispose();
    }
}
