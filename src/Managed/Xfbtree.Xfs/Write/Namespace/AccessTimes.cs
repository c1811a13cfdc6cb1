using System.Buffers.Binary;
using Xfbtree.Xfs.Write.Engine;

namespace Xfbtree.Xfs.Write.Namespace;

/// <summary>
/// The access-time rule of reads (file data, readdir, readlink), as the kernel's touch_atime with the default
/// `relatime` (relatime_need_update): atime becomes now when it is not newer than mtime, not newer than ctime, or at
/// least a day old; never for an inode with the NOATIME flag (`chattr +A`), never with
/// <see cref="AccessTimeUpdates.None"/>. The reader decides under its read lock (no allocation, no transaction);
/// when an update is wanted it runs afterwards as one transaction that changes the inode core only (atime, not the
/// change counter, as the kernel's atime-only update), checking the rule again under the inode lock. Once atime is
/// past mtime and ctime, reads take no transaction until the next change or for a day.
/// </summary>
internal static class AccessTimes
{
    /// <summary>XFS_DIFLAG_NOATIME.</summary>
    const ushort FlagNoAtime = 0x40;
    const long SecondsPerDay = 24 * 60 * 60;

    /// <summary>True when a read of the inode whose core is <paramref name="core"/> (read-locked) should set its atime.</summary>
    public static bool Wanted(WriteEngine engine, ReadOnlySpan<byte> core)
        => engine.Options.AccessTimes == AccessTimeUpdates.Relatime && NeedsUpdate(core, InodeTime.Now);

    /// <summary>relatime_need_update for a core (in use, without NOATIME) at <paramref name="now"/>.</summary>
    internal static bool NeedsUpdate(ReadOnlySpan<byte> core, InodeTime now)
    {
        if (BinaryPrimitives.ReadUInt16BigEndian(core[InodeCore.OffMode..]) == 0) return false;
        if ((BinaryPrimitives.ReadUInt16BigEndian(core[InodeCore.OffFlags..]) & FlagNoAtime) != 0) return false;
        var atime = InodeAttributeFields.GetTime(core, InodeCore.OffAtime);
        if (Compare(InodeAttributeFields.GetTime(core, InodeCore.OffMtime), atime) >= 0) return true;
        if (Compare(InodeAttributeFields.GetTime(core, InodeCore.OffCtime), atime) >= 0) return true;
        return now.Seconds - atime.Seconds >= SecondsPerDay;
    }

    static int Compare(InodeTime a, InodeTime b) => a.Seconds != b.Seconds ? a.Seconds.CompareTo(b.Seconds) : a.Nanoseconds.CompareTo(b.Nanoseconds);

    /// <summary>Sets the atime of <paramref name="inode"/> to now in its own transaction if the rule still wants it
    /// (the incarnation <paramref name="generation"/> names, when given). A failure is not the read's: as the kernel
    /// ignores a failed atime update, nothing is thrown for it (the engine's own failure state stays for the next call).</summary>
    public static void Update(WriteEngine engine, IncoreInode inode, uint? generation)
    {
        if (WriteEngine.Current is not null) return; // a read inside a transaction: its caller's business
        try
        {
            engine.Execute($"atime inode {inode.Ino}", tx =>
            {
                tx.LockInodes(inode);
                var core = inode.Core;
                if (generation is uint g && InodeAttributeFields.Generation(core) != g) return;
                var now = InodeTime.Now;
                if (!NeedsUpdate(core, now)) return;
                InodeAttributeFields.SetTime(core, InodeCore.OffAtime, now);
                tx.LogInode(inode);
                tx.TimesOnly = true;
            });
        }
        catch (XfsWriteException)
        {
            // touch_atime's errors are dropped too: the data was read.
        }
    }
}
