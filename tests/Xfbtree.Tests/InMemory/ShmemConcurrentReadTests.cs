using Xfbtree.InMemory;
using Xunit.Abstractions;

namespace Xfbtree.Tests.InMemory;

/// <summary>
/// The typed maps' thread-safety contract: any number of readers and one writer at a time. Readers with no writer
/// (the case that once returned wrong records through a shared cursor), a linearizability check of every reader
/// result against the writer's history on a small tree (splits, joins, root changes and block reuse all the time),
/// and deterministic interleavings of a reader stopped by a test hook in the middle of a split and of a join.
/// </summary>
public sealed class ShmemConcurrentReadTests(ITestOutputHelper output)
{
    static readonly bool Long = Environment.GetEnvironmentVariable("XFBTREE_LONG_TESTS") == "1";

    /// <summary>A record whose every field follows from (key, generation): a torn or stale copy does not pass <see cref="IsWhole"/>.</summary>
    static MapRecord Versioned(uint key, uint generation) => new(key, generation, key * 2654435761UL ^ generation, (ulong)generation << 32 | key);

    static bool IsWhole(in MapRecord r) => r.Owner == (r.Start * 2654435761UL ^ r.Length) && r.Offset == ((ulong)r.Length << 32 | r.Start);

    static MapRecord Key(uint key) => new(key, 0, 0, 0);

    /// <summary>
    /// Orders by Start alone, so a record is found by its key whatever its generation. With a key prefix: the readers
    /// search the key-prefix sidecars of the blocks (nodes' always current, leaves' after the batches), so every test
    /// here also covers readers reading sidecars that the writer rebuilds.
    /// </summary>
    public readonly struct ByStart : IRecordComparer<MapRecord>, IRecordKeyPrefix<MapRecord>
    {
        public int Compare(in MapRecord x, in MapRecord y) => x.Start.CompareTo(y.Start);
        public ulong GetKeyPrefix(in MapRecord record) => record.Start;
    }

    /// <summary>
    /// Readers load the cursor's geometry on every block they enter; the writer's cursor changes its path state on every
    /// write. On one object they share cache lines, and each write costs a reader running on the other core a cache
    /// miss; so readers have a cursor of their own that no write touches.
    /// </summary>
    [Fact]
    public void WritesLeaveTheReadersCursorUntouched()
    {
        using var map = new ShmemBTree<MapRecord, ByStart>();
        for (uint i = 0; i < 20_000; i++) map.Insert(Versioned(i * 2, i));
        var reader = map.CursorForTests;
        Assert.NotSame(reader, map.WriterCursorForTests);
        Assert.True(map.TryFind(Key(100), out _));
        var before = FieldValues(reader);
        var rnd = new Random(5);
        for (int n = 0; n < 3000; n++)
        {
            uint k = (uint)rnd.Next(40_000);
            if (!map.Remove(Key(k))) map.Insert(Versioned(k, 1));
        }
        map.InsertMany(Enumerable.Range(0, 2000).Select(i => Versioned((uint)i * 7 + 1, 2)).ToArray());
        map.RemoveMany(Enumerable.Range(0, 2000).Select(i => Key((uint)i * 5)).ToArray());
        Assert.Empty(map.CheckStructure());
        var after = FieldValues(reader);
        var changed = before.Keys.Where(f => before[f] != after[f]).ToList();
        Assert.True(changed.Count == 0, "fields of the readers' cursor changed by writes: " + string.Join(", ", changed));
    }

    /// <summary>Every instance field of <paramref name="o"/> as text (arrays by content).</summary>
    static Dictionary<string, string> FieldValues(object o)
    {
        var values = new Dictionary<string, string>();
        for (var type = o.GetType(); type != null; type = type.BaseType)
            foreach (var f in type.GetFields(System.Reflection.BindingFlags.Instance | System.Reflection.BindingFlags.NonPublic | System.Reflection.BindingFlags.Public | System.Reflection.BindingFlags.DeclaredOnly))
            {
                object? v = f.GetValue(o);
                values[type.Name + "." + f.Name] = v is Array a ? string.Join(",", a.Cast<object?>().Select(x => x?.ToString())) : v?.ToString() ?? "null";
            }
        return values;
    }

