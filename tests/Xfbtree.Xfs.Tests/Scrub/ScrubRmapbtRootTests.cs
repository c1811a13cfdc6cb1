using Xfbtree.Xfs.Scrub;
using Xfbtree.Xfs.Tests.Online;
using Xfbtree.Xfs.Tests.Repair;
using Xfbtree.Xfs.Write;
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

    /// <summary>Online: the image opened by the write engine with AG 1's rmapbt root zeroed; two namespace writers
    /// run while the online check finds the rmapbt damaged (and nothing else of AG 1), the online repair rebuilds it
    /// from the coordinated scan and reaps the old block, and a second online check is clean; then the writers'
    /// outcomes, the offline scrub, xfs_repair -n and the kernel.</summary>
    [Fact]
    public void ADamagedRmapbtRootIsRebuiltOnlineBesideWriters()
    {
        using var scratch = new RepairScratch();
        string image = scratch.CopyFixture("fresh-4ag");
        ToolResult db = RepairTools.Exec(TreeFixtures.Tool("xfs_db"), ["-x", "-c", "agf 1", "-c", "addr rmaproot", "-c", "write -d magic 0", image]);
        Assert.True(db.ExitCode == 0, db.ToString());
        var fs = XfsFileSystem.Open(image, OnlineTestSupport.Fast);
        ScrubReport before, after;
        IReadOnlyList<ScrubRepairOutcome> outcomes;
        using (var writers = new NamespaceWriters(fs, seed: 3, threads: 2))
        {
            try
            {
                before = OnlineScrubber.Run(fs.Engine);
                outcomes = OnlineScrubber.Repair(fs.Engine, before);
                after = OnlineScrubber.Run(fs.Engine);
            }
            finally
            {
                writers.Stop();
            }
            writers.AssertHealthy();
            output.WriteLine($"writers ran {writers.Operations} operations");
        }
        foreach (ScrubFinding f in before.Findings.Where(f => f.Verdict != ScrubVerdict.Clean)) output.WriteLine("before: " + f);
        foreach (ScrubRepairOutcome o in outcomes) output.WriteLine($"repair: {o.Subject}: {(o.Repaired ? "repaired" : "not repaired")}: {o.Detail}");
        foreach (ScrubFinding f in after.Findings.Where(f => f.Verdict != ScrubVerdict.Clean)) output.WriteLine("after: " + f);
        Assert.Contains(before.Findings, f => f.Subject == "AG 1 rmapbt" && f.Verdict == ScrubVerdict.Damaged);
        Assert.DoesNotContain(before.Findings, f => f.AgNumber == 1 && f.Structure is "bnobt" or "cntbt" or "AGFL" or "inobt" && f.Verdict == ScrubVerdict.Damaged);
        Assert.Contains(outcomes, o => o.Subject == "AG 1 rmapbt" && o.Repaired);
        Assert.True(after.IsClean, "the online check after the repair must be clean");
        fs.Close();
        fs.Dispose();
        var check = ScrubCli.Run(image);
        Assert.True(check.ExitCode == 0, $"offline scrub after the online rebuild: {check.Stdout}");
        ToolResult witness = RepairTools.XfsRepairCheck(image);
        Assert.True(witness.ExitCode == 0, $"xfs_repair -n after the online rebuild: {witness}");
        RepairSafetyTests.RequireRoot();
        ToolResult workload = RepairTools.Exec(Path.Combine(RepairKernelTests.RepoRoot(), "scripts", "kernel-workload.sh"), [image]);
        Assert.True(workload.ExitCode == 0, $"kernel workload on the repaired image: {workload}");
    }
}
