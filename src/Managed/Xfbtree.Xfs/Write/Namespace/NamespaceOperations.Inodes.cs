using Xfbtree.Xfs.Directories;
using Xfbtree.Xfs.Format;
using Xfbtree.Xfs.Write.Engine;

namespace Xfbtree.Xfs.Write.Namespace;

/// <summary>What a removal accepts.</summary>
internal enum RemoveKind
{
    /// <summary>unlink(2): anything but a directory (EISDIR).</summary>
    NonDirectory,
    /// <summary>rmdir(2): an empty directory only (ENOTDIR).</summary>
    Directory,
    /// <summary>remove(3): either.</summary>
    Any,
}

internal sealed partial class NamespaceOperations
{
    // ------------------------------------------------------------------ names

    /// <summary>The errno the kernel gives for a name that can never be a directory entry: ENAMETOOLONG past 255
    /// bytes, EINVAL for '/' or NUL inside it (the VFS never passes those), ENOENT when empty.</summary>
    static void CheckName(ReadOnlySpan<byte> name, string where)
    {
        if (name.Length == 0) throw new XfsWriteException(WriteErrorKind.NotFound, $"'{where}': empty name");
        if (name.Length > DirectoryFormat.MaxNameLength)
            throw new XfsWriteException(WriteErrorKind.NameTooLong, $"'{where}': name of {name.Length} bytes is longer than {DirectoryFormat.MaxNameLength}");
        if (name.IndexOf((byte)'/') >= 0) throw new XfsWriteException(WriteErrorKind.InvalidArgument, $"'{where}': name contains '/'");
        if (name.IndexOf((byte)0) >= 0) throw new XfsWriteException(WriteErrorKind.InvalidArgument, $"'{where}': name contains a NUL byte");
    }

    /// <summary>A name a new entry gets: valid, and not '.' or '..' (EEXIST, as the kernel's filename_create).</summary>
    static void CheckNewName(ReadOnlySpan<byte> name, string where)
    {
        CheckName(name, where);
        if (DirectoryFormat.IsDot(name) || DirectoryFormat.IsDotDot(name))
            throw new XfsWriteException(WriteErrorKind.Exists, $"'{where}' exists");
    }

    /// <summary>A name being removed: '.' and '..' are refused as the kernel's unlink (EISDIR) and rmdir ('.': EINVAL,
    /// '..': ENOTEMPTY) refuse them.</summary>
    static void CheckRemovedName(ReadOnlySpan<byte> name, RemoveKind kind, string where)
    {
        CheckName(name, where);
        if (DirectoryFormat.IsDot(name))
            throw new XfsWriteException(kind == RemoveKind.NonDirectory ? WriteErrorKind.IsDirectory : WriteErrorKind.InvalidArgument, $"'{where}': cannot remove '.'");
        if (DirectoryFormat.IsDotDot(name))
            throw new XfsWriteException(kind == RemoveKind.NonDirectory ? WriteErrorKind.IsDirectory : WriteErrorKind.NotEmpty, $"'{where}': cannot remove '..'");
    }

    static string Where(ulong dirIno, ReadOnlySpan<byte> name) => $"inode {dirIno}/{DirectoryFormat.Show(name)}";

    /// <summary>The directory part of an entry's description (a path, or "inode N/name").</summary>
    static string ParentOf(string where)
    {
        int slash = where.TrimEnd('/').LastIndexOf('/');
        return slash <= 0 ? "/" : where[..slash];
    }

    // ------------------------------------------------------------------ liveness checks

    /// <summary>Throws when a locked inode is free or is not the incarnation <paramref name="generation"/> names:
    /// ESTALE with a generation (a handle), ENOENT without.</summary>
    static void CheckAlive(IncoreInode inode, uint? generation, string where)
    {
        var c = inode.Core;
        bool free = new Dinode(c).IsFree;
        if (generation is uint g && (free || InodeAttributeFields.Generation(c) != g))
            throw new XfsWriteException(WriteErrorKind.Stale, $"'{where}': inode {inode.Ino} generation {g} was freed since the handle was made");
        if (free) throw new XfsWriteException(WriteErrorKind.NotFound, $"'{where}': inode {inode.Ino} is free");
    }

