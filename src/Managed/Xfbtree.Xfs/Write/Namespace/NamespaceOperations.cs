using Xfbtree.Xfs.Directories;
using Xfbtree.Xfs.Format;
using Xfbtree.Xfs.Write.Engine;
using Xfbtree.Xfs.Write.Files;

namespace Xfbtree.Xfs.Write.Namespace;

/// <summary>One entry of a directory listing.</summary>
public readonly record struct DirectoryEntry(string Name, ulong Ino, InodeType Type);

/// <summary>What an inode is.</summary>
public enum InodeType { Unknown, RegularFile, Directory, Symlink, CharDevice, BlockDevice, Fifo, Socket }

/// <summary>What stat shows.</summary>
public readonly record struct InodeStat(
    ulong Ino, InodeType Type, ushort Mode, uint Links, long Size, long Blocks, ulong DataExtents,
    string DataForkFormat, bool Reflink, DateTimeOffset ModifiedAt);

/// <summary>
/// Paths, directories and inode life: lookup, create, mkdir, unlink, list, stat.
/// Directories of every format (through <see cref="DirectoryEditor"/>); inode allocation from a free
/// inode or a new chunk (inobt, finobt, OWN_INODES); inode free.
/// </summary>
/// <remarks>
/// Lookups walk the path with one directory read-locked at a time (as the kernel's path walk does). A change
/// resolves the parent that way, then in its transaction locks the parent (and for unlink the child, both in
/// ascending inode order), then the AGs, and looks the name up again under the locks: when the name moved
/// meanwhile the transaction is cancelled and the operation starts over (a few times at most).
/// </remarks>
public sealed class NamespaceOperations
{
    const int MaxRestarts = 8;
    readonly PathWalker _walker;
    readonly InodeAllocator _allocator;

    public NamespaceOperations(WriteEngine engine, FileOperations files)
    {
        ArgumentNullException.ThrowIfNull(engine);
        Engine = engine;
        Files = files;
        _walker = new PathWalker(engine.Image, new EngineSource(engine));
        _allocator = new InodeAllocator(engine);
    }

    public WriteEngine Engine { get; }

    public FileOperations Files { get; }

    DirectoryReader Reader => _walker.Reader;

    /// <summary>The inode an absolute path names ("/" = root). Throws NotFound / NotDirectory / InvalidArgument.</summary>
    public ulong Lookup(string path) => _walker.Lookup(path);

    /// <summary>Creates an empty regular file; returns its inode number. Throws Exists.</summary>
    public ulong Create(string path, ushort permissions = 0x1A4)
        => CreateNode("create", path, (ushort)(InodeCore.ModeRegular | (permissions & 0xFFF)));

    /// <summary>Creates an empty directory; returns its inode number.</summary>
    public ulong Mkdir(string path, ushort permissions = 0x1ED)
        => CreateNode("mkdir", path, (ushort)(InodeCore.ModeDirectory | (permissions & 0xFFF)));

    /// <summary>The name changed between the unlocked lookup and the locked check: start over.</summary>
    sealed class NameMovedException : Exception
    {
    }

    ulong CreateNode(string operation, string path, ushort mode)
    {
        var (parentPath, name) = PathWalker.SplitLast(path);
        bool isDir = (mode & InodeCore.ModeTypeMask) == InodeCore.ModeDirectory;
        for (int attempt = 0; ; attempt++)
        {
            ulong parentIno = _walker.Lookup(parentPath);
            try
            {
                return Engine.Execute($"{operation} {path}", tx =>
                {
                    var parent = Engine.GetInode(parentIno);
                    tx.LockInodes(parent);
                    // Removed (or freed and reused) since the unlocked lookup: look the parent path up again.
                    if (new Dinode(parent.Core).IsFree || InodeCore.Nlink(parent.Core) == 0) throw new NameMovedException();
                    var editor = new DirectoryEditor(tx, parent, Reader, parentPath);
                    if (editor.Find(name) is not null)
                        throw new XfsWriteException(WriteErrorKind.Exists, $"'{path}' already exists");
                    if (isDir && InodeCore.Nlink(parent.Core) >= uint.MaxValue - 1)
                        throw new XfsWriteException(WriteErrorKind.NoSpace, $"'{parentPath}' has too many links");

                    ulong ino = _allocator.Allocate(tx, parentIno);
                    var child = Engine.GetInode(ino);
                    tx.LockInodes(child); // just allocated: nobody else can reach it, so the order does not matter
                    if (!new Dinode(child.Core).IsFree)
                        throw new XfsWriteException(WriteErrorKind.Corrupt, $"inode {ino} is free in the inode btree but in use on disk");
                    var now = DateTimeOffset.UtcNow;
                    InodeCore.FormatNew(child.Core, Engine.Image.Superblock, mode, isDir ? 2u : 1u, parentIno, now);
                    tx.LogInode(child);

                    editor.Add(name, ino, DirectoryFormat.FileTypeOfMode(mode), now);
                    if (isDir)
                    {
                        InodeCore.SetNlink(parent.Core, InodeCore.Nlink(parent.Core) + 1);
                        tx.LogInode(parent);
                    }
                    return ino;
                });
            }
            catch (NameMovedException)
            {
                if (attempt >= MaxRestarts) throw KeptMoving(path);
            }
        }
    }

