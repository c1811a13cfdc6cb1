using Xfbtree.Xfs.Online;
using Xfbtree.Xfs.Scrub;
using Xfbtree.Xfs.Tests.Online;
using Xfbtree.Xfs.Tests.Repair;
using Xfbtree.Xfs.Write;
using Xunit.Abstractions;

namespace Xfbtree.Xfs.Tests.Scrub;

/// <summary>
/// Directories salvaged and rebuilt (<see cref="OnlineDirectoryRepair"/>) on an image the kernel populated
/// (<see cref="KernelPopulatedImage"/>): damage of each directory format (shortform, block, leaf, node; data, leaf,
/// node and free-index blocks: magic, CRC, owner, entry lengths and tags, hash order, best-free tables, leaf sibling
/// links) is found (<c>directories: damaged</c>, exit 1), repaired by <c>xfbtree scrub --repair</c> and online beside
/// writers; then the image checks clean, <c>xfs_repair -n</c> exits 0 and the kernel reads every file with its
/// content: under its own name when the entry could be salvaged (every name for the kinds that lose none), else in
/// /lost+found (named by the link count repair), where each unsalvaged file must be found by its content.
/// </summary>
public sealed class DirectoryRepairTests(ITestOutputHelper output)
{
    private const long LeafBlock = 8388608, FreeBlock = 16777216;

    private static string Db(string image, string dir, params string[] commands)
    {
        ulong ino = KernelPopulatedImage.Ino(image, dir);
        if (commands[^1].StartsWith("badcrc ", StringComparison.Ordinal))
        {
            // xfs_db's crc -i does not know directory blocks: the CRC's bytes are flipped in place instead.
            int at = int.Parse(commands[^1]["badcrc ".Length..], System.Globalization.CultureInfo.InvariantCulture);
            string stack = KernelPopulatedImage.Db(image, false, [$"inode {ino}", .. commands[..^1], "stack"]);
            var m = System.Text.RegularExpressions.Regex.Match(stack, @"byte offset (\d+)");
            Assert.True(m.Success, stack);
            using var f = new FileStream(image, FileMode.Open, FileAccess.ReadWrite);
            f.Position = long.Parse(m.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture) + at;
            int b = f.ReadByte();
            f.Position--;
            f.WriteByte((byte)(b ^ 0xff));
            return $"{dir} (inode {ino}): {string.Join("; ", commands)} (at byte {f.Position - 1 - at})";
        }
        string outp = KernelPopulatedImage.Db(image, true, [$"inode {ino}", .. commands]);
        Assert.DoesNotContain("not found", outp, StringComparison.Ordinal);
        return $"{dir} (inode {ino}): {string.Join("; ", commands)}";
    }

    /// <summary>Each kind: the directory it damages, how, and whether entries may be lost (the walk of a data block
    /// or shortform area stops at the damaged entry).</summary>
    private static readonly (string Name, string Dir, bool Lossy, string[] Commands)[] Kinds =
    [
        ("sf-namelen", "/sf", true, ["write -d u3.sfdir3.list[1].namelen 200"]),
        ("sf-count", "/sf", false, ["write -d u3.sfdir3.hdr.count 5"]),
        ("block-magic", "/block", false, ["dblock 0", "write -d bhdr.hdr.magic 0"]),
        ("block-crc", "/block", false, ["dblock 0", "badcrc 4"]),
        ("block-owner", "/block", false, ["dblock 0", "write -d bhdr.hdr.owner 129"]),
        ("block-entry-tag", "/block", true, ["dblock 0", "write -d bu[12].tag 0"]),
        ("block-bestfree", "/block", false, ["dblock 0", "write -d bhdr.bestfree[0].length 8"]),
        ("block-leaf-hash-order", "/block", false, ["dblock 0", "write -d bleaf[1].hashval 0xffffffff"]),
        ("leaf-magic", "/leaf", false, [$"dblock {LeafBlock}", "write -d lhdr.info.hdr.magic 0"]),
        ("leaf-hash-order", "/leaf", false, [$"dblock {LeafBlock}", "write -d lents[2].hashval 0"]),
        ("leaf-bestfree", "/leaf", false, [$"dblock {LeafBlock}", "write -d lbests[1] 8"]),
        ("leaf-data-crc", "/leaf", false, ["dblock 1", "badcrc 4"]),
        ("leaf-data-namelen", "/leaf", true, ["dblock 1", "write -d du[20].namelen 0"]),
        ("node-root-crc", "/node", false, [$"dblock {LeafBlock}", "badcrc 12"]),
        ("node-free-crc", "/node", false, [$"dblock {FreeBlock}", "badcrc 4"]),
        ("node-free-bests", "/node", false, [$"dblock {FreeBlock}", "write -d fbests[3] 0x10"]),
        ("node-leaf-sibling", "/node", false, [$"dblock {LeafBlock + 2}", "write -d lhdr.info.hdr.forw 0"]),
        ("node-data-owner", "/node", false, ["dblock 3", "write -d dhdr.hdr.owner 129"]),
    ];

    private static bool Long => Environment.GetEnvironmentVariable("XFBTREE_LONG_TESTS") == "1";

