namespace Xfbtree.Xfs.Write.Engine;

/// <summary>
/// The durability bound of an engine whose commits are not synced (<see cref="WriteEngineOptions.SyncCommits"/> off,
/// as <c>xfbtree mount</c> without <c>--sync</c>): every <see cref="Interval"/> the journal is fsynced (a no-op when
/// nothing was appended since the last fsync), and every <see cref="TicksPerCheckpoint"/>-th tick checkpoints instead
/// (which fsyncs the journal first), so the metadata pinned in memory is written in place at least that often, as
/// the kernel's periodic log work pushes its dirty metadata. An operation that returned at time t is therefore durable
/// by t + <see cref="Interval"/> + the time of the tick's fsync (up to two: one running when the tick came, then
/// the one that covers the record), while the process runs. Ticks come from a <see cref="TimeProvider"/>, so a test
/// drives them with its own clock instead of sleeping. Ticks may overlap (a slow fsync or checkpoint): the journal's
/// group sync and the commit gate serialize them.
/// </summary>
internal sealed class JournalFlusher : IDisposable
{
    /// <summary>The bound's period: committed operations are fsynced to the journal at most this long after they return
    /// (plus the fsync itself).</summary>
    public static readonly TimeSpan Interval = TimeSpan.FromSeconds(1);

    /// <summary>Ticks between two checkpoints (30 s with the 1-second interval).</summary>
    public const int TicksPerCheckpoint = 30;

    private readonly WriteEngine engine;
    private readonly Action<string> log;
    private readonly ITimer timer;
    private long ticks;
    private int failureLogged;

    /// <summary>Starts ticking: the first tick one <see cref="Interval"/> from now.</summary>
    public JournalFlusher(WriteEngine engine, TimeProvider clock, Action<string> log)
    {
        ArgumentNullException.ThrowIfNull(engine);
        ArgumentNullException.ThrowIfNull(clock);
        this.engine = engine;
        this.log = log;
        timer = clock.CreateTimer(static state => ((JournalFlusher)state!).Tick(), this, Interval, Interval);
    }

    /// <summary>Ticks run so far.</summary>
    public long Ticks => Interlocked.Read(ref ticks);

    private void Tick()
    {
        long tick = Interlocked.Increment(ref ticks);
        try
        {
            if (tick % TicksPerCheckpoint == 0)
            {
                engine.Checkpoint(); // fsyncs the journal first
            }
            else
            {
                engine.SyncJournal();
            }
        }
        catch (Exception e) when (e is XfsWriteException or IOException)
        {
            // Once: a failed engine fails every tick the same way.
            if (Interlocked.Exchange(ref failureLogged, 1) == 0)
            {
                log($"journal flush failed: {e.Message}");
            }
        }
    }

    /// <summary>Stops the ticks and waits for a tick in progress.</summary>
    public void Dispose() => timer.DisposeAsync().AsTask().GetAwaiter().GetResult();
}
