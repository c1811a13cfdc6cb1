namespace Xfbtree.Xfs.Write;

/// <summary>Why a write-engine operation failed; maps to an errno-like condition a user understands.</summary>
public enum WriteErrorKind
{
    /// <summary>A bad argument (offset, length, name, path syntax).</summary>
    InvalidArgument,
    /// <summary>A path component or inode does not exist.</summary>
    NotFound,
    /// <summary>The name exists already.</summary>
    Exists,
    /// <summary>A path component is not a directory, or a directory was given where a file is needed.</summary>
    NotDirectory,
    /// <summary>The target is a directory where a regular file is needed.</summary>
    IsDirectory,
    /// <summary>Not empty (rmdir / unlink of a non-empty directory).</summary>
    NotEmpty,
    /// <summary>No free space (or inodes) outside the per-AG reservations. Nothing changed.</summary>
    NoSpace,
    /// <summary>The file or filesystem is in a state the engine does not handle (the message names it).</summary>
    NotSupported,
    /// <summary>Metadata found corrupt in the middle of an operation; the AG concerned is marked sick.</summary>
    Corrupt,
    /// <summary>An I/O error from the image or the journal.</summary>
    Io,
    /// <summary>The image is in use (mounted, loop-attached, locked by another writer) or the engine is closed.</summary>
    Busy,
    /// <summary>The extended attribute does not exist (ENODATA).</summary>
    NoData,
    /// <summary>An extended-attribute value larger than the 64 KiB the syscalls allow (E2BIG).</summary>
    TooBig,
    /// <summary>A name of bad length, or a caller's buffer too small for the result (ERANGE).</summary>
    OutOfRange,
    /// <summary>The operation is not permitted on this kind of inode, e.g. a user.* attribute on a symlink (EPERM).</summary>
    NotPermitted,
}

/// <summary>
/// The one exception a write-engine operation throws for a foreseeable failure. When it escapes an operation the
/// transaction was cancelled: nothing of the operation reached the image or the in-memory state.
/// </summary>
public sealed class XfsWriteException : Exception
{
    public XfsWriteException(WriteErrorKind kind, string message, Exception? inner = null) : base(message, inner) => Kind = kind;

    public WriteErrorKind Kind { get; }

    /// <summary>For <see cref="WriteErrorKind.Corrupt"/>: the AG found corrupt or refused as sick, when known.</summary>
    public uint? AgNumber { get; init; }
}
