namespace Xfbtree.Xfs.Scrub;

/// <summary>The outcome of checking one structure.</summary>
public enum ScrubVerdict
{
    /// <summary>Every check ran and found nothing.</summary>
    Clean,
    /// <summary>At least one check found damage.</summary>
    Damaged,
    /// <summary>No damage found, but a check could not run (its source of truth was unavailable).</summary>
    NotChecked,
}

/// <summary>
/// The verdict on one structure (an AG header, one AG's btree, the superblock counters, the link counts): the
/// problems found (bounded, with an exact total) and the checks that could not run, with why.
/// </summary>
public sealed class ScrubFinding
{
    readonly List<string> _problems = new();
    readonly List<string> _skipped = new();
    readonly int _limit;

    /// <summary>A finding for <paramref name="structure"/> of AG <paramref name="agNumber"/> (null: not per AG).</summary>
    internal ScrubFinding(string structure, uint? agNumber, int problemLimit = 20)
    {
        Structure = structure;
        AgNumber = agNumber;
        _limit = Math.Max(1, problemLimit);
    }

    /// <summary>What was checked: "AGF", "bnobt", "superblock counters", "nlinks", ...</summary>
    public string Structure { get; }
    /// <summary>The AG, or null for whole-filesystem structures.</summary>
    public uint? AgNumber { get; }
    /// <summary>The first problems found, in the order found.</summary>
    public IReadOnlyList<string> Problems => _problems;
    /// <summary>Every problem found, including those not kept.</summary>
    public long ProblemTotal { get; private set; }
    /// <summary>Checks that could not run, each with its reason.</summary>
    public IReadOnlyList<string> Skipped => _skipped;
    /// <summary>Wall time of this structure's checks (the inobt's includes reading the directories for the link counts).</summary>
    public TimeSpan Elapsed { get; internal set; }
    /// <summary>Online checks: how long the check held the AG's lock (the AG-local structures of an AG share one
    /// hold; the rmapbt's is its final comparison; the superblock counters hold every AG); null offline.</summary>
    public TimeSpan? AgLockHeld { get; internal set; }
    /// <summary>An AGI finding whose only damage is in its unlinked lists (its inobt and finobt roots, levels and
    /// counters agree with the trees): a scan of every inode through the inode btrees can still trust it.</summary>
    internal bool OnlyUnlinkedListDamage { get; set; }
    /// <summary>An AGF finding whose only damage is its rmapbt root naming a block that is no rmapbt block: the
    /// rmapbt rebuild (from every other piece of metadata, never from the old tree) sets the root, so the AGF
    /// waits for it instead of searching the AG for an rmapbt that may not exist any more.</summary>
    internal bool OnlyRmapbtRootDamage { get; set; }
    /// <summary>Records, blocks or inodes looked at (for the clean line), or null.</summary>
    public string? Note { get; internal set; }
    /// <summary>Each problem is a report line of its own ("inode 1234 core: damaged: ..."), printed after the
    /// finding's line, which then only counts them in <see cref="ProblemUnit"/>.</summary>
    public bool ProblemLines { get; internal init; }
    /// <summary>What <see cref="ProblemLines"/> problems are counted as ("inodes").</summary>
    internal string ProblemUnit { get; init; } = "problems";
    /// <summary>Inode cores: the damaged inodes, for the repair (null for other structures).</summary>
    internal IReadOnlyList<ulong>? DamagedInodes { get; set; }
    /// <summary>True when <see cref="DamagedInodes"/> holds every damaged inode (false: the repair judges every inode).</summary>
    internal bool DamagedInodesComplete { get; set; }

    /// <summary>Damaged when a problem was found; else NotChecked when a check could not run; else Clean.</summary>
    public ScrubVerdict Verdict => ProblemTotal > 0 ? ScrubVerdict.Damaged : _skipped.Count > 0 ? ScrubVerdict.NotChecked : ScrubVerdict.Clean;

