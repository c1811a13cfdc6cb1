using System.Diagnostics;
using Xfbtree.Btree;
using Xfbtree.Xfs.Format;
using Xfbtree.Xfs.Scan;
using Xfbtree.Xfs.Trees;

namespace Xfbtree.Xfs.Check;

/// <summary>Kinds of record differences between the expected set and the on-disk rmapbt.</summary>
public enum RmapDifferenceKind
{
    /// <summary>Expected, but no on-disk record has its key.</summary>
    Missing,
    /// <summary>On disk, but not expected.</summary>
    Extra,
    /// <summary>Same key, different length or unwritten state.</summary>
    Different,
}

/// <summary>One record difference; <see cref="Expected"/> or <see cref="OnDisk"/> is default for Extra/Missing.</summary>
public readonly record struct RmapDifference(RmapDifferenceKind Kind, RmapRecord Expected, RmapRecord OnDisk);

/// <summary>Options of <see cref="RmapChecker"/>.</summary>
public sealed record RmapCheckOptions
{
    /// <summary>Differences kept per AG (all are counted).</summary>
    public int SampleLimit { get; init; } = 20;
    /// <summary>Structural problems kept per AG (all are counted).</summary>
    public int StructureLimit { get; init; } = 50;
    /// <summary>AGs checked in parallel. Default: min(2, processors).</summary>
    public int Parallelism { get; init; } = Math.Clamp(Environment.ProcessorCount, 1, 2);
    /// <summary>Called with a short phase description.</summary>
    public Action<string>? Progress { get; init; }
}

/// <summary>The verdict for one AG.</summary>
public sealed class AgCheckReport
{
    internal AgCheckReport(uint agno) => AgNumber = agno;

    /// <summary>The allocation group this verdict is for (0-based AG number).</summary>
    public uint AgNumber { get; }
    /// <summary>False when the on-disk rmapbt could not be located (unreadable AGF, unusable root).</summary>
    public bool RmapbtReadable { get; internal set; }
    /// <summary>Records the scan expects in this AG's rmapbt (computed from every inode and every other AG structure).</summary>
    public long ExpectedRecords { get; internal set; }
    /// <summary>Records found in the on-disk rmapbt's leaves.</summary>
    public long OnDiskRecords { get; internal set; }
    /// <summary>Blocks (filesystem blocks) of the on-disk rmapbt, leaves and interior nodes.</summary>
    public long OnDiskBlocks { get; internal set; }
    /// <summary>Expected records with no on-disk record of the same key.</summary>
    public long Missing { get; internal set; }
    /// <summary>On-disk records that no expected record has the key of.</summary>
    public long Extra { get; internal set; }
    /// <summary>Records whose key matches but whose length, owner, offset or flags differ.</summary>
    public long Different { get; internal set; }
    /// <summary>The first differences, in key order.</summary>
    public List<RmapDifference> Samples { get; } = new();
    /// <summary>rmapbt structure and AGF counter problems (bounded; see <see cref="StructureTotal"/>).</summary>
    public List<string> Structure { get; } = new();
    /// <summary>Every structure and AGF counter problem found (<see cref="Structure"/> keeps only the first ones).</summary>
    public long StructureTotal { get; internal set; }
    /// <summary>Damage met by the scan of this AG's metadata and inodes.</summary>
    public IReadOnlyList<ScanProblem> ScanProblems { get; internal set; } = [];
    /// <summary>Every scan problem met in this AG (<see cref="ScanProblems"/> keeps only the first ones).</summary>
    public long ScanProblemTotal { get; internal set; }

    /// <summary>True when the rmapbt was readable and nothing was missing, extra, different, structurally wrong or
    /// met as damage by the scan.</summary>
    public bool IsClean => Missing == 0 && Extra == 0 && Different == 0 && StructureTotal == 0 && ScanProblemTotal == 0 && RmapbtReadable;

    /// <summary>Structure violations the engine's checker met in its walk of the on-disk rmapbt (AGF counters not
    /// included); -1 when the tree was not walked. Zero means every block was read and verified, so the records handed
    /// over are exactly the tree's leaves in key order.</summary>
    internal long WalkViolations { get; set; } = -1;

    internal void AddStructure(string what, int limit)
    {
        StructureTotal++;
        if (Structure.Count < limit) Structure.Add(what);
    }
}

/// <summary>The verdict for the image.</summary>
public sealed class RmapCheckReport
{
    internal RmapCheckReport(IReadOnlyList<AgCheckReport> ags, TimeSpan elapsed) { Ags = ags; Elapsed = elapsed; }
    /// <summary>One verdict per AG checked, in AG order.</summary>
    public IReadOnlyList<AgCheckReport> Ags { get; }
    /// <summary>Wall time of the check (the scan it was given not included).</summary>
    public TimeSpan Elapsed { get; }
    /// <summary>True when every AG checked is clean (<see cref="AgCheckReport.IsClean"/>).</summary>
    public bool IsClean => Ags.All(a => a.IsClean);
}

