using System.Buffers.Binary;
using Xfbtree.Buffers;
using Xfbtree.Xfs.Format;

namespace Xfbtree.Xfs.Repair;

/// <summary>
/// The header fields an rmapbt rebuild changes (docs/xfs-format.md §3.5), written in place into sector buffers,
/// each edit followed by the sector's CRC. Offsets come from the readers in Format/.
/// </summary>
internal static class AgHeaderEditor
{
    const int SbFeaturesIncompat = Superblock.OffsetIncompat, SbFreeDataBlocks = Superblock.OffsetFdblocks, SbCrc = Superblock.CrcOffset;
    const uint IncompatNeedsRepair = Superblock.IncompatNeedsRepair;
    const int AgfRmapRoot = Agf.OffsetRmapRoot, AgfRmapLevel = Agf.OffsetRmapLevel, AgfFlFirst = Agf.OffsetFlFirst,
              AgfFlLast = Agf.OffsetFlLast, AgfFlCount = Agf.OffsetFlCount, AgfBtreeBlocks = Agf.OffsetBtreeBlocks,
              AgfRmapBlocks = Agf.OffsetRmapBlocks, AgfCrc = Agf.CrcOffset;
    const int AgflHeaderSize = Agfl.HeaderSize, AgflCrc = Agfl.CrcOffset;
    const uint NullAgBlock = Agfl.NullAgBlock;

    /// <summary>Sets or clears NEEDSREPAIR in the primary superblock sector and recomputes its CRC.</summary>
    public static void SetNeedsRepair(Span<byte> superblockSector, bool on)
    {
        uint incompat = BinaryPrimitives.ReadUInt32BigEndian(superblockSector[SbFeaturesIncompat..]);
        incompat = on ? incompat | IncompatNeedsRepair : incompat & ~IncompatNeedsRepair;
        BinaryPrimitives.WriteUInt32BigEndian(superblockSector[SbFeaturesIncompat..], incompat);
        XfsCrc.Update(superblockSector, SbCrc);
    }

    /// <summary>Sets sb_fdblocks and recomputes the CRC.</summary>
    public static void SetFreeDataBlocks(Span<byte> superblockSector, ulong freeBlocks)
    {
        BinaryPrimitives.WriteUInt64BigEndian(superblockSector[SbFreeDataBlocks..], freeBlocks);
        XfsCrc.Update(superblockSector, SbCrc);
    }

    /// <summary>Reads sb_fdblocks.</summary>
    public static ulong FreeDataBlocks(ReadOnlySpan<byte> superblockSector)
        => BinaryPrimitives.ReadUInt64BigEndian(superblockSector[SbFreeDataBlocks..]);

    /// <summary>
    /// Points the AGF at a new rmapbt and a rewritten AGFL (filled from slot 0, as xfs_repair writes it) and
    /// recomputes the CRC. An empty list is written as mkfs does: flfirst 0, fllast N-1, flcount 0.
    /// </summary>
    public static void PointAgfAtNewRmapbt(Span<byte> agfSector, uint root, int height, uint rmapBlocks, uint btreeBlocks, int agflCount, int agflCapacity)
    {
        ArgumentOutOfRangeException.ThrowIfGreaterThan(agflCount, agflCapacity);
        BinaryPrimitives.WriteUInt32BigEndian(agfSector[AgfRmapRoot..], root);
        BinaryPrimitives.WriteUInt32BigEndian(agfSector[AgfRmapLevel..], (uint)height);
        BinaryPrimitives.WriteUInt32BigEndian(agfSector[AgfRmapBlocks..], rmapBlocks);
        BinaryPrimitives.WriteUInt32BigEndian(agfSector[AgfBtreeBlocks..], btreeBlocks);
        BinaryPrimitives.WriteUInt32BigEndian(agfSector[AgfFlFirst..], 0);
        BinaryPrimitives.WriteUInt32BigEndian(agfSector[AgfFlLast..], (uint)(agflCount == 0 ? agflCapacity - 1 : agflCount - 1));
        BinaryPrimitives.WriteUInt32BigEndian(agfSector[AgfFlCount..], (uint)agflCount);
        XfsCrc.Update(agfSector, AgfCrc);
    }

    /// <summary>Slots of an AGFL sector.</summary>
    public static int AgflCapacity(int sectorSize) => (sectorSize - AgflHeaderSize) / 4;

    /// <summary>Writes the AGFL list from slot 0, NULLAGBLOCK in every other slot, and recomputes the CRC.</summary>
    public static void WriteAgfl(Span<byte> agflSector, IReadOnlyList<uint> blocks)
    {
        ArgumentNullException.ThrowIfNull(blocks);
        int capacity = AgflCapacity(agflSector.Length);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(blocks.Count, capacity);
        for (int i = 0; i < capacity; i++)
        {
            BinaryPrimitives.WriteUInt32BigEndian(agflSector[(AgflHeaderSize + 4 * i)..], i < blocks.Count ? blocks[i] : NullAgBlock);
        }
        XfsCrc.Update(agflSector, AgflCrc);
    }
}
