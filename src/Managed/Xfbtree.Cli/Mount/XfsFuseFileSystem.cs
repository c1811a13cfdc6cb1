using System.Buffers.Binary;
using System.Collections.Concurrent;
using System.Runtime.Versioning;
using System.Text;
using Xfbtree.Fuse;
using Xfbtree.Xfs.Format;
using Xfbtree.Xfs.Write;
using Xfbtree.Xfs.Write.Attributes;
using Xfbtree.Xfs.Write.Files;
using Xfbtree.Xfs.Write.Namespace;

namespace Xfbtree.Cli.Mount;

/// <summary>
/// The XFS write engine behind the FUSE protocol layer: node ids, the kernel's lookup counts, attributes from the
/// in-core inodes, and one engine operation per request. Node id = inode number (FUSE_ROOT_ID 1 = the root inode);
/// the reply's generation is the inode's di_gen, which the engine bumps when it frees an inode, so the kernel tells
/// a reused inode number from the old file. Names are checked (valid UTF-8; "." and "..") before the engine sees them.
/// </summary>
/// <remarks>
/// The engine's namespace operations take paths today, so each node remembers the path it was last looked up by;
/// without rename (not in the engine yet) a directory's path never changes while it lives. Directory listings are
/// snapshots taken at OPENDIR (and again when a reader rewinds to offset 0); their cookies are positions in the
/// snapshot. Durability: <see cref="Fsync"/>, <see cref="FsyncDir"/> and <see cref="SyncFs"/> return once the
/// journal holds every committed operation durably (fsyncs shared between callers).
/// </remarks>
[SupportedOSPlatform("linux")]
internal sealed class XfsFuseFileSystem : IFuseFileSystem
{
    const uint S_IFMT = 0xF000, S_IFREG = 0x8000, S_IFDIR = 0x4000;
    const uint O_ACCMODE = 3, O_TRUNC = 0x200;
    const int ESTALE = 116;
    /// <summary>Entries and attributes may be cached by the kernel for this long: every change goes through it.</summary>
    const ulong CacheSeconds = 1;

    readonly XfsFileSystem _fs;
    readonly ulong _rootIno;
    readonly bool _readOnly;
    readonly int _blockSize;
    readonly Action<string>? _log;
    readonly object _nodesGate = new();
    readonly Dictionary<ulong, Node> _nodes = new();
    readonly ConcurrentDictionary<ulong, DirectoryHandle> _directories = new();
    long _nextHandle;

    public XfsFuseFileSystem(XfsFileSystem fs, bool readOnly, Action<string>? log)
    {
        _fs = fs;
        _readOnly = readOnly;
        _log = log;
        _rootIno = fs.Engine.Geometry.Superblock.RootIno;
        _blockSize = fs.Engine.Geometry.BlockSize;
        _nodes[_rootIno] = new Node(_rootIno, "/") { Lookups = 1 };
    }

    /// <summary>Nodes the kernel holds references to (root included).</summary>
    public int NodeCount
    {
        get { lock (_nodesGate) return _nodes.Count; }
    }

    /// <summary>The sum of the kernel's lookup references (root not counted).</summary>
    public long LookupReferences
    {
        get
        {
            lock (_nodesGate) return _nodes.Values.Where(n => n.Ino != _rootIno).Sum(n => n.Lookups);
        }
    }

    sealed class Node(ulong ino, string path)
    {
        public ulong Ino { get; } = ino;
        public string Path { get; set; } = path;
        public long Lookups { get; set; }
        public uint Generation { get; set; }
    }

    sealed class DirectoryHandle(ulong ino, string path)
    {
        public ulong Ino { get; } = ino;
        public string Path { get; } = path;
        public IReadOnlyList<DirectoryEntry> Entries { get; set; } = [];
        public readonly object Gate = new();
    }

    // ------------------------------------------------------------------ nodes

    ulong NodeIdOf(ulong ino) => ino == _rootIno ? FuseConstants.RootNodeId : ino;

    ulong InoOf(ulong nodeId) => nodeId == FuseConstants.RootNodeId ? _rootIno : nodeId;