    static XfsWriteException KeptMoving(string path)
        => new(WriteErrorKind.Busy, $"'{path}': the path kept changing under concurrent operations ({MaxRestarts + 1} attempts)");

    /// <summary>Removes a name: a regular file (its blocks and inode are freed when it was the last link) or an
    /// empty directory.</summary>
    public void Unlink(string path)
    {
        var (parentPath, name) = PathWalker.SplitLast(path);
        for (int attempt = 0; ; attempt++)
        {
            ulong parentIno = _walker.Lookup(parentPath);
            ulong childIno = _walker.Lookup(path);
            try
            {
                Engine.Execute($"unlink {path}", tx =>
                {
                    var parent = Engine.GetInode(parentIno);
                    var child = Engine.GetInode(childIno);
                    tx.LockInodes(parent, child);
                    if (new Dinode(parent.Core).IsFree || InodeCore.Nlink(parent.Core) == 0) throw new NameMovedException();
                    var editor = new DirectoryEditor(tx, parent, Reader, parentPath);
                    var entry = editor.Find(name);
                    if (entry is null) throw new XfsWriteException(WriteErrorKind.NotFound, $"'{path}' does not exist");
                    if (entry.Ino != childIno) throw new NameMovedException();
                    UnlinkLocked(tx, editor, parent, child, name, path);
                });
                return;
            }
            catch (NameMovedException)
            {
                if (attempt >= MaxRestarts) throw KeptMoving(path);
            }
        }
    }

    void UnlinkLocked(WriteTransaction tx, DirectoryEditor parentEditor, IncoreInode parent, IncoreInode child, byte[] name, string path)
    {
        var d = new Dinode(child.Core);
        if (d.IsFree) throw new XfsWriteException(WriteErrorKind.Corrupt, $"'{path}' names inode {child.Ino}, which is free");
        int type = d.Mode & InodeCore.ModeTypeMask;
        bool isDir = type == InodeCore.ModeDirectory;
        if (isDir)
        {
            var childEditor = new DirectoryEditor(tx, child, Reader, path);
            var (dotdot, entries) = childEditor.ReadAll();
            if (entries.Count > 0) throw new XfsWriteException(WriteErrorKind.NotEmpty, $"directory '{path}' is not empty ({entries.Count} entries)");
            if (dotdot != parent.Ino) throw new XfsWriteException(WriteErrorKind.Corrupt, $"directory '{path}' says its parent is inode {dotdot}, not {parent.Ino}");
        }
        else if (type != InodeCore.ModeRegular)
        {
            // Symlinks and special files carry no blocks of a kind the engine cannot free, but keep the scope honest.
            if (type != 0xA000 && (d.Format is ForkFormat.Extents or ForkFormat.Btree) && d.NBlocks != 0)
                throw new XfsWriteException(WriteErrorKind.NotSupported, $"'{path}': unlinking this kind of file with blocks is not supported");
        }
        var now = DateTimeOffset.UtcNow;
        parentEditor.Remove(name, now);
        if (isDir)
        {
            InodeCore.SetNlink(parent.Core, InodeCore.Nlink(parent.Core) - 1);
            tx.LogInode(parent);
            InodeCore.SetNlink(child.Core, 0);
        }
        else
        {
            uint links = InodeCore.Nlink(child.Core);
            if (links == 0) throw new XfsWriteException(WriteErrorKind.Corrupt, $"'{path}': inode {child.Ino} has link count 0");
            InodeCore.SetNlink(child.Core, links - 1);
        }
        if (InodeCore.Nlink(child.Core) > 0)
        {
            InodeCore.SetTime(child.Core, InodeCore.OffCtime, now);
            tx.LogInode(child);
            return;
        }
        FreeBlocks(tx, child, path);
        InodeCore.FormatFreed(child.Core, Engine.Image.Superblock);
        tx.LogInode(child);
        _allocator.Free(tx, child.Ino);
    }

