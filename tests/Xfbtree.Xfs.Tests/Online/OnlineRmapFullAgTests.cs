using Xfbtree.Xfs.Format;
using Xfbtree.Xfs.Online;
using Xfbtree.Xfs.Tests.Repair;
using Xfbtree.Xfs.Tests.Trees;
using Xfbtree.Xfs.Tests.Write;
using Xfbtree.Xfs.Write;
using Xfbtree.Cli.Stress;
using Xunit.Abstractions;

namespace Xfbtree.Xfs.Tests.Online;

/// <summary>
/// Online repair of an almost full AG: the AG holding the internal log of a 512 MiB image with 32 AGs (4 KiB blocks)
/// has 5 free blocks and an empty AGFL, the one of a 512 MiB image with 64 KiB blocks about 50. The new rmapbt takes
/// free space (with the rmapbt's reservation), then the old tree's blocks (they hold no new record), then the AGFL;
/// when even that is not enough, the repair says so once, changes nothing and the AG stays healthy.
/// </summary>
public sealed class OnlineRmapFullAgTests(ITestOutputHelper output) : IDisposable
{
    private readonly RepairScratch scratch = new();

    public void Dispose() => scratch.Dispose();

    /// <summary>mkfs.xfs with its test-only small-log override (a 512 MiB image is otherwise refused for the log).</summary>
    private string Mkfs(string name, params string[] options)
    {
        string image = Path.Combine(scratch.Directory, name);
        TreeFixtures.Run("/usr/bin/truncate", ["-s", "512M", image]);
        TreeFixtures.Run("/usr/bin/env", ["TEST_DIR=1", "TEST_DEV=1", "QA_CHECK_FS=1", TreeFixtures.Tool("mkfs.xfs"), "-q", "-f", .. options, "-m", "crc=1,rmapbt=1,reflink=1,finobt=1", image]);
        return image;
    }

    /// <summary>The AG holding the internal log, and its free blocks and AGFL count (checked as the test's premise).</summary>
    private static (uint Agno, uint Free, uint FlCount) LogAg(string image)
    {
        using var xfs = XfsImage.Open(image);
        uint agno = xfs.Geometry.FsbToAgno(xfs.Superblock.LogStart);
        Agf agf = xfs.ReadAgf(agno);
        return (agno, agf.FreeBlocks, agf.FlCount);
    }

    [Theory]
    [InlineData("agcount32-4k", new[] { "-d", "agcount=32" }, 16u, 8u)]
    [InlineData("bs64k", new[] { "-b", "size=65536" }, 2u, 64u)]
    public void StressWithOnlineRepairsRebuildsTheAlmostFullLogAg(string name, string[] mkfs, uint expectedAg, uint atMostFree)
    {
        string image = Mkfs(name + ".img", mkfs);
        var (agno, free, flcount) = LogAg(image);
        output.WriteLine($"log AG {agno}: {free} free blocks, AGFL {flcount}");
        Assert.Equal(expectedAg, agno);
        Assert.True(free <= atMostFree, $"AG {agno} has {free} free blocks: not the almost full AG the test is about");
        var (rc, stdout, stderr) = WriteStressFixtureTests.StressInProcess(new Xfbtree.Cli.StressRequest
        {
            Image = image, Ops = 100, Threads = 1, Seed = 1, Sync = false, OnlineRepair = true, VerifyRepairs = true,
        });
        output.WriteLine(stdout + stderr);
        Assert.True(rc == 0, $"stress exit {rc}\n{stdout}\n{stderr}");
        Assert.DoesNotContain("online-repair: retried:", stdout, StringComparison.Ordinal);
        Assert.Contains("0 failed cleanly and retried", stdout, StringComparison.Ordinal);
        Assert.Matches(@"online-repair repairs=\d+ applied=\d+ ignored=\d+ mismatches=0 skipped=0", stdout);
        WriteEngineTestSupport.AssertOraclesClean(image, "after the stress run");
    }

