using System.Buffers.Binary;
using Xfbtree.Btree;
using Xfbtree.Xfs.Trees;

namespace Xfbtree.Fuzz;

/// <summary>
/// Writes the seed corpora: for <c>btree</c>, real trees of every type built by the engine (valid records inserted in
/// a shuffled order, so the shapes come from real splits), at several heights and block sizes; for
/// <c>orderedmap</c>, valid operation scripts. Deterministic: the same build writes the same files.
/// </summary>
public static class SeedCorpus
{
    /// <summary>Writes DIR/btree/*, DIR/orderedmap/*, DIR/reader/* and the crafted inputs DIR/../regressions/btree/crafted-*; returns (path, bytes) per file.</summary>
    public static List<(string Path, int Bytes)> Write(string dir)
    {
        var written = new List<(string, int)>();
        foreach (var (target, seeds) in new[] { ("btree", BtreeSeeds()), ("orderedmap", OrderedMapSeeds()), ("reader", ReaderSeeds()), ("../regressions/btree", CraftedBtreeInputs()) })
        {
            string d = Path.Combine(dir, target);
            Directory.CreateDirectory(d);
            foreach (var (name, data) in seeds)
            {
                string p = Path.Combine(d, name);
                File.WriteAllBytes(p, data);
                written.Add((p, data.Length));
            }
        }
        return written;
    }

    // ---------------------------------------------------------------- btree

    public static List<(string Name, byte[] Data)> BtreeSeeds()
    {
        var seeds = new List<(string, byte[])>();
        var K = BtreeTarget.Kind.Rmapbt;
        var M = BtreeTarget.Options.Mutate;
        var A = BtreeTarget.Options.AgBounded;
        var S = BtreeTarget.Options.Sparse;
        foreach (var (kind, log, opts, records) in new (BtreeTarget.Kind, int, BtreeTarget.Options, int)[]
        {
            (K, 0, M | A, 6), (K, 0, M, 60), (K, 0, A, 220), (K, 1, M, 90),
            (BtreeTarget.Kind.RmapbtLong, 0, M, 8), (BtreeTarget.Kind.RmapbtLong, 0, A, 70),
            (BtreeTarget.Kind.Bnobt, 0, M | A, 10), (BtreeTarget.Kind.Bnobt, 0, M, 400),
            (BtreeTarget.Kind.Cntbt, 0, M, 12), (BtreeTarget.Kind.Cntbt, 0, A, 300),
            (BtreeTarget.Kind.Inobt, 0, M | S, 9), (BtreeTarget.Kind.Inobt, 0, S, 120), (BtreeTarget.Kind.Inobt, 0, M, 50),
            (BtreeTarget.Kind.Finobt, 0, M | S, 40),
            (BtreeTarget.Kind.Refcountbt, 0, M, 11), (BtreeTarget.Kind.Refcountbt, 0, None, 150),
            (BtreeTarget.Kind.Bmbt, 0, M, 7), (BtreeTarget.Kind.Bmbt, 0, M, 140), (BtreeTarget.Kind.Bmbt, 2, None, 300),
        })
        {
            var data = kind switch
            {
                BtreeTarget.Kind.Rmapbt => Build(new RmapbtOps(false), kind, log, opts, records, RmapRecord),
                BtreeTarget.Kind.RmapbtLong => Build(new RmapbtOps(true), kind, log, opts, records, RmapRecord),
                BtreeTarget.Kind.Bnobt => Build(new BnobtOps(0), kind, log, opts, records, AllocRecord),
                BtreeTarget.Kind.Cntbt => Build(new CntbtOps(0), kind, log, opts, records, AllocRecord),
                BtreeTarget.Kind.Inobt => Build(new InobtOps(false, (opts & S) != 0), kind, log, opts, records, i => InobtRecord(i, (opts & S) != 0)),
                BtreeTarget.Kind.Finobt => Build(new InobtOps(true, (opts & S) != 0), kind, log, opts, records, i => InobtRecord(i, (opts & S) != 0)),
                BtreeTarget.Kind.Refcountbt => Build(default(RefcountbtOps), kind, log, opts, records, i => RefcountRecord(i, records)),
                _ => Build(default(BmbtOps), kind, log, opts, records, BmbtRecord),
            };
            seeds.Add(($"{kind.ToString().ToLowerInvariant()}-bs{512 << log}-{records}rec", data));
        }
        seeds.Add(("bmbt-inoderoot-3leaves", InodeRootedBmbt(40)));
        seeds.Add(("bmbt-inoderoot-8leaves", InodeRootedBmbt(110)));
        return seeds;
    }

