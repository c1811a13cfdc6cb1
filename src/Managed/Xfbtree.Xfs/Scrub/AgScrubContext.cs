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
    /// <summary>
    /// Prepares the checks of the AG <paramref name="scan"/> covers; <paramref name="scanComplete"/>: no AG's scan met
    /// damage. Runs the rmapbt compare (<see cref="RmapReport"/>) and derives, in that same pass over the expected set
    /// and the on-disk rmapbt, the free extents, the implied reference counts and the special-owner records.
    /// <paramref name="scratch"/> lends the lists (reused from AG to AG; <see cref="ReleaseScratch"/> gives them back).
    /// </summary>
    public AgScrubContext(XfsImage image, AgScanResult scan, bool scanComplete, ScrubOptions options, ScrubScratch scratch)
        : this(image, scan, scanComplete, options, scratch, online: false, rmapDamaged: null)
    {
    }

    /// <summary>
    /// The context of an online check of AG <paramref name="agno"/>: its headers read from <paramref name="view"/> (a
    /// read view made while the caller holds the AG's lock, so that every commit to the AG is on disk and none runs);
    /// the AG's own on-disk rmapbt, walked once, is the rmap source of the free-space, reference-count and
    /// special-owner comparisons (as the kernel's scrub cross-references), instead of a set computed from every other
    /// piece of metadata: the rmapbt itself is checked apart, against a scan with live hooks.
    /// </summary>
    /// <param name="view">The read view, made under the AG lock.</param>
    /// <param name="agno">The AG.</param>
    /// <param name="options">The scrub's options.</param>
    /// <param name="rmapDamaged">Why the on-disk rmapbt may not serve as the source (the online rmapbt check found it
    /// damaged), or null: the comparisons with it then say "not checked" with this reason.</param>
    /// <param name="primarySuperblock">The engine's in-core primary superblock, the secondaries' source.</param>
    public static AgScrubContext ForOnlineCheck(XfsImage view, uint agno, ScrubOptions options, string? rmapDamaged = null, byte[]? primarySuperblock = null)
    {
        var scan = new AgScanResult(agno, null, new ProblemList(options.ProblemLimit));
        scan.MetadataComplete = AgScanner.ReadHeaders(view, scan, scan.Problems);
        return new AgScrubContext(view, scan, scanComplete: true, options, new ScrubScratch(), online: true, rmapDamaged) { PrimarySuperblock = primarySuperblock };
    }

    /// <summary>The primary superblock the secondaries are compared with: online the engine's in-core copy (the sector
    /// on disk may be damaged behind its back: that is the primary's own finding); null offline, where the primary on
    /// disk verified when the image was opened.</summary>
    public byte[]? PrimarySuperblock { get; private init; }

    private AgScrubContext(XfsImage image, AgScanResult scan, bool scanComplete, ScrubOptions options, ScrubScratch scratch, bool online, string? rmapDamaged)
    {
        _scanComplete = scanComplete;
        Image = image;
        Geometry = image.Geometry;
        Scan = scan;
        Options = options;
        AgNumber = scan.AgNumber;
        AgLength = Geometry.AgLength(AgNumber);
        Store = image.CreateAgStore(AgNumber);
        Scratch = scratch;
        RmapbtBlockCount = scan.RmapbtBlocks.Count;
        IsOnline = online;
        if (!online)
        {
            CompareRmapAndDerive(scratch);
            return;
        }
        RmapReport = new AgCheckReport(AgNumber); // the online rmapbt check is made apart
        if (rmapDamaged != null)
        {
            RmapUnusable = OnDiskRmapUnusable = rmapDamaged;
            return;
        }
        DeriveFromOnDiskRmap(scratch);
    }

    /// <summary>True for the context of an online check (no offline scan behind it).</summary>
    public bool IsOnline { get; }

    /// <summary>Blocks of the on-disk rmapbt (for agf_btreeblks): the scan's count offline, the walk's online.</summary>
    public long RmapbtBlockCount { get; private set; }

    /// <summary>
    /// Online: one walk of the on-disk rmapbt hands every record to the same derivation the offline compare feeds
    /// from the expected set (gaps, shared extents) and from the on-disk records (special owners): here the on-disk
    /// records are both. Damage in the walk (or records out of key order) leaves the comparisons "not checked".
    /// </summary>
    void DeriveFromOnDiskRmap(ScrubScratch scratch)
    {
        const string Damaged = "the on-disk rmapbt is damaged (see rmapbt)";
        var agf = Scan.Agf;
        if (agf == null || !agf.TreeRootUsable(AgfTree.Rmapbt, Geometry))
        {
            OnDiskRmapUnusable = "the on-disk rmapbt cannot be located";
            RmapUnusable = OnDiskRmapUnusable + " (see rmapbt)";
            return;
        }
        var pass = new DerivingObserver(scratch, AgLength, Image.Superblock.HasReflink);
        var sink = new SourceSink(pass);
        List<string> problems;
        long blocks = 0;
        try { problems = RmapbtWalker.Walk(Image.OpenRmapbt(agf, Store), ref sink, out blocks); }
        catch (CorruptionException e) { problems = [e.Message]; }
        if (problems.Count > 0 || !sink.InKeyOrder)
        {
            OnDiskRmapUnusable = RmapUnusable = Damaged;
            return;
        }
        if (!pass.RecordsHeaders)
        {
            OnDiskRmapUnusable = RmapUnusable = HeadersUnrecorded;
            return;
        }
        RmapbtBlockCount = blocks;
        FreeExtents = pass.FinishFreeExtents();
        ImpliedShared = pass.FinishShared();
        OnDiskOwnAg = scratch.OwnAg;
        OnDiskInodeChunks = scratch.InodeChunks;
        OnDiskCow = scratch.Cow;
    }

    /// <summary>The on-disk records as the rmap source: each is an expected record and an on-disk one of the derivation.</summary>
    sealed class SourceSink(DerivingObserver pass) : IRmapRecordSink
    {
        uint _lastStart;

        /// <summary>False when a record starts before the one before it (the sweeps need start order).</summary>
        public bool InKeyOrder { get; private set; } = true;

        public void Record(in RmapRecord record)
        {
            InKeyOrder &= record.StartBlock >= _lastStart;
            _lastStart = record.StartBlock;
            pass.Expected(record);
            pass.OnDisk(record);
        }
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
    /// <summary>The lists lent to this AG's checks.</summary>
    public ScrubScratch Scratch { get; }

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

    /// <summary>
    /// The shared extents (start, length, count) the overlaps of the expected set's data records imply, ascending
    /// (<see cref="SharedExtentSweep"/>); null without reflink or when <see cref="RmapUnusable"/>.
    /// </summary>
    public List<(uint Start, uint Length, uint Count)>? ImpliedShared { get; private set; }

    /// <summary>The rmapbt compare of this AG (<see cref="RmapChecker"/>), run when the context was made.</summary>
    public AgCheckReport RmapReport { get; private set; } = null!;
    /// <summary>Wall time of the rmapbt compare and what was derived in its pass.</summary>
    public TimeSpan RmapCompareElapsed { get; private set; }

    /// <summary>Blocks the bnobt/cntbt/inobt/finobt/refcountbt checks walked (for the AG header counters); -1 when not walked.</summary>
    public long BnobtBlocks = -1, CntbtBlocks = -1, InobtBlocks = -1, FinobtBlocks = -1, RefcountBlocks = -1;
    /// <summary>Heights of the trees by their root blocks' level fields; -1 when not known.</summary>
    public int BnobtHeight = -1, CntbtHeight = -1, InobtHeight = -1, FinobtHeight = -1, RefcountHeight = -1;
    /// <summary>Inodes allocated on disk and free inodes per the inobt records (for the AGI counters); -1 when not walked.</summary>
    public long InobtInodes = -1, InobtFreeInodes = -1;

    /// <summary>What the inode core walk saw of the AGI unlinked lists (for the AGI check); null when the inobt could
    /// not be walked.</summary>
    public UnlinkedInodeState? Unlinked;

    /// <summary>The link count scan of the whole image (null: one AG, or online), told which inodes the AGI check
    /// found on the unlinked lists (an in-use inode with nlink 0 on none is an orphan).</summary>
    public LinkCountScrubber? Links;

    /// <summary>Packs a free extent.</summary>
    public static ulong Pack(uint start, uint length) => ((ulong)start << 32) | length;
    /// <summary>Start of a packed extent.</summary>
    public static uint StartOf(ulong packed) => (uint)(packed >> 32);
    /// <summary>Length of a packed extent.</summary>
    public static uint LengthOf(ulong packed) => (uint)packed;

    /// <summary>
    /// One pass for what used to take three over the expected set and two over the on-disk rmapbt: the rmapbt compare
    /// hands every expected record (key order, so start order) to a sweep for the gaps (the free extents) and, with
    /// reflink, to the shared-extent sweep; and every on-disk record to the special-owner lists. The lists are kept
    /// only when the checker's walk met no violation: then the walk read every leaf in key order, exactly what the
    /// tolerant walker would read. Otherwise the tolerant walker (which skips bad subtrees and says whether it did)
    /// decides, as before, so the findings are the same either way.
    /// </summary>
    void CompareRmapAndDerive(ScrubScratch scratch)
    {
        var start = System.Diagnostics.Stopwatch.StartNew();
        var agf = Scan.Agf;
        bool rootUsable = agf != null && agf.TreeRootUsable(AgfTree.Rmapbt, Geometry);
        if (Scan.Expected == null)
        {
            RmapUnusable = "the AG was not scanned";
            RmapReport = new AgCheckReport(AgNumber);
        }
        else if (!HasRmapbt)
        {
            DeriveWithoutRmapbt(scratch);
            RmapCompareElapsed = start.Elapsed;
            return;
        }
        else
        {
            var pass = new DerivingObserver(scratch, AgLength, Image.Superblock.HasReflink);
            RmapReport = RmapChecker.CheckAg(Image, Scan, RmapbtScrubber.CheckOptions(Options), pass);
            // Any AG's damage counts: an inode skipped in one AG leaves its extents in every AG out of the set.
            if (!_scanComplete || Scan.Problems.Total > 0 || !Scan.MetadataComplete)
                RmapUnusable = "the scan met damage (see rmapbt), so the space it implies is not complete";
            else if (!Scan.RmapbtBlocksComplete)
                RmapUnusable = "the rmapbt's own blocks cannot all be found (see rmapbt), so the space the rmap implies is not complete";
            else
            {
                FreeExtents = pass.FinishFreeExtents();
                ImpliedShared = pass.FinishShared();
                scratch.SharedOwners.UnionWith(scratch.SharedOwnersOfAg);
            }
            if (rootUsable && RmapReport.WalkViolations == 0)
            {
                if (!pass.RecordsHeaders)
                {
                    OnDiskRmapUnusable = HeadersUnrecorded;
                    RmapCompareElapsed = start.Elapsed;
                    return;
                }
                OnDiskOwnAg = scratch.OwnAg;
                OnDiskInodeChunks = scratch.InodeChunks;
                OnDiskCow = scratch.Cow;
            }
        }
        if (!rootUsable) OnDiskRmapUnusable = "the on-disk rmapbt cannot be located";
        else if (OnDiskOwnAg == null) IndexOnDiskRmapTolerantly(agf!, scratch);
        RmapCompareElapsed = start.Elapsed;
    }

    /// <summary>False on a filesystem made without the reverse-mapping btree: the expected set is then the only rmap
    /// source, and the comparisons with the on-disk special-owner records do not apply (they are left out, not
    /// "not checked").</summary>
    public bool HasRmapbt => Image.Superblock.HasRmapbt;

    /// <summary>
    /// No rmapbt: one pass over the expected set alone derives the free extents and the implied reference counts
    /// (the same derivation as with an rmapbt); the report carries only what the scan met, for the scan's finding.
    /// </summary>
    void DeriveWithoutRmapbt(ScrubScratch scratch)
    {
        var pass = new DerivingObserver(scratch, AgLength, Image.Superblock.HasReflink);
        var expected = Scan.Expected!;
        using (var cursor = expected.CreateCursor())
        {
            for (bool ok = cursor.MoveFirst(); ok; ok = cursor.Increment())
                pass.Expected(RmapRecord.Read(cursor.Current));
        }
        RmapReport = new AgCheckReport(AgNumber)
        {
            ExpectedRecords = expected.Count,
            ScanProblems = Scan.Problems.Items,
            ScanProblemTotal = Scan.Problems.Total,
        };
        RmapbtBlockCount = 0;
        OnDiskRmapUnusable = NoRmapbt;
        if (!_scanComplete || Scan.Problems.Total > 0 || !Scan.MetadataComplete)
            RmapUnusable = "the scan met damage (see metadata scan), so the space it implies is not complete";
        else
        {
            FreeExtents = pass.FinishFreeExtents();
            ImpliedShared = pass.FinishShared();
            scratch.SharedOwners.UnionWith(scratch.SharedOwnersOfAg);
        }
    }

    /// <summary>
    /// Why the on-disk rmapbt is no independent record when it walks clean but does not give the AG headers (block 0)
    /// to OWN_FS, which every rmapbt of an AG does from mkfs on (an emptied root leaf, say): its absence of a record
    /// says nothing of the other structures, and blaming them (the AGFL's blocks "not OWN_AG") would rebuild them
    /// from it.
    /// </summary>
    public const string HeadersUnrecorded = "the on-disk rmapbt does not record the AG headers (OWN_FS at block 0): it is damaged (see rmapbt)";

    /// <summary>Why the on-disk rmapbt records are not available on a filesystem without one.</summary>
    public const string NoRmapbt = "the filesystem has no rmapbt";

    /// <summary>The special-owner records by the tolerant walker (the checker's walk met violations, or did not run).</summary>
    void IndexOnDiskRmapTolerantly(Agf agf, ScrubScratch scratch)
    {
        scratch.OwnAg.Clear();
        scratch.InodeChunks.Clear();
        scratch.Cow.Clear();
        var sink = new SpecialOwnerSink { Ag = scratch.OwnAg, Inodes = scratch.InodeChunks, Cow = scratch.Cow };
        List<string> problems;
        try { problems = RmapbtWalker.Walk(Image.OpenRmapbt(agf, Store), ref sink, out _); }
        catch (CorruptionException e) { problems = [e.Message]; }
        if (problems.Count > 0) { OnDiskRmapUnusable = "the on-disk rmapbt is damaged (see rmapbt)"; return; }
        if (!sink.RecordsHeaders) { OnDiskRmapUnusable = HeadersUnrecorded; return; }
        OnDiskOwnAg = sink.Ag;
        OnDiskInodeChunks = sink.Inodes;
        OnDiskCow = sink.Cow;
    }

    /// <summary>
    /// Drops this AG's lists (they go back to the scratch for the next AG). Only the headers stay (the superblock
    /// counters are summed from them at the end).
    /// </summary>
    public void ReleaseScratch()
    {
        FreeExtents = null;
        ImpliedShared = null;
        OnDiskOwnAg = OnDiskInodeChunks = OnDiskCow = null;
    }

    /// <summary>What the compare's pass derives; the lists are the scratch's, cleared here.</summary>
    sealed class DerivingObserver : IRmapCompareObserver
    {
        readonly ScrubScratch _scratch;
        readonly uint _agLength;
        readonly SharedExtentSweep? _sweep;
        ulong _end;

        public DerivingObserver(ScrubScratch scratch, uint agLength, bool reflink)
        {
            _scratch = scratch;
            _agLength = agLength;
            scratch.FreeExtents.Clear();
            scratch.OwnAg.Clear();
            scratch.InodeChunks.Clear();
            scratch.Cow.Clear();
            scratch.SharedOwnersOfAg.Clear();
            if (reflink) _sweep = scratch.Sweep();
        }

        /// <summary>Gap sweep: every block before this record's start and past every earlier record's end is free.</summary>
        public void Expected(in RmapRecord r)
        {
            if (r.StartBlock > _end) _scratch.FreeExtents.Add(Pack((uint)_end, (uint)(r.StartBlock - _end)));
            _end = Math.Max(_end, (ulong)r.StartBlock + r.BlockCount);
            if (_sweep == null) return;
            _sweep.Add(r);
            NoteSharing(r);
        }

        // The data records seen so far: the furthest end, and the last one (owner, end), for the owners of shared blocks.
        ulong _dataReach, _lastDataEnd, _lastDataOwner;
        bool _anyData;

        /// <summary>
        /// In start order, a data record shares blocks exactly when it starts before some earlier record's end, or the
        /// next data record starts before its own end (every later one starts at or after that one): its owner is then
        /// an inode that must carry the reflink flag. One record of look-back, no memory per record.
        /// </summary>
        void NoteSharing(in RmapRecord r)
        {
            if (RmapOwner.IsSpecial(r.Owner) || r.IsBmbtBlock || r.IsAttrFork) return;
            ulong end = (ulong)r.StartBlock + r.BlockCount;
            if (_anyData)
            {
                if (r.StartBlock < _lastDataEnd) _scratch.SharedOwnersOfAg.Add(_lastDataOwner);
                if (r.StartBlock < _dataReach) _scratch.SharedOwnersOfAg.Add(r.Owner);
            }
            _anyData = true;
            _dataReach = Math.Max(_dataReach, end);
            _lastDataEnd = end;
            _lastDataOwner = r.Owner;
        }

        /// <summary>An on-disk record gave the AG headers (block 0) to OWN_FS: without it the tree is no record of the AG.</summary>
        public bool RecordsHeaders { get; private set; }

        public void OnDisk(in RmapRecord r)
        {
            if (r.Owner == RmapOwner.Fs && r.StartBlock == 0) RecordsHeaders = true;
            switch (r.Owner)
            {
                case RmapOwner.Ag: _scratch.OwnAg.Add((r.StartBlock, r.BlockCount)); break;
                case RmapOwner.Inodes: _scratch.InodeChunks.Add((r.StartBlock, r.BlockCount)); break;
                case RmapOwner.Cow: _scratch.Cow.Add((r.StartBlock, r.BlockCount)); break;
            }
        }

        public List<ulong> FinishFreeExtents()
        {
            if (_end < _agLength) _scratch.FreeExtents.Add(Pack((uint)_end, (uint)(_agLength - _end)));
            return _scratch.FreeExtents;
        }

        public List<(uint Start, uint Length, uint Count)>? FinishShared() => _sweep?.Finish();
    }

    struct SpecialOwnerSink : IRmapRecordSink
    {
        /// <summary>Records of the owner each list is named after.</summary>
        public List<(uint, uint)> Ag, Inodes, Cow;
        /// <summary>A record gave the AG headers (block 0) to OWN_FS.</summary>
        public bool RecordsHeaders;
        /// <summary>Keeps a record of a special owner the checks need.</summary>
        public void Record(in RmapRecord record)
        {
            if (record.Owner == RmapOwner.Fs && record.StartBlock == 0) RecordsHeaders = true;
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
