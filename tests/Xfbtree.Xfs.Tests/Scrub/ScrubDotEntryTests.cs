using Xfbtree.Xfs.Online;
using Xfbtree.Xfs.Tests.Online;
using Xfbtree.Xfs.Tests.Repair;
using Xfbtree.Xfs.Tests.Trees;
using Xfbtree.Xfs.Tests.Write;
using Xfbtree.Xfs.Write;
using Xunit.Abstractions;

namespace Xfbtree.Xfs.Tests.Scrub;

/// <summary>
/// The file types of '.' and '..' (ftype feature). A block, leaf or node directory stores both as entries with a
/// file type byte; shortform stores neither. Directories made by the kernel (a block and a leaf directory, on a copy
/// of fresh-4ag) must say "directory" (2) in both, which the test reads with xfs_db first; then '.' of the block
/// directory is damaged to a regular file (1) and '..' of the leaf directory to a symlink (7) with xfs_db (which
/// xfs_repair -n reports as "ftype mismatch"). The offline check, the online check on an open engine and the repairs
/// (offline `scrub --repair`, online `OnlineLinkCounts` with repair) must find exactly those two entries and set both
/// back to 2; xfs_repair -n and the kernel agree after.
/// </summary>
public sealed class ScrubDotEntryTests(ITestOutputHelper output)
{
    static string Db(string image, bool write, params string[] commands)
    {
        var args = new List<string>();
        if (write) args.Add("-x");
        else args.Add("-r");
        foreach (string c in commands) { args.Add("-c"); args.Add(c); }
        args.Add(image);
        var r = RepairTools.Exec(TreeFixtures.Tool("xfs_db"), args);
        Assert.True(r.ExitCode == 0 && !r.Stderr.Contains("not found", StringComparison.Ordinal), r.ToString());
        return r.Stdout;
    }

    /// <summary>A copy of fresh-4ag where the kernel made /blk (20 entries: block form) and /leaf (300 long names:
    /// leaf form); their inode numbers.</summary>
    static (string Image, ulong Block, ulong Leaf) KernelDirectories(RepairScratch scratch)
    {
        string image = scratch.CopyFixture("fresh-4ag");
        string mnt = Directory.CreateDirectory(Path.Combine(scratch.Directory, "mnt")).FullName;
        ToolResult mount = RepairTools.Exec("/bin/mount", ["-o", "loop,nouuid", image, mnt]);
        Assert.True(mount.ExitCode == 0, $"kernel mount: {mount}");
        ulong block, leaf;
        try
        {
            Directory.CreateDirectory(Path.Combine(mnt, "blk"));
            Directory.CreateDirectory(Path.Combine(mnt, "leaf"));
            for (int i = 0; i < 20; i++) File.WriteAllText(Path.Combine(mnt, "blk", $"file{i}"), "");
            for (int i = 0; i < 300; i++) File.WriteAllText(Path.Combine(mnt, "leaf", $"a-longer-file-name-{i}"), "");
            block = Ino(Path.Combine(mnt, "blk"));
            leaf = Ino(Path.Combine(mnt, "leaf"));
        }
        finally
        {
            ToolResult umount = RepairTools.Exec("/bin/umount", [mnt]);
            Assert.True(umount.ExitCode == 0, $"umount: {umount}");
        }
        return (image, block, leaf);
    }

    static ulong Ino(string path)
    {
        var st = RepairTools.Exec("/usr/bin/stat", ["-c", "%i", path]);
        Assert.True(st.ExitCode == 0, st.ToString());
        return ulong.Parse(st.Stdout.Trim(), System.Globalization.CultureInfo.InvariantCulture);
    }

    /// <summary>The four file type bytes: '.' and '..' of the block directory (bu[0], bu[1]) and of the leaf
    /// directory's first data block (du[0], du[1]).</summary>
    static string DotTypes(string image, ulong block, ulong leaf) => Db(image, false,
        $"inode {block}", "dblock 0", "p bu[0].name bu[0].filetype bu[1].name bu[1].filetype",
        $"inode {leaf}", "dblock 0", "p du[0].name du[0].filetype du[1].name du[1].filetype");

