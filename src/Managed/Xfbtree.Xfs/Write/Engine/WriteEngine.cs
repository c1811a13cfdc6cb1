using System.Buffers.Binary;
using System.Collections.Concurrent;
using Xfbtree.Buffers;
using Xfbtree.Xfs.Format;
using Xfbtree.Xfs.Repair;

namespace Xfbtree.Xfs.Write.Engine;

/// <summary>Options of <see cref="WriteEngine.Open"/>.</summary>
public sealed record WriteEngineOptions
{
    /// <summary>Buffer cache size for metadata.</summary>
    public long CacheBytes { get; init; } = 64L << 20;
    /// <summary>Journal file; default: <see cref="WriteEngine.DefaultJournalPath"/> (the resolved image path + ".xfbtree-journal").</summary>
    public string? JournalPath { get; init; }
    /// <summary>fsync the journal at every commit (crash safety). Tests and benchmarks may turn it off.</summary>
    public bool SyncCommits { get; init; } = true;
    /// <summary>The journal is checkpointed (image synced, journal emptied) when it grows past this many bytes.</summary>
    public long CheckpointBytes { get; init; } = 64L << 20;
    /// <summary>Test-only crash points (see <see cref="WriteFaultHook"/>).</summary>
    internal WriteFaultHook? Faults { get; init; }
    /// <summary>Mappings one step of a split operation (punch, truncate, reflink, unshare) covers at most
    /// (internal: tests make it small to see the steps).</summary>
    internal int StepPieces { get; init; } = Files.FileOperations.StepPieces;
    /// <summary>Bytes of shared data one unshare step copies at most (internal, as <see cref="StepPieces"/>).</summary>
    internal int UnshareStepBytes { get; init; } = Files.FileOperations.UnshareStepBytes;
}

/// <summary>
/// Opens an unmounted XFS v5 image read-write and changes it as the kernel would.
/// Open: refuses what the engine cannot write (dirty log, v4, no rmapbt, realtime, quota, unknown features,
/// mounted or loop-attached, another writer's lock); takes an exclusive lock on the image file; replays the
/// journal of a crashed run; sets NEEDSREPAIR on disk while open so the kernel refuses to mount it.
/// Close: checkpoints, writes the superblock counters, clears NEEDSREPAIR, fsyncs, unlocks.
/// </summary>
public sealed class WriteEngine : IDisposable
{
    private const int MaxRestarts = 64;

    private readonly XfsImage image;
    private readonly DiskBufferTarget disk;
    private readonly WriteJournal journal;
    private readonly EngineAg[] ags;
    private readonly ConcurrentDictionary<ulong, IncoreInode> inodes = new();
    private readonly ReaderWriterLockSlim commitGate = new(LockRecursionPolicy.NoRecursion);
    private readonly WriteEngineOptions options;
    [ThreadStatic] private static WriteTransaction? current;
    private volatile string? failure;
    private IDisposable? writerLock; // Native.ImageFileLock: the OFD lock every xfbtree writer takes
    private int state; // 0 open, 1 closed/disposed
    private long icountDelta, ifreeDelta;

    private WriteEngine(XfsImage image, DiskBufferTarget disk, WriteJournal journal, WriteEngineOptions options, int replayed)
    {
        this.image = image;
        this.disk = disk;
        this.journal = journal;
        this.options = options;
        RecordsReplayed = replayed;
        ags = new EngineAg[image.Geometry.AgCount];
        for (uint a = 0; a < ags.Length; a++)
        {
            ags[a] = new EngineAg(this, a);
        }
    }

    /// <summary>The journal of an image: beside the file the path names after every symbolic link is resolved
    /// (realpath) + ".xfbtree-journal", so that every name of the image (a symlink, a relative path) finds the
    /// journal a crash left.</summary>
    public static string DefaultJournalPath(string imagePath)
    {
        ArgumentNullException.ThrowIfNull(imagePath);
        return ImageUseCheck.RealPath(imagePath) + ".xfbtree-journal";
    }

