using System.Diagnostics;
using System.Diagnostics.CodeAnalysis;
using Xfbtree.Buffers;

namespace Xfbtree.Btree;

/// <summary>
/// A path from the root to a leaf (one held block and one index per level), and every tree operation:
/// lookup LE/EQ/GE, increment/decrement, get/update, insert (shift left/right, split, new root), delete
/// (borrow, join, root collapse), range and overlapped queries, counting and block visits. An inode-fork root
/// (<see cref="BtreeInodeRoot"/>) is an image node at the top level: written like any node, grown by new_iroot and
/// shrunk by kill_iroot, and reported to its owner once per write.
/// Every block entered is verified (store verifier on read, plus level, numrecs and sibling agreement here),
/// so damaged trees end in <see cref="CorruptionException"/>, and all walks are bounded.
/// Indices are 0-based. A cursor keeps its blocks held between calls (cheap repeated lookups); call
/// <see cref="Release"/> before another cursor of the same tree writes. Insert and Delete leave the cursor
/// unpositioned. Threads: one thread at a time per tree, callers serialise access (as XFS does with buffer locks);
/// the one exception is an in-memory tree's concurrent read family (internal: any number of readers and one writer).
/// The class is split by concern: this file holds the path state and block entry (every check on a block
/// entered); <c>.Positioning</c> lookups and movement; <c>.Entries</c> node keys and entry moves; <c>.Insert</c>
/// update, insert, splits and new roots; <c>.Delete</c> delete and rebalancing; <c>.Queries</c> range and
/// overlapped queries; <c>.Batch</c> batched lookups.
/// </summary>
public sealed unsafe partial class BtreeCursor<TOps> : IDisposable where TOps : struct, IBtreeOps
{
    readonly Btree<TOps> _tree;
    readonly TOps _ops;
    readonly BtreeGeometry _geometry;
    readonly BtreeBlockStore _store;
    readonly BtreeBlockVerifier _verifier;
    readonly BtreeBlockRef[] _blocks;  // per level (0 = leaf): the block of the path, held
    readonly int[] _index;             // per level: the entry of the path in that block
    readonly byte[] _walkKeys;         // per level: the last slot key an overlapped query followed into it
    readonly bool _longPointers;
    readonly int _blockSize, _keySize, _recordSize, _keySlotSize, _pointerSize;
    readonly int _headerSize, _leafMaxRecords, _nodeMaxRecords;
    readonly BtreeRootValue? _rootValue;  // the root of an in-memory tree, read by concurrent readers without touching the tree object
    readonly byte* _directBase;           // the store's DirectBlockBase: prefetch a child before its table entry arrives
    readonly BtreeSidecars? _sidecars;    // the store's key-prefix sidecars (concurrent readers search them first), or null
    readonly bool _leafSidecars;          // leaves have sidecars too (BtreeSidecars.LeafSamples)
    readonly byte* _sidecarBase;          // their memory: block p's sidecar at _sidecarBase + p * BtreeSidecars.Stride
    int _height;
    int _imageLevel = -1;              // level of an inode-fork root image, or -1
    int _imageViewLength, _imageMaxRecords;
    long _rootPointer = long.MinValue;
    bool _positioned;
    bool _disposed;
    bool _imageChanged;                // the inode-root image changed during the current write
    bool _leafToChange;                // the descent is for an insert or delete: prefetch the whole leaf (see Descend)
    bool _pathKept;                    // the path of the last insert is still held and valid (see TryInsertOnKeptPath)
    long _pathStamp;                   // the tree's WriteStamp when the path was kept

    /// <summary>Inserts done on the kept path without a descent (a diagnostic for tests and profiles).</summary>
    internal long KeptPathInserts { get; private set; }
    /// <summary>Records inserted by leaf runs (<see cref="InsertRunOnKeptPath"/>; a diagnostic for tests).</summary>
    internal long RunInserts { get; private set; }
    /// <summary>Insert descents that started below the root, from the kept path (<see cref="RepositionFromKeptPath"/>; a diagnostic for tests).</summary>
    internal long KeptPathDescents { get; private set; }
    /// <summary>Records deleted by leaf runs (<see cref="DeleteRunInLeaf"/>; a diagnostic for tests).</summary>
    internal long RunDeletes { get; private set; }
    int _heightAtWriteStart;

    internal BtreeCursor(Btree<TOps> tree)
    {
        _tree = tree;
        _ops = tree.Ops;
        _geometry = tree.Geometry;
        _store = tree.Store;
        _verifier = tree.Verifier;
        _blocks = new BtreeBlockRef[_geometry.MaxLevels + 1];
        _index = new int[_geometry.MaxLevels + 1];
        _walkKeys = new byte[(_geometry.MaxLevels + 1) * _geometry.KeySize];
        _longPointers = _geometry.LongPointers;
        _blockSize = _geometry.BlockSize;
        _keySize = _geometry.KeySize;
        _recordSize = _geometry.RecordSize;
        _keySlotSize = _geometry.KeySlotSize;
        _pointerSize = _geometry.PointerSize;
        _headerSize = _geometry.HeaderSize;
        _leafMaxRecords = _geometry.LeafMaxRecords;
        _nodeMaxRecords = _geometry.NodeMaxRecords;
        _rootValue = tree.Root as BtreeRootValue;
        _directBase = _store.DirectBlockBase;
        _sidecars = _store.Sidecars;
        _sidecarBase = _sidecars is null ? null : _sidecars.At(0);
        _leafSidecars = _sidecars is { LeafSamples: true };
    }

