using System.Collections.Concurrent;
using Xfbtree.Buffers;
using Xfbtree.Xfs.Format;

namespace Xfbtree.Xfs.Write.Engine;

/// <summary>
/// Opens an unmounted XFS v5 image read-write and changes it as the kernel would.
/// Open: refuses what the engine cannot write (dirty log, v4, realtime, quota, unknown features,
/// mounted or loop-attached, another writer's lock); takes an exclusive lock on the image file; replays the
/// journal of a crashed run; sets NEEDSREPAIR on disk while open so the kernel refuses to mount it.
/// Close: checkpoints, writes the superblock counters, clears NEEDSREPAIR, fsyncs, unlocks.
/// A filesystem without an rmapbt is written as the kernel writes it: no rmap record anywhere, no rmap hook events,
/// no RMAPBT reservation pool, a free list for the bnobt and cntbt alone (each asked of the superblock's features).
/// This file holds the open engine's state, inodes, transactions, data reads and hooks; opening and recovery are
/// in WriteEngine.Open.cs, checkpoints and the clean close in WriteEngine.Close.cs, the per-AG state in
/// <see cref="EngineAg"/>.
/// </summary>
public sealed partial class WriteEngine : IDisposable
{
    private const int MaxRestarts = 64;

    private readonly XfsImage image;
    private readonly DiskBufferTarget disk;
    private readonly WriteJournal journal;
    private readonly EngineAg[] ags;
    private readonly InodeCache inodeCache;
    private readonly ReaderWriterLockSlim commitGate = new(LockRecursionPolicy.NoRecursion);
    private readonly WriteEngineOptions options;
    [ThreadStatic] private static WriteTransaction? current;
    private volatile string? failure;
    private IDisposable? writerLock; // Native.ImageFileLock: the OFD lock every xfbtree writer takes
    private int state; // 0 open, 1 closed/disposed
    private long icountDelta, ifreeDelta;
    private readonly DirectoryHookChain directoryHooks = new();
    private readonly JournalCoverage coverage;  // sectors logged as metadata by records not yet durable
    private readonly JournalCoverage busy;      // extents freed by records not yet durable (busy extents)
    private readonly CheckpointCoverage journaledSinceCheckpoint = new(); // sectors any record since the checkpoint holds

    private WriteEngine(XfsImage image, DiskBufferTarget disk, WriteJournal journal, WriteEngineOptions options, int replayed)
    {
        this.image = image;
        this.disk = disk;
        this.journal = journal;
        this.options = options;
        coverage = new JournalCoverage(journal);
        busy = new JournalCoverage(journal);
        inodeCache = new InodeCache(options.InodeCacheCapacity);
        RecordsReplayed = replayed;
        ags = new EngineAg[image.Geometry.AgCount];
        for (uint a = 0; a < ags.Length; a++)
        {
            ags[a] = new EngineAg(this, a);
        }
    }

    /// <summary>Records replayed from the journal at open (0 after a clean close).</summary>
    public int RecordsReplayed { get; }

    /// <summary>The image (superblock, geometry, cache, AG headers and trees for reading).</summary>
    public XfsImage Image => image;

    /// <summary>The filesystem's geometry (block size, AG count and size, inode size).</summary>
    public XfsGeometry Geometry => image.Geometry;

    internal WriteEngineOptions Options => options;

    internal WriteJournal Journal => journal;

    internal DiskBufferTarget Disk => disk;

    internal ReaderWriterLockSlim CommitGate => commitGate;

    /// <summary>Sectors logged as metadata by records not yet durable.</summary>
    internal JournalCoverage Coverage => coverage;

    /// <summary>Extents freed by records not yet durable (busy extents).</summary>
    internal JournalCoverage Busy => busy;

    /// <summary>Sectors any record since the last checkpoint holds, durable or not (where ordered data may not go).</summary>
    internal CheckpointCoverage JournaledSinceCheckpoint => journaledSinceCheckpoint;

    /// <summary>The end of the latest record not yet durable that logged or freed a sector of the range, 0 when none.</summary>
    internal long LatestRecordOver(long byteOffset, long length) =>
        Math.Max(coverage.LatestRecordOver(byteOffset, length), busy.LatestRecordOver(byteOffset, length));

