namespace Xfbtree.Btree;

/// <summary>
/// Feeds the bulk loader from another tree in key order (e.g. a new on-disk rmapbt loaded from the in-memory
/// shadow rmapbt). Record sizes must match; records are copied leaf by leaf through the source tree's cursor.
/// </summary>
public struct BtreeCursorSource<TOps> : IBtreeRecordSource where TOps : struct, IBtreeOps
{
    readonly BtreeCursor<TOps> _cursor;
    bool _started;

    /// <summary>Reads from <paramref name="cursor"/>'s tree, starting at its first record.</summary>
    public BtreeCursorSource(BtreeCursor<TOps> cursor) { _cursor = cursor; _started = false; }

    /// <inheritdoc/>
    public void Fill(Span<byte> destination, int count)
    {
        int size = _cursor.Tree.Geometry.RecordSize;
        if (destination.Length < count * size) throw new ArgumentException("destination too small", nameof(destination));
        for (int i = 0; i < count; i++)
        {
            bool ok = _started ? _cursor.Increment() : _cursor.MoveFirst();
            _started = true;
            if (!ok) throw new InvalidOperationException($"{_cursor.Tree.Name}: source tree has fewer records than planned");
            _cursor.Current.CopyTo(destination.Slice(i * size, size));
        }
    }
}
