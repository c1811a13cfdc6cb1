using System.Globalization;
using Xfbtree.Xfs.Online;
using Xfbtree.Xfs.Tests.Repair;
using Xfbtree.Xfs.Tests.Write;
using Xfbtree.Xfs.Write;
using Xfbtree.Cli.Stress;
using Xunit.Abstractions;

namespace Xfbtree.Xfs.Tests.Online;

/// <summary>
/// Randomized races: the model-checked stress workload (two writer threads: write, punch, falloc, truncate, reflink,
/// unshare, create, mkdir, unlink, ...) runs while every AG's rmapbt is rebuilt online in rotation; after each
/// repair, with commits paused, the new tree is compared with the offline scan of the image at that instant
/// (0 lost or extra records). 50 seeds by default, 1,000 with XFBTREE_LONG_TESTS=1.
/// </summary>
public sealed class OnlineRmapRaceTests(ITestOutputHelper output)
{
    private static readonly bool Long = Environment.GetEnvironmentVariable("XFBTREE_LONG_TESTS") == "1";

    [Fact]
    public void OnlineRepairsRacingTwoWritersMatchTheOfflineScanForEverySeed()
    {
        int seeds = Long ? 1000 : 50;
        long repairs = 0, applied = 0, ignored = 0, ops = 0, mismatches = 0;
        var clock = System.Diagnostics.Stopwatch.StartNew();
        using var scratch = new RepairScratch();
        string baseImage = scratch.CopyFixture("fresh-4ag");
        for (int seed = 1; seed <= seeds; seed++)
        {
            string image = scratch.Copy(baseImage, $"race-{seed}.img");
            var (rotation, result, problems) = RunOne(image, seed, opsPerSeed: 120);
            Assert.True(problems.Count == 0, $"seed {seed}: {string.Join("; ", problems)}");
            Assert.True(rotation.Repairs >= 4, $"seed {seed}: only {rotation.Repairs} repairs");
            Assert.Equal(0, rotation.Mismatches);
            var report = new StringWriter(CultureInfo.InvariantCulture);
            rotation.WriteReport(report);
            string last = report.ToString().TrimEnd().Split('\n')[^1];
            var fields = last.Split(' ').Skip(1).Select(f => f.Split('=')).ToDictionary(f => f[0], f => long.Parse(f[1], CultureInfo.InvariantCulture));
            repairs += fields["repairs"];
            applied += fields["applied"];
            ignored += fields["ignored"];
            mismatches += fields["mismatches"];
            ops += result.Total;
            if (seed % 25 == 1)
            {
                // Now and then the external oracles too (after a clean close).
                WriteEngineTestSupport.AssertOraclesClean(image, $"seed {seed}");
            }
            File.Delete(image);
        }
        output.WriteLine($"{seeds} seeds, {ops} ops, {repairs} online repairs verified, {applied} live updates applied, {ignored} ignored, {mismatches} mismatches, {clock.Elapsed.TotalSeconds:F1} s");
        Assert.Equal(0, mismatches);
        Assert.True(applied > 0 && ignored > 0, $"the races never exercised the hook both ways: applied {applied}, ignored {ignored}");
    }

    private static (OnlineRepairRotation Rotation, StressResult Result, List<string> Problems) RunOne(string image, int seed, long opsPerSeed)
    {
        using var fs = XfsFileSystem.Open(image, OnlineTestSupport.Fast);
        var target = new XfsStressTarget(fs);
        StressModel model = StressModel.Load(target, seed, new StressModelOptions { MaxFileSize = 256 << 10 });
        var rotation = new OnlineRepairRotation(fs.Engine, verify: true);
        StressResult result = new StressRunner(target, model, new StressOptions { Ops = opsPerSeed, Threads = 2, Seed = seed, Background = rotation }).Run();
        List<string> problems = result.Problems.ToList();
        problems.AddRange(model.Verify(target));
        List<string> invariants = Xfbtree.Xfs.Write.Space.WriteInvariants.Check(fs.Engine);
        problems.AddRange(invariants.Select(i => "invariant: " + i));
        fs.Close();
        return (rotation, result, problems);
    }
}
