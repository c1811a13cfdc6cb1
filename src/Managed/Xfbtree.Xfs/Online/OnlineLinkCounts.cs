using System.Buffers.Binary;
using System.Diagnostics;
using Xfbtree.Buffers;
using Xfbtree.Storage;
using Xfbtree.Xfs.Directories;
using Xfbtree.Xfs.Format;
using Xfbtree.Xfs.Scrub;
using Xfbtree.Xfs.Write;
using Xfbtree.Xfs.Write.Engine;
using Xfbtree.Xfs.Write.Namespace;

namespace Xfbtree.Xfs.Online;

/// <summary>Options of an online link count check (<see cref="OnlineLinkCounts"/>).</summary>
public sealed record OnlineLinkCountOptions
{
    /// <summary>Set every wrong link count to the counted value (and name the inodes no directory names in
    /// <c>/lost+found</c>).</summary>
    public bool Repair { get; init; }
    /// <summary>Wrong link counts kept in the result (the total is always exact).</summary>
    public int MismatchLimit { get; init; } = 100;
    /// <summary>How long the scans wait for one inode's lock before they give up (upstream: 30 s).</summary>
    public TimeSpan InodeBusyTimeout { get; init; } = TimeSpan.FromSeconds(30);
    /// <summary>The share of one CPU the scans may take, in (0, 1]: after each batch of inodes (one inode chunk, no
    /// lock held) the checker waits until its working time is at most this share of the time passed, so that a
    /// checker run again and again leaves the CPU to the writers beside it (the role idle scheduling plays for
    /// xfs_scrub's service). 1 (the default) does not pace: one check on request, or with no writers.</summary>
    public double CpuShare { get; init => field = CpuSharePacer.Checked(value, nameof(CpuShare)); } = 1;
    /// <summary>Test-only callbacks at the scan's steps (deterministic interleavings).</summary>
    internal OnlineLinkCountTestHooks? TestHooks { get; init; }
}

/// <summary>Callbacks at the steps of an online link count check, for tests. Each runs on the checker's thread with
/// no engine lock held (so it may run engine operations), except <see cref="AfterLiveUpdate"/>, which runs inside
/// the live hook (writer's thread, its inode locks held).</summary>
internal sealed class OnlineLinkCountTestHooks
{
    /// <summary>Before the collect scan visits an inode (directory or not).</summary>
    public Action<ulong>? BeforeInode { get; init; }
    /// <summary>After the collect scan visited an inode (it is behind the cursor now).</summary>
    public Action<ulong>? AfterInode { get; init; }
    /// <summary>The collect scan finished: every later change is applied.</summary>
    public Action? AfterCollect { get; init; }
    /// <summary>Before the compare step looks at an inode.</summary>
    public Action<ulong>? BeforeCompare { get; init; }
    /// <summary>After the hook decided (true = applied to the counts); on the writer's thread.</summary>
    public Action<DirectoryUpdate, bool>? AfterLiveUpdate { get; init; }
    /// <summary>Either scan read an inode's core from its cluster buffer (no in-core inode was live) and has not yet
    /// checked that none became live since: what runs here is what that check must catch.</summary>
    public Action<ulong>? AfterUnloadedRead { get; init; }
}

/// <summary>What an online link count check (and repair) found and did.</summary>
public sealed record OnlineLinkCountResult
{
    /// <summary>Inodes the collect scan visited.</summary>
    public long InodesScanned { get; init; }
    /// <summary>Directories among them whose entries the scan counted.</summary>
    public long DirectoriesScanned { get; init; }
    /// <summary>Directory entries counted by the scan ('.' and '..' included).</summary>
    public long EntriesCounted { get; init; }
    /// <summary>Live updates (directory entry changes of concurrent writers) applied to the counts: their directory was
    /// behind the scan's cursor.</summary>
    public long LiveUpdatesApplied { get; init; }
    /// <summary>Live updates ignored: their directory was ahead of the cursor, so the scan counts it later.</summary>
    public long LiveUpdatesIgnored { get; init; }
    /// <summary>In-use inodes whose nlink was compared with their count.</summary>
    public long InodesCompared { get; init; }
    /// <summary>Visits (by either scan) of inodes read straight from their cluster buffer because no in-core inode of
    /// them was live, with no allocation.</summary>
    public long UnloadedReads { get; init; }
    /// <summary>Such reads not used because an in-core inode of that inode became live meanwhile: that visit was made
    /// again through the in-core inode, under its lock.</summary>
    public long UnloadedReadsRetried { get; init; }
    /// <summary>The wrong link counts found (the first <see cref="OnlineLinkCountOptions.MismatchLimit"/>).</summary>
    public IReadOnlyList<LinkCountMismatch> Mismatches { get; init; } = [];
    /// <summary>How many wrong link counts were found in all.</summary>
    public long MismatchTotal { get; init; }
    /// <summary>With repair: link counts set to the counted value.</summary>
    public long Repaired { get; init; }
    /// <summary>With repair: inodes (files and directories) no directory named, given a name in <c>/lost+found</c>
    /// (made when missing) under their inode number, as xfs_repair does; a directory's '..' names it then.</summary>
    public long Adopted { get; init; }
    /// <summary>With repair: where each adopted inode was put (the first <see cref="OnlineLinkCountOptions.MismatchLimit"/>),
    /// e.g. "inode 1234: /lost+found/1234".</summary>
    public IReadOnlyList<string> AdoptedAs { get; init; } = [];
    /// <summary>With repair: wrong counts a writer's change settled before the repair locked the inode (freed, or
    /// its nlink and count equal by then): nothing left to repair.</summary>
    public long SettledMeanwhile { get; init; }
    /// <summary>Wrong counts that were not repaired, each with why (e.g. a directory no entry names).</summary>
    public IReadOnlyList<string> NotRepaired { get; init; } = [];
    /// <summary>Problems that make the counts incomplete (an unreadable directory); repair is refused then.</summary>
    public IReadOnlyList<string> Damage { get; init; } = [];
    /// <summary>Directory entries found wrong, each by directory and name (the first
    /// <see cref="OnlineLinkCountOptions.MismatchLimit"/>): naming an inode that is not in use, or with a file type
    /// other than its inode's.</summary>
    public IReadOnlyList<string> EntryProblems { get; init; } = [];
    /// <summary>How many directory entries were found wrong in all.</summary>
    public long EntryProblemTotal { get; init; }
    /// <summary>With repair: wrong entries corrected (file type set from the inode's mode) or removed (naming a free
    /// inode), or settled by a writer meanwhile.</summary>
    public long EntriesRepaired { get; init; }
    /// <summary>Problems of the tree's shape, each confirmed under the cross-directory rename lock (the first
    /// <see cref="OnlineLinkCountOptions.MismatchLimit"/>): an entry naming a directory whose '..' names another one,
    /// a second entry naming a directory, an entry naming the root, a cycle of directories the root does not reach,
    /// and a '/lost+found' that is not a directory.</summary>
    public IReadOnlyList<string> TreeProblems { get; init; } = [];
    /// <summary>How many tree problems were confirmed in all.</summary>
    public long TreeProblemTotal { get; init; }
    /// <summary>With repair: tree problems repaired (the wrong entry removed: what it named then goes to
    /// /lost+found when nothing else names it), or settled by a writer meanwhile.</summary>
    public long TreeRepaired { get; init; }
    /// <summary>Bytes of xfile memory the counts used.</summary>
    public long CountBytes { get; init; }
    /// <summary>Wall time of the check (and repair).</summary>
    public TimeSpan Elapsed { get; init; }
    /// <summary>Of <see cref="Elapsed"/>, the time the scans waited to keep to <see cref="OnlineLinkCountOptions.CpuShare"/>.</summary>
    public TimeSpan Paced { get; init; }

