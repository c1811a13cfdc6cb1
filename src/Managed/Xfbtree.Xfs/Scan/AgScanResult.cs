using Xfbtree.Xfs.Format;

namespace Xfbtree.Xfs.Scan;

/// <summary>
/// What the scan found for one AG: the expected rmap set, the AG headers as read, the blocks of the AG's own
/// metadata trees and the problems met. Headers are null when they could not be read (see <see cref="Problems"/>).
/// </summary>
public sealed class AgScanResult : IDisposable
{
    internal AgScanResult(uint agno, AgRmapSet? set, ProblemList problems)
    {
        AgNumber = agno;
        Expected = set;
        Problems = problems;
    }

    /// <summary>The allocation group scanned (0-based AG number).</summary>
    public uint AgNumber { get; }
    /// <summary>Expected rmap records (null for an AG that was not selected).</summary>
    internal AgRmapSet? Expected { get; }
    /// <summary>Damage met while scanning this AG's metadata, and duplicate mappings into this AG.</summary>
    public ProblemList Problems { get; }
    internal Agf? Agf { get; set; }
    internal Agi? Agi { get; set; }
    internal Agfl? Agfl { get; set; }
    /// <summary>bnobt blocks, ascending.</summary>
    public IReadOnlyList<uint> BnobtBlocks { get; internal set; } = [];
    /// <summary>cntbt blocks, ascending.</summary>
    public IReadOnlyList<uint> CntbtBlocks { get; internal set; } = [];
    /// <summary>Blocks of the on-disk rmapbt reachable from the AGF root (leaves are not read), ascending.</summary>
    public IReadOnlyList<uint> RmapbtBlocks { get; internal set; } = [];
    /// <summary>False when the rmapbt's own blocks could not all be found (its root unusable, a node that does not
    /// read): the expected set then lacks some of its OWN_AG blocks, which would look free.</summary>
    public bool RmapbtBlocksComplete { get; internal set; }
    /// <summary>Live AGFL entries in list order.</summary>
    public IReadOnlyList<uint> AgflBlocks => Agfl?.Blocks ?? [];
    /// <summary>In-use inodes of this AG that were scanned.</summary>
    public long InodesScanned { get; internal set; }
    /// <summary>True when the AGF, AGI and AGFL were read and every AG metadata tree was walked without damage.</summary>
    public bool MetadataComplete { get; internal set; }

    /// <summary>Returns the memory of the expected rmap set (the xfile itself belongs to the <see cref="RmapScanResult"/>).</summary>
    public void Dispose() => Expected?.Dispose();
}
