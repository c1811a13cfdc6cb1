using System.Diagnostics;
using Xfbtree.Buffers;
using Xfbtree.Xfs.Online;
using Xfbtree.Xfs.Write;
using Xfbtree.Xfs.Write.Engine;
using Xfbtree.Xfs.Write.Files;
using Xfbtree.Xfs.Write.Namespace;

namespace Xfbtree.Xfs.Scrub;

/// <summary>Test-only callbacks of the online scrub (deterministic interleavings).</summary>
internal sealed class OnlineScrubTestHooks
{
    /// <summary>On the checker's thread while it holds AG N's lock for the AG's check, before it reads anything:
    /// a writer of that AG started here waits for the check; writers of other AGs go on.</summary>
    public Action<uint>? WhileAgLocked { get; init; }

    /// <summary>On the checker's thread while the inode check holds inode N's lock, before it reads the core: a writer
    /// of that inode started here waits for the check.</summary>
    public Action<ulong>? WhileInodeLocked { get; init; }
}

/// <summary>
/// The scrub of an open write engine while other threads write (the checks of <c>xfbtree scrub DIR</c> on a running
/// mount), in the kernel scrub's way (docs/scrub.md, "Online checks"):
/// <list type="bullet">
/// <item>each AG-local structure (AGF, AGFL, AGI, bnobt, cntbt, inobt, finobt, refcountbt) checked while the check
/// holds that AG's lock, by the offline scrubbers, against the AG's own on-disk rmapbt and inode cores: under the lock
/// every commit to the AG is on disk and none runs, so a read view of the image sees the AG as one consistent state.
/// Writers of other AGs go on; writers of that AG wait for that AG's check alone (<see cref="ScrubFinding.AgLockHeld"/>);</item>
/// <item>the rmapbt against every other piece of metadata, collected by the online rmap repair's coordinated inode
/// scan with live hooks and compared under the AG lock (<see cref="OnlineRmapRepair"/>, nothing rebuilt);</item>
/// <item>the link counts by the online nlinks scanner with its directory hooks (<see cref="OnlineLinkCounts"/>);</item>
/// <item>the superblock counters: the engine's in-core counters (sb_icount and sb_ifree as of open plus every
/// committed change, each AG's free-space figures as its last commit published them) against the AG headers, read
/// with every AG locked for that moment.</item>
/// </list>
/// The findings and lines are the offline scrub's (<see cref="ScrubFinding"/>); <see cref="Repair"/> runs the scrub
/// repairs (<see cref="ScrubRepairs"/>) on the same engine and checks online again between rounds.
/// </summary>
public static class OnlineScrubber
{
    /// <summary>Checks every structure (or the AG of <see cref="ScrubOptions.OnlyAg"/>, without the filesystem-wide
    /// checks), in the offline report's order; <paramref name="onFinding"/> is told of each as it is made.</summary>
    public static ScrubReport Run(WriteEngine engine, ScrubOptions? options = null, Action<ScrubFinding>? onFinding = null, CancellationToken cancel = default)
    {
        ArgumentNullException.ThrowIfNull(engine);
        options ??= new ScrubOptions();
        uint agCount = engine.Geometry.AgCount;
        if (options.OnlyAg is { } only && only >= agCount)
        {
            throw new ArgumentOutOfRangeException(nameof(options), $"AG {only} does not exist (the filesystem has {agCount} AGs)");
        }
        var clock = Stopwatch.StartNew();
        var findings = new List<ScrubFinding>();
        TimeSpan scans = TimeSpan.Zero;
        for (uint agno = options.OnlyAg ?? 0; agno < (options.OnlyAg + 1 ?? agCount); agno++)
        {
            cancel.ThrowIfCancellationRequested();
            options.Progress?.Invoke($"scrubbing AG {agno}/{agCount}");
            foreach (ScrubFinding f in CheckAg(engine, agno, options, cancel))
            {
                findings.Add(f);
                onFinding?.Invoke(f);
                if (f.Structure == "rmapbt") scans += f.Elapsed;
            }
        }
        List<LinkCountMismatch> mismatches = [];
        long mismatchTotal = 0;
        if (options.OnlyAg is null)
        {
            ScrubFinding primary = CheckPrimarySuperblock(engine, options);
            findings.Add(primary);
            onFinding?.Invoke(primary);
            ScrubFinding counters = CheckSummaryCounters(engine, options);
            findings.Add(counters);
            onFinding?.Invoke(counters);
            var (bmap, directories) = CheckBlockMaps(engine, options, cancel);
            findings.Add(bmap);
            onFinding?.Invoke(bmap);
            findings.Add(directories);
            onFinding?.Invoke(directories);
            scans += bmap.Elapsed;
            (ScrubFinding links, mismatches, mismatchTotal) = CheckLinkCounts(engine, options, cancel);
            findings.Add(links);
            onFinding?.Invoke(links);
            scans += links.Elapsed;
        }
        return new ScrubReport(findings, mismatches, mismatchTotal, clock.Elapsed, scans);
    }

