using System.Globalization;
using System.Security.Cryptography;
using Xfbtree.Xfs.Tests.Repair;
using Xfbtree.Xfs.Tests.Trees;
using Xunit.Abstractions;

namespace Xfbtree.Xfs.Tests.Write;

/// <summary>
/// The kernel as the oracle, shared by the kernel-oracle tests (root, loop devices): mount an image and compare every
/// manifest file (size and SHA-256) with what the kernel reads; scripts/kernel-workload.sh and xfs_repair -n; no XFS
/// corruption or shutdown line for our loop device in the kernel log (read by sequence number from /dev/kmsg,
/// <see cref="KernelLog"/>). A missing tool or privilege, or a kernel log that cannot be read, fails the test.
/// </summary>
internal static class KernelOracle
{
    /// <summary>Root and the mount tools are required: a missing one fails.</summary>
    internal static void RequireRootAndTools()
    {
        RepairSafetyTests.RequireRoot();
        foreach (string tool in new[] { "/bin/mount", "/bin/umount", "/usr/bin/findmnt" })
        {
            Assert.True(File.Exists(tool), $"{tool} is missing: the kernel oracle cannot run");
        }
    }

    /// <summary>Writes <paramref name="marker"/> to the kernel log, mounts <paramref name="image"/> with
    /// <paramref name="mountOptions"/>, compares every manifest entry with what the kernel reads, unmounts. Returns the
    /// loop device, the number of files compared and their bytes.</summary>
    internal static (string Device, int Compared, long Bytes) MountAndCompareManifest(RepairScratch scratch, string image,
        List<string[]> expected, string marker, string mountOptions)
    {
        string mnt = Directory.CreateDirectory(Path.Combine(scratch.Directory, "mnt")).FullName;
        KernelLog.Mark(marker);
        TreeFixtures.Run("/bin/mount", ["-o", mountOptions, image, mnt]);
        string device;
        int compared = 0;
        long bytes = 0;
        try
        {
            device = Path.GetFileName(TreeFixtures.Run("/usr/bin/findmnt", ["-n", "-o", "SOURCE", mnt]).Trim());
            foreach (var fields in expected)
            {
                string path = Path.Combine(mnt, fields[0].TrimStart('/'));
                Assert.True(File.Exists(path), $"{fields[0]} is in the manifest but the kernel does not see it");
                using var stream = File.OpenRead(path);
                Assert.True(stream.Length.ToString(CultureInfo.InvariantCulture) == fields[1],
                    $"{fields[0]}: the kernel sees {stream.Length} bytes, the model {fields[1]}");
                string sha = Convert.ToHexStringLower(SHA256.HashData(stream));
                Assert.True(sha == fields[2], $"{fields[0]}: the kernel reads sha256 {sha}, the model has {fields[2]}");
                compared++;
                bytes += stream.Length;
            }
        }
        finally
        {
            TreeFixtures.Run("/bin/umount", [mnt]);
        }
        return (device, compared, bytes);
    }

    /// <summary>scripts/kernel-workload.sh on the image, then xfs_repair -n; both must exit 0.</summary>
    internal static void AssertKernelWorkloadAndRepair(string image, ITestOutputHelper output, string workloadWhat)
    {
        var workload = RepairTools.Exec(Path.Combine(RepairKernelTests.RepoRoot(), "scripts", "kernel-workload.sh"), [image]);
        output.WriteLine(workload.Stdout + workload.Stderr);
        Assert.True(workload.ExitCode == 0, $"kernel workload on {workloadWhat}: {workload}");
        var repair = RepairTools.XfsRepairCheck(image);
        Assert.True(repair.ExitCode == 0, $"xfs_repair -n: {repair}");
    }

    /// <summary>The kernel log lines for <paramref name="device"/> after <paramref name="marker"/>: none may tell of
    /// corruption, shutdown, an internal error or a metadata I/O error; written to <paramref name="print"/> first when
    /// given.</summary>
    internal static void AssertKernelLogClean(string marker, string device, ITestOutputHelper? print = null)
    {
        var ours = KernelLog.DeviceMessagesSince(marker, device);
        print?.WriteLine(string.Join('\n', ours));
        Assert.DoesNotContain(ours, l => l.Contains("corrupt", StringComparison.OrdinalIgnoreCase)
                                         || l.Contains("shutdown", StringComparison.OrdinalIgnoreCase)
                                         || l.Contains("shut down", StringComparison.OrdinalIgnoreCase)
                                         || l.Contains("Internal error", StringComparison.Ordinal)
                                         || l.Contains("metadata I/O error", StringComparison.Ordinal));
    }
}
