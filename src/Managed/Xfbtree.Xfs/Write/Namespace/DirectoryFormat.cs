using System.Text;

namespace Xfbtree.Xfs.Write.Namespace;

/// <summary>
/// On-disk constants and small rules of XFS v5 directories (xfs_da_format.h): data entry sizes, the dir3 data
/// header, the block tail and leaf entries, file types, and the da name hash.
/// </summary>
internal static class DirectoryFormat
{
    /// <summary>"XDB3": single-block directory (data, leaf and tail in one block).</summary>
    public const uint BlockMagic = 0x58444233;
    /// <summary>"XDD3": data block of a leaf or node directory.</summary>
    public const uint DataMagic = 0x58444433;
    /// <summary>Dir3 data header: blk hdr (magic, crc, blkno, lsn, uuid, owner = 48 bytes), bestfree[3], pad.</summary>
    public const int DataHeaderSize = 64;
    public const int CrcOffset = 4;
    public const int BestFreeOffset = 48;
    /// <summary>Offset of "." in a data block; ".." follows at 80 and the first other entry at 96.</summary>
    public const int DotOffset = DataHeaderSize;
    /// <summary>freetag of an unused region.</summary>
    public const ushort FreeTag = 0xFFFF;
    /// <summary>Leaf entry: hashval u32, address u32 (byte offset / 8; 0 = stale).</summary>
    public const int LeafEntrySize = 8;
    /// <summary>Block tail: count u32, stale u32.</summary>
    public const int BlockTailSize = 8;
    /// <summary>Leaf and node directories keep their leaf blocks from this byte offset on (32 GiB).</summary>
    public const long LeafOffsetBytes = 32L << 30;
    /// <summary>Largest inode number a shortform entry stores in 4 bytes.</summary>
    public const ulong MaxShortInode = 0xFFFFFFFF;
    public const int MaxNameLength = 255;

    // XFS_DIR3_FT_*
    public const byte FtUnknown = 0, FtRegular = 1, FtDirectory = 2, FtCharDevice = 3, FtBlockDevice = 4,
        FtFifo = 5, FtSocket = 6, FtSymlink = 7, FtMax = 9;

    /// <summary>Size of a data entry in a directory data block: inumber 8, namelen 1, name, ftype 1 (when the
    /// filesystem has it), tag 2, rounded up to 8.</summary>
    public static int DataEntrySize(int nameLength, bool hasFtype) => (8 + 1 + nameLength + (hasFtype ? 1 : 0) + 2 + 7) & ~7;

    /// <summary>Directory-entry file type of an inode mode.</summary>
    public static byte FileTypeOfMode(int mode) => (mode & 0xF000) switch
    {
        0x8000 => FtRegular,
        0x4000 => FtDirectory,
        0x2000 => FtCharDevice,
        0x6000 => FtBlockDevice,
        0x1000 => FtFifo,
        0xC000 => FtSocket,
        0xA000 => FtSymlink,
        _ => FtUnknown,
    };

    public static InodeType TypeOfFileType(byte ftype) => ftype switch
    {
        FtRegular => InodeType.RegularFile,
        FtDirectory => InodeType.Directory,
        FtCharDevice => InodeType.CharDevice,
        FtBlockDevice => InodeType.BlockDevice,
        FtFifo => InodeType.Fifo,
        FtSocket => InodeType.Socket,
        FtSymlink => InodeType.Symlink,
        _ => InodeType.Unknown,
    };

    public static InodeType TypeOfMode(int mode) => TypeOfFileType(FileTypeOfMode(mode));

    /// <summary>xfs_da_hashname: rotate by 7 bits per byte and xor the bytes in, four at a time.</summary>
    public static uint HashName(ReadOnlySpan<byte> name) => Xfbtree.Xfs.Format.DaHash.HashName(name);

    public static bool IsDot(ReadOnlySpan<byte> name) => name.Length == 1 && name[0] == (byte)'.';
    public static bool IsDotDot(ReadOnlySpan<byte> name) => name.Length == 2 && name[0] == (byte)'.' && name[1] == (byte)'.';

    /// <summary>Null when <paramref name="name"/> may be a new directory entry, else why not.</summary>
    public static string? CheckNewName(ReadOnlySpan<byte> name)
    {
        if (name.Length == 0) return "empty name";
        if (name.Length > MaxNameLength) return $"name of {name.Length} bytes is longer than {MaxNameLength}";
        if (name.IndexOf((byte)'/') >= 0) return "name contains '/'";
        if (name.IndexOf((byte)0) >= 0) return "name contains a NUL byte";
        if (IsDot(name) || IsDotDot(name)) return "'.' and '..' cannot be created or removed";
        return null;
    }

    /// <summary>A name as text for messages (UTF-8, invalid bytes replaced).</summary>
    public static string Show(ReadOnlySpan<byte> name) => Encoding.UTF8.GetString(name);
}
