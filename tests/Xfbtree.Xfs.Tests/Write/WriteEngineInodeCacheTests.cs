using System.Globalization;
using Xfbtree.Xfs.Format;
using Xfbtree.Xfs.Tests.Repair;
using Xfbtree.Xfs.Tests.Trees;
using Xfbtree.Xfs.Write;
using Xfbtree.Xfs.Write.Engine;
using Xunit.Abstractions;

namespace Xfbtree.Xfs.Tests.Write;

/// <summary>
/// Measures the process's managed heap after a collection, so no other test may allocate meanwhile: tests running in
/// parallel made the heap look 4.9 MB larger in one run.
/// </summary>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class ManagedHeapMeasurementCollection
{
    public const string Name = "Managed heap measurement";
}

/// <summary>
/// The in-core inode cache is bounded: touching 100,000 inodes keeps at most its capacity strongly and the managed
/// heap flat, an inode anyone still references stays the one object every lookup returns (two copies of one inode
/// would mean two locks), and an inode let go comes back from its cluster buffer with every committed change.
/// </summary>
[Collection(ManagedHeapMeasurementCollection.Name)]
public sealed class WriteEngineInodeCacheTests(ITestOutputHelper output)
{
    const int Capacity = 512;

    [Fact]
    public void TouchingAHundredThousandInodesKeepsTheCacheAndTheHeapBounded()
    {
        KernelOracle.RequireRootAndTools();
        using var scratch = new RepairScratch();
        string image = Path.Combine(scratch.Directory, "many.img");
        RepairTools.MkfsSmall(image, 256L << 20, ["-m", "rmapbt=1,reflink=1"]);
        string mnt = Directory.CreateDirectory(Path.Combine(scratch.Directory, "mnt")).FullName;
        string script = Path.Combine(scratch.Directory, "many.py");
        File.WriteAllText(script, """
import os, sys
mnt = sys.argv[1]
for d in range(100):
    os.mkdir('%s/%d' % (mnt, d))
    for f in range(1000):
        os.close(os.open('%s/%d/%d' % (mnt, d, f), os.O_CREAT | os.O_WRONLY, 0o644))
""");
        TreeFixtures.Run("/bin/mount", ["-o", "loop,nouuid", image, mnt]);
        try
        {
            TreeFixtures.Run("/usr/bin/python3", [script, mnt]);
        }
        finally
        {
            TreeFixtures.Run("/bin/umount", [mnt]);
        }

        var inodes = AllocatedInodes(image);
        Assert.True(inodes.Count >= 100_000, $"the image holds {inodes.Count} inodes, fewer than the test touches");
        using var engine = WriteEngine.Open(image, WriteEngineTestSupport.Fast with { InodeCacheCapacity = Capacity });
        long baseline = 0, largestGrowth = 0;
        int touched = 0;
        foreach (ulong ino in inodes)
        {
            IncoreInode inode = engine.GetInode(ino);
            using (engine.LockInodeForRead(inode))
            {
                Assert.Equal(ino, new Dinode(inode.Core).Ino);
            }
            touched++;
            if (touched % 20_000 == 0)
            {
                long heap = SettledHeap(engine);
                Assert.True(engine.InodeCache.StronglyHeld <= Capacity, $"{engine.InodeCache.StronglyHeld} inodes held strongly, capacity {Capacity}");
                Assert.True(engine.InodeCache.TableCount <= Capacity + 64, $"{engine.InodeCache.TableCount} inodes in the table after a collection, capacity {Capacity}");
                if (baseline == 0)
                {
                    baseline = heap;
                }
                largestGrowth = Math.Max(largestGrowth, heap - baseline);
                output.WriteLine(string.Create(CultureInfo.InvariantCulture, $"{touched} inodes touched: heap {heap >> 10} KiB, table {engine.InodeCache.TableCount}, strong {engine.InodeCache.StronglyHeld}"));
            }
        }
        Assert.True(touched >= 100_000);
        // 80,000 more inodes kept would be 80,000 x (512-byte core + object) > 40 MiB.
        Assert.True(largestGrowth < 4L << 20, $"the heap grew by {largestGrowth >> 10} KiB between 20,000 and {touched} inodes touched");
        engine.Close();
    }

    [Fact]
    public void AReferencedInodeStaysOneObjectAndAnEvictedOneComesBackWithItsChanges()
    {
        using var scratch = new RepairScratch();
        string image = scratch.Copy(TreeFixtures.Image("fresh-4ag"), "cache.img");
        using var fs = XfsFileSystem.Open(image, WriteEngineTestSupport.Fast with { InodeCacheCapacity = 8 });
        ulong kept = fs.Create("/kept");
        ulong dropped = fs.Create("/dropped");
        for (int i = 0; i < 64; i++)
        {
            fs.Create($"/f{i}");
        }
        IncoreInode held = fs.Engine.GetInode(kept);
        fs.Namespace.Chmod("/dropped", Convert.ToInt32("600", 8));
        fs.Namespace.Chmod("/kept", Convert.ToInt32("640", 8));
        WeakReference<IncoreInode> weak = DroppedInodeReference(fs.Engine, dropped);
        // What only the table held is collected; then many other inodes pass through the clock (loaded again):
        // the held one stays the object every lookup returns, the other is let go.
        SettledHeap(fs.Engine);
        for (int i = 0; i < 64; i++)
        {
            fs.GetAttr($"/f{i}");
        }
        SettledHeap(fs.Engine);
        Assert.Same(held, fs.Engine.GetInode(kept));
        Assert.Equal(Convert.ToInt32("640", 8), new Dinode(held.Core).Mode & 0xFFF);
        Assert.False(weak.TryGetTarget(out _), "an inode nobody references was not let go");
        IncoreInode reloaded = fs.Engine.GetInode(dropped);
        using (fs.Engine.LockInodeForRead(reloaded))
        {
            Assert.Equal(Convert.ToInt32("600", 8), new Dinode(reloaded.Core).Mode & 0xFFF);
        }
        fs.Close();
        WriteEngineTestSupport.AssertOraclesClean(image, "after the cache let inodes go");
    }

