using System.Globalization;
using Xfbtree.Xfs;
using Xfbtree.Xfs.Check;
using Xfbtree.Xfs.Online;
using Xfbtree.Xfs.Scan;
using Xfbtree.Xfs.Scrub;
using Xfbtree.Xfs.Write;
using Xfbtree.Xfs.Write.Engine;

namespace Xfbtree.Cli.Stress;

/// <summary>What the offline oracle found for one AG right after an online repair (commits paused).</summary>
internal sealed record OnlineRepairVerdict(uint AgNumber, long Missing, long Extra, long Different, long Structure, string Detail)
{
    public bool IsClean => Missing == 0 && Extra == 0 && Different == 0 && Structure == 0;

    /// <summary>Records lost or extra (a different record counts as both).</summary>
    public long Mismatches => Missing + Extra + 2 * Different;
}

/// <summary>
/// The offline oracle for online repair: with every commit paused (what is committed is in place), a read view of
/// the image with its own buffer cache is scanned offline (<see cref="RmapScanner"/>) and the AG's on-disk rmapbt
/// compared with it (<see cref="RmapChecker"/>: records both ways, structure, AGF counters).
/// </summary>
internal static class OnlineRepairOracle
{
    public static OnlineRepairVerdict Verify(WriteEngine engine, uint agno)
    {
        ArgumentNullException.ThrowIfNull(engine);
        using (engine.PauseCommits())
        {
            using XfsImage view = engine.Image.CreateReadView();
            using RmapScanResult scan = RmapScanner.Scan(view, new RmapScanOptions { OnlyAg = agno, Parallelism = 1 });
            AgCheckReport report = RmapChecker.CheckAg(view, scan.Ags[(int)agno]);
            string detail = string.Join("; ", report.Samples.Take(5).Select(s => $"{s.Kind}: expected {s.Expected}, on disk {s.OnDisk}")
                .Concat(report.Structure.Take(3)).Concat(report.ScanProblems.Take(3).Select(p => p.ToString())));
            return new OnlineRepairVerdict(agno, report.Missing, report.Extra, report.Different, report.StructureTotal + report.ScanProblemTotal, detail);
        }
    }
}

/// <summary>What the offline link count oracle found (commits paused): wrong link counts and entries naming free
/// inodes, with the first of them.</summary>
internal sealed record LinkCountVerdict(long Wrong, string Detail);

/// <summary>
/// The offline oracle for the online link count repair: with every commit paused, a read view of the image is
/// scrubbed offline (<see cref="Scrubber"/>, whose link counts come from reading every directory of the view) and
/// its nlinks finding returned. A directory removed while held open (nlink 0, on the unlinked list) still has its
/// '.' and '..' on disk and would count here: the stress workload holds no inode open.
/// </summary>
internal static class LinkCountOracle
{
    public static LinkCountVerdict Verify(WriteEngine engine)
    {
        ArgumentNullException.ThrowIfNull(engine);
        using (engine.PauseCommits())
        {
            using XfsImage view = engine.Image.CreateReadView();
            ScrubReport report = Scrubber.Run(view, new ScrubOptions { Parallelism = 1 });
            ScrubFinding nlinks = report.Findings.Single(f => f.Structure == "nlinks");
            long wrong = nlinks.Verdict == ScrubVerdict.Clean ? 0 : Math.Max(1, nlinks.ProblemTotal);
            string detail = string.Join("; ", report.LinkMismatches.Take(5).Select(m => $"inode {m.Ino} nlink: {m.NLink}, counted {m.Counted}").Prepend(nlinks.ToString()));
            return new LinkCountVerdict(wrong, detail);
        }
    }
}

/// <summary>
/// Online repairs of every AG in rotation beside a stress workload (<c>xfbtree stress --online-repair</c>): runs
/// until every AG was rebuilt at least once and the workload has claimed its operations; with verification, each
/// repair is followed by <see cref="OnlineRepairOracle.Verify"/>. A repair that fails cleanly (busy inode, aborted
/// scan) is counted and retried on the next turn; an AG that fails five times in a row, or a verdict with
/// mismatches, ends the rotation with an exception (a problem of the stress run). An AG with no room for a new
/// rmapbt (<see cref="OnlineRepairNoSpaceException"/>) is reported once and left out of the rotation: it was not
/// changed, and retrying cannot help while it is that full.
/// </summary>
internal sealed class OnlineRepairRotation : IStressBackground
{
    private const int MaxConsecutiveFailures = 5;
    private readonly WriteEngine engine;
    private readonly XfsFileSystem? fs;
    private readonly OnlineRepairStructures structures;
    private readonly bool verify;
    private readonly List<string> failures = new();
    private readonly List<string> skipped = new();
    private long repairs, applied, ignored, mismatches, verified, records;
    private TimeSpan lockedTotal, lockedMax, elapsedTotal;
    private long shadowBytes, shadowRecords;
    private long nlinkChecks, nlinkWrong, nlinkRepaired, nlinkVerified, nlinkApplied, nlinkIgnored, nlinkPacedTicks;
    private int nlinkConsecutive;
    private readonly AgTreeRepairRotation? agTrees;

