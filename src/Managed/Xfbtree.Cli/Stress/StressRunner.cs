using System.Diagnostics;
using System.Globalization;
using Xfbtree.Xfs.Write;
using Attributes = Xfbtree.Xfs.Write.Attributes;
using Xfbtree.Xfs.Write.Namespace;

namespace Xfbtree.Cli.Stress;

/// <summary>Parameters of a stress run.</summary>
internal sealed record StressOptions
{
    public long Ops { get; init; } = 1000;
    public int Threads { get; init; } = 2;
    public int Seed { get; init; } = 1;
    /// <summary>Receives every operation before it runs and its outcome after (the crash test's durable log).</summary>
    public IStressOpLog? OpLog { get; init; }
    /// <summary>Work beside the workload (online repair): runs on its own thread from the start; the workers go on
    /// past <see cref="Ops"/> until it returns; an exception from it is a problem of the run.</summary>
    public IStressBackground? Background { get; init; }
}

/// <summary>A background job of a stress run (see <see cref="StressOptions.Background"/>).</summary>
internal interface IStressBackground
{
    /// <summary>Runs until it is done; <paramref name="workloadDone"/> turns true once the workers have claimed
    /// their operations or the run stopped on a problem (then return soon).</summary>
    void Run(Func<bool> workloadDone);
}

/// <summary>What a stress run did.</summary>
internal sealed class StressResult
{
    internal StressResult(long[,] counts, TimeSpan elapsed, IReadOnlyList<string> problems)
    {
        Counts = counts;
        Elapsed = elapsed;
        Problems = problems;
    }

    /// <summary>[op kind, outcome]: outcome 0 = as expected (success, or the expected error), 1 + k = WriteErrorKind k.</summary>
    public long[,] Counts { get; }

    /// <summary>AGs the target reported sick when the run started (the only ones Corrupt outcomes may name).</summary>
    public IReadOnlyCollection<uint> DamagedAtStart { get; init; } = [];

    /// <summary>AGs sick when the run ended, with the reason.</summary>
    public IReadOnlyList<(uint Ag, string Reason)> SickAtEnd { get; init; } = [];

    public TimeSpan Elapsed { get; }

    /// <summary>Mismatches between engine and model (a read that differs, an unexpected error, an internal error).</summary>
    public IReadOnlyList<string> Problems { get; }

    public long Total
    {
        get
        {
            long total = 0;
            foreach (long c in Counts) total += c;
            return total;
        }
    }

    public long Count(StressOpKind kind) => Enumerable.Range(0, Counts.GetLength(1)).Sum(o => Counts[(int)kind, o]);

    public long Succeeded(StressOpKind kind) => Counts[(int)kind, 0];

    public long Failed(StressOpKind kind, WriteErrorKind error) => Counts[(int)kind, 1 + (int)error];

    public long FailedTotal(WriteErrorKind error) => Enumerable.Range(0, Counts.GetLength(0)).Sum(k => Counts[k, 1 + (int)error]);

    public double OpsPerSecond => Elapsed.TotalSeconds > 0 ? Total / Elapsed.TotalSeconds : 0;

    /// <summary>One line on the AGs' health: what was damaged at the start, Corrupt outcomes, what is sick at the
    /// end; "FAILED" when a run that started healthy saw corruption.</summary>
    public string HealthLine()
    {
        long corrupt = FailedTotal(WriteErrorKind.Corrupt);
        string start = DamagedAtStart.Count == 0 ? "healthy at the start" : $"damaged at the start: AG {string.Join(", ", DamagedAtStart)}";
        string end = SickAtEnd.Count == 0 ? "no AG sick at the end" : "sick at the end: " + string.Join("; ", SickAtEnd.Select(s => $"AG {s.Ag} ({s.Reason})"));
        bool failed = DamagedAtStart.Count == 0 && (corrupt > 0 || SickAtEnd.Count > 0);
        return $"health: {(failed ? "FAILED: " : "")}{start}; {corrupt} Corrupt outcomes; {end}";
    }

    /// <summary>One line per op kind: attempts, successes and each failure kind seen.</summary>
    public void WriteCounts(TextWriter writer)
    {
        ArgumentNullException.ThrowIfNull(writer);
        foreach (StressOpKind kind in Enum.GetValues<StressOpKind>())
        {
            long total = Count(kind);
            if (total == 0) continue;
            var line = new System.Text.StringBuilder().Append(CultureInfo.InvariantCulture, $"  {kind.ToString().ToLowerInvariant(),-15} {total,8}  ok {Succeeded(kind)}");
            foreach (WriteErrorKind error in Enum.GetValues<WriteErrorKind>())
            {
                long n = Failed(kind, error);
                if (n > 0) line.Append(CultureInfo.InvariantCulture, $"  {error} {n}");
            }
            writer.WriteLine(line.ToString());
        }
    }
}

