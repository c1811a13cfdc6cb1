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

    /// <summary>The first in-use inodes of this AG whose core is damaged (<see cref="DamagedInodeTotal"/> counts every
    /// one), in inode order; null when the cores were not judged (an online check's context).</summary>
    internal List<DamagedInode>? DamagedInodes { get; private set; }
    /// <summary>Every damaged inode core met.</summary>
    internal long DamagedInodeTotal { get; private set; }
    /// <summary>Damaged inode cores kept per AG (each is one report line; all are counted).</summary>
    internal const int DamagedInodeLimit = 10_000;

    /// <summary>Records a damaged core (the AG's one scan worker calls this).</summary>
    internal void AddDamagedInode(DamagedInode inode)
    {
        DamagedInodes ??= new List<DamagedInode>();
        DamagedInodeTotal++;
        if (DamagedInodes.Count < DamagedInodeLimit) DamagedInodes.Add(inode);
    }

    /// <summary>Marks the cores and attr forks as judged (none damaged so far).</summary>
    internal void CoresJudged()
    {
        DamagedInodes ??= new List<DamagedInode>();
        DamagedAttrForks ??= new List<DamagedInode>();
    }

    /// <summary>The first in-use inodes of this AG whose attr fork is damaged (<see cref="DamagedAttrForkTotal"/>
    /// counts every one); null when not judged.</summary>
    internal List<DamagedInode>? DamagedAttrForks { get; private set; }
    /// <summary>Every damaged attr fork met.</summary>
    internal long DamagedAttrForkTotal { get; private set; }

    /// <summary>Records a damaged attr fork (the AG's one scan worker calls this).</summary>
    internal void AddDamagedAttrFork(DamagedInode inode)
    {
        DamagedAttrForks ??= new List<DamagedInode>();
        DamagedAttrForkTotal++;
        if (DamagedAttrForks.Count < DamagedInodeLimit) DamagedAttrForks.Add(inode);
    }

    /// <summary>Returns the memory of the expected rmap set (the xfile itself belongs to the <see cref="RmapScanResult"/>).</summary>
    public void Dispose() => Expected?.Dispose();
}

/// <summary>An in-use inode whose core breaks the rules of <see cref="InodeCoreRules"/> (or does not verify at all).</summary>
/// <param name="Ino">The inode.</param>
/// <param name="Problems">What is wrong, "; "-separated.</param>
/// <param name="Certain">True when every problem has a certain fix (the repair sets it); false when xfs_repair would
/// clear the inode.</param>
/// <param name="Part">What of the inode is damaged: "core" or "attr fork".</param>
internal readonly record struct DamagedInode(ulong Ino, string Problems, bool Certain, string Part = "core")
{
    /// <summary>"inode 1234 core: damaged: di_onlink 5 (must be 0 in a v3 inode)".</summary>
    public override string ToString() => $"inode {Ino} {Part}: damaged: {Problems}";

    /// <summary>The problems in one text, the uncertain ones marked.</summary>
    internal static string Describe(List<InodeCoreProblem> problems)
    {
        var parts = new string[problems.Count];
        for (int i = 0; i < problems.Count; i++) parts[i] = problems[i].Certain ? problems[i].What : problems[i].What + " (no certain fix)";
        return string.Join("; ", parts);
    }
}
