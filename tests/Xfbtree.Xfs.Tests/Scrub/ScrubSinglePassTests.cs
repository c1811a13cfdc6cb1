using System.Globalization;
using System.Numerics;
using Xfbtree.Xfs.Check;
using Xfbtree.Xfs.Format;
using Xfbtree.Xfs.Scan;
using Xfbtree.Xfs.Scrub;
using Xfbtree.Xfs.Tests.Repair;
using Xfbtree.Xfs.Tests.Trees;
using Xfbtree.Xfs.Trees;
using Xunit.Abstractions;

namespace Xfbtree.Xfs.Tests.Scrub;

/// <summary>
/// The scrub's per-AG preparation derives the free extents, the implied reference counts and the on-disk rmapbt's
/// special-owner records inside the rmapbt compare's one pass (<see cref="AgScrubContext"/>). These tests compute
/// each of them as the separate passes did before (a gap sweep and a shared-extent sweep over the expected set, the
/// tolerant walker over the on-disk rmapbt, the compare on its own) and require the same lists and the same compare,
/// on every fixture and on every rmapbt corruption kind (the checker's walk meets violations the tolerant walker does
/// not, and the reverse).
/// </summary>
public sealed class ScrubSinglePassTests(ITestOutputHelper output)
{
    public static IEnumerable<object[]> Fixtures() => TreeFixtures.All.Select(f => new object[] { f });

    public static IEnumerable<object[]> RmapKinds() => RmapCorruptor.Kinds.Select(k => new object[] { k.Kind });

    [Theory]
    [MemberData(nameof(Fixtures))]
    public void OnePassEqualsTheSeparatePassesOnEveryFixture(string fixture)
    {
        int ags = CompareWithSeparatePasses(TreeFixtures.Image(fixture));
        output.WriteLine($"{fixture}: {ags} AGs compared");
    }

    [Theory]
    [MemberData(nameof(RmapKinds))]
    public void OnePassEqualsTheSeparatePassesOnADamagedRmapbt(string kind)
    {
        using var scratch = new RepairScratch();
        string image = scratch.CopyFixture("geom-bs1k");
        output.WriteLine(RmapCorruptor.Apply(image, kind, seed: 1, agno: 1));
        CompareWithSeparatePasses(image);
    }

    [Fact]
    public void AnEntryNamingAFreeInodeIsReportedWithTheCountItTookAway()
    {
        // The root's first entry ("tree", a directory) rewritten to name the first free inode of AG 0: the link
        // count scan must say both what the entry names and whose count it took away.
        using var scratch = new RepairScratch();
        string image = scratch.CopyFixture("aged-small");
        string root = TreeFixtures.XfsDb(image, "inode 128", "print u3.sfdir3.list[0].inumber.i4");
        ulong named = ulong.Parse(root.Split('=')[1].Trim(), CultureInfo.InvariantCulture);
        ulong free = FirstFreeInodeOfAg0(image);
        TreeFixtures.Run(TreeFixtures.Tool("xfs_db"), ["-x", "-c", "inode 128", "-c", $"write u3.sfdir3.list[0].inumber.i4 {free}", image]);
        var before = ScrubCli.Run(TreeFixtures.Image("aged-small"));
        Assert.Equal(0, before.ExitCode);
        var (rc, stdout, stderr) = ScrubCli.Run(image);
        output.WriteLine(stdout + stderr);
        Assert.Equal(1, rc);
        Assert.Matches($@"nlinks: damaged: 1 inode has a wrong link count; directory 128 entry '[^']+' names inode {free}, which is not in use", stdout);
        Assert.Matches($@"inode {named} nlink: (\d+), counted \d+", stdout);
        var m = System.Text.RegularExpressions.Regex.Match(stdout, $@"inode {named} nlink: (\d+), counted (\d+)");
        Assert.Equal(long.Parse(m.Groups[1].Value, CultureInfo.InvariantCulture) - 1, long.Parse(m.Groups[2].Value, CultureInfo.InvariantCulture));
    }

    static ulong FirstFreeInodeOfAg0(string image)
    {
        // "N:[startino,holemask,count,freecount,free]" records of the one-level inobt of AG 0.
        string recs = TreeFixtures.XfsDb(image, "agi 0", "addr root", "print recs");
        foreach (string line in recs.Split('\n'))
        {
            int open = line.IndexOf(":[", StringComparison.Ordinal);
            if (open < 0) continue;
            string[] f = line[(open + 2)..].TrimEnd(']', ' ').Split(',');
            if (f[1] != "0" || f[3] == "0") continue;   // a full chunk with a free inode
            ulong mask = Convert.ToUInt64(f[4], 16);
            return ulong.Parse(f[0], CultureInfo.InvariantCulture) + (ulong)BitOperations.TrailingZeroCount(mask);
        }
        throw new InvalidOperationException("no full inode chunk with a free inode in AG 0: " + recs);
    }

