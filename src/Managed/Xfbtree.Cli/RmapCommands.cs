using System.Buffers;
using System.Globalization;
using System.Text;
using System.Text.Json;
using Xfbtree.Buffers;
using Xfbtree.Xfs;
using Xfbtree.Xfs.Check;
using Xfbtree.Xfs.Format;
using Xfbtree.Xfs.Repair;
using Xfbtree.Xfs.Scan;
using Xfbtree.Xfs.Trees;

namespace Xfbtree.Cli;

/// <summary>
/// The <c>xfbtree rmap</c> commands in library-callable form (tests and the fuzz harness run them in process):
/// <c>dump IMAGE [--source expected|ondisk] [--ag N] [--force]</c>, <c>check IMAGE [--ag N] [--json] [--force]</c> and
/// <c>repair IMAGE [--ag N] [-n]</c> (see <see cref="RmapRepairRunner"/>).
/// Exit codes: 0 clean, 1 damage found, 2 could not check (bad input, usage). Every failure is one line on stderr,
/// never a stack trace.
/// </summary>
internal static class RmapCommands
{
    public const int ExitClean = CommandLineHost.ExitClean, ExitDamaged = CommandLineHost.ExitDamaged, ExitUnusable = CommandLineHost.ExitUnusable;

    /// <summary>The fixtures' truth.tsv header line.</summary>
    public const string TsvHeader = "#agno\tstartblock\tblockcount\towner\towner_u64\towner_name\toffset\tattrfork\tbmbt\tunwritten";

    /// <summary>Runs <c>xfbtree rmap ARGS</c> (ARGS without the leading "rmap") through the tool's own parser.</summary>
    /// <param name="args">e.g. ["check", "img", "--json"].</param>
    /// <param name="stdout">Report / TSV output.</param>
    /// <param name="stderr">One-line errors and (when <paramref name="progress"/>) progress.</param>
    /// <param name="progress">Show per-AG progress on <paramref name="stderr"/> (the tool passes "stderr is a terminal").</param>
    public static int Run(string[] args, TextWriter stdout, TextWriter stderr, bool progress = false)
        => Run(args, new CommandEnvironment(stdout ?? throw new ArgumentNullException(nameof(stdout)),
                                            stderr ?? throw new ArgumentNullException(nameof(stderr)), progress));

    /// <summary>Runs <c>xfbtree rmap ARGS</c> in <paramref name="environment"/> (the fuzz harness and the crash tests
    /// set its test options).</summary>
    public static int Run(string[] args, CommandEnvironment environment)
    {
        ArgumentNullException.ThrowIfNull(args);
        ArgumentNullException.ThrowIfNull(environment);
        var root = CommandLineHost.CreateRoot();
        root.Add(RmapCommand.Create(environment));
        return CommandLineHost.Invoke(root, ["rmap", .. args], environment);
    }

