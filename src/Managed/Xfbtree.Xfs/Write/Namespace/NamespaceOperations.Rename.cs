using Xfbtree.Xfs.Directories;
using Xfbtree.Xfs.Format;
using Xfbtree.Xfs.Write.Engine;

namespace Xfbtree.Xfs.Write.Namespace;

/// <summary>renameat2 flags.</summary>
[Flags]
public enum RenameFlags
{
    /// <summary>Replace an existing target (a file by a non-directory, an empty directory by a directory).</summary>
    None = 0,
    /// <summary>RENAME_NOREPLACE: EEXIST when the target exists.</summary>
    NoReplace = 1,
    /// <summary>RENAME_EXCHANGE: swap the two names (both must exist).</summary>
    Exchange = 2,
    /// <summary>RENAME_WHITEOUT: the source name is left naming a whiteout, a new character device 0:0 with no
    /// permission bits, made in the rename's transaction (overlay filesystems use it; not with Exchange).</summary>
    Whiteout = 4,
}

internal sealed partial class NamespaceOperations
{
    /// <summary>Held by every rename between two directories (the kernel's s_vfs_rename_mutex): the ancestry check
    /// (a directory is not moved under itself) stays true until the move commits, since only such renames change a
    /// directory's parent. Taken before any inode lock. The engine's, shared by every instance on it.</summary>
    object _crossDirectoryRename => Engine.CrossDirectoryRenameLock;

    /// <summary>The cross-directory rename lock (the engine's): while it is held no directory changes parent.</summary>
    internal object CrossDirectoryRenameLock => _crossDirectoryRename;

    /// <summary>
    /// renameat2: moves <paramref name="srcName"/> of <paramref name="srcDir"/> to <paramref name="dstName"/> of
    /// <paramref name="dstDir"/>, in one transaction, with the kernel's checks and link-count rules (xfs_rename,
    /// xfs_cross_rename): an existing target is replaced (a non-directory by a non-directory, an empty directory by a
    /// directory; EISDIR, ENOTDIR, ENOTEMPTY otherwise) and loses its link (freed at 0 unless held); a directory moved
    /// to another parent gets its '..' rewritten, the old parent loses a link and the new one gains one (EMLINK at
    /// the most); moving a directory under itself is EINVAL; a target that is an ancestor of the source ENOTEMPTY;
    /// '.' or '..' EBUSY; NOREPLACE with an existing target EEXIST; EXCHANGE swaps (ENOENT without a target); both
    /// flags EINVAL. Renaming a name onto another name of the same inode does nothing, as the kernel does.
    /// WHITEOUT (with or without NOREPLACE; EINVAL with EXCHANGE) leaves a whiteout under the source name, owned by
    /// 0:0 here (see the overload with an owner).
    /// </summary>
    public void Rename(ulong srcDir, ReadOnlySpan<byte> srcName, ulong dstDir, ReadOnlySpan<byte> dstName, RenameFlags flags = RenameFlags.None)
        => RenameCore(srcDir, null, srcName.ToArray(), dstDir, null, dstName.ToArray(), flags, Where(srcDir, srcName), Where(dstDir, dstName));

    /// <summary>As <see cref="Rename(ulong, ReadOnlySpan{byte}, ulong, ReadOnlySpan{byte}, RenameFlags)"/>; a whiteout
    /// is owned by <paramref name="whiteoutUid"/>:<paramref name="whiteoutGid"/> (the caller's, as the kernel's
    /// whiteout inode; the group of a set-group-ID destination directory wins).</summary>
    public void Rename(ulong srcDir, ReadOnlySpan<byte> srcName, ulong dstDir, ReadOnlySpan<byte> dstName, RenameFlags flags, uint whiteoutUid, uint whiteoutGid)
        => RenameCore(srcDir, null, srcName.ToArray(), dstDir, null, dstName.ToArray(), flags, Where(srcDir, srcName), Where(dstDir, dstName), whiteoutUid, whiteoutGid);

