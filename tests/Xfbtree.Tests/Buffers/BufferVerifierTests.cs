using System.Buffers.Binary;
using Xfbtree.Buffers;
using Xfbtree.Storage;

namespace Xfbtree.Tests.Buffers;

/// <summary>Corrupted CRCs and bad magics are rejected with the block type, daddr and check, and never cached as valid.</summary>
public sealed class BufferVerifierTests
{
    static void WriteBlocks(string path, int count, Action<int, byte[]>? corrupt = null)
    {
        using var fs = new FileStream(path, FileMode.Open, FileAccess.Write);
        var block = new byte[4096];
        for (int i = 0; i < count; i++)
        {
            TestBlockVerifier.Format(block, i * 8L, (byte)i);
            corrupt?.Invoke(i, block);
            fs.Position = i * 4096L;
            fs.Write(block);
        }
    }

    [Fact]
    public void BufferVerifier_RejectsBadCrcAndMagic_AndDoesNotCacheThem()
    {
        using var img = BufferTestSupport.NewImage(64 * 4096, patterned: false);
        WriteBlocks(img.Path, 64, (i, b) =>
        {
            if (i == 3) b[2000] ^= 0x10;                                   // payload flip: CRC mismatch
            if (i == 5) { BinaryPrimitives.WriteUInt32BigEndian(b, 0xDEADBEEF); XfsCrc.Update(b, 4); } // valid CRC, wrong magic
            if (i == 7) b[4] ^= 1;                                         // the CRC field itself
        });
        using var target = DiskBufferTarget.Open(img.Path);
        using var cache = new BufferCache();
        var v = new TestBlockVerifier();

        foreach (var (block, check) in new[] { (3, "bad CRC"), (5, "bad magic"), (7, "bad CRC") })
        {
            for (int attempt = 0; attempt < 2; attempt++)
            {
                var e = Assert.Throws<CorruptionException>(() => cache.Read(target, block * 8L, 8, v));
                Assert.Equal("test block", e.BlockType);
                Assert.Equal(block * 8L, e.Daddr);
                Assert.Equal(check, e.Check);
                Assert.Contains($"daddr {block * 8}", e.Message);
            }
        }
        // Each failed attempt re-read the disk: the bad buffer was never cached.
        var st = cache.Statistics;
        Assert.Equal(6, st.Reads);
        Assert.Equal(0, st.CachedBuffers);
        Assert.Equal(0, st.Hits);
        // Good neighbours are fine, and a bad block read without a verifier is just bytes.
        var ok = cache.Read(target, 4 * 8, 8, v);
        Assert.Equal(4, ok.Span[100]);
        cache.Release(ok);
        var raw = cache.Read(target, 3 * 8, 8, null);
        cache.Release(raw);
        // ...but asking for the cached unverified buffer as a typed block verifies it then.
        Assert.Throws<CorruptionException>(() => cache.Read(target, 3 * 8, 8, v));
        Assert.Null(ReadVerifierOf(cache, target, 3 * 8));
    }

    static IBufferVerifier? ReadVerifierOf(BufferCache cache, BufferTarget target, long daddr)
    {
        var b = cache.Read(target, daddr, 8, null);
        try { return b.Verifier; } finally { cache.Release(b); }
    }

    [Fact]
    public void BufferVerifier_MagicCrcVerifier_OnXfileAndStructureCheck()
    {
        using var xfile = Xfile.Create(new XfileOptions { MaxSize = 1 << 24 });
        using var target = new XfileBufferTarget(xfile);
        using var cache = new BufferCache();
        int bb = xfile.PageSize / 512;
        var v = new MagicCrcVerifier("agf-like", 0x58414746, 216, 512, b => BinaryPrimitives.ReadUInt32BigEndian(b.Span[8..]) > 100 ? "seqno too large" : null);
        var b = cache.GetNew(target, 0, bb, v);
        BinaryPrimitives.WriteUInt32BigEndian(b.Span, 0x58414746);
        BinaryPrimitives.WriteUInt32BigEndian(b.Span[8..], 7);
        b.MarkDirty(0, 512);
        cache.Release(b);
        cache.Flush();                                     // PrepareWrite: structure check, then CRC
        Assert.True(XfsCrc.Verify(ReadPage(xfile).AsSpan(0, 512), 216));
        b = cache.Read(target, 0, bb, v);
        BinaryPrimitives.WriteUInt32BigEndian(b.Span[8..], 1000);
        b.MarkDirty(8, 4);
        cache.Release(b);
        var e = Assert.Throws<CorruptionException>(() => cache.Flush());
        Assert.Equal("seqno too large", e.Check);
        Assert.True(cache.Statistics.CachedBuffers == 1); // still dirty, still cached
        b = cache.Read(target, 0, bb, v);
        Assert.True(b.IsDirty);
        b.MarkStale();
        cache.Release(b);                                  // freed: dropped, page punched
        Assert.Equal(0, cache.Statistics.CachedBuffers);
        Assert.False(xfile.IsCommitted(0));
        Assert.Throws<CorruptionException>(() => cache.Read(target, 0, bb, v)); // zeros now: bad magic
    }

    static byte[] ReadPage(Xfile xfile)
    {
        var page = new byte[xfile.PageSize];
        xfile.Load(0, page);
        return page;
    }
}
