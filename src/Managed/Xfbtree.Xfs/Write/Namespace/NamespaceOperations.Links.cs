using Xfbtree.Xfs.Directories;
using System.Buffers.Binary;
using Xfbtree.Buffers;
using Xfbtree.Xfs.Format;
using Xfbtree.Xfs.Trees;
using Xfbtree.Xfs.Write.Engine;

namespace Xfbtree.Xfs.Write.Namespace;

internal sealed partial class NamespaceOperations
{
    /// <summary>XFS_SYMLINK_MAXLEN (bytes): a target read from disk may be this long; a new one must be shorter
    /// (the kernel refuses a target of this length and xfs_repair clears such an inode).</summary>
    public const int MaxSymlinkLength = 1024;
    /// <summary>"XSLM": remote symlink block magic.</summary>
    const uint SymlinkMagic = 0x58534C4D;
    /// <summary>xfs_dsymlink_hdr: magic, offset, bytes, crc, uuid, owner, blkno, lsn.</summary>
    const int SymlinkHeaderSize = 56;
    const int SymlinkCrcOffset = 12;

    /// <summary>
    /// Creates a symbolic link <paramref name="name"/> in <paramref name="dirIno"/> pointing at
    /// <paramref name="target"/> (mode 0777, as Linux gives every symlink). The target is kept in the inode when it
    /// fits the data fork (LOCAL), else in remote blocks with their v5 header and CRC (as xfs_symlink). EINVAL for an
    /// empty target or one holding NUL, ENAMETOOLONG from 1024 bytes (the longest target is 1023, as the kernel's).
    /// </summary>
    public InodeAttributes Symlink(ulong dirIno, ReadOnlySpan<byte> name, ReadOnlySpan<byte> target, uint uid, uint gid)
        => SymlinkCore(dirIno, null, name.ToArray(), target.ToArray(), uid, gid, Where(dirIno, name));

    /// <summary>Creates a symbolic link at <paramref name="path"/> (owner 0:0) pointing at <paramref name="target"/>.</summary>
    public ulong Symlink(string target, string path)
    {
        ArgumentNullException.ThrowIfNull(target);
        var (dir, name) = ResolveParent(path);
        return SymlinkCore(dir.Ino, dir.Generation, name, System.Text.Encoding.UTF8.GetBytes(target), 0, 0, path).Ino;
    }

    InodeAttributes SymlinkCore(ulong dirIno, uint? dirGeneration, byte[] name, byte[] target, uint uid, uint gid, string where)
    {
        if (target.Length == 0) throw new XfsWriteException(WriteErrorKind.NotFound, $"'{where}': empty symlink target");
        if (target.Length >= MaxSymlinkLength)
            throw new XfsWriteException(WriteErrorKind.NameTooLong, $"'{where}': symlink target of {target.Length} bytes is longer than {MaxSymlinkLength - 1}");
        if (Array.IndexOf(target, (byte)0) >= 0) throw new XfsWriteException(WriteErrorKind.InvalidArgument, $"'{where}': symlink target contains a NUL byte");
        return CreateInode("symlink", dirIno, dirGeneration, name, 0xA000 | 0x1FF, uid, gid, 0, target, where);
    }

    /// <summary>Creates a special file: <paramref name="mode"/>'s type is S_IFIFO, S_IFSOCK, S_IFCHR or S_IFBLK
    /// (EINVAL otherwise: regular files and directories have their own calls), <paramref name="rdev"/> the Linux
    /// dev_t of a device (EINVAL, as the kernel's xfs_vn_mknod, for a major above 511 or a minor above 2^18 - 1).</summary>
    public InodeAttributes Mknod(ulong dirIno, ReadOnlySpan<byte> name, int mode, ulong rdev, uint uid, uint gid)
        => MknodCore(dirIno, null, name.ToArray(), mode, rdev, uid, gid, Where(dirIno, name));

    /// <summary>Creates a special file at <paramref name="path"/> (owner 0:0); see <see cref="Mknod(ulong, ReadOnlySpan{byte}, int, ulong, uint, uint)"/>.</summary>
    public ulong Mknod(string path, int mode, ulong rdev)
    {
        var (dir, name) = ResolveParent(path);
        return MknodCore(dir.Ino, dir.Generation, name, mode, rdev, 0, 0, path).Ino;
    }

