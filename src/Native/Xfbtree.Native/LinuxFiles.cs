using System.Runtime.Versioning;
using System.Text;
using Tmds.Linux;
using static Tmds.Linux.LibC;

namespace Xfbtree.Native;

/// <summary>
/// Linux file primitives for the xfile backing store (memfd, O_TMPFILE, fallocate, punch hole, fstat,
/// pread/pwrite). Every failure goes through <see cref="NativeErrors"/>. Each call holds a reference on the
/// fd handle so a concurrent Dispose cannot close (and the kernel reuse) the descriptor mid-call.
/// </summary>
[SupportedOSPlatform("linux")]
internal static unsafe class LinuxFiles
{
    private const ushort OwnerReadWrite = 0x180; // 0600: the file is private scratch memory.
    private const int MaxMemfdNameBytes = 249;

    /// <summary>memfd_create(name, MFD_CLOEXEC), then fchmod 0600 (memfds start as 0777).</summary>
    public static SafeFdHandle CreateMemfd(string name)
    {
        // The kernel refuses memfd names over 249 bytes; cut longer ones (the name is only a label).
        byte[] bytes = Encoding.UTF8.GetBytes(name);
        if (bytes.Length > MaxMemfdNameBytes)
        {
            Array.Resize(ref bytes, MaxMemfdNameBytes);
        }
        int fd;
        fixed (byte* nameBytes = NullTerminated(bytes))
        {
            fd = memfd_create(nameBytes, MFD_CLOEXEC);
        }
        if (fd < 0)
        {
            NativeErrors.Throw("memfd_create", errno, name);
        }
        var handle = new SafeFdHandle(fd);
        if (fchmod(fd, OwnerReadWrite) != 0)
        {
            int error = errno;
            handle.Dispose();
            NativeErrors.Throw("fchmod", error, name);
        }
        return handle;
    }

    /// <summary>
    /// An unnamed regular file in <paramref name="directory"/>: O_TMPFILE when the file system supports it,
    /// otherwise a uniquely named file created O_EXCL and unlinked at once.
    /// </summary>
    public static SafeFdHandle CreateUnnamedFile(string directory, out bool usedTmpFile)
    {
        int fd;
        fixed (byte* path = NullTerminated(Encoding.UTF8.GetBytes(directory)))
        {
            do
            {
                fd = open(path, O_TMPFILE | O_RDWR | O_CLOEXEC, OwnerReadWrite);
            }
            while (fd < 0 && errno == EINTR);
        }
        if (fd >= 0)
        {
            usedTmpFile = true;
            return new SafeFdHandle(fd);
        }
        int error = errno;
        // EISDIR: kernel without O_TMPFILE; EOPNOTSUPP: file system without it. Anything else is a real error.
        if (error != NativeErrors.EISDIR && error != NativeErrors.EOPNOTSUPP && error != NativeErrors.EINVAL)
        {
            NativeErrors.Throw("open(O_TMPFILE)", error, directory);
        }
        usedTmpFile = false;
        return CreateAndUnlink(directory);
    }

    /// <summary>Creates a uniquely named 0600 file with O_EXCL and unlinks it immediately.</summary>
    public static SafeFdHandle CreateAndUnlink(string directory)
    {
        for (int attempt = 0; ; attempt++)
        {
            string name = Path.Combine(directory, ".xfbtree-xfile-" + Guid.NewGuid().ToString("N"));
            fixed (byte* path = NullTerminated(Encoding.UTF8.GetBytes(name)))
            {
                int fd = open(path, O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC, OwnerReadWrite);
                if (fd < 0)
                {
                    int error = errno;
                    if ((error == NativeErrors.EEXIST || error == NativeErrors.EINTR) && attempt < 8)
                    {
                        continue;
                    }
                    NativeErrors.Throw("open(O_CREAT|O_EXCL)", error, name);
                }
                var handle = new SafeFdHandle(fd);
                if (unlink(path) != 0)
                {
                    int error = errno;
                    handle.Dispose();
                    NativeErrors.Throw("unlink", error, name);
                }
                return handle;
            }
        }
    }

    /// <summary>ftruncate: sets the (sparse) file size.</summary>
    public static void SetSize(SafeFdHandle file, long size)
    {
        bool added = false;
        try
        {
            file.DangerousAddRef(ref added);
            int rc;
            do
            {
                rc = ftruncate(file.Fd, size);
            }
            while (rc != 0 && errno == EINTR);
            if (rc != 0)
            {
                NativeErrors.Throw("ftruncate", errno, $"size {size}");
            }
        }
        finally
        {
            if (added)
            {
                file.DangerousRelease();
            }
        }
    }

