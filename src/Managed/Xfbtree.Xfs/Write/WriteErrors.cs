namespace Xfbtree.Xfs.Write;

/// <summary>Why a write-engine operation failed; each kind is one errno the kernel would return
/// (<see cref="WriteErrors.Errno"/>), so a FUSE server can reply with it.</summary>
public enum WriteErrorKind
{
    /// <summary>A bad argument (offset, length, name, path syntax, a directory moved under itself): EINVAL.</summary>
    InvalidArgument,
    /// <summary>A path component or inode does not exist: ENOENT.</summary>
    NotFound,
    /// <summary>The name exists already: EEXIST.</summary>
    Exists,
    /// <summary>A path component is not a directory, or a directory was needed: ENOTDIR.</summary>
    NotDirectory,
    /// <summary>The target is a directory where something else is needed: EISDIR.</summary>
    IsDirectory,
    /// <summary>Not empty (rmdir, or a rename over a non-empty directory): ENOTEMPTY.</summary>
    NotEmpty,
    /// <summary>No free space (or inodes) outside the per-AG reservations. Nothing changed: ENOSPC.</summary>
    NoSpace,
    /// <summary>The file or filesystem is in a state the engine does not handle (the message names it): EOPNOTSUPP.</summary>
    NotSupported,
    /// <summary>Metadata found corrupt in the middle of an operation; the AG concerned is marked sick: EUCLEAN (EFSCORRUPTED).</summary>
    Corrupt,
    /// <summary>An I/O error from the image or the journal: EIO.</summary>
    Io,
    /// <summary>The image is in use (mounted, loop-attached, locked by another writer) or the engine is closed: EBUSY.</summary>
    Busy,
    /// <summary>A name longer than 255 bytes: ENAMETOOLONG.</summary>
    NameTooLong,
    /// <summary>A symbolic link where the operation does not follow one: ELOOP.</summary>
    Loop,
    /// <summary>A link or rename across filesystems: EXDEV.</summary>
    CrossDevice,
    /// <summary>An inode already has the most links the format allows: EMLINK.</summary>
    TooManyLinks,
    /// <summary>The operation is not permitted on this inode (a hard link to a directory, a user.* attribute on a symlink): EPERM.</summary>
    NotPermitted,
    /// <summary>No such extended attribute: ENODATA.</summary>
    NoData,
    /// <summary>An argument or value is too large (an extended-attribute value past the 64 KiB the syscalls allow): E2BIG.</summary>
    TooBig,
    /// <summary>An attribute name of bad length, or a result that does not fit the caller's buffer: ERANGE.</summary>
    OutOfRange,
    /// <summary>A handle names an inode that was freed (and maybe reused) since it was handed out: ESTALE.</summary>
    Stale,
    /// <summary>A file would grow past the largest size: EFBIG.</summary>
    FileTooBig,
}

/// <summary>The errno of each <see cref="WriteErrorKind"/> (Linux values and names).</summary>
public static class WriteErrors
{
    /// <summary>The Linux errno value the kernel returns for <paramref name="kind"/>.</summary>
    public static int Errno(WriteErrorKind kind) => kind switch
    {
        WriteErrorKind.InvalidArgument => 22,
        WriteErrorKind.NotFound => 2,
        WriteErrorKind.Exists => 17,
        WriteErrorKind.NotDirectory => 20,
        WriteErrorKind.IsDirectory => 21,
        WriteErrorKind.NotEmpty => 39,
        WriteErrorKind.NoSpace => 28,
        WriteErrorKind.NotSupported => 95,
        WriteErrorKind.Corrupt => 117,
        WriteErrorKind.Io => 5,
        WriteErrorKind.Busy => 16,
        WriteErrorKind.NameTooLong => 36,
        WriteErrorKind.Loop => 40,
        WriteErrorKind.CrossDevice => 18,
        WriteErrorKind.TooManyLinks => 31,
        WriteErrorKind.NotPermitted => 1,
        WriteErrorKind.NoData => 61,
        WriteErrorKind.TooBig => 7,
        WriteErrorKind.OutOfRange => 34,
        WriteErrorKind.Stale => 116,
        WriteErrorKind.FileTooBig => 27,
        _ => 5,
    };

    /// <summary>The symbolic name of <paramref name="kind"/>'s errno ("ENOENT", ...), as strerror's callers print it.</summary>
    public static string ErrnoName(WriteErrorKind kind) => kind switch
    {
        WriteErrorKind.InvalidArgument => "EINVAL",
        WriteErrorKind.NotFound => "ENOENT",
        WriteErrorKind.Exists => "EEXIST",
        WriteErrorKind.NotDirectory => "ENOTDIR",
        WriteErrorKind.IsDirectory => "EISDIR",
        WriteErrorKind.NotEmpty => "ENOTEMPTY",
        WriteErrorKind.NoSpace => "ENOSPC",
        WriteErrorKind.NotSupported => "EOPNOTSUPP",
        WriteErrorKind.Corrupt => "EUCLEAN",
        WriteErrorKind.Io => "EIO",
        WriteErrorKind.Busy => "EBUSY",
        WriteErrorKind.NameTooLong => "ENAMETOOLONG",
        WriteErrorKind.Loop => "ELOOP",
        WriteErrorKind.CrossDevice => "EXDEV",
        WriteErrorKind.TooManyLinks => "EMLINK",
        WriteErrorKind.NotPermitted => "EPERM",
        WriteErrorKind.NoData => "ENODATA",
        WriteErrorKind.TooBig => "E2BIG",
        WriteErrorKind.OutOfRange => "ERANGE",
        WriteErrorKind.Stale => "ESTALE",
        WriteErrorKind.FileTooBig => "EFBIG",
        _ => "EIO",
    };
}

/// <summary>
/// The one exception a write-engine operation throws for a foreseeable failure. When it escapes an operation the
/// transaction was cancelled: nothing of the operation reached the image or the in-memory state.
/// </summary>
public sealed class XfsWriteException : Exception
{
    /// <summary>A failure of <paramref name="kind"/> described by <paramref name="message"/>.</summary>
    public XfsWriteException(WriteErrorKind kind, string message, Exception? inner = null) : base(message, inner) => Kind = kind;

    /// <summary>What went wrong.</summary>
    public WriteErrorKind Kind { get; }

    /// <summary>The Linux errno the kernel would return for this failure (a FUSE server replies with it).</summary>
    public int Errno => WriteErrors.Errno(Kind);

    /// <summary>The errno's symbolic name ("ENOENT", ...).</summary>
    public string ErrnoName => WriteErrors.ErrnoName(Kind);

    /// <summary>For <see cref="WriteErrorKind.Corrupt"/>: the AG found corrupt or refused as sick, when known.</summary>
    public uint? AgNumber { get; init; }
}
