using Xfbtree.Btree;
using Xfbtree.Buffers;
using Xfbtree.Xfs.Format;
using Xfbtree.Xfs.Online;
using Xfbtree.Xfs.Tests.Repair;
using Xfbtree.Xfs.Tests.Trees;
using Xfbtree.Xfs.Tests.Write;
using Xfbtree.Xfs.Trees;
using Xfbtree.Xfs.Write;
using Xfbtree.Xfs.Write.Engine;
using Xunit.Abstractions;

namespace Xfbtree.Xfs.Tests.Online;

/// <summary>
/// The blocks an online repair reaps (the old rmapbt) leave no buffer behind: a later allocation of those blocks
/// (an inode chunk on 64 KiB blocks lands exactly there) must not find a buffer that still says "rmapbt" and have
/// its new contents rejected by the old type's write verifier ("corrupt rmapbt ... bad magic 0x494e", the AG marked
/// sick under healthy writers).
/// </summary>
public sealed class OnlineRmapReapTests(ITestOutputHelper output) : IDisposable
{
    private readonly RepairScratch scratch = new();

    public void Dispose() => scratch.Dispose();

    private string SixtyFourKilobyteImage()
    {
        string image = Path.Combine(scratch.Directory, "bs64k.img");
        TreeFixtures.Run("/usr/bin/truncate", ["-s", "1G", image]);
        TreeFixtures.Run(TreeFixtures.Tool("mkfs.xfs"), ["-q", "-f", "-b", "size=65536", "-m", "crc=1,rmapbt=1,reflink=1,finobt=1", image]);
        return image;
    }

    /// <summary>A populated 600 MiB image with 64 KiB blocks (mkfs.xfs -p: 8 directories of 60 files of up to 96 KiB).</summary>
    private string PopulatedSixtyFourKilobyteImage()
    {
        string dir = scratch.Directory;
        var proto = new List<string> { "/dev/null", "0 0", "d--755 0 0" };
        var random = new Random(715561);
        for (int d = 0; d < 8; d++)
        {
            proto.Add($" d{d} d--755 0 0");
            for (int f = 0; f < 60; f++)
            {
                string source = Path.Combine(dir, $"src-{d}-{f}");
                var bytes = new byte[random.Next(1, 96 << 10)];
                random.NextBytes(bytes);
                File.WriteAllBytes(source, bytes);
                proto.Add($"  f{f} ---644 0 0 {source}");
            }
            proto.Add(" $");
        }
        proto.Add("$");
        File.WriteAllLines(Path.Combine(dir, "proto"), proto);
        string image = Path.Combine(dir, "bs64k-populated.img");
        TreeFixtures.Run("/usr/bin/truncate", ["-s", "600M", image]);
        TreeFixtures.Run(TreeFixtures.Tool("mkfs.xfs"), ["-q", "-f", "-b", "size=65536", "-m", "crc=1,rmapbt=1,reflink=1,finobt=1", "-p", Path.Combine(dir, "proto"), image]);
        return image;
    }

    /// <summary>The run that showed it (`stress --ops 500 --threads 2 --seed 715561 --online-repair
    /// --verify-repairs` on a populated 64 KiB-block image ended "create ... Corrupt 1" and exit 0): now clean,
    /// and a Corrupt outcome or a sick AG would fail it (exit 1, "health: FAILED").</summary>
    [Fact]
    public void StressWithOnlineRepairsOnSixtyFourKilobyteBlocksNeverSeesCorruption()
    {
        string image = PopulatedSixtyFourKilobyteImage();
        var (rc, stdout, stderr) = WriteStressFixtureTests.StressInProcess(new Xfbtree.Cli.StressRequest
        {
            Image = image, Ops = 500, Threads = 2, Seed = 715561, Sync = false, OnlineRepair = true, VerifyRepairs = true,
        });
        output.WriteLine(stdout + stderr);
        Assert.True(rc == 0, $"stress exit {rc}\n{stdout}\n{stderr}");
        Assert.Contains("health: healthy at the start; 0 Corrupt outcomes; no AG sick at the end", stdout, StringComparison.Ordinal);
        Assert.Matches(@"online-repair repairs=[1-9]\d* applied=\d+ ignored=\d+ mismatches=0 skipped=0", stdout);
        WriteEngineTestSupport.AssertOraclesClean(image, "after the stress run");
    }

