using System.Diagnostics;
using System.Diagnostics.CodeAnalysis;
using Xfbtree.Buffers;

namespace Xfbtree.Btree;

// Node keys (computing a block's low/high keys, writing them into the parent slot, propagating them upward) and
// entry moves inside and between blocks (leaf: records; node: key slots + pointers), plus the write lifecycle.
public sealed partial class BtreeCursor<TOps>
{
    void ComputeKeys(ReadOnlySpan<byte> b, int level, Span<byte> low, Span<byte> high, Span<byte> tmp)
        => BtreeKeys.ComputeBlockKeys(_ops, _geometry, b, level, low, high, tmp);

    /// <summary>Writes the keys of <paramref name="child"/> into slot <paramref name="slot"/> of the path block at <paramref name="parentLevel"/>; true if they changed.</summary>
    bool WriteSlot(int parentLevel, int slot, ReadOnlySpan<byte> child)
    {
        Span<byte> scratch = stackalloc byte[3 * BtreeGeometry.MaxKeySize];
        var low = scratch[.._keySize];
        var high = scratch.Slice(BtreeGeometry.MaxKeySize, _keySize);
        var tmp = scratch.Slice(2 * BtreeGeometry.MaxKeySize, _keySize);
        ComputeKeys(child, parentLevel - 1, low, high, tmp);
        var parent = Block(parentLevel);
        var pk = KeyAt(parent, slot);
        bool same = pk.SequenceEqual(low) && (!_geometry.Overlapping || HighKeyAt(parent, slot).SequenceEqual(high));
        if (same) return false;
        Changing(parentLevel);
        low.CopyTo(pk);
        if (_geometry.Overlapping) high.CopyTo(HighKeyAt(parent, slot));
        Dirty(parentLevel, _geometry.KeyOffset(slot), _keySlotSize);
        return true;
    }

    /// <summary>
    /// Key update in an overlapping tree after a record went into the subtree of the path block at
    /// <paramref name="fromLevel"/> (into a leaf without split, or moved between two children of that block by a
    /// shift): each parent slot's high key can only rise to the record's high key, and its low key changes only
    /// when the record became the first of the block below (<paramref name="lowMoves"/>), so the slots are fixed in O(height)
    /// compares instead of recomputing every block's high key over all its entries.
    /// </summary>
    void RaiseKeysAfterLeafInsert(int fromLevel, ReadOnlySpan<byte> record, bool lowMoves)
    {
        Span<byte> scratch = stackalloc byte[2 * BtreeGeometry.MaxKeySize];
        var low = scratch[.._keySize];
        var high = scratch.Slice(BtreeGeometry.MaxKeySize, _keySize);
        _ops.GetKey(record, low);
        _ops.GetHighKey(record, high);
        for (int level = fromLevel; level < _height - 1; level++)
        {
            var parent = Block(level + 1);
            int slot = _index[level + 1];
            bool changed = false;
            bool lowChanged = false;
            if (lowMoves)
            {
                var slotLow = KeyAt(parent, slot);
                if (!slotLow.SequenceEqual(low))
                {
                    Changing(level + 1);
                    low.CopyTo(slotLow);
                    changed = lowChanged = true;
                }
            }
            var slotHigh = HighKeyAt(parent, slot);
            if (_ops.CompareKeys(high, slotHigh) > 0)
            {
                Changing(level + 1);
                high.CopyTo(slotHigh);
                changed = true;
            }
            if (!changed) break;
            Dirty(level + 1, _geometry.KeyOffset(slot), _keySlotSize);
            lowMoves = lowChanged && slot == 0;
        }
    }

    /// <summary>Propagates the keys of the path block at <paramref name="level"/> upward until a parent slot is unchanged.</summary>
    void FixKeysUpFrom(int level)
    {
        for (int l = level; l < _height - 1; l++)
            if (!WriteSlot(l + 1, _index[l + 1], Block(l))) break;
    }



    // Node entry moves take the node's maxrecs (max): it places the pointer array. It is NodeMaxRecords for every
    // block and the fork's maxrecs for an inode-root image (MaxRecords(level) of a path block gives the right one).