    const BtreeTarget.Options None = BtreeTarget.Options.None;

    static (FuzzBlockStore Store, Btree<TOps> Tree, BtreeRootValue Root) BuildTree<TOps>(TOps ops, int blockSize, int records, Func<int, byte[]> record)
        where TOps : struct, IBtreeOps
    {
        var store = new FuzzBlockStore(blockSize, []);
        var root = new BtreeRootValue(BtreeHeader.NullPointer, 1);
        var tree = new Btree<TOps>(ops, store, root, BtreeTarget.Uuid, BtreeTarget.Owner);
        tree.CreateEmpty();
        var order = Enumerable.Range(0, records).ToList();
        new FuzzRng([(byte)records, (byte)blockSize]).Shuffle(order);
        using (var c = tree.CreateCursor())
            foreach (int i in order)
                if (!c.Insert(record(i))) throw new InvalidOperationException($"seed record {i} refused");
        var report = tree.Check();
        if (!report.IsClean) throw new InvalidOperationException($"seed tree not clean: {report}");
        return (store, tree, root);
    }

    static List<byte[]> Blocks(FuzzBlockStore store)
    {
        var blocks = new List<byte[]>();
        for (long p = 1; p <= store.BlockSlots; p++) blocks.Add(store.Raw(p) is { } b ? b.ToArray() : []);
        if (blocks.Count > BtreeTarget.MaxChunks) throw new InvalidOperationException($"seed tree has {blocks.Count} blocks, more than {BtreeTarget.MaxChunks}");
        return blocks;
    }

    static byte[] Build<TOps>(TOps ops, BtreeTarget.Kind kind, int log, BtreeTarget.Options opts, int records, Func<int, byte[]> record)
        where TOps : struct, IBtreeOps
    {
        var (store, _, root) = BuildTree(ops, 512 << log, records, record);
        // Query keys: the keys of two records inside the set (a range over part of the tree).
        var keys = new List<byte>();
        foreach (int i in new[] { records / 3, 2 * records / 3 })
        {
            var k = new byte[ops.KeySize];
            ops.GetKey(record(i), k);
            keys.AddRange(k);
        }
        return BtreeTarget.Encode(kind, log, opts, root.Height, (int)root.Pointer, Blocks(store), keys.ToArray());
    }

    /// <summary>A bmbt built with a block root, whose root node is then moved into an inode fork image (bmdr).</summary>
    static byte[] InodeRootedBmbt(int records)
    {
        var ops = default(BmbtOps);
        var (store, tree, root) = BuildTree(ops, 512, records, BmbtRecord);
        if (root.Height != 2) throw new InvalidOperationException($"expected a two-level bmbt, got {root.Height}");
        var rootBlock = store.Raw(root.Pointer)!;
        int n = BinaryPrimitives.ReadUInt16BigEndian(rootBlock.AsSpan(6));
        var geo = tree.Geometry;
        int forkMax = Math.Min((BtreeTarget.MaxForkLength - 4) / 16, n + 2);
        var fork = new byte[4 + forkMax * 16];
        BinaryPrimitives.WriteUInt16BigEndian(fork, 1);
        BinaryPrimitives.WriteUInt16BigEndian(fork.AsSpan(2), (ushort)n);
        for (int i = 0; i < n; i++)
        {
            rootBlock.AsSpan(geo.KeyOffset(i), 8).CopyTo(fork.AsSpan(4 + i * 8));
            rootBlock.AsSpan(geo.PointerOffset(i, geo.NodeMaxRecords), 8).CopyTo(fork.AsSpan(4 + forkMax * 8 + i * 8));
        }
        var blocks = Blocks(store);
        blocks[(int)root.Pointer - 1] = []; // the old root block is not part of the tree any more
        var chunks = new List<byte[]> { fork };
        chunks.AddRange(blocks);
        var key = new byte[8];
        ops.GetKey(BmbtRecord(records / 2), key);
        return BtreeTarget.Encode(BtreeTarget.Kind.BmbtInodeRoot, 0, None, 0, 0, chunks, key);
    }

