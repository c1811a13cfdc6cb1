using System.Collections.Concurrent;
using Xfbtree.Xfs.Directories;
using Xfbtree.Xfs.Online;
using Xfbtree.Xfs.Scrub;
using Xfbtree.Xfs.Tests.Repair;
using Xfbtree.Xfs.Tests.Trees;
using Xfbtree.Xfs.Write;
using Xfbtree.Xfs.Write.Engine;
using Xfbtree.Xfs.Write.Namespace;
using Xunit.Abstractions;

namespace Xfbtree.Xfs.Tests.Online;

/// <summary>
/// The online link count check and repair (<see cref="OnlineLinkCounts"/>): deterministic interleavings of writers
/// with the directory scan through its test hooks (a change in a directory behind the cursor is applied, one ahead is
/// ignored and read by the scan), damaged link counts found and repaired while writers run, and a race suite over
/// seeds. Every test ends with the offline oracles: the offline scrub's link counts and xfs_repair -n.
/// </summary>
public sealed class OnlineLinkCountTests(ITestOutputHelper output) : IDisposable
{
    private static readonly bool Long = Environment.GetEnvironmentVariable("XFBTREE_LONG_TESTS") == "1";
    private readonly RepairScratch scratch = new();

    public void Dispose() => scratch.Dispose();

    private (XfsFileSystem Fs, string Image) Open(string fixture = "fresh-4ag")
    {
        string image = scratch.CopyFixture(fixture);
        return (XfsFileSystem.Open(image, OnlineTestSupport.Fast), image);
    }

    /// <summary>Three directories in ascending inode order (the scan's order): (behind, middle, ahead).</summary>
    private static (ulong Behind, ulong Middle, ulong Ahead, string[] Paths) ThreeDirectories(XfsFileSystem fs)
    {
        var made = new List<(ulong Ino, string Path)>();
        for (int i = 0; i < 3; i++)
        {
            made.Add((fs.Mkdir($"/d{i}"), $"/d{i}"));
        }
        made.Sort((a, b) => a.Ino.CompareTo(b.Ino));
        return (made[0].Ino, made[1].Ino, made[2].Ino, made.Select(m => m.Path).ToArray());
    }

    private OnlineLinkCountResult Check(XfsFileSystem fs, bool repair, OnlineLinkCountTestHooks? hooks = null)
    {
        OnlineLinkCountResult r = OnlineLinkCounts.Run(fs, new OnlineLinkCountOptions { Repair = repair, TestHooks = hooks });
        output.WriteLine($"nlinks: scanned {r.InodesScanned} inodes ({r.DirectoriesScanned} directories, {r.EntriesCounted} entries), compared {r.InodesCompared}, " +
                         $"applied {r.LiveUpdatesApplied} ignored {r.LiveUpdatesIgnored}, wrong {r.MismatchTotal}, repaired {r.Repaired}, adopted {r.Adopted} [{string.Join("; ", r.AdoptedAs)}], " +
                         $"not repaired [{string.Join("; ", r.NotRepaired)}], damage [{string.Join("; ", r.Damage)}], {r.CountBytes} bytes, {r.Elapsed.TotalMilliseconds:F0} ms");
        foreach (LinkCountMismatch m in r.Mismatches) output.WriteLine($"  inode {m.Ino} nlink: {m.NLink}, counted {m.Counted}");
        return r;
    }

    private static void AssertNoMismatch(OnlineLinkCountResult r, string when)
        => Assert.True(r.MismatchTotal == 0 && r.Damage.Count == 0 && r.TreeProblemTotal == 0,
            $"{when}: {r.MismatchTotal} wrong link counts ({string.Join(", ", r.Mismatches.Take(10).Select(m => $"inode {m.Ino} nlink {m.NLink} counted {m.Counted}"))}); damage: {string.Join("; ", r.Damage)}; tree: {string.Join("; ", r.TreeProblems)}");

