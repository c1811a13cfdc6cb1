using System.Runtime.CompilerServices;

namespace Xfbtree.Btree;

// Leaf-at-a-time scans: a caller positioned in a leaf (MoveFirst, Lookup) walks the leaf's records itself through a
// pointer, and comes back to the cursor once per leaf (NextLeaf), which steps to the right sibling with every check
// Increment makes (sibling agreement through the parents, level, numrecs, key order between leaves). The per-record
// work is then the caller's own loop: no span, bounds or state checks per record.
public sealed unsafe partial class BtreeCursor<TOps>
{
    /// <summary>
    /// The leaf the cursor is positioned in: the address of its first record, and its record count. The count was
    /// checked against the leaf's maxrecs when the cursor entered the block, so <c>[records, records + count *
    /// RecordSize)</c> lies inside the block. Valid while the cursor holds the leaf: until it moves or is released, or
    /// another cursor changes the tree. The cursor's record index in it is <see cref="IndexAt"/>(0).
    /// </summary>
    internal byte* LeafRecords(out int count)
    {
        ThrowIfNotOnLeaf();
        byte* block = _blocks[0].Data;
        count = BtreeHeader.NumRecords(new ReadOnlySpan<byte>(block, _blockSize));
        return block + _headerSize;
    }

    /// <summary>Puts the cursor on record <paramref name="index"/> of its leaf (a position a leaf walk stopped at).</summary>
    internal void SetLeafIndex(int index)
    {
        ThrowIfNotOnLeaf();
        _index[0] = index;
    }

    /// <summary>
    /// Moves to the first record of the next leaf, with the checks of <see cref="Increment"/>; false at the end of
    /// the tree (the cursor is then after the last record). Also asks for the first lines of the leaf after that one
    /// (its memory is known without a read on memory stores), so they arrive while the caller walks this leaf.
    /// </summary>
    internal bool NextLeaf()
    {
        ThrowIfNotOnLeaf();
        int n = BtreeHeader.NumRecords(new ReadOnlySpan<byte>(_blocks[0].Data, _blockSize));
        _index[0] = n - 1;
        if (!Increment()) return false;
        PrefetchRightSibling();
        return true;
    }

    void PrefetchRightSibling()
    {
        if (!System.Runtime.Intrinsics.X86.Sse.IsSupported) return;
        long right = BtreeHeader.RightSibling(new ReadOnlySpan<byte>(_blocks[0].Data, _blockSize), _longPointers);
        if (right == BtreeHeader.NullPointer) return;
        // Never dereferenced: a prefetch of any address is harmless, and the store checked the pointer's range.
        byte* next = _store.PeekAddressForPrefetch(right);
        if (next == null) return;
        for (int off = 0; off < _blockSize; off += 64) System.Runtime.Intrinsics.X86.Sse.Prefetch0(next + off);
    }

    /// <summary>
    /// Visits every record in key order, like <see cref="QueryAll"/>, walking each leaf's records directly (one
    /// cursor step per leaf). Stops, with the cursor on the record, when the visitor returns false.
    /// </summary>
    internal bool VisitLeafRecords<TVisitor>(ref TVisitor visitor) where TVisitor : IBtreeRecordVisitor, allows ref struct
    {
        if (!MoveFirst()) return true;
        int rs = _recordSize;
        do
        {
            byte* records = LeafRecords(out int n);
            for (int i = 0; i < n; i++)
            {
                if (!visitor.Visit(new ReadOnlySpan<byte>(records + (nint)i * rs, rs)))
                {
                    _index[0] = i;
                    return false;
                }
            }
        }
        while (NextLeaf());
        return true;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    void ThrowIfNotOnLeaf()
    {
        if (!_positioned || _disposed || _blocks[0].IsNull) ThrowNotOnLeaf();
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    void ThrowNotOnLeaf()
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        throw new InvalidOperationException("cursor is not positioned in a leaf; call MoveFirst or Lookup first");
    }
}