    /// <summary>The kinds the suite runs (every format, the leaf and node index checks); every kind with
    /// XFBTREE_LONG_TESTS=1.</summary>
    private static readonly HashSet<string> SuiteKinds =
    [
        "sf-namelen", "block-crc", "leaf-hash-order", "leaf-bestfree", "node-free-crc", "node-leaf-sibling",
    ];

    public static IEnumerable<object[]> Cases() => Kinds.Where(k => Long || SuiteKinds.Contains(k.Name)).Select(k => new object[] { k.Name });

    /// <summary>The online variants: in the suite one shortform, one block and one node directory; every one with
    /// XFBTREE_LONG_TESTS=1.</summary>
    public static IEnumerable<object[]> OnlineCases() =>
        new[] { "sf-namelen", "block-crc", "block-entry-tag", "leaf-hash-order", "leaf-data-namelen", "node-free-crc" }
            .Where(k => Long || k is "sf-namelen" or "block-crc" or "node-free-crc").Select(k => new object[] { k });

    private (string Image, (string Name, string Dir, bool Lossy, string[] Commands) Kind) Damage(RepairScratch scratch, string kind)
    {
        var k = Kinds.Single(x => x.Name == kind);
        string image = scratch.Copy(KernelPopulatedImage.Image, "dir.img");
        output.WriteLine($"{kind}: {Db(image, k.Dir, k.Commands)}");
        return (image, k);
    }

    /// <summary>Every file of the manifest under its name, or (a lossy kind, in the damaged directory) in
    /// /lost+found with the same content.</summary>
    private void AssertEveryFileKept(string image, Dictionary<string, string> manifest, string dir, bool lossy)
    {
        string prefix = dir + "/";
        var seen = KernelPopulatedImage.AssertKernelReads(image, manifest, p => lossy && p.StartsWith(prefix, StringComparison.Ordinal));
        var missing = manifest.Where(e => !seen.ContainsKey(e.Key)).ToList();
        var orphans = seen.Where(e => e.Key.StartsWith("/lost+found/", StringComparison.Ordinal)).Select(e => e.Value).ToList();
        output.WriteLine($"{missing.Count} names not salvaged, {orphans.Count} inodes in /lost+found");
        foreach (var (path, sha) in missing)
        {
            Assert.True(orphans.Remove(sha), $"{path} was neither salvaged nor found in /lost+found");
        }
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void DamagedDirectoryIsSalvagedOfflineWithEveryFileKept(string kind)
    {
        using var scratch = new RepairScratch();
        var manifest = KernelPopulatedImage.Manifest();
        var (image, k) = Damage(scratch, kind);
        var (rc, stdout, _) = ScrubCli.Run(image);
        output.WriteLine(stdout);
        Assert.Equal(1, rc);
        Assert.Contains("directories: damaged", stdout, StringComparison.Ordinal);
        (rc, stdout, string stderr) = ScrubCli.Run(image, "--repair");
        output.WriteLine(stdout + stderr);
        Assert.Contains("repair: directories: repaired", stdout, StringComparison.Ordinal);
        Assert.DoesNotContain("not repaired", stdout, StringComparison.Ordinal);
        Assert.True(rc == 0, $"scrub --repair must leave the image clean: exit {rc}");
        Assert.Contains("result after repair: clean", stdout, StringComparison.Ordinal);
        var witness = RepairTools.XfsRepairCheck(image);
        Assert.True(witness.ExitCode == 0, $"xfs_repair -n after the repair: {witness}");
        AssertEveryFileKept(image, manifest, k.Dir, k.Lossy);
        Assert.Equal(0, RepairTools.XfsRepairCheck(image).ExitCode);
    }

    [Theory]
    [MemberData(nameof(OnlineCases))]
    public void DamagedDirectoryIsSalvagedOnlineBesideWriters(string kind)
    {
        using var scratch = new RepairScratch();
        var manifest = KernelPopulatedImage.Manifest();
        var (image, k) = Damage(scratch, kind);
        Dictionary<string, string> written = BackgroundWriters.RepairOnlineBesideWriters(image, LinkCountScrubber.DirectoryStructure, output);
        foreach (var (path, sha) in written) manifest[path] = sha;
        AssertEveryFileKept(image, manifest, k.Dir, k.Lossy);
    }

    [Fact]
    public void ADirectoryWhoseParentCannotBeSalvagedIsRefusedWithNothingChanged()
    {
        using var scratch = new RepairScratch();
        string image = scratch.Copy(KernelPopulatedImage.Image, "dir.img");
        // '..' (the second entry) names nothing live and the magic is gone: the parent cannot be made up.
        output.WriteLine(Db(image, "/block", "dblock 0", "write -d bu[1].inumber 4294967000"));
        output.WriteLine(Db(image, "/block", "dblock 0", "write -d bhdr.hdr.magic 0"));
        ulong ino = KernelPopulatedImage.Ino(image, "/block");
        using XfsFileSystem fs = XfsFileSystem.Open(image, OnlineTestSupport.Fast);
        var e = Assert.Throws<OnlineRepairException>(() => OnlineDirectoryRepair.Run(fs.Engine, ino));
        output.WriteLine(e.Message);
        Assert.Contains("the parent cannot be made up", e.Message, StringComparison.Ordinal);
        fs.Close();
    }
}
