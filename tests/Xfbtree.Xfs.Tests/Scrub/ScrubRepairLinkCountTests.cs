using Xfbtree.Xfs.Tests.Online;
using Xfbtree.Xfs.Tests.Repair;
using Xfbtree.Xfs.Tests.Write;
using Xunit.Abstractions;

namespace Xfbtree.Xfs.Tests.Scrub;

/// <summary>
/// <c>xfbtree scrub --repair</c> of wrong link counts (the nlinks kinds of <see cref="ScrubCorruptor"/> on
/// geom-bs1k): found, repaired by the online link count repair through the write engine, clean after, NEEDSREPAIR
/// cleared, xfs_repair -n and the kernel agree; and a wrong link count beside a damaged inobt waits for the inobt's
/// repair and runs in the next round.
/// </summary>
public sealed class ScrubRepairLinkCountTests(ITestOutputHelper output)
{
    public static IEnumerable<object[]> Kinds() => ScrubCorruptor.Kinds.Where(k => k.Tree == "nlinks").Select(k => new object[] { k.Name });

    [Theory]
    [MemberData(nameof(Kinds))]
    public void ScrubRepairSetsWrongLinkCounts(string name)
    {
        var kind = ScrubCorruptor.Kinds.Single(k => k.Tree == "nlinks" && k.Name == name);
        using var scratch = new RepairScratch();
        string image = scratch.CopyFixture("geom-bs1k");
        output.WriteLine(ScrubCorruptor.Apply(image, kind, 1));
        var (rc, stdout, stderr) = ScrubCli.Run(image, "--repair");
        output.WriteLine(stdout + stderr);
        Assert.Contains("nlinks: damaged", stdout, StringComparison.Ordinal);
        Assert.Matches(@"inode \d+ nlink: \d+, counted \d+", stdout);
        Assert.Contains("repair: nlinks: repaired: 1 wrong link counts: 1 set to the count", stdout, StringComparison.Ordinal);
        Assert.DoesNotContain("not repaired", stdout, StringComparison.Ordinal);
        Assert.True(rc == 0, $"scrub --repair must leave the image clean: exit {rc}");
        Assert.Contains("result after repair: clean", stdout, StringComparison.Ordinal);
        Assert.False(WriteEngineTestSupport.NeedsRepair(image), "NEEDSREPAIR must be cleared after the repair");
        var witness = RepairTools.XfsRepairCheck(image);
        Assert.True(witness.ExitCode == 0, $"xfs_repair -n after the repair: {witness}");
        if (name == "nlink-file-zero")
        {
            KernelOracle.RequireRootAndTools();
            KernelOracle.AssertKernelWorkloadAndRepair(image, output, $"the image repaired after {name}");
        }
    }

    /// <summary>A wrong link count and a damaged inobt record in AG 1: the link count repair waits while the inode
    /// btree is damaged (a scan through it could miss a directory), the inobt is rebuilt, the image checked again,
    /// and the link count repaired in the next round.</summary>
    [Fact]
    public void ScrubRepairOfLinkCountsWaitsForTheInodeBtrees()
    {
        using var scratch = new RepairScratch();
        string image = scratch.CopyFixture("geom-bs1k");
        output.WriteLine(ScrubCorruptor.Apply(image, ScrubCorruptor.Kinds.Single(k => k.Tree == "inobt" && k.Name == "rec-freecount"), 1));
        output.WriteLine(ScrubCorruptor.Apply(image, ScrubCorruptor.Kinds.Single(k => k.Tree == "nlinks" && k.Name == "nlink-file-high"), 1));
        var (rc, stdout, stderr) = ScrubCli.Run(image, "--repair");
        output.WriteLine(stdout + stderr);
        Assert.Contains("AG 1 inobt: damaged", stdout, StringComparison.Ordinal);
        Assert.Contains("nlinks: damaged", stdout, StringComparison.Ordinal);
        Assert.Contains("repair: AG 1 inobt+finobt: repaired", stdout, StringComparison.Ordinal);
        Assert.Contains("repair: nlinks: repaired: 1 wrong link counts", stdout, StringComparison.Ordinal);
        Assert.True(rc == 0, $"scrub --repair must leave the image clean: exit {rc}");
        var witness = RepairTools.XfsRepairCheck(image);
        Assert.True(witness.ExitCode == 0, $"xfs_repair -n after the repair: {witness}");
    }
}