    /// <summary>Closes the filesystem, then the offline oracles: the offline scrub's link counts and xfs_repair -n.</summary>
    private static void CloseAndAssertOffline(XfsFileSystem fs, string image)
    {
        fs.Close();
        fs.Dispose();
        using (XfsImage xfs = XfsImage.Open(image))
        {
            ScrubReport report = Scrubber.Run(xfs);
            ScrubFinding nlinks = report.Findings.Single(f => f.Structure == "nlinks");
            Assert.True(nlinks.Verdict == ScrubVerdict.Clean && report.LinkMismatchTotal == 0,
                $"offline scrub: {nlinks}; {string.Join(", ", report.LinkMismatches.Select(m => $"inode {m.Ino} nlink {m.NLink} counted {m.Counted}"))}");
        }
        ToolResult repair = RepairTools.XfsRepairCheck(image);
        Assert.True(repair.ExitCode == 0, $"xfs_repair -n: {repair}");
    }

    /// <summary>Damage: sets an inode's nlink in a transaction of its own (the on-disk field, as a bad write would).</summary>
    internal static void SetNlink(XfsFileSystem fs, ulong ino, uint nlink)
    {
        IncoreInode inode = fs.Engine.GetInode(ino);
        fs.Engine.Execute("test: damage nlink", tx =>
        {
            tx.LockInodes(inode);
            InodeCore.SetNlink(inode.Core, nlink);
            tx.LogInode(inode);
        });
    }

    private static uint Nlink(XfsFileSystem fs, string path) => fs.Stat(path).Links;

    // ------------------------------------------------------------------ interleavings

    [Fact]
    public void OnlineNlinksHealthyImageHasNoWrongCount()
    {
        var (fs, image) = Open("aged-small");
        OnlineLinkCountResult r = Check(fs, repair: true);
        AssertNoMismatch(r, "aged-small");
        Assert.True(r.DirectoriesScanned > 10 && r.InodesCompared > 1000, "the scan saw too little");
        CloseAndAssertOffline(fs, image);
    }