    /// <summary>Runs one parsed rmap command.</summary>
    internal static int Execute(RmapRequest a, CommandEnvironment environment)
    {
        var (stdout, stderr, progress) = (environment.Stdout, environment.Stderr, environment.Progress);
        Action<string>? report = progress ? new ProgressLine(stderr).Show : null;
        string command = "rmap " + a.Command;
        // One line on stderr always; with --json also the error object on stdout (a report consumer reads only stdout).
        int Fail(string message, int rc)
        {
            if (progress) stderr.Write("\r\x1b[K");
            CommandLineHost.Error(stderr, message);
            if (a.Json) CommandLineHost.WriteJsonError(stdout, command, a.Image, message, rc);
            return rc;
        }
        try
        {
            // Before anything else: an image being written, or one whose writer left a journal to replay.
            if (a.Command != "repair" && ImageStateNotices.InUse(a.Image) is { } holder)
            {
                return Fail(ImageStateNotices.InUseRefusal(a.Image, holder), ExitUnusable);
            }
            if (ImageStateNotices.Pending(a.Image) is { } pending && ImageStateNotices.InUse(a.Image) is null)
            {
                return Fail(ImageStateNotices.PendingRefusal(a.Image, pending), ExitUnusable);
            }
            if (a.Command == "repair")
            {
                int repairRc = a.Json ? RepairJson(a, report, environment)
                                      : RmapRepairRunner.Run(a.Image, new RmapRepairOptions { OnlyAg = a.Ag, DryRun = a.DryRun, Progress = report, ConfigureWritableTarget = environment.ConfigureWritableTarget }, stdout, stderr);
                if (progress) stderr.Write("\r\x1b[K");
                return repairRc;
            }
            using var image = XfsImage.Open(a.Image);
            if (a.Ag is { } ag && ag >= image.Geometry.AgCount)
            {
                return Fail($"AG {ag} does not exist (the filesystem has {CommandLineHost.Count(image.Geometry.AgCount, "AG")})", ExitUnusable);
            }
            if (!a.Force)
            {
                var log = image.InspectLog();
                if (log.State == LogState.Dirty)
                {
                    return Fail($"{a.Image}: the log is dirty ({log.Detail}): mount and unmount the filesystem to replay it, or use --force", ExitUnusable);
                }
                if (log.State == LogState.Unknown)
                {
                    return Fail($"{a.Image}: cannot tell whether the log is clean ({log.Detail}); use --force to go on", ExitUnusable);
                }
            }
            int rc = a.Command switch
            {
                "dump" => a.Source == "ondisk" ? DumpOnDisk(image, a.Ag, stdout, stderr) : DumpExpected(image, a.Ag, stdout, stderr, report),
                _ => CheckCommand(image, a, stdout, stderr, report),
            };
            if (progress) stderr.Write("\r\x1b[K");
            return rc;
        }
        catch (XfsFormatException e) { return Fail(e.Message, ExitUnusable); }
        catch (BufferIOException e) { return Fail(e.Message, ExitUnusable); }
        catch (IOException e) { return Fail("I/O error: " + e.Message, ExitUnusable); }
        catch (UnauthorizedAccessException e) { return Fail(e.Message, ExitUnusable); }
        catch (CorruptionException e) { return Fail(e.Message, ExitDamaged); }
        catch (OutOfMemoryException) when (!environment.RethrowInternalErrors) { return Fail("out of memory", ExitUnusable); }
        // Last line of defence: one line, never a stack trace.
        catch (Exception e) when (!environment.RethrowInternalErrors) { return Fail($"internal error: {e.GetType().Name}: {e.Message}", ExitUnusable); }
    }

    /// <summary>
    /// <c>rmap repair --json</c>: the repair's report lines, in order, in one JSON document with its outcome. The
    /// report is read by people first; the document keeps every line and adds what a program needs (exit code,
    /// result, dry run).
    /// </summary>
    static int RepairJson(RmapRequest a, Action<string>? progress, CommandEnvironment environment)
    {
        var (stdout, stderr) = (environment.Stdout, environment.Stderr);
        var lines = new StringWriter { NewLine = "\n" };
        int rc = RmapRepairRunner.Run(a.Image, new RmapRepairOptions { OnlyAg = a.Ag, DryRun = a.DryRun, Progress = progress, ConfigureWritableTarget = environment.ConfigureWritableTarget }, lines, stderr);
        CommandLineHost.WriteJson(stdout, "rmap repair", j =>
        {
            j.WriteString("image", a.Image);
            if (a.Ag is { } ag) j.WriteNumber("ag", ag);
            j.WriteBoolean("dryRun", a.DryRun);
            j.WriteString("result", rc == ExitClean ? "consistent" : a.DryRun ? "damaged, nothing written" : "damage left");
            j.WriteNumber("exitCode", rc);
            j.WriteStartArray("report");
            foreach (string line in lines.ToString().Split('\n', StringSplitOptions.RemoveEmptyEntries)) j.WriteStringValue(line);
            j.WriteEndArray();
        });
        return rc;
    }

    sealed class ProgressLine(TextWriter stderr)
    {
        readonly Lock _lock = new();
        public void Show(string what)
        {
            lock (_lock) { stderr.Write("\r\x1b[Kxfbtree: " + what); stderr.Flush(); }
        }
    }

    // ------------------------------------------------------------------ dump

    static int DumpExpected(XfsImage image, uint? onlyAg, TextWriter stdout, TextWriter stderr, Action<string>? progress)
    {
        using var scan = RmapScanner.Scan(image, new RmapScanOptions { OnlyAg = onlyAg, Progress = progress });
        var w = new TsvWriter(stdout);
        w.Header();
        bool damaged = false;
        foreach (var ag in scan.Ags)
        {
            if (ag.Expected == null) continue;
            foreach (var p in ag.Problems.Items) stderr.WriteLine($"xfbtree: {p}");
            if (ag.Problems.Total > ag.Problems.Items.Count) stderr.WriteLine($"xfbtree: AG {ag.AgNumber}: {N(ag.Problems.Total - ag.Problems.Items.Count, "more problem")}");
            damaged |= ag.Problems.Total > 0;
            using var cur = ag.Expected.CreateCursor();
            if (!cur.MoveFirst()) continue;
            do w.Line(ag.AgNumber, RmapRecord.Read(cur.Current));
            while (cur.Increment());
        }
        w.Flush();
        return damaged ? ExitDamaged : ExitClean;
    }