    /// <summary>True when nothing wrong is left: no mismatch, or every one repaired, and no damage.</summary>
    public bool IsClean => Damage.Count == 0 && NotRepaired.Count == 0 && (MismatchTotal == 0 || Repaired + Adopted + SettledMeanwhile == MismatchTotal)
        && EntriesRepaired == EntryProblemTotal && TreeRepaired == TreeProblemTotal;
}

/// <summary>
/// The online link count check and repair of an open filesystem (upstream's xchk_nlinks / xrep_nlinks, in this
/// project's terms; docs/scrub.md). Source of truth: the directory tree.
/// <list type="number">
/// <item>Collect: a coordinated inode scan (<see cref="OnlineInodeScan"/>, inode order from AG 0) visits every
/// allocated inode under its inode lock; a directory's entries are counted for the inodes they name ('.' for the
/// directory itself, '..' for its parent, every other entry for its target) and the directory marked visited before
/// the lock is released. A directory removed but still held (nlink 0, open) is not counted: its removal already
/// took its '.' and '..' away.</item>
/// <item>Live hook (<see cref="IDirectoryHook"/>): every entry added or removed by a writer is applied to the counts
/// iff the directory holding the entry is behind the cursor (visited); one ahead of it is ignored, the scan will read
/// it. The decision and the visit are both made under that directory's inode lock, so each change is counted once.</item>
/// <item>Compare: a second scan locks each in-use inode and compares its nlink with its count (the counts mutex held:
/// every change to an inode's count is made by a writer holding that inode's lock, so both are current).</item>
/// <item>Repair (option): per wrong inode, one transaction under its lock re-reads the live count and sets nlink; an
/// inode no entry names (file or directory) is named in the orphanage, <c>/lost+found</c>, made when missing, under
/// its inode number (xfs_repair's phase 6, the kernel's newer online repair), a directory's '..' pointed there.</item>
/// </list>
/// Counts: 8 bytes per inode number (entries naming it, '.'/'..' naming it) in an xfile indexed by inode number
/// (sparse: only pages of used inode ranges take memory), guarded by one mutex. Lock order: inode lock, then the
/// counts mutex, then the scan's own mutex.
/// </summary>
public sealed class OnlineLinkCounts : IDirectoryHook, IDisposable
{
    private const int EntryBytes = 8;
    private readonly NamespaceOperations namespaceOps;
    private readonly WriteEngine engine;
    private readonly XfsGeometry geo;
    private readonly OnlineLinkCountOptions options;
    private readonly OnlineLinkCountTestHooks? testHooks;
    private readonly Xfile counts;
    private readonly object countsGate = new();
    private readonly OnlineInodeScan scan;
    private readonly DirectoryReader reader;
    private readonly HashSet<ulong> metadataInodes = new();
    private readonly List<string> damage = new();
    private readonly List<WrongEntry> wrongEntries = new();
    // The tree's shape as the collect scan read it (checker thread only): the '..' of every directory counted, the
    // entries naming directories, and a root entry 'lost+found' naming something else than a directory.
    private readonly Dictionary<ulong, ulong> dotDot = new();
    private readonly List<DirectoryEdge> dirEdges = new();
    private ulong? lostFoundNotDirectory;
    private long wrongEntryTotal;
    private IDisposable? hookRegistration;
    private readonly byte[] unloadedCore, entryCore;
    private bool stopped;
    private long applied, ignored, inodesScanned, directoriesScanned, entriesCounted, unloadedReads, unloadedRetried;