    [Fact]
    public void OnlineNlinksLinkAddedBehindTheCursorIsAppliedAndAheadIsIgnored()
    {
        var (fs, image) = Open();
        var (behind, middle, ahead, paths) = ThreeDirectories(fs);
        ulong file = fs.Create("/file");
        var log = new ConcurrentQueue<(DirectoryUpdate Update, bool Applied)>();
        var hooks = new OnlineLinkCountTestHooks
        {
            AfterInode = ino =>
            {
                if (ino != middle) return;
                fs.Namespace.Link("/file", paths[0] + "/behind-link");
                fs.Namespace.Link("/file", paths[2] + "/ahead-link");
            },
            AfterLiveUpdate = (u, applied) => log.Enqueue((u, applied)),
        };
        OnlineLinkCountResult r = Check(fs, repair: true, hooks);
        AssertNoMismatch(r, "after links across the cursor");
        Assert.Contains(log, d => d.Update.DirIno == behind && d.Update.ChildIno == file && d.Update.Delta == 1 && d.Applied);
        Assert.Contains(log, d => d.Update.DirIno == ahead && d.Update.ChildIno == file && d.Update.Delta == 1 && !d.Applied);
        Assert.Equal(3u, Nlink(fs, "/file"));
        CloseAndAssertOffline(fs, image);
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void OnlineNlinksRenameAcrossTheCursor(bool sourceBehind)
    {
        var (fs, image) = Open();
        var (behind, middle, ahead, paths) = ThreeDirectories(fs);
        string from = sourceBehind ? paths[0] : paths[2], to = sourceBehind ? paths[2] : paths[0];
        ulong file = fs.Create(from + "/moving");
        fs.Namespace.Link(from + "/moving", "/second-name");
        // A directory moves too: its '..' entry changes parent across the cursor.
        ulong dir = fs.Mkdir(from + "/moving-dir");
        var log = new ConcurrentQueue<(DirectoryUpdate Update, bool Applied)>();
        var hooks = new OnlineLinkCountTestHooks
        {
            AfterInode = ino =>
            {
                if (ino != middle) return;
                fs.Namespace.Rename(from + "/moving", to + "/moved");
                fs.Namespace.Rename(from + "/moving-dir", to + "/moved-dir");
            },
            AfterLiveUpdate = (u, applied) => log.Enqueue((u, applied)),
        };
        OnlineLinkCountResult r = Check(fs, repair: true, hooks);
        AssertNoMismatch(r, $"after a rename {(sourceBehind ? "behind -> ahead" : "ahead -> behind")}");
        ulong src = sourceBehind ? behind : ahead, dst = sourceBehind ? ahead : behind;
        Assert.Contains(log, d => d.Update.DirIno == src && d.Update.ChildIno == file && d.Update.Delta == -1 && d.Applied == sourceBehind);
        Assert.Contains(log, d => d.Update.DirIno == dst && d.Update.ChildIno == file && d.Update.Delta == 1 && d.Applied == !sourceBehind);
        Assert.Contains(log, d => d.Update.DirIno == dir && d.Update.Kind == DirectoryEntryKind.DotDot && d.Update.ChildIno == dst && d.Update.Delta == 1);
        Assert.Equal(2u, Nlink(fs, to + "/moved"));
        Assert.Equal(2u, Nlink(fs, to + "/moved-dir"));
        Assert.Equal(3u, Nlink(fs, to));
        Assert.Equal(2u, Nlink(fs, from));
        CloseAndAssertOffline(fs, image);
    }

    [Fact]
    public void OnlineNlinksUnlinkOfTheLastNameBehindTheCursor()
    {
        var (fs, image) = Open();
        var (behind, middle, _, paths) = ThreeDirectories(fs);
        ulong file = fs.Create(paths[0] + "/only-name");
        fs.Mkdir(paths[0] + "/empty-dir");
        var log = new ConcurrentQueue<(DirectoryUpdate Update, bool Applied)>();
        var hooks = new OnlineLinkCountTestHooks
        {
            AfterInode = ino =>
            {
                if (ino != middle) return;
                fs.Unlink(paths[0] + "/only-name");
                fs.Rmdir(paths[0] + "/empty-dir");
            },
            AfterLiveUpdate = (u, applied) => log.Enqueue((u, applied)),
        };
        OnlineLinkCountResult r = Check(fs, repair: true, hooks);
        AssertNoMismatch(r, "after the last name went behind the cursor");
        Assert.Contains(log, d => d.Update.DirIno == behind && d.Update.ChildIno == file && d.Update.Delta == -1 && d.Applied);
        Assert.Contains(log, d => d.Update.DirIno == behind && d.Update.Kind == DirectoryEntryKind.Name && d.Update.Delta == -1 && d.Update.ChildIno != file && d.Applied);
        Assert.Equal(2u, Nlink(fs, paths[0]));
        CloseAndAssertOffline(fs, image);
    }

    [Fact]
    public void OnlineNlinksDirectoryMadeBehindAndAheadOfTheCursor()
    {
        var (fs, image) = Open();
        var (_, middle, _, paths) = ThreeDirectories(fs);
        var hooks = new OnlineLinkCountTestHooks
        {
            AfterInode = ino =>
            {
                if (ino != middle) return;
                fs.Mkdir(paths[0] + "/new-behind");
                fs.Mkdir(paths[2] + "/new-ahead");
                fs.Create(paths[0] + "/new-behind/f");
            },
        };
        OnlineLinkCountResult r = Check(fs, repair: true, hooks);
        AssertNoMismatch(r, "after mkdir behind and ahead");
        Assert.Equal(3u, Nlink(fs, paths[0]));
        Assert.Equal(3u, Nlink(fs, paths[2]));
        CloseAndAssertOffline(fs, image);
    }

    // ------------------------------------------------------------------ inodes read without an in-core inode

    /// <summary>Closes and reopens the filesystem: no in-core inode is live, so the scans read cores from their
    /// cluster buffers.</summary>
    private static XfsFileSystem Reopen(XfsFileSystem fs, string image, WriteEngineOptions options)
    {
        fs.Close();
        fs.Dispose();
        return XfsFileSystem.Open(image, options);
    }

    /// <summary>The collect scan read a file's core from its cluster buffer (not a directory: nothing to count);
    /// before it marks the file visited, a writer unlinks it and makes a directory that gets the same inode number.
    /// The directory's '.' and '..' updates were ignored (ahead of the cursor), so the visit must be made again, under
    /// the new directory's lock, reading its entries; marked visited as the file it was, both the new directory's
    /// count and its parent's would be short.</summary>
    [Fact]
    public void OnlineNlinksFileReadUnloadedThenReplacedByADirectoryIsVisitedAgain()
    {
        var (fs, image) = Open();
        fs.Mkdir("/p");
        ulong file = fs.Create("/p/file");
        fs = Reopen(fs, image, OnlineTestSupport.Fast);
        ulong made = 0;
        bool collecting = true;
        var hooks = new OnlineLinkCountTestHooks
        {
            AfterUnloadedRead = ino =>
            {
                if (ino != file || !collecting || made != 0) return;
                fs.Unlink("/p/file");
                made = fs.Mkdir("/p/dir");
            },
            AfterCollect = () => collecting = false,
        };
        OnlineLinkCountResult r = Check(fs, repair: false, hooks);
        Assert.True(made == file, $"the new directory got inode {made}, not the freed file's {file}: the interleaving did not happen");
        AssertNoMismatch(r, "after a file read unloaded became a directory");
        Assert.True(r.UnloadedReadsRetried >= 1, "the visit read without an in-core inode was not made again");
        Assert.True(r.UnloadedReads > 0, "no inode was read from its cluster buffer");
        Assert.Equal(2u, Nlink(fs, "/p/dir"));
        Assert.Equal(3u, Nlink(fs, "/p"));
        CloseAndAssertOffline(fs, image);
    }

    /// <summary>The compare read a file's nlink from its cluster buffer; before it reads the count, a writer adds a
    /// name to the file. With <paramref name="collected"/>, the writer's in-core inode is also gone again (let go by
    /// a one-slot inode cache and collected) before the check, so only the load stamp shows that it was live: either
    /// way the compare is made again under the inode lock, else it would report nlink 1 against a count of 2.</summary>
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void OnlineNlinksCompareReadUnloadedThenLinkedIsComparedAgain(bool collected)
    {
        var (fs, image) = Open();
        fs.Mkdir("/p");
        ulong file = fs.Create("/p/file");
        fs.Create("/p/other");
        WriteEngineOptions options = collected ? OnlineTestSupport.Fast with { InodeCacheCapacity = 1 } : OnlineTestSupport.Fast;
        fs = Reopen(fs, image, options);
        bool comparing = false, linked = false;
        var hooks = new OnlineLinkCountTestHooks
        {
            AfterCollect = () => comparing = true,
            AfterUnloadedRead = ino =>
            {
                if (ino != file || !comparing || linked) return;
                fs.Namespace.Link("/p/file", "/p/second");
                linked = true;
                if (collected)
                {
                    fs.Stat("/p/other"); // the one clock slot goes to another inode
                    DropUnreferencedInodes();
                    Assert.True(fs.Engine.InodeCache.Peek(file) is null, "the linked file's in-core inode is still live: the case of a stamp alone is not made");
                }
            },
        };
        OnlineLinkCountResult r = Check(fs, repair: false, hooks);
        Assert.True(linked, "the compare never read the file without its in-core inode");
        AssertNoMismatch(r, "after a link added while the compare read the file unloaded");
        Assert.True(r.UnloadedReadsRetried >= 1, "the compare read without an in-core inode was not made again");
        Assert.Equal(2u, Nlink(fs, "/p/second"));
        CloseAndAssertOffline(fs, image);
    }

    /// <summary>A paced check (half of one CPU) finds the same as an unpaced one and says how long it waited: about
    /// as long as it worked (both scans' time in batches; what is left under one 2 ms slice per scan is not waited
    /// for), never longer than the whole check. A share outside (0, 1] is refused.</summary>
    [Fact]
    public void OnlineNlinksPacedCheckWaitsAboutAsLongAsItWorks()
    {
        var (fs, image) = Open("aged-small");
        OnlineLinkCountResult unpaced = Check(fs, repair: false);
        OnlineLinkCountResult paced = OnlineLinkCounts.Run(fs, new OnlineLinkCountOptions { CpuShare = 0.5 });
        output.WriteLine($"unpaced {unpaced.Elapsed.TotalMilliseconds:F0} ms (paced {unpaced.Paced.TotalMilliseconds:F0} ms); at 0.5: {paced.Elapsed.TotalMilliseconds:F0} ms, paced {paced.Paced.TotalMilliseconds:F0} ms");
        AssertNoMismatch(unpaced, "unpaced");
        AssertNoMismatch(paced, "paced");
        Assert.Equal(unpaced.InodesCompared, paced.InodesCompared);
        Assert.Equal(unpaced.EntriesCounted, paced.EntriesCounted);
        Assert.Equal(TimeSpan.Zero, unpaced.Paced);
        Assert.True(paced.Paced > TimeSpan.Zero && paced.Paced < paced.Elapsed, $"paced {paced.Paced} of {paced.Elapsed}");
        // Waited = worked x (1 - share) / share = worked: at least the check's time outside the waits, less the setup
        // and the two scans' last slices, so more than a quarter of the whole.
        Assert.True(paced.Paced.Ticks * 4 > paced.Elapsed.Ticks, $"paced {paced.Paced} of {paced.Elapsed}: less than the share asks");
        foreach (double bad in new[] { 0, -0.5, 1.01, double.NaN })
        {
            Assert.Throws<ArgumentOutOfRangeException>(() => OnlineLinkCounts.Run(fs, new OnlineLinkCountOptions { CpuShare = bad }));
        }
        CloseAndAssertOffline(fs, image);
    }

    private static void DropUnreferencedInodes()
    {
        for (int i = 0; i < 3; i++)
        {
            GC.Collect();
            GC.WaitForPendingFinalizers();
        }
    }

    // ------------------------------------------------------------------ damage

    /// <summary>Wrong link counts on files and directories (too high, too low, zero while linked), and a file and a
    /// directory (with a subdirectory and a file) no directory names: each found with the right count and repaired
    /// while two writers change another subtree; the unnamed two are moved to a new /lost+found (0755, root:root)
    /// under their inode numbers, the directory's '..' pointed there and its old parent's link taken back.</summary>
    [Fact]
    public void OnlineNlinksDamageFoundAndRepairedUnderWriters()
    {
        var (fs, image) = Open();
        fs.Mkdir("/static");
        ulong twoNames = fs.Create("/static/two-names");
        fs.Namespace.Link("/static/two-names", "/static/other-name");
        ulong tooHigh = fs.Create("/static/too-high");
        ulong zero = fs.Create("/static/zero");
        ulong dirHigh = fs.Mkdir("/static/dir-high");
        ulong dirLow = fs.Mkdir("/static/dir-low");
        fs.Mkdir("/static/dir-low/sub");
        ulong dirZero = fs.Mkdir("/static/dir-zero");
        ulong unnamed = fs.Create("/static/unnamed");
        fs.Write("/static/unnamed", 0, OnlineTestSupport.Pattern(20000, 7));
        RemoveEntryOnly(fs, "/static", "unnamed");
        ulong orphanDir = fs.Mkdir("/static/orphan-dir");
        fs.Mkdir("/static/orphan-dir/sub");
        fs.Create("/static/orphan-dir/file");
        RemoveEntryOnly(fs, "/static", "orphan-dir");
        uint staticLinks = Nlink(fs, "/static");
        SetNlink(fs, twoNames, 1);    // too low
        SetNlink(fs, tooHigh, 5);     // too high
        SetNlink(fs, zero, 0);        // zero while linked
        SetNlink(fs, dirHigh, 7);
        SetNlink(fs, dirLow, 2);      // has a subdirectory: 3
        SetNlink(fs, dirZero, 0);
        var expected = new Dictionary<ulong, (uint NLink, long Counted)>
        {
            [twoNames] = (1, 2), [tooHigh] = (5, 1), [zero] = (0, 1), [dirHigh] = (7, 2), [dirLow] = (2, 3), [dirZero] = (0, 2), [unnamed] = (1, 0), [orphanDir] = (3, 2),
        };

        using var writers = new NamespaceWriters(fs, seed: 11, threads: 2);
        uint rootLinks = Nlink(fs, "/"); // the writers' own directories (/w0, /w1) made; they make none in the root after
        OnlineLinkCountResult r;
        try
        {
            r = Check(fs, repair: true);
        }
        finally
        {
            writers.Stop();
        }
        writers.AssertHealthy();
        Assert.Equal(expected.Count, r.MismatchTotal);
        foreach (LinkCountMismatch m in r.Mismatches)
        {
            Assert.True(expected.TryGetValue(m.Ino, out var e), $"inode {m.Ino} reported wrong (nlink {m.NLink}, counted {m.Counted}) but was not damaged");
            Assert.Equal(e, (m.NLink, m.Counted));
        }
        Assert.Equal(expected.Count - 2, r.Repaired);
        Assert.Equal(2, r.Adopted);
        InodeAttributes lostFound = fs.Namespace.Resolve("/lost+found");
        Assert.Equal(InodeType.Directory, lostFound.Type);
        Assert.Equal(0x1ED, lostFound.Permissions);
        Assert.Equal((0u, 0u), (lostFound.Uid, lostFound.Gid));
        Assert.Equal(3u, lostFound.Links); // '.', its name, the adopted directory's '..'
        Assert.Equal(rootLinks + 1, Nlink(fs, "/"));
        Assert.Equal(staticLinks - 1, Nlink(fs, "/static"));
        Assert.Equal(1u, Nlink(fs, $"/lost+found/{unnamed}"));
        var data = new byte[20000];
        Assert.Equal(20000, fs.Read($"/lost+found/{unnamed}", 0, data));
        Assert.Equal(OnlineTestSupport.Pattern(20000, 7), data);
        Assert.Equal(3u, Nlink(fs, $"/lost+found/{orphanDir}"));
        Assert.Equal(lostFound.Ino, fs.Namespace.Lookup(orphanDir, ".."u8).Ino);
        Assert.Equal(1u, Nlink(fs, $"/lost+found/{orphanDir}/file"));
        Assert.True(r.IsClean, $"not repaired: {string.Join("; ", r.NotRepaired)}");
        Assert.Equal(2u, Nlink(fs, "/static/two-names"));
        Assert.Equal(1u, Nlink(fs, "/static/too-high"));
        Assert.Equal(3u, Nlink(fs, "/static/dir-low"));
        Assert.Equal(2u, Nlink(fs, "/static/dir-zero"));
        AssertNoMismatch(Check(fs, repair: false), "a second check after the repair");
        CloseAndAssertOffline(fs, image);
        AssertKernelAgrees(image, new Dictionary<string, uint>
        {
            ["static/two-names"] = 2, ["static/too-high"] = 1, ["static/zero"] = 1, ["static/dir-high"] = 2, ["static/dir-low"] = 3, ["static/dir-zero"] = 2,
            ["lost+found"] = 3, [$"lost+found/{unnamed}"] = 1, [$"lost+found/{orphanDir}"] = 3, [$"lost+found/{orphanDir}/sub"] = 2,
        });
    }

    /// <summary>Without repair, the damage is reported and left as it is.</summary>
    [Fact]
    public void OnlineNlinksCheckOnlyReportsAndChangesNothing()
    {
        var (fs, image) = Open();
        ulong f = fs.Create("/f");
        SetNlink(fs, f, 4);
        OnlineLinkCountResult r = Check(fs, repair: false);
        Assert.Equal(1, r.MismatchTotal);
        Assert.Equal(new LinkCountMismatch(f, 4, 1), r.Mismatches[0]);
        Assert.Equal(0, r.Repaired);
        Assert.False(r.IsClean);
        Assert.Equal(4u, Nlink(fs, "/f"));
        SetNlink(fs, f, 1);
        CloseAndAssertOffline(fs, image);
    }

    /// <summary>Removes a directory entry without touching the inode it names (damage: an inode no entry names).</summary>
    internal static void RemoveEntryOnly(XfsFileSystem fs, string dirPath, string name)
    {
        IncoreInode dir = fs.Engine.GetInode(fs.Namespace.Lookup(dirPath));
        var reader = new DirectoryReader(fs.Engine.Image);
        fs.Engine.Execute("test: remove an entry only", tx =>
        {
            tx.LockInodes(dir);
            new DirectoryEditor(tx, dir, reader, dirPath).Remove(System.Text.Encoding.UTF8.GetBytes(name), DateTimeOffset.UtcNow);
        });
    }

    /// <summary>The kernel mounts the repaired image, reports the repaired link counts, and takes a write.</summary>
    private void AssertKernelAgrees(string image, Dictionary<string, uint> expected)
    {
        string copy = scratch.Copy(image, "kernel.img");
        string mnt = Directory.CreateDirectory(Path.Combine(scratch.Directory, "kernel-mnt")).FullName;
        ToolResult mount = RepairTools.Exec("/bin/mount", ["-o", "loop,nouuid", copy, mnt]);
        Assert.True(mount.ExitCode == 0, $"kernel mount: {mount}");
        try
        {
            foreach (var (path, links) in expected)
            {
                ToolResult stat = RepairTools.Exec("/usr/bin/stat", ["-c", "%h", Path.Combine(mnt, path)]);
                Assert.True(stat.ExitCode == 0 && stat.Stdout.Trim() == links.ToString(System.Globalization.CultureInfo.InvariantCulture),
                    $"kernel: {path}: {stat}, expected {links} links");
            }
            File.WriteAllText(Path.Combine(mnt, "static", "kernel-wrote"), "x");
            File.Delete(Path.Combine(mnt, "static", "too-high"));
            Directory.Delete(Path.Combine(mnt, "static", "dir-zero"));
        }
        finally
        {
            ToolResult umount = RepairTools.Exec("/bin/umount", [mnt]);
            Assert.True(umount.ExitCode == 0, $"umount: {umount}");
        }
        ToolResult repair = RepairTools.XfsRepairCheck(copy);
        Assert.True(repair.ExitCode == 0, $"xfs_repair -n after the kernel wrote: {repair}");
    }

    // ------------------------------------------------------------------ races

    public static IEnumerable<object[]> Seeds() => Enumerable.Range(1, Long ? 1000 : 50).Select(s => new object[] { s });

    /// <summary>Per seed: three damaged link counts in a static subtree, two writers changing their own subtrees with
    /// every namespace operation while the check and repair run; afterwards the three are repaired, nothing else was
    /// reported, a second check finds nothing, and the offline oracles agree.</summary>
    [Theory]
    [MemberData(nameof(Seeds))]
    public void OnlineNlinksRaceSeeds(int seed)
    {
        var (fs, image) = Open();
        var rng = new Random(seed);
        fs.Mkdir("/static");
        var damaged = new Dictionary<ulong, (uint NLink, long Counted)>();
        for (int i = 0; i < 3; i++)
        {
            bool dir = rng.Next(2) == 0;
            ulong ino = dir ? fs.Mkdir($"/static/e{i}") : fs.Create($"/static/e{i}");
            uint right = dir ? 2u : 1u, wrong = (uint)rng.Next(0, 4);
            if (wrong == right) wrong = right + 1;
            SetNlink(fs, ino, wrong);
            damaged[ino] = (wrong, right);
        }
        OnlineLinkCountResult r;
        using (var writers = new NamespaceWriters(fs, seed, threads: 2))
        {
            try
            {
                r = Check(fs, repair: true);
            }
            finally
            {
                writers.Stop();
            }
            writers.AssertHealthy();
            output.WriteLine($"seed {seed}: writers ran {writers.Operations} operations ({writers.Succeeded} succeeded)");
        }
        Assert.Equal(damaged.Count, r.MismatchTotal);
        Assert.True(r.TreeProblemTotal == 0, $"seed {seed}: tree problems reported beside writers on a healthy tree: {string.Join("; ", r.TreeProblems)}");
        foreach (LinkCountMismatch m in r.Mismatches)
        {
            Assert.True(damaged.TryGetValue(m.Ino, out var e), $"seed {seed}: inode {m.Ino} reported wrong (nlink {m.NLink}, counted {m.Counted}) but was not damaged");
            Assert.Equal(e, (m.NLink, m.Counted));
        }
        Assert.True(r.IsClean && r.Repaired == damaged.Count, $"seed {seed}: repaired {r.Repaired}, not repaired: {string.Join("; ", r.NotRepaired)}");
        AssertNoMismatch(Check(fs, repair: false), $"seed {seed}: a second check");
        CloseAndAssertOffline(fs, image);
    }
}

/// <summary>
/// Writer threads for the link count tests: each changes its own subtree (/wN) with random creates, mkdirs, links,
/// renames (within and across its directories, files and directories), unlinks and rmdirs, until stopped (and at
/// least a few dozen operations). Errors a random workload expects (a name that exists or does not, a directory not
/// empty) are counted; any other outcome is a failure.
/// </summary>
internal sealed class NamespaceWriters : IDisposable
{
    private readonly XfsFileSystem fs;
    private readonly List<Thread> threads = new();
    private readonly ConcurrentQueue<string> failures = new();
    private volatile bool stop;
    private long operations, succeeded;

