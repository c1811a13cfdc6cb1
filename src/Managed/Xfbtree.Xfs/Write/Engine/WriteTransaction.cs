using System.Buffers;
using System.Diagnostics;
using Xfbtree.Btree;
using Xfbtree.Buffers;
using Xfbtree.Xfs.Format;
using Xfbtree.Xfs.Trees;
using Xfbtree.Xfs.Write.Space;

namespace Xfbtree.Xfs.Write.Engine;

/// <summary>What an allocation is for: decides the per-AG reservation it may not dip into and the free-list rules.</summary>
internal enum AllocationPurpose
{
    /// <summary>File data (write, fallocate, CoW): may not use the per-AG metadata reservations.</summary>
    FileData,
    /// <summary>A bmbt block of an inode fork.</summary>
    BmbtBlock,
    /// <summary>An inobt or finobt block (from free space, OWN_INOBT).</summary>
    InodeBtreeBlock,
    /// <summary>A refcountbt block (from free space, OWN_REFC).</summary>
    RefcountBtreeBlock,
    /// <summary>A new inode chunk (alignment given in the request).</summary>
    InodeChunk,
    /// <summary>A directory or symlink block.</summary>
    DirectoryBlock,
    /// <summary>A block of an rmapbt built by online repair (from free space; may use the RMAPBT per-AG reservation).</summary>
    RmapBtreeBlock,
}

/// <summary>An allocation request: at least <see cref="MinLength"/>, at most <see cref="MaxLength"/> blocks in one AG.</summary>
/// <param name="HintFsbno">Where to look first (NullFsbno = anywhere; the AG of the hint is tried first).</param>
/// <param name="MinLength">Smallest acceptable length.</param>
/// <param name="MaxLength">Largest wanted length.</param>
/// <param name="Purpose">What the blocks are for.</param>
/// <param name="Exact">Only at exactly the hint.</param>
/// <param name="Alignment">Start alignment in blocks (1 = none); inode chunks use the chunk alignment.</param>
/// <param name="OnlyAg">Restrict to one AG (e.g. inode chunk in the parent's AG, refcountbt block in its AG).</param>
internal readonly record struct AllocationRequest(
    ulong HintFsbno, uint MinLength, uint MaxLength, AllocationPurpose Purpose,
    bool Exact = false, uint Alignment = 1, uint? OnlyAg = null)
{
    public const ulong NullFsbno = ulong.MaxValue;
}

/// <summary>One allocated extent.</summary>
internal readonly record struct AllocatedExtent(uint AgNumber, uint AgBlock, uint Length, ulong Fsbno);

/// <summary>
/// One operation's transaction. Everything the operation changes goes through it: buffers
/// (joined, exclusively locked until the end), in-core inodes (logged), file data (journaled), free space, rmap
/// and refcount records, superblock counters. Commit journals every change, then writes it in place; cancel
/// leaves image and memory as they were. Lock order: inode locks (ascending inode number), then AG locks
/// (ascending AG number), then buffers; inode cluster buffers only at commit, in daddr order; then the engine's
/// commit gate. The engine commits the transaction when the operation's body returns and cancels it when the body
/// throws; the body cannot commit or cancel it itself.
/// </summary>
/// <remarks>A transaction belongs to the thread that runs its body (not thread-safe).</remarks>
[System.Diagnostics.CodeAnalysis.SuppressMessage("Design", "CA1001:Types that own disposable fields should be disposable",
    Justification = "The engine owns every transaction's lifetime: WriteEngine.Execute commits or cancels it, and both release its buffers. A public Dispose would let an operation's body end its own transaction.")]
internal sealed class WriteTransaction
{
    private readonly WriteEngine engine;
    private readonly LockPlan plan;
    private readonly BufferTransaction buffers;
    private readonly List<IncoreInode> heldInodes = new();
    private readonly Dictionary<IncoreInode, byte[]> snapshots = new();
    private readonly List<IncoreInode> logged = new();
    private readonly List<IncoreInode> loadedFromTransaction = new();
    // File data of this transaction: whole blocks in arrays rented from the shared pool (Length bytes of each are
    // the data), returned when the transaction ends: a 1 MiB write then allocates no large-object-heap array,
    // whose collection (a full, background GC) cost more than the write itself.
    private readonly List<(ulong Fsbno, byte[] Bytes, int Length, bool Fresh)> data = new();
    // How many of the first entries of `data` went to the image at commit without a journal entry (ordered data,
    // see CommitOrderedData); they are first in `data` once chosen.
    private int orderedData;
    private readonly List<byte[]> rentedData = new();
    private readonly List<uint> heldAgs = new();
    private readonly Dictionary<uint, AgSpace> spaces = new();
    private List<RmapUpdate>? hookQueue;
    private List<DirectoryUpdate>? directoryQueue;
    private List<Action>? committedActions;
    private List<(long Daddr, long LengthBB)>? freedExtents;
    private long icountDelta, ifreeDelta;
    private bool planApplied;
    private bool done;

    internal WriteTransaction(WriteEngine engine, string operation, LockPlan plan)
    {
        this.engine = engine;
        this.plan = plan;
        Operation = operation;
        buffers = new BufferTransaction(engine.Image.Cache) { TrackChanges = engine.Options.CheckLoggedRanges };
    }

    public WriteEngine Engine => engine;

    /// <summary>Operation name (for messages).</summary>
    public string Operation { get; }

    internal XfsGeometry Geometry => engine.Geometry;

    internal BufferTransaction Buffers => buffers;

