using System.Buffers.Binary;
using Xfbtree.Btree;
using Xfbtree.Xfs.Format;
using Xfbtree.Xfs.Write.Engine;

namespace Xfbtree.Xfs.Write.Space;

/// <summary>
/// The per-AG block reservations the kernel sets aside at mount (xfs_ag_resv_init) so that metadata btrees can
/// always grow: the METADATA pool (finobt and refcountbt: the tree's maximum size, xfs_btree_calc_size over
/// minimum-filled blocks, less the blocks it already has) and the RMAPBT pool (the larger of 1% of the AG and the
/// rmapbt's maximum size, less rmap_blocks). The AG size excludes the internal log when the AG holds it. An
/// allocation may not leave less free space than the pools it is not entitled to: file data may use neither,
/// refcountbt and inode btree blocks may use the METADATA pool (the AGFL, which feeds the rmapbt, is exempt).
/// Allocations the kernel charges to the free-block counter (file data, bmbt, directory blocks, inode chunks) also
/// leave <see cref="SetAside"/>: at mount the kernel takes the pools out of that counter after setting aside
/// xfs_alloc_set_aside's blocks per AG, so an AG filled down to the bare pools fails "Per-AG reservation".
/// </summary>
internal static class AgReservations
{
    /// <summary>xfs_btree_calc_size: blocks of a tree of <paramref name="records"/> records with minimum-filled blocks.</summary>
    public static ulong CalcSize(int leafMin, int nodeMin, ulong records)
    {
        ulong blocks = 0;
        int per = leafMin;
        for (ulong r = records; r > 1;)
        {
            r = (r + (ulong)per - 1) / (ulong)per;
            blocks += r;
            per = nodeMin;
        }
        return blocks;
    }

    /// <summary>The AG's blocks as the reservation code counts them (agf_length, less the internal log).</summary>
    private static ulong UsableBlocks(XfsGeometry geo, uint agno)
    {
        ulong blocks = geo.AgLength(agno);
        Superblock sb = geo.Superblock;
        if (sb.LogStart != 0 && geo.FsbToAgno(sb.LogStart) == agno)
        {
            blocks -= Math.Min(blocks, sb.LogBlocks);
        }
        return blocks;
    }

    /// <summary>(metadata ask, rmapbt ask) of one AG: what the pools hold when the trees are empty.</summary>
    public static (ulong Metadata, ulong Rmap) Asks(XfsGeometry geo, uint agno)
    {
        ulong agblocks = UsableBlocks(geo, agno);
        Superblock sb = geo.Superblock;
        ulong meta = 0, rmap = 0;
        if (sb.HasFinobt)
        {
            var g = new BtreeGeometry(geo.BlockSize, false, 16, 4, false);
            // xfs_inobt_max_size: one record per 64 inodes the AG's blocks could hold (no rounding to the inode alignment).
            meta += CalcSize(g.LeafMinRecords, g.NodeMinRecords, agblocks * (ulong)geo.InodesPerBlock / 64);
        }
        if (sb.HasReflink)
        {
            var g = new BtreeGeometry(geo.BlockSize, false, 12, 4, false);
            meta += CalcSize(g.LeafMinRecords, g.NodeMinRecords, agblocks);
        }
        if (sb.HasRmapbt)
        {
            var g = new BtreeGeometry(geo.BlockSize, false, 24, 20, true);
            rmap = Math.Max(agblocks / 100, CalcSize(g.LeafMinRecords, g.NodeMinRecords, agblocks));
        }
        return (meta, rmap);
    }

    /// <summary>xfs_alloc_set_aside's share of one AG: XFS_ALLOCBT_AGFL_RESERVE (4) to refill an empty AGFL and 4
    /// for a bmbt split.</summary>
    public const int AllocSetAsidePerAg = 4 + 4;

    /// <summary>xfs_default_resblks: the reserve pool a read-write mount takes from the free-block counter (5 % of
    /// the data blocks, at most 8192).</summary>
    public static ulong ReservePool(XfsGeometry geo) => Math.Min(geo.Superblock.DataBlocks / 20, 8192);

    /// <summary>
    /// Blocks of one AG that allocations charged to the kernel's free-block counter must leave on top of the pools,
    /// so that the kernel's mount succeeds without a warning. At mount the kernel takes, from that counter less
    /// <see cref="AllocSetAsidePerAg"/> per AG, first its reserve pool (<see cref="ReservePool"/>), then each AG's
    /// hidden pools (METADATA less its used blocks, RMAPBT whole) -- each AG's wholly from the counter or wholly
    /// from the reserve pool, so a counter short by a few blocks fails ("Per-AG reservation for AG n failed",
    /// "Reserve blocks depleted"). Kept per AG: <see cref="AllocSetAsidePerAg"/>, the AG's share of the reserve pool
    /// (rounded up), and the rmapbt root (rmap_blocks counts it but agf_btreeblks, and so the counter, does not).
    /// </summary>
    public static long SetAside(XfsGeometry geo)
    {
        uint agCount = geo.AgCount;
        long poolShare = (long)((ReservePool(geo) + agCount - 1) / agCount);
        return AllocSetAsidePerAg + poolShare + (geo.Superblock.HasRmapbt ? 1 : 0);
    }

    /// <summary>xfs_ag_resv_needed plus <see cref="SetAside"/>: the blocks an allocation for
    /// <paramref name="purpose"/> must leave free in the AG (besides the free list's own needs).</summary>
    public static long Needed(WriteTransaction tx, AgSpace space, AllocationPurpose purpose)
    {
        var (metaReserved, rmapReserved) = Reserved(tx, space);
        return ForPurpose(tx.Geometry, purpose, metaReserved, rmapReserved);
    }

    /// <summary>The blocks <paramref name="purpose"/> must leave given the unused pools: the refcountbt and inode
    /// btrees may use the METADATA pool, an rmapbt the RMAPBT pool, everything else neither and also leaves
    /// <see cref="SetAside"/>.</summary>
    public static long ForPurpose(XfsGeometry geo, AllocationPurpose purpose, long metaReserved, long rmapReserved) => purpose switch
    {
        AllocationPurpose.RefcountBtreeBlock or AllocationPurpose.InodeBtreeBlock => rmapReserved,
        AllocationPurpose.RmapBtreeBlock => metaReserved,
        _ => metaReserved + rmapReserved + SetAside(geo),
    };

    /// <summary>The unused part of each pool now (ask − blocks the trees have, at least 0).</summary>
    public static (long Metadata, long Rmap) Reserved(WriteTransaction tx, AgSpace space)
    {
        EngineAg ag = tx.Engine.Ag(space.AgNumber);
        var (metaAsk, rmapAsk) = ag.ReservationAsks;
        long metaUsed = space.RefcountBlocks;
        if (tx.Geometry.Superblock.HasFinobt && tx.Geometry.Superblock.HasInobtCounts)
        {
            // agi_fblocks (inobtcount feature); without it the finobt's blocks are not counted (a larger pool).
            metaUsed += BinaryPrimitives.ReadUInt32BigEndian(tx.ReadAgHeader(AgHeaderKind.Agi, space.AgNumber).Span[Agi.FinobtBlocksOffset..]);
        }
        long meta = Math.Max(0, (long)metaAsk - metaUsed);
        long rmap = Math.Max(0, (long)rmapAsk - space.RmapBlocks);
        return (meta, rmap);
    }
}
