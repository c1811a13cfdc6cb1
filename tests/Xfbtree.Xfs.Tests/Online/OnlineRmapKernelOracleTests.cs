using System.Globalization;
using System.Security.Cryptography;
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
        RepairSafetyTests.RequireRoot();
        foreach (string tool in new[] { "/bin/mount", "/bin/umount", "/usr/bin/findmnt", "/bin/dmesg" })
        {
            Assert.True(File.Exists(tool), $"{tool} is missing: the kernel oracle cannot run");
        }
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
        Assert.EndsWith(" mismatches=0", last, StringComparison.Ordinal);
        long repairs = long.Parse(last.Split(' ')[1].Split('=')[1], CultureInfo.InvariantCulture);
        Assert.True(repairs >= 4, $"only {repairs} online repairs ran");

        var expected = File.ReadAllLines(manifest).Select(l => l.Split('\t')).ToList();
        Assert.NotEmpty(expected);
        string mnt = Directory.CreateDirectory(Path.Combine(scratch.Directory, "mnt")).FullName;
        string marker = $"xfbtree-online-kernel-oracle-{Environment.ProcessId}-{seed}";
        File.WriteAllText("/dev/kmsg", marker + "\n");
        // nouuid: other test runs on this machine may have a copy of the same fixture (same UUID) mounted.
        TreeFixtures.Run("/bin/mount", ["-o", "loop,nouuid", image, mnt]);
        string device;
        try
        {
            device = Path.GetFileName(TreeFixtures.Run("/usr/bin/findmnt", ["-n", "-o", "SOURCE", mnt]).Trim());
            foreach (var fields in expected)
            {
                string path = Path.Combine(mnt, fields[0].TrimStart('/'));
                Assert.True(File.Exists(path), $"{fields[0]} is in the manifest but the kernel does not see it");
                using var stream = File.OpenRead(path);
                Assert.True(stream.Length.ToString(CultureInfo.InvariantCulture) == fields[1], $"{fields[0]}: the kernel sees {stream.Length} bytes, the model {fields[1]}");
                string sha = Convert.ToHexStringLower(SHA256.HashData(stream));
                Assert.True(sha == fields[2], $"{fields[0]}: the kernel reads sha256 {sha}, the model has {fields[2]}");
            }
        }
        finally
        {
            TreeFixtures.Run("/bin/umount", [mnt]);
        }
        output.WriteLine($"kernel read {expected.Count} files on {device}: all equal to the model");

        var workload = RepairTools.Exec(Path.Combine(RepairKernelTests.RepoRoot(), "scripts", "kernel-workload.sh"), [image]);
        output.WriteLine(workload.Stdout + workload.Stderr);
        Assert.True(workload.ExitCode == 0, $"kernel workload on the online-repaired image: {workload}");
        var repair = RepairTools.XfsRepairCheck(image);
        Assert.True(repair.ExitCode == 0, $"xfs_repair -n: {repair}");
        string log = TreeFixtures.Run("/bin/dmesg", []);
        int start = log.LastIndexOf(marker, StringComparison.Ordinal);
        Assert.True(start >= 0, "our marker is not in the kernel log: cannot tell what the kernel said");
        var ours = log[start..].Split('\n').Where(l => l.Contains($"XFS ({device})", StringComparison.Ordinal)).ToList();
        Assert.DoesNotContain(ours, l => l.Contains("corrupt", StringComparison.OrdinalIgnoreCase)
                                         || l.Contains("shutdown", StringComparison.OrdinalIgnoreCase)
                                         || l.Contains("shut down", StringComparison.OrdinalIgnoreCase)
                                         || l.Contains("Internal error", StringComparison.Ordinal)
                                         || l.Contains("metadata I/O error", StringComparison.Ordinal));
    }
}
