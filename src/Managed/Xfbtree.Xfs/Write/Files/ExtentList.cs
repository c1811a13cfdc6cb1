using System.Buffers.Binary;
using Xfbtree.Xfs.Format;

namespace Xfbtree.Xfs.Write.Files;

/// <summary>
/// The in-core extent list of one inode fork (the kernel's iext tree, as a sorted list): mappings ordered by file
/// offset, never overlapping. Edits keep the kernel's merge rules (xfs_bmap_add_extent_*): a mapping merges with a
/// neighbour that is adjacent logically and physically, in the same unwritten state, while the merged length stays
/// at most <see cref="MaxExtentLength"/>. Pure data structure: no I/O, no locking (the owner holds the inode lock).
/// <para>
/// A <see cref="Snapshot"/> reads its source's records until its first edit; then it copies them, or, when made
/// with <c>takeAtFirstEdit</c>, takes them without a copy (the source is left without records: reading it, or
/// another snapshot of it, afterwards throws instead of showing the edited records). Every list remembers which
/// records its edits replaced since it was made or last <see cref="ResetChanges">reset</see>
/// (<see cref="ChangedWindow"/>), so a store writes back only those: a 4 KiB write into a file of many thousands
/// of extents neither copies nor compares them all.
/// </para>
/// </summary>
internal sealed class ExtentList
{
    /// <summary>MAXEXTLEN: the largest blockcount a bmbt record holds (21 bits).</summary>
    public const uint MaxExtentLength = (1u << 21) - 1;

    /// <summary>Spare records a copied list gets (an operation adds a few: a split adds two).</summary>
    const int EditRoom = 16;

    /// <summary>The records, when this list owns them (null while it reads a source's, or after they were taken).</summary>
    List<BmbtExtent>? _own;
    /// <summary>The list whose records this snapshot reads until its first edit.</summary>
    ExtentList? _source;
    bool _takeAtFirstEdit;
    /// <summary>The records as they were before the edits since the last reset, between the unchanged prefix and
    /// suffix (null: no edit since).</summary>
    List<BmbtExtent>? _replaced;
    int _unchangedPrefix, _unchangedSuffix;

    List<BmbtExtent> Records => _own ?? _source?.Records
        ?? throw new InvalidOperationException("extent list read after another edit took its records");

    public ExtentList() => _own = new List<BmbtExtent>();

    public ExtentList(IEnumerable<BmbtExtent> extents)
    {
        var items = _own = new List<BmbtExtent>(extents);
        for (int i = 0; i < items.Count; i++)
        {
            var e = items[i];
            if (e.BlockCount == 0 || e.BlockCount > MaxExtentLength) throw new ArgumentException($"extent {e} has a bad length", nameof(extents));
            if (e.StartOffset + e.BlockCount > BmbtExtent.MaxFileOffset) throw new ArgumentException($"extent {e} ends past the largest file offset", nameof(extents));
            if (i > 0 && items[i - 1].StartOffset + items[i - 1].BlockCount > e.StartOffset)
                throw new ArgumentException($"extent {e} overlaps or precedes {items[i - 1]}", nameof(extents));
        }
    }

    public int Count => Records.Count;

    public BmbtExtent this[int index] => Records[index];

    public IReadOnlyList<BmbtExtent> Items => Records;

    /// <summary>False once a snapshot's edit took this list's records (the fork cache then drops it).</summary>
    public bool HasRecords => _own is not null || (_source is not null && _source.HasRecords);

    /// <summary>Total blocks mapped.</summary>
    public ulong MappedBlocks
    {
        get
        {
            ulong n = 0;
            foreach (var e in Records) n += e.BlockCount;
            return n;
        }
    }

    /// <summary>A copy (for diffs and rollback of a failed in-memory edit).</summary>
    public ExtentList Clone() => new(Records, trusted: true);

    ExtentList(List<BmbtExtent> items, bool trusted)
    {
        _ = trusted;
        _own = new List<BmbtExtent>(items);
    }

    /// <summary>
    /// A list equal to this one that reads this one's records until its first edit, which copies them, or with
    /// <paramref name="takeAtFirstEdit"/> takes them (no copy; this list is then left without records). This list
    /// must not be edited while the snapshot reads it.
    /// </summary>
    public ExtentList Snapshot(bool takeAtFirstEdit = false) => new(this, takeAtFirstEdit);

    ExtentList(ExtentList source, bool takeAtFirstEdit)
    {
        _source = source._own is not null ? source : source._source ?? throw new InvalidOperationException("snapshot of an extent list without records");
        _takeAtFirstEdit = takeAtFirstEdit;
    }