    /// <summary>
    /// Raised when a healthy AG is marked sick (corruption found by an operation, the open or an online repair), with
    /// the reason, on the thread that found it and possibly under its locks: handlers only record and signal.
    /// </summary>
    internal event Action<EngineAg, string>? AgMarkedSick;

    internal void RaiseAgMarkedSick(EngineAg ag, string reason) => AgMarkedSick?.Invoke(ag, reason);

    /// <summary>Per-AG state: sickness, hook chain.</summary>
    internal EngineAg Ag(uint agno)
    {
        if (agno >= ags.Length)
        {
            throw new XfsWriteException(WriteErrorKind.InvalidArgument, $"AG {agno} does not exist (the filesystem has {ags.Length} AGs)");
        }
        return ags[agno];
    }

    internal int AgCount => ags.Length;

    /// <summary>sb_icount / sb_ifree changes made by committed transactions since open (informational; the close
    /// recomputes both from the AGIs).</summary>
    public (long Icount, long Ifree) InodeCounterDeltas => (Interlocked.Read(ref icountDelta), Interlocked.Read(ref ifreeDelta));

    /// <summary>Sets the in-core sb_icount / sb_ifree (the superblock's figures at open plus the deltas) to these
    /// values, counted from the AGIs while no inode allocation can commit (the online superblock counter repair).</summary>
    internal void ResetInodeCounters(ulong icount, ulong ifree)
    {
        Superblock sb = Geometry.Superblock;
        Interlocked.Exchange(ref icountDelta, (long)icount - (long)sb.InodeCount);
        Interlocked.Exchange(ref ifreeDelta, (long)ifree - (long)sb.FreeInodes);
    }

    internal void ApplyInodeCounterDeltas(long icount, long ifree)
    {
        Interlocked.Add(ref icountDelta, icount);
        Interlocked.Add(ref ifreeDelta, ifree);
    }

    /// <summary>The transaction running on this thread, if any.</summary>
    internal static WriteTransaction? Current => current;

    internal void ThrowIfUnusable()
    {
        if (Volatile.Read(ref state) != 0)
        {
            throw new XfsWriteException(WriteErrorKind.Busy, $"{image.Path}: the write engine is closed");
        }
        if (failure is { } f)
        {
            throw new XfsWriteException(WriteErrorKind.Io, $"{image.Path}: an earlier commit failed after it was journaled ({f}); dispose and reopen to recover");
        }
    }

    /// <summary>A commit failed after its journal record was durable: memory no longer mirrors the image.</summary>
    internal void Fail(string why) => failure ??= why;

    /// <summary>True once a commit failed after its journal record was durable: the engine refuses every call,
    /// and that record is replayed at the next open.</summary>
    internal bool HasFailed => failure is not null;

    // ------------------------------------------------------------------ inodes

    /// <summary>The in-core inode of <paramref name="ino"/> (read and verified on first use, then cached: the same
    /// object while anyone references it, see <see cref="Engine.InodeCache"/>).
    /// Throws XfsWriteException NotFound for an invalid inode number, Corrupt for a bad inode.</summary>
    internal IncoreInode GetInode(ulong ino) => GetInode(ino, keepCached: true);

    /// <summary>
    /// As <see cref="GetInode(ulong)"/>; with <paramref name="keepCached"/> false an inode not in core yet is loaded
    /// without a place in the cache's clock (upstream's "don't cache" for scrub's inode walks): it is still the one
    /// live copy while anyone references it, but an online scan that visits every inode once neither evicts the
    /// writers' inodes nor keeps its own alive past the collector's next pass.
    /// </summary>
    internal IncoreInode GetInode(ulong ino, bool keepCached)
    {
        ThrowIfUnusable();
        if (!Geometry.IsValidIno(ino))
        {
            throw new XfsWriteException(WriteErrorKind.NotFound, $"inode {ino} does not exist (not a valid inode number)");
        }
        if (inodeCache.Find(ino) is { } cached)
        {
            return cached;
        }
        byte[] core = LoadInode(ino, out bool fromTransaction);
        var loaded = new IncoreInode(ino, core);
        IncoreInode winner = inodeCache.Add(loaded, keepCached);
        if (fromTransaction && ReferenceEquals(winner, loaded))
        {
            current!.LoadedFromTransaction(loaded);
        }
        return winner;
    }

