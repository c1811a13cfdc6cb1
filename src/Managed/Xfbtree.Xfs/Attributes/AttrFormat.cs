using System.Buffers.Binary;

namespace Xfbtree.Xfs.Attributes;

/// <summary>
/// On-disk constants and size rules of XFS v5 extended attributes (xfs_da_format.h, xfs_attr_leaf.h): the
/// shortform list in the inode, attr leaf blocks, da node blocks and remote value blocks. Every attr-fork block is
/// one filesystem block and carries its CRC at byte 12.
/// </summary>
internal static class AttrFormat
{
    /// <summary>XFS_ATTR3_LEAF_MAGIC (16 bits, at byte 8 of the da3 block header).</summary>
    public const ushort LeafMagic = 0x3BEE;
    /// <summary>XFS_DA3_NODE_MAGIC (16 bits, at byte 8 of the da3 block header).</summary>
    public const ushort NodeMagic = 0x3EBE;
    /// <summary>XFS_ATTR3_RMT_MAGIC "XARM" (32 bits at byte 0 of every remote value block).</summary>
    public const uint RemoteMagic = 0x5841524D;
    /// <summary>Byte offset of the CRC in leaf, node and remote blocks alike.</summary>
    public const int CrcOffset = 12;

    /// <summary>Entry flag: the value is stored in the leaf (leaf blocks only).</summary>
    public const byte FlagLocal = 0x01;
    /// <summary>Entry flag: the trusted namespace (XFS_ATTR_ROOT).</summary>
    public const byte FlagRoot = 0x02;
    /// <summary>Entry flag: the security namespace (XFS_ATTR_SECURE).</summary>
    public const byte FlagSecure = 0x04;
    /// <summary>Entry flag: a parent pointer (XFS_ATTR_PARENT), which the engine does not handle.</summary>
    public const byte FlagParent = 0x08;
    /// <summary>Entry flag: an entry left half made by an interrupted change (XFS_ATTR_INCOMPLETE).</summary>
    public const byte FlagIncomplete = 0x80;
    /// <summary>The namespace bits of an entry's flags.</summary>
    public const byte NamespaceMask = FlagRoot | FlagSecure | FlagParent;

    /// <summary>Largest name XFS stores (the name without its namespace prefix).</summary>
    public const int MaxNameLength = 255;
    /// <summary>Largest value (XATTR_SIZE_MAX).</summary>
    public const int MaxValueLength = 65536;

    /// <summary>Shortform header: totsize u16, count u8, pad u8.</summary>
    public const int ShortformHeaderSize = 4;
    /// <summary>Shortform entry bytes before the name: namelen u8, valuelen u8, flags u8.</summary>
    public const int ShortformEntryOverhead = 3;
    /// <summary>A shortform entry's name and value lengths must each stay below this (XFS_ATTR_SF_ENTSIZE_MAX).</summary>
    public const int ShortformLengthLimit = 255;

    /// <summary>The da3 block header shared by leaf and node blocks: forw, back, magic, pad, crc, blkno, lsn, uuid, owner.</summary>
    public const int DaHeaderSize = 56;
    /// <summary>Leaf block header: da3 header, count, usedbytes, firstused, holes, pad, freemap[3], pad.</summary>
    public const int LeafHeaderSize = 80;
    /// <summary>Leaf entry: hashval u32, nameidx u16, flags u8, pad u8.</summary>
    public const int LeafEntrySize = 8;
    /// <summary>Node block header: da3 header, count u16, level u16, pad u32.</summary>
    public const int NodeHeaderSize = 64;
    /// <summary>Node entry: hashval u32, before (child da block) u32.</summary>
    public const int NodeEntrySize = 8;
    /// <summary>Remote value block header: magic, offset, bytes, crc, uuid, owner, blkno, lsn.</summary>
    public const int RemoteHeaderSize = 56;
    /// <summary>The LSN remote value blocks carry (NULLCOMMITLSN): they are never logged, so recovery must ignore it.</summary>
    public const ulong RemoteLsn = ulong.MaxValue;
    /// <summary>Most levels a da btree of an attr fork may have (XFS_DA_NODE_MAXDEPTH).</summary>
    public const int MaxNodeDepth = 5;

    // Offsets inside the da3 block header.
    internal const int OffForw = 0, OffBack = 4, OffMagic = 8, OffBlkno = 16, OffLsn = 24, OffUuid = 32, OffOwner = 48;
    // Offsets inside the leaf header (after the da3 header).
    internal const int OffCount = 56, OffUsedBytes = 58, OffFirstUsed = 60, OffHoles = 62, OffFreeMap = 64;
    // Offsets inside the node header.
    internal const int OffNodeCount = 56, OffNodeLevel = 58;
    // Offsets inside the remote header.
    internal const int OffRmtOffset = 4, OffRmtBytes = 8, OffRmtUuid = 16, OffRmtOwner = 32, OffRmtBlkno = 40, OffRmtLsn = 48;

    /// <summary>Bytes of a shortform entry.</summary>
    public static int ShortformEntrySize(int nameLength, int valueLength) => ShortformEntryOverhead + nameLength + valueLength;

    /// <summary>Bytes of a leaf name entry holding its value locally: valuelen u16, namelen u8, name, value, rounded up to 4.</summary>
    public static int LocalNameSize(int nameLength, int valueLength) => (3 + nameLength + valueLength + 3) & ~3;

    /// <summary>Bytes of a leaf name entry whose value lives in remote blocks: valueblk u32, valuelen u32, namelen u8,
    /// name. The on-disk rule counts 11 bytes before the name (the old padded struct size less one, kept for
    /// compatibility), rounded up to 4.</summary>
    public static int RemoteNameSize(int nameLength) => (11 + nameLength + 3) & ~3;

    /// <summary>A value is local in a leaf when its local entry is smaller than three quarters of the block
    /// (xfs_attr_leaf_newentsize with xfs_attr_leaf_entsize_local_max).</summary>
    public static bool IsLocalInLeaf(int nameLength, int valueLength, int blockSize)
        => LocalNameSize(nameLength, valueLength) < (blockSize >> 1) + (blockSize >> 2);

    /// <summary>Value bytes one remote block carries.</summary>
    public static int RemoteBytesPerBlock(int blockSize) => blockSize - RemoteHeaderSize;

    /// <summary>Blocks a remote value of <paramref name="valueLength"/> bytes takes.</summary>
    public static int RemoteBlocks(int valueLength, int blockSize)
    {
        int per = RemoteBytesPerBlock(blockSize);
        return (valueLength + per - 1) / per;
    }

    /// <summary>Most entries of a node block.</summary>
    public static int NodeMaxEntries(int blockSize) => (blockSize - NodeHeaderSize) / NodeEntrySize;

    /// <summary>The 16-bit magic of a leaf or node block (0 when the block is too short).</summary>
    public static ushort DaMagic(ReadOnlySpan<byte> block) => block.Length > OffMagic + 1 ? BinaryPrimitives.ReadUInt16BigEndian(block[OffMagic..]) : (ushort)0;
}