    [Fact]
    public void TwoReadersWithoutAWriterGetEveryRecordRight()
    {
        const int records = 60_000;
        using var map = new ShmemBTree<MapRecord, ByStart>();
        for (uint i = 0; i < records; i++) map.Insert(Versioned(i * 2, i));
        long wrong = 0, checkedCalls = 0;
        Exception? failure = null;
        var threads = Enumerable.Range(0, 2).Select(t => new Thread(() =>
        {
            try
            {
                var rnd = new Random(t + 1);
                Span<MapRecord> keys = stackalloc MapRecord[64];
                Span<MapRecord> found = stackalloc MapRecord[64];
                Span<bool> flags = stackalloc bool[64];
                for (int n = 0; n < 40_000; n++)
                {
                    uint k = (uint)rnd.Next(records * 2);
                    bool present = map.TryFind(Key(k), out var r);
                    if (present != (k % 2 == 0) || (present && (r.Start != k || r.Length != k / 2))) Interlocked.Increment(ref wrong);
                    if (map.Contains(Key(k)) != (k % 2 == 0)) Interlocked.Increment(ref wrong);
                    if (!map.TryFindGreaterOrEqual(Key(k), out r) ? k <= records * 2 - 2 : r.Start != (k + 1) / 2 * 2) Interlocked.Increment(ref wrong);
                    if (!map.TryFindLessOrEqual(Key(k), out r) || r.Start != k / 2 * 2) Interlocked.Increment(ref wrong);
                    if (n % 64 == 0)
                    {
                        for (int j = 0; j < keys.Length; j++) keys[j] = Key((uint)rnd.Next(records * 2));
                        map.TryFindMany(keys, found, flags);
                        for (int j = 0; j < keys.Length; j++)
                            if (flags[j] != (keys[j].Start % 2 == 0) || (flags[j] && found[j] != Versioned(keys[j].Start, keys[j].Start / 2))) Interlocked.Increment(ref wrong);
                        uint expect = (k + 1) / 2 * 2;
                        foreach (ref readonly var x in map.Range(Key(k), Key(k + 600)))
                        {
                            if (x.Start != expect || !IsWhole(x)) Interlocked.Increment(ref wrong);
                            expect = x.Start + 2;
                        }
                        if (expect != Math.Min((k + 600) / 2 * 2 + 2, records * 2)) Interlocked.Increment(ref wrong);
                    }
                    Interlocked.Increment(ref checkedCalls);
                }
            }
            catch (Exception e) { failure ??= e; }
        })).ToList();
        threads.ForEach(t => t.Start());
        threads.ForEach(t => t.Join());
        output.WriteLine($"{checkedCalls} rounds of lookups on two threads, {wrong} wrong");
        Assert.Null(failure);
        Assert.Equal(0, wrong);
        Assert.Equal(80_000, checkedCalls);
    }

