using System.Diagnostics;
using System.Globalization;
using System.Text;

namespace Xfbtree.Benchmarks.OrderedMap;

/// <summary>
/// The ordered-map comparison (issue 5): Xfbtree's typed map against SortedSet, SortedDictionary, a sorted
/// array and LMDB on 24-byte rmap-like records. Whole-data-set operations (inserting 10 M records) do not fit
/// BenchmarkDotNet's many-invocation model, so this is a single-pass Stopwatch harness run in one process
/// (same data, same order for every peer); <see cref="OrderedMapLookupBenchmarks"/> covers the steady-state
/// lookups with BenchmarkDotNet.
/// Usage: <c>--quick</c> (1 M records, under a minute) or <c>--ordered-map [--records 1000000,10000000] [--peers a,b]</c>.
/// </summary>
public static class OrderedMapSuite
{
    private static readonly CultureInfo Invariant = CultureInfo.InvariantCulture;

    /// <summary>Runs the suite when <paramref name="args"/> asks for it; returns false otherwise.</summary>
    public static bool TryRun(string[] args)
    {
        bool quick = args.Contains("--quick");
        if (!quick && !args.Contains("--ordered-map"))
        {
            return false;
        }
        int[] sizes = quick ? [1_000_000] : [1_000_000, 10_000_000];
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
        }
        if (Environment.GetEnvironmentVariable("XFBTREE_BENCH_100M") == "1" && !quick)
        {
            sizes = [.. sizes, 100_000_000];
        }
        Run(sizes, quick, peerFilter, Console.Out);
        return true;
    }

    /// <summary>Runs every peer at every size and prints the tables and the machine-readable lines.</summary>
    public static void Run(int[] sizes, bool quick, string[]? peerFilter, TextWriter output)
    {
        var total = Stopwatch.StartNew();
        var results = new List<Measurement>();
        var notes = new SortedSet<string>(StringComparer.Ordinal);
        foreach (int size in sizes)
        {
            RmapRecord[] sorted = RmapDataSet.Sorted(size);
            RmapRecord[] shuffled = RmapDataSet.Shuffled(sorted);
            RmapRecord[] lookupKeys = RmapDataSet.LookupKeys(sorted, quick ? 300_000 : Math.Min(size, 1_000_000));
            BlockRange[] ranges = RmapDataSet.Ranges(sorted, quick ? 20_000 : 100_000, width: 64);

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
                output.WriteLine($"# {factory.Name} at {size:N0} records ...");
                MeasurePeer(factory, size, sorted, shuffled, lookupKeys, ranges, results, notes);
            }
        }

        PrintTables(results, sizes, output);
        foreach (string note in notes)
        {
            output.WriteLine("note: " + note);
        }
        output.WriteLine($"total time {total.Elapsed.TotalSeconds:F1} s");
        PrintMachineLines(results, sizes.Max(), output);
    }

    private static void MeasurePeer(PeerFactory factory, int size, RmapRecord[] sorted, RmapRecord[] shuffled,
        RmapRecord[] lookupKeys, BlockRange[] ranges, List<Measurement> results, SortedSet<string> notes)
    {
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

            long expectedLookup = 0;
            foreach (RmapRecord key in lookupKeys)
            {
                expectedLookup += key.BlockCount;
            }
            results.Add(Measure(peer.Name, "point lookup", lookupKeys.Length, () => peer.Lookup(lookupKeys), expectedLookup));
            if (peer.SupportsRangeQuery)
            {
                results.Add(Measure(peer.Name, "overlapped range query", ranges.Length, () => peer.QueryOverlapping(ranges), expected: null));
            }
            long checksum = 0;
            foreach (RmapRecord record in sorted)
            {
                checksum += record.StartBlock;
            }
            results.Add(Measure(peer.Name, "full scan", size, peer.Scan, checksum));
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
        yield return new PeerFactory("SortedSet", _ => new SortedSetPeer(), null);
        if (!quick)
        {
            yield return new PeerFactory("SortedDictionary", _ => new SortedDictionaryPeer(), null);
        }
        yield return new PeerFactory("SortedArray", _ => new SortedArrayPeer(), null);
        yield return new PeerFactory("LMDB", size => new LmdbPeer(size), LmdbAvailable);
    }

    private static bool LmdbAvailable(out string? why)
    {
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
        string[] operations = ["random insert", "sorted insert", "bulk load", "point lookup", "overlapped range query", "full scan"];
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
                    line.Append(" | ").Append((m is null ? "n/a" : (m.OperationsPerSecond / 1e6).ToString("F3", Invariant)).PadLeft(16));
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
        output.WriteLine($"alloc_bytes_per_op={(insert is null || lookup is null ? "n/a" : Math.Max(insert.AllocatedPerOperation, lookup.AllocatedPerOperation).ToString("F2", Invariant))}");
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
