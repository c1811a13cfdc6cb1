using System.Diagnostics;
using Xfbtree.Buffers;
using Xfbtree.Xfs.Attributes;
using Xfbtree.Xfs.Format;
using Xfbtree.Xfs.Scan;
using Xfbtree.Xfs.Write;
using Xfbtree.Xfs.Write.Engine;

namespace Xfbtree.Xfs.Online;

/// <summary>What the online check of one AG's inode cores and attr forks found.</summary>
internal sealed class OnlineInodeCheckResult
{
    /// <summary>In-use inodes judged.</summary>
    public long InodesChecked { get; set; }

    /// <summary>Damaged cores (the first <c>limit</c>) and how many in all.</summary>
    public List<DamagedInode> Cores { get; } = new();

    /// <summary>Every damaged core found.</summary>
    public long CoreTotal { get; set; }

    /// <summary>Damaged attr forks (the first <c>limit</c>).</summary>
    public List<DamagedInode> AttrForks { get; } = new();

    /// <summary>Every damaged attr fork found.</summary>
    public long AttrForkTotal { get; set; }

    /// <summary>Files without the reflink flag whose blocks the snapshot of the reference counts named shared, judged
    /// again under their inode lock and the AG locks.</summary>
    public long SharingConfirmed { get; set; }

    /// <summary>Why some inodes could not be judged for the reflink flag (a sick AG), or null.</summary>
    public string? ReflinkNotJudged { get; set; }

    /// <summary>Wall time.</summary>
    public TimeSpan Elapsed { get; set; }

    /// <summary>Time spent finding the inodes, the only part that takes the AG's lock (each batch one hold, one inobt
    /// record; waits for the lock included): an upper bound of how long the check held it.</summary>
    public TimeSpan AgLockHeld { get; set; }
}

/// <summary>
/// The inode cores and attr forks of one AG of an open engine, checked while writers run (upstream's xchk_inode and
/// xchk_xattr): a coordinated inode scan of the AG visits every allocated inode under its inode lock (read), and the
/// in-core copy (the truth while the engine holds one, as the kernel's scrubber judges its in-core inode) is judged by
/// the offline rules (<see cref="InodeCoreRules"/>: the forks walked for di_nblocks and the extent counts) and its
/// attr fork by the offline checker (<see cref="AttrForkChecker"/>). Writers change a core, its forks and its attr
/// blocks only under that lock, and a commit writes the core whole with its CRC, so the check sees one committed
/// state of each inode and never one half changed. An inode that does not load (its core does not verify: a bad CRC,
/// a realtime flag) cannot be in core, so nobody changes it: its slot in the cluster buffer is judged as it is, and
/// kept only if the inode is still allocated afterwards (under the AG lock).
/// <para>The reflink flag: a regular file without it whose data blocks are shared is damaged. Sharing a file's blocks
/// takes its inode lock and sets its flag in the same transaction, so a file found without the flag under its lock
/// that shares blocks now shared them before the check began: a snapshot of every AG's shared extents (the refcountbt,
/// read under each AG's lock when the check starts) picks the candidates, and each is judged again in a transaction
/// holding its inode lock and the AG locks of its extents (<see cref="OnlineInodeCoreRepair.DataShared"/>, the repair's
/// own test), so a file unshared since the snapshot is not blamed.</para>
/// </summary>
internal static class OnlineInodeCoreCheck
{
    public static OnlineInodeCheckResult Run(WriteEngine engine, uint agno, int limit, double cpuShare, Action<ulong>? whileInodeLocked, CancellationToken cancel)
    {
        ArgumentNullException.ThrowIfNull(engine);
        var clock = Stopwatch.StartNew();
        var r = new OnlineInodeCheckResult();
        XfsGeometry geo = engine.Geometry;
        var scan = new OnlineInodeScan(engine, agno, oneAg: true);
        var pacer = new ScanPacer(cpuShare);
        var attrBlocks = new MappedAttrBlocks(engine.Image.Cache, engine.Disk, geo);
        var data = new List<BmbtExtent>();
        var problems = new List<InodeCoreProblem>();
        SharedExtents? shared = geo.Superblock.HasReflink ? SharedExtents.Take(engine) : null;
        if (shared?.NotRead is { } notRead) r.ReflinkNotJudged = notRead;
        var candidates = new List<ulong>();
        var core = new byte[geo.InodeSize];
        var finding = new Stopwatch();
        while (Next(scan, finding) is { } batch)
        {
            foreach (ulong ino in batch)
            {
                cancel.ThrowIfCancellationRequested();
                IncoreInode inode;
                try
                {
                    inode = engine.GetInode(ino, keepCached: false);
                }
                catch (XfsWriteException e) when (e.Kind == WriteErrorKind.NotFound)
                {
                    scan.MarkVisited(ino);
                    continue;
                }
                catch (XfsWriteException e) when (e.Kind == WriteErrorKind.Corrupt)
                {
                    JudgeUnloadable(engine, scan, ino, core, problems, r, limit);
                    continue;
                }
                using (engine.TryLockInodeForRead(inode, TimeSpan.FromSeconds(30))
                    ?? throw new OnlineRepairException($"inode {ino} stayed busy for more than 30 s; the inode check ends (retry later)"))
                {
                    whileInodeLocked?.Invoke(ino);
                    inode.Core.CopyTo(core, 0);
                    var d = new Dinode(core);
                    if (!d.IsFree)
                    {
                        r.InodesChecked++;
                        InodeForkCounts? counts = Count(engine, ino, core, data, attrBlocks.Map);
                        // A fork that does not read clean is the block map check's line; its attr blocks are not read.
                        if (counts != null && CheckAttrFork(d, ino, attrBlocks) is { } why)
                        {
                            Add(r.AttrForks, limit, new DamagedInode(ino, why, Certain: false, Part: "attr fork"));
                            r.AttrForkTotal++;
                        }
                        bool candidate = shared != null && counts != null && InodeCoreRules.MissingReflinkFlag(core, geo) && shared.Overlaps(geo, data);
                        if (candidate)
                        {
                            candidates.Add(ino);
                        }
                        else
                        {
                            // The CRC is the commit's (written with the core at each commit): set on the copy, not judged.
                            XfsCrc.Update(core, Dinode.CrcOffset);
                            Judge(ino, core, geo, counts, dataShared: false, problems, r, limit);
                        }
                    }
                    scan.MarkVisited(ino);
                }
            }
            pacer.AfterBatch(cancel);
        }
        foreach (ulong ino in candidates)
        {
            cancel.ThrowIfCancellationRequested();
            JudgeSharing(engine, ino, data, problems, r, limit);
        }
        r.Elapsed = clock.Elapsed;
        r.AgLockHeld = finding.Elapsed;
        return r;
    }