    /// <summary>
    /// fallocate(mode 0): commits backing store for the range so later page faults cannot fail. On tmpfs this
    /// is where ENOSPC/ENOMEM appears (as an exception) instead of a fatal SIGBUS on first touch.
    /// </summary>
    public static void Allocate(SafeFdHandle file, long offset, long length) =>
        FallocateOrThrow(file, 0, offset, length, "fallocate");

    /// <summary>
    /// fallocate(PUNCH_HOLE|KEEP_SIZE): frees the backing store of the range; it reads as zeros afterwards.
    /// Returns false when the file system cannot punch holes (EOPNOTSUPP), so the caller can zero instead.
    /// </summary>
    public static bool TryPunchHole(SafeFdHandle file, long offset, long length)
    {
        int error = Fallocate(file, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, length);
        if (error == 0)
        {
            return true;
        }
        if (error == NativeErrors.EOPNOTSUPP)
        {
            return false;
        }
        NativeErrors.Throw("fallocate(PUNCH_HOLE)", error, $"offset {offset} length {length}");
        return false;
    }

    /// <summary>Bytes really allocated to the file (fstat st_blocks * 512).</summary>
    public static long AllocatedBytes(SafeFdHandle file) => Stat(file).st_blocks * 512L;

    /// <summary>The file size (fstat st_size).</summary>
    public static long FileSize(SafeFdHandle file) => Stat(file).st_size;

    /// <summary>pread until <paramref name="destination"/> is full or end of file; returns the bytes read.</summary>
    public static int ReadAt(SafeFdHandle file, Span<byte> destination, long offset)
    {
        bool added = false;
        try
        {
            file.DangerousAddRef(ref added);
            int total = 0;
            fixed (byte* buffer = destination)
            {
                while (total < destination.Length)
                {
                    long n = pread(file.Fd, buffer + total, (size_t)(ulong)(destination.Length - total), offset + total);
                    if (n < 0)
                    {
                        if (errno == EINTR)
                        {
                            continue;
                        }
                        NativeErrors.Throw("pread", errno, $"offset {offset + total}");
                    }
                    if (n == 0)
                    {
                        break;
                    }
                    total += (int)n;
                }
            }
            return total;
        }
        finally
        {
            if (added)
            {
                file.DangerousRelease();
            }
        }
    }

    /// <summary>pwrite the whole of <paramref name="source"/> (retries short writes and EINTR).</summary>
    public static void WriteAt(SafeFdHandle file, ReadOnlySpan<byte> source, long offset)
    {
        bool added = false;
        try
        {
            file.DangerousAddRef(ref added);
            int total = 0;
            fixed (byte* buffer = source)
            {
                while (total < source.Length)
                {
                    long n = pwrite(file.Fd, buffer + total, (size_t)(ulong)(source.Length - total), offset + total);
                    if (n < 0)
                    {
                        if (errno == EINTR)
                        {
                            continue;
                        }
                        NativeErrors.Throw("pwrite", errno, $"offset {offset + total}");
                    }
                    if (n == 0)
                    {
                        NativeErrors.Throw("pwrite", NativeErrors.ENOSPC, $"no progress at offset {offset + total}");
                    }
                    total += (int)n;
                }
            }
        }
        finally
        {
            if (added)
            {
                file.DangerousRelease();
            }
        }
    }

    /// <summary>
    /// mmap(PROT_READ|PROT_WRITE, MAP_SHARED[|MAP_NORESERVE]) of [0, length) of the file. The mapping does not
    /// keep the fd alive; the caller owns both handles.
    /// </summary>
    public static SafeMappingHandle MapShared(SafeFdHandle file, long length, bool noReserve)
    {
        bool added = false;
        try
        {
            file.DangerousAddRef(ref added);
            int flags = MAP_SHARED | (noReserve ? MAP_NORESERVE : 0);
            void* address = mmap(null, (size_t)(ulong)length, PROT_READ | PROT_WRITE, flags, file.Fd, 0);
            if (address == MAP_FAILED)
            {
                NativeErrors.Throw("mmap", errno, $"length {length}");
            }
            return new SafeMappingHandle(address, length);
        }
        finally
        {
            if (added)
            {
                file.DangerousRelease();
            }
        }
    }

