using Xfbtree.Cli;
using Xfbtree.Xfs.Online;
using Xfbtree.Xfs.Scrub;
using Xfbtree.Xfs.Tests.Repair;
using Xfbtree.Xfs.Tests.Write;
using Xfbtree.Xfs.Write;
using Xunit.Abstractions;

namespace Xfbtree.Xfs.Tests.Online;

/// <summary><c>xfbtree stress --online-repair --structures LIST</c>: the list is parsed and checked, the link counts
/// are checked and repaired (and verified) beside the workload, and per-AG btrees whose online repair is not built
/// yet are said to be not exercised.</summary>
public sealed class OnlineStressStructuresTests(ITestOutputHelper output) : IDisposable
{
    private readonly RepairScratch scratch = new();

    public void Dispose() => scratch.Dispose();

    [Theory]
    [InlineData("rmapbt,foo", "unknown structure 'foo' (known: rmapbt,bnobt,cntbt,inobt,finobt,refcountbt,nlinks)")]
    [InlineData("nlinks,", "an empty name")]
    public void StressStructuresUnknownNameIsAUsageError(string list, string message)
    {
        string image = scratch.CopyFixture("fresh-4ag");
        ToolResult r = RepairTools.Xfbtree("stress", image, "--ops", "1", "--online-repair", "--structures", list);
        Assert.True(r.ExitCode == 2, $"exit {r}");
        Assert.Contains(message, r.Stderr, StringComparison.Ordinal);
        Assert.Single(r.Stderr.Trim().Split('\n'));
    }

