using Xfbtree.InMemory;

namespace Xfbtree.Benchmarks.OrderedMap;

/// <summary>The rmapbt key order for the typed ordered map (a struct, so the tree is specialised for it).</summary>
public readonly struct RmapRecordMapComparer : IRecordComparer<RmapRecord>
{
    /// <inheritdoc/>
    public int Compare(in RmapRecord x, in RmapRecord y)
    {
        if (x.StartBlock != y.StartBlock)
        {
            return x.StartBlock < y.StartBlock ? -1 : 1;
        }
        if (x.Owner != y.Owner)
        {
            return x.Owner < y.Owner ? -1 : 1;
        }
        return x.Offset.CompareTo(y.Offset);
    }
}

/// <summary>
/// Xfbtree's typed ordered map (<see cref="ShmemBTree{TRecord, TComparer}"/>): the XFS btree engine on
/// page-sized blocks of a private xfile (memfd on Linux).
/// </summary>
public sealed class XfbtreePeer : IOrderedMapPeer
{
    private ShmemBTree<RmapRecord, RmapRecordMapComparer> map = new();

    /// <summary>Creates the peer (the record count is only a sizing hint for other peers).</summary>
    public static IOrderedMapPeer TryCreate(int expectedRecords) => new XfbtreePeer();

    /// <summary>Always available: the map needs nothing outside the library.</summary>
    public static bool IsAvailable(out string? why)
    {
        why = null;
        return true;
    }

    /// <inheritdoc/>
    public string Name => "Xfbtree";

    /// <inheritdoc/>
    public void Insert(ReadOnlySpan<RmapRecord> records)
    {
        foreach (ref readonly RmapRecord record in records)
        {
            map.Insert(record);
        }
    }

    /// <inheritdoc/>
    public void BulkLoad(RmapRecord[] sorted)
    {
        if (map.Count != 0)
        {
            map.Dispose();
            map = new ShmemBTree<RmapRecord, RmapRecordMapComparer>();
        }
        map.BulkLoad(sorted);
    }

    /// <inheritdoc/>
    public long Lookup(ReadOnlySpan<RmapRecord> keys)
    {
        long sum = 0;
        foreach (ref readonly RmapRecord key in keys)
        {
            if (map.TryFind(key, out RmapRecord found))
            {
                sum += found.BlockCount;
            }
        }
        return sum;
    }

    /// <inheritdoc/>
    public bool HasBatchLookup => true;

    /// <inheritdoc/>
    public long LookupBatch(ReadOnlySpan<RmapRecord> keys)
    {
        const int Chunk = 256;
        Span<RmapRecord> found = stackalloc RmapRecord[Chunk];
        Span<bool> hit = stackalloc bool[Chunk];
        long sum = 0;
        for (int start = 0; start < keys.Length; start += Chunk)
        {
            ReadOnlySpan<RmapRecord> part = keys.Slice(start, Math.Min(Chunk, keys.Length - start));
            map.TryFindMany(part, found, hit);
            for (int i = 0; i < part.Length; i++)
            {
                if (hit[i])
                {
                    sum += found[i].BlockCount;
                }
            }
        }
        return sum;
    }

    /// <inheritdoc/>
    public long QueryOverlapping(ReadOnlySpan<BlockRange> ranges)
    {
        long found = 0;
        foreach (BlockRange range in ranges)
        {
            uint from = range.FirstPossibleStart;
            var low = new RmapRecord(from, 0, 0, 0);
            var high = new RmapRecord(range.High, 0, ulong.MaxValue, ulong.MaxValue);
            foreach (ref readonly RmapRecord record in map.Range(low, high))
            {
                if (record.StartBlock + record.BlockCount > range.Low)
                {
                    found++;
                }
            }
        }
        return found;
    }

    /// <inheritdoc/>
    public long Scan()
    {
        long sum = 0;
        foreach (ref readonly RmapRecord record in map)
        {
            sum += record.StartBlock;
        }
        return sum;
    }

    /// <inheritdoc/>
    public long Count => map.Count;

    /// <inheritdoc/>
    public long NativeBytes => map.XfileBytesUsed;

    /// <inheritdoc/>
    public void Dispose() => map.Dispose();
}