    /// <summary>
    /// Several readers and one writer on a tree of at most a few hundred records (height 1 to 3: splits, joins, root
    /// growth and collapse, and freed blocks reused within microseconds). The writer logs every change to every key in
    /// order and publishes how many changes its finished calls made; each reader notes that count before and after each
    /// call, so the call overlapped the changes between them (and those of the writer's call running then). Every reader
    /// result is then checked against the log: a record found must be the key's state after some change in that window,
    /// a key reported missing must be missing at some point in it, and a range scan must be strictly ascending, hold
    /// only such records, and miss no key that was present and unchanged for the whole window.
    /// </summary>
    [Fact]
    public void ReaderResultsAreLinearizableAgainstTheWritersHistory()
    {
        const uint keySpace = 600;
        int seconds = Long ? 60 : 3;
        using var map = new ShmemBTree<MapRecord, ByStart>();
        var log = new List<(uint Key, uint Generation)>(); // generation 0 = removed
        var callEnds = new List<int>();                    // log length after each finished writer call
        int published = 0;
        var observations = new List<Observation>[3];
        Exception? failure = null;
        using var stop = new CancellationTokenSource(TimeSpan.FromSeconds(seconds));
        var writer = new Thread(() =>
        {
            try
            {
                var rnd = new Random(42);
                // Batches of more than eight records go in several chunks under one batch call (leaf sidecars stale
                // between chunks), and the queue of leaves to rebuild fills and is rebuilt within a call.
                BatchTestHooks.ChunkLimit = 8;
                map.StoreForTests.RefreshQueueLimit = 3;
                var present = new Dictionary<uint, uint>();
                uint generation = 1;
                var batch = new MapRecord[40];
                while (!stop.IsCancellationRequested)
                {
                    int op = rnd.Next(100);
                    // Drift between nearly empty and full so the height moves both ways.
                    bool grow = (Environment.TickCount64 / 300) % 2 == 0;
                    uint k = (uint)rnd.Next((int)keySpace) + 1;
                    if (op < 40 == grow)
                    {
                        var r = Versioned(k, generation);
                        if (op % 3 == 0)
                        {
                            map.Upsert(r);
                            present[k] = generation;
                            log.Add((k, generation++));
                        }
                        else if (map.Insert(r))
                        {
                            present[k] = generation;
                            log.Add((k, generation++));
                        }
                    }
                    else if (op < 80)
                    {
                        if (map.Remove(Key(k)))
                        {
                            present.Remove(k);
                            log.Add((k, 0));
                        }
                    }
                    else if (op < 95)
                    {
                        int n = rnd.Next(1, batch.Length);
                        bool insert = grow;
                        // Distinct keys (which of two equal keys a batch insert keeps is not specified); applied in key order.
                        var distinct = new HashSet<uint>();
                        while (distinct.Count < n) distinct.Add((uint)rnd.Next((int)keySpace) + 1);
                        int bi = 0;
                        foreach (uint key in distinct) batch[bi] = Versioned(key, generation + (uint)bi++);
                        var order = batch.Take(n).OrderBy(x => x.Start).ToList();
                        int changed = insert ? map.InsertMany(batch.AsSpan(0, n)) : map.RemoveMany(batch.AsSpan(0, n));
                        int expected = 0;
                        foreach (var r in order)
                        {
                            if (insert && !present.ContainsKey(r.Start))
                            {
                                present[r.Start] = r.Length;
                                log.Add((r.Start, r.Length));
                                expected++;
                            }
                            else if (!insert && present.Remove(r.Start))
                            {
                                log.Add((r.Start, 0));
                                expected++;
                            }
                        }
                        generation += (uint)n;
                        if (changed != expected) throw new InvalidOperationException($"batch changed {changed}, expected {expected}");
                    }
                    else if (op < 96 && rnd.Next(20) == 0)
                    {
                        map.Clear();
                        foreach (var key in present.Keys.OrderBy(x => x)) log.Add((key, 0));
                        present.Clear();
                    }
                    callEnds.Add(log.Count);
                    Volatile.Write(ref published, log.Count);
                }
            }
            catch (Exception e) { failure ??= e; }
        });
        var readers = Enumerable.Range(0, observations.Length).Select(t =>
        {
            observations[t] = new List<Observation>();
            return new Thread(() =>
            {
                try
                {
                    var rnd = new Random(t + 7);
                    var mine = observations[t];
                    var keys = new MapRecord[16];
                    var found = new MapRecord[16];
                    var flags = new bool[16];
                    while (!stop.IsCancellationRequested)
                    {
                        uint k = (uint)rnd.Next((int)keySpace) + 1;
                        int kind = rnd.Next(10);
                        int before = Volatile.Read(ref published);
                        if (kind < 5)
                        {
                            bool f = map.TryFind(Key(k), out var r);
                            mine.Add(new Observation(before, Volatile.Read(ref published), k, f ? r : null));
                        }
                        else if (kind < 8)
                        {
                            for (int i = 0; i < keys.Length; i++) keys[i] = Key((uint)rnd.Next((int)keySpace) + 1);
                            map.TryFindMany(keys, found, flags);
                            int after = Volatile.Read(ref published);
                            for (int i = 0; i < keys.Length; i++) mine.Add(new Observation(before, after, keys[i].Start, flags[i] ? found[i] : null));
                        }
                        else
                        {
                            uint high = k + (uint)rnd.Next(200);
                            var got = new List<MapRecord>();
                            if (kind == 8) foreach (ref readonly var x in map.Range(Key(k), Key(high))) got.Add(x);
                            else
                            {
                                foreach (ref readonly var x in map.RangeDescending(Key(k), Key(high))) got.Add(x);
                                got.Reverse();
                            }
                            mine.Add(new Observation(before, Volatile.Read(ref published), k, null, high, got));
                        }
                    }
                }
                catch (Exception e) { failure ??= e; }
            });
        }).ToList();
        writer.Start();
        readers.ForEach(r => r.Start());
        writer.Join();
        readers.ForEach(r => r.Join());
        Assert.Null(failure);
        Assert.Empty(map.CheckStructure());

        // Per key: the log positions that changed it and the generation after each (0 = absent).
        var history = new Dictionary<uint, List<(int At, uint Generation)>>();
        for (int i = 0; i < log.Count; i++)
        {
            if (!history.TryGetValue(log[i].Key, out var h)) history[log[i].Key] = h = new();
            h.Add((i + 1, log[i].Generation));
        }
        int WindowEnd(int after)
        {
            // The writer's call running when the reader read `after` may have made all its changes visible.
            int i = callEnds.BinarySearch(after + 1);
            if (i < 0) i = ~i;
            return i < callEnds.Count ? callEnds[i] : log.Count;
        }
        // The generations a key had at some log length in [from, to] (0 = absent).
        List<uint> States(uint key, int from, int to)
        {
            var states = new List<uint>();
            if (!history.TryGetValue(key, out var h)) { states.Add(0); return states; }
            uint atFrom = 0;
            foreach (var (at, g) in h)
            {
                if (at <= from) atFrom = g;
                else if (at <= to) states.Add(g);
                else break;
            }
            states.Add(atFrom);
            return states;
        }
        long lookups = 0, scans = 0, scanned = 0, overlapped = 0;
        foreach (var o in observations.SelectMany(x => x))
        {
            int to = WindowEnd(o.After);
            if (to > o.Before) overlapped++;
            if (o.Scan is null)
            {
                lookups++;
                var states = States(o.Key, o.Before, to);
                if (o.Found is { } r)
                {
                    Assert.True(IsWhole(r) && r.Start == o.Key, $"torn record {r}");
                    Assert.True(states.Contains(r.Length), $"key {o.Key}: generation {r.Length} found, but the key had only [{string.Join(",", states)}] in log window [{o.Before}, {to}]");
                }
                else Assert.True(states.Contains(0u), $"key {o.Key} reported missing but present through log window [{o.Before}, {to}]");
                continue;
            }
            scans++;
            scanned += o.Scan.Count;
            for (int i = 0; i < o.Scan.Count; i++)
            {
                var r = o.Scan[i];
                Assert.True(IsWhole(r) && r.Start >= o.Key && r.Start <= o.High, $"scan [{o.Key}, {o.High}] returned {r}");
                if (i > 0) Assert.True(r.Start > o.Scan[i - 1].Start, "scan not strictly ascending");
                Assert.True(States(r.Start, o.Before, to).Contains(r.Length), $"scan returned generation {r.Length} of key {r.Start} outside log window [{o.Before}, {to}]");
            }
            var returned = o.Scan.Select(r => r.Start).ToHashSet();
            for (uint key = o.Key; key <= o.High && key <= keySpace; key++)
            {
                var states = States(key, o.Before, to);
                if (states.Count == 1 && states[0] != 0) Assert.True(returned.Contains(key), $"scan [{o.Key}, {o.High}] missed key {key}, present through log window [{o.Before}, {to}]");
            }
        }
        output.WriteLine($"{seconds} s: writer made {log.Count} changes in {callEnds.Count} calls; checked {lookups} lookups and {scans} scans ({scanned} records), {overlapped} overlapping a write");
        Assert.True(log.Count > 1000 && lookups > 1000 && scans > 100, "too little happened to check anything");
    }

