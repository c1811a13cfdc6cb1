using System.Diagnostics;
using System.Globalization;
using Xfbtree.Benchmarks.OrderedMap;
using Xfbtree.InMemory;
using Xfbtree.Storage;

namespace Xfbtree.Benchmarks.LargerThanRam;

/// <summary>
/// A/B of huge pages in one process: the same <see cref="ShmemBTree{TRecord, TComparer}"/> (public API) of N records
/// on three xfiles (memfd with 4 KiB pages = the default, anonymous with 4 KiB pages, and HugePages Preferred),
/// random point lookups and batched lookups of the same existing keys, rounds alternating between the variants, best
/// round per cell (and the median of the rounds: use many short rounds on a loaded machine). Prints what each xfile got and how much of it the kernel mapped with 2 MiB pages.
/// Usage: <c>--hugepage-ab [--records 10000000] [--lookups 2000000] [--rounds 3]</c>.
/// </summary>
public static class HugePageAb
{
    private static readonly CultureInfo Invariant = CultureInfo.InvariantCulture;

    /// <summary>Runs when <paramref name="args"/> has --hugepage-ab; returns false otherwise.</summary>
    public static bool TryRun(string[] args)
    {
        if (!args.Contains("--hugepage-ab"))
        {
            return false;
        }
        int records = 10_000_000, lookups = 2_000_000, rounds = 3;
        for (int i = 0; i < args.Length - 1; i++)
        {
            switch (args[i])
            {
                case "--records": records = int.Parse(args[i + 1], Invariant); break;
                case "--lookups": lookups = int.Parse(args[i + 1], Invariant); break;
                case "--rounds": rounds = int.Parse(args[i + 1], Invariant); break;
            }
        }
        Run(records, lookups, rounds, Console.Out);
        return true;
    }

    private sealed record Variant(string Name, XfileOptions Options)
    {
        public ShmemBTree<RmapRecord, RmapRecordMapComparer>? Map { get; set; }
        public Xfile? Xfile { get; set; }
        public double BestLookup { get; set; }
        public double BestBatch { get; set; }
        public double InsertRate { get; set; }
        public List<double> Lookups { get; } = [];
        public List<double> Batches { get; } = [];
        public static double Median(List<double> values)
        {
            var sorted = values.Order().ToArray();
            return sorted.Length == 0 ? 0 : sorted.Length % 2 == 1 ? sorted[sorted.Length / 2] : (sorted[sorted.Length / 2 - 1] + sorted[sorted.Length / 2]) / 2;
        }
    }

