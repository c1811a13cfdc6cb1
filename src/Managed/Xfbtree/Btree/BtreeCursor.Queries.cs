using System.Diagnostics;
using System.Diagnostics.CodeAnalysis;
using Xfbtree.Buffers;

namespace Xfbtree.Btree;

// Queries: key-range and overlapped (interval) queries, counting and block visits.
public sealed unsafe partial class BtreeCursor<TOps>
{
    /// <summary>
    /// Visits, in key order, every record whose key interval [key, high key] intersects [<paramref name="low"/>,
    /// <paramref name="high"/>]. Overlapping trees use the interval-tree walk over node high keys; other trees
    /// an LE lookup and a leaf walk. Returns false when the visitor stopped the query.
    /// </summary>
    public bool Query<TVisitor>(scoped ReadOnlySpan<byte> low, scoped ReadOnlySpan<byte> high, ref TVisitor visitor)
        where TVisitor : IBtreeRecordVisitor, allows ref struct
    {
        if (low.Length < _keySize || high.Length < _keySize) throw new ArgumentException($"keys must be {_keySize} bytes");
        if (_ops.CompareKeys(low, high) > 0) return true;
        return _geometry.Overlapping ? OverlappedQuery(low, high, ref visitor) : SimpleQuery(low, high, ref visitor);
    }

    /// <summary>Visits every record in key order.</summary>
    public bool QueryAll<TVisitor>(ref TVisitor visitor) where TVisitor : IBtreeRecordVisitor, allows ref struct
        => VisitLeafRecords(ref visitor);

    bool SimpleQuery<TVisitor>(scoped ReadOnlySpan<byte> low, scoped ReadOnlySpan<byte> high, ref TVisitor visitor)
        where TVisitor : IBtreeRecordVisitor, allows ref struct
    {
        Span<byte> hk = stackalloc byte[BtreeGeometry.MaxKeySize];
        hk = hk[.._keySize];
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
        hk = hk[.._keySize];
        BeginOperation();
        int level = _height - 1;
        EnterBlock(level, _rootPointer);
        _index[level] = 0;
        _positioned = false;
        ulong walked = 0; // levels with a key in _walkKeys
        // Per level, the end of the entries worth visiting: the first whose low key is above the query (entries are
        // sorted by low key, so one binary search per block replaces a compare per entry).
        Span<int> end = stackalloc int[_height];
        end[level] = EntriesUpTo(level, high);
        while (true)
        {
            int i = _index[level];
            if (i >= end[level])
            {
                if (++level >= _height) return true;
                _index[level]++;
                continue;
            }
            if (level == 0)
            {
                // Every record from i to end starts at or below the query's high key: visit those whose high key
                // reaches the query's low key.
                int n = end[0];
                byte* records = _blocks[0].Data + _headerSize;
                for (; i < n; i++)
                {
                    var rec = new ReadOnlySpan<byte>(records + (long)i * _recordSize, _recordSize);
                    _ops.GetHighKey(rec, hk);
                    if (_ops.CompareKeys(hk, low) >= 0 && !visitor.Visit(rec))
                    {
                        _index[0] = i;
                        return false;
                    }
                }
                _index[0] = n;
                continue;
            }
            // The next slot (from i) whose subtree reaches the query's low key.
            byte* slots = _blocks[level].Data + _headerSize;
            int last = end[level];
            while (i < last && _ops.CompareKeys(new ReadOnlySpan<byte>(slots + (long)i * _keySlotSize + _keySize, _keySize), low) < 0) i++;
            _index[level] = i;
            if (i >= last) continue;
            // Bounded walk: the slot keys followed into one level strictly increase during a query, and the
            // child's first key must be the slot's key, so no block is entered twice even when child
            // pointers repeat (a DAG of n blocks would otherwise cost up to maxrecs^height descents).
            var slotKey = new ReadOnlySpan<byte>(slots + (long)i * _keySlotSize, _keySize);
            var lastKey = _walkKeys.AsSpan((level - 1) * _keySize, _keySize);
            if ((walked & (1UL << (level - 1))) != 0 && _ops.CompareKeys(slotKey, lastKey) <= 0)
                Corrupt(_blocks[level].Pointer, $"key {i} at level {level} not above the previous key followed (keys out of order)");
            slotKey.CopyTo(lastKey);
            walked |= 1UL << (level - 1);
            long child = ChildPointer(level, i);
            level--;
            EnterBlock(level, child);
            _index[level] = 0;
            FirstKey(level, hk);
            if (_ops.CompareKeys(hk, lastKey) != 0) Corrupt(child, "first key differs from the parent's key for it");
            end[level] = EntriesUpTo(level, high);
        }
    }

    /// <summary>Number of entries of the path block at <paramref name="level"/> whose low key is at most <paramref name="key"/>.</summary>
    int EntriesUpTo(int level, ReadOnlySpan<byte> key)
    {
        var b = Block(level);
        int n = NumRecords(b);
        byte* block = _blocks[level].Data;
        int at = LowerBound(block + _headerSize, null, n, level == 0, key, out bool exact);
        return exact ? at + 1 : at;
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
