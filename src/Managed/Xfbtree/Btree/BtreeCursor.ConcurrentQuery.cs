using System.Buffers.Binary;

namespace Xfbtree.Btree;

// The overlapped query of an interval tree as an optimistic reader (same protocol as BtreeCursor.Concurrent.cs): its own
// walk stack of (block, version, slot) per level on the stack of the call, so it touches no mutable field of the cursor.
// Each leaf's matching records are copied out, and the whole path from the root to that leaf is validated before the
// visitor sees any of them; a node is validated again when the walk leaves it (its "no further slot reaches the query"
// was read from a stable block). When a validation fails, the walk starts again from the root and skips the records at
// or below the last one visited: the walk yields records in key order, so nothing is visited twice and nothing that
// was there for the whole call is missed.
public sealed unsafe partial class BtreeCursor<TOps>
{
    /// <summary>
    /// Visits, in key order, every record of an overlapping tree whose [key, high key] intersects
    /// [<paramref name="low"/>, <paramref name="high"/>]; safe while other threads read and one thread writes. Each
    /// record visited is a copy that was in the tree at some moment during the call. Returns false when the visitor
    /// stopped the query.
    /// </summary>
    internal bool QueryOverlappingConcurrent<TVisitor>(scoped ReadOnlySpan<byte> low, scoped ReadOnlySpan<byte> high, ref TVisitor visitor)
        where TVisitor : IBtreeRecordVisitor, allows ref struct
    {
        if (low.Length < _keySize || high.Length < _keySize) throw new ArgumentException($"keys must be {_keySize} bytes");
        if (!_geometry.Overlapping) throw new NotSupportedException($"{_tree.Name}: the overlapped query needs an overlapping tree");
        if (_ops.CompareKeys(low, high) > 0) return true;
        var t = OptimisticTable();
        int maxLevels = _geometry.MaxLevels;
        Span<long> pointers = stackalloc long[maxLevels];
        Span<long> versions = stackalloc long[maxLevels];
        Span<long> pages = stackalloc long[maxLevels];
        Span<int> slots = stackalloc int[maxLevels];
        Span<int> counts = stackalloc int[maxLevels];
        Span<byte> followed = stackalloc byte[maxLevels * _keySize];   // per level, the last slot key followed (the walk's bound)
        Span<bool> hasFollowed = stackalloc bool[maxLevels];
        // A pointer, not a span: the visitor (possibly a ref struct) may not capture a stack span's scope.
        byte* copies = stackalloc byte[_leafMaxRecords * _recordSize];
        Span<byte> scratch = stackalloc byte[2 * BtreeGeometry.MaxKeySize];
        var highKey = scratch[.._keySize];
        var last = scratch.Slice(BtreeGeometry.MaxKeySize, _keySize);
        bool visitedAny = false;
        while (true)
        {
            hasFollowed.Clear();
            long root = RootPointer;
            int top = -1, level = -1;
            long failedPointer = root, failedVersion = 0;
            string? failure = null;
            if (!EnterForQuery(t, root, out long rootVersion, out byte* rootPage, out failedVersion)) failure = NoBlock;
            else
            {
                top = BinaryPrimitives.ReadUInt16BigEndian(new ReadOnlySpan<byte>(rootPage + 4, 2));
                int n = BinaryPrimitives.ReadUInt16BigEndian(new ReadOnlySpan<byte>(rootPage + 6, 2));
                if (top >= maxLevels || n > (top == 0 ? _leafMaxRecords : _nodeMaxRecords) || (n == 0 && top > 0))
                {
                    failure = "root level or numrecs";
                    top = -1;
                    if (Volatile.Read(ref t.Table[root].Version) == rootVersion && RootPointer == root) Corrupt(root, failure);
                }
                else
                {
                    level = top;
                    pointers[top] = root;
                    versions[top] = rootVersion;
                    pages[top] = (long)rootPage;
                    counts[top] = n;
                    slots[top] = 0;
                    ConcurrentReadHook?.Invoke(top);
                }
            }
            while (level >= 0)
            {
                byte* page = (byte*)pages[level];
                int n = counts[level];
                if (level == 0)
                {
                    // Copy the records that overlap the query (and come after the last one visited), then validate the path.
                    byte* records = page + _headerSize;
                    int copied = 0;
                    for (int i = 0; i < n; i++)
                    {
                        var record = new ReadOnlySpan<byte>(records + (long)i * _recordSize, _recordSize);
                        if (_ops.CompareRecordToKey(record, high) > 0) break;
                        if (visitedAny && _ops.CompareRecordToKey(record, last) <= 0) continue;
                        _ops.GetHighKey(record, highKey);
                        if (_ops.CompareKeys(highKey, low) < 0) continue;
                        record.CopyTo(new Span<byte>(copies + (long)copied++ * _recordSize, _recordSize));
                    }
                    ConcurrentReadHook?.Invoke(-1);
                    if (!PathStillCurrent(t, pointers, versions, 0, top, root)) break;
                    for (int i = 0; i < copied; i++)
                    {
                        var record = new ReadOnlySpan<byte>(copies + (long)i * _recordSize, _recordSize);
                        if (!visitor.Visit(record)) return false;
                        _ops.GetKey(record, last);
                        visitedAny = true;
                    }
                    if (level == top) return true;
                    level = 1;
                    slots[1]++;
                    continue;
                }
                // The next slot (from the current one) whose subtree reaches the query; none once a slot starts above it.
                byte* entries = page + _headerSize;
                int s = slots[level];
                while (s < n)
                {
                    var slotLow = new ReadOnlySpan<byte>(entries + (long)s * _keySlotSize, _keySize);
                    if (_ops.CompareKeys(slotLow, high) > 0)
                    {
                        s = n;
                        break;
                    }
                    if (_ops.CompareKeys(new ReadOnlySpan<byte>(entries + (long)s * _keySlotSize + _keySize, _keySize), low) >= 0) break;
                    s++;
                }
                if (s >= n)
                {
                    // Done with this node: what was read of it must have been stable.
                    if (!PathStillCurrent(t, pointers, versions, level, level, root)) break;
                    if (level == top) return true;
                    level++;
                    slots[level]++;
                    continue;
                }
                slots[level] = s;
                var slotKey = new ReadOnlySpan<byte>(entries + (long)s * _keySlotSize, _keySize);
                var lastFollowed = followed.Slice((level - 1) * _keySize, _keySize);
                if (hasFollowed[level - 1] && _ops.CompareKeys(slotKey, lastFollowed) <= 0)
                {
                    failure = "node keys out of order";
                    failedPointer = pointers[level];
                    break;
                }
                slotKey.CopyTo(lastFollowed);
                hasFollowed[level - 1] = true;
                long child = BinaryPrimitives.ReadInt64BigEndian(new ReadOnlySpan<byte>(entries + (long)_nodeMaxRecords * _keySlotSize + (long)s * _pointerSize, 8));
                failedPointer = child;
                if (!EnterForQuery(t, child, out long childVersion, out byte* childPage, out failedVersion))
                {
                    failure = NoBlock;
                    break;
                }
                int childLevel = BinaryPrimitives.ReadUInt16BigEndian(new ReadOnlySpan<byte>(childPage + 4, 2));
                int childCount = BinaryPrimitives.ReadUInt16BigEndian(new ReadOnlySpan<byte>(childPage + 6, 2));
                level--;
                pointers[level] = child;
                versions[level] = childVersion;
                pages[level] = (long)childPage;
                slots[level] = 0;
                counts[level] = childCount;
                ConcurrentReadHook?.Invoke(level);
                if (childLevel != level || childCount == 0 || childCount > (level == 0 ? _leafMaxRecords : _nodeMaxRecords))
                {
                    failure = "child level or numrecs";
                    failedPointer = child;
                    break;
                }
            }
            // A failed attempt: wait for the write that was changing a block; a check that failed on a path that is
            // still as read is damage; otherwise something moved: look again (after the last record visited).
            if ((failedVersion & 1) != 0)
            {
                WaitForBlock(t, failedPointer, failedVersion);
                continue;
            }
            if (failure is null) continue;
            if (level >= 0 ? !PathStillCurrent(t, pointers, versions, level, top, root) : RootPointer != root) continue;
            // A pointer past the table as the walk saw it may name a block allocated since.
            if (ReferenceEquals(failure, NoBlock) && (ulong)failedPointer < (ulong)t.Highest && Volatile.Read(ref t.Table[failedPointer].Page) > 0) continue;
            Corrupt(failedPointer, failure);
        }
    }