    // ------------------------------------------------------------------ locks

    /// <summary>Locks inodes (sorted ascending, skipping ones already held). Must come before any AG lock, except
    /// for an inode this transaction has just allocated (nobody else can see it yet).</summary>
    public void LockInodes(params IncoreInode[] inodes)
    {
        ArgumentNullException.ThrowIfNull(inodes);
        ThrowIfDone();
        ApplyPlan();
        var sorted = (IncoreInode[])inodes.Clone();
        Array.Sort(sorted, static (a, b) => a.Ino.CompareTo(b.Ino));
        foreach (IncoreInode inode in sorted)
        {
            LockInode(inode);
        }
    }

    private void LockInode(IncoreInode inode)
    {
        if (snapshots.ContainsKey(inode))
        {
            return;
        }
        bool inOrder = heldAgs.Count == 0 && (heldInodes.Count == 0 || heldInodes[^1].Ino < inode.Ino);
        if (inOrder)
        {
            inode.Lock.Enter();
        }
        else if (!inode.Lock.TryEnter())
        {
            // Out of order (after an AG lock, or below a held inode) and contended: start over with it first.
            throw new LockRestartException(inode);
        }
        heldInodes.Add(inode);
        if (!inOrder)
        {
            heldInodes.Sort(static (a, b) => a.Ino.CompareTo(b.Ino));
        }
        snapshots[inode] = (byte[])inode.Core.Clone();
        // Whatever this transaction does to the inode (or a cancel restores), lookups cached before are not trusted.
        Volatile.Write(ref inode.ContentVersion, IncoreInode.NewVersion());
    }

    /// <summary>True when this transaction holds the inode's lock.</summary>
    public bool HoldsInode(IncoreInode inode) => snapshots.ContainsKey(inode);

    /// <summary>Locks an AG (its AGF, AGI, AGFL and AG btrees). Out of ascending order: tries, and on contention
    /// restarts the operation with that AG locked first.</summary>
    public void LockAg(uint agno)
    {
        ThrowIfDone();
        EngineAg ag = engine.Ag(agno);
        ApplyPlan();
        foreach (uint planned in plan.Ags)
        {
            if (planned >= agno)
            {
                break;
            }
            LockAgCore(engine.Ag(planned));
        }
        LockAgCore(ag);
    }

    private void LockAgCore(EngineAg ag)
    {
        uint agno = ag.AgNumber;
        if (HoldsAg(agno))
        {
            return;
        }
        if (ag.SickReason is { } sick)
        {
            throw new XfsWriteException(WriteErrorKind.Corrupt, $"{Operation}: AG {agno} is marked sick ({sick})") { AgNumber = agno };
        }
        bool inOrder = heldAgs.Count == 0 || heldAgs[^1] < agno;
        if (inOrder)
        {
            Debug.Assert(heldAgs.TrueForAll(a => a < agno), "AG locks are taken in ascending order");
            ag.Lock.Enter();
        }
        else if (!ag.Lock.TryEnter())
        {
            throw new LockRestartException(agno);
        }
        heldAgs.Add(agno);
        if (!inOrder)
        {
            heldAgs.Sort();
        }
    }

    /// <summary>Locks an AG even when it is marked sick (online repair rebuilds sick AGs); the transaction must hold
    /// no AG yet, or only lower ones (in order, blocking: a fork repair walks every AG's rmapbt in ascending order). A
    /// restarted repair takes the inodes of its plan first (the AGI rebuild locks the inodes it relinks after the AG
    /// lock: tried, and on contention taken first the next time).</summary>
    internal void LockAgForRepair(uint agno)
    {
        ThrowIfDone();
        ApplyPlan();
        EngineAg ag = engine.Ag(agno);
        if (HoldsAg(agno))
        {
            return;
        }
        if (heldAgs.Count != 0 && heldAgs[^1] > agno)
        {
            throw new InvalidOperationException($"{Operation}: LockAgForRepair({agno}) while holding AG {heldAgs[^1]}");
        }
        ag.Lock.Enter();
        heldAgs.Add(agno);
    }

    /// <summary>Adds an rmap observer to an AG this transaction holds (see <see cref="EngineAg.AddHookHeld"/>).</summary>
    internal IDisposable RegisterRmapHookHeld(uint agno, IRmapHook hook)
    {
        RequireAg(agno);
        return engine.Ag(agno).AddHookHeld(hook);
    }

    /// <summary>Non-blocking attempt (AG selection skips a busy lower AG instead of restarting).</summary>
    internal bool TryLockAg(uint agno)
    {
        EngineAg ag = engine.Ag(agno);
        if (HoldsAg(agno))
        {
            return true;
        }
        if (ag.IsSick || !ag.Lock.TryEnter())
        {
            return false;
        }
        heldAgs.Add(agno);
        heldAgs.Sort();
        return true;
    }

    /// <summary>The first lock call of a restarted body takes the planned inodes (ascending, nothing held yet).</summary>
    private void ApplyPlan()
    {
        if (planApplied)
        {
            return;
        }
        planApplied = true;
        foreach (IncoreInode inode in plan.Inodes.Values)
        {
            LockInode(inode);
        }
    }

    public bool HoldsAg(uint agno) => heldAgs.Contains(agno);

    /// <summary>The highest AG held, or null.</summary>
    internal uint? HighestAg => heldAgs.Count == 0 ? null : heldAgs[^1];

    internal void RequireAg(uint agno)
    {
        if (!HoldsAg(agno))
        {
            throw new InvalidOperationException($"{Operation}: AG {agno} is not locked by this transaction (LockAg first)");
        }
    }

