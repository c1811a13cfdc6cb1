using Xfbtree.Xfs.Tests.Repair;
using Xfbtree.Xfs.Tests.Trees;
using Xunit.Abstractions;

namespace Xfbtree.Xfs.Tests.Scrub;

/// <summary>
/// The rmapbt's root block damaged by xfs_db (AG 1): the only block of fresh-4ag's one-leaf tree, and the root node
/// of geom-bs1k's three-level tree, whose other 70-odd blocks can then not be reached. The scan is the rmapbt's
/// source of truth, so the rebuild needs nothing of the old tree: its blocks are what no record and no free extent
/// covers, and are reaped. The check blames the rmapbt alone (the free space and the AGFL are not judged against a
/// tree that lost its own blocks or records nothing of the AG's headers), <c>scrub --repair</c> rebuilds it and ends
/// clean, xfs_repair -n exits 0 (nothing leaked), and the kernel mounts and uses the image.
/// </summary>
public sealed class ScrubRmapbtRootTests(ITestOutputHelper output)
{
    public static IEnumerable<object[]> Kinds() =>
    [
        ["fresh-4ag", "write -d magic 0"], ["fresh-4ag", "crc -i"], ["fresh-4ag", "write -d level 3"], ["fresh-4ag", "write -d numrecs 0"],
        ["fresh-4ag", "write -d numrecs 300"], ["fresh-4ag", "write -d rightsib 7"], ["fresh-4ag", "write -d bno 99"], ["fresh-4ag", "write -d owner 3"],
        ["geom-bs1k", "write -d magic 0"], ["geom-bs1k", "crc -i"], ["geom-bs1k", "write -d level 0"], ["geom-bs1k", "write -d numrecs 0"],
    ];

    [Theory]
    [MemberData(nameof(Kinds))]
    public void ADamagedRmapbtRootIsRebuiltFromTheScan(string fixture, string damage)
    {
        using var scratch = new RepairScratch();
        string image = scratch.CopyFixture(fixture);
        ToolResult db = RepairTools.Exec(TreeFixtures.Tool("xfs_db"), ["-x", "-c", "agf 1", "-c", "addr rmaproot", "-c", damage, image]);
        Assert.True(db.ExitCode == 0, db.ToString());
        var check = ScrubCli.Run(image);
        output.WriteLine(check.Stdout + check.Stderr);
        Assert.Equal(1, check.ExitCode);
        Assert.Contains("AG 1 rmapbt: damaged", check.Stdout, StringComparison.Ordinal);
        foreach (string innocent in new[] { "bnobt", "cntbt", "AGFL", "AGI", "inobt", "finobt", "refcountbt" })
        {
            Assert.DoesNotContain($"AG 1 {innocent}: damaged", check.Stdout, StringComparison.Ordinal);
        }
        var (rc, stdout, stderr) = ScrubCli.Run(image, "--repair");
        output.WriteLine(stdout + stderr);
        Assert.Contains("repair: AG 1 rmapbt: repaired", stdout, StringComparison.Ordinal);
        Assert.True(rc == 0, $"scrub --repair must leave the image clean: exit {rc}");
        Assert.Contains("result after repair: clean", stdout, StringComparison.Ordinal);
        ToolResult witness = RepairTools.XfsRepairCheck(image);
        Assert.True(witness.ExitCode == 0, $"xfs_repair -n after the rebuild: {witness}");
        if (damage == "write -d magic 0")
        {
            RepairSafetyTests.RequireRoot();
            ToolResult workload = RepairTools.Exec(Path.Combine(RepairKernelTests.RepoRoot(), "scripts", "kernel-workload.sh"), [image]);
            output.WriteLine(workload.Stdout + workload.Stderr);
            Assert.True(workload.ExitCode == 0, $"kernel workload on the repaired image: {workload}");
        }
    }
}
