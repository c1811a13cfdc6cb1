using System.Buffers.Binary;
using System.Text.Json;
using Microsoft.Win32.SafeHandles;
using Xfbtree.Btree;
using Xfbtree.Buffers;
using Xfbtree.Xfs.Trees;
using Xunit.Abstractions;

namespace Xfbtree.Xfs.Tests.Trees;

internal struct RecordList : IBtreeRecordVisitor
{
    public List<byte[]> Records;
    public bool Visit(ReadOnlySpan<byte> record) { (Records ??= new()).Add(record.ToArray()); return true; }
}

/// <summary>
/// Reads every per-AG tree (bnobt, cntbt, inobt, finobt, rmapbt, refcountbt) and the inode-rooted bmbts of the
/// real fixture images through the engine: the checker finds nothing, block and record counts agree with the
/// AG headers and xfs_db, and the rmapbt records equal the fixture's truth.tsv.
/// </summary>
public sealed class BtreeFixtureTreeTests(ITestOutputHelper output)
{
    public static IEnumerable<object[]> Fixtures() => TreeFixtures.All.Select(n => new object[] { n });

    internal sealed class Ag
    {
        public required uint Agno;
        public required byte[] Agf;
        public required byte[] Agi;
        public uint U32(byte[] h, int off) => BinaryPrimitives.ReadUInt32BigEndian(h.AsSpan(off));
    }

    internal static (FixtureGeometry Geo, SafeFileHandle File) Open(string name)
    {
        string img = TreeFixtures.Image(name);
        var fh = File.OpenHandle(img);
        var sb = new byte[512];
        RandomAccess.Read(fh, sb, 0);
        return (new FixtureGeometry(sb), fh);
    }

    internal static Ag ReadAg(FixtureGeometry geo, SafeFileHandle fh, uint agno)
    {
        long start = (long)agno * geo.AgBlocks * geo.BlockSize;
        var agf = new byte[geo.SectorSize];
        var agi = new byte[geo.SectorSize];
        RandomAccess.Read(fh, agf, start + geo.SectorSize);
        RandomAccess.Read(fh, agi, start + 2L * geo.SectorSize);
        Assert.Equal(0x58414746u, BinaryPrimitives.ReadUInt32BigEndian(agf));
        Assert.Equal(0x58414749u, BinaryPrimitives.ReadUInt32BigEndian(agi));
        return new Ag { Agno = agno, Agf = agf, Agi = agi };
    }

    internal static Btree<TOps> Tree<TOps>(TOps ops, FixtureGeometry geo, ImageBlockStore store, uint root, uint levels, long owner)
        where TOps : struct, IBtreeOps
        => new(ops, store, new BtreeRootValue(root, (int)levels), geo.Uuid, owner);

    static List<byte[]> All<TOps>(Btree<TOps> tree) where TOps : struct, IBtreeOps
    {
        var v = new RecordList();
        using var cur = tree.CreateCursor();
        cur.QueryAll(ref v);
        return v.Records ?? new();
    }

    static BtreeCheckReport Clean<TOps>(Btree<TOps> tree, string what) where TOps : struct, IBtreeOps
    {
        var report = tree.Check();
        Assert.True(report.IsClean, $"{what}: {report}");
        return report;
    }