    InodeAttributes MknodCore(ulong dirIno, uint? dirGeneration, byte[] name, int mode, ulong rdev, uint uid, uint gid, string where)
    {
        int type = mode & InodeCore.ModeTypeMask;
        if (type is not (0x1000 or 0xC000 or 0x2000 or 0x6000))
            throw new XfsWriteException(WriteErrorKind.InvalidArgument, $"'{where}': mknod makes fifos, sockets and devices (mode 0{Convert.ToString(mode, 8)})");
        if (type is 0x1000 or 0xC000) rdev = 0;
        return CreateInode("mknod", dirIno, dirGeneration, name, (ushort)(type | (mode & 0xFFF)), uid, gid, rdev, null, where);
    }

    /// <summary>Writes a new symlink's target into its freshly formatted, locked inode: inline when it fits the
    /// data fork, else remote blocks allocated near the inode (several extents when free space is fragmented), each
    /// mapping one buffer with its header (offset, bytes, CRC, UUID, owner, blkno), mapped in the rmapbt.
    /// <paramref name="remote"/> writes remote blocks even for a target that fits inline: the inline target of an
    /// existing symlink moves out to make room for an attribute fork (xfs_symlink_local_to_remote).</summary>
    internal static void WriteSymlinkTarget(WriteTransaction tx, IncoreInode inode, byte[] target, bool remote, string where)
    {
        var c = inode.Core.AsSpan();
        int forkSize = new Dinode(c).DataFork.Length;
        if (!remote && target.Length <= forkSize)
        {
            c[InodeCore.OffFormat] = (byte)ForkFormat.Local;
            InodeCore.SetLocalData(c, target);
            return;
        }
        var geo = tx.Engine.Geometry;
        int perBlock = geo.BlockSize - SymlinkHeaderSize;
        int blocks = (target.Length + perBlock - 1) / perBlock;
        if (blocks * Dinode.ExtentSize > forkSize) throw new XfsWriteException(WriteErrorKind.NotSupported, $"'{where}': the symlink needs more extents than the inode holds");
        ulong ino = inode.Ino;
        ulong hint = geo.AgbToFsb(geo.InoToAgno(ino), geo.AginoToAgbno(geo.InoToAgino(ino)));
        var fork = c.Slice(Dinode.CoreSize, forkSize);
        fork.Clear();
        int done = 0, extents = 0, written = 0;
        while (done < blocks)
        {
            var got = tx.Allocate(new AllocationRequest(hint, 1, (uint)(blocks - done), AllocationPurpose.DirectoryBlock));
            tx.RmapMap(got.AgNumber, new RmapRecord(got.AgBlock, got.Length, ino, (ulong)done), false);
            InodeCore.WriteExtent(fork[(extents * Dinode.ExtentSize)..], (ulong)done, got.Fsbno, got.Length);
            extents++;
            // One header per mapping, as xfs_symlink writes it: the extent is one buffer, its data follows the header.
            long daddr = geo.AgBlockToDaddr(got.AgNumber, got.AgBlock);
            var buf = tx.GetNewBuffer(daddr, (int)got.Length * geo.BasicBlocksPerBlock, SymlinkVerifier(geo, ino));
            var s = buf.Span;
            s.Clear();
            int bytes = Math.Min(s.Length - SymlinkHeaderSize, target.Length - written);
            BinaryPrimitives.WriteUInt32BigEndian(s, SymlinkMagic);
            BinaryPrimitives.WriteUInt32BigEndian(s[4..], (uint)written);
            BinaryPrimitives.WriteUInt32BigEndian(s[8..], (uint)bytes);
            geo.MetaUuid.CopyTo(s[16..]);
            BinaryPrimitives.WriteUInt64BigEndian(s[32..], ino);
            BinaryPrimitives.WriteUInt64BigEndian(s[40..], (ulong)daddr);
            target.AsSpan(written, bytes).CopyTo(s[SymlinkHeaderSize..]);
            XfsCrc.Update(s, SymlinkCrcOffset);
            tx.LogBuffer(buf, 0, buf.Length);
            written += bytes;
            done += (int)got.Length;
            hint = got.Fsbno + got.Length;
        }
        c[InodeCore.OffFormat] = (byte)ForkFormat.Extents;
        InodeCore.SetDataExtents(c, (ulong)extents);
        InodeCore.SetNblocks(c, InodeCore.Nblocks(c) + (ulong)blocks);
        InodeCore.SetSize(c, (ulong)target.Length);
    }