    /// <summary>Opens <paramref name="imagePath"/> for writing. Throws <see cref="XfsWriteException"/> (Busy, NotSupported, Corrupt, Io).</summary>
    public static WriteEngine Open(string imagePath, WriteEngineOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(imagePath);
        options ??= new WriteEngineOptions();
        if (Directory.Exists(imagePath) || !File.Exists(imagePath))
        {
            throw new XfsWriteException(WriteErrorKind.NotFound, $"{imagePath}: no such image file");
        }
        IReadOnlyList<string> loops;
        try
        {
            loops = ImageUseCheck.LoopDevicesBacking(imagePath);
        }
        catch (XfsFormatException e)
        {
            // Whether the kernel uses the image is unknown: refuse as for an image in use.
            throw new XfsWriteException(WriteErrorKind.Busy, e.Message, e);
        }
        if (loops.Count > 0)
        {
            throw new XfsWriteException(WriteErrorKind.Busy, $"{imagePath}: in use through {string.Join(", ", loops)} (mounted or attached); unmount and detach it first");
        }
        try
        {
            // The write engine has no read-only mode to offer: writing is what it is for.
            RmapRepairPreconditions.BeforeOpen(imagePath, willWrite: true,
                readOnlyAdvice: "make it writable (chmod u+w) to change it; xfbtree rmap check only reads");
        }
        catch (XfsFormatException e)
        {
            throw new XfsWriteException(WriteErrorKind.NotSupported, e.Message, e);
        }
        IDisposable? writerLock;
        try
        {
            writerLock = OperatingSystem.IsLinux() ? Native.ImageFileLock.TryAcquireExclusive(imagePath) : null;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or Native.NativeCallException)
        {
            throw new XfsWriteException(WriteErrorKind.Io, $"{imagePath}: cannot lock the image: {e.Message}", e);
        }
        if (writerLock is null && OperatingSystem.IsLinux())
        {
            throw new XfsWriteException(WriteErrorKind.Busy, $"{imagePath}: another writer (xfbtree io, stress or repair) holds the image");
        }
        try
        {
            WriteEngine engine = OpenLocked(imagePath, options);
            engine.writerLock = writerLock;
            return engine;
        }
        catch
        {
            writerLock?.Dispose();
            throw;
        }
    }

    private static WriteEngine OpenLocked(string imagePath, WriteEngineOptions options)
    {
        XfsImage img;
        try
        {
            img = XfsImage.Open(imagePath, new XfsImageOptions { Writable = true, CacheBytes = options.CacheBytes });
        }
        catch (XfsUnsupportedException e)
        {
            throw new XfsWriteException(WriteErrorKind.NotSupported, e.Message, e);
        }
        catch (XfsFormatException e)
        {
            throw new XfsWriteException(WriteErrorKind.Corrupt, e.Message, e);
        }
        WriteJournal? journal = null;
        try
        {
            var disk = (DiskBufferTarget)img.Target;
            if (disk.IsBlockDevice)
            {
                throw new XfsWriteException(WriteErrorKind.NotSupported, $"{imagePath}: block devices are not supported by the write engine; use an image file");
            }
            if (options.Faults is { } faults)
            {
                disk.FaultHook = (write, _, _) =>
                {
                    if (write)
                    {
                        faults.BeforeWrite();
                    }
                    return DiskBufferTarget.DiskFault.None;
                };
            }
            string journalPath = options.JournalPath ?? DefaultJournalPath(imagePath);
            Superblock sb = img.Superblock;
            bool ours = false;
            if (File.Exists(journalPath))
            {
                byte[]? owner = WriteJournal.ReadOwner(journalPath);
                if (owner is not null && !owner.AsSpan().SequenceEqual(sb.Uuid))
                {
                    throw new XfsWriteException(WriteErrorKind.NotSupported, $"{journalPath} is the journal of another filesystem; move it away first");
                }
                ours = owner is not null || sb.NeedsRepair; // a torn header: we crashed while creating it
                // Records are only appended while NEEDSREPAIR is on disk, and a clean close empties the journal
                // before it clears the flag: records without the flag mean another program (xfs_repair) has
                // changed the image since, and replaying them would undo its work.
                if (owner is not null && !sb.NeedsRepair && new FileInfo(journalPath).Length > WriteJournal.HeaderLength)
                {
                    throw new XfsWriteException(WriteErrorKind.NotSupported,
                        $"{journalPath} holds transactions but the filesystem is no longer marked NEEDSREPAIR (repaired since?); move the stale journal away");
                }
            }
            CheckWritable(img, allowNeedsRepair: ours);
            int replayed = 0;
            if (ours && File.Exists(journalPath) && WriteJournal.ReadOwner(journalPath) is not null)
            {
                replayed = WriteJournal.Replay(journalPath, (offset, bytes) => WriteRaw(disk, offset, bytes));
                disk.Sync();
            }
            journal = WriteJournal.Create(journalPath, sb.Uuid, options.Faults);
            var engine = new WriteEngine(img, disk, journal, options, replayed);
            engine.SetNeedsRepair(true);
            engine.LoadAgSummaries();
            return engine;
        }
        catch (Exception e) when (e is not XfsWriteException)
        {
            journal?.Dispose();
            img.Dispose();
            throw e switch
            {
                CorruptionException c => new XfsWriteException(WriteErrorKind.Corrupt, $"{imagePath}: {c.Message}", c),
                IOException io => new XfsWriteException(WriteErrorKind.Io, $"{imagePath}: {io.Message}", io),
                UnauthorizedAccessException ua => new XfsWriteException(WriteErrorKind.Io, $"{imagePath}: {ua.Message}", ua),
                _ => e,
            };
        }
        catch
        {
            journal?.Dispose();
            img.Dispose();
            throw;
        }
    }