    Node? Resolve(ulong nodeId)
    {
        lock (_nodesGate) return _nodes.TryGetValue(InoOf(nodeId), out var node) ? node : null;
    }

    /// <summary>The kernel got one more reference to the inode through an entry reply.</summary>
    void Remember(ulong ino, string path, uint generation)
    {
        lock (_nodesGate)
        {
            if (!_nodes.TryGetValue(ino, out var node)) _nodes[ino] = node = new Node(ino, path);
            node.Path = path;
            node.Generation = generation;
            node.Lookups++;
        }
    }

    public void Forget(ulong node, ulong lookups)
    {
        ulong ino = InoOf(node);
        lock (_nodesGate)
        {
            if (ino == _rootIno || !_nodes.TryGetValue(ino, out var n)) return;
            n.Lookups -= (long)Math.Min(lookups, (ulong)long.MaxValue);
            if (n.Lookups <= 0) _nodes.Remove(ino);
        }
    }

    static string Child(string parent, string name) => parent == "/" ? "/" + name : parent + "/" + name;

    static string ParentOf(string path)
    {
        int slash = path.LastIndexOf('/');
        return slash <= 0 ? "/" : path[..slash];
    }

    static readonly UTF8Encoding StrictUtf8 = new(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: true);

    /// <summary>The name as the engine's path API needs it: valid UTF-8 (anything else cannot cross it unchanged).</summary>
    static int NameOf(ReadOnlySpan<byte> bytes, out string name)
    {
        try
        {
            name = StrictUtf8.GetString(bytes);
            return 0;
        }
        catch (DecoderFallbackException)
        {
            name = "";
            return FuseErrno.EINVAL;
        }
    }

    static bool IsDot(string name) => name is "." or "..";

    // ------------------------------------------------------------------ attributes

    /// <summary>Reads the inode's attributes; ENOENT when it is free now.</summary>
    int ReadAttr(ulong ino, out FuseAttr attr, out uint generation)
    {
        attr = default;
        generation = 0;
        var inode = _fs.Engine.GetInode(ino);
        using (_fs.Engine.LockInodeForRead(inode))
        {
            ReadOnlySpan<byte> c = inode.Core;
            uint mode = BinaryPrimitives.ReadUInt16BigEndian(c[2..]);
            if (mode == 0) return FuseErrno.ENOENT;
            bool bigtime = (BinaryPrimitives.ReadUInt64BigEndian(c[120..]) & 0x8) != 0;
            attr.Ino = ino;
            attr.Mode = mode;
            attr.Uid = BinaryPrimitives.ReadUInt32BigEndian(c[8..]);
            attr.Gid = BinaryPrimitives.ReadUInt32BigEndian(c[12..]);
            attr.Nlink = BinaryPrimitives.ReadUInt32BigEndian(c[16..]);
            attr.Size = BinaryPrimitives.ReadUInt64BigEndian(c[56..]);
            attr.Blocks = BinaryPrimitives.ReadUInt64BigEndian(c[64..]) * (ulong)(_blockSize / 512);
            attr.BlockSize = (uint)_blockSize;
            (attr.Atime, attr.AtimeNsec) = Time(c[32..], bigtime);
            (attr.Mtime, attr.MtimeNsec) = Time(c[40..], bigtime);
            (attr.Ctime, attr.CtimeNsec) = Time(c[48..], bigtime);
            generation = BinaryPrimitives.ReadUInt32BigEndian(c[92..]);
            if (c[5] == (byte)ForkFormat.Dev) attr.Rdev = BinaryPrimitives.ReadUInt32BigEndian(c[176..]);
            return 0;
        }
    }

    /// <summary>An XFS timestamp as Unix seconds (two's complement in the 64-bit field) and nanoseconds.</summary>
    static (ulong Seconds, uint Nanoseconds) Time(ReadOnlySpan<byte> t, bool bigtime)
    {
        if (bigtime)
        {
            ulong v = BinaryPrimitives.ReadUInt64BigEndian(t);
            return ((ulong)((long)(v / 1_000_000_000UL) - (1L << 31)), (uint)(v % 1_000_000_000UL));
        }
        return ((ulong)(long)BinaryPrimitives.ReadInt32BigEndian(t), Math.Min(BinaryPrimitives.ReadUInt32BigEndian(t[4..]), 999_999_999u));
    }

