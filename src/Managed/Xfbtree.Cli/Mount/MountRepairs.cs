using System.Globalization;
using Xfbtree.Cli.Stress;
using Xfbtree.Xfs.Online;
using Xfbtree.Xfs.Write;
using Xfbtree.Xfs.Write.Engine;

namespace Xfbtree.Cli.Mount;

/// <summary>What one online repair of one AG did (or why it could not).</summary>
internal sealed record MountRepairOutcome(uint Ag, OnlineRmapRepairResult? Result, OnlineRepairVerdict? Verdict, string? Failure, int FailureErrno)
{
    public bool Succeeded => Result is not null;
}

/// <summary>
/// The health of a mounted image's AGs and every online rmap repair of it: the rotation of
/// <c>--online-repair-every</c>, the repairs asked through the control channel (<c>xfbtree rmap repair --online</c>),
/// and the repair of an AG found sick while mounted (right away when the rotation runs). One repair at a time.
/// The engine's sickness is the truth (<see cref="EngineAg.SickReason"/>); this adds when an AG was found sick,
/// when it was repaired and the counts.
/// </summary>
internal sealed class MountRepairs : IDisposable
{
    /// <summary>How long a request that failed on a sick AG waits for its repair before the error goes to the program.</summary>
    static readonly TimeSpan HealWait = TimeSpan.FromSeconds(120);

    readonly WriteEngine _engine;
    readonly TimeSpan? _every;
    readonly double _cpuShare;
    readonly Action<string> _log;
    readonly string _hint;
    readonly bool _canRebuild; // the filesystem has an rmapbt, the source of every online rebuild
    readonly Lock _repairGate = new(); // one repair at a time
    readonly object _gate = new(); // the books and the waiters (Monitor)
    readonly AgBook[] _books;
    readonly AutoResetEvent _wake = new(false);
    readonly CancellationTokenSource _stop = new();
    Thread? _thread;
    long _repairs, _applied, _ignored, _failures;

    sealed class AgBook
    {
        public long SickSinceMs;
        public string? SickReason;
        public long RepairedAtMs;
        public long LastRebuiltMs;
        public long Repairs;
        public long Failures;
        public long Attempts; // finished repair attempts, successful or not (waiters watch it)
    }

    /// <param name="engine">The mounted image's engine.</param>
    /// <param name="every">The rotation's period; null: no rotation, and a sick AG waits for a repair asked for.</param>
    /// <param name="log">The mount's log (stderr).</param>
    /// <param name="directory">The mount point, for the hint in the log.</param>
    /// <param name="cpuShare">The share of one CPU the inode scans of every repair and scrub of the mount may use
    /// (<see cref="OnlineRmapRepairOptions.CpuShare"/>; 1 = not paced).</param>
    public MountRepairs(WriteEngine engine, TimeSpan? every, Action<string> log, string directory, double cpuShare = 1)
    {
        _engine = engine;
        _every = every;
        _cpuShare = cpuShare;
        _log = log;
        _canRebuild = engine.Geometry.Superblock.HasRmapbt;
        _hint = _canRebuild ? $"xfbtree rmap repair --online {directory} rebuilds it"
            : "the filesystem has no rmapbt, so nothing rebuilds it online: unmount it and run xfbtree scrub --repair on the image";
        _books = new AgBook[engine.Geometry.AgCount];
        for (int i = 0; i < _books.Length; i++) _books[i] = new AgBook();
        engine.AgMarkedSick += OnAgMarkedSick;
        // AGs found sick by the open (their headers) were marked before this handler existed.
        for (uint agno = 0; agno < _books.Length; agno++)
        {
            if (engine.Ag(agno).SickReason is { } reason) OnAgMarkedSick(engine.Ag(agno), reason);
        }
    }

    /// <summary>True when sick AGs are repaired without being asked (the rotation runs: never on a filesystem
    /// without an rmapbt, the source of truth of every online rebuild).</summary>
    public bool Heals => _every is not null && _canRebuild;

    /// <summary>What an online repair request answers on a filesystem without an rmapbt (the kernel's online repairs
    /// of the AG btrees need it too).</summary>
    public const string NoRmapbtRefusal = "the filesystem has no reverse-mapping btree, the source every online rebuild needs (as the kernel's do): nothing is rebuilt online; 'xfbtree scrub --repair' of the unmounted image repairs it";

    /// <summary>The rotation's period; null when no rotation runs (none asked, or no rmapbt to rebuild from).</summary>
    public TimeSpan? Every => Heals ? _every : null;

    /// <summary>The pace of the mount's repairs and scrubs (<c>--repair-cpu-share</c>).</summary>
    public double CpuShare => _cpuShare;

    public uint AgCount => (uint)_books.Length;

