using System.Runtime.Versioning;
using Xfbtree.Fuse;
using Xfbtree.Xfs.Write;
using Xfbtree.Xfs.Write.Attributes;
using Xfbtree.Xfs.Write.Engine;
using Xfbtree.Xfs.Write.Files;
using Xfbtree.Xfs.Write.Namespace;

namespace Xfbtree.Cli.Mount;

/// <summary>
/// The XFS write engine behind the FUSE protocol layer. Node id = inode number (FUSE_ROOT_ID 1 = the root inode);
/// each node the kernel holds carries the generation of the incarnation it was handed out for, so every operation
/// goes through an engine handle (inode number + generation) that the engine checks under the inode lock: a node
/// whose inode was freed, or freed and reused, answers ESTALE instead of touching another file. The reply's
/// generation is di_gen, so the kernel also tells a reused inode number from the old file. The kernel's lookup
/// counts are kept per node (every entry reply adds one, FORGET drops them; the node goes at zero).
/// </summary>
/// <remarks>
/// Names reach the engine as the kernel's bytes, already checked by the protocol layer (1-255 bytes, no '/' or
/// NUL); the engine answers "." and ".." as the kernel's own calls would. Directory offsets are the engine's stable
/// cookies (positions in the directory's data space), so a listing resumed after changes neither repeats nor skips
/// an entry that stayed. Owners of new inodes are the caller's uid and gid from the request.
/// Durability: <see cref="Fsync"/>, <see cref="FsyncDir"/> and <see cref="SyncFs"/> return once the journal holds
/// every committed operation durably (fsyncs shared between concurrent callers).
/// </remarks>
[SupportedOSPlatform("linux")]
internal sealed class XfsFuseFileSystem : IFuseFileSystem
{
    const uint S_IFMT = 0xF000, S_IFREG = 0x8000, S_IFDIR = 0x4000;
    const uint O_ACCMODE = 3, O_TRUNC = 0x200;
    const int DirentHeader = 24, DirentPlusHeader = 152;
    /// <summary>
    /// Entries and attributes may be cached by the kernel this long. Every change of a name or an attribute goes
    /// through this mount, and the kernel drops or updates its copy at each one it sends (the entries of a
    /// directory it changes, the attributes after a write, truncate, link, unlink, rename, xattr change or
    /// fallocate), so a cached entry or attribute is never stale. A short timeout would only make the kernel ask
    /// again (a LOOKUP or GETATTR per name per walk). The changes the kernel does not see coming: this mount
    /// clearing set-user-ID and set-group-ID on a write (HANDLE_KILLPRIV_V2), so the attributes of such files are
    /// not cached at all (<see cref="AttrSeconds"/>); and an online scrub repair (link counts, entries, parents),
    /// after which the mount tells the kernel to forget its attributes and names (<see cref="InvalidateKernelCaches"/>).
    /// </summary>
    const ulong CacheSeconds = 3600;

    /// <summary>How long the kernel may keep these attributes: not at all for a set-user-ID or set-group-ID file,
    /// whose mode a write may change here (rare files, so no cost elsewhere).</summary>
    static ulong AttrSeconds(uint mode) => (mode & 0xC00) != 0 ? 0 : CacheSeconds;

    readonly XfsFileSystem _fs;
    readonly NamespaceOperations _names;
    readonly FileOperations _files;
    readonly ulong _rootIno;
    readonly bool _readOnly;
    readonly Action<string>? _log;
    readonly object _nodesGate = new();
    readonly Dictionary<ulong, Node> _nodes = new();

    public XfsFuseFileSystem(XfsFileSystem fs, bool readOnly, Action<string>? log)
    {
        _fs = fs;
        _names = fs.Namespace;
        _files = fs.Files;
        _readOnly = readOnly;
        _log = log;
        _rootIno = _names.RootIno;
        var root = _names.GetAttr(_rootIno);
        _nodes[_rootIno] = new Node { Handle = root.Handle, Lookups = 1 }; // never forgotten, never acquired
    }

    /// <summary>The repair and health channel and the healing of requests failed on a sick AG (none: ENOTTY, no retry).</summary>
    public MountControlServer? Control { get; init; }

    /// <summary>The root directory's mode (type bits included), for the mount option.</summary>
    public uint RootMode => _names.GetAttr(_rootIno).Mode;

    /// <summary>Nodes the kernel holds references to, root included.</summary>
    public int NodeCount
    {
        get { lock (_nodesGate) return _nodes.Count; }
    }

    sealed class Node
    {
        public InodeHandle Handle;
        public long Lookups;
    }

