using Xfbtree.Xfs;
using Xfbtree.Xfs.Online;
using Xfbtree.Xfs.Scrub;
using Xfbtree.Xfs.Write;
using Xfbtree.Xfs.Write.Engine;

namespace Xfbtree.Cli.Stress;

/// <summary>
/// Scrub repairs of the per-AG trees (bnobt+cntbt, inobt+finobt, refcountbt) of every AG in rotation beside a stress
/// workload, each followed, with commits paused, by the offline scrub of that AG on a read view of the image (its
/// trees and headers against the rmap and the inode cores: 0 lost or extra records, counters right). Runs until
/// every AG had every repair at least once and the workload has claimed its operations. A repair that finds no room
/// (NoSpace) is counted and skipped; any other failure, or a damaged verdict, ends the rotation with an exception
/// (a problem of the stress run).
/// </summary>
internal sealed class AgTreeRepairRotation(WriteEngine engine, IReadOnlyList<string> structures) : IStressBackground
{
    /// <summary>The trees it can rotate over, by name (the AG header rebuilds, "AGF" with its AGFL and "AGI", are
    /// asked for by name).</summary>
    public static readonly IReadOnlyList<string> All = ["bnobt", "inobt", "refcountbt"];

    private long repairs, verified, noRoom, problems;

    /// <summary>Check each rebuild with the scrub of its AG, commits paused (the default; off only to measure what the
    /// rebuilds alone cost the writers beside them).</summary>
    public bool VerifyRebuilds { get; set; } = true;

    /// <summary>Paces the rebuilds (each with its verification) to a share of one CPU; null = back to back.</summary>
    public RepairPacer? Pacer { get; set; }

    public long Repairs => Interlocked.Read(ref repairs);

    public long Verified => Interlocked.Read(ref verified);

    /// <summary>Repairs skipped for lack of room.</summary>
    public long NoRoom => Interlocked.Read(ref noRoom);

    /// <summary>Problems the verifying scrubs found (must stay 0).</summary>
    public long Problems => Interlocked.Read(ref problems);

    /// <inheritdoc/>
    public void Run(Func<bool> workloadDone)
    {
        ArgumentNullException.ThrowIfNull(workloadDone);
        bool reflink = engine.Geometry.Superblock.HasReflink;
        while (true)
        {
            for (uint agno = 0; agno < engine.Geometry.AgCount; agno++)
            {
                RepairAg(agno, reflink);
            }
            if (workloadDone())
            {
                return;
            }
        }
    }

    /// <summary>Every structure of the rotation rebuilt in AG <paramref name="agno"/>, each verified (the stress
    /// rotation of <c>--structures</c> calls this per AG turn).</summary>
    internal void RepairAg(uint agno, bool reflink)
    {
        foreach (string s in structures)
        {
            if (s == "refcountbt" && !reflink) continue;
            long started = RepairPacer.Start();
            try
            {
                AgRebuildResult _ = s switch
                {
                    "bnobt" => OnlineFreeSpaceRepair.Run(engine, agno),
                    "inobt" => OnlineInodeBtreeRepair.Run(engine, agno),
                    "refcountbt" => OnlineRefcountRepair.Run(engine, agno),
                    "AGF" => OnlineAgHeaderRepair.RepairAgf(engine, agno),
                    "AGI" => OnlineAgHeaderRepair.RepairAgi(engine, agno),
                    _ => throw new ArgumentException($"unknown structure {s}"),
                };
            }
            catch (XfsWriteException e) when (e.Kind == WriteErrorKind.NoSpace)
            {
                Interlocked.Increment(ref noRoom);
                continue;
            }
            catch (OnlineRepairNoSpaceException)
            {
                Interlocked.Increment(ref noRoom);
                continue;
            }
            Interlocked.Increment(ref repairs);
            if (VerifyRebuilds)
            {
                Verify(agno, s);
            }
            Pacer?.After(started);
        }
    }

    private void Verify(uint agno, string structure)
    {
        ScrubReport report;
        using (engine.PauseCommits())
        {
            using XfsImage view = engine.Image.CreateReadView();
            report = Scrubber.Run(view, new ScrubOptions { OnlyAg = agno, Parallelism = 1 });
        }
        Interlocked.Increment(ref verified);
        var damaged = report.Findings.Where(f => f.Verdict != ScrubVerdict.Clean).ToList();
        if (damaged.Count > 0)
        {
            Interlocked.Add(ref problems, Math.Max(1, damaged.Sum(f => f.ProblemTotal)));
            throw new InvalidOperationException($"after the {structure} repair of AG {agno} the scrub finds: {string.Join(" | ", damaged.Select(f => f.ToString()))}");
        }
    }
}
