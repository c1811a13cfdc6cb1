using System.Diagnostics;
using CsCheck;
using Xfbtree.Btree;
using Xfbtree.Buffers;
using Xfbtree.InMemory;
using Xfbtree.Storage;
using Xfbtree.Tests.Btree;
using Xunit.Abstractions;

namespace Xfbtree.Tests.InMemory;

/// <summary>
/// The xfbtree: the engine on page-sized long-form blocks inside xfile partitions. The model-based btree
/// property tests run here on the xfile target too; plus block reuse, page discard, partitions, commit/cancel.
/// </summary>
public sealed class XfbtreeTests(ITestOutputHelper output)
{
    static readonly bool Long = Environment.GetEnvironmentVariable("XFBTREE_LONG_TESTS") == "1";

    static Func<TOps, TestTree<TOps>> OnXfile<TOps>() where TOps : struct, IBtreeOps => ops =>
    {
        var xfile = Xfile.Create(new XfileOptions { MaxSize = 1L << 32, Name = "xfbtree-test" });
        var tree = new Xfbtree<TOps>(ops, xfile, owner: 3);
        return new TestTree<TOps>(tree.Tree, () => tree.BlockCount, () => { }, new Both(tree, xfile));
    };

    sealed class Both(IDisposable a, IDisposable b) : IDisposable
    {
        public void Dispose() { a.Dispose(); b.Dispose(); }
    }

    [Fact]
    public void XfbtreeBtreePropertiesHoldOnXfileTarget()
    {
        var sw = Stopwatch.StartNew();
        int maxU = 0, maxI = 0;
        var steps = BtreeStepsForXfile();
        steps.Sample(s => { maxU = Math.Max(maxU, BtreeModelPropertyTests.RunU64(s, 4096, 1, OnXfile<U64Ops>()).Size); },
            iter: Long ? 400 : 40, threads: 1, print: s => string.Join(" ", s.Select(x => x.ToString())));
        steps.Sample(s => { maxI = Math.Max(maxI, BtreeModelPropertyTests.RunInterval(s, 4096, 1, OnXfile<IntervalOps>()).Size); },
            iter: Long ? 400 : 40, threads: 1, print: s => string.Join(" ", s.Select(x => x.ToString())));
        output.WriteLine($"xfile target: {sw.Elapsed.TotalSeconds:F1}s, max records {maxU} (u64) / {maxI} (interval)");
    }

    static Gen<BtreeStep[]> BtreeStepsForXfile() => Gen.Frequency(
        (8, Gen.Select(Gen.UInt[0, 60000], Gen.UInt[1, 40], Gen.UInt[0, 3], (a, b, c) => new BtreeStep("insert", a, b, c))),
        (4, Gen.Select(Gen.UInt[0, 60000], Gen.UInt[0, 3], (a, c) => new BtreeStep("delete", a, 0, c))),
        (2, Gen.Select(Gen.UInt[0, 60000], Gen.Int[0, 2], (a, m) => new BtreeStep("lookup", a, (ulong)m, 0))),
        (2, Gen.Select(Gen.UInt[0, 60000], Gen.UInt[0, 60000], (a, b) => new BtreeStep("range", Math.Min(a, b), Math.Max(a, b), 0))),
        (1, Gen.Select(Gen.UInt[0, 60000], Gen.Int[1, 3000], Gen.UInt[1, 7], (a, n, s) => new BtreeStep("fill", a, (ulong)n, s))),
        (1, Gen.UInt[1, 4].Select(e => new BtreeStep("drain", e, 0, 0)))).Array[1, 80];

    [Fact]
    public void XfbtreeReusesFreedBlocksAndDiscardsTheirPages()
    {
        using var xfile = Xfile.Create(new XfileOptions { MaxSize = 1L << 30 });
        using var tree = new Xfbtree<U64Ops>(new U64Ops(true), xfile, owner: 9);
        Assert.Equal(4096, tree.Tree.Geometry.BlockSize);
        using var cur = tree.CreateCursor();
        for (ulong k = 0; k < 100000; k++) Assert.True(cur.Insert(U64Ops.Record(k, k)));
        tree.Commit();
        long peakBlocks = tree.BlockCount;
        long peakBytes = xfile.BytesUsed;
        Assert.True(tree.Tree.Root.Height >= 2);
        for (ulong k = 0; k < 100000; k++) { Assert.True(cur.Lookup(U64Ops.Key(k), BtreeLookup.Equal)); cur.Delete(); }
        tree.Commit();
        Assert.Equal(1, tree.BlockCount);
        Assert.True(xfile.BytesUsed < peakBytes / 4, $"pages of freed blocks were not discarded: {xfile.BytesUsed} of {peakBytes}");
        // Freed block numbers are reused: growing again does not extend the partition.
        for (ulong k = 0; k < 100000; k++) Assert.True(cur.Insert(U64Ops.Record(k, k)));
        Assert.True(tree.Store.LiveBlocks <= peakBlocks + 2);
        cur.Release();
        Assert.True(tree.Tree.Check().IsClean);
        output.WriteLine($"100k records: {peakBlocks} blocks, {peakBytes} bytes; after delete-all {tree.BlockCount} block");
    }