    /// <summary>Builds every AG's context as the scrub does and checks it against the separate passes; returns the AGs compared.</summary>
    static int CompareWithSeparatePasses(string path)
    {
        using var image = XfsImage.Open(path);
        using var scan = RmapScanner.Scan(image, new RmapScanOptions { IncludeOwnAg = true });
        var options = new ScrubOptions();
        bool complete = scan.Ags.All(a => a.Problems.Total == 0 && (a.Expected == null || a.MetadataComplete));
        var lent = new ScrubScratch();
        int compared = 0;
        foreach (var ag in scan.Ags)
        {
            if (ag.Expected == null) continue;
            var ctx = new AgScrubContext(image, ag, complete, options, lent);
            string where = $"AG {ag.AgNumber}";

            var alone = RmapChecker.CheckAg(image, ag, new RmapCheckOptions { SampleLimit = 1, StructureLimit = options.ProblemLimit });
            var one = ctx.RmapReport;
            Assert.Equal((alone.RmapbtReadable, alone.OnDiskRecords, alone.OnDiskBlocks, alone.Missing, alone.Extra, alone.Different, alone.StructureTotal),
                (one.RmapbtReadable, one.OnDiskRecords, one.OnDiskBlocks, one.Missing, one.Extra, one.Different, one.StructureTotal));
            Assert.Equal(alone.Structure, one.Structure);
            Assert.Equal(alone.Samples, one.Samples);

            // The rmapbt's own blocks all found, or the gaps would hold the ones the scan could not reach.
            bool usable = complete && ag.Problems.Total == 0 && ag.MetadataComplete && (!image.Superblock.HasRmapbt || ag.RmapbtBlocksComplete);
            Assert.True(usable == (ctx.RmapUnusable == null), where);
            Assert.Equal(usable ? GapSweep(ag, ctx.AgLength) : null, ctx.FreeExtents?.ToList());
            Assert.Equal(usable && image.Superblock.HasReflink ? SharedSweep(ag) : null, ctx.ImpliedShared?.ToList());

            var (ownAg, inodes, cow) = TolerantWalk(image, ag);
            Assert.True((ownAg == null) == (ctx.OnDiskRmapUnusable != null), $"{where}: on-disk rmapbt usable differs ({ctx.OnDiskRmapUnusable})");
            Assert.Equal(ownAg, ctx.OnDiskOwnAg?.ToList());
            Assert.Equal(inodes, ctx.OnDiskInodeChunks?.ToList());
            Assert.Equal(cow, ctx.OnDiskCow?.ToList());
            ctx.ReleaseScratch();
            compared++;
        }
        Assert.True(compared > 0, "no AG was compared");
        return compared;
    }

    /// <summary>The free extents as the separate sweep computed them: every block in no expected record.</summary>
    static List<ulong> GapSweep(AgScanResult ag, uint agLength)
    {
        var gaps = new List<ulong>();
        ulong end = 0;
        using var cur = ag.Expected!.CreateCursor();
        for (bool ok = cur.MoveFirst(); ok; ok = cur.Increment())
        {
            var r = RmapRecord.Read(cur.Current);
            if (r.StartBlock > end) gaps.Add(AgScrubContext.Pack((uint)end, (uint)(r.StartBlock - end)));
            end = Math.Max(end, (ulong)r.StartBlock + r.BlockCount);
        }
        if (end < agLength) gaps.Add(AgScrubContext.Pack((uint)end, (uint)(agLength - end)));
        return gaps;
    }

    static List<(uint, uint, uint)> SharedSweep(AgScanResult ag)
    {
        var sweep = new SharedExtentSweep();
        using var cur = ag.Expected!.CreateCursor();
        for (bool ok = cur.MoveFirst(); ok; ok = cur.Increment()) sweep.Add(RmapRecord.Read(cur.Current));
        return sweep.Finish().Select(s => (s.Start, s.Length, s.Count)).ToList();
    }

    /// <summary>The special-owner records by the tolerant walker alone; nulls when the tree cannot be located or read whole.</summary>
    static (List<(uint, uint)>?, List<(uint, uint)>?, List<(uint, uint)>?) TolerantWalk(XfsImage image, AgScanResult ag)
    {
        if (ag.Agf is not { } agf || !agf.TreeRootUsable(AgfTree.Rmapbt, image.Geometry)) return (null, null, null);
        var sink = new OwnerSink { Ag = new(), Inodes = new(), Cow = new() };
        List<string> problems;
        try { problems = RmapbtWalker.Walk(image.OpenRmapbt(agf), ref sink, out _); }
        catch (Xfbtree.Buffers.CorruptionException e) { problems = [e.Message]; }
        // A tree that records nothing of the AG headers (OWN_FS at block 0) is no independent record either.
        return problems.Count > 0 || !sink.Headers ? (null, null, null) : (sink.Ag, sink.Inodes, sink.Cow);
    }

    struct OwnerSink : IRmapRecordSink
    {
        public List<(uint, uint)> Ag, Inodes, Cow;
        public bool Headers;
        public void Record(in RmapRecord r)
        {
            if (r.Owner == RmapOwner.Fs && r.StartBlock == 0) Headers = true;
            if (r.Owner == RmapOwner.Ag) Ag.Add((r.StartBlock, r.BlockCount));
            else if (r.Owner == RmapOwner.Inodes) Inodes.Add((r.StartBlock, r.BlockCount));
            else if (r.Owner == RmapOwner.Cow) Cow.Add((r.StartBlock, r.BlockCount));
        }
    }
}
