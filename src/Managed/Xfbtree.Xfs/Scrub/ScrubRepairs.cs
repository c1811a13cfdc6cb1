using System.Diagnostics;
using Xfbtree.Buffers;
using Xfbtree.Xfs.Format;
using Xfbtree.Xfs.Online;
using Xfbtree.Xfs.Write;
using Xfbtree.Xfs.Write.Engine;
using Xfbtree.Xfs.Write.Files;
using Xfbtree.Xfs.Write.Namespace;

namespace Xfbtree.Xfs.Scrub;

/// <summary>What a repair is given: the open engine (writers may be running) and the findings that asked for it.</summary>
/// <param name="Engine">The open engine.</param>
/// <param name="Findings">The check whose damaged findings ask for the repairs.</param>
/// <param name="Cancel">Cancels the repairs between steps.</param>
/// <param name="CpuShare">The share of one CPU the repairs' scans may use.</param>
/// <param name="Offline">True for the repair of an unmounted image (no writer but the repairs): a filesystem without an
/// rmapbt is then rebuilt from scans taken between repairs.</param>
internal sealed record ScrubRepairContext(WriteEngine Engine, ScrubReport Findings, CancellationToken Cancel, double CpuShare = 1, bool Offline = false);

/// <summary>
/// One repair of <c>xfbtree scrub --repair</c>: the findings it answers and how it rebuilds them through the write
/// engine. A per-AG repair runs once for each AG with a damaged finding it answers; a filesystem-wide one (per AG
/// false) once when one of its findings is damaged. To add one, implement this and insert it in
/// <see cref="ScrubRepairs.InOrder"/> where its sources are already repaired.
/// </summary>
internal interface IScrubRepair
{
    /// <summary>What the report lines call it ("bnobt+cntbt").</summary>
    string Name { get; }

    /// <summary>True for per-AG structures.</summary>
    bool PerAg { get; }

    /// <summary>True when a damaged finding of <paramref name="structure"/> ("bnobt", "AGF", "nlinks") asks for this repair.</summary>
    bool Answers(string structure);

    /// <summary>True for a filesystem-wide repair that may run again in a later round (it repairs what the check of
    /// that round lists: the block maps); the others run once.</summary>
    bool Repeatable => false;

    /// <summary>False when the structure does not exist on this filesystem (a refcountbt without reflink).</summary>
    bool AppliesTo(WriteEngine engine) => true;

    /// <summary>True when this repair must wait: a finding it derives from is damaged too (the next round, after
    /// that one's repair and a new check, runs it).</summary>
    bool Skips(ScrubRepairContext context, uint? agno) => false;

    /// <summary>Repairs (AG <paramref name="agno"/>, or null for a filesystem-wide repair); returns what it did, one
    /// line. Throws <see cref="OnlineRepairException"/> or <see cref="XfsWriteException"/> when it could not
    /// (nothing changed: every repair is one engine transaction, or leaves the old structure).</summary>
    string Repair(ScrubRepairContext context, uint? agno);
}

/// <summary>The outcome of one repair of one AG (or of the filesystem).</summary>
/// <param name="Name">The structure repaired, as the scrub names it ("bnobt+cntbt", "nlinks", ...).</param>
/// <param name="AgNumber">The AG repaired, or null for a filesystem-wide structure.</param>
/// <param name="Repaired">True when the structure was rebuilt or corrected; false when the repair could not run.</param>
/// <param name="Detail">What was done, or why nothing was, in one line.</param>
/// <param name="Elapsed">Wall time of the repair, locks held included.</param>
public sealed record ScrubRepairOutcome(string Name, uint? AgNumber, bool Repaired, string Detail, TimeSpan Elapsed)
{
    /// <summary>"AG 2 bnobt+cntbt" or the structure's name alone for a filesystem-wide one.</summary>
    public string Subject => AgNumber is { } ag ? $"AG {ag} {Name}" : Name;

    /// <summary>One line: subject, "repaired" or "not repaired", detail.</summary>

    public override string ToString() => $"{Subject}: {(Repaired ? "repaired" : "not repaired")}: {Detail}";
}