    private OnlineLinkCounts(NamespaceOperations names, OnlineLinkCountOptions options)
    {
        namespaceOps = names;
        engine = names.Engine;
        geo = engine.Geometry;
        this.options = options;
        testHooks = options.TestHooks;
        reader = new DirectoryReader(engine.Image);
        unloadedCore = new byte[geo.InodeSize];
        entryCore = new byte[geo.InodeSize];
        var sb = engine.Image.Superblock;
        foreach (ulong ino in new[] { sb.RbmIno, sb.RsumIno, sb.UserQuotaIno, sb.GroupQuotaIno, sb.ProjectQuotaIno })
        {
            if (ino != 0 && ino != ulong.MaxValue)
            {
                metadataInodes.Add(ino);
            }
        }
        // Indexed by inode number: the whole inode-number space, sparse (only pages of used ranges take memory).
        UInt128 span = ((UInt128)geo.AgCount << geo.AginoLog) * EntryBytes;
        if (span > (UInt128)Xfile.MaxSupportedSize)
        {
            throw new OnlineRepairException($"the inode-number space ({geo.AgCount} AGs of 2^{geo.AginoLog} inodes) is too large for the link count array");
        }
        counts = Xfile.Create(new XfileOptions { MaxSize = Math.Max((long)span, 1L << 20), Name = "xfbtree-online-nlinks" });
        scan = new OnlineInodeScan(engine, 0);
    }

    /// <summary>Checks (and with <see cref="OnlineLinkCountOptions.Repair"/> repairs) every link count of
    /// <paramref name="fs"/> while other threads keep using it. Throws <see cref="OnlineRepairException"/> when the
    /// scan could not finish (an inode busy too long, a failed live update): nothing was changed then.</summary>
    public static OnlineLinkCountResult Run(XfsFileSystem fs, OnlineLinkCountOptions? options = null, CancellationToken cancel = default)
    {
        ArgumentNullException.ThrowIfNull(fs);
        return Run(fs.Namespace, options, cancel);
    }

    /// <summary>As <see cref="Run(XfsFileSystem, OnlineLinkCountOptions?, CancellationToken)"/> on the namespace
    /// operations of an engine (a caller holding only the engine can make them: <c>new NamespaceOperations(engine,
    /// new FileOperations(engine))</c>; the references of held inodes live in the engine's in-core inodes).</summary>
    internal static OnlineLinkCountResult Run(NamespaceOperations names, OnlineLinkCountOptions? options = null, CancellationToken cancel = default)
    {
        ArgumentNullException.ThrowIfNull(names);
        using var check = new OnlineLinkCounts(names, options ?? new OnlineLinkCountOptions());
        return check.Execute(cancel);
    }

    private OnlineLinkCountResult Execute(CancellationToken cancel)
    {
        var sw = Stopwatch.StartNew();
        hookRegistration = engine.RegisterDirectoryHook(this);
        var pacer = new ScanPacer(options.CpuShare);
        Collect(pacer, cancel);
        testHooks?.AfterCollect?.Invoke();
        var mismatches = new List<LinkCountMismatch>();
        var notRepaired = new List<string>();
        var adoptedAs = new List<string>();
        long total = 0, compared = 0, repaired = 0, adopted = 0, settled = 0, entriesRepaired = 0;
        var compare = new OnlineInodeScan(engine, 0);
        bool mayRepair = options.Repair && damage.Count == 0;
        if (options.Repair && !mayRepair)
        {
            notRepaired.Add($"no repair: the counts are incomplete ({damage[0]})");
        }
        // The tree's shape first: removing a wrong entry leaves what it named unnamed, and the compare below moves
        // that to /lost+found (its '..' and the link counts then follow, through the live hook).
        var treeProblems = new List<string>();
        long treeTotal = 0, treeRepaired = 0;
        CheckTree(mayRepair, treeProblems, ref treeTotal, ref treeRepaired, notRepaired, cancel);
        while (compare.NextBatch() is { } batch)
        {
            foreach (ulong ino in batch)
            {
                cancel.ThrowIfCancellationRequested();
                testHooks?.BeforeCompare?.Invoke(ino);
                LinkCountMismatch? wrong = CompareInode(compare, ino, ref compared);
                if (wrong is not { } m)
                {
                    continue;
                }
                total++;
                if (mismatches.Count < options.MismatchLimit)
                {
                    mismatches.Add(m);
                }
                if (!mayRepair)
                {
                    continue;
                }
                RepairOutcome outcome = RepairInode(ino, out string? why);
                if (outcome == RepairOutcome.Unnamed)
                {
                    outcome = Adopt(ino, out why);
                }
                switch (outcome)
                {
                    case RepairOutcome.Set:
                        repaired++;
                        break;
                    case RepairOutcome.Adopted:
                        adopted++;
                        if (adoptedAs.Count < options.MismatchLimit)
                        {
                            adoptedAs.Add($"inode {ino}: {why}");
                        }
                        break;
                    case RepairOutcome.Refused:
                        notRepaired.Add(why!);
                        break;
                    case RepairOutcome.AlreadyRight:
                        settled++;
                        break;
                }
            }
            pacer.AfterBatch(cancel);
        }
        if (mayRepair)
        {
            foreach (WrongEntry w in wrongEntries)
            {
                cancel.ThrowIfCancellationRequested();
                if (namespaceOps.RepairDirectoryEntry(w.Dir, w.Name, w.Ino, out string? why)) entriesRepaired++;
                else notRepaired.Add($"{w}: {why}");
            }
            if (wrongEntryTotal > wrongEntries.Count)
            {
                notRepaired.Add($"{wrongEntryTotal - wrongEntries.Count} more wrong directory entries than the {options.MismatchLimit} kept; check again");
            }
        }
        Stop();
        return new OnlineLinkCountResult
        {
            InodesScanned = inodesScanned,
            DirectoriesScanned = directoriesScanned,
            EntriesCounted = entriesCounted,
            LiveUpdatesApplied = Interlocked.Read(ref applied),
            LiveUpdatesIgnored = Interlocked.Read(ref ignored),
            InodesCompared = compared,
            UnloadedReads = unloadedReads,
            UnloadedReadsRetried = unloadedRetried,
            Mismatches = mismatches,
            MismatchTotal = total,
            Repaired = repaired,
            Adopted = adopted,
            AdoptedAs = adoptedAs,
            SettledMeanwhile = settled,
            NotRepaired = notRepaired,
            Damage = damage.ToArray(),
            EntryProblems = wrongEntries.Select(w => w.ToString()).ToArray(),
            EntryProblemTotal = wrongEntryTotal,
            EntriesRepaired = entriesRepaired,
            TreeProblems = treeProblems,
            TreeProblemTotal = treeTotal,
            TreeRepaired = treeRepaired,
            CountBytes = counts.BytesUsed,
            Elapsed = sw.Elapsed,
            Paced = pacer.Waited,
        };
    }

