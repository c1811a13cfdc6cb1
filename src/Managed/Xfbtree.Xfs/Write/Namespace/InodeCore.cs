using System.Buffers.Binary;
using Xfbtree.Xfs.Directories;
using Xfbtree.Xfs.Format;

namespace Xfbtree.Xfs.Write.Namespace;

/// <summary>
/// Field-level edits of a v3 dinode image (docs/xfs-format.md §6.1) for the namespace operations: new inode cores
/// (xfs_init_new_inode), freed cores (xfs_ifree), link counts, timestamps (bigtime or classic), sizes and a
/// single-extent data fork. The CRC is left to the transaction, which recomputes it when the inode is logged.
/// </summary>
internal static class InodeCore
{
    public const ushort ModeTypeMask = 0xF000, ModeRegular = 0x8000, ModeDirectory = 0x4000;
    public const ulong Flag2Bigtime = 0x8;
    public const int OffMode = 2, OffFormat = 5, OffNlink = 16, OffBigNextents = 24, OffAtime = 32, OffMtime = 40,
        OffCtime = 48, OffSize = 56, OffNblocks = 64, OffNextents = 76, OffAnextents = 80, OffForkoff = 82,
        OffAformat = 83, OffFlags = 90, OffGen = 92, OffNextUnlinked = 96, OffChangecount = 104, OffFlags2 = 120,
        OffCrtime = 144, OffIno = 152, OffUuid = 160;
    /// <summary>Seconds between the bigtime epoch (1901-12-13T20:45:52Z) and the Unix epoch.</summary>
    const long BigtimeEpochOffset = 1L << 31;

    public static ushort Mode(ReadOnlySpan<byte> c) => BinaryPrimitives.ReadUInt16BigEndian(c[OffMode..]);
    public static bool IsDirectory(ReadOnlySpan<byte> c) => (Mode(c) & ModeTypeMask) == ModeDirectory;
    public static uint Nlink(ReadOnlySpan<byte> c) => BinaryPrimitives.ReadUInt32BigEndian(c[OffNlink..]);
    public static void SetNlink(Span<byte> c, uint n) => BinaryPrimitives.WriteUInt32BigEndian(c[OffNlink..], n);
    public static ulong Size(ReadOnlySpan<byte> c) => BinaryPrimitives.ReadUInt64BigEndian(c[OffSize..]);
    public static void SetSize(Span<byte> c, ulong n) => BinaryPrimitives.WriteUInt64BigEndian(c[OffSize..], n);
    public static ulong Nblocks(ReadOnlySpan<byte> c) => BinaryPrimitives.ReadUInt64BigEndian(c[OffNblocks..]);
    public static void SetNblocks(Span<byte> c, ulong n) => BinaryPrimitives.WriteUInt64BigEndian(c[OffNblocks..], n);
    public static ulong Flags2(ReadOnlySpan<byte> c) => BinaryPrimitives.ReadUInt64BigEndian(c[OffFlags2..]);

    /// <summary>The flags2 a new or freed inode gets on this filesystem (the kernel's new_diflags2).</summary>
    public static ulong DefaultFlags2(Superblock sb)
    {
        ArgumentNullException.ThrowIfNull(sb);
        ulong f = 0;
        if ((sb.FeaturesIncompat & Superblock.IncompatBigtime) != 0) f |= Flag2Bigtime;
        if (sb.HasNrext64) f |= Dinode.Flag2Nrext64;
        return f;
    }

    /// <summary>Writes <paramref name="when"/> into the 8-byte timestamp at <paramref name="offset"/>, in the
    /// encoding the inode's BIGTIME flag selects.</summary>
    public static void SetTime(Span<byte> c, int offset, DateTimeOffset when)
    {
        long seconds = when.ToUnixTimeSeconds();
        uint nanos = (uint)((when.UtcTicks % TimeSpan.TicksPerSecond) * 100);
        if ((Flags2(c) & Flag2Bigtime) != 0)
        {
            BinaryPrimitives.WriteUInt64BigEndian(c[offset..], (ulong)(seconds + BigtimeEpochOffset) * 1_000_000_000UL + nanos);
        }
        else
        {
            BinaryPrimitives.WriteInt32BigEndian(c[offset..], (int)Math.Clamp(seconds, int.MinValue, int.MaxValue));
            BinaryPrimitives.WriteUInt32BigEndian(c[(offset + 4)..], nanos);
        }
    }

