using System.Diagnostics;
using System.Runtime.CompilerServices;
using Xfbtree.Btree;
using Xfbtree.Buffers;
using Xfbtree.Storage;

namespace Xfbtree.InMemory;

/// <summary>
/// Blocks of an in-memory btree inside one partition of an <see cref="Xfile"/>: block <c>bno</c> is the page at
/// <c>partitionStart + bno * PageSize</c>. Like upstream's xmbuf, buffers are the xfile pages themselves
/// (direct mapped, zero copy, no I/O): a block's page is committed before it is handed out and its address kept
/// in a table, so reading a block is one table load. New blocks come from pages committed ahead in chunks (one
/// fallocate or populate per chunk of up to 2 MiB, about 1/64 of the tree, within the xfile's commit limit), so
/// most allocations make no system call. Freed blocks' pages are discarded (memory returned) and
/// their numbers reused. Block memory is trusted like DRAM (no CRC, no verify on read); the structure verifier
/// runs on every dirty block at <see cref="Commit"/>.
/// </summary>
/// <remarks>
/// No managed allocation after construction, growth included: the block table (page address per block, or the
/// free-list link of a freed block, and the block's version) and the dirty flags live in native memory grown by
/// doubling (their bytes are in <see cref="TableBytes"/>), the free list is threaded through the table, and pages are
/// committed without per-page pins (the store holds one reference on the xfile's mapping instead).
/// <para>
/// Optimistic readers (<see cref="BtreeCursor{TOps}"/>'s concurrent lookups), as in optimistic lock coupling: every
/// block has a version, kept beside its page address in the table (the XFS block format has no spare field). The one
/// writer brackets each change with <see cref="BeginWriteOperation"/> / <see cref="EndWriteOperation"/>; before it
/// changes a block (<see cref="BeginChange"/>, called by the engine before the first write to it), allocates or frees
/// one, it sets the block's version to the operation's id, an odd number, with a full fence; when the operation ends,
/// every block it stamped gets the next even number. A reader notes a block's version before it reads the block: odd
/// means a write is changing it (the reader waits for that block's version to move and starts again); afterwards it
/// accepts what it read only when every version it noted is unchanged (and the root is the one it started from). A
/// reader thus waits only for a write that changes a block it reads, and writes nothing.
/// The table never moves under a reader: growth copies it to a larger one and keeps the old one until
/// <see cref="Dispose"/> (the old ones add up to less than the current one); readers check versions in the current
/// one. Freed pages are discarded at once: a reader still looking at one reads zeros or the block's next use, and the
/// freed block's changed version rejects either; so freed blocks are reused at once, with no epochs.
/// </para>
/// <para>Threads: one writer at a time (the owner's lock) and any number of optimistic readers as above; everything
/// else (allocation, commit, dispose) belongs to the writer. Not shareable with another process: the table and the
/// versions live in this process's memory.</para>
/// </remarks>
public sealed unsafe class XfbtreeBlockStore : BtreeBlockStore, IDisposable
{
    readonly Xfile _xfile;
    readonly long _start;
    readonly long _maxBlocks;
    readonly int _pageSize;
    readonly byte* _directBase;          // the partition's first page when the xfile is one fixed mapping (DirectBlockBase), else null
    // Per block ever handed out (0.._highest-1): Page > 0 the page address of an allocated block; <= 0 a free block,
    // -(next free block + 1) (0 = end of the free list); Version: the id of the last write operation that touched it.
    // _table[-1] is the table's header: its Version is the table's capacity (a reader bounds its index by it).
    BlockSlot* _table;
    ReaderShared _readers;               // what readers read on every lookup, on cache lines of its own (see ReaderShared)
    BlockSlot* _retired;                 // earlier tables, kept for readers that may still hold them (freed at Dispose)
    int _retiredCount;
    long _operation;                     // the running write operation's id (odd), or the last one's + 1 (even) between them
    long* _stamped;                      // blocks stamped by the running operation (native, grown by doubling)
    long* _stampedOld;                   // their versions before the operation (with sidecars: may the sidecar be patched?)
    int* _entriesFrom;                   // with sidecars, per block: the lowest byte offset of an entry change in the running operation
    long* _refresh;                      // leaves whose sidecars a batch call rebuilds at its end (native, grown by doubling)
    int _refreshCount, _refreshCapacity;
    int _batchDepth;                     // inside BeginSidecarBatch / EndSidecarBatch
    const byte QueuedForRefresh = 4;     // _dirtyFlag bit: the leaf is in _refresh
    bool _prefixesUnordered;             // a rebuild found the prefixes out of order (TakePrefixOrderFailure)
    int _stampedCount, _stampedCapacity;
    byte* _dirtyFlag;                    // 1 = dirty, 2 = stale (freed) in the current transaction
    long _capacity;                      // entries of _table and _dirtyFlag
    long _highest;                       // blocks 0.._highest-1 have been handed out at least once
    long _committedEnd;                  // blocks _highest.._committedEnd-1: pages committed ahead, not handed out yet
    long _freeHead = -1;
    long _freeCount;
    readonly List<long> _dirty = new();
    bool _disposed;
    BtreeSidecars? _sidecars;            // key prefixes beside the blocks (EnableSidecars), rebuilt at the end of each write operation

