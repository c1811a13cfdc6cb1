using System.Buffers.Binary;
using System.Numerics;
using Xfbtree.Btree;
using Xfbtree.Buffers;
using Xfbtree.Xfs.Format;
using Xfbtree.Xfs.Write;
using Xfbtree.Xfs.Write.Engine;

namespace Xfbtree.Xfs.Online;

/// <summary>An online repair that could not finish: the scan was aborted (a live update failed, an inode stayed
/// busy too long, cancellation) or the final checks refused the shadow records. Nothing on disk changed.</summary>
public class OnlineRepairException : Exception
{
    /// <summary>Creates the exception with its one-line <paramref name="message"/>.</summary>
    public OnlineRepairException(string message) : base(message) { }

    /// <summary>Creates the exception with its one-line <paramref name="message"/> and the failure that aborted the repair.</summary>
    public OnlineRepairException(string message, Exception inner) : base(message, inner) { }
}

/// <summary>The AG has no room for the new rmapbt even with the old tree's blocks, its free space (the rmapbt's
/// per-AG reservation included) and its AGFL: the repair did not start changing anything and the AG is as it was
/// (healthy, unless it was sick before). Not a failure of the repair's logic: retrying will not help until space
/// is freed in that AG.</summary>
public sealed class OnlineRepairNoSpaceException : OnlineRepairException
{
    /// <summary>Creates the exception for AG <paramref name="agNumber"/>.</summary>
    public OnlineRepairNoSpaceException(uint agNumber, string message) : base(message) => AgNumber = agNumber;

    /// <summary>The AG that has no room.</summary>
    public uint AgNumber { get; }
}

/// <summary>
/// The coordinated inode scan (upstream's xchk_iscan) over the whole inode-number space of an open
/// <see cref="WriteEngine"/>: it starts at the first inode of an AG, walks every AG in ascending inode order,
/// wraps past the last AG and ends where it started. Positions are inode numbers rotated so that the start is 0;
/// <see cref="Progress"/> = every position below it is visited. Batches are found under the AG lock of the
/// cursor's AG (the lock that inode allocation takes): one inobt record from the cursor on; the free inodes of the
/// region before the batch's first allocated inode are declared visited (none can be created while the lock is
/// held), the batch's free and sparse slots are "skipped" (visited by definition: every later change to them is
/// wanted), an AG with nothing left is declared visited up to its end. The scanner visits each allocated inode
/// under its inode lock and calls <see cref="MarkVisited"/> before unlocking. Thread safety: one small mutex guards
/// the state; <see cref="WantLiveUpdate"/> is called by hooks on writer threads.
/// </summary>
internal sealed class OnlineInodeScan
{
    private readonly WriteEngine engine;
    private readonly XfsGeometry geo;
    private readonly object gate = new();
    private readonly ulong startIno;
    private readonly ulong total;
    private readonly HashSet<ulong> skipped = new();
    private ulong progress;
    private ulong cursor;
    private bool finished;
    private string? abortReason;

    /// <summary>A scan of <paramref name="engine"/>'s inodes starting at the first inode of AG <paramref name="startAg"/>
    /// (with <paramref name="oneAg"/>, of that AG's inodes only: it ends at the AG's end).</summary>
    public OnlineInodeScan(WriteEngine engine, uint startAg, bool oneAg = false)
    {
        ArgumentNullException.ThrowIfNull(engine);
        this.engine = engine;
        geo = engine.Geometry;
        if (startAg >= geo.AgCount)
        {
            throw new ArgumentOutOfRangeException(nameof(startAg), startAg, $"the filesystem has {geo.AgCount} AGs");
        }
        startIno = geo.AginoToIno(startAg, 0);
        total = (ulong)geo.AgCount << geo.AginoLog;
        end = oneAg ? AgSpan : total;
    }

    /// <summary>The position the scan ends at: the whole space, or one AG's.</summary>
    private readonly ulong end;

    /// <summary>Positions per AG (the agino space).</summary>
    private ulong AgSpan => 1UL << geo.AginoLog;