    /// <summary>Starts the rotation (and the repair of sick AGs) when a period was given.</summary>
    public void Start()
    {
        if (_every is null) return;
        if (!_canRebuild)
        {
            // Said once; the mount goes on serving requests, without a rotation.
            _log("xfbtree: mount: --online-repair-every: the filesystem has no reverse-mapping btree, so no rotation runs: " +
                 "the rmapbt, bnobt/cntbt, inobt/finobt and refcountbt rebuilds all need it (as the kernel's online repairs do); " +
                 "'xfbtree scrub DIR' still checks the link counts and counters, and an AG found damaged is marked sick and logged for an offline 'xfbtree scrub --repair'");
            return;
        }
        _thread = new Thread(Rotate) { IsBackground = true, Name = "online-repair" };
        _thread.Start();
    }

    /// <summary>Stops the rotation and waits for it (a repair in progress is cancelled: nothing changes on disk).</summary>
    public void Stop()
    {
        _engine.AgMarkedSick -= OnAgMarkedSick;
        _stop.Cancel();
        _wake.Set();
        _thread?.Join();
        lock (_gate) Monitor.PulseAll(_gate);
    }

    public void Dispose()
    {
        Stop();
        _wake.Dispose();
        _stop.Dispose();
    }

    void OnAgMarkedSick(EngineAg ag, string reason)
    {
        var book = _books[ag.AgNumber];
        lock (_gate)
        {
            book.SickSinceMs = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds();
            book.SickReason = reason;
        }
        _log(string.Create(CultureInfo.InvariantCulture,
            $"xfbtree: mount: AG {ag.AgNumber} is sick: {reason}; {(Heals ? "repairing it online now" : _hint)}"));
        _wake.Set();
    }

    /// <summary>The rotation: a sick AG first, else the next AG once a period has passed since the last turn.</summary>
    void Rotate()
    {
        TimeSpan period = _every!.Value;
        uint next = 0;
        DateTime due = DateTime.UtcNow + period;
        while (!_stop.IsCancellationRequested)
        {
            TimeSpan left = due - DateTime.UtcNow;
            if (FirstSick() is not { } sick)
            {
                if (left > TimeSpan.Zero)
                {
                    _wake.WaitOne(left);
                    continue;
                }
                RunRepair(next, verify: false, asker: null);
                next = (next + 1) % AgCount;
                due = DateTime.UtcNow + period;
                continue;
            }
            var outcome = RunRepair(sick, verify: false, asker: null);
            // A sick AG whose repair failed is tried again at the next period, not in a tight loop.
            if (!outcome.Succeeded && !_stop.IsCancellationRequested) _wake.WaitOne(period);
        }
    }

    uint? FirstSick()
    {
        for (uint agno = 0; agno < AgCount; agno++)
        {
            if (_engine.Ag(agno).IsSick) return agno;
        }
        return null;
    }

    /// <summary>Rebuilds one AG's rmapbt online now (waiting for a repair in progress), verified when asked.</summary>
    /// <param name="agno">The AG.</param>
    /// <param name="verify">Compare the new tree with an offline scan made while commits are paused.</param>
    /// <param name="asker">The uid that asked through the control channel; null for the mount's own repairs.</param>
    /// <param name="cpuShare">The pace the request asked for; null: the mount's.</param>
    public MountRepairOutcome RunRepair(uint agno, bool verify, uint? asker, double? cpuShare = null)
    {
        string by = asker is { } uid ? string.Create(CultureInfo.InvariantCulture, $", asked by uid {uid}") : "";
        if (!_canRebuild)
        {
            // Refused per request, not counted as a failed repair: nothing was tried.
            return new MountRepairOutcome(agno, null, null, NoRmapbtRefusal, Fuse.FuseErrno.EOPNOTSUPP);
        }
        lock (_repairGate)
        {
            var book = _books[agno];
            long startedMs = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds();
            bool wasSick = _engine.Ag(agno).IsSick;
            MountRepairOutcome outcome;
            try
            {
                // A sick AG's repair is not paced: requests that failed on it wait for it (WaitForHealing).
                var result = OnlineRmapRepair.Run(_engine, agno, new OnlineRmapRepairOptions { CpuShare = wasSick ? 1 : cpuShare ?? _cpuShare }, null, _stop.Token);
                OnlineRepairVerdict? verdict = verify ? OnlineRepairOracle.Verify(_engine, agno) : null;
                long now = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds();
                lock (_gate)
                {
                    // Sick before, or found sick while this repair ran (a writer read the old tree): the new tree heals it.
                    wasSick |= book.SickSinceMs >= startedMs;
                    book.LastRebuiltMs = now;
                    if (wasSick) book.RepairedAtMs = now;
                    book.Repairs++;
                    book.Attempts++;
                    Monitor.PulseAll(_gate);
                }
                Interlocked.Increment(ref _repairs);
                Interlocked.Add(ref _applied, result.LiveUpdatesApplied);
                Interlocked.Add(ref _ignored, result.LiveUpdatesIgnored);
                string checkedText = verdict is null ? "" : verdict.IsClean ? "; verified: same as a scan with commits paused"
                    : $"; verify: {verdict.Mismatches} mismatches ({verdict.Detail})";
                _log(string.Create(CultureInfo.InvariantCulture,
                    $"xfbtree: mount: online repair: AG {agno} rmapbt rebuilt ({result.Records} records, {result.LiveUpdatesApplied} live updates applied, {result.LiveUpdatesIgnored} ignored{by}){(wasSick ? "; the AG is healthy again" : "")}{checkedText}"));
                outcome = new MountRepairOutcome(agno, result, verdict, null, 0);
            }
            catch (OperationCanceledException)
            {
                // The mount is ending: not a failure of the repair (nothing changed on disk).
                outcome = Failed(agno, book, "cancelled: the mount is ending", Fuse.FuseErrno.EINTR, counted: false);
            }
            catch (Exception e) when (e is OnlineRepairException or XfsWriteException)
            {
                // Failed cleanly (nothing changed on disk); the next turn, or the next request, tries again.
                _log($"xfbtree: mount: online repair of AG {agno}{by}: {e.Message}");
                outcome = Failed(agno, book, e.Message, e is XfsWriteException w ? w.Errno : Fuse.FuseErrno.EAGAIN);
            }
            return outcome;
        }
    }

