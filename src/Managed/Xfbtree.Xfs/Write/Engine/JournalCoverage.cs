namespace Xfbtree.Xfs.Write.Engine;

/// <summary>
/// Image sectors that must not be written in place before a journal record is durable, each range with the end of
/// the latest record that requires it (docs/write-engine.md, "Delayed write-back" and "Busy extents"). The engine
/// keeps two: the sectors records logged as metadata (the write-back syncs the journal before it writes them), and
/// the blocks records returned to free space (busy extents, as the kernel's xfs_extent_busy: file data written into
/// one before the free is durable would, after a power loss that drops the free, show in the file that still maps
/// the block). File data into a range of either syncs the journal first (<see cref="WriteEngine.WriteDataInPlace"/>),
/// the allocator keeps file data off busy free space while it can (<see cref="NextBusy"/>; only the second set: a
/// logged block that is freed is in it too), and <see cref="WriteEngineOptions.CheckWriteAhead"/> fails any in-place
/// write that would break the rule.
/// <para>
/// Memory is a constant: at most <see cref="Capacity"/> disjoint ranges (<see cref="CapacityBytes"/>), sorted in a
/// <see cref="BoundedRangeSet"/>, an overlapping or touching range merged into its neighbours (keeping the later
/// record). A range whose record is durable no longer matters: the whole set is dropped once the journal is synced
/// past every record in it, the durable ranges once per sync when it holds more than a few, and when it is full of
/// ranges of records not yet durable the journal is synced and the set emptied (<see cref="FullSyncs"/>). Nothing
/// is allocated after construction.
/// </para>
/// </summary>
internal sealed class JournalCoverage
{
    /// <summary>Ranges held at most.</summary>
    public const int Capacity = 8192;

    /// <summary>Bytes of the range arrays (three 64-bit fields a range): the tracker's whole memory, 192 KiB.</summary>
    public static readonly int CapacityBytes = BoundedRangeSet.BytesFor(Capacity, tagged: true);

    private readonly Lock gate = new();
    // Each range tagged with the journal length at the end of the latest record that covered it.
    private readonly BoundedRangeSet ranges = new(Capacity, tagged: true);
    private readonly WriteJournal journal;
    private long latestRecordEnd;
    private long compactedAt;
    private long fullSyncs;

    public JournalCoverage(WriteJournal journal) => this.journal = journal;

    /// <summary>Journal fsyncs forced because the set was full of ranges of records that were not durable.</summary>
    public long FullSyncs => Interlocked.Read(ref fullSyncs);

    /// <summary>Ranges held now (a test hook).</summary>
    public int Count
    {
        get
        {
            lock (gate)
            {
                return ranges.Count;
            }
        }
    }

    /// <summary>
    /// Notes the metadata entries of one record (those from <paramref name="first"/> on; file data comes first in a
    /// record), durable only once the journal is synced to <paramref name="recordEnd"/>.
    /// </summary>
    public void Note(List<JournalEntry> entries, int first, long recordEnd)
    {
        lock (gate)
        {
            DropIfAllDurable();
            DropDurableAfterSync();
            for (int i = first; i < entries.Count; i++)
            {
                JournalEntry e = entries[i];
                Add(e.Offset / 512, (e.Offset + e.Bytes.Length + 511) / 512, recordEnd);
            }
        }
    }

    /// <summary>Notes the extents one record returned to free space (image sectors: start and length), busy until
    /// the journal is synced to <paramref name="recordEnd"/>.</summary>
    public void Note(List<(long Daddr, long LengthBB)> freed, long recordEnd)
    {
        lock (gate)
        {
            DropIfAllDurable();
            DropDurableAfterSync();
            foreach (var (daddr, lengthBB) in freed)
            {
                Add(daddr, daddr + lengthBB, recordEnd);
            }
        }
    }

    /// <summary>The end of the latest record that covered any sector of [<paramref name="byteOffset"/>,
    /// +<paramref name="length"/>) since the journal was last synced past it, or 0 when none did.</summary>
    public long LatestRecordOver(long byteOffset, long length)
    {
        long start = byteOffset / 512, end = (byteOffset + length + 511) / 512;
        long latest = 0;
        lock (gate)
        {
            DropIfAllDurable();
            for (int i = ranges.FirstEndingAfter(start); i < ranges.Count && ranges.Start(i) < end; i++)
            {
                latest = Math.Max(latest, ranges.Tag(i));
            }
        }
        return latest;
    }

    /// <summary>The first range, in sector order, that overlaps [<paramref name="start"/>, <paramref name="end"/>)
    /// (sectors) and whose record is not durable yet (ends past <paramref name="syncedEnd"/>).</summary>
    public bool NextBusy(long start, long end, long syncedEnd, out long busyStart, out long busyEnd)
    {
        lock (gate)
        {
            if (latestRecordEnd > syncedEnd)
            {
                for (int i = ranges.FirstEndingAfter(start); i < ranges.Count && ranges.Start(i) < end; i++)
                {
                    if (ranges.Tag(i) > syncedEnd)
                    {
                        busyStart = ranges.Start(i);
                        busyEnd = ranges.End(i);
                        return true;
                    }
                }
            }
        }
        busyStart = busyEnd = 0;
        return false;
    }

    /// <summary>True when some range's record is not durable at <paramref name="syncedEnd"/> (cheap: one compare).</summary>
    public bool AnyBusy(long syncedEnd)
    {
        lock (gate)
        {
            return ranges.Count > 0 && latestRecordEnd > syncedEnd;
        }
    }

    /// <summary>The journal was emptied (a checkpoint, every covered sector in place and synced).</summary>
    public void Clear()
    {
        lock (gate)
        {
            ranges.Clear();
            latestRecordEnd = 0;
            compactedAt = 0;
        }
    }

    private void DropIfAllDurable()
    {
        if (ranges.Count > 0 && latestRecordEnd <= journal.SyncedEnd)
        {
            ranges.Clear();
            latestRecordEnd = 0;
        }
    }

    /// <summary>Once per journal sync, when more than a few ranges are held: drops those whose records the sync made
    /// durable, so the set holds about what was noted since the last sync (a shorter array to search and shift), not
    /// everything since it last emptied.</summary>
    private void DropDurableAfterSync()
    {
        long synced = journal.SyncedEnd;
        if (ranges.Count >= 64 && synced > compactedAt)
        {
            compactedAt = synced;
            latestRecordEnd = ranges.KeepTaggedAbove(synced);
        }
    }

    private void Add(long start, long end, long recordEnd)
    {
        // The ranges that overlap or touch [start, end) merge with it into one (keeping the later record).
        if (!ranges.TryAdd(start, end, recordEnd))
        {
            MakeRoom();
            ranges.TryAdd(start, end, recordEnd); // room now: the set was emptied or compacted below its capacity
        }
        latestRecordEnd = Math.Max(latestRecordEnd, recordEnd);
    }

    /// <summary>Full: drop the ranges of durable records; when there are none, sync the journal (every record noted
    /// so far was appended before this call, so the sync covers them all) and start empty.</summary>
    private void MakeRoom()
    {
        latestRecordEnd = ranges.KeepTaggedAbove(journal.SyncedEnd);
        if (ranges.Count < ranges.Capacity)
        {
            return;
        }
        journal.Sync();
        Interlocked.Increment(ref fullSyncs);
        ranges.Clear();
        latestRecordEnd = 0;
    }
}
