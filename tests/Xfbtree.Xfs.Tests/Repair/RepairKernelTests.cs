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

    /// <summary>The oracle fails closed: a kernel log that cannot be written, or one that can be written but not read as
    /// /dev/kmsg is (here a plain file), is "could not run" (exit 2), never a pass.</summary>
    [Theory]
    [InlineData(false, "cannot write to")]
    [InlineData(true, "cannot be read")]
    public void KernelWorkloadFailsLoudlyWithoutTheKernelLog(bool writable, string cause)
    {
        RepairSafetyTests.RequireRoot();
        using var scratch = new RepairScratch();
        string image = scratch.CopyFixture("fresh-4ag");
        string kmsg = writable ? Path.Combine(scratch.Directory, "not-a-kernel-log") : "/nonexistent-xfbtree-dir/kmsg";
        ToolResult workload = RepairTools.Exec(Path.Combine(RepoRoot(), "scripts", "kernel-workload.sh"), [image],
                                               new Dictionary<string, string> { ["XFBTREE_KMSG"] = kmsg });
        Assert.True(workload.ExitCode == 2, workload.ToString());
        Assert.Contains(cause, workload.Stderr, StringComparison.Ordinal);
        Assert.Empty(RepairTools.DifferingRanges(TreeFixtures.Image("fresh-4ag"), image, 4096));   // refused before mounting
    }

    /// <summary>
    /// Another program clearing the kernel log (dmesg -C) while an oracle runs: dmesg no longer shows the oracle's
    /// marker (which made full runs fail while other programs shared the machine), but the log read by sequence
    /// number from /dev/kmsg still holds it and everything after it.
    /// </summary>
    [Fact]
    public void KernelLogReadBySequenceSurvivesAClear()
    {
        RepairSafetyTests.RequireRoot();
        string marker = $"xfbtree-kernel-log-clear-{Environment.ProcessId}-{Guid.NewGuid():N}";
        Write.KernelLog.Mark(marker);
        TreeFixtures.Run("/bin/dmesg", ["-C"]);
        Assert.DoesNotContain(marker, TreeFixtures.Run("/bin/dmesg", []), StringComparison.Ordinal);
        Assert.Equal(marker, Write.KernelLog.Since(marker)[0]);
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