    [Theory]
    [MemberData(nameof(Fixtures))]
    public void BtreeReadsEveryAgTreeOfFixture(string name)
    {
        var (geo, fh) = Open(name);
        using var _ = fh;
        var truth = TreeFixtures.Truth(name);
        string img = TreeFixtures.Image(name);
        long rmapTotal = 0;
        for (uint agno = 0; agno < geo.AgCount; agno++)
        {
            var ag = ReadAg(geo, fh, agno);
            uint agLen = ag.U32(ag.Agf, 12);
            var store = new ImageBlockStore(fh, geo, agno);
            string where = $"{name} AG {agno}";

            var bno = Tree(new BnobtOps(agLen), geo, store, ag.U32(ag.Agf, 16), ag.U32(ag.Agf, 28), agno);
            var cnt = Tree(new CntbtOps(agLen), geo, store, ag.U32(ag.Agf, 20), ag.U32(ag.Agf, 32), agno);
            var rmap = Tree(new RmapbtOps(false, agLen), geo, store, ag.U32(ag.Agf, 24), ag.U32(ag.Agf, 36), agno);
            var bnoReport = Clean(bno, where + " bnobt");
            var cntReport = Clean(cnt, where + " cntbt");
            var rmapReport = Clean(rmap, where + " rmapbt");
            var free = All(bno);
            long freeBlocks = free.Sum(r => (long)AllocRecord.BlockCount(r));
            Assert.Equal(ag.U32(ag.Agf, 52), (uint)freeBlocks);
            Assert.Equal(ag.U32(ag.Agf, 56), free.Count == 0 ? 0u : free.Max(r => AllocRecord.BlockCount(r)));
            var bySize = All(cnt);
            Assert.Equal(free.Count, bySize.Count);
            Assert.Equal(free.Select(r => (AllocRecord.StartBlock(r), AllocRecord.BlockCount(r))).OrderBy(x => x),
                         bySize.Select(r => (AllocRecord.StartBlock(r), AllocRecord.BlockCount(r))).OrderBy(x => x));
            Assert.Equal(ag.U32(ag.Agf, 80), (uint)rmapReport.Blocks);
            Assert.Equal(ag.U32(ag.Agf, 60), (uint)(bnoReport.Blocks - 1 + cntReport.Blocks - 1 + rmapReport.Blocks - 1));

            // rmapbt records equal the truth file record for record.
            var rmaps = All(rmap).Select(r => RmapRecord.Read(r)).Select(r => (r.StartBlock, r.BlockCount, r.Owner, r.RawOffset)).ToList();
            Assert.Equal(truth.GetValueOrDefault(agno) ?? new(), rmaps);
            rmapTotal += rmaps.Count;

            if (geo.HasReflink)
            {
                var refc = Tree(new RefcountbtOps(), geo, store, ag.U32(ag.Agf, 88), ag.U32(ag.Agf, 92), agno);
                var refReport = Clean(refc, where + " refcountbt");
                Assert.Equal(ag.U32(ag.Agf, 84), (uint)refReport.Blocks);
            }

            var ino = Tree(new InobtOps(false, geo.SparseInodes), geo, store, ag.U32(ag.Agi, 20), ag.U32(ag.Agi, 24), agno);
            var inoReport = Clean(ino, where + " inobt");
            var chunks = All(ino);
            Assert.Equal(ag.U32(ag.Agi, 16), (uint)chunks.Sum(r => geo.SparseInodes ? r[6] : 64));
            Assert.Equal(ag.U32(ag.Agi, 28), (uint)chunks.Sum(r => geo.SparseInodes ? r[7] : (int)BinaryPrimitives.ReadUInt32BigEndian(r.AsSpan(4))));
            Assert.Equal(ag.U32(ag.Agi, 336), (uint)inoReport.Blocks);
            if (geo.HasFinobt)
            {
                var fino = Tree(new InobtOps(true, geo.SparseInodes), geo, store, ag.U32(ag.Agi, 328), ag.U32(ag.Agi, 332), agno);
                var finoReport = Clean(fino, where + " finobt");
                Assert.Equal(ag.U32(ag.Agi, 340), (uint)finoReport.Blocks);
                Assert.All(All(fino), r => Assert.True(geo.SparseInodes ? r[7] > 0 : BinaryPrimitives.ReadUInt32BigEndian(r.AsSpan(4)) > 0));
            }

            // Cross-check record counts with xfs_db btdump for the first and the last AG.
            if (agno == 0 || agno == geo.AgCount - 1)
            {
                Assert.Equal(TreeFixtures.BtdumpRecordCount(img, $"agf {agno}", "addr bnoroot"), bnoReport.Records);
                Assert.Equal(TreeFixtures.BtdumpRecordCount(img, $"agf {agno}", "addr cntroot"), cntReport.Records);
                Assert.Equal(TreeFixtures.BtdumpRecordCount(img, $"agf {agno}", "addr rmaproot"), rmapReport.Records);
                Assert.Equal(TreeFixtures.BtdumpRecordCount(img, $"agi {agno}", "addr root"), inoReport.Records);
            }
            Assert.Equal(0, store.Holds);
        }
        Assert.Equal(truth.Values.Sum(l => l.Count), rmapTotal);
        output.WriteLine($"{name}: {geo.AgCount} AGs, {rmapTotal} rmap records, all trees clean");
    }

    /// <summary>Inodes named in the fixture manifest whose data or attr fork is a btree.</summary>
    public static IEnumerable<object[]> ManifestFixtures()
        => TreeFixtures.All.Where(n => File.Exists(Path.Combine(TreeFixtures.FixtureDir, n + ".manifest.json"))).Select(n => new object[] { n });

