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
        : this(image, scan, scanComplete, options, rmapFromDisk: false)
    {
    }

    /// <param name="image">The image (offline) or a read view of the engine's image taken under the AG lock (online).</param>
    /// <param name="scan">The AG's headers, and offline its expected rmap set.</param>
    /// <param name="scanComplete">No AG's scan met damage (offline); true online, where nothing is scanned.</param>
    /// <param name="options">The scrub's options.</param>
    /// <param name="rmapFromDisk">Online: the AG's own on-disk rmapbt, read under the AG lock, is the rmap source of
    /// the free-space and reference-count checks (as the kernel's scrub cross-references), instead of a set computed
    /// from every other piece of metadata; the rmapbt itself is checked apart, against a scan with live hooks.</param>
    /// <param name="rmapDamaged">Online: why the on-disk rmapbt may not serve as the source, or null.</param>
    private AgScrubContext(XfsImage image, AgScanResult scan, bool scanComplete, ScrubOptions options, bool rmapFromDisk, string? rmapDamaged = null)
    {
        _scanComplete = scanComplete;
        Image = image;
        Geometry = image.Geometry;
        Scan = scan;
        Options = options;
        AgNumber = scan.AgNumber;
        AgLength = Geometry.AgLength(AgNumber);
        Store = image.CreateAgStore(AgNumber);
        RmapbtBlockCount = scan.RmapbtBlocks.Count;
        if (rmapDamaged != null)
        {
            RmapUnusable = OnDiskRmapUnusable = rmapDamaged;
            return;
        }
        if (!rmapFromDisk) ComputeFreeExtents();
        IndexOnDiskRmap(rmapFromDisk);
    }

    /// <summary>
    /// The context of an online check of AG <paramref name="agno"/>: its headers read from <paramref name="view"/> (a
    /// read view made while the caller holds the AG's lock, so that every commit to the AG is on disk and none runs),
    /// the AG's on-disk rmapbt as the rmap source.
    /// </summary>
    /// <param name="view">The read view, made under the AG lock.</param>
    /// <param name="agno">The AG.</param>
    /// <param name="options">The scrub's options.</param>
    /// <param name="rmapDamaged">Why the on-disk rmapbt may not serve as the source (the online rmapbt check found it
    /// damaged), or null: the comparisons with it then say "not checked" with this reason.</param>
    public static AgScrubContext ForOnlineCheck(XfsImage view, uint agno, ScrubOptions options, string? rmapDamaged = null)
    {
        var scan = new AgScanResult(agno, null, new ProblemList(options.ProblemLimit));
        scan.MetadataComplete = AgScanner.ReadHeaders(view, scan, scan.Problems);
        return new AgScrubContext(view, scan, scanComplete: true, options, rmapFromDisk: true, rmapDamaged);
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

    /// <summary>Blocks of the on-disk rmapbt (for agf_btreeblks): the scan's count offline, the walk's online.</summary>
    public long RmapbtBlockCount { get; private set; }

    List<(uint Start, uint Length, uint Count)>? _impliedShared;

    /// <summary>The shared extents the rmap source's data records imply (<see cref="SharedExtentSweep"/>); only when
    /// <see cref="RmapUnusable"/> is null.</summary>
    public List<(uint Start, uint Length, uint Count)> ImpliedSharedExtents()
    {
        if (_impliedShared != null) return _impliedShared;
        var sweep = new SharedExtentSweep();
        using var cur = Scan.Expected!.CreateCursor();
        for (bool ok = cur.MoveFirst(); ok; ok = cur.Increment()) sweep.Add(RmapRecord.Read(cur.Current));
        return _impliedShared = sweep.Finish();
    }

    void ComputeFreeExtents()
    {
        if (Scan.Expected is not { } expected) { RmapUnusable = "the AG was not scanned"; return; }
        // Any AG's damage counts: an inode skipped in one AG leaves its extents in every AG out of the set.
        if (!_scanComplete || Scan.Problems.Total > 0 || !Scan.MetadataComplete)
        {
            RmapUnusable = "the scan met damage (see rmapbt), so the space it implies is not complete";
            return;
        }
        var gaps = new FreeExtentGaps();
        using var cur = expected.CreateCursor();
        for (bool ok = cur.MoveFirst(); ok; ok = cur.Increment()) gaps.Add(RmapRecord.Read(cur.Current));
        FreeExtents = gaps.Finish(AgLength);
    }

    /// <summary>One walk of the on-disk rmapbt: its special-owner records, and online also the free extents and the
    /// shared extents it implies (the rmap source of the online checks).</summary>
    void IndexOnDiskRmap(bool rmapFromDisk)
    {
        var agf = Scan.Agf;
        const string Damaged = "the on-disk rmapbt is damaged (see rmapbt)";
        if (agf == null || !agf.TreeRootUsable(AgfTree.Rmapbt, Geometry))
        {
            OnDiskRmapUnusable = "the on-disk rmapbt cannot be located";
            if (rmapFromDisk) RmapUnusable = OnDiskRmapUnusable + " (see rmapbt)";
            return;
        }
        var sink = new OnDiskRmapSink(rmapFromDisk);
        List<string> problems;
        long blocks = 0;
        try { problems = RmapbtWalker.Walk(Image.OpenRmapbt(agf, Store), ref sink, out blocks); }
        catch (CorruptionException e) { problems = [e.Message]; }
        if (problems.Count > 0)
        {
            OnDiskRmapUnusable = Damaged;
            if (rmapFromDisk) RmapUnusable = Damaged;
            return;
        }
        OnDiskOwnAg = sink.Ag;
        OnDiskInodeChunks = sink.Inodes;
        OnDiskCow = sink.Cow;
        if (!rmapFromDisk) return;
        RmapbtBlockCount = blocks;
        if (!sink.InKeyOrder)
        {
            RmapUnusable = Damaged; // records out of order: the sweeps need start order
            return;
        }
        FreeExtents = sink.Gaps!.Finish(AgLength);
        _impliedShared = sink.Shared!.Finish();
    }

    sealed class OnDiskRmapSink(bool rmapSource) : IRmapRecordSink
    {
        /// <summary>Records of the owner each list is named after.</summary>
        public readonly List<(uint, uint)> Ag = new(), Inodes = new(), Cow = new();
        /// <summary>As the rmap source (online): the gaps and the overlaps of every record.</summary>
        public readonly FreeExtentGaps? Gaps = rmapSource ? new FreeExtentGaps() : null;
        public readonly SharedExtentSweep? Shared = rmapSource ? new SharedExtentSweep() : null;
        public bool InKeyOrder = true;
        uint _lastStart;

        /// <summary>Keeps a record of a special owner the checks need; feeds the sweeps.</summary>
        public void Record(in RmapRecord record)
        {
            switch (record.Owner)
            {
                case RmapOwner.Ag: Ag.Add((record.StartBlock, record.BlockCount)); break;
                case RmapOwner.Inodes: Inodes.Add((record.StartBlock, record.BlockCount)); break;
                case RmapOwner.Cow: Cow.Add((record.StartBlock, record.BlockCount)); break;
            }
            if (Gaps == null) return;
            InKeyOrder &= record.StartBlock >= _lastStart;
            _lastStart = record.StartBlock;
            Gaps.Add(record);
            Shared!.Add(record);
        }
    }

    /// <summary>The free extents implied by rmap records fed in start order: every block no record covers.</summary>
    sealed class FreeExtentGaps
    {
        readonly List<ulong> _gaps = new();
        ulong _end;

        public void Add(in RmapRecord r)
        {
            if (r.StartBlock > _end) _gaps.Add(Pack((uint)_end, (uint)(r.StartBlock - _end)));
            _end = Math.Max(_end, (ulong)r.StartBlock + r.BlockCount);
        }

        public List<ulong> Finish(uint agLength)
        {
            if (_end < agLength) _gaps.Add(Pack((uint)_end, (uint)(agLength - _end)));
            return _gaps;
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