    // ------------------------------------------------------------------ nodes

    ulong NodeIdOf(ulong ino) => ino == _rootIno ? FuseConstants.RootNodeId : ino;

    ulong InoOf(ulong nodeId) => nodeId == FuseConstants.RootNodeId ? _rootIno : nodeId;

    /// <summary>The handle of a node the kernel holds (ESTALE for one it never got or already forgot).</summary>
    int Handle(ulong nodeId, out InodeHandle handle)
    {
        lock (_nodesGate)
        {
            if (_nodes.TryGetValue(InoOf(nodeId), out var node))
            {
                handle = node.Handle;
                return 0;
            }
        }
        handle = default;
        return FuseErrno.ESTALE;
    }

    /// <summary>
    /// The kernel gets one more reference to this incarnation through an entry reply. The first reference of a node
    /// takes an engine reference on the inode (<see cref="NamespaceOperations.Acquire"/>): while the kernel holds
    /// the node (an open file, a cwd, a cached inode), the inode outlives the removal of its last name on the AGI
    /// unlinked list, as with the kernel's XFS, and the number cannot be reused. Throws the engine's ESTALE when the
    /// incarnation was freed in between.
    /// </summary>
    void Hold(InodeHandle handle)
    {
        lock (_nodesGate)
        {
            if (_nodes.TryGetValue(handle.Ino, out var node))
            {
                node.Lookups++;
                return;
            }
        }
        if (handle.Ino != _rootIno) _names.Acquire(handle); // outside the gate: it takes the inode lock
        bool extra = false;
        lock (_nodesGate)
        {
            if (_nodes.TryGetValue(handle.Ino, out var node))
            {
                node.Lookups++; // another request made the node meanwhile and holds the inode already
                extra = true;
            }
            else
            {
                _nodes[handle.Ino] = new Node { Handle = handle, Lookups = 1 };
            }
        }
        if (extra) _names.Release(handle);
    }

    /// <summary>
    /// After a change made behind the kernel's back (an online scrub repair of link counts, directory entries or
    /// parents), makes the kernel forget what it caches for an hour: the attributes of every node it holds
    /// (<paramref name="invalidateAttributes"/>, FUSE_NOTIFY_INVAL_INODE; ENOENT for a node it dropped meanwhile is
    /// fine) and every name (<paramref name="invalidateNames"/>, FUSE_NOTIFY_INC_EPOCH). Returns the errno of the
    /// latter (EINVAL: a kernel before 6.16, whose names then stay until their timeout).
    /// </summary>
    public int InvalidateKernelCaches(Func<ulong, int> invalidateAttributes, Func<int> invalidateNames)
    {
        ArgumentNullException.ThrowIfNull(invalidateAttributes);
        ArgumentNullException.ThrowIfNull(invalidateNames);
        ulong[] held;
        lock (_nodesGate)
        {
            held = new ulong[_nodes.Count];
            int i = 0;
            foreach (ulong ino in _nodes.Keys) held[i++] = NodeIdOf(ino);
        }
        foreach (ulong node in held) invalidateAttributes(node);
        return invalidateNames();
    }

    public void Forget(ulong node, ulong lookups)
    {
        ulong ino = InoOf(node);
        InodeHandle released;
        lock (_nodesGate)
        {
            if (ino == _rootIno || !_nodes.TryGetValue(ino, out var n)) return;
            n.Lookups -= (long)Math.Min(lookups, (ulong)long.MaxValue);
            if (n.Lookups > 0) return;
            _nodes.Remove(ino);
            released = n.Handle;
        }
        try
        {
            // The last reference of an unlinked inode frees it here.
            _names.Release(released);
        }
        catch (Exception ex) when (IsEngineFailure(ex))
        {
            _log?.Invoke($"xfbtree: mount: releasing inode {released.Ino}: {ex.Message}");
        }
    }

    // ------------------------------------------------------------------ replies

    static FuseAttr Attr(in InodeAttributes a) => new()
    {
        Ino = a.Ino,
        Size = (ulong)a.Size,
        Blocks = (ulong)a.Blocks,
        Atime = (ulong)a.Atime.Seconds,
        AtimeNsec = a.Atime.Nanoseconds,
        Mtime = (ulong)a.Mtime.Seconds,
        MtimeNsec = a.Mtime.Nanoseconds,
        Ctime = (ulong)a.Ctime.Seconds,
        CtimeNsec = a.Ctime.Nanoseconds,
        Mode = a.Mode,
        Nlink = a.Links,
        Uid = a.Uid,
        Gid = a.Gid,
        Rdev = KernelDev(a.RdevMajor, a.RdevMinor),
        BlockSize = (uint)a.BlockSize,
    };