    private static void CheckWritable(XfsImage img, bool allowNeedsRepair)
    {
        Superblock sb = img.Superblock;
        string path = img.Path;
        if (sb.NeedsRepair && !allowNeedsRepair)
        {
            throw new XfsWriteException(WriteErrorKind.NotSupported, $"{path}: the filesystem is marked NEEDSREPAIR (not by this engine); run xfs_repair first");
        }
        if (sb.InProgress != 0)
        {
            throw new XfsWriteException(WriteErrorKind.NotSupported, $"{path}: sb_inprogress is set (mkfs did not finish)");
        }
        if (sb.FeaturesLogIncompat != 0)
        {
            throw new XfsWriteException(WriteErrorKind.NotSupported, $"{path}: the log holds log-incompatible items (0x{sb.FeaturesLogIncompat:x}); mount and unmount the filesystem first");
        }
        var sector = new byte[512];
        RandomAccess.Read(img.RawHandle, sector, 0);
        ushort qflags = BinaryPrimitives.ReadUInt16BigEndian(sector.AsSpan(QflagsOffset));
        if ((qflags & QuotaAccountingBits) != 0)
        {
            throw new XfsWriteException(WriteErrorKind.NotSupported, $"{path}: quota accounting is on (sb_qflags 0x{qflags:x}): not supported by the write engine");
        }
        LogInspection log = img.InspectLog();
        if (log.State != LogState.Clean)
        {
            throw new XfsWriteException(WriteErrorKind.NotSupported, log.State == LogState.Dirty
                ? $"{path}: the log is dirty ({log.Detail}); mount and unmount the filesystem to replay it first"
                : $"{path}: cannot tell whether the log is clean ({log.Detail}); refusing to write");
        }
    }

    // sb_qflags (big-endian u16 at 176): user, project and group quota accounting.
    private const int QflagsOffset = 176;
    private const ushort QuotaAccountingBits = 0x0001 | 0x0008 | 0x0040;
    private const int IcountOffset = 128, IfreeOffset = 136;

    /// <summary>
    /// The engine journal a writer left beside <paramref name="imagePath"/> without closing cleanly (a crash, a
    /// kill), or null when there is none (a clean close removes it) or it names another filesystem. Its committed
    /// transactions are replayed by the next open (<c>xfbtree recover IMAGE</c>); nothing is changed here. While a
    /// writer has the image open its journal exists too: ask <c>ImageUseCheck.InUseBy</c> first.
    /// </summary>
    /// <exception cref="IOException">The journal or the image cannot be read.</exception>
    public static PendingJournal? FindPendingJournal(string imagePath)
    {
        string path = DefaultJournalPath(imagePath);
        if (!File.Exists(path))
        {
            return null;
        }
        byte[]? owner = WriteJournal.ReadOwner(path);
        if (owner is not null)
        {
            var uuid = new byte[16];
            using (var h = File.OpenHandle(imagePath, FileMode.Open, FileAccess.Read, FileShare.ReadWrite))
            {
                if (RandomAccess.Read(h, uuid, SuperblockUuidOffset) != uuid.Length || !owner.AsSpan().SequenceEqual(uuid))
                {
                    return null;
                }
            }
        }
        int transactions = owner is null ? 0 : WriteJournal.Replay(path, static (_, _) => { });
        return new PendingJournal(path, transactions, new FileInfo(path).Length);
    }

