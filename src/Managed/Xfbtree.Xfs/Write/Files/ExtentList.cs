using System.Buffers.Binary;
using Xfbtree.Xfs.Format;

namespace Xfbtree.Xfs.Write.Files;

/// <summary>
/// The in-core extent list of one inode fork (the kernel's iext tree, as a sorted list): mappings ordered by file
/// offset, never overlapping. Edits keep the kernel's merge rules (xfs_bmap_add_extent_*): a mapping merges with a
/// neighbour that is adjacent logically and physically, in the same unwritten state, while the merged length stays
/// at most <see cref="MaxExtentLength"/>. Pure data structure: no I/O, no locking (the owner holds the inode lock).
/// A <see cref="Snapshot"/> shares its source's records until its first edit (copy on write) and remembers which
/// part of the source its edits touched (<see cref="ChangedWindow"/>), so an operation that reads the list, or
/// changes one extent of a file of many thousands, neither copies nor compares all of them more than once.
/// </summary>
internal sealed class ExtentList
{
    /// <summary>MAXEXTLEN: the largest blockcount a bmbt record holds (21 bits).</summary>
    public const uint MaxExtentLength = (1u << 21) - 1;

    List<BmbtExtent> _items;
    /// <summary>_items belongs to the list this one is a snapshot of: copied before the first edit.</summary>
    bool _borrowed;
    /// <summary>Leading and trailing records still equal to the snapshot's source (all of them until an edit).</summary>
    int _unchangedPrefix, _unchangedSuffix;

    public ExtentList() => _items = new List<BmbtExtent>();

    public ExtentList(IEnumerable<BmbtExtent> extents)
    {
        _items = new List<BmbtExtent>(extents);
        for (int i = 0; i < _items.Count; i++)
        {
            var e = _items[i];
            if (e.BlockCount == 0 || e.BlockCount > MaxExtentLength) throw new ArgumentException($"extent {e} has a bad length", nameof(extents));
            if (e.StartOffset + e.BlockCount > BmbtExtent.MaxFileOffset) throw new ArgumentException($"extent {e} ends past the largest file offset", nameof(extents));
            if (i > 0 && _items[i - 1].StartOffset + _items[i - 1].BlockCount > e.StartOffset)
                throw new ArgumentException($"extent {e} overlaps or precedes {_items[i - 1]}", nameof(extents));
        }
        _unchangedPrefix = _unchangedSuffix = _items.Count;
    }

    public int Count => _items.Count;

    public BmbtExtent this[int index] => _items[index];

    public IReadOnlyList<BmbtExtent> Items => _items;

    /// <summary>Total blocks mapped.</summary>
    public ulong MappedBlocks
    {
        get
        {
            ulong n = 0;
            foreach (var e in _items) n += e.BlockCount;
            return n;
        }
    }

    /// <summary>A copy (for diffs and rollback of a failed in-memory edit).</summary>
    public ExtentList Clone() => new(_items, trusted: true);

    ExtentList(List<BmbtExtent> items, bool trusted)
    {
        _ = trusted;
        _items = new List<BmbtExtent>(items);
        _unchangedPrefix = _unchangedSuffix = _items.Count;
    }

    /// <summary>
    /// A list equal to this one that shares its records until its own first edit; this list must not change
    /// afterwards (the fork cache's lists and a fork's stored baseline never do).
    /// </summary>
    public ExtentList Snapshot() => new(this);

    ExtentList(ExtentList source)
    {
        _items = source._items;
        _borrowed = true;
        _unchangedPrefix = _unchangedSuffix = _items.Count;
    }

    /// <summary>
    /// The records that may differ from the list this one is a snapshot of (or was cloned from): every record
    /// before <paramref name="prefix"/> and the last <paramref name="suffix"/> records are equal in both, in order.
    /// </summary>
    public void ChangedWindow(int sourceCount, out int prefix, out int suffix)
    {
        prefix = Math.Min(_unchangedPrefix, Math.Min(sourceCount, _items.Count));
        suffix = Math.Min(_unchangedSuffix, Math.Min(sourceCount, _items.Count) - prefix);
    }

    /// <summary>Spare records a copied list gets (an operation adds a few: a split adds two).</summary>
    const int EditRoom = 16;

    /// <summary>Before an edit that replaces the records [<paramref name="start"/>, <paramref name="end"/>): owns the
    /// records (copying a borrowed list once) and narrows the unchanged prefix and suffix.</summary>
    List<BmbtExtent> Edit(int start, int end)
    {
        if (_borrowed)
        {
            // Room for the records the edits add: a copy exactly full would be copied again at the first insert.
            var own = new List<BmbtExtent>(_items.Count + EditRoom);
            own.AddRange(_items);
            _items = own;
            _borrowed = false;
        }
        _unchangedPrefix = Math.Min(_unchangedPrefix, start);
        _unchangedSuffix = Math.Min(_unchangedSuffix, _items.Count - end);
        return _items;
    }