    /// <summary>"AG 2 bnobt" or "superblock counters".</summary>
    public string Subject => AgNumber is { } ag ? $"AG {ag} {Structure}" : Structure;

    /// <summary>Records a problem.</summary>
    internal void Damage(string problem)
    {
        ProblemTotal++;
        if (_problems.Count < _limit) _problems.Add(problem);
    }

    /// <summary>Adds <paramref name="what"/> to the line of inode <paramref name="ino"/> (<c>inode N core: damaged: ...</c>,
    /// <paramref name="part"/> "core"), or makes that line and lists the inode for the repair.</summary>
    internal void DamageInode(ulong ino, string part, string what)
    {
        string prefix = $"inode {ino} {part}: damaged: ";
        int at = _problems.FindIndex(p => p.StartsWith(prefix, StringComparison.Ordinal));
        if (at >= 0)
        {
            _problems[at] += "; " + what;
            return;
        }
        Damage(prefix + what);
        DamagedInodes = [.. DamagedInodes ?? [], ino];
    }

    /// <summary>Records a problem counted <paramref name="count"/> times, described once.</summary>
    internal void Damage(long count, string summary)
    {
        if (count <= 0) return;
        ProblemTotal += count;
        if (_problems.Count < _limit) _problems.Add(summary);
    }

    /// <summary>Records a check that could not run.</summary>
    internal void Skip(string reason) => _skipped.Add(reason);

    /// <summary>A finding as another process made it (the online scrub of a mount): its kept problems, their exact
    /// total and the checks that could not run.</summary>
    internal static ScrubFinding Restore(string structure, uint? agNumber, IReadOnlyList<string> problems, long problemTotal, IEnumerable<string> skipped)
    {
        // The per-inode findings print one line per problem, as where they were made.
        bool perInode = structure is InodeCoreScrubber.Structure or InodeCoreScrubber.AttrForks;
        var f = new ScrubFinding(structure, agNumber, Math.Max(1, problems.Count)) { ProblemLines = perInode, ProblemUnit = perInode ? "inodes" : "problems" };
        f._problems.AddRange(problems);
        f.ProblemTotal = Math.Max(problemTotal, problems.Count);
        f._skipped.AddRange(skipped);
        return f;
    }

    /// <summary>The report line: "AG 2 bnobt: clean (12 records)", "AG 0 refcountbt: damaged: 3 block ranges differ ...".</summary>
    public override string ToString()
    {
        switch (Verdict)
        {
            case ScrubVerdict.Clean:
                return $"{Subject}: clean" + (Note != null ? $" ({Note})" : "");
            case ScrubVerdict.NotChecked:
                return $"{Subject}: not checked: {string.Join("; ", _skipped)}";
            case ScrubVerdict.Damaged when ProblemLines:
                return $"{Subject}: damaged: {ProblemTotal} {ProblemUnit} (one line each below)"
                       + (_skipped.Count > 0 ? $" (also not checked: {string.Join("; ", _skipped)})" : "");
            default:
                long more = ProblemTotal - _problems.Count;
                string text = string.Join("; ", _problems) + (more > 0 ? $"; and {more} more" : "");
                if (_skipped.Count > 0) text += $" (also not checked: {string.Join("; ", _skipped)})";
                return $"{Subject}: damaged: {text}";
        }
    }
}

/// <summary>An inode whose link count disagrees with the directory entries that name it.</summary>
/// <param name="Ino">The inode.</param>
/// <param name="NLink">di_nlink as stored.</param>
/// <param name="Counted">Entries naming it found by the directory scan (plus '.' and '..' for directories).</param>
public readonly record struct LinkCountMismatch(ulong Ino, uint NLink, long Counted)
{
    /// <summary>"inode 1234 nlink: 2, counted 1".</summary>
    public override string ToString() => $"inode {Ino} nlink: {NLink}, counted {Counted}";
}

