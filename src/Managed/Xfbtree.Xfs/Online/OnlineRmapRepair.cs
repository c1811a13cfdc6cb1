using System.Buffers.Binary;
using System.Diagnostics;
using Xfbtree.Btree;
using Xfbtree.Buffers;
using Xfbtree.InMemory;
using Xfbtree.Storage;
using Xfbtree.Xfs.Check;
using Xfbtree.Xfs.Format;
using Xfbtree.Xfs.Repair;
using Xfbtree.Xfs.Trees;
using Xfbtree.Xfs.Write;
using Xfbtree.Xfs.Write.Engine;
using Xfbtree.Xfs.Write.Space;

namespace Xfbtree.Xfs.Online;

/// <summary>Options of an online rmap repair (<see cref="OnlineRmapRepair"/>).</summary>
public sealed record OnlineRmapRepairOptions
{
    /// <summary>AG whose first inode starts the inode scan (it wraps past the last AG). Default: the AG after the repaired one.</summary>
    public uint? ScanStartAg { get; init; }
    /// <summary>How long the scan waits for one inode's lock before it gives up (upstream: 30 s).</summary>
    public TimeSpan InodeBusyTimeout { get; init; } = TimeSpan.FromSeconds(30);
    /// <summary>The share of one CPU the inode scan may use (more than 0, at most 1; 1 = not paced): after each inode
    /// chunk, once 2 ms of work have added up, the scan rests so that it works at most this share of the time
    /// (<see cref="ScanPacer"/>; no lock held; cancellation ends the rest).</summary>
    public double CpuShare { get; init => field = CpuSharePacer.Checked(value, nameof(CpuShare)); } = 1;
    /// <summary>Test-only callbacks at the scan's steps (deterministic interleavings, fault injection).</summary>
    internal OnlineRepairTestHooks? TestHooks { get; init; }
    /// <summary>Test-only: false keeps the old tree's blocks out of the new tree's sources (free space and the AGFL
    /// only), to reach the "no room" outcome on a real image.</summary>
    internal bool ReuseOldTreeBlocks { get; init; } = true;
}

/// <summary>Callbacks at the steps of an online repair, for tests. Each runs on the repair's thread with no engine
/// lock held (so it may run engine operations), except <see cref="BeforeLiveUpdate"/>, which runs inside the live
/// hook (writer's thread, AG and inode locks held, shadow mutex held) and may throw to simulate a replay failure.</summary>
internal sealed class OnlineRepairTestHooks
{
    public Action? AfterSetup { get; init; }
    public Action<IReadOnlyList<ulong>>? AfterBatch { get; init; }
    /// <summary>The scan declared the rest of this AG visited.</summary>
    public Action<uint>? AfterAgScanned { get; init; }
    public Action<ulong>? BeforeInode { get; init; }
    public Action<ulong>? AfterInode { get; init; }
    /// <summary>The scan read this inode's core from its cluster buffer (no in-core inode live) and has not yet
    /// checked, under the shadow mutex, that none became live since.</summary>
    public Action<ulong>? AfterUnloadedRead { get; init; }
    /// <summary>The pace is about to rest (no lock held).</summary>
    public Action? BeforeRest { get; init; }
    public Action? BeforeFinish { get; init; }
    public Action<RmapUpdate>? BeforeLiveUpdate { get; init; }
    /// <summary>After the hook decided (true = replayed into the shadow); on the writer's thread.</summary>
    public Action<RmapUpdate, bool>? AfterLiveUpdate { get; init; }
}

/// <summary>What an online rmap repair did.</summary>
public sealed record OnlineRmapRepairResult
{
    /// <summary>The AG whose rmapbt was rebuilt.</summary>
    public uint AgNumber { get; init; }
    /// <summary>Records of the new rmapbt (shadow records plus the OWN_AG records computed under the lock).</summary>
    public long Records { get; init; }
    /// <summary>OWN_AG records among them.</summary>
    public long OwnAgRecords { get; init; }
    /// <summary>Blocks of the new tree.</summary>
    public long NewTreeBlocks { get; init; }
    /// <summary>Height of the new tree (1: the root is a leaf).</summary>
    public int NewHeight { get; init; }
    /// <summary>Blocks of the old tree freed (shadow gaps that were neither free space nor new OWN_AG blocks).</summary>
    public long OldBlocksReaped { get; init; }
    /// <summary>Blocks of the old tree the new tree was built in (they hold no new record; taken when free space ran out).</summary>
    public long OldBlocksReused { get; init; }
    /// <summary>Live updates (rmap changes of concurrent writers) replayed into the shadow tree.</summary>
    public long LiveUpdatesApplied { get; init; }
    /// <summary>Live updates ignored: OWN_AG changes (recomputed under the lock) and changes to inodes the scan had not
    /// visited yet (the scan reads them later).</summary>
    public long LiveUpdatesIgnored { get; init; }
    /// <summary>Inodes visited by the scan, and batches.</summary>
    public long InodesScanned { get; init; }
    /// <summary>Of <see cref="InodesScanned"/>, those whose core was read from its cluster buffer, with no in-core inode.</summary>
    public long UnloadedReads { get; init; }
    /// <summary>Reads from a cluster buffer not used because an in-core inode of that number became live before the
    /// check (the visit was made again under the inode lock).</summary>
    public long UnloadedReadsRetried { get; init; }
    /// <summary>Of <see cref="Elapsed"/>, the time the scan rested to keep to <see cref="OnlineRmapRepairOptions.CpuShare"/>.</summary>
    public TimeSpan Paced { get; init; }
    /// <summary>Rounds of the reservation fixpoint loop.</summary>
    public int ReservationRounds { get; init; }
    /// <summary>Bytes of xfile memory the shadow tree used at the end.</summary>
    public long ShadowBytes { get; init; }
    /// <summary>Shadow records before the OWN_AG records.</summary>
    public long ShadowRecords { get; init; }
    /// <summary>Wall time of the whole repair.</summary>
    public TimeSpan Elapsed { get; init; }
    /// <summary>Time of the setup, taken under the AG lock.</summary>
    public TimeSpan SetupTime { get; init; }
    /// <summary>Time of the inode scan (no AG lock held while it waits for inodes).</summary>
    public TimeSpan ScanTime { get; init; }
    /// <summary>Time the final phase held the AG lock, and its parts.</summary>
    public TimeSpan TimeLocked { get; init; }
    /// <summary>Part of <see cref="TimeLocked"/>: checking the shadow records and computing the OWN_AG records.</summary>
    public TimeSpan LockedValidate { get; init; }
    /// <summary>Part of <see cref="TimeLocked"/>: reserving the new tree's blocks.</summary>
    public TimeSpan LockedReserve { get; init; }
    /// <summary>Part of <see cref="TimeLocked"/>: bulk loading the new tree.</summary>
    public TimeSpan LockedLoad { get; init; }
    /// <summary>Part of <see cref="TimeLocked"/>: pointing the AGF at the new tree and freeing the old one's blocks.</summary>
    public TimeSpan LockedSwitchAndReap { get; init; }
    /// <summary>Time the commit of the final transaction took (journal + in-place writes), part of <see cref="TimeLocked"/>.</summary>
    public TimeSpan LockedCommit { get; init; }
}

