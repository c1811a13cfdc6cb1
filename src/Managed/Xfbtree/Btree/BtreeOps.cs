namespace Xfbtree.Btree;

/// <summary>
/// The per-tree-type ops table. Implement it on a <c>struct</c> so that every engine type
/// (<see cref="Btree{TOps}"/>, <see cref="BtreeCursor{TOps}"/>, ...) is specialised by the JIT for that
/// tree and every comparison is a direct, inlinable call on block memory (big-endian fields, no decoding,
/// no allocation).
/// </summary>
public interface IBtreeOps
{
    /// <summary>Short tree name used in corruption messages, e.g. "rmapbt".</summary>
    string Name { get; }
    /// <summary>Block magic (v5/CRC form).</summary>
    uint Magic { get; }
    /// <summary>True for the 72-byte long-form header with 64-bit pointers (bmbt, in-memory trees).</summary>
    bool LongPointers { get; }
    /// <summary>Bytes per leaf record.</summary>
    int RecordSize { get; }
    /// <summary>Bytes per (low) key. Node slots hold low+high keys when <see cref="Overlapping"/>.</summary>
    int KeySize { get; }
    /// <summary>True when records may overlap and node slots carry a high key (rmapbt).</summary>
    bool Overlapping { get; }
    /// <summary>Orders two keys (each <see cref="KeySize"/> bytes).</summary>
    int CompareKeys(ReadOnlySpan<byte> a, ReadOnlySpan<byte> b);
    /// <summary>Orders a record's low key against a key, without materialising the record's key.</summary>
    int CompareRecordToKey(ReadOnlySpan<byte> record, ReadOnlySpan<byte> key);
    /// <summary>Writes the record's (low) key.</summary>
    void GetKey(ReadOnlySpan<byte> record, Span<byte> key);
    /// <summary>Writes the record's high key (the last key it covers); equals the low key for point records.</summary>
    void GetHighKey(ReadOnlySpan<byte> record, Span<byte> key);
    /// <summary>True when <paramref name="next"/> may follow <paramref name="previous"/> in key order (the scrub rule).</summary>
    bool RecordsInOrder(ReadOnlySpan<byte> previous, ReadOnlySpan<byte> next);
    /// <summary>Null when the record is valid, else a short reason.</summary>
    string? ValidateRecord(ReadOnlySpan<byte> record);
}

/// <summary>Lookup direction (XFS_LOOKUP_LE/EQ/GE).</summary>
public enum BtreeLookup
{
    /// <summary>Last record whose key is less than or equal to the search key.</summary>
    LessOrEqual,
    /// <summary>The record whose key equals the search key.</summary>
    Equal,
    /// <summary>First record whose key is greater than or equal to the search key.</summary>
    GreaterOrEqual,
}

/// <summary>Receives records of a query; zero allocation when implemented on a struct passed by ref.</summary>
public interface IBtreeRecordVisitor
{
    /// <summary>Called once per record in key order; return false to stop the query.</summary>
    bool Visit(ReadOnlySpan<byte> record);
}

/// <summary>Receives every block of a tree.</summary>
public interface IBtreeBlockVisitor
{
    /// <summary>Called once per block, top level first, each level left to right.</summary>
    void Visit(int level, long pointer, ReadOnlySpan<byte> block);
}

/// <summary>Supplies records to the bulk loader in key order.</summary>
public interface IBtreeRecordSource
{
    /// <summary>Writes exactly <paramref name="count"/> records (count * RecordSize bytes) into <paramref name="destination"/>.</summary>
    void Fill(Span<byte> destination, int count);
}
