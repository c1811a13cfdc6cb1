using Xfbtree.Xfs.Scrub;
using Xfbtree.Xfs.Tests.Online;
using Xfbtree.Xfs.Tests.Repair;
using Xfbtree.Xfs.Tests.Trees;
using Xfbtree.Xfs.Tests.Write;
using Xfbtree.Xfs.Write.Engine;
using Xunit.Abstractions;

namespace Xfbtree.Xfs.Tests.Scrub;

/// <summary>
/// The inode core matrix (docs/scrub.md "Inode cores"): on a copy of geom-bs1k, one field of one kernel-made inode
/// damaged with xfs_db (a correct CRC written, but for the CRC kinds), each of a kind the kernel's verifier, its inode
/// scrubber or xfs_repair refuses. Each must be found on its inode's own line (<c>inode N core: damaged: ...</c>, exit
/// 1) and on no other AG structure's; each with a certain fix must be repaired by <c>scrub --repair</c> (exit 0),
/// after which xfs_repair -n is clean and the kernel mounts, reads and writes the image. Kinds with no certain fix are
/// found and left, said (exit 1). xfs_repair -n is run first on every kind: it must find the damage too, or the
/// kind is listed as one it misses (docs/scrub.md keeps that list).
/// </summary>
public sealed class InodeCoreScrubTests(ITestOutputHelper output)
{
    private const string Fixture = "geom-bs1k";

    /// <summary>(name, path of the damaged inode, xfs_db commands after "inode N", text of the core line, certain fix,
    /// xfs_repair -n finds it, run in the suite).</summary>
    internal static readonly (string Name, string Path, string[] Commands, string Expect, bool Certain, bool RepairFinds, bool Suite)[] Kinds =
    [
        ("onlink", "/feat/special/one-block", ["write -d core.onlink 3"], "di_onlink 3", true, true, true),
        ("nblocks-btree", "/feat/fragmented.bin", ["write -d core.nblocks 7"], "di_nblocks 7, the forks map", true, true, true),
        ("nblocks-symlink", "/feat/links/l0005", ["write -d core.nblocks 0"], "di_nblocks 0, the forks map 2 blocks", true, true, false),
        ("nextents-too-many", "/feat/special/one-block", ["write -d core.nextents 4"], "di_nextents 4, the data fork maps 1 extents", true, true, false),
        ("anextents", "/feat/xattr/x0000", ["write -d core.naextents 9"], "di_anextents 9, the attr fork maps", true, true, false),
        ("extsize-without-flag", "/feat/special/one-block", ["write -d core.extsize 16"], "extent size hint 16: set without its flag", true, true, false),
        ("cowextsize-without-flag", "/feat/prealloc-pure.bin", ["write -d v3.cowextsize 32"], "CoW extent size hint 32: set without its flag", true, true, false),
        ("realtime-flag", "/feat/special/one-block", ["write -d core.realtime 1"], "realtime flag without a realtime device", true, true, true),
        ("dir-flag-on-file", "/feat/special/one-block", ["write -d core.nosymlinks 1"], "directory flags 0x0400 on a non-directory", true, true, false),
        ("reflink-on-directory", "/feat/xattr", ["write -d v3.reflink 1"], "reflink flag on a file that is not regular", true, true, false),
        ("dax-on-fifo", "/feat/special/fifo", ["write -d v3.dax 1"], "DAX flag on a special file", true, true, false),
        ("fifo-size", "/feat/special/fifo", ["write -d core.size 512"], "size 512 of a device, fifo or socket", true, true, false),
        ("chardev-size", "/feat/special/null-ish", ["write -d core.size 1"], "size 1 of a device, fifo or socket", true, true, false),
        ("aformat-without-fork", "/feat/links/l0005", ["write -d core.forkoff 0", "write -d core.aformat 1"], "attr fork format 1 without an attr fork", true, true, false),
        ("crc", "/feat/special/one-block", ["write -c core.gen 77"], "bad CRC", true, true, true),
        ("crc-directory", "/feat/xattr", ["write -c v3.crc 0x1234"], "bad CRC", true, true, false),
        ("negative-size", "/feat/special/one-block", ["fuzz -d core.size firstbit"], "negative size -9223372036854774784 (no certain fix)", false, true, true),
        ("reflink-missing", "/feat/reflink/clone0.bin", ["write -d v3.reflink 0"], "reflink flag missing on a file whose data blocks are shared", true, true, true),
    ];