    /// <summary>Builds the maps, runs the rounds, prints the table.</summary>
    public static void Run(int records, int lookups, int rounds, TextWriter output)
    {
        output.WriteLine($"# huge-page A/B, {DateTime.UtcNow:yyyy-MM-dd HH:mm} UTC on {OrderedMapSuite.MachineLine()}");
        output.WriteLine($"# load average at start: {OrderedMapSuite.LoadAverage()}; {records:N0} records, {lookups:N0} random lookups of existing keys per round, {rounds} rounds");
        Variant[] variants =
        [
            new("memfd 4 KiB (default)", new XfileOptions()),
            new("anonymous 4 KiB", new XfileOptions { Backend = XfileBackendKind.Anonymous }),
            new("HugePages=Preferred", new XfileOptions { HugePages = XfileHugePages.Preferred }),
        ];
        var random = new Random(17);
        var keys = new RmapRecord[lookups];
        long expected = 0;
        for (int i = 0; i < lookups; i++)
        {
            keys[i] = LargerThanRamBenchmark.Original(random.NextInt64(records), records);
            expected += keys[i].BlockCount;
        }
        foreach (Variant v in variants)
        {
            v.Xfile = Xfile.Create(v.Options);
            v.Map = new ShmemBTree<RmapRecord, RmapRecordMapComparer>(options: new ShmemBTreeOptions { Xfile = v.Xfile });
            var watch = Stopwatch.StartNew();
            // Random-order inserts would take minutes at 10 M; in-order inserts build the same shape for every variant.
            for (long i = 0; i < records; i++)
            {
                v.Map.Insert(LargerThanRamBenchmark.Original(i, records));
            }
            v.InsertRate = records / watch.Elapsed.TotalSeconds;
            XfileMemoryUsage usage = v.Xfile.MeasureMemory();
            output.WriteLine(string.Create(Invariant,
                $"# {v.Name}: {v.Xfile.Backend}, {v.Xfile.BackingDescription}; huge pages: {v.Xfile.HugePageMode} - {v.Xfile.HugePageDescription}"));
            output.WriteLine(string.Create(Invariant,
                $"#   built in {watch.Elapsed.TotalSeconds:F1} s; resident {usage.ResidentBytes / (double)(1 << 20):N0} MiB, {usage.HugePageBytes / (double)(1 << 20):N0} MiB in 2 MiB pages (AnonHugePages {usage.AnonHugePagesBytes >> 20} MiB, ShmemPmdMapped {usage.ShmemPmdMappedBytes >> 20} MiB)"));
        }
        Span<RmapRecord> found = new RmapRecord[256];
        Span<bool> hit = new bool[256];
        for (int round = 0; round < rounds; round++)
        {
            for (int k = 0; k < variants.Length; k++)
            {
                Variant v = variants[(k + round) % variants.Length];
                var map = v.Map!;
                var watch = Stopwatch.StartNew();
                long sum = 0;
                foreach (RmapRecord key in keys)
                {
                    if (map.TryFind(key, out RmapRecord r))
                    {
                        sum += r.BlockCount;
                    }
                }
                double single = lookups / watch.Elapsed.TotalSeconds;
                if (sum != expected)
                {
                    throw new InvalidOperationException($"{v.Name}: lookup sum {sum}, expected {expected}");
                }
                watch.Restart();
                sum = 0;
                for (int start = 0; start < keys.Length; start += 256)
                {
                    ReadOnlySpan<RmapRecord> part = keys.AsSpan(start, Math.Min(256, keys.Length - start));
                    map.TryFindMany(part, found, hit);
                    for (int i = 0; i < part.Length; i++)
                    {
                        if (hit[i])
                        {
                            sum += found[i].BlockCount;
                        }
                    }
                }
                double batch = lookups / watch.Elapsed.TotalSeconds;
                if (sum != expected)
                {
                    throw new InvalidOperationException($"{v.Name}: batch lookup sum {sum}, expected {expected}");
                }
                v.Lookups.Add(single);
                v.Batches.Add(batch);
                v.BestLookup = Math.Max(v.BestLookup, single);
                v.BestBatch = Math.Max(v.BestBatch, batch);
                output.WriteLine(string.Create(Invariant, $"  round {round + 1} {v.Name,-22} point {single / 1e6:F3} M/s  batched {batch / 1e6:F3} M/s  (load {OrderedMapSuite.LoadAverage()})"));
            }
        }
        output.WriteLine();
        output.WriteLine($"| xfile | huge pages got | in 2 MiB pages | in-order insert M/s | point lookup M/s (median / best) | batched lookup M/s (median / best) |");
        output.WriteLine("|---|---|---:|---:|---:|---:|");
        foreach (Variant v in variants)
        {
            XfileMemoryUsage usage = v.Xfile!.MeasureMemory();
            output.WriteLine(string.Create(Invariant,
                $"| {v.Name} | {v.Xfile.HugePageMode} | {usage.HugePageBytes / (double)(1 << 20):N0} of {usage.ResidentBytes / (double)(1 << 20):N0} MiB | {v.InsertRate / 1e6:F2} | {Variant.Median(v.Lookups) / 1e6:F3} / {v.BestLookup / 1e6:F3} | {Variant.Median(v.Batches) / 1e6:F3} / {v.BestBatch / 1e6:F3} |"));
        }
        output.WriteLine($"load average at end: {OrderedMapSuite.LoadAverage()}");
        foreach (Variant v in variants)
        {
            v.Map!.Dispose();
            v.Xfile!.Dispose();
        }
    }
}
