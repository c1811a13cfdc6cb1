using System.Text.Json;
using Xfbtree.Cli;
using Xfbtree.Xfs.Tests.Repair;
using Xfbtree.Xfs.Tests.Trees;
using Xunit.Abstractions;

namespace Xfbtree.Xfs.Tests.Scrub;

/// <summary>Runs <c>xfbtree scrub</c> in process.</summary>
internal static class ScrubCli
{
    public static (int ExitCode, string Stdout, string Stderr) Run(params string[] args)
    {
        var o = new StringWriter { NewLine = "\n" };
        var e = new StringWriter { NewLine = "\n" };
        int rc = ScrubCommand.Run(args, o, e);
        return (rc, o.ToString(), e.ToString());
    }
}

/// <summary>Every fixture scrubs clean, in text and JSON, and xfs_repair -n agrees that it is clean.</summary>
public sealed class ScrubFixtureTests(ITestOutputHelper output)
{
    public static IEnumerable<object[]> Fixtures() =>
        new[] { "aged-small", "aged-medium", "fresh-4ag", "proto-small", "geom-agcount32", "geom-bs1k", "geom-nrext64", "geom-sect4k" }.Select(f => new object[] { f });

    [Theory]
    [MemberData(nameof(Fixtures))]
    public void FixtureScrubsCleanAndAgreesWithXfsRepair(string fixture)
    {
        string image = TreeFixtures.Image(fixture);
        var (rc, stdout, stderr) = ScrubCli.Run(image, "--json");
        Assert.True(rc == 0, $"scrub exit {rc}\n{stdout}\n{stderr}");
        using var doc = JsonDocument.Parse(stdout);
        Assert.Equal(CommandLineHost.Version, doc.RootElement.GetProperty("version").GetString());
        Assert.Equal(("scrub", 0), (doc.RootElement.GetProperty("command").GetString(), doc.RootElement.GetProperty("exitCode").GetInt32()));
        Assert.True(doc.RootElement.GetProperty("clean").GetBoolean());
        var structures = doc.RootElement.GetProperty("structures").EnumerateArray().Select(s => s.GetProperty("structure").GetString()).ToHashSet();
        foreach (string s in new[] { "superblock", "AGF", "AGFL", "AGI", "bnobt", "cntbt", "inobt", "finobt", "rmapbt", "refcountbt", "superblock counters", "nlinks" })
            Assert.Contains(s, structures);
        var repair = RepairTools.XfsRepairCheck(image);
        Assert.True(repair.ExitCode == 0, $"xfs_repair -n should agree that {fixture} is clean: {repair}");
    }

    [Fact]
    public void TextReportHasOneLinePerStructureAndASummary()
    {
        var (rc, stdout, _) = ScrubCli.Run(TreeFixtures.Image("fresh-4ag"));
        output.WriteLine(stdout);
        Assert.Equal(0, rc);
        Assert.Contains("AG 2 bnobt: clean", stdout, StringComparison.Ordinal);
        Assert.Contains("nlinks: clean", stdout, StringComparison.Ordinal);
        Assert.Contains("bmap: clean", stdout, StringComparison.Ordinal);
        Assert.Contains("directories: clean", stdout, StringComparison.Ordinal);
        Assert.Matches(@"result: clean \(52 structures checked; ", stdout);
    }

    [Fact]
    public void OneAgSkipsTheWholeImageChecks()
    {
        var (rc, stdout, _) = ScrubCli.Run(TreeFixtures.Image("fresh-4ag"), "--ag", "1");
        Assert.Equal(0, rc);
        Assert.DoesNotContain("AG 0 ", stdout, StringComparison.Ordinal);
        Assert.Contains("AG 1 inobt: clean", stdout, StringComparison.Ordinal);
        Assert.DoesNotContain("nlinks", stdout, StringComparison.Ordinal);
    }

    [Fact]
    public void BadInputIsOneLineAndExit2()
    {
        var missing = ScrubCli.Run("/nonexistent/image");
        Assert.Equal(2, missing.ExitCode);
        Assert.Single(missing.Stderr.Trim().Split('\n'));
        var badAg = ScrubCli.Run(TreeFixtures.Image("fresh-4ag"), "--ag", "9");
        Assert.Equal(2, badAg.ExitCode);
        Assert.Contains("AG 9 does not exist", badAg.Stderr, StringComparison.Ordinal);
    }
}

/// <summary>
/// The scrub's corruption matrix on geom-bs1k AG 1 (two-level bnobt, cntbt and refcountbt; one-level inode btrees):
/// every kind of <see cref="ScrubCorruptor"/> is detected and named on the right line, and no other AG is blamed.
/// xfs_repair -n is run on each too with XFBTREE_LONG_TESTS=1 (the results are in docs/scrub.md).
/// </summary>
public sealed class ScrubCorruptionTests(ITestOutputHelper output)
{
    const string Fixture = "geom-bs1k";
    const uint Ag = 1;

    public static IEnumerable<object[]> Cases() => ScrubCorruptor.Kinds.Select(k => new object[] { k.Tree, k.Name });

    [Theory]
    [MemberData(nameof(Cases))]
    public void ScrubFindsDamage(string tree, string name)
    {
        var kind = ScrubCorruptor.Kinds.Single(k => k.Tree == tree && k.Name == name);
        using var scratch = new RepairScratch();
        string image = scratch.CopyFixture(Fixture);
        output.WriteLine(ScrubCorruptor.Apply(image, kind, Ag));
        var (rc, stdout, stderr) = ScrubCli.Run(image);
        output.WriteLine(stdout + stderr);
        Assert.True(rc == 1, $"scrub must report the damage: exit {rc}");
        string prefix = kind.Finding == "nlinks" ? "nlinks: damaged" : $"AG {Ag} {kind.Finding}: damaged";
        Assert.Contains(prefix, stdout, StringComparison.Ordinal);
        foreach (string line in stdout.Split('\n').Where(l => l.StartsWith("AG ", StringComparison.Ordinal) && !l.StartsWith($"AG {Ag} ", StringComparison.Ordinal)))
            Assert.DoesNotContain(": damaged", line, StringComparison.Ordinal);
        if (kind.Tree == "dirent") Assert.Matches(@"nlinks: damaged: .*directory \d+ entry '[^']+' (says|names)", stdout);
        if (kind.Tree == "nlinks")
        {
            Assert.Matches(@"inode \d+ nlink: \d+, counted \d+", stdout);
            Assert.Matches(@"result: DAMAGED \(\d+ of \d+ structures? damaged, 1 wrong link count;", stdout);   // one damaged inode: singular
        }
        if (Environment.GetEnvironmentVariable("XFBTREE_LONG_TESTS") == "1")
        {
            var witness = RepairTools.XfsRepairCheck(image);
            output.WriteLine($"XFS_REPAIR_N {tree} {name} exit {witness.ExitCode}");
        }
    }
}
