using Xfbtree.Xfs.Tests.Repair;
using Xfbtree.Xfs.Tests.Write;
using Xunit.Abstractions;

namespace Xfbtree.Xfs.Tests.Scrub;

/// <summary>
/// <c>xfbtree scrub --repair</c> of a wrong link count beside a damaged inobt (geom-bs1k): the link count repair waits
/// for the inobt's and runs in the next round (each link count kind alone is in the repair matrix,
/// <c>ScrubRepairMatrixTests</c>).
/// </summary>
public sealed class ScrubRepairLinkCountTests(ITestOutputHelper output)
{
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