    /// <summary>A locked directory that may be searched or changed: alive, a directory (ENOTDIR), not removed (ENOENT).</summary>
    static void CheckDirectory(IncoreInode dir, uint? generation, string where)
    {
        CheckAlive(dir, generation, where);
        if (!InodeCore.IsDirectory(dir.Core)) throw new XfsWriteException(WriteErrorKind.NotDirectory, $"'{where}': inode {dir.Ino} is not a directory");
        if (InodeCore.Nlink(dir.Core) == 0) throw new XfsWriteException(WriteErrorKind.NotFound, $"'{where}': directory inode {dir.Ino} was removed");
    }

    /// <summary>A locked inode <see cref="CheckAlive"/> would pass (checked without building its message).</summary>
    static bool IsAlive(IncoreInode inode, uint? generation)
    {
        var c = inode.Core;
        return !new Dinode(c).IsFree && (generation is not uint g || InodeAttributeFields.Generation(c) == g);
    }

    /// <summary>Finds a name in a directory under its read lock (no transaction): the child's inode number or null.
    /// <paramref name="where"/> (null: made from the directory and the name when needed) names the entry in errors;
    /// a name the lookup cache answers costs no allocation.</summary>
    ulong? FindUnlocked(ulong dirIno, uint? generation, ReadOnlySpan<byte> name, string? where)
    {
        var dir = Engine.GetInode(dirIno);
        using (Engine.LockInodeForRead(dir))
        {
            if (!IsAlive(dir, generation) || !InodeCore.IsDirectory(dir.Core) || InodeCore.Nlink(dir.Core) == 0)
                CheckDirectory(dir, generation, where ?? Where(dirIno, name));
            if (_walker.TryFindCached(dirIno, name, out ulong? cached)) return cached;
            return _walker.Find(dirIno, (byte[])dir.Core.Clone(), name, where ?? Where(dirIno, name));
        }
    }

    // ------------------------------------------------------------------ reads by inode

    /// <summary>Everything stat shows about inode <paramref name="ino"/> (ENOENT when it is free).</summary>
    public InodeAttributes GetAttr(ulong ino) => GetAttrCore(ino, null);

    /// <summary>As <see cref="GetAttr(ulong)"/> through a handle: ESTALE when the inode was freed since.</summary>
    public InodeAttributes GetAttr(InodeHandle handle) => GetAttrCore(handle.Ino, handle.Generation);

    InodeAttributes GetAttrCore(ulong ino, uint? generation)
    {
        var inode = Engine.GetInode(ino);
        using (Engine.LockInodeForRead(inode))
        {
            if (!IsAlive(inode, generation)) CheckAlive(inode, generation, $"inode {ino}");
            return InodeAttributeFields.Read(ino, inode.Core, Engine.Geometry.BlockSize);
        }
    }

    /// <summary>
    /// The attributes (with the generation: a handle) of <paramref name="name"/> in directory <paramref name="dirIno"/>
    /// ('.' and '..' included). The name is looked up under the directory's lock, the inode read under its own, then
    /// the name checked again: the result is an incarnation the name named. ENOENT, ENOTDIR, ENAMETOOLONG.
    /// </summary>
    public InodeAttributes Lookup(ulong dirIno, ReadOnlySpan<byte> name) => LookupCore(dirIno, name, Where(dirIno, name));