    /// <summary>Frees every block of an inode being freed: a directory's extent-format data fork here (never
    /// shared), anything else through <see cref="FileOperations.FreeAllBlocks"/>.</summary>
    void FreeBlocks(WriteTransaction tx, IncoreInode inode, string path)
    {
        var d = new Dinode(inode.Core);
        bool noBlocks = d.NBlocks == 0 && (d.Format is ForkFormat.Local or ForkFormat.Dev || d.DataExtents == 0)
            && (d.ForkOffset == 0 || d.AttrFormat == ForkFormat.Local || d.AttrExtents == 0);
        if (noBlocks) return;
        bool plainDir = (d.Mode & InodeCore.ModeTypeMask) == InodeCore.ModeDirectory && d.Format == ForkFormat.Extents
            && (d.ForkOffset == 0 || d.AttrFormat == ForkFormat.Local || d.AttrExtents == 0) && (d.Flags2 & Dinode.Flag2Reflink) == 0;
        if (!plainDir)
        {
            if (Files is null) throw new XfsWriteException(WriteErrorKind.NotSupported, $"'{path}': freeing its blocks needs the file operations");
            Files.FreeAllBlocks(tx, inode);
            return;
        }
        var geo = Engine.Geometry;
        ulong freed = 0;
        foreach (var e in Reader.DataExtents(inode.Ino, inode.Core, path))
        {
            uint agno = geo.FsbToAgno(e.StartBlock), agbno = geo.FsbToAgbno(e.StartBlock);
            tx.LockAg(agno);
            tx.RmapUnmap(agno, new Trees.RmapRecord(agbno, e.BlockCount, inode.Ino, e.StartOffset), false);
            tx.FreeMetadata(agno, agbno, e.BlockCount); // directory blocks
            freed += e.BlockCount;
        }
        var c = inode.Core.AsSpan();
        c.Slice(Dinode.CoreSize, new Dinode(c).DataFork.Length).Clear();
        InodeCore.SetDataExtents(c, 0);
        InodeCore.SetNblocks(c, InodeCore.Nblocks(c) - Math.Min(freed, InodeCore.Nblocks(c)));
        InodeCore.SetSize(c, 0);
    }

    /// <summary>Entries of a directory, "." and ".." excluded, in directory order.</summary>
    public IReadOnlyList<DirectoryEntry> List(string path)
    {
        var entries = _walker.List(path);
        var result = new List<DirectoryEntry>(entries.Count);
        foreach (var e in entries)
        {
            var type = DirectoryFormat.TypeOfFileType(e.FileType);
            if (type == InodeType.Unknown)
            {
                // Filesystems without ftype: ask the inode.
                var inode = Engine.GetInode(e.Ino);
                using (Engine.LockInodeForRead(inode)) type = DirectoryFormat.TypeOfMode(new Dinode(inode.Core).Mode);
            }
            result.Add(new DirectoryEntry(DirectoryFormat.Show(e.Name), e.Ino, type));
        }
        return result;
    }

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
    sealed class EngineSource : INamespaceSource
    {
        readonly WriteEngine _engine;

        public EngineSource(WriteEngine engine) => _engine = engine;

        public IDisposable ReadLock(ulong ino) => _engine.LockInodeForRead(_engine.GetInode(ino));

        public byte[] ReadInode(ulong ino)
        {
            var core = (byte[])_engine.GetInode(ino).Core.Clone();
            if (new Dinode(core).IsFree) throw new XfsWriteException(WriteErrorKind.NotFound, $"inode {ino} is free");
            return core;
        }

        public void ReadBlocks(ulong fsbno, Span<byte> destination) => _engine.ReadData(fsbno, destination);
    }
}
