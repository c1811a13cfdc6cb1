using System.Globalization;
using System.Security.Cryptography;
using System.Text.RegularExpressions;
using Xfbtree.Xfs.Tests.Repair;
using Xfbtree.Xfs.Tests.Trees;
using Xunit.Abstractions;

namespace Xfbtree.Xfs.Tests.Scrub;

/// <summary>
/// A filesystem as mkfs.xfs 6.x makes it by default: reflink and finobt, but no reverse-mapping btree. Populated by
/// the kernel through a loop mount (files, a reflinked copy, directories, a hard link, xattrs, a removed file). The
/// offline check reads it with the scan's expected rmap set as the only rmap source (docs/scrub.md, "Filesystems
/// without an rmapbt"); the write engine's commands (io, stress, mount) write it as the kernel does, without any rmap
/// record; what needs the rmapbt itself (the rmap commands, every online rebuild but the link counts) refuses it with
/// one line and exit 2, changing nothing.
/// </summary>
public sealed class ScrubWithoutRmapbtTests(ITestOutputHelper output)
{
    /// <summary>The populated image (built once per test process) and the inode number of /d1/f5.</summary>
    static (string Image, ulong Inode) Populated()
    {
        string img = TreeFixtures.Generated("no-rmapbt-populated", Build);
        return (img, ulong.Parse(File.ReadAllText(img + ".ino").Trim(), CultureInfo.InvariantCulture));
    }

    static void Build(string img)
    {
        RepairTools.MkfsSmall(img, 96L << 20);   // mkfs.xfs defaults: rmapbt=0, reflink=1, finobt=1
        string mnt = Directory.CreateDirectory(img + ".mnt").FullName;
        TreeFixtures.Run(TreeFixtures.Tool("mount"), ["-o", "loop,nouuid", img, mnt]);
        string ino;
        try
        {
            string d1 = Directory.CreateDirectory(Path.Combine(mnt, "d1")).FullName;
            Directory.CreateDirectory(Path.Combine(d1, "d2"));
            for (int i = 1; i <= 40; i++) File.WriteAllText(Path.Combine(d1, $"f{i}"), $"hello {i}\n");
            TreeFixtures.Run(TreeFixtures.Tool("xfs_io"), ["-f", "-c", "pwrite -b 64k 0 2m", Path.Combine(mnt, "big")]);
            TreeFixtures.Run("/bin/cp", ["--reflink=always", Path.Combine(mnt, "big"), Path.Combine(mnt, "big.clone")]);
            TreeFixtures.Run(TreeFixtures.Tool("xfs_io"), ["-c", "pwrite -S 0x5a 64k 8k", Path.Combine(mnt, "big.clone")]);
            TreeFixtures.Run(TreeFixtures.Tool("setfattr"), ["-n", "user.small", "-v", "123", Path.Combine(d1, "f1")]);
            TreeFixtures.Run(TreeFixtures.Tool("setfattr"), ["-n", "user.large", "-v", new string('x', 3000), Path.Combine(d1, "f2")]);
            File.CreateSymbolicLink(Path.Combine(d1, "d2", "link"), "../f3");
            TreeFixtures.Run("/bin/ln", [Path.Combine(d1, "f4"), Path.Combine(d1, "d2", "hard")]);
            File.Delete(Path.Combine(d1, "f10"));
            ino = TreeFixtures.Run("/usr/bin/stat", ["-c", "%i", Path.Combine(d1, "f5")]);
        }
        finally { TreeFixtures.Run(TreeFixtures.Tool("umount"), [mnt]); }
        File.WriteAllText(img + ".ino", ino);
    }

    [Fact]
    public void ADefaultMkfsImagePopulatedByTheKernelScrubsClean()
    {
        using var scratch = new RepairScratch();
        string img = scratch.Copy(Populated().Image, "clean.img");
        string version = TreeFixtures.XfsDb(img, "version");
        Assert.DoesNotContain("RMAPBT", version, StringComparison.Ordinal);
        Assert.Contains("REFLINK", version, StringComparison.Ordinal);
        var oracle = RepairTools.XfsRepairCheck(img);
        Assert.True(oracle.ExitCode == 0, "xfs_repair -n on the fresh image: " + oracle);

        var run = RepairTools.Xfbtree("scrub", img);
        output.WriteLine(run.Stdout);
        Assert.True(run.ExitCode == 0, run.ToString());
        Assert.Contains("AG 0 metadata scan: clean", run.Stdout, StringComparison.Ordinal);
        Assert.Matches(@"AG \d+ refcountbt: clean \([1-9]\d* shared extents", run.Stdout);   // the reflinked copy was checked
        Assert.Contains("nlinks: clean", run.Stdout, StringComparison.Ordinal);
        Assert.DoesNotContain("rmapbt:", run.Stdout, StringComparison.Ordinal);
        Assert.DoesNotContain("not checked", run.Stdout, StringComparison.Ordinal);

        var json = RepairTools.Xfbtree("scrub", "--json", img);
        Assert.True(json.ExitCode == 0, json.ToString());
        Assert.Contains("\"version\"", json.Stdout, StringComparison.Ordinal);
        Assert.Contains("\"metadata scan\"", json.Stdout, StringComparison.Ordinal);
    }

