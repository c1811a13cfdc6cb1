using System.Diagnostics;
using System.Diagnostics.CodeAnalysis;
using Xfbtree.Buffers;

namespace Xfbtree.Btree;

// Delete with rebalancing: borrow from or join with a sibling, collapse a one-child root block, kill_iroot.
public sealed unsafe partial class BtreeCursor<TOps>
{
    /// <summary>
    /// Deletes a run of records from the cursor's leaf in one pass (one shift of the leaf instead of one per record):
    /// the cursor is on the record with the first key of <paramref name="sortedKeys"/> (keys sorted ascending, repeats
    /// allowed), and the run is the prefix of keys at or below the leaf's last record. Applies only when the leaf keeps
    /// at least minrecs records (or is the root), so nothing needs rebalancing. Returns how many keys it took (removed
    /// or absent) and sets <paramref name="removed"/>; 0 (nothing changed) when it does not apply: the caller deletes
    /// the record under the cursor alone. The cursor is unpositioned afterwards when it took any.
    /// </summary>
    internal int DeleteRunInLeaf(ReadOnlySpan<byte> sortedKeys, out int removed)
    {
        removed = 0;
        int count = sortedKeys.Length / _keySize;
        if (count < 2 || !HasRecord || _imageLevel >= 0) return 0;
        var b = Block(0);
        int n = NumRecords(b);
        int min = _height == 1 ? 0 : _geometry.MinRecords(0);
        if (n - 2 < min) return 0;
        byte* records = _blocks[0].Data + _headerSize;
        byte* lastRecord = records + (long)(n - 1) * _recordSize;
        int run = 0;
        while (run < count && Compare(lastRecord, leaf: true, sortedKeys.Slice(run * _keySize, _keySize)) >= 0) run++;
        if (run < 2) return 0;
        int from = _index[0];
        Span<byte> kept = stackalloc byte[(n - from) * _recordSize];
        int a = from, written = 0;
        for (int j = 0; j < run && a < n; j++)
        {
            var key = sortedKeys.Slice(j * _keySize, _keySize);
            int c = -1;
            while (a < n && (c = Compare(records + (long)a * _recordSize, leaf: true, key)) < 0)
            {
                new ReadOnlySpan<byte>(records + (long)a * _recordSize, _recordSize).CopyTo(kept[(written * _recordSize)..]);
                written++;
                a++;
            }
            if (a < n && c == 0)
            {
                a++;
                removed++;
            }
        }
        if (n - removed < min || removed == 0)
        {
            removed = 0;
            return 0;
        }
        new ReadOnlySpan<byte>(records + (long)a * _recordSize, (n - a) * _recordSize).CopyTo(kept[(written * _recordSize)..]);
        written += n - a;
        EnsureWritable();
        try
        {
            Changing(0);
            kept[..(written * _recordSize)].CopyTo(new Span<byte>(records + (long)from * _recordSize, written * _recordSize));
            BtreeHeader.SetNumRecords(b, n - removed);
            DirtyEntries(0, from, n - removed);
            // The first record gone changes the parent's low key; an interval leaf's high key may fall.
            if (from == 0 || _geometry.Overlapping) FixKeysUpFrom(0);
        }
        finally
        {
            ReleaseBlocks();
            FinishWrite();
        }
        RunDeletes += removed;
        return run;
    }

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
                Changing(level);
                CloseGap(b, level, pos, n, MaxRecords(level));
                BtreeHeader.SetNumRecords(b, --n);
                // Without a rebalance only the entries from pos on and the header changed; a borrow or a join
                // changes more of the block.
                if (level == _height - 1 || n >= _geometry.MinRecords(level)) DirtyEntries(level, pos, n);
                else Dirty(level);
                if (level == _height - 1)
                {
                    if (IsImageLevel(level)) TryKillInodeRoot();
                    else if (level > 0 && n == 1) CollapseRoot(level);
                    break;
                }
                int min = _geometry.MinRecords(level);
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
                    if (BtreeHeader.RightSibling(b, _longPointers) != rightPtr) Corrupt(cur, $"right sibling is not the parent's next child {rightPtr}");
                    var rb = ReadSideBlock(level, rightPtr);
                    bool joined;
                    try
                    {
                        var r = SpanOf(rb);
                        if (BtreeHeader.LeftSibling(r, _longPointers) != cur) Corrupt(rightPtr, $"left sibling does not point back to {cur}");
                        int rn = NumRecords(r);
                        if (rn > min)
                        {
                            _store.BeginChange(rb);
                            CopyEntries(r, 0, b, n, 1, level);
                            BtreeHeader.SetNumRecords(b, n + 1);
                            CloseGap(r, level, 0, rn, _nodeMaxRecords);
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
                            long far = BtreeHeader.RightSibling(r, _longPointers);
                            BtreeHeader.SetRightSibling(b, _longPointers, far);
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
                    if (BtreeHeader.LeftSibling(b, _longPointers) != leftPtr) Corrupt(cur, $"left sibling is not the parent's previous child {leftPtr}");
                    var lb = ReadSideBlock(level, leftPtr);
                    var l = SpanOf(lb);
                    try
                    {
                        if (BtreeHeader.RightSibling(l, _longPointers) != cur) Corrupt(leftPtr, $"right sibling does not point back to {cur}");
                    }
                    catch { _store.Release(lb); throw; }
                    int ln = NumRecords(l);
                    if (ln > min)
                    {
                        try
                        {
                            _store.BeginChange(lb);
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
                        _store.BeginChange(lb);
                        CopyEntries(b, 0, l, ln, n, level);
                        BtreeHeader.SetNumRecords(l, ln + n);
                        long far = BtreeHeader.RightSibling(b, _longPointers);
                        BtreeHeader.SetRightSibling(l, _longPointers, far);
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
                // No siblings: the parent has this block as its only child, which a valid tree allows only for a
                // block root (a one-child root node the tree was built with). Underfull here is not fixable by a
                // borrow or a join, so the root gives way and this block becomes the root, where few records are
                // legal; leaving it underfull below a one-child root would break the minrecs rule.
                if (n == 0 && level > 0) Corrupt(cur, "only child of its parent became empty");
                if (level + 1 == _height - 1)
                {
                    CollapseRoot(level + 1);
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
        if (cn > _imageMaxRecords) return;
        BtreeHeader.SetLevel(root, childLevel);
        CopyEntries(c, 0, _nodeMaxRecords, root, 0, _imageMaxRecords, cn, childLevel);
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
}