    int Entry(ulong ino, string path, out FuseEntryOut entry)
    {
        entry = default;
        int e = ReadAttr(ino, out FuseAttr attr, out uint generation);
        if (e != 0) return e;
        entry.NodeId = NodeIdOf(ino);
        entry.Generation = generation;
        entry.EntryValid = CacheSeconds;
        entry.AttrValid = CacheSeconds;
        entry.Attr = attr;
        Remember(ino, path, generation);
        return 0;
    }

    /// <summary>The node as an inode of the expected generation (ESTALE: the kernel holds a node whose inode was freed).</summary>
    int Live(ulong nodeId, out Node node)
    {
        node = Resolve(nodeId)!;
        return node is null ? ESTALE : 0;
    }

    // ------------------------------------------------------------------ requests

    public int Lookup(in FuseRequestContext context, ulong parent, ReadOnlySpan<byte> name, out FuseEntryOut entry)
    {
        entry = default;
        int e = Live(parent, out var dir);
        if (e != 0 || (e = NameOf(name, out string n)) != 0) return e;
        string path = n switch { "." => dir.Path, ".." => ParentOf(dir.Path), _ => Child(dir.Path, n) };
        try
        {
            return Entry(_fs.Namespace.Lookup(path), path, out entry);
        }
        catch (Exception ex) when (IsEngineFailure(ex))
        {
            return Fail(context, ex);
        }
    }

    static bool IsEngineFailure(Exception ex) => ex is XfsWriteException or IOException;

    /// <summary>The errno for an engine failure (the operation was cancelled: nothing changed); corruption and I/O are logged.</summary>
    int Fail(in FuseRequestContext context, Exception failure)
    {
        if (failure is XfsWriteException ex)
        {
            if (ex.Kind is WriteErrorKind.Corrupt or WriteErrorKind.Io)
                _log?.Invoke($"xfbtree mount: request {context.Unique} on node {context.NodeId}: {ex.Message} ({ex.Kind})");
            return ex.Kind switch
            {
                WriteErrorKind.InvalidArgument => FuseErrno.EINVAL,
                WriteErrorKind.NotFound => FuseErrno.ENOENT,
                WriteErrorKind.Exists => FuseErrno.EEXIST,
                WriteErrorKind.NotDirectory => FuseErrno.ENOTDIR,
                WriteErrorKind.IsDirectory => FuseErrno.EISDIR,
                WriteErrorKind.NotEmpty => FuseErrno.ENOTEMPTY,
                WriteErrorKind.NoSpace => FuseErrno.ENOSPC,
                WriteErrorKind.NotSupported => FuseErrno.EOPNOTSUPP,
                WriteErrorKind.Corrupt => FuseErrno.EUCLEAN,
                WriteErrorKind.Busy => FuseErrno.EBUSY,
                WriteErrorKind.NoData => FuseErrno.ENODATA,
                WriteErrorKind.TooBig => FuseErrno.E2BIG,
                WriteErrorKind.OutOfRange => FuseErrno.ERANGE,
                WriteErrorKind.NotPermitted => FuseErrno.EPERM,
                _ => FuseErrno.EIO,
            };
        }
        _log?.Invoke($"xfbtree mount: request {context.Unique} on node {context.NodeId}: {failure.Message}");
        return FuseErrno.EIO;
    }

    public int GetAttr(in FuseRequestContext context, ulong node, bool hasHandle, ulong handle, out FuseAttrOut attr)
    {
        attr = default;
        int e = Live(node, out var n);
        if (e != 0) return e;
        try
        {
            e = ReadAttr(n.Ino, out FuseAttr a, out uint generation);
            if (e == FuseErrno.ENOENT || (e == 0 && n.Ino != _rootIno && generation != n.Generation)) return ESTALE;
            if (e != 0) return e;
            attr.AttrValid = CacheSeconds;
            attr.Attr = a;
            return 0;
        }
        catch (Exception ex) when (IsEngineFailure(ex))
        {
            return Fail(context, ex);
        }
    }

