using System.Buffers.Binary;
using System.Numerics;

namespace Xfbtree.Xfs.Format;

/// <summary>
/// One inobt/finobt record, decoded: the chunk's first AG inode number, its holes (sparse chunks), the stored
/// count and free count, and the free mask. The one decoder shared by the offline scan, the online collector,
/// the allocator and the scrub, so that they cannot disagree on the record layout.
/// Layout (16 bytes): startino u32; then holemask u16, count u8, freecount u8 (SPINODES) or freecount u32; free u64.
/// </summary>
/// <param name="StartIno">AG inode number of the chunk's first inode.</param>
/// <param name="HoleMask">One bit per 4 inodes that are not allocated on disk (always 0 without sparse inodes).</param>
/// <param name="Count">Inodes the record says the chunk holds (64 without sparse inodes).</param>
/// <param name="FreeCount">Free inodes the record says the chunk holds (the stored value, possibly above 64 on damage).</param>
/// <param name="Free">One bit per inode: set when the inode is free (holes are set too).</param>
internal readonly record struct InobtRecord(uint StartIno, ushort HoleMask, uint Count, uint FreeCount, ulong Free)
{
    /// <summary>Record size in bytes.</summary>
    public const int Size = 16;

    /// <summary>Inodes a chunk spans (allocated or not).</summary>
    public const int InodesPerChunk = 64;

    /// <summary>Decodes a record in the layout of a filesystem with (<paramref name="sparseInodes"/>) or without sparse inodes.</summary>
    public static InobtRecord Read(ReadOnlySpan<byte> record, bool sparseInodes)
    {
        uint start = BinaryPrimitives.ReadUInt32BigEndian(record);
        ulong free = BinaryPrimitives.ReadUInt64BigEndian(record[8..]);
        if (sparseInodes)
            return new InobtRecord(start, BinaryPrimitives.ReadUInt16BigEndian(record[4..]), record[6], record[7], free);
        return new InobtRecord(start, 0, InodesPerChunk, BinaryPrimitives.ReadUInt32BigEndian(record[4..]), free);
    }

    /// <summary>Encodes the record; <see cref="Count"/> and <see cref="FreeCount"/> must fit the layout.</summary>
    public void Write(Span<byte> record, bool sparseInodes)
    {
        BinaryPrimitives.WriteUInt32BigEndian(record, StartIno);
        if (sparseInodes)
        {
            BinaryPrimitives.WriteUInt16BigEndian(record[4..], HoleMask);
            record[6] = checked((byte)Count);
            record[7] = checked((byte)FreeCount);
        }
        else
        {
            BinaryPrimitives.WriteUInt32BigEndian(record[4..], FreeCount);
        }
        BinaryPrimitives.WriteUInt64BigEndian(record[8..], Free);
    }

    /// <summary>The 64-inode mask of the holes (each holemask bit covers 4 inodes).</summary>
    public ulong Holes => HoleBits(HoleMask);

    /// <summary>Inodes allocated on disk and in use (neither a hole nor free).</summary>
    public ulong InUse => ~Free & ~Holes;

    /// <summary>Free bits of the inodes allocated on disk (holes excluded).</summary>
    public ulong RealFree => Free & ~Holes;

    /// <summary>Inodes allocated on disk (64 minus the holes), from the hole mask.</summary>
    public int AllocatedInodes => InodesPerChunk - 4 * BitOperations.PopCount((uint)HoleMask);

    /// <summary>True when inode <paramref name="index"/> (0..63) of the chunk is a hole.</summary>
    public bool IsHole(int index) => ((HoleMask >> (index >> 2)) & 1) != 0;

    /// <summary>Inodes one holemask bit covers.</summary>
    public const int InodesPerHoleBit = 4;

    /// <summary>
    /// The record of a sparse piece: <paramref name="pieceInodes"/> inodes (a multiple of 4) starting at AG inode
    /// <paramref name="pieceAgino"/>, inside the 64-inode chunk that starts at the piece's agino rounded down to 64
    /// (the kernel's xfs_align_sparse_ino: the record starts where a full chunk would, the holemask shifted to
    /// match); count and free count are the piece's inodes, every inode free (holes are free bits too).
    /// </summary>
    public static InobtRecord ForSparsePiece(uint pieceAgino, int pieceInodes)
    {
        uint start = pieceAgino & ~(uint)(InodesPerChunk - 1);
        int offset = (int)(pieceAgino - start);
        if (pieceInodes <= 0 || pieceInodes % InodesPerHoleBit != 0 || offset % InodesPerHoleBit != 0 || offset + pieceInodes > InodesPerChunk)
            throw new ArgumentException($"sparse piece of {pieceInodes} inodes at agino {pieceAgino} does not fit one chunk in holemask units");
        uint allocMask = ((1u << (pieceInodes / InodesPerHoleBit)) - 1) << (offset / InodesPerHoleBit);
        return new InobtRecord(start, (ushort)~allocMask, (uint)pieceInodes, (uint)pieceInodes, ulong.MaxValue);
    }

    /// <summary>True when this record and <paramref name="other"/> describe disjoint allocated parts of the same
    /// sparse chunk (xfs_inobt_can_merge): same start, both sparse, together at most 64 inodes.</summary>
    public bool CanMerge(in InobtRecord other)
        => StartIno == other.StartIno && HoleMask != 0 && other.HoleMask != 0
           && Count + other.Count <= InodesPerChunk && ((ushort)~HoleMask & (ushort)~other.HoleMask) == 0;

    /// <summary>The union of two mergeable records (xfs_inobt_rec_merge): counts added, holes and free bits
    /// intersected (a hole is a free bit, so each side's inodes keep their own state).</summary>
    public InobtRecord Merge(in InobtRecord other)
    {
        if (!CanMerge(other))
            throw new InvalidOperationException($"inobt records at {StartIno} (holemask 0x{HoleMask:x4}) and {other.StartIno} (holemask 0x{other.HoleMask:x4}) cannot be merged");
        return new InobtRecord(StartIno, (ushort)(HoleMask & other.HoleMask), Count + other.Count, FreeCount + other.FreeCount, Free & other.Free);
    }

    /// <summary>True when the stored count agrees with the holemask and the free count with the free bits of the
    /// allocated inodes (xfs_inobt_rec_check_count and the free-count rule the kernel's verifiers apply).</summary>
    public bool CountsConsistent => Count == (uint)AllocatedInodes && FreeCount == (uint)BitOperations.PopCount(RealFree);

    /// <summary>
    /// The first piece of <paramref name="pieceInodes"/> inodes (a multiple of 4 dividing 64, at a multiple of its
    /// own size inside the chunk) at or after offset <paramref name="from"/> that is wholly a hole: its offset in
    /// the chunk, or -1. Where a sparse chunk can grow in place.
    /// </summary>
    public int NextHolePiece(int pieceInodes, int from = 0)
    {
        if (HoleMask == 0 || pieceInodes <= 0 || pieceInodes % InodesPerHoleBit != 0 || InodesPerChunk % pieceInodes != 0) return -1;
        ulong holes = Holes;
        ulong pieceMask = pieceInodes == InodesPerChunk ? ulong.MaxValue : (1UL << pieceInodes) - 1;
        for (int offset = (Math.Max(0, from) + pieceInodes - 1) / pieceInodes * pieceInodes; offset < InodesPerChunk; offset += pieceInodes)
            if (((holes >> offset) & pieceMask) == pieceMask) return offset;
        return -1;
    }

    /// <summary>The 64-inode mask of the holes of <paramref name="holemask"/>.</summary>
    public static ulong HoleBits(ushort holemask)
    {
        ulong bits = 0;
        for (int k = 0; k < 16; k++)
            if ((holemask & (1 << k)) != 0) bits |= 0xFUL << (4 * k);
        return bits;
    }
}