    /// <summary>rename by path (see <see cref="Rename(ulong, ReadOnlySpan{byte}, ulong, ReadOnlySpan{byte}, RenameFlags)"/>).</summary>
    public void Rename(string source, string destination, RenameFlags flags = RenameFlags.None)
    {
        var (srcParent, srcName) = SplitPath(source);
        var (dstParent, dstName) = SplitPath(destination);
        if (srcName is null || dstName is null) throw new XfsWriteException(WriteErrorKind.Busy, $"rename '{source}' '{destination}': the root cannot be renamed or replaced");
        var s = Resolve(srcParent).Handle;
        var d = Resolve(dstParent).Handle;
        RenameCore(s.Ino, s.Generation, srcName, d.Ino, d.Generation, dstName, flags, source, destination);
    }

    void RenameCore(ulong srcDirIno, uint? srcGen, byte[] srcName, ulong dstDirIno, uint? dstGen, byte[] dstName, RenameFlags flags,
        string srcWhere, string dstWhere, uint whiteoutUid = 0, uint whiteoutGid = 0)
    {
        if ((flags & ~(RenameFlags.NoReplace | RenameFlags.Exchange | RenameFlags.Whiteout)) != 0
            || ((flags & RenameFlags.Exchange) != 0 && flags != RenameFlags.Exchange))
            throw new XfsWriteException(WriteErrorKind.InvalidArgument, $"rename '{srcWhere}': flags {flags} are not valid together");
        CheckName(srcName, srcWhere);
        CheckName(dstName, dstWhere);
        if (IsDotOrDotDot(srcName)) throw new XfsWriteException(WriteErrorKind.Busy, $"rename '{srcWhere}': '.' and '..' cannot be renamed");
        if (IsDotOrDotDot(dstName))
            throw new XfsWriteException((flags & RenameFlags.NoReplace) != 0 ? WriteErrorKind.Exists : WriteErrorKind.Busy, $"rename to '{dstWhere}': '.' and '..' cannot be replaced");
        var whiteoutOwner = (whiteoutUid, whiteoutGid);
        if (srcDirIno == dstDirIno) RenameAttempts(srcDirIno, srcGen, srcName, dstDirIno, dstGen, dstName, flags, srcWhere, dstWhere, whiteoutOwner);
        else
        {
            lock (_crossDirectoryRename) RenameAttempts(srcDirIno, srcGen, srcName, dstDirIno, dstGen, dstName, flags, srcWhere, dstWhere, whiteoutOwner);
        }
    }

    static bool IsDotOrDotDot(ReadOnlySpan<byte> name) => DirectoryFormat.IsDot(name) || DirectoryFormat.IsDotDot(name);

    void RenameAttempts(ulong srcDirIno, uint? srcGen, byte[] srcName, ulong dstDirIno, uint? dstGen, byte[] dstName, RenameFlags flags,
        string srcWhere, string dstWhere, (uint Uid, uint Gid) whiteoutOwner)
    {
        bool exchange = flags == RenameFlags.Exchange;
        string srcDirWhere = ParentOf(srcWhere), dstDirWhere = ParentOf(dstWhere);
        for (int attempt = 0; ; attempt++)
        {
            ulong srcIno = FindUnlocked(srcDirIno, srcGen, srcName, srcDirWhere)
                ?? throw new XfsWriteException(WriteErrorKind.NotFound, $"'{srcWhere}' does not exist");
            ulong? dstIno = FindUnlocked(dstDirIno, dstGen, dstName, dstDirWhere);
            if (dstIno is null && exchange) throw new XfsWriteException(WriteErrorKind.NotFound, $"'{dstWhere}' does not exist");
            if (dstIno is not null && (flags & RenameFlags.NoReplace) != 0) throw new XfsWriteException(WriteErrorKind.Exists, $"'{dstWhere}' exists");
            if (dstIno == srcIno) return; // two names of one inode: nothing to do (vfs_rename)
            if (srcDirIno != dstDirIno)
            {
                // Under the cross-directory rename lock no directory changes parent: the ancestries are stable.
                if (srcIno == dstDirIno || AncestorsOf(dstDirIno).Contains(srcIno))
                    throw new XfsWriteException(WriteErrorKind.InvalidArgument, $"rename '{srcWhere}' '{dstWhere}': a directory cannot move under itself");
                if (dstIno is ulong t && AncestorsOf(srcDirIno).Contains(t))
                    throw new XfsWriteException(exchange ? WriteErrorKind.InvalidArgument : WriteErrorKind.NotEmpty,
                        $"rename '{srcWhere}' '{dstWhere}': the target is an ancestor of the source");
            }
            try
            {
                Engine.Execute($"rename {srcWhere} {dstWhere}", tx =>
                    RenameLocked(tx, srcDirIno, srcGen, srcName, srcIno, dstDirIno, dstGen, dstName, dstIno, flags, srcWhere, dstWhere, whiteoutOwner));
                return;
            }
            catch (NameMovedException)
            {
                if (attempt >= MaxRestarts) throw KeptMoving(srcWhere);
            }
        }
    }