/// <summary>
/// A random workload over every write-engine operation, checked against a <see cref="StressModel"/>. Each thread
/// picks an operation and its nodes, takes their model locks (ascending node id), re-checks that they are alive,
/// fixes the parameters from the model's state, calls the engine and, when it succeeded, applies the operation to
/// the model before releasing the locks: so, per file, model order is engine order. An operation that fails with
/// an <see cref="XfsWriteException"/> leaves the model unchanged (the engine is all-or-nothing); NoSpace,
/// NotSupported and Io are counted, any other error or any difference stops the run as a problem. Corrupt is
/// counted only on a run that started from damage (AGs the target reported sick when <see cref="Run"/> began), and
/// only for such an AG while it is still sick when the operation starts; on a healthy start any Corrupt outcome is a
/// problem, and so is any AG sick at the end that was healthy at the start.
/// </summary>
internal sealed class StressRunner
{
    static readonly (StressOpKind Kind, int Weight)[] Weights =
    [
        (StressOpKind.Write, 24), (StressOpKind.Read, 8), (StressOpKind.Fallocate, 6), (StressOpKind.PunchHole, 9),
        (StressOpKind.Truncate, 6), (StressOpKind.Reflink, 9), (StressOpKind.Unshare, 4), (StressOpKind.Create, 9),
        (StressOpKind.Mkdir, 3), (StressOpKind.Unlink, 6), (StressOpKind.Rmdir, 2), (StressOpKind.Stat, 4),
        (StressOpKind.List, 3), (StressOpKind.CreateExisting, 1), (StressOpKind.Rename, 5), (StressOpKind.Symlink, 2),
        (StressOpKind.Mknod, 1), (StressOpKind.Chmod, 2), (StressOpKind.Chown, 2), (StressOpKind.Utimes, 2),
        (StressOpKind.Link, 3), (StressOpKind.LinkExisting, 1), (StressOpKind.SetXattr, 5), (StressOpKind.RemoveXattr, 2),
        (StressOpKind.RemoveXattrMissing, 1), (StressOpKind.CollapseRange, 2), (StressOpKind.InsertRange, 2),
    ];
    static readonly int TotalWeight = Weights.Sum(w => w.Weight);

    readonly IStressTarget _target;
    readonly StressModel _model;
    readonly StressOptions _options;
    readonly long[,] _counts = new long[Enum.GetValues<StressOpKind>().Length, 1 + Enum.GetValues<WriteErrorKind>().Length];
    readonly List<string> _problems = new();
    long _claimed, _started, _completed;
    volatile bool _stop;
    volatile bool _backgroundDone = true;
    readonly HashSet<uint> _damagedAtStart = new();

    public StressRunner(IStressTarget target, StressModel model, StressOptions options)
    {
        _target = target ?? throw new ArgumentNullException(nameof(target));
        _model = model ?? throw new ArgumentNullException(nameof(model));
        _options = options ?? throw new ArgumentNullException(nameof(options));
        if (options.Threads < 1) throw new ArgumentOutOfRangeException(nameof(options), "threads must be at least 1");
        if (options.Ops < 0) throw new ArgumentOutOfRangeException(nameof(options), "ops must not be negative");
    }

    /// <summary>Operations finished so far (for a progress line).</summary>
    public long Completed => Interlocked.Read(ref _completed);

    public StressResult Run()
    {
        foreach (var (ag, _) in _target.SickAgs()) _damagedAtStart.Add(ag);
        var clock = Stopwatch.StartNew();
        var threads = new Thread[_options.Threads];
        for (int t = 0; t < threads.Length; t++)
        {
            int index = t;
            threads[t] = new Thread(() => Worker(index)) { Name = $"stress-{t}", IsBackground = true };
            threads[t].Start();
        }
        Thread? background = null;
        if (_options.Background is { } job)
        {
            _backgroundDone = false;
            background = new Thread(() =>
            {
                try { job.Run(() => _stop || Interlocked.Read(ref _claimed) >= _options.Ops); }
                catch (Exception e) when (e is not OutOfMemoryException) { Problem($"background: {e.GetType().Name}: {e.Message}"); }
                finally { _backgroundDone = true; }
            }) { Name = "stress-background", IsBackground = true };
            background.Start();
        }
        foreach (var thread in threads) thread.Join();
        background?.Join();
        clock.Stop();
        var sickAtEnd = _target.SickAgs();
        foreach (var (ag, reason) in sickAtEnd)
        {
            if (!_damagedAtStart.Contains(ag)) Problem($"AG {ag} was healthy at the start and is marked sick: {reason}");
        }
        lock (_problems)
        {
            return new StressResult((long[,])_counts.Clone(), clock.Elapsed, _problems.ToList())
            {
                DamagedAtStart = _damagedAtStart.Order().ToList(),
                SickAtEnd = sickAtEnd,
            };
        }
    }

