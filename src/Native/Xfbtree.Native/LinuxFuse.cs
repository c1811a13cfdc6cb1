using System.Diagnostics;
using System.Runtime.InteropServices;
using System.Runtime.Versioning;
using System.Text;
using Tmds.Linux;
using static Tmds.Linux.LibC;

namespace Xfbtree.Native;

/// <summary>
/// The system calls of a FUSE server: open /dev/fuse, mount(2) and umount2(2), the mount through the setuid helper
/// fusermount3 (its _FUSE_COMMFD socket protocol), and read/write of whole requests and replies. The hot calls
/// (<see cref="Read"/>, <see cref="Write"/>) return the errno instead of throwing: ENOENT, EINTR and ENODEV are
/// part of the protocol, not failures. The caller holds a reference on the descriptor's SafeHandle meanwhile.
/// </summary>
[SupportedOSPlatform("linux")]
internal static unsafe partial class LinuxFuse
{
    /// <summary>The FUSE character device.</summary>
    public const string DevicePath = "/dev/fuse";

    public const ulong MountNoSuid = 2, MountNoDev = 4, MountReadOnly = 1;

    /// <summary>open("/dev/fuse", O_RDWR | O_CLOEXEC). Returns the errno instead of throwing (callers explain it).</summary>
    public static int OpenDevice(out SafeFdHandle? device)
    {
        int fd;
        fixed (byte* p = NullTerminated(DevicePath))
        {
            do
            {
                fd = open(p, O_RDWR | O_CLOEXEC, 0);
            }
            while (fd < 0 && errno == EINTR);
        }
        if (fd < 0)
        {
            device = null;
            return errno;
        }
        device = new SafeFdHandle(fd);
        return 0;
    }

    /// <summary>mount(2). Returns 0 or the errno.</summary>
    public static int Mount(string source, string target, string fileSystemType, ulong flags, string data)
    {
        fixed (byte* s = NullTerminated(source))
        fixed (byte* t = NullTerminated(target))
        fixed (byte* type = NullTerminated(fileSystemType))
        fixed (byte* d = NullTerminated(data))
        {
            int rc = MountCall(s, t, type, flags, d);
            return rc == 0 ? 0 : Marshal.GetLastPInvokeError();
        }
    }

    /// <summary>umount2(target, MNT_DETACH when <paramref name="detach"/>). Returns 0 or the errno.</summary>
    public static int Unmount(string target, bool detach)
    {
        const int MntDetach = 2;
        fixed (byte* t = NullTerminated(target))
        {
            return umount2(t, detach ? MntDetach : 0) == 0 ? 0 : errno;
        }
    }

    /// <summary>One read(2) of a whole request into <paramref name="buffer"/>. Returns 0 or the errno.</summary>
    public static int Read(int fd, Span<byte> buffer, out int length)
    {
        fixed (byte* p = buffer)
        {
            ssize_t n = read(fd, p, buffer.Length);
            if (n < 0)
            {
                length = 0;
                return errno;
            }
            length = (int)n;
            return 0;
        }
    }

    /// <summary>One write(2) of a whole reply. Returns 0 or the errno (a short write cannot happen on /dev/fuse).</summary>
    public static int Write(int fd, ReadOnlySpan<byte> reply)
    {
        fixed (byte* p = reply)
        {
            ssize_t n;
            do
            {
                n = write(fd, p, reply.Length);
            }
            while (n < 0 && errno == EINTR);
            return n < 0 ? errno : 0;
        }
    }

    /// <summary>
    /// ioctl(2) on a file or directory: opened read-only (O_NONBLOCK, so a fifo does not block), one ioctl with
    /// <paramref name="argument"/> as its in/out buffer, closed. Returns 0 and the ioctl's result, or the errno of the
    /// open or of the ioctl. This is how a tool talks to a mounted file system's server (FUSE_IOCTL).
    /// </summary>
    public static int IoctlOnPath(string path, uint command, Span<byte> argument, out int result)
    {
        result = 0;
        int fd;
        fixed (byte* p = NullTerminated(path))
        {
            do
            {
                fd = open(p, O_RDONLY | O_CLOEXEC | O_NONBLOCK, 0);
            }
            while (fd < 0 && errno == EINTR);
        }
        if (fd < 0)
        {
            return errno;
        }
        try
        {
            fixed (byte* a = argument)
            {
                int rc = IoctlCall(fd, command, a);
                if (rc < 0)
                {
                    return Marshal.GetLastPInvokeError();
                }
                result = rc;
                return 0;
            }
        }
        finally
        {
            _ = close(fd); // a read-only descriptor: nothing to lose on close
        }
    }

