using System.Globalization;
using Xfbtree.Xfs.Tests.Repair;
using Xfbtree.Xfs.Tests.Trees;
using Xfbtree.Xfs.Tests.Write;
using Xunit.Abstractions;

namespace Xfbtree.Xfs.Tests.Scrub;

/// <summary>An image made by mkfs.xfs and populated by the kernel (scripts/xfs-db-fuzz.sh base: attributes in
/// shortform, leaf, node form and with remote values, directories of every form, symlinks, a fifo, reflinks), made once
/// per test class. Needs root (loop mount).</summary>
public sealed class KernelAttrImage : IDisposable
{
    readonly Lazy<string> _image;
    readonly string _dir = Path.Combine(Path.GetTempPath(), $"xfbtree-attr-image-{Environment.ProcessId}-{Guid.NewGuid():N}");

    public KernelAttrImage() => _image = new Lazy<string>(() => Make(_dir, "-m", "reflink=1,rmapbt=1", "-d", "agcount=4", "-i", "size=512"));

    /// <summary>The image (made on first use).</summary>
    public string Image => _image.Value;

    /// <summary>Makes DIR/base.img with mkfs.xfs <paramref name="mkfs"/>, populated by the kernel.</summary>
    internal static string Make(string dir, params string[] mkfs)
    {
        var r = RepairTools.Exec(Path.Combine(RepairKernelTests.RepoRoot(), "scripts", "xfs-db-fuzz.sh"), ["base", dir, .. mkfs]);
        Assert.True(r.ExitCode == 0, $"making a kernel-populated image: {r}");
        return Path.Combine(dir, "base.img");
    }

    public void Dispose()
    {
        if (Directory.Exists(_dir)) Directory.Delete(_dir, recursive: true);
    }
}

/// <summary>
/// The attr fork matrix (docs/scrub.md "Attribute forks"): on a copy of a kernel-populated image, one field of an
/// attr fork damaged with xfs_db (a shortform list, a leaf, a node, a remote value block, or the leaf's entry naming
/// the remote value), each found on its inode's line (<c>inode N attr fork: damaged: ...</c>) and on no other AG
/// structure's line; <c>scrub --repair</c> clears the fork as xfs_repair does (exit 0), after which xfs_repair -n is
/// clean and the kernel mounts, reads and writes the image. Kinds xfs_repair -n itself misses are marked (and listed
/// in docs/scrub.md). Healthy kernel-made images with attributes of every form scrub clean.
/// </summary>
public sealed class AttrForkScrubTests(ITestOutputHelper output, KernelAttrImage base_) : IClassFixture<KernelAttrImage>
{
    /// <summary>(name, path, xfs_db navigation after "inode N" (or ""), xfs_db commands, text of the attr fork line,
    /// xfs_repair -n finds it, in the suite).</summary>
    private static readonly (string Name, string Path, string Nav, string[] Commands, string Expect, bool RepairFinds, bool Suite)[] Kinds =
    [
        ("sf-totsize", "/attrs/sf", "", ["write -d a.sfattr.hdr.totsize 99"], "shortform list counts 99 bytes but its 1 entries take 16", true, true),
        ("sf-count", "/attrs/sf", "", ["write -d a.sfattr.hdr.count 3"], "shortform entry 1 runs past the list's size", true, false),
        ("sf-namelen-zero", "/attrs/sf", "", ["write -d a.sfattr.list[0].namelen 0"], "shortform entry 0 has an empty name", true, false),
        ("sf-two-namespaces", "/attrs/sf", "", ["write -d a.sfattr.list[0].root 1", "write -d a.sfattr.list[0].secure 1"], "shortform entry 0 has flags 0x06", false, false),
        ("leaf-usedbytes", "/attrs/leaf", "ablock 0", ["write -d hdr.usedbytes 7"], "attr leaf 0: usedbytes 7, its entries' names take 1548", true, true),
        ("leaf-firstused", "/attrs/leaf", "ablock 0", ["write -d hdr.firstused 2000"], "attr leaf 0: firstused 2000, its lowest name is at 2548", true, false),
        ("leaf-hash-order", "/attrs/leaf", "ablock 0", ["write -d entries[1].hashval 5"], "attr leaf: entry 1 out of hash order", true, true),
        ("leaf-nameidx", "/attrs/leaf", "ablock 0", ["write -d entries[0].nameidx 2812"], "attr leaf: entry 0 hash 0x5c399bd4 is not its name's hash", true, false),
        ("leaf-incomplete", "/attrs/leaf", "ablock 0", ["write -d entries[3].incomplete 1"], "is INCOMPLETE", true, false),
        ("leaf-magic", "/attrs/leaf", "ablock 0", ["write -d hdr.info.hdr.magic 0x1234"], "no leaf, node or remote value magic", true, false),
        ("leaf-crc", "/attrs/leaf", "ablock 0", ["write -c hdr.info.owner 7"], "bad CRC", true, false),
        ("node-level", "/attrs/node", "ablock 0", ["write -d hdr.level 3"], "below a node of level 3", true, true),
        ("node-hash", "/attrs/node", "ablock 0", ["write -d btree[1].hashval 0x10"], "attr node: entry 1 out of hash order", true, false),
        ("node-child", "/attrs/node", "ablock 0", ["write -d btree[3].before 7"], "links back to", true, false),
        ("leaf-sibling", "/attrs/node", "ablock 2", ["write -d hdr.info.hdr.back 9"], "attr block 2 (level 0) links back to 9, not 1", true, false),
        ("remote-bytes", "/attrs/remote", "ablock 1", ["write -d hdr.bytes 5"], "remote value block holds not 4040 bytes", false, true),
        ("remote-owner", "/attrs/remote", "ablock 1", ["write -d hdr.owner 5"], "remote value block owner is not inode", false, false),
        ("remote-magic", "/attrs/remote", "ablock 1", ["write -d hdr.magic 0x1234"], "no leaf, node or remote value magic", true, false),
        ("remote-valueblk", "/attrs/remote", "ablock 0", ["write -d nvlist[0].valueblk 9"], "attr fork block 9 is not mapped", true, true),
    ];

