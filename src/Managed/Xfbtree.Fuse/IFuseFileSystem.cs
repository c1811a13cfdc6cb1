namespace Xfbtree.Fuse;

/// <summary>Who asked: the fields of the request header a file system may need (permission checks, logs).</summary>
internal readonly struct FuseRequestContext
{
    public FuseRequestContext(ulong unique, ulong nodeId, uint uid, uint gid, uint pid)
    {
        Unique = unique;
        NodeId = nodeId;
        Uid = uid;
        Gid = gid;
        Pid = pid;
    }

    public ulong Unique { get; }
    public ulong NodeId { get; }
    public uint Uid { get; }
    public uint Gid { get; }
    public uint Pid { get; }
}

/// <summary>What INIT settled, handed to <see cref="IFuseFileSystem.Initialize"/>.</summary>
internal readonly record struct FuseConnectionInfo(uint KernelMinor, uint NegotiatedMinor, uint Flags, uint MaxWrite, uint MaxReadahead, bool WritebackCache);

/// <summary>
/// A file system served over FUSE, one method per opcode. The protocol layer (<see cref="FuseServer"/>) parses and
/// checks each request, calls the method on one of its worker threads (several at once: implementations are
/// thread-safe), and writes the reply. Every method returns 0 or a positive errno (the reply's error); the out
/// values are sent only on 0. Names arrive as the kernel's bytes, already checked: 1 to 255 bytes, no NUL, no '/'.
/// "." and "..", and what a name means, are the implementation's to judge. Spans are valid only during the call
/// (they point into the worker's buffers). The defaults answer ENOSYS (the kernel then stops asking for most
/// operations), except the xattr calls, which answer EOPNOTSUPP.
/// </summary>
internal interface IFuseFileSystem
{
    /// <summary>INIT was answered; requests follow.</summary>
    void Initialize(in FuseConnectionInfo connection) { }

    /// <summary>DESTROY (sent for fuseblk mounts at unmount), or the end of the session.</summary>
    void Destroy() { }

    int Lookup(in FuseRequestContext context, ulong parent, ReadOnlySpan<byte> name, out FuseEntryOut entry)
    {
        entry = default;
        return FuseErrno.ENOSYS;
    }

    /// <summary>The kernel dropped <paramref name="lookups"/> references to <paramref name="node"/> (FORGET, BATCH_FORGET). No reply.</summary>
    void Forget(ulong node, ulong lookups) { }

    int GetAttr(in FuseRequestContext context, ulong node, bool hasHandle, ulong handle, out FuseAttrOut attr)
    {
        attr = default;
        return FuseErrno.ENOSYS;
    }

    int SetAttr(in FuseRequestContext context, ulong node, in FuseSetAttrIn change, out FuseAttrOut attr)
    {
        attr = default;
        return FuseErrno.ENOSYS;
    }

    /// <summary>Writes the link target into <paramref name="target"/> and its length.</summary>
    int ReadLink(in FuseRequestContext context, ulong node, Span<byte> target, out int length)
    {
        length = 0;
        return FuseErrno.ENOSYS;
    }

    int Symlink(in FuseRequestContext context, ulong parent, ReadOnlySpan<byte> name, ReadOnlySpan<byte> target, out FuseEntryOut entry)
    {
        entry = default;
        return FuseErrno.ENOSYS;
    }

    int MkNod(in FuseRequestContext context, ulong parent, ReadOnlySpan<byte> name, uint mode, uint rdev, uint umask, out FuseEntryOut entry)
    {
        entry = default;
        return FuseErrno.ENOSYS;
    }

    int MkDir(in FuseRequestContext context, ulong parent, ReadOnlySpan<byte> name, uint mode, uint umask, out FuseEntryOut entry)
    {
        entry = default;
        return FuseErrno.ENOSYS;
    }

    int Unlink(in FuseRequestContext context, ulong parent, ReadOnlySpan<byte> name) => FuseErrno.ENOSYS;

