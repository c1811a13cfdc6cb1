using Xfbtree.Xfs.Scrub;
using Xfbtree.Xfs.Tests.Online;
using Xfbtree.Xfs.Tests.Repair;
using Xfbtree.Xfs.Tests.Write;
using Xfbtree.Xfs.Write;
using Xunit.Abstractions;

namespace Xfbtree.Xfs.Tests.Scrub;

/// <summary>
/// The primary superblock damaged on disk while the write engine has the image open (an outside write: a bad CRC, or
/// the sector zeroed). The engine holds the sector it read and verified at open and writes it again only at its clean
/// close, so the online check compares the disk with that in-core copy: "primary superblock: damaged", nothing else
/// blamed (the secondaries are checked against the in-core superblock too). The online repair rewrites the sector from
/// the in-core copy; then the check is clean, writers go on, and after the close xfs_repair -n, the offline scrub and
/// the kernel agree.
/// </summary>
public sealed class PrimarySuperblockOnlineTests(ITestOutputHelper output)
{
    [Theory]
    [InlineData("bad-crc")]
    [InlineData("zeroed")]
    public void PrimarySuperblockDamagedWhileOpenIsFoundAndRewrittenOnline(string kind)
    {
        using var scratch = new RepairScratch();
        string image = scratch.CopyFixture("geom-bs1k");
        using (var fs = XfsFileSystem.Open(image, OnlineTestSupport.Fast))
        {
            fs.Mkdir("/d");
            for (int i = 0; i < 8; i++) fs.Write(CreateFile(fs, $"/d/f{i}"), 0, OnlineTestSupport.Pattern(3000, i));
            byte[] before = fs.Engine.ReadPrimarySuperblockFromDisk();
            using (var raw = new FileStream(image, FileMode.Open, FileAccess.ReadWrite, FileShare.ReadWrite))
            {
                byte[] sector = (byte[])before.Clone();
                if (kind == "zeroed") Array.Clear(sector);
                else sector[108] ^= 0x5A; // sb_fname: the CRC no longer matches
                raw.Write(sector);
                raw.Flush(flushToDisk: true);
            }

            ScrubReport found = OnlineScrubber.Run(fs.Engine);
            foreach (ScrubFinding f in found.Findings.Where(f => f.Verdict != ScrubVerdict.Clean)) output.WriteLine(f.ToString());
            ScrubFinding primary = Assert.Single(found.Findings, f => f.Structure == "primary superblock");
            Assert.Equal(ScrubVerdict.Damaged, primary.Verdict);
            Assert.Contains(kind == "zeroed" ? "no XFSB magic" : "bad CRC", primary.Problems[0], StringComparison.Ordinal);
            Assert.Equal(1, found.DamagedCount);
            Assert.True(found.Findings.All(f => f.Verdict != ScrubVerdict.NotChecked), "nothing may be left not checked");

            IReadOnlyList<ScrubRepairOutcome> outcomes = OnlineScrubber.Repair(fs.Engine, found);
            foreach (var o in outcomes) output.WriteLine(o.ToString());
            ScrubRepairOutcome restore = Assert.Single(outcomes);
            Assert.Equal("primary superblock", restore.Name);
            Assert.True(restore.Repaired, restore.Detail);
            Assert.Equal(before, fs.Engine.ReadPrimarySuperblockFromDisk());
            ScrubReport after = OnlineScrubber.Run(fs.Engine);
            Assert.True(after.IsClean, string.Join("\n", after.Findings.Where(f => f.Verdict != ScrubVerdict.Clean)));

            for (int i = 8; i < 16; i++) fs.Write(CreateFile(fs, $"/d/f{i}"), 0, OnlineTestSupport.Pattern(3000, i));
            fs.Close();
        }
        var witness = RepairTools.XfsRepairCheck(image);
        Assert.True(witness.ExitCode == 0, $"xfs_repair -n after the close: {witness}");
        var (rc, stdout, _) = ScrubCli.Run(image);
        Assert.True(rc == 0, stdout);
        KernelOracle.AssertKernelWorkloadAndRepair(image, output, $"the image whose primary superblock ({kind}) was rewritten online");
    }

    static string CreateFile(XfsFileSystem fs, string path)
    {
        fs.Create(path);
        return path;
    }
}
