using System.Text;
using Xfbtree.Xfs.Directories;
using Xfbtree.Xfs.Format;

namespace Xfbtree.Xfs.Write.Namespace;

/// <summary>Where the read-only namespace code gets committed inodes and blocks from.</summary>
internal interface INamespaceSource
{
    /// <summary>A verified copy of inode <paramref name="ino"/> (sb_inodesize bytes). Throws XfsWriteException
    /// NotFound for an invalid or free inode, Corrupt for a damaged one.</summary>
    byte[] ReadInode(ulong ino);

    /// <summary>Reads committed blocks from fs block <paramref name="fsbno"/>.</summary>
    void ReadBlocks(ulong fsbno, Span<byte> destination);

    /// <summary>Holds inode <paramref name="ino"/> stable (its read lock) while its core and blocks are read.</summary>
    IDisposable ReadLock(ulong ino);

    /// <summary>The content version of the read-locked directory <paramref name="dirIno"/> for the lookup cache, or
    /// -1 when the source caches nothing.</summary>
    long LookupVersion(ulong dirIno);

    /// <summary>A cached lookup in the read-locked directory at <paramref name="version"/>.</summary>
    bool TryCachedLookup(ulong dirIno, long version, ReadOnlySpan<byte> name, out ulong child);

    /// <summary>Remembers a lookup made in the read-locked directory at <paramref name="version"/>.</summary>
    void RememberLookup(ulong dirIno, long version, ReadOnlySpan<byte> name, ulong child);
}

/// <summary>
/// Absolute path lookup and directory listing over an <see cref="INamespaceSource"/>, reading directories of
/// every format. Paths: absolute, components separated by '/', empty components and "." ignored, ".." goes to
/// the parent (the root's parent is the root).
/// </summary>
internal sealed class PathWalker
{
    readonly INamespaceSource _source;

    public PathWalker(XfsImage image, INamespaceSource source)
    {
        Image = image;
        _source = source;
        Reader = new DirectoryReader(image);
    }

    public XfsImage Image { get; }
    public DirectoryReader Reader { get; }
    public ulong RootIno => Image.Superblock.RootIno;

    /// <summary>The components of an absolute path as bytes ("" and "." dropped). Throws InvalidArgument.</summary>
    public static List<byte[]> Split(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        if (path.Length == 0 || path[0] != '/') throw new XfsWriteException(WriteErrorKind.InvalidArgument, $"'{path}': not an absolute path");
        if (path.Contains('\0', StringComparison.Ordinal)) throw new XfsWriteException(WriteErrorKind.InvalidArgument, $"'{path.Replace("\0", "\\0", StringComparison.Ordinal)}': a NUL byte in the path");
        var parts = new List<byte[]>();
        foreach (var part in path.Split('/'))
        {
            if (part.Length == 0 || part == ".") continue;
            var bytes = Encoding.UTF8.GetBytes(part);
            if (bytes.Length > DirectoryFormat.MaxNameLength)
                throw new XfsWriteException(WriteErrorKind.NameTooLong, $"'{path}': component of {bytes.Length} bytes is longer than {DirectoryFormat.MaxNameLength}");
            parts.Add(bytes);
        }
        return parts;
    }

    /// <summary>Splits a path naming a new or existing entry into its parent's path and the last name.
    /// Throws InvalidArgument for "/" or a last component "." or "..".</summary>
    public static (string ParentPath, byte[] Name) SplitLast(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        if (path.Length == 0 || path[0] != '/') throw new XfsWriteException(WriteErrorKind.InvalidArgument, $"'{path}': not an absolute path");
        string trimmed = path.TrimEnd('/');
        int slash = trimmed.LastIndexOf('/');
        if (slash < 0 || trimmed.Length == 0) throw new XfsWriteException(WriteErrorKind.InvalidArgument, $"'{path}': names the root, not an entry");
        string last = trimmed[(slash + 1)..];
        var name = Encoding.UTF8.GetBytes(last);
        if (DirectoryFormat.CheckNewName(name) is { } why)
            throw new XfsWriteException(WriteErrorKind.InvalidArgument, $"'{path}': {why}");
        return (slash == 0 ? "/" : trimmed[..slash], name);
    }

    /// <summary>The inode <paramref name="path"/> names.</summary>
    public ulong Lookup(string path)
    {
        ulong ino = RootIno;
        var walked = new StringBuilder();
        foreach (var part in Split(path))
        {
            string where = walked.Length == 0 ? "/" : walked.ToString();
            walked.Append('/').Append(DirectoryFormat.Show(part));
            ulong? found;
            using (_source.ReadLock(ino))
            {
                // A cached entry exists only for a version at which the inode was a directory: no type check needed.
                long version = _source.LookupVersion(ino);
                if (version >= 0 && _source.TryCachedLookup(ino, version, part, out ulong cached))
                {
                    found = cached == AbsentName ? null : cached;
                }
                else
                {
                    var core = _source.ReadInode(ino);
                    if ((new Dinode(core).Mode & 0xF000) != 0x4000)
                        throw new XfsWriteException(WriteErrorKind.NotDirectory, $"'{where}' is not a directory (in '{path}')");
                    found = Reader.Lookup(ino, core, part, _source.ReadBlocks, where);
                    if (version >= 0) _source.RememberLookup(ino, version, part, found ?? AbsentName);
                }
            }
            if (found is not ulong child) throw new XfsWriteException(WriteErrorKind.NotFound, $"'{walked}' does not exist");
            ino = child;
        }
        return ino;
    }

