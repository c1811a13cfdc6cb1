using Xfbtree.Buffers;
using Xfbtree.Storage;

namespace Xfbtree.Tests.Buffers;

/// <summary>Commit writes exactly the dirty buffers (verified, ascending), cancel writes nothing; xfile semantics.</summary>
public sealed class BufferTransactionTests
{
    static List<long> RecordWrites(DiskBufferTarget target)
    {
        var writes = new List<long>();
        target.FaultHook = (write, daddr, len) => { if (write) lock (writes) writes.Add(daddr); return DiskBufferTarget.DiskFault.None; };
        return writes;
    }

    [Fact]
    public void BufferTransactionCommit_WritesExactlyTheDirtyBuffers_InAscendingOrder()
    {
        using var img = BufferTestSupport.NewImage(64 * 4096, patterned: false);
        using var target = BufferTestSupport.OpenRw(img.Path);
        var writes = RecordWrites(target);
        using var cache = new BufferCache();
        var v = new TestBlockVerifier();
        // Lay down valid blocks first (outside the measured transaction).
        using (var setup = new BufferTransaction(cache))
        {
            for (long i = 0; i < 8; i++)
            {
                var b = setup.GetNew(target, i * 8, 8, v);
                TestBlockVerifier.Format(b.Span, i * 8, 0);
                setup.LogRange(b, 0, b.Length);
            }
            setup.CommitAndSync();
        }
        Assert.Equal([0L, 8, 16, 24, 32, 40, 48, 56], writes);
        writes.Clear();
        int prepares = v.WritePrepares;

        var tx = new BufferTransaction(cache);
        var b40 = tx.Read(target, 40, 8, v);
        var b8 = tx.Read(target, 8, 8, v);
        var b16 = tx.Read(target, 16, 8, v);  // joined, never dirtied
        var b24 = tx.Read(target, 24, 8, v);  // dirtied, then freed
        var b56 = tx.GetNew(target, 56, 8, v); // cached: contents kept
        Assert.Equal(5, tx.Count);
        Assert.Same(b8, tx.Read(target, 8, 8, v)); // already joined: same buffer, no second lock
        b40.Span[100] = 40; tx.LogRange(b40, 100, 1);
        b8.Span[200] = 8; tx.LogRange(b8, 200, 1);
        b24.Span[300] = 24; tx.LogRange(b24, 300, 1);
        b24.MarkStale();
        TestBlockVerifier.Format(b56.Span, 56, 56); b56.MarkDirty();
        Assert.Throws<InvalidOperationException>(() => cache.Release(b8)); // the transaction owns the hold
        tx.Commit();
        Assert.Equal([8L, 40, 56], writes);
        Assert.Equal(prepares + 3, v.WritePrepares);
        foreach (var b in new[] { b40, b8, b16, b56 })
        {
            Assert.False(b.IsDirty);
            Assert.Equal(0, b.HoldCount);
            Assert.False(b.IsLockedExclusive);
        }
        Assert.Throws<InvalidOperationException>(tx.Commit);
        Assert.Throws<InvalidOperationException>(tx.Cancel);
        tx.Dispose();

        using var other = new BufferCache();
        using var ro = DiskBufferTarget.Open(img.Path);
        var r = other.Read(ro, 40, 8, v); Assert.Equal(40, r.Span[100]); other.Release(r);
        r = other.Read(ro, 8, 8, v); Assert.Equal(8, r.Span[200]); other.Release(r);
        r = other.Read(ro, 24, 8, v); Assert.Equal(0, r.Span[300]); other.Release(r); // stale: never written
        r = other.Read(ro, 56, 8, v); Assert.Equal(56, r.Span[100]); other.Release(r);
    }

    [Fact]
    public void BufferTransactionCancel_WritesNothing_AndDropsTheChanges()
    {
        using var img = BufferTestSupport.NewImage(64 * 4096);
        using var target = BufferTestSupport.OpenRw(img.Path);
        var writes = RecordWrites(target);
        using var cache = new BufferCache();
        using (var tx = new BufferTransaction(cache))
        {
            var a = tx.Read(target, 0, 8, null);
            var b = tx.Read(target, 8, 8, null);
            var c = tx.GetNew(target, 16, 8, null);
            a.Span.Fill(0xAA); tx.LogRange(a, 0, a.Length);
            b.MarkStale();
            c.Span.Fill(0xCC); c.MarkDirty();
            tx.Cancel();
        }
        using (var tx = new BufferTransaction(cache))
        {
            var d = tx.Read(target, 24, 8, null);
            d.Span.Fill(0xDD); d.MarkDirty();
        } // Dispose without Commit = Cancel
        cache.FlushAndSync();
        Assert.Empty(writes);
        Assert.Equal(0, target.WriteCount);
        long readsBefore = cache.Statistics.Reads;
        foreach (long d in new long[] { 0, 8, 16, 24 })
        {
            var buf = cache.Read(target, d, 8, null, BufferLockMode.Shared);
            Assert.True(BufferTestSupport.HasPattern(buf.Span, d), $"daddr {d} kept a cancelled change");
            cache.Release(buf);
        }
        Assert.Equal(readsBefore + 4, cache.Statistics.Reads); // every cancelled buffer was re-read from disk
    }

