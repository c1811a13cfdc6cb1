using System.Buffers.Binary;
using Xfbtree.Xfs.Format;

namespace Xfbtree.Xfs.Write.Files;

/// <summary>
/// Reads and writes the v3 dinode fields the file operations change, on the raw inode bytes
/// (docs/xfs-format.md §6.1). The caller holds the inode lock; every setter leaves the CRC to the commit.
/// </summary>
internal static class InodeFields
{
    public const ushort FlagPrealloc = 0x2;
    public const ulong Flag2Reflink = Dinode.Flag2Reflink;
    public const ulong Flag2Bigtime = 0x8;
    public const ulong Flag2Nrext64 = Dinode.Flag2Nrext64;

    public static ushort Mode(byte[] core) => BinaryPrimitives.ReadUInt16BigEndian(core.AsSpan(2));
    public static ForkFormat Format(byte[] core, bool attr) => (ForkFormat)core[attr ? 83 : 5];
    public static void SetFormat(byte[] core, bool attr, ForkFormat f) => core[attr ? 83 : 5] = (byte)f;
    public static byte ForkOffset(byte[] core) => core[82];
    public static ushort Flags(byte[] core) => BinaryPrimitives.ReadUInt16BigEndian(core.AsSpan(90));
    public static void SetFlags(byte[] core, ushort v) => BinaryPrimitives.WriteUInt16BigEndian(core.AsSpan(90), v);
    public static ulong Flags2(byte[] core) => BinaryPrimitives.ReadUInt64BigEndian(core.AsSpan(120));
    public static void SetFlags2(byte[] core, ulong v) => BinaryPrimitives.WriteUInt64BigEndian(core.AsSpan(120), v);
    public static bool IsReflink(byte[] core) => (Flags2(core) & Flag2Reflink) != 0;
    public static bool HasNrext64(byte[] core) => (Flags2(core) & Flag2Nrext64) != 0;

    public static long Size(byte[] core) => (long)BinaryPrimitives.ReadUInt64BigEndian(core.AsSpan(56));
    public static void SetSize(byte[] core, long v) => BinaryPrimitives.WriteUInt64BigEndian(core.AsSpan(56), (ulong)v);
    public static ulong NBlocks(byte[] core) => BinaryPrimitives.ReadUInt64BigEndian(core.AsSpan(64));
    public static void SetNBlocks(byte[] core, ulong v) => BinaryPrimitives.WriteUInt64BigEndian(core.AsSpan(64), v);

    /// <summary>Fork area: data fork at 176 (forkoff*8 bytes, or the whole literal area), attr fork after it.</summary>
    public static Span<byte> Fork(byte[] core, bool attr)
    {
        int literal = core.Length - Dinode.CoreSize;
        int forkoff = ForkOffset(core) * 8;
        if (attr) return forkoff == 0 ? Span<byte>.Empty : core.AsSpan(Dinode.CoreSize + forkoff, literal - forkoff);
        return core.AsSpan(Dinode.CoreSize, forkoff != 0 ? forkoff : literal);
    }

    /// <summary>Extent count of a fork (NREXT64: data u64 @24, attr u32 @76; else data u32 @76, attr u16 @80).</summary>
    public static ulong Extents(byte[] core, bool attr)
    {
        var b = core.AsSpan();
        if (HasNrext64(core)) return attr ? BinaryPrimitives.ReadUInt32BigEndian(b[76..]) : BinaryPrimitives.ReadUInt64BigEndian(b[24..]);
        return attr ? BinaryPrimitives.ReadUInt16BigEndian(b[80..]) : BinaryPrimitives.ReadUInt32BigEndian(b[76..]);
    }

    /// <summary>Largest extent count the fork's counter holds (the kernel's xfs_iext_max_nextents).</summary>
    public static ulong MaxExtents(byte[] core, bool attr)
        => HasNrext64(core) ? (attr ? uint.MaxValue : (1UL << 48) - 1) : (attr ? (ulong)short.MaxValue : int.MaxValue);

    public static void SetExtents(byte[] core, bool attr, ulong n)
    {
        if (n > MaxExtents(core, attr)) throw new XfsWriteException(WriteErrorKind.NoSpace, $"{n} extents overflow the {(attr ? "attr" : "data")} fork's extent counter");
        var b = core.AsSpan();
        if (HasNrext64(core))
        {
            if (attr) BinaryPrimitives.WriteUInt32BigEndian(b[76..], (uint)n);
            else BinaryPrimitives.WriteUInt64BigEndian(b[24..], n);
        }
        else if (attr)
        {
            BinaryPrimitives.WriteUInt16BigEndian(b[80..], (ushort)n);
        }
        else
        {
            BinaryPrimitives.WriteUInt32BigEndian(b[76..], (uint)n);
        }
    }

    /// <summary>
    /// What the kernel's <c>file_remove_privs</c> / ATTR_KILL_SUID|ATTR_KILL_SGID do when the caller may not keep them
    /// (no CAP_FSETID): the inode loses set-user-ID, and set-group-ID when group-execute is set (set-group-ID
    /// without it marks mandatory locking and stays). A directory keeps both (its set-group-ID is inherited by new
    /// entries). A write or truncate reaches only regular files; a chown asks it for every other type too (FUSE's
    /// FATTR_KILL_SUIDGID on any non-directory, as the kernel's chown_common). True when the mode changed.
    /// </summary>
    public static bool KillSuidGid(byte[] core)
    {
        ushort mode = Mode(core);
        if ((mode & 0xF000) == 0x4000) return false;
        int killed = mode & ~0x800;
        if ((mode & 0x8) != 0) killed &= ~0x400;
        if (killed == mode) return false;
        BinaryPrimitives.WriteUInt16BigEndian(core.AsSpan(2), (ushort)killed);
        return true;
    }

    /// <summary>Sets mtime and ctime to <paramref name="now"/> (bigtime or classic encoding) and bumps the change counter.</summary>
    public static void Touch(byte[] core, DateTimeOffset now, bool modify = true)
    {
        ulong ts = EncodeTime(core, now);
        if (modify) BinaryPrimitives.WriteUInt64BigEndian(core.AsSpan(40), ts);
        BinaryPrimitives.WriteUInt64BigEndian(core.AsSpan(48), ts);
        ulong changes = BinaryPrimitives.ReadUInt64BigEndian(core.AsSpan(104));
        BinaryPrimitives.WriteUInt64BigEndian(core.AsSpan(104), changes + 1);
    }

    static ulong EncodeTime(byte[] core, DateTimeOffset now)
    {
        long ticks = now.UtcTicks - DateTimeOffset.UnixEpoch.UtcTicks;
        long seconds = Math.DivRem(ticks, TimeSpan.TicksPerSecond, out long rest);
        if (rest < 0) { seconds--; rest += TimeSpan.TicksPerSecond; }
        ulong nanos = (ulong)rest * 100;
        if ((Flags2(core) & Flag2Bigtime) != 0)
        {
            // bigtime: nanoseconds since 1901-12-13 (the classic epoch's minimum, -2^31 s).
            return ((ulong)(seconds + (1L << 31)) * 1_000_000_000UL) + nanos;
        }
        seconds = Math.Clamp(seconds, int.MinValue, int.MaxValue);
        return ((ulong)(uint)(int)seconds << 32) | nanos;
    }
}
