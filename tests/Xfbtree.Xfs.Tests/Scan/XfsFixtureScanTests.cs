using System.Text.Json;
using Xfbtree.Xfs.Check;
using Xfbtree.Xfs.Format;
using Xfbtree.Xfs.Scan;
using Xfbtree.Xfs.Tests.Trees;
using Xunit.Abstractions;

namespace Xfbtree.Xfs.Tests.Scan;

/// <summary>
/// Every fixture: the computed rmap set (`dump --source expected`) and the on-disk rmapbt (`dump --source ondisk`)
/// equal the fixture's truth.tsv byte for byte, and `check` finds the image clean. Each fixture is restored once
/// and scanned once per command (aged-medium's 545k records included).
/// </summary>
public sealed class XfsFixtureScanTests(ITestOutputHelper output)
{
    public static IEnumerable<object[]> Fixtures() => TreeFixtures.All.Select(n => new object[] { n });

    [Theory]
    [MemberData(nameof(Fixtures))]
    public void XfsDumpExpectedEqualsTruth(string fixture)
    {
        var r = XfsCli.OnFixture(fixture, "dump", "--source", "expected");
        Assert.True(r.ExitCode == 0 && r.Stderr.Length == 0, r.ToString());
        string truth = XfsCli.Truth(fixture);
        Assert.True(truth == r.Stdout, XfsCli.FirstDifference(truth, r.Stdout));
    }

    [Theory]
    [MemberData(nameof(Fixtures))]
    public void XfsDumpOnDiskEqualsTruth(string fixture)
    {
        var r = XfsCli.OnFixture(fixture, "dump", "--source", "ondisk");
        Assert.True(r.ExitCode == 0 && r.Stderr.Length == 0, r.ToString());
        string truth = XfsCli.Truth(fixture);
        Assert.True(truth == r.Stdout, XfsCli.FirstDifference(truth, r.Stdout));
    }

    [Theory]
    [MemberData(nameof(Fixtures))]
    public void XfsCheckFindsFixtureClean(string fixture)
    {
        var r = XfsCli.OnFixture(fixture, "check");
        output.WriteLine(r.Stdout);
        Assert.True(r.ExitCode == 0, r.ToString());
        Assert.EndsWith("result: clean\n", r.Stdout, StringComparison.Ordinal);
        Assert.DoesNotContain("DAMAGED", r.Stdout, StringComparison.Ordinal);
    }

    [Fact]
    public void XfsCheckJsonReportsEveryAg()
    {
        var r = XfsCli.OnFixture("aged-small", "check", "--json");
        Assert.True(r.ExitCode == 0, r.ToString());
        using var doc = JsonDocument.Parse(r.Stdout);
        var root = doc.RootElement;
        Assert.True(root.GetProperty("clean").GetBoolean());
        Assert.Equal(23204, root.GetProperty("expectedRecords").GetInt64());
        Assert.Equal(23204, root.GetProperty("onDiskRecords").GetInt64());
        var ags = root.GetProperty("ags").EnumerateArray().ToList();
        Assert.Equal(4, ags.Count);
        Assert.Equal([7184L, 6348L, 4640L, 5032L], ags.Select(a => a.GetProperty("onDiskRecords").GetInt64()));
        Assert.All(ags, a => Assert.Equal(0, a.GetProperty("differences").GetArrayLength()));
    }

    [Fact]
    public void XfsDumpOfOneAgEqualsThatAgOfTruth()
    {
        // 32 AGs: the selected AG's records only; every AG's inodes are still scanned (forks map into any AG).
        foreach (string source in new[] { "expected", "ondisk" })
        {
            var r = XfsCli.Run("dump", TreeFixtures.Image("geom-agcount32"), "--ag", "17", "--source", source);
            Assert.True(r.ExitCode == 0, r.ToString());
            var lines = XfsCli.Truth("geom-agcount32").Split('\n');
            string want = string.Join('\n', lines.Where(l => l.StartsWith('#') || l.StartsWith("17\t", StringComparison.Ordinal))) + "\n";
            Assert.True(want == r.Stdout, XfsCli.FirstDifference(want, r.Stdout));
        }
        var check = XfsCli.Run("check", TreeFixtures.Image("geom-agcount32"), "--ag", "31");
        Assert.True(check.ExitCode == 0, check.ToString());
        Assert.Contains("AG 31: clean", check.Stdout, StringComparison.Ordinal);
        Assert.DoesNotContain("AG 30", check.Stdout, StringComparison.Ordinal);
    }

    [Theory]
    [MemberData(nameof(Fixtures))]
    public void ScanResultAgreesWithAgHeaders(string fixture)
    {
        using var image = XfsImage.Open(TreeFixtures.Image(fixture));
        Assert.Equal(LogState.Clean, image.InspectLog().State);
        using var scan = RmapScanner.Scan(image, new RmapScanOptions { Parallelism = 1 });
        long total = 0;
        foreach (var ag in scan.Ags)
        {
            Assert.True(ag.Problems.Total == 0, string.Join("; ", ag.Problems.Items));
            Assert.True(ag.MetadataComplete);
            Assert.NotNull(ag.Agf);
            Assert.Equal(ag.Agf!.RmapBlocks, (uint)ag.RmapbtBlocks.Count);
            Assert.Equal(ag.Agf.BtreeBlocks, (uint)(ag.BnobtBlocks.Count + ag.CntbtBlocks.Count + ag.RmapbtBlocks.Count - 3));
            Assert.Equal(ag.Agf.FlCount, (uint)ag.AgflBlocks.Count);
            Assert.True(ag.Expected!.IsSealed);
            var structure = ag.Expected.Tree.Tree.Check();
            Assert.True(structure.IsClean, structure.ToString());
            Assert.Equal(ag.Expected.Count, structure.Records);
            total += ag.Expected.Count;
        }
        Assert.Equal(XfsCli.Truth(fixture).Count(c => c == '\n') - 1, total);
        Assert.Equal(total, scan.RecordsEmitted);
        output.WriteLine($"{fixture}: {total} records, {scan.InodesScanned} inodes, scan {scan.Elapsed.TotalMilliseconds:F0} ms");
    }

    [Fact]
    public void ScanIsTheSameSequentialAndParallel()
    {
        using var image = XfsImage.Open(TreeFixtures.Image("geom-nrext64"));
        using var one = RmapScanner.Scan(image, new RmapScanOptions { Parallelism = 1 });
        using var two = RmapScanner.Scan(image, new RmapScanOptions { Parallelism = 2 });
        var report = RmapChecker.Check(image, two);
        Assert.True(report.IsClean);
        for (int a = 0; a < one.Ags.Count; a++)
        {
            using var c1 = one.Ags[a].Expected!.CreateCursor();
            using var c2 = two.Ags[a].Expected!.CreateCursor();
            bool h1 = c1.MoveFirst(), h2 = c2.MoveFirst();
            while (h1 && h2)
            {
                Assert.True(c1.Current.SequenceEqual(c2.Current));
                h1 = c1.Increment();
                h2 = c2.Increment();
            }
            Assert.Equal(h1, h2);
        }
    }
}
