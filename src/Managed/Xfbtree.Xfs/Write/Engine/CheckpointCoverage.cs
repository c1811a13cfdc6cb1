namespace Xfbtree.Xfs.Write.Engine;

/// <summary>
/// The image sectors any journal record since the last checkpoint holds (metadata or journaled file data), durable
/// or not: a replay writes every one of them again. Ordered data (file data written in place before its record, with
/// no journal entry: <see cref="WriteTransaction"/>'s CommitOrderedData) may only go where nothing here lies, or a
/// replay would put older bytes back over it. Unlike <see cref="JournalCoverage"/>, nothing is dropped when a record
/// becomes durable; the set empties only at a checkpoint (the journal is truncated then).
/// <para>
/// Memory is a constant: at most <see cref="Capacity"/> disjoint sorted ranges (<see cref="CapacityBytes"/>) in a
/// <see cref="BoundedRangeSet"/>, touching ranges merged. When it is full it saturates: every range counts as
/// covered until the next checkpoint, which only keeps file data journaled (the safe answer). Nothing is allocated after construction.
/// </para>
/// </summary>
internal sealed class CheckpointCoverage
{
    /// <summary>Ranges held at most.</summary>
    public const int Capacity = 8192;

    /// <summary>Bytes of the range arrays (two 64-bit fields a range, no tag): 128 KiB.</summary>
    public static readonly int CapacityBytes = BoundedRangeSet.BytesFor(Capacity, tagged: false);

    private readonly Lock gate = new();
    private readonly BoundedRangeSet ranges = new(Capacity, tagged: false);
    private bool saturated;

    /// <summary>True once more ranges were noted than fit since the last checkpoint (a test hook).</summary>
    public bool Saturated
    {
        get
        {
            lock (gate)
            {
                return saturated;
            }
        }
    }

    /// <summary>Notes the entries [<paramref name="first"/>, <paramref name="end"/>) of one record.</summary>
    public void Note(List<JournalEntry> entries, int first, int end)
    {
        lock (gate)
        {
            for (int i = first; i < end && !saturated; i++)
            {
                JournalEntry e = entries[i];
                saturated = !ranges.TryAdd(e.Offset / 512, (e.Offset + e.Bytes.Length + 511) / 512, 0);
            }
        }
    }

    /// <summary>True when no record since the last checkpoint holds a sector of [<paramref name="byteOffset"/>,
    /// +<paramref name="length"/>).</summary>
    public bool IsUnjournaled(long byteOffset, long length)
    {
        long start = byteOffset / 512, end = (byteOffset + length + 511) / 512;
        lock (gate)
        {
            return !saturated && !ranges.Overlaps(start, end);
        }
    }

    /// <summary>The journal was emptied (a checkpoint).</summary>
    public void Clear()
    {
        lock (gate)
        {
            ranges.Clear();
            saturated = false;
        }
    }
}