/// <summary>What an online check of one AG's rmapbt found (<see cref="OnlineRmapRepair.Check"/>).</summary>
internal sealed record OnlineRmapCheckResult
{
    /// <summary>The comparison of the shadow (plus OWN_AG) with the on-disk rmapbt.</summary>
    public required AgCheckReport Report { get; init; }
    /// <summary>Why the comparison could not run (the OWN_AG records could not be known), or null.</summary>
    public string? NotChecked { get; init; }
    /// <summary>Live updates replayed into the shadow, and ignored.</summary>
    public long LiveUpdatesApplied { get; init; }
    public long LiveUpdatesIgnored { get; init; }
    /// <summary>Inodes visited by the scan.</summary>
    public long InodesScanned { get; init; }
    /// <summary>Wall time of the whole check, of the inode scan, and of the locked comparison.</summary>
    public TimeSpan Elapsed { get; init; }
    public TimeSpan ScanTime { get; init; }
    public TimeSpan TimeLocked { get; init; }
}

/// <summary>
/// Rebuilds the rmapbt of one AG of an open <see cref="WriteEngine"/> while other threads keep writing
/// (upstream's xrep_rmapbt with the coordinated inode scan and live hooks; docs/online-repair.md):
/// <list type="number">
/// <item>Setup, under the AG lock: a shadow in-memory rmapbt (xfbtree in an xfile); every non-inode owner but
/// OWN_AG (OWN_FS, OWN_LOG, OWN_INOBT, OWN_INODES, OWN_REFC, OWN_COW) stashed; the live hook registered before
/// the lock is released.</item>
/// <item>Scan: every inode of the filesystem (forks map blocks anywhere), both forks under the inode's lock, its
/// rmaps in this AG stashed and the inode marked visited before the lock is released.</item>
/// <item>Hook: commits of this AG deliver their rmap changes; non-inode owners but OWN_AG always, inode owners iff
/// visited, are replayed into the shadow (one mutex); any failure aborts the scan, and the repair then fails with
/// nothing changed on disk.</item>
/// <item>Finish, in ONE engine transaction under the AG lock (crash-safe: one journal record), in upstream's steps:
/// validate (shadow records valid, not free space; the old tree's blocks located); reserve the new tree's blocks
/// in a fixpoint loop (free space with the rmapbt's reservation, then old tree blocks, then the AGFL; the
/// free-list fixes skip rmap updates, as OWN_AG is recomputed: bnobt + cntbt + AGFL + new tree; no room:
/// <see cref="OnlineRepairNoSpaceException"/>); load (bulk load into those blocks); switch the AGF
/// (<c>AgSpace.InstallRebuiltRmapbt</c>); stop live updates; reap (unused claims and the old tree's remaining
/// blocks freed through the new tree, their buffers invalidated).</item>
/// </list>
/// Lock order: inode lock, then AG lock, then the shadow mutex (always innermost); the scan never holds an AG lock
/// while it waits for an inode.
/// </summary>
public sealed class OnlineRmapRepair : IRmapHook, IDisposable
{
    private readonly WriteEngine engine;
    private readonly XfsGeometry geo;
    private readonly uint agno;
    private readonly uint agLength;
    private readonly OnlineRmapRepairOptions options;
    private readonly OnlineRepairTestHooks? testHooks;
    private readonly Xfile xfile;
    private readonly Xfbtree<RmapbtOps> shadow;
    private readonly object shadowGate = new();
    private readonly OnlineInodeScan scan;
    private IDisposable? hookRegistration;
    private readonly byte[] unloadedCore;
    private readonly ScanPacer pacer;
    private bool stopped;
    private long applied, ignored, inodesScanned, unloadedReads, unloadedRetried;

    private OnlineRmapRepair(WriteEngine engine, uint agno, OnlineRmapRepairOptions options)
    {
        this.engine = engine;
        geo = engine.Geometry;
        this.agno = agno;
        agLength = geo.AgLength(agno);
        this.options = options;
        testHooks = options.TestHooks;
        // Worst case: every block of the AG its own record, in half-full page-sized leaves.
        long maxBytes = Math.Max(16L << 20, (long)agLength * 64 + (64L << 20));
        xfile = Xfile.Create(new XfileOptions { MaxSize = maxBytes, Name = $"xfbtree-online-rmap-ag{agno}" });
        try
        {
            shadow = new Xfbtree<RmapbtOps>(new RmapbtOps(true, agLength), xfile, agno);
        }
        catch
        {
            xfile.Dispose();
            throw;
        }
        scan = new OnlineInodeScan(engine, options.ScanStartAg ?? (agno + 1) % geo.AgCount);
        unloadedCore = new byte[geo.InodeSize];
        pacer = new ScanPacer(options.CpuShare, testHooks?.BeforeRest);
    }

    private static void ValidateOptions(OnlineRmapRepairOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
    }

    /// <summary>The coordinated scan (tests look at its state).</summary>
    internal OnlineInodeScan Scan => scan;

