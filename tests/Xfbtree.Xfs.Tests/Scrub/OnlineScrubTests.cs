using System.Globalization;
using Xfbtree.Cli.Stress;
using Xfbtree.Xfs.Scrub;
using Xfbtree.Xfs.Tests.Online;
using Xfbtree.Xfs.Tests.Repair;
using Xfbtree.Xfs.Tests.Trees;
using Xfbtree.Xfs.Tests.Write;
using Xfbtree.Xfs.Write;
using Xfbtree.Xfs.Write.Engine;
using Xfbtree.Xfs.Write.Namespace;
using Xunit.Abstractions;

namespace Xfbtree.Xfs.Tests.Scrub;

/// <summary>
/// The online scrub (<see cref="OnlineScrubber"/>) of an open engine: clean on a healthy image while writers run
/// (every outcome but clean fails), a free-space change of an AG before, during (it waits for the AG's lock) and
/// after that AG's check, and one damage kind per structure found online, repaired online, then xfs_repair -n clean.
/// </summary>
public sealed class OnlineScrubTests(ITestOutputHelper output)
{
    private static bool Long => Environment.GetEnvironmentVariable("XFBTREE_LONG_TESTS") == "1";

    /// <summary>Scrubs in a loop beside the stress workload until it is done (at least once), counting what it checked.</summary>
    private sealed class ScrubLoop(WriteEngine engine) : IStressBackground
    {
        public int Runs;
        public long Structures;
        public TimeSpan LongestAgHold;
        /// <summary>Inode cores judged (each under its inode lock, beside the writers), over every run.</summary>
        public long InodeCoresJudged;
        public readonly List<string> NotClean = new();

        public void Run(Func<bool> workloadDone)
        {
            do
            {
                ScrubReport report = OnlineScrubber.Run(engine);
                Runs++;
                foreach (ScrubFinding f in report.Findings)
                {
                    Structures++;
                    if (f.Verdict != ScrubVerdict.Clean) NotClean.Add($"run {Runs}: {f}");
                    if (f.AgNumber is not null && f.AgLockHeld is { } held && held > LongestAgHold) LongestAgHold = held;
                    if (f.Structure == "inode cores" && f.Note is { } note) InodeCoresJudged += long.Parse(note.Split(' ')[0], CultureInfo.InvariantCulture);
                }
                foreach (LinkCountMismatch m in report.LinkMismatches) NotClean.Add($"run {Runs}: {m}");
            }
            while (!workloadDone() && NotClean.Count == 0);
        }
    }