/// <summary>
/// The repair half of <c>xfbtree scrub</c>: given the damaged findings of a check, runs the repairs through an open
/// <see cref="WriteEngine"/> in the repair order (docs/scrub.md): the rmapbt first (every other AG structure is
/// derived from it), then the free list (the free-space rebuild reads it), then the free-space trees (before anything that allocates), then the inode btrees and the
/// refcountbt, then filesystem-wide repairs (link counts, the superblock counters, which the engine's close derives
/// from the repaired AG headers). Each repair is one engine transaction holding only its AG's lock, so writers to
/// other AGs go on and writers to that AG wait for it.
/// </summary>
internal static class ScrubRepairs
{
    /// <summary>Every repair, in the order they run.</summary>
    public static readonly IReadOnlyList<IScrubRepair> InOrder =
    [
        new PrimarySuperblockRestore(),
        new AgTreeRepair("superblock", ["superblock"], (e, ag) => OnlineAgHeaderRepair.RepairSecondarySuperblock(e, ag), withRmapbt: null),
        new AgHeaderRepair(AgHeaderKind.Agf, ["bnobt", "cntbt", "refcountbt"], (e, ag) => OnlineAgHeaderRepair.RepairAgf(e, ag).ToString()),
        new AgTreeRepair("AGFL", ["AGFL"], (e, ag) => OnlineAgflRepair.Run(e, ag).ToString()),
        new AgHeaderRepair(AgHeaderKind.Agi, ["inobt", "finobt"], (e, ag) => OnlineAgHeaderRepair.RepairAgi(e, ag).ToString()),
        new InodeCoreRepair(),
        new BmapRepair(),
        new AttrForkRepair(),
        new RmapbtRepair(),
        new AgTreeRepair("bnobt+cntbt", ["bnobt", "cntbt"], (e, ag) => OnlineFreeSpaceRepair.Run(e, ag).ToString()),
        new AgTreeRepair("inobt+finobt", ["inobt", "finobt"], (e, ag) => OnlineInodeBtreeRepair.Run(e, ag).ToString()),
        new AgTreeRepair("refcountbt", ["refcountbt"], (e, ag) => OnlineRefcountRepair.Run(e, ag).ToString(), requiresReflink: true),
        // Without an rmapbt (offline only): each rebuild from a scan of the AG taken just before it (docs/scrub.md).
        new ScannedAgRepair("AGF", ["AGF"], (c, ag) => NoRmapbtTrees(c, ag, refcount: true)),
        new ScannedAgRepair("AGFL", ["AGFL"], (c, ag) => FromScan(c, ag, ["bnobt", "cntbt", "AGFL"], s => OnlineFreeSpaceRepair.Run(c.Engine, ag, null, s, emptyFreeListFirst: true))),
        new ScannedAgRepair("AGI", ["AGI"], (c, ag) => NoRmapbtTrees(c, ag, inodes: true, relinkUnlinked: true)),
        new ScannedAgRepair("bnobt+cntbt", ["bnobt", "cntbt"], (c, ag) => FromScan(c, ag, ["bnobt", "cntbt"], s => OnlineFreeSpaceRepair.Run(c.Engine, ag, null, s))),
        new ScannedAgRepair("inobt+finobt", ["inobt", "finobt"], (c, ag) => NoRmapbtTrees(c, ag, inodes: true)),
        new ScannedAgRepair("refcountbt", ["refcountbt"], (c, ag) => NoRmapbtTrees(c, ag, refcount: true), requiresReflink: true),
        new DirectoryRepair(),
        new LinkCountRepair(),
        new SummaryCounterRepair(),
    ];

    /// <summary>The repairs that run before the rmapbt's and re-check after them: their damage makes the rmapbt line
    /// (the scan could not read a fork or a directory), so the rmapbt waits for them and is judged again after.</summary>
    private static readonly string[] RecheckAfter = [BmapRepair.RepairName, DirectoryRepair.RepairName];

    /// <summary>
    /// A rebuild of AG <paramref name="agno"/> from a scan of it taken now (<see cref="ScannedAgRmaps"/>), refused
    /// when the scan met damage outside <paramref name="rebuilt"/> (the structures the rebuild replaces). Null: the
    /// rebuild takes only the old tree's blocks from the scan (the inode btrees: their chunks come from the inobt's
    /// records checked against the inode cores, their new blocks from the allocator), so damage the scan met
    /// elsewhere does not stop it.
    /// </summary>
    private static string FromScan(ScrubRepairContext context, uint agno, string[]? rebuilt, Func<ScannedAgRmaps, AgRebuildResult> rebuild)
    {
        using ScannedAgRmaps scan = ScannedAgRmaps.Take(context.Engine, agno, context.Cancel);
        if (rebuilt is not null) scan.RequireCompleteBut(rebuilt);
        return rebuild(scan).ToString();
    }

    /// <summary>
    /// The AG trees of a filesystem without an rmapbt, each rebuilt from a scan taken right before it: the inode
    /// btrees (with <paramref name="relinkUnlinked"/>, the AGI's unlinked lists too) and the refcountbt when asked, and
    /// the free-space trees after them (before a refcountbt the scan could walk: its new blocks come from them): blocks of an old tree the scan could not reach (a pointer, a level, a root gone
    /// wrong, or one tree's root given to another) are owned by nobody once it is replaced, and the free-space rebuild,
    /// which sees the space as it is then, returns them. The AGF repair is the refcountbt and free-space rebuilds (its
    /// counters are theirs: only an AGF that verifies and whose roots lead to the trees is repaired; nothing else says
    /// where they are); the AGI repair is the inode btrees' (its counters, roots and lists).
    /// </summary>
    private static string NoRmapbtTrees(ScrubRepairContext context, uint agno, bool inodes = false, bool refcount = false, bool relinkUnlinked = false)
    {
        WriteEngine engine = context.Engine;
        var done = new List<string>();
        if (inodes)
        {
            done.Add("inobt+finobt " + InodeTrees(context, agno, relinkUnlinked));
        }
        string FreeSpace() => "bnobt+cntbt " + FromScan(context, agno, ["bnobt", "cntbt", "AGF"], s => OnlineFreeSpaceRepair.Run(engine, agno, null, s));
        if (refcount && engine.Geometry.Superblock.HasReflink)
        {
            // The refcountbt's new blocks come from the free-space trees: those go first unless the refcountbt hides
            // blocks from the scan (then it goes first, and the free-space trees after it).
            bool hidden;
            using (ScannedAgRmaps probe = ScannedAgRmaps.Take(engine, agno, context.Cancel))
            {
                hidden = probe.Problems.Any(p => p.Where is "refcountbt" or "OWN_REFC");
            }
            if (!hidden && !inodes)
            {
                done.Add(FreeSpace());
            }
            done.Add("refcountbt " + FromScan(context, agno, ["refcountbt", "OWN_REFC", "AGF"], s => OnlineRefcountRepair.Run(engine, agno, null, s)));
            if (!hidden && !inodes)
            {
                return string.Join("; ", done);
            }
        }
        done.Add(FreeSpace());
        return string.Join("; ", done);
    }