    /// <summary>
    /// Rebuilds AG <paramref name="agno"/>'s rmapbt online. Throws <see cref="OnlineRepairException"/> when the
    /// repair could not finish (nothing changed on disk; <see cref="OnlineRepairNoSpaceException"/> when the AG has
    /// no room for the new tree), <see cref="OperationCanceledException"/> on cancellation, <see cref="XfsWriteException"/>
    /// from the engine (Corrupt: other metadata of the AG is corrupt, and the AG is marked sick).
    /// </summary>
    public static OnlineRmapRepairResult Run(WriteEngine engine, uint agno, IProgress<string>? progress = null, CancellationToken cancellationToken = default)
        => Run(engine, agno, new OnlineRmapRepairOptions(), progress, cancellationToken);

    /// <inheritdoc cref="Run(WriteEngine, uint, IProgress{string}?, CancellationToken)"/>
    public static OnlineRmapRepairResult Run(WriteEngine engine, uint agno, OnlineRmapRepairOptions options, IProgress<string>? progress = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(engine);
        ValidateOptions(options);
        if (!engine.Geometry.Superblock.HasRmapbt)
        {
            throw new XfsWriteException(WriteErrorKind.NotSupported, "the filesystem has no rmapbt");
        }
        _ = engine.Ag(agno); // validates the AG number
        using var repair = new OnlineRmapRepair(engine, agno, options);
        return repair.Execute(progress, "building the new rmapbt", (total, setup, scanTime) =>
        {
            OnlineRmapRepairResult result = repair.Finish();
            engine.Ag(agno).MarkHealthy();
            return result with
            {
                Elapsed = total.Elapsed, SetupTime = setup, ScanTime = scanTime, Paced = repair.pacer.Waited,
                UnloadedReads = Interlocked.Read(ref repair.unloadedReads), UnloadedReadsRetried = Interlocked.Read(ref repair.unloadedRetried),
            };
        }, cancellationToken);
    }

    /// <summary>
    /// Checks AG <paramref name="agno"/>'s rmapbt online, changing nothing: the same setup, coordinated inode scan and
    /// live hook as a repair collect the records every other piece of metadata implies into the shadow tree; then,
    /// under the AG lock, the OWN_AG records (bnobt, cntbt, rmapbt blocks and the AGFL, read then) are added and the
    /// shadow is compared with the on-disk rmapbt record by record (<see cref="RmapChecker"/>'s comparison: missing,
    /// extra, different, structure, the AGF's rmap counters). Throws as <see cref="Run(WriteEngine, uint, IProgress{string}?, CancellationToken)"/>
    /// when the scan cannot finish (a busy inode, an aborted scan, corrupt metadata the setup needs).
    /// </summary>
    internal static OnlineRmapCheckResult Check(WriteEngine engine, uint agno, OnlineRmapRepairOptions options, RmapCheckOptions checkOptions, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(engine);
        ValidateOptions(options);
        ArgumentNullException.ThrowIfNull(checkOptions);
        _ = engine.Ag(agno);
        using var check = new OnlineRmapRepair(engine, agno, options);
        return check.Execute(null, "comparing with the on-disk rmapbt",
            (total, _, scanTime) => check.FinishCheck(checkOptions) with { Elapsed = total.Elapsed, ScanTime = scanTime }, cancellationToken);
    }

    /// <summary>Setup, scan, then <paramref name="finish"/> (given the whole clock, the setup and scan times).</summary>
    private T Execute<T>(IProgress<string>? progress, string finishing, Func<Stopwatch, TimeSpan, TimeSpan, T> finish, CancellationToken cancel)
    {
        var total = Stopwatch.StartNew();
        try
        {
            progress?.Report($"AG {agno}: setup");
            Setup();
            TimeSpan setup = total.Elapsed;
            testHooks?.AfterSetup?.Invoke();
            progress?.Report($"AG {agno}: scanning inodes");
            var scanClock = System.Diagnostics.Stopwatch.StartNew();
            ScanInodes(cancel);
            TimeSpan scanTime = scanClock.Elapsed;
            testHooks?.BeforeFinish?.Invoke();
            cancel.ThrowIfCancellationRequested();
            progress?.Report($"AG {agno}: {finishing}");
            return finish(total, setup, scanTime);
        }
        catch (OperationCanceledException)
        {
            scan.Abort("cancelled");
            throw;
        }
        catch (Exception e) when (e is not OnlineRepairException)
        {
            scan.Abort(e.Message);
            throw;
        }
    }

    // ------------------------------------------------------------------ setup

    private void Setup()
    {
        engine.Execute($"online rmap repair AG {agno}: setup", tx =>
        {
            tx.LockAgForRepair(agno);
            var found = new List<RmapRecord>();
            CollectNonInodeOwners(tx, found);
            lock (shadowGate)
            {
                var editor = new RmapEditor(shadow.Tree);
                try
                {
                    foreach (RmapRecord r in found)
                    {
                        editor.Map(r);
                    }
                    shadow.Commit();
                }
                catch
                {
                    shadow.Cancel();
                    throw;
                }
                finally
                {
                    editor.Cursor.Dispose();
                }
            }
            hookRegistration = tx.RegisterRmapHookHeld(agno, this);
        });
    }