    /// <summary>
    /// Copies <paramref name="ino"/>'s core (the whole dinode) into <paramref name="core"/> straight from its cluster
    /// buffer, without making an in-core inode, when none is live: true then, with <paramref name="stamp"/> to give
    /// <see cref="IsUnloadedSince"/>. False (nothing read) when an in-core inode is live, its cluster buffer cannot be
    /// read or the core does not verify: the caller takes the in-core inode instead (<see cref="GetInode(ulong, bool)"/>,
    /// which reports what is wrong). An online scan's way through inodes nobody is using, with no allocation: what it
    /// reads is the last committed state, and valid for as long as <see cref="IsUnloadedSince"/> says so. Outside a
    /// transaction only.
    /// </summary>
    internal bool TryReadUnloadedCore(ulong ino, Span<byte> core, out long stamp)
    {
        ThrowIfUnusable();
        if (current is not null)
        {
            throw new InvalidOperationException("TryReadUnloadedCore inside a transaction: take the in-core inode instead");
        }
        XfsGeometry g = Geometry;
        if (core.Length != g.InodeSize)
        {
            throw new ArgumentException($"the core buffer has {core.Length} bytes, the inode size is {g.InodeSize}", nameof(core));
        }
        stamp = inodeCache.LoadStamp(ino); // before the look for a live inode: see InodeCache's summary
        if (!g.IsValidIno(ino) || inodeCache.Peek(ino) is not null)
        {
            return false;
        }
        uint agno = g.InoToAgno(ino), agino = g.InoToAgino(ino);
        if (ags[agno].RetiredChunks.IsRetired(agino, out _))
        {
            return false; // its blocks may hold anything now: GetInode makes the free inode it is
        }
        var (daddr, offset) = InodeLocation(ino);
        BlockBuffer buffer;
        try
        {
            buffer = image.Cache.Read(disk, daddr, g.BasicBlocksPerBlock, null, BufferLockMode.Shared);
        }
        catch (BufferIOException)
        {
            return false;
        }
        try
        {
            buffer.Span.Slice(offset, core.Length).CopyTo(core);
        }
        finally
        {
            image.Cache.Release(buffer);
        }
        var d = new Dinode(core);
        return (d.IsFree ? VerifyFreeInode(d, ino) : d.Verify(g, ino)) is null;
    }

    /// <summary>True when no in-core inode of <paramref name="ino"/> is live and none was made live since
    /// <paramref name="stamp"/> was taken (<see cref="TryReadUnloadedCore"/>): what was read then is still its state.</summary>
    internal bool IsUnloadedSince(ulong ino, long stamp) => inodeCache.Peek(ino) is null && inodeCache.LoadStamp(ino) == stamp;

    /// <summary>Forgets a cached inode (a cancelled transaction that had formatted it).</summary>
    internal void ForgetInode(IncoreInode inode) => inodeCache.Remove(inode);

    /// <summary>The in-core inode cache (tests read its figures).</summary>
    internal InodeCache InodeCache => inodeCache;

    internal (long Daddr, int Offset) InodeLocation(ulong ino)
    {
        XfsGeometry g = Geometry;
        uint agno = g.InoToAgno(ino), agino = g.InoToAgino(ino);
        return (g.AgBlockToDaddr(agno, g.AginoToAgbno(agino)), g.AginoToSlot(agino) * g.InodeSize);
    }