    [Theory]
    [MemberData(nameof(ManifestFixtures))]
    public void BtreeReadsInodeRootedBmbts(string name)
    {
        var (geo, fh) = Open(name);
        using var _ = fh;
        string img = TreeFixtures.Image(name);
        using var doc = JsonDocument.Parse(File.ReadAllText(Path.Combine(TreeFixtures.FixtureDir, name + ".manifest.json")));
        int trees = 0;
        foreach (var file in doc.RootElement.GetProperty("files").EnumerateObject())
        {
            if (!file.Value.TryGetProperty("ino", out var inoProp)) continue;
            ulong ino = inoProp.GetUInt64();
            var inode = ReadInode(geo, fh, ino);
            int forkoff = inode[82] * 8;
            int lit = geo.InodeSize - 176;
            bool nrext64 = (BinaryPrimitives.ReadUInt64BigEndian(inode.AsSpan(120)) & 0x10) != 0;
            if (inode[5] == 3)
            {
                long nextents = nrext64 ? (long)BinaryPrimitives.ReadUInt64BigEndian(inode.AsSpan(24)) : BinaryPrimitives.ReadUInt32BigEndian(inode.AsSpan(76));
                CheckFork(geo, fh, ino, inode.AsSpan(176, forkoff != 0 ? forkoff : lit), nextents, img, attr: false);
                trees++;
            }
            if (forkoff != 0 && inode[83] == 3)
            {
                long naextents = nrext64 ? BinaryPrimitives.ReadUInt32BigEndian(inode.AsSpan(76)) : BinaryPrimitives.ReadUInt16BigEndian(inode.AsSpan(80));
                CheckFork(geo, fh, ino, inode.AsSpan(176 + forkoff, lit - forkoff), naextents, img, attr: true);
                trees++;
            }
        }
        output.WriteLine($"{name}: {trees} inode-rooted bmbts read");
        Assert.True(trees > 0, "the manifest names btree-format forks");
    }

    static byte[] ReadInode(FixtureGeometry geo, SafeFileHandle fh, ulong ino)
    {
        int agShift = geo.AgBlockLog + geo.InodesPerBlockLog;
        ulong agno = ino >> agShift;
        ulong agino = ino & ((1UL << agShift) - 1);
        ulong agbno = agino >> geo.InodesPerBlockLog;
        ulong slot = agino & ((1UL << geo.InodesPerBlockLog) - 1);
        var inode = new byte[geo.InodeSize];
        RandomAccess.Read(fh, inode, (long)((agno * geo.AgBlocks + agbno) * (ulong)geo.BlockSize + slot * (ulong)geo.InodeSize));
        Assert.Equal(0x494E, BinaryPrimitives.ReadUInt16BigEndian(inode));
        Assert.Equal(ino, BinaryPrimitives.ReadUInt64BigEndian(inode.AsSpan(152)));
        return inode;
    }

    static void CheckFork(FixtureGeometry geo, SafeFileHandle fh, ulong ino, ReadOnlySpan<byte> fork, long extents, string img, bool attr)
    {
        var ops = new BmbtOps();
        var bgeo = BtreeGeometry.For(ops, geo.BlockSize);
        var root = new BtreeInodeRoot(bgeo, ops.Magic, fork);
        var store = new ImageBlockStore(fh, geo, 0, fsbnoPointers: true);
        var tree = new Btree<BmbtOps>(ops, store, root, geo.Uuid, (long)ino);
        var report = tree.Check();
        Assert.True(report.IsClean, $"inode {ino} {(attr ? "attr" : "data")} bmbt: {report}");
        Assert.Equal(extents, report.Records);
        var recs = new RecordList();
        using (var cur = tree.CreateCursor()) { cur.QueryAll(ref recs); Assert.Equal(extents, cur.CountRecords()); }
        string bmap = TreeFixtures.XfsDb(img, $"inode {ino}", attr ? "bmap -a" : "bmap");
        var lines = bmap.Split('\n', StringSplitOptions.RemoveEmptyEntries).Where(l => l.Contains("startblock", StringComparison.Ordinal)).ToList();
        Assert.Equal(lines.Count, recs.Records.Count);
        // Spot-check the decoding against xfs_db: "data offset O startblock B (a/b) count C flag F".
        for (int i = 0; i < lines.Count; i += Math.Max(1, lines.Count / 16))
        {
            var f = lines[i].Split(' ', StringSplitOptions.RemoveEmptyEntries);
            Assert.Equal(ulong.Parse(f[2]), BmbtOps.StartOffset(recs.Records[i]));
            Assert.Equal(ulong.Parse(f[4]), BmbtOps.StartBlock(recs.Records[i]));
            Assert.Equal(uint.Parse(f[7]), BmbtOps.BlockCount(recs.Records[i]));
        }
        Assert.Equal(0, store.Holds);
    }
}
