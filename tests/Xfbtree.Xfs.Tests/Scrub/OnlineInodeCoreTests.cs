using Xfbtree.Xfs.Scrub;
using Xfbtree.Xfs.Tests.Online;
using Xfbtree.Xfs.Tests.Repair;
using Xfbtree.Xfs.Tests.Write;
using Xfbtree.Xfs.Write;
using Xfbtree.Xfs.Write.Engine;
using Xunit.Abstractions;

namespace Xfbtree.Xfs.Tests.Scrub;

/// <summary>
/// The online check of inode cores (<see cref="OnlineScrubber"/>, docs/scrub.md "Inode cores"): the kinds of the
/// offline matrix (<see cref="InodeCoreScrubTests"/>) found by the online check of an open engine while two writers
/// run, repaired online by the same transactions as offline, the online check clean again, then xfs_repair -n clean
/// after the close. And a writer of an inode under check waits for it, the check clean, the writer's change there
/// for the next check.
/// </summary>
public sealed class OnlineInodeCoreTests(ITestOutputHelper output)
{
    /// <summary>The loadable path (di_onlink), the one that cannot load (the CRC), and the reflink flag (judged under
    /// the AG locks) in the suite; every kind with a certain fix in long mode.</summary>
    public static IEnumerable<object[]> Cases()
    {
        bool longMode = Environment.GetEnvironmentVariable("XFBTREE_LONG_TESTS") == "1";
        string[] suite = ["onlink", "crc", "reflink-missing"];
        return InodeCoreScrubTests.Kinds.Where(k => k.Certain && (longMode || suite.Contains(k.Name))).Select(k => new object[] { k.Name });
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void DamagedInodeCoreIsFoundAndRepairedOnlineBesideWriters(string name)
    {
        var kind = InodeCoreScrubTests.Kinds.Single(k => k.Name == name);
        using var scratch = new RepairScratch();
        var (image, ino) = InodeCoreScrubTests.Damage(scratch, name);
        using (WriteEngine engine = WriteEngine.Open(image, OnlineTestSupport.Fast))
        {
            ScrubReport found = OnlineScrubber.Run(engine);
            ScrubFinding cores = found.Findings.Single(f => f.Structure == "inode cores" && f.Verdict == ScrubVerdict.Damaged);
            string line = Assert.Single(cores.Problems);
            output.WriteLine(line);
            Assert.StartsWith($"inode {ino} core: damaged: ", line, StringComparison.Ordinal);
            Assert.Contains(kind.Expect, line, StringComparison.Ordinal);
            engine.Close();
        }
        BackgroundWriters.RepairOnlineBesideWriters(image, "inode cores", output);
    }

    /// <summary>
    /// While the check holds an inode's lock, a writer of that inode (a write that maps new blocks, changing
    /// di_nblocks, the extent count and the size) waits for it; the check judges the core as committed before (clean),
    /// the writer then finishes, and the next check is clean too with the new core.
    /// </summary>
    [Fact]
    public void AWriterOfAnInodeWaitsForItsCheckAndNothingIsBlamed()
    {
        using var scratch = new RepairScratch();
        string image = scratch.CopyFixture("geom-bs1k");
        using var fs = XfsFileSystem.Open(image, OnlineTestSupport.Fast);
        WriteEngine engine = fs.Engine;
        const string ProbePath = "/online-core-probe";
        ulong target = fs.Create(ProbePath);
        fs.Write(ProbePath, 0, OnlineTestSupport.Pattern(8 << 10, 1));
        uint agno = engine.Geometry.InoToAgno(target);
        Thread? writer = null;
        Exception? writerError = null;
        using var writerDone = new ManualResetEventSlim();
        bool waited = false, doneWhileHeld = true;
        var hooks = new OnlineScrubTestHooks
        {
            WhileInodeLocked = ino =>
            {
                if (ino != target || writer != null) return;
                writer = new Thread(() =>
                {
                    try { fs.Write(ProbePath, 64 << 10, OnlineTestSupport.Pattern(64 << 10, 2)); }
                    catch (Exception e) { writerError = e; }
                    finally { writerDone.Set(); }
                });
                writer.Start();
                IncoreInode held = engine.InodeCache.Peek(ino)!;
                SpinWait.SpinUntil(() => held.Lock.Waiters > 0 || writerDone.IsSet, TimeSpan.FromSeconds(60));
                waited = held.Lock.Waiters > 0;
                doneWhileHeld = writerDone.IsSet;
            },
        };
        var during = OnlineScrubber.CheckAg(engine, agno, new ScrubOptions { OnlineTestHooks = hooks });
        Assert.NotNull(writer);
        Assert.True(waited, "the writer of the inode did not wait for the check's hold of its lock");
        Assert.False(doneWhileHeld, "the writer finished while the check held the inode's lock");
        Assert.True(writer.Join(TimeSpan.FromSeconds(60)), "the writer never finished");
        Assert.Null(writerError);
        Assert.True(during.All(f => f.Verdict == ScrubVerdict.Clean), string.Join("\n", during.Where(f => f.Verdict != ScrubVerdict.Clean)));
        Assert.Contains(during, f => f.Structure == "inode cores");
        Assert.Contains(during, f => f.Structure == "attr forks");
        var after = OnlineScrubber.CheckAg(engine, agno);
        Assert.True(after.All(f => f.Verdict == ScrubVerdict.Clean), string.Join("\n", after.Where(f => f.Verdict != ScrubVerdict.Clean)));
        Assert.Equal(128L << 10, fs.Stat(ProbePath).Size);
        fs.Close();
        WriteEngineTestSupport.AssertOraclesClean(image, "after the interleaving");
    }
}
