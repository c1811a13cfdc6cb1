using System.CommandLine;
using System.Globalization;
using Xfbtree.Xfs.Write;
using Xfbtree.Xfs.Write.Engine;
using Xfbtree.Xfs.Write.Stress;

namespace Xfbtree.Cli;

/// <summary>
/// <c>xfbtree stress IMAGE --ops N --threads T --seed S [--manifest FILE]</c>: a random workload over every write
/// operation on the image's existing files and new ones, checked against a model of every file's bytes
/// (<see cref="StressRunner"/>); at the end the engine is closed, the image reopened and every model file and
/// directory compared with it. Exit 0 clean, 1 a difference, an unexpected error, or (on an image healthy at the
/// start) any Corrupt outcome or sick AG; 2 usage error or unusable image.
/// </summary>
public static class StressCommand
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
        var command = new Command("stress", "Random write workload on an image, checked against a model of every file; " +
                                            "verifies the image at the end and prints operations per second. " +
                                            "Exit 0 clean, 1 a difference, 2 usage error or unusable image.")
        {
            image, ops, threads, seed, manifest, opLog, maxFileSize, noSync, onlineRepair, verifyRepairs,
        };
        command.SetAction(p =>
        {
            long maxSize = 1L << 20;
            if (p.GetValue(maxFileSize) is { } text)
            {
                try { maxSize = IoOperation.ParseSize(text); }
                catch (FormatException e)
                {
                    environment.Stderr.WriteLine($"xfbtree stress: --max-file-size: {e.Message} (see 'xfbtree stress --help')");
                    return CommandLineHost.ExitUnusable;
                }
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
            }, environment);
        });
        return command;
    }

    /// <summary>Runs the stress workload; the exit code.</summary>
    public static int Execute(StressRequest request, CommandEnvironment environment)
    {
        ArgumentNullException.ThrowIfNull(request);
        ArgumentNullException.ThrowIfNull(environment);
        var stdout = environment.Stdout;
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
            stderr.WriteLine($"xfbtree stress: {usage} (see 'xfbtree stress --help')");
            return CommandLineHost.ExitUnusable;
        }
        var engineOptions = new WriteEngineOptions { SyncCommits = request.Sync };
        var modelOptions = new StressModelOptions { MaxFileSize = request.MaxFileSize };

        StressModel model;
        StressResult result;
        Xfbtree.Xfs.Online.OnlineRepairRotation? online = null;
        using (var opLog = request.OpLog is null ? null : new StressOpLogFile(request.OpLog))
        {
            XfsFileSystem fs;
            PendingJournal? pending = ImageStateNotices.Pending(request.Image);
            try { fs = XfsFileSystem.Open(request.Image, engineOptions); }
            catch (Exception e) when (e is XfsWriteException or IOException or UnauthorizedAccessException)
            {
                stderr.WriteLine($"xfbtree stress: {request.Image}: {e.Message}");
                return CommandLineHost.ExitUnusable;
            }
            if (pending is not null)
            {
                stderr.WriteLine($"xfbtree stress: {ImageStateNotices.Replayed(request.Image, pending, fs.Engine.RecordsReplayed)}");
            }
            try
            {
                var target = new XfsStressTarget(fs);
                try { model = StressModel.Load(target, request.Seed, modelOptions); }
                catch (XfsWriteException e)
                {
                    stderr.WriteLine($"xfbtree stress: {request.Image}: cannot load the files: {e.Message} ({e.Kind})");
                    fs.Close();
                    return CommandLineHost.ExitUnusable;
                }
                stdout.WriteLine($"stress: {request.Image}: {model.FileCount} files and {model.DirectoryCount} directories in the model; " +
                                 $"running {request.Ops} ops on {request.Threads} thread{(request.Threads == 1 ? "" : "s")}, seed {request.Seed}");
                stdout.Flush();
                online = request.OnlineRepair ? new Xfbtree.Xfs.Online.OnlineRepairRotation(fs.Engine, request.VerifyRepairs) : null;
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
                stderr.WriteLine($"xfbtree stress: {request.Image}: close failed: {e.Message} ({e.Kind})");
                return CommandLineHost.ExitDamaged;
            }
            finally
            {
                fs.Dispose();
            }
        }

        stdout.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"stress: {result.Total} ops in {result.Elapsed.TotalSeconds:F2} s: {result.OpsPerSecond:F0} ops/s ({request.Threads} threads, seed {request.Seed})"));
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
        stdout.WriteLine($"verify: {model.FileCount} files, {model.DirectoryCount} directories: {(problems.Count == 0 ? "ok" : $"{problems.Count} problems")}");
        if (forks is not null) stdout.WriteLine($"data forks: {forks}");
        online?.WriteReport(stdout); // last: its final line is the online-repair summary
        stdout.Flush();
        foreach (string problem in problems) stderr.WriteLine($"xfbtree stress: {problem}");
        return problems.Count == 0 ? CommandLineHost.ExitClean : CommandLineHost.ExitDamaged;
    }

    static void Progress(TextWriter stderr, StressRunner runner, long total)
    {
        lock (stderr) { stderr.Write($"\r\x1b[Kxfbtree stress: {runner.Completed}/{total} ops"); stderr.Flush(); }
    }
}

/// <summary>One parsed <c>xfbtree stress</c> command line.</summary>
public sealed class StressRequest
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
}
