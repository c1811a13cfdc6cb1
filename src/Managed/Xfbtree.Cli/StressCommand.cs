using System.CommandLine;
using System.Globalization;
using Xfbtree.Xfs.Write;
using Xfbtree.Xfs.Write.Engine;
using Xfbtree.Cli.Stress;

namespace Xfbtree.Cli;

/// <summary>
/// <c>xfbtree stress IMAGE --ops N --threads T --seed S [--manifest FILE]</c>: a random workload over every write
/// operation on the image's existing files and new ones, checked against a model of every file's bytes
/// (<see cref="StressRunner"/>); at the end the engine is closed, the image reopened and every model file and
/// directory compared with it. Exit 0 clean, 1 a difference, an unexpected error, or (on an image healthy at the
/// start) any Corrupt outcome or sick AG; 2 usage error or unusable image.
/// </summary>
internal static class StressCommand
{
    public static Command Create(CommandEnvironment environment)
    {
        ArgumentNullException.ThrowIfNull(environment);
        var image = new Argument<string>("IMAGE") { Description = "The XFS v5 image file (unmounted); it is changed." };
        var ops = new Option<long>("--ops") { Description = "Operations to run.", HelpName = "N", DefaultValueFactory = _ => 1000 };
        var threads = new Option<int>("--threads") { Description = "Threads running operations at once.", HelpName = "T", DefaultValueFactory = _ => 2 };
        var seed = new Option<int>("--seed") { Description = "Random seed (with one thread the run is reproducible).", HelpName = "S", DefaultValueFactory = _ => 1 };
        var manifest = new Option<string?>("--manifest") { Description = "Write manifest version 2: '# xfbtree manifest v2', then PATH TYPE MODE UID GID NLINK SIZE CONTENT XATTRS (tab-separated) per path the model knows.", HelpName = "FILE" };
        var opLog = new Option<string?>("--op-log") { Description = "Durable log of every operation's start and outcome (crash tests).", HelpName = "FILE" };
        var maxFileSize = new Option<string?>("--max-file-size") { Description = "Largest file the model makes or adopts (default 1m).", HelpName = "SIZE" };
        var noSync = new Option<bool>("--no-sync") { Description = "Do not fsync the journal at each commit (faster; no crash safety)." };
        var onlineRepair = new Option<bool>("--online-repair") { Description = "Rebuild the rmap btree of every AG online, in rotation, while the workload runs (until each AG was rebuilt once)." };
        var verifyRepairs = new Option<bool>("--verify-repairs") { Description = "With --online-repair: after each repair, pause commits and compare the new tree with an offline scan." };
        var structures = new Option<string?>("--structures") { Description = $"With --online-repair: what to repair, comma-separated, of {Xfbtree.Xfs.Online.OnlineRepairStructureNames.Known} (default all).", HelpName = "LIST" };
        var repairShare = new Option<double?>("--repair-cpu-share") { Description = $"With --online-repair: the share of one CPU the repairs, run back to back beside the writers, may take: more than 0 and at most 1 (default {StressRequest.DefaultRepairCpuShare.ToString(System.Globalization.CultureInfo.InvariantCulture)}, 1 = not paced). The link count check waits between inode chunks, the other repairs between one rebuild and the next.", HelpName = "SHARE" };
        var unverifiedTrees = new Option<bool>("--no-verify-tree-rebuilds") { Description = "With --online-repair: do not check each bnobt/cntbt, inobt/finobt or refcountbt rebuild with the scrub of its AG while commits are paused (they are checked by default); to measure what the rebuilds alone cost the writers." };
        var json = RmapCommand.Json();
        var command = new Command("stress", "Random write workload on an image, checked against a model of every file; " +
                                            "verifies the image at the end and prints operations per second. " +
                                            "Exit 0 clean, 1 a difference, 2 usage error or unusable image.")
        {
            image, ops, threads, seed, manifest, opLog, maxFileSize, noSync, onlineRepair, verifyRepairs, structures, repairShare, unverifiedTrees, json,
        };
        command.SetAction(p =>
        {
            long maxSize = 1L << 20;
            if (p.GetValue(maxFileSize) is { } text)
            {
                try { maxSize = IoOperation.ParseSize(text); }
                catch (FormatException e)
                {
                    CommandLineHost.Error(environment.Stderr, $"stress: --max-file-size: {e.Message} (see 'xfbtree stress --help')");
                    return CommandLineHost.ExitUnusable;
                }
            }
            var repaired = Xfbtree.Xfs.Online.OnlineRepairStructures.All;
            if (p.GetValue(structures) is { } list)
            {
                if (!p.GetValue(onlineRepair) && !p.GetValue(verifyRepairs))
                {
                    CommandLineHost.Error(environment.Stderr, "stress: --structures needs --online-repair (see 'xfbtree stress --help')");
                    return CommandLineHost.ExitUnusable;
                }
                try { repaired = Xfbtree.Xfs.Online.OnlineRepairStructureNames.Parse(list); }
                catch (FormatException e)
                {
                    CommandLineHost.Error(environment.Stderr, $"stress: --structures: {e.Message} (see 'xfbtree stress --help')");
                    return CommandLineHost.ExitUnusable;
                }
            }
            if (p.GetValue(unverifiedTrees) && !p.GetValue(onlineRepair) && !p.GetValue(verifyRepairs))
            {
                CommandLineHost.Error(environment.Stderr, "stress: --no-verify-tree-rebuilds needs --online-repair (see 'xfbtree stress --help')");
                return CommandLineHost.ExitUnusable;
            }
            double share = StressRequest.DefaultRepairCpuShare;
            if (p.GetValue(repairShare) is { } given)
            {
                if (!p.GetValue(onlineRepair) && !p.GetValue(verifyRepairs))
                {
                    CommandLineHost.Error(environment.Stderr, "stress: --repair-cpu-share needs --online-repair (see 'xfbtree stress --help')");
                    return CommandLineHost.ExitUnusable;
                }
                if (RmapCommand.CpuShareRefusal(given, "--repair-cpu-share") is { } bad)
                {
                    CommandLineHost.Error(environment.Stderr, $"stress: {bad} (see 'xfbtree stress --help')");
                    return CommandLineHost.ExitUnusable;
                }
                share = given;
            }
            return Execute(new StressRequest
            {
                Image = p.GetRequiredValue(image),
                Ops = p.GetValue(ops),
                Threads = p.GetValue(threads),
                Seed = p.GetValue(seed),
                Manifest = p.GetValue(manifest),
                OpLog = p.GetValue(opLog),
                MaxFileSize = maxSize,
                Sync = !p.GetValue(noSync),
                OnlineRepair = p.GetValue(onlineRepair) || p.GetValue(verifyRepairs),
                VerifyRepairs = p.GetValue(verifyRepairs),
                Structures = repaired,
                RepairCpuShare = share,
                VerifyTreeRebuilds = !p.GetValue(unverifiedTrees),
                Json = p.GetValue(json),
            }, CommandLineHost.For(p, environment));
        });
        return command;
    }