    // ------------------------------------------------------------------ collect

    private void Collect(ScanPacer pacer, CancellationToken cancel)
    {
        while (scan.NextBatch() is { } batch)
        {
            foreach (ulong ino in batch)
            {
                cancel.ThrowIfCancellationRequested();
                testHooks?.BeforeInode?.Invoke(ino);
                VisitInode(ino);
                testHooks?.AfterInode?.Invoke(ino);
            }
            pacer.AfterBatch(cancel);
        }
    }

    private IncoreInode? LoadInode(OnlineInodeScan which, ulong ino)
    {
        try
        {
            return engine.GetInode(ino, keepCached: false);
        }
        catch (XfsWriteException e) when (e.Kind is WriteErrorKind.Corrupt or WriteErrorKind.NotFound)
        {
            // Freed (and its chunk reused) since the batch was found: nothing to count or compare.
            if (which.VisitIfFreed(ino))
            {
                return null;
            }
            throw;
        }
    }

    private IDisposable LockForRead(IncoreInode inode) => engine.TryLockInodeForRead(inode, options.InodeBusyTimeout)
        ?? throw new OnlineRepairException($"inode {inode.Ino} stayed busy for more than {options.InodeBusyTimeout.TotalSeconds:0.#} s; the link count scan ends (retry later)");

    private void VisitInode(ulong ino)
    {
        if (TryVisitUnloaded(ino))
        {
            return;
        }
        IncoreInode? inode = LoadInode(scan, ino);
        if (inode is null)
        {
            return;
        }
        using IDisposable held = LockForRead(inode);
        var d = new Dinode(inode.Core);
        ulong parent = 0;
        List<DataEntry>? entries = null;
        DotEntryTypes? dots = null;
        bool counted = !d.IsFree && d.FileType == 0x4000 && !(d.NLink == 0 && Volatile.Read(ref inode.References) > 0);
        if (counted)
        {
            try
            {
                (parent, entries, _) = reader.ReadAll(ino, inode.Core, engine.ReadMetadataBlocks, $"directory {ino}", out dots);
            }
            catch (Exception e) when (e is XfsWriteException or CorruptionException or IOException)
            {
                counted = false;
                lock (countsGate)
                {
                    damage.Add($"directory {ino} unreadable ({e.Message}): the counts of the inodes it names are incomplete");
                }
            }
            if (counted)
            {
                CheckEntries(ino, entries!);
                CheckDotEntries(ino, parent, dots);
                dotDot[ino] = parent;
            }
        }
        lock (countsGate)
        {
            if (scan.AbortReason is { } why)
            {
                throw new OnlineRepairException($"the link count scan was aborted: {why}");
            }
            if (counted)
            {
                Add(ino, DirectoryEntryKind.Dot, +1);
                Add(parent, DirectoryEntryKind.DotDot, +1);
                foreach (DataEntry e in entries!)
                {
                    Add(e.Ino, DirectoryEntryKind.Name, +1);
                }
                directoriesScanned++;
                entriesCounted += entries.Count + 2;
            }
            inodesScanned++;
            scan.MarkVisited(ino);
        }
    }

    /// <summary>
    /// The visit of an inode nobody has in core and that is not a directory in use (so it names nothing): its core
    /// read from its cluster buffer, and the inode marked visited under the counts mutex iff no in-core inode of it
    /// became live since the read. A writer changes an inode (e.g. frees it and makes it a directory) only through
    /// its in-core inode, and delivers that change to the hook under the counts mutex after making it live; so either
    /// that happened before the check (the visit is made again under the inode lock) or its update finds the inode
    /// visited and is applied. A directory in use is read under its lock as before (its entries are the counts).
    /// </summary>
    private bool TryVisitUnloaded(ulong ino)
    {
        if (!engine.TryReadUnloadedCore(ino, unloadedCore, out long stamp))
        {
            return false;
        }
        var d = new Dinode(unloadedCore);
        if (!d.IsFree && d.FileType == 0x4000)
        {
            return false;
        }
        testHooks?.AfterUnloadedRead?.Invoke(ino);
        lock (countsGate)
        {
            if (!StillUnloaded(ino, stamp))
            {
                return false;
            }
            inodesScanned++;
            unloadedReads++;
            scan.MarkVisited(ino);
        }
        return true;
    }