    /// <summary>
    /// Every structure of AG <paramref name="agno"/>, in report order. The rmapbt first (scan with live hooks): the
    /// AG-local checks that follow, under one hold of the AG lock, take the on-disk rmapbt as their rmap source, so a
    /// damaged rmapbt leaves those comparisons "not checked" (as the offline scrub does when its scan met damage)
    /// instead of blaming the free-space and refcount trees for it; its repair comes first, and they are checked
    /// against the repaired one in the next round.
    /// </summary>
    public static IReadOnlyList<ScrubFinding> CheckAg(WriteEngine engine, uint agno, ScrubOptions? options = null, CancellationToken cancel = default)
    {
        ArgumentNullException.ThrowIfNull(engine);
        options ??= new ScrubOptions();
        if (!engine.Geometry.Superblock.HasRmapbt)
        {
            // No rmapbt line (as offline), and online no other record of the space in use: the comparisons with the
            // rmap say "not checked" with this reason; every structure's own checks run.
            var (own, at) = CheckAgLocal(engine, agno, options, NoRmapbtOnline);
            own.InsertRange(at, CheckInodes(engine, agno, options, cancel));
            return own;
        }
        ScrubFinding rmapbt = CheckRmapbt(engine, agno, options, cancel);
        string? rmapDamaged = rmapbt.Verdict == ScrubVerdict.Damaged ? "the rmapbt is damaged (see rmapbt)" : null;
        long local = Stopwatch.GetTimestamp();
        var (findings, rmapAt) = CheckAgLocal(engine, agno, options, rmapDamaged);
        new CpuSharePacer(options.CpuShare).Rest(Stopwatch.GetElapsedTime(local), cancel);
        ScrubFinding[] inodes = CheckInodes(engine, agno, options, cancel);
        findings.InsertRange(rmapAt, inodes);
        findings.Insert(rmapAt + inodes.Length, rmapbt);
        return findings;
    }

    /// <summary>
    /// The inode cores and attr forks of AG <paramref name="agno"/> (<see cref="OnlineInodeCoreCheck"/>: each in-use
    /// inode judged under its inode lock, no AG lock held but to find the inodes), the offline lines.
    /// </summary>
    internal static ScrubFinding[] CheckInodes(WriteEngine engine, uint agno, ScrubOptions options, CancellationToken cancel)
    {
        var clock = Stopwatch.StartNew();
        ScrubFinding cores, attrs;
        try
        {
            OnlineInodeCheckResult r = OnlineInodeCoreCheck.Run(engine, agno, Scan.AgScanResult.DamagedInodeLimit, options.CpuShare, options.OnlineTestHooks?.WhileInodeLocked, cancel);
            cores = InodeCoreScrubber.Finding(agno, InodeCoreScrubber.Structure, r.Cores, r.CoreTotal, r.InodesChecked);
            attrs = InodeCoreScrubber.Finding(agno, InodeCoreScrubber.AttrForks, r.AttrForks, r.AttrForkTotal, r.InodesChecked);
            if (r.ReflinkNotJudged is { } why) cores.Skip($"the reflink flag not judged: {why}");
            cores.AgLockHeld = attrs.AgLockHeld = r.AgLockHeld;
        }
        catch (Exception e) when (e is OnlineRepairException or XfsWriteException)
        {
            cores = new ScrubFinding(InodeCoreScrubber.Structure, agno, options.ProblemLimit);
            attrs = new ScrubFinding(InodeCoreScrubber.AttrForks, agno, options.ProblemLimit);
            cores.Skip($"the inode scan could not finish: {e.Message}");
            attrs.Skip($"the inode scan could not finish: {e.Message}");
            cores.AgLockHeld = attrs.AgLockHeld = TimeSpan.Zero;
        }
        cores.Elapsed = clock.Elapsed;
        return [cores, attrs];
    }