    void Worker(int threadIndex)
    {
        // Not HashCode.Combine: it is randomized per process, and one thread with one seed must replay exactly.
        var random = new Random(unchecked(_options.Seed * 1_000_003 + threadIndex * 7919));
        var scratch = new Scratch();
        while (!_stop && (Interlocked.Increment(ref _claimed) <= _options.Ops || !_backgroundDone))
        {
            try { RunOne(random, scratch); }
            catch (Exception e) when (e is not OutOfMemoryException)
            {
                Problem($"internal error: {e.GetType().Name}: {e.Message} (stack: {e.StackTrace})");
            }
            Interlocked.Increment(ref _completed);
        }
    }

    sealed class Scratch
    {
        public byte[] Data = new byte[1 << 16];
        public byte[] Expected = new byte[1 << 16];

        public byte[] Sized(ref byte[] buffer, long length)
        {
            if (buffer.Length < length) buffer = new byte[Math.Max(length, buffer.Length * 2)];
            return buffer;
        }
    }

    void Problem(string message)
    {
        lock (_problems) _problems.Add(message);
        _stop = true;
    }

    StressOpKind PickKind(Random random)
    {
        int r = random.Next(TotalWeight);
        foreach (var (kind, weight) in Weights)
        {
            if (r < weight) return kind;
            r -= weight;
        }
        throw new InvalidOperationException("weights");
    }

    void RunOne(Random random, Scratch scratch)
    {
        for (int attempt = 0; ; attempt++)
        {
            var locks = PickNodes(random, PickKind(random));
            if (locks is null) continue;
            var (kind, nodes) = locks.Value;
            // One lock per inode (hard links share theirs), in ascending inode id.
            var ordered = nodes.Select(n => n.Inode).Distinct().OrderBy(i => i.Id).ToArray();
            foreach (var inode in ordered) inode.Gate.Enter();
            try
            {
                // Picked without locks: another thread may have removed a node meanwhile; pick again.
                if (nodes.Any(n => !n.Alive)) continue;
                var op = Plan(random, kind, nodes);
                if (op is null) continue;
                Execute(op, scratch);
                return;
            }
            finally
            {
                foreach (var inode in ordered) inode.Gate.Exit();
            }
        }
    }

    (StressOpKind, ModelNode[])? PickNodes(Random random, StressOpKind kind)
    {
        var picked = PickNodesAnyDirectory(random, kind);
        // A directory the engine cannot change: ask again only now and then (the refusal is still tested).
        if (picked is { } p && p.Item1 is StressOpKind.Create or StressOpKind.Mkdir or StressOpKind.Unlink or StressOpKind.Rmdir or StressOpKind.CreateExisting
                or StressOpKind.Rename or StressOpKind.Symlink or StressOpKind.Mknod or StressOpKind.Link or StressOpKind.LinkExisting
            && p.Item2.Any(n => n is ModelDirectory { NamesFrozen: true }) && random.Next(8) != 0)
        {
            return null;
        }
        return picked;
    }

