using Xfbtree.Xfs.Directories;
using Xfbtree.Xfs.Format;
using Xfbtree.Xfs.Write.Engine;
using Xfbtree.Xfs.Write.Files;

namespace Xfbtree.Xfs.Write.Namespace;

/// <summary>Which fields a <see cref="SetAttrRequest"/> changes (FUSE's FATTR_* / the kernel's ATTR_*).</summary>
[Flags]
internal enum SetAttrMask
{
    /// <summary>Nothing.</summary>
    None = 0,
    /// <summary>The permission bits (mode &amp; 07777; the type never changes).</summary>
    Mode = 1,
    /// <summary>The owner.</summary>
    Uid = 2,
    /// <summary>The group.</summary>
    Gid = 4,
    /// <summary>The size of a regular file (truncate or extend).</summary>
    Size = 8,
    /// <summary>atime to <see cref="SetAttrRequest.Atime"/>.</summary>
    Atime = 16,
    /// <summary>mtime to <see cref="SetAttrRequest.Mtime"/>.</summary>
    Mtime = 32,
    /// <summary>ctime to <see cref="SetAttrRequest.Ctime"/> (otherwise a change sets it to now).</summary>
    Ctime = 64,
    /// <summary>atime to now (UTIME_NOW).</summary>
    AtimeNow = 128,
    /// <summary>mtime to now (UTIME_NOW).</summary>
    MtimeNow = 256,
    /// <summary>The caller may not keep set-user-ID and set-group-ID (FUSE's FATTR_KILL_SUIDGID; the kernel's
    /// ATTR_KILL_SUID | ATTR_KILL_SGID for a caller without CAP_FSETID): a regular file loses set-user-ID, and
    /// set-group-ID when group-execute is set (with a size: in the truncate's first step).</summary>
    KillSuidGid = 512,
}

/// <summary>A setattr: the fields named by <see cref="Mask"/> are changed, the others ignored (UTIME_OMIT is a
/// time whose bit is absent).</summary>
/// <param name="Mask">What changes.</param>
/// <param name="Mode">New permission bits (with <see cref="SetAttrMask.Mode"/>).</param>
/// <param name="Uid">New owner.</param>
/// <param name="Gid">New group.</param>
/// <param name="Size">New size.</param>
/// <param name="Atime">New atime.</param>
/// <param name="Mtime">New mtime.</param>
/// <param name="Ctime">New ctime.</param>
internal readonly record struct SetAttrRequest(SetAttrMask Mask, int Mode = 0, uint Uid = 0, uint Gid = 0, long Size = 0,
    InodeTime Atime = default, InodeTime Mtime = default, InodeTime Ctime = default);

internal sealed partial class NamespaceOperations
{
    /// <summary>
    /// setattr (chmod, chown, truncate, utimens): the fields <paramref name="request"/> names change, ctime becomes
    /// now (or the given ctime) whenever anything changes; a size is set first, as the kernel does, through the file
    /// operations' truncate (blocks past the new end freed or the tail zeroed, mtime and ctime now), then the other
    /// fields in one transaction; an empty mask changes nothing.
    /// Times are clamped to what the inode's encoding holds (bigtime or not), as the kernel clamps them. EISDIR for
    /// a size on a directory, EINVAL for a size on anything else that is not a regular file or for a negative size.
    /// The values are applied as given (as a FUSE server receives them: the kernel has already decided what chown
    /// clears); see <see cref="Chown"/> for chown(2)'s own rules.
    /// </summary>
    public InodeAttributes SetAttr(ulong ino, in SetAttrRequest request) => SetAttrCore(ino, null, request);

    /// <summary>As <see cref="SetAttr(ulong, in SetAttrRequest)"/> through a handle (ESTALE when it was freed since).</summary>
    public InodeAttributes SetAttr(InodeHandle handle, in SetAttrRequest request) => SetAttrCore(handle.Ino, handle.Generation, request);