    /// <summary>Index of the first extent that ends after <paramref name="offset"/> (the one containing it, or the next); Count when none.</summary>
    public int IndexAtOrAfter(ulong offset)
    {
        int lo = 0, hi = _items.Count;
        while (lo < hi)
        {
            int mid = (lo + hi) >>> 1;
            var e = _items[mid];
            if (e.StartOffset + e.BlockCount <= offset) lo = mid + 1; else hi = mid;
        }
        return lo;
    }

    /// <summary>
    /// The mapping at <paramref name="offset"/>: true and the part of the extent from <paramref name="offset"/> on,
    /// or false and a hole whose length runs to the next extent (or to the largest file offset).
    /// </summary>
    public bool Lookup(ulong offset, out BmbtExtent mapping, out ulong holeLength)
    {
        int i = IndexAtOrAfter(offset);
        if (i < _items.Count && _items[i].StartOffset <= offset)
        {
            var e = _items[i];
            ulong skip = offset - e.StartOffset;
            mapping = new BmbtExtent(offset, e.StartBlock + skip, (uint)(e.BlockCount - skip), e.Unwritten);
            holeLength = 0;
            return true;
        }
        mapping = default;
        holeLength = (i < _items.Count ? _items[i].StartOffset : BmbtExtent.MaxFileOffset) - offset;
        return false;
    }

    /// <summary>The pieces of mappings inside [<paramref name="offset"/>, +<paramref name="length"/>), clipped to the range, in order.</summary>
    public List<BmbtExtent> MappingsIn(ulong offset, ulong length)
    {
        var result = new List<BmbtExtent>();
        ulong end = offset + length;
        for (int i = IndexAtOrAfter(offset); i < _items.Count && _items[i].StartOffset < end; i++)
        {
            var e = _items[i];
            ulong s = Math.Max(e.StartOffset, offset), t = Math.Min(e.StartOffset + e.BlockCount, end);
            result.Add(new BmbtExtent(s, e.StartBlock + (s - e.StartOffset), (uint)(t - s), e.Unwritten));
        }
        return result;
    }

    /// <summary>
    /// Removes every mapping of [<paramref name="offset"/>, +<paramref name="length"/>), trimming or splitting the
    /// extents at its ends; returns the removed pieces in order (the caller unmaps their rmap and frees them).
    /// </summary>
    public List<BmbtExtent> Remove(ulong offset, ulong length)
    {
        var removed = MappingsIn(offset, length);
        if (removed.Count == 0) return removed;
        ulong end = offset + length;
        int i = IndexAtOrAfter(offset);
        var replacement = new List<BmbtExtent>(2);
        int j = i;
        for (; j < _items.Count && _items[j].StartOffset < end; j++)
        {
            var e = _items[j];
            ulong eEnd = e.StartOffset + e.BlockCount;
            if (e.StartOffset < offset) replacement.Add(new BmbtExtent(e.StartOffset, e.StartBlock, (uint)(offset - e.StartOffset), e.Unwritten));
            if (eEnd > end) replacement.Add(new BmbtExtent(end, e.StartBlock + (end - e.StartOffset), (uint)(eEnd - end), e.Unwritten));
        }
        var items = Edit(i, j);
        items.RemoveRange(i, j - i);
        items.InsertRange(i, replacement);
        return removed;
    }

    /// <summary>
    /// Adds a mapping over a hole (every block of its range must be unmapped), merging with its neighbours as the
    /// kernel does (left first, then right, each only while the result fits <see cref="MaxExtentLength"/>).
    /// </summary>
    public void Insert(BmbtExtent extent)
    {
        if (extent.BlockCount == 0 || extent.BlockCount > MaxExtentLength) throw new ArgumentException($"extent {extent} has a bad length", nameof(extent));
        if (extent.StartOffset + extent.BlockCount > BmbtExtent.MaxFileOffset) throw new ArgumentException($"extent {extent} ends past the largest file offset", nameof(extent));
        int i = IndexAtOrAfter(extent.StartOffset);
        if (i < _items.Count && _items[i].StartOffset < extent.StartOffset + extent.BlockCount)
            throw new InvalidOperationException($"extent {extent} overlaps the mapping {_items[i]}");
        Edit(i, i).Insert(i, extent);
        MergeAround(i, i);
    }

    /// <summary>
    /// Sets the unwritten state of every mapped block of [<paramref name="offset"/>, +<paramref name="length"/>),
    /// splitting extents at the range ends and merging the results with same-state neighbours. Returns the
    /// pieces whose state changed (with their new state), in order.
    /// </summary>
    public List<BmbtExtent> SetState(ulong offset, ulong length, bool unwritten)
    {
        var changed = new List<BmbtExtent>();
        foreach (var piece in MappingsIn(offset, length))
        {
            if (piece.Unwritten != unwritten) changed.Add(piece with { Unwritten = unwritten });
        }
        if (changed.Count == 0) return changed;
        foreach (var piece in changed)
        {
            Remove(piece.StartOffset, piece.BlockCount);
            int i = IndexAtOrAfter(piece.StartOffset);
            Edit(i, i).Insert(i, piece);
        }
        int first = IndexAtOrAfter(changed[0].StartOffset);
        var lastPiece = changed[^1];
        int last = IndexAtOrAfter(lastPiece.StartOffset + lastPiece.BlockCount - 1);
        MergeAround(first, last);
        return changed;
    }

