using System.Diagnostics;
using System.Globalization;
using Xfbtree.InMemory;
using Xfbtree.Storage;

namespace Xfbtree.Benchmarks.OrderedMap;

/// <summary>
/// What the peer tables do not cover for the plain typed map (<see cref="ShmemBTree{TRecord, TComparer}"/>, huge pages
/// preferred): batch inserts of random records, single inserts against removes, batched against single lookups, and
/// readers on two threads, alone and with a writer running. Every answer is checked (lookups must find every record).
/// </summary>
public static class TypedMapExtras
{
    private static readonly CultureInfo Invariant = CultureInfo.InvariantCulture;

    /// <summary>The measured rates at one size (million operations per second, and the ratios the machine lines print).</summary>
    public sealed record Result(int Size, double InsertMany, double Insert, double Remove, double Lookup, double LookupBatch,
                                double TwoReaders, double ReaderWithWriter, double WriterAlongside, string Load);

    /// <summary>Measures at <paramref name="size"/> records and prints a table; returns the numbers.</summary>
    public static Result Run(int size, int lookups, TextWriter output)
    {
        RmapRecord[] sorted = RmapDataSet.Sorted(size);
        RmapRecord[] shuffled = (RmapRecord[])sorted.Clone();
        new Random(17).Shuffle(shuffled);
        RmapRecord[] probes = shuffled.AsSpan(0, Math.Min(lookups, size)).ToArray();
        new Random(18).Shuffle(probes);
        string load = LoadAverage();

        double insertMany, insert, remove;
        double insertManyCpu, insertCpu, removeCpu;
        using (var xfile = XfbtreeMaps.CreateXfile("xfbtree-bench-extras"))
        using (var map = new ShmemBTree<RmapRecord, RmapRecordMapComparer>(default, new ShmemBTreeOptions { Xfile = xfile }))
        {
            var sw = Stopwatch.StartNew();
            var cpu = CpuClock.Start();
            Check(map.InsertMany(shuffled) == size, "InsertMany added every record");
            insertMany = size / sw.Elapsed.TotalSeconds / 1e6;
            insertManyCpu = cpu.Rate(size);
            // Remove and insert the same random half again, one by one, in the same random order.
            // writes: a tenth instead of half (the same tree size, a shorter run).
            int half = Environment.GetEnvironmentVariable("XFBTREE_BENCH_EXTRAS") switch { "insertmany" or "reads" => 1, "writes" => size / 10, _ => size / 2 };
            sw.Restart();
            cpu = CpuClock.Start();
            for (int i = 0; i < half; i++) Check(map.Remove(shuffled[i]), "remove found the record");
            remove = half / sw.Elapsed.TotalSeconds / 1e6;
            removeCpu = cpu.Rate(half);
            sw.Restart();
            cpu = CpuClock.Start();
            for (int i = 0; i < half; i++) Check(map.Insert(shuffled[i]), "insert added the record");
            insert = half / sw.Elapsed.TotalSeconds / 1e6;
            insertCpu = cpu.Rate(half);
        }

        // XFBTREE_BENCH_EXTRAS=insertmany, writes or reads: only those phases and one line (a quick A/B of an engine change).
        if (Environment.GetEnvironmentVariable("XFBTREE_BENCH_EXTRAS") is "insertmany" or "writes")
        {
            output.WriteLine($"only {size} insertMany {insertMany:F3} / {insertManyCpu:F3}  remove {remove:F3} / {removeCpu:F3}  insert {insert:F3} / {insertCpu:F3}");
            return new Result(size, insertMany, insert, remove, 1, 1, 1, 1, 1, load);
        }
        using var readXfile = XfbtreeMaps.CreateXfile("xfbtree-bench-extras-read");
        using var tree = new ShmemBTree<RmapRecord, RmapRecordMapComparer>(default, new ShmemBTreeOptions { Xfile = readXfile });
        tree.InsertMany(shuffled);
        var lookupClock = CpuClock.Start();
        double lookup = ReadRate(tree, probes, 1, writer: false, out _);
        double lookupCpu = lookupClock.Rate(probes.Length);
        double batch, batchCpu;
        {
            var found = new RmapRecord[256];
            var hit = new bool[256];
            var sw = Stopwatch.StartNew();
            var cpu = CpuClock.Start();
            int hits = 0;
            for (int i = 0; i + 256 <= probes.Length; i += 256) hits += tree.TryFindMany(probes.AsSpan(i, 256), found, hit);
            batch = (probes.Length / 256 * 256) / sw.Elapsed.TotalSeconds / 1e6;
            batchCpu = cpu.Rate(probes.Length / 256 * 256);
            Check(hits == probes.Length / 256 * 256, "TryFindMany found every record");
        }
        if (Environment.GetEnvironmentVariable("XFBTREE_BENCH_EXTRAS") == "reads")
        {
            output.WriteLine($"only {size} insertMany {insertMany:F3} / {insertManyCpu:F3}  lookup {lookup:F3} / {lookupCpu:F3}  batch {batch:F3} / {batchCpu:F3}");
            return new Result(size, insertMany, insert, remove, lookup, batch, 1, 1, 1, load);
        }
        double two = ReadRate(tree, probes, 2, writer: false, out _);
        double withWriter = ReadRate(tree, probes, 1, writer: true, out double writes);

        output.WriteLine();
        output.WriteLine($"## {size:N0} records: the plain typed map alone (ShmemBTree, {tree.HugePageMode}, load {load})");
        output.WriteLine("| operation | M ops/s | M ops per CPU second |");
        output.WriteLine("|---|---:|---:|");
        output.WriteLine($"| InsertMany (random order) | {insertMany.ToString("F3", Invariant)} | {insertManyCpu.ToString("F3", Invariant)} |");
        output.WriteLine($"| Insert (random, one by one) | {insert.ToString("F3", Invariant)} | {insertCpu.ToString("F3", Invariant)} |");
        output.WriteLine($"| Remove (random, one by one) | {remove.ToString("F3", Invariant)} | {removeCpu.ToString("F3", Invariant)} |");
        output.WriteLine($"| TryFind, one thread | {lookup.ToString("F3", Invariant)} | {lookupCpu.ToString("F3", Invariant)} |");
        output.WriteLine($"| TryFindMany, one thread | {batch.ToString("F3", Invariant)} | {batchCpu.ToString("F3", Invariant)} |");
        output.WriteLine($"| TryFind, two threads (total) | {two.ToString("F3", Invariant)} | |");
        output.WriteLine($"| TryFind, one thread, a writer running | {withWriter.ToString("F3", Invariant)} | |");
        output.WriteLine($"| the writer meanwhile (remove + insert) | {writes.ToString("F3", Invariant)} | |");
        return new Result(size, insertMany, insert, remove, lookup, batch, two, withWriter, writes, load);
    }