    struct PrintSink(TsvWriter writer, uint agno) : IRmapRecordSink
    {
        public readonly void Record(in RmapRecord record) => writer.Line(agno, record);
    }

    static int DumpOnDisk(XfsImage image, uint? onlyAg, TextWriter stdout, TextWriter stderr)
    {
        var w = new TsvWriter(stdout);
        w.Header();
        bool damaged = false;
        for (uint a = 0; a < image.Geometry.AgCount; a++)
        {
            if (onlyAg is { } only && only != a) continue;
            Agf agf;
            try { agf = image.ReadAgf(a); }
            catch (CorruptionException e) { stderr.WriteLine($"xfbtree: AG {a}: AGF: {e.Message}"); damaged = true; continue; }
            if (!agf.TreeRootUsable(AgfTree.Rmapbt, image.Geometry))
            {
                stderr.WriteLine($"xfbtree: AG {a}: AGF rmapbt root {agf.RmapRoot} / level {agf.RmapLevel} unusable");
                damaged = true;
                continue;
            }
            var sink = new PrintSink(w, a);
            var problems = RmapbtWalker.Walk(image.OpenRmapbt(agf), ref sink, out _);
            foreach (var p in problems) stderr.WriteLine($"xfbtree: AG {a}: rmapbt: {p}");
            damaged |= problems.Count > 0;
        }
        w.Flush();
        return damaged ? ExitDamaged : ExitClean;
    }

    /// <summary>Writes records in the truth.tsv format without per-line allocation.</summary>
    sealed class TsvWriter(TextWriter output)
    {
        readonly char[] _buf = new char[1 << 16];
        int _n;

        public void Header()
        {
            output.Write(TsvHeader);
            output.Write('\n');
        }

        public void Line(uint agno, in RmapRecord r)
        {
            if (_n > _buf.Length - 256) Flush();
            var s = _buf.AsSpan(_n);
            int p = 0;
            Num(s, ref p, agno); s[p++] = '\t';
            Num(s, ref p, r.StartBlock); s[p++] = '\t';
            Num(s, ref p, r.BlockCount); s[p++] = '\t';
            long signed = (long)r.Owner;
            if (signed < 0) { s[p++] = '-'; Num(s, ref p, (ulong)-signed); } else Num(s, ref p, r.Owner);
            s[p++] = '\t';
            Num(s, ref p, r.Owner); s[p++] = '\t';
            string name = RmapOwner.Name(r.Owner);
            name.AsSpan().CopyTo(s[p..]); p += name.Length; s[p++] = '\t';
            Num(s, ref p, r.Offset); s[p++] = '\t';
            s[p++] = r.IsAttrFork ? '1' : '0'; s[p++] = '\t';
            s[p++] = r.IsBmbtBlock ? '1' : '0'; s[p++] = '\t';
            s[p++] = r.IsUnwritten ? '1' : '0';
            s[p++] = '\n';
            _n += p;
        }

        static void Num(Span<char> s, ref int p, ulong v)
        {
            v.TryFormat(s[p..], out int w, default, CultureInfo.InvariantCulture);
            p += w;
        }

        public void Flush()
        {
            output.Write(_buf, 0, _n);
            _n = 0;
            output.Flush();
        }
    }

    // ------------------------------------------------------------------ check

    static int CheckCommand(XfsImage image, RmapRequest a, TextWriter stdout, TextWriter stderr, Action<string>? progress)
    {
        var sb = image.Superblock;
        using var scan = RmapScanner.Scan(image, new RmapScanOptions { OnlyAg = a.Ag, Progress = progress });
        var report = RmapChecker.Check(image, scan, new RmapCheckOptions { Progress = progress });
        if (Environment.GetEnvironmentVariable("XFBTREE_TIMING") == "1") WriteTiming(stderr, scan, report, image);
        if (progress != null) stderr.Write("\r\x1b[K");
        bool needsRepair = sb.NeedsRepair;
        bool clean = report.IsClean && !needsRepair;
        if (a.Json) WriteJson(image, report, scan, needsRepair, clean, stdout);
        else WriteText(image, report, scan, needsRepair, clean, stdout);
        stdout.Flush();
        return clean ? ExitClean : ExitDamaged;
    }

