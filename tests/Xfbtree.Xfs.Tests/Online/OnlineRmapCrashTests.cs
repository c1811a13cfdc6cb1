using System.Diagnostics;
using System.Globalization;
using Xfbtree.Xfs.Tests.Repair;
using Xfbtree.Xfs.Tests.Write;
using Xfbtree.Xfs.Write;
using Xfbtree.Xfs.Write.Stress;
using Xunit.Abstractions;

namespace Xfbtree.Xfs.Tests.Online;

/// <summary>
/// kill -9 at random moments of <c>xfbtree stress --online-repair --op-log</c> (one writer thread, online repairs of
/// every AG in rotation beside it): the reopened image (journal replayed) equals the model after the logged
/// committed operations (or with the one in flight), a clean close leaves xfs_repair -n and xfbtree rmap check at 0.
/// A repair's final phase is one engine transaction, so a kill leaves the old tree or the new one, never a mix.
/// 3 kills per fixture by default, 100 with XFBTREE_LONG_TESTS=1.
/// </summary>
public sealed class OnlineRmapCrashTests(ITestOutputHelper output)
{
    private static bool Long => Environment.GetEnvironmentVariable("XFBTREE_LONG_TESTS") == "1";

    [Theory]
    [InlineData("fresh-4ag", 301)]
    [InlineData("aged-small", 302)]
    public void OnlineRepairCrashAtRandomMomentsLosesNoCommittedWrite(string fixture, int seed)
    {
        int kills = Long ? 100 : 3;
        using var scratch = new RepairScratch();
        string pristine = scratch.CopyFixture(fixture);
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
            int delayMs = 100 + random.Next(fixture == "aged-small" ? 6000 : 1500);
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
                    Assert.Same(entries[^1], entry);
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
                    Assert.True(second.Count == 0, $"kill {kill}: the image matches neither 1..k ({string.Join("; ", problems)}) nor 1..k+1 ({string.Join("; ", second)})");
                    inFlightApplied++;
                }
                else
                {
                    Assert.True(problems.Count == 0, $"kill {kill} after {entries.Count} logged ops: {string.Join("; ", problems)}");
                }
                fs.Close();
            }
            WriteEngineTestSupport.AssertOraclesClean(image, $"kill {kill} ({delayMs} ms)");
            File.Delete(image);
            File.Delete(log);
        }
        output.WriteLine($"{fixture}: {kills} kills, {midRun} in the middle of the run, {opsSeen} ops logged, {inFlightApplied} times the op in flight had reached the image");
        Assert.True(midRun > 0, "no kill landed while the child was running");
    }

    private static bool RunAndKill(string image, string log, int seed, int delayMs)
    {
        string dll = Path.Combine(AppContext.BaseDirectory, "xfbtree.dll");
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (string a in new[] { dll, "stress", image, "--ops", "1000000", "--threads", "1", "--seed", seed.ToString(CultureInfo.InvariantCulture), "--op-log", log, "--online-repair" })
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
        // Not a synchronization: the delay is the random moment of the kill.
        bool exited = child.WaitForExit(delayMs);
        if (!exited) child.Kill();
        child.WaitForExit();
        return exited;
    }
}