    (StressOpKind, ModelNode[])? PickNodesAnyDirectory(Random random, StressOpKind kind)
    {
        var options = _model.Options;
        if (kind is StressOpKind.Create or StressOpKind.Link && _model.FileCount >= options.MaxFiles) kind = StressOpKind.Unlink;
        if (kind == StressOpKind.Mkdir && _model.DirectoryCount >= _model.InitialDirectoryCount + options.MaxDirectories) kind = StressOpKind.Rmdir;
        switch (kind)
        {
            case StressOpKind.Create:
            case StressOpKind.Mkdir:
            case StressOpKind.List:
            case StressOpKind.CreateExisting:
                return (kind, [_model.PickDirectory(random)]);
            case StressOpKind.Rmdir:
                // Prefer an empty one (a peek without its lock, re-checked under it): the image's directories are
                // mostly full, and RmdirNotEmpty comes out of the others anyway.
                var directory = _model.PickDirectory(random);
                for (int i = 0; i < 4 && directory.Children.Count > 0; i++) directory = _model.PickDirectory(random);
                return directory.Parent is null ? null : (kind, [directory.Parent, directory]);
            case StressOpKind.Unlink:
                ModelNode? victim = random.Next(4) == 0 ? _model.PickLeaf(random) : null;
                victim ??= _model.PickFile(random, preferHot: false);
                return victim is null ? null : (kind, [victim.Parent!, victim]);
            case StressOpKind.Symlink:
            case StressOpKind.Mknod:
                if (_model.LeafCount >= options.MaxFiles / 4) return null;
                return (kind, [_model.PickDirectory(random)]);
            case StressOpKind.Link:
            case StressOpKind.LinkExisting:
            {
                // Another name for a file, in its own directory or any other; a file with several names is as
                // likely to be unlinked, renamed or written through any of them.
                var existing = _model.PickFile(random, preferHot: false);
                if (existing is null) return null;
                var into = random.Next(2) == 0 ? existing.Parent! : _model.PickDirectory(random);
                return (kind, [existing, into]);
            }
            case StressOpKind.Chmod:
            case StressOpKind.Chown:
            case StressOpKind.Utimes:
            case StressOpKind.SetXattr:
            case StressOpKind.RemoveXattr:
            case StressOpKind.RemoveXattrMissing:
            {
                ModelNode? node = random.Next(3) switch { 0 => _model.PickDirectory(random), 1 => _model.PickLeaf(random), _ => _model.PickFile(random) };
                return node is null ? null : (kind, [node]);
            }
            case StressOpKind.Rename:
            {
                // A file to a new name, over another file, or exchanged with it; the destination directory is
                // any one. Nodes: the source's directory, the source, the destination directory, the replaced file.
                var moving = _model.PickFile(random, preferHot: false);
                if (moving is null) return null;
                var into = random.Next(2) == 0 ? moving.Parent! : _model.PickDirectory(random);
                ModelNode? over = null;
                if (random.Next(3) == 0)
                {
                    // A peek without the directory's lock (under the model's, which every change of Children holds: a
                    // SortedDictionary enumerated while another thread changes it throws); re-checked under the
                    // directory locks (alive, still its child).
                    var candidates = _model.PeekFiles(into, 8);
                    if (candidates.Count > 0) over = candidates[random.Next(candidates.Count)];
                    // Two names of one inode: rename does nothing (as in the kernel); not a case the model follows.
                    if (over?.Inode == moving.Inode) over = null;
                }
                return over is null ? (kind, [moving.Parent!, moving, into]) : (kind, [moving.Parent!, moving, into, over]);
            }
            case StressOpKind.Reflink:
                var source = _model.PickFile(random);
                var destination = _model.PickFile(random);
                return source is null || destination is null || source.Inode == destination.Inode ? null : (kind, [source, destination]);
            default:
                var file = _model.PickFile(random);
                return file is null ? (StressOpKind.Create, [_model.PickDirectory(random)]) : (kind, [file]);
        }
    }