    /// <summary>
    /// Brings the remote target of a symlink back into its data fork when the fork holds it again (the attr fork went,
    /// or moved up): the blocks are read through the transaction, unmapped and freed, and the target written inline.
    /// The kernel leaves such a target remote, and its own readers accept either, but xfs_repair before 6.10 calls an
    /// extents-format symlink whose size fits the data fork a "mismatch between format (2) and size". Nothing happens
    /// when the inode is no symlink, is inline already, or its target does not fit the data fork.
    /// </summary>
    internal static void MoveRemoteTargetInline(WriteTransaction tx, IncoreInode inode, string where)
    {
        var c = inode.Core.AsSpan();
        var d = new Dinode(c);
        if ((d.Mode & InodeCore.ModeTypeMask) != 0xA000 || d.Format != ForkFormat.Extents || d.Size == 0 || d.Size > (ulong)d.DataFork.Length) return;
        var geo = tx.Engine.Geometry;
        ulong ino = inode.Ino;
        ulong count = d.DataExtents;
        if (count == 0 || count > (ulong)(d.DataFork.Length / Dinode.ExtentSize))
            throw new XfsWriteException(WriteErrorKind.Corrupt, $"'{where}': a remote symlink of {count} extents");
        var extents = new BmbtExtent[(int)count];
        for (int i = 0; i < extents.Length; i++) extents[i] = BmbtExtent.Read(d.DataFork[(i * Dinode.ExtentSize)..]);
        var target = new byte[(int)d.Size];
        int got = 0;
        foreach (var e in extents)
        {
            CheckRemoteExtent(e, geo, where);
            uint agno = geo.FsbToAgno(e.StartBlock);
            if (!tx.HoldsAg(agno)) tx.LockAg(agno);
            var buf = tx.ReadBuffer(geo.AgBlockToDaddr(agno, geo.FsbToAgbno(e.StartBlock)), (int)e.BlockCount * geo.BasicBlocksPerBlock, SymlinkVerifier(geo, ino));
            got += CopyRemotePiece(buf.Span, target, got, e.StartBlock, where);
        }
        if (got != target.Length) throw new XfsWriteException(WriteErrorKind.Corrupt, $"'{where}': symlink blocks hold {got} of {target.Length} bytes");
        ulong freed = 0;
        foreach (var e in extents)
        {
            uint agno = geo.FsbToAgno(e.StartBlock), agbno = geo.FsbToAgbno(e.StartBlock);
            tx.RmapUnmap(agno, new RmapRecord(agbno, e.BlockCount, ino, e.StartOffset), false);
            tx.FreeMetadata(agno, agbno, e.BlockCount);
            freed += e.BlockCount;
        }
        InodeCore.SetDataExtents(c, 0);
        InodeCore.SetNblocks(c, InodeCore.Nblocks(c) - Math.Min(freed, InodeCore.Nblocks(c)));
        c[InodeCore.OffFormat] = (byte)ForkFormat.Local;
        InodeCore.SetLocalData(c, target);
    }

    /// <summary>A remote symlink extent the readers accept: written, and no longer than a target needs plus one block.</summary>
    static void CheckRemoteExtent(BmbtExtent e, XfsGeometry geo, string where)
    {
        if (e.BlockCount > (uint)((MaxSymlinkLength + geo.BlockSize - 1) / geo.BlockSize + 1) || e.Unwritten)
            throw new XfsWriteException(WriteErrorKind.Corrupt, $"'{where}': symlink extent of {e.BlockCount} blocks{(e.Unwritten ? ", unwritten" : "")}");
    }

    /// <summary>Copies the piece of the target one verified remote block holds to its place in
    /// <paramref name="target"/>, which the pieces before filled up to <paramref name="got"/>; returns its length.</summary>
    static int CopyRemotePiece(ReadOnlySpan<byte> block, byte[] target, int got, ulong fsbno, string where)
    {
        uint offset = BinaryPrimitives.ReadUInt32BigEndian(block[4..]);
        int bytes = (int)BinaryPrimitives.ReadUInt32BigEndian(block[8..]);
        if (offset != (uint)got || got + bytes > target.Length)
            throw new XfsWriteException(WriteErrorKind.Corrupt, $"'{where}': symlink block {fsbno} holds bytes {offset}+{bytes}, expected from {got}");
        block.Slice(SymlinkHeaderSize, bytes).CopyTo(target.AsSpan(got));
        return bytes;
    }