    /// <summary>The rmapbt of every AG in rotation (no other structure).</summary>
    public OnlineRepairRotation(WriteEngine engine, bool verify)
    {
        ArgumentNullException.ThrowIfNull(engine);
        this.engine = engine;
        this.verify = verify;
        structures = OnlineRepairStructures.Rmapbt;
    }

    /// <summary>The <paramref name="structures"/> of <paramref name="fs"/>, AG after AG: the rmapbt, then the
    /// free-space trees (bnobt and cntbt are rebuilt together), the inode btrees (inobt and finobt together) and the
    /// refcountbt of that AG (<see cref="AgTreeRepairRotation"/>: each rebuild is always verified by the scrub of the
    /// AG with commits paused); the link counts are checked and repaired once per round of the AGs (every turn when
    /// no per-AG structure is asked for).</summary>
    public OnlineRepairRotation(XfsFileSystem fs, bool verify, OnlineRepairStructures structures)
    {
        ArgumentNullException.ThrowIfNull(fs);
        this.fs = fs;
        engine = fs.Engine;
        this.verify = verify;
        this.structures = structures;
        var trees = new List<string>();
        if ((structures & (OnlineRepairStructures.Bnobt | OnlineRepairStructures.Cntbt)) != 0) trees.Add("bnobt");
        if ((structures & (OnlineRepairStructures.Inobt | OnlineRepairStructures.Finobt)) != 0) trees.Add("inobt");
        if ((structures & OnlineRepairStructures.Refcountbt) != 0 && engine.Geometry.Superblock.HasReflink) trees.Add("refcountbt");
        agTrees = trees.Count > 0 ? new AgTreeRepairRotation(engine, trees) : null;
    }

    /// <summary>Structures asked for that this filesystem does not have (the refcountbt without reflink): not exercised.</summary>
    public OnlineRepairStructures NotExercised => engine.Geometry.Superblock.HasReflink ? OnlineRepairStructures.None : structures & OnlineRepairStructures.Refcountbt;

    /// <summary>Link count checks run, wrong link counts they found, and those repaired.</summary>
    public long NlinkChecks => Interlocked.Read(ref nlinkChecks);

    public long NlinkWrong => Interlocked.Read(ref nlinkWrong);

    public long NlinkRepaired => Interlocked.Read(ref nlinkRepaired);

    /// <summary>Options of every repair of the rotation (tests).</summary>
    internal OnlineRmapRepairOptions RepairOptions { get; init; } = new();

    public long Repairs => Interlocked.Read(ref repairs);

    public long Mismatches => Interlocked.Read(ref mismatches);

    /// <summary>AGs left out of the rotation for lack of room, one message each.</summary>
    public IReadOnlyList<string> Skipped
    {
        get
        {
            lock (failures)
            {
                return skipped.ToArray();
            }
        }
    }

    /// <summary>Check each per-AG tree rebuild with the scrub of its AG, commits paused (default true).</summary>
    public bool VerifyAgTrees
    {
        get => agTrees?.VerifyRebuilds ?? false;
        init
        {
            if (agTrees is not null)
            {
                agTrees.VerifyRebuilds = value;
            }
        }
    }

    /// <summary>The share of one CPU the repairs may take (1 = not paced, back to back): the link count check paces
    /// itself (<see cref="OnlineLinkCountOptions.CpuShare"/>), the rmapbt and per-AG tree rebuilds are paced by
    /// <see cref="RepairPacer"/> after each one.</summary>
    public double RepairCpuShare
    {
        get => pacer.Share;
        init
        {
            pacer = new RepairPacer(value);
            if (agTrees is not null)
            {
                agTrees.Pacer = pacer;
            }
        }
    }

    private readonly RepairPacer pacer = new(1);

    public IReadOnlyList<string> Failures
    {
        get
        {
            lock (failures)
            {
                return failures.ToArray();
            }
        }
    }

