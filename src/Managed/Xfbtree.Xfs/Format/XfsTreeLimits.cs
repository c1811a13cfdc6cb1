using Xfbtree.Btree;

namespace Xfbtree.Xfs.Format;

/// <summary>
/// Record bounds and the resulting maximum heights of the per-AG trees, as XFS derives them from the AG size
/// (minrecs-filled trees): bnobt/cntbt hold at most (agblocks+1)/2 extents, inobt/finobt one record per 64 inodes,
/// refcountbt at most agblocks/2 extents, rmapbt one record per block without reflink and (with reflink, where a
/// block may have many owners) as many records as minimum-filled blocks fit in the AG.
/// </summary>
internal static class XfsTreeLimits
{
    /// <summary>Upper bound on records of a tree rooted in the AGF.</summary>
    public static long MaxRecords(XfsGeometry geo, AgfTree tree)
    {
        ArgumentNullException.ThrowIfNull(geo);
        long ag = geo.AgBlocks;
        return tree switch
        {
            AgfTree.Bnobt or AgfTree.Cntbt => (ag + 1) / 2,
            AgfTree.Refcountbt => (ag + 1) / 2,
            _ => geo.Superblock.HasReflink ? ag * (long)new BtreeGeometry(geo.BlockSize, false, 24, 20, true).LeafMinRecords : ag,
        };
    }

    /// <summary>Upper bound on records of an inode btree.</summary>
    public static long MaxInobtRecords(XfsGeometry geo)
    {
        ArgumentNullException.ThrowIfNull(geo);
        return Math.Max(1, (long)geo.AgBlocks * geo.InodesPerBlock / 64 + 1);
    }

    /// <summary>Largest legal height of a tree rooted in the AGF.</summary>
    public static int MaxLevels(XfsGeometry geo, AgfTree tree)
    {
        ArgumentNullException.ThrowIfNull(geo);
        var g = tree switch
        {
            AgfTree.Bnobt or AgfTree.Cntbt => new BtreeGeometry(geo.BlockSize, false, 8, 8, false, MaxRecords(geo, tree)),
            AgfTree.Refcountbt => new BtreeGeometry(geo.BlockSize, false, 12, 4, false, MaxRecords(geo, tree)),
            _ => new BtreeGeometry(geo.BlockSize, false, 24, 20, true, MaxRecords(geo, tree)),
        };
        return g.MaxLevels;
    }

    /// <summary>Largest legal height of an inode btree.</summary>
    public static int MaxInobtLevels(XfsGeometry geo)
        => new BtreeGeometry(geo.BlockSize, false, 16, 4, false, MaxInobtRecords(geo)).MaxLevels;
}