    private static readonly string[] KernelKinds = ["leaf-usedbytes", "remote-valueblk"];

    public static IEnumerable<object[]> Cases()
    {
        bool longMode = Environment.GetEnvironmentVariable("XFBTREE_LONG_TESTS") == "1";
        return Kinds.Where(k => k.Suite || longMode).Select(k => new object[] { k.Name });
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void DamagedAttrForkIsFoundOnItsOwnLineAndCleared(string name)
    {
        var kind = Kinds.Single(k => k.Name == name);
        using var scratch = new RepairScratch();
        string image = scratch.Copy(base_.Image, "attr.img");
        ulong ino = InodeCoreScrubTests.InodeOf(image, kind.Path);
        var args = new List<string> { "-x", "-c", $"inode {ino}" };
        if (kind.Nav.Length > 0) { args.Add("-c"); args.Add(kind.Nav); }
        foreach (string c in kind.Commands) { args.Add("-c"); args.Add(c); }
        args.Add(image);
        Assert.Equal(0, RepairTools.Exec(TreeFixtures.Tool("xfs_db"), args).ExitCode);
        var oracle = RepairTools.XfsRepairCheck(image);
        output.WriteLine($"xfs_repair -n: exit {oracle.ExitCode}");
        Assert.True((oracle.ExitCode != 0) == kind.RepairFinds, $"xfs_repair -n on {name}: {oracle}");

        var (rc, stdout, stderr) = ScrubCli.Run(image);
        output.WriteLine(stdout + stderr);
        Assert.Equal(1, rc);
        string line = stdout.Split('\n').Single(l => l.StartsWith($"inode {ino} attr fork: damaged: ", StringComparison.Ordinal));
        Assert.Contains(kind.Expect, line, StringComparison.Ordinal);
        Assert.DoesNotContain(stdout.Split('\n'), l => l.StartsWith("AG ", StringComparison.Ordinal) && l.Contains(": damaged", StringComparison.Ordinal) && !l.Contains(" attr forks: ", StringComparison.Ordinal));

        var repaired = ScrubCli.Run(image, "--repair");
        output.WriteLine(repaired.Stdout + repaired.Stderr);
        Assert.Contains("attr forks: repaired: 1 of 1 damaged attr forks cleared", repaired.Stdout, StringComparison.Ordinal);
        Assert.True(repaired.ExitCode == 0, $"scrub --repair must leave the image clean: exit {repaired.ExitCode}");
        var witness = RepairTools.XfsRepairCheck(image);
        Assert.True(witness.ExitCode == 0, $"xfs_repair -n after the repair of {name}: {witness}");
        // The kernel on two kinds in the suite (a workload is several seconds), on every kind in long mode.
        if (!(KernelKinds.Contains(name) || Environment.GetEnvironmentVariable("XFBTREE_LONG_TESTS") == "1")) return;
        KernelOracle.AssertKernelWorkloadAndRepair(image, output, $"the image repaired after attr fork {name}");
    }

    /// <summary>The kinds checked online in the suite (every kind in long mode).</summary>
    public static IEnumerable<object[]> OnlineCases()
    {
        bool longMode = Environment.GetEnvironmentVariable("XFBTREE_LONG_TESTS") == "1";
        string[] suite = ["sf-totsize", "leaf-usedbytes", "remote-owner"];
        return Kinds.Where(k => longMode || suite.Contains(k.Name)).Select(k => new object[] { k.Name });
    }

    /// <summary>
    /// The same damage found by the online check of an open engine (each inode's attr fork read under its inode lock)
    /// while two writers run, the fork cleared online by the offline repair's transaction, the online check clean
    /// again, xfs_repair -n clean after the close.
    /// </summary>
    [Theory]
    [MemberData(nameof(OnlineCases))]
    public void DamagedAttrForkIsFoundAndClearedOnlineBesideWriters(string name)
    {
        var kind = Kinds.Single(k => k.Name == name);
        using var scratch = new RepairScratch();
        string image = scratch.Copy(base_.Image, "attr-online.img");
        ulong ino = InodeCoreScrubTests.InodeOf(image, kind.Path);
        var args = new List<string> { "-x", "-c", $"inode {ino}" };
        if (kind.Nav.Length > 0) { args.Add("-c"); args.Add(kind.Nav); }
        foreach (string c in kind.Commands) { args.Add("-c"); args.Add(c); }
        args.Add(image);
        Assert.Equal(0, RepairTools.Exec(TreeFixtures.Tool("xfs_db"), args).ExitCode);
        using (var engine = Xfbtree.Xfs.Write.Engine.WriteEngine.Open(image, Online.OnlineTestSupport.Fast))
        {
            var found = Xfbtree.Xfs.Scrub.OnlineScrubber.Run(engine);
            var forks = found.Findings.Single(f => f.Structure == "attr forks" && f.Verdict == Xfbtree.Xfs.Scrub.ScrubVerdict.Damaged);
            string line = Assert.Single(forks.Problems);
            output.WriteLine(line);
            Assert.StartsWith($"inode {ino} attr fork: damaged: ", line, StringComparison.Ordinal);
            Assert.Contains(kind.Expect, line, StringComparison.Ordinal);
            engine.Close();
        }
        BackgroundWriters.RepairOnlineBesideWriters(image, "attr forks", output);
    }

    /// <summary>Healthy kernel-made images with attributes of every form (shortform, leaf, node, remote values, on
    /// files, a directory and beside every data fork form) scrub clean: the rmapbt one (4 KiB blocks, 512-byte
    /// inodes) here, and mkfs.xfs's defaults (no rmapbt) and 1 KiB blocks with large extent counters in long mode.</summary>
    [Fact]
    public void KernelMadeImagesWithAttributesScrubClean()
    {
        var images = new List<string> { base_.Image };
        using var scratch = new RepairScratch();
        if (Environment.GetEnvironmentVariable("XFBTREE_LONG_TESTS") == "1")
        {
            images.Add(KernelAttrImage.Make(Path.Combine(scratch.Directory, "defaults")));
            images.Add(KernelAttrImage.Make(Path.Combine(scratch.Directory, "bs1k"), "-b", "size=1024", "-i", "nrext64=1", "-m", "rmapbt=1"));
        }
        foreach (string image in images)
        {
            var (rc, stdout, stderr) = ScrubCli.Run(image);
            output.WriteLine(image + "\n" + stdout + stderr);
            Assert.True(rc == 0, $"a healthy kernel-made image must scrub clean: exit {rc}");
            Assert.Contains(" attr forks: clean", stdout, StringComparison.Ordinal);
            Assert.Contains(" inode cores: clean", stdout, StringComparison.Ordinal);
        }
        output.WriteLine($"{images.Count.ToString(CultureInfo.InvariantCulture)} images clean");
    }
}