    public static TheoryData<string> DamageKinds() => ["bnobt record", "AGF free blocks", "inobt freecount", "refcount record", "link count"];

    [Theory]
    [MemberData(nameof(DamageKinds))]
    public void DamageXfsRepairFindsIsFound(string kind)
    {
        using var scratch = new RepairScratch();
        var (source, inode) = Populated();
        string img = scratch.Copy(source, "damaged.img");
        string[] commands;
        string subject;
        switch (kind)
        {
            case "bnobt record":
                commands = ["agf 0", "addr bnoroot", "fuzz -d recs[1].blockcount sub"];
                subject = "AG 0 bnobt: damaged";
                break;
            case "AGF free blocks":
                // One block more than the rmap leaves free: inside every bound the header check knows on its own.
                long free = long.Parse(TreeFixtures.XfsDb(img, "agf 1", "print freeblks").Split('=')[1].Trim(), CultureInfo.InvariantCulture);
                commands = ["agf 1", $"write freeblks {free + 1}"];
                subject = "AG 1 AGF: damaged: agf_freeblks";
                break;
            case "inobt freecount":
                commands = ["agi 0", "addr root", "fuzz -d recs[1].freecount sub"];
                subject = "AG 0 inobt: damaged";
                break;
            case "refcount record":
                commands = ["agf 0", "addr refcntroot", "fuzz -d recs[1].refcount add"];
                subject = "AG 0 refcountbt: damaged";
                break;
            default:
                commands = [$"inode {inode}", "fuzz -d core.nlinkv2 add"];
                subject = $"inode {inode} nlink:";
                break;
        }
        var args = new List<string> { "-x" };
        foreach (string c in commands) { args.Add("-c"); args.Add(c); }
        args.Add(img);
        var db = RepairTools.Exec(TreeFixtures.Tool("xfs_db"), args);
        output.WriteLine(db.ToString());
        var oracle = RepairTools.XfsRepairCheck(img);
        Assert.True(oracle.ExitCode != 0, $"xfs_repair -n does not see the {kind} damage, so the case proves nothing: {oracle}");

        var run = RepairTools.Xfbtree("scrub", img);
        output.WriteLine(run.Stdout);
        Assert.True(run.ExitCode == 1, run.ToString());
        Assert.Contains(subject, run.Stdout, StringComparison.Ordinal);
    }

