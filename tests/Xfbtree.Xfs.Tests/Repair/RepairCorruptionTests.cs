using Xfbtree.Xfs.Tests.Trees;
using Xunit.Abstractions;

namespace Xfbtree.Xfs.Tests.Repair;

/// <summary>
/// `xfbtree rmap repair` on real fixtures damaged by the shared corruption tool: the repair succeeds, xfs_repair -n
/// and our own check find the result clean, the on-disk records equal the fixture's truth apart from OWN_AG (whose
/// blocks the rebuild re-assigns), and nothing outside the rebuilt metadata changed by a single byte.
/// </summary>
public sealed class RepairCorruptionTests(ITestOutputHelper output)
{
    internal static TheoryData<string, string> Matrix(params string[] fixtures)
    {
        var data = new TheoryData<string, string>();
        foreach (string fixture in fixtures)
        {
            foreach (string kind in RepairTools.AllCorruptionKinds)
            {
                data.Add(fixture, kind);
            }
        }
        return data;
    }

    /// <summary>Every other fixture with one damaging kind each.</summary>
    public static TheoryData<string, string> OtherFixtures() => new()
    {
        { "proto-small", "rec-owner" },
        { "geom-sect4k", "leaf-zero" },
        { "geom-agcount32", "rec-extra" },
        { "geom-nrext64", "rec-missing" },
        { "aged-medium", "rec-extra-free" },
    };

    [Theory]
    [MemberData(nameof(OtherFixtures))]
    public void RepairFixesCorruption(string fixture, string kind) => RepairAndVerify(fixture, kind, output);

    internal static void RepairAndVerify(string fixture, string kind, ITestOutputHelper output)
    {
        using var scratch = new RepairScratch();
        string image = scratch.CopyFixture(fixture);
        ToolResult corrupt = RepairTools.Corrupt(image, kind);
        if (corrupt.ExitCode != 0)
        {
            // Only one case is legitimately impossible: node kinds on a fixture whose AG 0 rmapbt is a single leaf.
            Assert.True(fixture == "fresh-4ag" && kind.StartsWith("node-", StringComparison.Ordinal), $"corrupt.sh failed: {corrupt}");
            Assert.Contains("single level", corrupt.Stdout + corrupt.Stderr, StringComparison.Ordinal);
            output.WriteLine($"not applicable: {fixture} has no rmapbt node in AG 0 ({corrupt.Stderr.Trim()})");
            return;
        }
        output.WriteLine(corrupt.Stdout.Trim());
        string before = scratch.Copy(image, "before.img");

        ToolResult repair = RepairTools.Xfbtree("rmap", "repair", image);
        output.WriteLine(repair.Stdout + repair.Stderr);
        Assert.True(repair.ExitCode == 0, $"repair: {repair}");

        ToolResult witness = RepairTools.XfsRepairCheck(image);
        Assert.True(witness.ExitCode == 0, $"xfs_repair -n after repair: {witness}");
        ToolResult recheck = RepairTools.Xfbtree("rmap", "check", image);
        Assert.True(recheck.ExitCode == 0, $"check after repair: {recheck}");

        ToolResult dump = RepairTools.Xfbtree("rmap", "dump", image, "--source", "ondisk");
        Assert.Equal(0, dump.ExitCode);
        string truth = TreeFixtures.Sh($"zstd -dc '{Path.Combine(TreeFixtures.FixtureDir, fixture + ".truth.tsv.zst")}'");
        Assert.Equal(WithoutOwnAg(truth), WithoutOwnAg(dump.Stdout));

        var outside = RepairTools.ChangesOutside(before, image, RepairTools.RebuiltMetadata(image, 0), 512);
        Assert.True(outside.Count == 0, $"{outside.Count} sectors outside the rebuilt metadata changed, first at byte {outside.FirstOrDefault().Start}");
    }

    /// <summary>The TSV lines whose owner is not OWN_AG (-5), header included.</summary>
    internal static List<string> WithoutOwnAg(string tsv)
        => tsv.Split('\n').Where(l => l.Length > 0 && l.Split('\t') is var f && (f.Length < 4 || f[3] != "-5")).ToList();
}

/// <summary>Every corruption kind on the kernel-aged fixture (its own class so xunit runs it beside the others).</summary>
public sealed class RepairAgedSmallCorruptionTests(ITestOutputHelper output)
{
    public static TheoryData<string, string> Cases() => RepairCorruptionTests.Matrix("aged-small");

    [Theory]
    [MemberData(nameof(Cases))]
    public void RepairFixesCorruption(string fixture, string kind) => RepairCorruptionTests.RepairAndVerify(fixture, kind, output);
}

/// <summary>Every corruption kind on the 1 KiB-block geometry fixture.</summary>
public sealed class RepairGeometryCorruptionTests(ITestOutputHelper output)
{
    public static TheoryData<string, string> Cases() => RepairCorruptionTests.Matrix("geom-bs1k");

    [Theory]
    [MemberData(nameof(Cases))]
    public void RepairFixesCorruption(string fixture, string kind) => RepairCorruptionTests.RepairAndVerify(fixture, kind, output);
}

/// <summary>Every corruption kind on the freshly made fixture (single-leaf rmapbts).</summary>
public sealed class RepairFreshCorruptionTests(ITestOutputHelper output)
{
    public static TheoryData<string, string> Cases() => RepairCorruptionTests.Matrix("fresh-4ag");

    [Theory]
    [MemberData(nameof(Cases))]
    public void RepairFixesCorruption(string fixture, string kind) => RepairCorruptionTests.RepairAndVerify(fixture, kind, output);
}