    /// <summary>
    /// The inode btrees of a filesystem without an rmapbt: rebuilt from the inobt's records checked against the inode
    /// cores; when the inobt cannot be walked (a leaf that does not verify, a root or a level gone wrong), from the
    /// chunks an <see cref="InodeChunkDiscovery"/> finds by reading the blocks nothing else claims, refused unless it
    /// accounts for every block in use.
    /// </summary>
    private static string InodeTrees(ScrubRepairContext context, uint agno, bool relinkUnlinked)
    {
        WriteEngine engine = context.Engine;
        if (InodeChunkDiscovery.InobtWalkProblem(engine, agno) is not { } inobtProblem)
        {
            return FromScan(context, agno, null, s => OnlineInodeBtreeRepair.Run(engine, agno, null, s, relinkUnlinked));
        }
        InodeChunkDiscovery.Found found;
        try
        {
            found = InodeChunkDiscovery.Run(engine, agno, context.Cancel);
        }
        catch (Exception e) when (e is OnlineRepairException or CorruptionException)
        {
            throw new OnlineRepairException($"{inobtProblem}; and the inode chunk discovery refused: {e.Message}");
        }
        using (found.Source)
        {
            return $"{OnlineInodeBtreeRepair.Run(engine, agno, null, found.Source, relinkUnlinked, found.InodeBlocks)} ({found}; the inobt did not walk: {inobtProblem})";
        }
    }

    /// <summary>True when the finding is damaged.</summary>
    public static bool IsDamaged(ScrubFinding f) => f.Verdict == ScrubVerdict.Damaged;

    /// <summary>
    /// Runs every repair the report's damaged findings ask for, in order; a failed repair of an AG skips the later
    /// repairs of that AG (their sources may be what failed). Returns one outcome per repair run or skipped.
    /// </summary>
    /// <param name="context">The engine and the findings.</param>
    /// <param name="progress">Told of each repair as it starts.</param>
    /// <param name="wideDone">Names of the filesystem-wide repairs that ran in an earlier round (left out now; one
    /// that waited for its source did not run and may run now). Those that run are added.</param>
    /// <param name="waited">The repairs that skipped their turn because their source is damaged too (another round may
    /// run them), as outcomes saying so.</param>
    public static List<ScrubRepairOutcome> Run(ScrubRepairContext context, Action<string>? progress, ISet<string> wideDone, out List<ScrubRepairOutcome> waited)
    {
        ArgumentNullException.ThrowIfNull(context);
        ArgumentNullException.ThrowIfNull(wideDone);
        waited = new List<ScrubRepairOutcome>();
        var outcomes = new List<ScrubRepairOutcome>();
        var failedAgs = new HashSet<uint>();
        // AGs whose AGF or AGI was rewritten this round: what the check said of their other structures may only have
        // been that header's damage (a tree it could not locate), so their later repairs wait for the next check.
        var rewrittenHeaders = new HashSet<uint>();
        var damaged = context.Findings.Findings.Where(IsDamaged).ToList();
        foreach (IScrubRepair repair in InOrder)
        {
            if ((!repair.PerAg && !repair.Repeatable && wideDone.Contains(repair.Name)) || !repair.AppliesTo(context.Engine)) continue;
            var targets = damaged.Where(f => repair.Answers(f.Structure) && (f.AgNumber is null) == !repair.PerAg)
                .Select(f => f.AgNumber).Distinct().OrderBy(a => a ?? 0).ToList();
            foreach (uint? agno in targets)
            {
                context.Cancel.ThrowIfCancellationRequested();
                if (agno is { } a && failedAgs.Contains(a))
                {
                    outcomes.Add(new ScrubRepairOutcome(repair.Name, agno, false, "an earlier repair of this AG failed", TimeSpan.Zero));
                    continue;
                }
                if (agno is { } h && rewrittenHeaders.Contains(h))
                {
                    waited.Add(new ScrubRepairOutcome(repair.Name, agno, false, "waits for the check after this AG's header was rewritten", TimeSpan.Zero));
                    continue;
                }
                if (repair.Skips(context, agno))
                {
                    waited.Add(new ScrubRepairOutcome(repair.Name, agno, false, $"waits for the repair of the structures {(agno is null ? "" : "of this AG ")}it is rebuilt from, which are damaged too", TimeSpan.Zero));
                    continue;
                }
                if (!repair.PerAg) wideDone.Add(repair.Name);
                progress?.Invoke($"repairing {(agno is { } g ? $"AG {g} " : "")}{repair.Name}");
                var clock = Stopwatch.StartNew();
                try
                {
                    string detail = repair.Repair(context, agno);
                    outcomes.Add(new ScrubRepairOutcome(repair.Name, agno, true, detail, clock.Elapsed));
                    if (repair is AgHeaderRepair && agno is { } r) rewrittenHeaders.Add(r);
                }
                // Corruption met in a repair's source (a file's damaged bmbt read by the rmapbt rebuild's inode scan)
                // fails that repair like any refusal: it must not end the rounds, nor leave the engine unclosed (an
                // image left NEEDSREPAIR with a pending journal).
                catch (Exception e) when (e is OnlineRepairException or XfsWriteException or CorruptionException)
                {
                    outcomes.Add(new ScrubRepairOutcome(repair.Name, agno, false, e.Message, clock.Elapsed));
                    if (agno is { } f) failedAgs.Add(f);
                }
            }
        }
        foreach (uint? agno in outcomes.Where(o => o.Repaired && o.AgNumber is not null).Select(o => o.AgNumber).Distinct())
        {
            if (!failedAgs.Contains(agno!.Value)) context.Engine.Ag(agno.Value).MarkHealthy();
        }
        return outcomes;
    }

