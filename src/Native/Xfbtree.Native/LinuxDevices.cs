using System.Runtime.Versioning;
using System.Text;
using Tmds.Linux;
using static Tmds.Linux.LibC;

namespace Xfbtree.Native;

/// <summary>
/// Linux primitives for disk buffer targets (XFS image files and block devices): open with O_EXCL/O_DIRECT,
/// stat type, size, fsync, page-cache drop. pread/pwrite are <see cref="LinuxFiles.ReadAt"/> and
/// <see cref="LinuxFiles.WriteAt"/>. Every failure goes through <see cref="NativeErrors"/>.
/// </summary>
[SupportedOSPlatform("linux")]
internal static unsafe class LinuxDevices
{
    /// <summary>True when <paramref name="path"/> (after symlinks) is a block device; throws when it does not exist.</summary>
    public static bool IsBlockDevice(string path)
    {
        stat status;
        fixed (byte* p = NullTerminated(path))
        {
            if (stat(p, &status) != 0)
            {
                NativeErrors.Throw("stat", errno, path);
            }
        }
        return (status.st_mode & S_IFMT) == S_IFBLK;
    }

    /// <summary>
    /// open(path, O_RDONLY|O_RDWR [|O_EXCL] [|O_DIRECT] | O_CLOEXEC). On a block device O_EXCL (without O_CREAT)
    /// claims the device exclusively: the kernel answers EBUSY when it is mounted or claimed by another opener.
    /// </summary>
    public static SafeFdHandle Open(string path, bool writable, bool exclusive, bool direct)
    {
        int flags = (writable ? O_RDWR : O_RDONLY) | O_CLOEXEC | (exclusive ? O_EXCL : 0) | (direct ? O_DIRECT : 0);
        int fd;
        fixed (byte* p = NullTerminated(path))
        {
            do
            {
                fd = open(p, flags, 0);
            }
            while (fd < 0 && errno == EINTR);
        }
        if (fd < 0)
        {
            string what = $"open({(writable ? "O_RDWR" : "O_RDONLY")}{(exclusive ? "|O_EXCL" : "")}{(direct ? "|O_DIRECT" : "")})";
            NativeErrors.Throw(what, errno, path);
        }
        return new SafeFdHandle(fd);
    }

    /// <summary>Size in bytes: lseek(SEEK_END) (works for regular files and block devices alike).</summary>
    public static long Size(SafeFdHandle file)
    {
        bool added = false;
        try
        {
            file.DangerousAddRef(ref added);
            long end = lseek(file.Fd, 0, SEEK_END);
            if (end < 0)
            {
                NativeErrors.Throw("lseek(SEEK_END)", errno);
            }
            return end;
        }
        finally
        {
            if (added)
            {
                file.DangerousRelease();
            }
        }
    }

    /// <summary>fsync, or fdatasync when <paramref name="dataOnly"/>: written data is durable when this returns.</summary>
    public static void Sync(SafeFdHandle file, bool dataOnly)
    {
        bool added = false;
        try
        {
            file.DangerousAddRef(ref added);
            int rc;
            do
            {
                rc = dataOnly ? fdatasync(file.Fd) : fsync(file.Fd);
            }
            while (rc != 0 && errno == EINTR);
            if (rc != 0)
            {
                NativeErrors.Throw(dataOnly ? "fdatasync" : "fsync", errno);
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

    /// <summary>posix_fadvise(DONTNEED) over the whole file: drops its clean page-cache pages (cold-read benchmarks).</summary>
    public static void DropPageCache(SafeFdHandle file)
    {
        bool added = false;
        try
        {
            file.DangerousAddRef(ref added);
            int rc = posix_fadvise(file.Fd, 0, 0, POSIX_FADV_DONTNEED);
            if (rc != 0)
            {
                NativeErrors.Throw("posix_fadvise(DONTNEED)", rc);
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

    /// <summary>posix_fadvise(RANDOM) over the whole file: no readahead on this descriptor (reads bring in only the
    /// pages they ask for). Advice only: a kernel that refuses it changes nothing, so no error is raised.</summary>
    public static void AdviseRandomAccess(SafeFdHandle file)
    {
        bool added = false;
        try
        {
            file.DangerousAddRef(ref added);
            _ = posix_fadvise(file.Fd, 0, 0, POSIX_FADV_RANDOM);
        }
        finally
        {
            if (added)
            {
                file.DangerousRelease();
            }
        }
    }

    private static byte[] NullTerminated(string s)
    {
        int n = Encoding.UTF8.GetByteCount(s);
        var result = new byte[n + 1];
        Encoding.UTF8.GetBytes(s, result);
        return result;
    }
}