    // ------------------------------------------------------------------ buffers

    /// <summary>Reads (verified) and joins a buffer; the caller must hold the lock that protects it.</summary>
    public BlockBuffer ReadBuffer(long daddr, int lengthBB, IBufferVerifier? verifier)
    {
        ThrowIfDone();
        return buffers.Read(engine.Disk, daddr, lengthBB, verifier);
    }

    /// <summary>A buffer about to be formatted (no read), joined.</summary>
    public BlockBuffer GetNewBuffer(long daddr, int lengthBB, IBufferVerifier? verifier)
    {
        ThrowIfDone();
        return buffers.GetNew(engine.Disk, daddr, lengthBB, verifier);
    }

    /// <summary>Marks a range of a joined buffer changed (it is journaled and written at commit).</summary>
    public void LogBuffer(BlockBuffer buffer, int offset, int length)
    {
        ThrowIfDone();
        buffers.LogRange(buffer, offset, length);
    }

    /// <summary>An AG header buffer (AGF, AGI, AGFL), joined; the AG must be locked.</summary>
    public BlockBuffer ReadAgHeader(AgHeaderKind kind, uint agno)
    {
        ThrowIfDone();
        RequireAg(agno);
        return buffers.Read(engine.Disk, Geometry.AgHeaderDaddr(agno, (int)kind), Geometry.SectorBasicBlocks, engine.Ag(agno).Verifiers[(int)kind]);
    }

    /// <summary>An AG header buffer about to be formatted whole (no read: a header that does not verify is rewritten
    /// without being read), joined; the AG must be locked. Its verifier recomputes the CRC at commit.</summary>
    internal BlockBuffer GetNewAgHeader(AgHeaderKind kind, uint agno)
    {
        ThrowIfDone();
        RequireAg(agno);
        return buffers.GetNew(engine.Disk, Geometry.AgHeaderDaddr(agno, (int)kind), Geometry.SectorBasicBlocks, engine.Ag(agno).Verifiers[(int)kind]);
    }

    /// <summary>A block store of AG <paramref name="agno"/> whose blocks are read through this transaction.
    /// <paramref name="allocate"/>/<paramref name="free"/> serve tree splits and joins (null: not allowed).</summary>
    public AgBtreeBlockStore AgStore(uint agno, Func<long>? allocate, Action<long>? free)
    {
        ThrowIfDone();
        return new AgBtreeBlockStore(engine.Image.Cache, engine.Disk, Geometry.BlockSize, agno, Geometry.AgBlocks, Geometry.AgLength(agno))
        {
            Transaction = buffers,
            Allocator = allocate,
            Freer = free,
        };
    }

    /// <summary>An fsbno-addressed block store (bmbt) whose blocks are read through this transaction.</summary>
    public BtreeBlockStore FsStore(Func<long>? allocate, Action<long>? free)
    {
        ThrowIfDone();
        return new FsBtreeBlockStore(engine.Image.Cache, engine.Disk, Geometry.BlockSize, Geometry.AgBlocks, Geometry.AgBlockLog, Geometry.AgCount, Geometry.DataBlocks)
        {
            Transaction = buffers,
            Allocator = allocate,
            Freer = free,
        };
    }

    internal BlockBuffer? FindJoined(long daddr, int lengthBB)
    {
        foreach (BlockBuffer b in buffers.Joined)
        {
            if (b.Daddr == daddr && b.LengthBB == lengthBB)
            {
                return b;
            }
        }
        return null;
    }

    // ------------------------------------------------------------------ inodes and data

    /// <summary>The inode's <see cref="IncoreInode.Core"/> changed: copied into its cluster buffer at commit.</summary>
    public void LogInode(IncoreInode inode)
    {
        ArgumentNullException.ThrowIfNull(inode);
        ThrowIfDone();
        if (!snapshots.ContainsKey(inode))
        {
            throw new InvalidOperationException($"{Operation}: {inode} is logged but not locked by this transaction");
        }
        if (!logged.Contains(inode))
        {
            logged.Add(inode);
        }
    }

    internal void LoadedFromTransaction(IncoreInode inode) => loadedFromTransaction.Add(inode);

    /// <summary>The blocks of the inodes [<paramref name="firstIno"/>, + <paramref name="count"/>) are being freed (a
    /// freed inode chunk): their cores are not copied anywhere at commit, as the blocks may be reused meanwhile
    /// (the kernel's stale inodes). They stay locked; their in-core cores are what a cancel restores.</summary>
    internal void DropLoggedInodes(ulong firstIno, int count)
    {
        ThrowIfDone();
        logged.RemoveAll(inode => inode.Ino >= firstIno && inode.Ino - firstIno < (ulong)count);
    }

    /// <summary>Writes file data (whole blocks) at fs block <paramref name="fsbno"/>, journaled with the transaction.</summary>
    public void WriteData(ulong fsbno, ReadOnlySpan<byte> blocks)
    {
        ThrowIfDone();
        byte[] copy = RentData(blocks.Length, zeroed: false);
        blocks.CopyTo(copy);
        WriteRentedData(fsbno, copy, blocks.Length);
    }

    /// <summary>An array of at least <paramref name="length"/> bytes from the shared pool, owned by this transaction
    /// until it ends (commit or cancel); with <paramref name="zeroed"/> its first <paramref name="length"/> bytes are zeros.</summary>
    internal byte[] RentData(int length, bool zeroed)
    {
        ThrowIfDone();
        byte[] array = ArrayPool<byte>.Shared.Rent(length);
        rentedData.Add(array);
        if (zeroed)
        {
            array.AsSpan(0, length).Clear();
        }
        return array;
    }