    /// <summary>The position of <paramref name="ino"/> in scan order (0 = the start inode).</summary>
    public ulong Position(ulong ino) => ino >= startIno ? ino - startIno : ino + (total - startIno);

    private ulong InoAt(ulong position) => (startIno + position) % total;

    /// <summary>Called (scanner thread, no lock held) when the rest of an AG was declared visited (tests).</summary>
    internal Action<uint>? AgFinished { get; set; }

    /// <summary>Every position below this is visited.</summary>
    public ulong Progress
    {
        get
        {
            lock (gate)
            {
                return progress;
            }
        }
    }

    public bool IsFinished
    {
        get
        {
            lock (gate)
            {
                return finished;
            }
        }
    }

    public bool IsAborted => AbortReason is not null;

    public string? AbortReason
    {
        get
        {
            lock (gate)
            {
                return abortReason;
            }
        }
    }

    /// <summary>Ends the scan: live updates are ignored from now on and the next step fails.</summary>
    public void Abort(string reason)
    {
        lock (gate)
        {
            abortReason ??= reason;
        }
    }

    /// <summary>upstream's xchk_iscan_want_live_update: should a change to <paramref name="ino"/>'s mappings,
    /// committed now, be replayed into the shadow data?</summary>
    public bool WantLiveUpdate(ulong ino)
    {
        lock (gate)
        {
            if (abortReason is not null)
            {
                return false;
            }
            if (finished || skipped.Contains(ino))
            {
                return true;
            }
            return Position(ino) < progress;
        }
    }

    /// <summary>The scanner visited <paramref name="ino"/> (call while holding its inode lock).</summary>
    public void MarkVisited(ulong ino)
    {
        lock (gate)
        {
            ThrowIfAborted();
            progress = Math.Max(progress, Position(ino) + 1);
        }
    }

    private void ThrowIfAborted()
    {
        if (abortReason is { } why)
        {
            throw new OnlineRepairException($"the inode scan was aborted: {why}");
        }
    }

    /// <summary>
    /// The next batch of allocated inodes to visit (ascending), or null when the scan has come back to its start
    /// (then every update is wanted). Takes the AG lock of the cursor's AG (sick AGs too) while it reads the inobt.
    /// </summary>
    public IReadOnlyList<ulong>? NextBatch()
    {
        while (true)
        {
            ulong at;
            lock (gate)
            {
                ThrowIfAborted();
                // The previous batch is done: its allocated inodes were marked, its skipped ones are behind the cursor.
                progress = Math.Max(progress, cursor);
                skipped.Clear();
                if (cursor >= end)
                {
                    finished = true;
                    return null;
                }
                at = cursor;
            }
            ulong ino = InoAt(at);
            uint agno = geo.InoToAgno(ino), agino = geo.InoToAgino(ino);
            List<ulong>? batch = engine.Execute("online inode scan", tx => FindBatch(tx, agno, agino));
            if (batch is not null)
            {
                return batch;
            }
            AgFinished?.Invoke(agno);
        }
    }

