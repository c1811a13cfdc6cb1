using System.Buffers.Binary;
using System.Globalization;
using System.Runtime.Versioning;
using Xfbtree.Native;

namespace Xfbtree.Fuse;

/// <summary>How to mount.</summary>
internal sealed record FuseMountOptions
{
    /// <summary>What /proc/mounts shows as the source (the image path).</summary>
    public required string Source { get; init; }

    /// <summary>The subtype: the mount's type shows as fuse.NAME.</summary>
    public string Subtype { get; init; } = "xfbtree";

    /// <summary>Other users may use the mount (the kernel then checks permissions: default_permissions).</summary>
    public bool AllowOther { get; init; }

    /// <summary>The kernel checks permissions from the attributes the server returns (always on with <see cref="AllowOther"/>).</summary>
    public bool DefaultPermissions { get; init; } = true;

    public bool ReadOnly { get; init; }

    /// <summary>The root directory's mode as the kernel needs it before the first GETATTR (type bits included).</summary>
    public uint RootMode { get; init; } = 0x41ED; // S_IFDIR | 0755
}

/// <summary>Mounting failed: the message is one line a user understands.</summary>
internal sealed class FuseMountException : Exception
{
    public FuseMountException(string message) : base(message) { }

    public FuseMountException(string message, Exception inner) : base(message, inner) { }

    public FuseMountException() { }
}

/// <summary>
/// A FUSE connection: /dev/fuse opened and mounted on a directory, as root with mount(2), otherwise through the
/// setuid helper fusermount3 when it is installed (the way libfuse mounts for users). <see cref="Unmount"/>
/// detaches the mount (the server's reads then answer ENODEV once the kernel has no more use for it);
/// <see cref="Dispose"/> unmounts if needed and closes the device.
/// </summary>
[SupportedOSPlatform("linux")]
internal sealed class FuseSession : IDisposable
{
    readonly string? _helper;
    int _unmounted;

    FuseSession(SafeFdHandle device, string directory, string? helper)
    {
        Device = device;
        Directory = directory;
        _helper = helper;
    }

    internal SafeFdHandle Device { get; }

    /// <summary>The mount point (absolute).</summary>
    public string Directory { get; }

    /// <summary>Mounts <paramref name="directory"/>. Throws <see cref="FuseMountException"/> with the reason.</summary>
    public static FuseSession Mount(string directory, FuseMountOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        directory = Path.GetFullPath(directory);
        if (!System.IO.Directory.Exists(directory))
        {
            throw new FuseMountException($"{directory} is not a directory");
        }
        if (!File.Exists(LinuxFuse.DevicePath))
        {
            throw new FuseMountException("no /dev/fuse: this kernel has no FUSE (load it with modprobe fuse)");
        }
        var (uid, gid) = LinuxFuse.EffectiveIds();
        string common = (options.DefaultPermissions || options.AllowOther ? "default_permissions," : "")
            + (options.AllowOther ? "allow_other," : "");
        if (uid == 0)
        {
            int error = LinuxFuse.OpenDevice(out SafeFdHandle? device);
            if (error != 0)
            {
                throw new FuseMountException(error == FuseErrno.ENOENT
                    ? "no /dev/fuse: this kernel has no FUSE device node (load it with modprobe fuse)"
                    : $"cannot open /dev/fuse: {NativeErrors.Describe(error)}");
            }
            bool added = false;
            try
            {
                device!.DangerousAddRef(ref added);
                string data = string.Create(CultureInfo.InvariantCulture,
                    $"fd={device.Fd},rootmode={Convert.ToString(options.RootMode, 8)},user_id={uid},group_id={gid}");
                if (common.Length > 0) data += "," + common.TrimEnd(',');
                ulong flags = LinuxFuse.MountNoSuid | LinuxFuse.MountNoDev | (options.ReadOnly ? LinuxFuse.MountReadOnly : 0);
                error = LinuxFuse.Mount(options.Source, directory, "fuse." + options.Subtype, flags, data);
            }
            finally
            {
                if (added) device!.DangerousRelease();
            }
            if (error != 0)
            {
                device.Dispose();
                throw new FuseMountException(error == FuseErrno.EPERM
                    ? $"no permission to mount on {directory}"
                    : $"mount on {directory} failed: {NativeErrors.Describe(error)}");
            }
            return new FuseSession(device, directory, helper: null);
        }
        string? helper = FindHelper();
        if (helper is null)
        {
            throw new FuseMountException("no permission to mount: run as root, or install fusermount3 (Debian package fuse3) to mount as a user");
        }
        string helperOptions = common + $"fsname={EscapeOption(options.Source)},subtype={options.Subtype},nosuid,nodev" + (options.ReadOnly ? ",ro" : ",rw");
        SafeFdHandle? received = LinuxFuse.MountWithHelper(helper, directory, helperOptions, out string complaint);
        if (received is null)
        {
            throw new FuseMountException($"fusermount3 refused to mount on {directory}: {complaint.ReplaceLineEndings(" ")}");
        }
        return new FuseSession(received, directory, helper);
    }