    public int SetAttr(in FuseRequestContext context, ulong node, in FuseSetAttrIn change, out FuseAttrOut attr)
    {
        attr = default;
        int e = Live(node, out var n);
        if (e != 0) return e;
        uint valid = change.Valid;
        // A truncate asks for mtime "now" with the size: the engine's truncate sets mtime and ctime itself.
        uint handled = FuseConstants.SetAttrFh | FuseConstants.SetAttrLockOwner | FuseConstants.SetAttrKillSuidGid;
        if ((valid & FuseConstants.SetAttrSize) != 0)
        {
            handled |= FuseConstants.SetAttrSize | FuseConstants.SetAttrCtime;
            if ((valid & FuseConstants.SetAttrMtimeNow) != 0) handled |= FuseConstants.SetAttrMtime | FuseConstants.SetAttrMtimeNow;
        }
        // Mode, owner and times need the engine's setattr, which it does not have yet.
        if ((valid & ~handled) != 0) return FuseErrno.ENOSYS;
        if ((valid & FuseConstants.SetAttrSize) != 0)
        {
            if (_readOnly) return FuseErrno.EROFS;
            if (change.Size > (ulong)FileOperations.MaxFileSize) return FuseErrno.EFBIG;
            try
            {
                _fs.Files.Truncate(n.Ino, (long)change.Size);
            }
            catch (Exception ex) when (IsEngineFailure(ex))
            {
                return Fail(context, ex);
            }
        }
        return GetAttr(context, node, false, 0, out attr);
    }

    public int Open(in FuseRequestContext context, ulong node, uint flags, out FuseOpenOut open)
    {
        open = default;
        int e = Live(node, out var n);
        if (e != 0) return e;
        bool writing = (flags & O_ACCMODE) != 0;
        if (writing && _readOnly) return FuseErrno.EROFS;
        try
        {
            e = ReadAttr(n.Ino, out FuseAttr a, out _);
            if (e != 0) return e == FuseErrno.ENOENT ? ESTALE : e;
            if ((a.Mode & S_IFMT) == S_IFDIR) return FuseErrno.EISDIR;
            if ((a.Mode & S_IFMT) != S_IFREG) return FuseErrno.EOPNOTSUPP;
            // FUSE_ATOMIC_O_TRUNC: the truncate of open(O_TRUNC) comes here instead of a SETATTR.
            if (writing && (flags & O_TRUNC) != 0 && a.Size != 0) _fs.Files.Truncate(n.Ino, 0);
        }
        catch (Exception ex) when (IsEngineFailure(ex))
        {
            return Fail(context, ex);
        }
        // Every change goes through this mount, so cached pages stay valid across opens.
        open.OpenFlags = FuseConstants.OpenKeepCache;
        return 0;
    }

    public int Read(in FuseRequestContext context, ulong node, ulong handle, long offset, Span<byte> destination, out int length)
    {
        length = 0;
        int e = Live(node, out var n);
        if (e != 0) return e;
        try
        {
            length = _fs.Files.Read(n.Ino, offset, destination);
            return 0;
        }
        catch (Exception ex) when (IsEngineFailure(ex))
        {
            return Fail(context, ex);
        }
    }

    public int Write(in FuseRequestContext context, ulong node, ulong handle, long offset, ReadOnlySpan<byte> data, uint writeFlags, out uint written)
    {
        written = 0;
        if (_readOnly) return FuseErrno.EROFS;
        int e = Live(node, out var n);
        if (e != 0) return e;
        if (offset > FileOperations.MaxFileSize - data.Length) return FuseErrno.EFBIG;
        try
        {
            _fs.Files.Write(n.Ino, offset, data);
            written = (uint)data.Length;
            return 0;
        }
        catch (Exception ex) when (IsEngineFailure(ex))
        {
            return Fail(context, ex);
        }
    }

    public int Flush(in FuseRequestContext context, ulong node, ulong handle, ulong lockOwner) => 0;

    public int Release(in FuseRequestContext context, ulong node, ulong handle, uint flags) => 0;