    sealed record Observation(int Before, int After, uint Key, MapRecord? Found, uint High = 0, List<MapRecord>? Scan = null);

    /// <summary>
    /// A reader stopped (by the test hook) in a full root leaf after noting its version, before reading it; the writer
    /// then splits that leaf, moving the sought record to the new right block. The reader must notice and look again,
    /// and find the record.
    /// </summary>
    [Fact]
    public void AReaderCaughtInTheMiddleOfASplitLooksAgain()
    {
        using var map = new ShmemBTree<MapRecord, ByStart>();
        uint n = 0;
        while (map.Height == 1)
        {
            map.Insert(Versioned(n * 2, 1));
            n++;
        }
        // Back to a single full leaf: the next insert splits the root leaf.
        map.Clear();
        for (uint i = 0; i < n - 1; i++) map.Insert(Versioned(i * 2, 1));
        Assert.Equal(1, map.Height);
        uint sought = (n - 2) * 2; // the last record: it moves to the right half
        var (found, record, attempts) = ReadWhileWriting(map, 0, () => map.TryFind(Key(sought), out var r) ? r : (MapRecord?)null,
            () => Assert.True(map.Insert(Versioned(1, 1))));
        Assert.Equal(2, map.Height);
        Assert.True(found, "the record moved by the split was not found");
        Assert.Equal(Versioned(sought, 1), record);
        Assert.True(attempts >= 2, $"the reader read the split leaf and did not look again ({attempts} attempts)");
    }

