using System.Buffers.Binary;
using Xfbtree.Btree;
using Xfbtree.Buffers;
using Xfbtree.Xfs.Check;
using Xfbtree.Xfs.Format;
using Xfbtree.Xfs.Scan;
using Xfbtree.Xfs.Trees;

namespace Xfbtree.Xfs.Scrub;

/// <summary>
/// What the per-structure checks of one AG share: the AG's scan (headers as read, the expected rmap set computed
/// from every other piece of metadata), the free extents that set implies, and the special-owner records of the
/// on-disk rmapbt (the independent record of where the inode chunks, AG blocks and CoW staging extents are).
/// </summary>
internal sealed class AgScrubContext
{
    /// <summary>Prepares the checks of the AG <paramref name="scan"/> covers; <paramref name="scanComplete"/>: no AG's scan met damage.</summary>
    public AgScrubContext(XfsImage image, AgScanResult scan, bool scanComplete, ScrubOptions options)
    {
        _scanComplete = scanComplete;
        Image = image;
        Geometry = image.Geometry;
        Scan = scan;
        Options = options;
        AgNumber = scan.AgNumber;
        AgLength = Geometry.AgLength(AgNumber);
        Store = image.CreateAgStore(AgNumber);
        ComputeFreeExtents();
        IndexOnDiskRmap();
    }

    readonly bool _scanComplete;

    /// <summary>True when the scan of every AG met no damage (the expected sets are complete).</summary>
    public bool ScanComplete => _scanComplete;

    /// <summary>The image (read through its cache).</summary>
    public XfsImage Image { get; }
    /// <summary>The image's geometry.</summary>
    public XfsGeometry Geometry { get; }
    /// <summary>This AG's scan: headers as read, expected rmap set, problems.</summary>
    public AgScanResult Scan { get; }
    /// <summary>The scrub's options.</summary>
    public ScrubOptions Options { get; }
    /// <summary>The AG.</summary>
    public uint AgNumber { get; }
    /// <summary>The AG's length in blocks.</summary>
    public uint AgLength { get; }
    /// <summary>Block store for this AG's trees.</summary>
    public AgBtreeBlockStore Store { get; }

    /// <summary>
    /// The free extents the expected rmap set implies (every block not in a record), ascending, packed
    /// (start &lt;&lt; 32 | length); null when the scan met damage, so that the set may lack records (<see cref="RmapUnusable"/>).
    /// </summary>
    public List<ulong>? FreeExtents { get; private set; }
    /// <summary>Why <see cref="FreeExtents"/> and the reference counts are not available.</summary>
    public string? RmapUnusable { get; private set; }

    /// <summary>On-disk rmapbt OWN_AG records (start, length), in key order; null when the rmapbt could not be read whole.</summary>
    public List<(uint Start, uint Length)>? OnDiskOwnAg { get; private set; }
    /// <summary>On-disk rmapbt OWN_INODES records, in key order; null as <see cref="OnDiskOwnAg"/>.</summary>
    public List<(uint Start, uint Length)>? OnDiskInodeChunks { get; private set; }
    /// <summary>On-disk rmapbt OWN_COW records, in key order; null as <see cref="OnDiskOwnAg"/>.</summary>
    public List<(uint Start, uint Length)>? OnDiskCow { get; private set; }
    /// <summary>Why the on-disk rmapbt records are not available.</summary>
    public string? OnDiskRmapUnusable { get; private set; }

    /// <summary>Blocks the bnobt/cntbt/inobt/finobt/refcountbt checks walked (for the AG header counters); -1 when not walked.</summary>
    public long BnobtBlocks = -1, CntbtBlocks = -1, InobtBlocks = -1, FinobtBlocks = -1, RefcountBlocks = -1;
    /// <summary>Heights of the trees by their root blocks' level fields; -1 when not known.</summary>
    public int BnobtHeight = -1, CntbtHeight = -1, InobtHeight = -1, FinobtHeight = -1, RefcountHeight = -1;
    /// <summary>Inodes allocated on disk and free inodes per the inobt records (for the AGI counters); -1 when not walked.</summary>
    public long InobtInodes = -1, InobtFreeInodes = -1;

    /// <summary>Packs a free extent.</summary>
    public static ulong Pack(uint start, uint length) => ((ulong)start << 32) | length;
    /// <summary>Start of a packed extent.</summary>
    public static uint StartOf(ulong packed) => (uint)(packed >> 32);
    /// <summary>Length of a packed extent.</summary>
    public static uint LengthOf(ulong packed) => (uint)packed;