    public int Fsync(in FuseRequestContext context, ulong node, ulong handle, bool dataOnly) => Sync(context);

    public int FsyncDir(in FuseRequestContext context, ulong node, ulong handle, bool dataOnly) => Sync(context);

    public int SyncFs(in FuseRequestContext context) => Sync(context);

    int Sync(in FuseRequestContext context)
    {
        try
        {
            _fs.Engine.SyncJournal();
            return 0;
        }
        catch (Exception ex) when (IsEngineFailure(ex))
        {
            return Fail(context, ex);
        }
    }

    public int Create(in FuseRequestContext context, ulong parent, ReadOnlySpan<byte> name, uint flags, uint mode, uint umask,
        out FuseEntryOut entry, out FuseOpenOut open)
    {
        open = new FuseOpenOut { OpenFlags = FuseConstants.OpenKeepCache };
        if ((mode & S_IFMT) is not (S_IFREG or 0))
        {
            entry = default;
            return FuseErrno.EPERM;
        }
        return MakeNode(context, parent, name, mode, directory: false, out entry);
    }

    public int MkNod(in FuseRequestContext context, ulong parent, ReadOnlySpan<byte> name, uint mode, uint rdev, uint umask, out FuseEntryOut entry)
    {
        // Regular files only: device nodes, FIFOs and sockets need the engine's mknod (not there yet). EPERM is
        // mknod(2)'s answer for a node type the file system does not support.
        if ((mode & S_IFMT) != S_IFREG)
        {
            entry = default;
            return FuseErrno.EPERM;
        }
        return MakeNode(context, parent, name, mode, directory: false, out entry);
    }

    public int MkDir(in FuseRequestContext context, ulong parent, ReadOnlySpan<byte> name, uint mode, uint umask, out FuseEntryOut entry)
        => MakeNode(context, parent, name, mode, directory: true, out entry);

    int MakeNode(in FuseRequestContext context, ulong parent, ReadOnlySpan<byte> name, uint mode, bool directory, out FuseEntryOut entry)
    {
        entry = default;
        if (_readOnly) return FuseErrno.EROFS;
        int e = Live(parent, out var dir);
        if (e != 0 || (e = NameOf(name, out string n)) != 0) return e;
        if (IsDot(n)) return FuseErrno.EEXIST;
        string path = Child(dir.Path, n);
        // The kernel applied the umask already (FUSE_DONT_MASK is not negotiated).
        ushort permissions = (ushort)(mode & 0xFFF);
        try
        {
            ulong ino = directory ? _fs.Namespace.Mkdir(path, permissions) : _fs.Namespace.Create(path, permissions);
            return Entry(ino, path, out entry);
        }
        catch (Exception ex) when (IsEngineFailure(ex))
        {
            return Fail(context, ex);
        }
    }

    public int Unlink(in FuseRequestContext context, ulong parent, ReadOnlySpan<byte> name) => Remove(context, parent, name, directory: false);

    public int RmDir(in FuseRequestContext context, ulong parent, ReadOnlySpan<byte> name) => Remove(context, parent, name, directory: true);

    int Remove(in FuseRequestContext context, ulong parent, ReadOnlySpan<byte> name, bool directory)
    {
        if (_readOnly) return FuseErrno.EROFS;
        int e = Live(parent, out var dir);
        if (e != 0 || (e = NameOf(name, out string n)) != 0) return e;
        if (n == ".") return FuseErrno.EINVAL;
        if (n == "..") return directory ? FuseErrno.ENOTEMPTY : FuseErrno.EISDIR;
        string path = Child(dir.Path, n);
        // The kernel holds the parent's lock for the whole call, so the name cannot change between this check and
        // the unlink (no other writer reaches the image while it is mounted).
        try
        {
            ulong ino = _fs.Namespace.Lookup(path);
            e = ReadAttr(ino, out FuseAttr a, out _);
            if (e != 0) return e;
            bool isDirectory = (a.Mode & S_IFMT) == S_IFDIR;
            if (directory && !isDirectory) return FuseErrno.ENOTDIR;
            if (!directory && isDirectory) return FuseErrno.EISDIR;
            _fs.Namespace.Unlink(path);
            return 0;
        }
        catch (Exception ex) when (IsEngineFailure(ex))
        {
            return Fail(context, ex);
        }
    }