    /// <summary>The machine-readable lines of a result.</summary>
    public static void PrintMachineLines(Result r, TextWriter output)
    {
        output.WriteLine($"insert_many_mops={r.InsertMany.ToString("F2", Invariant)}");
        output.WriteLine($"insert_mops={r.Insert.ToString("F2", Invariant)}");
        output.WriteLine($"remove_vs_insert={(r.Remove / r.Insert).ToString("F2", Invariant)}");
        output.WriteLine($"plain_lookup_mops={r.Lookup.ToString("F2", Invariant)}");
        output.WriteLine($"plain_lookup_batch_mops={r.LookupBatch.ToString("F2", Invariant)}");
        output.WriteLine($"concurrent_read_speedup={(r.TwoReaders / r.Lookup).ToString("F2", Invariant)}");
        output.WriteLine($"read_with_writer_ratio={(r.ReaderWithWriter / r.Lookup).ToString("F2", Invariant)}");
    }

    /// <summary>
    /// Lookups of every probe on <paramref name="threads"/> threads at once (each all the probes, from its own start),
    /// optionally with a writer removing and re-inserting records of the map until they finish; total M lookups/s.
    /// </summary>
    private static double ReadRate(ShmemBTree<RmapRecord, RmapRecordMapComparer> map, RmapRecord[] probes, int threads, bool writer, out double writerRate)
    {
        using var start = new Barrier(threads + 1 + (writer ? 1 : 0));
        long missing = 0;
        int done = 0;
        long writes = 0;
        var readers = Enumerable.Range(0, threads).Select(t => new Thread(() =>
        {
            start.SignalAndWait();
            long miss = 0;
            for (int n = 0, i = t * probes.Length / Math.Max(1, threads); n < probes.Length; n++, i = i + 1 == probes.Length ? 0 : i + 1)
                if (!map.TryFind(probes[i], out _)) miss++;
            Interlocked.Add(ref missing, miss);
            Interlocked.Increment(ref done);
        })).ToList();
        Thread? writerThread = null;
        if (writer)
        {
            writerThread = new Thread(() =>
            {
                start.SignalAndWait();
                int i = probes.Length - 1;
                while (Volatile.Read(ref done) < threads)
                {
                    // A probe is absent only between these two calls; readers count it missing then (checked below: rarely).
                    map.Remove(probes[i]);
                    map.Insert(probes[i]);
                    writes += 2;
                    i = i == 0 ? probes.Length - 1 : i - 1;
                }
            });
            writerThread.Start();
        }
        readers.ForEach(t => t.Start());
        start.SignalAndWait();
        var sw = Stopwatch.StartNew();
        readers.ForEach(t => t.Join());
        double seconds = sw.Elapsed.TotalSeconds;
        writerThread?.Join();
        writerRate = writes / seconds / 1e6;
        Check(writer ? missing < probes.Length / 100 + 100 : missing == 0, $"lookups found their records ({missing} missing)");
        return (double)threads * probes.Length / seconds / 1e6;
    }

    /// <summary>
    /// CPU time of the whole process (the single-thread phases run on one thread; GC and JIT threads are idle then):
    /// on a shared machine the wall-clock rate says how much CPU the process got, this one what the code costs (memory
    /// stalls count as CPU time).
    /// </summary>
    private readonly struct CpuClock
    {
        private readonly TimeSpan _start;
        private CpuClock(TimeSpan start) => _start = start;
        public static CpuClock Start() => new(Process.GetCurrentProcess().TotalProcessorTime);
        public double Rate(long operations) => operations / (Process.GetCurrentProcess().TotalProcessorTime - _start).TotalSeconds / 1e6;
    }

    private static void Check(bool condition, string what)
    {
        if (!condition) throw new InvalidOperationException($"typed map benchmark: expected {what}");
    }

    private static string LoadAverage()
    {
        try { return string.Join(' ', File.ReadAllText("/proc/loadavg").Split(' ').Take(3)); }
        catch (IOException) { return "n/a"; }
    }
}
