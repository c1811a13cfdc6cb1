using System.Diagnostics;
using Xfbtree.Storage;
using Xfbtree.Xfs.Format;

namespace Xfbtree.Xfs.Scan;

/// <summary>Options of <see cref="RmapScanner.Scan"/>.</summary>
public sealed record RmapScanOptions
{
    /// <summary>Only this AG's records are kept (every AG's inodes are still scanned: forks map blocks anywhere).</summary>
    public uint? OnlyAg { get; init; }
    /// <summary>
    /// Include the OWN_AG records of the on-disk rmapbt's blocks and of the AGFL (what a check compares against).
    /// A rebuild sets this to false and adds OWN_AG for the blocks it chooses (bnobt/cntbt blocks are always in).
    /// </summary>
    public bool IncludeOwnAg { get; init; } = true;
    /// <summary>Worker threads (AGs scanned in parallel). Default: min(2, processors).</summary>
    public int Parallelism { get; init; } = Math.Clamp(Environment.ProcessorCount, 1, 2);
    /// <summary>Problems kept per AG (all are counted).</summary>
    public int ProblemLimitPerAg { get; init; } = 200;
    /// <summary>Called with a short phase description (from worker threads).</summary>
    public Action<string>? Progress { get; init; }
    /// <summary>
    /// The inode chunks of one AG given instead of read from its inobt (a chunk discovery's result, on a filesystem
    /// without an rmapbt whose inobt cannot be walked): that AG's chunks and inodes are these, and its inobt's blocks
    /// are not claimed (its finobt's still are).
    /// </summary>
    internal InodeChunksOfAg? ChunksGiven { get; init; }
}

/// <summary>The inode chunks of AG <paramref name="AgNumber"/> (inobt records, free masks from the cores), in
/// startino order.</summary>
internal sealed record InodeChunksOfAg(uint AgNumber, IReadOnlyList<InobtRecord> Chunks);

/// <summary>
/// Result of a scan: one <see cref="AgScanResult"/> per AG, all expected sets living in partitions of one xfile.
/// Dispose it to return the memory.
/// </summary>
public sealed class RmapScanResult : IDisposable
{
    internal RmapScanResult(Xfile xfile, AgScanResult[] ags, TimeSpan elapsed, long records, long inodes)
    {
        Xfile = xfile;
        Ags = ags;
        Elapsed = elapsed;
        RecordsEmitted = records;
        InodesScanned = inodes;
    }

    /// <summary>Backing memory of every AG's expected tree.</summary>
    public Xfile Xfile { get; }
    /// <summary>Per AG, indexed by AG number.</summary>
    public IReadOnlyList<AgScanResult> Ags { get; }
    /// <summary>Wall time of the scan.</summary>
    public TimeSpan Elapsed { get; }
    /// <summary>Merged records produced (before duplicate rejection).</summary>
    public long RecordsEmitted { get; }
    /// <summary>In-use inodes scanned, over every AG.</summary>
    public long InodesScanned { get; }

    /// <summary>Returns the memory of every AG's expected set and the xfile that holds them.</summary>
    public void Dispose()
    {
        foreach (var ag in Ags) ag.Dispose();
        Xfile.Dispose();
    }
}

/// <summary>
/// Computes every expected reverse mapping of an image (docs/xfs-format.md §7; the collection steps of online
/// repair, docs/online-repair.md, without live updates): per AG the header, log, free-space, inode and refcount metadata, then
/// every in-use inode found through the inobt and its data and attr forks (extents and bmbt blocks), merged at the
/// source exactly as XFS merges, streamed into one in-memory rmapbt per AG (partitions of one xfile). AGs are
/// scanned in parallel; records for any AG go through per-worker batches into that AG's set.
/// </summary>
public static class RmapScanner
{
    /// <summary>Scans the image. Damage is reported per AG; only bad arguments and I/O failures throw.</summary>
    public static RmapScanResult Scan(XfsImage image, RmapScanOptions? options = null, CancellationToken cancel = default)
    {
        ArgumentNullException.ThrowIfNull(image);
        options ??= new RmapScanOptions();
        var geo = image.Geometry;
        uint agCount = geo.AgCount;
        if (options.OnlyAg is { } only && only >= agCount)
            throw new ArgumentOutOfRangeException(nameof(options), only, $"AG {only} does not exist (the filesystem has {agCount})");
        var sw = Stopwatch.StartNew();

        // One xfile, one partition per selected AG.
        int selected = options.OnlyAg is null ? (int)agCount : 1;
        long page = Environment.SystemPageSize;
        long maxSize = Xfile.MaxSupportedSize / 2;
        long part = Math.Min(64L << 30, maxSize / (2L * selected)) / page * page;
        var xfile = Xfile.Create(new XfileOptions { MaxSize = part * 2 * selected, Name = "xfbtree-rmap-scan" });
        var problems = new ProblemList[agCount];
        var sets = new AgRmapSet?[agCount];
        var results = new AgScanResult[agCount];
        try
        {
            long next = 0;
            for (uint a = 0; a < agCount; a++)
            {
                problems[a] = new ProblemList(options.ProblemLimitPerAg);
                if (options.OnlyAg is null || options.OnlyAg == a)
                {
                    sets[a] = new AgRmapSet(a, geo.AgLength(a), xfile, next, part, next + part, part);
                    next += 2 * part;
                }
                results[a] = new AgScanResult(a, sets[a], problems[a]);
            }

            int workers = Math.Clamp(options.Parallelism, 1, (int)Math.Min(agCount, 64));
            int nextAg = -1;
            long emitted = 0;
            var errors = new Exception?[workers];
            void Work(int w)
            {
                try
                {
                    var batcher = new RmapBatcher(sets);
                    var scanner = new AgScanner(image, options, batcher, problems);
                    while (true)
                    {
                        int a = Interlocked.Increment(ref nextAg);
                        if (a >= agCount) break;
                        cancel.ThrowIfCancellationRequested();
                        options.Progress?.Invoke($"scanning AG {a}/{agCount}");
                        scanner.ScanAg(results[a], sets[a] != null, cancel);
                    }
                    batcher.FlushAll();
                    Interlocked.Add(ref emitted, batcher.Emitted);
                }
                catch (Exception e) { errors[w] = e; }
            }
            if (workers == 1) Work(0);
            else
            {
                var threads = new Thread[workers - 1];
                for (int w = 1; w < workers; w++)
                {
                    int id = w;
                    threads[w - 1] = new Thread(() => Work(id), 4 << 20) { IsBackground = true, Name = $"rmap-scan-{id}" };
                    threads[w - 1].Start();
                }
                Work(0);
                foreach (var t in threads) t.Join();
            }
            foreach (var e in errors)
                if (e != null) System.Runtime.ExceptionServices.ExceptionDispatchInfo.Capture(e).Throw();

            // Merge each AG's staged runs into its tree (AGs in parallel).
            options.Progress?.Invoke("building the expected rmap btrees");
            Parallel.For(0, (int)agCount, new ParallelOptions { MaxDegreeOfParallelism = workers }, a =>
            {
                var set = sets[a];
                var plist = problems[a];
                set?.Seal(r => plist.Add((uint)a, "rmap", $"block {r.StartBlock} (+{r.BlockCount}) mapped twice by {AgRmapSet.OwnerText(r.Owner)} at offset {r.Offset}"));
            });
            long inodes = 0;
            foreach (var r in results) inodes += r.InodesScanned;
            return new RmapScanResult(xfile, results, sw.Elapsed, emitted, inodes);
        }
        catch
        {
            foreach (var s in sets) s?.Dispose();
            xfile.Dispose();
            throw;
        }
    }
}
