namespace Xfbtree.Benchmarks.OrderedMap;

/// <summary>
/// One ordered-map implementation under test. Every operation runs a whole batch so the harness measures
/// the loop, not an interface call per record.
/// </summary>
public interface IOrderedMapPeer : IDisposable
{
    /// <summary>Column name in the report.</summary>
    string Name { get; }

    /// <summary>What "insert" means for this peer when it is not a plain per-record insert (e.g. append + sort).</summary>
    string? InsertNote => null;

    /// <summary>False when the peer has no ordered range API (the range row then shows n/a).</summary>
    bool SupportsRangeQuery => true;

    /// <summary>Inserts the records one at a time, in the given order.</summary>
    void Insert(ReadOnlySpan<RmapRecord> records);

    /// <summary>Builds the map from sorted, distinct records (the peer's fastest bulk path). The map is empty before.</summary>
    void BulkLoad(RmapRecord[] sorted);

    /// <summary>Looks every key up; returns the sum of the found block counts (so the work cannot be skipped).</summary>
    long Lookup(ReadOnlySpan<RmapRecord> keys);

    /// <summary>For each range, visits the records whose extent overlaps it; returns how many were found.</summary>
    long QueryOverlapping(ReadOnlySpan<BlockRange> ranges);

    /// <summary>Visits every record in key order; returns a checksum of start blocks.</summary>
    long Scan();

    /// <summary>Records in the map.</summary>
    long Count { get; }

    /// <summary>Bytes used outside the managed heap (shared memory, LMDB map), 0 for managed collections.</summary>
    long NativeBytes { get; }
}
