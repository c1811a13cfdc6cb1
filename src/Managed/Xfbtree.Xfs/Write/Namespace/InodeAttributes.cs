using Xfbtree.Xfs.Directories;
using System.Buffers.Binary;
using Xfbtree.Xfs.Format;

namespace Xfbtree.Xfs.Write.Namespace;

/// <summary>
/// A reference to one incarnation of an inode: its number and the generation it had when the handle was made.
/// Every operation through a handle checks the generation under the inode lock, so a handle never reaches an
/// inode that was freed (the generation grows at every free) and reused since (ESTALE instead).
/// </summary>
/// <param name="Ino">Inode number.</param>
/// <param name="Generation">di_gen of the incarnation.</param>
public readonly record struct InodeHandle(ulong Ino, uint Generation);

/// <summary>An inode timestamp: seconds since the Unix epoch and nanoseconds (0..999,999,999).</summary>
/// <param name="Seconds">Seconds since 1970-01-01T00:00:00Z (negative before).</param>
/// <param name="Nanoseconds">Nanoseconds within the second.</param>
public readonly record struct InodeTime(long Seconds, uint Nanoseconds)
{
    /// <summary>The current time at nanosecond precision as far as the clock gives it.</summary>
    public static InodeTime Now => FromDateTimeOffset(DateTimeOffset.UtcNow);

    /// <summary>The same instant as a <see cref="DateTimeOffset"/> (100 ns resolution).</summary>
    public DateTimeOffset ToDateTimeOffset() => DateTimeOffset.FromUnixTimeSeconds(Seconds).AddTicks(Nanoseconds / 100);

    /// <summary>The instant <paramref name="when"/> as seconds and nanoseconds.</summary>
    public static InodeTime FromDateTimeOffset(DateTimeOffset when)
    {
        long ticks = when.UtcTicks - DateTimeOffset.UnixEpoch.UtcTicks;
        long seconds = Math.DivRem(ticks, TimeSpan.TicksPerSecond, out long rem);
        if (rem < 0) { seconds--; rem += TimeSpan.TicksPerSecond; }
        return new InodeTime(seconds, (uint)(rem * 100));
    }

    /// <summary>"SECONDS.NANOSECONDS" (nine digits).</summary>
    public override string ToString() => $"{Seconds}.{Nanoseconds:D9}";
}

/// <summary>Everything stat(2) and a FUSE attribute reply need about one inode.</summary>
/// <param name="Ino">Inode number.</param>
/// <param name="Generation">di_gen (with <paramref name="Ino"/> the <see cref="Handle"/>).</param>
/// <param name="Mode">The whole mode: type bits (S_IFMT) and permission bits.</param>
/// <param name="Uid">Owner user id.</param>
/// <param name="Gid">Owner group id.</param>
/// <param name="Links">Link count.</param>
/// <param name="Size">di_size in bytes.</param>
/// <param name="Blocks">Space used in 512-byte units (st_blocks: di_nblocks in filesystem blocks, converted).</param>
/// <param name="BlockSize">Preferred I/O size (st_blksize: the larger of the page size and the block size, as XFS reports).</param>
/// <param name="Rdev">Device number of a character or block device in the Linux encoding (0 otherwise).</param>
/// <param name="Atime">Last access.</param>
/// <param name="Mtime">Last data modification.</param>
/// <param name="Ctime">Last inode change.</param>
/// <param name="Crtime">Creation (statx btime).</param>
public readonly record struct InodeAttributes(
    ulong Ino, uint Generation, ushort Mode, uint Uid, uint Gid, uint Links, long Size, long Blocks, int BlockSize,
    ulong Rdev, InodeTime Atime, InodeTime Mtime, InodeTime Ctime, InodeTime Crtime)
{
    /// <summary>The handle of this incarnation.</summary>
    public InodeHandle Handle => new(Ino, Generation);

    /// <summary>What the inode is (from the type bits of <see cref="Mode"/>).</summary>
    public InodeType Type => DirectoryFormat.TypeOfMode(Mode);

    /// <summary>The permission bits (mode &amp; 07777).</summary>
    public int Permissions => Mode & 0xFFF;

    /// <summary>Major number of <see cref="Rdev"/>.</summary>
    public uint RdevMajor => DeviceNumbers.Major(Rdev);

    /// <summary>Minor number of <see cref="Rdev"/>.</summary>
    public uint RdevMinor => DeviceNumbers.Minor(Rdev);
}