    /// <summary>
    /// A reader stopped in a leaf of a two-level tree; the writer removes records until that leaf joins into its left
    /// sibling (the leaf's block is freed), then inserts until a split takes the freed block for other keys. The reader
    /// then reads a block that is a different leaf now: it must notice and find the record where it went.
    /// </summary>
    [Fact]
    public void AReaderCaughtInTheMiddleOfAJoinLooksAgain()
    {
        using var map = new ShmemBTree<MapRecord, ByStart>();
        uint count = 0;
        while (map.Height < 2 || map.BlockCount < 4) map.Insert(Versioned(count++ * 10, 1));
        // The last record: its leaf (the last) has no right sibling, so once it and its left sibling are too small it
        // joins into the left one and its own block is freed.
        uint sought = (count - 1) * 10;
        var (found, record, attempts) = ReadWhileWriting(map, 0, () => map.TryFind(Key(sought), out var r) ? r : (MapRecord?)null, () =>
        {
            long blocks = map.BlockCount;
            for (uint k = sought - 10; map.BlockCount == blocks; k -= 10) Assert.True(map.Remove(Key(k)));
            // Split at the low end so that the freed block is reused for other keys.
            blocks = map.BlockCount;
            for (uint k = 5; map.BlockCount == blocks; k += 10) Assert.True(map.Insert(Versioned(k, 2)));
        });
        Assert.True(found, "the record of the joined leaf was not found");
        Assert.Equal(Versioned(sought, 1), record);
        Assert.True(attempts >= 2, $"the reader read a joined and reused block and did not look again ({attempts} attempts)");
        Assert.Empty(map.CheckStructure());
    }

