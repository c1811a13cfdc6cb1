using System.Text;
using Xfbtree.Xfs.Write.Attributes;
using Xfbtree.Xfs.Write.Engine;
using Xfbtree.Xfs.Write.Files;
using Xfbtree.Xfs.Write.Namespace;

namespace Xfbtree.Xfs.Write;

/// <summary>
/// An XFS image opened for writing, by path: the API the CLI (`xfbtree io`, `xfbtree stress`) and library users
/// call. Thread-safe: operations on different files and AGs run in parallel under the engine's locks.
/// </summary>
/// <remarks>
/// A file operation by path resolves the path to a handle (inode number and generation) and acts through it: the
/// generation is checked under the inode lock, so when another thread removed the file and a create reused its
/// inode number in between, the operation does not land in the new file; the path is resolved again instead
/// (ENOENT when it is gone).
/// </remarks>
public sealed class XfsFileSystem : IDisposable
{
    const int MaxStaleRetries = 8;

    private XfsFileSystem(WriteEngine engine)
    {
        Engine = engine;
        Files = new FileOperations(engine);
        Namespace = new NamespaceOperations(engine, Files);
        Attributes = new AttributeOperations(engine);
    }

    /// <summary>The engine under the facade.</summary>
    public WriteEngine Engine { get; }

    /// <summary>File data operations by inode or handle.</summary>
    internal FileOperations Files { get; }

    /// <summary>Namespace operations by inode and by path.</summary>
    internal NamespaceOperations Namespace { get; }

    /// <summary>Extended attributes by inode number (shortform, leaf and node forks; user, trusted, security).</summary>
    internal AttributeOperations Attributes { get; }

    /// <summary>Test hook: runs after a path was resolved to a handle and before the operation acts on it.</summary>
    internal Action<string>? AfterResolveForTest { get; set; }

    /// <summary>Opens an image for writing (see <see cref="WriteEngine.Open"/>); inodes a crash left on the AGI
    /// unlinked lists (held when the image was last open, their last name gone) are freed, as the kernel's log
    /// recovery frees them.</summary>
    public static XfsFileSystem Open(string imagePath, WriteEngineOptions? options = null)
    {
        var fs = new XfsFileSystem(WriteEngine.Open(imagePath, options));
        try
        {
            fs.RecoveredUnlinkedInodes = fs.Namespace.ClearUnlinkedInodes();
        }
        catch
        {
            fs.Dispose();
            throw;
        }
        return fs;
    }

    /// <summary>How many inodes <see cref="Open"/> found on the AGI unlinked lists and freed.</summary>
    public int RecoveredUnlinkedInodes { get; private set; }

    /// <summary>Resolves <paramref name="path"/> and runs <paramref name="action"/> on its handle; a handle gone stale
    /// in between (the name now names another incarnation) is resolved again.</summary>
    T OnPath<T>(string path, Func<InodeHandle, T> action)
    {
        for (int attempt = 0; ; attempt++)
        {
            var handle = Namespace.Resolve(path).Handle;
            AfterResolveForTest?.Invoke(path);
            try
            {
                return action(handle);
            }
            catch (XfsWriteException e) when (e.Kind == WriteErrorKind.Stale && attempt < MaxStaleRetries)
            {
            }
        }
    }

    /// <summary>Writes <paramref name="data"/> at <paramref name="offset"/> of the file <paramref name="path"/> names.</summary>
    public void Write(string path, long offset, ReadOnlySpan<byte> data)
    {
        byte[] bytes = data.ToArray();
        OnPath(path, h => { Files.Write(h, offset, bytes); return 0; });
    }

    /// <summary>NoSpace (nothing changed) unless a write of <paramref name="length"/> bytes at <paramref name="offset"/>
    /// would find its space now (see <see cref="FileOperations.EnsureWriteSpace"/>).</summary>
    public void EnsureWriteSpace(string path, long offset, long length) => Files.EnsureWriteSpace(Namespace.Lookup(path), offset, length);

    /// <summary>Streams a file range (capped at EOF) into <paramref name="sink"/>: data as bytes, holes and
    /// unwritten extents as zero lengths (see <see cref="FileOperations.ReadInto(ulong, long, long, IFileReadSink)"/>). Returns the bytes covered.</summary>
    public long ReadInto(string path, long offset, long length, IFileReadSink sink) => Files.ReadInto(Namespace.Lookup(path), offset, length, sink);