/// <summary>The verdict on the image: one finding per structure checked, and the wrong link counts.</summary>
public sealed class ScrubReport
{
    internal ScrubReport(IReadOnlyList<ScrubFinding> findings, IReadOnlyList<LinkCountMismatch> links, long linkMismatchTotal, TimeSpan elapsed, TimeSpan scanElapsed)
    {
        ScanElapsed = scanElapsed;
        Findings = findings;
        LinkMismatches = links;
        LinkMismatchTotal = linkMismatchTotal;
        Elapsed = elapsed;
    }

    /// <summary>Every structure checked, in report order (per AG: headers, free space, inodes, rmap, refcount; then the filesystem-wide checks).</summary>
    public IReadOnlyList<ScrubFinding> Findings { get; }
    /// <summary>The first inodes with a wrong link count (see <see cref="LinkMismatchTotal"/>).</summary>
    public IReadOnlyList<LinkCountMismatch> LinkMismatches { get; }
    /// <summary>Every inode with a wrong link count.</summary>
    public long LinkMismatchTotal { get; }
    /// <summary>Wall time of the rmap scan every AG check starts from.</summary>
    public TimeSpan ScanElapsed { get; }
    /// <summary>Wall time of the scrub.</summary>
    public TimeSpan Elapsed { get; }
    /// <summary>True when nothing is damaged and every check ran.</summary>
    public bool IsClean => Findings.All(f => f.Verdict == ScrubVerdict.Clean);
    /// <summary>True when some structure is damaged.</summary>
    public bool IsDamaged => Findings.Any(f => f.Verdict == ScrubVerdict.Damaged);
    /// <summary>Findings that are damaged.</summary>
    public int DamagedCount => Findings.Count(f => f.Verdict == ScrubVerdict.Damaged);

    /// <summary>This report with the primary superblock's finding replaced by <paramref name="primary"/> (put first
    /// when there is none): the primary, damaged and restored from a secondary before the image could be opened, is
    /// part of what the check found.</summary>
    internal ScrubReport WithPrimarySuperblock(ScrubFinding primary)
    {
        var findings = Findings.ToList();
        int at = findings.FindIndex(f => f.Structure == primary.Structure && f.AgNumber is null);
        if (at >= 0) findings[at] = primary;
        else findings.Insert(0, primary);
        return new ScrubReport(findings, LinkMismatches, LinkMismatchTotal, Elapsed, ScanElapsed);
    }

    /// <summary>The finding of a primary superblock that did not verify (<paramref name="problem"/>: why).</summary>
    internal static ScrubFinding DamagedPrimarySuperblock(string problem)
    {
        var f = new ScrubFinding(OnlineScrubber.PrimarySuperblock, null);
        f.Damage(problem);
        return f;
    }
}

/// <summary>Options of <see cref="Scrubber"/>.</summary>
public sealed record ScrubOptions
{
    /// <summary>Only this AG (the filesystem-wide checks, superblock counters and link counts, are then not made).</summary>
    public uint? OnlyAg { get; init; }
    /// <summary>Workers of the rmap scan. Default: min(2, processors).</summary>
    public int Parallelism { get; init; } = Math.Clamp(Environment.ProcessorCount, 1, 2);
    /// <summary>Problems kept per finding (all are counted).</summary>
    public int ProblemLimit { get; init; } = 5;
    /// <summary>Wrong link counts kept (all are counted).</summary>
    public int LinkMismatchLimit { get; init; } = 1000;
    /// <summary>Online only: the share of one CPU (more than 0, at most 1; 1 = not paced) the inode scans of the rmapbt
    /// checks and repairs and of the link counts may use, and, between AGs, the AG-local checks.</summary>
    public double CpuShare { get; init => field = Online.CpuSharePacer.Checked(value, nameof(CpuShare)); } = 1;
    /// <summary>Called with a short phase description.</summary>
    public Action<string>? Progress { get; init; }
    /// <summary>Test-only callbacks of the online checks.</summary>
    internal OnlineScrubTestHooks? OnlineTestHooks { get; init; }
}