    static MagicCrcVerifier SymlinkVerifier(XfsGeometry geo, ulong ino)
    {
        return new MagicCrcVerifier("symlink block", SymlinkMagic, SymlinkCrcOffset, 0, b =>
        {
            var s = b.Span;
            uint bytes = BinaryPrimitives.ReadUInt32BigEndian(s[8..]);
            if (bytes > (uint)(s.Length - SymlinkHeaderSize)) return $"holds {bytes} bytes, more than the block";
            if (BinaryPrimitives.ReadUInt32BigEndian(s[4..]) >= MaxSymlinkLength) return "offset past the longest target";
            if (!s.Slice(16, 16).SequenceEqual(geo.MetaUuid)) return "metadata UUID mismatch";
            if (BinaryPrimitives.ReadUInt64BigEndian(s[32..]) != ino) return $"owner is not inode {ino}";
            if ((long)BinaryPrimitives.ReadUInt64BigEndian(s[40..]) != b.Daddr) return "blkno is not the block's address";
            return null;
        });
    }

    /// <summary>The target of the symbolic link <paramref name="ino"/> (EINVAL when it is not a symlink). Remote
    /// blocks are verified (magic, CRC, owner, blkno, UUID, offsets and byte counts adding up to di_size).</summary>
    public byte[] ReadLink(ulong ino) => ReadLinkCore(ino, null);

    /// <summary>As <see cref="ReadLink(ulong)"/> through a handle (ESTALE when the inode was freed since).</summary>
    public byte[] ReadLink(InodeHandle handle) => ReadLinkCore(handle.Ino, handle.Generation);

    /// <summary>The target of the symbolic link <paramref name="path"/> names (not followed).</summary>
    public string ReadLink(string path) => DirectoryFormat.Show(ReadLink(Resolve(path).Handle));

    /// <summary>True when the next read of the incarnation <paramref name="handle"/> names would set its atime (the
    /// engine's atime rule): a FUSE server then lets the kernel drop the file's cached pages at open, so that read
    /// reaches the engine.</summary>
    internal bool AccessTimeDue(InodeHandle handle)
    {
        var inode = Engine.GetInode(handle.Ino);
        using (Engine.LockInodeForRead(inode))
        {
            return InodeAttributeFields.Generation(inode.Core) == handle.Generation && AccessTimes.Wanted(Engine, inode.Core);
        }
    }

    byte[] ReadLinkCore(ulong ino, uint? generation)
    {
        var inode = Engine.GetInode(ino);
        byte[] target = ReadLinkLocked(inode, generation, out bool touch);
        if (touch) AccessTimes.Update(Engine, inode, generation);
        return target;
    }

    /// <summary>The target read under the inode's read lock; <paramref name="touch"/> says whether atime should follow.</summary>
    byte[] ReadLinkLocked(IncoreInode inode, uint? generation, out bool touch)
    {
        ulong ino = inode.Ino;
        string where = $"inode {ino}";
        using (Engine.LockInodeForRead(inode))
        {
            CheckAlive(inode, generation, where);
            touch = AccessTimes.Wanted(Engine, inode.Core);
            var d = new Dinode(inode.Core);
            if ((d.Mode & InodeCore.ModeTypeMask) != 0xA000) throw new XfsWriteException(WriteErrorKind.InvalidArgument, $"'{where}' is not a symbolic link");
            ulong size = d.Size;
            if (size == 0 || size > MaxSymlinkLength) throw new XfsWriteException(WriteErrorKind.Corrupt, $"'{where}': symlink size {size}");
            if (d.Format == ForkFormat.Local)
            {
                if (size > (ulong)d.DataFork.Length) throw new XfsWriteException(WriteErrorKind.Corrupt, $"'{where}': inline symlink of {size} bytes in a {d.DataFork.Length}-byte fork");
                return d.DataFork[..(int)size].ToArray();
            }
            if (d.Format != ForkFormat.Extents) throw new XfsWriteException(WriteErrorKind.Corrupt, $"'{where}': symlink data fork format {(int)d.Format}");
            var geo = Engine.Geometry;
            var result = new byte[size];
            int got = 0;
            var extents = Reader.DataExtents(ino, inode.Core, where);
            if (extents.Count > MaxSymlinkLength / 8) throw new XfsWriteException(WriteErrorKind.Corrupt, $"'{where}': symlink of {extents.Count} extents");
            foreach (var e in extents)
            {
                // One buffer (and one header) per mapping, as the kernel reads and writes it.
                CheckRemoteExtent(e, geo, where);
                var block = new byte[(int)e.BlockCount * geo.BlockSize];
                Engine.ReadMetadataBlocks(e.StartBlock, block);
                string? why = CheckSymlinkBlock(block, ino, Reader.DaddrOf(e.StartBlock), geo);
                if (why is not null) throw new XfsWriteException(WriteErrorKind.Corrupt, $"'{where}': symlink block {e.StartBlock}: {why}");
                got += CopyRemotePiece(block, result, got, e.StartBlock, where);
            }
            if ((ulong)got != size) throw new XfsWriteException(WriteErrorKind.Corrupt, $"'{where}': symlink blocks hold {got} of {size} bytes");
            return result;
        }
    }