    /// <summary>Two mappings the kernel would merge (left directly before right).</summary>
    public static bool CanMerge(in BmbtExtent left, in BmbtExtent right)
        => left.StartOffset + left.BlockCount == right.StartOffset
           && left.StartBlock + left.BlockCount == right.StartBlock
           && left.Unwritten == right.Unwritten
           && (ulong)left.BlockCount + right.BlockCount <= MaxExtentLength;

    /// <summary>Merges greedily left to right over the extents [first-1, last+1] (the edited ones and their neighbours).</summary>
    void MergeAround(int first, int last)
    {
        int i = Math.Max(0, first - 1);
        int stop = Math.Min(_items.Count - 1, last + 1);
        while (i < stop)
        {
            var a = _items[i];
            var b = _items[i + 1];
            if (CanMerge(a, b))
            {
                var items = Edit(i, i + 2);
                items[i] = a with { BlockCount = a.BlockCount + b.BlockCount };
                items.RemoveAt(i + 1);
                stop--;
            }
            else
            {
                i++;
            }
        }
    }

    // ------------------------------------------------------------------ on-disk records

    /// <summary>Encodes one bmbt record (16 bytes, big-endian) into <paramref name="destination"/>.</summary>
    public static void Encode(in BmbtExtent e, Span<byte> destination)
    {
        if (e.StartOffset >= BmbtExtent.MaxFileOffset || e.StartBlock >= 1UL << 52 || e.BlockCount > MaxExtentLength)
            throw new ArgumentOutOfRangeException(nameof(e), e, "extent fields do not fit a bmbt record");
        ulong l0 = (e.Unwritten ? 1UL << 63 : 0) | (e.StartOffset << 9) | (e.StartBlock >> 43);
        ulong l1 = (e.StartBlock << 21) | e.BlockCount;
        BinaryPrimitives.WriteUInt64BigEndian(destination, l0);
        BinaryPrimitives.WriteUInt64BigEndian(destination[8..], l1);
    }

    /// <summary>Decodes <paramref name="count"/> packed records of an extents-format fork, validating each
    /// (inside the filesystem, inside one AG, ordered, non-overlapping). Throws <see cref="XfsWriteException"/> Corrupt.</summary>
    public static ExtentList Decode(ReadOnlySpan<byte> fork, int count, XfsGeometry geometry, string where)
    {
        ArgumentNullException.ThrowIfNull(geometry);
        if (count < 0 || (long)count * Dinode.ExtentSize > fork.Length)
            throw new XfsWriteException(WriteErrorKind.Corrupt, $"{where}: {count} extents do not fit a fork of {fork.Length} bytes");
        var items = new List<BmbtExtent>(count);
        for (int i = 0; i < count; i++) items.Add(BmbtExtent.Read(fork[(i * Dinode.ExtentSize)..]));
        return FromRecords(items, geometry, where);
    }

    /// <summary>A list from decoded records (extents fork or bmbt leaves), validated as <see cref="Decode"/> does.</summary>
    public static ExtentList FromRecords(List<BmbtExtent> items, XfsGeometry geometry, string where)
    {
        ArgumentNullException.ThrowIfNull(items);
        ArgumentNullException.ThrowIfNull(geometry);
        for (int i = 0; i < items.Count; i++)
        {
            var e = items[i];
            if (e.Validate(geometry) is { } why) throw new XfsWriteException(WriteErrorKind.Corrupt, $"{where}: extent {i}: {why}");
            if (i > 0 && items[i - 1].StartOffset + items[i - 1].BlockCount > e.StartOffset)
                throw new XfsWriteException(WriteErrorKind.Corrupt, $"{where}: extent {i} at offset {e.StartOffset} overlaps or precedes the previous one");
        }
        return new ExtentList(items, trusted: true);
    }

    /// <summary>Writes the list as packed records at the start of <paramref name="fork"/> and zeroes the rest.</summary>
    public void EncodeTo(Span<byte> fork)
    {
        if ((long)_items.Count * Dinode.ExtentSize > fork.Length) throw new InvalidOperationException($"{_items.Count} extents do not fit a fork of {fork.Length} bytes");
        for (int i = 0; i < _items.Count; i++) Encode(_items[i], fork[(i * Dinode.ExtentSize)..]);
        fork[(_items.Count * Dinode.ExtentSize)..].Clear();
    }

    public override string ToString() => string.Join(' ', _items.Select(e => $"[{e.StartOffset}+{e.BlockCount}@{e.StartBlock}{(e.Unwritten ? "u" : "")}]"));
}
