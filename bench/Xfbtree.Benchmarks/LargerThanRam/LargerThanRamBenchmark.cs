using System.Diagnostics;
using System.Globalization;
using Xfbtree.Benchmarks.OrderedMap;
using Xfbtree.InMemory;
using Xfbtree.Storage;

namespace Xfbtree.Benchmarks.LargerThanRam;

/// <summary>
/// The larger-than-RAM run: a <see cref="ShmemBTree{TRecord, TComparer}"/> of 24-byte rmap-like records on an
/// xfile that spills to an O_TMPFILE on disk (Backend TmpFile, Directory = a disk directory: the tree's pages are page
/// cache of an unlinked file, written back under memory pressure), through the public typed API only.
/// Phases: in-order inserts (appends) of N generated records, random point lookups of existing keys (bounded by count
/// and time), random inserts of new keys between existing ones (bounded likewise), and a full in-order scan that checks
/// every record against the generator. Records are a pure function of their index, so nothing of size N is held in
/// managed memory (one bit per record for the random-insert set).
/// Usage: <c>--larger-than-ram [--records 100000000] [--dir /tmp] [--lookups 1000000] [--random-inserts 1000000]
/// [--phase-seconds 180] [--insert-seconds 0 (no limit)]</c>. Run it in a memory cgroup with bench/larger-than-ram.sh.
/// </summary>
public static class LargerThanRamBenchmark
{
    private static readonly CultureInfo Invariant = CultureInfo.InvariantCulture;

    /// <summary>Runs when <paramref name="args"/> has --larger-than-ram; returns false otherwise.</summary>
    public static bool TryRun(string[] args)
    {
        if (!args.Contains("--larger-than-ram"))
        {
            return false;
        }
        long records = 100_000_000, lookups = 1_000_000, randomInserts = 1_000_000;
        double phaseSeconds = 180, insertSeconds = 0;
        string directory = "/tmp";
        for (int i = 0; i < args.Length - 1; i++)
        {
            switch (args[i])
            {
                case "--records": records = long.Parse(args[i + 1].Replace("_", "", StringComparison.Ordinal), Invariant); break;
                case "--dir": directory = args[i + 1]; break;
                case "--lookups": lookups = long.Parse(args[i + 1], Invariant); break;
                case "--random-inserts": randomInserts = long.Parse(args[i + 1], Invariant); break;
                case "--phase-seconds": phaseSeconds = double.Parse(args[i + 1], Invariant); break;
                case "--insert-seconds": insertSeconds = double.Parse(args[i + 1], Invariant); break;
            }
        }
        if (records < 1 || records > MaxRecords)
        {
            throw new ArgumentOutOfRangeException(nameof(args), records, $"--records must be in [1, {MaxRecords}] (start blocks are 32-bit)");
        }
        Run(records, directory, lookups, randomInserts, phaseSeconds, insertSeconds, Console.Out);
        return true;
    }

    /// <summary>Most records: start blocks 16 + 9 i must stay below 2^32.</summary>
    public const long MaxRecords = 400_000_000;

    /// <summary>splitmix64 finaliser: the per-index randomness of the generator.</summary>
    private static ulong Mix(ulong x)
    {
        x += 0x9E3779B97F4A7C15UL;
        x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9UL;
        x = (x ^ (x >> 27)) * 0x94D049BB133111EBUL;
        return x ^ (x >> 31);
    }

    /// <summary>The i-th record of the in-order data set (start block 16 + 9 i: strictly increasing).</summary>
    public static RmapRecord Original(long i, long count)
    {
        ulong h = Mix((ulong)i);
        return new RmapRecord((uint)(16 + 9 * i), 1 + (uint)(h & 7), 128 + (h >> 8) % (ulong)Math.Max(1, count / 4), (h >> 40) & 0xFFFFFF);
    }

    /// <summary>The record the random-insert phase adds after original j (start block 16 + 9 j + 4: a new key).</summary>
    public static RmapRecord Extra(long j)
    {
        ulong h = Mix((ulong)j ^ 0x5555_5555_5555_5555UL);
        return new RmapRecord((uint)(16 + 9 * j + 4), 1 + (uint)(h & 3), 1_000_000_000UL + (h >> 16), (h >> 40) & 0xFFFFFF);
    }