    /// <summary>
    /// True when AG <paramref name="agno"/>'s rmapbt is damaged and the only other damage of the AG is its AGF's rmapbt
    /// root naming a block that is no rmapbt block (the tree's only block overwritten, say): the rmapbt rebuild's
    /// source is every other piece of metadata and its old blocks are what no record and no free extent covers, so it
    /// needs nothing of the old tree; it sets the AGF's root, level and counters at its switch. The AGF rebuild, which
    /// must find an rmapbt that walks clean, waits for it.
    /// </summary>
    private static bool RmapbtRebuildSetsTheRoot(ScrubRepairContext context, uint? agno)
    {
        bool rmapbtDamaged = false, agfRootOnly = false;
        foreach (ScrubFinding f in context.Findings.Findings)
        {
            if (f.AgNumber != agno || !IsDamaged(f)) continue;
            if (f.Structure == "rmapbt") rmapbtDamaged = true;
            else if (f.Structure == "AGF" && f.OnlyRmapbtRootDamage) agfRootOnly = true;
            else return false;
        }
        return rmapbtDamaged && agfRootOnly;
    }

    /// <summary>Rounds of repair and re-check at most (a repair that waited for its source runs in the next one).</summary>
    public const int MaxRounds = 3;

    /// <summary>
    /// Repairs an unmounted image in place through the write engine (which sets NEEDSREPAIR while it is open and
    /// clears it at its clean close, after deriving the superblock counters): rounds of <see cref="Run(ScrubRepairContext, Action{string}?, ISet{string}, out List{ScrubRepairOutcome})"/> and a
    /// re-check of a read view with commits paused while a repair waited for its source, until nothing per-AG is
    /// left damaged, a round repairs nothing, or <see cref="MaxRounds"/>. Throws <see cref="XfsWriteException"/> when the engine cannot open the image.
    /// The caller checks the closed image again for the final verdict.
    /// </summary>
    public static List<ScrubRepairOutcome> RepairImage(string imagePath, ScrubReport findings, ScrubOptions options, CancellationToken cancel = default)
    {
        ArgumentNullException.ThrowIfNull(findings);
        ArgumentNullException.ThrowIfNull(options);
        using WriteEngine engine = WriteEngine.Open(imagePath);
        List<ScrubRepairOutcome> outcomes = RepairRounds(engine, findings, options, offline: true, () =>
        {
            using (engine.PauseCommits())
            {
                using XfsImage view = engine.Image.CreateReadView();
                return Scrubber.Run(view, options, cancel);
            }
        }, cancel);
        engine.Close();
        return outcomes;
    }

    /// <summary>
    /// Rounds of <see cref="Run(ScrubRepairContext, Action{string}?, ISet{string}, out List{ScrubRepairOutcome})"/> on an open engine (writers may
    /// run), each followed by <paramref name="recheck"/> while a repair waited for its source or some damage has no
    /// repair, until nothing per-AG is left damaged, a round repairs nothing, or <see cref="MaxRounds"/>. The
    /// offline repair re-checks a read view with commits paused; the online scrub checks online again.
    /// </summary>
    internal static List<ScrubRepairOutcome> RepairRounds(WriteEngine engine, ScrubReport findings, ScrubOptions options, bool offline, Func<ScrubReport> recheck, CancellationToken cancel)
    {
        ArgumentNullException.ThrowIfNull(engine);
        ArgumentNullException.ThrowIfNull(recheck);
        var outcomes = new List<ScrubRepairOutcome>();
        ScrubReport report = findings;
        List<ScrubRepairOutcome> waiting = [];
        var wideDone = new HashSet<string>();
        for (int round = 0; round < MaxRounds; round++)
        {
            // Filesystem-wide repairs run once (after every per-AG one of their round): in the first round, or in a
            // later one when they waited for their source.
            List<ScrubRepairOutcome> done = Run(new ScrubRepairContext(engine, report, cancel, options.CpuShare, offline), options.Progress, wideDone, out waiting);
            outcomes.AddRange(done);
            // Check again (a read view, commits paused) when a repair waited for its source or some damage has no
            // repair: it may have been a symptom of what was just repaired.
            if (!done.Any(o => o.Repaired && (o.AgNumber is not null || RecheckAfter.Contains(o.Name))) || (waiting.Count == 0 && Unanswered(report, engine).Count == 0)) break;
            report = recheck();
            // The superblock counters on disk are the engine's close's to write.
            if (!report.Findings.Any(f => IsDamaged(f) && f.Structure != "superblock counters") || waiting.Count == 0)
            {
                waiting.Clear();
                break;
            }
        }
        outcomes.AddRange(waiting);
        foreach (ScrubFinding f in Unanswered(report, engine))
        {
            outcomes.Add(new ScrubRepairOutcome(f.Structure, f.AgNumber, false, "no repair rebuilds this structure yet", TimeSpan.Zero));
        }
        return outcomes;
    }

