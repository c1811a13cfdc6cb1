using Xfbtree.Xfs.Format;
using Xfbtree.Cli.Stress;
using Xfbtree.Xfs.Online;
using Xfbtree.Xfs.Tests.Repair;
using Xfbtree.Xfs.Tests.Trees;
using Xfbtree.Xfs.Tests.Write;
using Xfbtree.Xfs.Write;
using Xfbtree.Xfs.Write.Engine;
using Xunit.Abstractions;

namespace Xfbtree.Xfs.Tests.Online;

/// <summary>
/// Online rmap repair, one deterministic interleaving per test, driven through the repair's test hooks (they run on
/// the repair's thread with no lock held, so the "writer" runs right there): each test checks how the hook decided
/// (applied / ignored) and that the new tree equals the offline scan of the image afterwards.
/// </summary>
public sealed class OnlineRmapInterleavingTests(ITestOutputHelper output) : IDisposable
{
    private const int Chunk = 64 << 10;
    private readonly RepairScratch scratch = new();

    public void Dispose() => scratch.Dispose();

    /// <summary>A fresh copy of fresh-4ag with one probe file written: (fs, image, probe ino, AG of its data).</summary>
    private (XfsFileSystem Fs, string Image, ulong Probe, uint Agno) Setup(string fixture = "fresh-4ag")
    {
        string image = scratch.CopyFixture(fixture);
        var fs = XfsFileSystem.Open(image, OnlineTestSupport.Fast);
        ulong probe = fs.Create("/probe");
        fs.Write("/probe", 0, OnlineTestSupport.Pattern(Chunk, 1));
        uint agno = OnlineTestSupport.FirstDataAg(fs.Engine, probe) ?? throw new InvalidOperationException("the probe has no extent");
        return (fs, image, probe, agno);
    }

    private OnlineRmapRepairResult Repair(XfsFileSystem fs, uint agno, OnlineRepairTestHooks hooks, uint? startAg = null, TimeSpan? busy = null, CancellationToken cancel = default)
    {
        var options = new OnlineRmapRepairOptions { TestHooks = hooks, ScanStartAg = startAg, InodeBusyTimeout = busy ?? TimeSpan.FromSeconds(30) };
        OnlineRmapRepairResult result = OnlineRmapRepair.Run(fs.Engine, agno, options, null, cancel);
        output.WriteLine($"AG {agno}: {result}");
        return result;
    }

    private void AssertOracle(XfsFileSystem fs, string image, uint agno, string when)
    {
        OnlineTestSupport.AssertClean(OnlineTestSupport.OfflineCheck(fs.Engine, image, agno, scratch.Directory), when);
        WriteEngineInvariants(fs, when);
    }

    private static void WriteEngineInvariants(XfsFileSystem fs, string when)
    {
        List<string> problems = Xfbtree.Xfs.Write.Space.WriteInvariants.Check(fs.Engine);
        Assert.True(problems.Count == 0, $"{when}: {string.Join("; ", problems.Take(10))}");
    }

    private static void AssertContent(XfsFileSystem fs, string path, byte[] expected)
    {
        var got = new byte[expected.Length + 10];
        int n = fs.Read(path, 0, got);
        Assert.Equal(expected.Length, n);
        Assert.True(got.AsSpan(0, n).SequenceEqual(expected), $"{path}: content differs");
    }

    [Fact]
    public void OnlineChangeToInodeNotYetScannedIsIgnoredByHookAndSeenByScan()
    {
        var (fs, image, probe, agno) = Setup();
        using (fs)
        {
            var log = new DecisionLog();
            uint inoAg = fs.Engine.Geometry.InoToAgno(probe);
            bool scannedAfter = false, changed = false;
            var hooks = new OnlineRepairTestHooks
            {
                AfterSetup = () =>
                {
                    fs.Write("/probe", Chunk, OnlineTestSupport.Pattern(Chunk, 2));
                    changed = true;
                },
                AfterInode = ino => scannedAfter |= ino == probe && changed,
                AfterLiveUpdate = log.Add,
            };
            Repair(fs, agno, hooks, startAg: (inoAg + 1) % fs.Engine.Geometry.AgCount);
            Assert.True(log.AnyIgnored(probe), $"no ignored update for the probe: {log}");
            Assert.False(log.AnyApplied(probe), $"an update of an unscanned inode was applied: {log}");
            Assert.True(scannedAfter, "the scan did not visit the probe after its change");
            AssertOracle(fs, image, agno, "after repair");
            AssertContent(fs, "/probe", [.. OnlineTestSupport.Pattern(Chunk, 1), .. OnlineTestSupport.Pattern(Chunk, 2)]);
        }
    }

