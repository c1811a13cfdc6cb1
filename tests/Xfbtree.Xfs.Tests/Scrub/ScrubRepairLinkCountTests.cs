using System.Globalization;
using Xfbtree.Xfs.Tests.Online;
using Xfbtree.Xfs.Tests.Repair;
using Xfbtree.Xfs.Tests.Trees;
using Xfbtree.Xfs.Tests.Write;
using Xfbtree.Xfs.Write;
using Xunit.Abstractions;

namespace Xfbtree.Xfs.Tests.Scrub;

/// <summary>
/// <c>xfbtree scrub --repair</c> of a wrong link count beside a damaged inobt (geom-bs1k): the link count repair waits
/// for the inobt's and runs in the next round (each link count kind alone is in the repair matrix,
/// <c>ScrubRepairMatrixTests</c>).
/// </summary>
public sealed class ScrubRepairLinkCountTests(ITestOutputHelper output)
{
    /// <summary>A wrong link count and a damaged inobt record in AG 1: the link count repair waits while the inode
    /// btree is damaged (a scan through it could miss a directory), the inobt is rebuilt, the image checked again,
    /// and the link count repaired in the next round.</summary>
    [Fact]
    public void ScrubRepairOfLinkCountsWaitsForTheInodeBtrees()
    {
        using var scratch = new RepairScratch();
        string image = scratch.CopyFixture("geom-bs1k");
        output.WriteLine(ScrubCorruptor.Apply(image, ScrubCorruptor.Kinds.Single(k => k.Tree == "inobt" && k.Name == "rec-freecount"), 1));
        output.WriteLine(ScrubCorruptor.Apply(image, ScrubCorruptor.Kinds.Single(k => k.Tree == "nlinks" && k.Name == "nlink-file-high"), 1));
        var (rc, stdout, stderr) = ScrubCli.Run(image, "--repair");
        output.WriteLine(stdout + stderr);
        Assert.Contains("AG 1 inobt: damaged", stdout, StringComparison.Ordinal);
        Assert.Contains("nlinks: damaged", stdout, StringComparison.Ordinal);
        Assert.Contains("repair: AG 1 inobt+finobt: repaired", stdout, StringComparison.Ordinal);
        Assert.Contains("repair: nlinks: repaired: 1 wrong link counts", stdout, StringComparison.Ordinal);
        Assert.True(rc == 0, $"scrub --repair must leave the image clean: exit {rc}");
        var witness = RepairTools.XfsRepairCheck(image);
        Assert.True(witness.ExitCode == 0, $"xfs_repair -n after the repair: {witness}");
    }

    /// <summary>
    /// Offline, under the NEEDSREPAIR protocol: a file with two names and a directory (with a subdirectory) whose
    /// entries were all removed, beside an existing /lost+found that already names the file's inode number. The check
    /// reports both counts; the repair names them in that /lost+found ("N.1" for the taken name, "D" for the
    /// directory, whose '..' then names /lost+found), as xfs_repair itself does on a copy of the same damage: the
    /// kernel lists the same names with the same link counts in both, and xfs_repair -n is clean after ours.
    /// </summary>
    [Fact]
    public void ScrubRepairMovesUnnamedInodesToLostAndFound()
    {
        using var scratch = new RepairScratch();
        string image = scratch.CopyFixture("fresh-4ag");
        ulong file, dir;
        using (var fs = XfsFileSystem.Open(image, OnlineTestSupport.Fast))
        {
            fs.Mkdir("/lost+found");
            file = fs.Create("/a");
            fs.Write("/a", 0, OnlineTestSupport.Pattern(5000, 3));
            fs.Namespace.Link("/a", "/b");
            fs.Create($"/lost+found/{file}");
            dir = fs.Mkdir("/d");
            fs.Mkdir("/d/sub");
            fs.Create("/d/sub/f");
            OnlineLinkCountTests.RemoveEntryOnly(fs, "/", "a");
            OnlineLinkCountTests.RemoveEntryOnly(fs, "/", "b");
            OnlineLinkCountTests.RemoveEntryOnly(fs, "/", "d");
            fs.Close();
        }
        string byXfsRepair = scratch.Copy(image, "by-xfs_repair.img");
        var check = ScrubCli.Run(image);
        output.WriteLine(check.Stdout);
        Assert.Equal(1, check.ExitCode);
        Assert.Contains($"inode {file} nlink: 2, counted 0", check.Stdout, StringComparison.Ordinal);
        Assert.Contains($"inode {dir} nlink: 3, counted 2", check.Stdout, StringComparison.Ordinal);

        var (rc, stdout, stderr) = ScrubCli.Run(image, "--repair");
        output.WriteLine(stdout + stderr);
        Assert.Contains($"2 named by no directory moved to /lost+found (inode {Math.Min(file, dir)}: ", stdout, StringComparison.Ordinal);
        Assert.True(rc == 0, $"scrub --repair must leave the image clean: exit {rc}");
        var witness = RepairTools.XfsRepairCheck(image);
        Assert.True(witness.ExitCode == 0, $"xfs_repair -n after the repair: {witness}");

        var theirs = RepairTools.XfsRepair(byXfsRepair);
        Assert.True(theirs.ExitCode == 0, $"xfs_repair of the copy: {theirs}");
        Assert.Contains("moving to lost+found", theirs.Stdout + theirs.Stderr, StringComparison.Ordinal);
        string ours = KernelListing(scratch, image, "ours");
        string reference = KernelListing(scratch, byXfsRepair, "xfs_repair");
        output.WriteLine("ours:\n" + ours + "xfs_repair:\n" + reference);
        Assert.Equal(reference, ours);
        Assert.Contains($"{file}.1 1 ", ours, StringComparison.Ordinal);
        Assert.Contains($"{dir} 3 ", ours, StringComparison.Ordinal);
    }