    private List<ulong>? FindBatch(WriteTransaction tx, uint agno, uint agino)
    {
        tx.LockAgForRepair(agno);
        BlockBuffer agiBuffer = tx.ReadAgHeader(AgHeaderKind.Agi, agno);
        Agi agi = Agi.Parse(agiBuffer.Span, geo, agno);
        if (agi.Problems.Count > 0 || !agi.TreeRootUsable(AgiTree.Inobt, geo))
        {
            throw new CorruptionException("AGI", agiBuffer.Daddr, $"AG {agno}: {(agi.Problems.Count > 0 ? agi.Problems[0] : "inobt root unusable")}");
        }
        bool sparse = geo.Superblock.HasSparseInodes;
        var inobt = engine.Image.OpenInobt(agi, AgiTree.Inobt, tx.AgStore(agno, null, null));
        using BtreeCursor<Trees.InobtOps> cur = inobt.CreateCursor();
        Span<byte> key = stackalloc byte[4];
        BinaryPrimitives.WriteUInt32BigEndian(key, agino);
        bool ok = cur.Lookup(key, BtreeLookup.LessOrEqual) || cur.MoveFirst();
        while (ok)
        {
            ReadOnlySpan<byte> rec = cur.Current;
            uint startino = BinaryPrimitives.ReadUInt32BigEndian(rec);
            if ((ulong)startino + 64 <= agino)
            {
                ok = cur.Increment();
                continue;
            }
            ulong holes = sparse ? HoleMask(BinaryPrimitives.ReadUInt16BigEndian(rec[4..])) : 0;
            ulong free = BinaryPrimitives.ReadUInt64BigEndian(rec[8..]);
            ulong inUse = ~free & ~holes;
            ulong wanted = startino >= agino ? inUse : inUse & ~((1UL << (int)(agino - startino)) - 1);
            if (wanted == 0)
            {
                ok = cur.Increment();
                continue;
            }
            int first = BitOperations.TrailingZeroCount(wanted);
            var batch = new List<ulong>(BitOperations.PopCount(wanted));
            lock (gate)
            {
                ThrowIfAborted();
                ulong chunkStart = Position(geo.AginoToIno(agno, startino));
                progress = Math.Max(progress, chunkStart + (ulong)first);
                for (int i = first; i < 64; i++)
                {
                    ulong ino = geo.AginoToIno(agno, startino + (uint)i);
                    if ((wanted & (1UL << i)) != 0)
                    {
                        batch.Add(ino);
                    }
                    else
                    {
                        skipped.Add(ino);
                    }
                }
                cursor = chunkStart + 64;
            }
            return batch;
        }
        // Nothing allocated from the cursor to the end of the AG: no inode can appear there while we hold the lock.
        lock (gate)
        {
            ThrowIfAborted();
            ulong agEnd = Position(geo.AginoToIno(agno, 0)) + AgSpan;
            progress = Math.Max(progress, agEnd);
            cursor = agEnd;
        }
        return null;
    }

    /// <summary>The 64-inode mask of a sparse chunk's holes (each holemask bit covers 4 inodes).</summary>
    internal static ulong HoleMask(ushort holemask) => InobtRecord.HoleBits(holemask);

    /// <summary>Called when visiting an inode of a batch failed to load it: under the inode's AG lock, an inode that
    /// is no longer allocated (freed, chunk gone) is declared visited and true returned; false if it still is.</summary>
    internal bool VisitIfFreed(ulong ino)
    {
        uint agno = geo.InoToAgno(ino), agino = geo.InoToAgino(ino);
        return engine.Execute("online inode scan recheck", tx =>
        {
            tx.LockAgForRepair(agno);
            BlockBuffer agiBuffer = tx.ReadAgHeader(AgHeaderKind.Agi, agno);
            Agi agi = Agi.Parse(agiBuffer.Span, geo, agno);
            var inobt = engine.Image.OpenInobt(agi, AgiTree.Inobt, tx.AgStore(agno, null, null));
            using BtreeCursor<Trees.InobtOps> cur = inobt.CreateCursor();
            Span<byte> key = stackalloc byte[4];
            BinaryPrimitives.WriteUInt32BigEndian(key, agino);
            bool allocated = false;
            if (cur.Lookup(key, BtreeLookup.LessOrEqual))
            {
                ReadOnlySpan<byte> rec = cur.Current;
                uint startino = BinaryPrimitives.ReadUInt32BigEndian(rec);
                if ((ulong)startino + 64 > agino)
                {
                    ulong holes = geo.Superblock.HasSparseInodes ? HoleMask(BinaryPrimitives.ReadUInt16BigEndian(rec[4..])) : 0;
                    ulong inUse = ~BinaryPrimitives.ReadUInt64BigEndian(rec[8..]) & ~holes;
                    allocated = (inUse & (1UL << (int)(agino - startino))) != 0;
                }
            }
            if (!allocated)
            {
                MarkVisited(ino);
            }
            return !allocated;
        });
    }
}
