using System.Text;
using Xfbtree.Xfs.Directories;
using Xfbtree.Xfs.Format;
using Xfbtree.Xfs.Write.Engine;
using Xfbtree.Xfs.Write.Files;

namespace Xfbtree.Xfs.Write.Namespace;

/// <summary>One entry of a directory listing.</summary>
/// <param name="Name">The name (UTF-8 decoded, invalid bytes replaced).</param>
/// <param name="Ino">The inode it names.</param>
/// <param name="Type">What that inode is.</param>
public readonly record struct DirectoryEntry(string Name, ulong Ino, InodeType Type);

/// <summary>What an inode is.</summary>
public enum InodeType
{
    /// <summary>Not known (no ftype in the entry and the inode not read).</summary>
    Unknown,
    /// <summary>S_IFREG.</summary>
    RegularFile,
    /// <summary>S_IFDIR.</summary>
    Directory,
    /// <summary>S_IFLNK.</summary>
    Symlink,
    /// <summary>S_IFCHR.</summary>
    CharDevice,
    /// <summary>S_IFBLK.</summary>
    BlockDevice,
    /// <summary>S_IFIFO.</summary>
    Fifo,
    /// <summary>S_IFSOCK.</summary>
    Socket,
}

/// <summary>What the CLI's stat shows (see <see cref="NamespaceOperations.GetAttr(ulong)"/> for everything).</summary>
/// <param name="Ino">Inode number.</param>
/// <param name="Type">What the inode is.</param>
/// <param name="Mode">The whole mode.</param>
/// <param name="Links">Link count.</param>
/// <param name="Size">di_size.</param>
/// <param name="Blocks">di_nblocks (filesystem blocks).</param>
/// <param name="DataExtents">Data-fork extent count (extents and btree formats).</param>
/// <param name="DataForkFormat">"local", "extents", "btree" or "dev".</param>
/// <param name="Reflink">The reflink flag is set.</param>
/// <param name="ModifiedAt">mtime.</param>
public readonly record struct InodeStat(
    ulong Ino, InodeType Type, ushort Mode, uint Links, long Size, long Blocks, ulong DataExtents,
    string DataForkFormat, bool Reflink, DateTimeOffset ModifiedAt);

/// <summary>Called once per directory entry by <see cref="NamespaceOperations.ReadDirectory"/>.</summary>
/// <param name="name">The entry's name (valid during the call only).</param>
/// <param name="ino">The inode it names.</param>
/// <param name="type">What that inode is.</param>
/// <param name="nextCookie">The cookie that resumes the listing after this entry.</param>
/// <returns>False to stop (e.g. the reply buffer is full); the entry was then not consumed.</returns>
internal delegate bool DirectoryVisitor(ReadOnlySpan<byte> name, ulong ino, InodeType type, ulong nextCookie);

/// <summary>
/// Names and inode life, by inode (what a FUSE server calls) and by path on top of it: lookup, getattr, readdir,
/// create, mkdir, unlink, rmdir, list, stat. Directories of every format (through
/// <see cref="DirectoryEditor"/>); inode allocation from a free inode or a new chunk (inobt, finobt, OWN_INODES);
/// inode free. Every failure is an <see cref="XfsWriteException"/> whose <see cref="XfsWriteException.Errno"/> is
/// what the kernel would return.
/// </summary>
/// <remarks>
/// Reads hold one inode lock at a time (as the kernel's path walk holds one ILOCK at a time). A change finds the
/// child unlocked, then in its transaction locks the directory (and for unlink the child, in ascending inode
/// order), then the AGs, and looks the name up again under the locks: when the name moved meanwhile the
/// transaction is cancelled and the operation starts over (a few times at most). Operations given a generation
/// (handles, and the path API, which resolves to handles) check it under the inode lock: a directory freed and
/// reused since it was resolved is ESTALE, never the new directory.
/// </remarks>
internal sealed partial class NamespaceOperations
{
    const int MaxRestarts = 8;
    /// <summary>XFS_MAXLINK: the most links an inode may have.</summary>
    public const uint MaxLinks = (1u << 31) - 1;
    readonly PathWalker _walker;
    readonly InodeAllocator _allocator;
    readonly EngineSource _source;

    /// <summary>The namespace operations of <paramref name="engine"/>; <paramref name="files"/> frees the blocks
    /// of removed files.</summary>
    public NamespaceOperations(WriteEngine engine, FileOperations files)
    {
        ArgumentNullException.ThrowIfNull(engine);
        Engine = engine;
        Files = files;
        _source = new EngineSource(engine);
        _walker = new PathWalker(engine.Image, _source);
        _allocator = new InodeAllocator(engine);
    }

    /// <summary>The engine the operations run on.</summary>
    public WriteEngine Engine { get; }

    /// <summary>Sparse inode pieces put into holes of existing records, and elsewhere (tests and measurements).</summary>
    internal (long IntoHoles, long Elsewhere) SparsePieces => _allocator.SparsePieces;