    private static long Checksum(in RmapRecord r) => r.StartBlock + (long)r.BlockCount * 3 + (long)(r.Owner * 5) + (long)(r.Offset * 7);

    /// <summary>Runs the phases and prints them.</summary>
    public static void Run(long records, string directory, long lookupLimit, long randomInsertLimit, double phaseSeconds, double insertSeconds, TextWriter output)
    {
        var total = Stopwatch.StartNew();
        output.WriteLine($"# larger-than-RAM run, {DateTime.UtcNow:yyyy-MM-dd HH:mm:ss} UTC on {OrderedMapSuite.MachineLine()}");
        output.WriteLine($"# load average at start: {OrderedMapSuite.LoadAverage()}");
        output.WriteLine($"# cgroup: {CgroupMemory.Describe()}");
        var xfileOptions = new XfileOptions { Backend = XfileBackendKind.TmpFile, Directory = directory, Name = "xfbtree-ltr" };
        // The xfile is created here (public API) so the scan can advise sequential access; the map uses all of it.
        using var xfile = Xfile.Create(xfileOptions);
        using var map = new ShmemBTree<RmapRecord, RmapRecordMapComparer>(options: new ShmemBTreeOptions { Xfile = xfile });
        output.WriteLine($"# xfile: {xfile.BackingDescription} (TmpFile, MaxSize 1 TiB sparse, access advice Random = the default); records: {records:N0} x 24 bytes = {records * 24 / (1 << 20):N0} MiB of records");
        output.Flush();

        // Phase 1: in-order inserts (appends), generated on the fly.
        var watch = Stopwatch.StartNew();
        long inserted = 0;
        long progressEvery = Math.Max(1, Math.Min(10_000_000, records / 10));
        var interval = Stopwatch.StartNew();
        long intervalStart = 0;
        bool stoppedEarly = false;
        for (long i = 0; i < records; i++)
        {
            if (!map.Insert(Original(i, records)))
            {
                throw new InvalidOperationException($"in-order insert {i} refused (duplicate key?)");
            }
            inserted++;
            if (inserted % progressEvery == 0 || inserted == records)
            {
                output.WriteLine(string.Create(Invariant,
                    $"  inserted {inserted,13:N0}  {watch.Elapsed.TotalSeconds,8:F1} s  last {(inserted - intervalStart) / interval.Elapsed.TotalSeconds / 1e6,6:F3} M/s  avg {inserted / watch.Elapsed.TotalSeconds / 1e6,6:F3} M/s  height {map.Height}  {CgroupMemory.Short()}  load {OrderedMapSuite.LoadAverage()}"));
                output.Flush();
                interval.Restart();
                intervalStart = inserted;
            }
            if (insertSeconds > 0 && (inserted & 0xFFFF) == 0 && watch.Elapsed.TotalSeconds > insertSeconds)
            {
                stoppedEarly = true;
                break;
            }
        }
        watch.Stop();
        long n = inserted;
        output.WriteLine(string.Create(Invariant,
            $"in-order insert: {n:N0} records in {watch.Elapsed.TotalSeconds:F1} s = {n / watch.Elapsed.TotalSeconds / 1e6:F3} M records/s{(stoppedEarly ? $"  (STOPPED by --insert-seconds {insertSeconds} before {records:N0})" : "")}"));
        output.WriteLine(string.Create(Invariant,
            $"  tree: height {map.Height}, {map.MemoryBytes / (double)n:F1} bytes/record in blocks, xfile allocated {map.XfileBytesUsed / (double)(1 << 20):N0} MiB ({map.XfileBytesUsed / (double)n:F1} bytes/record), block table {map.TableBytes / (double)(1 << 20):F1} MiB"));
        output.Flush();

        // Phase 2: random point lookups of existing keys (regenerated), bounded by count and time.
        var rng = new Random(17);
        watch.Restart();
        long looked = 0, lookupSum = 0;
        while (looked < lookupLimit)
        {
            long i = rng.NextInt64(n);
            RmapRecord key = Original(i, records);
            if (!map.TryFind(key with { BlockCount = 0 }, out RmapRecord found) || found != key)
            {
                throw new InvalidOperationException($"lookup of record {i} failed or returned {found}");
            }
            lookupSum += found.BlockCount;
            looked++;
            if ((looked & 0x3FF) == 0 && watch.Elapsed.TotalSeconds > phaseSeconds)
            {
                break;
            }
        }
        watch.Stop();
        output.WriteLine(string.Create(Invariant,
            $"random point lookup: {looked:N0} of existing keys (all found and equal) in {watch.Elapsed.TotalSeconds:F1} s = {looked / watch.Elapsed.TotalSeconds / 1e3:F1} k lookups/s (bound: {lookupLimit:N0} or {phaseSeconds} s)  {CgroupMemory.Short()}"));
        output.Flush();

        // Phase 3: random inserts of new keys between existing records, bounded by count and time.
        ulong[] extraBits = new ulong[(n + 63) / 64];
        watch.Restart();
        long attempts = 0, extras = 0;
        while (attempts < randomInsertLimit)
        {
            long j = rng.NextInt64(n);
            attempts++;
            bool added = map.Insert(Extra(j));
            bool known = (extraBits[j >> 6] & (1UL << (int)(j & 63))) != 0;
            if (added == known)
            {
                throw new InvalidOperationException($"random insert {j}: added={added}, already inserted={known}");
            }
            if (added)
            {
                extraBits[j >> 6] |= 1UL << (int)(j & 63);
                extras++;
            }
            if ((attempts & 0x3FF) == 0 && watch.Elapsed.TotalSeconds > phaseSeconds)
            {
                break;
            }
        }
        watch.Stop();
        output.WriteLine(string.Create(Invariant,
            $"random insert: {attempts:N0} inserts of new keys ({extras:N0} added, {attempts - extras:N0} repeats refused) in {watch.Elapsed.TotalSeconds:F1} s = {attempts / watch.Elapsed.TotalSeconds / 1e3:F1} k inserts/s (bound: {randomInsertLimit:N0} or {phaseSeconds} s)  {CgroupMemory.Short()}"));
        output.Flush();

        // Phase 4: full in-order scan, every record checked against the generator.
        long expectedChecksum = 0;
        for (long i = 0; i < n; i++)
        {
            expectedChecksum += Checksum(Original(i, records));
        }
        for (long j = 0; j < n; j++)
        {
            if ((extraBits[j >> 6] & (1UL << (int)(j & 63))) != 0)
            {
                expectedChecksum += Checksum(Extra(j));
            }
        }
        // The scan runs twice, under two access advices: Normal (the kernel's read-around, read_ahead_kb around each
        // miss) and Sequential (read ahead of the faults). Leaves appended in key order are in file order; those split
        // off by the random inserts are at the end of the file.
        foreach (XfileAccessPattern advice in new[] { XfileAccessPattern.Normal, XfileAccessPattern.Sequential })
        {
            xfile.AdviseAccess(advice);
            Scan(map, n, records, extras, extraBits, expectedChecksum, advice, output);
        }
        xfile.AdviseAccess(XfileAccessPattern.Random);
        output.WriteLine(string.Create(Invariant,
            $"final: {map.Count:N0} records, height {map.Height}, {map.MemoryBytes / (double)map.Count:F1} bytes/record in blocks, xfile allocated {map.XfileBytesUsed / (double)(1 << 20):N0} MiB, managed heap {GC.GetTotalMemory(false) / (double)(1 << 20):F1} MiB, process RSS {Environment.WorkingSet / (double)(1 << 20):N0} MiB"));
        output.WriteLine($"elapsed {total.Elapsed.TotalSeconds:F1} s; load average at end: {OrderedMapSuite.LoadAverage()}");
        output.WriteLine("cgroup memory (as the process sees it):");
        output.WriteLine(CgroupMemory.Report());
        output.Flush();
    }