    /// <summary>Under the counts mutex, after a read from the cluster buffer stamped <paramref name="stamp"/>: throws
    /// when the scan was aborted; false (counted as a retry) when an in-core inode of <paramref name="ino"/> became live
    /// since, so the read may be stale and the visit is made under the inode lock instead.</summary>
    private bool StillUnloaded(ulong ino, long stamp)
    {
        if (scan.AbortReason is { } why)
        {
            throw new OnlineRepairException($"the link count scan was aborted: {why}");
        }
        if (!engine.IsUnloadedSince(ino, stamp))
        {
            unloadedRetried++;
            return false;
        }
        return true;
    }

    /// <summary>A directory entry found wrong by the collect scan.</summary>
    private readonly record struct WrongEntry(ulong Dir, byte[] Name, ulong Ino, string What)
    {
        public override string ToString() => $"directory {Dir} entry '{DirectoryFormat.Show(Name)}' {What}";
    }

    /// <summary>
    /// Each entry of a directory the scan holds locked against the inode it names: that inode must be in use, and with
    /// the ftype feature its mode must be the entry's file type. Both are stable while the lock is held: the named
    /// inode cannot lose this entry, so it cannot be freed (and reallocated as another type) meanwhile. An inode nobody
    /// has in core is read from its cluster buffer (<see cref="WriteEngine.TryReadUnloadedCore"/>: its committed state,
    /// no allocation; no load stamp is needed, as what is compared cannot change); otherwise it is loaded without a
    /// place on the cache's clock, as the scan loads the inodes it visits.
    /// </summary>
    private void CheckEntries(ulong dir, List<DataEntry> entries)
    {
        foreach (DataEntry e in entries)
        {
            string? what = null;
            if (!geo.IsValidIno(e.Ino))
            {
                what = $"names inode {e.Ino}, which is no inode number of the filesystem";
            }
            else
            {
                byte[]? core = null;
                if (engine.TryReadUnloadedCore(e.Ino, entryCore, out _))
                {
                    core = entryCore;
                }
                else
                {
                    try
                    {
                        core = engine.GetInode(e.Ino, keepCached: false).Core;
                    }
                    catch (XfsWriteException ex) when (ex.Kind is WriteErrorKind.Corrupt or WriteErrorKind.NotFound)
                    {
                        what = $"names inode {e.Ino}, which does not read ({ex.Message})";
                    }
                }
                if (core is not null)
                {
                    var d = new Dinode(core);
                    byte type = DirectoryFormat.FileTypeOfMode(d.Mode);
                    if (d.IsFree) what = $"names inode {e.Ino}, which is not in use";
                    else if (reader.HasFtype && e.FileType != type) what = $"says {LinkCountScrubber.FileTypeName(e.FileType)}, but inode {e.Ino} is {LinkCountScrubber.FileTypeName(type)}";
                    if (!d.IsFree && type == DirectoryFormat.FtDirectory) dirEdges.Add(new DirectoryEdge(dir, e.Ino, e.Name));
                    else if (!d.IsFree && dir == namespaceOps.RootIno && e.Name.AsSpan().SequenceEqual(NamespaceOperations.OrphanageName)) lostFoundNotDirectory = e.Ino;
                }
            }
            if (what is null) continue;
            wrongEntryTotal++;
            if (wrongEntries.Count < options.MismatchLimit) wrongEntries.Add(new WrongEntry(dir, e.Name, e.Ino, what));
        }
    }

    /// <summary>
    /// The file types of a block, leaf or node directory's '.' and '..' entries (ftype feature; shortform stores
    /// none), checked under the directory's lock as the named entries are: '.' must say a directory (it names the
    /// locked directory itself), '..' the type of the inode it names (a directory: what the kernel writes; that inode
    /// holds this directory, so it cannot be freed or change type while the lock is held). Whether '..' names an
    /// inode in use is not judged here (its count is).
    /// </summary>
    private void CheckDotEntries(ulong dir, ulong parent, DotEntryTypes? dots)
    {
        if (dots is not { } t)
        {
            return;
        }
        if (t.Dot != DirectoryFormat.FtDirectory)
        {
            AddWrongEntry(new WrongEntry(dir, [(byte)'.'], dir, $"says {LinkCountScrubber.FileTypeName(t.Dot)}, but inode {dir} is {LinkCountScrubber.FileTypeName(DirectoryFormat.FtDirectory)}"));
        }
        if (!geo.IsValidIno(parent))
        {
            return;
        }
        byte[]? core = null;
        if (engine.TryReadUnloadedCore(parent, entryCore, out _))
        {
            core = entryCore;
        }
        else
        {
            try
            {
                core = engine.GetInode(parent, keepCached: false).Core;
            }
            catch (XfsWriteException ex) when (ex.Kind is WriteErrorKind.Corrupt or WriteErrorKind.NotFound)
            {
                return;
            }
        }
        var d = new Dinode(core);
        byte type = DirectoryFormat.FileTypeOfMode(d.Mode);
        if (!d.IsFree && t.DotDot != type)
        {
            AddWrongEntry(new WrongEntry(dir, [(byte)'.', (byte)'.'], parent, $"says {LinkCountScrubber.FileTypeName(t.DotDot)}, but inode {parent} is {LinkCountScrubber.FileTypeName(type)}"));
        }
    }

    private void AddWrongEntry(WrongEntry wrong)
    {
        wrongEntryTotal++;
        if (wrongEntries.Count < options.MismatchLimit) wrongEntries.Add(wrong);
    }