    const long InitialCapacity = 64;
    /// <summary>Most bytes committed ahead at once (one 2 MiB huge page; chunks end on a 2 MiB boundary of the xfile).</summary>
    internal const long CommitAheadBytes = 2L << 20;
    /// <summary>Fewest pages committed ahead at once.</summary>
    internal const long CommitAheadMinPages = 16;

    /// <summary>A store over [<paramref name="partitionStart"/>, +<paramref name="partitionLength"/>) of <paramref name="xfile"/>.</summary>
    public XfbtreeBlockStore(Xfile xfile, long partitionStart = 0, long partitionLength = -1)
    {
        ArgumentNullException.ThrowIfNull(xfile);
        _xfile = xfile;
        _pageSize = xfile.PageSize;
        if (partitionStart < 0 || partitionStart % _pageSize != 0) throw new ArgumentOutOfRangeException(nameof(partitionStart), "partition start must be page aligned");
        if (partitionLength < 0) partitionLength = xfile.MaxSize - partitionStart;
        if (partitionStart + partitionLength > xfile.MaxSize) throw new ArgumentOutOfRangeException(nameof(partitionLength), "partition beyond the xfile");
        _start = partitionStart;
        _maxBlocks = partitionLength / _pageSize;
        byte* mapped = xfile.ContiguousBase;
        _directBase = mapped == null ? null : mapped + partitionStart;
        _capacity = Math.Min(InitialCapacity, Math.Max(1, _maxBlocks));
        _table = AllocateTable(_capacity);
        _readers.Table = (nint)_table;
        _dirtyFlag = (byte*)System.Runtime.InteropServices.NativeMemory.AllocZeroed((nuint)_capacity);
        // Doubling from 64 entries reaches any partition in fewer than 64 growths.
        _retired = (BlockSlot*)System.Runtime.InteropServices.NativeMemory.AllocZeroed((nuint)(MaxRetiredTables * sizeof(BlockSlot)));
        _stampedCapacity = 64;
        _stamped = (long*)System.Runtime.InteropServices.NativeMemory.Alloc((nuint)(_stampedCapacity * sizeof(long)));
        _stampedOld = (long*)System.Runtime.InteropServices.NativeMemory.Alloc((nuint)(_stampedCapacity * sizeof(long)));
        xfile.RetainMapping();
    }

    /// <summary>Frees the native tables if the owner never disposed the store (the xfile reference is the xfile's to drop).</summary>
    ~XfbtreeBlockStore() => FreeTables();

