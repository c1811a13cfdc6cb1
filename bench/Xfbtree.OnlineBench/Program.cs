using System.Diagnostics;
using System.Globalization;
using Xfbtree.Cli;
using Xfbtree.Cli.Stress;
using Xfbtree.Xfs.Online;
using Xfbtree.Xfs.Repair;
using Xfbtree.Xfs.Write;
using Xfbtree.Xfs.Write.Engine;

// Online rmap repair, in one run on copies of one image (default: the aged-small fixture restored from the
// repository's tests/fixtures, or $XFBTREE_SHARED/fixtures, or --image IMAGE):
//  1. wall time of an online repair of AG --ag (engine open, no writers) against the offline `rmap repair` of the same
//     AG on a copy whose rmapbt was damaged (its leftmost leaf zeroed; both scan every inode);
//  2. throughput of the model-checked stress workload (2 writer threads, --ops operations) without and with online
//     repairs of every AG in rotation beside it (ops/s ratio);
//  3. the shadow btree's bytes per record and where the final locked phase spends its time (mean over the repairs).
// Usage: dotnet run -c Release --project bench/Xfbtree.OnlineBench -- [--image IMAGE] [--ag N] [--ops N] [--repeat N]
string? sourceImage = null;
uint agno = 1;
long ops = 3000;
int repeat = 3;
for (int i = 0; i < args.Length; i++)
{
    switch (args[i])
    {
        case "--image": sourceImage = args[++i]; break;
        case "--ag": agno = uint.Parse(args[++i], CultureInfo.InvariantCulture); break;
        case "--ops": ops = long.Parse(args[++i], CultureInfo.InvariantCulture); break;
        case "--repeat": repeat = int.Parse(args[++i], CultureInfo.InvariantCulture); break;
        default: Console.Error.WriteLine($"unknown argument {args[i]}"); return 2;
    }
}
string fixtures = Environment.GetEnvironmentVariable("XFBTREE_SHARED") is { Length: > 0 } shared
    ? Path.Combine(shared, "fixtures")
    : FindRepositoryFixtures();
string work = Directory.CreateTempSubdirectory("xfbtree-onlinebench-").FullName;
var inv = CultureInfo.InvariantCulture;
try
{
    string pristine = Path.Combine(work, "pristine.img");
    if (sourceImage is null)
    {
        Run("/bin/sh", "-c", $"zstd -dc '{fixtures}/aged-small.metadump.zst' | xfs_mdrestore - '{pristine}'");
    }
    else
    {
        Run("cp", "--sparse=always", sourceImage, pristine);
    }

    // 1. online vs offline, one AG.
    var online = new List<OnlineRmapRepairResult>();
    var offline = new List<double>();
    for (int r = 0; r < repeat; r++)
    {
        string a = Copy(pristine, $"online{r}.img");
        using (var fs = XfsFileSystem.Open(a, new WriteEngineOptions { SyncCommits = false }))
        {
            online.Add(OnlineRmapRepair.Run(fs.Engine, agno));
            fs.Close();
        }
        string b = Copy(pristine, $"offline{r}.img");
        ZeroLeftmostRmapLeaf(b, agno);
        var clock = Stopwatch.StartNew();
        int rc = RmapRepairRunner.Run(b, new RmapRepairOptions { OnlyAg = agno }, TextWriter.Null, Console.Error);
        offline.Add(clock.Elapsed.TotalMilliseconds);
        if (rc != 0) throw new InvalidOperationException($"offline repair exit {rc}");
        File.Delete(a);
        File.Delete(b);
    }
    double onlineMs = online.Skip(repeat > 1 ? 1 : 0).Average(o => o.Elapsed.TotalMilliseconds);
    double offlineMs = offline.Skip(repeat > 1 ? 1 : 0).Average();
    OnlineRmapRepairResult last = online[^1];
    Console.WriteLine($"image: {sourceImage ?? "aged-small fixture"}; AG {agno}: {last.Records} records, {last.InodesScanned} inodes scanned, new tree {last.NewTreeBlocks} blocks / height {last.NewHeight}");
    Console.WriteLine(string.Create(inv, $"one AG, no writers (mean of {Math.Max(1, repeat - 1)} after a warm-up): online {onlineMs:F0} ms (setup {last.SetupTime.TotalMilliseconds:F0}, scan {last.ScanTime.TotalMilliseconds:F0}, locked {last.TimeLocked.TotalMilliseconds:F0}), offline rmap repair {offlineMs:F0} ms, online/offline {onlineMs / offlineMs:F2}x"));

    // 2. throughput without and with online repairs.
    double without = Stress(Copy(pristine, "stress-plain.img"), null, out _);
    var rotation = new List<OnlineRmapRepairResult>();
    double with = Stress(Copy(pristine, "stress-online.img"), engine => new RecordingRotation(engine, rotation), out long repairs);
    Console.WriteLine(string.Create(inv, $"stress {ops} ops, 2 threads: {without:F0} ops/s without, {with:F0} ops/s with {repairs} online repairs in rotation: ratio {with / without:F2}"));

    // 3. memory and the locked phase.
    var all = online.Concat(rotation).ToList();
    double bytesPerRecord = all.Sum(o => (double)o.ShadowBytes) / Math.Max(1, all.Sum(o => o.ShadowRecords));
    Console.WriteLine(string.Create(inv, $"shadow btree: {bytesPerRecord:F1} bytes per record (page-sized blocks; raw record 24 bytes)"));
    double M(Func<OnlineRmapRepairResult, TimeSpan> f) => rotation.Count == 0 ? 0 : rotation.Average(o => f(o).TotalMilliseconds);
    Console.WriteLine(string.Create(inv, $"locked phase under load (mean of {rotation.Count}): {M(o => o.TimeLocked):F2} ms = validate {M(o => o.LockedValidate):F2} + reserve {M(o => o.LockedReserve):F2} + load {M(o => o.LockedLoad):F2} + switch/reap {M(o => o.LockedSwitchAndReap):F2} + commit {M(o => o.LockedCommit):F2}; max {(rotation.Count == 0 ? 0 : rotation.Max(o => o.TimeLocked.TotalMilliseconds)):F2} ms; whole repair mean {M(o => o.Elapsed):F0} ms"));
    Console.WriteLine(string.Create(inv, $"locked phase, no writers (AG {agno}): {last.TimeLocked.TotalMilliseconds:F2} ms = validate {last.LockedValidate.TotalMilliseconds:F2} + reserve {last.LockedReserve.TotalMilliseconds:F2} + load {last.LockedLoad.TotalMilliseconds:F2} + switch/reap {last.LockedSwitchAndReap.TotalMilliseconds:F2} + commit {last.LockedCommit.TotalMilliseconds:F2}"));
    return 0;
}
finally
{
    Directory.Delete(work, recursive: true);
}