    /// <summary>Adds to one inode's count (counts mutex held). An inode number outside the filesystem names nothing
    /// that could be compared: it is damage the offline scrub reports; here it is left out.</summary>
    private void Add(ulong ino, DirectoryEntryKind kind, int delta)
    {
        if (!geo.IsValidIno(ino))
        {
            return;
        }
        Span<byte> entry = stackalloc byte[EntryBytes];
        long at = (long)ino * EntryBytes;
        counts.Load(at, entry);
        Span<byte> field = kind == DirectoryEntryKind.Name ? entry[..4] : entry[4..];
        BinaryPrimitives.WriteInt32LittleEndian(field, BinaryPrimitives.ReadInt32LittleEndian(field) + delta);
        counts.Store(at, entry);
    }

    /// <summary>The counts of one inode: entries naming it, and '.'/'..' naming it (counts mutex held).</summary>
    private (long Names, long Dots) Get(ulong ino)
    {
        Span<byte> entry = stackalloc byte[EntryBytes];
        counts.Load((long)ino * EntryBytes, entry);
        return (BinaryPrimitives.ReadInt32LittleEndian(entry), BinaryPrimitives.ReadInt32LittleEndian(entry[4..]));
    }

    // ------------------------------------------------------------------ live hook

    /// <inheritdoc/>
    void IDirectoryHook.OnDirectoryUpdate(in DirectoryUpdate update)
    {
        bool apply;
        lock (countsGate)
        {
            if (stopped)
            {
                return;
            }
            apply = scan.WantLiveUpdate(update.DirIno);
            if (apply)
            {
                Add(update.ChildIno, update.Kind, update.Delta);
                applied++;
            }
            else
            {
                ignored++;
            }
        }
        testHooks?.AfterLiveUpdate?.Invoke(update, apply);
    }

    /// <inheritdoc/>
    void IEngineHook<DirectoryUpdate>.OnHookFailed(Exception error)
    {
        ArgumentNullException.ThrowIfNull(error);
        scan.Abort($"a live update failed: {error.Message}");
    }

    // ------------------------------------------------------------------ compare and repair

    private LinkCountMismatch? CompareInode(OnlineInodeScan compare, ulong ino, ref long compared)
    {
        if (TryCompareUnloaded(compare, ino, ref compared, out LinkCountMismatch? unloadedVerdict))
        {
            return unloadedVerdict;
        }
        IncoreInode? inode = LoadInode(compare, ino);
        if (inode is null)
        {
            return null;
        }
        using IDisposable held = LockForRead(inode);
        var d = new Dinode(inode.Core);
        long names, dots;
        lock (countsGate)
        {
            if (scan.AbortReason is { } why)
            {
                throw new OnlineRepairException($"the link count scan was aborted: {why}");
            }
            (names, dots) = Get(ino);
        }
        compare.MarkVisited(ino);
        return Verdict(ino, d.IsFree, d.NLink, names + dots, Volatile.Read(ref inode.References) > 0, ref compared);
    }

    /// <summary>
    /// The compare of an inode nobody has in core: its nlink read from its cluster buffer, its count under the counts
    /// mutex iff no in-core inode of it became live since the read. Every change to its nlink or to its count is made
    /// by a writer holding its in-core inode (the namespace operations lock the inode named), which is then live, and
    /// is committed and delivered before that inode can become unreachable: so with none live in between, the nlink
    /// read and the count are of the same moment. Otherwise (false) the compare is made under the inode lock.
    /// </summary>
    private bool TryCompareUnloaded(OnlineInodeScan compare, ulong ino, ref long compared, out LinkCountMismatch? verdict)
    {
        verdict = null;
        if (!engine.TryReadUnloadedCore(ino, unloadedCore, out long stamp))
        {
            return false;
        }
        var d = new Dinode(unloadedCore);
        bool free = d.IsFree;
        uint nlink = d.NLink;
        testHooks?.AfterUnloadedRead?.Invoke(ino);
        long names, dots;
        lock (countsGate)
        {
            if (!StillUnloaded(ino, stamp))
            {
                return false;
            }
            (names, dots) = Get(ino);
            unloadedReads++;
        }
        compare.MarkVisited(ino);
        verdict = Verdict(ino, free, nlink, names + dots, held: false, ref compared);
        return true;
    }

    /// <summary>The compare of one inode's nlink with its count (a free inode is not compared). An inode in use with
    /// nlink 0 that no entry names is an orphan unless this engine holds it open (then it waits on its AGI unlinked
    /// list for its last release): the engine frees every inode left on the lists at its open and every unheld inode
    /// at its last unlink, so nothing else will ever free or reach it (xfs_repair moves it to lost+found).</summary>
    private LinkCountMismatch? Verdict(ulong ino, bool free, uint nlink, long total, bool held, ref long compared)
    {
        if (free)
        {
            return null;
        }
        compared++;
        if (total == 0 && metadataInodes.Contains(ino))
        {
            return null;
        }
        return nlink == total && !IsOrphan(ino, nlink, total, held) ? null : new LinkCountMismatch(ino, nlink, total);
    }

    /// <summary>In use, nlink 0, named by nothing, not held open: see <see cref="Verdict"/>.</summary>
    private bool IsOrphan(ulong ino, uint nlink, long total, bool held) => nlink == 0 && total == 0 && !held && ino != namespaceOps.RootIno && !metadataInodes.Contains(ino);

    private enum RepairOutcome { AlreadyRight, Set, Unnamed, Adopted, Refused }