    /// <summary>Inode chunks freed by their last inode's free since this instance was made (tests and measurements).</summary>
    internal long ChunksFreed => _allocator.ChunksFreed;

    /// <summary>The dentry cache of the path walk and of lookups by inode (tests and measurements read its figures).</summary>
    internal DirectoryLookupCache? LookupCache => _source.Lookups;

    /// <summary>The file operations (block freeing of removed files).</summary>
    public FileOperations Files { get; }

    /// <summary>The root directory's inode number.</summary>
    public ulong RootIno => _walker.RootIno;

    DirectoryReader Reader => _walker.Reader;

    /// <summary>The name changed between the unlocked lookup and the locked check: start over.</summary>
    sealed class NameMovedException : Exception
    {
    }

    static XfsWriteException KeptMoving(string what)
        => new(WriteErrorKind.Busy, $"'{what}': the name kept changing under concurrent operations ({MaxRestarts + 1} attempts)");

    // ------------------------------------------------------------------ paths

    /// <summary>The inode an absolute path names ("/" = root). Throws NotFound / NotDirectory / InvalidArgument /
    /// NameTooLong. The number alone may be stale by the time it is used: <see cref="Resolve"/> gives a handle.</summary>
    public ulong Lookup(string path) => _walker.Lookup(path);

    /// <summary>The attributes (and so the handle) of the inode an absolute path names; the last name is looked up
    /// and the inode read with the name re-checked afterwards, so the handle is of an incarnation the path named.</summary>
    public InodeAttributes Resolve(string path)
    {
        var (parentPath, name) = SplitPath(path);
        if (name is null) return GetAttr(RootIno);
        for (int attempt = 0; ; attempt++)
        {
            ulong dir = _walker.Lookup(parentPath);
            try
            {
                return LookupCore(dir, name, path);
            }
            catch (XfsWriteException e) when (e.Kind == WriteErrorKind.NotFound && attempt < MaxRestarts && !Exists(dir))
            {
                // The parent went away between the walk and the lookup: walk again (the walk reports ENOENT itself).
            }
        }
    }

    bool Exists(ulong ino)
    {
        try
        {
            GetAttr(ino);
            return true;
        }
        catch (XfsWriteException e) when (e.Kind == WriteErrorKind.NotFound)
        {
            return false;
        }
    }

    /// <summary>Splits an absolute path into its parent's path and its last name (null for the root). The last
    /// name is not checked here: each operation gives the errno the kernel gives for '.', '..' or a bad name.</summary>
    internal static (string ParentPath, byte[]? Name) SplitPath(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        if (path.Length == 0) throw new XfsWriteException(WriteErrorKind.NotFound, "empty path");
        if (path[0] != '/') throw new XfsWriteException(WriteErrorKind.InvalidArgument, $"'{path}': not an absolute path");
        if (path.Contains('\0', StringComparison.Ordinal)) throw new XfsWriteException(WriteErrorKind.InvalidArgument, "a NUL byte in the path");
        string trimmed = path.TrimEnd('/');
        if (trimmed.Length == 0) return ("/", null);
        int slash = trimmed.LastIndexOf('/');
        return (slash == 0 ? "/" : trimmed[..slash], Encoding.UTF8.GetBytes(trimmed[(slash + 1)..]));
    }

    /// <summary>The directory and name of a path naming a new entry; the root is EEXIST (as for any creation of
    /// an existing name).</summary>
    (InodeHandle Dir, byte[] Name) ResolveParent(string path)
    {
        var (parentPath, name) = SplitPath(path);
        if (name is null) throw new XfsWriteException(WriteErrorKind.Exists, $"'{path}' exists (the root)");
        return (Resolve(parentPath).Handle, name);
    }

    /// <summary>Creates an empty regular file owned by 0:0; returns its inode number. Throws Exists.</summary>
    public ulong Create(string path, ushort permissions = 0x1A4)
    {
        var (dir, name) = ResolveParent(path);
        return CreateInode("create", dir.Ino, dir.Generation, name, (ushort)(InodeCore.ModeRegular | (permissions & 0xFFF)), 0, 0, 0, null, path).Ino;
    }

    /// <summary>Creates an empty directory owned by 0:0; returns its inode number.</summary>
    public ulong Mkdir(string path, ushort permissions = 0x1ED)
    {
        var (dir, name) = ResolveParent(path);
        return CreateInode("mkdir", dir.Ino, dir.Generation, name, (ushort)(InodeCore.ModeDirectory | (permissions & 0xFFF)), 0, 0, 0, null, path).Ino;
    }

    /// <summary>Removes a name, as remove(3): a file (its blocks and inode are freed when it was the last link and
    /// nobody holds it) or an empty directory.</summary>
    public void Unlink(string path)
    {
        var (parentPath, name) = SplitPath(path);
        if (name is null) throw new XfsWriteException(WriteErrorKind.IsDirectory, "'/' is the root directory");
        var dir = Resolve(parentPath).Handle;
        RemoveName("unlink", dir.Ino, dir.Generation, name, RemoveKind.Any, path);
    }