    const string AllDirectories =
        "bu[0].name = \".\"\nbu[0].filetype = 2\nbu[1].name = \"..\"\nbu[1].filetype = 2\n" +
        "du[0].name = \".\"\ndu[0].filetype = 2\ndu[1].name = \"..\"\ndu[1].filetype = 2\n";

    static void Damage(string image, ulong block, ulong leaf) => Db(image, true,
        $"inode {block}", "dblock 0", "write bu[0].filetype 1",
        $"inode {leaf}", "dblock 0", "write du[1].filetype 7");

    [Fact]
    public void DotEntryFileTypesAreCheckedAndRepairedOffline()
    {
        using var scratch = new RepairScratch();
        var (image, block, leaf) = KernelDirectories(scratch);
        Assert.Equal(AllDirectories, DotTypes(image, block, leaf)); // what the kernel writes
        Damage(image, block, leaf);
        var xfsRepair = RepairTools.XfsRepairCheck(image);
        Assert.True(xfsRepair.ExitCode == 1, $"xfs_repair -n must see the damage: {xfsRepair}");

        var (rc, stdout, _) = ScrubCli.Run(image);
        output.WriteLine(stdout);
        Assert.Equal(1, rc);
        Assert.Contains($"nlinks: damaged: directory {block} entry '.' says a regular file, but inode {block} is a directory; " +
                        $"directory {leaf} entry '..' says a symlink, but inode 128 is a directory", stdout, StringComparison.Ordinal);
        Assert.DoesNotContain("wrong link count\n", stdout.Replace("0 wrong link counts", "", StringComparison.Ordinal), StringComparison.Ordinal);

        var (rrc, repaired, stderr) = ScrubCli.Run(image, "--repair");
        output.WriteLine(repaired + stderr);
        Assert.Contains("2 wrong directory entries: 2 repaired", repaired, StringComparison.Ordinal);
        Assert.True(rrc == 0, $"scrub --repair must leave the image clean: exit {rrc}");
        Assert.Equal(AllDirectories, DotTypes(image, block, leaf));
        var witness = RepairTools.XfsRepairCheck(image);
        Assert.True(witness.ExitCode == 0, $"xfs_repair -n after the repair: {witness}");
        KernelOracle.AssertKernelWorkloadAndRepair(image, output, "the image after the '.'/'..' file types were repaired");
    }

    [Fact]
    public void DotEntryFileTypesAreCheckedAndRepairedOnline()
    {
        using var scratch = new RepairScratch();
        var (image, block, leaf) = KernelDirectories(scratch);
        Damage(image, block, leaf);
        using (var fs = XfsFileSystem.Open(image, OnlineTestSupport.Fast))
        {
            OnlineLinkCountResult check = OnlineLinkCounts.Run(fs);
            Assert.Equal(
                [$"directory {block} entry '.' says a regular file, but inode {block} is a directory", $"directory {leaf} entry '..' says a symlink, but inode 128 is a directory"],
                check.EntryProblems);
            Assert.Equal(0, check.MismatchTotal);
            OnlineLinkCountResult repair = OnlineLinkCounts.Run(fs, new OnlineLinkCountOptions { Repair = true });
            Assert.Equal(2, repair.EntriesRepaired);
            Assert.True(repair.IsClean, string.Join("; ", repair.NotRepaired));
            OnlineLinkCountResult again = OnlineLinkCounts.Run(fs);
            Assert.Equal(0, again.EntryProblemTotal);
            Assert.Equal(20, fs.Namespace.List("/blk").Count(e => e.Name.StartsWith("file", StringComparison.Ordinal))); // still reads
            fs.Close();
        }
        Assert.Equal(AllDirectories, DotTypes(image, block, leaf));
        var witness = RepairTools.XfsRepairCheck(image);
        Assert.True(witness.ExitCode == 0, $"xfs_repair -n after the online repair: {witness}");
    }
}
