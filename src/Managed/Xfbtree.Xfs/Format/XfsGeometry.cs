using System.Runtime.CompilerServices;

namespace Xfbtree.Xfs.Format;

/// <summary>
/// Address arithmetic of one filesystem (docs/xfs-format.md §1), from a validated <see cref="Superblock"/>:
/// AG lengths, agbno/fsbno/daddr conversions, inode numbers, header sectors. Every conversion of an on-disk
/// value goes through a Try/IsValid method first; the unchecked forms are for values already checked.
/// </summary>
public sealed class XfsGeometry
{
    readonly byte[] _metaUuid;

    /// <summary>Geometry of a superblock that passed <see cref="Superblock.Validate"/>.</summary>
    internal XfsGeometry(Superblock sb)
    {
        ArgumentNullException.ThrowIfNull(sb);
        Superblock = sb;
        BlockSize = (int)sb.BlockSize;
        BlockLog = sb.BlockLog;
        SectorSize = sb.SectorSize;
        InodeSize = sb.InodeSize;
        InodesPerBlock = sb.InodesPerBlock;
        InodesPerBlockLog = sb.InodesPerBlockLog;
        AgBlocks = sb.AgBlocks;
        AgBlockLog = sb.AgBlockLog;
        AgCount = sb.AgCount;
        DataBlocks = (long)sb.DataBlocks;
        _metaUuid = sb.MetaUuid.ToArray();
        BasicBlocksPerBlock = BlockSize / 512;
        SectorBasicBlocks = SectorSize / 512;
        FirstFreeBlock = (uint)(3 * SectorSize / BlockSize + 1);
        AgflSlots = (SectorSize - Agfl.HeaderSize) / 4;
        InodeChunkBlocks = Math.Max(1, 64 / InodesPerBlock);
    }

    internal Superblock Superblock { get; }
    /// <summary>Filesystem block size in bytes (sb_blocksize; 512 to 65536, a power of two).</summary>
    public int BlockSize { get; }
    /// <summary>log2 of <see cref="BlockSize"/>.</summary>
    public int BlockLog { get; }
    /// <summary>Sector size in bytes (sb_sectsize): the size of each AG header.</summary>
    public int SectorSize { get; }
    /// <summary>On-disk inode size in bytes (sb_inodesize; 512 or more on v5).</summary>
    public int InodeSize { get; }
    /// <summary>Inodes per filesystem block.</summary>
    public int InodesPerBlock { get; }
    /// <summary>log2 of <see cref="InodesPerBlock"/>.</summary>
    public int InodesPerBlockLog { get; }
    /// <summary>Blocks per allocation group (sb_agblocks); the last AG may be shorter.</summary>
    public uint AgBlocks { get; }
    /// <summary>Bits of the AG block number inside a filesystem block number (sb_agblklog, log2 of <see cref="AgBlocks"/> rounded up).</summary>
    public int AgBlockLog { get; }
    /// <summary>Number of allocation groups (sb_agcount).</summary>
    public uint AgCount { get; }
    /// <summary>Blocks of the data device (sb_dblocks): the filesystem's size in blocks.</summary>
    public long DataBlocks { get; }
    /// <summary>512-byte basic blocks per filesystem block.</summary>
    public int BasicBlocksPerBlock { get; }
    /// <summary>512-byte basic blocks per sector (the length of an AG header buffer).</summary>
    public int SectorBasicBlocks { get; }
    /// <summary>XFS_BNO_BLOCK: the first block after the AG header sectors; [0, this) is OWN_FS.</summary>
    public uint FirstFreeBlock { get; }
    /// <summary>AGFL slots: (sector size - 36) / 4.</summary>
    public int AgflSlots { get; }
    /// <summary>Blocks of a full inode chunk (64 inodes).</summary>
    public int InodeChunkBlocks { get; }
    /// <summary>The UUID every metadata header carries.</summary>
    public ReadOnlySpan<byte> MetaUuid => _metaUuid;

    /// <summary>Length of AG <paramref name="agno"/> in blocks (the last AG may be shorter).</summary>
    public uint AgLength(uint agno)
    {
        if (agno >= AgCount) throw new ArgumentOutOfRangeException(nameof(agno), agno, $"AG beyond agcount {AgCount}");
        return agno == AgCount - 1 ? (uint)(DataBlocks - (long)agno * AgBlocks) : AgBlocks;
    }

