using Xfbtree.Xfs.Tests.Repair;
using Xfbtree.Xfs.Tests.Trees;
using Xfbtree.Xfs.Tests.Write;
using Xunit.Abstractions;

namespace Xfbtree.Xfs.Tests.Scrub;

/// <summary>
/// <c>xfbtree scrub --repair</c> of a filesystem without an rmapbt (geom-bs1k made into one, AG 1): the corruption
/// matrix's kinds (one per structure in the suite, all 77 with XFBTREE_LONG_TESTS=1): those of every AG tree, the AG
/// header counters, the free list, the secondary superblocks and the link counts are repaired in place (each rebuild
/// from a scan of the AG taken right before it; an inobt that cannot be walked from the chunks a discovery finds by
/// reading inode cores), the image checks clean again, xfs_repair -n agrees and the kernel mounts it, reads every
/// file, writes and deletes. Damage whose repair needs the rmapbt (an AGF or AGI that does not verify or whose
/// free-space roots are lost: nothing else says where the trees are) is reported, refused with a reason, and the
/// image closes clean of NEEDSREPAIR. Before, scrub --repair refused every such image.
/// </summary>
public sealed class ScrubRepairWithoutRmapbtTests(ITestOutputHelper output)
{
    private const string Fixture = "geom-bs1k-normap";
    private const uint Ag = 1;

    private static bool Long => Environment.GetEnvironmentVariable("XFBTREE_LONG_TESTS") == "1";

    /// <summary>
    /// Refused without an rmapbt (tree/kind): an AGF or AGI sector that does not verify or whose free-space roots
    /// lead nowhere (nothing else says where the trees are, and the chunk discovery needs the bnobt to know which
    /// blocks are in use and the AGI to rewrite). Every other kind is repaired, the inobt's whose leaves or root
    /// cannot be walked from the inode chunks a discovery finds.
    /// </summary>
    private static readonly HashSet<string> Refused =
    [
        "agf/agf-magic", "agf/agf-crc", "agf/agf-bnoroot", "agf/agf-cntroot", "agf/agf-length", "agf/agf-flfirst",
        "agi/agi-magic", "agi/agi-crc", "agi/agi-length",
    ];

    /// <summary>Kernel read-back after these (one per structure in the suite; every repaired kind in long mode).</summary>
    private static readonly HashSet<string> KernelKinds = ["bnobt/rec-blockcount", "cntbt/leaf-crc", "inobt/leaf-crc", "finobt/leaf-magic", "refcountbt/rec-refcount", "agfl/agfl-crc"];

    /// <summary>The suite's kinds: one per structure (a record of each free-space tree, an inobt leaf that does not
    /// verify (the chunk discovery), a finobt leaf, a refcount, an AGF counter, the AGFL, an AGI counter, a secondary
    /// superblock, a link count) and one refusal. XFBTREE_LONG_TESTS=1 runs every kind.</summary>
    private static readonly HashSet<string> ShortKinds =
    [
        "bnobt/rec-blockcount", "cntbt/leaf-crc", "inobt/leaf-crc", "finobt/leaf-magic", "refcountbt/rec-refcount",
        "bnobt/agf-freeblks", "agfl/agfl-crc", "inobt/agi-count", "sb/sb-agblocks", "nlinks/nlink-file-high", "agf/agf-magic",
    ];

    public static IEnumerable<object[]> Cases() => ScrubCorruptor.Kinds
        .Where(k => k.Tree is "bnobt" or "cntbt" or "inobt" or "finobt" or "refcountbt" or "agfl" or "nlinks" or "agf" or "agi" or "sb")
        .Where(k => k.Finding != "rmapbt" && k.Name != "agf-rmaproot")
        .Where(k => Long || ShortKinds.Contains($"{k.Tree}/{k.Name}"))
        .Select(k => new object[] { k.Tree, k.Name });

    [Theory]
    [MemberData(nameof(Cases))]
    public void RepairInPlaceFromTheScan(string tree, string name)
    {
        var kind = ScrubCorruptor.Kinds.Single(k => k.Tree == tree && k.Name == name);
        using var scratch = new RepairScratch();
        string image = scratch.CopyFixture(Fixture);
        Assert.False(WriteEngineTestSupport.HasRmapbt(image));
        output.WriteLine(ScrubCorruptor.Apply(image, kind, Ag));
        var (rc, stdout, stderr) = ScrubCli.Run(image, "--repair");
        output.WriteLine(stdout + stderr);
        Assert.DoesNotContain("internal error", stderr, StringComparison.Ordinal);
        if (kind.Finding == "nlinks") Assert.Contains("nlinks: damaged", stdout, StringComparison.Ordinal);
        else Assert.Contains($"AG {Ag} {kind.Finding}: damaged", stdout, StringComparison.Ordinal);
        Assert.False(WriteEngineTestSupport.NeedsRepair(image), "NEEDSREPAIR must be cleared after the repair");
        if (Refused.Contains($"{tree}/{name}"))
        {
            // Refused with its reason, nothing claimed.
            Assert.True(rc == 1, $"exit {rc}");
            Assert.Contains("not repaired", stdout, StringComparison.Ordinal);
            Assert.Contains("result after repair: DAMAGED", stdout, StringComparison.Ordinal);
            return;
        }
        Assert.DoesNotContain("not repaired", stdout, StringComparison.Ordinal);
        Assert.True(rc == 0, $"scrub --repair must leave the image clean: exit {rc}");
        Assert.Contains("result after repair: clean", stdout, StringComparison.Ordinal);
        var witness = RepairTools.XfsRepairCheck(image);
        Assert.True(witness.ExitCode == 0, $"xfs_repair -n after the repair: {witness}");
        if (Long || KernelKinds.Contains($"{tree}/{name}"))
        {
            KernelOracle.RequireRootAndTools();
            KernelOracle.AssertKernelWorkloadAndRepair(image, output, $"the image without an rmapbt repaired after {tree} {name}");
        }
    }

    /// <summary>Several structures of one AG damaged at once (a bnobt record, an inobt free count, a refcount, the
    /// AGF's free block count and a link count): repaired in one run, in the repair order.</summary>
    [Fact]
    public void SeveralDamagedStructuresAreRepairedInOneRun()
    {
        using var scratch = new RepairScratch();
        string image = scratch.CopyFixture(Fixture);
        foreach (var (tree, name) in new[] { ("bnobt", "rec-blockcount"), ("inobt", "rec-freecount"), ("refcountbt", "rec-refcount"), ("bnobt", "agf-freeblks"), ("nlinks", "nlink-file-high") })
        {
            output.WriteLine(ScrubCorruptor.Apply(image, ScrubCorruptor.Kinds.Single(k => k.Tree == tree && k.Name == name), Ag));
        }
        var (rc, stdout, stderr) = ScrubCli.Run(image, "--repair");
        output.WriteLine(stdout + stderr);
        Assert.True(rc == 0, $"exit {rc}");
        Assert.Contains("result after repair: clean", stdout, StringComparison.Ordinal);
        Assert.DoesNotContain("not repaired", stdout, StringComparison.Ordinal);
        var witness = RepairTools.XfsRepairCheck(image);
        Assert.True(witness.ExitCode == 0, $"xfs_repair -n after the repair: {witness}");
        KernelOracle.RequireRootAndTools();
        KernelOracle.AssertKernelWorkloadAndRepair(image, output, "the image without an rmapbt repaired after five kinds of damage");
    }
}