    /// <summary>As <see cref="WriteData"/> with the first <paramref name="length"/> bytes of an array from
    /// <see cref="RentData"/>, without a copy (the array must not change afterwards). <paramref name="fresh"/>: the
    /// committed state shows nothing of these blocks (allocated by this transaction, or unwritten and read as zeros),
    /// so writing them before the record changes nothing anyone can read; such data may go to the image without a
    /// journal entry, synced before the record is written (<see cref="CommitOrderedData"/>).</summary>
    internal void WriteRentedData(ulong fsbno, byte[] rented, int length, bool fresh = false)
    {
        ThrowIfDone();
        int bs = Geometry.BlockSize;
        if (length <= 0 || length % bs != 0 || length > rented.Length)
        {
            throw new ArgumentException($"data writes are whole blocks ({length} bytes is not a multiple of {bs})", nameof(length));
        }
        if (!Geometry.IsValidExtent(fsbno, (ulong)(length / bs)))
        {
            throw new XfsWriteException(WriteErrorKind.InvalidArgument, $"{Operation}: data write at fsbno {fsbno} (+{length / bs} blocks) outside the filesystem or crossing an AG");
        }
        data.Add((fsbno, rented, length, fresh));
    }

    /// <summary>Reads file data as this transaction sees it: committed data overlaid with this transaction's own
    /// <see cref="WriteData"/> calls (whole blocks).</summary>
    public void ReadData(ulong fsbno, Span<byte> destination)
    {
        ThrowIfDone();
        engine.ReadData(fsbno, destination);
        long firstByte = ByteOf(fsbno), lastByte = firstByte + destination.Length;
        foreach (var (f, bytes, length, _) in data)
        {
            long s = ByteOf(f), e = s + length;
            long lo = Math.Max(s, firstByte), hi = Math.Min(e, lastByte);
            if (lo < hi && Geometry.FsbToAgno(f) == Geometry.FsbToAgno(fsbno))
            {
                bytes.AsSpan((int)(lo - s), (int)(hi - lo)).CopyTo(destination[(int)(lo - firstByte)..]);
            }
        }
    }

    /// <summary>Gives the data arrays back to the pool (the transaction has ended; nothing refers to them any more).</summary>
    private void ReturnData()
    {
        data.Clear();
        foreach (byte[] array in rentedData)
        {
            ArrayPool<byte>.Shared.Return(array);
        }
        rentedData.Clear();
    }

    private long ByteOf(ulong fsbno) => Geometry.AgBlockToByte(Geometry.FsbToAgno(fsbno), Geometry.FsbToAgbno(fsbno));

    // ------------------------------------------------------------------ space (free-space trees, AGFL, OWN_AG)

    /// <summary>The space state of a locked AG inside this transaction.</summary>
    internal AgSpace Space(uint agno)
    {
        RequireAg(agno);
        if (!spaces.TryGetValue(agno, out AgSpace? space))
        {
            space = new AgSpace(this, agno);
            spaces.Add(agno, space);
        }
        return space;
    }

    /// <summary>Allocates one extent (AG selection, free-list upkeep, reservations). The rmap of the new extent is
    /// the caller's job (except OWN_AG, which the free list keeps itself). Throws NoSpace.</summary>
    public AllocatedExtent Allocate(in AllocationRequest request)
    {
        ThrowIfDone();
        return SpaceAllocator.Allocate(this, request);
    }

    /// <summary>Called by the free-space code for every extent it returns to free space (a file's blocks, metadata, a
    /// block leaving the AGFL): busy until this transaction's record is durable (<see cref="JournalCoverage"/>).</summary>
    internal void NoteFreed(uint agno, uint agbno, uint length)
    {
        int blockBB = Geometry.BasicBlocksPerBlock;
        (freedExtents ??= new List<(long, long)>()).Add((Geometry.AgBlockToDaddr(agno, agbno), (long)length * blockBB));
    }

    /// <summary>Extents this transaction returned to free space (image sectors), null when none.</summary>
    internal List<(long Daddr, long LengthBB)>? FreedExtents => freedExtents;

    /// <summary>Returns an extent of file data to free space (merging in bnobt and cntbt). The rmap unmap is the
    /// caller's job. Blocks that held metadata (btree, directory, symlink or attribute blocks) are freed with
    /// <see cref="FreeMetadata"/> instead.</summary>
    public void Free(uint agno, uint agbno, uint length)
    {
        ThrowIfDone();
        LockAg(agno);
        Space(agno).FreeExtent(agbno, length);
    }

    /// <summary>Returns an extent that held metadata to free space: every buffer of its blocks still in memory is
    /// invalidated in this transaction first (<see cref="InvalidateFreedBlocks"/>). The rmap unmap is the caller's job.</summary>
    public void FreeMetadata(uint agno, uint agbno, uint length)
    {
        ThrowIfDone();
        LockAg(agno);
        Space(agno).FreeMetadataExtent(agbno, length);
    }