    private static readonly string[] KernelKinds = ["onlink", "crc"];

    public static IEnumerable<object[]> Cases()
    {
        bool longMode = Environment.GetEnvironmentVariable("XFBTREE_LONG_TESTS") == "1";
        return Kinds.Where(k => k.Suite || longMode).Select(k => new object[] { k.Name });
    }

    /// <summary>Damages a copy; returns the image and the inode number.</summary>
    internal static (string Image, ulong Ino) Damage(RepairScratch scratch, string name)
    {
        var kind = Kinds.Single(k => k.Name == name);
        string image = scratch.CopyFixture(Fixture);
        ulong ino = InodeOf(image, kind.Path);
        var args = new List<string> { "-x", "-c", $"inode {ino}" };
        foreach (string c in kind.Commands) { args.Add("-c"); args.Add(c); }
        args.Add(image);
        var r = RepairTools.Exec(TreeFixtures.Tool("xfs_db"), args);
        Assert.True(r.ExitCode == 0, $"xfs_db: {r}");
        return (image, ino);
    }

    internal static ulong InodeOf(string image, string path)
    {
        var r = RepairTools.Exec(TreeFixtures.Tool("xfs_db"), ["-r", "-c", $"path {path}", "-c", "inode", image]);
        var m = System.Text.RegularExpressions.Regex.Match(r.Stdout, @"current inode number is (\d+)");
        Assert.True(m.Success, $"xfs_db found no inode at {path}: {r}");
        return ulong.Parse(m.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture);
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void DamagedInodeCoreIsFoundOnItsOwnLineAndRepaired(string name)
    {
        var kind = Kinds.Single(k => k.Name == name);
        using var scratch = new RepairScratch();
        var (image, ino) = Damage(scratch, name);
        var oracle = RepairTools.XfsRepairCheck(image);
        output.WriteLine($"xfs_repair -n: exit {oracle.ExitCode}");
        Assert.True((oracle.ExitCode != 0) == kind.RepairFinds, $"xfs_repair -n on {name}: {oracle}");

        var (rc, stdout, stderr) = ScrubCli.Run(image);
        output.WriteLine(stdout + stderr);
        Assert.Equal(1, rc);
        uint agno = (uint)(ino >> InoAgShift(image));
        Assert.Contains($"AG {agno} inode cores: damaged: 1 inodes", stdout, StringComparison.Ordinal);
        Assert.Contains($"inode {ino} core: damaged: ", stdout, StringComparison.Ordinal);
        string line = stdout.Split('\n').Single(l => l.StartsWith($"inode {ino} core: damaged: ", StringComparison.Ordinal));
        Assert.Contains(kind.Expect, line, StringComparison.Ordinal);
        // The damage is the core's alone: no AG structure but the inode cores is blamed (the rmap set is complete).
        Assert.DoesNotContain(stdout.Split('\n'), l => l.StartsWith("AG ", StringComparison.Ordinal) && l.Contains(": damaged", StringComparison.Ordinal) && !l.Contains("inode cores", StringComparison.Ordinal));

        var repaired = ScrubCli.Run(image, "--repair");
        output.WriteLine(repaired.Stdout + repaired.Stderr);
        if (!kind.Certain)
        {
            Assert.Equal(1, repaired.ExitCode);
            Assert.Contains($"repair: AG {agno} inode cores: not repaired: 0 of 1 damaged inode cores set to their certain values; not repaired: inode {ino}: ", repaired.Stdout, StringComparison.Ordinal);
            Assert.Contains("no certain fix (xfs_repair clears such an inode)", repaired.Stdout, StringComparison.Ordinal);
            return;
        }
        Assert.Contains($"repair: AG {agno} inode cores: repaired: 1 of 1 damaged inode cores", repaired.Stdout, StringComparison.Ordinal);
        Assert.True(repaired.ExitCode == 0, $"scrub --repair must leave the image clean: exit {repaired.ExitCode}");
        var witness = RepairTools.XfsRepairCheck(image);
        Assert.True(witness.ExitCode == 0, $"xfs_repair -n after the repair of {name}: {witness}");
        // The kernel on two kinds in the suite (a workload is several seconds), on every kind in long mode.
        if (!(KernelKinds.Contains(name) || Environment.GetEnvironmentVariable("XFBTREE_LONG_TESTS") == "1")) return;
        KernelOracle.AssertKernelWorkloadAndRepair(image, output, $"the image repaired after inode core {name}");
    }

    /// <summary>log2 of the inodes per AG (agblklog + inopblog): an inode number's AG is the bits above.</summary>
    private static int InoAgShift(string image)
    {
        var r = RepairTools.Exec(TreeFixtures.Tool("xfs_db"), ["-r", "-c", "sb 0", "-c", "print agblklog inopblog", image]);
        int sum = 0;
        foreach (System.Text.RegularExpressions.Match m in System.Text.RegularExpressions.Regex.Matches(r.Stdout, @"= (\d+)"))
            sum += int.Parse(m.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture);
        return sum;
    }

    /// <summary>
    /// The reflink flag on a regular file that shares no block is no damage: the kernel leaves it so after the last
    /// sharer goes, and xfs_repair -n says nothing (exit 0; xfs_repair itself clears it, "clearing reflink flag on
    /// inodes when possible", as an optimization). The offline and the online check are clean.
    /// </summary>
    [Fact]
    public void AReflinkFlagOnAnUnsharedFileIsNoDamage()
    {
        using var scratch = new RepairScratch();
        string image = scratch.CopyFixture(Fixture);
        ulong ino = InodeOf(image, "/feat/special/one-block");
        Assert.Equal(0, RepairTools.Exec(TreeFixtures.Tool("xfs_db"), ["-x", "-c", $"inode {ino}", "-c", "write -d v3.reflink 1", image]).ExitCode);
        var oracle = RepairTools.XfsRepairCheck(image);
        Assert.True(oracle.ExitCode == 0, $"xfs_repair -n on a flag without sharing: {oracle}");
        var (rc, stdout, _) = ScrubCli.Run(image);
        Assert.True(rc == 0, $"the offline scrub: {stdout}");
        using var engine = WriteEngine.Open(image, OnlineTestSupport.Fast);
        ScrubReport online = OnlineScrubber.Run(engine);
        Assert.True(online.IsClean, string.Join("\n", online.Findings.Where(f => f.Verdict != ScrubVerdict.Clean)));
        engine.Close();
    }

    /// <summary>Several damaged cores in one AG and across AGs, in one run: each on its own line, all repaired.</summary>
    [Fact]
    public void SeveralDamagedCoresAreEachListedAndAllRepaired()
    {
        using var scratch = new RepairScratch();
        string image = scratch.CopyFixture(Fixture);
        var targets = new[] { ("/feat/special/one-block", "write -d core.onlink 1"), ("/feat/fragmented.bin", "write -d core.nblocks 1"), ("/feat/links/l0005", "write -d core.nblocks 9") };
        var inos = new List<ulong>();
        foreach (var (path, cmd) in targets)
        {
            ulong ino = InodeOf(image, path);
            inos.Add(ino);
            Assert.Equal(0, RepairTools.Exec(TreeFixtures.Tool("xfs_db"), ["-x", "-c", $"inode {ino}", "-c", cmd, image]).ExitCode);
        }
        var (rc, stdout, _) = ScrubCli.Run(image, "--json");
        Assert.Equal(1, rc);
        using (var doc = System.Text.Json.JsonDocument.Parse(stdout))
        {
            var problems = doc.RootElement.GetProperty("structures").EnumerateArray()
                .Where(s => s.GetProperty("structure").GetString() == "inode cores")
                .SelectMany(s => s.GetProperty("problems").EnumerateArray().Select(p => p.GetString()!)).ToList();
            foreach (ulong ino in inos) Assert.Single(problems, p => p.StartsWith($"inode {ino} core: damaged: ", StringComparison.Ordinal));
        }
        var repaired = ScrubCli.Run(image, "--repair");
        output.WriteLine(repaired.Stdout);
        Assert.Equal(0, repaired.ExitCode);
        Assert.Equal(0, RepairTools.XfsRepairCheck(image).ExitCode);
    }
}