/// <summary>Linux dev_t encoding (the glibc makedev layout) and XFS's 32-bit on-disk device number (sysv layout:
/// major from bit 18, minor in the low 18 bits, as xfs_dinode's DEV fork stores it). The kernel reads back only 9
/// bits of major (xfs_to_linux_dev_t masks 0x1ff) and its mknod refuses larger majors (EINVAL): so does this.</summary>
internal static class DeviceNumbers
{
    /// <summary>Largest major number XFS keeps (the kernel's mask 0x1ff).</summary>
    public const uint MaxXfsMajor = 0x1FF;
    /// <summary>Largest minor number the XFS on-disk encoding holds.</summary>
    public const uint MaxXfsMinor = (1u << 18) - 1;

    /// <summary>The Linux dev_t of (<paramref name="major"/>, <paramref name="minor"/>).</summary>
    public static ulong MakeDev(uint major, uint minor)
        => ((ulong)(major & 0xFFFFF000) << 32) | ((ulong)(major & 0xFFF) << 8) | ((ulong)(minor & 0xFFFFFF00) << 12) | (minor & 0xFF);

    /// <summary>Major number of a Linux dev_t.</summary>
    public static uint Major(ulong dev) => (uint)(((dev >> 32) & 0xFFFFF000) | ((dev >> 8) & 0xFFF));

    /// <summary>Minor number of a Linux dev_t.</summary>
    public static uint Minor(ulong dev) => (uint)(((dev >> 12) & 0xFFFFFF00) | (dev & 0xFF));

    /// <summary>The XFS on-disk device number of a Linux dev_t (sysv encoding); null when it does not fit.</summary>
    public static uint? ToXfs(ulong dev)
    {
        uint major = Major(dev), minor = Minor(dev);
        if (major > MaxXfsMajor || minor > MaxXfsMinor) return null;
        return (major << 18) | minor;
    }

    /// <summary>The Linux dev_t of an XFS on-disk device number.</summary>
    public static ulong FromXfs(uint raw) => MakeDev((raw >> 18) & MaxXfsMajor, raw & MaxXfsMinor);
}

/// <summary>Reads and writes the dinode fields the namespace operations show or change beyond
/// <see cref="InodeCore"/>: owners, generation, nanosecond timestamps, device numbers.</summary>
internal static class InodeAttributeFields
{
    public const int OffUid = 8, OffGid = 12, OffGen = 92;
    /// <summary>Seconds between the bigtime epoch and the Unix epoch.</summary>
    const long BigtimeEpochOffset = 1L << 31;
    /// <summary>Largest seconds a bigtime stamp holds ((2^64 - 1) ns less the epoch offset).</summary>
    public const long BigtimeMaxSeconds = (long)(ulong.MaxValue / 1_000_000_000UL) - BigtimeEpochOffset;
    /// <summary>Smallest seconds a bigtime stamp holds.</summary>
    public const long BigtimeMinSeconds = -BigtimeEpochOffset;

    public static uint Uid(ReadOnlySpan<byte> c) => BinaryPrimitives.ReadUInt32BigEndian(c[OffUid..]);
    public static uint Gid(ReadOnlySpan<byte> c) => BinaryPrimitives.ReadUInt32BigEndian(c[OffGid..]);
    public static void SetUid(Span<byte> c, uint v) => BinaryPrimitives.WriteUInt32BigEndian(c[OffUid..], v);
    public static void SetGid(Span<byte> c, uint v) => BinaryPrimitives.WriteUInt32BigEndian(c[OffGid..], v);
    public static uint Generation(ReadOnlySpan<byte> c) => BinaryPrimitives.ReadUInt32BigEndian(c[OffGen..]);
    public static void SetMode(Span<byte> c, ushort mode) => BinaryPrimitives.WriteUInt16BigEndian(c[InodeCore.OffMode..], mode);
    public static uint NextUnlinked(ReadOnlySpan<byte> c) => BinaryPrimitives.ReadUInt32BigEndian(c[InodeCore.OffNextUnlinked..]);
    public static void SetNextUnlinked(Span<byte> c, uint agino) => BinaryPrimitives.WriteUInt32BigEndian(c[InodeCore.OffNextUnlinked..], agino);
    static bool Bigtime(ReadOnlySpan<byte> c) => (InodeCore.Flags2(c) & InodeCore.Flag2Bigtime) != 0;