    private static void Scan(ShmemBTree<RmapRecord, RmapRecordMapComparer> map, long n, long records, long extras, ulong[] extraBits, long expectedChecksum, XfileAccessPattern advice, TextWriter output)
    {
        var watch = Stopwatch.StartNew();
        long scanned = 0, checksum = 0, nextOriginal = 0, extrasSeen = 0;
        foreach (ref readonly RmapRecord r in map)
        {
            long offset = r.StartBlock - 16L;
            long index = offset / 9;
            if (offset % 9 == 0)
            {
                if (index != nextOriginal || r != Original(index, records))
                {
                    throw new InvalidOperationException($"scan: record {scanned} is {r}, expected original {nextOriginal}");
                }
                nextOriginal++;
            }
            else if (offset % 9 == 4 && index < n && (extraBits[index >> 6] & (1UL << (int)(index & 63))) != 0 && r == Extra(index) && index + 1 == nextOriginal)
            {
                extrasSeen++;
            }
            else
            {
                throw new InvalidOperationException($"scan: unexpected record {r} at position {scanned}");
            }
            checksum += Checksum(r);
            scanned++;
        }
        watch.Stop();
        if (nextOriginal != n || extrasSeen != extras || checksum != expectedChecksum || scanned != map.Count)
        {
            throw new InvalidOperationException($"scan: {nextOriginal}/{n} originals, {extrasSeen}/{extras} extras, checksum {checksum} vs {expectedChecksum}, {scanned} vs Count {map.Count}");
        }
        output.WriteLine(string.Create(Invariant,
            $"full scan (access advice {advice}): {scanned:N0} records in {watch.Elapsed.TotalSeconds:F1} s = {scanned / watch.Elapsed.TotalSeconds / 1e6:F2} M records/s; order, every record and checksum {checksum} verified against the generator  {CgroupMemory.Short()}"));
        output.Flush();
    }
}

