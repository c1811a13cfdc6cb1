namespace Xfbtree.Benchmarks.OrderedMap;

/// <summary>SortedSet&lt;RmapRecord&gt; (red-black tree, one node object per record).</summary>
public sealed class SortedSetPeer : IOrderedMapPeer
{
    private SortedSet<RmapRecord> set = new(RmapRecordClassComparer.Instance);

    public string Name => "SortedSet";

    public void Insert(ReadOnlySpan<RmapRecord> records)
    {
        foreach (RmapRecord record in records)
        {
            set.Add(record);
        }
    }

    public void BulkLoad(RmapRecord[] sorted) => set = new SortedSet<RmapRecord>(sorted, RmapRecordClassComparer.Instance);

    public long Lookup(ReadOnlySpan<RmapRecord> keys)
    {
        long sum = 0;
        foreach (RmapRecord key in keys)
        {
            if (set.TryGetValue(key, out RmapRecord found))
            {
                sum += found.BlockCount;
            }
        }
        return sum;
    }

    public long QueryOverlapping(ReadOnlySpan<BlockRange> ranges)
    {
        long found = 0;
        foreach (BlockRange range in ranges)
        {
            uint from = range.FirstPossibleStart;
            var low = new RmapRecord(from, 0, 0, 0);
            var high = new RmapRecord(range.High, 0, ulong.MaxValue, ulong.MaxValue);
            foreach (RmapRecord record in set.GetViewBetween(low, high))
            {
                if (record.StartBlock + record.BlockCount > range.Low)
                {
                    found++;
                }
            }
        }
        return found;
    }

    public long Scan()
    {
        long sum = 0;
        foreach (RmapRecord record in set)
        {
            sum += record.StartBlock;
        }
        return sum;
    }

    public long Count => set.Count;

    public long NativeBytes => 0;

    public void Dispose() => set.Clear();
}

/// <summary>SortedDictionary&lt;RmapKey, uint&gt; (key = start block, owner, offset; value = block count).</summary>
public sealed class SortedDictionaryPeer : IOrderedMapPeer
{
    private readonly SortedDictionary<RmapKey, uint> map = new();

    public string Name => "SortedDictionary";

    public string? InsertNote => "bulk load = sequential Add (no bulk API)";

    public string? RangeQueryNote => "no range API: each overlapped range query enumerates the dictionary in order from its start (O(n)); measured on a prefix of the ranges";

    public int RangeQueryLimit(int records) => Math.Max(5, 20_000_000 / Math.Max(1, records));

    public void Insert(ReadOnlySpan<RmapRecord> records)
    {
        foreach (RmapRecord record in records)
        {
            map.Add(new RmapKey(record.StartBlock, record.Owner, record.Offset), record.BlockCount);
        }
    }

    public void BulkLoad(RmapRecord[] sorted) => Insert(sorted);

    public long Lookup(ReadOnlySpan<RmapRecord> keys)
    {
        long sum = 0;
        foreach (RmapRecord key in keys)
        {
            if (map.TryGetValue(new RmapKey(key.StartBlock, key.Owner, key.Offset), out uint count))
            {
                sum += count;
            }
        }
        return sum;
    }

    public long QueryOverlapping(ReadOnlySpan<BlockRange> ranges)
    {
        long found = 0;
        foreach (BlockRange range in ranges)
        {
            uint from = range.FirstPossibleStart;
            foreach (KeyValuePair<RmapKey, uint> pair in map)
            {
                if (pair.Key.StartBlock < from)
                {
                    continue;
                }
                if (pair.Key.StartBlock > range.High)
                {
                    break;
                }
                if (pair.Key.StartBlock + pair.Value > range.Low)
                {
                    found++;
                }
            }
        }
        return found;
    }

    public long Scan()
    {
        long sum = 0;
        foreach (KeyValuePair<RmapKey, uint> pair in map)
        {
            sum += pair.Key.StartBlock;
        }
        return sum;
    }

    public long Count => map.Count;

    public long NativeBytes => 0;

    public void Dispose() => map.Clear();
}

/// <summary>
/// The xfarray analogue: a flat array of records. Inserts append and the array is sorted once at the end
/// (how XFS repair fills an xfarray); lookups and range queries binary-search.
/// </summary>
public sealed class SortedArrayPeer : IOrderedMapPeer
{
    private RmapRecord[] items = [];
    private int count;

    public string Name => "SortedArray";

    public string? InsertNote => "append, then one sort at the end (xfarray style)";

    public void Insert(ReadOnlySpan<RmapRecord> records)
    {
        foreach (RmapRecord record in records)
        {
            if (count == items.Length)
            {
                Array.Resize(ref items, Math.Max(1024, items.Length * 2));
            }
            items[count++] = record;
        }
        items.AsSpan(0, count).Sort(default(RmapRecordComparer));
    }

    public void BulkLoad(RmapRecord[] sorted)
    {
        items = new RmapRecord[sorted.Length];
        sorted.CopyTo(items, 0);
        count = sorted.Length;
    }

    public long Lookup(ReadOnlySpan<RmapRecord> keys)
    {
        ReadOnlySpan<RmapRecord> span = items.AsSpan(0, count);
        long sum = 0;
        foreach (RmapRecord key in keys)
        {
            int index = span.BinarySearch(key, default(RmapRecordComparer));
            if (index >= 0)
            {
                sum += span[index].BlockCount;
            }
        }
        return sum;
    }

    public long QueryOverlapping(ReadOnlySpan<BlockRange> ranges)
    {
        ReadOnlySpan<RmapRecord> span = items.AsSpan(0, count);
        long found = 0;
        foreach (BlockRange range in ranges)
        {
            uint from = range.FirstPossibleStart;
            int index = span.BinarySearch(new RmapRecord(from, 0, 0, 0), default(RmapRecordComparer));
            if (index < 0)
            {
                index = ~index;
            }
            for (; index < span.Length && span[index].StartBlock <= range.High; index++)
            {
                if (span[index].StartBlock + span[index].BlockCount > range.Low)
                {
                    found++;
                }
            }
        }
        return found;
    }

    public long Scan()
    {
        long sum = 0;
        foreach (RmapRecord record in items.AsSpan(0, count))
        {
            sum += record.StartBlock;
        }
        return sum;
    }

    public long Count => count;

    public long NativeBytes => 0;

    public void Dispose()
    {
        items = [];
        count = 0;
    }
}