    /// <summary>The xfile that holds the blocks.</summary>
    public Xfile Xfile => _xfile;
    /// <summary>Byte offset of this tree's partition in the xfile.</summary>
    public long PartitionStart => _start;
    /// <summary>Largest number of blocks the partition can hold.</summary>
    public long MaxBlocks => _maxBlocks;
    /// <inheritdoc />
    public override int BlockSize => _pageSize;
    /// <inheritdoc />
    public override bool ChecksCrc => false;
    /// <summary>Holding a block is a no-op here (direct-mapped pages, no locks).</summary>
    public override bool PathsMayStayHeld => true;
    /// <summary>Blocks currently allocated.</summary>
    public long LiveBlocks => _highest - _freeCount;
    /// <summary>Pages committed ahead for the next new blocks (counted by the xfile's commit limit and BytesUsed, not live yet).</summary>
    public long CommittedAheadBlocks => _committedEnd - _highest;
    /// <summary>Bytes of the xfile this store holds: its live blocks and the pages committed ahead (freed blocks' pages are discarded).</summary>
    public long HeldBytes => (LiveBlocks + CommittedAheadBlocks) * _pageSize;
    /// <summary>Native bytes of the block table and dirty flags (bookkeeping outside the xfile and the managed heap).</summary>
    public long TableBytes => _capacity * (sizeof(BlockSlot) + 1) + (_sidecars is null ? 0 : _capacity * sizeof(int) + _sidecars.CommittedBytes);
    /// <summary>Verifier used at commit (set by the owning tree).</summary>
    public BtreeBlockVerifier? CommitVerifier { get; set; }
    /// <summary>Record dirty blocks for <see cref="Commit"/> (off for trees that never commit, e.g. the typed map).</summary>
    public bool TrackDirty { get; set; } = true;

    /// <inheritdoc />
    public override long PointerToDaddr(long pointer) => pointer * (_pageSize / 512);
    /// <inheritdoc />
    public override bool IsValidPointer(long pointer) => (ulong)pointer < (ulong)_highest && _table[pointer].Page > 0;

    /// <inheritdoc />
    public override BtreeBlockRef Read(long pointer, BtreeBlockVerifier verifier)
    {
        nint page;
        if ((ulong)pointer >= (ulong)_highest || (page = _table[pointer].Page) <= 0)
            throw new CorruptionException(verifier.Name, pointer, "pointer to an unallocated in-memory block");
        return new BtreeBlockRef(null, (byte*)page, pointer);
    }

    /// <inheritdoc />
    public override BtreeBlockRef GetNew(long pointer, BtreeBlockVerifier verifier) => Read(pointer, verifier);

    internal override byte* PeekAddressForPrefetch(long pointer)
    {
        if ((ulong)pointer >= (ulong)_highest) return null;
        if (_directBase == null) return _table[pointer].Page > 0 ? (byte*)_table[pointer].Page : null;
        // The address without waiting for the table entry, which the read after the prefetch loads: ask for it too.
        if (System.Runtime.Intrinsics.X86.Sse.IsSupported) System.Runtime.Intrinsics.X86.Sse.Prefetch0(_table + pointer);
        return _directBase + pointer * _pageSize;
    }

    internal override byte* DirectBlockBase => _directBase;

    /// <inheritdoc />
    internal override BtreeSidecars? Sidecars => _sidecars;

    /// <summary>
    /// Keeps a sidecar of key prefixes beside every block from now on (before any cursor of the tree is made: cursors
    /// take the sidecars when they are made). The store owns them from here (disposed with it).
    /// </summary>
    internal void EnableSidecars(BtreeSidecars sidecars)
    {
        if (_sidecars != null) throw new InvalidOperationException("the store already has sidecars");
        _entriesFrom = (int*)System.Runtime.InteropServices.NativeMemory.Alloc((nuint)(_capacity * sizeof(int)));
        new Span<int>(_entriesFrom, checked((int)_capacity)).Clear();
        _sidecars = sidecars;
        ReserveSidecars(Math.Max(_highest, _committedEnd));
    }

    /// <summary>Commits the sidecars of blocks below <paramref name="blocks"/>; when there is no memory for them, those blocks just go without (readers then search the blocks).</summary>
    void ReserveSidecars(long blocks)
    {
        try { _sidecars?.Reserve(blocks); }
        catch (IOException)
        {
            // Sidecars are an optimisation: a block without one is searched directly.
        }
    }
    /// <inheritdoc />
    public override void Release(in BtreeBlockRef block) { }

    /// <inheritdoc />
    public override void MarkDirty(in BtreeBlockRef block) => MarkDirty(block, 0, _pageSize);