    /// <summary>
    /// Sets the kernel's readahead window for this mount (the connection's bdi, /sys/class/bdi/MAJ:MIN/read_ahead_kb)
    /// to <paramref name="kib"/> KiB, so that a sequential read arrives as READ requests of up to that size instead
    /// of the bdi's default 128 KiB. INIT cannot raise it (the kernel keeps the smaller of its window and the
    /// server's max_readahead); root can, through sysfs. Returns null when set, otherwise why not (a user mount
    /// cannot write sysfs; the mount works the same with the default window). Call once INIT has been answered.
    /// The device number comes from /proc/self/mountinfo: a stat of the mount point would be a GETATTR to this
    /// very server, which may not be serving yet.
    /// </summary>
    public string? SetReadahead(int kib)
    {
        try
        {
            if (BdiDevice() is not { } device) return $"{Directory} is not in /proc/self/mountinfo";
            File.WriteAllText($"/sys/class/bdi/{device}/read_ahead_kb", kib.ToString(CultureInfo.InvariantCulture));
            return null;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return e.Message;
        }
    }

    /// <summary>
    /// The most file data the kernel lets dirty (and under writeback) pages of this mount's backing device hold:
    /// the FUSE module gives each mount a strict limit of 1 % of the dirty threshold, which
    /// <c>/sys/class/bdi/MAJ:MIN/max_bytes</c> shows (kernels since 6.2). Null when it cannot be read.
    /// </summary>
    public long? DirtyLimitBytes()
    {
        try
        {
            if (BdiDevice() is not { } device) return null;
            string text = File.ReadAllText($"/sys/class/bdi/{device}/max_bytes").Trim();
            return long.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out long bytes) && bytes > 0 ? bytes : null;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return null;
        }
    }

    /// <summary>MAJ:MIN of the mount on <see cref="Directory"/> from /proc/self/mountinfo (a stat of the mount point would be a request to ourselves).</summary>
    string? BdiDevice()
    {
        string? device = null;
        string mountPoint = EscapeMountInfo(Directory);
        foreach (string line in File.ReadLines("/proc/self/mountinfo"))
        {
            // ID PARENT MAJ:MIN ROOT MOUNTPOINT ...; the last line for the directory is the mount on top.
            string[] fields = line.Split(' ');
            if (fields.Length > 4 && fields[4] == mountPoint) device = fields[2];
        }
        return device;
    }

    /// <summary>A path as /proc/self/mountinfo writes it: space, tab, newline and backslash as \ooo (octal).</summary>
    static string EscapeMountInfo(string path) => path.Replace("\\", "\\134", StringComparison.Ordinal).Replace(" ", "\\040", StringComparison.Ordinal)
        .Replace("\t", "\\011", StringComparison.Ordinal).Replace("\n", "\\012", StringComparison.Ordinal);

    /// <summary>Detaches the mount (idempotent). Returns false when the kernel refused (it is already gone, for example).</summary>
    public bool Unmount()
    {
        if (Interlocked.Exchange(ref _unmounted, 1) != 0)
        {
            return true;
        }
        return _helper is null ? LinuxFuse.Unmount(Directory, detach: true) == 0 : LinuxFuse.UnmountWithHelper(_helper, Directory) == 0;
    }

    /// <summary>
    /// Tells the kernel that the attributes it keeps for <paramref name="nodeId"/> are stale (FUSE_NOTIFY_INVAL_INODE
    /// with offset -1: the attributes only, the cached pages stay), so its next use asks with GETATTR. For changes
    /// the server makes behind the kernel's back (an online repair). Returns 0, ENOENT when the kernel holds no
    /// such node, or another errno. Takes no lock of the kernel's that a request holds, so any thread may call it,
    /// a worker in the middle of a request too.
    /// </summary>
    public int InvalidateAttributes(ulong nodeId)
    {
        Span<byte> message = stackalloc byte[NotifyHeaderSize + 24];
        WriteNotifyHeader(message, NotifyInvalInode);
        BinaryPrimitives.WriteUInt64LittleEndian(message[NotifyHeaderSize..], nodeId);
        BinaryPrimitives.WriteInt64LittleEndian(message[(NotifyHeaderSize + 8)..], -1);
        BinaryPrimitives.WriteInt64LittleEndian(message[(NotifyHeaderSize + 16)..], 0);
        return Notify(message);
    }

    /// <summary>
    /// Tells the kernel that every name it caches (positive and negative entries, of every directory) is stale
    /// (FUSE_NOTIFY_INC_EPOCH, protocol 7.44, Linux 6.16): each is looked up again at its next use. Returns 0, or
    /// EINVAL from a kernel that predates it (its names then stay until their timeout). Takes no lock.
    /// </summary>
    public int InvalidateAllNames()
    {
        Span<byte> message = stackalloc byte[NotifyHeaderSize];
        WriteNotifyHeader(message, NotifyIncEpoch);
        return Notify(message);
    }

    const int NotifyHeaderSize = 16;
    const int NotifyInvalInode = 2, NotifyIncEpoch = 8;

    /// <summary>struct fuse_out_header of a notification: unique 0, the code where a reply has its error.</summary>
    static void WriteNotifyHeader(Span<byte> message, int code)
    {
        BinaryPrimitives.WriteUInt32LittleEndian(message, (uint)message.Length);
        BinaryPrimitives.WriteInt32LittleEndian(message[4..], code);
        BinaryPrimitives.WriteUInt64LittleEndian(message[8..], 0);
    }

    int Notify(ReadOnlySpan<byte> message)
    {
        bool added = false;
        try
        {
            Device.DangerousAddRef(ref added);
            return LinuxFuse.Write(Device.Fd, message);
        }
        catch (ObjectDisposedException)
        {
            return FuseErrno.ENODEV; // the session is over
        }
        finally
        {
            if (added) Device.DangerousRelease();
        }
    }

    /// <summary>
    /// The kernel ended the session (the server read ENODEV): the mount is gone already, and DIR may by now carry
    /// someone else's mount, which a later <see cref="Unmount"/> must not detach.
    /// </summary>
    internal void MarkEnded() => Interlocked.Exchange(ref _unmounted, 1);

    public void Dispose()
    {
        Unmount();
        Device.Dispose();
    }

    static string? FindHelper()
    {
        foreach (string dir in (Environment.GetEnvironmentVariable("PATH") ?? "/usr/bin:/bin").Split(':'))
        {
            string candidate = Path.Combine(dir.Length == 0 ? "." : dir, "fusermount3");
            if (File.Exists(candidate)) return candidate;
        }
        return File.Exists("/usr/bin/fusermount3") ? "/usr/bin/fusermount3" : null;
    }

    // fusermount3 splits options on commas; libfuse escapes commas and backslashes in fsname with a backslash.
    static string EscapeOption(string value) => value.Replace("\\", "\\\\", StringComparison.Ordinal).Replace(",", "\\,", StringComparison.Ordinal);
}
