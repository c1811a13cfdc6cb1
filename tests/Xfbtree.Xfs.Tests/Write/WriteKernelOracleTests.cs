using Xfbtree.Xfs.Tests.Repair;
using Xfbtree.Xfs.Tests.Trees;
using Xunit.Abstractions;

namespace Xfbtree.Xfs.Tests.Write;

/// <summary>
/// The kernel as the oracle of the write engine (root, loop devices): after a stress run with <c>--manifest</c>,
/// mount the image, compare every manifest line with what the kernel shows (type, mode, owner, link count, size, the
/// bytes by SHA-256, symlink targets, device numbers, extended attributes by getfattr); unmount; then
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
        var data = new TheoryData<string, int> { { "geom-bs1k", 42 }, { "geom-nrext64", 43 }, { "geom-bs1k-normap", 44 } };
        if (Environment.GetEnvironmentVariable("XFBTREE_LONG_TESTS") == "1") data.Add("aged-small", 41);
        return data;
    }

    [Theory]
    [MemberData(nameof(Images))]
    public void WriteKernelReadsWhatTheEngineWroteAndKeepsWorkingOnIt(string fixture, int seed)
    {
        KernelOracle.RequireRootAndTools();
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
        Assert.Equal(Xfbtree.Cli.Stress.StressModel.ManifestHeader, expected[0][0]);
        Assert.All(expected.Skip(1), f => Assert.Equal(9, f.Length));
        // The workload's namespace operations reached the image: renamed files and symlinks (special files are
        // rarer draws; the namespace tests cover them deterministically).
        var lines = expected.Skip(1).ToList();
        Assert.Contains(lines, f => f[0].Contains("/r", StringComparison.Ordinal) && f[1] == "f");
        Assert.Contains(lines, f => f[1] == "l");
        // ... hard links (a file with several names, each its own line) and extended attributes.
        Assert.Contains(lines, f => f[1] == "f" && f[5] != "1");
        Assert.Contains(lines, f => f[8] != "-");
        output.WriteLine($"manifest: {lines.Count} paths, {lines.Count(f => f[1] == "f" && f[5] != "1")} names of hard-linked files, " +
                         $"{lines.Count(f => f[8] != "-")} with extended attributes");

        // A copy of a fixture has the fixture's UUID, and the kernel refuses to mount a second filesystem with a UUID
        // already mounted (other tests and other processes mount copies of the same fixtures): give ours its own.
        TreeFixtures.Run(TreeFixtures.Tool("xfs_admin"), ["-U", "generate", image]);
        string marker = $"xfbtree-write-kernel-oracle-{Environment.ProcessId}-{seed}";
        var (device, compared, bytes) = KernelOracle.MountAndCompareManifest(scratch, image, expected, marker, "loop");
        output.WriteLine($"kernel read {compared} files ({bytes} bytes) on {device}: all equal to the model");

        KernelOracle.AssertKernelWorkloadAndRepair(image, output, "the engine's image");
        KernelOracle.AssertKernelLogClean(marker, device, output);
    }
}