double Stress(string image, Func<WriteEngine, IStressBackground>? background, out long repairs)
{
    using var fs = XfsFileSystem.Open(image, new WriteEngineOptions { SyncCommits = false });
    var target = new XfsStressTarget(fs);
    StressModel model = StressModel.Load(target, 11, new StressModelOptions { MaxFileSize = 256 << 10 });
    IStressBackground? job = background?.Invoke(fs.Engine);
    StressResult result = new StressRunner(target, model, new StressOptions { Ops = ops, Threads = 2, Seed = 11, Background = job }).Run();
    if (result.Problems.Count > 0) throw new InvalidOperationException(string.Join("; ", result.Problems));
    repairs = (job as RecordingRotation)?.Count ?? 0;
    fs.Close();
    return result.OpsPerSecond;
}

string Copy(string from, string name)
{
    string to = Path.Combine(work, name);
    Run("cp", "--sparse=always", from, to);
    return to;
}

// The fixtures folder of the repository this program was built from (walking up from the working directory
// and from the program's own folder).
static string FindRepositoryFixtures()
{
    foreach (string start in new[] { Directory.GetCurrentDirectory(), AppContext.BaseDirectory })
    {
        for (DirectoryInfo? d = new(start); d is not null; d = d.Parent)
        {
            string candidate = Path.Combine(d.FullName, "tests", "fixtures");
            if (File.Exists(Path.Combine(candidate, "aged-small.metadump.zst")))
            {
                return candidate;
            }
        }
    }
    throw new DirectoryNotFoundException("tests/fixtures not found above the working directory; set XFBTREE_SHARED or pass --image");
}

// Damage for the offline repair to rebuild: the leftmost leaf of AG agno's rmapbt becomes zeros.
static void ZeroLeftmostRmapLeaf(string image, uint agno)
{
    long offset;
    int blockSize;
    using (var xfs = Xfbtree.Xfs.XfsImage.Open(image))
    {
        var rmapbt = xfs.OpenRmapbt(xfs.ReadAgf(agno));
        using var cursor = rmapbt.CreateCursor();
        if (!cursor.MoveFirst())
        {
            throw new InvalidOperationException($"AG {agno}: empty rmapbt");
        }
        offset = xfs.Geometry.AgBlockToByte(agno, (uint)cursor.BlockPointerAt(0));
        blockSize = xfs.Geometry.BlockSize;
    }
    using var file = new FileStream(image, FileMode.Open, FileAccess.Write);
    file.Seek(offset, SeekOrigin.Begin);
    file.Write(new byte[blockSize]);
}

static void Run(string file, params string[] arguments)
{
    var psi = new ProcessStartInfo(file) { RedirectStandardError = true, RedirectStandardOutput = true };
    foreach (string a in arguments) psi.ArgumentList.Add(a);
    using var p = Process.Start(psi)!;
    string err = p.StandardError.ReadToEnd();
    p.StandardOutput.ReadToEnd();
    p.WaitForExit();
    if (p.ExitCode != 0) throw new InvalidOperationException($"{file} {string.Join(' ', arguments)}: exit {p.ExitCode}: {err}");
}

/// <summary>Online repairs of every AG in rotation until the workload has claimed its operations, keeping each result.</summary>
sealed class RecordingRotation(WriteEngine engine, List<OnlineRmapRepairResult> results) : IStressBackground
{
    public long Count => results.Count;

    public void Run(Func<bool> workloadDone)
    {
        uint count = engine.Geometry.AgCount;
        for (uint a = 0; results.Count < count || !workloadDone(); a = (a + 1) % count)
        {
            results.Add(OnlineRmapRepair.Run(engine, a));
        }
    }
}