    /// <summary>The effective user and group ids of this process.</summary>
    public static (uint Uid, uint Gid) EffectiveIds() => (geteuid(), getegid());

    /// <summary>
    /// Mounts through the setuid helper as libfuse does: a socketpair, the helper started with one end in
    /// _FUSE_COMMFD and `-o OPTIONS -- DIR`, the /dev/fuse descriptor received over the other end (SCM_RIGHTS).
    /// Returns null and the helper's complaint when it fails.
    /// </summary>
    public static SafeFdHandle? MountWithHelper(string helperPath, string directory, string options, out string error)
    {
        int* pair = stackalloc int[2];
        if (socketpair(AF_UNIX, SOCK_STREAM, 0, pair) != 0)
        {
            error = $"socketpair failed: {NativeErrors.Describe(errno)}";
            return null;
        }
        using var childEnd = new SafeFdHandle(pair[0]);
        using var ourEnd = new SafeFdHandle(pair[1]);
        // Only the helper's end may cross exec; ours stays behind.
        if (fcntl(pair[1], F_SETFD, FD_CLOEXEC) < 0)
        {
            error = $"fcntl(FD_CLOEXEC) failed: {NativeErrors.Describe(errno)}";
            return null;
        }
        var start = new ProcessStartInfo(helperPath)
        {
            UseShellExecute = false,
            RedirectStandardError = true,
            RedirectStandardOutput = true,
        };
        start.ArgumentList.Add("-o");
        start.ArgumentList.Add(options);
        start.ArgumentList.Add("--");
        start.ArgumentList.Add(directory);
        start.Environment["_FUSE_COMMFD"] = pair[0].ToString(System.Globalization.CultureInfo.InvariantCulture);
        using var helper = Process.Start(start)!;
        childEnd.Dispose();
        int fd = ReceiveDescriptor(pair[1]);
        helper.WaitForExit();
        string said = (helper.StandardError.ReadToEnd() + helper.StandardOutput.ReadToEnd()).Trim();
        if (fd < 0)
        {
            error = said.Length > 0 ? said : $"{helperPath} exited with {helper.ExitCode} without handing over /dev/fuse";
            return null;
        }
        var received = new SafeFdHandle(fd);
        if (fcntl(fd, F_SETFD, FD_CLOEXEC) < 0)
        {
            error = $"fcntl(FD_CLOEXEC) on the received /dev/fuse descriptor failed: {NativeErrors.Describe(errno)}";
            received.Dispose();
            return null;
        }
        error = "";
        return received;
    }

    /// <summary>Unmounts through the setuid helper (`fusermount3 -u -z DIR`). Returns the helper's exit code.</summary>
    public static int UnmountWithHelper(string helperPath, string directory)
    {
        var start = new ProcessStartInfo(helperPath) { UseShellExecute = false, RedirectStandardError = true };
        start.ArgumentList.Add("-u");
        start.ArgumentList.Add("-z");
        start.ArgumentList.Add("--");
        start.ArgumentList.Add(directory);
        using var helper = Process.Start(start)!;
        helper.StandardError.ReadToEnd();
        helper.WaitForExit();
        return helper.ExitCode;
    }

    static int ReceiveDescriptor(int socket)
    {
        byte data;
        var iov = new iovec { iov_base = &data, iov_len = 1 };
        int controlLength = (int)CMSG_SPACE(sizeof(int));
        byte* control = stackalloc byte[controlLength];
        new Span<byte>(control, controlLength).Clear();
        var message = new msghdr { msg_iov = &iov, msg_iovlen = 1, msg_control = control, msg_controllen = controlLength };
        ssize_t n;
        do
        {
            n = recvmsg(socket, &message, 0);
        }
        while (n < 0 && errno == EINTR);
        if (n <= 0)
        {
            return -1;
        }
        cmsghdr* header = CMSG_FIRSTHDR(&message);
        if (header == null || header->cmsg_level != SOL_SOCKET || header->cmsg_type != SCM_RIGHTS)
        {
            return -1;
        }
        return *(int*)CMSG_DATA(header);
    }

    [LibraryImport("libc", EntryPoint = "ioctl", SetLastError = true)]
    private static partial int IoctlCall(int fd, ulong request, byte* argument);

    [LibraryImport("libc", EntryPoint = "mount", SetLastError = true)]
    private static partial int MountCall(byte* source, byte* target, byte* fileSystemType, ulong flags, byte* data);

    static byte[] NullTerminated(string s)
    {
        int n = Encoding.UTF8.GetByteCount(s);
        var bytes = new byte[n + 1];
        Encoding.UTF8.GetBytes(s, bytes);
        return bytes;
    }
}