    /// <summary>daddr (512-byte units) of an AG block.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public long AgBlockToDaddr(uint agno, uint agbno) => ((long)agno * AgBlocks + agbno) * BasicBlocksPerBlock;

    /// <summary>Byte offset of an AG block in the image.</summary>
    public long AgBlockToByte(uint agno, uint agbno) => ((long)agno * AgBlocks + agbno) << BlockLog;

    /// <summary>daddr of AG header sector <paramref name="sector"/> (0 SB, 1 AGF, 2 AGI, 3 AGFL).</summary>
    public long AgHeaderDaddr(uint agno, int sector) => AgBlockToDaddr(agno, 0) + (long)sector * SectorBasicBlocks;

    /// <summary>AG of an fsbno (unchecked).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public uint FsbToAgno(ulong fsbno) => (uint)(fsbno >> AgBlockLog);

    /// <summary>AG block of an fsbno (unchecked).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public uint FsbToAgbno(ulong fsbno) => (uint)(fsbno & ((1UL << AgBlockLog) - 1));

    /// <summary>fsbno of an AG block.</summary>
    public ulong AgbToFsb(uint agno, uint agbno) => ((ulong)agno << AgBlockLog) | agbno;

    /// <summary>True when [fsbno, fsbno+length) lies inside one AG (length ≥ 1).</summary>
    public bool IsValidExtent(ulong fsbno, ulong length)
    {
        if (length == 0) return false;
        ulong agno = fsbno >> AgBlockLog;
        if (agno >= AgCount) return false;
        ulong agbno = fsbno & ((1UL << AgBlockLog) - 1);
        return agbno + length <= AgLength((uint)agno);
    }

    /// <summary>True when [agbno, agbno+length) lies inside AG <paramref name="agno"/> (length ≥ 1).</summary>
    public bool IsValidAgExtent(uint agno, ulong agbno, ulong length)
        => length != 0 && agno < AgCount && agbno + length <= AgLength(agno);

    /// <summary>Bits of an agino: agblklog + inopblog.</summary>
    public int AginoLog => AgBlockLog + InodesPerBlockLog;

    /// <summary>AG number of inode number <paramref name="ino"/> (unchecked: see <see cref="IsValidIno"/>).</summary>
    public uint InoToAgno(ulong ino) => (uint)(ino >> AginoLog);
    /// <summary>AG-relative inode number (agino) of inode number <paramref name="ino"/>.</summary>
    public uint InoToAgino(ulong ino) => (uint)(ino & ((1UL << AginoLog) - 1));
    /// <summary>Inode number of AG-relative inode <paramref name="agino"/> in AG <paramref name="agno"/>.</summary>
    public ulong AginoToIno(uint agno, uint agino) => ((ulong)agno << AginoLog) | agino;
    /// <summary>AG block number of the block that holds AG-relative inode <paramref name="agino"/>.</summary>
    public uint AginoToAgbno(uint agino) => agino >> InodesPerBlockLog;
    /// <summary>Index of AG-relative inode <paramref name="agino"/> inside its block (0 to <see cref="InodesPerBlock"/> - 1).</summary>
    public int AginoToSlot(uint agino) => (int)(agino & (uint)(InodesPerBlock - 1));

    /// <summary>True when the inode number names a slot inside a block of an existing AG.</summary>
    public bool IsValidIno(ulong ino)
    {
        uint agno = (uint)(ino >> AginoLog);
        if ((ino >> AginoLog) >= AgCount) return false;
        uint agbno = AginoToAgbno(InoToAgino(ino));
        return agbno >= FirstFreeBlock && agbno < AgLength(agno);
    }

    /// <summary>True when the agino names a slot inside AG <paramref name="agno"/>.</summary>
    public bool IsValidAgino(uint agno, uint agino)
    {
        if ((ulong)agino >> AginoLog != 0) return false;
        uint agbno = AginoToAgbno(agino);
        return agbno >= FirstFreeBlock && agbno < AgLength(agno);
    }

    /// <summary>Byte offset of an inode in the image.</summary>
    public long InodeByteOffset(uint agno, uint agino)
        => AgBlockToByte(agno, AginoToAgbno(agino)) + (long)AginoToSlot(agino) * InodeSize;
}