    int RmDir(in FuseRequestContext context, ulong parent, ReadOnlySpan<byte> name) => FuseErrno.ENOSYS;

    /// <summary>RENAME (flags 0) and RENAME2 (RENAME_NOREPLACE, RENAME_EXCHANGE, RENAME_WHITEOUT).</summary>
    int Rename(in FuseRequestContext context, ulong parent, ReadOnlySpan<byte> name, ulong newParent, ReadOnlySpan<byte> newName, uint flags)
        => FuseErrno.ENOSYS;

    int Link(in FuseRequestContext context, ulong node, ulong newParent, ReadOnlySpan<byte> newName, out FuseEntryOut entry)
    {
        entry = default;
        return FuseErrno.ENOSYS;
    }

    int Open(in FuseRequestContext context, ulong node, uint flags, out FuseOpenOut open)
    {
        open = default;
        return FuseErrno.ENOSYS;
    }

    /// <summary>OPEN with the kernel's open_flags too (<see cref="FuseConstants.OpenKillSuidGid"/>); by default the
    /// three-argument <see cref="Open(in FuseRequestContext, ulong, uint, out FuseOpenOut)"/>.</summary>
    int Open(in FuseRequestContext context, ulong node, uint flags, uint openFlags, out FuseOpenOut open) => Open(in context, node, flags, out open);

    /// <summary>Reads into <paramref name="destination"/> (the size asked); a short count means end of file.</summary>
    int Read(in FuseRequestContext context, ulong node, ulong handle, long offset, Span<byte> destination, out int length)
    {
        length = 0;
        return FuseErrno.ENOSYS;
    }

    int Write(in FuseRequestContext context, ulong node, ulong handle, long offset, ReadOnlySpan<byte> data, uint writeFlags, out uint written)
    {
        written = 0;
        return FuseErrno.ENOSYS;
    }

    int StatFs(in FuseRequestContext context, ulong node, out FuseStatFsOut statfs)
    {
        statfs = default;
        return FuseErrno.ENOSYS;
    }

    int Release(in FuseRequestContext context, ulong node, ulong handle, uint flags) => 0;

    int Fsync(in FuseRequestContext context, ulong node, ulong handle, bool dataOnly) => FuseErrno.ENOSYS;

    int SetXattr(in FuseRequestContext context, ulong node, ReadOnlySpan<byte> name, ReadOnlySpan<byte> value, uint flags) => FuseErrno.EOPNOTSUPP;

    /// <summary>
    /// With an empty <paramref name="value"/>: the value's size in <paramref name="length"/>. Otherwise the value
    /// (ERANGE when it does not fit).
    /// </summary>
    int GetXattr(in FuseRequestContext context, ulong node, ReadOnlySpan<byte> name, Span<byte> value, out int length)
    {
        length = 0;
        return FuseErrno.EOPNOTSUPP;
    }

    /// <summary>NUL-terminated names; an empty <paramref name="list"/> asks for the size only.</summary>
    int ListXattr(in FuseRequestContext context, ulong node, Span<byte> list, out int length)
    {
        length = 0;
        return FuseErrno.EOPNOTSUPP;
    }

    int RemoveXattr(in FuseRequestContext context, ulong node, ReadOnlySpan<byte> name) => FuseErrno.EOPNOTSUPP;

    int Flush(in FuseRequestContext context, ulong node, ulong handle, ulong lockOwner) => 0;

    int OpenDir(in FuseRequestContext context, ulong node, uint flags, out FuseOpenOut open)
    {
        open = default;
        return FuseErrno.ENOSYS;
    }

    /// <summary>Fills <paramref name="entries"/> from <paramref name="offset"/> (0 or a cookie given earlier) until it is full.</summary>
    int ReadDir(in FuseRequestContext context, ulong node, ulong handle, long offset, ref FuseDirectoryWriter entries) => FuseErrno.ENOSYS;

    int ReleaseDir(in FuseRequestContext context, ulong node, ulong handle) => 0;

