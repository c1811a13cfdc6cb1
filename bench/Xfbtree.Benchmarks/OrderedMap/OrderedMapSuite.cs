using System.Diagnostics;
using System.Globalization;
using System.Text;

namespace Xfbtree.Benchmarks.OrderedMap;

/// <summary>
/// The ordered-map comparison: Xfbtree's typed map against SortedSet, SortedDictionary, a sorted
/// array and LMDB on 24-byte rmap-like records. Whole-data-set operations (inserting 10 M records) do not fit
/// BenchmarkDotNet's many-invocation model, so this is a single-pass Stopwatch harness run in one process
/// (same data, same order for every peer); <see cref="OrderedMapLookupBenchmarks"/> covers the steady-state
/// lookups with BenchmarkDotNet.
/// Usage: <c>--quick</c> (1 M records, under a minute), <c>--typed-map 1000000,10000000</c> (only the plain typed map's extras) or <c>--ordered-map [--records 1000000,10000000] [--peers a,b] [--rounds N]</c>.
/// Honesty rules: every peer answers every operation and every answer is cross-checked against a reference
/// computed from the sorted data outside the timing (insert counts, lookup sums, overlapped-range counts, scan
/// checksums); all peers run the whole sequence once on a small data set first (JIT warm-up); the peer order
/// rotates from round to round, and each cell is the best round. The machine's load average is printed with
/// the results: on a shared machine absolute numbers are noisy, compare peers within one run.
/// </summary>
public static class OrderedMapSuite
{
    private static readonly CultureInfo Invariant = CultureInfo.InvariantCulture;

    /// <summary>Runs the suite when <paramref name="args"/> asks for it; returns false otherwise.</summary>
    public static bool TryRun(string[] args)
    {
        bool quick = args.Contains("--quick");
        int typedMap = Array.IndexOf(args, "--typed-map");
        if (typedMap >= 0)
        {
            // Only the plain typed map's extras (batches, removes, readers) at the given sizes: the quick A/B of an engine change.
            TypedMapExtras.Run(20_000, 20_000, TextWriter.Null); // warm-up (JIT)
            TypedMapExtras.Result? last = null;
            foreach (string size in (typedMap + 1 < args.Length ? args[typedMap + 1] : "1000000").Split(','))
            {
                int records = int.Parse(size, Invariant);
                last = TypedMapExtras.Run(records, Math.Min(records, 1_000_000), Console.Out);
            }
            Console.WriteLine();
            TypedMapExtras.PrintMachineLines(last!, Console.Out);
            return true;
        }
        if (!quick && !args.Contains("--ordered-map"))
        {
            return false;
        }
        int[] sizes = quick ? [1_000_000] : [1_000_000, 10_000_000];
        int rounds = quick ? 1 : 2;
        string[]? peerFilter = null;
        for (int i = 0; i < args.Length - 1; i++)
        {
            if (args[i] == "--records")
            {
                sizes = args[i + 1].Split(',').Select(s => int.Parse(s, Invariant)).ToArray();
            }
            else if (args[i] == "--peers")
            {
                peerFilter = args[i + 1].Split(',');
            }
            else if (args[i] == "--rounds")
            {
                rounds = Math.Max(1, int.Parse(args[i + 1], Invariant));
            }
        }
        if (Environment.GetEnvironmentVariable("XFBTREE_BENCH_100M") == "1" && !quick)
        {
            sizes = [.. sizes, 100_000_000];
        }
        if (quick || ResultsDirectory() is not { } directory)
        {
            Run(sizes, quick, peerFilter, rounds, Console.Out);
            return true;
        }
        // A full run also keeps its whole report in bench/results/ (date, machine and load average are in its first lines).
        string file = Path.Combine(directory, $"ordered-map-{string.Join('-', sizes.Select(RecordsLabel))}-{DateTime.UtcNow:yyyy-MM-dd-HHmm}.txt");
        using (var writer = new StreamWriter(file))
        {
            Run(sizes, quick, peerFilter, rounds, new TeeWriter(Console.Out, writer));
        }
        Console.WriteLine($"report written to {file}");
        return true;
    }