    static byte[] RmapRecord(int i)
    {
        var r = new byte[24];
        uint start = (uint)i * 8 + 16, len = 1 + (uint)(i % 7);
        ulong owner, offset;
        if (i % 10 == 0)
        {
            owner = 0xFFFFFFFFFFFFFFF7 + (ulong)(i / 10 % 7); // OWN_* values -9..-3
            offset = 0;
        }
        else
        {
            owner = 128 + (ulong)(i % 5);
            offset = (ulong)i * 4;
            offset |= (i % 7) switch { 1 => RmapbtOps.AttrForkFlag, 3 => RmapbtOps.UnwrittenFlag, _ => 0 };
            if (i % 7 == 2) offset = RmapbtOps.BmbtBlockFlag;
        }
        BinaryPrimitives.WriteUInt32BigEndian(r, start);
        BinaryPrimitives.WriteUInt32BigEndian(r.AsSpan(4), len);
        BinaryPrimitives.WriteUInt64BigEndian(r.AsSpan(8), owner);
        BinaryPrimitives.WriteUInt64BigEndian(r.AsSpan(16), offset);
        return r;
    }

    static byte[] AllocRecord(int i)
    {
        var r = new byte[8];
        BinaryPrimitives.WriteUInt32BigEndian(r, (uint)i * 10 + 8);
        BinaryPrimitives.WriteUInt32BigEndian(r.AsSpan(4), 1 + (uint)(i % 9));
        return r;
    }

    static byte[] InobtRecord(int i, bool sparse)
    {
        var r = new byte[16];
        BinaryPrimitives.WriteUInt32BigEndian(r, (uint)i * 64 + 128);
        int free = i % 65;
        if (sparse)
        {
            BinaryPrimitives.WriteUInt16BigEndian(r.AsSpan(4), 0);
            r[6] = 64;
            r[7] = (byte)free;
        }
        else BinaryPrimitives.WriteUInt32BigEndian(r.AsSpan(4), (uint)free);
        BinaryPrimitives.WriteUInt64BigEndian(r.AsSpan(8), free == 0 ? 0 : ulong.MaxValue >> (64 - free));
        return r;
    }

    static byte[] RefcountRecord(int i, int records)
    {
        var r = new byte[12];
        bool cow = i >= records - records / 5;
        uint start = (uint)i * 10 + 8;
        BinaryPrimitives.WriteUInt32BigEndian(r, cow ? start | RefcountbtOps.CowFlag : start);
        BinaryPrimitives.WriteUInt32BigEndian(r.AsSpan(4), 1 + (uint)(i % 9));
        BinaryPrimitives.WriteUInt32BigEndian(r.AsSpan(8), cow ? 1u : 2 + (uint)(i % 3));
        return r;
    }

    static byte[] BmbtRecord(int i)
    {
        var r = new byte[16];
        ulong startoff = (ulong)i * 16, startblock = 5000 + (ulong)i * 16, len = 1 + (ulong)(i % 15);
        ulong unwritten = i % 4 == 3 ? 1UL : 0;
        BinaryPrimitives.WriteUInt64BigEndian(r, (unwritten << 63) | (startoff << 9) | (startblock >> 43));
        BinaryPrimitives.WriteUInt64BigEndian(r.AsSpan(8), (startblock << 21) | len);
        return r;
    }

    // ---------------------------------------------------------------- crafted hostile inputs