    /// <summary>
    /// As <see cref="Lookup(ulong, ReadOnlySpan{byte})"/>, but a name the directory does not hold is false instead of
    /// an exception (FUSE asks for every name a program creates first). Every other failure still throws. A name
    /// the lookup cache answers (present or absent) allocates nothing.
    /// </summary>
    public bool TryLookup(ulong dirIno, ReadOnlySpan<byte> name, out InodeAttributes attributes)
    {
        if (name.Length == 0 || name.Length > DirectoryFormat.MaxNameLength || name.IndexOf((byte)'/') >= 0 || name.IndexOf((byte)0) >= 0)
            CheckName(name, Where(dirIno, name));
        for (int attempt = 0; ; attempt++)
        {
            if (FindUnlocked(dirIno, null, name, null) is not ulong child)
            {
                attributes = default;
                return false;
            }
            try
            {
                attributes = GetAttrCore(child, null);
            }
            catch (XfsWriteException e) when (e.Kind == WriteErrorKind.NotFound && attempt < MaxRestarts)
            {
                continue; // freed between the two locks: look again
            }
            if (FindUnlocked(dirIno, null, name, null) == child) return true;
            if (attempt >= MaxRestarts) throw KeptMoving(Where(dirIno, name));
        }
    }

    /// <summary><see cref="Lookup(ulong, ReadOnlySpan{byte})"/> with <paramref name="where"/> naming the entry in messages.</summary>
    internal InodeAttributes LookupCore(ulong dirIno, ReadOnlySpan<byte> name, string where)
    {
        CheckName(name, where);
        for (int attempt = 0; ; attempt++)
        {
            ulong child = FindUnlocked(dirIno, null, name, where)
                ?? throw new XfsWriteException(WriteErrorKind.NotFound, $"'{where}' does not exist");
            InodeAttributes attributes;
            try
            {
                attributes = GetAttrCore(child, null);
            }
            catch (XfsWriteException e) when (e.Kind == WriteErrorKind.NotFound && attempt < MaxRestarts)
            {
                continue; // freed between the two locks: look again
            }
            if (FindUnlocked(dirIno, null, name, where) == child) return attributes;
            if (attempt >= MaxRestarts) throw KeptMoving(where);
        }
    }

    /// <summary>
    /// Lists directory <paramref name="dirIno"/> from <paramref name="cookie"/> on ('.' and '..' first; 0 = from the
    /// start), calling <paramref name="visitor"/> per entry until it returns false or the directory ends. Each entry's
    /// next cookie is its data pointer (byte address in the directory's data space / 8, the offset the kernel's
    /// readdir reports) plus one: it is
    /// stable across calls and across other entries being added or removed, so a listing resumed from it neither
    /// repeats nor skips an entry that stayed. The directory is read under its lock; the visitor runs after it is
    /// released (it may call back into the engine). Returns the number of entries visited.
    /// </summary>
    public int ReadDirectory(ulong dirIno, ulong cookie, DirectoryVisitor visitor)
    {
        ArgumentNullException.ThrowIfNull(visitor);
        string where = $"inode {dirIno}";
        var dir = Engine.GetInode(dirIno);
        List<(long Position, byte[] Name, ulong Ino, byte FileType)> entries;
        bool touch;
        using (Engine.LockInodeForRead(dir))
        {
            CheckAlive(dir, null, where);
            if (!InodeCore.IsDirectory(dir.Core)) throw new XfsWriteException(WriteErrorKind.NotDirectory, $"'{where}' is not a directory");
            touch = AccessTimes.Wanted(Engine, dir.Core);
            entries = PositionedEntries(dirIno, (byte[])dir.Core.Clone(), where);
        }
        int visited = 0;
        foreach (var (position, name, ino, fileType) in entries)
        {
            ulong dataPointer = (ulong)position >> 3;
            if (dataPointer < cookie) continue;
            if (!visitor(name, ino, TypeOf(fileType, ino), dataPointer + 1)) break;
            visited++;
        }
        // As the kernel's iterate_dir: every readdir call touches atime, the one that finds the end too.
        if (touch) AccessTimes.Update(Engine, dir, null);
        return visited;
    }