    /// <summary>Damaged findings no repair answers.</summary>
    private static List<ScrubFinding> Unanswered(ScrubReport report, WriteEngine engine) =>
        report.Findings.Where(f => IsDamaged(f) && !InOrder.Any(r => r.Answers(f.Structure) && r.AppliesTo(engine))).ToList();

    /// <summary>
    /// The damaged inode cores of an AG, each set to its certain values in a transaction of its own
    /// (<see cref="OnlineInodeCoreRepair"/>). Before the rmapbt, whose rebuild reads every inode: a core with a bad CRC
    /// or a stray realtime flag does not load. A core with a problem that has no certain fix is left and said.
    /// </summary>
    private sealed class InodeCoreRepair : IScrubRepair
    {
        public string Name => InodeCoreScrubber.Structure;

        public bool PerAg => true;

        public bool Answers(string structure) => structure == InodeCoreScrubber.Structure;

        public string Repair(ScrubRepairContext context, uint? agno)
        {
            ScrubFinding finding = context.Findings.Findings.First(f => f.Structure == InodeCoreScrubber.Structure && f.AgNumber == agno);
            IReadOnlyList<ulong> inodes = finding.DamagedInodes
                ?? throw new OnlineRepairException("the check that found the damage did not name the inodes");
            InodeCoreRepairResult r = OnlineInodeCoreRepair.Run(context.Engine, agno!.Value, inodes, context.Cancel);
            string done = $"{r.Repaired} of {r.Examined} damaged inode cores set to their certain values";
            if (r.NotRepaired.Count > 0)
            {
                throw new OnlineRepairException($"{done}; not repaired: {string.Join("; ", r.NotRepaired.Take(3))}{(r.NotRepaired.Count > 3 ? $"; and {r.NotRepaired.Count - 3} more" : "")}");
            }
            return done + (finding.DamagedInodesComplete ? "" : " (the check listed only the first ones: the next check lists the rest)");
        }
    }

    /// <summary>
    /// The damaged attr forks of an AG, each cleared as xfs_repair clears one (its blocks freed, the fork removed, its
    /// attributes lost), in a transaction of its own under the inode's lock, after the fork was checked again there.
    /// Salvaging the valid entries into a new fork (the kernel's xrep_xattr) is not done. After the inode cores (the
    /// inode must load) and before the rmapbt (the blocks freed change it).
    /// </summary>
    private sealed class AttrForkRepair : IScrubRepair
    {
        public string Name => InodeCoreScrubber.AttrForks;

        public bool PerAg => true;

        public bool Answers(string structure) => structure == InodeCoreScrubber.AttrForks;

        public bool Skips(ScrubRepairContext context, uint? agno) => context.Findings.Findings.Any(f =>
            IsDamaged(f) && f.AgNumber == agno && f.Structure == InodeCoreScrubber.Structure);

        public string Repair(ScrubRepairContext context, uint? agno)
        {
            ScrubFinding finding = context.Findings.Findings.First(f => f.Structure == InodeCoreScrubber.AttrForks && f.AgNumber == agno);
            IReadOnlyList<ulong> inodes = finding.DamagedInodes
                ?? throw new OnlineRepairException("the check that found the damage did not name the inodes");
            var attributes = new Write.Attributes.AttributeOperations(context.Engine);
            int cleared = 0;
            var sound = new List<ulong>();
            foreach (ulong ino in inodes)
            {
                context.Cancel.ThrowIfCancellationRequested();
                string? why = null;
                context.Engine.Execute("clear damaged attr fork", tx =>
                {
                    IncoreInode inode = context.Engine.GetInode(ino, keepCached: false);
                    tx.LockInodes(inode);
                    if (new Dinode(inode.Core).IsFree) return;
                    why = attributes.ClearIfDamaged(tx, inode);
                    if (why != null) tx.LogInode(inode);
                });
                if (why != null) cleared++;
                else sound.Add(ino);
            }
            return $"{cleared} of {inodes.Count} damaged attr forks cleared (their blocks freed, their attributes lost, as xfs_repair clears them)"
                + (sound.Count > 0 ? $"; {sound.Count} found sound now" : "")
                + (finding.DamagedInodesComplete ? "" : " (the check listed only the first ones: the next check lists the rest)");
        }
    }

    /// <summary>The rmapbt, rebuilt online from every other piece of metadata (<see cref="OnlineRmapRepair"/>).</summary>
    private sealed class RmapbtRepair : IScrubRepair
    {
        public string Name => "rmapbt";

        public bool PerAg => true;

        public bool AppliesTo(WriteEngine engine) => engine.Geometry.Superblock.HasRmapbt;

        public bool Answers(string structure) => structure == "rmapbt";

        /// <summary>The rmap is rebuilt from the AG headers, the inode btrees (OWN_INODES, the inodes whose forks it
        /// reads) and the refcountbt (OWN_COW): while one of those is damaged the rmapbt line may only be reporting
        /// that damage (the offline scan met it), so those are repaired first, from the on-disk rmapbt, and the
        /// rmapbt in a later round if it is still damaged then.</summary>
        public bool Skips(ScrubRepairContext context, uint? agno) => context.Findings.Findings.Any(f =>
            IsDamaged(f) && f.AgNumber == agno && f.Structure is "AGF" or "AGFL" or "AGI" or "inobt" or "finobt" or "refcountbt")
            && !RmapbtRebuildSetsTheRoot(context, agno)
            || context.Findings.Findings.Any(f => IsDamaged(f) && f.Structure == BmapScrubber.Structure);

