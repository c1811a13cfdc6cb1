using System.Diagnostics;
using System.Diagnostics.CodeAnalysis;
using Xfbtree.Buffers;

namespace Xfbtree.Btree;

// Writes that add or change records: update in place, insert with shifts into siblings, splits, a new root
// block, and new_iroot for an inode-fork root.
public sealed unsafe partial class BtreeCursor<TOps>
{
    /// <summary>
    /// Overwrites the record under the cursor and propagates key changes upward. The new record must keep its
    /// place in key order (same rule as XFS's update).
    /// </summary>
    public void Update(ReadOnlySpan<byte> record)
    {
        EnsureWritable();
        if (record.Length != _recordSize) throw new ArgumentException($"record must be {_recordSize} bytes", nameof(record));
        if (!HasRecord) throw new InvalidOperationException("cursor is not on a record");
        try
        {
            var b = Block(0);
            Changing(0);
            record.CopyTo(b.Slice(_geometry.RecordOffset(_index[0]), _recordSize));
            Dirty(0, _geometry.RecordOffset(_index[0]), _recordSize);
            FixKeysUpFrom(0);
        }
        finally { FinishWrite(); }
    }



    /// <summary>
    /// Inserts a record; false (tree unchanged) when a record with an equal key exists. May shift entries into a
    /// sibling, split blocks and grow a new root. The cursor is unpositioned afterwards.
    /// </summary>
    public bool Insert(ReadOnlySpan<byte> record)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (record.Length != _recordSize) throw new ArgumentException($"record must be {_recordSize} bytes", nameof(record));
        Span<byte> key = stackalloc byte[BtreeGeometry.MaxKeySize];
        key = key[.._keySize];
        _ops.GetKey(record, key);
        bool exact;
        bool keptPath = _pathKept;
        if (keptPath)
        {
            int kept = TryInsertOnKeptPath(record, key);
            if (kept >= 0) return kept == 1;
        }
        _leafToChange = true;
        try
        {
            if (keptPath)
            {
                if (!RepositionFromKeptPath(key, out exact)) LookupCore(key, BtreeLookup.Equal, out exact);
            }
            else LookupCore(key, BtreeLookup.Equal, out exact);
        }
        finally { _leafToChange = false; }
        EnsureWritable();
        if (exact) return false;
        Span<byte> entry = stackalloc byte[BtreeGeometry.MaxRecordSize];
        Span<byte> next = stackalloc byte[BtreeGeometry.MaxKeySize];
        record.CopyTo(entry);
        long entryPtr = BtreeHeader.NullPointer;
        int pos = _index[0];
        bool pathIntact = false;
        try
        {
            for (int level = 0; ; level++)
            {
                var b = Block(level);
                if (NumRecords(b) < MaxRecords(level))
                {
                    Changing(level);
                    InsertEntry(b, level, pos, entry, entryPtr, MaxRecords(level));
                    DirtyEntries(level, pos, NumRecords(b));
                    if (level == 0) FixKeysAfterLeafInsert(pos, entry[.._recordSize]);
                    else FixKeysUpFrom(level);
                    pathIntact = level == 0;
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
                    if (level == 0 && _geometry.Overlapping)
                    {
                        // The parent covers the same records plus the new one: its keys move exactly as after a
                        // plain leaf insert (the shift only moved records between two of its children).
                        // Its low key moved iff the record is now its first (keys are unique).
                        _ops.GetKey(entry[.._recordSize], next[.._keySize]);
                        RaiseKeysAfterLeafInsert(1, entry[.._recordSize], KeyAt(Block(1), 0).SequenceEqual(next[.._keySize]));
                    }
                    else FixKeysUpFrom(level + 1);
                    break;
                }
                long newPtr = Split(level, pos, entry, entryPtr, next[.._keySlotSize]);
                if (level == _height - 1)
                {
                    NewRoot(level, newPtr, next[.._keySlotSize]);
                    break;
                }
                WriteSlot(level + 1, _index[level + 1], Block(level));
                next[.._keySlotSize].CopyTo(entry);
                entryPtr = newPtr;
                pos = _index[level + 1] + 1;
            }
        }
        finally
        {
            // A plain leaf insert leaves the path valid: keep it (when holding blocks is free) so that the next
            // insert into the same leaf, e.g. the next of a run of ascending keys, needs no descent.
            if (pathIntact && _imageLevel < 0 && _store.PathsMayStayHeld)
            {
                _positioned = false;
                _pathKept = true;
                _pathStamp = _tree.WriteStamp;
            }
            else ReleaseBlocks();
            FinishWrite();
        }
        return true;
    }

    /// <summary>
    /// Inserts into the leaf of the path kept by the previous insert when the key belongs there and the leaf has room:
    /// 1 inserted, 0 duplicate, -1 not applicable (the caller does the full insert). The key belongs to the leaf when it
    /// lies between the leaf's first and last records, or beyond an end that has no sibling (the parents' keys are the
    /// blocks' low keys, so a descent would choose the same leaf). Nothing of the tree changed since the path was kept:
    /// every write of any cursor bumps the tree's stamp.
    /// </summary>
    int TryInsertOnKeptPath(ReadOnlySpan<byte> record, ReadOnlySpan<byte> key)
    {
        if (_tree.WriteStamp != _pathStamp || _tree.Root.Pointer != _rootPointer || _tree.Root.Height != _height)
        {
            ReleaseBlocks();
            return -1;
        }
        var b = Block(0);
        int n = NumRecords(b);
        if (n == 0 || n >= _leafMaxRecords) return -1;
        byte* records = _blocks[0].Data + _headerSize;
        int pos;
        int last = Compare(records + (long)(n - 1) * _recordSize, leaf: true, key);
        if (last == 0) return 0;
        if (last < 0)
        {
            if (BtreeHeader.RightSibling(b, _longPointers) != BtreeHeader.NullPointer) return -1;
            pos = n;
        }
        else
        {
            int first = Compare(records, leaf: true, key);
            if (first == 0) return 0;
            if (first > 0)
            {
                if (BtreeHeader.LeftSibling(b, _longPointers) != BtreeHeader.NullPointer) return -1;
                pos = 0;
            }
            else
            {
                pos = LowerBound(records, null, n, leaf: true, key, out bool exact);
                if (exact) return 0;
            }
        }
        EnsureWritable();
        Changing(0);
        InsertEntry(b, 0, pos, record, BtreeHeader.NullPointer, _leafMaxRecords);
        DirtyEntries(0, pos, n + 1);
        FixKeysAfterLeafInsert(pos, record);
        _pathStamp = _tree.WriteStamp;
        KeptPathInserts++;
        return 1;
    }

    /// <summary>
    /// Inserts a run of records into the leaf of the kept insert path in one merge (one shift of the leaf's tail
    /// instead of one per record): the longest prefix of <paramref name="sorted"/> (records sorted ascending, repeats
    /// allowed) that belongs to that leaf (as in <see cref="TryInsertOnKeptPath"/>) and fits its free room. Records whose
    /// key is in the leaf already, or repeats an earlier record of the run, are skipped (the first wins). Returns how
    /// many records of <paramref name="sorted"/> it took (inserted or skipped) and sets <paramref name="inserted"/>;
    /// 0 when no path is kept or fewer than two records would go in (the caller inserts the first record alone).
    /// </summary>
    internal int InsertRunOnKeptPath(ReadOnlySpan<byte> sorted, out int inserted)
    {
        inserted = 0;
        int count = sorted.Length / _recordSize;
        if (!_pathKept || count < 2) return 0;
        if (_tree.WriteStamp != _pathStamp || _tree.Root.Pointer != _rootPointer || _tree.Root.Height != _height)
        {
            ReleaseBlocks();
            _pathKept = false;
            return 0;
        }
        var b = Block(0);
        int n = NumRecords(b);
        int room = _leafMaxRecords - n;
        if (n == 0 || room < 2) return 0;
        byte* records = _blocks[0].Data + _headerSize;
        bool hasLeft = BtreeHeader.LeftSibling(b, _longPointers) != BtreeHeader.NullPointer;
        bool hasRight = BtreeHeader.RightSibling(b, _longPointers) != BtreeHeader.NullPointer;
        Span<byte> key = stackalloc byte[BtreeGeometry.MaxKeySize];
        key = key[.._keySize];
        // The run: from the first record while each belongs to this leaf (at most the free room).
        int run = 0;
        while (run < count && run < room)
        {
            _ops.GetKey(sorted.Slice(run * _recordSize, _recordSize), key);
            if (run == 0 && hasLeft && Compare(records, leaf: true, key) > 0) return 0;
            if (hasRight && Compare(records + (long)(n - 1) * _recordSize, leaf: true, key) < 0) break;
            run++;
        }
        if (run < 2) return 0;
        // Merge the leaf's records from the first one at or above the run's first key with the run, into a copy.
        _ops.GetKey(sorted[.._recordSize], key);
        int from = LowerBound(records, null, n, leaf: true, key, out _);
        Span<byte> merged = stackalloc byte[(n - from + run) * _recordSize];
        int a = from, written = 0;
        for (int j = 0; j < run; j++)
        {
            var record = sorted.Slice(j * _recordSize, _recordSize);
            _ops.GetKey(record, key);
            int c = -1;
            while (a < n && (c = Compare(records + (long)a * _recordSize, leaf: true, key)) < 0)
            {
                new ReadOnlySpan<byte>(records + (long)a * _recordSize, _recordSize).CopyTo(merged[(written * _recordSize)..]);
                written++;
                a++;
            }
            if (a < n && c == 0) continue;                                                            // in the tree already
            if (j > 0 && _ops.CompareRecordToKey(sorted.Slice((j - 1) * _recordSize, _recordSize), key) == 0) continue; // repeated in the run
            record.CopyTo(merged[(written * _recordSize)..]);
            written++;
            inserted++;
        }
        if (inserted == 0) return run;
        new ReadOnlySpan<byte>(records + (long)a * _recordSize, (n - a) * _recordSize).CopyTo(merged[(written * _recordSize)..]);
        written += n - a;
        EnsureWritable();
        Changing(0);
        merged[..(written * _recordSize)].CopyTo(new Span<byte>(records + (long)from * _recordSize, written * _recordSize));
        BtreeHeader.SetNumRecords(b, n + inserted);
        DirtyEntries(0, from, n + inserted);
        // A new first record changes the parent's low key; an interval leaf's high key may rise: both are recomputed
        // from the leaf and propagated until a parent slot is unchanged.
        if (from == 0 || _geometry.Overlapping) FixKeysUpFrom(0);
        _pathStamp = _tree.WriteStamp;
        KeptPathInserts += inserted;
        RunInserts += inserted;
        return run;
    }

    /// <summary>Key update after a record went into the path leaf at <paramref name="pos"/> without any split or shift.</summary>
    void FixKeysAfterLeafInsert(int pos, ReadOnlySpan<byte> record)
    {
        if (_geometry.Overlapping) RaiseKeysAfterLeafInsert(0, record, pos == 0);
        else if (pos == 0) FixKeysUpFrom(0); // only a new first record changes a parent key (the low key)
    }

    bool TryShiftRight(int level, int pos, ReadOnlySpan<byte> entry, long entryPtr)
    {
        int p = _index[level + 1];
        if (p + 1 >= NumRecords(Block(level + 1))) return false;
        long sibPtr = ChildPointer(level + 1, p + 1);
        var b = Block(level);
        long cur = _blocks[level].Pointer;
        if (BtreeHeader.RightSibling(b, _longPointers) != sibPtr) Corrupt(cur, $"right sibling is not the parent's next child {sibPtr}");
        var sib = ReadSideBlock(level, sibPtr);
        try
        {
            var s = SpanOf(sib);
            if (BtreeHeader.LeftSibling(s, _longPointers) != cur) Corrupt(sibPtr, $"left sibling does not point back to {cur}");
            int sn = NumRecords(s);
            if (sn >= _geometry.MaxRecords(level)) return false;
            int n = NumRecords(b);
            _store.BeginChange(sib);
            Changing(level);
            if (pos == n)
            {
                InsertEntry(s, level, 0, entry, entryPtr);
            }
            else
            {
                // XFS moves one entry; moving half the sibling's room (of the entries after the insertion point)
                // keeps the blocks as full, but the next inserts here find room instead of shifting (and recomputing
                // both blocks' keys) once per record.
                int move = Math.Max(1, Math.Min((_geometry.MaxRecords(level) - sn) / 2, n - pos));
                OpenGap(s, level, 0, sn, _nodeMaxRecords, move);
                CopyEntries(b, n - move, s, 0, move, level);
                BtreeHeader.SetNumRecords(s, sn + move);
                BtreeHeader.SetNumRecords(b, n - move);
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
        if (BtreeHeader.LeftSibling(b, _longPointers) != sibPtr) Corrupt(cur, $"left sibling is not the parent's previous child {sibPtr}");
        var sib = ReadSideBlock(level, sibPtr);
        try
        {
            var s = SpanOf(sib);
            if (BtreeHeader.RightSibling(s, _longPointers) != cur) Corrupt(sibPtr, $"right sibling does not point back to {cur}");
            int sn = NumRecords(s);
            if (sn >= _geometry.MaxRecords(level)) return false;
            int n = NumRecords(b);
            _store.BeginChange(sib);
            Changing(level);
            if (pos == 0)
            {
                InsertEntry(s, level, sn, entry, entryPtr);
            }
            else
            {
                // XFS moves one entry. Here half the sibling's room moves (as in TryShiftRight), and an append at the
                // end of the last block of its level (a run of ascending keys) moves as many as the sibling takes,
                // keeping minrecs here: the appends that follow find room and the sibling ends full, instead of
                // shifting a whole block for every record.
                int room = _geometry.MaxRecords(level) - sn;
                int move = Math.Max(1, Math.Min(room / 2, pos)); // as in TryShiftRight: half the room, entries before pos
                if (pos == n && BtreeHeader.RightSibling(b, _longPointers) == BtreeHeader.NullPointer)
                    move = Math.Max(1, Math.Min(room, n + 1 - _geometry.MinRecords(level)));
                CopyEntries(b, 0, s, sn, move, level);
                BtreeHeader.SetNumRecords(s, sn + move);
                CloseGap(b, level, 0, n, _nodeMaxRecords, move);
                BtreeHeader.SetNumRecords(b, n - move);
                InsertEntry(b, level, pos - move, entry, entryPtr);
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
        long oldRight = BtreeHeader.RightSibling(b, _longPointers);
        long newPtr = _store.AllocateBlock();
        var nb = _store.GetNew(newPtr, _verifier);
        try
        {
            Changing(level);
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
            BtreeHeader.SetLeftSibling(s, _longPointers, cur);
            BtreeHeader.SetRightSibling(s, _longPointers, oldRight);
            BtreeHeader.SetRightSibling(b, _longPointers, newPtr);
            if (oldRight != BtreeHeader.NullPointer) RelinkLeft(level, oldRight, cur, newPtr);
            Span<byte> tmp = stackalloc byte[BtreeGeometry.MaxKeySize];
            ComputeKeys(s, level, newKeys[.._keySize], _geometry.Overlapping ? newKeys.Slice(_keySize, _keySize) : default, tmp[.._keySize]);
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
            if (BtreeHeader.LeftSibling(s, _longPointers) != expected) Corrupt(ptr, $"left sibling {BtreeHeader.LeftSibling(s, _longPointers)}, expected {expected}");
            _store.BeginChange(side);
            BtreeHeader.SetLeftSibling(s, _longPointers, replacement);
            _store.MarkDirty(side);
        }
        finally { _store.Release(side); }
    }

    void NewRoot(int level, long rightPtr, ReadOnlySpan<byte> rightKeys)
    {
        if (_height + 1 > _geometry.MaxLevels) throw new InvalidOperationException($"{_tree.Name}: tree would exceed {_geometry.MaxLevels} levels");
        long rootPtr = _store.AllocateBlock();
        var rb = _store.GetNew(rootPtr, _verifier);
        try
        {
            _tree.InitializeBlock(rb, level + 1);
            var r = SpanOf(rb);
            Span<byte> scratch = stackalloc byte[3 * BtreeGeometry.MaxKeySize];
            var low = scratch[.._keySize];
            var high = scratch.Slice(BtreeGeometry.MaxKeySize, _keySize);
            ComputeKeys(Block(level), level, low, high, scratch.Slice(2 * BtreeGeometry.MaxKeySize, _keySize));
            low.CopyTo(r[_geometry.KeyOffset(0)..]);
            if (_geometry.Overlapping) high.CopyTo(r[(_geometry.KeyOffset(0) + _keySize)..]);
            BtreeHeader.WritePointer(r[_geometry.PointerOffset(0, _geometry.NodeMaxRecords)..], _longPointers, _blocks[level].Pointer);
            rightKeys[.._keySlotSize].CopyTo(r[_geometry.KeyOffset(1)..]);
            BtreeHeader.WritePointer(r[_geometry.PointerOffset(1, _geometry.NodeMaxRecords)..], _longPointers, rightPtr);
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
        if (_height + 1 > _geometry.MaxLevels) throw new InvalidOperationException($"{_tree.Name}: tree would exceed {_geometry.MaxLevels} levels");
        var root = Block(level);
        int n = NumRecords(root);
        if (n > _nodeMaxRecords) throw new InvalidOperationException($"{_tree.Name}: inode root of {n} entries does not fit a block of {_nodeMaxRecords}");
        long childPtr = _store.AllocateBlock();
        var cb = _store.GetNew(childPtr, _verifier);
        Span<byte> scratch = stackalloc byte[3 * BtreeGeometry.MaxKeySize];
        var low = scratch[.._keySize];
        var high = scratch.Slice(BtreeGeometry.MaxKeySize, _keySize);
        try
        {
            _tree.InitializeBlock(cb, level);
            var c = SpanOf(cb);
            CopyEntries(root, 0, _imageMaxRecords, c, 0, _nodeMaxRecords, n, level);
            BtreeHeader.SetNumRecords(c, n);
            ComputeKeys(c, level, low, high, scratch.Slice(2 * BtreeGeometry.MaxKeySize, _keySize));
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
        if (_geometry.Overlapping) high.CopyTo(HighKeyAt(root, 0));
        BtreeHeader.WritePointer(root[_geometry.PointerOffset(0, _imageMaxRecords)..], _longPointers, childPtr);
        _imageChanged = true;
    }
}
