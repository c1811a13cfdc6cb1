using Xfbtree.Xfs.Tests.Repair;
using Xfbtree.Xfs.Tests.Trees;
using Xfbtree.Xfs.Tests.Write;
using Xunit.Abstractions;

namespace Xfbtree.Xfs.Tests.Scrub;

/// <summary>
/// <c>xfbtree scrub IMAGE --repair</c> with a damaged primary superblock (geom-bs1k): the image does not open, so the
/// primary is restored from a secondary first (xfs_repair's way, under the NEEDSREPAIR protocol), then checked; the
/// restored sector must be the original primary byte for byte but its LSN and CRC, xfs_repair -n must agree, and the
/// kernel must mount and use the image. With no usable secondary: one clear line, exit 1, not a byte written.
/// </summary>
public sealed class PrimarySuperblockRepairTests(ITestOutputHelper output)
{
    private const string Fixture = "geom-bs1k";

    static void Db(string image, params string[] commands)
    {
        var args = new List<string> { "-x" };
        foreach (string c in commands) { args.Add("-c"); args.Add(c); }
        args.Add(image);
        var r = RepairTools.Exec(TreeFixtures.Tool("xfs_db"), args);
        Assert.True(r.ExitCode == 0, r.ToString());
    }

    static byte[] Sector0(string image)
    {
        using var f = File.OpenRead(image);
        byte[] s = new byte[512];
        f.ReadExactly(s);
        return s;
    }

    /// <summary>The superblock sector without the fields a restore may not bring back as they were: CRC (224..227) and LSN (240..247).</summary>
    static byte[] WithoutCrcAndLsn(byte[] sector)
    {
        byte[] s = (byte[])sector.Clone();
        s.AsSpan(224, 4).Clear();
        s.AsSpan(240, 8).Clear();
        return s;
    }

    public static IEnumerable<object[]> Kinds() =>
    [
        ["magic"], ["crc"], ["agblocks"], ["with-ag1-secondary"],
    ];

    [Theory]
    [MemberData(nameof(Kinds))]
    public void ADamagedPrimaryIsRestoredFromASecondary(string kind)
    {
        using var scratch = new RepairScratch();
        string image = scratch.CopyFixture(Fixture);
        byte[] original = Sector0(image);
        switch (kind)
        {
            case "magic": Db(image, "sb 0", "write -d magicnum 0x12345678"); break;
            case "crc": Db(image, "sb 0", "crc -i"); break;
            case "agblocks": Db(image, "sb 0", "write -d agblocks 1000"); break;
            default:
                // The secondary of AG 1 is damaged too: AG 2's is used, which mkfs left without the root inode.
                Db(image, "sb 0", "crc -i", "sb 1", "write -d agblocks 1000");
                break;
        }
        var before = ScrubCli.Run(image);
        output.WriteLine(before.Stdout + before.Stderr);
        Assert.Equal(2, before.ExitCode);
        var (rc, stdout, stderr) = ScrubCli.Run(image, "--repair");
        output.WriteLine(stdout + stderr);
        Assert.Contains("repair: primary superblock: repaired: copied from the secondary superblock of AG " + (kind == "with-ag1-secondary" ? "2" : "1"), stdout, StringComparison.Ordinal);
        Assert.DoesNotContain("not repaired", stdout, StringComparison.Ordinal);
        Assert.True(rc == 0, $"scrub --repair must leave the image clean: exit {rc}");
        Assert.Contains("result after repair: clean", stdout, StringComparison.Ordinal);
        Assert.Equal(WithoutCrcAndLsn(original), WithoutCrcAndLsn(Sector0(image)));
        Assert.False(WriteEngineTestSupport.NeedsRepair(image), "NEEDSREPAIR must be cleared after the restore");
        var witness = RepairTools.XfsRepairCheck(image);
        Assert.True(witness.ExitCode == 0, $"xfs_repair -n after the restore: {witness}");
        if (kind is "magic" or "with-ag1-secondary")
        {
            KernelOracle.RequireRootAndTools();
            KernelOracle.AssertKernelWorkloadAndRepair(image, output, $"the image after its primary superblock ({kind}) was restored");
        }
    }