    /// <summary>
    /// mmap(PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS|MAP_NORESERVE) of <paramref name="length"/> bytes whose
    /// start is a multiple of <paramref name="alignment"/> (a power of two): maps length + alignment and unmaps the
    /// unaligned head and the tail, so huge pages can line up with the mapping.
    /// </summary>
    public static SafeMappingHandle MapAnonymous(long length, long alignment)
    {
        long padded = length + alignment;
        void* raw = mmap(null, (size_t)(ulong)padded, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (raw == MAP_FAILED)
        {
            NativeErrors.Throw("mmap(MAP_ANONYMOUS)", errno, $"length {padded}");
        }
        ulong start = (ulong)raw;
        ulong aligned = (start + (ulong)alignment - 1) & ~((ulong)alignment - 1);
        ulong head = aligned - start;
        ulong tail = (ulong)padded - head - (ulong)length;
        // munmap of a piece of our own fresh mapping cannot fail for a valid, page-aligned range.
        if (head != 0)
        {
            _ = munmap(raw, (size_t)head);
        }
        if (tail != 0)
        {
            _ = munmap((void*)(aligned + (ulong)length), (size_t)tail);
        }
        return new SafeMappingHandle((void*)aligned, length);
    }

    /// <summary>madvise on [offset, offset+length) of a mapping; returns 0 or the errno (for advice that may be refused).</summary>
    public static int TryAdvise(SafeMappingHandle mapping, long offset, long length, MemoryAdvice advice)
    {
        bool added = false;
        try
        {
            mapping.DangerousAddRef(ref added);
            while (true)
            {
                if (madvise(mapping.Address + offset, (size_t)(ulong)length, ToKernel(advice)) == 0)
                {
                    return 0;
                }
                int error = errno;
                if (error != EINTR)
                {
                    return error;
                }
            }
        }
        finally
        {
            if (added)
            {
                mapping.DangerousRelease();
            }
        }
    }

    /// <summary>madvise on [offset, offset+length) of a mapping (offset page aligned).</summary>
    public static void Advise(SafeMappingHandle mapping, long offset, long length, MemoryAdvice advice)
    {
        int error = TryAdvise(mapping, offset, length, advice);
        if (error != 0)
        {
            NativeErrors.Throw("madvise", error, $"{advice} offset {offset} length {length}");
        }
    }

    private static int ToKernel(MemoryAdvice advice) => advice switch
    {
        MemoryAdvice.Normal => MADV_NORMAL,
        MemoryAdvice.Random => MADV_RANDOM,
        MemoryAdvice.Sequential => MADV_SEQUENTIAL,
        MemoryAdvice.WillNeed => MADV_WILLNEED,
        MemoryAdvice.DontNeed => MADV_DONTNEED,
        MemoryAdvice.Remove => MADV_REMOVE,
        MemoryAdvice.DontFork => MADV_DONTFORK,
        MemoryAdvice.DontDump => MADV_DONTDUMP,
        MemoryAdvice.HugePage => 14,       // MADV_HUGEPAGE
        MemoryAdvice.NoHugePage => 15,     // MADV_NOHUGEPAGE
        MemoryAdvice.PopulateWrite => 23,  // MADV_POPULATE_WRITE
        _ => throw new ArgumentOutOfRangeException(nameof(advice)),
    };

    private static void FallocateOrThrow(SafeFdHandle file, int mode, long offset, long length, string call)
    {
        int error = Fallocate(file, mode, offset, length);
        if (error != 0)
        {
            NativeErrors.Throw(call, error, $"offset {offset} length {length}");
        }
    }

    /// <summary>fallocate with EINTR retry; returns 0 or the errno.</summary>
    private static int Fallocate(SafeFdHandle file, int mode, long offset, long length)
    {
        bool added = false;
        try
        {
            file.DangerousAddRef(ref added);
            while (true)
            {
                if (fallocate(file.Fd, mode, offset, length) == 0)
                {
                    return 0;
                }
                int error = errno;
                if (error != EINTR)
                {
                    return error;
                }
            }
        }
        finally
        {
            if (added)
            {
                file.DangerousRelease();
            }
        }
    }

    private static stat Stat(SafeFdHandle file)
    {
        bool added = false;
        try
        {
            file.DangerousAddRef(ref added);
            stat status;
            if (fstat(file.Fd, &status) != 0)
            {
                NativeErrors.Throw("fstat", errno);
            }
            return status;
        }
        finally
        {
            if (added)
            {
                file.DangerousRelease();
            }
        }
    }

    private static byte[] NullTerminated(byte[] bytes)
    {
        var result = new byte[bytes.Length + 1];
        bytes.CopyTo(result, 0);
        return result;
    }
}