    public int SetXattr(in FuseRequestContext context, ulong node, ReadOnlySpan<byte> name, ReadOnlySpan<byte> value, uint flags)
    {
        if (_readOnly) return FuseErrno.EROFS;
        int e = Live(node, out var n);
        if (e != 0) return e;
        try
        {
            _fs.Attributes.Set(n.Ino, name, value, (XattrSetFlags)flags);
            return 0;
        }
        catch (Exception ex) when (IsEngineFailure(ex))
        {
            return Fail(context, ex);
        }
    }

    public int GetXattr(in FuseRequestContext context, ulong node, ReadOnlySpan<byte> name, Span<byte> value, out int length)
    {
        length = 0;
        int e = Live(node, out var n);
        if (e != 0) return e;
        try
        {
            length = _fs.Attributes.Get(n.Ino, name, value);
            return 0;
        }
        catch (Exception ex) when (IsEngineFailure(ex))
        {
            return Fail(context, ex);
        }
    }

    public int ListXattr(in FuseRequestContext context, ulong node, Span<byte> list, out int length)
    {
        length = 0;
        int e = Live(node, out var n);
        if (e != 0) return e;
        try
        {
            length = _fs.Attributes.List(n.Ino, list);
            return 0;
        }
        catch (Exception ex) when (IsEngineFailure(ex))
        {
            return Fail(context, ex);
        }
    }

    public int RemoveXattr(in FuseRequestContext context, ulong node, ReadOnlySpan<byte> name)
    {
        if (_readOnly) return FuseErrno.EROFS;
        int e = Live(node, out var n);
        if (e != 0) return e;
        try
        {
            _fs.Attributes.Remove(n.Ino, name);
            return 0;
        }
        catch (Exception ex) when (IsEngineFailure(ex))
        {
            return Fail(context, ex);
        }
    }

    public int OpenDir(in FuseRequestContext context, ulong node, uint flags, out FuseOpenOut open)
    {
        open = default;
        int e = Live(node, out var n);
        if (e != 0) return e;
        var handle = new DirectoryHandle(n.Ino, n.Path);
        try
        {
            e = ReadAttr(n.Ino, out FuseAttr a, out _);
            if (e != 0) return e == FuseErrno.ENOENT ? ESTALE : e;
            if ((a.Mode & S_IFMT) != S_IFDIR) return FuseErrno.ENOTDIR;
            handle.Entries = _fs.Namespace.List(n.Path);
        }
        catch (Exception ex) when (IsEngineFailure(ex))
        {
            return Fail(context, ex);
        }
        ulong id = (ulong)Interlocked.Increment(ref _nextHandle);
        _directories[id] = handle;
        open.Fh = id;
        return 0;
    }

    public int ReadDir(in FuseRequestContext context, ulong node, ulong handle, long offset, ref FuseDirectoryWriter entries)
    {
        if (!_directories.TryGetValue(handle, out var dir)) return FuseErrno.EBADF;
        // Cookies: 1 after ".", 2 after "..", 3 + i after snapshot entry i.
        IReadOnlyList<DirectoryEntry> list;
        lock (dir.Gate)
        {
            if (offset == 0)
            {
                try
                {
                    dir.Entries = _fs.Namespace.List(dir.Path);
                }
                catch (Exception ex) when (IsEngineFailure(ex))
                {
                    return Fail(context, ex);
                }
            }
            list = dir.Entries;
        }
        for (long i = offset; i < list.Count + 2; i++)
        {
            if (i < 2)
            {
                ReadOnlySpan<byte> dots = i == 0 ? "."u8 : ".."u8;
                ulong ino = i == 0 || dir.Ino == _rootIno ? dir.Ino : 0;
                if (entries.Plus)
                {
                    // "." and "..": no node id, so the kernel takes no reference.
                    var dot = new FuseEntryOut { Attr = new FuseAttr { Ino = ino, Mode = S_IFDIR } };
                    if (!entries.TryAddPlus(dots, in dot, i + 1)) break;
                }
                else if (!entries.TryAdd(dots, ino, 4, i + 1))
                {
                    break;
                }
                continue;
            }
            var item = list[(int)i - 2];
            byte[] bytes = Encoding.UTF8.GetBytes(item.Name);
            if (entries.Plus)
            {
                FuseAttr a;
                uint generation;
                try
                {
                    int e = ReadAttr(item.Ino, out a, out generation);
                    if (e == FuseErrno.ENOENT) continue; // removed since the snapshot
                    if (e != 0) return entries.IsEmpty ? e : 0;
                }
                catch (Exception ex) when (IsEngineFailure(ex))
                {
                    if (entries.IsEmpty) return Fail(context, ex);
                    break;
                }
                var entry = new FuseEntryOut { NodeId = NodeIdOf(item.Ino), Generation = generation, EntryValid = CacheSeconds, AttrValid = CacheSeconds, Attr = a };
                if (!entries.TryAddPlus(bytes, in entry, i + 1)) break;
                Remember(item.Ino, Child(dir.Path, item.Name), generation);
            }
            else if (!entries.TryAdd(bytes, item.Ino, DirentType(item.Type), i + 1))
            {
                break;
            }
        }
        return 0;
    }