    /// <summary>Reads the timestamp at <paramref name="offset"/>.</summary>
    public static DateTimeOffset GetTime(ReadOnlySpan<byte> c, int offset)
    {
        if ((Flags2(c) & Flag2Bigtime) != 0)
        {
            ulong v = BinaryPrimitives.ReadUInt64BigEndian(c[offset..]);
            long seconds = (long)(v / 1_000_000_000UL) - BigtimeEpochOffset;
            return DateTimeOffset.FromUnixTimeSeconds(seconds).AddTicks((long)(v % 1_000_000_000UL) / 100);
        }
        int s = BinaryPrimitives.ReadInt32BigEndian(c[offset..]);
        uint ns = BinaryPrimitives.ReadUInt32BigEndian(c[(offset + 4)..]);
        return DateTimeOffset.FromUnixTimeSeconds(s).AddTicks(Math.Min(ns, 999_999_999u) / 100);
    }

    /// <summary>mtime and ctime to <paramref name="now"/> (a directory whose entries changed).</summary>
    public static void Touch(Span<byte> c, DateTimeOffset now)
    {
        SetTime(c, OffMtime, now);
        SetTime(c, OffCtime, now);
    }

    /// <summary>
    /// Formats a free inode as a new in-use inode (xfs_init_new_inode): mode, nlink, owner 0:0, every timestamp
    /// now, size 0, no blocks, no attr fork (aformat EXTENTS), flags 0, the filesystem's default flags2, change
    /// count 1; the generation, next_unlinked, LSN, number and UUID stay. The data fork is EXTENTS with no
    /// records, or for a directory a LOCAL shortform header naming <paramref name="parent"/>.
    /// </summary>
    public static void FormatNew(Span<byte> c, Superblock sb, ushort mode, uint nlink, ulong parent, DateTimeOffset now)
    {
        ArgumentNullException.ThrowIfNull(sb);
        uint gen = BinaryPrimitives.ReadUInt32BigEndian(c[OffGen..]);
        uint nextUnlinked = BinaryPrimitives.ReadUInt32BigEndian(c[OffNextUnlinked..]);
        ulong lsn = BinaryPrimitives.ReadUInt64BigEndian(c[112..]);
        ulong ino = BinaryPrimitives.ReadUInt64BigEndian(c[OffIno..]);
        var uuid = c.Slice(OffUuid, 16).ToArray();
        c.Clear();
        BinaryPrimitives.WriteUInt16BigEndian(c, Dinode.MagicValue);
        BinaryPrimitives.WriteUInt16BigEndian(c[OffMode..], mode);
        c[4] = 3;
        SetNlink(c, nlink);
        c[OffAformat] = (byte)ForkFormat.Extents;
        BinaryPrimitives.WriteUInt32BigEndian(c[OffGen..], gen);
        BinaryPrimitives.WriteUInt32BigEndian(c[OffNextUnlinked..], nextUnlinked);
        BinaryPrimitives.WriteUInt64BigEndian(c[OffChangecount..], 1);
        BinaryPrimitives.WriteUInt64BigEndian(c[112..], lsn);
        BinaryPrimitives.WriteUInt64BigEndian(c[OffFlags2..], DefaultFlags2(sb));
        BinaryPrimitives.WriteUInt64BigEndian(c[OffIno..], ino);
        uuid.CopyTo(c[OffUuid..]);
        SetTime(c, OffAtime, now);
        SetTime(c, OffMtime, now);
        SetTime(c, OffCtime, now);
        SetTime(c, OffCrtime, now);
        if ((mode & ModeTypeMask) == ModeDirectory)
        {
            c[OffFormat] = (byte)ForkFormat.Local;
            var sf = new ShortformDirectory(parent, true, 4096).Serialize(); // header only: no entries, so ftype and block size do not matter
            sf.CopyTo(c[Dinode.CoreSize..]);
            SetSize(c, (ulong)sf.Length);
        }
        else
        {
            c[OffFormat] = (byte)ForkFormat.Extents;
        }
    }