    /// <summary>One repair of the almost full AG on its own: its free space is all the free list's, so the new tree
    /// lives in the old tree's block (it failed with "no free space for 1 more blocks of the new rmapbt").</summary>
    [Fact]
    public void OnlineRepairOfTheAlmostFullAgReusesTheOldTreeBlocks()
    {
        string image = Mkfs("agcount32.img", "-d", "agcount=32");
        var (agno, free, _) = LogAg(image);
        using (var fs = XfsFileSystem.Open(image, OnlineTestSupport.Fast))
        {
            uint oldRoot = OnlineTestSupport.RmapRoot(fs.Engine, agno).Root;
            OnlineRmapRepairResult result = OnlineRmapRepair.Run(fs.Engine, agno);
            output.WriteLine(result.ToString());
            Assert.Equal(1, result.NewTreeBlocks);
            Assert.Equal(1, result.OldBlocksReused);
            Assert.Equal(oldRoot, OnlineTestSupport.RmapRoot(fs.Engine, agno).Root);
            Assert.Equal(free, fs.Engine.Image.ReadAgf(agno).FreeBlocks);
            Assert.False(fs.Engine.Ag(agno).IsSick);
            OnlineTestSupport.AssertClean(OnlineTestSupport.OfflineCheck(fs.Engine, image, agno, scratch.Directory), "after the repair");
            fs.Close();
        }
        WriteEngineTestSupport.AssertOraclesClean(image, "after close");
    }

    /// <summary>No room at all (the old tree's blocks kept out through the test knob: free space 5 blocks, all
    /// needed by the free list, AGFL empty): one clear error, nothing changed, the AG healthy and still writable.</summary>
    [Fact]
    public void OnlineRepairWithNoRoomSaysSoAndLeavesTheAgHealthy()
    {
        string image = Mkfs("agcount32.img", "-d", "agcount=32");
        var (agno, _, _) = LogAg(image);
        using (var fs = XfsFileSystem.Open(image, OnlineTestSupport.Fast))
        {
            Agf before = fs.Engine.Image.ReadAgf(agno);
            var e = Assert.Throws<OnlineRepairNoSpaceException>(() =>
                OnlineRmapRepair.Run(fs.Engine, agno, new OnlineRmapRepairOptions { ReuseOldTreeBlocks = false }));
            output.WriteLine(e.Message);
            Assert.Equal(agno, e.AgNumber);
            Assert.StartsWith($"AG {agno}: no room for the new rmapbt: it needs 1 blocks", e.Message, StringComparison.Ordinal);
            Assert.EndsWith("the AG was left as it was", e.Message, StringComparison.Ordinal);
            Assert.DoesNotContain("\n", e.Message, StringComparison.Ordinal);
            Agf after = fs.Engine.Image.ReadAgf(agno);
            Assert.Equal((before.RmapRoot, before.FreeBlocks, before.FlCount, before.RmapBlocks), (after.RmapRoot, after.FreeBlocks, after.FlCount, after.RmapBlocks));
            Assert.False(fs.Engine.Ag(agno).IsSick, fs.Engine.Ag(agno).SickReason);
            fs.Mkdir("/still-writable");
            fs.Close();
        }
        WriteEngineTestSupport.AssertOraclesClean(image, "after close");
    }

    /// <summary>In the stress rotation the AG with no room is named once ("left out") and not counted as a failure:
    /// the run is clean and every other AG is rebuilt.</summary>
    [Fact]
    public void StressRotationLeavesAnAgWithNoRoomOutOnceWithoutFailingTheRun()
    {
        string image = Mkfs("agcount32.img", "-d", "agcount=32");
        var (agno, _, _) = LogAg(image);
        using var fs = XfsFileSystem.Open(image, OnlineTestSupport.Fast);
        var target = new XfsStressTarget(fs);
        StressModel model = StressModel.Load(target, 1);
        var rotation = new OnlineRepairRotation(fs.Engine, verify: false) { RepairOptions = new OnlineRmapRepairOptions { ReuseOldTreeBlocks = false } };
        StressResult result = new StressRunner(target, model, new StressOptions { Ops = 100, Threads = 1, Seed = 1, Background = rotation }).Run();
        var report = new StringWriter();
        rotation.WriteReport(report);
        output.WriteLine(report.ToString());
        Assert.True(result.Problems.Count == 0, string.Join("; ", result.Problems));
        string left = Assert.Single(rotation.Skipped);
        Assert.StartsWith($"AG {agno}: no room for the new rmapbt", left, StringComparison.Ordinal);
        Assert.Empty(rotation.Failures);
        Assert.True(rotation.Repairs >= fs.Engine.Geometry.AgCount - 1, $"{rotation.Repairs} repairs");
        Assert.Contains($"online-repair: left out: AG {agno}: no room", report.ToString(), StringComparison.Ordinal);
        Assert.EndsWith("mismatches=0 skipped=1\n", report.ToString().Replace("\r", "", StringComparison.Ordinal), StringComparison.Ordinal);
        Assert.False(fs.Engine.Ag(agno).IsSick);
        fs.Close();
    }
}
