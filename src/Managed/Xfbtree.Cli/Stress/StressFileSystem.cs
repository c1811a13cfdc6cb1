using Xfbtree.Xfs.Write;
using Attributes = Xfbtree.Xfs.Write.Attributes;
using Xfbtree.Xfs.Write.Namespace;

namespace Xfbtree.Cli.Stress;

/// <summary>
/// What the stress workload drives: the write engine's facade by path (<see cref="XfsStressTarget"/>), or a
/// stand-in in tests of the harness itself. Failures are <see cref="XfsWriteException"/>s.
/// </summary>
internal interface IStressTarget
{
    /// <summary>The filesystem block size (reflink ranges are block-aligned).</summary>
    int BlockSize { get; }

    void Write(string path, long offset, ReadOnlySpan<byte> data);

    int Read(string path, long offset, Span<byte> buffer);

    void Fallocate(string path, long offset, long length);

    /// <summary>fallocate(2) with FALLOC_FL_KEEP_SIZE when <paramref name="keepSize"/>.</summary>
    void Fallocate(string path, long offset, long length, bool keepSize)
    {
        if (keepSize) throw new XfsWriteException(WriteErrorKind.NotSupported, "fallocate: KEEP_SIZE not supported by this target");
        Fallocate(path, offset, length);
    }

    /// <summary>fallocate(2) FALLOC_FL_COLLAPSE_RANGE.</summary>
    void CollapseRange(string path, long offset, long length) => throw new XfsWriteException(WriteErrorKind.NotSupported, "collapse range: not supported by this target");

    /// <summary>fallocate(2) FALLOC_FL_INSERT_RANGE.</summary>
    void InsertRange(string path, long offset, long length) => throw new XfsWriteException(WriteErrorKind.NotSupported, "insert range: not supported by this target");

    void PunchHole(string path, long offset, long length);

    void Truncate(string path, long size);

    void Reflink(string source, long sourceOffset, string destination, long destinationOffset, long length);

    void Unshare(string path, long offset, long length);

    void Create(string path);

    void Mkdir(string path);

    void Unlink(string path);

    IReadOnlyList<DirectoryEntry> List(string path);

    InodeStat Stat(string path);

    /// <summary>Everything stat shows (symlinks not followed). A target without owners gives 0:0.</summary>
    InodeAttributes GetAttr(string path)
    {
        var s = Stat(path);
        return new InodeAttributes(s.Ino, 0, s.Mode, 0, 0, s.Links, s.Size, s.Blocks, BlockSize, 0, default, default, default, default);
    }

    /// <summary>renameat2 by path. A target that does not rename refuses with NotSupported.</summary>
    void Rename(string source, string destination, RenameFlags flags)
        => throw new XfsWriteException(WriteErrorKind.NotSupported, "rename: not supported by this target");

    /// <summary>symlink by path.</summary>
    void Symlink(string target, string path) => throw new XfsWriteException(WriteErrorKind.NotSupported, "symlink: not supported by this target");

    /// <summary>readlink by path.</summary>
    string ReadLink(string path) => throw new XfsWriteException(WriteErrorKind.NotSupported, "readlink: not supported by this target");

    /// <summary>mknod by path (<paramref name="mode"/> with its type bits, <paramref name="rdev"/> a Linux dev_t).</summary>
    void Mknod(string path, int mode, ulong rdev) => throw new XfsWriteException(WriteErrorKind.NotSupported, "mknod: not supported by this target");

    /// <summary>chmod by path.</summary>
    void Chmod(string path, int mode) => throw new XfsWriteException(WriteErrorKind.NotSupported, "chmod: not supported by this target");

    /// <summary>chown(2) by path (set-user-ID and set-group-ID cleared on non-directories, as the kernel does).</summary>
    void Chown(string path, uint uid, uint gid) => throw new XfsWriteException(WriteErrorKind.NotSupported, "chown: not supported by this target");

    /// <summary>utimensat by path.</summary>
    void Utimes(string path, InodeTime atime, InodeTime mtime) => throw new XfsWriteException(WriteErrorKind.NotSupported, "utimes: not supported by this target");

    /// <summary>link(2) by path: <paramref name="newPath"/> becomes another name of the file <paramref name="existing"/> names.</summary>
    void Link(string existing, string newPath) => throw new XfsWriteException(WriteErrorKind.NotSupported, "link: not supported by this target");

    /// <summary>lsetxattr(2) by path; <paramref name="name"/> carries its namespace prefix.</summary>
    void SetXattr(string path, string name, ReadOnlySpan<byte> value, Attributes.XattrSetFlags flags)
        => throw new XfsWriteException(WriteErrorKind.NotSupported, "setxattr: not supported by this target");