    private const int SuperblockUuidOffset = 32; // sb_uuid

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

    /// <summary>The in-core inode of <paramref name="ino"/> (read and verified on first use, then cached).
    /// Throws XfsWriteException NotFound for an invalid inode number, Corrupt for a bad inode.</summary>
    internal IncoreInode GetInode(ulong ino)
    {
        ThrowIfUnusable();
        if (!Geometry.IsValidIno(ino))
        {
            throw new XfsWriteException(WriteErrorKind.NotFound, $"inode {ino} does not exist (not a valid inode number)");
        }
        if (inodes.TryGetValue(ino, out IncoreInode? cached))
        {
            return cached;
        }
        byte[] core = LoadInode(ino, out bool fromTransaction);
        var loaded = new IncoreInode(ino, core);
        IncoreInode winner = inodes.GetOrAdd(ino, loaded);
        if (fromTransaction && ReferenceEquals(winner, loaded))
        {
            current!.LoadedFromTransaction(loaded);
        }
        return winner;
    }

    /// <summary>Forgets a cached inode (a cancelled transaction that had formatted it).</summary>
    internal void ForgetInode(IncoreInode inode) => inodes.TryRemove(new KeyValuePair<ulong, IncoreInode>(inode.Ino, inode));

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

    /// <summary>Holds the inode lock for reading outside a transaction (pread, stat, readdir). Dispose to release.</summary>
    internal IDisposable LockInodeForRead(IncoreInode inode)
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