    /// <summary>Every entry of a directory with its position in the data space ('.' and '..' included), in order.</summary>
    List<(long Position, byte[] Name, ulong Ino, byte FileType)> PositionedEntries(ulong dirIno, byte[] core, string where)
    {
        var result = new List<(long, byte[], ulong, byte)>();
        var d = new Dinode(core);
        int dotSize = DirectoryFormat.DataEntrySize(1, Reader.HasFtype);
        if (d.Format == ForkFormat.Local)
        {
            var sf = ShortformDirectory.Parse(d.DataFork, (long)d.Size, Reader.HasFtype, Reader.DirBlockSize, where);
            result.Add((DirectoryFormat.DotOffset, [(byte)'.'], dirIno, DirectoryFormat.FtDirectory));
            result.Add((DirectoryFormat.DotOffset + dotSize, [(byte)'.', (byte)'.'], sf.Parent, DirectoryFormat.FtDirectory));
            foreach (var e in sf.Entries) result.Add((e.Offset, e.Name, e.Ino, e.FileType));
            return result;
        }
        var extents = Reader.DataExtents(dirIno, core, where);
        var layout = Reader.Layout(core, extents, where);
        var blockStarts = new SortedSet<ulong>();
        if (layout == DirectoryLayout.Block)
        {
            blockStarts.Add(0);
        }
        else
        {
            foreach (var e in extents)
            {
                if (e.StartOffset >= Reader.LeafOffsetFsb) break;
                ulong last = Math.Min(e.StartOffset + e.BlockCount, Reader.LeafOffsetFsb);
                for (ulong fb = e.StartOffset - e.StartOffset % (ulong)Reader.DirBlockFsbs; fb < last; fb += (ulong)Reader.DirBlockFsbs)
                    blockStarts.Add(fb);
            }
        }
        var scratch = new List<DataEntry>();
        foreach (ulong fb in blockStarts)
        {
            uint magic = layout == DirectoryLayout.Block ? DirectoryFormat.BlockMagic : DirectoryFormat.DataMagic;
            var block = Reader.ReadDirBlock(dirIno, extents, fb, magic, _source.ReadBlocks, where)
                ?? throw new XfsWriteException(WriteErrorKind.Corrupt, $"{where}: directory block at offset {fb} only partly mapped");
            scratch.Clear();
            if (layout == DirectoryLayout.Block) scratch.AddRange(BlockDirectory.Parse(block, Reader.HasFtype, where).Entries);
            else BlockDirectory.ScanData(block, block.Length, Reader.HasFtype, scratch, null, why => new XfsWriteException(WriteErrorKind.Corrupt, $"{where}: data block at offset {fb}: {why}"));
            long baseOffset = (long)fb * Engine.Geometry.BlockSize;
            foreach (var e in scratch) result.Add((baseOffset + e.Offset, e.Name, e.Ino, e.FileType));
        }
        result.Sort(static (a, b) => a.Item1.CompareTo(b.Item1));
        return result;
    }

    // ------------------------------------------------------------------ changes by inode

    /// <summary>Creates an empty regular file <paramref name="name"/> in directory <paramref name="dirIno"/> with the
    /// permission bits of <paramref name="mode"/> and the given owner; its attributes. EEXIST, ENOENT, ENOTDIR,
    /// ENAMETOOLONG, ENOSPC.</summary>
    public InodeAttributes Create(ulong dirIno, ReadOnlySpan<byte> name, int mode, uint uid, uint gid)
        => CreateInode("create", dirIno, null, name.ToArray(), (ushort)(InodeCore.ModeRegular | (mode & 0xFFF)), uid, gid, 0, null, Where(dirIno, name));