    /// <summary>
    /// Hand-made hostile trees (kept with the fuzzer's findings in regressions/btree): walks that never end unless
    /// the engine checks key order when it crosses blocks, and impossible heights.
    /// </summary>
    public static List<(string Name, byte[] Data)> CraftedBtreeInputs()
    {
        var list = new List<(string, byte[])>();
        // bnobt, 512-byte blocks (nodes hold 38 entries): below the root every level has two blocks A and B that are
        // each other's left and right siblings, and every node points at A, B, A, B, ... The sibling checks of a
        // cursor walk all pass, yet a walk would visit 38^5 leaves.
        {
            const int levels = 6, nodeMax = 38, leafRecs = 57;
            var blocks = new List<byte[]>();
            // Block numbers: A_l = 1 + 2l, B_l = 2 + 2l for l in 0..levels-2; the root is 2*(levels-1)+1.
            for (int l = 0; l < levels - 1; l++)
                for (int ab = 0; ab < 2; ab++)
                {
                    long self = 1 + 2 * l + ab, other = 1 + 2 * l + (1 - ab);
                    blocks.Add(l == 0 ? ShortBlock(l, leafRecs, other, other, 8, nodeMax, _ => 0)
                                      : ShortBlock(l, nodeMax, other, other, 8, nodeMax, i => 1 + 2 * (l - 1) + (i & 1)));
                }
            blocks.Add(ShortBlock(levels - 1, nodeMax, -1, -1, 8, nodeMax, i => 1 + 2 * (levels - 2) + (i & 1)));
            list.Add(("crafted-bnobt-sibling-cycle-dag", BtreeTarget.Encode(BtreeTarget.Kind.Bnobt, 0, None, levels, blocks.Count, blocks, [])));
        }
        // rmapbt, 512-byte blocks (nodes hold 10 entries): one block per level, every slot of every node pointing at
        // the single block below. An overlapped query over everything would descend 10^11 times.
        {
            const int levels = 12, nodeMax = 10, slot = 40;
            var blocks = new List<byte[]>();
            // The first record's key is all zeros like every slot's low key, so each child's first key matches its slot:
            // only the order of the keys followed gives the DAG away.
            blocks.Add(ShortBlock(0, 19, -1, -1, slot, nodeMax, _ => 0, recordSize: 24, fill: i =>
            {
                var r = RmapRecord(i);
                if (i == 0) { r.AsSpan().Clear(); r[7] = 1; }
                return r;
            }));
            for (int l = 1; l < levels; l++)
            {
                int below = l; // block numbers 1..levels, level l is block l+1
                blocks.Add(ShortBlock(l, nodeMax, -1, -1, slot, nodeMax, _ => below, keyFill: RmapFullRangeKeys));
            }
            list.Add(("crafted-rmapbt-child-dag", BtreeTarget.Encode(BtreeTarget.Kind.Rmapbt, 0, None, levels, levels, blocks, [])));
        }
        // bmbt rooted in an inode fork that claims level 40: deeper than any bmbt can be.
        {
            var fork = new byte[4 + 16 * 4];
            BinaryPrimitives.WriteUInt16BigEndian(fork, 40);
            BinaryPrimitives.WriteUInt16BigEndian(fork.AsSpan(2), 1);
            BinaryPrimitives.WriteInt64BigEndian(fork.AsSpan(4 + 4 * 8), 1);
            var leaf = ShortBlock(0, 0, -1, -1, 8, 0, _ => 0);
            list.Add(("crafted-bmbt-inode-root-too-deep", BtreeTarget.Encode(BtreeTarget.Kind.BmbtInodeRoot, 0, None, 0, 0, [fork, leaf], [])));
        }
        return list;
    }

    /// <summary>A short-form 512-byte block: header fields the harness does not stamp, then records or keys + pointers.</summary>
    static byte[] ShortBlock(int level, int numrecs, long left, long right, int slot, int nodeMax, Func<int, long> child,
        int recordSize = 8, Func<int, byte[]>? fill = null, Action<int, Span<byte>>? keyFill = null)
    {
        var b = new byte[512];
        BinaryPrimitives.WriteUInt16BigEndian(b.AsSpan(4), (ushort)level);
        BinaryPrimitives.WriteUInt16BigEndian(b.AsSpan(6), (ushort)numrecs);
        BinaryPrimitives.WriteUInt32BigEndian(b.AsSpan(8), left < 0 ? uint.MaxValue : (uint)left);
        BinaryPrimitives.WriteUInt32BigEndian(b.AsSpan(12), right < 0 ? uint.MaxValue : (uint)right);
        for (int i = 0; i < numrecs; i++)
        {
            if (level == 0)
            {
                if (fill != null) fill(i).CopyTo(b.AsSpan(56 + i * recordSize));
                else BinaryPrimitives.WriteUInt32BigEndian(b.AsSpan(56 + i * recordSize), (uint)i * 10 + 8);
                continue;
            }
            keyFill?.Invoke(i, b.AsSpan(56 + i * slot, slot));
            BinaryPrimitives.WriteUInt32BigEndian(b.AsSpan(56 + nodeMax * slot + i * 4), (uint)child(i));
        }
        return b;
    }

