using System.Diagnostics;
using Xfbtree.Xfs.Tests.Repair;
using Xfbtree.Xfs.Write;
using Xfbtree.Xfs.Write.Stress;
using Xunit.Abstractions;

namespace Xfbtree.Xfs.Tests.Write;

/// <summary>
/// kill -9 at random moments of a stress run. A child process runs <c>xfbtree stress --threads 1 --op-log</c>: the
/// log records each operation durably before it starts and its outcome after it returned. The parent SIGKILLs the
/// child at a random moment, reopens the image (the engine replays its journal), and the image must equal the model
/// after the operations 1..k the log shows finished (committed ones applied) or after 1..k+1 (the one in flight
/// applied too); then a clean close and xfs_repair -n must exit 0. A few kills by default, 100 with
/// XFBTREE_LONG_TESTS=1.
/// </summary>
public sealed class WriteCrashTests(ITestOutputHelper output)
{
    static bool Long => Environment.GetEnvironmentVariable("XFBTREE_LONG_TESTS") == "1";

    [Theory]
    [InlineData("fresh-4ag", 101)]
    [InlineData("aged-small", 202)]
    public void WriteCrashAtRandomMomentsLosesNoCommittedOperation(string fixture, int seed)
    {
        int kills = Long ? 50 : 2;
        using var scratch = new RepairScratch();
        string pristine = scratch.CopyFixture(fixture);
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
        long opsSeen = 0;
        for (int kill = 0; kill < kills; kill++)
        {
            string image = scratch.Copy(pristine, $"kill{kill}.img");
            string log = Path.Combine(scratch.Directory, $"kill{kill}.log");
            // The kill moment: a random delay once the child has loaded its model (0.1 - 3 s into the run).
            int delayMs = 100 + random.Next(2900);
            bool finished = RunAndKill(image, log, seed, delayMs);
            var entries = StressOpLogFile.Read(log);
            opsSeen += entries.Count;
            if (!finished) midRun++;

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
            var repair = RepairTools.XfsRepairCheck(image);
            Assert.True(repair.ExitCode == 0, $"kill {kill}: xfs_repair -n after reopen and close: {repair}");
            File.Delete(image);
            File.Delete(log);
        }
        output.WriteLine($"{fixture}: {kills} kills, {midRun} in the middle of the run, {opsSeen} ops logged, " +
                         $"{inFlightApplied} times the op in flight had reached the image");
        Assert.True(midRun > 0, "no kill landed while the child was running");
    }

    /// <summary>Starts the child, waits for its first line (model loaded), waits <paramref name="delayMs"/> and sends
    /// SIGKILL. True when the child had already finished.</summary>
    static bool RunAndKill(string image, string log, int seed, int delayMs)
    {
        string dll = Path.Combine(AppContext.BaseDirectory, "xfbtree.dll");
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (string a in new[] { dll, "stress", image, "--ops", "1000000", "--threads", "1", "--seed", seed.ToString(System.Globalization.CultureInfo.InvariantCulture), "--op-log", log })
        {
            psi.ArgumentList.Add(a);
        }
        using var child = Process.Start(psi)!;
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