    /// <summary>
    /// Marks stale, in this transaction, every buffer in memory of the AG blocks [<paramref name="agbno"/>,
    /// +<paramref name="length"/>) (the kernel's xfs_trans_binval on the blocks a transaction frees or reaps), so
    /// no buffer of a freed block is ever written or verified as its old type after a later allocation. The engine
    /// caches metadata as one-block buffers (btree blocks, inode cluster blocks) and directory blocks; both sizes
    /// are looked up, the latter also where one starts before the range and reaches into it.
    /// </summary>
    internal void InvalidateFreedBlocks(uint agno, uint agbno, uint length)
    {
        ThrowIfDone();
        RequireAg(agno);
        int blockBB = Geometry.BasicBlocksPerBlock;
        uint dirBlocks = 1u << Geometry.Superblock.DirBlockLog;
        uint end = agbno + length;
        // Every buffer length the engine uses, at every start inside the range: one block (btree and inode cluster
        // blocks), a remote symlink's extent (one buffer per extent, up to two blocks), a piece of a directory block
        // that spans extents. A whole directory block may also start before the range and reach into it. Committed
        // buffers stay pinned in the cache until a checkpoint writes them, so one left behind here would later be
        // written over whatever reuses the block.
        uint longest = Math.Max(dirBlocks, 2);
        for (uint n = 1; n <= longest; n++)
        {
            bool directoryBlock = n == dirBlocks && n > 1;
            uint first = directoryBlock ? agbno - Math.Min(agbno, n - 1) : agbno;
            uint stop = directoryBlock ? end : length >= n ? end - n + 1 : agbno; // the starts [first, stop)
            for (uint b = first; b < stop; b++)
            {
                buffers.Invalidate(engine.Disk, Geometry.AgBlockToDaddr(agno, b), blockBB * (int)n);
            }
        }
    }

    /// <summary>Fails with NoSpace unless <paramref name="blocks"/> could be allocated for <paramref name="purpose"/>
    /// (used before an operation changes anything).</summary>
    public void EnsureSpace(long blocks, AllocationPurpose purpose)
    {
        ThrowIfDone();
        SpaceAllocator.EnsureSpace(this, blocks, purpose);
    }

    // ------------------------------------------------------------------ rmap and refcount (the AG is locked if it is not yet)
    // On a filesystem without an rmapbt the three rmap calls do nothing (callers need not ask); the refcountbt is kept
    // whenever the reflink feature is on.

    /// <summary>Maps a record in AG <paramref name="agno"/>'s rmapbt (merging) and notifies the AG's hooks.</summary>
    public void RmapMap(uint agno, RmapRecord record, bool shared)
    {
        ThrowIfDone();
        if (!Geometry.Superblock.HasRmapbt)
        {
            return; // no rmapbt: nothing to record, no AG to lock for it
        }
        LockAg(agno);
        Space(agno).RmapChange(RmapUpdateKind.Map, record, shared);
    }

    /// <summary>Unmaps a record (trim/split) and notifies the hooks.</summary>
    public void RmapUnmap(uint agno, RmapRecord record, bool shared)
    {
        ThrowIfDone();
        if (!Geometry.Superblock.HasRmapbt)
        {
            return; // no rmapbt: nothing to record, no AG to lock for it
        }
        LockAg(agno);
        Space(agno).RmapChange(RmapUpdateKind.Unmap, record, shared);
    }

    /// <summary>Sets the unwritten state of a mapped range to that of <paramref name="record"/> and notifies the hooks.</summary>
    public void RmapConvert(uint agno, RmapRecord record, bool shared)
    {
        ThrowIfDone();
        if (!Geometry.Superblock.HasRmapbt)
        {
            return; // no rmapbt: nothing to record, no AG to lock for it
        }
        LockAg(agno);
        Space(agno).RmapChange(RmapUpdateKind.Convert, record, shared);
    }

    /// <summary>Adds one reference to every block of the range (gaps become count-2 records).</summary>
    public void RefcountIncrement(uint agno, uint agbno, uint length)
    {
        ThrowIfDone();
        LockAg(agno);
        Space(agno).RefcountAdjust(agbno, length, +1);
    }

    /// <summary>Drops one reference from every block of the range; returns the sub-ranges whose count reached
    /// zero (no other owner): the caller frees them.</summary>
    public IReadOnlyList<(uint AgBlock, uint Length)> RefcountDecrement(uint agno, uint agbno, uint length)
    {
        ThrowIfDone();
        LockAg(agno);
        return Space(agno).RefcountAdjust(agbno, length, -1);
    }

    /// <summary>True when any block of the range is shared (has a refcount record).</summary>
    public bool IsShared(uint agno, uint agbno, uint length)
    {
        ThrowIfDone();
        LockAg(agno);
        return Space(agno).IsShared(agbno, length);
    }

    /// <summary>Queues an rmap change for the AG's hooks (nothing at all when the AG has none).</summary>
    internal void QueueHook(uint agno, RmapUpdateKind kind, in RmapRecord record, bool shared)
    {
        if (!engine.Ag(agno).HasHooks)
        {
            return;
        }
        (hookQueue ??= new List<RmapUpdate>()).Add(new RmapUpdate(kind, agno, record, shared));
    }

    /// <summary>True when someone observes directory entry changes (callers skip the work of describing them otherwise).</summary>
    internal bool WantsDirectoryUpdates => engine.DirectoryHooks.HasHooks;

    /// <summary>Queues a directory entry change for the directory observers, delivered at commit with the locks
    /// still held (nothing when there are none; dropped when the transaction is cancelled).</summary>
    internal void QueueDirectoryUpdate(ulong dirIno, ulong childIno, int delta, DirectoryEntryKind kind)
    {
        if (!engine.DirectoryHooks.HasHooks)
        {
            return;
        }
        (directoryQueue ??= new List<DirectoryUpdate>()).Add(new DirectoryUpdate(dirIno, childIno, delta, kind));
    }

