using Xfbtree.Xfs.Online;
using Xfbtree.Xfs.Tests.Repair;
using Xfbtree.Xfs.Write;
using Xfbtree.Xfs.Write.Engine;
using Xunit.Abstractions;

namespace Xfbtree.Xfs.Tests.Online;

/// <summary>
/// The online rmap repair's scan reads the cores of inodes nobody has in core from their cluster buffers, and uses
/// what it read only if no in-core inode of that number became live since (the inode cache's load stamp). Each test
/// drives one interleaving through the repair's test hooks: a writer changes the inode between the read and the
/// check, or after the visit; the new tree must equal the offline scan afterwards.
/// </summary>
public sealed class OnlineRmapUnloadedReadTests(ITestOutputHelper output) : IDisposable
{
    private const int Chunk = 64 << 10;
    private readonly RepairScratch scratch = new();

    public void Dispose() => scratch.Dispose();

    /// <summary>fresh-4ag with a probe and another file written, then closed and opened again so that no in-core inode
    /// is live: (fs, image, probe, the AG of its data).</summary>
    private (XfsFileSystem Fs, string Image, ulong Probe, uint Agno) Setup(WriteEngineOptions options)
    {
        string image = scratch.CopyFixture("fresh-4ag");
        ulong probe;
        uint agno;
        using (var fs = XfsFileSystem.Open(image, OnlineTestSupport.Fast))
        {
            probe = fs.Create("/probe");
            fs.Write("/probe", 0, OnlineTestSupport.Pattern(Chunk, 1));
            fs.Create("/other");
            agno = OnlineTestSupport.FirstDataAg(fs.Engine, probe) ?? throw new InvalidOperationException("the probe has no extent");
            fs.Close();
        }
        return (XfsFileSystem.Open(image, options), image, probe, agno);
    }

    private OnlineRmapRepairResult Repair(XfsFileSystem fs, uint agno, OnlineRepairTestHooks hooks)
    {
        OnlineRmapRepairResult result = OnlineRmapRepair.Run(fs.Engine, agno, new OnlineRmapRepairOptions { TestHooks = hooks });
        output.WriteLine($"AG {agno}: {result}");
        return result;
    }

    private void AssertOracle(XfsFileSystem fs, string image, uint agno, string when)
    {
        OnlineTestSupport.AssertClean(OnlineTestSupport.OfflineCheck(fs.Engine, image, agno, scratch.Directory), when);
        List<string> problems = Xfbtree.Xfs.Write.Space.WriteInvariants.Check(fs.Engine);
        Assert.True(problems.Count == 0, $"{when}: {string.Join("; ", problems.Take(10))}");
    }

    /// <summary>The scan read the probe's core from its cluster buffer; before it stashes what it read, a writer
    /// punches a hole in the probe (its updates are ignored: the probe is not visited yet, and the writer's in-core
    /// inode is live at the check). The visit is made again under the inode lock and sees the hole; stashing the
    /// stale read would keep the punched blocks mapped (a record extra in the new tree). (An in-core inode collected
    /// again before the check, so that only the load stamp shows it, is covered by the link count tests: here the
    /// probe's in-core inode stays referenced after the punch.)</summary>
    [Fact]
    public void OnlineRmapInodeChangedBetweenItsBufferReadAndTheCheckIsVisitedAgain()
    {
        WriteEngineOptions options = OnlineTestSupport.Fast;
        var (fs, image, probe, agno) = Setup(options);
        using (fs)
        {
            var log = new DecisionLog();
            bool changed = false;
            var hooks = new OnlineRepairTestHooks
            {
                AfterUnloadedRead = ino =>
                {
                    if (ino != probe || changed) return;
                    fs.PunchHole("/probe", 4096, 8192);
                    changed = true;
                },
                AfterLiveUpdate = log.Add,
            };
            OnlineRmapRepairResult r = Repair(fs, agno, hooks);
            Assert.True(changed, "the scan never read the probe from its cluster buffer");
            Assert.False(log.AnyApplied(probe), $"an update of an unvisited inode was applied: {log}");
            Assert.True(r.UnloadedReadsRetried >= 1, "the visit read from the cluster buffer was not made again");
            Assert.True(r.UnloadedReads > 0, "no inode was read from its cluster buffer");
            AssertOracle(fs, image, agno, "after a change between the buffer read and the check");
        }
    }