    /// <summary>Holds every commit at the commit gate until disposed (commits already past it have written
    /// everything in place): the image is then a consistent snapshot for an offline oracle. Same thread disposes.</summary>
    public IDisposable PauseCommits()
    {
        ThrowIfUnusable();
        if (current is not null)
        {
            throw new InvalidOperationException("PauseCommits inside a transaction would wait for its own commit");
        }
        commitGate.EnterWriteLock();
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

    private sealed class InodeReadLock(IncoreInode inode) : IDisposable
    {
        private IncoreInode? held = inode;

        public void Dispose() => Interlocked.Exchange(ref held, null)?.Lock.Exit();
    }

    // ------------------------------------------------------------------ transactions

    /// <summary>Runs <paramref name="body"/> as one transaction: commit when it returns, cancel (nothing changed)
    /// when it throws. A lock taken out of order restarts the body once with that lock taken first, so a body
    /// must not have effects outside its transaction. Metadata corruption marks the AG sick and becomes
    /// <see cref="XfsWriteException"/> Corrupt.</summary>
    internal T Execute<T>(string operation, Func<WriteTransaction, T> body)
    {
        ArgumentNullException.ThrowIfNull(body);
        if (current is not null)
        {
            throw new InvalidOperationException($"{operation}: a transaction ({current.Operation}) is already running on this thread; pass it down instead of nesting");
        }
        var plan = new LockPlan();
        for (int attempt = 0; ; attempt++)
        {
            ThrowIfUnusable();
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

    /// <summary>Bytes of the largest journal record committed since open (a test hook: operations over huge ranges
    /// must split into bounded transactions, and a transaction's data and blocks are held in memory until its
    /// commit, so this bounds the memory of every operation too).</summary>
    internal long LargestRecordBytes => Interlocked.Read(ref largestRecordBytes);

    private long committedRecords;

    /// <summary>Journal records committed since open (a test hook: a split operation commits one per step).</summary>
    internal long CommittedRecords => Interlocked.Read(ref committedRecords);

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

    // ------------------------------------------------------------------ checkpoint and close

    /// <summary>Makes every committed change durable in the image and empties the journal (blocks commits meanwhile).</summary>
    public void Checkpoint()
    {
        ThrowIfUnusable();
        commitGate.EnterWriteLock();
        try
        {
            disk.Sync();
            journal.Truncate();
        }
        finally
        {
            commitGate.ExitWriteLock();
        }
    }

    /// <summary>
    /// Makes every committed operation durable (its journal record fsynced) without a checkpoint. Concurrent callers
    /// share fsyncs. With <see cref="WriteEngineOptions.SyncCommits"/> every commit is durable already and this
    /// returns at once.
    /// </summary>
    public void SyncJournal()
    {
        ThrowIfUnusable();
        journal.Sync();
    }

    /// <summary>After a commit: checkpoint when the journal outgrew its bound.</summary>
    internal void MaybeCheckpoint()
    {
        if (journal.Length > options.CheckpointBytes)
        {
            Checkpoint();
        }
    }

    /// <summary>Clean close (see the class remarks). Dispose without Close leaves NEEDSREPAIR set and the journal in place.</summary>
    public void Close()
    {
        ThrowIfUnusable();
        if (current is not null)
        {
            throw new InvalidOperationException("Close inside a transaction");
        }
        try
        {
            Checkpoint();
            commitGate.EnterWriteLock();
            try
            {
                WriteCleanSuperblock();
                disk.Sync();
                journal.Dispose();
                File.Delete(journal.Path);
            }
            finally
            {
                commitGate.ExitWriteLock();
            }
        }
        catch (Exception e) when (e is IOException or CorruptionException)
        {
            Dispose();
            throw new XfsWriteException(e is CorruptionException ? WriteErrorKind.Corrupt : WriteErrorKind.Io,
                $"{image.Path}: clean close failed ({e.Message}); the journal and NEEDSREPAIR stay, reopen to recover", e);
        }
        Dispose();
    }

    /// <summary>Releases everything without writing (no checkpoint): NEEDSREPAIR and the journal stay.</summary>
    public void Dispose()
    {
        if (Interlocked.Exchange(ref state, 1) != 0)
        {
            return;
        }
        try
        {
            journal.Dispose();
            image.Dispose();
        }
        finally
        {
            writerLock?.Dispose(); // last: no other writer may start while our descriptors still write
            commitGate.Dispose();
        }
    }

    private MagicCrcVerifier SuperblockVerifier() =>
        new("superblock", Superblock.MagicValue, Superblock.CrcOffset, Geometry.SectorSize);

    private void SetNeedsRepair(bool on)
    {
        BlockBuffer sb = image.Cache.Read(disk, 0, Geometry.SectorBasicBlocks, SuperblockVerifier(), BufferLockMode.Exclusive);
        try
        {
            bool set = (BinaryPrimitives.ReadUInt32BigEndian(sb.Span[Superblock.OffsetIncompat..]) & Superblock.IncompatNeedsRepair) != 0;
            if (set != on)
            {
                AgHeaderEditor.SetNeedsRepair(sb.Span[..Geometry.SectorSize], on);
                sb.MarkDirty();
            }
        }
        finally
        {
            image.Cache.Release(sb);
        }
        image.Cache.FlushAndSync(disk);
    }

    /// <summary>The counters the kernel derives at mount (sb_fdblocks = Σ freeblks + flcount + btreeblks,
    /// sb_icount = Σ agi_count, sb_ifree = Σ agi_freecount), read from the AG headers on disk.</summary>
    internal (ulong Fdblocks, ulong Icount, ulong Ifree) ComputeSuperblockCounters()
    {
        ulong fd = 0, ic = 0, ifr = 0;
        for (uint a = 0; a < ags.Length; a++)
        {
            var c = AgCounters(a) ?? throw new CorruptionException("AGF", Geometry.AgHeaderDaddr(a, 1), $"AG {a}: headers unreadable");
            fd += c.Fdblocks;
            ic += c.Icount;
            ifr += c.Ifree;
        }
        return (fd, ic, ifr);
    }

    /// <summary>One AG's share of the superblock counters, or null when its AGF or AGI cannot be read.</summary>
    private (ulong Fdblocks, ulong Icount, ulong Ifree)? AgCounters(uint agno)
    {
        try
        {
            Agf agf = image.ReadAgf(agno);
            Agi agi = image.ReadAgi(agno);
            return ((ulong)agf.FreeBlocks + agf.FlCount + agf.BtreeBlocks, agi.Count, agi.FreeCount);
        }
        catch (CorruptionException)
        {
            return null;
        }
    }

    /// <summary>Per-AG counter shares at open (null: unreadable), for a close when some AG is unreadable.</summary>
    private (ulong Fdblocks, ulong Icount, ulong Ifree)?[]? countersAtOpen;

    private void WriteCleanSuperblock()
    {
        var now = new (ulong Fdblocks, ulong Icount, ulong Ifree)?[ags.Length];
        bool complete = true;
        for (uint a = 0; a < ags.Length; a++)
        {
            now[a] = AgCounters(a);
            complete &= now[a] is not null;
        }
        BlockBuffer sb = image.Cache.Read(disk, 0, Geometry.SectorBasicBlocks, SuperblockVerifier(), BufferLockMode.Exclusive);
        try
        {
            Span<byte> s = sb.Span[..Geometry.SectorSize];
            ulong fd = 0, ic = 0, ifr = 0;
            if (complete)
            {
                // As the kernel derives them at mount: every AG's share, whatever the superblock said before.
                foreach (var c in now)
                {
                    fd += c!.Value.Fdblocks;
                    ic += c.Value.Icount;
                    ifr += c.Value.Ifree;
                }
            }
            else
            {
                // An AG with unreadable headers (sick): keep the superblock's figures and add what changed in the
                // AGs that can be read (the engine never changed the others).
                fd = AgHeaderEditor.FreeDataBlocks(s);
                ic = BinaryPrimitives.ReadUInt64BigEndian(s[IcountOffset..]);
                ifr = BinaryPrimitives.ReadUInt64BigEndian(s[IfreeOffset..]);
                for (int a = 0; a < now.Length; a++)
                {
                    if (now[a] is { } n && countersAtOpen?[a] is { } o)
                    {
                        fd = fd + n.Fdblocks - o.Fdblocks;
                        ic = ic + n.Icount - o.Icount;
                        ifr = ifr + n.Ifree - o.Ifree;
                    }
                }
            }
            BinaryPrimitives.WriteUInt64BigEndian(s[IcountOffset..], ic);
            BinaryPrimitives.WriteUInt64BigEndian(s[IfreeOffset..], ifr);
            AgHeaderEditor.SetFreeDataBlocks(s, fd);
            AgHeaderEditor.SetNeedsRepair(s, on: false);
            sb.MarkDirty();
        }
        finally
        {
            image.Cache.Release(sb);
        }
        image.Cache.Flush(disk);
    }

    /// <summary>Reads every AGF once so AG selection has figures before the first allocation; an AG whose
    /// headers are corrupt is marked sick instead of failing the open.</summary>
    private void LoadAgSummaries()
    {
        countersAtOpen = new (ulong, ulong, ulong)?[ags.Length];
        foreach (EngineAg ag in ags)
        {
            countersAtOpen[ag.AgNumber] = AgCounters(ag.AgNumber);
            try
            {
                Agf agf = image.ReadAgf(ag.AgNumber);
                if (agf.Problems.Count > 0)
                {
                    ag.MarkSick($"AGF: {agf.Problems[0]}");
                    continue;
                }
                Agi agi = image.ReadAgi(ag.AgNumber);
                var (metaAsk, rmapAsk) = ag.ReservationAsks;
                long metaUsed = agf.RefcountBlocks + (image.Superblock.HasInobtCounts ? agi.FinobtBlocks : 0);
                ag.Publish(new AgSummary(agf.FreeBlocks, agf.Longest, agf.FlCount,
                    Space.AgSpace.MinFreeList(Geometry, agf.BnoLevel, agf.CntLevel, agf.RmapLevel),
                    Math.Max(0, (long)metaAsk - metaUsed), Math.Max(0, (long)rmapAsk - agf.RmapBlocks)));
            }
            catch (CorruptionException e)
            {
                ag.MarkSick(e.Message);
            }
        }
    }
}

/// <summary>An AG's free-space figures as the last commit left them (read without the AG lock, for AG selection).</summary>
/// <summary>An engine journal left beside an image by a writer that did not close it cleanly
/// (<see cref="WriteEngine.FindPendingJournal"/>).</summary>
/// <param name="Path">The journal file.</param>
/// <param name="Transactions">Complete committed transactions in it (what a replay applies).</param>
/// <param name="Bytes">Its size.</param>
public sealed record PendingJournal(string Path, int Transactions, long Bytes);

internal sealed record AgSummary(uint FreeBlocks, uint Longest, uint FlCount, uint MinFreeList, long MetadataReserved, long RmapReserved);

/// <summary>Per-AG state of an open engine.</summary>
internal sealed class EngineAg
{
    private static readonly IRmapHook[] NoHooks = [];
    private readonly Lock hookGate = new();
    private volatile IRmapHook[] hooks = NoHooks;
    private volatile string? sickReason;
    private volatile AgSummary summary = new(0, 0, 0, 0, 0, 0);

    internal EngineAg(WriteEngine engine, uint agno)
    {
        Engine = engine;
        AgNumber = agno;
        ReservationAsks = Space.AgReservations.Asks(engine.Geometry, agno);
        Verifiers = [null, new(AgHeaderKind.Agf, engine.Geometry, agno), new(AgHeaderKind.Agi, engine.Geometry, agno), new(AgHeaderKind.Agfl, engine.Geometry, agno)];
    }

    internal WriteEngine Engine { get; }

    public uint AgNumber { get; }

    /// <summary>True after corruption was found in this AG: no allocation here, operations touching it fail.</summary>
    public bool IsSick => sickReason is not null;

    public string? SickReason => sickReason;

    public void MarkSick(string reason) => sickReason ??= reason;

    public void MarkHealthy() => sickReason = null;

    /// <summary>The AG lock (AGF, AGI, AGFL and the AG's btrees): a binary semaphore, no thread affinity.</summary>
    internal GateLock Lock { get; } = new();

    /// <summary>Header verifiers indexed by <see cref="AgHeaderKind"/>.</summary>
    internal AgHeaderVerifier?[] Verifiers { get; }

    /// <summary>Free blocks (agf_freeblks) as of the last commit that touched the AG.</summary>
    public uint FreeBlocks => summary.FreeBlocks;

    /// <summary>Longest free extent as of the last commit.</summary>
    public uint Longest => summary.Longest;

    /// <summary>Free-list length as of the last commit.</summary>
    public uint FreeListCount => summary.FlCount;

    /// <summary>(METADATA, RMAPBT) reservation asks of the AG (xfs_ag_resv_init's, fixed for the AG's size).</summary>
    internal (ulong Metadata, ulong Rmap) ReservationAsks { get; }

    /// <summary>Blocks an allocation for <paramref name="purpose"/> must leave free here, as of the last commit
    /// (reservations it may not use plus the free list's minimum).</summary>
    internal long PublishedReserve(AllocationPurpose purpose)
    {
        AgSummary s = summary;
        long reserved = Space.AgReservations.ForPurpose(Engine.Geometry, purpose, s.MetadataReserved, s.RmapReserved);
        return reserved + s.MinFreeList - Math.Min(s.FlCount, s.MinFreeList);
    }

    internal void Publish(AgSummary s) => summary = s;

    /// <summary>The current observers (a snapshot array: delivery takes no lock).</summary>
    internal IRmapHook[] Hooks => hooks;

    internal bool HasHooks => hooks.Length != 0;

    internal IDisposable AddHook(IRmapHook hook)
    {
        Lock.Enter();
        try
        {
            lock (hookGate)
            {
                hooks = [.. hooks, hook];
            }
        }
        finally
        {
            Lock.Exit();
        }
        return new HookRegistration(this, hook);
    }

    /// <summary>Adds an observer while the caller's transaction holds this AG's lock (online repair registers
    /// its hook in the same locked section that snapshots the AG's metadata).</summary>
    internal IDisposable AddHookHeld(IRmapHook hook)
    {
        if (!Lock.IsHeld)
        {
            throw new InvalidOperationException($"AG {AgNumber}: AddHookHeld without the AG lock");
        }
        lock (hookGate)
        {
            hooks = [.. hooks, hook];
        }
        return new HookRegistration(this, hook);
    }

    private void RemoveHook(IRmapHook hook)
    {
        Lock.Enter();
        try
        {
            lock (hookGate)
            {
                var list = new List<IRmapHook>(hooks);
                list.Remove(hook);
                hooks = list.Count == 0 ? NoHooks : list.ToArray();
            }
        }
        finally
        {
            Lock.Exit();
        }
    }

    /// <summary>Hands one update to every observer; a throwing observer is told through OnHookFailed and never fails the writer.</summary>
    internal void Deliver(in RmapUpdate update)
    {
        foreach (IRmapHook hook in hooks)
        {
            try
            {
                hook.OnRmapUpdate(update);
            }
            catch (Exception e)
            {
                try
                {
                    hook.OnHookFailed(e);
                }
                catch (Exception)
                {
                    // An observer that fails to take its own failure report is beyond help; the writer goes on.
                }
            }
        }
    }

    private sealed class HookRegistration(EngineAg ag, IRmapHook hook) : IDisposable
    {
        private int disposed;

        public void Dispose()
        {
            if (Interlocked.Exchange(ref disposed, 1) == 0)
            {
                ag.RemoveHook(hook);
            }
        }
    }

    public override string ToString() => $"AG {AgNumber}{(IsSick ? " (sick)" : "")}";
}