    [Fact]
    public void BufferTransactionMisuse_IsRefused()
    {
        using var img = BufferTestSupport.NewImage(16 * 4096);
        using var target = BufferTestSupport.OpenRw(img.Path);
        using var cache = new BufferCache();
        using var other = new BufferCache();
        var tx = new BufferTransaction(cache);
        var shared = cache.Read(target, 0, 8, null, BufferLockMode.Shared);
        Assert.Throws<InvalidOperationException>(() => tx.Join(shared));
        cache.Release(shared);
        var foreign = other.Read(target, 0, 8, null);
        Assert.Throws<ArgumentException>(() => tx.Join(foreign));
        other.Release(foreign);
        var b = cache.Read(target, 8, 8, null);
        tx.Join(b);
        Assert.Throws<InvalidOperationException>(() => tx.Join(b));
        var unjoined = cache.Read(target, 16, 8, null);
        Assert.Throws<InvalidOperationException>(() => tx.LogRange(unjoined, 0, 1));
        var tx2 = new BufferTransaction(cache);
        Assert.Throws<InvalidOperationException>(() => tx2.Join(b));
        cache.Release(unjoined);
        tx.Commit();
        Assert.Equal(0, b.HoldCount);
        tx2.Commit();
    }

    [Fact]
    public void BufferTransactionOnXfile_CommitVerifiesAndPunches_CancelPoisonsTheTarget()
    {
        using var xfile = Xfile.Create(new XfileOptions { MaxSize = 1 << 24 });
        int bb = xfile.PageSize / 512;
        using var target = new XfileBufferTarget(xfile);
        using var cache = new BufferCache();
        var v = new TestBlockVerifier();

        using (var tx = new BufferTransaction(cache))
        {
            for (long i = 0; i < 4; i++)
            {
                var b = tx.GetNew(target, i * bb, bb, v);
                TestBlockVerifier.Format(b.Span, i * bb, (byte)i);
                tx.LogRange(b, 0, b.Length);
            }
            tx.Commit();
        }
        Assert.Equal(4, v.WritePrepares);               // commit = structure check of every dirty buffer
        Assert.Equal(0, cache.Statistics.Writes);        // no I/O on memory targets
        Assert.True(xfile.IsCommitted(3L * xfile.PageSize));

        // Commit: a stale (freed) block is punched out of the xfile; a verifier failure is reported after every
        // buffer was processed and released.
        using (var tx = new BufferTransaction(cache))
        {
            var freed = tx.Read(target, 3L * bb, bb, v);
            freed.MarkStale();
            var bad = tx.Read(target, 1L * bb, bb, v);
            bad.Span[0] = 0; tx.LogRange(bad, 0, 1);    // breaks the magic
            var good = tx.Read(target, 2L * bb, bb, v);
            good.Span[100] = 0x22; tx.LogRange(good, 100, 1);
            var e = Assert.Throws<CorruptionException>(tx.Commit);
            Assert.Equal(1L * bb, e.Daddr);
            Assert.Equal(0, good.HoldCount);
            Assert.False(good.IsDirty);
        }
        Assert.False(xfile.IsCommitted(3L * xfile.PageSize));
        Assert.Equal(0, xfile.PinCount(3L * xfile.PageSize));

        // Cancel: memory changes cannot be undone (as upstream) and stay visible, so the target is poisoned.
        using (var tx = new BufferTransaction(cache))
        {
            var b = tx.Read(target, 2L * bb, bb, v);
            Assert.Equal(0x22, b.Span[100]);
            tx.Cancel(); // read only: nothing changed, no poison
        }
        Assert.False(target.IsPoisoned);
        using (var tx = new BufferTransaction(cache))
        {
            var b = tx.Read(target, 2L * bb, bb, v);
            b.Span[100] = 0x33; tx.LogRange(b, 100, 1);
            tx.Cancel();
        }
        Assert.True(target.IsPoisoned);
        var poisoned = Assert.Throws<InvalidOperationException>(() => cache.Read(target, 2L * bb, bb, v));
        Assert.Contains("ClearPoison", poisoned.Message);
        Assert.Throws<InvalidOperationException>(() => cache.GetNew(target, 5L * bb, bb, v));
        target.ClearPoison();
        var after = cache.Read(target, 2L * bb, bb, null, BufferLockMode.Shared);
        Assert.Equal(0x33, after.Span[100]);           // nothing was undone
        Assert.False(after.IsDirty);
        cache.Release(after);
    }
}