    /// <summary>
    /// A batch lookup (several keys in flight) whose first key is stopped in the full root leaf after noting its
    /// version; the writer splits that leaf. The batch must notice for every key that read the split leaf and find
    /// each record where it went.
    /// </summary>
    [Fact]
    public void ABatchLookupCaughtInTheMiddleOfASplitLooksAgain()
    {
        using var map = new ShmemBTree<MapRecord, ByStart>();
        uint n = 0;
        while (map.Height == 1)
        {
            map.Insert(Versioned(n * 2, 1));
            n++;
        }
        map.Clear();
        for (uint i = 0; i < n - 1; i++) map.Insert(Versioned(i * 2, 1));
        Assert.Equal(1, map.Height);
        uint sought = (n - 2) * 2; // the last record: it moves to the right half
        MapRecord[] keys = [Key(sought), Key(0), Key(3), Key(sought / 2 & ~1u)];
        var records = new MapRecord[keys.Length];
        var flags = new bool[keys.Length];
        var (found, record, attempts) = ReadWhileWriting(map, 0, () =>
        {
            Assert.Equal(3, map.TryFindMany(keys, records, flags));
            Assert.Equal([true, true, false, true], flags);
            Assert.Equal(Versioned(0, 1), records[1]);
            Assert.Equal(Versioned(sought / 2 & ~1u, 1), records[3]);
            return flags[0] ? records[0] : null;
        }, () => Assert.True(map.Insert(Versioned(1, 1))));
        Assert.Equal(2, map.Height);
        Assert.True(found, "the record moved by the split was not found");
        Assert.Equal(Versioned(sought, 1), record);
        Assert.True(attempts >= keys.Length + 1, $"the batch read the split leaf and did not look again ({attempts} validations)");
    }

    /// <summary>
    /// A batch lookup stopped in the last leaf of a two-level tree while the writer joins that leaf into its left
    /// sibling and reuses its block for other keys (as <see cref="AReaderCaughtInTheMiddleOfAJoinLooksAgain"/>): the
    /// batch must find the record where it went.
    /// </summary>
    [Fact]
    public void ABatchLookupCaughtInTheMiddleOfAJoinLooksAgain()
    {
        using var map = new ShmemBTree<MapRecord, ByStart>();
        uint count = 0;
        while (map.Height < 2 || map.BlockCount < 4) map.Insert(Versioned(count++ * 10, 1));
        uint sought = (count - 1) * 10;
        MapRecord[] keys = [Key(sought), Key(sought - 5), Key(0)];
        var records = new MapRecord[keys.Length];
        var flags = new bool[keys.Length];
        var (found, record, attempts) = ReadWhileWriting(map, 0, () =>
        {
            map.TryFindMany(keys, records, flags);
            Assert.False(flags[1]);
            Assert.True(flags[2]);
            return flags[0] ? records[0] : null;
        }, () =>
        {
            long blocks = map.BlockCount;
            for (uint k = sought - 10; map.BlockCount == blocks; k -= 10) Assert.True(map.Remove(Key(k)));
            blocks = map.BlockCount;
            for (uint k = 5; map.BlockCount == blocks; k += 10) Assert.True(map.Insert(Versioned(k, 2)));
        });
        Assert.True(found, "the record of the joined leaf was not found");
        Assert.Equal(Versioned(sought, 1), record);
        Assert.True(attempts >= keys.Length + 1, $"the batch read a joined and reused block and did not look again ({attempts} validations)");
        Assert.Empty(map.CheckStructure());
    }