    /// <summary>lremovexattr(2) by path (NoData when the attribute does not exist).</summary>
    void RemoveXattr(string path, string name) => throw new XfsWriteException(WriteErrorKind.NotSupported, "removexattr: not supported by this target");

    /// <summary>Every extended attribute (user, trusted, security) of what <paramref name="path"/> names, full names
    /// with their values (a target without attributes has none).</summary>
    IReadOnlyList<(string Name, byte[] Value)> ListXattrs(string path) => [];

    /// <summary>The AGs marked sick right now, with the reason (a target that has no AGs has none).</summary>
    IReadOnlyList<(uint Ag, string Reason)> SickAgs() => [];
}

/// <summary>The write engine as a stress target.</summary>
internal sealed class XfsStressTarget(XfsFileSystem fileSystem) : IStressTarget
{
    public int BlockSize { get; } = fileSystem.Engine.Geometry.BlockSize;

    public void Write(string path, long offset, ReadOnlySpan<byte> data) => fileSystem.Write(path, offset, data);

    public int Read(string path, long offset, Span<byte> buffer) => fileSystem.Read(path, offset, buffer);

    public void Fallocate(string path, long offset, long length) => fileSystem.Fallocate(path, offset, length);

    public void Fallocate(string path, long offset, long length, bool keepSize)
        => fileSystem.Fallocate(path, offset, length, keepSize ? Xfbtree.Xfs.Write.Files.FallocateFlags.KeepSize : Xfbtree.Xfs.Write.Files.FallocateFlags.None);

    public void CollapseRange(string path, long offset, long length) => fileSystem.CollapseRange(path, offset, length);

    public void InsertRange(string path, long offset, long length) => fileSystem.InsertRange(path, offset, length);

    public void PunchHole(string path, long offset, long length) => fileSystem.PunchHole(path, offset, length);

    public void Truncate(string path, long size) => fileSystem.Truncate(path, size);

    public void Reflink(string source, long sourceOffset, string destination, long destinationOffset, long length)
        => fileSystem.Reflink(source, sourceOffset, destination, destinationOffset, length);

    public void Unshare(string path, long offset, long length) => fileSystem.Unshare(path, offset, length);

    public void Create(string path) => fileSystem.Create(path);

    public void Mkdir(string path) => fileSystem.Mkdir(path);

    public void Unlink(string path) => fileSystem.Unlink(path);

    public IReadOnlyList<DirectoryEntry> List(string path) => fileSystem.List(path);

    public InodeStat Stat(string path) => fileSystem.Stat(path);

    public InodeAttributes GetAttr(string path) => fileSystem.GetAttr(path);

    public void Rename(string source, string destination, RenameFlags flags) => fileSystem.Namespace.Rename(source, destination, flags);

    public void Symlink(string target, string path) => fileSystem.Symlink(target, path);

    public string ReadLink(string path) => fileSystem.ReadLink(path);

    public void Mknod(string path, int mode, ulong rdev) => fileSystem.Mknod(path, mode, rdev);

    public void Chmod(string path, int mode) => fileSystem.Namespace.Chmod(path, mode);

    public void Chown(string path, uint uid, uint gid) => fileSystem.Namespace.Chown(path, uid, gid);

    public void Utimes(string path, InodeTime atime, InodeTime mtime) => fileSystem.Namespace.Utimes(path, atime, mtime);

    public void Link(string existing, string newPath) => fileSystem.Namespace.Link(existing, newPath);

    // By inode: the stress runner holds the model locks of the path's inode and directory, so the name cannot move
    // between the lookup and the call.
    public void SetXattr(string path, string name, ReadOnlySpan<byte> value, Attributes.XattrSetFlags flags)
        => fileSystem.SetXattr(fileSystem.Lookup(path), name, value, flags);

    public void RemoveXattr(string path, string name) => fileSystem.RemoveXattr(fileSystem.Lookup(path), name);

    public IReadOnlyList<(string Name, byte[] Value)> ListXattrs(string path)
        => fileSystem.Attributes.ReadAll(fileSystem.Lookup(path)).Select(a => (a.Name.FullName, a.Value)).ToList();

    /// <inheritdoc/>
    public IReadOnlyList<(uint Ag, string Reason)> SickAgs()
    {
        var sick = new List<(uint, string)>();
        for (uint agno = 0; agno < fileSystem.Engine.Geometry.AgCount; agno++)
        {
            if (fileSystem.Engine.Ag(agno).SickReason is { } reason) sick.Add((agno, reason));
        }
        return sick;
    }
}