    /// <inheritdoc/>
    public void Run(Func<bool> workloadDone)
    {
        ArgumentNullException.ThrowIfNull(workloadDone);
        bool rmap = (structures & OnlineRepairStructures.Rmapbt) != 0;
        bool nlinks = (structures & OnlineRepairStructures.Nlinks) != 0 && fs is not null;
        bool perAg = rmap || agTrees is not null;
        if (!perAg && !nlinks)
        {
            return;
        }
        uint count = engine.Geometry.AgCount;
        bool reflink = engine.Geometry.Superblock.HasReflink;
        var state = new RmapRotationState(count);
        bool nlinksDone = !nlinks, treesDone = agTrees is null;
        for (uint agno = 0; ; agno = (agno + 1) % count)
        {
            if ((state.Left == 0 || !rmap) && treesDone && nlinksDone && workloadDone())
            {
                return;
            }
            if (rmap && state.OutOfRotation == count && !nlinks && agTrees is null)
            {
                return;
            }
            if (rmap)
            {
                long started = RepairPacer.Start();
                RmapTurn(agno, state);
                pacer.After(started);
            }
            agTrees?.RepairAg(agno, reflink);
            treesDone |= agTrees is not null && agno == count - 1;
            if (nlinks && (!perAg || agno == count - 1))
            {
                nlinksDone |= NlinksTurn();
            }
        }
    }

    private sealed class RmapRotationState(uint count)
    {
        public readonly bool[] Repaired = new bool[count];
        public readonly int[] Consecutive = new int[count];
        public readonly bool[] NoRoom = new bool[count];
        public int Left = (int)count;
        public int OutOfRotation;
    }

    private void RmapTurn(uint agno, RmapRotationState state)
    {
        if (state.NoRoom[agno])
        {
            return;
        }
        OnlineRmapRepairResult result;
        try
        {
            result = OnlineRmapRepair.Run(engine, agno, RepairOptions);
        }
        catch (OnlineRepairNoSpaceException e)
        {
            lock (failures)
            {
                skipped.Add(e.Message);
            }
            state.NoRoom[agno] = true;
            state.OutOfRotation++;
            if (!state.Repaired[agno])
            {
                state.Repaired[agno] = true;
                state.Left--;
            }
            return;
        }
        catch (Exception e) when (e is OnlineRepairException or XfsWriteException)
        {
            lock (failures)
            {
                failures.Add($"AG {agno}: {e.Message}");
            }
            if (++state.Consecutive[agno] >= MaxConsecutiveFailures)
            {
                throw new InvalidOperationException($"online repair of AG {agno} failed {MaxConsecutiveFailures} times in a row; last: {e.Message}", e);
            }
            return;
        }
        state.Consecutive[agno] = 0;
        if (!state.Repaired[agno])
        {
            state.Repaired[agno] = true;
            state.Left--;
        }
        lock (failures)
        {
            repairs++;
            applied += result.LiveUpdatesApplied;
            ignored += result.LiveUpdatesIgnored;
            records += result.Records;
            lockedTotal += result.TimeLocked;
            elapsedTotal += result.Elapsed;
            if (result.TimeLocked > lockedMax) lockedMax = result.TimeLocked;
            shadowBytes += result.ShadowBytes;
            shadowRecords += result.ShadowRecords;
        }
        if (verify)
        {
            OnlineRepairVerdict verdict = OnlineRepairOracle.Verify(engine, agno);
            Interlocked.Increment(ref verified);
            if (!verdict.IsClean)
            {
                Interlocked.Add(ref mismatches, Math.Max(1, verdict.Mismatches));
                throw new InvalidOperationException($"online repair of AG {agno}: the new rmapbt differs from the offline scan: missing {verdict.Missing}, extra {verdict.Extra}, different {verdict.Different}, structure {verdict.Structure}: {verdict.Detail}");
            }
        }
    }