    /// <summary>The directories from <paramref name="dirIno"/> up to the root (both included), read through '..'
    /// one directory lock at a time.</summary>
    HashSet<ulong> AncestorsOf(ulong dirIno)
    {
        var seen = new HashSet<ulong>();
        ulong ino = dirIno;
        while (seen.Add(ino))
        {
            if (ino == RootIno) break;
            ulong? parent = FindUnlocked(ino, null, ".."u8, $"inode {ino}");
            if (parent is not ulong p) break;
            ino = p;
        }
        if (seen.Count > 1 << 16) throw new XfsWriteException(WriteErrorKind.Corrupt, $"inode {dirIno}: its '..' chain does not reach the root");
        return seen;
    }

    void RenameLocked(WriteTransaction tx, ulong srcDirIno, uint? srcGen, byte[] srcName, ulong srcIno, ulong dstDirIno, uint? dstGen,
        byte[] dstName, ulong? dstIno, RenameFlags flags, string srcWhere, string dstWhere, (uint Uid, uint Gid) whiteoutOwner)
    {
        bool sameDir = srcDirIno == dstDirIno, exchange = flags == RenameFlags.Exchange;
        var srcDir = Engine.GetInode(srcDirIno);
        var dstDir = sameDir ? srcDir : Engine.GetInode(dstDirIno);
        var src = Engine.GetInode(srcIno);
        var dst = dstIno is ulong di ? Engine.GetInode(di) : null;
        var toLock = new List<IncoreInode> { srcDir, src };
        if (!sameDir) toLock.Add(dstDir);
        if (dst is not null) toLock.Add(dst);
        tx.LockInodes(toLock.Distinct().ToArray());
        string srcDirWhere = ParentOf(srcWhere), dstDirWhere = ParentOf(dstWhere);
        CheckDirectory(srcDir, srcGen, srcDirWhere);
        if (!sameDir) CheckDirectory(dstDir, dstGen, dstDirWhere);
        // An editor reads the directory's format when made: a fresh one for each change, since a change may
        // convert the directory (shortform to block).
        DirectoryEditor SrcEditor() => new(tx, srcDir, Reader, srcDirWhere);
        DirectoryEditor DstEditor() => new(tx, dstDir, Reader, dstDirWhere);
        // The names may have moved since the unlocked lookups: start over then.
        if (SrcEditor().Find(srcName)?.Ino != srcIno || DstEditor().Find(dstName)?.Ino != dstIno) throw new NameMovedException();
        if (new Dinode(src.Core).IsFree) throw new XfsWriteException(WriteErrorKind.Corrupt, $"'{srcWhere}' names inode {srcIno}, which is free");
        if (dst is not null && new Dinode(dst.Core).IsFree) throw new XfsWriteException(WriteErrorKind.Corrupt, $"'{dstWhere}' names inode {dst.Ino}, which is free");

        bool srcIsDir = InodeCore.IsDirectory(src.Core);
        bool dstIsDir = dst is not null && InodeCore.IsDirectory(dst.Core);
        var now = DateTimeOffset.UtcNow;
        byte srcType = DirectoryFormat.FileTypeOfMode(new Dinode(src.Core).Mode);
        if (exchange)
        {
            byte dstType = DirectoryFormat.FileTypeOfMode(new Dinode(dst!.Core).Mode);
            if (!sameDir && srcIsDir != dstIsDir)
            {
                // The directory of the two changes parent: one parent loses a link, the other gains one.
                var gains = srcIsDir ? dstDir : srcDir;
                if (InodeCore.Nlink(gains.Core) >= MaxLinks)
                    throw new XfsWriteException(WriteErrorKind.TooManyLinks, $"rename: '{(srcIsDir ? dstDirWhere : srcDirWhere)}' has the most links XFS allows");
            }
            ReplaceEntry(SrcEditor, srcName, dst.Ino, dstType, now);
            ReplaceEntry(DstEditor, dstName, srcIno, srcType, now);
            if (!sameDir)
            {
                if (srcIsDir) SetParent(tx, src, srcDirIno, dstDirIno, srcWhere);
                if (dstIsDir) SetParent(tx, dst, dstDirIno, srcDirIno, dstWhere);
                if (srcIsDir != dstIsDir)
                {
                    var (loses, gains) = srcIsDir ? (srcDir, dstDir) : (dstDir, srcDir);
                    InodeCore.SetNlink(loses.Core, InodeCore.Nlink(loses.Core) - 1);
                    InodeCore.SetNlink(gains.Core, InodeCore.Nlink(gains.Core) + 1);
                }
            }
            InodeCore.SetTime(src.Core, InodeCore.OffCtime, now);
            InodeCore.SetTime(dst.Core, InodeCore.OffCtime, now);
            foreach (var i in new[] { src, dst, srcDir, dstDir }) tx.LogInode(i);
            return;
        }

        if (dst is not null)
        {
            if (srcIsDir && !dstIsDir) throw new XfsWriteException(WriteErrorKind.NotDirectory, $"rename '{srcWhere}' '{dstWhere}': the target is not a directory");
            if (!srcIsDir && dstIsDir) throw new XfsWriteException(WriteErrorKind.IsDirectory, $"rename '{srcWhere}' '{dstWhere}': the target is a directory");
            if (dstIsDir) CheckRemovable(tx, dstDir, dst, RemoveKind.Directory, dstWhere);
        }
        else if (srcIsDir && !sameDir && InodeCore.Nlink(dstDir.Core) >= MaxLinks)
        {
            throw new XfsWriteException(WriteErrorKind.TooManyLinks, $"rename: '{dstDirWhere}' has the most links XFS allows");
        }

        // RENAME_WHITEOUT (xfs_rename_alloc_whiteout): the whiteout inode first, allocated near the target directory;
        // its name is the source name, replaced in place at the end instead of removed.
        IncoreInode? whiteout = (flags & RenameFlags.Whiteout) != 0 ? NewWhiteout(tx, dstDir, srcDirIno, whiteoutOwner, now) : null;

        // xfs_rename: the target name first (added, or replaced with the target losing its link), then '..', the
        // parents' link counts, and the source name removed last.
        if (dst is null)
        {
            DstEditor().Add(dstName, srcIno, srcType, now);
            if (srcIsDir && !sameDir) InodeCore.SetNlink(dstDir.Core, InodeCore.Nlink(dstDir.Core) + 1);
        }
        else
        {
            ReplaceEntry(DstEditor, dstName, srcIno, srcType, now);
        }
        if (srcIsDir && !sameDir) SetParent(tx, src, srcDirIno, dstDirIno, srcWhere);
        InodeCore.SetTime(src.Core, InodeCore.OffCtime, now);
        if (srcIsDir && (!sameDir || dst is not null)) InodeCore.SetNlink(srcDir.Core, InodeCore.Nlink(srcDir.Core) - 1);
        if (whiteout is null) SrcEditor().Remove(srcName, now);
        else ReplaceEntry(SrcEditor, srcName, whiteout.Ino, DirectoryFormat.FtCharDevice, now);
        tx.LogInode(src);
        tx.LogInode(srcDir);
        tx.LogInode(dstDir);
        if (dst is not null)
        {
            // The replaced inode loses the target name (a directory: both its links; its parent's count was
            // settled above, as the moved directory's '..' takes the place of its own).
            uint links = InodeCore.Nlink(dst.Core);
            if (links == 0) throw new XfsWriteException(WriteErrorKind.Corrupt, $"'{dstWhere}': inode {dst.Ino} has link count 0");
            InodeCore.SetNlink(dst.Core, dstIsDir ? 0 : links - 1);
            if (dstIsDir) QueueDirectoryGone(tx, dst.Ino, dstDirIno);
            InodeCore.SetTime(dst.Core, InodeCore.OffCtime, now);
            tx.LogInode(dst);
            if (InodeCore.Nlink(dst.Core) == 0) ReleaseLastLink(tx, dst, dstWhere);
        }
    }

