using System.Diagnostics;
using System.Globalization;
using Xfbtree.Xfs.Tests.Repair;
using Xfbtree.Xfs.Write;
using Xfbtree.Cli.Stress;

namespace Xfbtree.Xfs.Tests.Write;

/// <summary>
/// The kill-a-child stress harness shared by the crash tests: a child process runs <c>xfbtree stress --threads 1
/// --op-log</c> (plus the caller's extra arguments), the parent SIGKILLs it at a random moment, reopens the image (the
/// engine replays its journal), and the image must equal the model after the operations 1..k the log shows finished
/// (committed ones applied) or after 1..k+1 (the one in flight applied too); then the caller's check of the image
/// after a clean close.
/// </summary>
internal static class StressChildHarness
{
    /// <summary>What a run of kills saw.</summary>
    internal readonly record struct KillSummary(int MidRun, int InFlightApplied, long OpsSeen)
    {
        /// <summary>Committed operations the logs show, by kind (which operations the kills were checked against).</summary>
        public Dictionary<StressOpKind, long> Committed { get; init; } = new();

        /// <summary>Milliseconds the children ran before the kills that landed mid-run (with <see cref="OpsSeen"/>,
        /// how fast this machine runs the workload now).</summary>
        public long MidRunMilliseconds { get; init; }
    }

    /// <summary>Runs <paramref name="kills"/> kills of the stress child on copies of <paramref name="pristine"/>, each
    /// after 100 + random(<paramref name="delaySpanMs"/>) ms once the child has loaded its model; checks each image
    /// against the log and then calls <paramref name="afterClose"/>(image, kill, delayMs).</summary>
    internal static KillSummary RunKills(RepairScratch scratch, string pristine, int seed, int kills, int delaySpanMs,
        string[] extraArgs, Action<string, int, int> afterClose)
    {
        // The model the child starts from: the same load (same image, same seed) on a throw-away copy.
        string loadCopy = scratch.Copy(pristine, "load.img");
        StressModel initial;
        using (var fs = XfsFileSystem.Open(loadCopy))
        {
            initial = StressModel.Load(new XfsStressTarget(fs), seed);
            fs.Close();
        }
        File.Delete(loadCopy);

        var random = new Random(seed);
        int midRun = 0, inFlightApplied = 0;
        long opsSeen = 0, midRunMs = 0;
        var committed = new Dictionary<StressOpKind, long>();
        for (int kill = 0; kill < kills; kill++)
        {
            string image = scratch.Copy(pristine, $"kill{kill}.img");
            string log = Path.Combine(scratch.Directory, $"kill{kill}.log");
            // The kill moment: a random delay once the child has loaded its model.
            int delayMs = 100 + random.Next(delaySpanMs);
            bool finished = RunAndKill(image, log, seed, delayMs, extraArgs);
            var entries = StressOpLogFile.Read(log);
            opsSeen += entries.Count;
            if (!finished)
            {
                midRun++;
                midRunMs += delayMs;
            }

            var model = initial.Clone();
            StressOp? inFlight = null;
            foreach (var entry in entries)
            {
                if (entry.Outcome is null)
                {
                    Assert.Same(entries[^1], entry); // one thread: only the last can be unfinished
                    inFlight = entry.Op;
                }
                else if (entry.Outcome.Value.Committed)
                {
                    model.Apply(entry.Op);
                    committed[entry.Op.Kind] = committed.GetValueOrDefault(entry.Op.Kind) + 1;
                }
            }

            using (var fs = XfsFileSystem.Open(image))
            {
                var target = new XfsStressTarget(fs);
                var problems = model.Verify(target);
                if (problems.Count > 0 && inFlight is not null)
                {
                    var withInFlight = model.Clone();
                    withInFlight.Apply(inFlight);
                    var second = withInFlight.Verify(target);
                    Assert.True(second.Count == 0,
                        $"kill {kill} after {entries.Count} logged ops (in flight: {inFlight}): the image matches neither 1..k " +
                        $"({string.Join("; ", problems)}) nor 1..k+1 ({string.Join("; ", second)})");
                    inFlightApplied++;
                }
                else
                {
                    Assert.True(problems.Count == 0, $"kill {kill} after {entries.Count} logged ops: {string.Join("; ", problems)}");
                }
                fs.Close();
            }
            afterClose(image, kill, delayMs);
            File.Delete(image);
            File.Delete(log);
        }
        return new KillSummary(midRun, inFlightApplied, opsSeen) { Committed = committed, MidRunMilliseconds = midRunMs };
    }

    /// <summary>Starts the child, waits for its first line (model loaded), waits <paramref name="delayMs"/> and sends
    /// SIGKILL. True when the child had already finished.</summary>
    static bool RunAndKill(string image, string log, int seed, int delayMs, string[] extraArgs)
    {
        string dll = Path.Combine(AppContext.BaseDirectory, "xfbtree.dll");
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (string a in new[] { dll, "stress", image, "--ops", "1000000", "--threads", "1", "--seed", seed.ToString(CultureInfo.InvariantCulture), "--op-log", log })
        {
            psi.ArgumentList.Add(a);
        }
        foreach (string a in extraArgs)
        {
            psi.ArgumentList.Add(a);
        }
        using var child = ChildProcesses.Start(psi);
        var stderr = child.StandardError.ReadToEndAsync();
        string? first = child.StandardOutput.ReadLine();
        if (first is null || !first.StartsWith("stress: ", StringComparison.Ordinal))
        {
            child.WaitForExit();
            throw new InvalidOperationException($"the stress child did not start: '{first}' {stderr.Result}");
        }
        // Not a synchronization: the delay *is* the random moment of the kill.
        bool exited = child.WaitForExit(delayMs);
        if (!exited) child.Kill(); // SIGKILL on Linux
        child.WaitForExit();
        return exited;
    }
}
