using System.Runtime.Versioning;

namespace Xfbtree.Native;

/// <summary>
/// An exclusive advisory lock on a whole image file or block device, held until <see cref="Dispose"/>: one writer
/// per image. It is an open-file-description lock (fcntl F_OFD_SETLK, F_WRLCK over the whole file), not flock:
/// .NET takes flock(LOCK_SH) whenever it opens a file (File.OpenHandle, FileStream), so an flock LOCK_EX would
/// make the writer's own later opens, and every .NET reader elsewhere, fail with "used by another process".
/// OFD locks belong to the open file description, so a second <see cref="TryAcquireExclusive"/> on the same file
/// fails even inside the same process: take the lock once per writer. The kernel drops the lock when the
/// descriptor closes, also when the process dies. Advisory only: it keeps out other xfbtree writers, not programs
/// that do not ask (the loop-device check and the O_EXCL open of block devices cover the kernel).
/// </summary>
[SupportedOSPlatform("linux")]
public sealed unsafe class ImageFileLock : IDisposable
{
    const int EAGAIN = 11, EACCES = 13;

    readonly SafeFdHandle _fd;
    int _released;

    ImageFileLock(SafeFdHandle fd, string path)
    {
        _fd = fd;
        Path = path;
    }

    /// <summary>The locked file as given.</summary>
    public string Path { get; }

    /// <summary>
    /// Locks <paramref name="path"/> exclusively without waiting. Returns null when another open file description
    /// holds a lock on it (another writer); throws <see cref="NativeCallException"/> when the file cannot be opened
    /// or locked for any other reason, so a failure never passes as "not in use".
    /// </summary>
    public static ImageFileLock? TryAcquireExclusive(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        // Read-write (a write lock needs a writable descriptor) and never O_EXCL: a block device stays claimable by the writer.
        SafeFdHandle fd = LinuxDevices.Open(path, writable: true, exclusive: false, direct: false);
        int error;
        bool added = false;
        try
        {
            fd.DangerousAddRef(ref added);
            int rc;
            do
            {
                var whole = new Tmds.Linux.flock { l_type = (short)Tmds.Linux.LibC.F_WRLCK, l_whence = (short)Tmds.Linux.LibC.SEEK_SET, l_start = 0, l_len = 0, l_pid = 0 };
                rc = Tmds.Linux.LibC.fcntl(fd.Fd, Tmds.Linux.LibC.F_OFD_SETLK, &whole);
                error = rc == 0 ? 0 : Tmds.Linux.LibC.errno;
            }
            while (rc != 0 && error == NativeErrors.EINTR);
        }
        finally
        {
            if (added)
            {
                fd.DangerousRelease();
            }
        }
        if (error == 0)
        {
            return new ImageFileLock(fd, path);
        }
        fd.Dispose();
        if (error is EAGAIN or EACCES)
        {
            return null;
        }
        NativeErrors.Throw("fcntl(F_OFD_SETLK, F_WRLCK)", error, path);
        return null;
    }

    /// <summary>
    /// True when another open file description holds a lock on <paramref name="path"/> that keeps readers out (a
    /// writer's <see cref="TryAcquireExclusive"/>). Asked with F_OFD_GETLK on a read-only descriptor: nothing is
    /// taken, so a writer opening at the same moment is never turned away by the question. Throws
    /// <see cref="NativeCallException"/> when the file cannot be opened or asked, so a failure never passes as "not held".
    /// </summary>
    public static bool IsHeldByAWriter(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        SafeFdHandle fd = LinuxDevices.Open(path, writable: false, exclusive: false, direct: false);
        bool added = false;
        try
        {
            fd.DangerousAddRef(ref added);
            int rc, error;
            Tmds.Linux.flock probe;
            do
            {
                probe = new Tmds.Linux.flock { l_type = (short)Tmds.Linux.LibC.F_RDLCK, l_whence = (short)Tmds.Linux.LibC.SEEK_SET, l_start = 0, l_len = 0, l_pid = 0 };
                rc = Tmds.Linux.LibC.fcntl(fd.Fd, Tmds.Linux.LibC.F_OFD_GETLK, &probe);
                error = rc == 0 ? 0 : Tmds.Linux.LibC.errno;
            }
            while (rc != 0 && error == NativeErrors.EINTR);
            if (rc != 0)
            {
                NativeErrors.Throw("fcntl(F_OFD_GETLK)", error, path);
            }
            return probe.l_type != (short)Tmds.Linux.LibC.F_UNLCK;
        }
        finally
        {
            if (added)
            {
                fd.DangerousRelease();
            }
            fd.Dispose();
        }
    }

    /// <summary>Releases the lock (unlocks, then closes the descriptor).</summary>
    public void Dispose()
    {
        if (Interlocked.Exchange(ref _released, 1) != 0)
        {
            return;
        }
        // Unlock explicitly: a child forked by this process (Process.Start) shares the open file description, and so
        // this lock, until it execs; closing our descriptor alone would leave the image locked for that moment.
        bool added = false;
        try
        {
            _fd.DangerousAddRef(ref added);
            var whole = new Tmds.Linux.flock { l_type = (short)Tmds.Linux.LibC.F_UNLCK, l_whence = (short)Tmds.Linux.LibC.SEEK_SET, l_start = 0, l_len = 0, l_pid = 0 };
            int rc;
            do
            {
                rc = Tmds.Linux.LibC.fcntl(_fd.Fd, Tmds.Linux.LibC.F_OFD_SETLK, &whole);
            }
            while (rc != 0 && Tmds.Linux.LibC.errno == NativeErrors.EINTR);
        }
        finally
        {
            if (added)
            {
                _fd.DangerousRelease();
            }
            _fd.Dispose();
        }
    }
}