    /// <summary>A new whiteout inode (a character device 0:0, no permission bits, one link: the name it is about to
    /// get) allocated near <paramref name="near"/>, locked and logged in <paramref name="tx"/>.</summary>
    IncoreInode NewWhiteout(WriteTransaction tx, IncoreInode near, ulong parentIno, (uint Uid, uint Gid) owner, DateTimeOffset now)
    {
        ulong ino = _allocator.Allocate(tx, near.Ino);
        var inode = Engine.GetInode(ino);
        tx.LockInodes(inode); // just allocated: nobody else can reach it, so the order does not matter
        if (!new Dinode(inode.Core).IsFree)
            throw new XfsWriteException(WriteErrorKind.Corrupt, $"inode {ino} is free in the inode btree but in use on disk");
        InodeCore.FormatNew(inode.Core, Engine.Image.Superblock, 0x2000, 1, parentIno, now);
        InodeAttributeFields.SetUid(inode.Core, owner.Uid);
        // A set-group-ID directory gives its group (inode_init_owner on the kernel's whiteout, made in the target directory).
        InodeAttributeFields.SetGid(inode.Core, (new Dinode(near.Core).Mode & SetGroupId) != 0 ? InodeAttributeFields.Gid(near.Core) : owner.Gid);
        SpecialFiles.FormatDevice(inode.Core, 0);
        tx.LogInode(inode);
        return inode;
    }

    /// <summary>Points an existing entry at another inode and type; the entry keeps its place and cookie.</summary>
    static void ReplaceEntry(Func<DirectoryEditor> editor, byte[] name, ulong ino, byte fileType, DateTimeOffset now)
        => editor().Replace(name, ino, fileType, now);

    /// <summary>Points a moved directory's '..' at its new parent. As xfs_rename, only its ctime changes (the
    /// caller sets it): the mtime the entry edit set is put back.</summary>
    void SetParent(WriteTransaction tx, IncoreInode dir, ulong oldParent, ulong parent, string where)
    {
        tx.QueueDirectoryUpdate(dir.Ino, oldParent, -1, DirectoryEntryKind.DotDot);
        tx.QueueDirectoryUpdate(dir.Ino, parent, +1, DirectoryEntryKind.DotDot);
        var mtime = InodeAttributeFields.GetTime(dir.Core, InodeCore.OffMtime);
        new DirectoryEditor(tx, dir, Reader, where).Replace([(byte)'.', (byte)'.'], parent, DirectoryFormat.FtDirectory, DateTimeOffset.UtcNow);
        InodeAttributeFields.SetTime(dir.Core, InodeCore.OffMtime, mtime);
        tx.LogInode(dir);
    }
}
