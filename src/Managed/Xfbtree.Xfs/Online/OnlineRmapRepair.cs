using System.Buffers.Binary;
using System.Diagnostics;
using Xfbtree.Btree;
using Xfbtree.Buffers;
using Xfbtree.InMemory;
using Xfbtree.Storage;
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
    /// <summary>Test-only callbacks at the scan's steps (deterministic interleavings, fault injection).</summary>
    internal OnlineRepairTestHooks? TestHooks { get; init; }
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
    public Action? BeforeFinish { get; init; }
    public Action<RmapUpdate>? BeforeLiveUpdate { get; init; }
    /// <summary>After the hook decided (true = replayed into the shadow); on the writer's thread.</summary>
    public Action<RmapUpdate, bool>? AfterLiveUpdate { get; init; }
}

/// <summary>What an online rmap repair did.</summary>
public sealed record OnlineRmapRepairResult
{
    public uint AgNumber { get; init; }
    /// <summary>Records of the new rmapbt (shadow records plus the OWN_AG records computed under the lock).</summary>
    public long Records { get; init; }
    /// <summary>OWN_AG records among them.</summary>
    public long OwnAgRecords { get; init; }
    /// <summary>Blocks of the new tree, and its height.</summary>
    public long NewTreeBlocks { get; init; }
    public int NewHeight { get; init; }
    /// <summary>Blocks of the old tree freed (shadow gaps that were neither free space nor new OWN_AG blocks).</summary>
    public long OldBlocksReaped { get; init; }
    /// <summary>Live updates replayed into the shadow tree, and live updates ignored (OWN_AG, inodes not yet visited).</summary>
    public long LiveUpdatesApplied { get; init; }
    public long LiveUpdatesIgnored { get; init; }
    /// <summary>Inodes visited by the scan, and batches.</summary>
    public long InodesScanned { get; init; }
    /// <summary>Rounds of the reservation fixpoint loop.</summary>
    public int ReservationRounds { get; init; }
    /// <summary>Bytes of xfile memory the shadow tree used at the end.</summary>
    public long ShadowBytes { get; init; }
    /// <summary>Shadow records before the OWN_AG records.</summary>
    public long ShadowRecords { get; init; }
    public TimeSpan Elapsed { get; init; }
    /// <summary>Setup (under the AG lock) and the inode scan (no AG lock held while it waits for inodes).</summary>
    public TimeSpan SetupTime { get; init; }
    public TimeSpan ScanTime { get; init; }
    /// <summary>Time the final phase held the AG lock, and its parts.</summary>
    public TimeSpan TimeLocked { get; init; }
    public TimeSpan LockedValidate { get; init; }
    public TimeSpan LockedReserve { get; init; }
    public TimeSpan LockedLoad { get; init; }
    public TimeSpan LockedSwitchAndReap { get; init; }
    /// <summary>Time the commit of the final transaction took (journal + in-place writes), part of <see cref="TimeLocked"/>.</summary>
    public TimeSpan LockedCommit { get; init; }
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
/// <item>Finish, in ONE engine transaction under the AG lock (crash-safe: one journal record): shadow records
/// checked (valid, not free space); new blocks reserved from free space in a fixpoint loop (free-list fixes and
/// the reservations skip rmap updates: OWN_AG is recomputed: bnobt + cntbt + AGFL + new tree); bulk load into the
/// new blocks; AGF switched (root, level, rmap_blocks, btreeblks); live updates stopped; unused reservations and
/// the old tree's blocks (shadow gaps minus free space minus new OWN_AG) freed through the new tree.</item>
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
    private bool stopped;
    private long applied, ignored, inodesScanned;

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
    }

    /// <summary>The coordinated scan (tests look at its state).</summary>
    internal OnlineInodeScan Scan => scan;

    /// <summary>
    /// Rebuilds AG <paramref name="agno"/>'s rmapbt online. Throws <see cref="OnlineRepairException"/> when the
    /// repair could not finish (nothing changed on disk), <see cref="OperationCanceledException"/> on cancellation,
    /// <see cref="XfsWriteException"/> from the engine (NoSpace: not enough free space for the new tree).
    /// </summary>
    public static OnlineRmapRepairResult Run(WriteEngine engine, uint agno, IProgress<string>? progress = null, CancellationToken cancellationToken = default)
        => Run(engine, agno, new OnlineRmapRepairOptions(), progress, cancellationToken);

    /// <inheritdoc cref="Run(WriteEngine, uint, IProgress{string}?, CancellationToken)"/>
    public static OnlineRmapRepairResult Run(WriteEngine engine, uint agno, OnlineRmapRepairOptions options, IProgress<string>? progress = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(engine);
        ArgumentNullException.ThrowIfNull(options);
        if (!engine.Geometry.Superblock.HasRmapbt)
        {
            throw new XfsWriteException(WriteErrorKind.NotSupported, "the filesystem has no rmapbt");
        }
        _ = engine.Ag(agno); // validates the AG number
        using var repair = new OnlineRmapRepair(engine, agno, options);
        return repair.Execute(progress, cancellationToken);
    }

    private OnlineRmapRepairResult Execute(IProgress<string>? progress, CancellationToken cancel)
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
            progress?.Report($"AG {agno}: building the new rmapbt");
            OnlineRmapRepairResult result = Finish();
            engine.Ag(agno).MarkHealthy();
            return result with { Elapsed = total.Elapsed, SetupTime = setup, ScanTime = scanTime };
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
        }
    }

    private void VisitInode(OnlineForkCollector collector, ulong ino)
    {
        IncoreInode inode;
        try
        {
            inode = engine.GetInode(ino);
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
            scan.MarkVisited(ino);
        }
        Interlocked.Increment(ref inodesScanned);
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
        bool want = RmapOwner.IsSpecial(owner) ? owner != RmapOwner.Ag : scan.WantLiveUpdate(owner);
        if (!want)
        {
            Interlocked.Increment(ref ignored);
            testHooks?.AfterLiveUpdate?.Invoke(update, false);
            return;
        }
        lock (shadowGate)
        {
            if (stopped || scan.IsAborted)
            {
                Interlocked.Increment(ref ignored);
                testHooks?.AfterLiveUpdate?.Invoke(update, false);
                return;
            }
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
    }

    /// <inheritdoc/>
    void IRmapHook.OnHookFailed(Exception error) => scan.Abort($"live hook failed: {error.Message}");

    // ------------------------------------------------------------------ finish

    private OnlineRmapRepairResult Finish()
    {
        var locked = new Stopwatch();
        TimeSpan validate = default, reserve = default, load = default, switchReap = default, beforeCommit = default;
        long shadowRecords = 0, records = 0, ownAgRecords = 0, newBlocks = 0, reaped = 0;
        int height = 0, rounds = 0;
        var btreeGeometry = BtreeGeometry.For(new RmapbtOps(false, agLength), geo.BlockSize, XfsTreeLimits.MaxRecords(geo, AgfTree.Rmapbt));

        engine.Execute($"online rmap repair AG {agno}", tx =>
        {
            tx.LockAgForRepair(agno);
            locked.Restart();
            var phase = Stopwatch.StartNew();
            AgSpace space = tx.Space(agno);
            space.ToleratesRmapFieldDamage = true;
            space.SkipRmapUpdates = true;
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

            // 1. Every shadow record valid and outside free space (the AG lock keeps hooks of this AG away).
            AgBlockBitmap free = FreeSpace(space);
            var shadowBlocks = new AgBlockBitmap(agLength);
            shadowRecords = CheckShadow(free, shadowBlocks);
            validate = phase.Elapsed;
            phase.Restart();

            // 2. Reserve the new tree's blocks from free space until they cover the geometry of
            //    shadow records + OWN_AG records (the reservation itself reshapes the free-space trees and the AGFL).
            uint oldRoot = Field(tx, Format.Agf.OffsetRmapRoot);
            uint hint = oldRoot >= geo.FirstFreeBlock && oldRoot < agLength ? oldRoot : geo.FirstFreeBlock; // a damaged root is no hint
            var reserved = new List<(uint Start, uint Length)>();
            long reservedCount = 0;
            AgBlockBitmap ownAg;
            BtreeBulkGeometry bulk;
            long freeSpaceTreeBlocks;
            while (true)
            {
                if (++rounds > 64)
                {
                    throw new OnlineRepairException($"AG {agno}: the new rmapbt's reservation does not converge");
                }
                (ownAg, freeSpaceTreeBlocks) = OwnAgBlocks(space, reserved);
                long regions = CountRegions(ownAg);
                bulk = BtreeBulkLoader.ComputeGeometry(btreeGeometry, shadowRecords + regions);
                if (bulk.TotalBlocks <= reservedCount)
                {
                    records = shadowRecords + regions;
                    ownAgRecords = regions;
                    break;
                }
                // Cover the whole shortfall in this round (fragmented free space gives small extents); the next
                // round only has to cover the OWN_AG records those extents added.
                for (long shortfall = bulk.TotalBlocks - reservedCount; shortfall > 0;)
                {
                    uint want = (uint)Math.Min(shortfall, uint.MaxValue);
                    var request = new AllocationRequest(geo.AgbToFsb(agno, hint), 1, want, AllocationPurpose.RmapBtreeBlock, OnlyAg: agno);
                    if (!space.TryAllocateHere(request, out uint start, out uint length))
                    {
                        throw new XfsWriteException(WriteErrorKind.NoSpace, $"AG {agno}: no free space for {shortfall} more blocks of the new rmapbt");
                    }
                    reserved.Add((start, length));
                    reservedCount += length;
                    shortfall -= length;
                }
            }
            foreach (var (s, l) in reserved)
            {
                if (shadowBlocks.AnySet(s, l))
                {
                    throw new OnlineRepairException($"AG {agno}: reserved blocks [{s}, +{l}) are mapped by a shadow record");
                }
            }
            reserve = phase.Elapsed;
            phase.Restart();

            // 3. Bulk-load the new tree into the reserved blocks, lowest first.
            var claim = new List<uint>((int)reservedCount);
            foreach (var (s, l) in reserved)
            {
                for (uint b = 0; b < l; b++)
                {
                    claim.Add(s + b);
                }
            }
            claim.Sort();
            var staged = new BtreeRootValue(BtreeHeader.NullPointer, 1);
            var newTree = new Btree<RmapbtOps>(new RmapbtOps(false, agLength), tx.AgStore(agno, null, null), staged, geo.MetaUuid, agno,
                XfsTreeLimits.MaxRecords(geo, AgfTree.Rmapbt));
            int next = 0;
            long Claim() => next < claim.Count ? claim[next++] : throw new InvalidOperationException("the bulk loader claimed more blocks than reserved");
            lock (shadowGate)
            {
                using BtreeCursor<RmapbtOps> shadowCursor = shadow.CreateCursor();
                var source = new RebuiltRmapRecordSource(shadowCursor, ownAg);
                newBlocks = BtreeBulkLoader.Load(newTree, bulk, ref source, Claim);
            }
            height = bulk.Height;
            load = phase.Elapsed;
            phase.Restart();

            // Old blocks: not in a shadow record, not free, not the new OWN_AG set (bnobt, cntbt, AGFL, new tree).
            var old = new AgBlockBitmap(agLength);
            old.Set(0, agLength);
            ClearRuns(old, shadowBlocks);
            ClearRuns(old, FreeSpace(space));
            ClearRuns(old, ownAg);

            // 4. The switch: the AGF points at the new tree (same transaction: one journal record).
            SetField(tx, Format.Agf.OffsetRmapRoot, (uint)staged.Pointer);
            SetField(tx, Format.Agf.OffsetRmapLevel, (uint)height);
            SetField(tx, Format.Agf.OffsetRmapBlocks, (uint)newBlocks);
            SetField(tx, Format.Agf.OffsetBtreeBlocks, checked((uint)(freeSpaceTreeBlocks - 2 + newBlocks - 1)));
            lock (shadowGate)
            {
                stopped = true; // live updates end here: the shadow is frozen for the gap computation
            }
            space.SkipRmapUpdates = false;

            // 5. Unused reservations go back to free space (their OWN_AG records leave the new tree), then the
            //    old tree's blocks (not in any record) are reaped.
            for (int i = next; i < claim.Count;)
            {
                uint s = claim[i];
                int j = i + 1;
                while (j < claim.Count && claim[j] == claim[j - 1] + 1)
                {
                    j++;
                }
                uint l = (uint)(j - i);
                space.RmapChange(RmapUpdateKind.Unmap, new RmapRecord(s, l, RmapOwner.Ag, 0), shared: false);
                space.FreeExtent(s, l);
                i = j;
            }
            for (uint from = 0; from < agLength && old.NextExtent(from, out uint s, out uint l); from = s + l)
            {
                space.FreeExtent(s, l);
                reaped += l;
            }
            switchReap = phase.Elapsed;
            beforeCommit = locked.Elapsed;
        });
        TimeSpan timeLocked = locked.Elapsed;
        long shadowBytes;
        lock (shadowGate)
        {
            shadowBytes = shadow.BytesInUse;
        }
        return new OnlineRmapRepairResult
        {
            AgNumber = agno,
            Records = records,
            OwnAgRecords = ownAgRecords,
            ShadowRecords = shadowRecords,
            NewTreeBlocks = newBlocks,
            NewHeight = height,
            OldBlocksReaped = reaped,
            LiveUpdatesApplied = Interlocked.Read(ref applied),
            LiveUpdatesIgnored = Interlocked.Read(ref ignored),
            InodesScanned = Interlocked.Read(ref inodesScanned),
            ReservationRounds = rounds,
            ShadowBytes = shadowBytes,
            TimeLocked = timeLocked,
            LockedValidate = validate,
            LockedReserve = reserve,
            LockedLoad = load,
            LockedSwitchAndReap = switchReap,
            LockedCommit = timeLocked - beforeCommit,
        };
    }

    private uint Field(WriteTransaction tx, int offset) => BinaryPrimitives.ReadUInt32BigEndian(tx.ReadAgHeader(AgHeaderKind.Agf, agno).Span[offset..]);

    private void SetField(WriteTransaction tx, int offset, uint value)
    {
        BlockBuffer agf = tx.ReadAgHeader(AgHeaderKind.Agf, agno);
        BinaryPrimitives.WriteUInt32BigEndian(agf.Span[offset..], value);
        tx.LogBuffer(agf, offset, 4);
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
                throw new CorruptionException("bnobt", geo.AgBlockToDaddr(agno, 0), $"AG {agno}: free extent [{start}, +{length}] invalid or overlapping");
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

    /// <summary>OWN_AG now: bnobt and cntbt blocks, the AGFL, the reservations; and the free-space trees' block count.</summary>
    private (AgBlockBitmap OwnAg, long FreeSpaceTreeBlocks) OwnAgBlocks(AgSpace space, List<(uint Start, uint Length)> reserved)
    {
        var own = new AgBlockBitmap(agLength);
        var visitor = new BitmapVisitor { Bitmap = own };
        long blocks;
        using (BtreeCursor<BnobtOps> cur = space.Bnobt().CreateCursor())
        {
            blocks = cur.VisitBlocks(ref visitor);
        }
        using (BtreeCursor<CntbtOps> cur = space.Cntbt().CreateCursor())
        {
            blocks += cur.VisitBlocks(ref visitor);
        }
        foreach (uint b in space.FreeListBlocks())
        {
            own.Set(b, 1);
        }
        foreach (var (s, l) in reserved)
        {
            own.Set(s, l);
        }
        return (own, blocks);
    }

    private struct BitmapVisitor : IBtreeBlockVisitor
    {
        public AgBlockBitmap Bitmap;

        public readonly void Visit(int level, long pointer, ReadOnlySpan<byte> block) => Bitmap.Set((uint)pointer, 1);
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