    static string? CheckSymlinkBlock(ReadOnlySpan<byte> s, ulong ino, long daddr, XfsGeometry geo)
    {
        if (BinaryPrimitives.ReadUInt32BigEndian(s) != SymlinkMagic) return "bad magic";
        if (!XfsCrc.Verify(s, SymlinkCrcOffset)) return "bad CRC";
        if (BinaryPrimitives.ReadUInt32BigEndian(s[8..]) > (uint)(s.Length - SymlinkHeaderSize)) return "byte count larger than the block";
        if (!s.Slice(16, 16).SequenceEqual(geo.MetaUuid)) return "metadata UUID mismatch";
        if (BinaryPrimitives.ReadUInt64BigEndian(s[32..]) != ino) return $"owner is not inode {ino}";
        if ((long)BinaryPrimitives.ReadUInt64BigEndian(s[40..]) != daddr) return "blkno is not the block's address";
        return null;
    }

    /// <summary>link(2): gives inode <paramref name="ino"/> the new name <paramref name="name"/> in
    /// <paramref name="dirIno"/>; its attributes after. EPERM for a directory, EMLINK at the most links, ENOENT for an
    /// inode with no links left (open but unlinked), EEXIST, ENOTDIR.</summary>
    public InodeAttributes Link(ulong ino, ulong dirIno, ReadOnlySpan<byte> name) => LinkCore(ino, null, dirIno, null, name.ToArray(), Where(dirIno, name));

    /// <summary>As <see cref="Link(ulong, ulong, ReadOnlySpan{byte})"/> through a handle (ESTALE when it was freed since).</summary>
    public InodeAttributes Link(InodeHandle handle, ulong dirIno, ReadOnlySpan<byte> name)
        => LinkCore(handle.Ino, handle.Generation, dirIno, null, name.ToArray(), Where(dirIno, name));

    /// <summary>link by path: <paramref name="newPath"/> becomes another name of what <paramref name="existing"/> names.</summary>
    public void Link(string existing, string newPath)
    {
        var target = Resolve(existing).Handle;
        var (dir, name) = ResolveParent(newPath);
        LinkCore(target.Ino, target.Generation, dir.Ino, dir.Generation, name, newPath);
    }

    InodeAttributes LinkCore(ulong ino, uint? generation, ulong dirIno, uint? dirGeneration, byte[] name, string where)
    {
        CheckNewName(name, where);
        string dirWhere = ParentOf(where);
        var dir = Engine.GetInode(dirIno);
        var inode = Engine.GetInode(ino);
        return Engine.Execute($"link {where}", tx =>
        {
            tx.LockInodes(dir, inode);
            CheckDirectory(dir, dirGeneration, dirWhere);
            CheckAlive(inode, generation, $"inode {ino}");
            if (InodeCore.IsDirectory(inode.Core)) throw new XfsWriteException(WriteErrorKind.NotPermitted, $"link '{where}': inode {ino} is a directory");
            uint links = InodeCore.Nlink(inode.Core);
            if (links == 0) throw new XfsWriteException(WriteErrorKind.NotFound, $"link '{where}': inode {ino} has no links left");
            if (links >= MaxLinks) throw new XfsWriteException(WriteErrorKind.TooManyLinks, $"link '{where}': inode {ino} has {links} links, the most XFS allows");
            var editor = new DirectoryEditor(tx, dir, Reader, dirWhere);
            if (editor.Find(name) is not null) throw new XfsWriteException(WriteErrorKind.Exists, $"'{where}' already exists");
            var now = DateTimeOffset.UtcNow;
            editor.Add(name, ino, DirectoryFormat.FileTypeOfMode(new Dinode(inode.Core).Mode), now);
            InodeCore.SetNlink(inode.Core, links + 1);
            InodeCore.SetTime(inode.Core, InodeCore.OffCtime, now);
            tx.LogInode(inode);
            return InodeAttributeFields.Read(ino, inode.Core, Engine.Geometry.BlockSize);
        });
    }

