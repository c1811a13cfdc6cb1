using System.Buffers.Binary;
using System.Text;
using Xfbtree.Xfs.Write;
using Xfbtree.Xfs.Write.Namespace;

namespace Xfbtree.Xfs.Directories;

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
    /// <summary>Offset of the CRC in a dir3 data, block or free-index block.</summary>
    public const int CrcOffset = 4;
    /// <summary>Offset of the three (offset, length) bestfree pairs in a dir3 data header.</summary>
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
    /// <summary>Node directories keep their free-index blocks from this byte offset on (64 GiB).</summary>
    public const long FreeOffsetBytes = 64L << 30;
    /// <summary>Magic (u16 at offset 8 of the da3 block header) of the one leaf block of a leaf directory.</summary>
    public const ushort Leaf1Magic = 0x3df1;
    /// <summary>Magic of a leaf block of a node directory (no best-free tail).</summary>
    public const ushort LeafNMagic = 0x3dff;
    /// <summary>Magic of an interior da btree block.</summary>
    public const ushort NodeMagic = 0x3ebe;
    /// <summary>"XDF3": free-index block of a node directory.</summary>
    public const uint FreeMagic = 0x58444633;
    /// <summary>Size of the da3 leaf and node headers and of the dir3 free-index header.</summary>
    public const int DaHeaderSize = 64;
    /// <summary>Offset of the CRC in a da3 (leaf or node) block.</summary>
    public const int DaCrcOffset = 12;
    /// <summary>Offset of the u16 magic in a da3 block header (after forw and back).</summary>
    public const int DaMagicOffset = 8;
    /// <summary>A best-free slot of a data block that does not exist (NULLDATAOFF).</summary>
    public const ushort NullDataOff = 0xFFFF;
    /// <summary>Deepest da btree the kernel builds (XFS_DA_NODE_MAXDEPTH).</summary>
    public const int MaxDaDepth = 5;
    /// <summary>Largest inode number a shortform entry stores in 4 bytes.</summary>
    public const ulong MaxShortInode = 0xFFFFFFFF;
    /// <summary>Longest directory entry name.</summary>
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

    /// <summary>True when a block starts with a dir3 header (data, block or free-index magic at offset 0); false
    /// for the da3 header of leaf and node blocks.</summary>
    public static bool HasDir3Header(ReadOnlySpan<byte> block)
    {
        uint m = BinaryPrimitives.ReadUInt32BigEndian(block);
        return m is BlockMagic or DataMagic or FreeMagic;
    }

    /// <summary>Offset of the CRC of a directory block, by its header kind.</summary>
    public static int CrcOffsetOf(ReadOnlySpan<byte> block) => HasDir3Header(block) ? CrcOffset : DaCrcOffset;

    /// <summary>
    /// Null when a whole directory block's header is what its place says: a known magic, a good CRC, blkno =
    /// <paramref name="daddr"/> (its first sector), the filesystem's metadata UUID, owner = <paramref name="owner"/>;
    /// else what is wrong. dir3 header: magic u32 0, crc 4, blkno 8, lsn 16, uuid 24, owner 40; da3 header: forw 0,
    /// back 4, magic u16 8, pad 10, crc 12, blkno 16, lsn 24, uuid 32, owner 48.
    /// </summary>
    public static string? CheckIdentity(ReadOnlySpan<byte> block, long daddr, ulong owner, ReadOnlySpan<byte> uuid)
    {
        bool dir3 = HasDir3Header(block);
        if (!dir3 && !IsDaMagic(BinaryPrimitives.ReadUInt16BigEndian(block[DaMagicOffset..])))
            return $"magic 0x{BinaryPrimitives.ReadUInt32BigEndian(block):x8} / 0x{BinaryPrimitives.ReadUInt16BigEndian(block[DaMagicOffset..]):x4} is no directory block";
        int crc = dir3 ? CrcOffset : DaCrcOffset, at = dir3 ? 8 : 16;
        if (!Xfbtree.Buffers.XfsCrc.Verify(block, crc)) return "bad CRC";
        long blkno = (long)BinaryPrimitives.ReadUInt64BigEndian(block[at..]);
        if (blkno != daddr) return $"blkno {blkno}, expected {daddr}";
        if (!block.Slice(at + 16, 16).SequenceEqual(uuid)) return "metadata UUID mismatch";
        ulong o = BinaryPrimitives.ReadUInt64BigEndian(block[(at + 32)..]);
        if (o != owner) return $"owner {o}, expected inode {owner}";
        return null;
    }

    /// <summary>Writes blkno, UUID and owner of a new block (LSN zero); <paramref name="dir3"/> picks the header kind.</summary>
    public static void WriteIdentity(Span<byte> block, bool dir3, long daddr, ulong owner, ReadOnlySpan<byte> uuid)
    {
        int at = dir3 ? 8 : 16;
        BinaryPrimitives.WriteUInt64BigEndian(block[at..], (ulong)daddr);
        BinaryPrimitives.WriteUInt64BigEndian(block[(at + 8)..], 0);
        uuid.CopyTo(block[(at + 16)..]);
        BinaryPrimitives.WriteUInt64BigEndian(block[(at + 32)..], owner);
    }

    static bool IsDaMagic(ushort m) => m is Leaf1Magic or LeafNMagic or NodeMagic;

    /// <summary>A name as text for messages (UTF-8, invalid bytes replaced).</summary>
    public static string Show(ReadOnlySpan<byte> name) => Encoding.UTF8.GetString(name);
}
