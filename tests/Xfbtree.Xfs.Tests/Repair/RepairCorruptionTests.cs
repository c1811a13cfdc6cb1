using Xfbtree.Xfs.Format;
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
    /// <summary>
    /// Fixtures whose AG 0 rmapbt is a single leaf: the node kinds cannot apply there and are not generated
    /// (<see cref="RepairNodeKindsDoNotApplyToSingleLeafTrees"/> proves both facts).
    /// </summary>
    internal static readonly HashSet<string> SingleLeafRmapbt = ["fresh-4ag"];

    internal static TheoryData<string, string> Matrix(params string[] fixtures)
    {
        var data = new TheoryData<string, string>();
        foreach (string fixture in fixtures)
        {
            foreach (string kind in RepairTools.AllCorruptionKinds)
            {
                if (SingleLeafRmapbt.Contains(fixture) && kind.StartsWith("node-", StringComparison.Ordinal)) continue;
                data.Add(fixture, kind);
            }
        }
        return data;
    }

    [Fact]
    public void RepairNodeKindsDoNotApplyToSingleLeafTrees()
    {
        foreach (string fixture in SingleLeafRmapbt)
        {
            using (var xfs = XfsImage.Open(TreeFixtures.Image(fixture)))
                Assert.Equal(1u, xfs.ReadAgf(0).RmapLevel);
            using var scratch = new RepairScratch();
            string image = scratch.CopyFixture(fixture);
            foreach (string kind in RepairTools.AllCorruptionKinds.Where(k => k.StartsWith("node-", StringComparison.Ordinal)))
            {
                ToolResult r = RepairTools.Corrupt(image, kind);
                Assert.True(r.ExitCode != 0, $"{fixture} {kind}: the corruption tool claims to have damaged a node that does not exist: {r}");
            }
            Assert.Empty(RepairTools.DifferingRanges(TreeFixtures.Image(fixture), image, 4096));
        }
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
        Assert.True(corrupt.ExitCode == 0, $"corruption {kind}: {corrupt}");
        output.WriteLine(corrupt.Stdout.Trim());
        string before = scratch.Copy(image, "before.img");

        ToolResult repair = RepairTools.Xfbtree("rmap", "repair", image);
        output.WriteLine(repair.Stdout + repair.Stderr);
        Assert.True(repair.ExitCode == 0, $"repair: {repair}");
        List<uint> planned = RepairTools.PlannedAgs(repair.Stdout);
        Assert.Equal([0u], planned);   // the damage is in AG 0 only

        ToolResult witness = RepairTools.XfsRepairCheck(image);
        Assert.True(witness.ExitCode == 0, $"xfs_repair -n after repair: {witness}");
        ToolResult recheck = RepairTools.Xfbtree("rmap", "check", image);
        Assert.True(recheck.ExitCode == 0, $"check after repair: {recheck}");

        ToolResult dump = RepairTools.Xfbtree("rmap", "dump", image, "--source", "ondisk");
        Assert.Equal(0, dump.ExitCode);
        string truth = TreeFixtures.Sh($"zstd -dc '{Path.Combine(TreeFixtures.FixtureDir, fixture + ".truth.tsv.zst")}'");
        Assert.Equal(WithoutOwnAg(truth), WithoutOwnAg(dump.Stdout));

        var outside = RepairTools.ChangesOutside(before, image, RepairTools.RebuiltMetadata(TreeFixtures.Image(fixture), planned), 512);
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

/// <summary>The change comparison itself must be able to fail.</summary>
public sealed class RepairHarnessTests
{
    [Fact]
    public void RepairHarnessSeesAChangeOutsideTheAllowedRanges()
    {
        using var scratch = new RepairScratch();
        string original = TreeFixtures.Image("aged-small");
        string image = scratch.CopyFixture("aged-small");
        Assert.Empty(RepairTools.DifferingRanges(original, image, 512));
        var allowed = RepairTools.RebuiltMetadata(original, [0u]);
        long inside = allowed[^1].Start + 100, outside;
        using (var xfs = XfsImage.Open(original))
            outside = xfs.Geometry.AgBlockToByte(1, 100) + 7;   // AG 1: never in AG 0's allowed set
        using (var fh = File.OpenHandle(image, FileMode.Open, FileAccess.ReadWrite))
        {
            foreach (long at in new[] { inside, outside })
            {
                var b = new byte[1];
                RandomAccess.Read(fh, b, at);
                b[0] ^= 0xFF;
                RandomAccess.Write(fh, b, at);
            }
        }
        Assert.Equal(2, RepairTools.DifferingRanges(original, image, 512).Count);
        var changed = RepairTools.ChangesOutside(original, image, allowed, 512);
        Assert.Equal([(outside / 512 * 512, outside / 512 * 512 + 512)], changed);
    }
}