    /// <summary>Creates an empty directory (as <see cref="Create(ulong, ReadOnlySpan{byte}, int, uint, uint)"/>; the
    /// parent gains a link, EMLINK when it has the most).</summary>
    public InodeAttributes Mkdir(ulong dirIno, ReadOnlySpan<byte> name, int mode, uint uid, uint gid)
        => CreateInode("mkdir", dirIno, null, name.ToArray(), (ushort)(InodeCore.ModeDirectory | (mode & 0xFFF)), uid, gid, 0, null, Where(dirIno, name));

    /// <summary>unlink(2): removes a name of anything but a directory (EISDIR); the inode is freed with its last
    /// link unless it is held.</summary>
    public void Unlink(ulong dirIno, ReadOnlySpan<byte> name)
        => RemoveName("unlink", dirIno, null, name.ToArray(), RemoveKind.NonDirectory, Where(dirIno, name));

    /// <summary>rmdir(2): removes an empty directory (ENOTDIR, ENOTEMPTY).</summary>
    public void Rmdir(ulong dirIno, ReadOnlySpan<byte> name)
        => RemoveName("rmdir", dirIno, null, name.ToArray(), RemoveKind.Directory, Where(dirIno, name));

    const ushort SetGroupId = 0x400;

    /// <summary>Creates an inode of <paramref name="mode"/> named <paramref name="name"/> in a directory: the
    /// directory is locked and checked, the name checked absent under the lock, an inode allocated and formatted
    /// (device number or symlink target included), the entry added. One transaction.</summary>
    InodeAttributes CreateInode(string operation, ulong dirIno, uint? dirGeneration, byte[] name, ushort mode, uint uid, uint gid,
        ulong rdev, byte[]? symlinkTarget, string where)
    {
        string dirWhere = ParentOf(where);
        CheckNewName(name, where);
        bool isDir = (mode & InodeCore.ModeTypeMask) == InodeCore.ModeDirectory;
        int type = mode & InodeCore.ModeTypeMask;
        uint? xfsRdev = null;
        if (type is 0x2000 or 0x6000)
        {
            xfsRdev = DeviceNumbers.ToXfs(rdev)
                ?? throw new XfsWriteException(WriteErrorKind.InvalidArgument, $"'{where}': device {DeviceNumbers.Major(rdev)}:{DeviceNumbers.Minor(rdev)} does not fit XFS (major at most 511, minor at most 262143)");
        }
        var dir = Engine.GetInode(dirIno);
        return Engine.Execute($"{operation} {where}", tx =>
        {
            tx.LockInodes(dir);
            CheckDirectory(dir, dirGeneration, dirWhere);
            var editor = new DirectoryEditor(tx, dir, Reader, dirWhere);
            if (editor.Find(name) is not null) throw new XfsWriteException(WriteErrorKind.Exists, $"'{where}' already exists");
            if (isDir && InodeCore.Nlink(dir.Core) >= MaxLinks)
                throw new XfsWriteException(WriteErrorKind.TooManyLinks, $"'{where}': the directory has {InodeCore.Nlink(dir.Core)} links, the most XFS allows");

            // A directory with set-group-ID (System V semantics, XFS without the grpid mount option) gives its group to
            // every new inode, and its set-group-ID bit to new directories (the kernel's inode_init_owner).
            ushort newMode = mode;
            uint newGid = gid;
            if ((new Dinode(dir.Core).Mode & SetGroupId) != 0)
            {
                newGid = InodeAttributeFields.Gid(dir.Core);
                if (isDir) newMode |= SetGroupId;
            }

            ulong ino = _allocator.Allocate(tx, dirIno);
            var child = Engine.GetInode(ino);
            tx.LockInodes(child); // just allocated: nobody else can reach it, so the order does not matter
            if (!new Dinode(child.Core).IsFree)
                throw new XfsWriteException(WriteErrorKind.Corrupt, $"inode {ino} is free in the inode btree but in use on disk");
            var now = DateTimeOffset.UtcNow;
            InodeCore.FormatNew(child.Core, Engine.Image.Superblock, newMode, isDir ? 2u : 1u, dirIno, now);
            InodeAttributeFields.SetUid(child.Core, uid);
            InodeAttributeFields.SetGid(child.Core, newGid);
            if (type is 0x1000 or 0x2000 or 0x6000 or 0xC000) SpecialFiles.FormatDevice(child.Core, xfsRdev ?? 0);
            if (symlinkTarget is not null) WriteSymlinkTarget(tx, child, symlinkTarget, remote: false, where);
            tx.LogInode(child);

            editor.Add(name, ino, DirectoryFormat.FileTypeOfMode(mode), now);
            if (isDir)
            {
                tx.QueueDirectoryUpdate(ino, ino, +1, DirectoryEntryKind.Dot);
                tx.QueueDirectoryUpdate(ino, dirIno, +1, DirectoryEntryKind.DotDot);
                InodeCore.SetNlink(dir.Core, InodeCore.Nlink(dir.Core) + 1);
                tx.LogInode(dir);
            }
            return InodeAttributeFields.Read(ino, child.Core, Engine.Geometry.BlockSize);
        });
    }