/// <summary>The memory cgroup this process is in (v1 memory controller or v2 unified), read from /proc/self/cgroup.</summary>
internal static class CgroupMemory
{
    private static string? Directory()
    {
        try
        {
            foreach (string line in File.ReadAllLines("/proc/self/cgroup"))
            {
                string[] parts = line.Split(':', 3);
                if (parts.Length == 3 && parts[1].Split(',').Contains("memory"))
                {
                    return "/sys/fs/cgroup/memory" + parts[2];
                }
            }
            foreach (string line in File.ReadAllLines("/proc/self/cgroup"))
            {
                if (line.StartsWith("0::", StringComparison.Ordinal))
                {
                    string v2 = (System.IO.Directory.Exists("/sys/fs/cgroup/unified") ? "/sys/fs/cgroup/unified" : "/sys/fs/cgroup") + line[3..];
                    return System.IO.Directory.Exists(v2) ? v2 : null;
                }
            }
        }
        catch (IOException)
        {
        }
        return null;
    }

    private static string? Read(string file)
    {
        string? dir = Directory();
        try
        {
            return dir is null || !File.Exists(Path.Combine(dir, file)) ? null : File.ReadAllText(Path.Combine(dir, file)).Trim();
        }
        catch (IOException)
        {
            return null;
        }
    }

    private static string Mib(string? bytes) =>
        long.TryParse(bytes, out long b) ? (b >= long.MaxValue / 2 ? "unlimited" : $"{b / (double)(1 << 20):N0} MiB") : bytes ?? "?";

    public static string Describe() =>
        $"{Directory() ?? "none"}, limit {Mib(Read("memory.limit_in_bytes") ?? Read("memory.max"))}";

    public static string Short() =>
        $"cgroup usage {Mib(Read("memory.usage_in_bytes") ?? Read("memory.current"))}";

    public static string Report()
    {
        var lines = new List<string>
        {
            $"  limit {Mib(Read("memory.limit_in_bytes") ?? Read("memory.max"))}, usage {Mib(Read("memory.usage_in_bytes") ?? Read("memory.current"))}, max usage {Mib(Read("memory.max_usage_in_bytes") ?? Read("memory.peak"))}, failcnt {Read("memory.failcnt") ?? "-"}",
        };
        string? stat = Read("memory.stat");
        if (stat is not null)
        {
            string[] keys = ["rss", "rss_huge", "cache", "mapped_file", "dirty", "writeback", "shmem", "anon", "file", "file_mapped", "file_dirty", "file_writeback", "pgmajfault", "total_rss", "total_cache", "total_mapped_file", "total_dirty", "total_writeback"];
            foreach (string line in stat.Split('\n'))
            {
                string[] kv = line.Split(' ');
                if (kv.Length == 2 && keys.Contains(kv[0]))
                {
                    lines.Add(kv[0] == "pgmajfault" ? $"  {kv[0]} {kv[1]}" : $"  {kv[0]} {Mib(kv[1])}");
                }
            }
        }
        return string.Join(Environment.NewLine, lines);
    }
}
