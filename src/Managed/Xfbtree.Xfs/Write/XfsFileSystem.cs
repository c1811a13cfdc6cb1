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
public sealed class XfsFileSystem : IDisposable
{
    private XfsFileSystem(WriteEngine engine)
    {
        Engine = engine;
        Files = new FileOperations(engine);
        Namespace = new NamespaceOperations(engine, Files);
        Attributes = new AttributeOperations(engine);
    }

    public WriteEngine Engine { get; }

    public FileOperations Files { get; }

    public NamespaceOperations Namespace { get; }

    /// <summary>Extended attributes by inode number (shortform, leaf and node forks; user, trusted, security).</summary>
    public AttributeOperations Attributes { get; }

    /// <summary>Opens an image for writing (see <see cref="WriteEngine.Open"/>).</summary>
    public static XfsFileSystem Open(string imagePath, WriteEngineOptions? options = null) => new(WriteEngine.Open(imagePath, options));

    public void Write(string path, long offset, ReadOnlySpan<byte> data) => Files.Write(Namespace.Lookup(path), offset, data);

    /// <summary>NoSpace (nothing changed) unless a write of <paramref name="length"/> bytes at <paramref name="offset"/>
    /// would find its space now (see <see cref="FileOperations.EnsureWriteSpace"/>).</summary>
    public void EnsureWriteSpace(string path, long offset, long length) => Files.EnsureWriteSpace(Namespace.Lookup(path), offset, length);

    public int Read(string path, long offset, Span<byte> buffer) => Files.Read(Namespace.Lookup(path), offset, buffer);

    /// <summary>Streams a file range (capped at EOF) into <paramref name="sink"/>: data as bytes, holes and
    /// unwritten extents as zero lengths (see <see cref="FileOperations.ReadInto"/>). Returns the bytes covered.</summary>
    public long ReadInto(string path, long offset, long length, IFileReadSink sink) => Files.ReadInto(Namespace.Lookup(path), offset, length, sink);

    public void Fallocate(string path, long offset, long length) => Files.Fallocate(Namespace.Lookup(path), offset, length);

    public void PunchHole(string path, long offset, long length) => Files.PunchHole(Namespace.Lookup(path), offset, length);

    public void Truncate(string path, long size) => Files.Truncate(Namespace.Lookup(path), size);

    public void Reflink(string source, long sourceOffset, string destination, long destinationOffset, long length)
        => Files.Reflink(Namespace.Lookup(source), sourceOffset, Namespace.Lookup(destination), destinationOffset, length);

    public void Unshare(string path, long offset, long length) => Files.Unshare(Namespace.Lookup(path), offset, length);

    public ulong Create(string path) => Namespace.Create(path);

    public ulong Mkdir(string path) => Namespace.Mkdir(path);

    public void Unlink(string path) => Namespace.Unlink(path);

    public IReadOnlyList<DirectoryEntry> List(string path) => Namespace.List(path);

    public InodeStat Stat(string path) => Namespace.Stat(path);

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
    public string XattrDigest(ulong ino) => Attributes.Digest(ino);

    /// <summary>The inode a path names (no symlink followed).</summary>
    public ulong Lookup(string path) => Namespace.Lookup(path);

    /// <summary>Clean close: the image is consistent, NEEDSREPAIR cleared, the lock released.</summary>
    public void Close() => Engine.Close();

    public void Dispose() => Engine.Dispose();
}