    const string NoBlock = "pointer names no block";

    /// <summary>Notes the version and address of block <paramref name="ptr"/>; false when it names no block or a write is changing it (<paramref name="changing"/> odd).</summary>
    static bool EnterForQuery(in OptimisticBlockTable t, long ptr, out long version, out byte* page, out long changing)
    {
        var table = t.Table;
        long limit = Math.Min(table[-1].Version, t.Highest);
        version = 0;
        page = null;
        changing = 0;
        if ((ulong)ptr >= (ulong)limit) return false;
        long v = Volatile.Read(ref table[ptr].Version);
        nint p = Volatile.Read(ref table[ptr].Page);
        if ((v & 1) != 0)
        {
            changing = v;
            return false;
        }
        if (p <= 0) return false;
        version = v;
        page = (byte*)p;
        return true;
    }

    /// <summary>True when the blocks noted at levels <paramref name="from"/>..<paramref name="to"/> are unchanged and the root is the same.</summary>
    bool PathStillCurrent(in OptimisticBlockTable t, ReadOnlySpan<long> pointers, ReadOnlySpan<long> versions, int from, int to, long root)
    {
        var table = t.Table;
        for (int l = from; l <= to; l++)
            if (Volatile.Read(ref table[pointers[l]].Version) != versions[l]) return false;
        return RootPointer == root;
    }
}