    /// <summary>The kernel's 32-bit device encoding in FUSE messages (new_encode_dev).</summary>
    static uint KernelDev(uint major, uint minor) => (minor & 0xFF) | (major << 8) | ((minor & ~0xFFu) << 12);

    /// <summary>A Linux dev_t from the kernel's 32-bit encoding (new_decode_dev).</summary>
    static ulong LinuxDev(uint encoded) => DeviceNumbers.MakeDev((encoded & 0xFFF00) >> 8, (encoded & 0xFF) | ((encoded >> 12) & 0xFFF00));

    FuseEntryOut Entry(in InodeAttributes a) => new()
    {
        NodeId = NodeIdOf(a.Ino),
        Generation = a.Generation,
        EntryValid = CacheSeconds,
        AttrValid = AttrSeconds(a.Mode),
        Attr = Attr(a),
    };

    /// <summary>An entry reply for a new reference.</summary>
    int Reply(in InodeAttributes a, out FuseEntryOut entry)
    {
        Hold(a.Handle);
        entry = Entry(a);
        return 0;
    }

    static bool IsEngineFailure(Exception ex) => ex is XfsWriteException or IOException;

    /// <summary>The errno for an engine failure (the operation was cancelled: nothing changed); corruption and I/O are logged.</summary>
    int Fail(in FuseRequestContext context, Exception failure)
    {
        if (failure is XfsWriteException ex)
        {
            if (ex.Kind is WriteErrorKind.Corrupt or WriteErrorKind.Io)
                _log?.Invoke($"xfbtree: mount: request {context.Unique} on node {context.NodeId}: {ex.Message} ({ex.ErrnoName})");
            if (ex.Kind == WriteErrorKind.Corrupt) Control?.NoteCorruptFailure(ex.AgNumber);
            return ex.Errno;
        }
        _log?.Invoke($"xfbtree: mount: request {context.Unique} on node {context.NodeId}: {failure.Message}");
        return FuseErrno.EIO;
    }

    // ------------------------------------------------------------------ names

    public int Lookup(in FuseRequestContext context, ulong parent, ReadOnlySpan<byte> name, out FuseEntryOut entry)
    {
        entry = default;
        int e = Handle(parent, out var dir);
        if (e != 0) return e;
        try
        {
            // A name that is not there is the common miss (the kernel asks before every create): no exception.
            if (!_names.TryLookup(dir.Ino, name, out var found)) return FuseErrno.ENOENT;
            return Reply(found, out entry);
        }
        catch (XfsWriteException ex) when (ex.Kind == WriteErrorKind.Stale)
        {
            return FuseErrno.ENOENT; // removed and freed between the lookup and the reference
        }
        catch (Exception ex) when (IsEngineFailure(ex))
        {
            return Fail(context, ex);
        }
    }