    [Fact]
    public void AnOnlineScanOfEveryInodeLeavesTheClockAsTheWritersLeftIt()
    {
        // The link count check visits every inode (twice) through the engine without a place on the clock: the
        // inodes writers used stay the ones held, and the scan's own are let go once nobody references them.
        using var scratch = new RepairScratch();
        string image = scratch.Copy(TreeFixtures.Image("aged-small"), "scan.img");
        using var fs = XfsFileSystem.Open(image, WriteEngineTestSupport.Fast with { InodeCacheCapacity = 8 });
        ulong file = fs.Create("/used-by-a-writer");
        IncoreInode held = fs.Engine.GetInode(file);
        int strongBefore = fs.Engine.InodeCache.StronglyHeld;
        Assert.True(strongBefore < fs.Engine.InodeCache.Capacity, $"{strongBefore} inodes on the clock before the scan: the test needs a free slot");
        var result = Xfbtree.Xfs.Online.OnlineLinkCounts.Run(fs, new Xfbtree.Xfs.Online.OnlineLinkCountOptions());
        output.WriteLine($"{result.InodesScanned} inodes scanned, {result.InodesCompared} compared; table {fs.Engine.InodeCache.TableCount}, strong {fs.Engine.InodeCache.StronglyHeld} (before: {strongBefore})");
        Assert.True(result.InodesScanned > 1000, $"the scan visited {result.InodesScanned} inodes");
        Assert.Equal(0, result.MismatchTotal);
        SettledHeap(fs.Engine);
        Assert.Equal(strongBefore, fs.Engine.InodeCache.StronglyHeld);
        Assert.True(fs.Engine.InodeCache.TableCount <= fs.Engine.InodeCache.Capacity + 64, $"{fs.Engine.InodeCache.TableCount} table entries after the scan");
        Assert.Same(held, fs.Engine.GetInode(file));
        fs.Close();
        WriteEngineTestSupport.AssertOraclesClean(image, "after an online scan");
    }

    [Fact]
    public void AThreadWaitingWithADeadlineIsCountedAndWokenByTheRelease()
    {
        // Exit pulses only when someone waits, so a timed waiter must count as one: it gets the lock at the release,
        // long before its deadline.
        var gate = new GateLock();
        gate.Enter();
        bool? got = null;
        var waiter = new Thread(() => got = gate.TryEnter(TimeSpan.FromMinutes(5)));
        waiter.Start();
        Assert.True(SpinWait.SpinUntil(() => gate.Waiters == 1, TimeSpan.FromSeconds(60)), "the timed waiter is not counted");
        gate.Exit();
        Assert.True(waiter.Join(TimeSpan.FromSeconds(60)), "the timed waiter was not woken by the release");
        Assert.True(got);
        Assert.True(gate.IsHeld);
        Assert.Equal(0, gate.Waiters);
        gate.Exit();
    }

    /// <summary>A weak reference to the in-core inode, made in a frame of its own so no local keeps it alive.</summary>
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.NoInlining)]
    static WeakReference<IncoreInode> DroppedInodeReference(WriteEngine engine, ulong ino) => new(engine.GetInode(ino));

    /// <summary>Managed heap after full collections and a sweep of the collected table entries.</summary>
    static long SettledHeap(WriteEngine engine)
    {
        for (int i = 0; i < 3; i++)
        {
            GC.Collect();
            GC.WaitForPendingFinalizers();
        }
        engine.InodeCache.SweepCollected();
        return GC.GetTotalMemory(forceFullCollection: true);
    }

    /// <summary>Every inode number of every inobt record (holes excepted), all AGs.</summary>
    static List<ulong> AllocatedInodes(string image)
    {
        using var img = XfsImage.Open(image);
        var list = new List<ulong>();
        for (uint agno = 0; agno < img.Geometry.AgCount; agno++)
        {
            var inobt = img.OpenInobt(img.ReadAgi(agno), AgiTree.Inobt);
            using var cur = inobt.CreateCursor();
            for (bool ok = cur.MoveFirst(); ok && cur.HasRecord; ok = cur.Increment())
            {
                var rec = InobtRecord.Read(cur.Current, img.Superblock.HasSparseInodes);
                for (int i = 0; i < InobtRecord.InodesPerChunk; i++)
                {
                    if (!rec.IsHole(i))
                    {
                        list.Add(img.Geometry.AginoToIno(agno, rec.StartIno + (uint)i));
                    }
                }
            }
        }
        return list;
    }
}