    /// <summary>One inode's repair in its own transaction, under its lock, with the live count read again.</summary>
    private RepairOutcome RepairInode(ulong ino, out string? why)
    {
        IncoreInode inode;
        try
        {
            inode = engine.GetInode(ino);
        }
        catch (XfsWriteException e) when (e.Kind == WriteErrorKind.NotFound)
        {
            why = null;
            return RepairOutcome.AlreadyRight; // freed and its chunk gone since the compare
        }
        string? refused = null;
        RepairOutcome outcome = engine.Execute($"nlinks repair inode {ino}", tx =>
        {
            tx.LockInodes(inode);
            refused = null;
            byte[] core = inode.Core;
            var d = new Dinode(core);
            if (d.IsFree)
            {
                return RepairOutcome.AlreadyRight;
            }
            long names, dots;
            lock (countsGate)
            {
                if (scan.AbortReason is { } aborted)
                {
                    throw new OnlineRepairException($"the link count scan was aborted: {aborted}");
                }
                (names, dots) = Get(ino);
            }
            long total = names + dots;
            uint nlink = InodeCore.Nlink(core);
            bool held = Volatile.Read(ref inode.References) > 0;
            if (nlink == total && !IsOrphan(ino, nlink, total, held))
            {
                return RepairOutcome.AlreadyRight;
            }
            if (total < 0 || total > NamespaceOperations.MaxLinks)
            {
                refused = $"inode {ino}: counted {total} links, outside 0..{NamespaceOperations.MaxLinks}";
                return RepairOutcome.Refused;
            }
            if (names == 0 && ino != namespaceOps.RootIno)
            {
                // Named by no directory: it goes to the orphanage (Adopt, its own transaction), as xfs_repair does.
                return RepairOutcome.Unnamed;
            }
            if (nlink == 0 && held)
            {
                refused = $"inode {ino}: nlink 0 while held open (on the unlinked list) but {total} links counted";
                return RepairOutcome.Refused;
            }
            InodeCore.SetNlink(core, (uint)total);
            tx.LogInode(inode);
            if (nlink == 0)
            {
                // Named again: off the unlinked list it may be on (where the AGI repair puts every inode with nlink 0).
                namespaceOps.TakeOffUnlinkedList(tx, inode, $"inode {ino}");
            }
            return RepairOutcome.Set;
        });
        why = refused;
        return outcome;
    }

    // ------------------------------------------------------------------ the tree's shape

    /// <summary>
    /// The shape of the directory tree (<see cref="DirectoryTree"/>) from what the collect scan read, then each
    /// problem confirmed, and with <paramref name="repair"/> repaired, in one hold of the cross-directory rename lock:
    /// while it is held no directory changes parent (only mkdir and rmdir change entries naming directories, and they
    /// neither make nor break a wrong entry or a cycle of others), so the '..' and the entries read then, each under
    /// its directory's lock, are the tree as it is. What the scan saw while a writer moved a directory (named in two
    /// places, or in none) is not confirmed and not reported; a directory named in none is the compare's business.
    /// The repair removes the wrong entry (xfs_repair's phase 6 junks it); a directory left unnamed goes to
    /// /lost+found in the compare, its '..' pointed there.
    /// </summary>
    private void CheckTree(bool repair, List<string> problems, ref long total, ref long repaired, List<string> notRepaired, CancellationToken cancel)
    {
        var found = DirectoryTree.Analyze(namespaceOps.RootIno, dotDot, dirEdges);
        if (lostFoundNotDirectory is { } lf)
        {
            found.Insert(0, new DirectoryTreeProblem(DirectoryTreeProblemKind.NamesRoot, lf, namespaceOps.RootIno, NamespaceOperations.OrphanageName.ToArray(), 0));
        }
        foreach (DirectoryTreeProblem p in found)
        {
            cancel.ThrowIfCancellationRequested();
            bool isLostFound = lostFoundNotDirectory == p.Dir && p.Parent == namespaceOps.RootIno && p.Kind == DirectoryTreeProblemKind.NamesRoot && p.Name is { } n && n.AsSpan().SequenceEqual(NamespaceOperations.OrphanageName);
            lock (namespaceOps.CrossDirectoryRenameLock)
            {
                string? what = isLostFound ? ConfirmLostFound(p.Dir) : ConfirmTreeProblem(p);
                if (what is null)
                {
                    continue;
                }
                total++;
                if (problems.Count < options.MismatchLimit)
                {
                    problems.Add(what);
                }
                if (!repair)
                {
                    continue;
                }
                if (namespaceOps.RemoveEntryNaming(p.Parent, p.Name!, p.Dir, $"nlinks repair: {what}", out string? why))
                {
                    repaired++;
                }
                else
                {
                    notRepaired.Add($"{what}: {why}");
                }
            }
        }
    }

    /// <summary>The root's 'lost+found' still names <paramref name="ino"/>, an inode in use that is no directory: the
    /// line, or null. xfs_repair removes that entry (and moves the inode to a new /lost+found when nothing else
    /// names it); the orphanage cannot be a file.</summary>
    private string? ConfirmLostFound(ulong ino)
    {
        if (!TryReadDirectory(namespaceOps.RootIno, out _, out List<DataEntry>? entries))
        {
            return null;
        }
        foreach (DataEntry e in entries)
        {
            if (e.Ino != ino || !e.Name.AsSpan().SequenceEqual(NamespaceOperations.OrphanageName))
            {
                continue;
            }
            try
            {
                IncoreInode inode = engine.GetInode(ino, keepCached: false);
                using IDisposable held = LockForRead(inode);
                var d = new Dinode(inode.Core);
                return d.IsFree || d.FileType == 0x4000 ? null
                    : $"'/lost+found' names inode {ino}, which is not a directory (the entry is removed, as xfs_repair does; the inode goes to a new /lost+found when nothing else names it)";
            }
            catch (XfsWriteException ex) when (ex.Kind is WriteErrorKind.Corrupt or WriteErrorKind.NotFound)
            {
                return null;
            }
        }
        return null;
    }