    /// <summary>Reads from the file <paramref name="path"/> names; the bytes read.</summary>
    public int Read(string path, long offset, Span<byte> buffer)
    {
        for (int attempt = 0; ; attempt++)
        {
            var handle = Namespace.Resolve(path).Handle;
            try
            {
                return Files.Read(handle, offset, buffer);
            }
            catch (XfsWriteException e) when (e.Kind == WriteErrorKind.Stale && attempt < MaxStaleRetries)
            {
            }
        }
    }

    /// <summary>fallocate(2) mode 0 on the file <paramref name="path"/> names.</summary>
    public void Fallocate(string path, long offset, long length) => OnPath(path, h => { Files.Fallocate(h, offset, length); return 0; });

    /// <summary>fallocate(2) on the file <paramref name="path"/> names, with <see cref="FallocateFlags.KeepSize"/>
    /// (FALLOC_FL_KEEP_SIZE) or without.</summary>
    public void Fallocate(string path, long offset, long length, FallocateFlags flags)
        => OnPath(path, h => { Files.Fallocate(h, offset, length, flags); return 0; });

    /// <summary>fallocate(2) FALLOC_FL_COLLAPSE_RANGE on the file <paramref name="path"/> names.</summary>
    public void CollapseRange(string path, long offset, long length) => OnPath(path, h => { Files.CollapseRange(h, offset, length); return 0; });

    /// <summary>fallocate(2) FALLOC_FL_INSERT_RANGE on the file <paramref name="path"/> names.</summary>
    public void InsertRange(string path, long offset, long length) => OnPath(path, h => { Files.InsertRange(h, offset, length); return 0; });

    /// <summary>Punches a hole in the file <paramref name="path"/> names.</summary>
    public void PunchHole(string path, long offset, long length) => OnPath(path, h => { Files.PunchHole(h, offset, length); return 0; });

    /// <summary>Sets the size of the file <paramref name="path"/> names.</summary>
    public void Truncate(string path, long size) => OnPath(path, h => { Files.Truncate(h, size); return 0; });

    /// <summary>Shares blocks of <paramref name="source"/> into <paramref name="destination"/> (see <see cref="FileOperations.Reflink(ulong, long, ulong, long, long)"/>).</summary>
    public void Reflink(string source, long sourceOffset, string destination, long destinationOffset, long length)
        => OnPath(source, s => { Files.Reflink(s, sourceOffset, Namespace.Resolve(destination).Handle, destinationOffset, length); return 0; });

    /// <summary>Gives a range of the file <paramref name="path"/> names private copies of its shared blocks.</summary>
    public void Unshare(string path, long offset, long length) => OnPath(path, h => { Files.Unshare(h, offset, length); return 0; });

    /// <summary>Creates an empty regular file; its inode number.</summary>
    public ulong Create(string path) => Namespace.Create(path);

    /// <summary>Creates an empty directory; its inode number.</summary>
    public ulong Mkdir(string path) => Namespace.Mkdir(path);

    /// <summary>Removes a file or an empty directory (remove(3)).</summary>
    public void Unlink(string path) => Namespace.Unlink(path);

    /// <summary>Removes an empty directory (rmdir(2)).</summary>
    public void Rmdir(string path) => Namespace.Rmdir(path);

    /// <summary>Creates a symbolic link at <paramref name="path"/> pointing at <paramref name="target"/>; its inode number.</summary>
    public ulong Symlink(string target, string path) => Namespace.Symlink(target, path);

    /// <summary>The target of the symbolic link <paramref name="path"/> names.</summary>
    public string ReadLink(string path) => Namespace.ReadLink(path);

    /// <summary>Creates a fifo, socket or device (mknod(2)) owned by 0:0: <paramref name="mode"/> carries the file type
    /// bits (S_IFIFO, S_IFSOCK, S_IFCHR, S_IFBLK) and the permissions, <paramref name="rdev"/> the Linux device number
    /// of a device (0 otherwise); its inode number.</summary>
    public ulong Mknod(string path, int mode, ulong rdev) => Namespace.Mknod(path, mode, rdev);

    /// <summary>Entries of a directory, "." and ".." excluded.</summary>
    public IReadOnlyList<DirectoryEntry> List(string path) => Namespace.List(path);

    /// <summary>The inode number, type, size, link count and block count of what <paramref name="path"/> names.</summary>
    public InodeStat Stat(string path) => Namespace.Stat(path);