    /// <inheritdoc />
    /// <remarks>With sidecars, the lowest entry offset changed decides how much of the block's sidecar is rebuilt.</remarks>
    public override void MarkDirty(in BtreeBlockRef block, int offset, int length)
    {
        long p = block.Pointer;
        // A block changed inside a write operation must have been stamped before the change (BeginChange): a reader
        // that read it meanwhile would otherwise accept a half-written block. This catches an engine path that forgot.
        if ((_operation & 1) != 0 && _table[p].Version != _operation)
            throw new InvalidOperationException($"in-memory block {p} was changed without BeginChange before the change");
        // Header-only changes (numrecs, siblings) leave the entries' samples as they were.
        if (_entriesFrom != null && offset + length > _sidecars!.HeaderSize && offset < _entriesFrom[p]) _entriesFrom[p] = offset;
        if (!TrackDirty) return;
        if (_dirtyFlag[p] == 0) _dirty.Add(p);
        _dirtyFlag[p] |= 1;
    }

    /// <inheritdoc />
    public override void MarkStale(in BtreeBlockRef block)
    {
        if (!TrackDirty) return;
        long p = block.Pointer;
        if (_dirtyFlag[p] == 0) _dirty.Add(p);
        _dirtyFlag[p] |= 2;
    }

    /// <summary>Stamps a held block before the engine's first change to it in this write operation (see the class remarks).</summary>
    public override void BeginChange(in BtreeBlockRef block) => Stamp(block.Pointer);

    /// <summary>
    /// Sets block <paramref name="p"/>'s version to the running operation's id (once per operation) with a full fence,
    /// so the odd version is visible before any change to the block; the operation's end makes it even. Outside an
    /// operation (building the empty tree, or a tree nobody reads concurrently) the version just moves to a new even
    /// number.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    void Stamp(long p)
    {
        ref long version = ref _table[p].Version;
        if ((_operation & 1) == 0)
        {
            Volatile.Write(ref version, (Math.Max(version, _operation) + 2) & ~1L);
            return;
        }
        if (version == _operation) return;
        long old = version;
        Interlocked.Exchange(ref version, _operation);
        if (_stampedCount == _stampedCapacity) GrowStamped();
        if (_entriesFrom != null) _entriesFrom[p] = int.MaxValue;
        _stampedOld[_stampedCount] = old;
        _stamped[_stampedCount++] = p;
    }

    void GrowStamped()
    {
        _stampedCapacity *= 2;
        _stamped = (long*)System.Runtime.InteropServices.NativeMemory.Realloc(_stamped, (nuint)(_stampedCapacity * sizeof(long)));
        _stampedOld = (long*)System.Runtime.InteropServices.NativeMemory.Realloc(_stampedOld, (nuint)(_stampedCapacity * sizeof(long)));
    }

    /// <summary>
    /// Starts a write operation (the caller is the only writer: the map's write lock). Until
    /// <see cref="EndWriteOperation"/>, every block changed, allocated or freed is stamped with this operation's id.
    /// </summary>
    internal void BeginWriteOperation()
    {
        Debug.Assert((_operation & 1) == 0, "write operations do not nest");
        _operation++;
    }

    /// <summary>Ends the write operation: every block it stamped gets the next even version (readers may use them again).</summary>
    internal void EndWriteOperation()
    {
        Debug.Assert((_operation & 1) == 1, "no write operation to end");
        long done = _operation + 1;
        var table = _table;
        bool unordered = false;
        if (_sidecars is { Usable: true } sidecars)
        {
            // While the blocks' versions are still odd: readers accept a sidecar only with the version it was built for.
            // A leaf changes on almost every write, and rebuilding its sidecar each time cost a single insert a fifth
            // of its time: a single write leaves the leaf's sidecar stale (readers search the leaf itself), a batch
            // call rebuilds the sidecars of the leaves it changed once, at its end (EndSidecarBatch).
            for (int i = 0; i < _stampedCount; i++)
            {
                long p = _stamped[i];
                nint page = table[p].Page;
                if (page <= 0) continue;
                if (((byte*)page)[4] == 0 && ((byte*)page)[5] == 0)
                {
                    if (_batchDepth > 0 && (_dirtyFlag[p] & QueuedForRefresh) == 0) QueueRefresh(p);
                    continue;
                }
                if (!sidecars.Rebuild(p, (byte*)page, done, _stampedOld[i], _entriesFrom[p])) unordered = true;
            }
        }
        for (int i = 0; i < _stampedCount; i++) Volatile.Write(ref table[_stamped[i]].Version, done);
        _stampedCount = 0;
        if (_stampedCapacity > 4096)
        {
            // A bulk load or a clear stamped many blocks: do not keep its list's memory.
            _stampedCapacity = 64;
            _stamped = (long*)System.Runtime.InteropServices.NativeMemory.Realloc(_stamped, (nuint)(_stampedCapacity * sizeof(long)));
            _stampedOld = (long*)System.Runtime.InteropServices.NativeMemory.Realloc(_stampedOld, (nuint)(_stampedCapacity * sizeof(long)));
        }
        _operation = done;
        if (unordered) _prefixesUnordered = true;
        if (_refreshCount >= RefreshQueueLimit) RefreshQueued();
    }

