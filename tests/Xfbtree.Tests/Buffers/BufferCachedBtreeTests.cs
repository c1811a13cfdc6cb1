using System.Buffers.Binary;
using Xfbtree.Btree;
using Xfbtree.Buffers;
using Xfbtree.Storage;
using Xfbtree.Tests.Btree;

namespace Xfbtree.Tests.Buffers;

/// <summary>
/// The generic btree engine on <see cref="CachedBtreeBlockStore"/> through the shared <see cref="BufferCache"/>:
/// on a DiskBufferTarget over a temp image (CRC'd blocks, pread/pwrite, a small memory limit so blocks are
/// reclaimed and re-read + verified) and on an XfileBufferTarget (pinned pages). Thousands of inserts, deletes
/// and lookups against a model, periodic flushes, then a fresh cache and target re-open the tree and verify it.
/// </summary>
public sealed class BufferCachedBtreeTests
{
    /// <summary>Test store: pointer p is daddr p * (bs / 512); allocation state survives re-opens (it plays the AG's free-space tree).</summary>
    sealed class Allocation
    {
        public readonly HashSet<long> Allocated = new();
        public readonly Stack<long> Free = new();
        public long Next = 1;
        public long MaxBlocks;
    }

    sealed class TestCachedStore(BufferCache cache, BufferTarget target, int blockSize, Allocation a) : CachedBtreeBlockStore(cache, target, blockSize)
    {
        public override long PointerToDaddr(long pointer) => pointer * LengthBB;
        public override bool IsValidPointer(long pointer) => a.Allocated.Contains(pointer);
        public override long AllocateBlock()
        {
            long p = a.Free.Count > 0 ? a.Free.Pop() : a.Next++;
            if (p >= a.MaxBlocks) throw new InvalidOperationException("test target full");
            a.Allocated.Add(p);
            return p;
        }
        public override void FreeBlock(long pointer)
        {
            if (!a.Allocated.Remove(pointer)) throw new InvalidOperationException($"double free of {pointer}");
            a.Free.Push(pointer);
        }
    }

    [Theory]
    [InlineData("disk", 4096)]
    [InlineData("disk", 1024)]
    [InlineData("xfile", 0)]
    public void BufferCachedBtree_InsertDeleteLookup_FlushReopen(string kind, int blockSize)
    {
        using var xfile = kind == "xfile" ? Xfile.Create(new XfileOptions { MaxSize = 256L << 20 }) : null;
        if (xfile != null) blockSize = xfile.PageSize;
        using var img = kind == "disk" ? BufferTestSupport.NewImage(32L << 20, patterned: false) : null;
        BufferTarget Open() => xfile != null ? new XfileBufferTarget(xfile, 0, 64L << 20) : BufferTestSupport.OpenRw(img!.Path);

        var alloc = new Allocation();
        var model = new SortedDictionary<ulong, ulong>();
        var rng = new Random(blockSize + kind.Length);
        var ops = new U64Ops(longPointers: blockSize == 1024);
        long rootPtr;
        int height;
        var options = new BufferCacheOptions { MemoryLimitBytes = 4L * blockSize };

        using (var target = Open())
        using (var cache = new BufferCache(options))
        {
            alloc.MaxBlocks = target.SizeInBasicBlocks / (blockSize / 512);
            var store = new TestCachedStore(cache, target, blockSize, alloc);
            Assert.Equal(!target.IsInMemory, store.ChecksCrc);
            var root = new BtreeRootValue(BtreeHeader.NullPointer, 1);
            var tree = new Btree<U64Ops>(ops, store, root, BtreeTestTrees.Uuid, owner: 7);
            tree.CreateEmpty();
            using (var cur = tree.CreateCursor())
            {
                for (int step = 0; step < 6000; step++)
                {
                    ulong key = (ulong)rng.Next(0, 12000);
                    int what = rng.Next(10);
                    if (what < 6)
                    {
                        ulong value = (ulong)rng.NextInt64();
                        Assert.Equal(!model.ContainsKey(key), cur.Insert(U64Ops.Record(key, value)));
                        model.TryAdd(key, value);
                    }
                    else if (what < 9)
                    {
                        bool found = cur.Lookup(U64Ops.Key(key), BtreeLookup.Equal);
                        Assert.Equal(model.ContainsKey(key), found);
                        if (found) { cur.Delete(); model.Remove(key); }
                    }
                    else
                    {
                        bool found = cur.Lookup(U64Ops.Key(key), BtreeLookup.Equal);
                        Assert.Equal(model.ContainsKey(key), found);
                        if (found) Assert.Equal(model[key], BinaryPrimitives.ReadUInt64BigEndian(cur.Current[8..]));
                    }
                    if (step % 700 == 699)
                    {
                        cur.Release();
                        cache.Flush(target);
                    }
                }
            }
            cache.FlushAndSync(target);
            var report = tree.Check();
            Assert.True(report.ViolationCount == 0, string.Join("\n", report.Violations));
            Assert.Equal(model.Count, report.Records);
            Assert.True(report.Blocks > 8, $"tree of {report.Blocks} blocks is too small to exercise reclaim");
            var st = cache.Statistics;
            Assert.True(st.Reclaimed > 0);
            Assert.True(st.IdleBytes <= options.MemoryLimitBytes);
            if (!target.IsInMemory)
            {
                Assert.True(st.Reads > 0 && st.Writes > 0, st.ToString());
            }
            else
            {
                Assert.Equal(0, st.Reads + st.Writes);
            }
            rootPtr = root.Pointer;
            height = root.Height;
            Assert.True(height >= 2);
        }
        if (xfile != null) Assert.Equal(0, xfile.PinCount(0)); // cache disposed: every page unpinned

        using (var target = Open())
        using (var cache = new BufferCache(options))
        {
            var store = new TestCachedStore(cache, target, blockSize, alloc);
            var tree = new Btree<U64Ops>(ops, store, new BtreeRootValue(rootPtr, height), BtreeTestTrees.Uuid, owner: 7);
            var all = new CollectVisitor();
            using (var cur = tree.CreateCursor())
            {
                cur.QueryAll(ref all);
                foreach (var (k, v) in model.Take(200))
                {
                    Assert.True(cur.Lookup(U64Ops.Key(k), BtreeLookup.Equal));
                    Assert.Equal(v, BinaryPrimitives.ReadUInt64BigEndian(cur.Current[8..]));
                }
            }
            Assert.Equal(model.Count, all.Records?.Count ?? 0);
            int i = 0;
            foreach (var (k, v) in model)
            {
                var r = all.Records![i++];
                Assert.Equal(k, BinaryPrimitives.ReadUInt64BigEndian(r));
                Assert.Equal(v, BinaryPrimitives.ReadUInt64BigEndian(r.AsSpan(8)));
            }
            Assert.Equal(0, tree.Check().ViolationCount);
        }
    }
}