    int FsyncDir(in FuseRequestContext context, ulong node, ulong handle, bool dataOnly) => FuseErrno.ENOSYS;

    int Access(in FuseRequestContext context, ulong node, uint mask) => FuseErrno.ENOSYS;

    int Create(in FuseRequestContext context, ulong parent, ReadOnlySpan<byte> name, uint flags, uint mode, uint umask,
        out FuseEntryOut entry, out FuseOpenOut open)
    {
        entry = default;
        open = default;
        return FuseErrno.ENOSYS;
    }

    int Fallocate(in FuseRequestContext context, ulong node, ulong handle, long offset, long length, uint mode) => FuseErrno.ENOSYS;

    int Lseek(in FuseRequestContext context, ulong node, ulong handle, long offset, uint whence, out long result)
    {
        result = 0;
        return FuseErrno.ENOSYS;
    }

    int CopyFileRange(in FuseRequestContext context, ulong nodeIn, ulong handleIn, long offsetIn, ulong nodeOut, ulong handleOut,
        long offsetOut, long length, ulong flags, out long copied)
    {
        copied = 0;
        return FuseErrno.ENOSYS;
    }

    int SyncFs(in FuseRequestContext context) => FuseErrno.ENOSYS;

    /// <summary>
    /// IOCTL on an open file or directory (<paramref name="flags"/> has <see cref="FuseConstants.IoctlDir"/> for a
    /// directory). Only restricted ioctls reach a FUSE server: the kernel copied in the command's _IOC_SIZE bytes
    /// (<paramref name="input"/>, when _IOC_WRITE) and copies back what is written to <paramref name="output"/>
    /// (room for _IOC_SIZE bytes when _IOC_READ). <paramref name="result"/> is what ioctl(2) returns on success. Who
    /// asked is in <paramref name="context"/> (the kernel's uid, gid and pid of the caller): an implementation that
    /// offers privileged commands checks it. The default answers ENOTTY, as for an ioctl a file system does not know.
    /// </summary>
    int Ioctl(in FuseRequestContext context, ulong node, ulong handle, uint flags, uint command, ReadOnlySpan<byte> input,
        Span<byte> output, out int result, out int outputLength)
    {
        result = 0;
        outputLength = 0;
        return FuseErrno.ENOTTY;
    }

    /// <summary>
    /// A request failed with <paramref name="error"/> and nothing was replied yet: true makes the server run the same
    /// request once more (at most <see cref="FuseServer.MaxAttempts"/> times in all). For a file system that can
    /// heal the cause meanwhile (and whose failed operations changed nothing); it may block until then. Default:
    /// no retry.
    /// </summary>
    bool RetryAfterFailure(in FuseRequestContext context, int error) => false;
}

/// <summary>The Linux errno values the protocol layer and its file systems answer with.</summary>
internal static class FuseErrno
{
    public const int EPERM = 1;
    public const int ENOENT = 2;
    public const int EINTR = 4;
    public const int EIO = 5;
    public const int EBADF = 9;
    public const int EAGAIN = 11;
    public const int ENOMEM = 12;
    public const int EACCES = 13;
    public const int EBUSY = 16;
    public const int EEXIST = 17;
    public const int EXDEV = 18;
    public const int ENODEV = 19;
    public const int ENOTDIR = 20;
    public const int EISDIR = 21;
    public const int EINVAL = 22;
    public const int E2BIG = 7;
    public const int EFBIG = 27;
    public const int ENOSPC = 28;
    public const int EROFS = 30;
    public const int EMLINK = 31;
    public const int ERANGE = 34;
    public const int ENAMETOOLONG = 36;
    public const int ENOSYS = 38;
    public const int ENOTEMPTY = 39;
    public const int ENODATA = 61;
    public const int EPROTO = 71;
    public const int EOVERFLOW = 75;
    public const int EOPNOTSUPP = 95;
    public const int ESTALE = 116;
    public const int EUCLEAN = 117;
    public const int ENXIO = 6;
    public const int ENOTTY = 25;
}
