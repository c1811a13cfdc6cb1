using Xfbtree.Xfs.Tests.Repair;
using Xfbtree.Xfs.Tests.Trees;
using Xunit.Abstractions;

namespace Xfbtree.Xfs.Tests.Scan;

/// <summary>
/// Geometries the fixtures do not cover, made with mkfs.xfs -p (a generated prototype file; nothing mounted):
/// 64 KiB blocks (128 inodes per block: two inode chunks share a block), 2 KiB inodes (a chunk hole bit covers
/// two blocks), both together, and AGs whose size is not a power of two (fsbno space with holes). The computed set
/// equals the on-disk rmapbt, `check` and `scrub` are clean, and `xfs_repair -n` agrees that the image is clean.
/// </summary>
public sealed class XfsGeometryEdgeTests(ITestOutputHelper output)
{
    public static IEnumerable<object[]> Geometries() =>
    [
        ["-b size=65536"],
        ["-i size=2048"],
        ["-b size=65536 -i size=2048"],
        ["-d agsize=100m"],
    ];

    [Theory]
    [MemberData(nameof(Geometries))]
    public void XfsComputedSetEqualsOnDiskForGeometry(string mkfsOptions)
    {
        using var scratch = new RepairScratch();
        string dir = scratch.Directory;
        File.WriteAllText(Path.Combine(dir, "small.txt"), "small\n");
        var big = new byte[300_000];
        new Random(5).NextBytes(big);
        File.WriteAllBytes(Path.Combine(dir, "big.bin"), big);
        var proto = new List<string> { "/dev/null", "0 0", "d--755 0 0", "d d--755 0 0" };
        for (int i = 0; i < 700; i++) proto.Add($"f{i} ---644 0 0 {Path.Combine(dir, "small.txt")}");
        for (int i = 0; i < 30; i++) proto.Add($"b{i} ---644 0 0 {Path.Combine(dir, "big.bin")}");
        proto.AddRange(["$", "$"]);
        File.WriteAllLines(Path.Combine(dir, "proto"), proto);
        string img = Path.Combine(dir, "g.img");
        using (var fh = File.Create(img)) fh.SetLength(2L << 30);
        TreeFixtures.Run(TreeFixtures.Tool("mkfs.xfs"),
            ["-q", "-f", .. mkfsOptions.Split(' '), "-m", "crc=1,rmapbt=1,reflink=1,finobt=1", "-p", Path.Combine(dir, "proto"), img]);

        var check = XfsCli.Run("check", img);
        output.WriteLine(check.Stdout);
        Assert.True(check.ExitCode == 0, check.ToString());
        var expected = XfsCli.Run("dump", img);
        var ondisk = XfsCli.Run("dump", img, "--source", "ondisk");
        Assert.Equal(0, expected.ExitCode);
        Assert.True(ondisk.Stdout == expected.Stdout, XfsCli.FirstDifference(ondisk.Stdout, expected.Stdout));
        Assert.Contains("XFS_RMAP_OWN_INODES", expected.Stdout, StringComparison.Ordinal);
        // The scrub decodes the same chunks (shared decoder) and counts the links of a 730-entry directory.
        var scrub = Xfbtree.Xfs.Tests.Scrub.ScrubCli.Run(img);
        output.WriteLine(scrub.Stdout);
        Assert.True(scrub.ExitCode == 0, $"scrub exit {scrub.ExitCode}\n{scrub.Stdout}\n{scrub.Stderr}");
        var witness = RepairTools.XfsRepairCheck(img);
        Assert.True(witness.ExitCode == 0, witness.ToString());
    }
}