    /// <summary>Everything stat(2) shows about the inode <paramref name="path"/> names (symlinks not followed).</summary>
    public InodeAttributes GetAttr(string path) => Namespace.Resolve(path);

    /// <summary>setxattr(2) on inode <paramref name="ino"/>: <paramref name="name"/> carries its namespace prefix
    /// ("user.", "trusted.", "security."); errors as the kernel's (EEXIST, ENODATA, E2BIG, ERANGE, EOPNOTSUPP, EPERM).</summary>
    public void SetXattr(ulong ino, string name, ReadOnlySpan<byte> value, XattrSetFlags flags = XattrSetFlags.None)
        => Attributes.Set(ino, Encoding.UTF8.GetBytes(name), value, flags);

    /// <summary>getxattr(2): the value's length, copied into <paramref name="buffer"/> unless it is empty (a size
    /// query); ERANGE when the buffer is too small, ENODATA when the attribute does not exist.</summary>
    public int GetXattr(ulong ino, string name, Span<byte> buffer) => Attributes.Get(ino, Encoding.UTF8.GetBytes(name), buffer);

    /// <summary>listxattr(2): the names with their prefixes, each followed by a NUL, into <paramref name="buffer"/>;
    /// returns the list's size (an empty buffer asks for the size only; ERANGE when too small).</summary>
    public int ListXattr(ulong ino, Span<byte> buffer) => Attributes.List(ino, buffer);

    /// <summary>The names of the inode's extended attributes with their prefixes, in the fork's order.</summary>
    public IReadOnlyList<string> ListXattrNames(ulong ino) => Attributes.ListNames(ino).Select(n => n.FullName).ToList();

    /// <summary>removexattr(2) (ENODATA when the attribute does not exist).</summary>
    public void RemoveXattr(ulong ino, string name) => Attributes.Remove(ino, Encoding.UTF8.GetBytes(name));

    /// <summary>The stress manifest's XATTRS column for an inode (see <see cref="AttributeOperations.Digest"/>).</summary>
    internal string XattrDigest(ulong ino) => Attributes.Digest(ino);

    /// <summary>rename(2) / renameat2(2): moves what <paramref name="source"/> names to <paramref name="destination"/>,
    /// replacing a destination of a compatible type unless <see cref="RenameFlags.NoReplace"/>; errors as the kernel's
    /// (ENOENT, EEXIST, ENOTEMPTY, EISDIR, ENOTDIR, EINVAL for a directory moved into itself).</summary>
    public void Rename(string source, string destination, RenameFlags flags = RenameFlags.None) => Namespace.Rename(source, destination, flags);

    /// <summary>link(2): <paramref name="newPath"/> becomes another name of the file <paramref name="existing"/> names
    /// (EPERM for a directory, EEXIST when the new name exists).</summary>
    public void Link(string existing, string newPath) => Namespace.Link(existing, newPath);

    /// <summary>chmod(2) (symlinks not followed): sets the permission bits (07777) of <paramref name="mode"/>; returns
    /// the inode's attributes afterwards.</summary>
    public InodeAttributes Chmod(string path, int mode) => Namespace.Chmod(path, mode);

    /// <summary>lchown(2): a null id stays as it is; a change of owner or group of anything but a directory clears the
    /// set-user-ID bit (and set-group-ID when group-execute is set), as the kernel does. Returns the attributes afterwards.</summary>
    public InodeAttributes Chown(string path, uint? uid, uint? gid) => Namespace.Chown(path, uid, gid);

    /// <summary>utimensat(2) with AT_SYMLINK_NOFOLLOW: sets the access and modification times; null leaves a time
    /// as it is (UTIME_OMIT). Returns the attributes afterwards.</summary>
    public InodeAttributes SetTimes(string path, InodeTime? atime, InodeTime? mtime) => Namespace.Utimes(path, atime, mtime);

    /// <summary>The inode a path names (no symlink followed).</summary>
    public ulong Lookup(string path) => Namespace.Lookup(path);

    /// <summary>Clean close: references still held are released (unlinked inodes freed, as at unmount), the image
    /// is consistent, NEEDSREPAIR cleared, the lock released.</summary>
    public void Close()
    {
        Namespace.ReleaseAll();
        Engine.Close();
    }

    /// <summary>Releases the engine without a clean close (the journal replays at the next open).</summary>
    public void Dispose() => Engine.Dispose();
}