    private byte[] LoadInode(ulong ino, out bool fromTransaction)
    {
        var (daddr, offset) = InodeLocation(ino);
        int isize = Geometry.InodeSize;
        var core = new byte[isize];
        fromTransaction = false;
        if (current is { } tx && tx.FindJoined(daddr, Geometry.BasicBlocksPerBlock) is { } joined)
        {
            joined.Span.Slice(offset, isize).CopyTo(core);
            fromTransaction = joined.IsDirty;
        }
        else if (ags[Geometry.InoToAgno(ino)].RetiredChunks.IsRetired(Geometry.InoToAgino(ino), out uint generation))
        {
            // Its chunk was freed: the blocks may hold anything now. The inode is free, at the highest generation
            // its chunk reached (a handle made before sees ESTALE; a reallocation through this object goes on from it).
            Dinode.FormatUnallocated(core, ino, generation, Geometry.MetaUuid);
            return core;
        }
        else
        {
            BlockBuffer buffer;
            try
            {
                buffer = image.Cache.Read(disk, daddr, Geometry.BasicBlocksPerBlock, null, BufferLockMode.Shared);
            }
            catch (BufferIOException e)
            {
                throw new XfsWriteException(WriteErrorKind.Io, $"inode {ino}: {e.Message}", e);
            }
            try
            {
                buffer.Span.Slice(offset, isize).CopyTo(core);
            }
            finally
            {
                image.Cache.Release(buffer);
            }
        }
        var d = new Dinode(core);
        string? problem = d.IsFree ? VerifyFreeInode(d, ino) : d.Verify(Geometry, ino);
        if (problem is not null)
        {
            throw new XfsWriteException(WriteErrorKind.Corrupt, $"inode {ino} is corrupt: {problem}");
        }
        return core;
    }

    private string? VerifyFreeInode(Dinode d, ulong ino)
    {
        if (d.Magic != Dinode.MagicValue) return $"bad magic 0x{d.Magic:x4}";
        if (d.Version != 3) return $"version {d.Version}, expected 3";
        if (!XfsCrc.Verify(d.Bytes, Dinode.CrcOffset)) return "bad CRC";
        if (d.Ino != ino) return $"di_ino {d.Ino} is not the inode's number";
        if (!d.Uuid.SequenceEqual(Geometry.MetaUuid)) return "metadata UUID mismatch";
        return null;
    }

    /// <summary>Holds the inode lock for reading outside a transaction (pread, stat, readdir). Dispose to release
    /// (a struct: a stat or a read takes its lock without an allocation).</summary>
    internal InodeReadLock LockInodeForRead(IncoreInode inode)
    {
        ArgumentNullException.ThrowIfNull(inode);
        ThrowIfUnusable();
        if (current is not null)
        {
            throw new InvalidOperationException("LockInodeForRead inside a transaction: lock the inode through the transaction instead");
        }
        inode.Lock.Enter();
        return new InodeReadLock(inode);
    }

    /// <summary>As <see cref="LockInodeForRead"/>, but gives up after <paramref name="timeout"/> and returns null
    /// (online repair's inode scan: an inode busy for too long ends the scan).</summary>
    internal IDisposable? TryLockInodeForRead(IncoreInode inode, TimeSpan timeout)
    {
        ArgumentNullException.ThrowIfNull(inode);
        ThrowIfUnusable();
        if (current is not null)
        {
            throw new InvalidOperationException("TryLockInodeForRead inside a transaction: lock the inode through the transaction instead");
        }
        return inode.Lock.TryEnter(timeout) ? new InodeReadLock(inode) : null;
    }

    /// <summary>Holds every commit at the commit gate until disposed, after writing back every committed change
    /// (journal fsynced, pinned buffers written in place): the image file is then a consistent snapshot for an
    /// offline oracle. Same thread disposes.</summary>
    public IDisposable PauseCommits()
    {
        ThrowIfUnusable();
        if (current is not null)
        {
            throw new InvalidOperationException("PauseCommits inside a transaction would wait for its own commit");
        }
        commitGate.EnterWriteLock();
        try
        {
            WriteBackLocked(); // the image file itself then shows every commit, for an oracle reading it
        }
        catch
        {
            commitGate.ExitWriteLock();
            throw;
        }
        return new CommitPause(commitGate);
    }

    private sealed class CommitPause(ReaderWriterLockSlim gate) : IDisposable
    {
        private int released;

        public void Dispose()
        {
            if (Interlocked.Exchange(ref released, 1) == 0)
            {
                gate.ExitWriteLock();
            }
        }
    }

    /// <summary>A held inode read lock; released by the first Dispose of this value (a using block's own copy).</summary>
    internal struct InodeReadLock(IncoreInode inode) : IDisposable
    {
        private IncoreInode? held = inode;