    /// <summary>
    /// True (once) when a sidecar rebuild found the prefixes out of order since the last call: the owner throws after
    /// its write completed (see <c>IRecordKeyPrefix</c>); the sidecars are no longer used.
    /// </summary>
    internal bool TakePrefixOrderFailure()
    {
        bool failed = _prefixesUnordered;
        _prefixesUnordered = false;
        return failed;
    }

    void QueueRefresh(long p)
    {
        if (_refreshCount == _refreshCapacity)
        {
            _refreshCapacity = Math.Max(64, _refreshCapacity * 2);
            _refresh = (long*)System.Runtime.InteropServices.NativeMemory.Realloc(_refresh, (nuint)(_refreshCapacity * sizeof(long)));
        }
        _dirtyFlag[p] |= QueuedForRefresh;
        _refresh[_refreshCount++] = p;
    }

    /// <summary>A batch call starts (under the owner's write lock, outside any write operation): the leaves its operations change get their sidecars rebuilt at <see cref="EndSidecarBatch"/>.</summary>
    internal void BeginSidecarBatch() => _batchDepth++;

    /// <summary>
    /// The batch call ends (under the write lock, outside any write operation): rebuilds the sidecar of every leaf it
    /// changed, for the leaf's current (even) version. The samples are written before the version, so a reader that sees
    /// the sidecar carry the version it noted also sees the samples of that version.
    /// </summary>
    internal void EndSidecarBatch()
    {
        Debug.Assert((_operation & 1) == 0, "a batch ends outside a write operation");
        if (--_batchDepth > 0) return;
        RefreshQueued();
        if (_refreshCapacity > 4096)
        {
            _refreshCapacity = 0;
            System.Runtime.InteropServices.NativeMemory.Free(_refresh);
            _refresh = null;
        }
    }

    /// <summary>
    /// Most leaves queued for a sidecar rebuild: past it the queue is rebuilt at the end of the write operation that
    /// filled it, so a batch call's bookkeeping stays bounded (512 KiB) whatever the tree's size.
    /// </summary>
    internal const int MaxQueuedRefreshes = 1 << 16;

    /// <summary>The queue's bound in effect (<see cref="MaxQueuedRefreshes"/>; tests set a small one to reach it).</summary>
    internal int RefreshQueueLimit { get; set; } = MaxQueuedRefreshes;

    /// <summary>
    /// Rebuilds the sidecar of every queued leaf for its current (even) version (under the write lock, outside a write
    /// operation). The leaves were written at any time during the batch call and are mostly out of cache by now: each
    /// leaf's lines and its sidecar's are prefetched two leaves ahead, so the rebuilds wait for memory together.
    /// </summary>
    void RefreshQueued()
    {
        bool unordered = false;
        var table = _table;
        const int Ahead = 2;
        for (int i = 0; i < Math.Min(Ahead, _refreshCount); i++) PrefetchForRefresh(_refresh[i]);
        for (int i = 0; i < _refreshCount; i++)
        {
            if (i + Ahead < _refreshCount) PrefetchForRefresh(_refresh[i + Ahead]);
            long p = _refresh[i];
            _dirtyFlag[p] &= unchecked((byte)~QueuedForRefresh);
            nint page = table[p].Page;
            long version = table[p].Version;
            if (page <= 0 || (version & 1) != 0 || _sidecars is not { Usable: true } sidecars) continue;
            if (!sidecars.Rebuild(p, (byte*)page, version, previousVersion: -1, entriesFrom: 0)) unordered = true;
        }
        _refreshCount = 0;
        if (unordered) _prefixesUnordered = true;
    }