        public string Repair(ScrubRepairContext context, uint? agno)
        {
            var r = OnlineRmapRepair.Run(context.Engine, agno!.Value, new OnlineRmapRepairOptions { CpuShare = context.CpuShare }, null, context.Cancel);
            return $"{r.Records} records, {r.NewTreeBlocks} new blocks, {r.OldBlocksReaped} old blocks reaped, AG locked {r.TimeLocked.TotalMilliseconds:F1} ms";
        }
    }

    /// <summary>
    /// An AG header (AGF with its AGFL, or AGI) rewritten whole from the trees found through the rmapbt
    /// (<see cref="OnlineAgHeaderRepair"/>). It waits while a tree it describes is damaged in the same AG and the
    /// tree rebuilds can use the header as it is (it verifies, and the AGF's rmapbt root names an rmapbt block at its
    /// level): that tree's rebuild sets the header's fields for what it built, whatever the header said of it, and the
    /// header is judged again in the next round (the header rebuild would refuse a tree that does not walk clean). A
    /// header that does not verify, or an AGF whose rmapbt cannot be reached, cannot wait: nothing else reads it.
    /// </summary>
    private sealed class AgHeaderRepair(AgHeaderKind kind, string[] trees, Func<WriteEngine, uint, string> run) : IScrubRepair
    {
        public string Name => kind == AgHeaderKind.Agf ? "AGF" : "AGI";

        public bool PerAg => true;

        public bool Answers(string structure) => structure == Name;

        public bool AppliesTo(WriteEngine engine) => engine.Geometry.Superblock.HasRmapbt;

        public bool Skips(ScrubRepairContext context, uint? agno)
        {
            bool treeDamaged = context.Findings.Findings.Any(f => IsDamaged(f) && f.AgNumber == agno && trees.Contains(f.Structure));
            if (kind == AgHeaderKind.Agf && RmapbtRebuildSetsTheRoot(context, agno)) return true;
            return treeDamaged && OnlineAgHeaderRepair.TreeRebuildsCanUse(context.Engine, agno!.Value, kind);
        }

        public string Repair(ScrubRepairContext context, uint? agno) => run(context.Engine, agno!.Value);
    }

    /// <summary>A per-AG tree rebuilt in one locked transaction from the AG's rmapbt (<paramref name="withRmapbt"/>
    /// true; null: a repair that needs no rmapbt, such as a secondary superblock copied from the primary).</summary>
    private sealed class AgTreeRepair(string name, string[] answers, Func<WriteEngine, uint, string> run, bool requiresReflink = false, bool? withRmapbt = true) : IScrubRepair
    {
        public string Name => name;

        public bool PerAg => true;

        public bool Answers(string structure) => answers.Contains(structure);

        public bool AppliesTo(WriteEngine engine) => (!requiresReflink || engine.Geometry.Superblock.HasReflink)
            && (withRmapbt is null || withRmapbt == engine.Geometry.Superblock.HasRmapbt);

        public string Repair(ScrubRepairContext context, uint? agno) => run(context.Engine, agno!.Value);
    }

    /// <summary>
    /// A per-AG rebuild on a filesystem without an rmapbt, from a scan of the AG taken right before it with commits
    /// paused: offline only (the offline scrub repair is the only writer then, so nothing changes the AG between the
    /// scan and the rebuild's locked transaction). Online, every rebuild needs the rmapbt, as the kernel's do.
    /// </summary>
    private sealed class ScannedAgRepair(string name, string[] answers, Func<ScrubRepairContext, uint, string> run, bool requiresReflink = false) : IScrubRepair
    {
        public string Name => name;

        public bool PerAg => true;

        public bool Answers(string structure) => answers.Contains(structure);

        public bool AppliesTo(WriteEngine engine) => !engine.Geometry.Superblock.HasRmapbt && (!requiresReflink || engine.Geometry.Superblock.HasReflink);

        public string Repair(ScrubRepairContext context, uint? agno)
        {
            if (!context.Offline)
            {
                throw new OnlineRepairException($"the filesystem has no rmapbt: {name} is rebuilt only offline (xfbtree scrub --repair of the unmounted image), from a scan with commits paused");
            }
            return run(context, agno!.Value);
        }
    }

    /// <summary>
    /// Every inode's link count, checked and set online from the directory tree (<see cref="OnlineLinkCounts"/>; an
    /// inode no directory names is moved to /lost+found), and every directory entry's file
    /// type set from its inode's mode (an entry naming a free inode removed). It reads every inode through the
    /// inode btrees and every directory, so it waits while an inode btree or an AGI is damaged (the offline count it
    /// answers may only reflect that damage, and a scan through a wrong inobt could miss a directory). It answers
    /// wrong link counts and wrong entries: when the online check finds none, it says so and is not counted as a repair.
    /// </summary>
    private sealed class LinkCountRepair : IScrubRepair
    {
        public string Name => "nlinks";

        public bool PerAg => false;

        public bool Answers(string structure) => structure == "nlinks";