    void ComputeFreeExtents()
    {
        if (Scan.Expected is not { } expected) { RmapUnusable = "the AG was not scanned"; return; }
        // Any AG's damage counts: an inode skipped in one AG leaves its extents in every AG out of the set.
        if (!_scanComplete || Scan.Problems.Total > 0 || !Scan.MetadataComplete)
        {
            RmapUnusable = "the scan met damage (see rmapbt), so the space it implies is not complete";
            return;
        }
        var gaps = new List<ulong>();
        ulong end = 0;
        using var cur = expected.CreateCursor();
        for (bool ok = cur.MoveFirst(); ok; ok = cur.Increment())
        {
            var r = RmapRecord.Read(cur.Current);
            if (r.StartBlock > end) gaps.Add(Pack((uint)end, (uint)(r.StartBlock - end)));
            end = Math.Max(end, (ulong)r.StartBlock + r.BlockCount);
        }
        if (end < AgLength) gaps.Add(Pack((uint)end, (uint)(AgLength - end)));
        FreeExtents = gaps;
    }

    void IndexOnDiskRmap()
    {
        var agf = Scan.Agf;
        if (agf == null || !agf.TreeRootUsable(AgfTree.Rmapbt, Geometry)) { OnDiskRmapUnusable = "the on-disk rmapbt cannot be located"; return; }
        var sink = new SpecialOwnerSink { Ag = new(), Inodes = new(), Cow = new() };
        List<string> problems;
        try { problems = RmapbtWalker.Walk(Image.OpenRmapbt(agf, Store), ref sink, out _); }
        catch (CorruptionException e) { problems = [e.Message]; }
        if (problems.Count > 0) { OnDiskRmapUnusable = "the on-disk rmapbt is damaged (see rmapbt)"; return; }
        OnDiskOwnAg = sink.Ag;
        OnDiskInodeChunks = sink.Inodes;
        OnDiskCow = sink.Cow;
    }

    struct SpecialOwnerSink : IRmapRecordSink
    {
        /// <summary>Records of the owner each list is named after.</summary>
        public List<(uint, uint)> Ag, Inodes, Cow;
        /// <summary>Keeps a record of a special owner the checks need.</summary>
        public readonly void Record(in RmapRecord record)
        {
            switch (record.Owner)
            {
                case RmapOwner.Ag: Ag.Add((record.StartBlock, record.BlockCount)); break;
                case RmapOwner.Inodes: Inodes.Add((record.StartBlock, record.BlockCount)); break;
                case RmapOwner.Cow: Cow.Add((record.StartBlock, record.BlockCount)); break;
            }
        }
    }

    /// <summary>Adds the structure violations of a checker walk to <paramref name="finding"/>.</summary>
    public static void AddViolations(ScrubFinding finding, BtreeCheckReport check)
    {
        foreach (var v in check.Violations) finding.Damage(v);
        if (check.ViolationCount > check.Violations.Count) finding.Damage(check.ViolationCount - check.Violations.Count, $"{check.ViolationCount - check.Violations.Count} more structure violations");
    }

    /// <summary>
    /// Checks the root block of a tree as the header sees it: a root has no siblings (the engine's checker does not
    /// look at the root's sibling fields). Returns the root's height from its own level field (for the header's
    /// level counter), or -1 when the block is not a block of this tree (its magic differs; the tree check reports it).
    /// </summary>
    public int CheckRoot(ScrubFinding finding, uint rootAgbno, uint magic)
    {
        if (rootAgbno < 1 || rootAgbno >= AgLength) return -1;
        BlockBuffer buf;
        try { buf = ReadBlock(rootAgbno); }
        catch (Exception e) when (e is CorruptionException or IOException) { return -1; }
        try
        {
            var b = buf.Span;
            if (BinaryPrimitives.ReadUInt32BigEndian(b) != magic) return -1;
            uint left = BinaryPrimitives.ReadUInt32BigEndian(b[8..]), right = BinaryPrimitives.ReadUInt32BigEndian(b[12..]);
            if (left != NullAgBlock || right != NullAgBlock) finding.Damage($"root block {rootAgbno} has siblings (left {Sib(left)}, right {Sib(right)})");
            return BinaryPrimitives.ReadUInt16BigEndian(b[4..]) + 1;
        }
        finally { Image.Cache.Release(buf); }
    }

    const uint NullAgBlock = 0xFFFFFFFF;
    static string Sib(uint s) => s == NullAgBlock ? "null" : s.ToString(System.Globalization.CultureInfo.InvariantCulture);

    /// <summary>Reads one AG block through the cache (shared); the caller releases it.</summary>
    public BlockBuffer ReadBlock(uint agbno)
        => Image.Cache.Read(Image.Target, Geometry.AgBlockToDaddr(AgNumber, agbno), Geometry.BasicBlocksPerBlock, null, BufferLockMode.Shared);
}
