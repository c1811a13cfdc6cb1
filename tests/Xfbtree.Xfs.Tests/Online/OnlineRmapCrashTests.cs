using Xfbtree.Xfs.Tests.Repair;
using Xfbtree.Xfs.Tests.Write;
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
        var (midRun, inFlightApplied, opsSeen) = StressChildHarness.RunKills(scratch, pristine, seed, kills,
            fixture == "aged-small" ? 6000 : 1500, ["--online-repair"],
            (image, kill, delayMs) => WriteEngineTestSupport.AssertOraclesClean(image, $"kill {kill} ({delayMs} ms)"));
        output.WriteLine($"{fixture}: {kills} kills, {midRun} in the middle of the run, {opsSeen} ops logged, {inFlightApplied} times the op in flight had reached the image");
        Assert.True(midRun > 0, "no kill landed while the child was running");
    }
}