    /// <summary>OWN_FS, OWN_LOG, OWN_INOBT, OWN_INODES, OWN_REFC and OWN_COW of the AG, read under its lock.</summary>
    private void CollectNonInodeOwners(WriteTransaction tx, List<RmapRecord> into)
    {
        Superblock sb = geo.Superblock;
        into.Add(new RmapRecord(0, geo.FirstFreeBlock, RmapOwner.Fs, 0));
        if (sb.LogStart != 0 && geo.FsbToAgno(sb.LogStart) == agno)
        {
            into.Add(new RmapRecord(geo.FsbToAgbno(sb.LogStart), sb.LogBlocks, RmapOwner.Log, 0));
        }
        BlockBuffer agiBuffer = tx.ReadAgHeader(AgHeaderKind.Agi, agno);
        Agi agi = Agi.Parse(agiBuffer.Span, geo, agno);
        if (agi.Problems.Count > 0)
        {
            throw new CorruptionException("AGI", agiBuffer.Daddr, $"AG {agno}: {agi.Problems[0]}");
        }
        AgBtreeBlockStore store = tx.AgStore(agno, null, null);
        var inobt = engine.Image.OpenInobt(agi, AgiTree.Inobt, store);
        AddTreeBlocks(inobt, RmapOwner.Inobt, into);
        if (sb.HasFinobt)
        {
            AddTreeBlocks(engine.Image.OpenInobt(agi, AgiTree.Finobt, store), RmapOwner.Inobt, into);
        }
        using (BtreeCursor<InobtOps> cur = inobt.CreateCursor())
        {
            for (bool ok = cur.MoveFirst(); ok; ok = cur.Increment())
            {
                ReadOnlySpan<byte> rec = cur.Current;
                uint startino = BinaryPrimitives.ReadUInt32BigEndian(rec);
                ushort holemask = sb.HasSparseInodes ? BinaryPrimitives.ReadUInt16BigEndian(rec[4..]) : (ushort)0;
                AddChunkBlocks(startino, holemask, into);
            }
        }
        if (sb.HasReflink)
        {
            BlockBuffer agfBuffer = tx.ReadAgHeader(AgHeaderKind.Agf, agno);
            Agf agf = Agf.Parse(agfBuffer.Span, geo, agno);
            var refc = engine.Image.OpenRefcountbt(agf, store);
            AddTreeBlocks(refc, RmapOwner.Refc, into);
            using BtreeCursor<RefcountbtOps> cur = refc.CreateCursor();
            Span<byte> key = stackalloc byte[4];
            BinaryPrimitives.WriteUInt32BigEndian(key, RefcountbtOps.CowFlag);
            for (bool ok = cur.Lookup(key, BtreeLookup.GreaterOrEqual); ok; ok = cur.Increment())
            {
                ReadOnlySpan<byte> rec = cur.Current;
                uint start = BinaryPrimitives.ReadUInt32BigEndian(rec) & ~RefcountbtOps.CowFlag;
                into.Add(new RmapRecord(start, BinaryPrimitives.ReadUInt32BigEndian(rec[4..]), RmapOwner.Cow, 0));
            }
        }
    }

    private static void AddTreeBlocks<TOps>(Btree<TOps> tree, ulong owner, List<RmapRecord> into) where TOps : struct, IBtreeOps
    {
        var visitor = new BlockLister { Owner = owner, Into = into };
        using BtreeCursor<TOps> cur = tree.CreateCursor();
        cur.VisitBlocks(ref visitor);
    }

    private struct BlockLister : IBtreeBlockVisitor
    {
        public ulong Owner;
        public List<RmapRecord> Into;

        public readonly void Visit(int level, long pointer, ReadOnlySpan<byte> block) => Into.Add(new RmapRecord((uint)pointer, 1, Owner, 0));
    }

    /// <summary>The allocated (non-hole) blocks of an inode chunk as OWN_INODES records.</summary>
    private void AddChunkBlocks(uint startino, ushort holemask, List<RmapRecord> into)
    {
        uint first = geo.AginoToAgbno(startino);
        int ipb = geo.InodesPerBlock;
        ulong holes = OnlineInodeScan.HoleMask(holemask);
        if (ipb >= 64)
        {
            // Several chunks share a block when it holds more than 64 inodes (64 KiB blocks): records come in
            // startino order, so a block already claimed by the previous chunk is the last record added.
            bool claimed = into.Count > 0 && into[^1] is { Owner: RmapOwner.Inodes } last && last.StartBlock == first;
            if (holes != ulong.MaxValue && !claimed)
            {
                into.Add(new RmapRecord(first, 1, RmapOwner.Inodes, 0));
            }
            return;
        }
        ulong blockMask = (1UL << ipb) - 1;
        for (int b = 0; b < 64 / ipb; b++)
        {
            if (((holes >> (b * ipb)) & blockMask) != blockMask)
            {
                into.Add(new RmapRecord(first + (uint)b, 1, RmapOwner.Inodes, 0));
            }
        }
    }

    // ------------------------------------------------------------------ scan

    private void ScanInodes(CancellationToken cancel)
    {
        var collector = new OnlineForkCollector(engine.Image, agno);
        scan.AgFinished = testHooks?.AfterAgScanned;
        while (scan.NextBatch() is { } batch)
        {
            testHooks?.AfterBatch?.Invoke(batch);
            foreach (ulong ino in batch)
            {
                cancel.ThrowIfCancellationRequested();
                testHooks?.BeforeInode?.Invoke(ino);
                VisitInode(collector, ino);
                testHooks?.AfterInode?.Invoke(ino);
            }
            pacer.AfterBatch(cancel);
        }
    }

    private void VisitInode(OnlineForkCollector collector, ulong ino)
    {
        if (TryVisitUnloaded(collector, ino))
        {
            return;
        }
        IncoreInode inode;
        try
        {
            inode = engine.GetInode(ino, keepCached: false);
        }
        catch (XfsWriteException e) when (e.Kind is WriteErrorKind.Corrupt or WriteErrorKind.NotFound)
        {
            // Freed (and its chunk reused) since the batch was found? Then it has no mappings to scan.
            if (scan.VisitIfFreed(ino))
            {
                return;
            }
            throw;
        }
        using IDisposable held = engine.TryLockInodeForRead(inode, options.InodeBusyTimeout)
            ?? throw new OnlineRepairException($"inode {ino} stayed busy for more than {options.InodeBusyTimeout.TotalSeconds:0.#} s; the scan ends (retry the repair later)");
        IReadOnlyList<ScannedRmap> found = collector.Collect(ino, inode.Core);
        lock (shadowGate)
        {
            if (scan.AbortReason is { } why)
            {
                throw new OnlineRepairException($"the inode scan was aborted: {why}");
            }
            Stash(ino, found);
            scan.MarkVisited(ino);
        }
        Interlocked.Increment(ref inodesScanned);
    }