/// <summary>Where the inodes of a chunk live on disk, for every block and inode size (chunks smaller than a block included).</summary>
internal static class InodeChunkLayout
{
    /// <summary>
    /// The runs of blocks of the chunk starting at <paramref name="startino"/> that hold at least one allocated
    /// (non-hole) inode: what the rmap records as OWN_INODES. With 64 or more inodes per block the chunk is part of
    /// one block, which is allocated unless every inode is a hole.
    /// </summary>
    public static void AllocatedBlockRuns(XfsGeometry geo, uint startino, ushort holemask, List<(uint Start, uint Length)> into)
    {
        ArgumentNullException.ThrowIfNull(geo);
        ArgumentNullException.ThrowIfNull(into);
        uint first = geo.AginoToAgbno(startino);
        int ipb = geo.InodesPerBlock;
        if (ipb >= InobtRecord.InodesPerChunk)
        {
            if (holemask != 0xFFFF) into.Add((first, 1));
            return;
        }
        var rec = new InobtRecord(startino, holemask, 0, 0, 0);
        int nblocks = InobtRecord.InodesPerChunk / ipb;
        int runStart = -1;
        for (int j = 0; j <= nblocks; j++)
        {
            bool allocated = false;
            if (j < nblocks)
                for (int i = j * ipb; i < (j + 1) * ipb; i++)
                    if (!rec.IsHole(i)) { allocated = true; break; }
            if (allocated) { if (runStart < 0) runStart = j; }
            else if (runStart >= 0) { into.Add((first + (uint)runStart, (uint)(j - runStart))); runStart = -1; }
        }
    }

    /// <summary>
    /// Inodes between two places a chunk may start: sb_inoalignmt in inodes, at most a chunk. A filesystem without
    /// sparse inodes may align chunks to less than a chunk (mkfs sets sb_inoalignmt to the inode cluster, 16 KiB
    /// with 512-byte inodes, where the chunk is 32 KiB), so a chunk may start at an odd multiple of 32 inodes; the
    /// kernel's scrub checks this alignment, not 64.
    /// </summary>
    public static uint ChunkAlignmentInodes(XfsGeometry geo)
    {
        ArgumentNullException.ThrowIfNull(geo);
        ulong inodes = (ulong)Math.Max(1u, geo.Superblock.InodeAlignment) * (ulong)geo.InodesPerBlock;
        return (uint)Math.Min(inodes, (ulong)InobtRecord.InodesPerChunk);
    }

    /// <summary>True when the chunk lies inside AG <paramref name="agno"/> and starts where a chunk may start.</summary>
    public static bool ChunkInsideAg(XfsGeometry geo, uint agno, uint startino)
    {
        ArgumentNullException.ThrowIfNull(geo);
        if (!geo.IsValidAgino(agno, startino)) return false;
        if (geo.InodesPerBlock >= InobtRecord.InodesPerChunk) return true;
        return (ulong)geo.AginoToAgbno(startino) + (ulong)geo.InodeChunkBlocks <= geo.AgLength(agno)
               && geo.AginoToSlot(startino) == 0;
    }
}
