using Xfbtree.Btree;
using Xfbtree.Buffers;
using Xfbtree.Storage;

namespace Xfbtree.InMemory;

/// <summary>
/// Blocks of an in-memory btree inside one partition of an <see cref="Xfile"/>: block <c>bno</c> is the page at
/// <c>partitionStart + bno * PageSize</c>. Like upstream's xmbuf, buffers are the xfile pages themselves
/// (direct mapped, zero copy, no I/O): a block's page is pinned once when it is allocated and its address kept
/// in a table, so reading a block is an array lookup. Freed blocks are unpinned, their pages discarded (memory
/// returned) and their numbers reused. Block memory is trusted like DRAM (no CRC, no verify on read);
/// the structure verifier runs on every dirty block at <see cref="Commit"/>.
/// </summary>
public sealed unsafe class XfbtreeBlockStore : BtreeBlockStore, IDisposable
{
    readonly Xfile _xfile;
    readonly long _start;
    readonly long _maxBlocks;
    readonly int _pageSize;
    nint[] _pages = new nint[64];
    long _highest;                       // blocks 0.._highest-1 have been handed out at least once
    readonly Stack<long> _free = new();
    byte[] _dirtyFlag = new byte[64];    // 1 = dirty, 2 = stale (freed) in the current transaction
    readonly List<long> _dirty = new();
    bool _disposed;

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
    }

    public Xfile Xfile => _xfile;
    public long PartitionStart => _start;
    /// <summary>Largest number of blocks the partition can hold.</summary>
    public long MaxBlocks => _maxBlocks;
    public override int BlockSize => _pageSize;
    public override bool ChecksCrc => false;
    /// <summary>Blocks currently allocated.</summary>
    public long LiveBlocks => _highest - _free.Count;
    /// <summary>Verifier used at commit (set by the owning tree).</summary>
    public BtreeBlockVerifier? CommitVerifier { get; set; }
    /// <summary>Record dirty blocks for <see cref="Commit"/> (off for trees that never commit, e.g. the typed map).</summary>
    public bool TrackDirty { get; set; } = true;

    public override long PointerToDaddr(long pointer) => pointer * (_pageSize / 512);
    public override bool IsValidPointer(long pointer) => (ulong)pointer < (ulong)_highest && _pages[pointer] != 0;

    public override BtreeBlockRef Read(long pointer, BtreeBlockVerifier verifier)
    {
        if ((ulong)pointer >= (ulong)_highest || _pages[pointer] == 0)
            throw new CorruptionException(verifier.Name, pointer, "pointer to an unallocated in-memory block");
        System.Diagnostics.Debug.Assert(_pages[pointer] != 0, "allocated block without a pinned page");
        return new BtreeBlockRef(null, (byte*)_pages[pointer], pointer);
    }

    public override BtreeBlockRef GetNew(long pointer, BtreeBlockVerifier verifier) => Read(pointer, verifier);
    public override void Release(in BtreeBlockRef block) { }

    public override void MarkDirty(in BtreeBlockRef block)
    {
        if (!TrackDirty) return;
        long p = block.Pointer;
        if (_dirtyFlag[p] == 0) _dirty.Add(p);
        _dirtyFlag[p] |= 1;
    }

    public override void MarkStale(in BtreeBlockRef block)
    {
        if (!TrackDirty) return;
        long p = block.Pointer;
        if (_dirtyFlag[p] == 0) _dirty.Add(p);
        _dirtyFlag[p] |= 2;
    }

    public override long AllocateBlock()
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        long bno;
        if (_free.Count > 0) bno = _free.Pop();
        else
        {
            if (_highest >= _maxBlocks) throw new XfileFullException($"in-memory btree partition full ({_maxBlocks} blocks)");
            bno = _highest;
            if (bno >= _pages.Length)
            {
                Array.Resize(ref _pages, (int)Math.Min(Math.Max(_pages.Length * 2L, bno + 1), int.MaxValue));
                Array.Resize(ref _dirtyFlag, _pages.Length);
            }
            _highest++;
        }
        byte* page = _xfile.PinPage(_start + bno * _pageSize);
        _pages[bno] = (nint)page;
        new Span<byte>(page, _pageSize).Clear();
        return bno;
    }

    public override void FreeBlock(long pointer)
    {
        if (!IsValidPointer(pointer)) throw new InvalidOperationException($"free of unallocated in-memory block {pointer}");
        long offset = _start + pointer * _pageSize;
        _pages[pointer] = 0;
        _xfile.UnpinPage(offset);
        _xfile.Discard(offset, _pageSize);
        _free.Push(pointer);
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
            if ((flags & 2) != 0 || _pages[p] == 0 || CommitVerifier is null) continue;
            try { CommitVerifier.Verify(new ReadOnlySpan<byte>((byte*)_pages[p], _pageSize), PointerToDaddr(p)); }
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

    /// <summary>Unpins every page and discards the partition's memory.</summary>
    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        for (long b = 0; b < _highest; b++)
            if (_pages[b] != 0)
            {
                _xfile.UnpinPage(_start + b * _pageSize);
                _pages[b] = 0;
            }
        if (_highest > 0) _xfile.Discard(_start, _highest * _pageSize);
        _free.Clear();
        _highest = 0;
    }
}