    /// <summary>One problem of the scan's tree, read again (the rename lock held): its line, or null when the tree
    /// as it is now does not have it.</summary>
    private string? ConfirmTreeProblem(DirectoryTreeProblem p)
    {
        if (p.Name is null || !TryReadDirectory(p.Dir, out ulong up, out _) || !TryReadDirectory(p.Parent, out _, out List<DataEntry>? held))
        {
            return null;
        }
        int naming = 0;
        bool entryThere = false;
        foreach (DataEntry e in held)
        {
            if (e.Ino != p.Dir)
            {
                continue;
            }
            naming++;
            entryThere |= e.Name.AsSpan().SequenceEqual(p.Name);
        }
        if (!entryThere)
        {
            return null;
        }
        switch (p.Kind)
        {
            case DirectoryTreeProblemKind.NamesRoot:
                return p.Dir == namespaceOps.RootIno ? (p with { DotDot = up }).ToString() : null;
            case DirectoryTreeProblemKind.DotDotDisagrees:
                return up != p.Parent ? (p with { DotDot = up }).ToString() : null;
            case DirectoryTreeProblemKind.SecondName:
                return up == p.Parent && naming > 1 ? p.ToString() : null;
            default:
                return up == p.Parent && IsOnUnreachedRing(p.Dir) ? p.ToString() : null;
        }
    }

    /// <summary>Following '..' up from <paramref name="start"/>, each step a directory in use that names the one
    /// below it, comes back to <paramref name="start"/> without meeting the root: a cycle through it.</summary>
    private bool IsOnUnreachedRing(ulong start)
    {
        ulong cur = start;
        var seen = new HashSet<ulong>();
        while (seen.Add(cur))
        {
            if (cur == namespaceOps.RootIno || !TryReadDirectory(cur, out ulong up, out _) || !TryReadDirectory(up, out _, out List<DataEntry>? entries))
            {
                return false;
            }
            bool names = false;
            foreach (DataEntry e in entries)
            {
                names |= e.Ino == cur;
            }
            if (!names)
            {
                return false;
            }
            cur = up;
            if (cur == start)
            {
                return true;
            }
        }
        return false; // a ring above start, not through it: its own head is repaired
    }

    /// <summary>A directory in use (not removed while held open) read under its lock: its '..' and its entries; false
    /// when it is no such directory (freed, another type, unreadable).</summary>
    private bool TryReadDirectory(ulong ino, out ulong parent, [System.Diagnostics.CodeAnalysis.NotNullWhen(true)] out List<DataEntry>? entries)
    {
        parent = 0;
        entries = null;
        if (!geo.IsValidIno(ino))
        {
            return false;
        }
        try
        {
            IncoreInode inode = engine.GetInode(ino, keepCached: false);
            using IDisposable held = LockForRead(inode);
            var d = new Dinode(inode.Core);
            if (d.IsFree || d.FileType != 0x4000 || d.NLink == 0)
            {
                return false;
            }
            (parent, entries, _) = reader.ReadAll(ino, inode.Core, engine.ReadMetadataBlocks, $"directory {ino}", out _);
            return true;
        }
        catch (Exception e) when (e is XfsWriteException or CorruptionException or IOException)
        {
            return false;
        }
    }

    /// <summary>The orphanage found or made once per check (null until the first adoption).</summary>
    private ulong? orphanageIno;

    /// <summary>
    /// Names an inode that no directory names in <c>/lost+found</c> (<see cref="NamespaceOperations.AdoptOrphan"/>:
    /// one transaction under the locks of the orphanage, the inode and a directory's old parent). Its nlink becomes its
    /// live count plus the new name, read under its lock; the new entry and a directory's '..' reach the counts through
    /// the live hook as any writer's change, so the compare of the inodes after it sees them. An orphanage removed
    /// meanwhile is looked up (or made) once more.
    /// </summary>
    private RepairOutcome Adopt(ulong ino, out string? why)
    {
        uint? LinksOnceNamed()
        {
            long names, dots;
            lock (countsGate)
            {
                if (scan.AbortReason is { } aborted)
                {
                    throw new OnlineRepairException($"the link count scan was aborted: {aborted}");
                }
                (names, dots) = Get(ino);
            }
            return names != 0 || dots < 0 || dots >= NamespaceOperations.MaxLinks ? null : (uint)(dots + 1);
        }
        for (int attempt = 0; ; attempt++)
        {
            why = null;
            orphanageIno ??= namespaceOps.FindOrMakeOrphanage(out why);
            if (orphanageIno is not { } home)
            {
                why = $"inode {ino}: no directory names it, and there is no orphanage to name it in: {why}";
                return RepairOutcome.Refused;
            }
            switch (namespaceOps.AdoptOrphan(home, ino, LinksOnceNamed, out string detail))
            {
                case AdoptOutcome.Adopted:
                    why = detail;
                    return RepairOutcome.Adopted;
                case AdoptOutcome.Settled:
                    why = null;
                    return RepairOutcome.AlreadyRight;
                case AdoptOutcome.OrphanageGone when attempt == 0:
                    orphanageIno = null;
                    continue;
                default:
                    why = $"inode {ino}: no directory names it, and it was not moved to /lost+found: {detail}";
                    return RepairOutcome.Refused;
            }
        }
    }

    private void Stop()
    {
        lock (countsGate)
        {
            stopped = true;
        }
        hookRegistration?.Dispose();
        hookRegistration = null;
    }

    /// <summary>Removes the live directory hook and returns the memory of the counts.</summary>
    public void Dispose()
    {
        Stop();
        counts.Dispose();
    }
}