        public bool Skips(ScrubRepairContext context, uint? agno) => context.Findings.Findings.Any(f =>
            IsDamaged(f) && (f.Structure is "inobt" or "finobt" or BmapScrubber.Structure or LinkCountScrubber.DirectoryStructure
                || (f.Structure == "AGI" && !f.OnlyUnlinkedListDamage)));

        public string Repair(ScrubRepairContext context, uint? agno)
        {
            var names = new NamespaceOperations(context.Engine, new FileOperations(context.Engine));
            OnlineLinkCountResult r = OnlineLinkCounts.Run(names, new OnlineLinkCountOptions { Repair = true, CpuShare = context.CpuShare }, context.Cancel);
            if (r.Damage.Count > 0 || r.NotRepaired.Count > 0)
            {
                throw new OnlineRepairException($"{r.MismatchTotal} wrong link counts, {r.Repaired + r.Adopted} repaired; not repaired: {string.Join("; ", r.Damage.Concat(r.NotRepaired).Take(3))}");
            }
            if (r.MismatchTotal == 0 && r.EntryProblemTotal == 0 && r.TreeProblemTotal == 0)
            {
                throw new OnlineRepairException($"the online check of {r.InodesCompared} inodes and {r.DirectoriesScanned} directories finds no wrong link count, no wrong entry and no problem of the tree's shape");
            }
            return $"{r.MismatchTotal} wrong link counts: {r.Repaired} set to the count, {r.Adopted} named by no directory moved to /lost+found{(r.Adopted > 0 ? $" ({string.Join(", ", r.AdoptedAs.Take(3))}{(r.Adopted > 3 ? ", ..." : "")})" : "")}, {r.SettledMeanwhile} settled by writers meanwhile; "
                + $"{r.EntryProblemTotal} wrong directory entries: {r.EntriesRepaired} repaired (file type set, or the entry of a free inode removed); "
                + (r.TreeProblemTotal > 0 ? $"{r.TreeProblemTotal} problems of the tree's shape: {r.TreeRepaired} wrong entries removed ({string.Join("; ", r.TreeProblems.Take(2))}); " : "")
                + $"{r.InodesCompared} inodes, {r.DirectoriesScanned} directories";
        }
    }

    /// <summary>
    /// Block maps: each damaged fork the check names rebuilt from the rmapbt (<see cref="OnlineBmapRepair"/>, one
    /// transaction per fork under the inode's lock). Before the rmapbt's repair, which waits for it: the rmapbt line
    /// reports the forks the scan could not read, and the rmapbt rebuild reads every fork. It needs the rmapbt it
    /// reads to be sound, so it waits while an AG header cannot be read or an rmapbt has damage of its own structure
    /// (a block, a key, a counter); record differences do not stop it, since a damaged fork makes them (the scan
    /// expected what the damaged fork says). Both damaged, each needing the other: neither runs (docs/scrub.md).
    /// </summary>
    private sealed class BmapRepair : IScrubRepair
    {
        public const string RepairName = BmapScrubber.Structure;

        public string Name => RepairName;

        public bool PerAg => false;

        public bool Repeatable => true;

        public bool Answers(string structure) => structure == BmapScrubber.Structure;

        /// <summary>The rmapbt is the source: without one, a damaged fork is reported and not repaired.</summary>
        public bool AppliesTo(WriteEngine engine) => engine.Geometry.Superblock.HasRmapbt;

        public bool Skips(ScrubRepairContext context, uint? agno)
        {
            HashSet<ulong> damagedInodes = DamagedForks(context).Select(f => f.Ino).ToHashSet();
            return context.Findings.Findings.Any(f =>
                IsDamaged(f) && (f.Structure is "AGF" or "AGFL" or "AGI" || (f.Structure == "rmapbt" && f.Problems.Any(p => RmapbtDamageOfItsOwn(p, damagedInodes)))));
        }

        /// <summary>An rmapbt problem that is not what a damaged fork makes: the rmapbt's own structure. A damaged
        /// fork makes scan problems naming its inode (the fork's own, and the records it implies mapping a block twice)
        /// and record differences (the scan expected what the damaged fork says).</summary>
        internal static bool RmapbtDamageOfItsOwn(string problem, HashSet<ulong> damagedInodes)
        {
            if (System.Text.RegularExpressions.Regex.IsMatch(problem, @"^\d+ (more scan problems|records (missing|extra|differ))")) return false;
            if (!problem.StartsWith("scan: ", StringComparison.Ordinal)) return true;
            var m = System.Text.RegularExpressions.Regex.Match(problem, @"\binode (\d+)\b");
            return !(m.Success && ulong.TryParse(m.Groups[1].Value, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out ulong ino) && damagedInodes.Contains(ino));
        }

        /// <summary>The forks the damaged bmap findings name.</summary>
        private static SortedSet<(ulong Ino, bool Attr)> DamagedForks(ScrubRepairContext context)
        {
            var forks = new SortedSet<(ulong Ino, bool Attr)>();
            foreach (ScrubFinding f in context.Findings.Findings)
            {
                if (f.Structure != BmapScrubber.Structure || !IsDamaged(f)) continue;
                foreach (string p in f.Problems)
                {
                    if (BmapScrubber.TryParseFork(p, out ulong ino, out bool attr)) forks.Add((ino, attr));
                }
            }
            return forks;
        }