    /// <summary>Every block of AG <paramref name="agno"/>'s current rmapbt (read through the engine's cache, so
    /// each has a cached buffer afterwards, as the writers' rmap edits leave them).</summary>
    private static List<uint> RmapbtBlocks(WriteEngine engine, uint agno)
    {
        Agf agf = engine.Image.ReadAgf(agno);
        var visitor = new BlockCollector { Blocks = new List<uint>() };
        using BtreeCursor<RmapbtOps> cur = engine.Image.OpenRmapbt(agf).CreateCursor();
        cur.VisitBlocks(ref visitor);
        return visitor.Blocks;
    }

    private struct BlockCollector : IBtreeBlockVisitor
    {
        public List<uint> Blocks;

        public readonly void Visit(int level, long pointer, ReadOnlySpan<byte> block) => Blocks.Add((uint)pointer);
    }

    /// <summary>Blocks of the list that still have a buffer in the engine's cache.</summary>
    private static List<uint> Cached(WriteEngine engine, uint agno, IEnumerable<uint> blocks)
    {
        XfsGeometry geo = engine.Geometry;
        var cached = new List<uint>();
        foreach (uint b in blocks)
        {
            if (engine.Image.Cache.TryGetCached(engine.Disk, geo.AgBlockToDaddr(agno, b), geo.BasicBlocksPerBlock) is { } buffer)
            {
                cached.Add(b);
                engine.Image.Cache.Release(buffer);
            }
        }
        return cached;
    }

    [Fact]
    public void OnlineRepairLeavesNoBufferOfTheReapedOldTree()
    {
        string image = scratch.CopyFixture("aged-small");
        using var fs = XfsFileSystem.Open(image, OnlineTestSupport.Fast);
        const uint agno = 1;
        List<uint> old = RmapbtBlocks(fs.Engine, agno);
        Assert.True(old.Count > 1, $"AG {agno}'s rmapbt has {old.Count} blocks: the test wants a tree of several");
        Assert.Equal(old.Count, Cached(fs.Engine, agno, old).Count);
        OnlineRmapRepairResult result = OnlineRmapRepair.Run(fs.Engine, agno);
        output.WriteLine(result.ToString());
        Assert.True(result.OldBlocksReaped >= old.Count, result.ToString());
        List<uint> left = Cached(fs.Engine, agno, old);
        Assert.True(left.Count == 0, $"{left.Count} of {old.Count} reaped rmapbt blocks still have a buffer: {string.Join(", ", left.Take(10))}");
        OnlineTestSupport.AssertClean(OnlineTestSupport.OfflineCheck(fs.Engine, image, agno, scratch.Directory), "after the repair");
    }

    /// <summary>The end-to-end form on 64 KiB blocks: the first free block of AG 0 after the repair is the old
    /// rmapbt root, and the next inode chunk (one block there) is allocated on it; every create must succeed.</summary>
    [Fact]
    public void InodeChunkOnReapedRmapbtBlocksCommitsAfterOnlineRepair()
    {
        string image = SixtyFourKilobyteImage();
        using (var fs = XfsFileSystem.Open(image, OnlineTestSupport.Fast))
        {
            XfsGeometry geo = fs.Engine.Geometry;
            fs.Mkdir("/d");
            List<uint> old = RmapbtBlocks(fs.Engine, 0);
            OnlineRmapRepairResult result = OnlineRmapRepair.Run(fs.Engine, 0);
            output.WriteLine(result.ToString());
            Assert.True(result.OldBlocksReaped > 0, result.ToString());
            long creates = (long)fs.Engine.Image.Superblock.FreeInodes + 3;
            var chunkBlocks = new HashSet<uint>();
            for (int i = 0; i < creates; i++)
            {
                ulong ino = fs.Create($"/d/f{i}"); // before the fix: XfsWriteException(Corrupt) "corrupt rmapbt ... bad magic 0x494e..."
                if (geo.InoToAgno(ino) == 0)
                {
                    chunkBlocks.Add(geo.AginoToAgbno(geo.InoToAgino(ino)));
                }
            }
            Assert.True(chunkBlocks.Overlaps(old), $"no new inode chunk landed on the reaped blocks {string.Join(", ", old)} (chunks at {string.Join(", ", chunkBlocks)}): the test lost its point");
            Assert.Null(fs.Engine.Ag(0).SickReason);
            WriteEngineTestSupport.AssertInvariants(fs.Engine, "after the creates");
            fs.Close();
        }
        WriteEngineTestSupport.AssertOraclesClean(image, "after close");
    }
}