    static uint DirentType(InodeType type) => type switch
    {
        InodeType.RegularFile => 8,
        InodeType.Directory => 4,
        InodeType.Symlink => 10,
        InodeType.CharDevice => 2,
        InodeType.BlockDevice => 6,
        InodeType.Fifo => 1,
        InodeType.Socket => 12,
        _ => 0,
    };

    public int ReleaseDir(in FuseRequestContext context, ulong node, ulong handle)
    {
        _directories.TryRemove(handle, out _);
        return 0;
    }

    public int StatFs(in FuseRequestContext context, ulong node, out FuseStatFsOut statfs)
    {
        var engine = _fs.Engine;
        var sb = engine.Geometry.Superblock;
        ulong free = 0;
        for (uint agno = 0; agno < sb.AgCount; agno++) free += engine.Ag(agno).FreeBlocks;
        var (icountDelta, ifreeDelta) = engine.InodeCounterDeltas;
        ulong icount = (ulong)Math.Max(0, (long)sb.InodeCount + icountDelta);
        ulong ifree = Math.Min((ulong)Math.Max(0, (long)sb.FreeInodes + ifreeDelta), icount);
        ulong blocks = sb.DataBlocks - (sb.LogStart != 0 ? sb.LogBlocks : 0);
        // As the kernel counts: every free block could become inodes.
        ulong files = icount + free * sb.InodesPerBlock;
        statfs = new FuseStatFsOut
        {
            Blocks = blocks,
            FreeBlocks = free,
            AvailableBlocks = free,
            Files = files,
            FreeFiles = files - (icount - ifree),
            BlockSize = (uint)_blockSize,
            FragmentSize = (uint)_blockSize,
            NameLength = FuseConstants.NameMax,
        };
        return 0;
    }

    public int Fallocate(in FuseRequestContext context, ulong node, ulong handle, long offset, long length, uint mode)
    {
        if (_readOnly) return FuseErrno.EROFS;
        int e = Live(node, out var n);
        if (e != 0) return e;
        if (offset < 0 || length <= 0 || offset > FileOperations.MaxFileSize - length) return FuseErrno.EINVAL;
        const uint Unshare = 0x40;
        bool keepSize = (mode & FuseConstants.FallocKeepSize) != 0;
        try
        {
            e = ReadAttr(n.Ino, out FuseAttr a, out _);
            if (e != 0) return e;
            long size = (long)a.Size;
            long inside = Math.Min(offset + length, size) - offset; // the part below EOF (may be <= 0)
            switch (mode & ~FuseConstants.FallocKeepSize)
            {
                case 0:
                    // The engine's fallocate grows the size to cover the range: KEEP_SIZE past EOF is not possible yet.
                    if (keepSize && offset + length > size) return FuseErrno.EOPNOTSUPP;
                    _fs.Files.Fallocate(n.Ino, offset, length);
                    return 0;
                case FuseConstants.FallocPunchHole:
                    if (!keepSize) return FuseErrno.EOPNOTSUPP; // fallocate(2): a punch comes with KEEP_SIZE
                    if (inside > 0) _fs.Files.PunchHole(n.Ino, offset, inside);
                    return 0;
                case FuseConstants.FallocZeroRange:
                    // Punch (zeroes partial blocks, frees the rest), then unwritten extents over the range: two
                    // operations, each atomic; between them the range already reads as zeros.
                    if (inside > 0) _fs.Files.PunchHole(n.Ino, offset, inside);
                    if (!keepSize) _fs.Files.Fallocate(n.Ino, offset, length);
                    else if (inside > 0) _fs.Files.Fallocate(n.Ino, offset, inside);
                    return 0;
                case Unshare:
                    if (inside > 0) _fs.Files.Unshare(n.Ino, offset, inside);
                    return 0;
                default:
                    return FuseErrno.EOPNOTSUPP; // collapse and insert range
            }
        }
        catch (Exception ex) when (IsEngineFailure(ex))
        {
            return Fail(context, ex);
        }
    }