    /// <summary>Removes <paramref name="name"/> from a directory: the directory locked, the name found under its lock
    /// (through the transaction's buffers, which a removal reads and changes anyway), then the child locked. The
    /// child's lock comes after the directory's: in ascending order when the child's number is the higher (the common
    /// case: an inode is allocated near and after its parent), otherwise tried, and on contention the operation starts
    /// over with the child locked first (<see cref="WriteTransaction.LockInodes"/>). No lookup of the name before the
    /// transaction: every removal changes the directory, so the lookup cache never knows the next name of an
    /// <c>rm -rf</c>, and that lookup read and parsed the directory's blocks from the image once more per removal.</summary>
    void RemoveName(string operation, ulong dirIno, uint? dirGeneration, byte[] name, RemoveKind kind, string where)
    {
        string dirWhere = ParentOf(where);
        CheckRemovedName(name, kind, where);
        var dir = Engine.GetInode(dirIno);
        Engine.Execute($"{operation} {where}", tx =>
        {
            tx.LockInodes(dir);
            CheckDirectory(dir, dirGeneration, dirWhere);
            var editor = new DirectoryEditor(tx, dir, Reader, dirWhere);
            var entry = editor.Find(name) ?? throw new XfsWriteException(WriteErrorKind.NotFound, $"'{where}' does not exist");
            var child = Engine.GetInode(entry.Ino);
            tx.LockInodes(child);
            CheckRemovable(tx, dir, child, kind, where);
            var now = DateTimeOffset.UtcNow;
            editor.Remove(name, now);
            DropLink(tx, dir, child, now, where);
        });
    }

    /// <summary>Checks a locked child may lose the name its locked parent gives it: the type the removal accepts,
    /// an empty directory whose '..' is the parent.</summary>
    void CheckRemovable(WriteTransaction tx, IncoreInode parent, IncoreInode child, RemoveKind kind, string where)
    {
        var d = new Dinode(child.Core);
        if (d.IsFree) throw new XfsWriteException(WriteErrorKind.Corrupt, $"'{where}' names inode {child.Ino}, which is free");
        bool isDir = InodeCore.IsDirectory(child.Core);
        if (isDir && kind == RemoveKind.NonDirectory) throw new XfsWriteException(WriteErrorKind.IsDirectory, $"'{where}' is a directory");
        if (!isDir && kind == RemoveKind.Directory) throw new XfsWriteException(WriteErrorKind.NotDirectory, $"'{where}' is not a directory");
        if (isDir)
        {
            var (dotdot, entries) = new DirectoryEditor(tx, child, Reader, where).ReadAll();
            if (entries.Count > 0) throw new XfsWriteException(WriteErrorKind.NotEmpty, $"directory '{where}' is not empty ({entries.Count} entries)");
            if (dotdot != parent.Ino) throw new XfsWriteException(WriteErrorKind.Corrupt, $"directory '{where}' says its parent is inode {dotdot}, not {parent.Ino}");
        }
    }

