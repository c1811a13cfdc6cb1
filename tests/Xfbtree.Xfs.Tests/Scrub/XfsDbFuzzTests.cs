using Xfbtree.Xfs.Format;
using Xfbtree.Xfs.Tests.Repair;
using Xfbtree.Xfs.Tests.Trees;
using Xunit.Abstractions;

namespace Xfbtree.Xfs.Tests.Scrub;

/// <summary>
/// Damage made by xfs_db's own <c>fuzz</c> command (as xfstests' common/fuzzy makes it), on a copy of geom-bs1k:
/// the short, bounded form of <c>scripts/xfs-db-fuzz.sh</c> (docs/scrub.md, "Damage from xfs_db fuzz"). Each case is
/// damage xfs_repair -n finds (checked first: a case it does not find proves nothing here and fails); the scrub must
/// find it too (exit 1, or 2 for a primary that does not verify), <c>--repair</c> must end clean (exit 0) and
/// xfs_repair -n must agree. Each case was a wrong result before its fix: the scrub said clean, or the repair said
/// done and left the damage (a damaged primary copied over every good secondary, the realtime bitmap inode freed).
/// Deterministic verbs only (no <c>random</c>): the same bytes every run.
/// </summary>
public sealed class XfsDbFuzzTests(ITestOutputHelper output)
{
    private const string Fixture = "geom-bs1k";
    /// <summary>Stands for the xfs_db commands that reach AG 1's first rmapbt leaf (found at run time).</summary>
    private const string RmapLeaf = "rmapbt leaf of AG 1";
    /// <summary>Stands for the xfs_db commands that reach AG 1's rmapbt root (a level-2 node in geom-bs1k).</summary>
    private const string RmapRoot = "rmapbt root of AG 1";

    public static IEnumerable<object[]> Cases()
    {
        (string Nav, string Field, string Verb, bool Suite)[] all =
        [
            ("sb 0", "rbmblocks", "lastbit", true),  // realtime sizes without a realtime device: the primary does not verify
            ("sb 0", "rextsize", "ones", false),
            ("sb 0", "rootino", "lastbit", true),    // the root names no directory: the scrub said clean
            ("sb 0", "rbmino", "firstbit", true),    // the secondaries were "repaired" from it, the bitmap inode freed
            ("sb 0", "rsumino", "lastbit", false),
            ("sb 0", "inprogress", "lastbit", true),  // a primary "still being made": the scrub said clean
            ("sb 1", "versionnum", "firstbit", true), // a secondary breaking the verifier's own rules: said clean
            ("sb 1", "features2", "firstbit", false),
            ("sb 1", "frextents", "lastbit", true),
            ("sb 1", "uquotino", "lastbit", false),
            ("sb 1", "qflags", "ones", false),
            ("sb 1", "unit", "lastbit", true),
            ("sb 1", "meta_uuid", "middlebit", true),
            ("sb 0", "meta_uuid", "middlebit", false),
            ("sb 1", "qflags", "lastbit", false),
            ("sb 0", "bad_features2", "lastbit", false),
            ("agf 1", "versionnum", "add", true),    // header version words were not checked
            ("agi 1", "versionnum", "add", true),
            // The refcountbt's root pointer unusable: the AG is sick at the open and the rebuild's allocation skipped it.
            ("agf 1", "refcntroot", "ones", true),
            // An rmapbt OWN_INODES record damaged (only the rmapbt is wrong): the inobt was blamed, rebuilt first from
            // the damaged rmapbt (a live chunk's 64 inodes dropped, their directory entries left naming free inodes)
            // or its rebuild refused and the rmapbt's waited for it forever.
            (RmapLeaf, "recs[OWN_INODES].owner", "middlebit", true),
            (RmapLeaf, "recs[OWN_INODES].blockcount", "ones", false),
            // Feature bits nothing knows, in the primary only: xfs_repair refuses (exit 1); the secondaries agree
            // without them, so the primary is restored from them (it was exit 2, nothing repaired).
            ("sb 0", "features_incompat", "lastbit", true),
            ("sb 0", "features_ro_compat", "ones", false),
            // The rmapbt's root node unreadable: the AGF rebuild ran first, found no rmapbt and failed the AG; the
            // bnobt and cntbt were blamed for the old tree's blocks the scan could not find.
            (RmapRoot, "magic", "zeroes", true),
            (RmapRoot, "level", "firstbit", false),
        ];
        bool longMode = Environment.GetEnvironmentVariable("XFBTREE_LONG_TESTS") == "1";
        return all.Where(c => c.Suite || longMode).Select(c => new object[] { c.Nav, c.Field, c.Verb });
    }

