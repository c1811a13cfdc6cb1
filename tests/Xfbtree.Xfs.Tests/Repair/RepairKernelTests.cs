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

    internal static string RepoRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            if (File.Exists(Path.Combine(dir.FullName, "Xfbtree.sln"))) return dir.FullName;
        }
        throw new DirectoryNotFoundException("repository root (Xfbtree.sln) not found above the test binaries");
    }
}