    [Fact]
    public void OnlineChangeToInodeAlreadyScannedIsApplied()
    {
        var (fs, image, probe, agno) = Setup();
        using (fs)
        {
            var log = new DecisionLog();
            var hooks = new OnlineRepairTestHooks
            {
                AfterInode = ino =>
                {
                    if (ino == probe)
                    {
                        fs.Write("/probe", Chunk, OnlineTestSupport.Pattern(Chunk, 3));
                        fs.PunchHole("/probe", 4096, 8192);
                    }
                },
                AfterLiveUpdate = log.Add,
            };
            Repair(fs, agno, hooks);
            Assert.True(log.AnyApplied(probe), $"no applied update for the scanned probe: {log}");
            Assert.False(log.AnyIgnored(probe), $"an update of a scanned inode was ignored: {log}");
            AssertOracle(fs, image, agno, "after repair");
        }
    }

    [Fact]
    public void OnlineInodeCreatedBehindTheCursorGetsEveryUpdate()
    {
        var (fs, image, probe, agno) = Setup();
        using (fs)
        {
            var log = new DecisionLog();
            uint inoAg = fs.Engine.Geometry.InoToAgno(probe);
            ulong created = 0;
            var hooks = new OnlineRepairTestHooks
            {
                AfterAgScanned = ag =>
                {
                    if (ag == inoAg && created == 0)
                    {
                        created = fs.Create("/behind");
                        fs.Write("/behind", 0, OnlineTestSupport.Pattern(Chunk, 4));
                    }
                },
                AfterLiveUpdate = log.Add,
            };
            Repair(fs, agno, hooks, startAg: inoAg);
            Assert.NotEqual(0UL, created);
            Assert.Equal(inoAg, fs.Engine.Geometry.InoToAgno(created));
            Assert.True(log.AnyApplied(created), $"no applied update for the inode created behind the cursor: {log}");
            Assert.False(log.AnyIgnored(created), $"an update of an inode behind the cursor was ignored: {log}");
            AssertOracle(fs, image, agno, "after repair");
        }
    }

    [Fact]
    public void OnlineInodeCreatedAheadOfTheCursorIsScannedNotReplayed()
    {
        var (fs, image, probe, agno) = Setup();
        using (fs)
        {
            var log = new DecisionLog();
            uint inoAg = fs.Engine.Geometry.InoToAgno(probe);
            ulong created = 0;
            bool visited = false;
            var hooks = new OnlineRepairTestHooks
            {
                AfterSetup = () =>
                {
                    created = fs.Create("/ahead");
                    fs.Write("/ahead", 0, OnlineTestSupport.Pattern(Chunk, 5));
                },
                AfterInode = ino => visited |= ino == created,
                AfterLiveUpdate = log.Add,
            };
            Repair(fs, agno, hooks, startAg: (inoAg + 1) % fs.Engine.Geometry.AgCount);
            Assert.Equal(inoAg, fs.Engine.Geometry.InoToAgno(created));
            Assert.True(log.AnyIgnored(created), $"no ignored update for the inode ahead of the cursor: {log}");
            Assert.False(log.AnyApplied(created), $"an update of an inode ahead of the cursor was applied: {log}");
            Assert.True(visited, "the scan did not visit the inode created ahead of it");
            AssertOracle(fs, image, agno, "after repair");
        }
    }

