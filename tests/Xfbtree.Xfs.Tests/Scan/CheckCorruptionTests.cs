using System.Text.Json;
using Xfbtree.Xfs.Tests.Repair;
using Xfbtree.Xfs.Tests.Trees;
using Xunit.Abstractions;

namespace Xfbtree.Xfs.Tests.Scan;

/// <summary>
/// Every corruption kind of the shared tool, applied to a private copy of a fixture: `check` exits 1, names the
/// damaged AG (and only that AG) in text and JSON, and `xfs_repair -n` agrees that the image is damaged, except for
/// the three kinds it is documented not to detect (tools/corruption-results.md), which only a two-way compare finds.
/// </summary>
public abstract class CheckCorruptionTestsBase(ITestOutputHelper output)
{
    /// <summary>Every kind of the shared corruption tool (one list for the check and repair tests).</summary>
    internal static IReadOnlyList<string> Kinds => RepairTools.AllCorruptionKinds;

    /// <summary>Kinds xfs_repair -n 6.1 does not report (it only checks that expected records are covered).</summary>
    static readonly HashSet<string> RepairBlindSpots = ["rec-extra", "rec-extra-free", "leaf-sibling"];

    protected void CorruptAndCheck(string fixture, string kind, uint ag)
    {
        using var scratch = new RepairScratch();
        string image = scratch.CopyFixture(fixture);
        var corrupt = RepairTools.Corrupt(image, kind, seed: 1, ag: (int)ag);
        Assert.True(corrupt.ExitCode == 0, $"corruption: {corrupt}");
        output.WriteLine(corrupt.Stdout.Trim());

        var check = XfsCli.Run("check", image);
        output.WriteLine(check.Stdout);
        Assert.True(check.ExitCode == 1, $"check must report the damage: {check}");
        Assert.Contains($"AG {ag}: DAMAGED", check.Stdout, StringComparison.Ordinal);
        foreach (string line in check.Stdout.Split('\n').Where(l => l.StartsWith("AG ", StringComparison.Ordinal) && !l.StartsWith($"AG {ag}:", StringComparison.Ordinal)))
            Assert.Contains(": clean (", line, StringComparison.Ordinal);
        Assert.Contains("result: DAMAGED (1 of ", check.Stdout, StringComparison.Ordinal);

        var json = XfsCli.Run("check", image, "--json");
        Assert.Equal(1, json.ExitCode);
        using var doc = JsonDocument.Parse(json.Stdout);
        Assert.False(doc.RootElement.GetProperty("clean").GetBoolean());
        var bad = doc.RootElement.GetProperty("ags").EnumerateArray().Where(a => !a.GetProperty("clean").GetBoolean()).Select(a => a.GetProperty("ag").GetUInt32());
        Assert.Equal([ag], bad);

        var witness = RepairTools.XfsRepairCheck(image);
        if (RepairBlindSpots.Contains(kind))
            output.WriteLine($"xfs_repair -n exit {witness.ExitCode} (documented blind spot for {kind})");
        else
            Assert.True(witness.ExitCode == 1, $"xfs_repair -n should agree that {kind} is damage: {witness}");
    }

    [Fact]
    public void CheckCoversEveryKindTheCorruptionToolOffers()
        => Assert.Equal(RepairTools.CorruptionKinds().Order(StringComparer.Ordinal), Kinds.Order(StringComparer.Ordinal));
}

/// <summary>The corruption matrix on aged-small, the damaged AG rotating over its 4 AGs.</summary>
public sealed class CheckCorruptionAgedSmallTests(ITestOutputHelper output) : CheckCorruptionTestsBase(output)
{
    public static IEnumerable<object[]> Cases() => Kinds.Select((k, i) => new object[] { k, (uint)(i % 4) });

    [Theory]
    [MemberData(nameof(Cases))]
    public void CheckFindsCorruptionInAgedSmall(string kind, uint ag) => CorruptAndCheck("aged-small", kind, ag);
}

/// <summary>The corruption matrix on a 1 KiB-block geometry (taller rmapbts), AG 1.</summary>
public sealed class CheckCorruptionGeometryTests(ITestOutputHelper output) : CheckCorruptionTestsBase(output)
{
    public static IEnumerable<object[]> Cases() => Kinds.Select(k => new object[] { k });

    [Theory]
    [MemberData(nameof(Cases))]
    public void CheckFindsCorruptionInBs1k(string kind) => CorruptAndCheck("geom-bs1k", kind, 1);
}
