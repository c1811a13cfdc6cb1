using System.Buffers.Binary;
using System.Numerics;
using System.Text;
using Xfbtree.Buffers;
using Xfbtree.Tests.Support;

namespace Xfbtree.Tests.Buffers;

/// <summary>CRC-32C convention (check value, CRC field as zero, little-endian) and real blocks of a restored fixture.</summary>
public sealed class XfsCrcTests
{
    [Fact]
    public void CrcCheckValue_IsStandardCrc32C()
    {
        Assert.Equal(0xE3069283u, XfsCrc.Crc32C(Encoding.ASCII.GetBytes("123456789")));
    }

    [Fact]
    public void CrcTreatsTheFieldAsZero_AndStoresLittleEndian()
    {
        var rng = new Random(42);
        foreach (int size in new[] { 8, 512, 4096, 65536 })
        {
            var block = new byte[size];
            rng.NextBytes(block);
            int off = size == 8 ? 4 : 52;
            var zeroed = (byte[])block.Clone();
            zeroed.AsSpan(off, 4).Clear();
            uint expected = ReferenceCrc(zeroed);
            Assert.Equal(expected, XfsCrc.Compute(block, off));
            XfsCrc.Update(block, off);
            Assert.Equal(expected, BinaryPrimitives.ReadUInt32LittleEndian(block.AsSpan(off)));
            Assert.True(XfsCrc.Verify(block, off));
            block[size / 2] ^= 1;
            Assert.False(XfsCrc.Verify(block, off));
        }
        Assert.Throws<ArgumentOutOfRangeException>(() => XfsCrc.Compute(new byte[8], 5));
    }

    [Fact]
    public void CrcComputeAllocatesNothing()
    {
        var block = new byte[4096];
        XfsCrc.Update(block, 52);
        Assert.Equal(0, AllocationProbe.Measure(() =>
        {
            for (int i = 0; i < 1000; i++) XfsCrc.Update(block, 52);
        }));
    }

    /// <summary>
    /// A restored aged-small image read through DiskBufferTarget + BufferCache: the superblock, the AGF and AGI of
    /// every AG, and the bnobt/cntbt/rmapbt/inobt roots verify with the CRC offsets of docs/xfs-format.md §4.3; the CRC
    /// computed equals the stored little-endian bytes.
    /// </summary>
    [Fact]
    public void CrcOfRealFixtureBlocks_Verifies()
    {
        string img = BufferTestSupport.Fixture("aged-small");
        using var target = DiskBufferTarget.Open(img);
        using var cache = new BufferCache();
        Assert.True(target.IsReadOnly);

        var sbBuf = cache.Read(target, 0, 1, null);
        var sb = sbBuf.Span.ToArray();
        cache.Release(sbBuf);
        int bs = (int)BinaryPrimitives.ReadUInt32BigEndian(sb.AsSpan(4));
        uint agBlocks = BinaryPrimitives.ReadUInt32BigEndian(sb.AsSpan(84));
        uint agCount = BinaryPrimitives.ReadUInt32BigEndian(sb.AsSpan(88));
        int sect = BinaryPrimitives.ReadUInt16BigEndian(sb.AsSpan(102));
        int sectBB = sect / 512, bsBB = bs / 512;
        Assert.Equal(4u, agCount);

        var sbV = new MagicCrcVerifier("superblock", 0x58465342, 224, sect);
        var agfV = new MagicCrcVerifier("AGF", 0x58414746, 216, sect);
        var agiV = new MagicCrcVerifier("AGI", 0x58414749, 312, sect);
        CheckStoredEqualsComputed(cache, target, 0, sectBB, sbV);
        int trees = 0;
        for (uint ag = 0; ag < agCount; ag++)
        {
            long agStart = (long)ag * agBlocks * bsBB;
            var agf = cache.Read(target, agStart + sectBB, sectBB, agfV, BufferLockMode.Shared);
            uint bnoRoot = BinaryPrimitives.ReadUInt32BigEndian(agf.Span[16..]);
            uint cntRoot = BinaryPrimitives.ReadUInt32BigEndian(agf.Span[20..]);
            uint rmapRoot = BinaryPrimitives.ReadUInt32BigEndian(agf.Span[24..]);
            Assert.Equal(ag, BinaryPrimitives.ReadUInt32BigEndian(agf.Span[8..]));
            cache.Release(agf);
            var agi = cache.Read(target, agStart + 2 * sectBB, sectBB, agiV, BufferLockMode.Shared);
            uint inoRoot = BinaryPrimitives.ReadUInt32BigEndian(agi.Span[20..]);
            cache.Release(agi);
            CheckStoredEqualsComputed(cache, target, agStart + sectBB, sectBB, agfV);
            foreach (var (root, magic, name) in new[] { (bnoRoot, 0x41423342u, "bnobt"), (cntRoot, 0x41423343u, "cntbt"), (rmapRoot, 0x524D4233u, "rmapbt"), (inoRoot, 0x49414233u, "inobt") })
            {
                var v = new MagicCrcVerifier(name, magic, 52);
                CheckStoredEqualsComputed(cache, target, agStart + (long)root * bsBB, bsBB, v);
                trees++;
            }
        }
        Assert.Equal(16, trees);
        Assert.Equal(0, cache.Statistics.Writes);
    }

    static void CheckStoredEqualsComputed(BufferCache cache, BufferTarget target, long daddr, int lengthBB, MagicCrcVerifier v)
    {
        var b = cache.Read(target, daddr, lengthBB, v, BufferLockMode.Shared);
        try
        {
            var s = b.Span[..(v.CoveredLength == 0 ? b.Length : v.CoveredLength)];
            var zeroed = s.ToArray();
            zeroed.AsSpan(v.CrcOffset, 4).Clear();
            Assert.Equal(ReferenceCrc(zeroed), BinaryPrimitives.ReadUInt32LittleEndian(s[v.CrcOffset..]));
        }
        finally { cache.Release(b); }
    }

    /// <summary>Independent CRC-32C: the CPU instruction over the bytes, seed ~0, final inversion.</summary>
    static uint ReferenceCrc(ReadOnlySpan<byte> data)
    {
        uint crc = ~0u;
        foreach (byte b in data) crc = BitOperations.Crc32C(crc, b);
        return ~crc;
    }
}
