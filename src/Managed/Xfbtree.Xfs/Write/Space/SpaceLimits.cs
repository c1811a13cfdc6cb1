using System.Runtime.CompilerServices;
using Xfbtree.Xfs.Format;

namespace Xfbtree.Xfs.Write.Space;

/// <summary>Tree bounds of one filesystem, computed once (every transaction asks for them many times).</summary>
internal sealed class SpaceLimits
{
    private static readonly ConditionalWeakTable<XfsGeometry, SpaceLimits> Cache = new();

    private SpaceLimits(XfsGeometry geo)
    {
        MaxRecords = [XfsTreeLimits.MaxRecords(geo, AgfTree.Bnobt), XfsTreeLimits.MaxRecords(geo, AgfTree.Cntbt),
            XfsTreeLimits.MaxRecords(geo, AgfTree.Rmapbt), XfsTreeLimits.MaxRecords(geo, AgfTree.Refcountbt)];
        AllocMaxLevels = XfsTreeLimits.MaxLevels(geo, AgfTree.Bnobt);
        RmapMaxLevels = XfsTreeLimits.MaxLevels(geo, AgfTree.Rmapbt);
    }

    public static SpaceLimits For(XfsGeometry geo) => Cache.GetValue(geo, static g => new SpaceLimits(g));

    /// <summary>Record bounds indexed by <see cref="AgfTree"/>.</summary>
    public long[] MaxRecords { get; }

    /// <summary>m_alloc_maxlevels (bnobt and cntbt).</summary>
    public int AllocMaxLevels { get; }

    /// <summary>m_rmap_maxlevels.</summary>
    public int RmapMaxLevels { get; }
}