    /// <summary>
    /// The visit of an inode nobody has in core whose forks are in the inode (extents or local format): its core read
    /// from its cluster buffer (<see cref="WriteEngine.TryReadUnloadedCore"/>, no in-core inode made), its rmaps
    /// collected from that copy, and stashed with the inode marked visited under the shadow mutex iff no in-core inode
    /// of it became live since the read (<see cref="WriteEngine.IsUnloadedSince"/>). Why that is exact: a writer
    /// changes an inode's mappings only through its live in-core inode, and commits them (delivering their updates to
    /// the hook) before that inode can become unreachable; with none live from before the read to the check, the read
    /// is the inode's state at the check. The hook decides under the same mutex, so an update of a writer that made the
    /// inode live after the check finds it visited and is applied, and one made live before fails the check and the
    /// visit is made again under the inode lock. A fork in btree format (its blocks would be read without the inode's
    /// lock) and a core that does not yield its mappings cleanly take the locked way too, which reports damage.
    /// </summary>
    private bool TryVisitUnloaded(OnlineForkCollector collector, ulong ino)
    {
        if (!engine.TryReadUnloadedCore(ino, unloadedCore, out long stamp))
        {
            return false;
        }
        var d = new Dinode(unloadedCore);
        if (!d.IsFree && (d.Format == ForkFormat.Btree || (d.HasAttrFork && d.FormatOf(attr: true) == ForkFormat.Btree)))
        {
            return false;
        }
        IReadOnlyList<ScannedRmap> found;
        try
        {
            found = collector.Collect(ino, unloadedCore);
        }
        catch (CorruptionException)
        {
            return false;
        }
        testHooks?.AfterUnloadedRead?.Invoke(ino);
        lock (shadowGate)
        {
            if (scan.AbortReason is { } why)
            {
                throw new OnlineRepairException($"the inode scan was aborted: {why}");
            }
            if (!engine.IsUnloadedSince(ino, stamp))
            {
                unloadedRetried++;
                return false;
            }
            Stash(ino, found);
            scan.MarkVisited(ino);
            unloadedReads++;
        }
        Interlocked.Increment(ref inodesScanned);
        return true;
    }

    /// <summary>Adds one visited inode's rmaps to the shadow (under the shadow mutex).</summary>
    private void Stash(ulong ino, IReadOnlyList<ScannedRmap> found)
    {
        if (found.Count > 0)
        {
            var editor = new RmapEditor(shadow.Tree);
            try
            {
                foreach (ScannedRmap s in found)
                {
                    if (s.Shared)
                    {
                        editor.MapShared(s.Record);
                    }
                    else
                    {
                        editor.Map(s.Record);
                    }
                }
                shadow.Commit();
            }
            catch (Exception e)
            {
                shadow.Cancel();
                scan.Abort($"stashing inode {ino}: {e.Message}");
                throw new OnlineRepairException($"AG {agno}: stashing the rmaps of inode {ino} failed: {e.Message}", e);
            }
            finally
            {
                editor.Cursor.Dispose();
            }
        }
    }

    // ------------------------------------------------------------------ live hook

    /// <inheritdoc/>
    void IRmapHook.OnRmapUpdate(in RmapUpdate update)
    {
        if (update.AgNumber != agno)
        {
            return;
        }
        ulong owner = update.Record.Owner;
        if (owner == RmapOwner.Ag)
        {
            Interlocked.Increment(ref ignored);
            testHooks?.AfterLiveUpdate?.Invoke(update, false);
            return;
        }
        bool wanted;
        lock (shadowGate)
        {
            // Decided under the shadow mutex: a visit made from a cluster buffer checks and marks the inode visited in
            // one hold of it, with no inode lock to order it against this writer (TryVisitUnloaded).
            wanted = !stopped && (RmapOwner.IsSpecial(owner) || scan.WantLiveUpdate(owner));
            if (wanted && !scan.IsAborted)
            {
                Apply(update);
                return;
            }
        }
        Interlocked.Increment(ref ignored);
        testHooks?.AfterLiveUpdate?.Invoke(update, false);
    }

    /// <summary>Replays one wanted update into the shadow (under the shadow mutex); a failure aborts the scan.</summary>
    private void Apply(in RmapUpdate update)
    {
        var editor = new RmapEditor(shadow.Tree);
        try
        {
            testHooks?.BeforeLiveUpdate?.Invoke(update);
            RmapRecord r = update.Record;
            switch (update.Kind)
            {
                case RmapUpdateKind.Map:
                    if (update.Shared) editor.MapShared(r); else editor.Map(r);
                    break;
                case RmapUpdateKind.Unmap:
                    if (update.Shared) editor.UnmapShared(r); else editor.Unmap(r);
                    break;
                default:
                    if (update.Shared) editor.ConvertShared(r); else editor.Convert(r);
                    break;
            }
            shadow.Commit();
            Interlocked.Increment(ref applied);
            testHooks?.AfterLiveUpdate?.Invoke(update, true);
        }
        catch (Exception e)
        {
            // The shadow is garbage now (cancel undoes nothing): abort; the repair fails, the writer goes on.
            shadow.Cancel();
            scan.Abort($"live update {update.Kind} {update.Record} failed: {e.Message}");
        }
        finally
        {
            editor.Cursor.Dispose();
        }
    }

    /// <inheritdoc/>
    void IEngineHook<RmapUpdate>.OnHookFailed(Exception error) => scan.Abort($"live hook failed: {error.Message}");

    // ------------------------------------------------------------------ finish

    /// <summary>What the final phase works on, step to step (one transaction, the AG locked).</summary>
    private sealed class NewRmapbt
    {
        /// <summary>Free space (bnobt) when the phase began, and the blocks of the shadow records.</summary>
        public required AgBlockBitmap Free;
        public required AgBlockBitmap ShadowBlocks;
        public long ShadowRecords;
        /// <summary>Blocks that are in no shadow record, not free, not bnobt/cntbt/AGFL: the old tree (and leaks).</summary>
        public required AgBlockBitmap Old;
        /// <summary>Blocks taken for the new tree: extents reserved from free space, old blocks reused, AGFL blocks.</summary>
        public readonly List<uint> Claimed = new();
        public long ReusedOld, FromFreeSpace, FromFreeList;
        /// <summary>OWN_AG of the new tree: bnobt + cntbt + AGFL + every claimed block.</summary>
        public AgBlockBitmap? OwnAg;
        public BtreeBulkGeometry Bulk = null!; // set by the reservation step
        public long Records, OwnAgRecords;
        public int Rounds;
        public uint Root;
        public long Blocks;
        /// <summary>Claimed blocks the bulk loader used (the lowest ones).</summary>
        public int Used;
        public long Reaped;
    }