/// <summary>
/// Compares the expected rmap set of each AG (from <see cref="RmapScanner"/>) with the on-disk rmapbt, both
/// ways: records (a merge-join in key order: missing, extra, different), structure (the engine's checker: keys,
/// high keys, order, siblings, levels, numrecs, CRC, ...), and the AGF counters (rmap_blocks, btreeblks, root and
/// level). AGs are checked in parallel.
/// </summary>
public static class RmapChecker
{
    /// <summary>Checks every AG that the scan kept records for.</summary>
    public static RmapCheckReport Check(XfsImage image, RmapScanResult scan, RmapCheckOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(image);
        ArgumentNullException.ThrowIfNull(scan);
        options ??= new RmapCheckOptions();
        var sw = Stopwatch.StartNew();
        var todo = scan.Ags.Where(a => a.Expected != null).ToArray();
        var reports = new AgCheckReport[todo.Length];
        var po = new ParallelOptions { MaxDegreeOfParallelism = Math.Max(1, options.Parallelism) };
        Parallel.For(0, todo.Length, po, i =>
        {
            options.Progress?.Invoke($"checking AG {todo[i].AgNumber}/{image.Geometry.AgCount}");
            reports[i] = CheckAg(image, todo[i], options);
        });
        return new RmapCheckReport(reports, sw.Elapsed);
    }

    /// <summary>Checks one AG.</summary>
    public static AgCheckReport CheckAg(XfsImage image, AgScanResult ag, RmapCheckOptions? options = null)
    {
        AgCheckReport report = CheckAg(image, ag, options, null);
        // The scan reads past a damaged inode core whose forks still read (its records are in the expected set) and
        // leaves the core's judgement to the scrub, which reports it on a line of its own; this check has no such
        // line, so the cores count among its metadata problems, as they did before the scrub judged them.
        if (ag.DamagedInodeTotal > 0 && ag.DamagedInodes is { } cores)
        {
            var problems = new List<ScanProblem>(report.ScanProblems);
            long added = 0;
            foreach (DamagedInode d in cores)
            {
                if (d.Problems.StartsWith("does not verify: ", StringComparison.Ordinal))
                {
                    continue; // already a scan problem: its forks could not be read
                }
                added++;
                problems.Add(new ScanProblem(ag.AgNumber, $"inode {d.Ino}", d.Problems));
            }
            report.ScanProblems = problems;
            report.ScanProblemTotal += added;
        }
        return report;
    }

    /// <summary>
    /// Checks one AG; <paramref name="observer"/> (when given) sees every expected record once in key order and every
    /// on-disk leaf record as walked, so that a caller derives more from this one pass (the scrub: free space,
    /// reference counts, special owners) instead of passing over both sets again.
    /// </summary>
    internal static AgCheckReport CheckAg(XfsImage image, AgScanResult ag, RmapCheckOptions? options, IRmapCompareObserver? observer)
    {
        ArgumentNullException.ThrowIfNull(image);
        ArgumentNullException.ThrowIfNull(ag);
        options ??= new RmapCheckOptions();
        var expected = ag.Expected ?? throw new ArgumentException($"AG {ag.AgNumber} was not scanned", nameof(ag));
        var rep = new AgCheckReport(ag.AgNumber)
        {
            ExpectedRecords = expected.Count,
            ScanProblems = ag.Problems.Items,
            ScanProblemTotal = ag.Problems.Total,
        };
        using var ecur = expected.CreateCursor();
        bool counts = ag.BnobtBlocks.Count > 0 && ag.CntbtBlocks.Count > 0 && ag.MetadataComplete;
        CompareAg(image, ag.Agf, ecur, rep, options, counts ? ag.BnobtBlocks.Count : -1, counts ? ag.CntbtBlocks.Count : -1, observer);
        return rep;
    }