    /// <summary>The probe was visited through its cluster buffer (marked visited without an in-core inode); then a
    /// writer appends to it and punches a hole: the updates are applied (it is behind the cursor).</summary>
    [Fact]
    public void OnlineRmapInodeVisitedFromItsBufferThenChangedIsApplied()
    {
        var (fs, image, probe, agno) = Setup(OnlineTestSupport.Fast);
        using (fs)
        {
            var log = new DecisionLog();
            bool readUnloaded = false, changed = false;
            var hooks = new OnlineRepairTestHooks
            {
                AfterUnloadedRead = ino => readUnloaded |= ino == probe,
                AfterInode = ino =>
                {
                    if (ino != probe || changed) return;
                    Assert.True(readUnloaded, "the probe was not read from its cluster buffer");
                    fs.Write("/probe", Chunk, OnlineTestSupport.Pattern(Chunk, 3));
                    fs.PunchHole("/probe", 4096, 8192);
                    changed = true;
                },
                AfterLiveUpdate = log.Add,
            };
            OnlineRmapRepairResult r = Repair(fs, agno, hooks);
            Assert.True(changed, "the scan never visited the probe");
            Assert.True(log.AnyApplied(probe), $"no applied update for the visited probe: {log}");
            Assert.False(log.AnyIgnored(probe), $"an update of a visited inode was ignored: {log}");
            Assert.Equal(0, r.UnloadedReadsRetried);
            AssertOracle(fs, image, agno, "after a change behind the cursor");
        }
    }

    /// <summary>The probe's core was read from its cluster buffer; before the check the probe is removed and a new
    /// file with data in the repaired AG gets its inode number. The visit is made again and finds the new file's
    /// mappings, not the removed one's.</summary>
    [Fact]
    public void OnlineRmapInodeFreedAndReusedBetweenItsBufferReadAndTheCheckIsVisitedAgain()
    {
        var (fs, image, probe, agno) = Setup(OnlineTestSupport.Fast);
        using (fs)
        {
            ulong made = 0;
            var hooks = new OnlineRepairTestHooks
            {
                AfterUnloadedRead = ino =>
                {
                    if (ino != probe || made != 0) return;
                    fs.Unlink("/probe");
                    made = fs.Create("/again");
                    fs.Write("/again", 0, OnlineTestSupport.Pattern(2 * Chunk, 4));
                },
            };
            OnlineRmapRepairResult r = Repair(fs, agno, hooks);
            Assert.True(made == probe, $"the new file got inode {made}, not the removed probe's {probe}: the interleaving did not happen");
            Assert.True(r.UnloadedReadsRetried >= 1, "the visit read from the cluster buffer was not made again");
            AssertOracle(fs, image, agno, "after the probe's number was reused between the read and the check");
        }
    }

    /// <summary>A repair paced at half a CPU rebuilds the same tree and rests about as long as it works; a share outside
    /// (0, 1] is refused; a cancellation ends a rest at once.</summary>
    [Fact]
    public void OnlineRmapPacedRepairRestsAndIsCancellable()
    {
        var (fs, image, _, agno) = Setup(OnlineTestSupport.Fast);
        using (fs)
        {
            OnlineRmapRepairResult paced = OnlineRmapRepair.Run(fs.Engine, agno, new OnlineRmapRepairOptions { CpuShare = 0.5 });
            output.WriteLine($"paced: {paced.Elapsed.TotalMilliseconds:F0} ms, rested {paced.Paced.TotalMilliseconds:F0} ms");
            AssertOracle(fs, image, agno, "after a paced repair");
            foreach (double bad in new[] { 0, -0.5, 1.01, double.NaN })
            {
                Assert.Throws<ArgumentOutOfRangeException>(() => OnlineRmapRepair.Run(fs.Engine, agno, new OnlineRmapRepairOptions { CpuShare = bad }));
                // The scrub options refuse the same shares where they are given, before any check runs.
                Assert.Throws<ArgumentOutOfRangeException>(() => new Xfbtree.Xfs.Scrub.ScrubOptions { CpuShare = bad });
            }
            // A share so small that the first rest would last hours: the first batch works 3 ms (a spin, so that the
            // pace must rest), and a thread told that the rest begins cancels the repair, which must end that rest
            // and the repair (nothing changed on disk).
            using var cts = new CancellationTokenSource();
            using var resting = new ManualResetEventSlim();
            bool rested = false;
            var hooks = new OnlineRepairTestHooks
            {
                AfterBatch = _ =>
                {
                    var spin = System.Diagnostics.Stopwatch.StartNew();
                    while (spin.Elapsed < TimeSpan.FromMilliseconds(3)) { }
                },
                BeforeRest = () => { rested = true; resting.Set(); },
            };
            var canceller = new Thread(() => { resting.Wait(); cts.Cancel(); });
            canceller.Start();
            var clock = System.Diagnostics.Stopwatch.StartNew();
            try
            {
                Assert.ThrowsAny<OperationCanceledException>(() => OnlineRmapRepair.Run(fs.Engine, agno, new OnlineRmapRepairOptions { CpuShare = 1e-6, TestHooks = hooks }, null, cts.Token));
            }
            finally
            {
                resting.Set();
                canceller.Join();
            }
            Assert.True(rested, "the repair never rested");
            Assert.True(clock.Elapsed < TimeSpan.FromSeconds(60), $"the cancelled repair took {clock.Elapsed}");
            AssertOracle(fs, image, agno, "after a cancelled paced repair");
        }
    }
}
