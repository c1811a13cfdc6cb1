using Xfbtree.Xfs.Tests.Trees;
using Xunit.Abstractions;

namespace Xfbtree.Xfs.Tests.Repair;

/// <summary>
/// The kernel as the last witness (xfs_repair -n 6.1 misses OWN_AG coverage, high keys and the unwritten bit in
/// keys; the kernel shuts down on them at the first delete-and-write workload): mount a repaired image read-write,
/// delete a third of the files, write new ones, reflink one, unmount; xfs_repair -n must be clean and the kernel log
/// free of XFS corruption and shutdown messages (scripts/kernel-workload.sh). Needs root and loop devices.
/// </summary>
public sealed class RepairKernelTests(ITestOutputHelper output)
{
    [Theory]
    [InlineData("aged-small", "rec-owner")]
    [InlineData("aged-small", "agf-root")]
    [InlineData("geom-bs1k", "leaf-zero")]
    public void KernelAcceptsRepairedImageUnderDeleteAndWriteWorkload(string fixture, string kind)
    {
        RepairSafetyTests.RequireRoot();
        using var scratch = new RepairScratch();
        string image = scratch.CopyFixture(fixture);
        Assert.Equal(0, RepairTools.Corrupt(image, kind).ExitCode);
        ToolResult repair = RepairTools.Xfbtree("rmap", "repair", image);
        Assert.True(repair.ExitCode == 0, repair.ToString());
        ToolResult workload = RepairTools.Exec(Path.Combine(RepoRoot(), "scripts", "kernel-workload.sh"), [image]);
        output.WriteLine(workload.Stdout + workload.Stderr);
        Assert.True(workload.ExitCode == 0, $"kernel workload on the repaired image: {workload}");
    }

    /// <summary>The oracle fails closed: no writable kernel log or no readable dmesg is "could not run" (exit 2), never a pass.</summary>
    [Theory]
    [InlineData("XFBTREE_KMSG", "/nonexistent-xfbtree-dir/kmsg", "cannot write the marker")]
    [InlineData("XFBTREE_DMESG", "/bin/false", "dmesg cannot be read")]
    public void KernelWorkloadFailsLoudlyWithoutTheKernelLog(string variable, string value, string cause)
    {
        RepairSafetyTests.RequireRoot();
        using var scratch = new RepairScratch();
        string image = scratch.CopyFixture("fresh-4ag");
        ToolResult workload = RepairTools.Exec(Path.Combine(RepoRoot(), "scripts", "kernel-workload.sh"), [image],
                                               new Dictionary<string, string> { [variable] = value });
        Assert.True(workload.ExitCode == 2, workload.ToString());
        Assert.Contains(cause, workload.Stderr, StringComparison.Ordinal);
        Assert.Empty(RepairTools.DifferingRanges(TreeFixtures.Image("fresh-4ag"), image, 4096));   // refused before mounting
    }

    internal static string RepoRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            if (File.Exists(Path.Combine(dir.FullName, "Xfbtree.sln"))) return dir.FullName;
        }
        throw new DirectoryNotFoundException("repository root (Xfbtree.sln) not found above the test binaries");
    }
}