    // ------------------------------------------------------------------ superblock counters

    /// <summary>Adjusts sb_icount / sb_ifree (sb_fdblocks follows the space calls by itself).</summary>
    public void ModInodeCounters(long icountDelta, long ifreeDelta)
    {
        ThrowIfDone();
        this.icountDelta += icountDelta;
        this.ifreeDelta += ifreeDelta;
    }

    /// <summary>Runs <paramref name="action"/> once this transaction's blocks are in place, before its locks go (a
    /// cancel drops it): in-memory state that must follow the image exactly, under the locks that protect it.</summary>
    internal void OnCommitted(Action action)
    {
        ArgumentNullException.ThrowIfNull(action);
        ThrowIfDone();
        (committedActions ??= new List<Action>()).Add(action);
    }

    private void RunCommittedActions()
    {
        if (committedActions is null)
        {
            return;
        }
        foreach (Action action in committedActions)
        {
            action();
        }
        committedActions = null;
    }

    // ------------------------------------------------------------------ end

    /// <summary>Commits (normally done by <see cref="WriteEngine.Execute{T}"/>).</summary>
    /// <remarks>
    /// Order: logged inodes are copied into their cluster buffers (daddr order, CRC recomputed); every dirty
    /// buffer runs its write verifier; one journal record with the data and the buffers is appended and made
    /// durable (with SyncCommits); the data is written in place, the buffers are pinned in the cache for the next
    /// checkpoint's write-back; hooks get the queued rmap changes; locks go. A failure
    /// before the record is complete cancels; after it, the engine stops (the journal replays the record at the
    /// next open).
    /// </remarks>
    internal void Commit()
    {
        ThrowIfDone();
        CopyLoggedInodes();
        var dirty = new List<BlockBuffer>();
        int dirtyBytes = 0, largest = 0;
        foreach (BlockBuffer b in buffers.Joined)
        {
            if (buffers.TrackChanges && !b.Target.IsInMemory && buffers.FirstUnloggedChange(b) is var at and >= 0)
            {
                throw new InvalidOperationException($"{Operation}: {b} (verifier {b.Verifier?.Name ?? "none"}) changed at byte {at} outside the ranges it logged");
            }
            if (!b.Target.IsInMemory && b.IsDirty && !b.IsStale)
            {
                dirty.Add(b);
                dirtyBytes += b.Length;
                largest = Math.Max(largest, b.Length);
            }
        }
        dirty.Sort(static (x, y) => x.Daddr.CompareTo(y.Daddr));
        // The journaled bytes of the buffers, copied while they are locked (the record is written from them), and
        // the contents of one buffer before its verifier ran; both pooled, returned when the commit ends.
        byte[]? staging = dirtyBytes == 0 ? null : ArrayPool<byte>.Shared.Rent(dirtyBytes);
        byte[]? beforeVerifier = largest == 0 ? null : ArrayPool<byte>.Shared.Rent(largest);
        try
        {
            CommitOrderedData();
            var entries = new List<JournalEntry>(data.Count - orderedData + dirty.Count);
            for (int i = orderedData; i < data.Count; i++)
            {
                var (fsbno, bytes, length, _) = data[i];
                entries.Add(new JournalEntry(ByteOf(fsbno), bytes.AsMemory(0, length)));
            }
            int used = 0;
            foreach (BlockBuffer b in dirty)
            {
                used = JournalBuffer(b, staging!, used, beforeVerifier!, entries);
            }
            CommitEntries(entries);
        }
        finally
        {
            if (staging is not null)
            {
                ArrayPool<byte>.Shared.Return(staging);
            }
            if (beforeVerifier is not null)
            {
                ArrayPool<byte>.Shared.Return(beforeVerifier);
            }
        }
    }

    /// <summary>
    /// Ordered data, as the kernel writes a file's new blocks before the commit that maps them: when this transaction's
    /// fresh data (<see cref="WriteRentedData"/>) adds up to <see cref="WriteEngineOptions.OrderedDataMinBytes"/> or
    /// more, the fresh pieces that no journal record since the checkpoint covers are written in place now and the image
    /// is synced, before the record exists; the record then holds only the mapping, not the bytes (a sequential 1 MiB
    /// write is written once instead of twice, and the journal stays small). Whenever the record is durable, so is the
    /// data (the sync came first), and a replay leaves these blocks alone (nothing in the journal covers them: a range
    /// covered by metadata or by journaled data since the checkpoint stays journaled, or a replay would write the
    /// older bytes back over the new ones). A failure here cancels the transaction: the bytes went only to blocks it
    /// allocated or to unwritten ones, which nothing reads yet.
    /// </summary>
    private void CommitOrderedData()
    {
        long threshold = engine.Options.OrderedDataMinBytes;
        if (threshold <= 0 || data.Count == 0)
        {
            return;
        }
        long fresh = 0;
        foreach (var (_, _, length, isFresh) in data)
        {
            if (isFresh)
            {
                fresh += length;
            }
        }
        if (fresh < threshold)
        {
            return;
        }
        // The chosen pieces first (stable order otherwise: the journal keeps the order of the rest). Moving a fresh
        // piece ahead of an earlier piece of the same blocks would change which bytes win, so a piece that overlaps
        // an earlier one stays journaled. One pooled array holds both groups while `data` is still read: the chosen
        // from its front in order, the rest from its back in reverse; nothing is allocated in steady state.
        int n = data.Count;
        var pool = ArrayPool<(ulong Fsbno, byte[] Bytes, int Length, bool Fresh)>.Shared;
        var sorted = pool.Rent(n);
        try
        {
            int chosen = 0, rest = 0;
            long orderedBytes = 0;
            for (int i = 0; i < n; i++)
            {
                var piece = data[i];
                if (piece.Fresh && MayOrder(ByteOf(piece.Fsbno), piece.Length) && !OverlapsEarlier(i))
                {
                    sorted[chosen++] = piece;
                    orderedBytes += piece.Length;
                }
                else
                {
                    sorted[n - 1 - rest++] = piece;
                }
            }
            if (chosen == 0)
            {
                return;
            }
            for (int i = 0; i < chosen; i++)
            {
                WriteEngine.WriteRaw(engine.Disk, ByteOf(sorted[i].Fsbno), sorted[i].Bytes.AsSpan(0, sorted[i].Length));
            }
            engine.Disk.SyncData();
            engine.NoteOrderedData(orderedBytes);
            for (int i = 0; i < chosen; i++)
            {
                data[i] = sorted[i];
            }
            for (int r = 0; r < rest; r++)
            {
                data[chosen + r] = sorted[n - 1 - r];
            }
            orderedData = chosen;
        }
        finally
        {
            pool.Return(sorted, clearArray: true); // it held the transaction's data arrays
        }
    }

