using System.Text.Json;
using Xfbtree.Cli;
using Xfbtree.Xfs.Tests.Repair;
using Xfbtree.Xfs.Tests.Scrub;
using Xunit.Abstractions;

namespace Xfbtree.Xfs.Tests.Mount;

/// <summary>
/// <c>xfbtree scrub DIR</c> on a running <c>xfbtree mount</c>, through the real FUSE control channel: clean while a
/// small workload writes (every line clean, exit 0, as many structures as the offline scrub, the JSON of the offline
/// scrub plus the mount and the AG lock times), and a damaged AG found and repaired online with <c>--repair</c>, xfs_repair -n clean after the unmount.
/// </summary>
public sealed class MountScrubTests(ITestOutputHelper output)
{
    static readonly string[] Structures = ["AGF", "AGFL", "AGI", "bnobt", "cntbt", "inobt", "finobt", "inode cores", "attr forks", "rmapbt", "refcountbt"];

    [FuseFact]
    public void ScrubOfARunningMount_IsCleanUnderASmallWorkload()
    {
        using var scratch = new RepairScratch();
        string image = scratch.CopyFixture("fresh-4ag");
        string mnt = Directory.CreateDirectory(Path.Combine(scratch.Directory, "mnt")).FullName;
        // The online scrub checks what the offline one checks: as many structures, the inode cores and attr forks
        // included (docs/scrub.md "Inode cores", "Attribute forks").
        var offline = ScrubCli.Run(image, "--json");
        Assert.True(offline.ExitCode == 0, offline.Stdout);
        int structureCount;
        using (var offlineDoc = JsonDocument.Parse(offline.Stdout))
            structureCount = offlineDoc.RootElement.GetProperty("structures").EnumerateArray().Count();
        using (var mount = MountedImage.Start(image, mnt))
        {
            // The workload: files written, renamed and removed in two directories until the scrubs are done.
            using var stop = new CancellationTokenSource();
            long operations = 0;
            Exception? workloadError = null;
            var workload = new Thread(() =>
            {
                try
                {
                    for (int i = 0; !stop.IsCancellationRequested; i++)
                    {
                        string dir = Path.Combine(mnt, $"w{i % 2}");
                        Directory.CreateDirectory(dir);
                        string file = Path.Combine(dir, $"f{i}");
                        File.WriteAllBytes(file, MountWorkloads.RandomBytes(i, 4096 * (1 + i % 16)));
                        if (i % 3 == 0) File.Move(file, file + ".moved");
                        if (i % 5 == 0 && i > 0) File.Delete(Path.Combine(dir, $"f{i - 5}"));
                        Interlocked.Increment(ref operations);
                    }
                }
                catch (Exception e) when (e is IOException or UnauthorizedAccessException)
                {
                    workloadError = e;
                }
            });
            workload.Start();
            ToolResult text, json;
            try
            {
                SpinWait.SpinUntil(() => Interlocked.Read(ref operations) > 20 || workloadError is not null, TimeSpan.FromSeconds(60));
                text = RepairTools.Xfbtree("scrub", mnt);
                json = RepairTools.Xfbtree("scrub", mnt, "--json");
            }
            finally
            {
                stop.Cancel();
                workload.Join();
            }
            output.WriteLine(text.Stdout);
            Assert.Null(workloadError);
            Assert.True(text.ExitCode == 0, text.ToString());
            var lines = text.Stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries);
            Assert.All(lines.SkipLast(1), l => Assert.Matches(@"^(AG \d+ [^:]+|primary superblock|superblock counters|bmap|directories|nlinks): clean", l));
            Assert.Matches($@"^result: clean \({structureCount} structures checked; [0-9.]+ s\)$", lines[^1]);
            foreach (string s in Structures)
            {
                Assert.Equal(4, lines.Count(l => System.Text.RegularExpressions.Regex.IsMatch(l, $@"^AG \d {s}: clean")));
            }

            Assert.True(json.ExitCode == 0, json.ToString());
            using var doc = JsonDocument.Parse(json.Stdout);
            JsonElement root = doc.RootElement;
            Assert.Equal(CommandLineHost.Version, root.GetProperty("version").GetString());
            Assert.Equal(("scrub", 0, true), (root.GetProperty("command").GetString(), root.GetProperty("exitCode").GetInt32(), root.GetProperty("clean").GetBoolean()));
            Assert.Equal(mnt, root.GetProperty("mount").GetString());
            Assert.Equal(Path.GetFullPath(image), Path.GetFullPath(root.GetProperty("image").GetString()!));
            var structures = root.GetProperty("structures").EnumerateArray().ToList();
            Assert.Equal(structureCount, structures.Count);
            Assert.All(structures, s => Assert.Equal("clean", s.GetProperty("verdict").GetString()));
            // Every AG structure says how long its check held the AG lock.
            Assert.All(structures.Where(s => s.GetProperty("ag").ValueKind != JsonValueKind.Null),
                s => Assert.True(s.GetProperty("agLockSeconds").GetDouble() >= 0));
            output.WriteLine($"{Interlocked.Read(ref operations)} workload operations beside the scrubs");

            var (code, stdout, stderr) = mount.Unmount();
            Assert.True(code == 0, $"exit {code}\n{stdout}\n{stderr}");
        }
        MountWitnesses.AssertClean(image);
    }

    [Fact]
    public void ScrubOfADirectoryThatIsNoMount_IsOneLineAndExit2()
    {
        using var scratch = new RepairScratch();
        var (rc, stdout, stderr) = ScrubCli.Run(scratch.Directory);
        Assert.True(rc == 2 && stdout.Length == 0, $"{rc}\n{stdout}\n{stderr}");
        Assert.Equal($"xfbtree: {scratch.Directory}: not an xfbtree mount (the file system there does not answer xfbtree's control requests)\n", stderr);
        var json = ScrubCli.Run(scratch.Directory, "--json");
        Assert.Equal(2, json.ExitCode);
        using var doc = JsonDocument.Parse(json.Stdout);
        Assert.Equal(2, doc.RootElement.GetProperty("exitCode").GetInt32());
        var force = ScrubCli.Run(scratch.Directory, "--force");
        Assert.True(force.ExitCode == 2 && force.Stderr.Contains("--force is for images", StringComparison.Ordinal), force.Stderr);
    }

    [Fact]
    public void ScrubWire_CutsWhatDoesNotFitAndKeepsEveryTotal()
    {
        var findings = new List<Xfbtree.Xfs.Scrub.ScrubFinding>();
        for (uint ag = 0; ag < 9; ag++)
        {
            var f = new Xfbtree.Xfs.Scrub.ScrubFinding("bnobt", ag, 5);
            for (int p = 0; p < 40; p++) f.Damage(new string('x', 900) + p);
            f.Skip("a reason");
            f.Note = "note";
            findings.Add(f);
        }
        var wrong = Enumerable.Range(1, 3000).Select(i => new Xfbtree.Xfs.Scrub.LinkCountMismatch((ulong)i, 2, 1)).ToList();
        string text = Xfbtree.Cli.Mount.ScrubWire.Findings(findings, wrong, 5000, 12_000);
        Assert.True(System.Text.Encoding.UTF8.GetByteCount(text) <= 12_000, $"{text.Length} characters");
        var (back, mismatches, total) = Xfbtree.Cli.Mount.ScrubWire.ReadFindings(text);
        Assert.Equal(9, back.Count);
        Assert.All(back, f => Assert.Equal((40L, Xfbtree.Xfs.Scrub.ScrubVerdict.Damaged, "note"), (f.ProblemTotal, f.Verdict, f.Note)));
        Assert.All(back, f => Assert.Equal(["a reason"], f.Skipped));
        Assert.Equal(5000, total);
        Assert.True(mismatches.Count <= wrong.Count && mismatches.SequenceEqual(wrong.Take(mismatches.Count)));
        Assert.EndsWith("; and 39 more (also not checked: a reason)", back[0].ToString(), StringComparison.Ordinal);
    }

    [FuseFact]
    public void ScrubRepairOfARunningMount_RepairsADamagedTreeOnline()
    {
        using var scratch = new RepairScratch();
        string image = scratch.CopyFixture("geom-bs1k");
        output.WriteLine(ScrubCorruptor.Apply(image, ScrubCorruptor.Kinds.First(k => k.Tree == "cntbt"), 1));
        string mnt = Directory.CreateDirectory(Path.Combine(scratch.Directory, "mnt")).FullName;
        using (var mount = MountedImage.Start(image, mnt))
        {
            var found = RepairTools.Xfbtree("scrub", mnt, "--ag", "1");
            output.WriteLine(found.Stdout);
            Assert.True(found.ExitCode == 1, found.ToString());
            Assert.Contains("AG 1 cntbt: damaged", found.Stdout, StringComparison.Ordinal);

            var repaired = RepairTools.Xfbtree("scrub", mnt, "--repair");
            output.WriteLine(repaired.Stdout);
            Assert.True(repaired.ExitCode == 0, repaired.ToString());
            Assert.Contains("repair: AG 1 bnobt+cntbt: repaired", repaired.Stdout, StringComparison.Ordinal);
            Assert.Matches(@"(?m)^result after repair: clean", repaired.Stdout);
            Assert.True(RepairTools.Xfbtree("scrub", mnt).ExitCode == 0);
            File.WriteAllBytes(Path.Combine(mnt, "after.bin"), MountWorkloads.RandomBytes(3, 300_000));

            var (code, stdout, stderr) = mount.Unmount();
            Assert.True(code == 0, $"exit {code}\n{stdout}\n{stderr}");
            Assert.Contains("scrub repair (asked by uid 0): AG 1 bnobt+cntbt: repaired", stderr, StringComparison.Ordinal);
        }
        MountWitnesses.AssertClean(image);
    }

    /// <summary>
    /// The kernel caches attributes and names for an hour; an online repair changes them behind its back, so the
    /// mount tells it to forget them. A file with two names whose nlink says 3, and a directory whose nlink says 5,
    /// are stat'ed through the mount (cached), repaired online, and stat'ed again at once: the repaired counts,
    /// not the cached ones. A name removed behind the kernel's back is not needed for this: every name is
    /// revalidated after the repair (FUSE_NOTIFY_INC_EPOCH), which the second stat of each path goes through.
    /// </summary>
    [FuseFact]
    public void ScrubRepairOfARunningMount_KernelSeesTheRepairedAttributesAtOnce()
    {
        using var scratch = new RepairScratch();
        string image = scratch.CopyFixture("fresh-4ag");
        using (var fs = Xfbtree.Xfs.Write.XfsFileSystem.Open(image, Xfbtree.Xfs.Tests.Online.OnlineTestSupport.Fast))
        {
            ulong file = fs.Create("/file");
            fs.Link("/file", "/second");
            ulong dir = fs.Mkdir("/dir");
            Xfbtree.Xfs.Tests.Online.OnlineLinkCountTests.SetNlink(fs, file, 3);
            Xfbtree.Xfs.Tests.Online.OnlineLinkCountTests.SetNlink(fs, dir, 5);
            fs.Close();
        }
        string mnt = Directory.CreateDirectory(Path.Combine(scratch.Directory, "mnt")).FullName;
        using (var mount = MountedImage.Start(image, mnt))
        {
            string filePath = Path.Combine(mnt, "file"), dirPath = Path.Combine(mnt, "dir");
            Assert.Equal(3L, Links(filePath)); // the damaged counts, now in the kernel's cache
            Assert.Equal(5L, Links(dirPath));

            var repaired = RepairTools.Xfbtree("scrub", mnt, "--repair", "--cpu-share", "1");
            output.WriteLine(repaired.Stdout);
            Assert.True(repaired.ExitCode == 0, repaired.ToString());
            Assert.Matches(@"(?m)^result after repair: clean", repaired.Stdout);

            Assert.Equal(2L, Links(filePath));
            Assert.Equal(2L, Links(Path.Combine(mnt, "second")));
            Assert.Equal(2L, Links(dirPath));

            var (code, stdout, stderr) = mount.Unmount();
            Assert.True(code == 0, $"exit {code}\n{stdout}\n{stderr}");
            Assert.DoesNotContain("could not be told", stderr, StringComparison.Ordinal);
        }
        MountWitnesses.AssertClean(image);
    }

    /// <summary>st_nlink through the kernel (lstat, which the kernel answers from its cache while it is valid).</summary>
    static long Links(string path)
    {
        var (code, stdout) = Stat(path);
        Assert.True(code == 0, $"stat {path}: exit {code}");
        return long.Parse(stdout.Trim(), System.Globalization.CultureInfo.InvariantCulture);
    }

    static (int Code, string Stdout) Stat(string path)
    {
        using var p = ChildProcesses.Start(new System.Diagnostics.ProcessStartInfo("stat", ["-c", "%h", path]) { RedirectStandardOutput = true });
        string text = p.StandardOutput.ReadToEnd();
        p.WaitForExit();
        return (p.ExitCode, text);
    }
}