    /// <summary>The operation with its parameters, from the locked nodes' state; null to pick again.</summary>
    StressOp? Plan(Random random, StressOpKind kind, ModelNode[] nodes)
    {
        long max = _model.Options.MaxFileSize;
        long block = _target.BlockSize;
        int seed = random.Next();
        switch (kind)
        {
            case StressOpKind.Create:
            case StressOpKind.Mkdir:
            {
                var directory = (ModelDirectory)nodes[0];
                string name = $"{(kind == StressOpKind.Create ? "f" : "d")}{_options.Seed}-{Interlocked.Read(ref _claimed)}";
                while (directory.Children.ContainsKey(name)) name += "x";
                return new StressOp(kind, directory.ChildPath(name));
            }
            case StressOpKind.CreateExisting:
            {
                var directory = (ModelDirectory)nodes[0];
                if (directory.Children.Count == 0) return new StressOp(StressOpKind.List, directory.Path);
                var existing = directory.Children.Values.ElementAt(random.Next(directory.Children.Count));
                return new StressOp(kind, existing.Path);
            }
            case StressOpKind.List:
                return new StressOp(kind, nodes[0].Path);
            case StressOpKind.Rmdir:
                var doomed = (ModelDirectory)nodes[1];
                return new StressOp(doomed.Children.Count == 0 ? StressOpKind.Rmdir : StressOpKind.RmdirNotEmpty, doomed.Path);
            case StressOpKind.Unlink:
                return new StressOp(kind, nodes[^1].Path);
            case StressOpKind.Stat:
                return nodes[^1] is ModelFile ? new StressOp(kind, nodes[^1].Path) : null;
            case StressOpKind.Symlink:
            {
                var directory = (ModelDirectory)nodes[0];
                string name = $"l{_options.Seed}-{Interlocked.Read(ref _claimed)}";
                while (directory.Children.ContainsKey(name)) name += "x";
                // Short targets stay in the inode, long ones (up to the longest, 1023 bytes) take remote blocks.
                int length = random.Next(3) == 0 ? 200 + random.Next(824) : 1 + random.Next(60);
                var target = new char[length];
                for (int i = 0; i < length; i++) target[i] = "abcdefghijklmnopqrstuvwxyz0123456789./-_"[random.Next(40)];
                return new StressOp(kind, directory.ChildPath(name), new string(target));
            }
            case StressOpKind.Mknod:
            {
                var directory = (ModelDirectory)nodes[0];
                string name = $"n{_options.Seed}-{Interlocked.Read(ref _claimed)}";
                while (directory.Children.ContainsKey(name)) name += "x";
                int type = random.Next(4) switch { 0 => 0x1000, 1 => 0xC000, 2 => 0x2000, _ => 0x6000 };
                ulong rdev = type is 0x2000 or 0x6000 ? DeviceNumbers.MakeDev((uint)random.Next(512), (uint)random.Next(1 << 18)) : 0;
                return new StressOp(kind, directory.ChildPath(name), Offset: type | random.Next(0x1000), Offset2: (long)rdev);
            }
            case StressOpKind.Link:
            {
                var existing = (ModelFile)nodes[0];
                var into = (ModelDirectory)nodes[1];
                string name = $"h{_options.Seed}-{Interlocked.Read(ref _claimed)}";
                while (into.Children.ContainsKey(name)) name += "x";
                return new StressOp(kind, existing.Path, into.ChildPath(name));
            }
            case StressOpKind.LinkExisting:
            {
                var into = (ModelDirectory)nodes[1];
                if (into.Children.Count == 0) return new StressOp(StressOpKind.List, into.Path);
                return new StressOp(kind, nodes[0].Path, into.Children.Values.ElementAt(random.Next(into.Children.Count)).Path);
            }
            case StressOpKind.SetXattr:
                return PlanSetXattr(random, nodes[0], seed);
            case StressOpKind.RemoveXattr:
            {
                var attributes = nodes[0].Inode.Xattrs;
                if (attributes.Count == 0) return PlanSetXattr(random, nodes[0], seed);
                return new StressOp(kind, nodes[0].Path, attributes.Keys.ElementAt(random.Next(attributes.Count)));
            }
            case StressOpKind.RemoveXattrMissing:
                // user.* on a symlink or special file is EPERM before the name is looked at: trusted.* there.
                return new StressOp(kind, nodes[0].Path, $"{(nodes[0] is ModelLeaf ? "trusted" : "user")}.absent-{Interlocked.Read(ref _claimed)}");
            case StressOpKind.Chmod:
                return new StressOp(kind, nodes[0].Path, Offset: random.Next(0x1000));
            case StressOpKind.Chown:
                return new StressOp(kind, nodes[0].Path, Offset: random.Next(3) == 0 ? 0 : random.Next(70000), Offset2: random.Next(3) == 0 ? 0 : random.Next(70000));
            case StressOpKind.Utimes:
                return new StressOp(kind, nodes[0].Path, Offset: random.NextInt64(-(1L << 31), 1L << 33), Offset2: random.NextInt64(0, 1L << 32),
                    Length: random.Next(1_000_000_000));
            case StressOpKind.Rename:
            {
                var moving = (ModelFile)nodes[1];
                var into = (ModelDirectory)nodes[2];
                if (moving.Parent != nodes[0]) return null;
                if (nodes.Length == 4)
                {
                    var over = (ModelFile)nodes[3];
                    if (over.Parent != into || !into.Children.ContainsKey(over.Name)) return null;
                    // A whiteout only while special files are few (it leaves one under the source name).
                    bool whiteoutAllowed = _model.LeafCount < _model.Options.MaxFiles / 4;
                    var flags = random.Next(5) switch
                    {
                        0 or 1 => RenameFlags.Exchange,
                        2 when whiteoutAllowed => RenameFlags.Whiteout,
                        _ => RenameFlags.None,
                    };
                    return new StressOp(kind, moving.Path, over.Path, Length: (long)flags);
                }
                string name = $"r{_options.Seed}-{Interlocked.Read(ref _claimed)}";
                while (into.Children.ContainsKey(name)) name += "x";
                var newNameFlags = random.Next(5) switch
                {
                    0 or 1 => RenameFlags.NoReplace,
                    2 when _model.LeafCount < _model.Options.MaxFiles / 4 => random.Next(2) == 0 ? RenameFlags.Whiteout : RenameFlags.Whiteout | RenameFlags.NoReplace,
                    _ => RenameFlags.None,
                };
                return new StressOp(kind, moving.Path, into.ChildPath(name), Length: (long)newNameFlags);
            }
            case StressOpKind.Reflink:
            {
                var source = (ModelFile)nodes[0];
                var destination = (ModelFile)nodes[1];
                long sourceBlocks = source.Contents.Size / block, maxBlocks = max / block;
                if (sourceBlocks == 0 || maxBlocks == 0) return new StressOp(StressOpKind.Stat, source.Path);
                long blocks = 1 + random.NextInt64(Math.Min(sourceBlocks, Math.Min(maxBlocks, Math.Max(1, (256 << 10) / block))));
                long from = random.NextInt64(sourceBlocks - blocks + 1);
                long to = random.NextInt64(maxBlocks - blocks + 1);
                return new StressOp(kind, source.Path, destination.Path, from * block, to * block, blocks * block);
            }
        }

        var file = (ModelFile)nodes[0];
        long size = file.Contents.Size;
        switch (kind)
        {
            case StressOpKind.Write:
            {
                long length = random.Next(4) switch
                {
                    0 => 1 + random.Next(512),
                    1 => block * (1 + random.Next(4)),
                    2 => 1 + random.Next(64 << 10),
                    _ => 1 + random.Next(256 << 10),
                };
                length = Math.Min(length, max);
                long offset = random.Next(4) switch
                {
                    0 => Math.Min(size, max - length),
                    1 => random.NextInt64(max - length + 1),
                    _ => random.NextInt64((max - length) / block + 1) * block,
                };
                return new StressOp(kind, file.Path, Offset: offset, Length: length, DataSeed: seed);
            }
            case StressOpKind.Read:
                return new StressOp(kind, file.Path, Offset: random.NextInt64(size + block + 1), Length: 1 + random.Next(128 << 10));
            case StressOpKind.Fallocate:
            {
                long length = 1 + random.NextInt64(Math.Min(max, 256 << 10));
                long offset = random.Next(2) == 0 ? random.NextInt64(max - length + 1) : random.NextInt64((max - length) / block + 1) * block;
                // A third with KEEP_SIZE (Offset2 = 1): mostly past EOF, where it leaves unwritten blocks beyond the size.
                bool keepSize = random.Next(3) == 0;
                if (keepSize && random.Next(2) == 0 && size < max) offset = size + random.NextInt64(Math.Max(1, Math.Min(max - size, 64 << 10)));
                length = Math.Min(length, max - offset);
                if (length <= 0) return new StressOp(StressOpKind.Stat, file.Path);
                return new StressOp(kind, file.Path, Offset: offset, Offset2: keepSize ? 1 : 0, Length: length);
            }
            case StressOpKind.CollapseRange:
            {
                // Block-aligned and ending before EOF (the kernel's rule): at most the whole blocks below the EOF block.
                long limit = size <= 0 ? 0 : (size - 1) / block;
                if (limit < 1) return new StressOp(StressOpKind.Stat, file.Path);
                long blocks = 1 + random.NextInt64(Math.Min(limit, Math.Max(1, (128 << 10) / block)));
                long from = random.NextInt64(limit - blocks + 1);
                return new StressOp(kind, file.Path, Offset: from * block, Length: blocks * block);
            }
            case StressOpKind.InsertRange:
            {
                // Block-aligned, starting below EOF, and the file stays within the workload's largest size.
                long room = (max - size) / block;
                if (size <= 0 || room < 1) return new StressOp(StressOpKind.Stat, file.Path);
                long blocks = 1 + random.NextInt64(Math.Min(room, Math.Max(1, (128 << 10) / block)));
                long from = random.NextInt64((size - 1) / block + 1);
                return new StressOp(kind, file.Path, Offset: from * block, Length: blocks * block);
            }
            case StressOpKind.PunchHole:
            {
                // Mostly a few blocks: that fragments files until their forks turn into btrees.
                if (random.Next(3) > 0)
                {
                    long offset = random.NextInt64(Math.Max(size, block) / block + 1) * block;
                    return new StressOp(kind, file.Path, Offset: offset, Length: block * (1 + random.Next(3)));
                }
                return new StressOp(kind, file.Path, Offset: random.NextInt64(size + 1), Length: 1 + random.Next(128 << 10));
            }
            case StressOpKind.Truncate:
            {
                long target = random.Next(5) switch
                {
                    0 => random.NextInt64(size + 1),
                    1 => random.NextInt64(max + 1),
                    2 => random.NextInt64(max / block + 1) * block,
                    3 => Math.Clamp(size + random.NextInt64(-block * 4, block * 4 + 1), 0, max),
                    _ => size - size / 8,
                };
                return new StressOp(kind, file.Path, Length: target);
            }
            case StressOpKind.Unshare:
            {
                if (size == 0) return new StressOp(StressOpKind.Stat, file.Path);
                long offset = random.NextInt64(size);
                return new StressOp(kind, file.Path, Offset: offset, Length: 1 + random.NextInt64(size - offset));
            }
            default:
                throw new InvalidOperationException($"no plan for {kind}");
        }
    }