    /// <summary>
    /// The core of a freed inode (xfs_ifree): mode 0, nlink 0, size 0, no blocks, flags 0, default flags2, no
    /// attr fork, both forks EXTENTS with no records, generation + 1; number, UUID, LSN and next_unlinked stay.
    /// </summary>
    public static void FormatFreed(Span<byte> c, Superblock sb)
    {
        ArgumentNullException.ThrowIfNull(sb);
        uint gen = BinaryPrimitives.ReadUInt32BigEndian(c[OffGen..]);
        uint nextUnlinked = BinaryPrimitives.ReadUInt32BigEndian(c[OffNextUnlinked..]);
        ulong lsn = BinaryPrimitives.ReadUInt64BigEndian(c[112..]);
        ulong changecount = BinaryPrimitives.ReadUInt64BigEndian(c[OffChangecount..]);
        ulong ino = BinaryPrimitives.ReadUInt64BigEndian(c[OffIno..]);
        var uuid = c.Slice(OffUuid, 16).ToArray();
        var times = c.Slice(OffAtime, 24).ToArray();
        var crtime = c.Slice(OffCrtime, 8).ToArray();
        c.Clear();
        BinaryPrimitives.WriteUInt16BigEndian(c, Dinode.MagicValue);
        c[4] = 3;
        c[OffFormat] = (byte)ForkFormat.Extents;
        c[OffAformat] = (byte)ForkFormat.Extents;
        times.CopyTo(c[OffAtime..]);
        crtime.CopyTo(c[OffCrtime..]);
        BinaryPrimitives.WriteUInt32BigEndian(c[OffGen..], unchecked(gen + 1));
        BinaryPrimitives.WriteUInt32BigEndian(c[OffNextUnlinked..], nextUnlinked);
        BinaryPrimitives.WriteUInt64BigEndian(c[OffChangecount..], changecount + 1);
        BinaryPrimitives.WriteUInt64BigEndian(c[112..], lsn);
        BinaryPrimitives.WriteUInt64BigEndian(c[OffFlags2..], DefaultFlags2(sb));
        BinaryPrimitives.WriteUInt64BigEndian(c[OffIno..], ino);
        uuid.CopyTo(c[OffUuid..]);
    }

    /// <summary>Sets the data-fork extent count in the field the inode's NREXT64 flag selects.</summary>
    public static void SetDataExtents(Span<byte> c, ulong n)
    {
        if ((Flags2(c) & Dinode.Flag2Nrext64) != 0) BinaryPrimitives.WriteUInt64BigEndian(c[OffBigNextents..], n);
        else BinaryPrimitives.WriteUInt32BigEndian(c[OffNextents..], checked((uint)n));
    }

    /// <summary>Encodes a bmbt extent record (docs/xfs-format.md §5.5).</summary>
    public static void WriteExtent(Span<byte> to, ulong startOffset, ulong startBlock, uint blockCount)
    {
        ulong l0 = (startOffset << 9) | (startBlock >> 43);
        ulong l1 = (startBlock << 21) | blockCount;
        BinaryPrimitives.WriteUInt64BigEndian(to, l0);
        BinaryPrimitives.WriteUInt64BigEndian(to[8..], l1);
    }

    /// <summary>Replaces the data fork of a LOCAL inode with the given inline bytes (the rest of the fork zeroed) and sets di_size.</summary>
    public static void SetLocalData(Span<byte> c, ReadOnlySpan<byte> data)
    {
        var d = new Dinode(c);
        int forkSize = d.DataFork.Length;
        if (data.Length > forkSize) throw new InvalidOperationException($"{data.Length} bytes of inline data in a {forkSize}-byte fork");
        var fork = c.Slice(Dinode.CoreSize, forkSize);
        fork.Clear();
        data.CopyTo(fork);
        SetSize(c, (ulong)data.Length);
    }
}