    [Fact]
    public void OnlineInodeFreedDuringTheScanLeavesNoRecords()
    {
        var (fs, image, probe, agno) = Setup();
        using (fs)
        {
            var log = new DecisionLog();
            ulong victim = fs.Create("/victim");
            fs.Write("/victim", 0, OnlineTestSupport.Pattern(Chunk, 6));
            Assert.Equal(agno, OnlineTestSupport.FirstDataAg(fs.Engine, victim));
            bool freed = false;
            var hooks = new OnlineRepairTestHooks
            {
                BeforeInode = ino =>
                {
                    if (ino == victim && !freed)
                    {
                        fs.Unlink("/victim");
                        freed = true;
                    }
                },
                AfterLiveUpdate = log.Add,
            };
            Repair(fs, agno, hooks);
            Assert.True(freed, "the scan never reached the victim");
            Assert.True(log.AnyIgnored(victim), $"the victim's unmaps did not reach the hook: {log}");
            Assert.False(log.AnyApplied(victim), $"an unmap of an unvisited inode was applied: {log}");
            AssertOracle(fs, image, agno, "after repair");
        }
    }

    [Fact]
    public void OnlineFreeInodesOfABatchAreSkippedAndGetEveryUpdate()
    {
        var (fs, image, probe, agno) = Setup();
        using (fs)
        {
            var log = new DecisionLog();
            ulong created = 0;
            IReadOnlyList<ulong>? probeBatch = null;
            var hooks = new OnlineRepairTestHooks
            {
                AfterBatch = batch =>
                {
                    if (created == 0 && batch.Contains(probe))
                    {
                        probeBatch = batch;
                        created = fs.Create("/skipped");
                        fs.Write("/skipped", 0, OnlineTestSupport.Pattern(Chunk, 7));
                    }
                },
                AfterLiveUpdate = log.Add,
            };
            Repair(fs, agno, hooks);
            Assert.NotNull(probeBatch);
            Assert.DoesNotContain(created, probeBatch!);
            // The new inode took a free slot of the batch's chunk (between the batch's allocated inodes or after them).
            Assert.Equal(probe >> 6, created >> 6);
            Assert.True(log.AnyApplied(created), $"no applied update for the inode in a skipped slot: {log}");
            Assert.False(log.AnyIgnored(created), $"an update of a skipped slot was ignored: {log}");
            AssertOracle(fs, image, agno, "after repair");
        }
    }

    [Fact]
    public void OnlineNonInodeOwnerChangedMidScanIsApplied()
    {
        var (fs, image, probe, agno) = Setup();
        using (fs)
        {
            var log = new DecisionLog();
            var hooks = new OnlineRepairTestHooks
            {
                AfterInode = ino =>
                {
                    if (ino == probe)
                    {
                        // 130 files: at least one new inode chunk (OWN_INODES) and inobt/finobt records.
                        fs.Mkdir("/many");
                        for (int i = 0; i < 130; i++)
                        {
                            fs.Create($"/many/f{i}");
                        }
                    }
                },
                AfterLiveUpdate = log.Add,
            };
            Repair(fs, agno, hooks);
            Assert.True(log.AnyApplied(RmapOwner.Inodes), $"no OWN_INODES update applied: {log}");
            Assert.False(log.AnyIgnored(RmapOwner.Inodes), $"an OWN_INODES update was ignored: {log}");
            AssertOracle(fs, image, agno, "after repair");
        }
    }

    [Fact]
    public void OnlineRefcountbtGrowingMidScanIsApplied()
    {
        var (fs, image, probe, agno) = Setup();
        using (fs)
        {
            int blockSize = fs.Engine.Geometry.BlockSize;
            // More single-block shared extents than one refcountbt leaf holds ((bs - 56) / 12 records): the tree
            // splits, its new block is an OWN_REFC map in the probe's AG, made after setup stashed the old tree.
            int shared = (blockSize - 56) / 12 + 8;
            var log = new DecisionLog();
            var hooks = new OnlineRepairTestHooks
            {
                AfterInode = ino =>
                {
                    if (ino == probe)
                    {
                        fs.Write("/probe", Chunk, OnlineTestSupport.Pattern(2 * shared * blockSize, 5));
                        fs.Create("/shared");
                        for (int i = 0; i < shared; i++)
                        {
                            fs.Reflink("/probe", Chunk + (2L * i * blockSize), "/shared", (long)i * blockSize, blockSize);
                        }
                    }
                },
                AfterLiveUpdate = log.Add,
            };
            Repair(fs, agno, hooks);
            Assert.True(log.AnyApplied(RmapOwner.Refc), $"no OWN_REFC update applied: {log}");
            Assert.False(log.AnyIgnored(RmapOwner.Refc), $"an OWN_REFC update was ignored: {log}");
            AssertOracle(fs, image, agno, "after repair");
        }
    }