    /// <summary>Removes an empty directory, as rmdir(2) (ENOTDIR for anything else).</summary>
    public void Rmdir(string path)
    {
        var (parentPath, name) = SplitPath(path);
        if (name is null) throw new XfsWriteException(WriteErrorKind.Busy, "'/' is the root");
        var dir = Resolve(parentPath).Handle;
        RemoveName("rmdir", dir.Ino, dir.Generation, name, RemoveKind.Directory, path);
    }

    /// <summary>Entries of a directory, "." and ".." excluded, in directory order.</summary>
    public IReadOnlyList<DirectoryEntry> List(string path)
    {
        var entries = _walker.List(path);
        var result = new List<DirectoryEntry>(entries.Count);
        foreach (var e in entries)
        {
            result.Add(new DirectoryEntry(DirectoryFormat.Show(e.Name), e.Ino, TypeOf(e.FileType, e.Ino)));
        }
        if (Engine.Options.AccessTimes != AccessTimeUpdates.None) TouchAfterRead(Resolve(path).Handle);
        return result;
    }

    /// <summary>A read-like call on the incarnation <paramref name="handle"/> names is done: its atime follows the
    /// engine's rule (<see cref="AccessTimes"/>).</summary>
    void TouchAfterRead(InodeHandle handle)
    {
        var inode = Engine.GetInode(handle.Ino);
        bool touch;
        using (Engine.LockInodeForRead(inode))
        {
            touch = InodeAttributeFields.Generation(inode.Core) == handle.Generation && AccessTimes.Wanted(Engine, inode.Core);
        }
        if (touch) AccessTimes.Update(Engine, inode, handle.Generation);
    }

    /// <summary>The type of an entry: its ftype, or on filesystems without ftype the inode's mode.</summary>
    InodeType TypeOf(byte fileType, ulong ino)
    {
        var type = DirectoryFormat.TypeOfFileType(fileType);
        if (type != InodeType.Unknown) return type;
        var inode = Engine.GetInode(ino);
        using (Engine.LockInodeForRead(inode)) return DirectoryFormat.TypeOfMode(new Dinode(inode.Core).Mode);
    }

    /// <summary>What the CLI's stat shows about the inode <paramref name="path"/> names.</summary>
    public InodeStat Stat(string path)
    {
        ulong ino = _walker.Lookup(path);
        var inode = Engine.GetInode(ino);
        byte[] core;
        using (Engine.LockInodeForRead(inode)) core = (byte[])inode.Core.Clone();
        var d = new Dinode(core);
        if (d.IsFree) throw new XfsWriteException(WriteErrorKind.NotFound, $"'{path}' names a free inode");
        string format = d.Format switch
        {
            ForkFormat.Local => "local",
            ForkFormat.Extents => "extents",
            ForkFormat.Btree => "btree",
            ForkFormat.Dev => "dev",
            _ => $"format {(int)d.Format}",
        };
        return new InodeStat(ino, DirectoryFormat.TypeOfMode(d.Mode), d.Mode, InodeCore.Nlink(core), (long)d.Size, (long)d.NBlocks,
            d.Format is ForkFormat.Extents or ForkFormat.Btree ? d.DataExtents : 0, format, (d.Flags2 & Dinode.Flag2Reflink) != 0,
            InodeCore.GetTime(core, InodeCore.OffMtime));
    }

    /// <summary>Committed inodes and blocks of an open engine, one inode read-locked at a time.</summary>
    sealed class EngineSource(WriteEngine engine) : INamespaceSource
    {
        readonly WriteEngine _engine = engine;

        public IDisposable ReadLock(ulong ino) => _engine.LockInodeForRead(_engine.GetInode(ino));

        /// <summary>The dentry cache (null when the engine's options turn it off).</summary>
        public DirectoryLookupCache? Lookups { get; } = engine.Options.LookupCacheSlots > 0 ? new DirectoryLookupCache(engine.Options.LookupCacheSlots) : null;

        public long LookupVersion(ulong dirIno) => Lookups is null ? -1 : Volatile.Read(ref _engine.GetInode(dirIno).ContentVersion);

        public bool TryCachedLookup(ulong dirIno, long version, ReadOnlySpan<byte> name, out ulong child)
        {
            child = 0;
            return Lookups is { } cache && cache.TryGet(dirIno, version, name, out child);
        }

        public void RememberLookup(ulong dirIno, long version, ReadOnlySpan<byte> name, ulong child) => Lookups?.Put(dirIno, version, name, child);

        public byte[] ReadInode(ulong ino)
        {
            var core = (byte[])_engine.GetInode(ino).Core.Clone();
            if (new Dinode(core).IsFree) throw new XfsWriteException(WriteErrorKind.NotFound, $"inode {ino} is free");
            return core;
        }

        public void ReadBlocks(ulong fsbno, Span<byte> destination) => _engine.ReadMetadataBlocks(fsbno, destination);
    }
}