    /// <summary>Diagnostics for the benchmark (XFBTREE_TIMING=1): phase times and where the memory went.</summary>
    static void WriteTiming(TextWriter stderr, RmapScanResult scan, RmapCheckReport report, XfsImage image)
    {
        string mem = "";
        try
        {
            foreach (string line in File.ReadAllLines("/proc/self/status"))
                if (line.StartsWith("VmHWM", StringComparison.Ordinal) || line.StartsWith("Rss", StringComparison.Ordinal))
                    mem += " " + string.Join(' ', line.Split((char[])[' ', '\t'], StringSplitOptions.RemoveEmptyEntries)[..2]);
        }
        catch (IOException) { }
        var gc = GC.GetGCMemoryInfo();
        var cache = image.Cache.Statistics;
        stderr.WriteLine($"xfbtree: timing: scan {scan.Elapsed.TotalMilliseconds:F0} ms ({scan.RecordsEmitted} records, {scan.InodesScanned} inodes), " +
                         $"check {report.Elapsed.TotalMilliseconds:F0} ms, process {(DateTime.Now - System.Diagnostics.Process.GetCurrentProcess().StartTime).TotalMilliseconds:F0} ms; " +
                         $"memory:{mem}; xfile {scan.Xfile.BytesUsed >> 10} kB, trees {scan.Ags.Sum(x => x.Expected?.BytesInUse ?? 0) >> 10} kB; " +
                         $"allocated {GC.GetTotalAllocatedBytes() >> 10} kB, gc heap {gc.HeapSizeBytes >> 10} kB (peak committed {gc.TotalCommittedBytes >> 10} kB), {GC.CollectionCount(0)}/{GC.CollectionCount(1)}/{GC.CollectionCount(2)} GCs; " +
                         $"cache {cache.CachedBytes >> 10} kB, {cache.Reads} reads, {cache.Hits} hits");
    }

    static string N(long count, string singular) => CommandLineHost.Count(count, singular);

    static string Rec(in RmapRecord r)
    {
        string owner = RmapOwner.IsSpecial(r.Owner) ? RmapOwner.Name(r.Owner) : $"inode {r.Owner}";
        var sb = new StringBuilder();
        sb.Append(CultureInfo.InvariantCulture, $"{r.StartBlock} len {r.BlockCount} owner {owner}");
        if (!RmapOwner.IsSpecial(r.Owner) && !r.IsBmbtBlock) sb.Append(CultureInfo.InvariantCulture, $" offset {r.Offset}");
        if (r.IsAttrFork) sb.Append(" attr");
        if (r.IsBmbtBlock) sb.Append(" bmbt");
        if (r.IsUnwritten) sb.Append(" unwritten");
        return sb.ToString();
    }

    static void WriteText(XfsImage image, RmapCheckReport report, RmapScanResult scan, bool needsRepair, bool clean, TextWriter o)
    {
        long exp = report.Ags.Sum(x => x.ExpectedRecords), disk = report.Ags.Sum(x => x.OnDiskRecords);
        o.WriteLine($"xfbtree rmap check {image.Path}: {report.Ags.Count} of {N(image.Geometry.AgCount, "AG")}, {N(exp, "expected record")}, {N(disk, "on-disk record")}, {N(scan.InodesScanned, "inode")}");
        if (needsRepair) o.WriteLine("superblock: NEEDSREPAIR is set (an earlier repair did not finish)");
        int bad = 0;
        foreach (var ag in report.Ags)
        {
            if (ag.IsClean)
            {
                o.WriteLine($"AG {ag.AgNumber}: clean ({N(ag.OnDiskRecords, "record")} in {N(ag.OnDiskBlocks, "block")})");
                continue;
            }
            bad++;
            o.WriteLine($"AG {ag.AgNumber}: DAMAGED: {ag.Missing} missing, {ag.Extra} extra, {N(ag.Different, "different record")}, " +
                        $"{N(ag.StructureTotal, "structural problem")}, {N(ag.ScanProblemTotal, "metadata problem")} " +
                        $"(expected {ag.ExpectedRecords}, on disk {ag.OnDiskRecords})");
            foreach (var s in ag.Structure) o.WriteLine($"  structure: {s}");
            if (ag.StructureTotal > ag.Structure.Count) o.WriteLine($"  structure: ... {ag.StructureTotal - ag.Structure.Count} more");
            foreach (var p in ag.ScanProblems) o.WriteLine($"  metadata:  {p.Where}: {p.What}");
            if (ag.ScanProblemTotal > ag.ScanProblems.Count) o.WriteLine($"  metadata:  ... {ag.ScanProblemTotal - ag.ScanProblems.Count} more");
            foreach (var d in ag.Samples)
            {
                switch (d.Kind)
                {
                    case RmapDifferenceKind.Missing: o.WriteLine($"  missing:   AG {ag.AgNumber} {Rec(d.Expected)}"); break;
                    case RmapDifferenceKind.Extra: o.WriteLine($"  extra:     AG {ag.AgNumber} {Rec(d.OnDisk)}"); break;
                    default: o.WriteLine($"  different: AG {ag.AgNumber} expected {Rec(d.Expected)}; on disk {Rec(d.OnDisk)}"); break;
                }
            }
            long shown = ag.Samples.Count, total = ag.Missing + ag.Extra + ag.Different;
            if (total > shown) o.WriteLine($"  ... {N(total - shown, "more record difference")}");
        }
        o.WriteLine(clean ? "result: clean" : $"result: DAMAGED ({bad} of {N(report.Ags.Count, "AG")}{(needsRepair ? ", NEEDSREPAIR set" : "")})");
    }