    MountRepairOutcome Failed(uint agno, AgBook book, string message, int errno, bool counted = true)
    {
        if (counted) Interlocked.Increment(ref _failures);
        lock (_gate)
        {
            if (counted) book.Failures++;
            book.Attempts++;
            Monitor.PulseAll(_gate);
        }
        return new MountRepairOutcome(agno, null, null, message, errno);
    }

    public bool IsSick(uint agno) => agno < AgCount && _engine.Ag(agno).IsSick;

    /// <summary>
    /// Runs after an online scrub repair changed the filesystem behind the kernel's back (link counts, directory
    /// entries, parents): the mount makes the kernel forget the attributes and names it caches (they are cached for
    /// an hour, <see cref="XfsFuseFileSystem"/>). Set once the session exists; the rmap rebuilds change no inode and
    /// do not call it.
    /// </summary>
    public Action? KernelCachesStale { get; set; }

    /// <summary>The mounted image's engine (the scrub checks and repairs it).</summary>
    public WriteEngine Engine => _engine;

    /// <summary>Cancelled when the mount ends.</summary>
    public CancellationToken Stopping => _stop.Token;

    /// <summary>Runs <paramref name="body"/> with no repair running meanwhile (scrub checks and repairs: one at a time
    /// with the rotation's and the asked-for rmap repairs).</summary>
    public T Exclusive<T>(Func<T> body)
    {
        lock (_repairGate) return body();
    }

    /// <summary>
    /// A request failed because AG <paramref name="target"/> was sick: when the mount heals sick AGs, waits until the
    /// AG is healthy again, two repair attempts of it failed, or the wait's bound passed. True when it is healthy
    /// (the request may run again).
    /// </summary>
    public bool WaitForHealing(uint target)
    {
        if (!Heals || target >= AgCount) return false;
        if (!_engine.Ag(target).IsSick) return true; // repaired meanwhile
        var book = _books[target];
        var deadline = DateTime.UtcNow + HealWait;
        _wake.Set();
        lock (_gate)
        {
            long start = book.Attempts;
            while (_engine.Ag(target).IsSick && book.Attempts - start < 2 && !_stop.IsCancellationRequested)
            {
                var left = deadline - DateTime.UtcNow;
                if (left <= TimeSpan.Zero) break;
                Monitor.Wait(_gate, left);
            }
        }
        return !_engine.Ag(target).IsSick;
    }

    /// <summary>One AG's health for the control channel.</summary>
    public MountControlHeader Health(uint agno, out string? reason)
    {
        var book = _books[agno];
        string? sick = _engine.Ag(agno).SickReason;
        lock (_gate)
        {
            var state = sick is not null ? MountAgState.Sick : book.RepairedAtMs != 0 ? MountAgState.Repaired : MountAgState.Healthy;
            reason = sick ?? (state == MountAgState.Repaired ? book.SickReason : null);
            return new MountControlHeader
            {
                Ag = agno,
                AgCount = AgCount,
                State = state,
                SickSinceMs = state == MountAgState.Healthy ? 0 : book.SickSinceMs,
                RepairedAtMs = book.RepairedAtMs,
                LastRebuiltMs = book.LastRebuiltMs,
                Repairs = book.Repairs,
                FailedRepairs = book.Failures,
            };
        }
    }

    /// <summary>The mount's last line about its own and asked-for repairs.</summary>
    public void WriteReport(TextWriter stdout)
    {
        if (_every is null && Interlocked.Read(ref _repairs) + Interlocked.Read(ref _failures) == 0) return;
        stdout.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"online-repair repairs={Interlocked.Read(ref _repairs)} applied={Interlocked.Read(ref _applied)} ignored={Interlocked.Read(ref _ignored)} failed={Interlocked.Read(ref _failures)}"));
    }
}
