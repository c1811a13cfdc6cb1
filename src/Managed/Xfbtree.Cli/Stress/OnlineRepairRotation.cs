using System.Globalization;
using Xfbtree.Xfs;
using Xfbtree.Xfs.Check;
using Xfbtree.Xfs.Online;
using Xfbtree.Xfs.Scan;
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
    private readonly bool verify;
    private readonly List<string> failures = new();
    private readonly List<string> skipped = new();
    private long repairs, applied, ignored, mismatches, verified, records;
    private TimeSpan lockedTotal, lockedMax, elapsedTotal;
    private long shadowBytes, shadowRecords;

    public OnlineRepairRotation(WriteEngine engine, bool verify)
    {
        ArgumentNullException.ThrowIfNull(engine);
        this.engine = engine;
        this.verify = verify;
    }

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
        uint count = engine.Geometry.AgCount;
        var repaired = new bool[count];
        var consecutive = new int[count];
        var noRoom = new bool[count];
        int left = (int)count, outOfRotation = 0;
        for (uint agno = 0; ; agno = (agno + 1) % count)
        {
            if ((left == 0 && workloadDone()) || outOfRotation == count)
            {
                return;
            }
            if (noRoom[agno])
            {
                continue;
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
                noRoom[agno] = true;
                outOfRotation++;
                if (!repaired[agno])
                {
                    repaired[agno] = true;
                    left--;
                }
                continue;
            }
            catch (Exception e) when (e is OnlineRepairException or XfsWriteException)
            {
                lock (failures)
                {
                    failures.Add($"AG {agno}: {e.Message}");
                }
                if (++consecutive[agno] >= MaxConsecutiveFailures)
                {
                    throw new InvalidOperationException($"online repair of AG {agno} failed {MaxConsecutiveFailures} times in a row; last: {e.Message}", e);
                }
                continue;
            }
            consecutive[agno] = 0;
            if (!repaired[agno])
            {
                repaired[agno] = true;
                left--;
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
            writer.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"online-repair repairs={repairs} applied={applied} ignored={ignored} mismatches={Interlocked.Read(ref mismatches)} skipped={skipped.Count}"));
        }
    }
}