    /// <summary>The kernel mounts the image and lists /lost+found: per entry its name, link count, type and size
    /// (sorted), the mode and owner of /lost+found, the inode '..' of each adopted directory names, and the first
    /// bytes of each file; then it writes a file there and xfs_repair -n is clean after the unmount.</summary>
    private static string KernelListing(RepairScratch scratch, string image, string name)
    {
        string mnt = Directory.CreateDirectory(Path.Combine(scratch.Directory, "mnt-" + name)).FullName;
        ToolResult mount = RepairTools.Exec("/bin/mount", ["-o", "loop,nouuid", image, mnt]);
        Assert.True(mount.ExitCode == 0, $"kernel mount ({name}): {mount}");
        var text = new System.Text.StringBuilder();
        try
        {
            string lf = Path.Combine(mnt, "lost+found");
            var top = RepairTools.Exec("/usr/bin/stat", ["-c", "%a %u:%g %h", lf]);
            Assert.True(top.ExitCode == 0, $"stat lost+found ({name}): {top}");
            text.Append("lost+found ").Append(top.Stdout.Trim()).Append('\n');
            foreach (string entry in Directory.EnumerateFileSystemEntries(lf).Order(StringComparer.Ordinal))
            {
                var st = RepairTools.Exec("/usr/bin/stat", ["-c", "%n %h %F %s", entry]);
                Assert.True(st.ExitCode == 0, $"stat ({name}): {st}");
                text.Append(Path.GetFileName(st.Stdout.Trim())).Append('\n');
                if (Directory.Exists(entry))
                {
                    var up = RepairTools.Exec("/usr/bin/stat", ["-c", "%i", Path.Combine(entry, "..")]);
                    var lfIno = RepairTools.Exec("/usr/bin/stat", ["-c", "%i", lf]);
                    text.Append("  .. is lost+found: ").Append(up.Stdout.Trim() == lfIno.Stdout.Trim()).Append('\n');
                    text.Append("  holds: ").Append(string.Join(",", Directory.EnumerateFileSystemEntries(entry).Select(Path.GetFileName).Order(StringComparer.Ordinal))).Append('\n');
                }
                else if (new FileInfo(entry).Length > 0)
                {
                    text.Append("  data ok: ").Append(File.ReadAllBytes(entry).AsSpan().SequenceEqual(OnlineTestSupport.Pattern(5000, 3))).Append('\n');
                }
            }
            File.WriteAllText(Path.Combine(lf, "kernel-wrote"), "x");
        }
        finally
        {
            ToolResult umount = RepairTools.Exec("/bin/umount", [mnt]);
            Assert.True(umount.ExitCode == 0, $"umount ({name}): {umount}");
        }
        ToolResult after = RepairTools.XfsRepairCheck(image);
        Assert.True(after.ExitCode == 0, $"xfs_repair -n after the kernel wrote ({name}): {after}");
        return text.ToString();
    }
}