    /// <summary>The inode of <paramref name="name"/> in directory <paramref name="dirIno"/> (whose verified core is
    /// <paramref name="core"/>, read-locked by the caller); ".." gives the parent; null when absent. Through the
    /// source's lookup cache.</summary>
    public ulong? Find(ulong dirIno, byte[] core, ReadOnlySpan<byte> name, string where)
    {
        long version = _source.LookupVersion(dirIno);
        if (version >= 0 && _source.TryCachedLookup(dirIno, version, name, out ulong cached)) return cached == AbsentName ? null : cached;
        var found = Reader.Lookup(dirIno, core, name, _source.ReadBlocks, where);
        if (version >= 0) _source.RememberLookup(dirIno, version, name, found ?? AbsentName);
        return found;
    }

    /// <summary>As <see cref="Find"/> from the lookup cache alone: true with the answer (null: no such name) when the
    /// directory (read-locked by the caller) has an entry at its current version, false when its blocks must be read.</summary>
    public bool TryFindCached(ulong dirIno, ReadOnlySpan<byte> name, out ulong? child)
    {
        long version = _source.LookupVersion(dirIno);
        if (version >= 0 && _source.TryCachedLookup(dirIno, version, name, out ulong cached))
        {
            child = cached == AbsentName ? null : cached;
            return true;
        }
        child = null;
        return false;
    }

    /// <summary>The cached child of a name the directory does not hold (inode 0 is never an entry's inode): a miss is
    /// remembered as a hit is, so a name looked for again and again (a build probing paths, FUSE asking before each
    /// create) costs no directory read, until the directory changes.</summary>
    const ulong AbsentName = 0;

    /// <summary>Entries of the directory <paramref name="path"/> names.</summary>
    public List<DataEntry> List(string path)
    {
        ulong ino = Lookup(path);
        using (_source.ReadLock(ino))
        {
            var core = _source.ReadInode(ino);
            return Reader.ReadAll(ino, core, _source.ReadBlocks, path).Entries;
        }
    }
}

/// <summary>
/// An <see cref="INamespaceSource"/> over an image opened read-only (no engine): inodes and blocks through the
/// image's buffer cache. Inodes are verified with <see cref="Dinode.Verify"/>.
/// </summary>
internal sealed class ImageNamespaceSource : INamespaceSource
{
    readonly XfsImage _image;

    public ImageNamespaceSource(XfsImage image) => _image = image;

    /// <summary>Nothing to lock: the image is read-only.</summary>
    public IDisposable ReadLock(ulong ino) => NoLock.Instance;

    /// <summary>No lookup cache over a read-only image.</summary>
    public long LookupVersion(ulong dirIno) => -1;

    public bool TryCachedLookup(ulong dirIno, long version, ReadOnlySpan<byte> name, out ulong child)
    {
        child = 0;
        return false;
    }

    public void RememberLookup(ulong dirIno, long version, ReadOnlySpan<byte> name, ulong child) { }

    sealed class NoLock : IDisposable
    {
        public static readonly NoLock Instance = new();
        public void Dispose() { }
    }

    public byte[] ReadInode(ulong ino)
    {
        var geo = _image.Geometry;
        if (!geo.IsValidIno(ino)) throw new XfsWriteException(WriteErrorKind.NotFound, $"inode {ino} is not a valid inode number");
        uint agno = geo.InoToAgno(ino), agino = geo.InoToAgino(ino);
        long daddr = geo.AgBlockToDaddr(agno, geo.AginoToAgbno(agino));
        var buf = _image.Cache.Read(_image.Target, daddr, geo.BasicBlocksPerBlock, null, Buffers.BufferLockMode.Shared);
        byte[] core;
        try { core = buf.Span.Slice(geo.AginoToSlot(agino) * geo.InodeSize, geo.InodeSize).ToArray(); }
        finally { _image.Cache.Release(buf); }
        var d = new Dinode(core);
        if (d.Magic == Dinode.MagicValue && d.IsFree) throw new XfsWriteException(WriteErrorKind.NotFound, $"inode {ino} is free");
        if (d.Verify(geo, ino) is { } why) throw new XfsWriteException(WriteErrorKind.Corrupt, $"inode {ino}: {why}");
        return core;
    }

    public void ReadBlocks(ulong fsbno, Span<byte> destination)
    {
        var geo = _image.Geometry;
        int blocks = destination.Length / geo.BlockSize;
        if (!geo.IsValidExtent(fsbno, (ulong)blocks)) throw new XfsWriteException(WriteErrorKind.Corrupt, $"blocks {fsbno}+{blocks} outside the filesystem");
        long daddr = geo.AgBlockToDaddr(geo.FsbToAgno(fsbno), geo.FsbToAgbno(fsbno));
        var buf = _image.Cache.Read(_image.Target, daddr, blocks * geo.BasicBlocksPerBlock, null, Buffers.BufferLockMode.Shared);
        try { buf.Span.CopyTo(destination); }
        finally { _image.Cache.Release(buf); }
    }
}