    /// <summary>Runs the stress workload; the exit code.</summary>
    public static int Execute(StressRequest request, CommandEnvironment environment)
    {
        ArgumentNullException.ThrowIfNull(request);
        ArgumentNullException.ThrowIfNull(environment);
        // With --json the report lines are collected and the document written at the end.
        var report = request.Json ? new StringWriter { NewLine = "\n" } : environment.Stdout;
        var stdout = report;
        var stderr = environment.Stderr;
        string? usage = request switch
        {
            { Ops: < 0 } => $"--ops {request.Ops}: must be 0 or more",
            { Threads: < 1 or > 256 } => $"--threads {request.Threads}: must be 1..256",
            { MaxFileSize: < 4096 or > 1L << 30 } => $"--max-file-size {request.MaxFileSize}: must be 4k..1g",
            _ => null,
        };
        if (usage is not null)
        {
            CommandLineHost.Error(stderr, $"stress: {usage} (see 'xfbtree stress --help')");
            return CommandLineHost.ExitUnusable;
        }
        var engineOptions = new WriteEngineOptions { SyncCommits = request.Sync };
        var modelOptions = new StressModelOptions { MaxFileSize = request.MaxFileSize };

        StressModel model;
        StressResult result;
        OnlineRepairRotation? online = null;
        using (var opLog = request.OpLog is null ? null : new StressOpLogFile(request.OpLog))
        {
            XfsFileSystem fs;
            PendingJournal? pending = ImageStateNotices.Pending(request.Image);
            try { fs = XfsFileSystem.Open(request.Image, engineOptions); }
            catch (Exception e) when (e is XfsWriteException or IOException or UnauthorizedAccessException)
            {
                return Unusable(e.Message);
            }
            if (pending is not null)
            {
                stderr.WriteLine($"xfbtree: stress: {ImageStateNotices.Replayed(request.Image, pending, fs.Engine.RecordsReplayed)}");
            }
            try
            {
                if (request.OnlineRepair && !fs.Engine.Geometry.Superblock.HasRmapbt
                    && (request.Structures & Xfbtree.Xfs.Online.OnlineRepairStructures.NeedRmapbt) is var needs and not Xfbtree.Xfs.Online.OnlineRepairStructures.None)
                {
                    // Refused before the workload starts, the image unchanged (as the kernel refuses these repairs).
                    fs.Close();
                    return Unusable($"--online-repair: {Xfbtree.Xfs.Online.OnlineRepairStructureNames.Format(needs)}: the filesystem has no reverse-mapping btree, " +
                                    "the source of truth of these online rebuilds (as in the kernel); --structures nlinks is what can be repaired online here");
                }
                var target = new XfsStressTarget(fs);
                try { model = StressModel.Load(target, request.Seed, modelOptions); }
                catch (XfsWriteException e)
                {
                    fs.Close();
                    return Unusable($"cannot load the files: {e.Message} ({e.Kind})");
                }
                stdout.WriteLine($"stress: {request.Image}: {N(model.FileCount, "file")} and {N(model.DirectoryCount, "directory", "directories")} in the model; " +
                                 $"running {N(request.Ops, "op")} on {N(request.Threads, "thread")}, seed {request.Seed}");
                stdout.Flush();
                online = request.OnlineRepair ? new OnlineRepairRotation(fs, request.VerifyRepairs, request.Structures) { RepairCpuShare = request.RepairCpuShare, VerifyAgTrees = request.VerifyTreeRebuilds } : null;
                if (online is { NotExercised: not Xfbtree.Xfs.Online.OnlineRepairStructures.None } o)
                {
                    stdout.WriteLine($"online-repair: {Xfbtree.Xfs.Online.OnlineRepairStructureNames.Format(o.NotExercised)}: accepted, not exercised (not on this filesystem: no reflink)");
                }
                var runner = new StressRunner(target, model, new StressOptions
                {
                    Ops = request.Ops, Threads = request.Threads, Seed = request.Seed, OpLog = opLog, Background = online,
                });
                using (environment.Progress ? new Timer(_ => Progress(stderr, runner, request.Ops), null, 500, 500) : null)
                {
                    result = runner.Run();
                }
                if (environment.Progress) stderr.Write("\r\x1b[K");
                fs.Close();
            }
            catch (XfsWriteException e)
            {
                CommandLineHost.Error(stderr, $"stress: {request.Image}: close failed: {e.Message} ({e.Kind})");
                if (request.Json) CommandLineHost.WriteJsonError(environment.Stdout, "stress", request.Image, $"close failed: {e.Message} ({e.Kind})", CommandLineHost.ExitDamaged);
                return CommandLineHost.ExitDamaged;
            }
            finally
            {
                fs.Dispose();
            }
        }

        stdout.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"stress: {N(result.Total, "op")} in {result.Elapsed.TotalSeconds:F2} s: {result.OpsPerSecond:F0} ops/s ({N(request.Threads, "thread")}, seed {request.Seed})"));
        result.WriteCounts(stdout);
        stdout.WriteLine(result.HealthLine());

        // The image as a fresh open sees it: what a crash or another reader would find.
        List<string> problems = result.Problems.ToList();
        string? forks = null;
        try
        {
            using var reopened = XfsFileSystem.Open(request.Image, engineOptions);
            var reopenedTarget = new XfsStressTarget(reopened);
            problems.AddRange(model.Verify(reopenedTarget));
            if (problems.Count == 0) forks = model.DescribeForks(reopenedTarget);
            reopened.Close();
        }
        catch (XfsWriteException e)
        {
            problems.Add($"reopen for verification failed: {e.Message} ({e.Kind})");
        }
        if (request.Manifest is { } manifestPath)
        {
            using var writer = new StreamWriter(manifestPath, append: false, new System.Text.UTF8Encoding(false));
            model.WriteManifest(writer);
        }
        stdout.WriteLine($"verify: {N(model.FileCount, "file")}, {N(model.DirectoryCount, "directory", "directories")}: {(problems.Count == 0 ? "ok" : N(problems.Count, "problem"))}");
        if (forks is not null) stdout.WriteLine($"data forks: {forks}");
        online?.WriteReport(stdout); // last: its final line is the online-repair summary
        stdout.Flush();
        foreach (string problem in problems) CommandLineHost.Error(stderr, $"stress: {problem}");
        int rc = problems.Count == 0 ? CommandLineHost.ExitClean : CommandLineHost.ExitDamaged;
        if (request.Json) WriteJson(environment.Stdout, request, model, result, problems, forks, report.ToString()!, rc);
        return rc;

        int Unusable(string message)
        {
            CommandLineHost.Error(stderr, $"stress: {CommandLineHost.AboutImage(request.Image, message)}");
            if (request.Json) CommandLineHost.WriteJsonError(environment.Stdout, "stress", request.Image, message, CommandLineHost.ExitUnusable);
            return CommandLineHost.ExitUnusable;
        }
    }

    static string N(long count, string singular, string? plural = null) => CommandLineHost.Count(count, singular, plural);

    /// <summary><c>stress --json</c>: the run's figures, per-operation counts, the verification and the report lines.</summary>
    static void WriteJson(TextWriter stdout, StressRequest request, StressModel model, StressResult result, List<string> problems,
                          string? forks, string reportLines, int exitCode) =>
        CommandLineHost.WriteJson(stdout, "stress", j =>
        {
            j.WriteString("image", request.Image);
            j.WriteNumber("exitCode", exitCode);
            j.WriteNumber("seed", request.Seed);
            j.WriteNumber("threads", request.Threads);
            j.WriteNumber("opsRequested", request.Ops);
            j.WriteNumber("ops", result.Total);
            j.WriteNumber("elapsedSeconds", Math.Round(result.Elapsed.TotalSeconds, 3));
            j.WriteNumber("opsPerSecond", Math.Round(result.OpsPerSecond, 1));
            j.WriteStartArray("operations");
            foreach (StressOpKind kind in Enum.GetValues<StressOpKind>())
            {
                if (result.Count(kind) == 0) continue;
                j.WriteStartObject();
                j.WriteString("kind", kind.ToString().ToLowerInvariant());
                j.WriteNumber("count", result.Count(kind));
                j.WriteNumber("succeeded", result.Succeeded(kind));
                foreach (WriteErrorKind error in Enum.GetValues<WriteErrorKind>())
                {
                    if (result.Failed(kind, error) > 0) j.WriteNumber("failed" + error, result.Failed(kind, error));
                }
                j.WriteEndObject();
            }
            j.WriteEndArray();
            j.WriteStartObject("verify");
            j.WriteNumber("files", model.FileCount);
            j.WriteNumber("directories", model.DirectoryCount);
            j.WriteBoolean("ok", problems.Count == 0);
            j.WriteStartArray("problems");
            foreach (string problem in problems) j.WriteStringValue(problem);
            j.WriteEndArray();
            j.WriteEndObject();
            if (forks is not null) j.WriteString("dataForks", forks);
            j.WriteStartArray("report");
            foreach (string line in reportLines.Split('\n', StringSplitOptions.RemoveEmptyEntries)) j.WriteStringValue(line);
            j.WriteEndArray();
        });

    static void Progress(TextWriter stderr, StressRunner runner, long total)
    {
        lock (stderr) { stderr.Write($"\r\x1b[Kxfbtree: stress: {runner.Completed}/{N(total, "op")}"); stderr.Flush(); }
    }
}

