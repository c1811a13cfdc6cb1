using System.Globalization;
using Xfbtree.Xfs.Tests.Repair;
using Xfbtree.Xfs.Tests.Trees;
using Xfbtree.Xfs.Tests.Write;
using Xunit.Abstractions;

namespace Xfbtree.Xfs.Tests.Online;

/// <summary>
/// The kernel as the oracle after a stress run with online repairs of every AG (and --verify-repairs): mount, read
/// every manifest file (size and SHA-256), unmount; scripts/kernel-workload.sh; xfs_repair -n; no XFS corruption or
/// shutdown line for our loop device in the kernel log. Root and loop devices are required (a missing tool fails).
/// </summary>
public sealed class OnlineRmapKernelOracleTests(ITestOutputHelper output)
{
    [Theory]
    [InlineData("aged-small", 51)]
    [InlineData("geom-bs1k", 52)]
    public void OnlineRepairedImageIsReadAndUsedByTheKernel(string fixture, int seed)
    {
        KernelOracle.RequireRootAndTools();
        using var scratch = new RepairScratch();
        string image = scratch.CopyFixture(fixture);
        string manifest = Path.Combine(scratch.Directory, "manifest.tsv");
        var (rc, stdout, stderr) = WriteStressFixtureTests.StressInProcess(new Cli.StressRequest
        {
            Image = image, Ops = 1500, Threads = 2, Seed = seed, Manifest = manifest, OnlineRepair = true, VerifyRepairs = true,
        });
        output.WriteLine(stdout + stderr);
        Assert.True(rc == 0, $"stress exit {rc}\n{stdout}\n{stderr}");
        string last = stdout.TrimEnd().Split('\n')[^1];
        Assert.StartsWith("online-repair repairs=", last, StringComparison.Ordinal);
        Assert.EndsWith(" mismatches=0 skipped=0", last, StringComparison.Ordinal);
        long repairs = long.Parse(last.Split(' ')[1].Split('=')[1], CultureInfo.InvariantCulture);
        Assert.True(repairs >= 4, $"only {repairs} online repairs ran");

        var expected = File.ReadAllLines(manifest).Select(l => l.Split('\t')).ToList();
        Assert.NotEmpty(expected);
        string marker = $"xfbtree-online-kernel-oracle-{Environment.ProcessId}-{seed}";
        // nouuid: other test runs on this machine may have a copy of the same fixture (same UUID) mounted.
        var (device, _, _) = KernelOracle.MountAndCompareManifest(scratch, image, expected, marker, "loop,nouuid");
        output.WriteLine($"kernel read {expected.Count} files on {device}: all equal to the model");

        KernelOracle.AssertKernelWorkloadAndRepair(image, output, "the online-repaired image");
        KernelOracle.AssertKernelLogClean(marker, device);
    }
}
