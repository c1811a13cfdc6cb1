using System.Security.Cryptography;
using Xfbtree.Xfs.Tests.Repair;
using Xfbtree.Xfs.Tests.Trees;
using Xfbtree.Xfs.Write.Stress;
using Xunit.Abstractions;

namespace Xfbtree.Xfs.Tests.Write;

/// <summary>
/// The kernel as the oracle of the write engine (root, loop devices): after a stress run with <c>--manifest</c>,
/// mount the image, read every manifest file and compare size and SHA-256; unmount; then
/// scripts/kernel-workload.sh (mounts again, deletes a third of the files, writes and reflinks new ones, unmounts,
/// xfs_repair -n, kernel log); finally xfs_repair -n, and no XFS corruption or shutdown line for our loop device.
/// A missing tool or privilege fails the test.
/// </summary>
public sealed class WriteKernelOracleTests(ITestOutputHelper output)
{
    /// <summary>geom-bs1k and geom-nrext64; aged-small too with XFBTREE_LONG_TESTS=1 (its kernel workload deletes
    /// about 6000 files, some 40 s).</summary>
    public static TheoryData<string, int> Images()
    {
        var data = new TheoryData<string, int> { { "geom-bs1k", 42 }, { "geom-nrext64", 43 } };
        if (Environment.GetEnvironmentVariable("XFBTREE_LONG_TESTS") == "1") data.Add("aged-small", 41);
        return data;
    }

    [Theory]
    [MemberData(nameof(Images))]
    public void WriteKernelReadsWhatTheEngineWroteAndKeepsWorkingOnIt(string fixture, int seed)
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
            Image = image, Ops = 800, Threads = 2, Seed = seed, Manifest = manifest,
        });
        output.WriteLine(stdout + stderr);
        Assert.True(rc == 0, $"stress exit {rc}\n{stdout}\n{stderr}");
        var expected = File.ReadAllLines(manifest).Select(l => l.Split('\t')).ToList();
        Assert.NotEmpty(expected);
        Assert.All(expected, f => Assert.Equal(3, f.Length));

        string mnt = Directory.CreateDirectory(Path.Combine(scratch.Directory, "mnt")).FullName;
        string marker = $"xfbtree-write-kernel-oracle-{Environment.ProcessId}-{seed}";
        File.WriteAllText("/dev/kmsg", marker + "\n");
        TreeFixtures.Run("/bin/mount", ["-o", "loop", image, mnt]);
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
                Assert.True(stream.Length.ToString(System.Globalization.CultureInfo.InvariantCulture) == fields[1],
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
        output.WriteLine($"kernel read {compared} files ({bytes} bytes) on {device}: all equal to the model");

        var workload = RepairTools.Exec(Path.Combine(RepairKernelTests.RepoRoot(), "scripts", "kernel-workload.sh"), [image]);
        output.WriteLine(workload.Stdout + workload.Stderr);
        Assert.True(workload.ExitCode == 0, $"kernel workload on the engine's image: {workload}");

        var repair = RepairTools.XfsRepairCheck(image);
        Assert.True(repair.ExitCode == 0, $"xfs_repair -n: {repair}");
        string log = TreeFixtures.Run("/bin/dmesg", []);
        int start = log.LastIndexOf(marker, StringComparison.Ordinal);
        Assert.True(start >= 0, "our marker is not in the kernel log: cannot tell what the kernel said");
        var ours = log[start..].Split('\n').Where(l => l.Contains($"XFS ({device})", StringComparison.Ordinal)).ToList();
        output.WriteLine(string.Join('\n', ours));
        Assert.DoesNotContain(ours, l => l.Contains("corrupt", StringComparison.OrdinalIgnoreCase)
                                         || l.Contains("shutdown", StringComparison.OrdinalIgnoreCase)
                                         || l.Contains("shut down", StringComparison.OrdinalIgnoreCase)
                                         || l.Contains("Internal error", StringComparison.Ordinal)
                                         || l.Contains("metadata I/O error", StringComparison.Ordinal));
    }
}