    /// <summary>
    /// The online link count repair's fix of one directory entry it found wrong: an entry naming an inode that is not
    /// in use is removed (as xfs_repair clears it), one whose file type is not its inode's is given the inode's ('.' and
    /// '..' included: only their file type). Checked
    /// again under the locks of the directory and the inode; an entry a writer changed or removed meanwhile is settled.
    /// False, with why, when it cannot be fixed (the named inode does not read).
    /// </summary>
    internal bool RepairDirectoryEntry(ulong dirIno, byte[] name, ulong ino, out string? why)
    {
        if (!TryGetRepairPair(dirIno, ino, out IncoreInode? dir, out IncoreInode? target, out why))
        {
            return false;
        }
        Engine.Execute($"scrub repair directory {dirIno} entry '{DirectoryFormat.Show(name)}'", tx =>
        {
            tx.LockInodes(dir, target);
            if (new Dinode(dir.Core).IsFree || !InodeCore.IsDirectory(dir.Core)) return;
            var editor = new DirectoryEditor(tx, dir, Reader, $"directory {dirIno}");
            if (DirectoryFormat.IsDot(name) || DirectoryFormat.IsDotDot(name))
            {
                // Only the file type of '.' or '..' (block, leaf, node directories) is set: from the mode of the
                // inode it names, still the one it named when found.
                var (parent, _, _) = Reader.ReadAll(dirIno, dir.Core, Engine.ReadMetadataBlocks, $"directory {dirIno}", out var dots);
                if (dots is not { } t || (DirectoryFormat.IsDot(name) ? dirIno : parent) != ino) return;
                var named = new Dinode(target.Core);
                byte want = DirectoryFormat.FileTypeOfMode(named.Mode);
                if (!named.IsFree && (DirectoryFormat.IsDot(name) ? t.Dot : t.DotDot) != want) editor.Replace(name, ino, want, DateTimeOffset.UtcNow);
                return;
            }
            if (editor.Find(name) is not { } entry || entry.Ino != ino) return;
            var d = new Dinode(target.Core);
            if (d.IsFree)
            {
                editor.Remove(name, DateTimeOffset.UtcNow);
                return;
            }
            byte type = DirectoryFormat.FileTypeOfMode(d.Mode);
            if (entry.FileType != type) editor.Replace(name, ino, type, DateTimeOffset.UtcNow);
        });
        return true;
    }

    /// <summary>
    /// Removes the entry <paramref name="name"/> of directory <paramref name="dirIno"/> when it still names
    /// <paramref name="ino"/> (a repair of the tree's shape: xfs_repair's phase 6 junks such an entry), in one
    /// transaction under the locks of both; the named inode's link count is left to the link count repair, which
    /// sees the removal through the directory hooks. True when removed or already gone.
    /// </summary>
    internal bool RemoveEntryNaming(ulong dirIno, byte[] name, ulong ino, string what, out string? why)
    {
        ArgumentNullException.ThrowIfNull(name);
        if (!TryGetRepairPair(dirIno, ino, out IncoreInode? dir, out IncoreInode? target, out why))
        {
            return false;
        }
        Engine.Execute(what, tx =>
        {
            tx.LockInodes(dir, target);
            if (new Dinode(dir.Core).IsFree || !InodeCore.IsDirectory(dir.Core)) return;
            var editor = new DirectoryEditor(tx, dir, Reader, $"directory {dirIno}");
            if (editor.Find(name) is not { } entry || entry.Ino != ino) return;
            editor.Remove(name, DateTimeOffset.UtcNow);
        });
        return true;
    }

    /// <summary>The in-core inodes of a directory and of the inode one of its entries names, for an entry repair;
    /// false, with why, when either does not read.</summary>
    private bool TryGetRepairPair(ulong dirIno, ulong ino, [System.Diagnostics.CodeAnalysis.NotNullWhen(true)] out IncoreInode? dir,
        [System.Diagnostics.CodeAnalysis.NotNullWhen(true)] out IncoreInode? target, out string? why)
    {
        dir = target = null;
        why = null;
        try
        {
            dir = Engine.GetInode(dirIno);
            target = Engine.GetInode(ino);
            return true;
        }
        catch (XfsWriteException e) when (e.Kind is WriteErrorKind.Corrupt or WriteErrorKind.NotFound)
        {
            dir = target = null;
            why = $"not repaired: {e.Message}";
            return false;
        }
    }
}