    [Fact]
    public void OnlineOwnAgChangeIsIgnored()
    {
        var (fs, image, probe, agno) = Setup();
        using (fs)
        {
            var log = new DecisionLog();
            var hooks = new OnlineRepairTestHooks
            {
                AfterSetup = () =>
                {
                    // Fragment free space: many small extents punched back make the free-space btrees move blocks
                    // through the AGFL (OWN_AG map/unmap).
                    fs.Write("/probe", Chunk, OnlineTestSupport.Pattern(4 << 20, 8));
                    for (long off = Chunk; off < Chunk + (4 << 20); off += 8192)
                    {
                        fs.PunchHole("/probe", off, 4096);
                    }
                },
                AfterLiveUpdate = log.Add,
            };
            Repair(fs, agno, hooks, startAg: (fs.Engine.Geometry.InoToAgno(probe) + 1) % fs.Engine.Geometry.AgCount);
            Assert.True(log.AnyIgnored(RmapOwner.Ag), $"no OWN_AG update reached the hook: {log}");
            Assert.False(log.AnyApplied(RmapOwner.Ag), $"an OWN_AG update was applied: {log}");
            AssertOracle(fs, image, agno, "after repair");
        }
    }

    [Fact]
    public void OnlineHookFailureAbortsTheScanAndWritesNothing()
    {
        var (fs, image, probe, agno) = Setup();
        using (fs)
        {
            var before = OnlineTestSupport.RmapRoot(fs.Engine, agno);
            var hooks = new OnlineRepairTestHooks
            {
                AfterInode = ino =>
                {
                    if (ino == probe)
                    {
                        fs.Write("/probe", Chunk, OnlineTestSupport.Pattern(Chunk, 9));
                    }
                },
                BeforeLiveUpdate = _ => throw new InvalidOperationException("injected replay failure"),
            };
            var e = Assert.Throws<OnlineRepairException>(() => Repair(fs, agno, hooks));
            Assert.Contains("injected replay failure", e.Message, StringComparison.Ordinal);
            Assert.DoesNotContain("\n", e.Message, StringComparison.Ordinal);
            Assert.Equal(before, OnlineTestSupport.RmapRoot(fs.Engine, agno));
            // The writer was not failed: its data is there, and the old tree stays correct.
            AssertContent(fs, "/probe", [.. OnlineTestSupport.Pattern(Chunk, 1), .. OnlineTestSupport.Pattern(Chunk, 9)]);
            AssertOracle(fs, image, agno, "after the failed repair");
            Assert.False(fs.Engine.Ag(agno).HasHooks, "the hook stayed registered");
        }
    }

    [Fact]
    public void OnlineScanWrapsPastTheLastAg()
    {
        var (fs, image, probe, agno) = Setup();
        using (fs)
        {
            uint count = fs.Engine.Geometry.AgCount;
            var order = new List<uint>();
            var hooks = new OnlineRepairTestHooks { AfterAgScanned = order.Add };
            Repair(fs, agno, hooks, startAg: count - 1);
            var expected = new List<uint> { count - 1 };
            for (uint a = 0; a < count - 1; a++)
            {
                expected.Add(a);
            }
            Assert.Equal(expected, order);
            AssertOracle(fs, image, agno, "after repair");
        }
    }

