using Xfbtree.Xfs.Tests.Repair;
using Xfbtree.Cli.Stress;
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
        var (midRun, inFlightApplied, opsSeen, midRunMs) = (0, 0, 0L, 0L);
        var committed = new Dictionary<StressOpKind, long>();
        void Kills(int count, int runSeed, int delaySpanMs)
        {
            var summary = StressChildHarness.RunKills(scratch, pristine, runSeed, count, delaySpanMs, [],
                (image, kill, _) =>
                {
                    var repair = RepairTools.XfsRepairCheck(image);
                    Assert.True(repair.ExitCode == 0, $"kill {kill}: xfs_repair -n after reopen and close: {repair}");
                });
            (midRun, inFlightApplied, opsSeen, midRunMs) = (midRun + summary.MidRun, inFlightApplied + summary.InFlightApplied,
                opsSeen + summary.OpsSeen, midRunMs + summary.MidRunMilliseconds);
            foreach (var (kind, n) in summary.Committed) committed[kind] = committed.GetValueOrDefault(kind) + n;
        }
        // The kill moment: 0.1 - 3 s into the run.
        Kills(kills, seed, 2900);
        // The checked histories must hold hard links, extended attributes and range shifts too: on a slow machine a few kills may
        // come before the first of them, so later kills (other seeds) are added until they do. Their moments reach as far as
        // about 1,000 operations at the rate the first kills showed (at least 6 s, at most 60 s), so a loaded machine waits
        // longer rather than covering less.
        StressOpKind[] required = [StressOpKind.Link, StressOpKind.SetXattr, StressOpKind.CollapseRange, StressOpKind.InsertRange];
        int extra = 0;
        for (; extra < 6 && required.Any(k => committed.GetValueOrDefault(k) == 0); extra++)
        {
            double opsPerMs = Math.Max(opsSeen, 1) / (double)Math.Max(midRunMs, 1);
            Kills(1, seed * 31 + extra, (int)Math.Clamp(1000 / opsPerMs, 6000, 60000));
        }
        output.WriteLine($"{fixture}: {kills + extra} kills, {midRun} in the middle of the run, {opsSeen} ops logged, " +
                         $"{inFlightApplied} times the op in flight had reached the image; committed: " +
                         string.Join(", ", committed.OrderBy(c => c.Key).Select(c => $"{c.Key} {c.Value}")));
        Assert.True(midRun > 0, "no kill landed while the child was running");
        foreach (var kind in required)
            Assert.True(committed.GetValueOrDefault(kind) > 0, $"no {kind} committed before {kills + extra} kills: the crash test did not cover it");
    }
}