    /// <summary>The AG-local structures, one hold of the AG lock (every finding carries how long it was held).</summary>
    private static (List<ScrubFinding> Findings, int RmapAt) CheckAgLocal(WriteEngine engine, uint agno, ScrubOptions options, string? rmapDamaged)
    {
        var findings = new List<ScrubFinding>();
        int rmapAt = 0;
        var held = new Stopwatch();
        try
        {
            engine.Execute($"online scrub AG {agno}", tx =>
            {
                findings.Clear();
                tx.LockAgForRepair(agno); // a sick AG is checked too
                held.Restart();
                options.OnlineTestHooks?.WhileAgLocked?.Invoke(agno);
                engine.WriteBackCommitted(); // the view reads the image file: every commit in place first
                using XfsImage view = engine.Image.CreateReadView();
                try
                {
                    rmapAt = Scrubber.CheckAgStructures(AgScrubContext.ForOnlineCheck(view, agno, options, rmapDamaged, engine.PrimarySuperblockInCore), null, findings, withRmapbt: false);
                }
                catch (Exception e) when (e is CorruptionException or IOException)
                {
                    // Not the engine's to see: it would mark the AG sick for a read of a check's own view.
                    throw new OnlineRepairException($"AG {agno}: the check met damage it could not place: {e.Message}");
                }
                held.Stop();
            });
        }
        catch (OnlineRepairException e)
        {
            // No structure to blame (no repair answers it): the AG's line says what was met.
            var f = new ScrubFinding("metadata", agno, options.ProblemLimit);
            f.Damage(e.Message);
            return ([f], 1);
        }
        foreach (ScrubFinding f in findings)
        {
            f.AgLockHeld = held.Elapsed;
        }
        return (findings, rmapAt);
    }

    /// <summary>Why an online check of a filesystem without an rmapbt leaves the comparisons with the rmap out.</summary>
    internal const string NoRmapbtOnline = "the filesystem has no rmapbt, and a check online has no other record of the space in use (xfbtree scrub of the unmounted image derives one from a full scan)";

    /// <summary>AG <paramref name="agno"/>'s rmapbt against a coordinated scan with live hooks (nothing rebuilt).</summary>
    public static ScrubFinding CheckRmapbt(WriteEngine engine, uint agno, ScrubOptions? options = null, CancellationToken cancel = default)
    {
        ArgumentNullException.ThrowIfNull(engine);
        options ??= new ScrubOptions();
        var clock = Stopwatch.StartNew();
        ScrubFinding f;
        try
        {
            OnlineRmapCheckResult r = OnlineRmapRepair.Check(engine, agno, new OnlineRmapRepairOptions { CpuShare = options.CpuShare }, RmapbtScrubber.CheckOptions(options), cancel);
            if (r.NotChecked is { } why)
            {
                f = new ScrubFinding("rmapbt", agno, options.ProblemLimit);
                f.Skip(why);
            }
            else
            {
                // The online scan either visits every inode or fails: its set is complete, so extra records are damage.
                f = RmapbtScrubber.FromReport(r.Report, judgeExtra: true, options);
            }
            f.AgLockHeld = r.TimeLocked;
        }
        catch (Exception e) when (e is OnlineRepairException or XfsWriteException or CorruptionException)
        {
            // A fork the scan cannot read (a damaged bmbt: the block map check names it) leaves the expected set
            // incomplete: not checked, as offline, rather than the whole scrub failing on it.
            f = new ScrubFinding("rmapbt", agno, options.ProblemLimit);
            f.Skip($"the inode scan with live hooks could not finish: {e.Message}");
        }
        f.Elapsed = clock.Elapsed;
        return f;
    }

    /// <summary>The name of the primary superblock's finding (offline and online).</summary>
    internal const string PrimarySuperblock = "primary superblock";

    /// <summary>
    /// The primary superblock on disk against the engine's in-core copy (read and verified at open, NEEDSREPAIR set
    /// by the engine, which writes the sector again only at its clean close): they must be equal byte for byte. A
    /// difference is damage made behind the engine's back (an outside write, the medium); the repair rewrites the
    /// sector from the in-core copy (<see cref="WriteEngine.RestorePrimarySuperblock"/>).
    /// </summary>
    internal static ScrubFinding CheckPrimarySuperblock(WriteEngine engine, ScrubOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(engine);
        options ??= new ScrubOptions();
        var clock = Stopwatch.StartNew();
        var f = new ScrubFinding(PrimarySuperblock, null, options.ProblemLimit);
        byte[] held = engine.PrimarySuperblockInCore;
        byte[] onDisk = engine.ReadPrimarySuperblockFromDisk();
        int first = held.AsSpan().CommonPrefixLength(onDisk);
        if (first == held.Length)
        {
            f.Note = "the sector on disk is the engine's in-core superblock";
        }
        else
        {
            int differ = 0;
            for (int i = first; i < held.Length; i++) if (held[i] != onDisk[i]) differ++;
            Format.Superblock parsed = Format.Superblock.Parse(onDisk);
            string verifies = parsed.Magic != Format.Superblock.MagicValue ? "no XFSB magic" : !parsed.CrcValid ? "bad CRC" : "it verifies";
            f.Damage($"{differ} bytes differ from the engine's in-core superblock (first at byte {first}; {verifies})");
        }
        f.Elapsed = clock.Elapsed;
        return f;
    }