    /// <summary>Asks for the lines a sidecar rebuild of block <paramref name="p"/> reads (its whole page) and writes (its sidecar).</summary>
    void PrefetchForRefresh(long p)
    {
        if (!System.Runtime.Intrinsics.X86.Sse.IsSupported || _sidecars is null || (ulong)p >= (ulong)_sidecars.ReservedBlocks) return;
        nint page = _table[p].Page;
        if (page <= 0) return;
        // Every line of a 4 KiB leaf holds a sample (every third entry); larger blocks are sampled sparsely.
        int bytes = _pageSize <= 4096 ? _pageSize : 64;
        for (int offset = 0; offset < bytes; offset += 64) System.Runtime.Intrinsics.X86.Sse.Prefetch0((byte*)page + offset);
        byte* sc = _sidecars.At(p);
        for (int offset = 0; offset < BtreeSidecars.Stride; offset += 64) System.Runtime.Intrinsics.X86.Sse.Prefetch0(sc + offset);
    }

    /// <summary>
    /// For tests and the fuzz target (under the owner's write lock): every sidecar that carries its block's current
    /// version is compared with one built from the block now; returns how many differ, and in
    /// <paramref name="current"/> how many carry their block's version (0 when the store has no sidecars).
    /// </summary>
    internal int CheckSidecars(out long current)
    {
        current = 0;
        if (_sidecars is null) return 0;
        int wrong = 0;
        long* expected = stackalloc long[BtreeSidecars.MaxSamples];
        for (long p = 0; p < _highest; p++)
        {
            nint page = _table[p].Page;
            if (page <= 0 || (ulong)p >= (ulong)_sidecars.ReservedBlocks) continue;
            byte* sc = _sidecars.At(p);
            if (*(long*)sc != _table[p].Version) continue;
            current++;
            if (!_sidecars.Describes(sc, (byte*)page, expected)) wrong++;
        }
        return wrong;
    }

    /// <summary>What an optimistic reader needs: the current table (never freed before the store) and the write sequence.</summary>
    internal override bool TryGetOptimisticTable(out OptimisticBlockTable table)
    {
        table = new OptimisticBlockTable(this);
        return Volatile.Read(ref _readers.Disposed) == 0;
    }

    /// <summary>The current table (published with a release write on growth).</summary>
    internal BlockSlot* CurrentTable => (BlockSlot*)Volatile.Read(ref _readers.Table);
    /// <summary>Blocks handed out so far (an index at or above it names no block).</summary>
    internal long HighestVolatile => Volatile.Read(ref _readers.Highest);