    static void WriteJson(XfsImage image, RmapCheckReport report, RmapScanResult scan, bool needsRepair, bool clean, TextWriter o) =>
        CommandLineHost.WriteJson(o, "rmap check", j =>
        {
            j.WriteString("image", image.Path);
            j.WriteNumber("exitCode", clean ? ExitClean : ExitDamaged);
            j.WriteBoolean("clean", clean);
            j.WriteBoolean("needsRepair", needsRepair);
            j.WriteNumber("agCount", image.Geometry.AgCount);
            j.WriteNumber("inodesScanned", scan.InodesScanned);
            j.WriteNumber("expectedRecords", report.Ags.Sum(x => x.ExpectedRecords));
            j.WriteNumber("onDiskRecords", report.Ags.Sum(x => x.OnDiskRecords));
            j.WriteStartArray("ags");
            foreach (var ag in report.Ags)
            {
                j.WriteStartObject();
                j.WriteNumber("ag", ag.AgNumber);
                j.WriteBoolean("clean", ag.IsClean);
                j.WriteNumber("expectedRecords", ag.ExpectedRecords);
                j.WriteNumber("onDiskRecords", ag.OnDiskRecords);
                j.WriteNumber("onDiskBlocks", ag.OnDiskBlocks);
                j.WriteNumber("missing", ag.Missing);
                j.WriteNumber("extra", ag.Extra);
                j.WriteNumber("different", ag.Different);
                j.WriteNumber("structureProblems", ag.StructureTotal);
                j.WriteStartArray("structure");
                foreach (var s in ag.Structure) j.WriteStringValue(s);
                j.WriteEndArray();
                j.WriteNumber("metadataProblems", ag.ScanProblemTotal);
                j.WriteStartArray("metadata");
                foreach (var p in ag.ScanProblems) { j.WriteStartObject(); j.WriteString("where", p.Where); j.WriteString("what", p.What); j.WriteEndObject(); }
                j.WriteEndArray();
                j.WriteStartArray("differences");
                foreach (var d in ag.Samples)
                {
                    j.WriteStartObject();
                    j.WriteString("kind", d.Kind.ToString().ToLowerInvariant());
                    if (d.Kind != RmapDifferenceKind.Extra) WriteRecord(j, "expected", d.Expected);
                    if (d.Kind != RmapDifferenceKind.Missing) WriteRecord(j, "ondisk", d.OnDisk);
                    j.WriteEndObject();
                }
                j.WriteEndArray();
                j.WriteEndObject();
            }
            j.WriteEndArray();
        });

    static void WriteRecord(Utf8JsonWriter j, string name, in RmapRecord r)
    {
        j.WriteStartObject(name);
        j.WriteNumber("startblock", r.StartBlock);
        j.WriteNumber("blockcount", r.BlockCount);
        j.WriteNumber("owner", (long)r.Owner);
        j.WriteString("ownerName", RmapOwner.Name(r.Owner));
        j.WriteNumber("offset", r.Offset);
        j.WriteBoolean("attrfork", r.IsAttrFork);
        j.WriteBoolean("bmbt", r.IsBmbtBlock);
        j.WriteBoolean("unwritten", r.IsUnwritten);
        j.WriteEndObject();
    }
}