    private static string RecordsLabel(int records) => records % 1_000_000 == 0 ? $"{records / 1_000_000}m" : records.ToString(Invariant);

    /// <summary>bench/results of the repository this program runs from, or null when not found.</summary>
    private static string? ResultsDirectory()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            string candidate = Path.Combine(dir.FullName, "bench", "results");
            if (Directory.Exists(candidate))
            {
                return candidate;
            }
        }
        return null;
    }

    /// <summary>Writes every line to two writers (the console and the results file).</summary>
    private sealed class TeeWriter(TextWriter first, TextWriter second) : TextWriter
    {
        public override Encoding Encoding => first.Encoding;

        public override void Write(char value)
        {
            first.Write(value);
            second.Write(value);
        }

        public override void Write(string? value)
        {
            first.Write(value);
            second.Write(value);
        }

        public override void WriteLine(string? value)
        {
            first.WriteLine(value);
            second.WriteLine(value);
            second.Flush();
        }
    }

    /// <summary>The machine and its load now (hostname, CPU model and count, /proc/loadavg).</summary>
    public static string MachineLine()
    {
        string cpu = "?";
        try
        {
            cpu = File.ReadLines("/proc/cpuinfo").FirstOrDefault(l => l.StartsWith("model name", StringComparison.Ordinal))?.Split(':', 2)[1].Trim() ?? "?";
        }
        catch (IOException)
        {
        }
        return $"{Environment.MachineName}, {Environment.ProcessorCount} CPUs ({cpu}), {Environment.OSVersion}, .NET {Environment.Version}";
    }

    /// <summary>The 1/5/15-minute load averages (/proc/loadavg), or "?" off Linux.</summary>
    public static string LoadAverage()
    {
        try
        {
            return string.Join(' ', File.ReadAllText("/proc/loadavg").Split(' ').Take(3));
        }
        catch (IOException)
        {
            return "?";
        }
    }

    /// <summary>Runs every peer at every size and prints the tables and the machine-readable lines.</summary>
    public static void Run(int[] sizes, bool quick, string[]? peerFilter, int rounds, TextWriter output)
    {
        var total = Stopwatch.StartNew();
        var results = new List<Measurement>();
        var notes = new SortedSet<string>(StringComparer.Ordinal);
        output.WriteLine($"# {DateTime.UtcNow:yyyy-MM-dd HH:mm} UTC on {MachineLine()}");
        output.WriteLine($"# load average at start: {LoadAverage()} (shared machine: compare peers within this run, not across runs)");
        var factories = new List<PeerFactory>();
        foreach (PeerFactory factory in Peers(quick))
        {
            if (peerFilter is not null && !peerFilter.Contains(factory.Name, StringComparer.OrdinalIgnoreCase))
            {
                continue;
            }
            if (!factory.IsAvailable(out string? why))
            {
                notes.Add($"{factory.Name}: {why}");
                continue;
            }
            factories.Add(factory);
        }

        // Warm-up: every peer runs the whole sequence on a small data set (JIT, first-touch costs); results dropped.
        {
            var warm = new DataSet(RmapDataSet.Sorted(20_000), 2_000, 500);
            foreach (PeerFactory factory in factories)
            {
                MeasurePeer(factory, warm, new List<Measurement>(), notes);
            }
        }

        int roundNumber = 0;
        foreach (int size in sizes)
        {
            var data = new DataSet(RmapDataSet.Sorted(size), quick ? 300_000 : Math.Min(size, 1_000_000), quick ? 20_000 : 100_000);
            for (int round = 0; round < rounds; round++, roundNumber++)
            {
                for (int i = 0; i < factories.Count; i++)
                {
                    PeerFactory factory = factories[(i + roundNumber) % factories.Count];
                    output.WriteLine($"# {factory.Name} at {size:N0} records, round {round + 1}/{rounds} (load {LoadAverage()}) ...");
                    var measured = new List<Measurement>();
                    MeasurePeer(factory, data, measured, notes);
                    foreach (Measurement m in measured)
                    {
                        int existing = results.FindIndex(r => r.Peer == m.Peer && r.Operation == m.Operation && r.Size(size));
                        if (existing < 0)
                        {
                            results.Add(m);
                        }
                        else if (m.OperationsPerSecond > results[existing].OperationsPerSecond)
                        {
                            results[existing] = m with { BytesPerRecord = m.BytesPerRecord ?? results[existing].BytesPerRecord };
                        }
                    }
                }
            }
        }

        PrintTables(results, sizes, output);
        foreach (string note in notes)
        {
            output.WriteLine("note: " + note);
        }
        output.WriteLine($"rounds per size: {rounds} (peer order rotated each round; best round per cell); load average at end: {LoadAverage()}");
        PrintMachineLines(results, sizes.Max(), output);
        if (peerFilter is null || peerFilter.Any(p => p.StartsWith("Xfbtree", StringComparison.OrdinalIgnoreCase)))
        {
            // The plain typed map alone: batches, removes against inserts, readers on two threads, a writer alongside.
            TypedMapExtras.Run(20_000, 20_000, TextWriter.Null); // warm-up (JIT)
            TypedMapExtras.Result? largest = null;
            foreach (int size in sizes)
            {
                largest = TypedMapExtras.Run(size, quick ? 300_000 : Math.Min(size, 1_000_000), output);
            }
            output.WriteLine();
            TypedMapExtras.PrintMachineLines(largest!, output);
            output.WriteLine($"load_average_end={LoadAverage()}");
        }
        output.WriteLine($"total time {total.Elapsed.TotalSeconds:F1} s");
    }

    /// <summary>One size's inputs and the reference answers every peer must give (computed outside the timing).</summary>
    private sealed class DataSet
    {
        public DataSet(RmapRecord[] sorted, int lookups, int rangeCount)
        {
            Sorted = sorted;
            Shuffled = RmapDataSet.Shuffled(sorted);
            LookupKeys = RmapDataSet.LookupKeys(sorted, lookups);
            Ranges = RmapDataSet.Ranges(sorted, rangeCount, width: 64);
            foreach (RmapRecord key in LookupKeys)
            {
                LookupSum += key.BlockCount;
            }
            foreach (RmapRecord record in sorted)
            {
                ScanChecksum += record.StartBlock;
            }
            // Overlapped-range answers by binary search + scan over the sorted array (the reference, not a peer).
            RangePrefix = new long[Ranges.Length + 1];
            for (int i = 0; i < Ranges.Length; i++)
            {
                RangePrefix[i + 1] = RangePrefix[i] + ReferenceOverlaps(sorted, Ranges[i]);
            }
        }

        public RmapRecord[] Sorted { get; }
        public RmapRecord[] Shuffled { get; }
        public RmapRecord[] LookupKeys { get; }
        public BlockRange[] Ranges { get; }
        public long LookupSum { get; }
        public long ScanChecksum { get; }
        /// <summary>RangePrefix[k] = records found by the first k ranges.</summary>
        public long[] RangePrefix { get; }
        public int Size => Sorted.Length;

        private static long ReferenceOverlaps(RmapRecord[] sorted, BlockRange range)
        {
            int low = 0, high = sorted.Length;
            while (low < high)
            {
                int mid = (low + high) >>> 1;
                if (sorted[mid].StartBlock < range.FirstPossibleStart)
                {
                    low = mid + 1;
                }
                else
                {
                    high = mid;
                }
            }
            long found = 0;
            for (int i = low; i < sorted.Length && sorted[i].StartBlock <= range.High; i++)
            {
                if (sorted[i].StartBlock + sorted[i].BlockCount > range.Low)
                {
                    found++;
                }
            }
            return found;
        }
    }

    private static void MeasurePeer(PeerFactory factory, DataSet data, List<Measurement> results, SortedSet<string> notes)
    {
        int size = data.Size;
        RmapRecord[] sorted = data.Sorted, shuffled = data.Shuffled, lookupKeys = data.LookupKeys;
        Measurement Measure(string peerName, string operation, int operations, Func<long> body, long? expected) =>
            MeasureOnce(peerName, operation, operations, body, expected) with { RecordCount = size };

        // Random insert, then the read operations on that same map.
        long managedBefore = ManagedHeap();
        IOrderedMapPeer peer = factory.Create(size);
        try
        {
            if (peer.InsertNote is { } note)
            {
                notes.Add($"{peer.Name}: {note}");
            }
            results.Add(Measure(peer.Name, "random insert", size, () => { peer.Insert(shuffled); return peer.Count; }, expected: size));
            long managedAfter = ManagedHeap();
            double bytesPerRecord = (double)(managedAfter - managedBefore + peer.NativeBytes) / size;
            results[^1] = results[^1] with { BytesPerRecord = bytesPerRecord };
            if (peer.MemoryNote is { } memoryNote)
            {
                notes.Add($"{peer.Name} at {size:N0} records: {memoryNote}");
            }

            results.Add(Measure(peer.Name, "point lookup", lookupKeys.Length, () => peer.Lookup(lookupKeys), data.LookupSum));
            if (peer.HasBatchLookup)
            {
                results.Add(Measure(peer.Name, "batched lookup", lookupKeys.Length, () => peer.LookupBatch(lookupKeys), data.LookupSum));
            }
            int rangeCount = Math.Min(data.Ranges.Length, peer.RangeQueryLimit(size));
            if (peer.RangeQueryNote is { } rangeNote)
            {
                notes.Add($"{peer.Name}: {rangeNote}");
            }
            BlockRange[] ranges = data.Ranges[..rangeCount];
            results.Add(Measure(peer.Name, "overlapped range query", rangeCount, () => peer.QueryOverlapping(ranges), data.RangePrefix[rangeCount]));
            results.Add(Measure(peer.Name, "full scan", size, peer.Scan, data.ScanChecksum));
        }
        finally
        {
            peer.Dispose();
        }

        using (IOrderedMapPeer sortedPeer = factory.Create(size))
        {
            results.Add(Measure(sortedPeer.Name, "sorted insert", size, () => { sortedPeer.Insert(sorted); return sortedPeer.Count; }, expected: size));
        }
        using (IOrderedMapPeer bulkPeer = factory.Create(size))
        {
            results.Add(Measure(bulkPeer.Name, "bulk load", size, () => { bulkPeer.BulkLoad(sorted); return bulkPeer.Count; }, expected: size));
        }
        GC.Collect();
    }

    private static Measurement MeasureOnce(string peer, string operation, int operations, Func<long> body, long? expected)
    {
        GC.Collect();
        GC.WaitForPendingFinalizers();
        GC.Collect();
        int gen0 = GC.CollectionCount(0), gen1 = GC.CollectionCount(1), gen2 = GC.CollectionCount(2);
        long allocated = GC.GetAllocatedBytesForCurrentThread();
        var watch = Stopwatch.StartNew();
        long result = body();
        watch.Stop();
        allocated = GC.GetAllocatedBytesForCurrentThread() - allocated;
        if (expected is { } value && value != result)
        {
            throw new InvalidOperationException($"{peer} {operation}: result {result}, expected {value}");
        }
        return new Measurement(peer, operation, operations, watch.Elapsed.TotalSeconds, (double)allocated / operations,
            GC.CollectionCount(0) - gen0, GC.CollectionCount(1) - gen1, GC.CollectionCount(2) - gen2, null);
    }

    private static long ManagedHeap()
    {
        GC.Collect();
        GC.WaitForPendingFinalizers();
        GC.Collect();
        return GC.GetTotalMemory(forceFullCollection: true);
    }

    private static IEnumerable<PeerFactory> Peers(bool quick)
    {
        yield return new PeerFactory("Xfbtree", XfbtreePeer.TryCreate, XfbtreePeer.IsAvailable);
        if (!quick)
        {
            yield return new PeerFactory("Xfbtree-plain", _ => new XfbtreePlainPeer(), null);
        }
        yield return new PeerFactory("SortedSet", _ => new SortedSetPeer(), null);
        yield return new PeerFactory("SortedDictionary", _ => new SortedDictionaryPeer(), null);
        yield return new PeerFactory("SortedArray", _ => new SortedArrayPeer(), null);
        yield return new PeerFactory("LMDB", size => new LmdbPeer(size), LmdbAvailable);
    }

    private static bool LmdbAvailable(out string? why)
    {
        // Probe the library first: a LightningEnvironment whose constructor fails on a missing library is left to a
        // finalizer that throws, which would end the process.
        if (!LmdbPeer.SystemLibraryPresent())
        {
            why = "liblmdb.so.0 not found: run bench/setup.sh (apt-get install liblmdb-dev)";
            return false;
        }
        try
        {
            using var probe = new LmdbPeer(1);
            why = null;
            return true;
        }
        catch (DllNotFoundException e)
        {
            why = e.Message;
            return false;
        }
    }

    private static void PrintTables(List<Measurement> results, int[] sizes, TextWriter output)
    {
        string[] operations = ["random insert", "sorted insert", "bulk load", "point lookup", "batched lookup", "overlapped range query", "full scan"];
        string[] peers = results.Select(r => r.Peer).Distinct().ToArray();
        foreach (int size in sizes)
        {
            output.WriteLine();
            output.WriteLine($"## {size:N0} records: million operations per second (higher is better)");
            var header = new StringBuilder($"| {"operation",-24}");
            foreach (string peer in peers)
            {
                header.Append(Invariant, $" | {peer,16}");
            }
            output.WriteLine(header.Append(" |"));
            output.WriteLine("|" + string.Concat(Enumerable.Repeat("---|", peers.Length + 1)));
            foreach (string operation in operations)
            {
                var line = new StringBuilder($"| {operation,-24}");
                foreach (string peer in peers)
                {
                    Measurement? m = Find(results, peer, operation, size);
                    // A peer without a batch API answers the batched row with its point lookup (shown in parentheses).
                    string cell = m is not null ? (m.OperationsPerSecond / 1e6).ToString("F3", Invariant)
                        : operation == "batched lookup" && Find(results, peer, "point lookup", size) is { } single
                            ? $"({single.OperationsPerSecond / 1e6:F3})"
                            : "n/a";
                    line.Append(" | ").Append(cell.PadLeft(16));
                }
                output.WriteLine(line.Append(" |"));
            }

            output.WriteLine();
            output.WriteLine($"## {size:N0} records: details");
            output.WriteLine("| peer | operation | ops/s | alloc B/op | gen0 | gen1 | gen2 | bytes/record |");
            output.WriteLine("|---|---|---:|---:|---:|---:|---:|---:|");
            foreach (Measurement m in results.Where(r => r.Size(size)))
            {
                output.WriteLine(string.Create(Invariant,
                    $"| {m.Peer} | {m.Operation} | {m.OperationsPerSecond:N0} | {m.AllocatedPerOperation:F2} | {m.Gen0} | {m.Gen1} | {m.Gen2} | {(m.BytesPerRecord is { } b ? b.ToString("F1", Invariant) : "")} |"));
            }
        }
    }

    private static void PrintMachineLines(List<Measurement> results, int size, TextWriter output)
    {
        output.WriteLine();
        string Ratio(string operation, string peer)
        {
            Measurement? mine = Find(results, "Xfbtree", operation, size);
            Measurement? theirs = Find(results, peer, operation, size);
            return mine is null || theirs is null ? "n/a" : (mine.OperationsPerSecond / theirs.OperationsPerSecond).ToString("F2", Invariant);
        }
        output.WriteLine($"ratio insert_vs_sortedset={Ratio("random insert", "SortedSet")}");
        output.WriteLine($"ratio lookup_vs_sortedset={Ratio("point lookup", "SortedSet")}");
        output.WriteLine($"ratio lookup_vs_lmdb={Ratio("point lookup", "LMDB")}");
        Measurement? insert = Find(results, "Xfbtree", "random insert", size);
        Measurement? lookup = Find(results, "Xfbtree", "point lookup", size);
        output.WriteLine($"bytes_per_record={(insert?.BytesPerRecord is { } bytes ? bytes.ToString("F1", Invariant) : "n/a")}");
        double? worstAlloc = results.Where(r => r.Peer == "Xfbtree" && r.Size(size)).Select(r => (double?)r.AllocatedPerOperation).Max();
        output.WriteLine($"alloc_bytes_per_op={(insert is null || lookup is null || worstAlloc is null ? "n/a" : worstAlloc.Value.ToString("F2", Invariant))}");
        Measurement? batch = Find(results, "Xfbtree", "batched lookup", size);
        Measurement? bulk = Find(results, "Xfbtree", "bulk load", size);
        Measurement? scan = Find(results, "Xfbtree", "full scan", size);
        output.WriteLine($"lookup_batch_mops={(batch is null ? "n/a" : (batch.OperationsPerSecond / 1e6).ToString("F2", Invariant))}");
        output.WriteLine($"bulk_mrec_per_s={(bulk is null ? "n/a" : (bulk.OperationsPerSecond / 1e6).ToString("F2", Invariant))}");
        output.WriteLine($"scan_mrec_per_s={(scan is null ? "n/a" : (scan.OperationsPerSecond / 1e6).ToString("F2", Invariant))}");
        Measurement? sortedMine = Find(results, "Xfbtree", "sorted insert", size);
        // The dynamic ordered maps of the targets (SortedSet, SortedDictionary, LMDB); the sorted array appends and sorts once.
        Measurement? bestPeer = results.Where(r => r.Peer is not "Xfbtree" and not "Xfbtree-plain" and not "SortedArray" && r.Operation == "sorted insert" && r.Size(size))
            .MaxBy(r => r.OperationsPerSecond);
        output.WriteLine($"sorted_insert_vs_best_peer={(sortedMine is null || bestPeer is null ? "n/a" : (sortedMine.OperationsPerSecond / bestPeer.OperationsPerSecond).ToString("F2", Invariant))}");
        output.WriteLine($"sorted_insert_best_peer={bestPeer?.Peer ?? "n/a"}");
        output.WriteLine($"load_average={LoadAverage()}");
    }

    private static Measurement? Find(List<Measurement> results, string peer, string operation, int size) =>
        results.FirstOrDefault(r => r.Peer == peer && r.Operation == operation && r.Size(size));

    private delegate bool Availability(out string? why);

    private sealed record PeerFactory(string Name, Func<int, IOrderedMapPeer> Create, Availability? Probe)
    {
        public bool IsAvailable(out string? why)
        {
            if (Probe is null)
            {
                why = null;
                return true;
            }
            return Probe(out why);
        }
    }

    private sealed record Measurement(string Peer, string Operation, int Operations, double Seconds,
        double AllocatedPerOperation, int Gen0, int Gen1, int Gen2, double? BytesPerRecord)
    {
        public int RecordCount { get; init; }

        public double OperationsPerSecond => Operations / Seconds;

        public bool Size(int size) => RecordCount == size;
    }
}