    public int Lseek(in FuseRequestContext context, ulong node, ulong handle, long offset, uint whence, out long result)
    {
        result = 0;
        if (whence is not (FuseConstants.SeekData or FuseConstants.SeekHole)) return FuseErrno.EINVAL;
        int e = Live(node, out var n);
        if (e != 0) return e;
        try
        {
            result = _fs.Files.Seek(n.Ino, offset, whence == FuseConstants.SeekData);
            return result < 0 ? FuseErrno.ENXIO : 0;
        }
        catch (Exception ex) when (IsEngineFailure(ex))
        {
            return Fail(context, ex);
        }
    }

    public int CopyFileRange(in FuseRequestContext context, ulong nodeIn, ulong handleIn, long offsetIn, ulong nodeOut, ulong handleOut,
        long offsetOut, long length, ulong flags, out long copied)
    {
        copied = 0;
        if (flags != 0) return FuseErrno.EINVAL;
        if (_readOnly) return FuseErrno.EROFS;
        int e = Live(nodeIn, out var source);
        if (e != 0) return e;
        if ((e = Live(nodeOut, out var destination)) != 0) return e;
        long bs = _blockSize;
        // EOPNOTSUPP makes the kernel copy this call by reading and writing instead.
        if (!_fs.Engine.Geometry.Superblock.HasReflink || offsetIn % bs != 0 || offsetOut % bs != 0) return FuseErrno.EOPNOTSUPP;
        try
        {
            e = ReadAttr(source.Ino, out FuseAttr s, out _);
            if (e != 0) return e;
            e = ReadAttr(destination.Ino, out FuseAttr d, out _);
            if (e != 0) return e;
            if ((s.Mode & S_IFMT) != S_IFREG || (d.Mode & S_IFMT) != S_IFREG) return FuseErrno.EOPNOTSUPP;
            long sourceSize = (long)s.Size;
            if (offsetIn >= sourceSize) return 0;
            // At most 1 GiB per call (the reply's count is 32 bits); the caller asks again for the rest.
            long n = Math.Min(Math.Min(length, sourceSize - offsetIn), 1L << 30);
            if (n % bs != 0 && (offsetIn + n != sourceSize || offsetOut + n < (long)d.Size))
            {
                n -= n % bs; // share the whole blocks; the tail comes back in the kernel's next call
                if (n == 0) return FuseErrno.EOPNOTSUPP;
            }
            if (source.Ino == destination.Ino && offsetIn < offsetOut + n && offsetOut < offsetIn + n) return FuseErrno.EOPNOTSUPP;
            _fs.Files.Reflink(source.Ino, offsetIn, destination.Ino, offsetOut, n);
            copied = n;
            return 0;
        }
        catch (XfsWriteException ex) when (ex.Kind is WriteErrorKind.InvalidArgument or WriteErrorKind.NotSupported)
        {
            return FuseErrno.EOPNOTSUPP;
        }
        catch (Exception ex) when (IsEngineFailure(ex))
        {
            return Fail(context, ex);
        }
    }
}