    /// <summary>
    /// True when file data may go to [<paramref name="byteOffset"/>, +<paramref name="length"/>) before its record:
    /// no record since the checkpoint holds a sector of it (a replay would write older bytes back), and no free of a
    /// record not yet durable, nor of this transaction, covers it (a busy extent: a power loss before the free is
    /// durable would leave the old owner mapping these bytes). Such data stays journaled, and the write after the
    /// append syncs the journal first where the range is busy.
    /// </summary>
    private bool MayOrder(long byteOffset, long length)
    {
        if (!engine.JournaledSinceCheckpoint.IsUnjournaled(byteOffset, length)
            || engine.Busy.LatestRecordOver(byteOffset, length) > engine.Journal.SyncedEnd)
        {
            return false;
        }
        if (freedExtents is not null)
        {
            long start = byteOffset / 512, end = (byteOffset + length + 511) / 512;
            foreach (var (daddr, lengthBB) in freedExtents)
            {
                if (daddr < end && start < daddr + lengthBB)
                {
                    return false;
                }
            }
        }
        return true;
    }

    /// <summary>True when data piece <paramref name="index"/> shares a byte of the image with an earlier piece.</summary>
    private bool OverlapsEarlier(int index)
    {
        long start = ByteOf(data[index].Fsbno), end = start + data[index].Length;
        for (int i = 0; i < index; i++)
        {
            long s = ByteOf(data[i].Fsbno), e = s + data[i].Length;
            if (s < end && start < e)
            {
                return true;
            }
        }
        return false;
    }

    /// <summary>
    /// Runs the buffer's write verifier and adds what the journal must hold of it to <paramref name="entries"/>,
    /// copied into <paramref name="staging"/> from <paramref name="used"/> on (returns the new end). A buffer
    /// formatted in memory is logged whole (the disk's bytes under its unlogged parts are unknown); any other only
    /// in its dirty 128-byte chunks, as the kernel's buffer log items log a buffer's dirty chunks, plus the chunks
    /// the verifier changed (the CRC). That is enough because the in-memory buffer equals the image plus every
    /// change the journal holds: replaying the records in order puts each chunk to its last logged value, and a
    /// chunk never logged was never changed.
    /// </summary>
    private static int JournalBuffer(BlockBuffer b, byte[] staging, int used, byte[] beforeVerifier, List<JournalEntry> entries)
    {
        long start = b.Daddr * 512;
        if (b.IsFormatted)
        {
            b.Verifier?.PrepareWrite(b);
            b.Span.CopyTo(staging.AsSpan(used));
            entries.Add(new JournalEntry(start, staging.AsMemory(used, b.Length)));
            return used + b.Length;
        }
        if (b.Verifier is { } verifier)
        {
            Span<byte> before = beforeVerifier.AsSpan(0, b.Length);
            b.Span.CopyTo(before);
            verifier.PrepareWrite(b);
            ReadOnlySpan<byte> after = b.Span;
            for (int at = 0; at < b.Length; at += BlockBuffer.DirtyChunkSize)
            {
                if (!b.IsRangeDirty(at, BlockBuffer.DirtyChunkSize)
                    && !after.Slice(at, BlockBuffer.DirtyChunkSize).SequenceEqual(before.Slice(at, BlockBuffer.DirtyChunkSize)))
                {
                    b.MarkDirty(at, BlockBuffer.DirtyChunkSize);
                }
            }
        }
        for (int at = b.NextDirtyRange(0, out int length); at >= 0; at = b.NextDirtyRange(at + length, out length))
        {
            b.Span.Slice(at, length).CopyTo(staging.AsSpan(used));
            entries.Add(new JournalEntry(start + at, staging.AsMemory(used, length)));
            used += length;
        }
        return used;
    }