    /// <summary>
    /// What the edits since this list was made (or reset) changed: the first <paramref name="prefix"/> records
    /// and the last <paramref name="suffix"/> records are the ones it had then, and between them it had
    /// <paramref name="replaced"/> (in order), now the records [prefix, Count - suffix).
    /// </summary>
    public void ChangedWindow(out int prefix, out int suffix, out IReadOnlyList<BmbtExtent> replaced)
    {
        if (_replaced is null)
        {
            prefix = Count;
            suffix = 0;
            replaced = [];
            return;
        }
        prefix = _unchangedPrefix;
        suffix = _unchangedSuffix;
        replaced = _replaced;
    }

    /// <summary>The current records become the baseline of <see cref="ChangedWindow"/> (after they were stored).</summary>
    public void ResetChanges() => _replaced = null;

    /// <summary>Before an edit that replaces the records [<paramref name="start"/>, <paramref name="end"/>): owns the
    /// records (taking or copying a source's once) and widens the changed window to cover the range, keeping the
    /// records it replaces.</summary>
    List<BmbtExtent> Edit(int start, int end)
    {
        if (_own is null)
        {
            var source = _source!;
            if (_takeAtFirstEdit && source._own is { } records)
            {
                _own = records;
                source._own = null;
            }
            else
            {
                // Room for the records the edits add: a copy exactly full would be copied again at the first insert.
                var from = source.Records;
                _own = new List<BmbtExtent>(from.Count + EditRoom);
                _own.AddRange(from);
            }
            _source = null;
        }
        var items = _own;
        int count = items.Count;
        if (_replaced is null)
        {
            _replaced = new List<BmbtExtent>(end - start + 4);
            for (int i = start; i < end; i++) _replaced.Add(items[i]);
            _unchangedPrefix = start;
            _unchangedSuffix = count - end;
            return items;
        }
        if (start < _unchangedPrefix)
        {
            // Unchanged records from start up to the window join it, at its front.
            _replaced.InsertRange(0, RangeOf(items, start, _unchangedPrefix));
            _unchangedPrefix = start;
        }
        int suffixStart = count - _unchangedSuffix;
        if (end > suffixStart)
        {
            _replaced.AddRange(RangeOf(items, suffixStart, end));
            _unchangedSuffix = count - end;
        }
        return items;
    }

    static IEnumerable<BmbtExtent> RangeOf(List<BmbtExtent> items, int from, int to)
    {
        for (int i = from; i < to; i++) yield return items[i];
    }

    /// <summary>Index of the first extent that ends after <paramref name="offset"/> (the one containing it, or the next); Count when none.</summary>
    public int IndexAtOrAfter(ulong offset)
    {
        var items = Records;
        int lo = 0, hi = items.Count;
        while (lo < hi)
        {
            int mid = (lo + hi) >>> 1;
            var e = items[mid];
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
        if (i < Records.Count && Records[i].StartOffset <= offset)
        {
            var e = Records[i];
            ulong skip = offset - e.StartOffset;
            mapping = new BmbtExtent(offset, e.StartBlock + skip, (uint)(e.BlockCount - skip), e.Unwritten);
            holeLength = 0;
            return true;
        }
        mapping = default;
        holeLength = (i < Records.Count ? Records[i].StartOffset : BmbtExtent.MaxFileOffset) - offset;
        return false;
    }

    /// <summary>The pieces of mappings inside [<paramref name="offset"/>, +<paramref name="length"/>), clipped to the range, in order.</summary>
    public List<BmbtExtent> MappingsIn(ulong offset, ulong length)
    {
        var result = new List<BmbtExtent>();
        ulong end = offset + length;
        for (int i = IndexAtOrAfter(offset); i < Records.Count && Records[i].StartOffset < end; i++)
        {
            var e = Records[i];
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
        for (; j < Records.Count && Records[j].StartOffset < end; j++)
        {
            var e = Records[j];
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
        if (i < Records.Count && Records[i].StartOffset < extent.StartOffset + extent.BlockCount)
            throw new InvalidOperationException($"extent {extent} overlaps the mapping {Records[i]}");
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
        int stop = Math.Min(Records.Count - 1, last + 1);
        while (i < stop)
        {
            var a = Records[i];
            var b = Records[i + 1];
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
        if ((long)Records.Count * Dinode.ExtentSize > fork.Length) throw new InvalidOperationException($"{Records.Count} extents do not fit a fork of {fork.Length} bytes");
        for (int i = 0; i < Records.Count; i++) Encode(Records[i], fork[(i * Dinode.ExtentSize)..]);
        fork[(Records.Count * Dinode.ExtentSize)..].Clear();
    }

    public override string ToString() => string.Join(' ', Records.Select(e => $"[{e.StartOffset}+{e.BlockCount}@{e.StartBlock}{(e.Unwritten ? "u" : "")}]"));
}