    public int GetAttr(in FuseRequestContext context, ulong node, bool hasHandle, ulong handle, out FuseAttrOut attr)
    {
        attr = default;
        int e = Handle(node, out var h);
        if (e != 0) return e;
        try
        {
            attr.Attr = Attr(_names.GetAttr(h));
            attr.AttrValid = AttrSeconds(attr.Attr.Mode);
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
        int e = Handle(node, out var h);
        if (e != 0) return e;
        uint valid = change.Valid;
        var mask = SetAttrMask.None;
        if ((valid & FuseConstants.SetAttrMode) != 0) mask |= SetAttrMask.Mode;
        if ((valid & FuseConstants.SetAttrUid) != 0) mask |= SetAttrMask.Uid;
        if ((valid & FuseConstants.SetAttrGid) != 0) mask |= SetAttrMask.Gid;
        if ((valid & FuseConstants.SetAttrSize) != 0) mask |= SetAttrMask.Size;
        if ((valid & FuseConstants.SetAttrAtimeNow) != 0) mask |= SetAttrMask.AtimeNow;
        else if ((valid & FuseConstants.SetAttrAtime) != 0) mask |= SetAttrMask.Atime;
        if ((valid & FuseConstants.SetAttrMtimeNow) != 0) mask |= SetAttrMask.MtimeNow;
        else if ((valid & FuseConstants.SetAttrMtime) != 0) mask |= SetAttrMask.Mtime;
        if ((valid & FuseConstants.SetAttrCtime) != 0) mask |= SetAttrMask.Ctime;
        // FATTR_FH and FATTR_LOCKOWNER only say which open file asked. FATTR_KILL_SUIDGID (HANDLE_KILLPRIV_V2, on
        // a chown or a truncate by a caller without CAP_FSETID): the privileges go in the same operation.
        bool kill = (valid & FuseConstants.SetAttrKillSuidGid) != 0;
        if (kill) mask |= SetAttrMask.KillSuidGid;
        if (mask != SetAttrMask.None && _readOnly) return FuseErrno.EROFS;
        if ((mask & SetAttrMask.Size) != 0 && change.Size > (ulong)FileOperations.MaxFileSize) return FuseErrno.EFBIG;
        try
        {
            var request = new SetAttrRequest(mask, (int)(change.Mode & 0xFFF), change.Uid, change.Gid, (long)Math.Min(change.Size, (ulong)long.MaxValue),
                new InodeTime((long)change.Atime, change.AtimeNsec), new InodeTime((long)change.Mtime, change.MtimeNsec),
                new InodeTime((long)change.Ctime, change.CtimeNsec));
            var result = _names.SetAttr(h, request);
            if (kill) RemoveCapability(h);
            attr.Attr = Attr(result);
            attr.AttrValid = AttrSeconds(attr.Attr.Mode);
            return 0;
        }
        catch (Exception ex) when (IsEngineFailure(ex))
        {
            return Fail(context, ex);
        }
    }

    public int Rename(in FuseRequestContext context, ulong parent, ReadOnlySpan<byte> name, ulong newParent, ReadOnlySpan<byte> newName, uint flags)
    {
        const uint NoReplace = 1, Exchange = 2, Whiteout = 4;
        if ((flags & ~(NoReplace | Exchange | Whiteout)) != 0) return FuseErrno.EINVAL;
        if (_readOnly) return FuseErrno.EROFS;
        int e = Handle(parent, out var from);
        if (e != 0 || (e = Handle(newParent, out var to)) != 0) return e;
        var renameFlags = ((flags & NoReplace) != 0 ? RenameFlags.NoReplace : RenameFlags.None) | ((flags & Exchange) != 0 ? RenameFlags.Exchange : RenameFlags.None)
            | ((flags & Whiteout) != 0 ? RenameFlags.Whiteout : RenameFlags.None);
        try
        {
            // The kernel checked CAP_MKNOD for a whiteout; the whiteout is the caller's, as the kernel's XFS makes it.
            _names.Rename(from.Ino, name, to.Ino, newName, renameFlags, context.Uid, context.Gid);
            return 0;
        }
        catch (Exception ex) when (IsEngineFailure(ex))
        {
            return Fail(context, ex);
        }
    }

    public int Link(in FuseRequestContext context, ulong node, ulong newParent, ReadOnlySpan<byte> newName, out FuseEntryOut entry)
    {
        entry = default;
        if (_readOnly) return FuseErrno.EROFS;
        int e = Handle(node, out var h);
        if (e != 0 || (e = Handle(newParent, out var dir)) != 0) return e;
        try
        {
            return Reply(_names.Link(h, dir.Ino, newName), out entry);
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
        entry = default;
        if ((mode & S_IFMT) is not (S_IFREG or 0)) return FuseErrno.EINVAL;
        if (_readOnly) return FuseErrno.EROFS;
        int e = Handle(parent, out var dir);
        if (e != 0) return e;
        try
        {
            // The kernel applied the umask already (FUSE_DONT_MASK is not negotiated).
            return Reply(_names.Create(dir.Ino, name, (int)(mode & 0xFFF), context.Uid, context.Gid), out entry);
        }
        catch (Exception ex) when (IsEngineFailure(ex))
        {
            return Fail(context, ex);
        }
    }

    public int MkNod(in FuseRequestContext context, ulong parent, ReadOnlySpan<byte> name, uint mode, uint rdev, uint umask, out FuseEntryOut entry)
    {
        entry = default;
        if (_readOnly) return FuseErrno.EROFS;
        int e = Handle(parent, out var dir);
        if (e != 0) return e;
        try
        {
            var made = (mode & S_IFMT) == S_IFREG
                ? _names.Create(dir.Ino, name, (int)(mode & 0xFFF), context.Uid, context.Gid)
                : _names.Mknod(dir.Ino, name, (int)mode, LinuxDev(rdev), context.Uid, context.Gid);
            return Reply(made, out entry);
        }
        catch (Exception ex) when (IsEngineFailure(ex))
        {
            return Fail(context, ex);
        }
    }

    public int MkDir(in FuseRequestContext context, ulong parent, ReadOnlySpan<byte> name, uint mode, uint umask, out FuseEntryOut entry)
    {
        entry = default;
        if (_readOnly) return FuseErrno.EROFS;
        int e = Handle(parent, out var dir);
        if (e != 0) return e;
        try
        {
            return Reply(_names.Mkdir(dir.Ino, name, (int)(mode & 0xFFF), context.Uid, context.Gid), out entry);
        }
        catch (Exception ex) when (IsEngineFailure(ex))
        {
            return Fail(context, ex);
        }
    }

    public int Symlink(in FuseRequestContext context, ulong parent, ReadOnlySpan<byte> name, ReadOnlySpan<byte> target, out FuseEntryOut entry)
    {
        entry = default;
        if (_readOnly) return FuseErrno.EROFS;
        int e = Handle(parent, out var dir);
        if (e != 0) return e;
        try
        {
            return Reply(_names.Symlink(dir.Ino, name, target, context.Uid, context.Gid), out entry);
        }
        catch (Exception ex) when (IsEngineFailure(ex))
        {
            return Fail(context, ex);
        }
    }

    public int ReadLink(in FuseRequestContext context, ulong node, Span<byte> target, out int length)
    {
        length = 0;
        int e = Handle(node, out var h);
        if (e != 0) return e;
        try
        {
            byte[] bytes = _names.ReadLink(h);
            if (bytes.Length > target.Length) return FuseErrno.ENAMETOOLONG;
            bytes.CopyTo(target);
            length = bytes.Length;
            return 0;
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
        int e = Handle(parent, out var dir);
        if (e != 0) return e;
        try
        {
            if (directory) _names.Rmdir(dir.Ino, name);
            else _names.Unlink(dir.Ino, name);
            return 0;
        }
        catch (Exception ex) when (IsEngineFailure(ex))
        {
            return Fail(context, ex);
        }
    }

    // ------------------------------------------------------------------ directories

    public int OpenDir(in FuseRequestContext context, ulong node, uint flags, out FuseOpenOut open)
    {
        open = default;
        int e = Handle(node, out var h);
        if (e != 0) return e;
        try
        {
            var a = _names.GetAttr(h);
            return (a.Mode & S_IFMT) == S_IFDIR ? 0 : FuseErrno.ENOTDIR;
        }
        catch (Exception ex) when (IsEngineFailure(ex))
        {
            return Fail(context, ex);
        }
    }

    public int ReadDir(in FuseRequestContext context, ulong node, ulong handle, long offset, ref FuseDirectoryWriter entries)
    {
        int e = Handle(node, out var dir);
        if (e != 0) return e;
        // The engine's visitor runs after the directory lock is released; collect what fits, then reply.
        var batch = new List<(byte[] Name, ulong Ino, InodeType Type, ulong Next)>();
        int room = entries.Remaining, header = entries.Plus ? DirentPlusHeader : DirentHeader;
        try
        {
            _names.ReadDirectory(dir.Ino, (ulong)offset, (name, ino, type, next) =>
            {
                int size = (header + name.Length + 7) & ~7;
                if (size > room) return false;
                room -= size;
                batch.Add((name.ToArray(), ino, type, next));
                return true;
            });
        }
        catch (Exception ex) when (IsEngineFailure(ex))
        {
            return Fail(context, ex);
        }
        foreach (var (name, ino, type, next) in batch)
        {
            bool dots = name is [(byte)'.'] or [(byte)'.', (byte)'.'];
            if (!entries.Plus)
            {
                if (!entries.TryAdd(name, ino, DirentType(type), (long)next)) break;
                continue;
            }
            if (dots)
            {
                // No node id: the kernel takes no reference for "." and "..".
                var dot = new FuseEntryOut { Attr = new FuseAttr { Ino = ino, Mode = S_IFDIR } };
                if (!entries.TryAddPlus(name, in dot, (long)next)) break;
                continue;
            }
            InodeAttributes a;
            try
            {
                a = _names.GetAttr(ino);
            }
            catch (XfsWriteException ex) when (ex.Kind == WriteErrorKind.NotFound)
            {
                continue; // removed since the directory was read
            }
            catch (Exception ex) when (IsEngineFailure(ex))
            {
                if (entries.IsEmpty) return Fail(context, ex);
                break;
            }
            var entry = Entry(a);
            try
            {
                Hold(a.Handle);
            }
            catch (XfsWriteException ex) when (ex.Kind is WriteErrorKind.Stale or WriteErrorKind.NotFound)
            {
                continue; // removed since the directory was read
            }
            if (!entries.TryAddPlus(name, in entry, (long)next))
            {
                Forget(entry.NodeId, 1); // no room: the kernel never saw it
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

    public int ReleaseDir(in FuseRequestContext context, ulong node, ulong handle) => 0;

    // ------------------------------------------------------------------ file data

    public int Open(in FuseRequestContext context, ulong node, uint flags, out FuseOpenOut open) => Open(context, node, flags, 0, out open);

    public int Open(in FuseRequestContext context, ulong node, uint flags, uint openFlags, out FuseOpenOut open)
    {
        open = default;
        int e = Handle(node, out var h);
        if (e != 0) return e;
        bool writing = (flags & O_ACCMODE) != 0;
        if (writing && _readOnly) return FuseErrno.EROFS;
        try
        {
            var a = _names.GetAttr(h);
            if ((a.Mode & S_IFMT) == S_IFDIR) return FuseErrno.EISDIR;
            if ((a.Mode & S_IFMT) != S_IFREG) return FuseErrno.EOPNOTSUPP; // devices, fifos and sockets are the kernel's
            // FUSE_ATOMIC_O_TRUNC: the truncate of open(O_TRUNC) comes here instead of a SETATTR.
            if (writing && (flags & O_TRUNC) != 0)
            {
                if ((openFlags & FuseConstants.OpenKillSuidGid) != 0)
                {
                    // HANDLE_KILLPRIV_V2: the truncate of a caller without CAP_FSETID clears the set-id bits with it
                    // (even of an empty file, as the VFS's do_truncate), and the file capability goes too.
                    _names.SetAttr(h, new SetAttrRequest(SetAttrMask.Size | SetAttrMask.KillSuidGid, Size: 0));
                    RemoveCapability(h);
                }
                else if (a.Size != 0)
                {
                    _files.Truncate(h, 0);
                }
            }
        }
        catch (Exception ex) when (IsEngineFailure(ex))
        {
            return Fail(context, ex);
        }
        // Every change goes through this mount, so cached pages stay valid across opens; but a read the kernel serves
        // from its cache never reaches the engine, so when the next read should set atime (relatime: the file changed
        // since it was last read, or a day went by) the cache is dropped and that read comes here.
        bool atimeDue;
        try
        {
            atimeDue = _names.AccessTimeDue(h);
        }
        catch (Exception ex) when (IsEngineFailure(ex))
        {
            return Fail(context, ex);
        }
        open.OpenFlags = atimeDue ? 0 : FuseConstants.OpenKeepCache;
        return 0;
    }

    public int Read(in FuseRequestContext context, ulong node, ulong handle, long offset, Span<byte> destination, out int length)
    {
        length = 0;
        int e = Handle(node, out var h);
        if (e != 0) return e;
        try
        {
            length = _files.Read(h, offset, destination);
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
        int e = Handle(node, out var h);
        if (e != 0) return e;
        if (offset > FileOperations.MaxFileSize - data.Length) return FuseErrno.EFBIG;
        try
        {
            // HANDLE_KILLPRIV_V2: a writer without CAP_FSETID clears set-user-ID and set-group-ID in the write's own
            // transaction (the engine's file_remove_privs), and the file capability goes too, as in the VFS.
            bool kill = (writeFlags & FuseConstants.WriteKillSuidGid) != 0;
            _files.Write(h, offset, data, kill ? FileWriteFlags.KillSuidGid : FileWriteFlags.None);
            if (kill && data.Length > 0) RemoveCapability(h);
            written = (uint)data.Length;
            return 0;
        }
        catch (Exception ex) when (IsEngineFailure(ex))
        {
            return Fail(context, ex);
        }
    }

    /// <summary>
    /// Nothing to do at close: every write is in the engine when it is replied to, and locks are the kernel's.
    /// ENOSYS makes the kernel stop sending FLUSH at all (one round trip less per close).
    /// </summary>
    public int Flush(in FuseRequestContext context, ulong node, ulong handle, ulong lockOwner) => FuseErrno.ENOSYS;

    // ------------------------------------------------------------------ privileges (HANDLE_KILLPRIV_V2)

    static ReadOnlySpan<byte> CapabilityName => "security.capability"u8;

    /// <summary>The rest of the VFS's file_remove_privs after a write or truncate by a caller without CAP_FSETID
    /// (the engine clears set-user-ID and set-group-ID in the operation itself): the file capability goes.</summary>
    void RemoveCapability(InodeHandle h)
    {
        if (_fs.Attributes.List(h.Ino, default) == 0) return; // no attributes at all: the common case, no exception
        try
        {
            _fs.Attributes.Remove(h.Ino, CapabilityName);
        }
        catch (XfsWriteException ex) when (ex.Kind == WriteErrorKind.NoData)
        {
        }
    }

    public int Release(in FuseRequestContext context, ulong node, ulong handle, uint flags) => 0;

    /// <summary>fsync: every change durable (<see cref="Sync"/>). fdatasync: the file's data and what reading it needs,
    /// nothing else (<see cref="FileOperations.SyncData"/>): after overwrites in place only, one image fdatasync.</summary>
    public int Fsync(in FuseRequestContext context, ulong node, ulong handle, bool dataOnly)
    {
        if (!dataOnly) return Sync(context);
        int e = Handle(node, out var h);
        if (e != 0) return e;
        try
        {
            _files.SyncData(h);
            return 0;
        }
        catch (Exception ex) when (IsEngineFailure(ex))
        {
            return Fail(context, ex);
        }
    }

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

    public int Fallocate(in FuseRequestContext context, ulong node, ulong handle, long offset, long length, uint mode)
    {
        if (_readOnly) return FuseErrno.EROFS;
        int e = Handle(node, out var h);
        if (e != 0) return e;
        if (offset < 0 || length <= 0 || offset > FileOperations.MaxFileSize - length) return FuseErrno.EINVAL;
        const uint Unshare = 0x40;
        bool keepSize = (mode & FuseConstants.FallocKeepSize) != 0;
        var flags = keepSize ? FallocateFlags.KeepSize : FallocateFlags.None;
        try
        {
            switch (mode & ~FuseConstants.FallocKeepSize)
            {
                case 0:
                    _files.Fallocate(h, offset, length, flags);
                    return 0;
                case FuseConstants.FallocPunchHole:
                    if (!keepSize) return FuseErrno.EOPNOTSUPP; // fallocate(2): a punch comes with KEEP_SIZE
                    // As the kernel's xfs_free_file_space: whole blocks past EOF are freed too (the engine zeroes
                    // partial blocks only where they hold data).
                    _files.PunchHole(h, offset, length);
                    return 0;
                case FuseConstants.FallocZeroRange:
                    // Punch (zeroes partial blocks, frees the rest), then unwritten extents over the range: two
                    // operations, each atomic; between them the range already reads as zeros.
                    _files.PunchHole(h, offset, length);
                    _files.Fallocate(h, offset, length, flags);
                    return 0;
                case Unshare:
                {
                    long size = _names.GetAttr(h).Size;
                    long inside = Math.Min(offset + length, size) - offset; // the part below EOF (may be <= 0)
                    if (inside > 0) _files.Unshare(h, offset, inside);
                    return 0;
                }
                case FuseConstants.FallocCollapseRange:
                    // The kernel's FUSE module does not pass these two on (fuse_file_fallocate refuses them before
                    // asking the server); served for a kernel that does.
                    if (keepSize) return FuseErrno.EINVAL;
                    _files.CollapseRange(h, offset, length);
                    return 0;
                case FuseConstants.FallocInsertRange:
                    if (keepSize) return FuseErrno.EINVAL;
                    _files.InsertRange(h, offset, length);
                    return 0;
                default:
                    return FuseErrno.EOPNOTSUPP;
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
        int e = Handle(node, out var h);
        if (e != 0) return e;
        try
        {
            _names.GetAttr(h); // ESTALE for a node whose inode was freed
            result = _files.Seek(h.Ino, offset, whence == FuseConstants.SeekData);
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
        int e = Handle(nodeIn, out var source);
        if (e != 0) return e;
        if ((e = Handle(nodeOut, out var destination)) != 0) return e;
        long bs = _fs.Engine.Geometry.BlockSize;
        // EOPNOTSUPP makes the kernel copy this call by reading and writing instead.
        if (!_fs.Engine.Geometry.Superblock.HasReflink || offsetIn % bs != 0 || offsetOut % bs != 0) return FuseErrno.EOPNOTSUPP;
        try
        {
            var s = _names.GetAttr(source);
            var d = _names.GetAttr(destination);
            if ((s.Mode & S_IFMT) != S_IFREG || (d.Mode & S_IFMT) != S_IFREG) return FuseErrno.EOPNOTSUPP;
            if (offsetIn >= s.Size) return 0;
            // At most 1 GiB per call (the reply's count is 32 bits); the caller asks again for the rest.
            long n = Math.Min(Math.Min(length, s.Size - offsetIn), 1L << 30);
            if (n % bs != 0 && (offsetIn + n != s.Size || offsetOut + n < d.Size))
            {
                n -= n % bs; // share the whole blocks; the tail comes back in the kernel's next call
                if (n == 0) return FuseErrno.EOPNOTSUPP;
            }
            if (source.Ino == destination.Ino && offsetIn < offsetOut + n && offsetOut < offsetIn + n) return FuseErrno.EOPNOTSUPP;
            _files.Reflink(source, offsetIn, destination, offsetOut, n);
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

    // ------------------------------------------------------------------ the file system

    /// <summary>Free bytes of the image now (the AG free-space counters, as STATFS reports them).</summary>
    public ulong FreeBytes => FreeBlocks() * (ulong)_fs.Engine.Geometry.BlockSize;

    /// <summary>What file data can still take, as the kernel reports it: its free-block counter has the per-AG
    /// reservations, the reserve pool and the set-aside taken out, so df shows about nothing left when a write
    /// fails with ENOSPC (the AGF counters alone showed 15 % of a 20 MiB filesystem free then).</summary>
    ulong FreeBlocks()
    {
        var engine = _fs.Engine;
        ulong free = 0;
        for (uint agno = 0; agno < engine.Geometry.Superblock.AgCount; agno++)
        {
            var ag = engine.Ag(agno);
            long usable = ag.FreeBlocks - ag.PublishedReserve(AllocationPurpose.FileData);
            if (usable > 0) free += (ulong)usable;
        }
        return free;
    }

    public int StatFs(in FuseRequestContext context, ulong node, out FuseStatFsOut statfs)
    {
        var engine = _fs.Engine;
        var sb = engine.Geometry.Superblock;
        ulong free = FreeBlocks();
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
            BlockSize = (uint)engine.Geometry.BlockSize,
            FragmentSize = (uint)engine.Geometry.BlockSize,
            NameLength = FuseConstants.NameMax,
        };
        return 0;
    }

    // ------------------------------------------------------------------ control channel

    public int Ioctl(in FuseRequestContext context, ulong node, ulong handle, uint flags, uint command, ReadOnlySpan<byte> input,
        Span<byte> output, out int result, out int outputLength)
    {
        result = 0;
        outputLength = 0;
        return Control is { } control ? control.Handle(in context, command, input, output, out result, out outputLength) : FuseErrno.ENOTTY;
    }

    public bool RetryAfterFailure(in FuseRequestContext context, int error)
    {
        if (Control is not { } control || !control.RetryAfterFailure(error)) return false;
        _log?.Invoke($"xfbtree: mount: request {context.Unique} on node {context.NodeId}: the AG was repaired online; the request runs again");
        return true;
    }

    // ------------------------------------------------------------------ extended attributes

    public int SetXattr(in FuseRequestContext context, ulong node, ReadOnlySpan<byte> name, ReadOnlySpan<byte> value, uint flags)
    {
        if (_readOnly) return FuseErrno.EROFS;
        int e = Handle(node, out var h);
        if (e != 0) return e;
        try
        {
            _names.GetAttr(h); // ESTALE for a node whose inode was freed
            if (AttributeOperations.IsUnsupportedNamespace(name)) return FuseErrno.EOPNOTSUPP; // the engine's answer, without its exception
            _fs.Attributes.Set(h.Ino, name, value, (XattrSetFlags)flags);
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
        int e = Handle(node, out var h);
        if (e != 0) return e;
        try
        {
            // The kernel asks for security.capability before writes: most files have no attributes at all.
            if (_fs.Attributes.IsAbsentWithoutFork(h.Ino, name)) return FuseErrno.ENODATA;
            // cp -a and tar ask for the POSIX ACL names on every file: the engine's answer, without its exception.
            if (AttributeOperations.IsUnsupportedNamespace(name)) return FuseErrno.EOPNOTSUPP;
            length = _fs.Attributes.Get(h.Ino, name, value);
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
        int e = Handle(node, out var h);
        if (e != 0) return e;
        try
        {
            length = _fs.Attributes.List(h.Ino, list);
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
        int e = Handle(node, out var h);
        if (e != 0) return e;
        try
        {
            _names.GetAttr(h);
            if (AttributeOperations.IsUnsupportedNamespace(name)) return FuseErrno.EOPNOTSUPP;
            _fs.Attributes.Remove(h.Ino, name);
            return 0;
        }
        catch (Exception ex) when (IsEngineFailure(ex))
        {
            return Fail(context, ex);
        }
    }
}