    [Fact]
    public void StressStructuresWithoutOnlineRepairIsAUsageError()
    {
        string image = scratch.CopyFixture("fresh-4ag");
        ToolResult r = RepairTools.Xfbtree("stress", image, "--ops", "1", "--structures", "nlinks");
        Assert.True(r.ExitCode == 2, $"exit {r}");
        Assert.Contains("--structures needs --online-repair", r.Stderr, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("--repair-cpu-share", "0", "--repair-cpu-share 0: must be more than 0 and at most 1")]
    [InlineData("--repair-cpu-share", "1.5", "--repair-cpu-share 1.5: must be more than 0 and at most 1")]
    [InlineData("--repair-cpu-share", "NaN", "--repair-cpu-share NaN: must be more than 0 and at most 1")]
    public void StressRepairCpuShareOutOfRangeIsAUsageError(string option, string value, string message)
    {
        string image = scratch.CopyFixture("fresh-4ag");
        ToolResult r = RepairTools.Xfbtree("stress", image, "--ops", "1", "--online-repair", "--structures", "nlinks", option, value);
        Assert.True(r.ExitCode == 2, $"exit {r}");
        Assert.Contains(message, r.Stderr, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("--repair-cpu-share", "0.5")]
    [InlineData("--no-verify-tree-rebuilds", null)]
    public void StressRepairOptionsWithoutOnlineRepairAreUsageErrors(string option, string? value)
    {
        string image = scratch.CopyFixture("fresh-4ag");
        string[] args = value is null ? ["stress", image, "--ops", "1", option] : ["stress", image, "--ops", "1", option, value];
        ToolResult r = RepairTools.Xfbtree(args);
        Assert.True(r.ExitCode == 2, $"exit {r}");
        Assert.Contains($"{option} needs --online-repair", r.Stderr, StringComparison.Ordinal);
    }

    [Fact]
    public void StressStructuresParseEveryName()
    {
        Assert.Equal(OnlineRepairStructures.All, OnlineRepairStructureNames.Parse(OnlineRepairStructureNames.Known));
        Assert.Equal(OnlineRepairStructures.Nlinks | OnlineRepairStructures.Rmapbt, OnlineRepairStructureNames.Parse("nlinks, rmapbt"));
        Assert.Throws<FormatException>(() => OnlineRepairStructureNames.Parse("RMAPBT"));
        Assert.Throws<FormatException>(() => OnlineRepairStructureNames.Parse(""));
    }

    /// <summary>Two wrong link counts (too high on a file and on a directory, safe under any workload operation):
    /// stress with the link counts and the free-space trees finds and repairs both, verifies with the offline scrub,
    /// rebuilds the bnobt and cntbt of every AG (each verified); afterwards the offline scrub and xfs_repair -n are
    /// clean.</summary>
    [Fact]
    public void StressStructuresNlinksRepairsWrongCountsBesideTheWorkload()
    {
        string image = scratch.CopyFixture("aged-small");
        using (XfsFileSystem fs = XfsFileSystem.Open(image, OnlineTestSupport.Fast))
        {
            OnlineLinkCountTests.SetNlink(fs, fs.Namespace.Lookup("/feat/fragmented.bin"), 3);
            OnlineLinkCountTests.SetNlink(fs, fs.Namespace.Lookup("/feat/reflink"), 9);
            fs.Close();
        }
        var (rc, stdout, stderr) = WriteStressFixtureTests.StressInProcess(new StressRequest
        {
            Image = image, Ops = 300, Threads = 2, Seed = 17, Sync = false, OnlineRepair = true, VerifyRepairs = true,
            Structures = OnlineRepairStructures.Nlinks | OnlineRepairStructures.Bnobt,
        });
        output.WriteLine(stdout + stderr);
        Assert.True(rc == 0, $"stress exit {rc}\n{stdout}\n{stderr}");
        Assert.Matches(@"online-repair: nlinks: [1-9]\d* checks, 2 wrong link counts found, 2 repaired, [1-9]\d* verified", stdout);
        Assert.Matches(@"online-repair: AG trees: [1-9]\d* repairs of bnobt, [1-9]\d* verified, \d+ left out for lack of room, 0 problems", stdout);
        Assert.DoesNotContain("not exercised", stdout, StringComparison.Ordinal);
        Assert.Matches(@"online-repair repairs=0 applied=0 ignored=0 mismatches=0 skipped=0\s*$", stdout);
        using (XfsImage xfs = XfsImage.Open(image))
        {
            ScrubReport report = Scrubber.Run(xfs);
            Assert.True(report.LinkMismatchTotal == 0, $"offline scrub: {report.Findings.Single(f => f.Structure == "nlinks")}");
        }
        ToolResult repair = RepairTools.XfsRepairCheck(image);
        Assert.True(repair.ExitCode == 0, $"xfs_repair -n: {repair}");
    }

    /// <summary>On a filesystem without reflink the refcountbt is accepted but not exercised, and the run says so.</summary>
    [Fact]
    public void StressStructuresRefcountbtWithoutReflinkIsNotExercised()
    {
        string image = Path.Combine(scratch.Directory, "noreflink.img");
        RepairTools.MkfsSmall(image, 64L << 20, "-m", "crc=1,rmapbt=1,reflink=0,finobt=1");
        var (rc, stdout, stderr) = WriteStressFixtureTests.StressInProcess(new StressRequest
        {
            Image = image, Ops = 60, Threads = 2, Seed = 3, Sync = false, OnlineRepair = true,
            Structures = OnlineRepairStructures.Refcountbt | OnlineRepairStructures.Inobt,
        });
        output.WriteLine(stdout + stderr);
        Assert.True(rc == 0, $"stress exit {rc}\n{stdout}\n{stderr}");
        Assert.Contains("online-repair: refcountbt: accepted, not exercised (not on this filesystem: no reflink)", stdout, StringComparison.Ordinal);
        Assert.Contains("online-repair: not exercised: refcountbt (not on this filesystem: no reflink)", stdout, StringComparison.Ordinal);
        Assert.Matches(@"online-repair: AG trees: [1-9]\d* repairs of inobt, ", stdout);
        ToolResult repair = RepairTools.XfsRepairCheck(image);
        Assert.True(repair.ExitCode == 0, $"xfs_repair -n: {repair}");
    }
}