    /// <summary>One link count check and repair; true when it completed. A repair that left a wrong count, or (with
    /// verification) an offline count of the paused image that disagrees, ends the rotation with an exception.</summary>
    private bool NlinksTurn()
    {
        OnlineLinkCountResult result;
        try
        {
            result = OnlineLinkCounts.Run(fs!, new OnlineLinkCountOptions { Repair = true, CpuShare = RepairCpuShare });
        }
        catch (Exception e) when (e is OnlineRepairException or XfsWriteException)
        {
            lock (failures)
            {
                failures.Add($"nlinks: {e.Message}");
            }
            if (++nlinkConsecutive >= MaxConsecutiveFailures)
            {
                throw new InvalidOperationException($"online link count repair failed {MaxConsecutiveFailures} times in a row; last: {e.Message}", e);
            }
            return false;
        }
        nlinkConsecutive = 0;
        Interlocked.Increment(ref nlinkChecks);
        Interlocked.Add(ref nlinkWrong, result.MismatchTotal);
        Interlocked.Add(ref nlinkRepaired, result.Repaired + result.Adopted);
        Interlocked.Add(ref nlinkApplied, result.LiveUpdatesApplied);
        Interlocked.Add(ref nlinkIgnored, result.LiveUpdatesIgnored);
        Interlocked.Add(ref nlinkPacedTicks, result.Paced.Ticks);
        if (!result.IsClean)
        {
            Interlocked.Increment(ref mismatches);
            throw new InvalidOperationException($"online link count repair left wrong counts: {string.Join("; ", result.NotRepaired.Concat(result.Damage).Take(5))}");
        }
        if (verify)
        {
            LinkCountVerdict verdict = LinkCountOracle.Verify(engine);
            Interlocked.Increment(ref nlinkVerified);
            if (verdict.Wrong > 0)
            {
                Interlocked.Add(ref mismatches, verdict.Wrong);
                throw new InvalidOperationException($"online link count repair: the offline scrub of the paused image finds {verdict.Wrong} wrong link counts: {verdict.Detail}");
            }
        }
        return true;
    }

    /// <summary>The report lines; the last one is <c>online-repair repairs=N applied=A ignored=I mismatches=M skipped=K</c>
    /// (K: AGs left out for lack of room, each named on a "left out" line before it).</summary>
    public void WriteReport(TextWriter writer)
    {
        ArgumentNullException.ThrowIfNull(writer);
        lock (failures)
        {
            double n = Math.Max(1, repairs);
            writer.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"online-repair: {repairs} repairs ({records} records), {failures.Count} failed cleanly and retried, {Interlocked.Read(ref verified)} verified; " +
                $"mean {elapsedTotal.TotalMilliseconds / n:F1} ms, AG locked mean {lockedTotal.TotalMilliseconds / n:F2} ms max {lockedMax.TotalMilliseconds:F2} ms; " +
                $"shadow {(shadowRecords > 0 ? (double)shadowBytes / shadowRecords : 0):F1} bytes/record"));
            foreach (string f in failures.Take(5))
            {
                writer.WriteLine($"online-repair: retried: {f}");
            }
            foreach (string s in skipped)
            {
                writer.WriteLine($"online-repair: left out: {s}");
            }
            if ((structures & OnlineRepairStructures.Nlinks) != 0 && fs is not null)
            {
                writer.WriteLine(string.Create(CultureInfo.InvariantCulture,
                    $"online-repair: nlinks: {Interlocked.Read(ref nlinkChecks)} checks, {Interlocked.Read(ref nlinkWrong)} wrong link counts found, {Interlocked.Read(ref nlinkRepaired)} repaired, " +
                    $"{Interlocked.Read(ref nlinkVerified)} verified; live updates applied {Interlocked.Read(ref nlinkApplied)} ignored {Interlocked.Read(ref nlinkIgnored)}; " +
                    $"paced {TimeSpan.FromTicks(Interlocked.Read(ref nlinkPacedTicks)).TotalSeconds:F2} s"));
            }
            if (agTrees is not null)
            {
                writer.WriteLine(string.Create(CultureInfo.InvariantCulture,
                    $"online-repair: AG trees: {agTrees.Repairs} repairs of {OnlineRepairStructureNames.Format(structures & ~(OnlineRepairStructures.Rmapbt | OnlineRepairStructures.Nlinks) & ~NotExercised)}, {agTrees.Verified} verified, {agTrees.NoRoom} left out for lack of room, {agTrees.Problems} problems"));
            }
            if (NotExercised != OnlineRepairStructures.None)
            {
                writer.WriteLine($"online-repair: not exercised: {OnlineRepairStructureNames.Format(NotExercised)} (not on this filesystem: no reflink)");
            }
            writer.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"online-repair: CPU share {RepairCpuShare:0.##}; rebuilds paced {pacer.Waited.TotalSeconds:F2} s"));
            writer.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"online-repair repairs={repairs} applied={applied} ignored={ignored} mismatches={Interlocked.Read(ref mismatches) + (agTrees?.Problems ?? 0)} skipped={skipped.Count}"));
        }
    }
}
