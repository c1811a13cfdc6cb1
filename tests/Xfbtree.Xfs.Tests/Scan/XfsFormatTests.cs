using System.Buffers.Binary;
using Xfbtree.Buffers;
using Xfbtree.Xfs.Format;
using Xfbtree.Xfs.Tests.Trees;

namespace Xfbtree.Xfs.Tests.Scan;

/// <summary>Format parsing against xfs_db and the facts of docs/xfs-format.md.</summary>
public sealed class XfsFormatTests
{
    static Dictionary<string, string> XfsDbPrint(string image, params string[] commands)
    {
        var result = new Dictionary<string, string>();
        foreach (var line in TreeFixtures.XfsDb(image, commands).Split('\n'))
        {
            int eq = line.IndexOf(" = ", StringComparison.Ordinal);
            if (eq > 0) result[line[..eq].Trim()] = line[(eq + 3)..].Trim();
        }
        return result;
    }

    [Theory]
    [InlineData("aged-small")]
    [InlineData("geom-bs1k")]
    [InlineData("geom-sect4k")]
    [InlineData("geom-nrext64")]
    public void XfsSuperblockAndHeadersMatchXfsDb(string fixture)
    {
        string img = TreeFixtures.Image(fixture);
        using var image = XfsImage.Open(img);
        var sb = image.Superblock;
        var db = XfsDbPrint(img, "sb 0", "print");
        Assert.Equal(ulong.Parse(db["dblocks"]), sb.DataBlocks);
        Assert.Equal(uint.Parse(db["agblocks"]), sb.AgBlocks);
        Assert.Equal(uint.Parse(db["agcount"]), sb.AgCount);
        Assert.Equal(ulong.Parse(db["logstart"]), sb.LogStart);
        Assert.Equal(ushort.Parse(db["sectsize"]), sb.SectorSize);
        Assert.Equal(ushort.Parse(db["inodesize"]), sb.InodeSize);
        Assert.Equal(ulong.Parse(db["rootino"]), sb.RootIno);
        Assert.Equal(Convert.ToUInt32(db["features_incompat"], 16), sb.FeaturesIncompat);
        Assert.Equal(Convert.ToUInt32(db["features_ro_compat"], 16), sb.FeaturesRoCompat);
        Assert.True(sb.CrcValid);
        uint last = sb.AgCount - 1;
        var agf = image.ReadAgf(last);
        var dbAgf = XfsDbPrint(img, $"agf {last}", "print");
        Assert.Empty(agf.Problems);
        Assert.Equal(uint.Parse(dbAgf["length"]), agf.Length);
        Assert.Equal(uint.Parse(dbAgf["rmaproot"]), agf.RmapRoot);
        Assert.Equal(uint.Parse(dbAgf["rmaplevel"]), agf.RmapLevel);
        Assert.Equal(uint.Parse(dbAgf["rmapblocks"]), agf.RmapBlocks);
        Assert.Equal(uint.Parse(dbAgf["btreeblks"]), agf.BtreeBlocks);
        Assert.Equal(uint.Parse(dbAgf["flcount"]), agf.FlCount);
        var agi = image.ReadAgi(last);
        var dbAgi = XfsDbPrint(img, $"agi {last}", "print");
        Assert.Empty(agi.Problems);
        Assert.Equal(uint.Parse(dbAgi["count"]), agi.Count);
        Assert.Equal(uint.Parse(dbAgi["root"]), agi.Root);
        Assert.Equal(uint.Parse(dbAgi["free_root"]), agi.FreeRoot);
        var agfl = image.ReadAgfl(last, agf);
        Assert.Empty(agfl.Problems);
        Assert.Equal((int)agf.FlCount, agfl.Blocks.Count);
        Assert.Equal(image.Geometry.AgflSlots, agfl.Slots.Count);
        Assert.Equal(sb.SectorSize == 4096 ? 1015 : 119, image.Geometry.AgflSlots);
        Assert.Equal((uint)(3 * sb.SectorSize / sb.BlockSize + 1), image.Geometry.FirstFreeBlock);
    }

    [Fact]
    public void XfsInodeViewMatchesXfsDb()
    {
        string img = TreeFixtures.Image("aged-small");
        using var image = XfsImage.Open(img);
        var geo = image.Geometry;
        foreach (ulong ino in new ulong[] { 1573048, 12585, 512872 })   // btree data fork, btree attr fork, node directory
        {
            var db = XfsDbPrint(img, $"inode {ino}", "print core.format core.aformat core.nextents core.naextents core.forkoff core.size");
            var buf = new byte[geo.InodeSize];
            using (var fh = File.OpenHandle(img)) RandomAccess.Read(fh, buf, geo.InodeByteOffset(geo.InoToAgno(ino), geo.InoToAgino(ino)));
            var d = new Dinode(buf);
            Assert.Null(d.Verify(geo, ino));
            Assert.Equal(ulong.Parse(db["core.nextents"]), d.DataExtents);
            Assert.Equal(ulong.Parse(db["core.naextents"]), d.AttrExtents);
            Assert.Equal(byte.Parse(db["core.forkoff"]), d.ForkOffset);
            Assert.Equal(ulong.Parse(db["core.size"]), d.Size);
            Assert.StartsWith(((int)d.Format).ToString(System.Globalization.CultureInfo.InvariantCulture), db["core.format"], StringComparison.Ordinal);
            buf[70] ^= 1;
            Assert.Equal("bad CRC", new Dinode(buf).Verify(geo, ino));
        }
    }