    /// <summary>The engine's in-core counters against the AG headers, every AG locked for the moment of the reads.</summary>
    public static ScrubFinding CheckSummaryCounters(WriteEngine engine, ScrubOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(engine);
        options ??= new ScrubOptions();
        var clock = Stopwatch.StartNew();
        var f = new ScrubFinding("superblock counters", null, options.ProblemLimit);
        WithEveryAgLocked(engine, view =>
        {
            ulong icount = 0, ifree = 0, fdblocks = 0;
            for (uint agno = 0; agno < engine.Geometry.AgCount; agno++)
            {
                Format.Agf agf;
                Format.Agi agi;
                try
                {
                    agf = view.ReadAgf(agno);
                    agi = view.ReadAgi(agno);
                }
                catch (CorruptionException e)
                {
                    f.Skip($"AG {agno} headers unreadable ({e.Message})");
                    return;
                }
                icount += agi.Count;
                ifree += agi.FreeCount;
                fdblocks += (ulong)agf.FreeBlocks + agf.FlCount + agf.BtreeBlocks;
                EngineAg ag = engine.Ag(agno);
                // A sick AG's in-core figures are not kept (nothing is allocated there); its damage is its own lines'.
                if (!ag.IsSick && ag.FreeBlocks != agf.FreeBlocks || ag.FreeListCount != agf.FlCount || ag.Longest != agf.Longest)
                {
                    f.Damage($"AG {agno}: in-core free space {ag.FreeBlocks} blocks, longest {ag.Longest}, free list {ag.FreeListCount}, " +
                             $"but the AGF says {agf.FreeBlocks}, {agf.Longest}, {agf.FlCount}");
                }
            }
            var (inCoreIcount, inCoreIfree) = InCoreInodeCounters(engine);
            if (inCoreIcount != (long)icount) f.Damage($"sb_icount {inCoreIcount} (in core), but the AGIs hold {icount} inodes");
            if (inCoreIfree != (long)ifree) f.Damage($"sb_ifree {inCoreIfree} (in core), but the AGIs hold {ifree} free inodes");
            f.Note = $"{icount} inodes, {ifree} free, {fdblocks} free blocks";
        });
        f.Elapsed = clock.Elapsed;
        f.AgLockHeld = f.Elapsed;
        return f;
    }

    /// <summary>The engine's sb_icount and sb_ifree: the superblock's at open plus every committed change.</summary>
    private static (long Icount, long Ifree) InCoreInodeCounters(WriteEngine engine)
    {
        var (icount, ifree) = engine.InodeCounterDeltas;
        return ((long)engine.Geometry.Superblock.InodeCount + icount, (long)engine.Geometry.Superblock.FreeInodes + ifree);
    }

    /// <summary>Sets the engine's in-core inode counters to the AGIs' sums (the superblock counter repair); returns them.</summary>
    internal static (ulong Icount, ulong Ifree) SetInodeCountersFromAgHeaders(WriteEngine engine)
    {
        ulong icount = 0, ifree = 0;
        WithEveryAgLocked(engine, view =>
        {
            for (uint agno = 0; agno < engine.Geometry.AgCount; agno++)
            {
                Format.Agi agi = view.ReadAgi(agno);
                icount += agi.Count;
                ifree += agi.FreeCount;
            }
            engine.ResetInodeCounters(icount, ifree);
        });
        return (icount, ifree);
    }

    /// <summary>Runs <paramref name="body"/> on a read view while every AG lock is held (ascending, as the engine's
    /// order wants; sick AGs too): no inode or space change can commit meanwhile, and every one committed has
    /// published its in-core figures. Called outside any transaction.</summary>
    private static void WithEveryAgLocked(WriteEngine engine, Action<XfsImage> body)
    {
        uint taken = 0;
        try
        {
            for (; taken < engine.Geometry.AgCount; taken++)
            {
                engine.Ag(taken).Lock.Enter();
            }
            engine.WriteBackCommitted(); // the view reads the image file: every commit in place first
            using XfsImage view = engine.Image.CreateReadView();
            body(view);
        }
        finally
        {
            while (taken > 0)
            {
                engine.Ag(--taken).Lock.Exit();
            }
        }
    }

