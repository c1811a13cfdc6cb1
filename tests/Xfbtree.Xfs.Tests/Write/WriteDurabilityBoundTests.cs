using Xunit.Abstractions;
using Xfbtree.Xfs.Tests.Repair;
using Xfbtree.Xfs.Write;
using Xfbtree.Xfs.Write.Engine;
using static Xfbtree.Xfs.Tests.Write.WriteEngineTestSupport;

namespace Xfbtree.Xfs.Tests.Write;

/// <summary>
/// The durability bound without synced commits (docs/write-engine.md, "Group sync"; docs/mount.md, "Durability"):
/// <see cref="JournalFlusher"/> fsyncs the journal every <see cref="JournalFlusher.Interval"/> and checkpoints every
/// <see cref="JournalFlusher.TicksPerCheckpoint"/>-th tick. Driven by a <see cref="ManualClock"/>: no sleep, each tick
/// runs exactly when the test moves time past it. A power loss (the journal cut back to its last fsync) keeps what a
/// tick covered and loses what came after.
/// </summary>
public sealed class WriteDurabilityBoundTests(ITestOutputHelper output)
{
    static readonly TimeSpan Instant = TimeSpan.FromTicks(1);

    [Fact]
    public void AnOperationIsDurableOneIntervalAfterItReturned_AndAPowerLossKeepsIt()
    {
        using var scratch = new RepairScratch();
        string image = scratch.CopyFixture("fresh-4ag");
        var clock = new ManualClock();
        var log = new List<string>();
        long synced;
        var fs = XfsFileSystem.Open(image, Fast);
        try
        {
            WriteJournal journal = fs.Engine.Journal;
            using var flusher = new JournalFlusher(fs.Engine, clock, log.Add);
            clock.Advance(TimeSpan.FromMilliseconds(300));
            fs.Create("/a");
            fs.Write("/a", 0, new byte[8192]);
            long a = journal.Length;
            Assert.True(journal.SyncedEnd < a, "the commits were synced without a tick (SyncCommits is off here)");
            // The first tick is one interval after the flusher started: 0.7 s after the operation.
            clock.Advance(JournalFlusher.Interval - TimeSpan.FromMilliseconds(300) - Instant);
            Assert.Equal(0, flusher.Ticks);
            Assert.True(journal.SyncedEnd < a, "durable before any tick");
            clock.Advance(Instant);
            Assert.Equal(1, flusher.Ticks);
            Assert.True(journal.SyncedEnd >= a, "the tick did not make the operation durable");
            // An operation right after a tick waits for the next one: at most one interval.
            fs.Create("/b");
            long b = journal.Length;
            clock.Advance(JournalFlusher.Interval - Instant);
            Assert.True(journal.SyncedEnd < b, "durable before the next tick");
            clock.Advance(Instant);
            Assert.True(journal.SyncedEnd >= b, "not durable one interval after it returned");
            // One more, then the power goes off before the next tick.
            fs.Create("/c");
            clock.Advance(JournalFlusher.Interval / 2);
            synced = journal.SyncedEnd;
            Assert.True(synced < journal.Length);
            Assert.Empty(log);
        }
        finally
        {
            fs.Dispose();
        }
        string journalPath = WriteEngine.DefaultJournalPath(image);
        using (var h = File.OpenHandle(journalPath, FileMode.Open, FileAccess.ReadWrite))
        {
            RandomAccess.SetLength(h, synced);
        }
        using (var reopened = XfsFileSystem.Open(image, Fast))
        {
            Assert.Equal(8192, reopened.Stat("/a").Size);
            reopened.Lookup("/b");
            Assert.Equal(WriteErrorKind.NotFound, Assert.Throws<XfsWriteException>(() => reopened.Lookup("/c")).Kind);
            reopened.Close();
        }
        AssertOraclesClean(image, "after the power loss");
    }

    [Fact]
    public void EveryThirtiethTickCheckpoints()
    {
        using var scratch = new RepairScratch();
        string image = scratch.CopyFixture("fresh-4ag");
        var clock = new ManualClock();
        using var fs = XfsFileSystem.Open(image, Fast);
        WriteEngine engine = fs.Engine;
        using (var flusher = new JournalFlusher(engine, clock, _ => { }))
        {
            long checkpoints = engine.Checkpoints;
            for (int tick = 1; tick < JournalFlusher.TicksPerCheckpoint; tick++)
            {
                fs.Create($"/f{tick}");
                clock.Advance(JournalFlusher.Interval);
                Assert.Equal(tick, flusher.Ticks);
                Assert.Equal(checkpoints, engine.Checkpoints);
                Assert.Equal(engine.Journal.Length, engine.Journal.SyncedEnd);
            }
            Assert.True(engine.PinnedBytes > 0);
            fs.Create("/last");
            clock.Advance(JournalFlusher.Interval);
            Assert.Equal(checkpoints + 1, engine.Checkpoints);
            Assert.Equal(0, engine.PinnedBytes);
            Assert.Equal(WriteJournal.HeaderLength, engine.Journal.Length);
            output.WriteLine($"{flusher.Ticks} ticks, {engine.Checkpoints - checkpoints} checkpoint");
        }
        // Disposed: time moves on, nothing ticks.
        fs.Create("/after");
        long length = engine.Journal.Length;
        clock.Advance(JournalFlusher.Interval * 3);
        Assert.True(engine.Journal.SyncedEnd < length, "a disposed flusher still ticked");
        fs.Close();
    }
}