    [Fact]
    public void XfsBmbtExtentDecodesEveryField()
    {
        // l0: unwritten (63), startoff (62..9), startblock high 9 bits (8..0); l1: startblock low 43 bits (63..21), count (20..0).
        ulong off = 0x12345678, fsb = (3UL << 17) | 8, count = 0x1FFFFF;
        ulong l0 = (1UL << 63) | (off << 9) | (fsb >> 43);
        ulong l1 = ((fsb & ((1UL << 43) - 1)) << 21) | count;
        var rec = new byte[16];
        BinaryPrimitives.WriteUInt64BigEndian(rec, l0);
        BinaryPrimitives.WriteUInt64BigEndian(rec.AsSpan(8), l1);
        var e = BmbtExtent.Read(rec);
        Assert.Equal(new BmbtExtent(off, fsb, (uint)count, true), e);
        ulong big = 1UL << 51;
        BinaryPrimitives.WriteUInt64BigEndian(rec, big >> 43);
        BinaryPrimitives.WriteUInt64BigEndian(rec.AsSpan(8), ((big & ((1UL << 43) - 1)) << 21) | 1);
        Assert.Equal(big, BmbtExtent.Read(rec).StartBlock);
    }

    [Fact]
    public void XfsGeometryAddressesWithFsbnoHoles()
    {
        // agblocks 102400 -> agblklog 17: the doc's logstart 262152 is AG 2 block 8.
        var sector = new byte[512];
        using (var fh = File.OpenHandle(TreeFixtures.Image("fresh-4ag"))) RandomAccess.Read(fh, sector, 0);
        BinaryPrimitives.WriteUInt32BigEndian(sector.AsSpan(84), 102400);
        BinaryPrimitives.WriteUInt64BigEndian(sector.AsSpan(8), 4 * 102400);
        sector[124] = 17;
        BinaryPrimitives.WriteUInt64BigEndian(sector.AsSpan(48), 262152);
        XfsCrc.Update(sector, Superblock.CrcOffset);
        var sb = Superblock.Parse(sector);
        sb.Validate();
        var geo = new XfsGeometry(sb);
        Assert.Equal(2u, geo.FsbToAgno(262152));
        Assert.Equal(8u, geo.FsbToAgbno(262152));
        Assert.Equal((2L * 102400 + 8) * 8, geo.AgBlockToDaddr(2, 8));
        Assert.True(geo.IsValidExtent(geo.AgbToFsb(3, 102399), 1));
        Assert.False(geo.IsValidExtent(geo.AgbToFsb(3, 102399), 2));      // crosses the end of the AG
        Assert.False(geo.IsValidExtent(geo.AgbToFsb(1, 102400), 1));      // in the fsbno hole after AG 1
        Assert.False(geo.IsValidExtent(geo.AgbToFsb(4, 0), 1));           // no AG 4
        ulong ino = geo.AginoToIno(3, 1234);
        Assert.Equal(3u, geo.InoToAgno(ino));
        Assert.Equal(1234u, geo.InoToAgino(ino));
        sector[124] = 16;
        XfsCrc.Update(sector, Superblock.CrcOffset);
        string why = Assert.Throws<XfsFormatException>(() => Superblock.Parse(sector).Validate()).Message;
        Assert.Contains("agblklog", why, StringComparison.Ordinal);
        Assert.Contains("it must be log2 of agblocks rounded up (17)", why, StringComparison.Ordinal); // the rule, not only the field
    }

    [Fact]
    public void XfsAgflCircularListAndCounters()
    {
        using var image = XfsImage.Open(TreeFixtures.Image("fresh-4ag"));
        var geo = image.Geometry;
        var agfSector = new byte[512];
        var agflSector = new byte[512];
        using (var fh = File.OpenHandle(TreeFixtures.Image("fresh-4ag")))
        {
            RandomAccess.Read(fh, agfSector, geo.AgHeaderDaddr(0, 1) * 512);
            RandomAccess.Read(fh, agflSector, geo.AgHeaderDaddr(0, 3) * 512);
        }
        // A wrapped list: slots 117, 118, 0, 1 live.
        BinaryPrimitives.WriteUInt32BigEndian(agfSector.AsSpan(40), 117);
        BinaryPrimitives.WriteUInt32BigEndian(agfSector.AsSpan(44), 1);
        BinaryPrimitives.WriteUInt32BigEndian(agfSector.AsSpan(48), 4);
        uint[] blocks = [100, 101, 102, 103];
        int[] slots = [117, 118, 0, 1];
        for (int i = 0; i < 4; i++) BinaryPrimitives.WriteUInt32BigEndian(agflSector.AsSpan(36 + 4 * slots[i]), blocks[i]);
        var agf = Agf.Parse(agfSector, geo, 0);
        Assert.True(agf.FreeListConsistent(geo.AgflSlots));
        Assert.Equal(blocks, Agfl.Parse(agflSector, geo, agf).Blocks);
        BinaryPrimitives.WriteUInt32BigEndian(agfSector.AsSpan(48), 5);   // flcount disagrees with first/last
        var bad = Agf.Parse(agfSector, geo, 0);
        Assert.False(bad.FreeListConsistent(geo.AgflSlots));
        Assert.NotEmpty(Agfl.Parse(agflSector, geo, bad).Problems);
        BinaryPrimitives.WriteUInt32BigEndian(agfSector.AsSpan(36), 99);   // rmap level beyond maxlevels
        Assert.Contains(Agf.Parse(agfSector, geo, 0).Problems, p => p.Contains("rmapbt level", StringComparison.Ordinal));
    }
}