    [Fact]
    public void XfbtreeManyTreesSharePartitionsOfOneXfile()
    {
        using var xfile = Xfile.Create(new XfileOptions { MaxSize = 1L << 36 });
        var parts = new XfilePartitions(xfile);
        var trees = new List<Xfbtree<IntervalOps>>();
        for (int i = 0; i < 200; i++) trees.Add(new Xfbtree<IntervalOps>(new IntervalOps(true), xfile, owner: i, parts.Reserve(64L << 20), 64L << 20));
        for (int i = 0; i < trees.Count; i++)
        {
            using var cur = trees[i].CreateCursor();
            for (uint k = 0; k < 500; k++) Assert.True(cur.Insert(IntervalOps.Record(k * 3, 2, (ulong)i)));
        }
        for (int i = 0; i < trees.Count; i++)
        {
            var report = trees[i].Tree.Check();
            Assert.True(report.IsClean, report.ToString());
            Assert.Equal(500, report.Records);
            using var cur = trees[i].CreateCursor();
            Assert.True(cur.Lookup(IntervalOps.Key(3, (ulong)i), BtreeLookup.Equal));
        }
        foreach (var t in trees) t.Dispose();
        Assert.True(xfile.BytesUsed < 1 << 20);
    }

    [Fact]
    public void XfbtreePartitionFullIsAClearError()
    {
        using var xfile = Xfile.Create(new XfileOptions { MaxSize = 1L << 30 });
        using var tree = new Xfbtree<U64Ops>(new U64Ops(true), xfile, owner: 1, partitionStart: 0, partitionLength: 4 * 4096);
        using var cur = tree.CreateCursor();
        Assert.Throws<XfileFullException>(() => { for (ulong k = 0; k < 100000; k++) cur.Insert(U64Ops.Record(k, k)); });
    }

    [Fact]
    public unsafe void XfbtreeCommitVerifiesChangedBlocksAndCancelUndoesNothing()
    {
        using var xfile = Xfile.Create(new XfileOptions { MaxSize = 1L << 30 });
        using var tree = new Xfbtree<U64Ops>(new U64Ops(true), xfile, owner: 1);
        using var cur = tree.CreateCursor();
        for (ulong k = 0; k < 10; k++) cur.Insert(U64Ops.Record(k, k));
        tree.Cancel();
        Assert.True(cur.Lookup(U64Ops.Key(5), BtreeLookup.Equal)); // cancel keeps the change (documented)
        cur.Insert(U64Ops.Record(100, 1));
        // Damage the (dirty) root block's magic behind the engine's back: commit must report it.
        var root = tree.Store.Read(tree.Root.Pointer, tree.Tree.Verifier);
        root.Data[0] ^= 0xff;
        Assert.Throws<CorruptionException>(() => tree.Commit());
        root.Data[0] ^= 0xff;
        tree.Commit();
    }

    [Fact]
    public void XfbtreeRequiresLongFormOps()
    {
        using var xfile = Xfile.Create(new XfileOptions { MaxSize = 1L << 30 });
        Assert.Throws<ArgumentException>(() => new Xfbtree<U64Ops>(new U64Ops(false), xfile));
    }
}

/// <summary>
/// What the readers' prefetches rely on: on a backend with one fixed mapping, block p of a store is at
/// <c>DirectBlockBase + p * BlockSize</c> (the address the block table gives), in every partition, for fresh and reused
/// blocks; on the portable backend (mapped in chunks) there is no such base and the readers wait for the table as before.
/// </summary>
public sealed unsafe class XfbtreeDirectAddressTests
{
    [Theory]
    [InlineData(XfileBackendKind.Memfd, XfileHugePages.Off)]
    [InlineData(XfileBackendKind.Auto, XfileHugePages.Preferred)]
    [InlineData(XfileBackendKind.Portable, XfileHugePages.Off)]
    public void ABlockIsAtTheDirectBaseWhereTheTableSaysItIs(XfileBackendKind backend, XfileHugePages hugePages)
    {
        using var xfile = Xfile.Create(new XfileOptions { MaxSize = 64L << 20, Backend = backend, HugePages = hugePages, Name = "direct-address-test" });
        foreach (long partition in new long[] { 0, 16L << 20 })
        {
            using var store = new XfbtreeBlockStore(xfile, partition, 16L << 20);
            var blocks = Enumerable.Range(0, 300).Select(_ => store.AllocateBlock()).ToList();
            foreach (long p in blocks.Where(p => p % 3 == 0)) store.FreeBlock(p);
            blocks.AddRange(Enumerable.Range(0, 50).Select(_ => store.AllocateBlock()));
            if (xfile.Backend == XfileBackendKind.Portable)
            {
                Assert.True(store.DirectBlockBase == null, "the portable backend has no single mapping");
                continue;
            }
            Assert.True(store.DirectBlockBase != null, $"{xfile.Backend}: no direct base");
            foreach (long p in blocks.Where(p => store.IsValidPointer(p)))
                Assert.True((byte*)store.CurrentTable[p].Page == store.DirectBlockBase + p * store.BlockSize, $"{xfile.Backend}: block {p} of the partition at {partition} is not at the direct address");
        }
    }
}
