using System.Diagnostics;
using Xfbtree.Xfs.Tests.Repair;
using Xunit.Abstractions;

namespace Xfbtree.Xfs.Tests.Mount;

/// <summary><c>xfbtree mount --repair-cpu-share</c>: the pace of the mount's own repairs and of the scrubs and repairs
/// asked through it.</summary>
public sealed class MountRepairPaceTests(ITestOutputHelper output)
{
    [FuseFact]
    public void RepairCpuShare_OutsideTheRangeIsRefused()
    {
        using var scratch = new RepairScratch();
        string image = scratch.CopyFixture("fresh-4ag");
        string mnt = Directory.CreateDirectory(Path.Combine(scratch.Directory, "mnt")).FullName;
        foreach (string bad in new[] { "0", "-0.5", "1.5", "NaN" })
        {
            ToolResult r = RepairTools.Xfbtree("mount", image, mnt, "--repair-cpu-share", bad);
            Assert.True(r.ExitCode == 2, r.ToString());
            string line = r.Stderr.TrimEnd('\n');
            Assert.DoesNotContain('\n', line);
            Assert.StartsWith("xfbtree: mount: --repair-cpu-share ", line, StringComparison.Ordinal);
            Assert.Contains("must be more than 0 and at most 1", line, StringComparison.Ordinal);
        }
        Assert.DoesNotContain($" {mnt} ", File.ReadAllText("/proc/self/mounts"), StringComparison.Ordinal);
    }

    /// <summary>The rotation runs every 50 ms at a share so small that its first rest lasts minutes: while requests are
    /// served no repair finishes (an unpaced rotation would finish several during the writes), and the unmount ends
    /// the rest at once (the pace waits on the mount's cancellation, not a sleep): the server exits cleanly within
    /// seconds, the cancelled repair not counted as failed, and the image checks clean.</summary>
    [FuseFact]
    public void PacedRotation_ServesRequestsAndEndsPromptlyAtUnmount()
    {
        using var scratch = new RepairScratch();
        string image = scratch.CopyFixture("fresh-4ag");
        string mnt = Directory.CreateDirectory(Path.Combine(scratch.Directory, "mnt")).FullName;
        using var mount = MountedImage.Start(image, mnt, "--online-repair-every", "0.05", "--repair-cpu-share", "0.00001");
        for (int i = 0; i < 40; i++)
        {
            File.WriteAllBytes(Path.Combine(mnt, $"f{i}"), new byte[(i + 1) * 4096]);
        }
        Assert.Equal(40, Directory.GetFiles(mnt).Length);
        var clock = Stopwatch.StartNew();
        var (exit, stdout, stderr) = mount.Unmount();
        output.WriteLine($"unmount to exit: {clock.Elapsed.TotalSeconds:F1} s\n{stdout}\n{stderr}");
        Assert.True(exit == 0, $"exit {exit}\n{stderr}");
        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(30), $"the server took {clock.Elapsed.TotalSeconds:F1} s to end after the unmount");
        Assert.Contains("online-repair repairs=0 ", stdout, StringComparison.Ordinal);
        Assert.Contains(" failed=0", stdout, StringComparison.Ordinal);
        Assert.DoesNotContain("rmapbt rebuilt", stderr, StringComparison.Ordinal);
        MountWitnesses.AssertClean(image);
    }

    /// <summary>A request's own <c>--cpu-share</c> overrides the mount's: on a mount paced at 0.00001 (a scrub would
    /// rest for hours), <c>scrub DIR --cpu-share 1</c> and <c>rmap repair --online DIR --ag 0 --cpu-share 1</c> finish
    /// at once and clean. Out of range, or on an image, the option is refused (one line, exit 2).</summary>
    [FuseFact]
    public void RequestCpuShare_OverridesTheMountsPace()
    {
        using var scratch = new RepairScratch();
        string image = scratch.CopyFixture("fresh-4ag");
        string spare = scratch.CopyFixture("fresh-4ag");
        string mnt = Directory.CreateDirectory(Path.Combine(scratch.Directory, "mnt")).FullName;
        foreach (string[] args in new[]
        {
            new[] { "scrub", spare, "--cpu-share", "0.5" },
            new[] { "rmap", "repair", spare, "--cpu-share", "0.5" },
        })
        {
            ToolResult r = RepairTools.Xfbtree(args);
            Assert.True(r.ExitCode == 2 && r.Stderr.Contains("--cpu-share", StringComparison.Ordinal), r.ToString());
        }
        using (var mount = MountedImage.Start(image, mnt, "--repair-cpu-share", "0.00001"))
        {
            File.WriteAllBytes(Path.Combine(mnt, "f"), new byte[64 << 10]);
            foreach (string bad in new[] { "0", "1.5" })
            {
                ToolResult r = RepairTools.Xfbtree("scrub", mnt, "--cpu-share", bad);
                Assert.True(r.ExitCode == 2 && r.Stderr.Contains("must be more than 0 and at most 1", StringComparison.Ordinal), r.ToString());
            }
            var clock = Stopwatch.StartNew();
            ToolResult scrub = RepairTools.Xfbtree("scrub", mnt, "--cpu-share", "1");
            output.WriteLine($"scrub at 1: {clock.Elapsed.TotalSeconds:F1} s\n{scrub}");
            Assert.True(scrub.ExitCode == 0, scrub.ToString());
            ToolResult repair = RepairTools.Xfbtree("rmap", "repair", "--online", mnt, "--ag", "0", "--cpu-share", "1");
            output.WriteLine($"scrub and repair at 1: {clock.Elapsed.TotalSeconds:F1} s\n{repair}");
            Assert.True(repair.ExitCode == 0, repair.ToString());
            Assert.True(clock.Elapsed < TimeSpan.FromSeconds(120), $"took {clock.Elapsed}");
            mount.Unmount();
        }
        MountWitnesses.AssertClean(image);
    }
}