    /// <summary>The timestamp at <paramref name="offset"/> with nanoseconds.</summary>
    public static InodeTime GetTime(ReadOnlySpan<byte> c, int offset)
    {
        if (Bigtime(c))
        {
            ulong v = BinaryPrimitives.ReadUInt64BigEndian(c[offset..]);
            return new InodeTime((long)(v / 1_000_000_000UL) - BigtimeEpochOffset, (uint)(v % 1_000_000_000UL));
        }
        int s = BinaryPrimitives.ReadInt32BigEndian(c[offset..]);
        uint ns = BinaryPrimitives.ReadUInt32BigEndian(c[(offset + 4)..]);
        return new InodeTime(s, Math.Min(ns, 999_999_999u));
    }

    /// <summary>Writes <paramref name="t"/> at <paramref name="offset"/>, clamped to the range the inode's
    /// encoding holds (as the kernel clamps to the superblock's time range).</summary>
    public static void SetTime(Span<byte> c, int offset, InodeTime t)
    {
        uint ns = Math.Min(t.Nanoseconds, 999_999_999u);
        if (Bigtime(c))
        {
            long s = t.Seconds;
            if (s < BigtimeMinSeconds) { s = BigtimeMinSeconds; ns = 0; }
            if (s > BigtimeMaxSeconds) { s = BigtimeMaxSeconds; ns = 0; }
            BinaryPrimitives.WriteUInt64BigEndian(c[offset..], (ulong)(s + BigtimeEpochOffset) * 1_000_000_000UL + ns);
        }
        else
        {
            long s = t.Seconds;
            if (s < int.MinValue) { s = int.MinValue; ns = 0; }
            if (s > int.MaxValue) { s = int.MaxValue; ns = 0; }
            BinaryPrimitives.WriteInt32BigEndian(c[offset..], (int)s);
            BinaryPrimitives.WriteUInt32BigEndian(c[(offset + 4)..], ns);
        }
    }

    /// <summary>The Linux dev_t of a device inode (DEV data fork), 0 for any other inode.</summary>
    public static ulong Rdev(ReadOnlySpan<byte> c)
    {
        var d = new Dinode(c);
        if (d.Format != ForkFormat.Dev) return 0;
        return DeviceNumbers.FromXfs(BinaryPrimitives.ReadUInt32BigEndian(c[Dinode.CoreSize..]));
    }

    /// <summary>The attributes of a verified, in-use inode core.</summary>
    public static InodeAttributes Read(ulong ino, ReadOnlySpan<byte> c, int blockSize)
    {
        var d = new Dinode(c);
        return new InodeAttributes(ino, Generation(c), d.Mode, Uid(c), Gid(c), InodeCore.Nlink(c), (long)d.Size,
            (long)(d.NBlocks * (ulong)(blockSize / 512)), Math.Max(4096, blockSize), Rdev(c),
            GetTime(c, InodeCore.OffAtime), GetTime(c, InodeCore.OffMtime), GetTime(c, InodeCore.OffCtime), GetTime(c, InodeCore.OffCrtime));
    }
}

/// <summary>Special-file data forks (DEV format) of new inodes.</summary>
internal static class SpecialFiles
{
    /// <summary>Turns a freshly formatted inode into a device, fifo or socket: DEV data fork holding the XFS
    /// device number (0 for fifos and sockets), size 0, as xfs_init_new_inode does.</summary>
    public static void FormatDevice(Span<byte> c, uint xfsRdev)
    {
        var fork = c.Slice(Dinode.CoreSize, new Dinode(c).DataFork.Length);
        fork.Clear();
        c[InodeCore.OffFormat] = (byte)ForkFormat.Dev;
        BinaryPrimitives.WriteUInt32BigEndian(fork, xfsRdev);
        InodeCore.SetSize(c, 0);
    }
}
