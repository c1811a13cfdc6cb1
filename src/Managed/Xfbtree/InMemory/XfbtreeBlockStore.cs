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
/// free-list link of a freed block) and the dirty flags live in native memory grown by doubling (their bytes are
/// in <see cref="TableBytes"/>), the free list is threaded through the table, and pages are committed without
/// per-page pins (the store holds one reference on the xfile's mapping instead).
/// </remarks>
public sealed unsafe class XfbtreeBlockStore : BtreeBlockStore, IDisposable
{
    readonly Xfile _xfile;
    readonly long _start;
    readonly long _maxBlocks;
    readonly int _pageSize;
    // Per block ever handed out (0.._highest-1): > 0 the page address of an allocated block; <= 0 a free block,
    // -(next free block + 1) (0 = end of the free list).
    nint* _table;
    byte* _dirtyFlag;                    // 1 = dirty, 2 = stale (freed) in the current transaction
    long _capacity;                      // entries of _table and _dirtyFlag
    long _highest;                       // blocks 0.._highest-1 have been handed out at least once
    long _committedEnd;                  // blocks _highest.._committedEnd-1: pages committed ahead, not handed out yet
    long _freeHead = -1;
    long _freeCount;
    readonly List<long> _dirty = new();
    bool _disposed;

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
        _capacity = Math.Min(InitialCapacity, Math.Max(1, _maxBlocks));
        _table = (nint*)System.Runtime.InteropServices.NativeMemory.AllocZeroed((nuint)(_capacity * sizeof(nint)));
        _dirtyFlag = (byte*)System.Runtime.InteropServices.NativeMemory.AllocZeroed((nuint)_capacity);
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
    public long TableBytes => _capacity * (sizeof(nint) + 1);
    /// <summary>Verifier used at commit (set by the owning tree).</summary>
    public BtreeBlockVerifier? CommitVerifier { get; set; }
    /// <summary>Record dirty blocks for <see cref="Commit"/> (off for trees that never commit, e.g. the typed map).</summary>
    public bool TrackDirty { get; set; } = true;

    /// <inheritdoc />
    public override long PointerToDaddr(long pointer) => pointer * (_pageSize / 512);
    /// <inheritdoc />
    public override bool IsValidPointer(long pointer) => (ulong)pointer < (ulong)_highest && _table[pointer] > 0;

    /// <inheritdoc />
    public override BtreeBlockRef Read(long pointer, BtreeBlockVerifier verifier)
    {
        nint page;
        if ((ulong)pointer >= (ulong)_highest || (page = _table[pointer]) <= 0)
            throw new CorruptionException(verifier.Name, pointer, "pointer to an unallocated in-memory block");
        return new BtreeBlockRef(null, (byte*)page, pointer);
    }

    /// <inheritdoc />
    public override BtreeBlockRef GetNew(long pointer, BtreeBlockVerifier verifier) => Read(pointer, verifier);

    internal override byte* PeekAddressForPrefetch(long pointer)
        => (ulong)pointer < (ulong)_highest && _table[pointer] > 0 ? (byte*)_table[pointer] : null;
    /// <inheritdoc />
    public override void Release(in BtreeBlockRef block) { }

    /// <inheritdoc />
    public override void MarkDirty(in BtreeBlockRef block)
    {
        if (!TrackDirty) return;
        long p = block.Pointer;
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
            _freeHead = -(long)_table[bno] - 1;
            _freeCount--;
        }
        else
        {
            if (_highest >= _maxBlocks) throw new XfileFullException($"in-memory btree partition full ({_maxBlocks} blocks)");
            bno = _highest;
            if (bno >= _capacity) Grow(bno + 1);
            if (bno >= _committedEnd) CommitAhead(bno);    // throws with nothing changed
            _highest++;
            // Committed by CommitAhead under the store's RetainMapping: no lease or commit check needed.
            page = _xfile.PageAddressUnchecked(_start + bno * _pageSize);
        }
        _table[bno] = (nint)page;
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
                return;
            }
            catch (IOException)
            {
                // Not enough for the chunk (another partition took the headroom, ENOSPC, ENOMEM): try the one page.
            }
        }
        _xfile.Reserve(_start + bno * _pageSize, _pageSize);
        _committedEnd = bno + 1;
    }

    void Grow(long needed)
    {
        long capacity = Math.Min(Math.Max(_capacity * 2, needed), _maxBlocks);
        _table = (nint*)System.Runtime.InteropServices.NativeMemory.Realloc(_table, (nuint)(capacity * sizeof(nint)));
        _dirtyFlag = (byte*)System.Runtime.InteropServices.NativeMemory.Realloc(_dirtyFlag, (nuint)capacity);
        System.Runtime.InteropServices.NativeMemory.Clear(_table + _capacity, (nuint)((capacity - _capacity) * sizeof(nint)));
        System.Runtime.InteropServices.NativeMemory.Clear(_dirtyFlag + _capacity, (nuint)(capacity - _capacity));
        _capacity = capacity;
    }

    /// <inheritdoc />
    public override void FreeBlock(long pointer)
    {
        if (!IsValidPointer(pointer)) throw new InvalidOperationException($"free of unallocated in-memory block {pointer}");
        long offset = _start + pointer * _pageSize;
        _table[pointer] = (nint)(-(_freeHead + 1));
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
            if ((flags & 2) != 0 || _table[p] <= 0 || CommitVerifier is null) continue;
            try { CommitVerifier.Verify(new ReadOnlySpan<byte>((byte*)_table[p], _pageSize), PointerToDaddr(p)); }
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
        long used = Math.Max(_highest, _committedEnd) * _pageSize;
        _highest = 0;
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
            _xfile.ReleaseMapping();
            GC.SuppressFinalize(this);
        }
    }

    void FreeTables()
    {
        System.Runtime.InteropServices.NativeMemory.Free(_table);
        System.Runtime.InteropServices.NativeMemory.Free(_dirtyFlag);
        _table = null;
        _dirtyFlag = null;
        _capacity = 0;
    }
}