    /// <remarks>
    /// A new block (past the high-water mark) comes from pages committed ahead in chunks (<see cref="CommitAhead"/>), so
    /// most allocations are a table bump with no system call; a reused block's page was discarded when it was freed
    /// and is committed again on its own.
    /// </remarks>
    public override long AllocateBlock()
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        long bno;
        byte* page;
        if (_freeHead >= 0)
        {
            bno = _freeHead;
            page = _xfile.CommitPageUnpinned(_start + bno * _pageSize);   // throws with the block still on the free list
            _freeHead = -(long)_table[bno].Page - 1;
            _freeCount--;
        }
        else
        {
            if (_highest >= _maxBlocks) throw new XfileFullException($"in-memory btree partition full ({_maxBlocks} blocks)");
            bno = _highest;
            if (bno >= _capacity) Grow(bno + 1);
            if (bno >= _committedEnd) CommitAhead(bno);    // throws with nothing changed
            _highest++;
            Volatile.Write(ref _readers.Highest, _highest);
            // Committed by CommitAhead under the store's RetainMapping: no lease or commit check needed.
            page = _xfile.PageAddressUnchecked(_start + bno * _pageSize);
        }
        Stamp(bno);
        if (_entriesFrom != null) _entriesFrom[bno] = 0;   // a new block: its sidecar is built whole
        Volatile.Write(ref _table[bno].Page, (nint)page);
        // No clear here: a fresh page reads as zeros (committed by fallocate or populated anonymous memory), a reused
        // block's page was discarded when it was freed, and every caller formats the block anyway (the engine's
        // InitializeBlock clears it whole, the bulk loader writes the header and clears the unused tail); clearing
        // 4 KiB here again cost a sixth of a 10 M-record bulk load.
        return bno;
    }

    /// <summary>
    /// Commits the pages of blocks [<paramref name="bno"/>, end) in one call: about 1/64 of the blocks handed out
    /// so far (so the bytes held ahead stay under 2 % of the tree) (at least <see cref="CommitAheadMinPages"/>, at most <see cref="CommitAheadBytes"/>), ending on a 2 MiB
    /// boundary of the xfile so huge pages fill whole. Never commits past the commit limit's headroom, and falls back
    /// to the one page needed when the chunk cannot be had, so running out is reported exactly as before (an
    /// <see cref="IOException"/> for the page asked for, never SIGBUS).
    /// </summary>
    void CommitAhead(long bno)
    {
        long want = Math.Clamp(_highest / 64, CommitAheadMinPages, CommitAheadBytes / _pageSize);
        long end = bno + want;
        // End on a 2 MiB boundary of the xfile when that still commits something (whole huge pages per chunk).
        long alignedEnd = ((_start + end * _pageSize) & ~(CommitAheadBytes - 1)) - _start;
        if (alignedEnd > (long)bno * _pageSize) end = alignedEnd / _pageSize;
        end = Math.Min(end, _maxBlocks);
        end = Math.Min(end, bno + Math.Max(1, _xfile.CommitHeadroomPages));
        if (end - bno > 1)
        {
            try
            {
                _xfile.Reserve(_start + bno * _pageSize, (end - bno) * _pageSize);
                _committedEnd = end;
                ReserveSidecars(end);
                return;
            }
            catch (IOException)
            {
                // Not enough for the chunk (another partition took the headroom, ENOSPC, ENOMEM): try the one page.
            }
        }
        _xfile.Reserve(_start + bno * _pageSize, _pageSize);
        _committedEnd = bno + 1;
        ReserveSidecars(_committedEnd);
    }

    const int MaxRetiredTables = 64;

    static BlockSlot* AllocateTable(long capacity)
    {
        var header = (BlockSlot*)System.Runtime.InteropServices.NativeMemory.AllocZeroed((nuint)((capacity + 1) * sizeof(BlockSlot)));
        header->Version = capacity;
        return header + 1;
    }

    /// <summary>
    /// A larger table: the entries are copied and the new table published; the old one stays allocated (a reader may
    /// be reading it) until Dispose. A reader on the old table sees pages that do not move and versions that were
    /// current when copied; the versions it checks at the end are read from the current table.
    /// </summary>
    void Grow(long needed)
    {
        long capacity = Math.Min(Math.Max(_capacity * 2, needed), _maxBlocks);
        if (_retiredCount >= MaxRetiredTables) throw new InvalidOperationException("block table grew more often than doubling allows");
        var table = AllocateTable(capacity);
        System.Runtime.InteropServices.NativeMemory.Copy(_table, table, (nuint)(_capacity * sizeof(BlockSlot)));
        _retired[_retiredCount++].Page = (nint)(_table - 1);
        _table = table;
        Volatile.Write(ref _readers.Table, (nint)table);
        _dirtyFlag = (byte*)System.Runtime.InteropServices.NativeMemory.Realloc(_dirtyFlag, (nuint)capacity);
        System.Runtime.InteropServices.NativeMemory.Clear(_dirtyFlag + _capacity, (nuint)(capacity - _capacity));
        if (_entriesFrom != null)
        {
            _entriesFrom = (int*)System.Runtime.InteropServices.NativeMemory.Realloc(_entriesFrom, (nuint)(capacity * sizeof(int)));
            System.Runtime.InteropServices.NativeMemory.Clear(_entriesFrom + _capacity, (nuint)((capacity - _capacity) * sizeof(int)));
        }
        _capacity = capacity;
    }

    /// <inheritdoc />
    public override void FreeBlock(long pointer)
    {
        if (!IsValidPointer(pointer)) throw new InvalidOperationException($"free of unallocated in-memory block {pointer}");
        long offset = _start + pointer * _pageSize;
        Stamp(pointer);
        Volatile.Write(ref _table[pointer].Page, (nint)(-(_freeHead + 1)));
        _freeHead = pointer;
        _freeCount++;
        _xfile.Discard(offset, _pageSize);
    }

    /// <summary>
    /// Commit: runs the structure verifier over every block dirtied since the last commit or cancel (freed
    /// blocks were already discarded) and forgets them. Throws <see cref="CorruptionException"/> for the first
    /// bad block after checking them all.
    /// </summary>
    public void Commit()
    {
        CorruptionException? first = null;
        foreach (long p in _dirty)
        {
            byte flags = _dirtyFlag[p];
            _dirtyFlag[p] = 0;
            if ((flags & 2) != 0 || _table[p].Page <= 0 || CommitVerifier is null) continue;
            try { CommitVerifier.Verify(new ReadOnlySpan<byte>((byte*)_table[p].Page, _pageSize), PointerToDaddr(p)); }
            catch (CorruptionException e) { first ??= e; }
        }
        _dirty.Clear();
        if (first != null) throw first;
    }

    /// <summary>Cancel: forgets the dirty set. Nothing is undone (as upstream): the tree keeps every change.</summary>
    public void Cancel()
    {
        foreach (long p in _dirty) _dirtyFlag[p] = 0;
        _dirty.Clear();
    }

    /// <summary>Discards the partition's memory, frees the tables and drops the store's reference on the xfile mapping.</summary>
    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        Volatile.Write(ref _readers.Disposed, 1);
        long used = Math.Max(_highest, _committedEnd) * _pageSize;
        _highest = 0;
        _readers.Highest = 0;
        _committedEnd = 0;
        _freeHead = -1;
        _freeCount = 0;
        _dirty.Clear();
        try
        {
            if (used > 0) _xfile.Discard(_start, used);
        }
        catch (ObjectDisposedException)
        {
            // The xfile went first: its memory goes when the mapping does (below, with the last reference).
        }
        finally
        {
            FreeTables();
            _sidecars?.Dispose();
            _xfile.ReleaseMapping();
            GC.SuppressFinalize(this);
        }
    }

    void FreeTables()
    {
        if (_table != null) System.Runtime.InteropServices.NativeMemory.Free(_table - 1);
        for (int i = 0; i < _retiredCount; i++) System.Runtime.InteropServices.NativeMemory.Free((void*)_retired[i].Page);
        System.Runtime.InteropServices.NativeMemory.Free(_retired);
        System.Runtime.InteropServices.NativeMemory.Free(_dirtyFlag);
        System.Runtime.InteropServices.NativeMemory.Free(_stamped);
        System.Runtime.InteropServices.NativeMemory.Free(_stampedOld);
        System.Runtime.InteropServices.NativeMemory.Free(_entriesFrom);
        System.Runtime.InteropServices.NativeMemory.Free(_refresh);
        _refresh = null;
        _refreshCount = _refreshCapacity = 0;
        _table = null;
        _stampedOld = null;
        _entriesFrom = null;
        _readers.Table = 0;
        _retired = null;
        _retiredCount = 0;
        _stamped = null;
        _dirtyFlag = null;
        _capacity = 0;
    }
}

/// <summary>
/// The fields of a <see cref="XfbtreeBlockStore"/> that concurrent readers load on every lookup (the current table, the
/// blocks handed out, disposed), with a cache line of padding on each side. The writer changes the store's other
/// fields on every write operation (the operation id, the stamped list); on a shared line, each of those writes would
/// cost every reader's next lookup a cache miss to the writer's core. The writer writes these only when the table
/// grows, a block past the high-water mark is handed out, or the store is disposed.
/// </summary>
[System.Runtime.InteropServices.StructLayout(System.Runtime.InteropServices.LayoutKind.Explicit, Size = 192)]
internal struct ReaderShared
{
    [System.Runtime.InteropServices.FieldOffset(64)] internal nint Table;
    [System.Runtime.InteropServices.FieldOffset(72)] internal long Highest;
    [System.Runtime.InteropServices.FieldOffset(80)] internal int Disposed;
}