        public void Dispose() => Interlocked.Exchange(ref held, null)?.Lock.Exit();
    }

    // ------------------------------------------------------------------ transactions

    /// <summary>Runs <paramref name="body"/> as one transaction: commit when it returns, cancel (nothing changed)
    /// when it throws. A lock taken out of order restarts the body once with that lock taken first, so a body
    /// must not have effects outside its transaction. Metadata corruption marks the AG sick and becomes
    /// <see cref="XfsWriteException"/> Corrupt.</summary>
    /// <remarks>A body that runs out of space (NoSpace) while frees of released inodes are in flight (see
    /// <see cref="ExecuteDeferredFree"/>) waits, holding no engine lock, until those frees are done, then runs once
    /// more when any free finished since it began: the kernel flushes its deferred inode inactivation and tries the
    /// transaction again before it answers ENOSPC (xfs_trans_alloc, xfs_blockgc_free_space).</remarks>
    internal T Execute<T>(string operation, Func<WriteTransaction, T> body) => ExecuteCore(operation, body, deferredFree: false);

    /// <summary>
    /// <see cref="Execute{T}(string, Func{WriteTransaction, T})"/> for the free of an inode whose last reference went
    /// while it had no links (the kernel's deferred inactivation): counted as in flight from before its first
    /// attempt until it committed or failed, so that an operation that meets NoSpace meanwhile waits for the space it
    /// gives back instead of failing. It never waits for frees itself.
    /// </summary>
    internal T ExecuteDeferredFree<T>(string operation, ulong ino, Func<WriteTransaction, T> body)
    {
        lock (deferredFrees)
        {
            deferredFreesStarted++;
        }
        try
        {
            options.DeferredFreeStarting?.Invoke(ino);
            return ExecuteCore(operation, body, deferredFree: true);
        }
        finally
        {
            lock (deferredFrees)
            {
                deferredFreesFinished++;
                Monitor.PulseAll(deferredFrees);
            }
        }
    }

    /// <inheritdoc cref="ExecuteDeferredFree{T}(string, ulong, Func{WriteTransaction, T})"/>
    internal void ExecuteDeferredFree(string operation, ulong ino, Action<WriteTransaction> body)
    {
        ArgumentNullException.ThrowIfNull(body);
        ExecuteDeferredFree<object?>(operation, ino, tx =>
        {
            body(tx);
            return null;
        });
    }

    private readonly object deferredFrees = new();
    private long deferredFreesStarted, deferredFreesFinished; // under deferredFrees

    /// <summary>After a NoSpace: waits (holding no engine lock) until as many deferred frees finished as had started
    /// by now, and says whether any finished since <paramref name="finishedBefore"/>, when the attempt began.</summary>
    private bool WaitForDeferredFrees(string operation, long finishedBefore)
    {
        long started;
        lock (deferredFrees)
        {
            started = deferredFreesStarted;
            if (deferredFreesFinished >= started)
            {
                return deferredFreesFinished != finishedBefore;
            }
        }
        options.WaitingForDeferredFrees?.Invoke(operation);
        lock (deferredFrees)
        {
            while (deferredFreesFinished < started)
            {
                Monitor.Wait(deferredFrees);
            }
            return deferredFreesFinished != finishedBefore;
        }
    }

    private T ExecuteCore<T>(string operation, Func<WriteTransaction, T> body, bool deferredFree)
    {
        ArgumentNullException.ThrowIfNull(body);
        if (current is not null)
        {
            throw new InvalidOperationException($"{operation}: a transaction ({current.Operation}) is already running on this thread; pass it down instead of nesting");
        }
        var plan = new LockPlan();
        bool waitedForFrees = deferredFree;
        for (int attempt = 0; ; attempt++)
        {
            ThrowIfUnusable();
            long freesFinished = waitedForFrees ? 0 : Volatile.Read(ref deferredFreesFinished);
            var tx = new WriteTransaction(this, operation, plan);
            current = tx;
            try
            {
                T result = body(tx);
                tx.Commit();
                return result;
            }
            catch (LockRestartException restart)
            {
                tx.Cancel();
                if (attempt >= MaxRestarts)
                {
                    throw new XfsWriteException(WriteErrorKind.Busy, $"{operation}: could not take its locks in order after {MaxRestarts} restarts");
                }
                plan.Add(restart);
            }
            catch (XfsWriteException e) when (e.Kind == WriteErrorKind.NoSpace && !waitedForFrees)
            {
                // Cancelled first: the frees may need the locks this attempt held.
                tx.Cancel();
                current = null;
                waitedForFrees = true;
                if (!WaitForDeferredFrees(operation, freesFinished))
                {
                    throw;
                }
            }
            catch (Exception e)
            {
                tx.Cancel();
                throw Translate(operation, e);
            }
            finally
            {
                current = null;
            }
        }
    }

