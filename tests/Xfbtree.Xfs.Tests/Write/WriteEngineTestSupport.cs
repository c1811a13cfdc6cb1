using System.Buffers.Binary;
using Xfbtree.Xfs.Tests.Repair;
using Xfbtree.Xfs.Tests.Trees;
using Xfbtree.Xfs.Write;
using Xfbtree.Xfs.Write.Engine;
using Xfbtree.Xfs.Write.Space;

namespace Xfbtree.Xfs.Tests.Write;

/// <summary>Helpers of the write-engine tests: fixture copies, oracles, superblock peeks that work while the engine holds the image.</summary>
internal static class WriteEngineTestSupport
{
    /// <summary>Options for tests: no fsync per commit (the page cache is what a kill -9 leaves anyway).</summary>
    public static WriteEngineOptions Fast => new() { SyncCommits = false, CheckLoggedRanges = true, CheckWriteAhead = true };

    /// <summary>features_incompat of the primary superblock via xfs_db (no flock, so it works while the engine holds the image).</summary>
    public static uint IncompatViaXfsDb(string image)
    {
        string text = TreeFixtures.XfsDb(image, "sb 0", "print features_incompat");
        string value = text.Split('=')[1].Trim();
        return Convert.ToUInt32(value, 16);
    }

    /// <summary>Reads the primary superblock sector directly (only when nobody holds the image).</summary>
    public static byte[] SuperblockSector(string image)
    {
        using var f = File.OpenHandle(image);
        var sb = new byte[512];
        RandomAccess.Read(f, sb, 0);
        return sb;
    }

    /// <summary>Read-only open options that accept a filesystem without an rmapbt too (the tests' own peeks at inodes
    /// and headers; the rmap commands keep refusing one).</summary>
    public static XfsImageOptions EitherRmapbt => new() { AllowMissingRmapbt = true };

    public static bool NeedsRepair(string image) => (BinaryPrimitives.ReadUInt32BigEndian(SuperblockSector(image).AsSpan(216)) & 0x10) != 0;

    public static void AssertInvariants(WriteEngine engine, string when)
    {
        List<string> problems = WriteInvariants.Check(engine);
        Assert.True(problems.Count == 0, $"{when}: {problems.Count} invariant violations:\n{string.Join('\n', problems.Take(20))}");
    }

    /// <summary>xfs_repair -n and xfbtree rmap check both exit 0; on a filesystem without an rmapbt, xfs_repair -n and
    /// the offline scrub (whose scan holds every block in use against the free-space trees, the check the rmapbt
    /// invariants make otherwise), and rmap check says there is nothing to check.</summary>
    public static void AssertOraclesClean(string image, string when)
    {
        ToolResult repair = RepairTools.XfsRepairCheck(image);
        Assert.True(repair.ExitCode == 0, $"{when}: xfs_repair -n: {repair}");
        ToolResult check = RepairTools.Xfbtree("rmap", "check", image);
        if (HasRmapbt(image))
        {
            Assert.True(check.ExitCode == 0, $"{when}: xfbtree rmap check: {check}");
            return;
        }
        Assert.True(check.ExitCode == 2 && check.Stderr.Contains("no reverse-mapping btree", StringComparison.Ordinal), $"{when}: xfbtree rmap check without an rmapbt: {check}");
        ToolResult scrub = RepairTools.Xfbtree("scrub", "--no-progress", image);
        Assert.True(scrub.ExitCode == 0, $"{when}: xfbtree scrub: {scrub}");
    }

    /// <summary>Whether the image's primary superblock has the rmapbt feature (read directly; only when nobody is
    /// writing it).</summary>
    public static bool HasRmapbt(string image) => (BinaryPrimitives.ReadUInt32BigEndian(SuperblockSector(image).AsSpan(212)) & 2) != 0;

    public static XfsWriteException OpenFails(string image, WriteEngineOptions? options = null)
    {
        var e = Assert.Throws<XfsWriteException>(() =>
        {
            using var engine = WriteEngine.Open(image, options);
        });
        Assert.DoesNotContain("\n", e.Message, StringComparison.Ordinal);
        return e;
    }
}