    /// <summary>A setxattr on <paramref name="node"/>: a name from a small pool per namespace (so that sets replace
    /// and removes find names), user.* only on files and directories (EPERM elsewhere, as in the kernel); values
    /// mostly small (kept in the fork), sometimes remote-sized (blocks of their own); XATTR_CREATE or XATTR_REPLACE
    /// as the model says they succeed, or neither.</summary>
    static StressOp PlanSetXattr(Random random, ModelNode node, int seed)
    {
        string space = random.Next(node is ModelLeaf ? 2 : 3) switch { 0 => "trusted", 1 => "security", _ => "user" };
        // XFS hashes the name without its namespace, so one name in two namespaces is a hash collision. Names
        // differ per namespace here: a leaf boundary between equal hashes is valid (the kernel makes them too) but
        // xfs_repair 6.1, the tests' judge, reports it ("hashvalue inconsistency"; fixed in later xfsprogs by
        // "xfs_repair: fix incorrect dabtree hashval comparison").
        char tag = space[0];
        string name = random.Next(8) == 0 ? $"{space}.long-{tag}-{new string('n', 40 + random.Next(150))}" : $"{space}.{tag}{random.Next(6)}";
        int length = random.Next(8) switch
        {
            0 => 2000 + random.Next(14000),
            1 or 2 => 100 + random.Next(900),
            _ => 1 + random.Next(80),
        };
        bool present = node.Inode.Xattrs.ContainsKey(name);
        var flags = random.Next(2) == 0 ? Attributes.XattrSetFlags.None : present ? Attributes.XattrSetFlags.Replace : Attributes.XattrSetFlags.Create;
        return new StressOp(StressOpKind.SetXattr, node.Path, name, Offset: (long)flags, Length: length, DataSeed: seed);
    }