    /// <inheritdoc cref="Execute{T}(string, Func{WriteTransaction, T})"/>
    internal void Execute(string operation, Action<WriteTransaction> body)
    {
        ArgumentNullException.ThrowIfNull(body);
        Execute<object?>(operation, tx =>
        {
            body(tx);
            return null;
        });
    }

    /// <summary>Turns a failure inside a transaction into the one exception callers see; corruption marks the AG sick.</summary>
    private Exception Translate(string operation, Exception e)
    {
        switch (e)
        {
            case XfsWriteException:
                return e;
            case Exception when options.Faults?.IsCrash(e) == true:
                return e;
            case CorruptionException c:
            {
                long perAg = (long)Geometry.AgBlocks * Geometry.BasicBlocksPerBlock;
                uint agno = (uint)Math.Min(c.Daddr / perAg, ags.Length - 1);
                ags[agno].MarkSick(c.Message);
                return new XfsWriteException(WriteErrorKind.Corrupt, $"{operation}: AG {agno} is corrupt ({c.Message}); the AG is marked sick", c) { AgNumber = agno };
            }
            case Trees.RmapOperationException r:
                return new XfsWriteException(WriteErrorKind.Corrupt, $"{operation}: {r.Message}", r);
            case BufferIOException io:
                return new XfsWriteException(WriteErrorKind.Io, $"{operation}: {io.Message}", io);
            case IOException io:
                return new XfsWriteException(WriteErrorKind.Io, $"{operation}: {io.Message}", io);
            default:
                return e;
        }
    }

    // ------------------------------------------------------------------ data

    /// <summary>Reads committed file data: <paramref name="destination"/>.Length bytes from fs block <paramref name="fsbno"/> on.</summary>
    public void ReadData(ulong fsbno, Span<byte> destination)
    {
        ThrowIfUnusable();
        if (destination.IsEmpty)
        {
            return;
        }
        long blocks = (destination.Length + Geometry.BlockSize - 1) / Geometry.BlockSize;
        if (!Geometry.IsValidExtent(fsbno, (ulong)blocks))
        {
            throw new XfsWriteException(WriteErrorKind.InvalidArgument, $"read of {destination.Length} bytes at fsbno {fsbno}: outside the filesystem or crossing an AG");
        }
        long daddr = Geometry.AgBlockToDaddr(Geometry.FsbToAgno(fsbno), Geometry.FsbToAgbno(fsbno));
        ReadRaw(disk, daddr, destination);
        Interlocked.Add(ref dataBlocksRead, blocks);
    }

    private long dataBlocksRead;
    private long largestRecordBytes;

