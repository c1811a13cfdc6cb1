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

    /// <summary>What memory backs the map after the inserts (e.g. which pages the kernel gave), printed as a note.</summary>
    string? MemoryNote => null;

    /// <summary>What the overlapped range query costs this peer when it has no suitable API (printed as a note).</summary>
    string? RangeQueryNote => null;

    /// <summary>
    /// Most ranges the harness asks this peer to answer at <paramref name="records"/> records (a peer without a range
    /// API answers each query by a full enumeration; it answers a prefix of the same ranges, cross-checked likewise).
    /// </summary>
    int RangeQueryLimit(int records) => int.MaxValue;

    /// <summary>Inserts the records one at a time, in the given order.</summary>
    void Insert(ReadOnlySpan<RmapRecord> records);

    /// <summary>Builds the map from sorted, distinct records (the peer's fastest bulk path). The map is empty before.</summary>
    void BulkLoad(RmapRecord[] sorted);

    /// <summary>Looks every key up; returns the sum of the found block counts (so the work cannot be skipped).</summary>
    long Lookup(ReadOnlySpan<RmapRecord> keys);

    /// <summary>Looks every key up through the peer's batch API (the same as <see cref="Lookup"/> when it has none).</summary>
    long LookupBatch(ReadOnlySpan<RmapRecord> keys) => Lookup(keys);

    /// <summary>True when <see cref="LookupBatch"/> is a real batch API.</summary>
    bool HasBatchLookup => false;

    /// <summary>For each range, visits the records whose extent overlaps it; returns how many were found.</summary>
    long QueryOverlapping(ReadOnlySpan<BlockRange> ranges);

    /// <summary>Visits every record in key order; returns a checksum of start blocks.</summary>
    long Scan();

    /// <summary>Records in the map.</summary>
    long Count { get; }

    /// <summary>Bytes used outside the managed heap (shared memory, LMDB map), 0 for managed collections.</summary>
    long NativeBytes { get; }
}