    InodeAttributes SetAttrCore(ulong ino, uint? generation, SetAttrRequest r)
    {
        const SetAttrMask all = SetAttrMask.Mode | SetAttrMask.Uid | SetAttrMask.Gid | SetAttrMask.Size | SetAttrMask.Atime
            | SetAttrMask.Mtime | SetAttrMask.Ctime | SetAttrMask.AtimeNow | SetAttrMask.MtimeNow | SetAttrMask.KillSuidGid;
        string where = $"inode {ino}";
        if ((r.Mask & ~all) != 0) throw new XfsWriteException(WriteErrorKind.InvalidArgument, $"setattr {where}: unknown mask bits {r.Mask}");
        if ((r.Mask & SetAttrMask.Size) != 0 && r.Size < 0) throw new XfsWriteException(WriteErrorKind.InvalidArgument, $"setattr {where}: negative size {r.Size}");
        if ((r.Mask & SetAttrMask.Size) != 0 && r.Size > FileOperations.MaxFileSize) throw new XfsWriteException(WriteErrorKind.FileTooBig, $"setattr {where}: size {r.Size} is past the largest file");
        if (((r.Mask & SetAttrMask.Atime) != 0 && r.Atime.Nanoseconds > 999_999_999) || ((r.Mask & SetAttrMask.Mtime) != 0 && r.Mtime.Nanoseconds > 999_999_999))
            throw new XfsWriteException(WriteErrorKind.InvalidArgument, $"setattr {where}: nanoseconds past 999999999");
        var inode = Engine.GetInode(ino);
        if (r.Mask == SetAttrMask.None) return GetAttrCore(ino, generation);
        if ((r.Mask & SetAttrMask.Size) != 0)
        {
            // As the kernel (xfs_setattr_size apart from xfs_setattr_nonsize): the size first, through the file
            // operations' truncate (its own transactions: blocks past the new end are freed in bounded steps, mtime
            // and ctime set), then the other fields.
            int kind;
            using (Engine.LockInodeForRead(inode))
            {
                CheckAlive(inode, generation, where);
                kind = new Dinode(inode.Core).Mode & InodeCore.ModeTypeMask;
            }
            if (kind == InodeCore.ModeDirectory) throw new XfsWriteException(WriteErrorKind.IsDirectory, $"setattr {where}: a directory has no size to set");
            if (kind != InodeCore.ModeRegular) throw new XfsWriteException(WriteErrorKind.InvalidArgument, $"setattr {where}: only a regular file's size can be set");
            var flags = (r.Mask & SetAttrMask.KillSuidGid) != 0 ? FileWriteFlags.KillSuidGid : FileWriteFlags.None;
            Files.TruncateCore(ino, generation, r.Size, flags);
            r = r with { Mask = r.Mask & ~(SetAttrMask.Size | SetAttrMask.KillSuidGid) };
            if (r.Mask == SetAttrMask.None) return GetAttrCore(ino, generation);
        }
        return Engine.Execute($"setattr {where}", tx =>
        {
            tx.LockInodes(inode);
            CheckAlive(inode, generation, where);
            var c = inode.Core;
            var now = InodeTime.Now;
            int type = new Dinode(c).Mode & InodeCore.ModeTypeMask;
            if ((r.Mask & SetAttrMask.Mode) != 0) InodeAttributeFields.SetMode(c, (ushort)(type | (r.Mode & 0xFFF)));
            if ((r.Mask & SetAttrMask.Uid) != 0) InodeAttributeFields.SetUid(c, r.Uid);
            if ((r.Mask & SetAttrMask.Gid) != 0) InodeAttributeFields.SetGid(c, r.Gid);
            if ((r.Mask & SetAttrMask.KillSuidGid) != 0) InodeFields.KillSuidGid(c);
            if ((r.Mask & SetAttrMask.AtimeNow) != 0) InodeAttributeFields.SetTime(c, InodeCore.OffAtime, now);
            else if ((r.Mask & SetAttrMask.Atime) != 0) InodeAttributeFields.SetTime(c, InodeCore.OffAtime, r.Atime);
            if ((r.Mask & SetAttrMask.MtimeNow) != 0) InodeAttributeFields.SetTime(c, InodeCore.OffMtime, now);
            else if ((r.Mask & SetAttrMask.Mtime) != 0) InodeAttributeFields.SetTime(c, InodeCore.OffMtime, r.Mtime);
            InodeAttributeFields.SetTime(c, InodeCore.OffCtime, (r.Mask & SetAttrMask.Ctime) != 0 ? r.Ctime : now);
            tx.LogInode(inode);
            return InodeAttributeFields.Read(ino, c, Engine.Geometry.BlockSize);
        });
    }

    /// <summary>chmod(2) on what <paramref name="path"/> names (symlinks not followed): the permission bits.</summary>
    public InodeAttributes Chmod(string path, int mode)
    {
        var h = Resolve(path).Handle;
        return SetAttrCore(h.Ino, h.Generation, new SetAttrRequest(SetAttrMask.Mode, Mode: mode));
    }

    /// <summary>
    /// chown(2) (lchown: symlinks not followed) by path: a null id stays. As the kernel does for every caller, a
    /// change of owner or group of anything but a directory clears the set-user-ID bit, and the set-group-ID bit when
    /// the group-execute bit is set; ctime becomes now.
    /// </summary>
    public InodeAttributes Chown(string path, uint? uid, uint? gid)
    {
        for (int attempt = 0; ; attempt++)
        {
            var a = Resolve(path);
            var mask = (uid is null ? SetAttrMask.None : SetAttrMask.Uid) | (gid is null ? SetAttrMask.None : SetAttrMask.Gid);
            int mode = a.Mode & 0xFFF;
            if (mask != SetAttrMask.None && a.Type != InodeType.Directory)
            {
                int killed = mode & ~0x800;
                if ((mode & 0x8) != 0) killed &= ~0x400;
                if (killed != mode) { mask |= SetAttrMask.Mode; mode = killed; }
            }
            try
            {
                return SetAttrCore(a.Ino, a.Generation, new SetAttrRequest(mask, mode, uid ?? 0, gid ?? 0));
            }
            catch (XfsWriteException e) when (e.Kind == WriteErrorKind.Stale && attempt < MaxRestarts)
            {
            }
        }
    }

    /// <summary>utimensat(2) by path (AT_SYMLINK_NOFOLLOW): each time is a value, <see cref="UtimeNow"/> or null
    /// (UTIME_OMIT). Both omitted changes nothing, not even ctime.</summary>
    public InodeAttributes Utimes(string path, InodeTime? atime, InodeTime? mtime)
    {
        var mask = SetAttrMask.None;
        if (atime is InodeTime a) mask |= a == UtimeNow ? SetAttrMask.AtimeNow : SetAttrMask.Atime;
        if (mtime is InodeTime m) mask |= m == UtimeNow ? SetAttrMask.MtimeNow : SetAttrMask.Mtime;
        var h = Resolve(path).Handle;
        return SetAttrCore(h.Ino, h.Generation, new SetAttrRequest(mask, Atime: atime ?? default, Mtime: mtime ?? default));
    }

    /// <summary>The time value <see cref="Utimes"/> reads as "now" (UTIME_NOW: nanoseconds (1 &lt;&lt; 30) - 1).</summary>
    public static readonly InodeTime UtimeNow = new(0, (1u << 30) - 1);
}