    private OnlineRmapRepairResult Finish()
    {
        var locked = new Stopwatch();
        TimeSpan validate = default, reserve = default, load = default, switchReap = default, beforeCommit = default;
        NewRmapbt? built = null;
        engine.Execute($"online rmap repair AG {agno}", tx =>
        {
            tx.LockAgForRepair(agno);
            locked.Restart();
            var phase = Stopwatch.StartNew();
            AgSpace space = tx.Space(agno);
            space.ToleratesRmapFieldDamage = true;
            RequireFinishedScan();
            NewRmapbt tree = ValidateShadow(space);
            validate = phase.Elapsed;
            phase.Restart();
            ReserveNewTreeBlocks(tx, space, tree);
            reserve = phase.Elapsed;
            phase.Restart();
            LoadNewTree(tx, tree);
            load = phase.Elapsed;
            phase.Restart();
            space.InstallRebuiltRmapbt(tree.Root, tree.Bulk.Height, checked((uint)tree.Blocks));
            lock (shadowGate)
            {
                stopped = true; // live updates end here: the shadow is frozen
            }
            ReapOldTree(space, tree);
            switchReap = phase.Elapsed;
            beforeCommit = locked.Elapsed;
            built = tree;
        });
        NewRmapbt done = built ?? throw new InvalidOperationException("the final transaction committed without building the tree");
        TimeSpan timeLocked = locked.Elapsed;
        long shadowBytes;
        lock (shadowGate)
        {
            shadowBytes = shadow.BytesInUse;
        }
        return new OnlineRmapRepairResult
        {
            AgNumber = agno,
            Records = done.Records,
            OwnAgRecords = done.OwnAgRecords,
            ShadowRecords = done.ShadowRecords,
            NewTreeBlocks = done.Blocks,
            NewHeight = done.Bulk.Height,
            OldBlocksReused = done.ReusedOld,
            OldBlocksReaped = done.Reaped,
            LiveUpdatesApplied = Interlocked.Read(ref applied),
            LiveUpdatesIgnored = Interlocked.Read(ref ignored),
            InodesScanned = Interlocked.Read(ref inodesScanned),
            ReservationRounds = done.Rounds,
            ShadowBytes = shadowBytes,
            TimeLocked = timeLocked,
            LockedValidate = validate,
            LockedReserve = reserve,
            LockedLoad = load,
            LockedSwitchAndReap = switchReap,
            LockedCommit = timeLocked - beforeCommit,
        };
    }

    /// <summary>The check's locked phase: one transaction holding the AG lock that changes nothing on disk (every
    /// commit to the AG is on disk then and none runs, so a read view sees the AG as the hooks left the shadow).</summary>
    private OnlineRmapCheckResult FinishCheck(RmapCheckOptions checkOptions)
    {
        var locked = new Stopwatch();
        var report = new AgCheckReport(agno);
        string? notChecked = null;
        engine.Execute($"online rmap check AG {agno}", tx =>
        {
            tx.LockAgForRepair(agno);
            locked.Restart();
            RequireFinishedScan();
            lock (shadowGate)
            {
                stopped = true; // no hook of this AG can run now: the shadow is final
            }
            engine.WriteBackCommitted(); // the view reads the image file: every commit in place first
            using XfsImage view = engine.Image.CreateReadView();
            Agf agf;
            AgBlockBitmap ownAg;
            long bnobtBlocks, cntbtBlocks;
            try
            {
                agf = view.ReadAgf(agno);
                if (!agf.TreeRootUsable(AgfTree.Bnobt, geo) || !agf.TreeRootUsable(AgfTree.Cntbt, geo) || !agf.TreeRootUsable(AgfTree.Rmapbt, geo))
                {
                    notChecked = "the OWN_AG records are not known: the AGF's tree roots are unusable (see AGF)";
                    return;
                }
                AgBtreeBlockStore store = view.CreateAgStore(agno);
                ownAg = new AgBlockBitmap(agLength);
                bnobtBlocks = MarkTreeBlocks(view.OpenBnobt(agf, store), ownAg);
                cntbtBlocks = MarkTreeBlocks(view.OpenCntbt(agf, store), ownAg);
                try
                {
                    MarkTreeBlocks(view.OpenRmapbt(agf, store), ownAg);
                }
                catch (CorruptionException e)
                {
                    // The rmapbt's own blocks do not walk: that is the rmapbt's damage (its rebuild needs nothing of
                    // the old tree), not an unknown.
                    report.AddStructure($"the rmapbt cannot be walked for its own blocks: {e.Message}", checkOptions.StructureLimit);
                    return;
                }
                foreach (uint b in view.ReadAgfl(agno, agf).Blocks)
                {
                    ownAg.Set(b, 1);
                }
            }
            catch (CorruptionException e)
            {
                notChecked = $"the OWN_AG records are not known: {e.Message} (the AG headers or free-space trees cannot be walked)";
                return;
            }
            lock (shadowGate)
            {
                var editor = new RmapEditor(shadow.Tree);
                try
                {
                    for (uint from = 0; from < agLength && ownAg.NextExtent(from, out uint s, out uint l); from = s + l)
                    {
                        editor.Map(new RmapRecord(s, l, RmapOwner.Ag, 0));
                    }
                    shadow.Commit();
                }
                catch (RmapOperationException e)
                {
                    shadow.Cancel();
                    report.AddStructure($"an OWN_AG block (bnobt, cntbt, rmapbt or AGFL) is also owned by other metadata: {e.Message}", checkOptions.StructureLimit);
                    return;
                }
                finally
                {
                    editor.Cursor.Dispose();
                }
                using BtreeCursor<RmapbtOps> expected = shadow.CreateCursor();
                RmapChecker.CompareAg(view, agf, expected, report, checkOptions, bnobtBlocks, cntbtBlocks);
            }
        });
        return new OnlineRmapCheckResult
        {
            Report = report,
            NotChecked = notChecked,
            LiveUpdatesApplied = Interlocked.Read(ref applied),
            LiveUpdatesIgnored = Interlocked.Read(ref ignored),
            InodesScanned = Interlocked.Read(ref inodesScanned),
            TimeLocked = locked.Elapsed,
        };
    }

    private static long MarkTreeBlocks<TOps>(Btree<TOps> tree, AgBlockBitmap into) where TOps : struct, IBtreeOps
    {
        var visitor = new BitmapVisitor { Bitmap = into };
        using BtreeCursor<TOps> cur = tree.CreateCursor();
        cur.VisitBlocks(ref visitor);
        return visitor.Blocks;
    }