    [Theory]
    [InlineData("geom-bs1k", 50, 1000)]
    [InlineData("aged-small", 1, 10)]
    public void AHealthyImageChecksCleanWhileWritersRun(string fixture, int suiteSeeds, int longSeeds)
    {
        int seeds = Long ? longSeeds : suiteSeeds;
        using var scratch = new RepairScratch();
        string baseImage = scratch.CopyFixture(fixture);
        int runs = 0;
        long structures = 0, ops = 0, cores = 0;
        TimeSpan longest = TimeSpan.Zero;
        for (int seed = 1; seed <= seeds; seed++)
        {
            string image = scratch.Copy(baseImage, $"online-scrub-{seed}.img");
            using (var fs = XfsFileSystem.Open(image, OnlineTestSupport.Fast))
            {
                var target = new XfsStressTarget(fs);
                StressModel model = StressModel.Load(target, seed, new StressModelOptions { MaxFileSize = 256 << 10 });
                var loop = new ScrubLoop(fs.Engine);
                StressResult result = new StressRunner(target, model, new StressOptions { Ops = 200, Threads = 2, Seed = seed, Background = loop }).Run();
                var problems = result.Problems.ToList();
                problems.AddRange(model.Verify(target));
                Assert.True(problems.Count == 0, $"seed {seed}: {string.Join("; ", problems)}");
                Assert.True(loop.NotClean.Count == 0, $"seed {seed}: the online scrub of a healthy image under writers: {string.Join("\n", loop.NotClean.Take(10))}");
                Assert.True(loop.Runs >= 1 && loop.Structures > 0 && loop.InodeCoresJudged > 0, "the scrub never ran");
                cores += loop.InodeCoresJudged;
                // And once more with the writers gone, against the offline scrub of the same state.
                ScrubReport quiet = OnlineScrubber.Run(fs.Engine);
                Assert.True(quiet.IsClean, string.Join("\n", quiet.Findings.Where(f => f.Verdict != ScrubVerdict.Clean)));
                runs += loop.Runs + 1;
                structures += loop.Structures + quiet.Findings.Count;
                ops += result.Total;
                if (loop.LongestAgHold > longest) longest = loop.LongestAgHold;
                fs.Close();
            }
            var (rc, stdout, _) = ScrubCli.Run(image);
            Assert.True(rc == 0, $"seed {seed}: offline scrub after the run: {stdout}");
            File.Delete(image);
        }
        output.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"{fixture}: {seeds} seeds, {ops} ops, {runs} online scrubs, {structures} structures checked ({cores} inode cores judged beside the writers), all clean; longest AG hold {longest.TotalMilliseconds:F1} ms"));
    }

    /// <summary>
    /// A free-space change of AG X: made before X's check (the check sees it), started while the check holds X's lock
    /// (it waits: the AGF the check reads has the free space of before; a writer of another AG finishes meanwhile),
    /// and finished after it (the next check sees it). Every check clean.
    /// </summary>
    [Fact]
    public void AFreeSpaceChangeWaitsForTheCheckOfItsAgOnly()
    {
        using var scratch = new RepairScratch();
        string image = scratch.CopyFixture("aged-small");
        using var fs = XfsFileSystem.Open(image, OnlineTestSupport.Fast);
        WriteEngine engine = fs.Engine;
        // New files in directories of two different AGs (inodes go to their parent's AG, data next to them), each
        // with data already there: the allocator extends a file in its data's AG.
        var dirs = DirectoriesByAg(fs, engine);
        Assert.True(dirs.Count >= 2, "aged-small has directories in fewer than two AGs");
        var placed = new Dictionary<uint, (string Path, ulong Ino)>();
        foreach (string dir in dirs.Values)
        {
            string path = dir.TrimEnd('/') + "/online-scrub-probe";
            ulong ino = fs.Create(path);
            fs.Write(path, 0, OnlineTestSupport.Pattern(64 << 10, 1));
            if (OnlineTestSupport.FirstDataAg(engine, ino) is { } ag) placed.TryAdd(ag, (path, ino));
        }
        Assert.True(placed.Count >= 2, "no two probe files with data in different AGs");
        uint x = placed.Keys.Max();
        var (inX, target) = placed[x];
        string other = placed.First(p => p.Key != x).Value.Path;

        string AgfNote(IReadOnlyList<ScrubFinding> findings) => findings.Single(f => f.Structure == "AGF").Note!;
        string Expect(uint free) => $"{free} free blocks";
        void AssertClean(IReadOnlyList<ScrubFinding> findings, string when)
        {
            Assert.True(findings.All(f => f.Verdict == ScrubVerdict.Clean), $"{when}: {string.Join("\n", findings.Where(f => f.Verdict != ScrubVerdict.Clean))}");
        }

        // Before: the change is committed, the check sees it.
        fs.Write(inX, 64 << 10, OnlineTestSupport.Pattern(128 << 10, 3));
        uint afterBefore = engine.Ag(x).FreeBlocks;
        var before = OnlineScrubber.CheckAg(engine, x);
        AssertClean(before, "before");
        Assert.Equal(Expect(afterBefore), AgfNote(before));

        // During: a writer of AG X starts while the check holds X's lock and waits; a writer of another AG does not.
        Thread? writer = null;
        Exception? writerError = null;
        using var writerDone = new ManualResetEventSlim();
        bool waited = false, otherFinished = false, doneWhileHeld = true;
        var hooks = new OnlineScrubTestHooks
        {
            WhileAgLocked = ag =>
            {
                if (ag != x) return;
                var otherWriter = new Thread(() => fs.Write(other, 64 << 10, OnlineTestSupport.Pattern(128 << 10, 4)));
                otherWriter.Start();
                otherFinished = otherWriter.Join(TimeSpan.FromSeconds(60));
                writer = new Thread(() =>
                {
                    try { fs.Write(inX, 192 << 10, OnlineTestSupport.Pattern(256 << 10, 5)); }
                    catch (Exception e) { writerError = e; }
                    finally { writerDone.Set(); }
                });
                writer.Start();
                SpinWait.SpinUntil(() => engine.Ag(ag).Lock.Waiters > 0 || writerDone.IsSet, TimeSpan.FromSeconds(60));
                waited = engine.Ag(ag).Lock.Waiters > 0;
                doneWhileHeld = writerDone.IsSet;
            },
        };
        uint freeBeforeDuring = engine.Ag(x).FreeBlocks;
        var during = OnlineScrubber.CheckAg(engine, x, new ScrubOptions { OnlineTestHooks = hooks });
        Assert.True(otherFinished, "the writer of another AG did not finish while AG X was checked");
        Assert.True(waited, "the writer of AG X did not wait for the check's hold of the AG lock");
        Assert.False(doneWhileHeld, "the writer of AG X finished while the check held the lock");
        Assert.NotNull(writer);
        Assert.True(writer.Join(TimeSpan.FromSeconds(60)), "the writer never finished");
        Assert.Null(writerError);
        AssertClean(during, "during");
        Assert.Equal(Expect(freeBeforeDuring), AgfNote(during));
        uint afterDuring = engine.Ag(x).FreeBlocks;
        Assert.True(afterDuring < freeBeforeDuring, $"the writer allocated nothing in AG {x} ({freeBeforeDuring} -> {afterDuring})");
        Assert.Equal(x, OnlineTestSupport.FirstDataAg(engine, target));

        // After: the next check sees the change the last one kept out.
        var after = OnlineScrubber.CheckAg(engine, x);
        AssertClean(after, "after");
        Assert.Equal(Expect(afterDuring), AgfNote(after));
        Assert.All(during.Where(f => f.Structure != "rmapbt"), f => Assert.NotNull(f.AgLockHeld));
        output.WriteLine($"AG {x}: free {afterBefore} -> {freeBeforeDuring} (during) -> {afterDuring}; held {during[0].AgLockHeld!.Value.TotalMilliseconds:F1} ms");
        fs.Close();
        WriteEngineTestSupport.AssertOraclesClean(image, "after the interleavings");
    }

    /// <summary>A directory per AG that has one (breadth first from the root, at most 500 directories looked at).</summary>
    private static Dictionary<uint, string> DirectoriesByAg(XfsFileSystem fs, WriteEngine engine)
    {
        var found = new Dictionary<uint, string>();
        var queue = new Queue<string>(["/"]);
        for (int looked = 0; queue.Count > 0 && looked < 500 && found.Count < engine.Geometry.AgCount; looked++)
        {
            string dir = queue.Dequeue();
            found.TryAdd(engine.Geometry.InoToAgno(fs.Lookup(dir)), dir);
            foreach (DirectoryEntry e in fs.List(dir))
            {
                if (e.Type == InodeType.Directory && e.Name is not "." and not "..") queue.Enqueue(dir.TrimEnd('/') + "/" + e.Name);
            }
        }
        return found;
    }

    /// <summary>One damage kind per structure (geom-bs1k AG 1): the online check finds it on an open engine, the online
    /// repair fixes it, the online check is clean again, and after the close xfs_repair -n agrees.</summary>
    public static IEnumerable<object[]> Damage() =>
    [
        ["bnobt", "rec-blockcount"], ["cntbt", "leaf-crc"], ["inobt", "rec-freecount"], ["finobt", "rec-startino"],
        ["refcountbt", "rec-refcount"], ["bnobt", "agf-freeblks"], ["inobt", "agi-count"], ["agfl", "agf-flcount"],
        ["nlinks", "nlink-file-high"], ["rmapbt", "rec-blockcount"], ["superblock", "sb-icount"],
        ["unlinked", "unlinked-linked-head"], ["unlinked", "unlinked-stale-next"], ["dirent", "dirent-ftype"], ["dirent", "dirent-free"],
    ];

    [Theory]
    [MemberData(nameof(Damage))]
    public void DamageOfEachStructureIsFoundAndRepairedOnline(string tree, string kind)
    {
        const uint Ag = 1;
        using var scratch = new RepairScratch();
        string image = scratch.CopyFixture("geom-bs1k");
        string finding;
        if (tree == "rmapbt")
        {
            output.WriteLine(RmapCorruptor.Apply(image, kind, 1, Ag));
            finding = $"AG {Ag} rmapbt";
        }
        else if (tree == "superblock")
        {
            ToolResult db = RepairTools.Exec(TreeFixtures.Tool("xfs_db"), ["-x", "-c", "sb 0", "-c", "write -d icount 1000", image]);
            Assert.True(db.ExitCode == 0, db.ToString());
            finding = "superblock counters";
        }
        else
        {
            var k = ScrubCorruptor.Kinds.Single(c => c.Tree == tree && c.Name == kind);
            output.WriteLine(ScrubCorruptor.Apply(image, k, Ag));
            finding = k.Finding == "nlinks" ? "nlinks" : $"AG {Ag} {k.Finding}";
        }
        bool wide = tree is "nlinks" or "dirent" or "superblock";
        var options = new ScrubOptions { OnlyAg = wide ? null : Ag };
        using (WriteEngine engine = WriteEngine.Open(image, OnlineTestSupport.Fast))
        {
            ScrubReport found = OnlineScrubber.Run(engine, options);
            foreach (ScrubFinding f in found.Findings.Where(f => f.Verdict != ScrubVerdict.Clean)) output.WriteLine(f.ToString());
            Assert.Contains(found.Findings, f => f.Subject == finding && f.Verdict == ScrubVerdict.Damaged);
            IReadOnlyList<ScrubRepairOutcome> repairs = OnlineScrubber.Repair(engine, found, options);
            foreach (ScrubRepairOutcome r in repairs) output.WriteLine("repair: " + r);
            Assert.Contains(repairs, r => r.Repaired);
            Assert.DoesNotContain(repairs, r => !r.Repaired);
            ScrubReport again = OnlineScrubber.Run(engine, options);
            Assert.True(again.IsClean, "after the online repair: " + string.Join("\n", again.Findings.Where(f => f.Verdict != ScrubVerdict.Clean)));
            engine.Close();
        }
        ToolResult check = RepairTools.Exec(TreeFixtures.Tool("xfs_repair"), ["-n", image]);
        Assert.True(check.ExitCode == 0, $"xfs_repair -n after the online repair: {check}");
    }
}