    void Execute(StressOp op, Scratch scratch)
    {
        long index = Interlocked.Increment(ref _started);
        _options.OpLog?.Started(index, op);
        // Damaged AGs still sick as the operation starts: the only ones a Corrupt outcome may name.
        HashSet<uint>? stillDamaged = _damagedAtStart.Count == 0 ? null : StillDamaged();
        StressOutcome outcome;
        try
        {
            string? difference = Call(op, scratch);
            if (difference is not null) Problem($"op {index} {op}: {difference}");
            if (op.ExpectedError is { } expected)
            {
                Problem($"op {index} {op}: succeeded, expected {expected}");
                outcome = StressOutcome.Success;
            }
            else
            {
                _model.Apply(op);
                outcome = StressOutcome.Success;
            }
            Interlocked.Increment(ref _counts[(int)op.Kind, 0]);
        }
        catch (XfsWriteException e)
        {
            outcome = StressOutcome.Failed(e.Kind);
            if (e.Kind == op.ExpectedError)
            {
                Interlocked.Increment(ref _counts[(int)op.Kind, 0]);
            }
            else
            {
                Interlocked.Increment(ref _counts[(int)op.Kind, 1 + (int)e.Kind]);
                if (e.Kind == WriteErrorKind.NotSupported && op.Kind is StressOpKind.Create or StressOpKind.Mkdir or StressOpKind.Unlink or StressOpKind.Rmdir
                    or StressOpKind.Symlink or StressOpKind.Mknod or StressOpKind.Link)
                {
                    // Under the directory's model lock (held by the caller).
                    string changed = op.Kind == StressOpKind.Link ? op.Path2 : op.Path;
                    if (_model.Find(ParentPath(changed)) is ModelDirectory directory) directory.NamesFrozen = true;
                }
                if (e.Kind == WriteErrorKind.Corrupt)
                {
                    if (CorruptAllowed(e, stillDamaged) is { } why) Problem($"op {index} {op}: Corrupt {why}: {e.Message}");
                }
                else if (e.Kind is not (WriteErrorKind.NoSpace or WriteErrorKind.NotSupported or WriteErrorKind.Io))
                {
                    Problem($"op {index} {op}: unexpected {e.Kind}: {e.Message}");
                }
            }
        }
        _options.OpLog?.Finished(index, outcome);
    }

    HashSet<uint> StillDamaged()
    {
        var still = new HashSet<uint>();
        foreach (var (ag, _) in _target.SickAgs())
        {
            if (_damagedAtStart.Contains(ag)) still.Add(ag);
        }
        return still;
    }

    /// <summary>Null when a Corrupt outcome is what the run's starting damage explains, else why it is not.</summary>
    static string? CorruptAllowed(XfsWriteException e, HashSet<uint>? stillDamaged)
    {
        if (stillDamaged is null) return "on a run that started healthy";
        if (e.AgNumber is { } ag)
        {
            return stillDamaged.Contains(ag) ? null : $"in AG {ag}, which was not a damaged AG still sick when the operation started";
        }
        return stillDamaged.Count > 0 ? null : "after every damaged AG was repaired";
    }

    static string ParentPath(string path) => path.LastIndexOf('/') <= 0 ? "/" : path[..path.LastIndexOf('/')];