    /// <summary>
    /// Reads committed metadata blocks that their readers take from the image file rather than through the cache
    /// (directory blocks of the path walk and the link count scan, remote symlink blocks): the file, with the
    /// committed contents of every pinned buffer inside the range laid over it (the delayed write-back has not written
    /// them yet). Under the commit gate shared, so no write-back moves a buffer from memory to the file meanwhile; the
    /// caller's inode lock keeps commits off these blocks.
    /// </summary>
    internal void ReadMetadataBlocks(ulong fsbno, Span<byte> destination)
    {
        ThrowIfUnusable();
        int bs = Geometry.BlockSize;
        long blocks = (destination.Length + bs - 1) / bs;
        if (destination.IsEmpty || destination.Length % bs != 0 || !Geometry.IsValidExtent(fsbno, (ulong)blocks))
        {
            throw new XfsWriteException(WriteErrorKind.InvalidArgument, $"metadata read of {destination.Length} bytes at fsbno {fsbno}: outside the filesystem, crossing an AG or not whole blocks");
        }
        uint agno = Geometry.FsbToAgno(fsbno), agbno = Geometry.FsbToAgbno(fsbno);
        int blockBB = Geometry.BasicBlocksPerBlock;
        bool gated = !commitGate.IsWriteLockHeld; // under PauseCommits the gate is this thread's already
        if (gated)
        {
            commitGate.EnterReadLock();
        }
        try
        {
            ReadRaw(disk, Geometry.AgBlockToDaddr(agno, agbno), destination);
            if (image.Cache.PinnedBytes == 0)
            {
                return;
            }
            // The engine's metadata buffers are one block, a directory block, or a symlink extent (up to two blocks);
            // look each length up at every start that overlaps the range.
            uint longest = Math.Max(1u << Geometry.Superblock.DirBlockLog, 2);
            uint first = agbno >= longest - 1 ? agbno - (longest - 1) : 0;
            uint end = agbno + (uint)blocks;
            byte[] staging = System.Buffers.ArrayPool<byte>.Shared.Rent((int)longest * bs);
            try
            {
                for (uint start = first; start < end; start++)
                {
                    for (uint n = 1; n <= longest; n++)
                    {
                        if (start + n <= agbno || (ulong)start + n > Geometry.AgLength(agno))
                        {
                            continue;
                        }
                        Span<byte> whole = staging.AsSpan(0, (int)n * bs);
                        if (!image.Cache.TryCopyPinned(disk, Geometry.AgBlockToDaddr(agno, start), (int)n * blockBB, whole))
                        {
                            continue;
                        }
                        uint from = Math.Max(start, agbno), to = Math.Min(start + n, end);
                        whole.Slice((int)(from - start) * bs, (int)(to - from) * bs).CopyTo(destination[((int)(from - agbno) * bs)..]);
                    }
                }
            }
            finally
            {
                System.Buffers.ArrayPool<byte>.Shared.Return(staging);
            }
        }
        finally
        {
            if (gated)
            {
                commitGate.ExitReadLock();
            }
        }
    }

    /// <summary>
    /// Writes a committed transaction's file data in place (its record is complete in the journal, not necessarily
    /// durable: data may reach the disk before its record, as the kernel writes data before the commit that maps it).
    /// A sector covered by a record that is not durable (<see cref="JournalCoverage"/>: logged as metadata, or freed:
    /// a busy extent) is a block freed and reused for data before the free is durable; the records up to this one
    /// (the free among them) are made durable first, or a power loss could leave the block still metadata, or still
    /// another file's, and overwritten (the kernel forces its log before reusing a busy extent).
    /// </summary>
    internal void WriteDataInPlace(long byteOffset, ReadOnlySpan<byte> bytes)
    {
        long covering = LatestRecordOver(byteOffset, bytes.Length);
        if (covering > journal.SyncedEnd)
        {
            journal.Sync();
            Interlocked.Increment(ref busyDataSyncs);
        }
        WriteRaw(disk, byteOffset, bytes);
    }

    private long busyDataSyncs;

    /// <summary>Journal fsyncs a data write forced since open because its blocks were busy (freed, or logged as
    /// metadata, by a record that was not durable yet): the allocator found no other space (a test hook and a figure
    /// of the benchmarks).</summary>
    internal long BusyDataSyncs => Interlocked.Read(ref busyDataSyncs);

    /// <summary>Bytes of the largest journal record committed since open (a test hook: operations over huge ranges
    /// must split into bounded transactions, and a transaction's data and blocks are held in memory until its
    /// commit, so this bounds the memory of every operation too).</summary>
    internal long LargestRecordBytes => Interlocked.Read(ref largestRecordBytes);

    private long committedRecords;

    /// <summary>Journal records committed since open (a test hook: a split operation commits one per step).</summary>
    internal long CommittedRecords => Interlocked.Read(ref committedRecords);

    private long orderedDataBytes, orderedDataCommits;

    /// <summary>File data written in place without a journal entry (ordered data) since open: bytes and commits (a
    /// test and measurement hook).</summary>
    internal (long Bytes, long Commits) OrderedData => (Interlocked.Read(ref orderedDataBytes), Interlocked.Read(ref orderedDataCommits));