    public NamespaceWriters(XfsFileSystem fs, int seed, int threads)
    {
        this.fs = fs;
        using var started = new CountdownEvent(threads);
        for (int t = 0; t < threads; t++)
        {
            string root = $"/w{t}";
            fs.Mkdir(root);
            for (int d = 0; d < 3; d++) fs.Mkdir($"{root}/d{d}");
            int threadSeed = seed * 31 + t;
            var thread = new Thread(() => Run(root, threadSeed, started)) { IsBackground = true, Name = $"nlinks-writer-{t}" };
            this.threads.Add(thread);
            thread.Start();
        }
        started.Wait();
    }

    public long Operations => Interlocked.Read(ref operations);

    public long Succeeded => Interlocked.Read(ref succeeded);

    private void Run(string root, int seed, CountdownEvent started)
    {
        var rng = new Random(seed);
        started.Signal();
        string Name() => $"{root}/d{rng.Next(3)}/{(rng.Next(2) == 0 ? "n" : "s")}{rng.Next(6)}";
        for (long i = 0; !stop || i < 40; i++)
        {
            Interlocked.Increment(ref operations);
            try
            {
                switch (rng.Next(7))
                {
                    case 0: fs.Create(Name()); break;
                    case 1: fs.Mkdir(Name()); break;
                    case 2: fs.Namespace.Link(Name(), Name()); break;
                    case 3: fs.Namespace.Rename(Name(), Name()); break;
                    case 4: fs.Unlink(Name()); break;
                    case 5: fs.Rmdir(Name()); break;
                    default: fs.Namespace.Rename(Name(), $"{Name()}/{rng.Next(3)}"); break;
                }
                Interlocked.Increment(ref succeeded);
            }
            catch (XfsWriteException e) when (e.Kind is WriteErrorKind.NotFound or WriteErrorKind.Exists or WriteErrorKind.NotEmpty
                                                  or WriteErrorKind.IsDirectory or WriteErrorKind.NotDirectory or WriteErrorKind.NotPermitted
                                                  or WriteErrorKind.InvalidArgument)
            {
            }
            catch (Exception e)
            {
                failures.Enqueue($"{Thread.CurrentThread.Name}: {e.GetType().Name}: {e.Message}");
                return;
            }
        }
    }

    public void Stop()
    {
        stop = true;
        foreach (Thread t in threads) t.Join();
    }

    public void AssertHealthy() => Assert.True(failures.IsEmpty, $"writer failures: {string.Join("; ", failures)}");

    public void Dispose() => Stop();
}
