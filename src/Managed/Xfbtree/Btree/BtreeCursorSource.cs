namespace Xfbtree.Btree;

/// <summary>
/// Feeds the bulk loader from another tree in key order (e.g. a new on-disk rmapbt loaded from the in-memory
/// shadow rmapbt). Record sizes must match; records are copied a leaf run at a time through the source tree's cursor
/// (one cursor step per leaf, with every check <see cref="BtreeCursor{TOps}.Increment"/> makes).
/// </summary>
public unsafe struct BtreeCursorSource<TOps> : IBtreeRecordSource where TOps : struct, IBtreeOps
{
    readonly BtreeCursor<TOps> _cursor;
    bool _started;
    int _next; // index in the cursor's leaf of the next record to copy

    /// <summary>Reads from <paramref name="cursor"/>'s tree, starting at its first record.</summary>
    public BtreeCursorSource(BtreeCursor<TOps> cursor) { _cursor = cursor; _started = false; _next = 0; }

    /// <inheritdoc/>
    public void Fill(Span<byte> destination, int count)
    {
        int size = _cursor.Tree.Geometry.RecordSize;
        if (destination.Length < count * size) throw new ArgumentException("destination too small", nameof(destination));
        int filled = 0;
        while (filled < count)
        {
            if (!_started)
            {
                if (!_cursor.MoveFirst()) throw TooFew();
                _started = true;
                _next = 0;
            }
            byte* records = _cursor.LeafRecords(out int n);
            if (_next >= n)
            {
                if (!_cursor.NextLeaf()) throw TooFew();
                _next = 0;
                continue;
            }
            // [records, records + n * size) lies in the leaf: n was checked against maxrecs when the cursor entered it.
            int take = Math.Min(n - _next, count - filled);
            new ReadOnlySpan<byte>(records + (long)_next * size, take * size).CopyTo(destination.Slice(filled * size, take * size));
            _next += take;
            filled += take;
            _cursor.SetLeafIndex(_next - 1);
        }
    }

    readonly InvalidOperationException TooFew() => new($"{_cursor.Tree.Name}: source tree has fewer records than planned");
}