    /// <summary>The tree.</summary>
    public Btree<TOps> Tree => _tree;
    /// <summary>Levels of the tree as of the last operation.</summary>
    public int Height => _height;
    /// <summary>Index at <paramref name="level"/> (0-based; -1 or numrecs when off the block).</summary>
    public int IndexAt(int level) => _index[level];
    /// <summary>Pointer of the held block at <paramref name="level"/>.</summary>
    public long BlockPointerAt(int level) => _blocks[level].Pointer;

    // ---------------------------------------------------------------- block access

    // The only raw-pointer views of block memory in the cursor: a held block is BlockSize bytes (the store's
    // contract), an inode-root image _imageViewLength bytes (BtreeInodeRoot sizes it). Every access goes through these
    // spans, so offsets derived from on-disk values are bounds-checked; Debug builds also assert the holds.
    Span<byte> Block(int level)
    {
        Debug.Assert((uint)level < (uint)_blocks.Length && !_blocks[level].IsNull, $"no block held at level {level}");
        Debug.Assert(level != _imageLevel || _blocks[level].Handle is BtreeInodeRoot { ImageLength: var len } && len >= _imageViewLength, "inode root image shorter than its view");
        return new(_blocks[level].Data, level == _imageLevel ? _imageViewLength : _blockSize);
    }

    Span<byte> SpanOf(in BtreeBlockRef r)
    {
        Debug.Assert(!r.IsNull, "view of a null block");
        return new(r.Data, _blockSize);
    }

    bool IsImageLevel(int level) => level == _imageLevel;

    /// <summary>
    /// The only child of a one-entry level-1 inode root may be an empty leaf: deletes never shrink a fork root
    /// below level 1 (the bmap layer turns such a fork back into extents), as in XFS. The checker agrees.
    /// </summary>
    bool IsEmptyLeafUnderInodeRoot(int level)
        => level == 0 && _imageLevel == 1 && !_blocks[1].IsNull && NumRecords(Block(1)) == 1;

    int MaxRecords(int level) => level == _imageLevel ? _imageMaxRecords : level == 0 ? _leafMaxRecords : _nodeMaxRecords;

    static int NumRecords(ReadOnlySpan<byte> b) => BtreeHeader.NumRecords(b);

    ReadOnlySpan<byte> RecordAt(ReadOnlySpan<byte> b, int i) => b.Slice(_headerSize + i * _recordSize, _recordSize);
    Span<byte> KeyAt(Span<byte> b, int i) => b.Slice(_headerSize + i * _keySlotSize, _keySize);
    Span<byte> HighKeyAt(Span<byte> b, int i) => b.Slice(_headerSize + i * _keySlotSize + _keySize, _keySize);

    long ChildPointer(int level, int i)
    {
        Debug.Assert(level > 0 && i >= 0 && i < MaxRecords(level), $"child {i} of level {level} outside the node");
        var b = Block(level);
        return BtreeHeader.ReadPointer(b[(_headerSize + MaxRecords(level) * _keySlotSize + i * _pointerSize)..], _longPointers);
    }

    long DaddrOf(long ptr) => ptr >= 0 && _store.IsValidPointer(ptr) ? _store.PointerToDaddr(ptr) : ptr;

    [DoesNotReturn]
    void Corrupt(long ptr, string check) => throw new CorruptionException(_tree.Name, DaddrOf(ptr), check);