    /// <summary>Every inode's block maps and every directory's blocks, by one coordinated inode scan (each inode read
    /// under its lock), nothing changed.</summary>
    internal static (ScrubFinding Bmap, ScrubFinding Directories) CheckBlockMaps(WriteEngine engine, ScrubOptions? options = null, CancellationToken cancel = default)
    {
        ArgumentNullException.ThrowIfNull(engine);
        options ??= new ScrubOptions();
        var f = new ScrubFinding(BmapScrubber.Structure, null, options.ProblemLimit);
        var dirs = new ScrubFinding(LinkCountScrubber.DirectoryStructure, null, options.ProblemLimit);
        try
        {
            OnlineBmapCheckResult r = OnlineBmapCheck.Run(engine, options.ProblemLimit, options.CpuShare, cancel);
            foreach (string d in r.Damaged)
            {
                f.Damage(d);
            }
            f.Damage(r.DamagedTotal - r.Damaged.Count, $"{r.DamagedTotal - r.Damaged.Count} more damaged forks");
            f.Note = $"{r.ForksChecked} forks of {r.InodesChecked} inodes";
            f.Elapsed = r.Elapsed;
            foreach (string d in r.DamagedDirectories)
            {
                dirs.Damage(d);
            }
            dirs.Damage(r.DamagedDirectoryTotal - r.DamagedDirectories.Count, $"{r.DamagedDirectoryTotal - r.DamagedDirectories.Count} more damaged directories");
            dirs.Note = $"{r.DirectoriesChecked} directories";
        }
        catch (Exception e) when (e is OnlineRepairException or XfsWriteException)
        {
            f.Skip($"the inode scan could not finish: {e.Message}");
            dirs.Skip($"the inode scan could not finish: {e.Message}");
        }
        return (f, dirs);
    }

    /// <summary>Every link count, by the online nlinks scanner (directory scan with live hooks), nothing changed.</summary>
    public static (ScrubFinding Finding, List<LinkCountMismatch> Mismatches, long Total) CheckLinkCounts(WriteEngine engine, ScrubOptions? options = null, CancellationToken cancel = default)
    {
        ArgumentNullException.ThrowIfNull(engine);
        options ??= new ScrubOptions();
        var clock = Stopwatch.StartNew();
        var f = new ScrubFinding("nlinks", null, options.ProblemLimit);
        List<LinkCountMismatch> wrong = [];
        long total = 0;
        try
        {
            var names = new NamespaceOperations(engine, new FileOperations(engine));
            OnlineLinkCountResult r = OnlineLinkCounts.Run(names, new OnlineLinkCountOptions { MismatchLimit = options.LinkMismatchLimit, CpuShare = options.CpuShare }, cancel);
            foreach (string d in r.Damage)
            {
                f.Damage(d);
            }
            LinkCountScrubber.ReportWrongCounts(f, r.MismatchTotal);
            foreach (string e in r.EntryProblems)
            {
                f.Damage(e);
            }
            f.Damage(r.EntryProblemTotal - r.EntryProblems.Count, $"{r.EntryProblemTotal - r.EntryProblems.Count} more wrong directory entries");
            foreach (string t in r.TreeProblems)
            {
                f.Damage(t);
            }
            f.Damage(r.TreeProblemTotal - r.TreeProblems.Count, $"{r.TreeProblemTotal - r.TreeProblems.Count} more problems of the tree's shape");
            wrong = [.. r.Mismatches];
            total = r.MismatchTotal;
            f.Note = $"{r.InodesCompared} inodes, {r.EntriesCounted} links";
        }
        catch (Exception e) when (e is OnlineRepairException or XfsWriteException)
        {
            f.Skip($"the directory scan with live hooks could not finish: {e.Message}");
        }
        f.Elapsed = clock.Elapsed;
        return (f, wrong, total);
    }

    /// <summary>
    /// Repairs, online, every damaged structure <paramref name="findings"/> (a <see cref="Run"/> of this engine) names,
    /// in the repair order (<see cref="ScrubRepairs"/>; each per-AG rebuild one transaction under its AG lock, writers
    /// going on), checking online again between rounds. Check again afterwards for the verdict.
    /// </summary>
    public static IReadOnlyList<ScrubRepairOutcome> Repair(WriteEngine engine, ScrubReport findings, ScrubOptions? options = null, CancellationToken cancel = default)
    {
        ArgumentNullException.ThrowIfNull(engine);
        ArgumentNullException.ThrowIfNull(findings);
        options ??= new ScrubOptions();
        ScrubOptions checks = options;
        return ScrubRepairs.RepairRounds(engine, findings, options, offline: false, () => Run(engine, checks, null, cancel), cancel);
    }
}