        public string Repair(ScrubRepairContext context, uint? agno)
        {
            SortedSet<(ulong Ino, bool Attr)> forks = DamagedForks(context);
            var done = new List<string>();
            var failed = new List<string>();
            foreach (var (ino, attr) in forks)
            {
                context.Cancel.ThrowIfCancellationRequested();
                try
                {
                    done.Add(OnlineBmapRepair.Run(context.Engine, ino, attr).ToString());
                }
                catch (Exception e) when (e is OnlineRepairException or XfsWriteException or CorruptionException)
                {
                    failed.Add($"inode {ino} {(attr ? "attr" : "data")} fork: {e.Message}");
                }
            }
            if (failed.Count > 0)
            {
                throw new OnlineRepairException($"{done.Count} of {forks.Count} forks rebuilt from the rmapbt; not repaired: {string.Join("; ", failed.Take(3))}");
            }
            if (forks.Count == 0)
            {
                throw new OnlineRepairException("the finding names no fork");
            }
            return $"{forks.Count} forks rebuilt from the rmapbt: {string.Join("; ", done.Take(3))}{(done.Count > 3 ? "; ..." : "")}";
        }
    }

    /// <summary>
    /// Directories: each damaged directory the check names salvaged and rebuilt in place (<see cref="OnlineDirectoryRepair"/>,
    /// one transaction per directory under its inode lock). After the per-AG repairs (it allocates and frees blocks:
    /// the AG headers and the free-space trees must be sound) and the block maps (it reads the directory's mapping);
    /// before the link counts, which wait for it: the inodes whose entries could not be salvaged are found and named in
    /// /lost+found by the link count repair in the next round, after a new check.
    /// </summary>
    private sealed class DirectoryRepair : IScrubRepair
    {
        public const string RepairName = LinkCountScrubber.DirectoryStructure;

        public string Name => RepairName;

        public bool PerAg => false;

        public bool Repeatable => true;

        public bool Answers(string structure) => structure == LinkCountScrubber.DirectoryStructure;

        public bool Skips(ScrubRepairContext context, uint? agno) => context.Findings.Findings.Any(f =>
            IsDamaged(f) && f.Structure is "AGF" or "AGFL" or "AGI" or "bnobt" or "cntbt" or "inobt" or "finobt" or "rmapbt" or BmapScrubber.Structure);

        public string Repair(ScrubRepairContext context, uint? agno)
        {
            var dirs = new SortedSet<ulong>();
            foreach (ScrubFinding f in context.Findings.Findings)
            {
                if (f.Structure != LinkCountScrubber.DirectoryStructure || !IsDamaged(f)) continue;
                foreach (string p in f.Problems)
                {
                    var m = System.Text.RegularExpressions.Regex.Match(p, @"^directory (\d+)[: ]");
                    if (m.Success && ulong.TryParse(m.Groups[1].Value, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out ulong ino)) dirs.Add(ino);
                }
            }
            var done = new List<string>();
            var failed = new List<string>();
            foreach (ulong ino in dirs)
            {
                context.Cancel.ThrowIfCancellationRequested();
                try
                {
                    done.Add(OnlineDirectoryRepair.Run(context.Engine, ino).ToString());
                }
                catch (Exception e) when (e is OnlineRepairException or XfsWriteException or CorruptionException)
                {
                    failed.Add($"directory {ino}: {e.Message}");
                }
            }
            if (failed.Count > 0)
            {
                throw new OnlineRepairException($"{done.Count} of {dirs.Count} directories rebuilt; not repaired: {string.Join("; ", failed.Take(3))}");
            }
            if (dirs.Count == 0)
            {
                throw new OnlineRepairException("the finding names no directory");
            }
            return $"{dirs.Count} directories salvaged and rebuilt: {string.Join("; ", done.Take(3))}{(done.Count > 3 ? "; ..." : "")}";
        }
    }

    /// <summary>The primary superblock damaged on disk while the engine is open: rewritten whole from the engine's
    /// in-core copy (<see cref="WriteEngine.RestorePrimarySuperblock"/>). First of all, since the secondary superblock
    /// repair copies the primary on disk. Offline the primary is restored from a secondary before the image opens.</summary>
    private sealed class PrimarySuperblockRestore : IScrubRepair
    {
        public string Name => OnlineScrubber.PrimarySuperblock;

        public bool PerAg => false;

        public bool Answers(string structure) => structure == OnlineScrubber.PrimarySuperblock;

        public string Repair(ScrubRepairContext context, uint? agno)
        {
            context.Engine.RestorePrimarySuperblock();
            return "rewritten from the engine's in-core superblock (the sector it read and verified at open)";
        }
    }

    /// <summary>sb_fdblocks, sb_icount, sb_ifree: the engine's close derives them from every AG's headers (as the
    /// kernel does at mount), so once the AG headers are right nothing is left to do but say so.</summary>
    private sealed class SummaryCounterRepair : IScrubRepair
    {
        public string Name => "superblock counters";

        public bool PerAg => false;

        public bool Answers(string structure) => structure == "superblock counters";

        public string Repair(ScrubRepairContext context, uint? agno)
        {
            // The engine's in-core inode counters follow the AGIs from now on (an online re-check compares them).
            var (icount, ifree) = OnlineScrubber.SetInodeCountersFromAgHeaders(context.Engine);
            return $"recomputed from the AG headers when the engine closes the image (in-core now: {icount} inodes, {ifree} free)";
        }
    }
}