    internal void NoteOrderedData(long bytes)
    {
        Interlocked.Add(ref orderedDataBytes, bytes);
        Interlocked.Increment(ref orderedDataCommits);
    }

    internal void NoteRecord(List<JournalEntry> entries)
    {
        Interlocked.Increment(ref committedRecords);
        long bytes = 0;
        foreach (JournalEntry entry in entries)
        {
            bytes += entry.Bytes.Length;
        }
        long seen;
        while (bytes > (seen = Interlocked.Read(ref largestRecordBytes)) && Interlocked.CompareExchange(ref largestRecordBytes, bytes, seen) != seen)
        {
        }
    }

    /// <summary>File-data blocks read from the image since open (a test hook: reads must scale with the data
    /// they return, never with the holes they cover).</summary>
    internal long DataBlocksRead => Interlocked.Read(ref dataBlocksRead);

    internal static void ReadRaw(DiskBufferTarget target, long daddr, Span<byte> destination)
    {
        if (destination.Length % 512 == 0)
        {
            target.ReadSectors(daddr, destination);
            return;
        }
        byte[] whole = new byte[(destination.Length + 511) & ~511];
        target.ReadSectors(daddr, whole);
        whole.AsSpan(0, destination.Length).CopyTo(destination);
    }

    /// <summary>Writes one journal entry at replay: whole sectors as they are; a range of a buffer's dirty chunks
    /// (128-byte multiples, not sector-aligned) into the sectors around it, read first.</summary>
    internal static void WriteReplayed(DiskBufferTarget target, long byteOffset, byte[] bytes)
    {
        if (byteOffset % 512 == 0 && bytes.Length % 512 == 0)
        {
            WriteRaw(target, byteOffset, bytes);
            return;
        }
        long first = byteOffset & ~511L;
        long end = (byteOffset + bytes.Length + 511) & ~511L;
        byte[] sectors = new byte[end - first];
        target.ReadSectors(first / 512, sectors);
        bytes.CopyTo(sectors.AsSpan((int)(byteOffset - first)));
        WriteRaw(target, first, sectors);
    }

    internal static void WriteRaw(DiskBufferTarget target, long byteOffset, ReadOnlySpan<byte> bytes)
    {
        if (byteOffset % 512 != 0 || bytes.Length % 512 != 0)
        {
            throw new IOException($"unaligned image write at byte {byteOffset} (+{bytes.Length})");
        }
        target.WriteSectors(byteOffset / 512, bytes);
    }

    // ------------------------------------------------------------------ hooks

    /// <summary>Adds an observer of AG <paramref name="agno"/>'s rmap changes; dispose the result to remove it.
    /// Waits for the AG's running transaction, so the observer sees every change committed after this returns
    /// (call it outside transactions).</summary>
    internal IDisposable RegisterRmapHook(uint agno, IRmapHook hook)
    {
        ArgumentNullException.ThrowIfNull(hook);
        ThrowIfUnusable();
        if (current is not null)
        {
            throw new InvalidOperationException("RegisterRmapHook inside a transaction would wait for the transaction's own AG lock");
        }
        return Ag(agno).AddHook(hook);
    }

    /// <summary>Adds an observer of every directory entry change (<see cref="IDirectoryHook"/>); dispose the result
    /// to remove it. A transaction already running when it is added may commit its changes unseen by it: the
    /// observer must read what it needs under the directory's inode lock after registering (as the link count
    /// scan does), which waits for such a transaction.</summary>
    internal IDisposable RegisterDirectoryHook(IDirectoryHook hook)
    {
        ArgumentNullException.ThrowIfNull(hook);
        ThrowIfUnusable();
        return directoryHooks.Add(hook);
    }

    internal DirectoryHookChain DirectoryHooks => directoryHooks;

    /// <summary>Held by every rename between two directories and by every repair that changes a directory's parent
    /// or reads the tree's shape (the kernel's s_vfs_rename_mutex): one per engine, so that every
    /// <c>NamespaceOperations</c> made on it (a mount's, a scrub repair's) shares it. Taken before any inode lock.</summary>
    internal object CrossDirectoryRenameLock { get; } = new();
}
