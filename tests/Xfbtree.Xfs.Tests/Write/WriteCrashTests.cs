using Xfbtree.Xfs.Tests.Repair;
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
        // The kill moment: 0.1 - 3 s into the run.
        var (midRun, inFlightApplied, opsSeen) = StressChildHarness.RunKills(scratch, pristine, seed, kills, 2900, [],
            (image, kill, _) =>
            {
                var repair = RepairTools.XfsRepairCheck(image);
                Assert.True(repair.ExitCode == 0, $"kill {kill}: xfs_repair -n after reopen and close: {repair}");
            });
        output.WriteLine($"{fixture}: {kills} kills, {midRun} in the middle of the run, {opsSeen} ops logged, " +
                         $"{inFlightApplied} times the op in flight had reached the image");
        Assert.True(midRun > 0, "no kill landed while the child was running");
    }
}