    static ToolResult Db(string image, params string[] commands)
    {
        var args = new List<string> { "-x" };
        foreach (string c in commands) { args.Add("-c"); args.Add(c); }
        args.Add(image);
        return RepairTools.Exec(TreeFixtures.Tool("xfs_db"), args);
    }

    static byte[] Secondaries(string image, int agcount, long agBytes)
    {
        using var f = File.OpenRead(image);
        byte[] all = new byte[(agcount - 1) * 512];
        for (int a = 1; a < agcount; a++)
        {
            f.Position = a * agBytes;
            f.ReadExactly(all.AsSpan((a - 1) * 512, 512));
        }
        return all;
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void XfsDbFuzzIsFoundAndRepaired(string nav, string field, string verb)
    {
        using var scratch = new RepairScratch();
        string image = scratch.CopyFixture(Fixture);
        var geometry = Superblock.Parse(File.ReadAllBytes(image).AsSpan(0, 512));
        long agBytes = (long)geometry.AgBlocks * geometry.BlockSize;
        byte[] secondariesBefore = Secondaries(image, (int)geometry.AgCount, agBytes);

        string[] path = [nav];
        if (nav == RmapRoot) path = ["agf 1", "addr rmaproot"];
        if (nav == RmapLeaf)
        {
            // Down the first pointers to a leaf, then the first OWN_INODES record (owner -7) in it.
            var steps = new List<string> { "agf 1", "addr rmaproot" };
            while (steps.Count < 10 && !Db(image, [.. steps, "print level"]).Stdout.Contains("level = 0", StringComparison.Ordinal)) steps.Add("addr ptrs[1]");
            string recs = Db(image, [.. steps, "print recs"]).Stdout;
            string? line = recs.Split('\n').FirstOrDefault(l => l.Contains(",-7,", StringComparison.Ordinal));
            Assert.True(line is not null, $"no OWN_INODES record in the first rmapbt leaf of AG 1:\n{recs}");
            field = field.Replace("OWN_INODES", line.Split(':')[0].Trim(), StringComparison.Ordinal);
            path = [.. steps];
        }
        var fuzz = Db(image, [.. path, $"fuzz -d {field} {verb}"]);
        Assert.True(fuzz.ExitCode == 0, $"xfs_db fuzz: {fuzz}");
        var oracle = RepairTools.XfsRepairCheck(image);
        Assert.True(oracle.ExitCode != 0, $"xfs_repair -n must find the fuzzed {nav} {field} ({verb}); it did not, so this case proves nothing: {oracle}");

        var (rc, stdout, stderr) = ScrubCli.Run(image);
        output.WriteLine($"scrub: exit {rc}\n{stdout}{stderr}");
        Assert.True(rc is 1 or 2, $"the scrub must find {nav} {field} ({verb}) damaged (exit 1) or refuse the primary (exit 2): exit {rc}");
        if (rc == 2) Assert.StartsWith("sb 0", nav, StringComparison.Ordinal);
        if (nav is RmapLeaf or RmapRoot)
        {
            Assert.Contains("AG 1 rmapbt: damaged", stdout, StringComparison.Ordinal);
            Assert.DoesNotContain("AG 1 inobt: damaged", stdout, StringComparison.Ordinal);
        }
        if (nav == RmapRoot)
        {
            Assert.DoesNotContain("AG 1 bnobt: damaged", stdout, StringComparison.Ordinal);
            Assert.DoesNotContain("AG 1 cntbt: damaged", stdout, StringComparison.Ordinal);
        }

        var repaired = ScrubCli.Run(image, "--repair");
        output.WriteLine($"scrub --repair: exit {repaired.ExitCode}\n{repaired.Stdout}{repaired.Stderr}");
        Assert.True(repaired.ExitCode == 0, $"scrub --repair must end clean: exit {repaired.ExitCode}");
        Assert.Contains("result after repair: clean", repaired.Stdout, StringComparison.Ordinal);
        var witness = RepairTools.XfsRepairCheck(image);
        Assert.True(witness.ExitCode == 0, $"xfs_repair -n after the repair: {witness}");
        if (nav == "sb 0")
        {
            // The good secondaries stay as they were: the damaged primary is restored from them, not copied onto them.
            Assert.Contains("repair: primary superblock: repaired", repaired.Stdout, StringComparison.Ordinal);
            Assert.Equal(secondariesBefore, Secondaries(image, (int)geometry.AgCount, agBytes));
        }
    }
    /// <summary>
    /// A bmbt leaf's first record moved one file block by xfs_db (inode 262856 of geom-bs1k has a two-level data fork
    /// bmbt): the parent's key no longer matches the leaf. The scan walked the leaves without comparing keys, so the
    /// rmapbt was "repaired" from the leaves and the key damage xfs_repair -n reports went unsaid (exit 0 on the
    /// 4 KiB sweep image). Now it is reported on the rmapbt line, and a repair may only claim success when
    /// xfs_repair -n agrees.
    /// </summary>
    [Fact]
    public void ABmbtKeyThatDisagreesWithItsLeafIsReported()
    {
        using var scratch = new RepairScratch();
        string image = scratch.CopyFixture(Fixture);
        var fuzz = Db(image, "inode 262856", "addr u3.bmbt.ptrs[1]", "fuzz -d recs[1].startoff lastbit");
        Assert.True(fuzz.ExitCode == 0, $"xfs_db fuzz: {fuzz}");
        Assert.True(RepairTools.XfsRepairCheck(image).ExitCode != 0, "xfs_repair -n must find the bmbt key damage");
        var (rc, stdout, stderr) = ScrubCli.Run(image);
        output.WriteLine($"scrub: exit {rc}\n{stdout}{stderr}");
        Assert.Equal(1, rc);
        Assert.Contains("inode 262856 data fork bmbt: level 0 block", stdout, StringComparison.Ordinal);
        Assert.Contains("parent low key differs from the block's first key", stdout, StringComparison.Ordinal);
        var repaired = ScrubCli.Run(image, "--repair");
        output.WriteLine($"scrub --repair: exit {repaired.ExitCode}\n{repaired.Stdout}{repaired.Stderr}");
        Assert.True(repaired.ExitCode is 0 or 1, $"scrub --repair: exit {repaired.ExitCode}");
        if (repaired.ExitCode == 0) Assert.True(RepairTools.XfsRepairCheck(image).ExitCode == 0, "scrub --repair said clean, xfs_repair -n does not agree");
    }
    /// <summary>
    /// A bmbt leaf of a file with a bad magic (xfs_db fuzz): the rmapbt rebuild's inode scan meets it. That corruption
    /// escaped the repair rounds, so the engine was never closed: one stderr line, no report, and the image left
    /// NEEDSREPAIR with a pending journal. Now that repair alone fails, said on its line, and the image is closed clean.
    /// </summary>
    [Fact]
    public void ARepairThatMeetsACorruptBmbtFailsAloneAndClosesTheImage()
    {
        using var scratch = new RepairScratch();
        string image = scratch.CopyFixture(Fixture);
        var fuzz = Db(image, "inode 262856", "addr u3.bmbt.ptrs[1]", "fuzz -d magic ones");
        Assert.True(fuzz.ExitCode == 0, $"xfs_db fuzz: {fuzz}");
        var (rc, stdout, stderr) = ScrubCli.Run(image, "--repair");
        output.WriteLine($"scrub --repair: exit {rc}\n{stdout}{stderr}");
        Assert.Equal(1, rc);
        Assert.Contains("rmapbt: not repaired: corrupt bmbt", stdout, StringComparison.Ordinal);
        Assert.Contains("result after repair: DAMAGED", stdout, StringComparison.Ordinal);
        Assert.False(File.Exists(image + ".xfbtree-journal"), "the write engine's journal must not be left behind");
        Assert.False(Write.WriteEngineTestSupport.NeedsRepair(image), "NEEDSREPAIR must be cleared by the engine's clean close");
    }
}