    /// <summary>An rmapbt node slot whose interval covers every key (low key zero, high key all ones).</summary>
    static void RmapFullRangeKeys(int i, Span<byte> slot)
    {
        slot[..20].Clear();
        slot.Slice(20, 20).Fill(0xFF);
    }

    // ---------------------------------------------------------------- reader

    /// <summary>
    /// Patch lists for the reader target, aimed at the base image's metadata (builds the base image: needs mkfs.xfs):
    /// the clean image, then single-field damage in the superblock, AGF, AGI, an inode, and rmapbt, inobt and bmbt blocks.
    /// </summary>
    public static List<(string Name, byte[] Data)> ReaderSeeds()
    {
        var img = ReaderTarget.Image;
        var meta = img.MetadataBlocks;
        int Find(Func<byte[], bool> match)
        {
            var block = new byte[img.BlockSize];
            using var f = File.OpenHandle(img.WorkPath);
            for (int i = 0; i < meta.Count; i++)
            {
                RandomAccess.Read(f, block, meta[i] * img.BlockSize);
                if (match(block)) return i;
            }
            throw new InvalidOperationException("reader base image lacks a block the seeds need");
        }
        static bool Magic(byte[] b, uint m) => BinaryPrimitives.ReadUInt32BigEndian(b) == m;
        int ag0 = Find(b => Magic(b, 0x58465342));
        int inodes = Find(b => BinaryPrimitives.ReadUInt16BigEndian(b) == 0x494E);
        int rmap = Find(b => Magic(b, 0x524D4233));
        int inobt = Find(b => Magic(b, 0x49414233));
        int bmbt = Find(b => Magic(b, 0x424D4133));
        return
        [
            ("clean", [0]),
            ("clean-dump", [4]),
            ("clean-check-json-force", [10]),
            ("sb-agcount", Patches((ag0, 88, Be32(1000)))),
            ("sb-agblocks", Patches((ag0, 84, Be32(7)))),
            ("agf-rmap-level", Patches((ag0, 512 + 36, Be32(5)))),
            ("agf-rmap-root", Patches((ag0, 512 + 24, Be32(0xFFFFFF)))),
            ("agi-root", Patches((ag0, 1024 + 20, Be32(1)))),
            ("inode-nextents", Patches((inodes, 76, Be32(0xFFFFFFF)))),
            ("inode-format-btree", Patches((inodes, 5, [3]))),
            ("rmapbt-record-length", Patches((rmap, 56 + 4, Be32(0xFFFFFFFF)))),
            ("rmapbt-numrecs", Patches((rmap, 6, [0xFF, 0xFF]))),
            ("inobt-startino", Patches((inobt, 56, Be32(0xFFFFFFC0)))),
            ("bmbt-numrecs", Patches((bmbt, 6, [0x7F, 0xFF]))),
            ("bmbt-record", Patches((bmbt, 72 + 8, [0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF]))),
        ];
    }

    static byte[] Be32(uint v) { var b = new byte[4]; BinaryPrimitives.WriteUInt32BigEndian(b, v); return b; }

    /// <summary>Encodes a reader input: flags 0 (fix CRCs), then (metadata index, offset, bytes) patches.</summary>
    static byte[] Patches(params (int Target, int Offset, byte[] Bytes)[] patches)
    {
        var o = new List<byte> { 0 };
        foreach (var (t, off, bytes) in patches)
        {
            FuzzBytes.U16(o, t);
            FuzzBytes.U16(o, off);
            o.Add((byte)(bytes.Length - 1));
            o.AddRange(bytes);
        }
        return o.ToArray();
    }

    // ---------------------------------------------------------------- orderedmap