    private static IReadOnlyList<ulong>? Next(OnlineInodeScan scan, Stopwatch finding)
    {
        finding.Start();
        try
        {
            return scan.NextBatch();
        }
        finally
        {
            finding.Stop();
        }
    }

    private static void Add(List<DamagedInode> list, int limit, DamagedInode d)
    {
        if (list.Count < limit) list.Add(d);
    }

    /// <summary>What the forks of a locked inode map, or null when a fork does not read clean.</summary>
    private static InodeForkCounts? Count(WriteEngine engine, ulong ino, byte[] core, List<BmbtExtent> data, List<BmbtExtent> attr)
    {
        try
        {
            return OnlineInodeCoreRepair.CountForks(engine.Image, ino, core, data, attr);
        }
        catch (CorruptionException)
        {
            return null;
        }
    }

    private static void Judge(ulong ino, byte[] core, XfsGeometry geo, InodeForkCounts? counts, bool dataShared, List<InodeCoreProblem> problems, OnlineInodeCheckResult r, int limit)
    {
        problems.Clear();
        InodeCoreRules.Examine(core, geo, ino, counts, problems, dataShared);
        if (problems.Count == 0) return;
        bool certain = true;
        foreach (var p in problems) certain &= p.Certain;
        Add(r.Cores, limit, new DamagedInode(ino, DamagedInode.Describe(problems), certain));
        r.CoreTotal++;
    }

    /// <summary>The first problem of a locked inode's attr fork (whose mapping read clean), or null.</summary>
    private static string? CheckAttrFork(Dinode d, ulong ino, MappedAttrBlocks blocks)
    {
        if (!d.HasAttrFork) return null;
        return d.AttrFormat switch
        {
            ForkFormat.Local => AttrForkChecker.CheckShortform(d.AttrFork),
            ForkFormat.Extents or ForkFormat.Btree when blocks.Map.Count > 0 => blocks.Check(ino),
            _ => null,
        };
    }

    /// <summary>
    /// An inode whose core does not verify: its slot judged as it is (the offline scan's judgement: the structure,
    /// then the rules with its forks walked), kept only when the inode is still allocated afterwards (checked under
    /// its AG's lock: an inode freed and its chunk reused meanwhile left the slot to another's bytes).
    /// </summary>
    private static void JudgeUnloadable(WriteEngine engine, OnlineInodeScan scan, ulong ino, byte[] core, List<InodeCoreProblem> problems, OnlineInodeCheckResult r, int limit)
    {
        XfsGeometry geo = engine.Geometry;
        var (daddr, offset) = engine.InodeLocation(ino);
        BlockBuffer buffer = engine.Image.Cache.Read(engine.Disk, daddr, geo.BasicBlocksPerBlock, null, BufferLockMode.Shared);
        try
        {
            buffer.Span.Slice(offset, core.Length).CopyTo(core);
        }
        finally
        {
            engine.Image.Cache.Release(buffer);
        }
        var d = new Dinode(core);
        DamagedInode? found = null;
        if (!d.IsFree)
        {
            if (d.VerifyStructure(geo, ino) is { } why)
            {
                found = new DamagedInode(ino, $"does not verify: {why}", Certain: false);
            }
            else
            {
                problems.Clear();
                InodeCoreRules.Examine(core, geo, ino, Count(engine, ino, core, [], []), problems);
                if (problems.Count > 0)
                {
                    bool certain = true;
                    foreach (var p in problems) certain &= p.Certain;
                    found = new DamagedInode(ino, DamagedInode.Describe(problems), certain);
                }
            }
        }
        // Declared visited either way (freed: by the recheck; still allocated: here).
        if (scan.VisitIfFreed(ino)) return;
        scan.MarkVisited(ino);
        r.InodesChecked++;
        if (found is { } damaged)
        {
            Add(r.Cores, limit, damaged);
            r.CoreTotal++;
        }
    }

