using System.Globalization;
using System.Text.RegularExpressions;
using Xfbtree.Cli.Stress;
using Xfbtree.Xfs.Online;
using Xfbtree.Xfs.Tests.Repair;
using Xfbtree.Xfs.Tests.Trees;
using Xfbtree.Xfs.Tests.Write;
using Xfbtree.Xfs.Write;
using Xunit.Abstractions;

namespace Xfbtree.Xfs.Tests.Online;

/// <summary>
/// An rmapbt whose records disagree with the change an operation makes (here the record of a file's extent names
/// another owner, so freeing the extent finds no record to remove) is damage found at commit: the operation fails
/// as corrupt naming the AG, the AG is marked sick (the engine's AgMarkedSick event fires once, with an rmapbt
/// reason), allocation avoids it, and an online repair makes it healthy and usable again.
/// </summary>
public sealed class RmapDisagreementTests(ITestOutputHelper output)
{
    [Fact]
    public void AnRmapRecordWithAnotherOwner_MarksTheAgSick_AndAnOnlineRepairHealsIt()
    {
        using var scratch = new RepairScratch();
        string image = scratch.CopyFixture("fresh-4ag");
        byte[] chunk = OnlineTestSupport.Pattern(1 << 20, 5);
        ulong victim;
        using (var fs = XfsFileSystem.Open(image, OnlineTestSupport.Fast))
        {
            victim = fs.Create("/victim");
            fs.Write("/victim", 0, chunk);
            fs.Close();
        }
        // The extent's record in AG 0's rmapbt (one leaf on this fixture) gets another owner; the CRC stays right.
        string bmap = TreeFixtures.Run(TreeFixtures.Tool("xfs_db"), ["-r", "-c", $"inode {victim}", "-c", "bmap", image]);
        var extent = Regex.Match(bmap, @"startblock \d+ \((\d+)/(\d+)\)");
        Assert.True(extent.Success && extent.Groups[1].Value == "0", bmap);
        string recs = TreeFixtures.Run(TreeFixtures.Tool("xfs_db"), ["-r", "-c", "agf 0", "-c", "addr rmaproot", "-c", "print recs", image]);
        var record = Regex.Match(recs, $@"(\d+):\[{extent.Groups[2].Value},\d+,{victim},");
        Assert.True(record.Success, recs);
        TreeFixtures.Run(TreeFixtures.Tool("xfs_db"), ["-x", "-c", "agf 0", "-c", "addr rmaproot", "-c", $"write -d recs[{record.Groups[1].Value}].owner {victim + 1}", image]);
        output.WriteLine($"AG 0 rmapbt recs[{record.Groups[1].Value}] (agbno {extent.Groups[2].Value}): owner {victim} -> {victim + 1}");

        using (var fs = XfsFileSystem.Open(image, OnlineTestSupport.Fast))
        {
            var sick = new List<(uint Ag, string Reason)>();
            fs.Engine.AgMarkedSick += (ag, reason) => { lock (sick) sick.Add((ag.AgNumber, reason)); };
            var failure = Assert.Throws<XfsWriteException>(() => fs.Unlink("/victim"));
            output.WriteLine(failure.Message);
            Assert.Equal(WriteErrorKind.Corrupt, failure.Kind);
            Assert.Equal(0u, failure.AgNumber);
            Assert.True(fs.Engine.Ag(0).IsSick, "the AG whose rmapbt disagreed is not sick");
            Assert.Single(sick);
            Assert.Equal(0u, sick[0].Ag);
            Assert.StartsWith("rmapbt: ", sick[0].Reason, StringComparison.Ordinal);

            // Sick: new data goes elsewhere (allocation skips the AG); the online repair heals it.
            fs.Create("/elsewhere");
            fs.Write("/elsewhere", 0, chunk);
            OnlineRmapRepair.Run(fs.Engine, 0);
            Assert.False(fs.Engine.Ag(0).IsSick);
            Assert.True(OnlineRepairOracle.Verify(fs.Engine, 0).IsClean);
            fs.Unlink("/victim");
            fs.Create("/after");
            fs.Write("/after", 0, chunk);
            Assert.Single(sick);
            fs.Close();
        }
        WriteEngineTestSupport.AssertOraclesClean(image, "after the online repair");
    }
}