/// <summary>One parsed <c>xfbtree stress</c> command line.</summary>
internal sealed class StressRequest
{
    public required string Image { get; init; }
    public long Ops { get; init; } = 1000;
    public int Threads { get; init; } = 2;
    public int Seed { get; init; } = 1;
    public string? Manifest { get; init; }
    public string? OpLog { get; init; }
    public long MaxFileSize { get; init; } = 1L << 20;
    public bool Sync { get; init; } = true;
    /// <summary>--online-repair: rebuild every AG's rmapbt online in rotation during the run.</summary>
    public bool OnlineRepair { get; init; }
    /// <summary>--verify-repairs: compare each rebuilt tree with an offline scan (commits paused).</summary>
    public bool VerifyRepairs { get; init; }
    /// <summary>--structures: what the online repair rotation works on (default all).</summary>
    public Xfbtree.Xfs.Online.OnlineRepairStructures Structures { get; init; } = Xfbtree.Xfs.Online.OnlineRepairStructures.All;
    /// <summary>--repair-cpu-share: the pace of the back-to-back repairs (<see cref="OnlineRepairRotation.RepairCpuShare"/>).</summary>
    public double RepairCpuShare { get; init; } = DefaultRepairCpuShare;
    /// <summary>Default of <see cref="RepairCpuShare"/>: not paced, so that a stress run interleaves as many repairs
    /// with its writers as it can (what the race tests want); 0.25 is the pace that keeps writers beside repairs run
    /// again and again at 0.8x of their speed alone or more on two cores (docs/scrub.md, "Writers beside the check").</summary>
    public const double DefaultRepairCpuShare = 1;
    /// <summary>Not --no-verify-tree-rebuilds: each per-AG tree rebuild checked by the scrub of its AG, commits paused.</summary>
    public bool VerifyTreeRebuilds { get; init; } = true;
    /// <summary>--json: one JSON document on stdout instead of the text report.</summary>
    public bool Json { get; init; }
}