    /// <summary>The rmap commands have nothing to read: one line, exit 2, the image unchanged. So is an online rebuild
    /// asked of stress (every one but the link counts takes the rmapbt as its source, as in the kernel).</summary>
    [Fact]
    public void WhatNeedsTheRmapbtRefusesWithOneLine()
    {
        using var scratch = new RepairScratch();
        string img = scratch.Copy(Populated().Image, "refused.img");
        byte[] before = SHA256.HashData(File.ReadAllBytes(img));
        (string[] Args, string Says)[] commands =
        [
            (["rmap", "check", img], "no reverse-mapping btree"),
            (["rmap", "repair", img], "no reverse-mapping btree"),
            (["rmap", "dump", img], "no reverse-mapping btree"),
            (["stress", img, "--online-repair"], "--online-repair: rmapbt,bnobt,cntbt,inobt,finobt,refcountbt: the filesystem has no reverse-mapping btree"),
            (["stress", img, "--online-repair", "--structures", "bnobt"], "--online-repair: bnobt: the filesystem has no reverse-mapping btree"),
        ];
        foreach (var (c, says) in commands)
        {
            var run = RepairTools.Xfbtree(c);
            output.WriteLine($"{string.Join(' ', c)}: {run}");
            Assert.True(run.ExitCode == 2, $"{string.Join(' ', c)}: {run}");
            Assert.Contains(says, run.Stderr, StringComparison.Ordinal);
            Assert.Single(run.Stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries));
            // The image is named once: the engine's message names it already ("img: img: ..." before).
            Assert.False(run.Stderr.Contains($"{img}: {img}:", StringComparison.Ordinal), $"{string.Join(' ', c)}: the image named twice: {run.Stderr}");
        }
        Assert.Equal(before, SHA256.HashData(File.ReadAllBytes(img)));
    }

    /// <summary>
    /// Every writer works on the kernel-populated default image (they all refused it before): io changes it, stress
    /// runs its model (and, with --structures nlinks, the online link count repair beside it), and the image stays
    /// clean for xfs_repair -n and the scrub, and the kernel mounts it, reads what io wrote and writes to it.
    /// </summary>
    [Fact]
    public void EveryWriterWorksOnIt()
    {
        // Each step is named in any failure, whatever throws (a tool's exit, an assertion, mount or umount).
        string step = "copy of the populated image";
        try
        {
            using var scratch = new RepairScratch();
            string img = scratch.Copy(Populated().Image, "written.img");
            step = "io";
            var io = RepairTools.Xfbtree("io", img, "-c", "create /new", "-c", "pwrite /new 0 1m -S 0x61", "-c", "reflink /big 0 /new 1m 256k",
                "-c", "pwrite /new 1m 4k -S 0x62", "-c", "fpunch /big 512k 128k", "-c", "truncate /big.clone 100k", "-c", "mkdir /nd",
                "-c", "rename /d1/f5 /nd/moved", "-c", "unlink /d1/f6", "-c", "setxattr /new user.v " + new string('v', 2000), "-c", "symlink /new /nd/sl");
            output.WriteLine(io.ToString());
            Assert.True(io.ExitCode == 0, $"xfbtree io: {io}");
            step = "oracles after io";
            AssertClean(img, "after io");
            step = "stress";
            var stress = RepairTools.Xfbtree("stress", img, "--ops", "400", "--threads", "2", "--seed", "5", "--no-sync");
            output.WriteLine(stress.Stdout);
            Assert.True(stress.ExitCode == 0, $"xfbtree stress: {stress}");
            Assert.True(stress.Stdout.Contains("verify: ", StringComparison.Ordinal), $"xfbtree stress printed no verify line: {stress}");
            step = "oracles after stress";
            AssertClean(img, "after stress");
            step = "stress with the online link count repair";
            var nlinks = RepairTools.Xfbtree("stress", img, "--ops", "300", "--online-repair", "--structures", "nlinks", "--no-sync");
            output.WriteLine(nlinks.Stdout);
            Assert.True(nlinks.ExitCode == 0, $"xfbtree stress --structures nlinks: {nlinks}");
            Assert.True(Regex.IsMatch(nlinks.Stdout, @"online-repair: nlinks: [1-9]\d* checks, 0 wrong link counts"), $"xfbtree stress --structures nlinks: no clean nlinks line: {nlinks}");
            step = "oracles after stress with the online link count repair";
            AssertClean(img, "after stress with the online link count repair");

            step = "kernel mount";
            string mnt = Directory.CreateDirectory(Path.Combine(scratch.Directory, "kmnt")).FullName;
            TreeFixtures.Run(TreeFixtures.Tool("mount"), ["-o", "loop,nouuid", img, mnt]);
            try
            {
                step = "kernel read and write";
                byte[] data = File.ReadAllBytes(Path.Combine(mnt, "new"));
                Assert.True(data.Length == (1 << 20) + (256 << 10), $"the kernel reads {data.Length} bytes of /new, io wrote {(1 << 20) + (256 << 10)}");
                int wrong = data.AsSpan(0, 1 << 20).IndexOfAnyExcept((byte)0x61);
                Assert.True(wrong < 0, $"the first MiB io wrote: byte {wrong} is 0x{(wrong < 0 ? 0 : data[wrong]):x2}, not 0x61");
                wrong = data.AsSpan(1 << 20, 4096).IndexOfAnyExcept((byte)0x62);
                Assert.True(wrong < 0, $"the block io wrote over the reflinked range: byte {wrong} of it is not 0x62");
                File.WriteAllText(Path.Combine(mnt, "nd", "by-kernel"), "kernel");
            }
            finally
            {
                TreeFixtures.Run(TreeFixtures.Tool("umount"), [mnt]);
            }
            step = "xfs_repair -n after the kernel wrote";
            var oracle = RepairTools.XfsRepairCheck(img);
            Assert.True(oracle.ExitCode == 0, "xfs_repair -n after the kernel wrote: " + oracle);
        }
        catch (Exception e)
        {
            throw new InvalidOperationException($"step '{step}': {e.GetType().Name}: {(string.IsNullOrWhiteSpace(e.Message) ? "(no message)" : e.Message)}", e);
        }
    }

    void AssertClean(string img, string when)
    {
        var oracle = RepairTools.XfsRepairCheck(img);
        Assert.True(oracle.ExitCode == 0, $"{when}: xfs_repair -n: {oracle}");
        var scrub = RepairTools.Xfbtree("scrub", "--no-progress", img);
        Assert.True(scrub.ExitCode == 0, $"{when}: xfbtree scrub: {scrub}");
        output.WriteLine($"{when}: {scrub.Stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries)[^1]}");
    }
}