    /// <summary>Makes room for <paramref name="count"/> entries at <paramref name="pos"/> among the <paramref name="n"/> entries of a block.</summary>
    void OpenGap(Span<byte> b, int level, int pos, int n, int max, int count = 1)
    {
        if (pos >= n) return;
        if (level == 0)
        {
            b.Slice(_geometry.RecordOffset(pos), (n - pos) * _recordSize).CopyTo(b[_geometry.RecordOffset(pos + count)..]);
            return;
        }
        b.Slice(_geometry.KeyOffset(pos), (n - pos) * _keySlotSize).CopyTo(b[_geometry.KeyOffset(pos + count)..]);
        b.Slice(_geometry.PointerOffset(pos, max), (n - pos) * _pointerSize).CopyTo(b[_geometry.PointerOffset(pos + count, max)..]);
    }

    /// <summary>Removes <paramref name="count"/> entries at <paramref name="pos"/> from the <paramref name="n"/> entries of a block.</summary>
    void CloseGap(Span<byte> b, int level, int pos, int n, int max, int count = 1)
    {
        if (pos + count >= n) return;
        if (level == 0)
        {
            b.Slice(_geometry.RecordOffset(pos + count), (n - pos - count) * _recordSize).CopyTo(b[_geometry.RecordOffset(pos)..]);
            return;
        }
        b.Slice(_geometry.KeyOffset(pos + count), (n - pos - count) * _keySlotSize).CopyTo(b[_geometry.KeyOffset(pos)..]);
        b.Slice(_geometry.PointerOffset(pos + count, max), (n - pos - count) * _pointerSize).CopyTo(b[_geometry.PointerOffset(pos, max)..]);
    }

    void CopyEntries(ReadOnlySpan<byte> src, int srcPos, int srcMax, Span<byte> dst, int dstPos, int dstMax, int count, int level)
    {
        if (count <= 0) return;
        if (level == 0)
        {
            src.Slice(_geometry.RecordOffset(srcPos), count * _recordSize).CopyTo(dst[_geometry.RecordOffset(dstPos)..]);
            return;
        }
        src.Slice(_geometry.KeyOffset(srcPos), count * _keySlotSize).CopyTo(dst[_geometry.KeyOffset(dstPos)..]);
        src.Slice(_geometry.PointerOffset(srcPos, srcMax), count * _pointerSize).CopyTo(dst[_geometry.PointerOffset(dstPos, dstMax)..]);
    }

    /// <summary>Moves entries between two blocks (never the inode-root image).</summary>
    void CopyEntries(ReadOnlySpan<byte> src, int srcPos, Span<byte> dst, int dstPos, int count, int level)
        => CopyEntries(src, srcPos, _nodeMaxRecords, dst, dstPos, _nodeMaxRecords, count, level);

    void WriteEntry(Span<byte> b, int level, int pos, ReadOnlySpan<byte> entry, long ptr, int max)
    {
        if (level == 0)
        {
            entry[.._recordSize].CopyTo(b[_geometry.RecordOffset(pos)..]);
            return;
        }
        entry[.._keySlotSize].CopyTo(b[_geometry.KeyOffset(pos)..]);
        BtreeHeader.WritePointer(b[_geometry.PointerOffset(pos, max)..], _longPointers, ptr);
    }

    void InsertEntry(Span<byte> b, int level, int pos, ReadOnlySpan<byte> entry, long ptr, int max)
    {
        int n = NumRecords(b);
        OpenGap(b, level, pos, n, max);
        WriteEntry(b, level, pos, entry, ptr, max);
        BtreeHeader.SetNumRecords(b, n + 1);
    }

    /// <summary>Inserts into a block that is not the inode-root image (siblings, new blocks).</summary>
    void InsertEntry(Span<byte> b, int level, int pos, ReadOnlySpan<byte> entry, long ptr) => InsertEntry(b, level, pos, entry, ptr, _nodeMaxRecords);

    void EnsureWritable()
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        _tree.WriteStamp++;
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
}
