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
/// unpositioned. Not thread-safe: callers serialise access to a tree.
/// </summary>
public sealed unsafe class BtreeCursor<TOps> : IDisposable where TOps : struct, IBtreeOps
{
    readonly Btree<TOps> _tree;
    readonly TOps _ops;
    readonly BtreeGeometry _geo;
    readonly BtreeBlockStore _store;
    readonly BtreeBlockVerifier _verifier;
    readonly BtreeBlockRef[] _blocks;
    readonly int[] _index;
    readonly byte[] _walkKeys;         // per level: the last slot key an overlapped query followed into it
    readonly bool _lf;
    readonly int _bs, _ks, _rs, _slot, _ps;
    readonly int _hdr, _leafMax, _nodeMax;
    int _height;
    int _imageLevel = -1;              // level of an inode-fork root image, or -1
    int _imageLength, _imageMax;
    long _rootPointer = long.MinValue;
    bool _positioned;
    bool _disposed;
    bool _imageChanged;                // the inode-root image changed during the current write
    int _heightAtWriteStart;

    internal BtreeCursor(Btree<TOps> tree)
    {
        _tree = tree;
        _ops = tree.Ops;
        _geo = tree.Geometry;
        _store = tree.Store;
        _verifier = tree.Verifier;
        _blocks = new BtreeBlockRef[_geo.MaxLevels + 1];
        _index = new int[_geo.MaxLevels + 1];
        _walkKeys = new byte[(_geo.MaxLevels + 1) * _geo.KeySize];
        _lf = _geo.LongPointers;
        _bs = _geo.BlockSize;
        _ks = _geo.KeySize;
        _rs = _geo.RecordSize;
        _slot = _geo.KeySlotSize;
        _ps = _geo.PointerSize;
        _hdr = _geo.HeaderSize;
        _leafMax = _geo.LeafMaxRecords;
        _nodeMax = _geo.NodeMaxRecords;
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
    // contract), an inode-root image _imageLength bytes (BtreeInodeRoot sizes it). Every access goes through these
    // spans, so offsets derived from on-disk values are bounds-checked; Debug builds also assert the holds.
    Span<byte> Block(int level)
    {
        Debug.Assert((uint)level < (uint)_blocks.Length && !_blocks[level].IsNull, $"no block held at level {level}");
        Debug.Assert(level != _imageLevel || _blocks[level].Handle is BtreeInodeRoot { ImageLength: var len } && len >= _imageLength, "inode root image shorter than its view");
        return new(_blocks[level].Data, level == _imageLevel ? _imageLength : _bs);
    }

    Span<byte> SpanOf(in BtreeBlockRef r)
    {
        Debug.Assert(!r.IsNull, "view of a null block");
        return new(r.Data, _bs);
    }

    bool IsImageLevel(int level) => level == _imageLevel;

    /// <summary>
    /// The only child of a one-entry level-1 inode root may be an empty leaf: deletes never shrink a fork root
    /// below level 1 (the bmap layer turns such a fork back into extents), as in XFS. The checker agrees.
    /// </summary>
    bool IsEmptyLeafUnderInodeRoot(int level)
        => level == 0 && _imageLevel == 1 && !_blocks[1].IsNull && NumRecords(Block(1)) == 1;

    int MaxRecords(int level) => level == _imageLevel ? _imageMax : level == 0 ? _leafMax : _nodeMax;

    static int NumRecords(ReadOnlySpan<byte> b) => BtreeHeader.NumRecords(b);

    ReadOnlySpan<byte> RecordAt(ReadOnlySpan<byte> b, int i) => b.Slice(_hdr + i * _rs, _rs);
    Span<byte> KeyAt(Span<byte> b, int i) => b.Slice(_hdr + i * _slot, _ks);
    Span<byte> HighKeyAt(Span<byte> b, int i) => b.Slice(_hdr + i * _slot + _ks, _ks);

    long ChildPointer(int level, int i)
    {
        Debug.Assert(level > 0 && i >= 0 && i < MaxRecords(level), $"child {i} of level {level} outside the node");
        var b = Block(level);
        return BtreeHeader.ReadPointer(b[(_hdr + MaxRecords(level) * _slot + i * _ps)..], _lf);
    }

    /// <summary>
    /// Asks for every cache line of the entries about to be binary searched at once: the ~8 dependent misses
    /// of a search over a page-sized block then overlap instead of queueing (about 1.4x more lookups per second
    /// at 10 M records). The range lies inside the block (numrecs was checked against maxrecs); a prefetch never faults.
    /// </summary>
    static void PrefetchRange(byte* entries, int bytes)
    {
        Debug.Assert(bytes >= 0, "negative prefetch length");
        if (!System.Runtime.Intrinsics.X86.Sse.IsSupported) return;
        for (int off = 0; off < bytes; off += 64) System.Runtime.Intrinsics.X86.Sse.Prefetch0(entries + off);
    }

    long DaddrOf(long ptr) => ptr >= 0 && _store.IsValidPointer(ptr) ? _store.PointerToDaddr(ptr) : ptr;

    [DoesNotReturn]
    void Corrupt(long ptr, string check) => throw new CorruptionException(_tree.Name, DaddrOf(ptr), check);

    void BeginOperation()
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        int height = _tree.Root.Height;
        long rootPtr = _tree.Root.Pointer;
        if (height < 1 || height > _geo.MaxLevels) Corrupt(rootPtr, $"tree height {height} outside 1..{_geo.MaxLevels}");
        if (height != _height || rootPtr != _rootPointer) ReleaseBlocks();
        _height = height;
        _rootPointer = rootPtr;
        _imageLevel = -1;
        if (_tree.Root is BtreeInodeRoot image)
        {
            // An inode fork holds a btree root only from level 1 up (a single leaf's worth of extents is extents format).
            if (height < 2) Corrupt(rootPtr, "inode fork btree root at level 0");
            _imageLevel = height - 1;
            _imageMax = image.MaxRecords;
            _imageLength = Math.Max(_bs, _geo.PointerOffset(image.MaxRecords, image.MaxRecords));
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
            (BtreeHeader.LeftSibling(b, _lf) != BtreeHeader.NullPointer || BtreeHeader.RightSibling(b, _lf) != BtreeHeader.NullPointer))
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
            if (n == 0 || n > _geo.MaxRecords(level)) Corrupt(ptr, $"numrecs {n} outside 1..{_geo.MaxRecords(level)}");
        }
        catch { _store.Release(block); throw; }
        return block;
    }

    void Dirty(int level)
    {
        if (IsImageLevel(level)) _imageChanged = true;
        else _store.MarkDirty(_blocks[level]);
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

    // ---------------------------------------------------------------- lookup and movement

    /// <summary>Positions the cursor by key; returns true when a record satisfying <paramref name="mode"/> exists.</summary>
    public bool Lookup(ReadOnlySpan<byte> key, BtreeLookup mode) => LookupCore(key, mode, out _);

    bool LookupCore(ReadOnlySpan<byte> key, BtreeLookup mode, out bool exact)
    {
        if (key.Length < _ks) throw new ArgumentException($"key must be {_ks} bytes", nameof(key));
        BeginOperation();
        exact = false;
        long ptr = _rootPointer;
        int diff = 1, keyno = 0;
        bool exactAbove = false;
        for (int level = _height - 1; level >= 0; level--)
        {
            EnterBlock(level, ptr);
            var b = Block(level);
            int n = NumRecords(b);
            if (n == 0)
            {
                _index[0] = mode == BtreeLookup.LessOrEqual ? -1 : 0;
                _positioned = true;
                return false;
            }
            if (exactAbove)
            {
                keyno = 0;
                diff = 0;
            }
            else
            {
                int low = 0, high = n - 1;
                var entries = b[_hdr..];
                Debug.Assert(_hdr + n * (level == 0 ? _rs : _slot) <= b.Length, "prefetch past the block: numrecs was not checked");
                PrefetchRange(_blocks[level].Data + _hdr, n * (level == 0 ? _rs : _slot));
                if (level == 0)
                {
                    while (low <= high)
                    {
                        keyno = (low + high) >> 1;
                        diff = _ops.CompareRecordToKey(entries.Slice(keyno * _rs, _rs), key);
                        if (diff < 0) low = keyno + 1;
                        else if (diff > 0) high = keyno - 1;
                        else break;
                    }
                }
                else
                {
                    while (low <= high)
                    {
                        keyno = (low + high) >> 1;
                        diff = _ops.CompareKeys(entries.Slice(keyno * _slot, _ks), key);
                        if (diff < 0) low = keyno + 1;
                        else if (diff > 0) high = keyno - 1;
                        else break;
                    }
                }
            }
            if (level > 0)
            {
                if (diff > 0 && --keyno < 0) keyno = 0;
                if (diff == 0) exactAbove = true;
                _index[level] = keyno;
                ptr = ChildPointer(level, keyno);
                continue;
            }
            _positioned = true;
            if (mode != BtreeLookup.LessOrEqual && diff < 0)
            {
                keyno++;
                if (mode == BtreeLookup.GreaterOrEqual && keyno >= n)
                {
                    _index[0] = n - 1;
                    return Increment();
                }
            }
            else if (mode == BtreeLookup.LessOrEqual && diff > 0)
            {
                keyno--;
            }
            _index[0] = keyno;
            exact = diff == 0;
            return mode switch
            {
                BtreeLookup.Equal => exact,
                BtreeLookup.GreaterOrEqual => keyno < n,
                _ => keyno >= 0,
            };
        }
        return false;
    }

    /// <summary>Positions on the first record; false when the tree is empty.</summary>
    public bool MoveFirst()
    {
        DescendEdge(0, left: true);
        _index[0] = 0;
        _positioned = true;
        return NumRecords(Block(0)) > 0;
    }

    /// <summary>Positions on the last record; false when the tree is empty.</summary>
    public bool MoveLast()
    {
        DescendEdge(0, left: false);
        _index[0] = NumRecords(Block(0)) - 1;
        _positioned = true;
        return _index[0] >= 0;
    }

    void DescendEdge(int toLevel, bool left)
    {
        BeginOperation();
        long ptr = _rootPointer;
        for (int level = _height - 1; level >= toLevel; level--)
        {
            EnterBlock(level, ptr);
            int n = NumRecords(Block(level));
            _index[level] = left ? 0 : n - 1;
            if (level > toLevel) ptr = ChildPointer(level, _index[level]);
        }
    }

    /// <summary>Moves to the next record; false (index past the end) at the end of the tree.</summary>
    public bool Increment()
    {
        EnsurePositioned();
        return IncrementAt(0);
    }

    /// <summary>Moves to the previous record; false (index -1) at the start of the tree.</summary>
    public bool Decrement()
    {
        EnsurePositioned();
        return DecrementAt(0);
    }

    bool IncrementAt(int level)
    {
        var b = Block(level);
        int n = NumRecords(b);
        if (_index[level] < -1) _index[level] = -1;
        if (++_index[level] < n) return true;
        _index[level] = n;
        long right = BtreeHeader.RightSibling(b, _lf);
        if (right == BtreeHeader.NullPointer) return false;
        return StepRight(level, right);
    }

    /// <summary>
    /// Moves the path at <paramref name="level"/> to the right sibling through the parents. Besides sibling agreement,
    /// the new block's first key must be above the old one's: key order is what bounds a walk, since sibling
    /// pointers and repeated child pointers can form cycles that every pointer check passes.
    /// </summary>
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.NoInlining)]
    bool StepRight(int level, long right)
    {
        long from = _blocks[level].Pointer;
        Span<byte> keys = stackalloc byte[2 * BtreeGeometry.MaxKeySize];
        var fromKey = keys[.._ks];
        var toKey = keys.Slice(BtreeGeometry.MaxKeySize, _ks);
        FirstKey(level, fromKey);
        int lev = level + 1;
        for (; lev < _height; lev++)
            if (++_index[lev] < NumRecords(Block(lev))) break;
        if (lev >= _height) Corrupt(from, "right sibling exists but no later entry in the parents");
        for (lev--; lev >= level; lev--)
        {
            EnterBlock(lev, ChildPointer(lev + 1, _index[lev + 1]));
            _index[lev] = 0;
        }
        if (_blocks[level].Pointer != right) Corrupt(from, $"right sibling {right} is not the next block {_blocks[level].Pointer} in key order");
        if (BtreeHeader.LeftSibling(Block(level), _lf) != from) Corrupt(right, $"left sibling does not point back to {from}");
        FirstKey(level, toKey);
        if (_ops.CompareKeys(toKey, fromKey) <= 0) Corrupt(right, $"first key not above the first key of its left sibling {from} (cycle?)");
        return true;
    }

    bool DecrementAt(int level)
    {
        var b = Block(level);
        int n = NumRecords(b);
        if (_index[level] > n) _index[level] = n;
        if (--_index[level] >= 0) return true;
        _index[level] = -1;
        long left = BtreeHeader.LeftSibling(b, _lf);
        if (left == BtreeHeader.NullPointer) return false;
        return StepLeft(level, left);
    }

    /// <summary>Mirror of <see cref="StepRight"/>: the new block's first key must be below the old one's.</summary>
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.NoInlining)]
    bool StepLeft(int level, long left)
    {
        long from = _blocks[level].Pointer;
        Span<byte> keys = stackalloc byte[2 * BtreeGeometry.MaxKeySize];
        var fromKey = keys[.._ks];
        var toKey = keys.Slice(BtreeGeometry.MaxKeySize, _ks);
        FirstKey(level, fromKey);
        int lev = level + 1;
        for (; lev < _height; lev++)
            if (--_index[lev] >= 0) break;
        if (lev >= _height) Corrupt(from, "left sibling exists but no earlier entry in the parents");
        for (lev--; lev >= level; lev--)
        {
            EnterBlock(lev, ChildPointer(lev + 1, _index[lev + 1]));
            _index[lev] = NumRecords(Block(lev)) - 1;
        }
        if (_blocks[level].Pointer != left) Corrupt(from, $"left sibling {left} is not the previous block {_blocks[level].Pointer} in key order");
        if (BtreeHeader.RightSibling(Block(level), _lf) != from) Corrupt(left, $"right sibling does not point back to {from}");
        FirstKey(level, toKey);
        if (_ops.CompareKeys(toKey, fromKey) >= 0) Corrupt(left, $"first key not below the first key of its right sibling {from} (cycle?)");
        return true;
    }

    /// <summary>The low key of the first entry of the path block at <paramref name="level"/> (non-root blocks are never empty).</summary>
    void FirstKey(int level, Span<byte> key)
    {
        var b = Block(level);
        if (level == 0) _ops.GetKey(RecordAt(b, 0), key);
        else b.Slice(_hdr, _ks).CopyTo(key);
    }

    void EnsurePositioned()
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (!_positioned) throw new InvalidOperationException("cursor is not positioned; call Lookup first");
    }

    /// <summary>True when the cursor points at a record.</summary>
    public bool HasRecord => _positioned && !_disposed && _index[0] >= 0 && _index[0] < NumRecords(Block(0));

    /// <summary>The record under the cursor (valid until the cursor moves).</summary>
    public ReadOnlySpan<byte> Current
    {
        get
        {
            if (!HasRecord) throw new InvalidOperationException("cursor is not on a record");
            return RecordAt(Block(0), _index[0]);
        }
    }

    // ---------------------------------------------------------------- keys

    void ComputeKeys(ReadOnlySpan<byte> b, int level, Span<byte> low, Span<byte> high, Span<byte> tmp)
        => BtreeKeys.ComputeBlockKeys(_ops, _geo, b, level, low, high, tmp);

    /// <summary>Writes the keys of <paramref name="child"/> into slot <paramref name="slot"/> of the path block at <paramref name="parentLevel"/>; true if they changed.</summary>
    bool WriteSlot(int parentLevel, int slot, ReadOnlySpan<byte> child)
    {
        Span<byte> scratch = stackalloc byte[3 * BtreeGeometry.MaxKeySize];
        var low = scratch[.._ks];
        var high = scratch.Slice(BtreeGeometry.MaxKeySize, _ks);
        var tmp = scratch.Slice(2 * BtreeGeometry.MaxKeySize, _ks);
        ComputeKeys(child, parentLevel - 1, low, high, tmp);
        var parent = Block(parentLevel);
        var pk = KeyAt(parent, slot);
        bool same = pk.SequenceEqual(low) && (!_geo.Overlapping || HighKeyAt(parent, slot).SequenceEqual(high));
        if (same) return false;
        low.CopyTo(pk);
        if (_geo.Overlapping) high.CopyTo(HighKeyAt(parent, slot));
        Dirty(parentLevel);
        return true;
    }

    /// <summary>Propagates the keys of the path block at <paramref name="level"/> upward until a parent slot is unchanged.</summary>
    void FixKeysUpFrom(int level)
    {
        for (int l = level; l < _height - 1; l++)
            if (!WriteSlot(l + 1, _index[l + 1], Block(l))) break;
    }

    // ---------------------------------------------------------------- entry moves (leaf: records; node: key slots + pointers)

    // Node entry moves take the node's maxrecs (max): it places the pointer array. It is NodeMaxRecords for every
    // block and the fork's maxrecs for an inode-root image (MaxRecords(level) of a path block gives the right one).

    void OpenGap(Span<byte> b, int level, int pos, int n, int max)
    {
        if (pos >= n) return;
        if (level == 0)
        {
            b.Slice(_geo.RecordOffset(pos), (n - pos) * _rs).CopyTo(b[_geo.RecordOffset(pos + 1)..]);
            return;
        }
        b.Slice(_geo.KeyOffset(pos), (n - pos) * _slot).CopyTo(b[_geo.KeyOffset(pos + 1)..]);
        b.Slice(_geo.PointerOffset(pos, max), (n - pos) * _ps).CopyTo(b[_geo.PointerOffset(pos + 1, max)..]);
    }

    void CloseGap(Span<byte> b, int level, int pos, int n, int max)
    {
        if (pos >= n - 1) return;
        if (level == 0)
        {
            b.Slice(_geo.RecordOffset(pos + 1), (n - pos - 1) * _rs).CopyTo(b[_geo.RecordOffset(pos)..]);
            return;
        }
        b.Slice(_geo.KeyOffset(pos + 1), (n - pos - 1) * _slot).CopyTo(b[_geo.KeyOffset(pos)..]);
        b.Slice(_geo.PointerOffset(pos + 1, max), (n - pos - 1) * _ps).CopyTo(b[_geo.PointerOffset(pos, max)..]);
    }

    void CopyEntries(ReadOnlySpan<byte> src, int srcPos, int srcMax, Span<byte> dst, int dstPos, int dstMax, int count, int level)
    {
        if (count <= 0) return;
        if (level == 0)
        {
            src.Slice(_geo.RecordOffset(srcPos), count * _rs).CopyTo(dst[_geo.RecordOffset(dstPos)..]);
            return;
        }
        src.Slice(_geo.KeyOffset(srcPos), count * _slot).CopyTo(dst[_geo.KeyOffset(dstPos)..]);
        src.Slice(_geo.PointerOffset(srcPos, srcMax), count * _ps).CopyTo(dst[_geo.PointerOffset(dstPos, dstMax)..]);
    }

    /// <summary>Moves entries between two blocks (never the inode-root image).</summary>
    void CopyEntries(ReadOnlySpan<byte> src, int srcPos, Span<byte> dst, int dstPos, int count, int level)
        => CopyEntries(src, srcPos, _nodeMax, dst, dstPos, _nodeMax, count, level);

    void WriteEntry(Span<byte> b, int level, int pos, ReadOnlySpan<byte> entry, long ptr, int max)
    {
        if (level == 0)
        {
            entry[.._rs].CopyTo(b[_geo.RecordOffset(pos)..]);
            return;
        }
        entry[.._slot].CopyTo(b[_geo.KeyOffset(pos)..]);
        BtreeHeader.WritePointer(b[_geo.PointerOffset(pos, max)..], _lf, ptr);
    }

    void InsertEntry(Span<byte> b, int level, int pos, ReadOnlySpan<byte> entry, long ptr, int max)
    {
        int n = NumRecords(b);
        OpenGap(b, level, pos, n, max);
        WriteEntry(b, level, pos, entry, ptr, max);
        BtreeHeader.SetNumRecords(b, n + 1);
    }

    /// <summary>Inserts into a block that is not the inode-root image (siblings, new blocks).</summary>
    void InsertEntry(Span<byte> b, int level, int pos, ReadOnlySpan<byte> entry, long ptr) => InsertEntry(b, level, pos, entry, ptr, _nodeMax);

    void EnsureWritable()
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        _imageChanged = false;
        _heightAtWriteStart = _tree.Root.Height;
    }

    /// <summary>
    /// Ends a write: when the inode-root image changed, reports it once to its owner (through
    /// <see cref="BtreeRoot.Set"/> when the height moved, else <see cref="BtreeInodeRoot.Changed"/>) so the fork
    /// bytes follow the image. Runs also after a failed write: the image is the engine's truth either way, as the
    /// dirty buffers of the blocks are.
    /// </summary>
    void FinishWrite()
    {
        if (!_imageChanged) return;
        _imageChanged = false;
        var root = (BtreeInodeRoot)_tree.Root;
        if (root.Height != _heightAtWriteStart) root.Set(BtreeHeader.NullPointer, root.Height);
        else root.RaiseChanged();
    }

    // ---------------------------------------------------------------- update

    /// <summary>
    /// Overwrites the record under the cursor and propagates key changes upward. The new record must keep its
    /// place in key order (same rule as XFS's update).
    /// </summary>
    public void Update(ReadOnlySpan<byte> record)
    {
        EnsureWritable();
        if (record.Length != _rs) throw new ArgumentException($"record must be {_rs} bytes", nameof(record));
        if (!HasRecord) throw new InvalidOperationException("cursor is not on a record");
        try
        {
            var b = Block(0);
            record.CopyTo(b.Slice(_geo.RecordOffset(_index[0]), _rs));
            Dirty(0);
            FixKeysUpFrom(0);
        }
        finally { FinishWrite(); }
    }

    // ---------------------------------------------------------------- insert

    /// <summary>
    /// Inserts a record; false (tree unchanged) when a record with an equal key exists. May shift entries into a
    /// sibling, split blocks and grow a new root. The cursor is unpositioned afterwards.
    /// </summary>
    public bool Insert(ReadOnlySpan<byte> record)
    {
        EnsureWritable();
        if (record.Length != _rs) throw new ArgumentException($"record must be {_rs} bytes", nameof(record));
        Span<byte> key = stackalloc byte[BtreeGeometry.MaxKeySize];
        key = key[.._ks];
        _ops.GetKey(record, key);
        LookupCore(key, BtreeLookup.Equal, out bool exact);
        if (exact) return false;
        Span<byte> entry = stackalloc byte[BtreeGeometry.MaxRecordSize];
        Span<byte> next = stackalloc byte[BtreeGeometry.MaxKeySize];
        record.CopyTo(entry);
        long entryPtr = BtreeHeader.NullPointer;
        int pos = _index[0];
        try
        {
            for (int level = 0; ; level++)
            {
                var b = Block(level);
                if (NumRecords(b) < MaxRecords(level))
                {
                    InsertEntry(b, level, pos, entry, entryPtr, MaxRecords(level));
                    Dirty(level);
                    FixKeysUpFrom(level);
                    break;
                }
                if (IsImageLevel(level))
                {
                    // A full inode root: its entries move into a new child block, which has room (a block holds
                    // more entries than a fork); the root keeps one entry for it.
                    NewInodeRoot(level);
                    InsertEntry(Block(level), level, pos, entry, entryPtr);
                    Dirty(level);
                    FixKeysUpFrom(level);
                    break;
                }
                if (level < _height - 1 && (TryShiftRight(level, pos, entry, entryPtr) || TryShiftLeft(level, pos, entry, entryPtr)))
                {
                    FixKeysUpFrom(level + 1);
                    break;
                }
                long newPtr = Split(level, pos, entry, entryPtr, next[.._slot]);
                if (level == _height - 1)
                {
                    NewRoot(level, newPtr, next[.._slot]);
                    break;
                }
                WriteSlot(level + 1, _index[level + 1], Block(level));
                next[.._slot].CopyTo(entry);
                entryPtr = newPtr;
                pos = _index[level + 1] + 1;
            }
        }
        finally
        {
            ReleaseBlocks();
            FinishWrite();
        }
        return true;
    }

    bool TryShiftRight(int level, int pos, ReadOnlySpan<byte> entry, long entryPtr)
    {
        int p = _index[level + 1];
        if (p + 1 >= NumRecords(Block(level + 1))) return false;
        long sibPtr = ChildPointer(level + 1, p + 1);
        var b = Block(level);
        long cur = _blocks[level].Pointer;
        if (BtreeHeader.RightSibling(b, _lf) != sibPtr) Corrupt(cur, $"right sibling is not the parent's next child {sibPtr}");
        var sib = ReadSideBlock(level, sibPtr);
        try
        {
            var s = SpanOf(sib);
            if (BtreeHeader.LeftSibling(s, _lf) != cur) Corrupt(sibPtr, $"left sibling does not point back to {cur}");
            int sn = NumRecords(s);
            if (sn >= _geo.MaxRecords(level)) return false;
            int n = NumRecords(b);
            if (pos == n)
            {
                InsertEntry(s, level, 0, entry, entryPtr);
            }
            else
            {
                OpenGap(s, level, 0, sn, _nodeMax);
                CopyEntries(b, n - 1, s, 0, 1, level);
                BtreeHeader.SetNumRecords(s, sn + 1);
                BtreeHeader.SetNumRecords(b, n - 1);
                InsertEntry(b, level, pos, entry, entryPtr);
            }
            _store.MarkDirty(sib);
            Dirty(level);
            WriteSlot(level + 1, p, b);
            WriteSlot(level + 1, p + 1, s);
            return true;
        }
        finally { _store.Release(sib); }
    }

    bool TryShiftLeft(int level, int pos, ReadOnlySpan<byte> entry, long entryPtr)
    {
        int p = _index[level + 1];
        if (p == 0) return false;
        long sibPtr = ChildPointer(level + 1, p - 1);
        var b = Block(level);
        long cur = _blocks[level].Pointer;
        if (BtreeHeader.LeftSibling(b, _lf) != sibPtr) Corrupt(cur, $"left sibling is not the parent's previous child {sibPtr}");
        var sib = ReadSideBlock(level, sibPtr);
        try
        {
            var s = SpanOf(sib);
            if (BtreeHeader.RightSibling(s, _lf) != cur) Corrupt(sibPtr, $"right sibling does not point back to {cur}");
            int sn = NumRecords(s);
            if (sn >= _geo.MaxRecords(level)) return false;
            int n = NumRecords(b);
            if (pos == 0)
            {
                InsertEntry(s, level, sn, entry, entryPtr);
            }
            else
            {
                CopyEntries(b, 0, s, sn, 1, level);
                BtreeHeader.SetNumRecords(s, sn + 1);
                CloseGap(b, level, 0, n, _nodeMax);
                BtreeHeader.SetNumRecords(b, n - 1);
                InsertEntry(b, level, pos - 1, entry, entryPtr);
            }
            _store.MarkDirty(sib);
            Dirty(level);
            WriteSlot(level + 1, p - 1, s);
            WriteSlot(level + 1, p, b);
            return true;
        }
        finally { _store.Release(sib); }
    }

    /// <summary>Splits the full path block at <paramref name="level"/> while inserting the entry; returns the new right block and its keys.</summary>
    long Split(int level, int pos, ReadOnlySpan<byte> entry, long entryPtr, Span<byte> newKeys)
    {
        var b = Block(level);
        long cur = _blocks[level].Pointer;
        int n = NumRecords(b);
        long oldRight = BtreeHeader.RightSibling(b, _lf);
        long newPtr = _store.AllocateBlock();
        var nb = _store.GetNew(newPtr, _verifier);
        try
        {
            _tree.InitializeBlock(nb, level);
            var s = SpanOf(nb);
            int leftCount = (n + 2) / 2;
            if (pos < leftCount)
            {
                int move = n - (leftCount - 1);
                CopyEntries(b, leftCount - 1, s, 0, move, level);
                BtreeHeader.SetNumRecords(s, move);
                BtreeHeader.SetNumRecords(b, leftCount - 1);
                InsertEntry(b, level, pos, entry, entryPtr);
            }
            else
            {
                int move = n - leftCount;
                CopyEntries(b, leftCount, s, 0, move, level);
                BtreeHeader.SetNumRecords(s, move);
                BtreeHeader.SetNumRecords(b, leftCount);
                InsertEntry(s, level, pos - leftCount, entry, entryPtr);
            }
            BtreeHeader.SetLeftSibling(s, _lf, cur);
            BtreeHeader.SetRightSibling(s, _lf, oldRight);
            BtreeHeader.SetRightSibling(b, _lf, newPtr);
            if (oldRight != BtreeHeader.NullPointer) RelinkLeft(level, oldRight, cur, newPtr);
            Span<byte> tmp = stackalloc byte[BtreeGeometry.MaxKeySize];
            ComputeKeys(s, level, newKeys[.._ks], _geo.Overlapping ? newKeys.Slice(_ks, _ks) : default, tmp[.._ks]);
            _store.MarkDirty(nb);
            Dirty(level);
        }
        finally { _store.Release(nb); }
        return newPtr;
    }

    /// <summary>Sets the left sibling of block <paramref name="ptr"/> from <paramref name="expected"/> to <paramref name="replacement"/>.</summary>
    void RelinkLeft(int level, long ptr, long expected, long replacement)
    {
        var side = ReadSideBlock(level, ptr);
        try
        {
            var s = SpanOf(side);
            if (BtreeHeader.LeftSibling(s, _lf) != expected) Corrupt(ptr, $"left sibling {BtreeHeader.LeftSibling(s, _lf)}, expected {expected}");
            BtreeHeader.SetLeftSibling(s, _lf, replacement);
            _store.MarkDirty(side);
        }
        finally { _store.Release(side); }
    }

    void NewRoot(int level, long rightPtr, ReadOnlySpan<byte> rightKeys)
    {
        if (_height + 1 > _geo.MaxLevels) throw new InvalidOperationException($"{_tree.Name}: tree would exceed {_geo.MaxLevels} levels");
        long rootPtr = _store.AllocateBlock();
        var rb = _store.GetNew(rootPtr, _verifier);
        try
        {
            _tree.InitializeBlock(rb, level + 1);
            var r = SpanOf(rb);
            Span<byte> scratch = stackalloc byte[3 * BtreeGeometry.MaxKeySize];
            var low = scratch[.._ks];
            var high = scratch.Slice(BtreeGeometry.MaxKeySize, _ks);
            ComputeKeys(Block(level), level, low, high, scratch.Slice(2 * BtreeGeometry.MaxKeySize, _ks));
            low.CopyTo(r[_geo.KeyOffset(0)..]);
            if (_geo.Overlapping) high.CopyTo(r[(_geo.KeyOffset(0) + _ks)..]);
            BtreeHeader.WritePointer(r[_geo.PointerOffset(0, _geo.NodeMaxRecords)..], _lf, _blocks[level].Pointer);
            rightKeys[.._slot].CopyTo(r[_geo.KeyOffset(1)..]);
            BtreeHeader.WritePointer(r[_geo.PointerOffset(1, _geo.NodeMaxRecords)..], _lf, rightPtr);
            BtreeHeader.SetNumRecords(r, 2);
            _store.MarkDirty(rb);
        }
        finally { _store.Release(rb); }
        _tree.Root.Set(rootPtr, _height + 1);
    }

    /// <summary>
    /// XFS's new_iroot: moves every entry of the full inode root at <paramref name="level"/> into a newly allocated
    /// block at the same level, and makes the root a node one level up with a single entry for it. The new block
    /// takes the root's place on the path (same index), the root moves up with index 0.
    /// </summary>
    void NewInodeRoot(int level)
    {
        Debug.Assert(IsImageLevel(level) && level == _height - 1, "new_iroot below the inode root");
        if (_height + 1 > _geo.MaxLevels) throw new InvalidOperationException($"{_tree.Name}: tree would exceed {_geo.MaxLevels} levels");
        var root = Block(level);
        int n = NumRecords(root);
        if (n > _nodeMax) throw new InvalidOperationException($"{_tree.Name}: inode root of {n} entries does not fit a block of {_nodeMax}");
        long childPtr = _store.AllocateBlock();
        var cb = _store.GetNew(childPtr, _verifier);
        Span<byte> scratch = stackalloc byte[3 * BtreeGeometry.MaxKeySize];
        var low = scratch[.._ks];
        var high = scratch.Slice(BtreeGeometry.MaxKeySize, _ks);
        try
        {
            _tree.InitializeBlock(cb, level);
            var c = SpanOf(cb);
            CopyEntries(root, 0, _imageMax, c, 0, _nodeMax, n, level);
            BtreeHeader.SetNumRecords(c, n);
            ComputeKeys(c, level, low, high, scratch.Slice(2 * BtreeGeometry.MaxKeySize, _ks));
            _store.MarkDirty(cb);
        }
        catch
        {
            _store.Release(cb);
            throw;
        }
        _blocks[level + 1] = _blocks[level];
        _blocks[level] = cb;
        _index[level + 1] = 0;
        _height++;
        _imageLevel++;
        BtreeHeader.SetLevel(root, level + 1);
        BtreeHeader.SetNumRecords(root, 1);
        low.CopyTo(KeyAt(root, 0));
        if (_geo.Overlapping) high.CopyTo(HighKeyAt(root, 0));
        BtreeHeader.WritePointer(root[_geo.PointerOffset(0, _imageMax)..], _lf, childPtr);
        _imageChanged = true;
    }

    // ---------------------------------------------------------------- delete

    /// <summary>Deletes the record under the cursor, rebalancing (borrow, join, root collapse). The cursor is unpositioned afterwards.</summary>
    public void Delete()
    {
        EnsureWritable();
        if (!HasRecord) throw new InvalidOperationException("cursor is not on a record");
        try
        {
            int level = 0, pos = _index[0];
            while (true)
            {
                var b = Block(level);
                int n = NumRecords(b);
                CloseGap(b, level, pos, n, MaxRecords(level));
                BtreeHeader.SetNumRecords(b, --n);
                Dirty(level);
                if (level == _height - 1)
                {
                    if (IsImageLevel(level)) TryKillInodeRoot();
                    else if (level > 0 && n == 1) CollapseRoot(level);
                    break;
                }
                int min = _geo.MinRecords(level);
                if (n >= min)
                {
                    FixKeysUpFrom(level);
                    break;
                }
                int p = _index[level + 1];
                int pn = NumRecords(Block(level + 1));
                long cur = _blocks[level].Pointer;
                if (p + 1 < pn)
                {
                    long rightPtr = ChildPointer(level + 1, p + 1);
                    if (BtreeHeader.RightSibling(b, _lf) != rightPtr) Corrupt(cur, $"right sibling is not the parent's next child {rightPtr}");
                    var rb = ReadSideBlock(level, rightPtr);
                    bool joined;
                    try
                    {
                        var r = SpanOf(rb);
                        if (BtreeHeader.LeftSibling(r, _lf) != cur) Corrupt(rightPtr, $"left sibling does not point back to {cur}");
                        int rn = NumRecords(r);
                        if (rn > min)
                        {
                            CopyEntries(r, 0, b, n, 1, level);
                            BtreeHeader.SetNumRecords(b, n + 1);
                            CloseGap(r, level, 0, rn, _nodeMax);
                            BtreeHeader.SetNumRecords(r, rn - 1);
                            _store.MarkDirty(rb);
                            WriteSlot(level + 1, p, b);
                            WriteSlot(level + 1, p + 1, r);
                            joined = false;
                        }
                        else
                        {
                            CopyEntries(r, 0, b, n, rn, level);
                            BtreeHeader.SetNumRecords(b, n + rn);
                            long far = BtreeHeader.RightSibling(r, _lf);
                            BtreeHeader.SetRightSibling(b, _lf, far);
                            if (far != BtreeHeader.NullPointer) RelinkLeft(level, far, rightPtr, cur);
                            _store.MarkStale(rb);
                            WriteSlot(level + 1, p, b);
                            joined = true;
                        }
                    }
                    finally { _store.Release(rb); }
                    if (!joined)
                    {
                        FixKeysUpFrom(level + 1);
                        break;
                    }
                    _store.FreeBlock(rightPtr);
                    level++;
                    pos = p + 1;
                    continue;
                }
                if (p > 0)
                {
                    long leftPtr = ChildPointer(level + 1, p - 1);
                    if (BtreeHeader.LeftSibling(b, _lf) != leftPtr) Corrupt(cur, $"left sibling is not the parent's previous child {leftPtr}");
                    var lb = ReadSideBlock(level, leftPtr);
                    var l = SpanOf(lb);
                    try
                    {
                        if (BtreeHeader.RightSibling(l, _lf) != cur) Corrupt(leftPtr, $"right sibling does not point back to {cur}");
                    }
                    catch { _store.Release(lb); throw; }
                    int ln = NumRecords(l);
                    if (ln > min)
                    {
                        try
                        {
                            OpenGap(b, level, 0, n, MaxRecords(level));
                            CopyEntries(l, ln - 1, b, 0, 1, level);
                            BtreeHeader.SetNumRecords(b, n + 1);
                            BtreeHeader.SetNumRecords(l, ln - 1);
                            _store.MarkDirty(lb);
                            WriteSlot(level + 1, p - 1, l);
                            WriteSlot(level + 1, p, b);
                        }
                        finally { _store.Release(lb); }
                        FixKeysUpFrom(level + 1);
                        break;
                    }
                    // Join this block into its left sibling; the left block takes its place on the path.
                    try
                    {
                        CopyEntries(b, 0, l, ln, n, level);
                        BtreeHeader.SetNumRecords(l, ln + n);
                        long far = BtreeHeader.RightSibling(b, _lf);
                        BtreeHeader.SetRightSibling(l, _lf, far);
                        if (far != BtreeHeader.NullPointer) RelinkLeft(level, far, cur, leftPtr);
                        _store.MarkDirty(lb);
                        WriteSlot(level + 1, p - 1, l);
                    }
                    catch { _store.Release(lb); throw; }
                    _store.MarkStale(_blocks[level]);
                    _store.Release(_blocks[level]);
                    _blocks[level] = lb;
                    _store.FreeBlock(cur);
                    level++;
                    pos = p;
                    continue;
                }
                if (IsImageLevel(level + 1))
                {
                    // The only child of an inode root (no siblings): XFS tries to pull its entries up (kill_iroot).
                    // A leaf under a level-1 root may become empty; a node never does (joins leave entries).
                    if (n > 0) FixKeysUpFrom(level);
                    else if (level > 0) Corrupt(cur, "only child of the inode root became empty");
                    TryKillInodeRoot();
                    break;
                }
                if (n == 0) Corrupt(cur, "only child of its parent became empty");
                FixKeysUpFrom(level);
                break;
            }
        }
        finally
        {
            ReleaseBlocks();
            FinishWrite();
        }
    }

    /// <summary>
    /// XFS's kill_iroot: when the inode root (level 2 or more) has a single child whose entries fit in the fork,
    /// moves them into the root, frees the child and lowers the tree by one. The root never goes below level 1.
    /// The child is the path block below the root (the delete walked through it).
    /// </summary>
    void TryKillInodeRoot()
    {
        int rootLevel = _height - 1;
        Debug.Assert(IsImageLevel(rootLevel), "kill_iroot on a block root");
        if (rootLevel < 2) return;
        var root = Block(rootLevel);
        if (NumRecords(root) != 1) return;
        int childLevel = rootLevel - 1;
        long child = ChildPointer(rootLevel, 0);
        if (_blocks[childLevel].IsNull || _blocks[childLevel].Pointer != child) Corrupt(child, "the inode root's only child is not the path block below it");
        var c = Block(childLevel);
        int cn = NumRecords(c);
        if (cn > _imageMax) return;
        BtreeHeader.SetLevel(root, childLevel);
        CopyEntries(c, 0, _nodeMax, root, 0, _imageMax, cn, childLevel);
        BtreeHeader.SetNumRecords(root, cn);
        _store.MarkStale(_blocks[childLevel]);
        _store.Release(_blocks[childLevel]);
        _blocks[childLevel] = _blocks[rootLevel];
        _blocks[rootLevel] = default;
        _store.FreeBlock(child);
        _height--;
        _imageLevel--;
        _imageChanged = true;
    }

    void CollapseRoot(int level)
    {
        long child = ChildPointer(level, 0);
        long old = _blocks[level].Pointer;
        _store.MarkStale(_blocks[level]);
        _store.Release(_blocks[level]);
        _blocks[level] = default;
        _store.FreeBlock(old);
        _tree.Root.Set(child, _height - 1);
    }

    // ---------------------------------------------------------------- queries

    /// <summary>
    /// Visits, in key order, every record whose key interval [key, high key] intersects [<paramref name="low"/>,
    /// <paramref name="high"/>]. Overlapping trees use the interval-tree walk over node high keys; other trees
    /// an LE lookup and a leaf walk. Returns false when the visitor stopped the query.
    /// </summary>
    public bool Query<TVisitor>(scoped ReadOnlySpan<byte> low, scoped ReadOnlySpan<byte> high, ref TVisitor visitor)
        where TVisitor : IBtreeRecordVisitor, allows ref struct
    {
        if (low.Length < _ks || high.Length < _ks) throw new ArgumentException($"keys must be {_ks} bytes");
        if (_ops.CompareKeys(low, high) > 0) return true;
        return _geo.Overlapping ? OverlappedQuery(low, high, ref visitor) : SimpleQuery(low, high, ref visitor);
    }

    /// <summary>Visits every record in key order.</summary>
    public bool QueryAll<TVisitor>(ref TVisitor visitor) where TVisitor : IBtreeRecordVisitor, allows ref struct
    {
        if (!MoveFirst()) return true;
        do
        {
            if (!visitor.Visit(Current)) return false;
        }
        while (Increment());
        return true;
    }

    bool SimpleQuery<TVisitor>(scoped ReadOnlySpan<byte> low, scoped ReadOnlySpan<byte> high, ref TVisitor visitor)
        where TVisitor : IBtreeRecordVisitor, allows ref struct
    {
        Span<byte> hk = stackalloc byte[BtreeGeometry.MaxKeySize];
        hk = hk[.._ks];
        if (!Lookup(low, BtreeLookup.LessOrEqual) && !Increment()) return true;
        _ops.GetHighKey(Current, hk);
        if (_ops.CompareKeys(hk, low) < 0 && !Increment()) return true;
        do
        {
            var rec = Current;
            if (_ops.CompareRecordToKey(rec, high) > 0) return true;
            if (!visitor.Visit(rec)) return false;
        }
        while (Increment());
        return true;
    }

    bool OverlappedQuery<TVisitor>(scoped ReadOnlySpan<byte> low, scoped ReadOnlySpan<byte> high, ref TVisitor visitor)
        where TVisitor : IBtreeRecordVisitor, allows ref struct
    {
        Span<byte> hk = stackalloc byte[BtreeGeometry.MaxKeySize];
        hk = hk[.._ks];
        BeginOperation();
        int level = _height - 1;
        EnterBlock(level, _rootPointer);
        _index[level] = 0;
        _positioned = false;
        ulong walked = 0; // levels with a key in _walkKeys
        while (true)
        {
            var b = Block(level);
            int n = NumRecords(b);
            int i = _index[level];
            if (i >= n)
            {
                if (++level >= _height) return true;
                _index[level]++;
                continue;
            }
            if (level == 0)
            {
                var rec = RecordAt(b, i);
                if (_ops.CompareRecordToKey(rec, high) > 0)
                {
                    _index[0] = n;
                    continue;
                }
                _ops.GetHighKey(rec, hk);
                if (_ops.CompareKeys(hk, low) >= 0 && !visitor.Visit(rec)) return false;
                _index[0]++;
                continue;
            }
            if (_ops.CompareKeys(KeyAt(b, i), high) > 0)
            {
                _index[level] = n;
                continue;
            }
            if (_ops.CompareKeys(HighKeyAt(b, i), low) >= 0)
            {
                // Bounded walk: the slot keys followed into one level strictly increase during a query, and the
                // child's first key must be the slot's key, so no block is entered twice even when child
                // pointers repeat (a DAG of n blocks would otherwise cost up to maxrecs^height descents).
                var slotKey = KeyAt(b, i);
                var last = _walkKeys.AsSpan((level - 1) * _ks, _ks);
                if ((walked & (1UL << (level - 1))) != 0 && _ops.CompareKeys(slotKey, last) <= 0)
                    Corrupt(_blocks[level].Pointer, $"key {i} at level {level} not above the previous key followed (keys out of order)");
                slotKey.CopyTo(last);
                walked |= 1UL << (level - 1);
                long child = ChildPointer(level, i);
                level--;
                EnterBlock(level, child);
                _index[level] = 0;
                FirstKey(level, hk);
                if (_ops.CompareKeys(hk, last) != 0) Corrupt(child, "first key differs from the parent's key for it");
            }
            else
            {
                _index[level]++;
            }
        }
    }

    struct AnyRecordVisitor : IBtreeRecordVisitor
    {
        public bool Found;
        public bool Visit(ReadOnlySpan<byte> record) { Found = true; return false; }
    }

    /// <summary>True when some record's key interval intersects [<paramref name="low"/>, <paramref name="high"/>].</summary>
    public bool HasRecords(ReadOnlySpan<byte> low, ReadOnlySpan<byte> high)
    {
        var v = new AnyRecordVisitor();
        Query(low, high, ref v);
        return v.Found;
    }

    /// <summary>Counts records by walking the leaf level (numrecs per leaf).</summary>
    public long CountRecords()
    {
        DescendEdge(0, left: true);
        long count = 0;
        do { count += NumRecords(Block(0)); }
        while (NextBlock(0));
        _positioned = false;
        return count;
    }

    bool NextBlock(int level)
    {
        _index[level] = NumRecords(Block(level)) - 1;
        return IncrementAt(level);
    }

    /// <summary>Visits every block, root level first, each level left to right (bounded; checks sibling agreement).</summary>
    public long VisitBlocks<TVisitor>(ref TVisitor visitor) where TVisitor : IBtreeBlockVisitor, allows ref struct
    {
        BeginOperation();
        long blocks = 0;
        for (int level = _height - 1; level >= 0; level--)
        {
            DescendEdge(level, left: true);
            do
            {
                visitor.Visit(level, _blocks[level].Pointer, Block(level));
                blocks++;
            }
            while (level < _height - 1 && NextBlock(level));
        }
        _positioned = false;
        return blocks;
    }
}