    /// <summary>A file without the reflink flag whose extents the snapshot named shared: judged whole again in a
    /// transaction that holds its inode lock and looks its extents up in the refcountbt under their AG locks.</summary>
    private static void JudgeSharing(WriteEngine engine, ulong ino, List<BmbtExtent> data, List<InodeCoreProblem> problems, OnlineInodeCheckResult r, int limit)
    {
        XfsGeometry geo = engine.Geometry;
        DamagedInode? found = null;
        bool judged = false;
        try
        {
            engine.Execute("online inode core check", tx =>
            {
                found = null;
                IncoreInode inode = engine.GetInode(ino, keepCached: false);
                tx.LockInodes(inode);
                byte[] copy = (byte[])inode.Core.Clone();
                if (new Dinode(copy).IsFree) return;
                judged = true;
                XfsCrc.Update(copy, Dinode.CrcOffset);
                InodeForkCounts? counts = Count(engine, ino, copy, data, []);
                bool dataShared = OnlineInodeCoreRepair.DataShared(tx, geo, copy, data);
                problems.Clear();
                InodeCoreRules.Examine(copy, geo, ino, counts, problems, dataShared);
                if (problems.Count == 0) return;
                bool certain = true;
                foreach (var p in problems) certain &= p.Certain;
                found = new DamagedInode(ino, DamagedInode.Describe(problems), certain);
            });
        }
        catch (XfsWriteException e) when (e.Kind is WriteErrorKind.NotFound)
        {
            return;
        }
        catch (XfsWriteException e)
        {
            r.ReflinkNotJudged ??= $"inode {ino}: {e.Message}";
            return;
        }
        if (!judged) return;
        r.SharingConfirmed++;
        if (found is { } damaged)
        {
            Add(r.Cores, limit, damaged);
            r.CoreTotal++;
        }
    }

    /// <summary>Every AG's shared extents (the refcountbt's shared domain), read under each AG's lock in turn.</summary>
    private sealed class SharedExtents
    {
        private readonly List<(uint Start, uint Length, uint Count)>?[] perAg;

        private SharedExtents(int ags) => perAg = new List<(uint, uint, uint)>?[ags];

        /// <summary>Why some AG's extents could not be read (a sick AG: its files are not judged for the flag).</summary>
        public string? NotRead { get; private set; }

        public static SharedExtents Take(WriteEngine engine)
        {
            XfsGeometry geo = engine.Geometry;
            var s = new SharedExtents((int)geo.AgCount);
            for (uint agno = 0; agno < geo.AgCount; agno++)
            {
                uint ag = agno;
                try
                {
                    s.perAg[ag] = engine.Execute("online inode check: shared extents", tx =>
                    {
                        tx.LockAg(ag);
                        return tx.Space(ag).RefcountRecords(0, geo.AgLength(ag) - 1);
                    });
                }
                catch (XfsWriteException e)
                {
                    s.NotRead ??= $"AG {ag}'s reference counts could not be read ({e.Message})";
                }
            }
            return s;
        }

        /// <summary>True when an extent of <paramref name="extents"/> overlaps a shared extent of the snapshot.</summary>
        public bool Overlaps(XfsGeometry geo, List<BmbtExtent> extents)
        {
            foreach (BmbtExtent e in extents)
            {
                uint agno = geo.FsbToAgno(e.StartBlock), agbno = geo.FsbToAgbno(e.StartBlock);
                if (agno >= perAg.Length || perAg[agno] is not { Count: > 0 } list) continue;
                // The last shared extent starting before the end of this one: records do not overlap each other.
                ulong end = (ulong)agbno + e.BlockCount;
                int lo = 0, hi = list.Count - 1, at = -1;
                while (lo <= hi)
                {
                    int mid = (lo + hi) >>> 1;
                    if (list[mid].Start < end) { at = mid; lo = mid + 1; }
                    else hi = mid - 1;
                }
                if (at >= 0 && (ulong)list[at].Start + list[at].Length > agbno) return true;
            }
            return false;
        }
    }
}