    /// <summary>The scan must have finished, not aborted (the AG lock keeps every hook of this AG away now).</summary>
    private void RequireFinishedScan()
    {
        lock (shadowGate)
        {
            if (scan.AbortReason is { } why)
            {
                throw new OnlineRepairException($"AG {agno}: the inode scan was aborted ({why}); nothing was changed");
            }
            if (!scan.IsFinished)
            {
                throw new InvalidOperationException("the inode scan has not finished");
            }
        }
    }

    /// <summary>Step 1: every shadow record valid and outside free space; the old tree's blocks located (what is in
    /// no shadow record, not free and not bnobt, cntbt or AGFL).</summary>
    private NewRmapbt ValidateShadow(AgSpace space)
    {
        AgBlockBitmap free = FreeSpace(space);
        var shadowBlocks = new AgBlockBitmap(agLength);
        long shadowRecords = CheckShadow(free, shadowBlocks);
        var old = new AgBlockBitmap(agLength);
        old.Set(0, agLength);
        ClearRuns(old, shadowBlocks);
        ClearRuns(old, free);
        ClearRuns(old, OwnAgBlocks(space, []));
        return new NewRmapbt { Free = free, ShadowBlocks = shadowBlocks, ShadowRecords = shadowRecords, Old = old };
    }

    /// <summary>
    /// Step 2 (upstream's xrep_rmap_reserve_space): claims blocks until they cover the geometry of the shadow records
    /// plus the OWN_AG records, which the claims themselves change (a fixpoint). Sources in order: free space (the
    /// RMAPBT per-AG reservation is the rmapbt's to use; the free-list fix it makes edits no rmap), so the old tree
    /// stays whole until the switch; then, in an AG too full for that, the old tree's blocks (free of every new
    /// record, and the new tree is built from the shadow, never from them); then the AGFL. When they do not
    /// suffice: <see cref="OnlineRepairNoSpaceException"/>, nothing changed.
    /// </summary>
    private void ReserveNewTreeBlocks(WriteTransaction tx, AgSpace space, NewRmapbt tree)
    {
        var btreeGeometry = BtreeGeometry.For(new RmapbtOps(false, agLength), geo.BlockSize, XfsTreeLimits.MaxRecords(geo, AgfTree.Rmapbt));
        uint oldRoot = space.RmapRoot;
        uint hint = oldRoot >= geo.FirstFreeBlock && oldRoot < agLength ? oldRoot : geo.FirstFreeBlock; // a damaged root is no hint
        var reusable = new AgBlockBitmap(agLength);
        if (options.ReuseOldTreeBlocks)
        {
            reusable.UnionWith(tree.Old);
        }
        while (true)
        {
            if (++tree.Rounds > 64)
            {
                throw new OnlineRepairException($"AG {agno}: the new rmapbt's reservation does not converge");
            }
            AgBlockBitmap ownAg = OwnAgBlocks(space, tree.Claimed);
            long regions = CountRegions(ownAg);
            tree.Bulk = BtreeBulkLoader.ComputeGeometry(btreeGeometry, tree.ShadowRecords + regions);
            if (tree.Bulk.TotalBlocks <= tree.Claimed.Count)
            {
                tree.OwnAg = ownAg;
                tree.Records = tree.ShadowRecords + regions;
                tree.OwnAgRecords = regions;
                break;
            }
            // Cover the whole shortfall in this round; the next one only has to cover the OWN_AG records it added.
            long shortfall = tree.Bulk.TotalBlocks - tree.Claimed.Count;
            while (shortfall > 0)
            {
                uint want = (uint)Math.Min(shortfall, uint.MaxValue);
                var request = new AllocationRequest(geo.AgbToFsb(agno, hint), 1, want, AllocationPurpose.RmapBtreeBlock, OnlyAg: agno);
                List<uint> old;
                if (space.TryAllocateHere(request, out uint start, out uint length, skipRmapUpdates: true))
                {
                    if (tree.ShadowBlocks.AnySet(start, length))
                    {
                        throw new OnlineRepairException($"AG {agno}: reserved blocks [{start}, +{length}) are mapped by a shadow record");
                    }
                    for (uint b = 0; b < length; b++)
                    {
                        tree.Claimed.Add(start + b);
                    }
                    tree.FromFreeSpace += length;
                    shortfall -= length;
                }
                else if ((old = reusable.TakeLowest(shortfall)).Count > 0)
                {
                    foreach (uint b in old)
                    {
                        tx.InvalidateFreedBlocks(agno, b, 1); // formatted anew by the loader, never read as the old block
                        tree.Claimed.Add(b);
                        reusable.Clear(b, 1); // TakeLowest only reads: each block is claimed once
                        tree.Old.Clear(b, 1);
                    }
                    tree.ReusedOld += old.Count;
                    shortfall -= old.Count;
                }
                else if (space.TryTakeFreeListBlockForRebuiltRmapbt(out uint agflBlock))
                {
                    tree.Claimed.Add(agflBlock);
                    tree.FromFreeList++;
                    shortfall--;
                }
                else
                {
                    throw new OnlineRepairNoSpaceException(agno,
                        $"AG {agno}: no room for the new rmapbt: it needs {tree.Bulk.TotalBlocks} blocks and {shortfall} more could not be found " +
                        $"(old tree blocks reused {tree.ReusedOld}, from free space {tree.FromFreeSpace}, from the AGFL {tree.FromFreeList}; " +
                        $"{space.FreeBlocks} blocks free); the AG was left as it was");
                }
            }
        }
    }

    /// <summary>Step 3: bulk-loads the shadow records and the OWN_AG records into the claimed blocks, lowest first.</summary>
    private void LoadNewTree(WriteTransaction tx, NewRmapbt tree)
    {
        tree.Claimed.Sort();
        for (int i = 1; i < tree.Claimed.Count; i++)
        {
            if (tree.Claimed[i] == tree.Claimed[i - 1])
            {
                throw new InvalidOperationException($"AG {agno}: block {tree.Claimed[i]} was claimed twice for the new rmapbt");
            }
        }
        var staged = new BtreeRootValue(BtreeHeader.NullPointer, 1);
        var newTree = new Btree<RmapbtOps>(new RmapbtOps(false, agLength), tx.AgStore(agno, null, null), staged, geo.MetaUuid, agno,
            XfsTreeLimits.MaxRecords(geo, AgfTree.Rmapbt));
        List<uint> claimed = tree.Claimed;
        long Claim() => tree.Used < claimed.Count ? claimed[tree.Used++] : throw new InvalidOperationException("the bulk loader claimed more blocks than reserved");
        lock (shadowGate)
        {
            using BtreeCursor<RmapbtOps> shadowCursor = shadow.CreateCursor();
            var source = new RebuiltRmapRecordSource(shadowCursor, tree.OwnAg!);
            tree.Blocks = BtreeBulkLoader.Load(newTree, tree.Bulk, ref source, Claim);
        }
        tree.Root = (uint)staged.Pointer;
    }