    void BeginOperation()
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        _pathKept = false; // whatever this operation does to the path, it is no longer the kept insert path
        int height = _tree.Root.Height;
        long rootPtr = _tree.Root.Pointer;
        if (height < 1 || height > _geometry.MaxLevels) Corrupt(rootPtr, $"tree height {height} outside 1..{_geometry.MaxLevels}");
        if (height != _height || rootPtr != _rootPointer) ReleaseBlocks();
        _height = height;
        _rootPointer = rootPtr;
        _imageLevel = -1;
        if (_tree.Root is BtreeInodeRoot image)
        {
            // An inode fork holds a btree root only from level 1 up (a single leaf's worth of extents is extents format).
            if (height < 2) Corrupt(rootPtr, "inode fork btree root at level 0");
            _imageLevel = height - 1;
            _imageMaxRecords = image.MaxRecords;
            _imageViewLength = Math.Max(_blockSize, _geometry.PointerOffset(image.MaxRecords, image.MaxRecords));
        }
    }

    /// <summary>Makes the block <paramref name="ptr"/> the path block at <paramref name="level"/> (reusing it when already held).</summary>
    void EnterBlock(int level, long ptr)
    {
        ref var cur = ref _blocks[level];
        if (IsImageLevel(level))
        {
            if (cur.IsNull)
            {
                var root = (BtreeInodeRoot)_tree.Root;
                cur = new BtreeBlockRef(root, root.ImageData, BtreeHeader.NullPointer);
                CheckEnteredBlock(level, Block(level), BtreeHeader.NullPointer);
            }
            return;
        }
        if (!cur.IsNull)
        {
            if (cur.Pointer == ptr) return;
            _store.Release(cur);
            cur = default;
        }
        if (!_store.IsValidPointer(ptr)) Corrupt(ptr, $"pointer {ptr} at level {level + 1} out of range");
        for (int l = 0; l < _height; l++)
            if (l != level && !_blocks[l].IsNull && _blocks[l].Pointer == ptr) Corrupt(ptr, $"block {ptr} reached at levels {l} and {level}");
        var block = _store.Read(ptr, _verifier);
        try { CheckEnteredBlock(level, SpanOf(block), ptr); }
        catch { _store.Release(block); throw; }
        cur = block;
    }

    void CheckEnteredBlock(int level, ReadOnlySpan<byte> b, long ptr)
    {
        int lev = BtreeHeader.Level(b);
        if (lev != level) Corrupt(ptr, $"level {lev}, expected {level}");
        int n = NumRecords(b);
        int max = MaxRecords(level);
        if (n > max) Corrupt(ptr, $"numrecs {n} > maxrecs {max}");
        bool isRoot = level == _height - 1;
        if (n == 0 && (level > 0 || !isRoot) && !IsEmptyLeafUnderInodeRoot(level)) Corrupt(ptr, "empty non-root block");
        if (isRoot && !IsImageLevel(level) &&
            (BtreeHeader.LeftSibling(b, _longPointers) != BtreeHeader.NullPointer || BtreeHeader.RightSibling(b, _longPointers) != BtreeHeader.NullPointer))
            Corrupt(ptr, "root block has siblings");
    }

    /// <summary>Reads a block next to the path (sibling, cousin) at <paramref name="level"/>; the caller releases it.</summary>
    BtreeBlockRef ReadSideBlock(int level, long ptr)
    {
        if (!_store.IsValidPointer(ptr)) Corrupt(ptr, $"sibling pointer {ptr} out of range");
        for (int l = 0; l < _height; l++)
            if (!_blocks[l].IsNull && _blocks[l].Pointer == ptr) Corrupt(ptr, $"sibling {ptr} is also the path block at level {l}");
        var block = _store.Read(ptr, _verifier);
        try
        {
            var b = SpanOf(block);
            if (BtreeHeader.Level(b) != level) Corrupt(ptr, $"level {BtreeHeader.Level(b)}, expected {level}");
            int n = NumRecords(b);
            if (n == 0 || n > _geometry.MaxRecords(level)) Corrupt(ptr, $"numrecs {n} outside 1..{_geometry.MaxRecords(level)}");
        }
        catch { _store.Release(block); throw; }
        return block;
    }

    /// <summary>Announces the first change to the path block at <paramref name="level"/> (before it is made; see <see cref="BtreeBlockStore.BeginChange"/>).</summary>
    void Changing(int level)
    {
        if (!IsImageLevel(level)) _store.BeginChange(_blocks[level]);
    }

    void Dirty(int level)
    {
        if (IsImageLevel(level)) _imageChanged = true;
        else _store.MarkDirty(_blocks[level]);
    }

    /// <summary>Records that bytes [<paramref name="offset"/>, +<paramref name="length"/>) of the path block at
    /// <paramref name="level"/> changed (a journal logs only those).</summary>
    void Dirty(int level, int offset, int length)
    {
        if (IsImageLevel(level)) _imageChanged = true;
        else _store.MarkDirty(_blocks[level], offset, length);
    }

    /// <summary>After entries moved inside the path block at <paramref name="level"/> and its record count changed:
    /// the header and entries [<paramref name="from"/>, <paramref name="to"/>) changed (a leaf's records; a node's
    /// key slots and pointers).</summary>
    void DirtyEntries(int level, int from, int to)
    {
        if (IsImageLevel(level))
        {
            _imageChanged = true;
            return;
        }
        Dirty(level, 0, _headerSize);
        if (from >= to) return;
        if (level == 0)
        {
            Dirty(level, _geometry.RecordOffset(from), (to - from) * _recordSize);
            return;
        }
        Dirty(level, _geometry.KeyOffset(from), (to - from) * _keySlotSize);
        Dirty(level, _geometry.PointerOffset(from, _nodeMaxRecords), (to - from) * _pointerSize);
    }

    void ReleaseBlocks()
    {
        for (int l = 0; l < _blocks.Length; l++)
        {
            ref var b = ref _blocks[l];
            if (!b.IsNull && b.Handle is not BtreeInodeRoot) _store.Release(b);
            b = default;
        }
        _positioned = false;
        _pathKept = false;
    }

    /// <summary>Drops every held block; the cursor becomes unpositioned.</summary>
    public void Release() => ReleaseBlocks();

    /// <summary>Releases the held blocks.</summary>
    public void Dispose()
    {
        if (_disposed) return;
        ReleaseBlocks();
        _disposed = true;
    }
}