    /// <summary>Calls the engine; for reads, stat and list, returns how the answer differs from the model (or null).</summary>
    string? Call(StressOp op, Scratch scratch)
    {
        switch (op.Kind)
        {
            case StressOpKind.Write:
            {
                var data = scratch.Sized(ref scratch.Data, op.Length).AsSpan(0, (int)op.Length);
                StressData.Fill(data, op.DataSeed);
                _target.Write(op.Path, op.Offset, data);
                return null;
            }
            case StressOpKind.Read:
            {
                var actual = scratch.Sized(ref scratch.Data, op.Length).AsSpan(0, (int)op.Length);
                var expected = scratch.Sized(ref scratch.Expected, op.Length).AsSpan(0, (int)op.Length);
                int got = _target.Read(op.Path, op.Offset, actual);
                int want = ((ModelFile)_model.Find(op.Path)!).Contents.Read(op.Offset, expected);
                if (got != want) return $"read returned {got} bytes, the model has {want}";
                int same = expected[..want].CommonPrefixLength(actual[..got]);
                return same < want ? $"byte {op.Offset + same} is 0x{actual[same]:x2}, the model has 0x{expected[same]:x2}" : null;
            }
            case StressOpKind.Fallocate:
                if (op.Offset2 != 0) _target.Fallocate(op.Path, op.Offset, op.Length, keepSize: true);
                else _target.Fallocate(op.Path, op.Offset, op.Length);
                return null;
            case StressOpKind.CollapseRange: _target.CollapseRange(op.Path, op.Offset, op.Length); return null;
            case StressOpKind.InsertRange: _target.InsertRange(op.Path, op.Offset, op.Length); return null;
            case StressOpKind.PunchHole: _target.PunchHole(op.Path, op.Offset, op.Length); return null;
            case StressOpKind.Truncate: _target.Truncate(op.Path, op.Length); return null;
            case StressOpKind.Reflink: _target.Reflink(op.Path, op.Offset, op.Path2, op.Offset2, op.Length); return null;
            case StressOpKind.Unshare: _target.Unshare(op.Path, op.Offset, op.Length); return null;
            case StressOpKind.Create:
            case StressOpKind.CreateExisting:
                _target.Create(op.Path);
                return null;
            case StressOpKind.Mkdir: _target.Mkdir(op.Path); return null;
            case StressOpKind.Unlink:
            case StressOpKind.Rmdir:
            case StressOpKind.RmdirNotEmpty:
                _target.Unlink(op.Path);
                return null;
            case StressOpKind.Rename: _target.Rename(op.Path, op.Path2, (RenameFlags)op.Length); return null;
            case StressOpKind.Symlink: _target.Symlink(op.Path2, op.Path); return null;
            case StressOpKind.Mknod: _target.Mknod(op.Path, (int)op.Offset, (ulong)op.Offset2); return null;
            case StressOpKind.Chmod: _target.Chmod(op.Path, (int)op.Offset); return null;
            case StressOpKind.Chown: _target.Chown(op.Path, (uint)op.Offset, (uint)op.Offset2); return null;
            case StressOpKind.Utimes:
                _target.Utimes(op.Path, new InodeTime(op.Offset, (uint)op.Length), new InodeTime(op.Offset2, (uint)op.Length));
                return null;
            case StressOpKind.Link:
            case StressOpKind.LinkExisting:
                _target.Link(op.Path, op.Path2);
                return null;
            case StressOpKind.SetXattr:
            {
                var value = scratch.Sized(ref scratch.Data, op.Length).AsSpan(0, (int)op.Length);
                StressData.Fill(value, op.DataSeed);
                _target.SetXattr(op.Path, op.Path2, value, (Attributes.XattrSetFlags)op.Offset);
                return null;
            }
            case StressOpKind.RemoveXattr:
            case StressOpKind.RemoveXattrMissing:
                _target.RemoveXattr(op.Path, op.Path2);
                return null;
            case StressOpKind.Stat:
            {
                InodeStat stat = _target.Stat(op.Path);
                var known = (ModelFile)_model.Find(op.Path)!;
                long size = known.Contents.Size;
                if (stat.Type != InodeType.RegularFile) return $"stat says {stat.Type}";
                if ((stat.Mode & 0xFFF) != known.Mode) return $"stat mode 0{Convert.ToString(stat.Mode & 0xFFF, 8)}, the model has 0{Convert.ToString(known.Mode, 8)}";
                if (stat.Links != known.Links) return $"stat says {stat.Links} links, the model has {known.Links}";
                return stat.Size != size ? $"stat size {stat.Size}, the model has {size}" : null;
            }
            case StressOpKind.List:
            {
                var directory = (ModelDirectory)_model.Find(op.Path)!;
                var names = _target.List(op.Path).Select(e => e.Name).Order(StringComparer.Ordinal).ToList();
                return names.SequenceEqual(directory.Children.Keys, StringComparer.Ordinal)
                    ? null
                    : $"lists {names.Count} names, the model has {directory.Children.Count}";
            }
            default:
                throw new InvalidOperationException($"no call for {op.Kind}");
        }
    }
}