    [Fact]
    public void OnlineBusyInodeEndsTheScanWithAClearError()
    {
        var (fs, image, probe, agno) = Setup();
        using (fs)
        {
            var before = OnlineTestSupport.RmapRoot(fs.Engine, agno);
            IDisposable? held = null;
            var hooks = new OnlineRepairTestHooks
            {
                BeforeInode = ino =>
                {
                    if (ino == probe)
                    {
                        held = fs.Engine.LockInodeForRead(fs.Engine.GetInode(ino));
                    }
                },
            };
            try
            {
                var e = Assert.Throws<OnlineRepairException>(() => Repair(fs, agno, hooks, busy: TimeSpan.FromMilliseconds(300)));
                Assert.Contains($"inode {probe} stayed busy", e.Message, StringComparison.Ordinal);
            }
            finally
            {
                held?.Dispose();
            }
            Assert.NotNull(held);
            Assert.Equal(before, OnlineTestSupport.RmapRoot(fs.Engine, agno));
            Assert.False(fs.Engine.Ag(agno).HasHooks, "the hook stayed registered");
            AssertOracle(fs, image, agno, "after the failed repair");
        }
    }

    [Fact]
    public void OnlineCancellationChangesNothing()
    {
        var (fs, image, probe, agno) = Setup();
        using (fs)
        {
            var before = OnlineTestSupport.RmapRoot(fs.Engine, agno);
            using var cts = new CancellationTokenSource();
            var hooks = new OnlineRepairTestHooks { AfterInode = _ => cts.Cancel() };
            Assert.ThrowsAny<OperationCanceledException>(() => Repair(fs, agno, hooks, cancel: cts.Token));
            Assert.Equal(before, OnlineTestSupport.RmapRoot(fs.Engine, agno));
            AssertOracle(fs, image, agno, "after cancellation");
        }
    }

    [Theory]
    [InlineData("aged-small")]
    [InlineData("geom-bs1k")]
    public void OnlineRepairOfEveryAgWithoutWritersMatchesTheOfflineScan(string fixture)
    {
        string image = scratch.CopyFixture(fixture);
        using var fs = XfsFileSystem.Open(image, OnlineTestSupport.Fast);
        for (uint agno = 0; agno < fs.Engine.Geometry.AgCount; agno++)
        {
            OnlineTestSupport.AssertClean(OnlineTestSupport.OfflineCheck(fs.Engine, image, agno, scratch.Directory), $"AG {agno} before");
            OnlineRmapRepairResult result = Repair(fs, agno, new OnlineRepairTestHooks());
            Assert.True(result.Records > 0 && result.NewTreeBlocks > 0 && result.OldBlocksReaped > 0, result.ToString());
            AssertOracle(fs, image, agno, $"AG {agno}");
        }
        fs.Close();
        WriteEngineTestSupport.AssertOraclesClean(image, "after close");
    }

    /// <summary>64 KiB blocks hold 128 inodes, so two inode chunks (two inobt records) share one block: setup must
    /// stash that block as OWN_INODES once (it mapped it twice and every repair of AG 0 failed). Image made here by
    /// mkfs.xfs; files are created first so the engine allocates a second chunk into a shared block too.</summary>
    [Fact]
    public void OnlineRepairOnSixtyFourKilobyteBlocksStashesSharedChunkBlocksOnce()
    {
        string image = Path.Combine(scratch.Directory, "bs64k.img");
        TreeFixtures.Run("/usr/bin/truncate", ["-s", "1G", image]);
        TreeFixtures.Run(TreeFixtures.Tool("mkfs.xfs"), ["-q", "-f", "-b", "size=65536", "-m", "crc=1,rmapbt=1,reflink=1,finobt=1", image]);
        using var fs = XfsFileSystem.Open(image, OnlineTestSupport.Fast);
        fs.Mkdir("/d");
        long creates = (long)fs.Engine.Image.Superblock.FreeInodes + 3;
        for (int i = 0; i < creates; i++)
        {
            fs.Create($"/d/f{i}");
        }
        fs.Write("/d/f0", 0, OnlineTestSupport.Pattern(Chunk, 3));
        for (uint agno = 0; agno < fs.Engine.Geometry.AgCount; agno++)
        {
            OnlineRmapRepairResult result = Repair(fs, agno, new OnlineRepairTestHooks());
            Assert.True(result.Records > 0 && result.NewTreeBlocks > 0, result.ToString());
            AssertOracle(fs, image, agno, $"AG {agno}");
        }
        fs.Close();
        WriteEngineTestSupport.AssertOraclesClean(image, "after close");
    }
}