    [Fact]
    public void NoUsableSecondaryIsOneClearLineAndNothingWritten()
    {
        using var scratch = new RepairScratch();
        string image = scratch.CopyFixture(Fixture);
        Db(image, "sb 0", "write -d magicnum 0x12345678", "sb 1", "write -d magicnum 0x12345678", "sb 2", "write -d magicnum 0x12345678", "sb 3", "write -d magicnum 0x12345678");
        byte[] before = File.ReadAllBytes(image);
        var (rc, stdout, stderr) = ScrubCli.Run(image, "--repair");
        output.WriteLine(stdout + stderr);
        Assert.Equal(1, rc);
        Assert.Contains("the primary superblock is damaged (no XFSB magic) and cannot be restored: no secondary superblock found", stderr, StringComparison.Ordinal);
        Assert.Single(stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries));
        Assert.True(before.AsSpan().SequenceEqual(File.ReadAllBytes(image)), "a refused restore must not write a byte");
        var (jrc, json, _) = ScrubCli.Run(image, "--repair", "--json");
        Assert.Equal(1, jrc);
        using var doc = System.Text.Json.JsonDocument.Parse(json);
        Assert.Contains("cannot be restored", doc.RootElement.GetProperty("error").GetString(), StringComparison.Ordinal);
    }

    [Fact]
    public void TheRestoreIsARepairOfTheJsonReport()
    {
        using var scratch = new RepairScratch();
        string image = scratch.CopyFixture(Fixture);
        Db(image, "sb 0", "crc -i");
        var (rc, stdout, _) = ScrubCli.Run(image, "--repair", "--json");
        Assert.Equal(0, rc);
        using var doc = System.Text.Json.JsonDocument.Parse(stdout);
        var repair = Assert.Single(doc.RootElement.GetProperty("repairs").EnumerateArray());
        Assert.Equal("primary superblock", repair.GetProperty("repair").GetString());
        Assert.True(repair.GetProperty("repaired").GetBoolean());
        Assert.True(doc.RootElement.GetProperty("afterRepair").GetProperty("clean").GetBoolean());
        // The check found the primary damaged (it was restored before the rest could be read): the report says so.
        Assert.True(doc.RootElement.GetProperty("damaged").GetBoolean());
        Assert.False(doc.RootElement.GetProperty("clean").GetBoolean());
        var first = doc.RootElement.GetProperty("structures").EnumerateArray().Single(e => e.GetProperty("structure").GetString() == "primary superblock");
        Assert.Equal("primary superblock", first.GetProperty("structure").GetString());
        Assert.Equal("damaged", first.GetProperty("verdict").GetString());
        Assert.Contains("CRC", first.GetProperty("problems")[0].GetString(), StringComparison.Ordinal);
        string again = scratch.Copy(TreeFixtures.Image(Fixture), "again.img");
        Db(again, "sb 0", "crc -i");
        var (trc, text, _) = ScrubCli.Run(again, "--repair");
        Assert.Equal(0, trc);
        Assert.Contains("\nprimary superblock: damaged: ", text, StringComparison.Ordinal);
        Assert.Contains("\nresult: DAMAGED (1 of ", text, StringComparison.Ordinal);
        Assert.Contains("\nresult after repair: clean", text, StringComparison.Ordinal);
    }

    public static IEnumerable<object[]> UnknownFeatureKinds() =>
    [
        ["features_incompat", 0x40000000u], ["features_ro_compat", 0x10000000u], ["features_compat", 0x10u], ["features_incompat", 0xFFFFFFC0u],
    ];

    /// <summary>
    /// Feature bits nothing knows in the primary superblock only: xfs_repair 6.1 refuses the image (exit 1, with -n
    /// and without, "Found unsupported filesystem features"), whatever the secondaries say; the secondaries agree with
    /// each other and with the rest of the primary, so the scrub reports the primary damaged (exit 1, as xfs_repair -n)
    /// and <c>--repair</c> restores it from them: byte for byte the original (CRC and LSN aside), then xfs_repair -n
    /// exits 0 and the kernel mounts and uses the image.
    /// </summary>
    [Theory]
    [MemberData(nameof(UnknownFeatureKinds))]
    public void UnknownFeatureBitsOnlyInThePrimaryAreRestoredFromTheSecondaries(string field, uint bits)
    {
        using var scratch = new RepairScratch();
        string image = scratch.CopyFixture(Fixture);
        byte[] original = Sector0(image);
        int offset = field switch { "features_compat" => 208, "features_ro_compat" => 212, _ => 216 };
        uint value = System.Buffers.Binary.BinaryPrimitives.ReadUInt32BigEndian(original.AsSpan(offset)) | bits;
        Db(image, "sb 0", $"write -d {field} {value}");
        var theirs = RepairTools.XfsRepairCheck(image);
        output.WriteLine($"xfs_repair -n: exit {theirs.ExitCode}: {theirs.Stdout}{theirs.Stderr}");
        Assert.Equal(1, theirs.ExitCode);
        var before = ScrubCli.Run(image);
        output.WriteLine(before.Stdout + before.Stderr);
        Assert.Equal(1, before.ExitCode);
        // Unknown compat bits do not stop the open (the kernel mounts such a filesystem too): the primary is outvoted
        // on its own line; unknown ro_compat or incompat bits stop it, with the same verdict in one line.
        if (field == "features_compat") Assert.Contains("primary superblock: damaged: it differs from all", before.Stdout, StringComparison.Ordinal);
        else Assert.Contains("the primary superblock is damaged: unknown feature bits", before.Stderr, StringComparison.Ordinal);
        var (rc, stdout, stderr) = ScrubCli.Run(image, "--repair");
        output.WriteLine(stdout + stderr);
        Assert.Contains("repair: primary superblock: repaired: copied from the secondary superblock of AG 1", stdout, StringComparison.Ordinal);
        Assert.True(rc == 0, $"scrub --repair must leave the image clean: exit {rc}");
        Assert.Equal(WithoutCrcAndLsn(original), WithoutCrcAndLsn(Sector0(image)));
        var witness = RepairTools.XfsRepairCheck(image);
        Assert.True(witness.ExitCode == 0, $"xfs_repair -n after the restore: {witness}");
        if (bits == 0x40000000u)
        {
            KernelOracle.RequireRootAndTools();
            KernelOracle.AssertKernelWorkloadAndRepair(image, output, "the image after its primary's unknown feature bits were restored away");
        }
    }

    /// <summary>The same bits in every superblock (a filesystem newer than this tool, not a damaged one): not
    /// supported, exit 2, and --repair writes nothing.</summary>
    [Fact]
    public void UnknownFeatureBitsInEverySuperblockAreANewerFilesystemNotDamage()
    {
        using var scratch = new RepairScratch();
        string image = scratch.CopyFixture(Fixture);
        byte[] original = Sector0(image);
        uint agcount = System.Buffers.Binary.BinaryPrimitives.ReadUInt32BigEndian(original.AsSpan(88));
        uint value = System.Buffers.Binary.BinaryPrimitives.ReadUInt32BigEndian(original.AsSpan(216)) | 0x40000000u;
        var commands = new List<string>();
        for (uint a = 0; a < agcount; a++) { commands.Add($"sb {a}"); commands.Add($"write -d features_incompat {value}"); }
        Db(image, [.. commands]);
        byte[] damaged = File.ReadAllBytes(image);
        var check = ScrubCli.Run(image);
        Assert.Equal(2, check.ExitCode);
        Assert.Contains("unsupported incompatible feature bits 0x40000000", check.Stderr, StringComparison.Ordinal);
        var repair = ScrubCli.Run(image, "--repair");
        output.WriteLine(repair.Stdout + repair.Stderr);
        Assert.Equal(2, repair.ExitCode);
        Assert.True(damaged.AsSpan().SequenceEqual(File.ReadAllBytes(image)), "--repair must not write a byte of a filesystem it does not support");
    }
}
