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
    }

    public WriteEngine Engine { get; }

    public FileOperations Files { get; }

    public NamespaceOperations Namespace { get; }

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

    /// <summary>Clean close: the image is consistent, NEEDSREPAIR cleared, the lock released.</summary>
    public void Close() => Engine.Close();

    public void Dispose() => Engine.Dispose();
}