    /// <summary>Step 5 (after the AGF switch, through the new tree): claimed blocks the loader did not use leave the
    /// new tree's OWN_AG records and go back to free space; the old tree's remaining blocks are reaped, their
    /// buffers invalidated in this transaction.</summary>
    private void ReapOldTree(AgSpace space, NewRmapbt tree)
    {
        List<uint> claimed = tree.Claimed;
        for (int i = tree.Used; i < claimed.Count;)
        {
            uint s = claimed[i];
            int j = i + 1;
            while (j < claimed.Count && claimed[j] == claimed[j - 1] + 1)
            {
                j++;
            }
            uint l = (uint)(j - i);
            space.RmapChange(RmapUpdateKind.Unmap, new RmapRecord(s, l, RmapOwner.Ag, 0), shared: false);
            space.FreeMetadataExtent(s, l);
            i = j;
        }
        for (uint from = 0; from < agLength && tree.Old.NextExtent(from, out uint s, out uint l); from = s + l)
        {
            space.FreeMetadataExtent(s, l);
            tree.Reaped += l;
        }
    }

    /// <summary>Marks the AG sick, by name, and returns the engine's error for it: the repair found the AG's other
    /// metadata corrupt.</summary>
    private XfsWriteException CorruptAg(string problem)
    {
        engine.Ag(agno).MarkSick(problem);
        return new XfsWriteException(WriteErrorKind.Corrupt, $"online rmap repair: AG {agno} is corrupt ({problem}); the AG is marked sick") { AgNumber = agno };
    }

    /// <summary>The AG's free space as the bnobt (read through the transaction) says.</summary>
    private AgBlockBitmap FreeSpace(AgSpace space)
    {
        var free = new AgBlockBitmap(agLength);
        using BtreeCursor<BnobtOps> cur = space.Bnobt().CreateCursor();
        for (bool ok = cur.MoveFirst(); ok; ok = cur.Increment())
        {
            ReadOnlySpan<byte> rec = cur.Current;
            uint start = BinaryPrimitives.ReadUInt32BigEndian(rec), length = BinaryPrimitives.ReadUInt32BigEndian(rec[4..]);
            if (length == 0 || (ulong)start + length > agLength || free.AnySet(start, length))
            {
                throw CorruptAg($"bnobt: free extent [{start}, +{length}] invalid or overlapping");
            }
            free.Set(start, length);
        }
        return free;
    }

    /// <summary>Checks every shadow record (record rules, not OWN_AG, not free space) and marks its blocks.</summary>
    private long CheckShadow(AgBlockBitmap free, AgBlockBitmap blocks)
    {
        var ops = new RmapbtOps(false, agLength);
        long count = 0;
        lock (shadowGate)
        {
            using BtreeCursor<RmapbtOps> cur = shadow.CreateCursor();
            for (bool ok = cur.MoveFirst(); ok; ok = cur.Increment())
            {
                ReadOnlySpan<byte> rec = cur.Current;
                var r = RmapRecord.Read(rec);
                if (ops.ValidateRecord(rec) is { } why)
                {
                    throw new OnlineRepairException($"AG {agno}: shadow record {r} is invalid: {why}");
                }
                if (r.Owner == RmapOwner.Ag)
                {
                    throw new OnlineRepairException($"AG {agno}: shadow record {r} has owner OWN_AG");
                }
                if (free.AnySet(r.StartBlock, r.BlockCount))
                {
                    throw new OnlineRepairException($"AG {agno}: shadow record {r} overlaps free space");
                }
                blocks.Set(r.StartBlock, r.BlockCount);
                count++;
            }
        }
        return count;
    }

    /// <summary>OWN_AG now: bnobt and cntbt blocks, the AGFL, the blocks claimed for the new tree.</summary>
    private AgBlockBitmap OwnAgBlocks(AgSpace space, List<uint> claimed)
    {
        var own = new AgBlockBitmap(agLength);
        var visitor = new BitmapVisitor { Bitmap = own };
        using (BtreeCursor<BnobtOps> cur = space.Bnobt().CreateCursor())
        {
            cur.VisitBlocks(ref visitor);
        }
        using (BtreeCursor<CntbtOps> cur = space.Cntbt().CreateCursor())
        {
            cur.VisitBlocks(ref visitor);
        }
        foreach (uint b in space.FreeListBlocks())
        {
            own.Set(b, 1);
        }
        foreach (uint b in claimed)
        {
            own.Set(b, 1);
        }
        return own;
    }

    private struct BitmapVisitor : IBtreeBlockVisitor
    {
        public AgBlockBitmap Bitmap;
        public long Blocks;

        public void Visit(int level, long pointer, ReadOnlySpan<byte> block)
        {
            Bitmap.Set((uint)pointer, 1);
            Blocks++;
        }
    }

    private long CountRegions(AgBlockBitmap bitmap)
    {
        long regions = 0;
        for (uint from = 0; from < agLength && bitmap.NextExtent(from, out uint s, out uint l); from = s + l)
        {
            regions++;
        }
        return regions;
    }

    private void ClearRuns(AgBlockBitmap target, AgBlockBitmap runs)
    {
        for (uint from = 0; from < agLength && runs.NextExtent(from, out uint s, out uint l); from = s + l)
        {
            target.Clear(s, l);
        }
    }

    // ------------------------------------------------------------------ teardown

    /// <summary>Aborts the scan (hooks become no-ops), unregisters the hook, frees the shadow tree.</summary>
    public void Dispose()
    {
        scan.Abort("repair finished");
        hookRegistration?.Dispose();
        hookRegistration = null;
        lock (shadowGate)
        {
            stopped = true;
            shadow.Dispose();
        }
        xfile.Dispose();
    }
}