    /// <summary>The child lost a name in <paramref name="parent"/> (entry already removed): a directory drops to 0
    /// links and the parent loses the child's '..' link; anything else loses one link. At 0 links the inode is
    /// freed, or kept on the AGI unlinked list while someone holds it.</summary>
    void DropLink(WriteTransaction tx, IncoreInode parent, IncoreInode child, DateTimeOffset now, string where)
    {
        if (InodeCore.IsDirectory(child.Core))
        {
            InodeCore.SetNlink(parent.Core, InodeCore.Nlink(parent.Core) - 1);
            tx.LogInode(parent);
            InodeCore.SetNlink(child.Core, 0);
            QueueDirectoryGone(tx, child.Ino, parent.Ino);
        }
        else
        {
            uint links = InodeCore.Nlink(child.Core);
            if (links == 0) throw new XfsWriteException(WriteErrorKind.Corrupt, $"'{where}': inode {child.Ino} has link count 0");
            InodeCore.SetNlink(child.Core, links - 1);
        }
        InodeCore.SetTime(child.Core, InodeCore.OffCtime, now);
        tx.LogInode(child);
        if (InodeCore.Nlink(child.Core) > 0) return;
        ReleaseLastLink(tx, child, where);
    }

    /// <summary>A removed directory's '.' and '..' stop counting (its core may stay, held, on the unlinked list).</summary>
    static void QueueDirectoryGone(WriteTransaction tx, ulong dirIno, ulong parentIno)
    {
        tx.QueueDirectoryUpdate(dirIno, dirIno, -1, DirectoryEntryKind.Dot);
        tx.QueueDirectoryUpdate(dirIno, parentIno, -1, DirectoryEntryKind.DotDot);
    }

    /// <summary>Frees a locked, unlinked inode: its blocks, its core (generation + 1), its inode btree bit.</summary>
    void FreeInode(WriteTransaction tx, IncoreInode inode, string where)
    {
        FreeBlocks(tx, inode, where);
        InodeCore.FormatFreed(inode.Core, Engine.Image.Superblock);
        tx.LogInode(inode);
        _allocator.Free(tx, inode.Ino);
    }

    /// <summary>Frees every block of an inode being freed: a directory's or symlink's extent-format data fork here
    /// (never shared), anything else through <see cref="Files.FileOperations.FreeAllBlocks"/>.</summary>
    void FreeBlocks(WriteTransaction tx, IncoreInode inode, string path)
    {
        var d = new Dinode(inode.Core);
        bool noBlocks = d.NBlocks == 0 && (d.Format is ForkFormat.Local or ForkFormat.Dev || d.DataExtents == 0)
            && (d.ForkOffset == 0 || d.AttrFormat == ForkFormat.Local || d.AttrExtents == 0);
        if (noBlocks) return;
        // Directory and symlink blocks are metadata: freed here, their buffers invalidated (FreeMetadata).
        bool plainDir = (d.Mode & InodeCore.ModeTypeMask) is InodeCore.ModeDirectory or 0xA000 && d.Format == ForkFormat.Extents
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
            if (!tx.HoldsAg(agno)) tx.LockAg(agno);
            tx.RmapUnmap(agno, new Trees.RmapRecord(agbno, e.BlockCount, inode.Ino, e.StartOffset), false);
            tx.FreeMetadata(agno, agbno, e.BlockCount);
            freed += e.BlockCount;
        }
        var c = inode.Core.AsSpan();
        c.Slice(Dinode.CoreSize, new Dinode(c).DataFork.Length).Clear();
        InodeCore.SetDataExtents(c, 0);
        InodeCore.SetNblocks(c, InodeCore.Nblocks(c) - Math.Min(freed, InodeCore.Nblocks(c)));
        InodeCore.SetSize(c, 0);
    }
}