    /// <summary>
    /// The comparison of one AG's on-disk rmapbt (located through <paramref name="agf"/>, null when unreadable) with
    /// the expected records under <paramref name="expected"/>, in key order, into <paramref name="rep"/>: records,
    /// structure, the AGF's rmap counters, and agf_btreeblks when the bnobt and cntbt block counts are given (not -1).
    /// The offline check gives the scan's set; the online rmapbt check its shadow tree (docs/scrub.md).
    /// </summary>
    internal static void CompareAg(XfsImage image, Agf? agf, BtreeCursor<RmapbtOps> expected, AgCheckReport rep, RmapCheckOptions options,
        long bnobtBlocks, long cntbtBlocks, IRmapCompareObserver? observer = null)
    {
        var geo = image.Geometry;
        var join = new MergeJoin(expected, rep, options.SampleLimit, observer);
        if (agf == null)
        {
            rep.AddStructure("AGF unreadable: the rmapbt cannot be located", options.StructureLimit);
        }
        else if (!agf.TreeRootUsable(AgfTree.Rmapbt, geo))
        {
            rep.AddStructure($"AGF rmapbt root {agf.RmapRoot} / level {agf.RmapLevel} unusable", options.StructureLimit);
        }
        else
        {
            rep.RmapbtReadable = true;
            var tree = image.OpenRmapbt(agf);
            // One walk: the engine's checker verifies every block and the structure and hands over the leaf records.
            var check = tree.Check(geo.AgLength(rep.AgNumber), join.Record);
            rep.OnDiskBlocks = check.Blocks;
            rep.WalkViolations = check.ViolationCount;
            foreach (var v in check.Violations) rep.AddStructure("rmapbt: " + v, options.StructureLimit);
            if (check.ViolationCount > check.Violations.Count)
                rep.AddStructure($"rmapbt: {check.ViolationCount - check.Violations.Count} more violations", options.StructureLimit);
            if (check.Blocks != agf.RmapBlocks)
                rep.AddStructure($"AGF rmap_blocks {agf.RmapBlocks}, but the rmapbt has {check.Blocks} blocks", options.StructureLimit);
            if (check.Height != agf.RmapLevel)
                rep.AddStructure($"AGF rmap level {agf.RmapLevel}, but the tree is {check.Height} high", options.StructureLimit);
            if (bnobtBlocks > 0 && cntbtBlocks > 0)
            {
                long btreeblks = bnobtBlocks - 1 + cntbtBlocks - 1 + check.Blocks - 1;
                if (btreeblks != agf.BtreeBlocks)
                    rep.AddStructure($"AGF btreeblks {agf.BtreeBlocks}, but bnobt+cntbt+rmapbt have {btreeblks} non-root blocks", options.StructureLimit);
            }
        }
        join.Finish();
    }

    sealed class MergeJoin
    {
        readonly BtreeCursor<RmapbtOps> _e;
        readonly AgCheckReport _rep;
        readonly int _limit;
        readonly IRmapCompareObserver? _observer;
        bool _started, _have;
        RmapRecord _cur;

        public MergeJoin(BtreeCursor<RmapbtOps> expected, AgCheckReport report, int limit, IRmapCompareObserver? observer)
        {
            _e = expected;
            _rep = report;
            _limit = limit;
            _observer = observer;
            _started = _have = false;
            _cur = default;
        }

        void Advance()
        {
            _have = _started ? _e.Increment() : _e.MoveFirst();
            _started = true;
            if (_have)
            {
                _cur = RmapRecord.Read(_e.Current);
                _observer?.Expected(_cur);
            }
        }

        void Sample(RmapDifferenceKind kind, in RmapRecord expected, in RmapRecord onDisk)
        {
            if (_rep.Samples.Count < _limit) _rep.Samples.Add(new RmapDifference(kind, expected, onDisk));
        }

        public void Record(ReadOnlySpan<byte> record) => Record(RmapRecord.Read(record));

        void Record(in RmapRecord d)
        {
            if (!_started) Advance();
            _rep.OnDiskRecords++;
            _observer?.OnDisk(d);
            var cmp = new RmapKeyComparer();
            while (_have && cmp.Compare(_cur, d) < 0)
            {
                _rep.Missing++;
                Sample(RmapDifferenceKind.Missing, _cur, default);
                Advance();
            }
            if (_have && cmp.Compare(_cur, d) == 0)
            {
                if (_cur != d)
                {
                    _rep.Different++;
                    Sample(RmapDifferenceKind.Different, _cur, d);
                }
                Advance();
                return;
            }
            _rep.Extra++;
            Sample(RmapDifferenceKind.Extra, default, d);
        }

        public void Finish()
        {
            if (!_started) Advance();
            while (_have)
            {
                _rep.Missing++;
                Sample(RmapDifferenceKind.Missing, _cur, default);
                Advance();
            }
        }
    }
}

/// <summary>Sees the records of one AG's rmapbt compare (<see cref="RmapChecker.CheckAg(XfsImage, AgScanResult, RmapCheckOptions?, IRmapCompareObserver?)"/>).</summary>
internal interface IRmapCompareObserver
{
    /// <summary>Each expected record, exactly once, in key order (also when the on-disk tree cannot be walked).</summary>
    void Expected(in RmapRecord record);
    /// <summary>Each on-disk leaf record, in walk order.</summary>
    void OnDisk(in RmapRecord record);
}