    public static List<(string Name, byte[] Data)> OrderedMapSeeds()
    {
        var seeds = new List<(string, byte[])>();
        // 8-byte records: point operations around a small key set.
        var s = new List<byte> { 0 };
        foreach (int k in new[] { 50, 10, 70, 30, 90, 20, 60 }) Op(s, 0, k, 16, k % 256, 8);
        Op(s, 3, 30, 16); Op(s, 3, 31, 16); Op(s, 4, 55, 16); Op(s, 5, 55, 16); Op(s, 4, 5, 16); Op(s, 5, 95, 16);
        Op(s, 6, 20, 16, 70, 16); Op(s, 2, 30, 16); Op(s, 2, 31, 16); Op(s, 0, 50, 16, 1, 8); Op(s, 10); Op(s, 11, 3, 16); Op(s, 11, 4, 16);
        seeds.Add(("r8-points", s.ToArray()));
        // 64-byte records: a run of 2040 inserts makes a three-level tree, then removals force borrows and joins.
        s = [1];
        Op(s, 7, 1000, 16, 255, 8, 0, 8); Op(s, 10); Op(s, 8, 1100, 16, 255, 8); Op(s, 6, 900, 16, 5000, 16);
        Op(s, 8, 2000, 16, 40, 8); Op(s, 3, 1050, 16); Op(s, 4, 1500, 16); Op(s, 5, 1500, 16); Op(s, 10);
        seeds.Add(("r64-runs", s.ToArray()));
        // Bulk load then edits; a refused load on a non-empty map; start over; an unsorted load that must be refused.
        s = [0];
        Op(s, 9, 0, 16, 4000, 16, 3, 8); Op(s, 10); Op(s, 8, 600, 16, 200, 8); Op(s, 7, 1, 16, 100, 8, 2, 8);
        Op(s, 9, 5, 16, 10, 16, 1, 8); Op(s, 12); Op(s, 9, 7, 16, 50, 16, 0, 8); Op(s, 0, 7, 16, 1, 8); Op(s, 10);
        seeds.Add(("r8-bulk", s.ToArray()));
        s = [1];
        Op(s, 9, 100, 16, 3000, 16, 1, 8); Op(s, 11, 101, 16); Op(s, 11, 200, 16); Op(s, 6, 0, 16, 65535, 16);
        Op(s, 8, 0, 16, 255, 8); Op(s, 8, 4080, 16, 255, 8); Op(s, 12); Op(s, 0, 9, 16, 9, 8); Op(s, 10);
        seeds.Add(("r64-bulk", s.ToArray()));
        // Batches (with repeats and wrap-around), upserts, first/last, descending ranges, clear, and the mirrored
        // dictionary's batch upsert; 64-byte records so the batches split and join blocks of a deep tree.
        s = [1];
        Op(s, 13, 500, 16, 255, 8, 3, 8); Op(s, 13, 65400, 16, 200, 8, 1, 8); Op(s, 17); Op(s, 18, 400, 16, 900, 16);
        Op(s, 15, 503, 16, 9, 8); Op(s, 15, 7, 16, 4, 8); Op(s, 19, 490, 16, 120, 8, 2, 8); Op(s, 10);
        Op(s, 14, 500, 16, 255, 8, 6, 8); Op(s, 11, 650, 16); Op(s, 18, 0, 16, 65535, 16); Op(s, 10);
        Op(s, 16); Op(s, 17); Op(s, 13, 0, 16, 40, 8, 0, 8); Op(s, 19, 0, 16, 30, 8, 0, 8); Op(s, 10);
        seeds.Add(("r64-batches", s.ToArray()));
        // The same batches applied in several chunks under one batch call (byte 0, bits 1-2): 8-byte records in chunks
        // of 7 with a queue of at most 5 leaves to rebuild, and 64-byte records in chunks of 64.
        foreach (var (first, name) in new[] { (6, "r8-batches-chunked"), (5, "r64-batches-chunked") })
        {
            s = [(byte)first];
            Op(s, 9, 0, 16, 3000, 16, 2, 8); Op(s, 13, 1, 16, 255, 8, 5, 8); Op(s, 10); Op(s, 14, 3, 16, 255, 8, 4, 8);
            Op(s, 19, 7, 16, 200, 8, 3, 8); Op(s, 10); Op(s, 0, 9, 16, 9, 8); Op(s, 13, 2, 16, 255, 8, 7, 8); Op(s, 10);
            seeds.Add((name, s.ToArray()));
        }
        return seeds;
    }

    /// <summary>Appends an opcode and operands given as (value, bits) pairs.</summary>
    static void Op(List<byte> s, int op, params int[] operands)
    {
        s.Add((byte)op);
        for (int i = 0; i + 1 < operands.Length; i += 2)
        {
            if (operands[i + 1] == 16) FuzzBytes.U16(s, operands[i]);
            else s.Add((byte)operands[i]);
        }
    }
}
