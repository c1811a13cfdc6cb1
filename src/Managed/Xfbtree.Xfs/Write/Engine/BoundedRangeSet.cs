namespace Xfbtree.Xfs.Write.Engine;

/// <summary>
/// Disjoint, sorted sector ranges in arrays allocated once (<see cref="JournalCoverage"/> and
/// <see cref="CheckpointCoverage"/> keep theirs in one): a range that overlaps or touches others merges with them into
/// one. Each range may carry a tag (the end of the latest journal record that covered it), merged as the largest;
/// a set made without tags spends no memory on them. Not thread-safe: the owner locks.
/// </summary>
internal sealed class BoundedRangeSet
{
    private readonly long[] starts; // first sector of each range
    private readonly long[] ends;   // sector after its last
    private readonly long[]? tags;

    public BoundedRangeSet(int capacity, bool tagged)
    {
        starts = new long[capacity];
        ends = new long[capacity];
        tags = tagged ? new long[capacity] : null;
    }

    /// <summary>Ranges held at most.</summary>
    public int Capacity => starts.Length;

    /// <summary>Ranges held now.</summary>
    public int Count { get; private set; }

    /// <summary>Bytes of the arrays: the set's whole memory apart from its object headers.</summary>
    public static int BytesFor(int capacity, bool tagged) => capacity * (tagged ? 24 : 16);

    public long Start(int i) => starts[i];

    public long End(int i) => ends[i];

    public long Tag(int i) => tags is null ? 0 : tags[i];

    public void Clear() => Count = 0;

    /// <summary>Index of the first range ending after <paramref name="sector"/> (the ranges are disjoint and sorted, so
    /// their ends are sorted too); <see cref="Count"/> when none.</summary>
    public int FirstEndingAfter(long sector)
    {
        int lo = 0, hi = Count;
        while (lo < hi)
        {
            int mid = (lo + hi) >>> 1;
            if (ends[mid] > sector) hi = mid; else lo = mid + 1;
        }
        return lo;
    }

    /// <summary>True when a range holds a sector of [<paramref name="start"/>, <paramref name="end"/>).</summary>
    public bool Overlaps(long start, long end)
    {
        int i = FirstEndingAfter(start);
        return i < Count && starts[i] < end;
    }

    /// <summary>Adds [<paramref name="start"/>, <paramref name="end"/>) with <paramref name="tag"/>, merged with every
    /// range it overlaps or touches (the merged tag the largest). False, nothing changed, when it touches none and
    /// the set is full.</summary>
    public bool TryAdd(long start, long end, long tag)
    {
        int i = FirstEndingAfter(start - 1);
        int j = i;
        while (j < Count && starts[j] <= end)
        {
            start = Math.Min(start, starts[j]);
            end = Math.Max(end, ends[j]);
            if (tags is not null) tag = Math.Max(tag, tags[j]);
            j++;
        }
        if (j > i)
        {
            // Range i becomes the merged one; i + 1 .. j - 1 go.
            Put(i, start, end, tag);
            Shift(j, i + 1, Count - j);
            Count -= j - i - 1;
            return true;
        }
        if (Count == Capacity)
        {
            return false;
        }
        Shift(i, i + 1, Count - i);
        Put(i, start, end, tag);
        Count++;
        return true;
    }

    /// <summary>Keeps only the ranges tagged above <paramref name="tag"/>, in order; the largest tag kept (0 when none).</summary>
    public long KeepTaggedAbove(long tag)
    {
        int kept = 0;
        long largest = 0;
        for (int k = 0; k < Count; k++)
        {
            long t = Tag(k);
            if (t > tag)
            {
                Put(kept++, starts[k], ends[k], t);
                largest = Math.Max(largest, t);
            }
        }
        Count = kept;
        return largest;
    }

    private void Put(int i, long start, long end, long tag)
    {
        starts[i] = start;
        ends[i] = end;
        if (tags is not null) tags[i] = tag;
    }

    private void Shift(int from, int to, int length)
    {
        Array.Copy(starts, from, starts, to, length);
        Array.Copy(ends, from, ends, to, length);
        if (tags is not null) Array.Copy(tags, from, tags, to, length);
    }
}
