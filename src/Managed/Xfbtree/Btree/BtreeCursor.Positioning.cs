using System.Diagnostics;
using System.Diagnostics.CodeAnalysis;
using Xfbtree.Buffers;

namespace Xfbtree.Btree;

// Positioning: lookups (LE/EQ/GE), first/last, increment/decrement with the sibling and key-order checks that
// bound every walk, and the record under the cursor.
public sealed unsafe partial class BtreeCursor<TOps>
{
    /// <summary>Positions the cursor by key; returns true when a record satisfying <paramref name="mode"/> exists.</summary>
    public bool Lookup(ReadOnlySpan<byte> key, BtreeLookup mode) => LookupCore(key, mode, out _);

    /// <summary>
    /// <see cref="Lookup"/> (equal) before a <see cref="Delete"/>: the descent asks for the whole leaf as soon as it knows
    /// the leaf's number, since the delete will move the entries after the record (see <see cref="Descend"/>).
    /// </summary>
    internal bool LookupToDelete(ReadOnlySpan<byte> key)
    {
        _leafToChange = true;
        try { return LookupCore(key, BtreeLookup.Equal, out _); }
        finally { _leafToChange = false; }
    }

    bool LookupCore(ReadOnlySpan<byte> key, BtreeLookup mode, out bool exact)
    {
        if (key.Length < _keySize) throw new ArgumentException($"key must be {_keySize} bytes", nameof(key));
        BeginOperation();
        return Descend(_height - 1, _rootPointer, key, mode, out exact);
    }

    /// <summary>
    /// Positions the cursor on <paramref name="key"/> for an insert by descending only from the lowest block of the kept
    /// insert path whose subtree a descent from the root would also choose (sorted batches: the next key is usually under
    /// the same level-1 node, so the levels above it are not searched again). False, with the path released, when no path
    /// is kept or it is stale; the caller then descends from the root. Only the blocks below that level are entered again,
    /// with the same checks as any descent.
    /// </summary>
    bool RepositionFromKeptPath(ReadOnlySpan<byte> key, out bool exact)
    {
        exact = false;
        if (!_pathKept || _tree.WriteStamp != _pathStamp || _tree.Root.Pointer != _rootPointer || _tree.Root.Height != _height || _imageLevel >= 0)
        {
            ReleaseBlocks();
            return false;
        }
        // The highest level whose block must choose another child than the path's: the descent from the root picks the
        // last slot whose key is at most the key (slot 0 when every slot is above it), and the path's blocks below a
        // level that picks the same child are what a descent would enter again.
        int from = 0;
        for (int level = _height - 1; level >= 1; level--)
        {
            var b = Block(level);
            int n = NumRecords(b);
            int i = _index[level];
            if ((uint)i >= (uint)n) { from = -1; break; }
            if ((i > 0 && _ops.CompareKeys(KeyAt(b, i), key) > 0) || (i + 1 < n && _ops.CompareKeys(KeyAt(b, i + 1), key) <= 0))
            {
                from = level;
                break;
            }
        }
        if (from < 0)
        {
            ReleaseBlocks();
            return false;
        }
        _pathKept = false;
        if (from < _height - 1) KeptPathDescents++;
        Descend(from, _blocks[from].Pointer, key, BtreeLookup.Equal, out exact);
        return true;
    }

    bool Descend(int startLevel, long ptr, ReadOnlySpan<byte> key, BtreeLookup mode, out bool exact)
    {
        exact = false;
        int keyno = 0;
        bool exactAbove = false;
        for (int level = startLevel; level >= 0; level--)
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
            bool eq;
            if (exactAbove)
            {
                keyno = 0;
                eq = true;
            }
            else
            {
                byte* block = _blocks[level].Data;
                byte* pointers = level == 0 ? null : block + _headerSize + MaxRecords(level) * _keySlotSize;
                keyno = LowerBound(block + _headerSize, pointers, n, level == 0, key, out eq);
            }
            if (level > 0)
            {
                // The child to follow: the last slot whose key is at most the key (slot 0 when all are above).
                if (!eq && --keyno < 0) keyno = 0;
                if (eq) exactAbove = true;
                _index[level] = keyno;
                ptr = ChildPointer(level, keyno);
                if (!exactAbove)
                {
                    // An insert or delete moves the leaf's entries after its position: half a leaf on average, lines the
                    // search does not read. Asked for now, they arrive with the search's lines instead of one by one
                    // under the move. (A lookup reads ~16 lines of a leaf; the whole leaf measured slower there.)
                    byte* child = _store.PeekAddressForPrefetch(ptr);
                    if (level == 1 && _leafToChange && child != null) PrefetchLines(child, _blockSize);
                    else PrefetchSearchStart(child, level - 1);
                }
                continue;
            }
            _positioned = true;
            if (mode == BtreeLookup.GreaterOrEqual && keyno >= n)
            {
                _index[0] = n - 1;
                return Increment();
            }
            if (mode == BtreeLookup.LessOrEqual && !eq) keyno--;
            _index[0] = keyno;
            exact = eq;
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
        long right = BtreeHeader.RightSibling(b, _longPointers);
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
        var fromKey = keys[.._keySize];
        var toKey = keys.Slice(BtreeGeometry.MaxKeySize, _keySize);
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
        if (BtreeHeader.LeftSibling(Block(level), _longPointers) != from) Corrupt(right, $"left sibling does not point back to {from}");
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
        long left = BtreeHeader.LeftSibling(b, _longPointers);
        if (left == BtreeHeader.NullPointer) return false;
        return StepLeft(level, left);
    }

    /// <summary>Mirror of <see cref="StepRight"/>: the new block's first key must be below the old one's.</summary>
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.NoInlining)]
    bool StepLeft(int level, long left)
    {
        long from = _blocks[level].Pointer;
        Span<byte> keys = stackalloc byte[2 * BtreeGeometry.MaxKeySize];
        var fromKey = keys[.._keySize];
        var toKey = keys.Slice(BtreeGeometry.MaxKeySize, _keySize);
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
        if (BtreeHeader.RightSibling(Block(level), _longPointers) != from) Corrupt(left, $"right sibling does not point back to {from}");
        FirstKey(level, toKey);
        if (_ops.CompareKeys(toKey, fromKey) >= 0) Corrupt(left, $"first key not below the first key of its right sibling {from} (cycle?)");
        return true;
    }

    /// <summary>The low key of the first entry of the path block at <paramref name="level"/> (non-root blocks are never empty).</summary>
    void FirstKey(int level, Span<byte> key)
    {
        var b = Block(level);
        if (level == 0) _ops.GetKey(RecordAt(b, 0), key);
        else b.Slice(_headerSize, _keySize).CopyTo(key);
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
}