    private void CommitEntries(List<JournalEntry> entries)
    {
        var summaries = new List<(uint, AgSummary)>(spaces.Count);
        foreach (AgSpace space in spaces.Values)
        {
            if (space.CaptureSummary() is { } summary)
            {
                summaries.Add((space.AgNumber, summary));
            }
        }
        done = true;
        if (entries.Count == 0)
        {
            RunCommittedActions();
            ReleaseAll(commit: true);
            return;
        }
        engine.NoteRecord(entries);
        void Publish()
        {
            foreach (var (agno, summary) in summaries)
            {
                engine.Ag(agno).Publish(summary);
            }
        }
        ReaderWriterLockSlim gate = engine.CommitGate;
        gate.EnterReadLock();
        bool journaled = false;
        try
        {
            long recordEnd = engine.Journal.Append(entries, engine.Options.SyncCommits);
            journaled = true;
            // Noted before the data is written: a block this record freed and its data reuses is covered too.
            int journaledData = data.Count - orderedData;
            engine.JournaledSinceCheckpoint.Note(entries, 0, entries.Count);
            engine.Coverage.Note(entries, journaledData, recordEnd);
            if (freedExtents is not null)
            {
                engine.Busy.Note(freedExtents, recordEnd);
            }
            for (int i = orderedData; i < data.Count; i++)
            {
                var (fsbno, bytes, length, _) = data[i];
                engine.WriteDataInPlace(ByteOf(fsbno), bytes.AsSpan(0, length));
            }
            // JournalBuffer ran every dirty buffer's verifier. The buffers stay in the cache, pinned, until a
            // checkpoint writes them in place after the journal is durable (delayed write-back).
            buffers.CommitPinned();
        }
        catch (Exception e)
        {
            if (journaled)
            {
                engine.Fail($"{Operation}: {e.Message}");
            }
            if (!buffers.IsFinished)
            {
                buffers.Cancel();
            }
            RestoreInodes();
            ReleaseLocks();
            throw;
        }
        finally
        {
            gate.ExitReadLock();
        }
        Publish();
        RunCommittedActions();
        DeliverHooks();
        engine.ApplyInodeCounterDeltas(icountDelta, ifreeDelta);
        ReleaseLocks();
        engine.MaybeCheckpoint();
    }

    private void CopyLoggedInodes()
    {
        if (logged.Count == 0)
        {
            return;
        }
        logged.Sort(static (a, b) => a.Ino.CompareTo(b.Ino)); // ascending ino = ascending daddr within the fs
        int isize = Geometry.InodeSize;
        Span<byte> before = stackalloc byte[isize];
        foreach (IncoreInode inode in logged)
        {
            var (daddr, offset) = engine.InodeLocation(inode.Ino);
            BlockBuffer cluster = buffers.Read(engine.Disk, daddr, Geometry.BasicBlocksPerBlock, null);
            Span<byte> slot = cluster.Span.Slice(offset, isize);
            slot.CopyTo(before);
            inode.Core.CopyTo(slot);
            XfsCrc.Update(slot, Dinode.CrcOffset);
            inode.Core.AsSpan(Dinode.CrcOffset, 4).Clear();
            slot.Slice(Dinode.CrcOffset, 4).CopyTo(inode.Core.AsSpan(Dinode.CrcOffset));
            // Only the 128-byte chunks of the core that changed (a chmod: the one with the mode, the times and the
            // CRC; an append: that one and the first of the data fork), as the kernel logs an inode's core and only
            // the forks that changed.
            for (int at = 0; at < isize; at += BlockBuffer.DirtyChunkSize)
            {
                if (!slot.Slice(at, BlockBuffer.DirtyChunkSize).SequenceEqual(before.Slice(at, BlockBuffer.DirtyChunkSize)))
                {
                    buffers.LogRange(cluster, offset + at, BlockBuffer.DirtyChunkSize);
                }
            }
        }
    }

    private void DeliverHooks()
    {
        if (directoryQueue is not null)
        {
            foreach (DirectoryUpdate update in directoryQueue)
            {
                engine.DirectoryHooks.Deliver(update);
            }
            directoryQueue = null;
        }
        if (hookQueue is null)
        {
            return;
        }
        foreach (RmapUpdate update in hookQueue)
        {
            engine.Ag(update.AgNumber).Deliver(update);
        }
        hookQueue = null;
    }

    /// <summary>Cancels: nothing of this transaction remains, on disk or in memory.</summary>
    internal void Cancel()
    {
        if (done)
        {
            return;
        }
        done = true;
        ReleaseAll(commit: false);
    }

    private void ReleaseAll(bool commit)
    {
        try
        {
            if (commit)
            {
                buffers.Commit();
            }
            else
            {
                buffers.Cancel();
                RestoreInodes();
            }
        }
        finally
        {
            hookQueue = null;
            directoryQueue = null;
            committedActions = null;
            ReleaseLocks();
        }
    }

    private void RestoreInodes()
    {
        foreach (var (inode, snapshot) in snapshots)
        {
            snapshot.CopyTo(inode.Core, 0);
        }
        foreach (IncoreInode inode in loadedFromTransaction)
        {
            engine.ForgetInode(inode);
        }
    }

    private void ReleaseLocks()
    {
        ReturnData(); // every end of a transaction (commit, failed commit, cancel) comes through here
        for (int i = heldAgs.Count - 1; i >= 0; i--)
        {
            engine.Ag(heldAgs[i]).Lock.Exit();
        }
        heldAgs.Clear();
        for (int i = heldInodes.Count - 1; i >= 0; i--)
        {
            heldInodes[i].Lock.Exit();
        }
        heldInodes.Clear();
        snapshots.Clear();
    }

    /// <summary>Cancels the transaction unless it finished (the engine's clean-up path).</summary>
    internal void Dispose() => Cancel();

    private void ThrowIfDone()
    {
        if (done)
        {
            throw new InvalidOperationException($"{Operation}: the transaction is already committed or cancelled");
        }
    }
}