    /// <summary>
    /// A scan stopped between two records of the last leaf (the caller's loop body waits) while the writer removes
    /// records until that leaf joins into its left sibling (its block is freed) and then splits a leaf at the low end
    /// (the freed block is reused for other keys). The scan must notice and continue after the record it returned last:
    /// every record once, in order, none removed before it got there.
    /// </summary>
    [Fact]
    public void AScanCaughtInTheMiddleOfAJoinContinuesInOrder()
    {
        using var map = new ShmemBTree<MapRecord, ByStart>();
        uint count = 0;
        while (map.Height < 2 || map.BlockCount < 5) map.Insert(Versioned(count++ * 10, 1));
        var leaves = LeafFirstKeys(map, count);
        uint pauseAt = leaves[^1];        // the first record of the last leaf
        uint keep = pauseAt + 10;         // the record after it: the writer leaves it alone
        var got = new List<uint>();
        using var paused = new ManualResetEventSlim();
        using var go = new ManualResetEventSlim();
        var reader = new Thread(() =>
        {
            foreach (ref readonly var x in map.Range(Key(0), Key(uint.MaxValue)))
            {
                got.Add(x.Start);
                if (x.Start == pauseAt)
                {
                    paused.Set();
                    go.Wait();
                }
            }
        });
        reader.Start();
        Assert.True(paused.Wait(TimeSpan.FromSeconds(30)), "the scan never reached the last leaf");
        long blocks = map.BlockCount;
        var removed = new List<uint>();
        for (uint k = (count - 1) * 10; map.BlockCount == blocks; k -= 10)
        {
            if (k == keep) continue;
            Assert.True(map.Remove(Key(k)));
            removed.Add(k);
        }
        blocks = map.BlockCount;
        for (uint k = 5; map.BlockCount == blocks; k += 10) Assert.True(map.Insert(Versioned(k, 2))); // behind the scan
        go.Set();
        Assert.True(reader.Join(TimeSpan.FromSeconds(30)));
        var expected = Enumerable.Range(0, (int)count).Select(i => (uint)i * 10).Where(k => k <= pauseAt || !removed.Contains(k)).ToList();
        Assert.Equal(expected, got);
        Assert.Empty(map.CheckStructure());
    }

    static List<uint> LeafFirstKeys(ShmemBTree<MapRecord, ByStart> map, uint count)
    {
        // Leaves are found through the engine's check walk: the first record of each leaf in order.
        var firsts = new List<uint>();
        var cursor = map.CursorForTests;
        var tree = cursor.Tree;
        using var walker = tree.CreateCursor();
        Assert.True(walker.MoveFirst());
        long leaf = -1;
        do
        {
            if (walker.BlockPointerAt(0) != leaf)
            {
                leaf = walker.BlockPointerAt(0);
                firsts.Add(System.Runtime.InteropServices.MemoryMarshal.Read<MapRecord>(walker.Current).Start);
            }
        }
        while (walker.Increment());
        walker.Release();
        Assert.True(firsts.Count > 1 && firsts[^1] < count * 10);
        return firsts;
    }

    /// <summary>
    /// Runs <paramref name="read"/> on another thread, stops it (the hook) the first time it enters a block at
    /// <paramref name="level"/>, runs <paramref name="write"/> here, then lets it go; returns its result and how many
    /// attempts it made (how often it validated).
    /// </summary>
    static (bool Found, MapRecord Record, int Attempts) ReadWhileWriting(ShmemBTree<MapRecord, ByStart> map, int level, Func<MapRecord?> read, Action write)
    {
        using var inBlock = new ManualResetEventSlim();
        using var go = new ManualResetEventSlim();
        int attempts = 0;
        var cursor = map.CursorForTests;
        cursor.ConcurrentReadHook = l =>
        {
            if (l == -1) Interlocked.Increment(ref attempts);
            else if (l == level && !inBlock.IsSet)
            {
                inBlock.Set();
                go.Wait();
            }
        };
        MapRecord? result = null;
        Exception? failure = null;
        var reader = new Thread(() =>
        {
            try { result = read(); }
            catch (Exception e) { failure = e; }
        });
        try
        {
            reader.Start();
            Assert.True(inBlock.Wait(TimeSpan.FromSeconds(30)), "the reader never entered the block");
            write();
        }
        finally
        {
            go.Set();
            reader.Join();
            cursor.ConcurrentReadHook = null;
        }
        Assert.Null(failure);
        return (result.HasValue, result.GetValueOrDefault(), attempts);
    }
}
