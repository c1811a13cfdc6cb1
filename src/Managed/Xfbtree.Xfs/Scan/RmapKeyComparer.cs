using Xfbtree.Xfs.Trees;

namespace Xfbtree.Xfs.Scan;

/// <summary>rmapbt key order: (startblock, owner, offset with the unwritten bit cleared), all unsigned.</summary>
internal readonly struct RmapKeyComparer : IComparer<RmapRecord>
{
    public int Compare(RmapRecord x, RmapRecord y)
    {
        if (x.StartBlock != y.StartBlock) return x.StartBlock < y.StartBlock ? -1 : 1;
        if (x.Owner != y.Owner) return x.Owner < y.Owner ? -1 : 1;
        ulong a = x.RawOffset & ~RmapbtOps.UnwrittenFlag, b = y.RawOffset & ~RmapbtOps.UnwrittenFlag;
        return a == b ? 0 : a < b ? -1 : 1;
    }
}
