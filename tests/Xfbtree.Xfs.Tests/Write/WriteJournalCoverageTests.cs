using Xunit.Abstractions;
using Xfbtree.Xfs.Tests.Repair;
using Xfbtree.Xfs.Write.Engine;

namespace Xfbtree.Xfs.Tests.Write;

/// <summary>
/// The write-ahead tracker (<see cref="JournalCoverage"/>) in isolation, over a real journal: ranges merge, the set
/// forgets what is durable, stays within <see cref="JournalCoverage.Capacity"/> ranges whatever is noted (syncing the
/// journal when full of ranges of records that are not durable), and noting allocates nothing in steady state (one
/// dictionary entry per logged sector before, which grew with every sector).
/// </summary>
public sealed class WriteJournalCoverageTests(ITestOutputHelper output)
{
    static readonly byte[] Payload = new byte[128];

    /// <summary>Appends a small record (unsynced) and returns its end, as a commit does.</summary>
    static long Record(WriteJournal journal) => journal.Append([new JournalEntry(0, Payload)], sync: false);

    [Fact]
    public void RangesMerge_AndTheLatestRecordWins()
    {
        using var scratch = new RepairScratch();
        using var journal = WriteJournal.Create(Path.Combine(scratch.Directory, "j"), new byte[16], null);
        var coverage = new JournalCoverage(journal);
        long r1 = Record(journal), r2 = Record(journal);
        // Two chunks of one 4 KiB block (sectors 8..15), then the block freed by a later record: one range.
        coverage.Note([new JournalEntry(8 * 512, new byte[128]), new JournalEntry(8 * 512 + 3968, new byte[128])], 0, r1);
        Assert.Equal(2, coverage.Count);
        coverage.Note([(8, 8)], r2);
        Assert.Equal(1, coverage.Count);
        Assert.Equal(r2, coverage.LatestRecordOver(8 * 512, 4096));
        Assert.Equal(0, coverage.LatestRecordOver(16 * 512, 4096));
        // Touching ranges merge; a gap keeps them apart.
        coverage.Note([(16, 8), (32, 8)], r1);
        Assert.Equal(2, coverage.Count);
        Assert.True(coverage.NextBusy(20, 40, journal.SyncedEnd, out long s, out long e) && s == 8 && e == 24);
        Assert.True(coverage.NextBusy(24, 40, journal.SyncedEnd, out s, out e) && s == 32 && e == 40);
        Assert.False(coverage.NextBusy(24, 32, journal.SyncedEnd, out _, out _));
        // Durable: nothing is busy any more, and the set empties at the next touch.
        journal.Sync();
        Assert.False(coverage.AnyBusy(journal.SyncedEnd));
        Assert.False(coverage.NextBusy(0, 100, journal.SyncedEnd, out _, out _));
        Assert.Equal(0, coverage.LatestRecordOver(8 * 512, 4096));
        Assert.Equal(0, coverage.Count);
    }

    [Fact]
    public void TheSetStaysBounded_SyncsWhenFull_AndAllocatesNothing()
    {
        using var scratch = new RepairScratch();
        using var journal = WriteJournal.Create(Path.Combine(scratch.Directory, "j"), new byte[16], null);
        var coverage = new JournalCoverage(journal);
        var entries = new List<JournalEntry>(1) { default };
        var freed = new List<(long, long)>(1) { default };
        // Warm up (the journal's pooled record buffer, the JIT), then measure: three times the capacity of separate
        // ranges, a record each, none synced by anyone but the tracker.
        for (int i = 0; i < 100; i++)
        {
            freed[0] = (i * 16L, 8);
            coverage.Note(freed, Record(journal));
        }
        long synced0 = journal.SyncedEnd, fullSyncs0 = coverage.FullSyncs;
        int notes = 3 * JournalCoverage.Capacity;
        long noteBytes = 0;
        int largest = 0;
        for (int i = 0; i < notes; i++)
        {
            long end = Record(journal);
            freed[0] = ((100 + i) * 16L, 8);
            entries[0] = new JournalEntry((100 + i) * 16L * 512 + 4096, Payload);
            long before = GC.GetAllocatedBytesForCurrentThread();
            coverage.Note(freed, end);
            coverage.Note(entries, 0, end);
            noteBytes += GC.GetAllocatedBytesForCurrentThread() - before;
            largest = Math.Max(largest, coverage.Count);
        }
        output.WriteLine($"{notes} records noting 2 touching ranges each: at most {largest} ranges held ({JournalCoverage.CapacityBytes} bytes), " +
            $"{coverage.FullSyncs - fullSyncs0} journal syncs when full, {noteBytes} bytes allocated by the notes");
        Assert.True(largest <= JournalCoverage.Capacity);
        Assert.True(coverage.FullSyncs - fullSyncs0 >= 2, "the set never filled up");
        Assert.True(journal.SyncedEnd > synced0);
        Assert.Equal(0, noteBytes);
        // What is not durable is still covered after the syncs: the last range noted.
        long last = Record(journal);
        coverage.Note([(1L << 30, 8)], last);
        Assert.Equal(last, coverage.LatestRecordOver((1L << 30) * 512, 4096));
    }
}
