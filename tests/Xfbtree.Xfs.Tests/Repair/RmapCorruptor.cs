using System.Buffers.Binary;
using System.Globalization;
using Xfbtree.Xfs.Tests.Trees;

namespace Xfbtree.Xfs.Tests.Repair;

/// <summary>
/// Damages the rmap btree of one AG of an unmounted image in place, one of 19 kinds, deterministically from a seed
/// (the same image, kind, seed and AG give the same change). It reads and writes raw bytes with its own knowledge of
/// the on-disk layout (superblock, AGF, short-form btree blocks) so that it does not trust the code it is used to
/// test; every block it changes gets a correct CRC unless the kind is a bad CRC.
/// </summary>
internal static class RmapCorruptor
{
    /// <summary>The kinds and what each does.</summary>
    public static readonly IReadOnlyList<(string Kind, string What)> Kinds =
    [
        ("rec-startblock", "a leaf record's startblock set to another in-AG value"),
        ("rec-blockcount", "a leaf record's blockcount made larger"),
        ("rec-owner", "a leaf record's owner set to another inode number"),
        ("rec-offset", "a data record's file offset changed"),
        ("rec-flags", "one flag of a record (unwritten, attr fork, bmbt block) flipped"),
        ("rec-missing", "one record deleted from a leaf"),
        ("rec-extra", "a bogus record inserted: a neighbour's copy with owner + 1, key order kept"),
        ("rec-extra-free", "a bogus record inserted that maps free space to an inode, key order kept"),
        ("rec-swap", "two adjacent records of a leaf swapped"),
        ("leaf-zero", "a whole leaf block overwritten with zeroes"),
        ("leaf-crc", "a leaf block's CRC made wrong, contents intact"),
        ("leaf-magic", "a leaf block's magic changed RMB3 -> RMB4"),
        ("leaf-numrecs", "a leaf block's numrecs increased by one"),
        ("leaf-sibling", "a leaf block's right sibling pointed at a wrong block"),
        ("node-key", "a node's low key startblock changed"),
        ("node-ptr", "a node's child pointer redirected to another leaf"),
        ("agf-root", "the AGF's rmap root pointed at the bnobt root"),
        ("agf-level", "the AGF's rmap level increased by one"),
        ("agf-blocks", "the AGF's rmap block count increased by 7"),
    ];

    const uint RmapMagic = 0x524d4233, BnoMagic = 0x41423342; // "RMB3", "AB3B"
    const int Header = 56, RecordSize = 24, KeySize = 20, PtrSize = 4, BlockCrc = 52, AgfCrc = 216;
    const int AgfRoots = 16, AgfLevels = 28, AgfRmapBlocks = 80;
    const ulong AttrFork = 1UL << 63, BmbtBlock = 1UL << 62, Unwritten = 1UL << 61;

    /// <summary>Applies <paramref name="kind"/>; returns a line saying what changed. Throws when the kind cannot apply.</summary>
    public static string Apply(string image, string kind, int seed, uint agno)
    {
        if (!Kinds.Any(k => k.Kind == kind)) throw new ArgumentException($"unknown corruption kind '{kind}'", nameof(kind));
        using var file = File.OpenHandle(image, FileMode.Open, FileAccess.ReadWrite);
        var sb = new byte[512];
        RandomAccess.Read(file, sb, 0);
        var geo = new FixtureGeometry(sb);
        if (agno >= geo.AgCount) throw new ArgumentOutOfRangeException(nameof(agno), $"AG {agno} of {geo.AgCount}");
        var ag = new Ag(file, geo, agno);
        var rng = new Random(seed * 7919 + (int)agno);
        return kind + ": " + (kind switch
        {
            "agf-root" => ag.EditAgf(AgfRoots + 8, v => ag.AgfWord(AgfRoots), "rmaproot"),
            "agf-level" => ag.EditAgf(AgfLevels + 8, v => v + 1, "rmaplevel"),
            "agf-blocks" => ag.EditAgf(AgfRmapBlocks, v => v + 7, "rmapblocks"),
            "node-key" or "node-ptr" => NodeKind(ag, kind, rng),
            _ => LeafKind(ag, kind, rng),
        });
    }

    static string NodeKind(Ag ag, string kind, Random rng)
    {
        if (ag.Nodes.Count == 0) throw new InvalidOperationException($"AG {ag.Agno}: the rmapbt is a single level (one leaf): there is no node to damage");
        uint agbno = ag.Nodes[rng.Next(ag.Nodes.Count)];
        byte[] b = ag.Read(agbno);
        int n = BinaryPrimitives.ReadUInt16BigEndian(b.AsSpan(6));
        int i = n > 1 ? rng.Next(1, n) : 0;
        string what;
        if (kind == "node-key")
        {
            int at = Header + i * 2 * KeySize;
            uint old = BinaryPrimitives.ReadUInt32BigEndian(b.AsSpan(at));
            uint now = old + (uint)rng.Next(16, 100);
            BinaryPrimitives.WriteUInt32BigEndian(b.AsSpan(at), now);
            what = $"keys[{i}].startblock {old} -> {now}";
        }
        else
        {
            int max = (ag.Geo.BlockSize - Header) / (2 * KeySize + PtrSize);
            int at = Header + max * 2 * KeySize + i * PtrSize;
            uint old = BinaryPrimitives.ReadUInt32BigEndian(b.AsSpan(at));
            var others = ag.Leaves.Where(l => l != old).ToList();
            uint now = others[rng.Next(others.Count)];
            BinaryPrimitives.WriteUInt32BigEndian(b.AsSpan(at), now);
            what = $"ptrs[{i}] {old} -> {now}";
        }
        ag.Write(agbno, b, fixCrc: true);
        return $"AG {ag.Agno} rmapbt node agbno {agbno} {what}";
    }

    static string LeafKind(Ag ag, string kind, Random rng)
    {
        int recordsMax = (ag.Geo.BlockSize - Header) / RecordSize;
        // A leaf (and record) the kind can apply to, chosen by the seed among all that fit.
        var leaves = ag.Leaves.OrderBy(_ => rng.Next()).ToList();
        foreach (uint agbno in leaves)
        {
            byte[] b = ag.Read(agbno);
            int n = BinaryPrimitives.ReadUInt16BigEndian(b.AsSpan(6));
            Span<byte> Rec(int i) => b.AsSpan(Header + i * RecordSize, RecordSize);
            string where = $"AG {ag.Agno} rmapbt leaf agbno {agbno}";
            var order = Enumerable.Range(0, n).OrderBy(_ => rng.Next()).ToList();
            bool IsInode(int i) => (long)BinaryPrimitives.ReadUInt64BigEndian(Rec(i)[8..]) >= 0;
            bool IsData(int i) => IsInode(i) && (BinaryPrimitives.ReadUInt64BigEndian(Rec(i)[16..]) & (AttrFork | BmbtBlock)) == 0;
            // Inode data records first (the realistic target); a tree without any (a fresh filesystem) gets a special
            // owner's record instead.
            List<int> dataFirst = [.. order.Where(IsData), .. order.Where(i => !IsData(i))];
            switch (kind)
            {
                case "leaf-zero":
                    Array.Clear(b);
                    ag.Write(agbno, b, fixCrc: false);
                    return $"{where} ({n} records) overwritten with zeroes";
                case "leaf-crc":
                    b[BlockCrc] ^= 0xFF;
                    ag.Write(agbno, b, fixCrc: false);
                    return $"{where}: crc invalidated";
                case "leaf-magic":
                    BinaryPrimitives.WriteUInt32BigEndian(b, RmapMagic + 1);
                    ag.Write(agbno, b, fixCrc: true);
                    return $"{where}: magic 0x{RmapMagic:x8} -> 0x{RmapMagic + 1:x8}";
                case "leaf-numrecs" when n < recordsMax:
                    BinaryPrimitives.WriteUInt16BigEndian(b.AsSpan(6), (ushort)(n + 1));
                    ag.Write(agbno, b, fixCrc: true);
                    return $"{where}: numrecs {n} -> {n + 1}";
                case "leaf-sibling":
                {
                    uint old = BinaryPrimitives.ReadUInt32BigEndian(b.AsSpan(12));
                    uint now = ag.Leaves.Where(l => l != old && l != agbno).OrderBy(_ => rng.Next()).FirstOrDefault(ag.AgLength / 2);
                    BinaryPrimitives.WriteUInt32BigEndian(b.AsSpan(12), now);
                    ag.Write(agbno, b, fixCrc: true);
                    return $"{where}: rightsib {old} -> {now}";
                }
                case "rec-swap" when n >= 2:
                {
                    int i = rng.Next(n - 1);
                    var first = Rec(i).ToArray();
                    Rec(i + 1).CopyTo(Rec(i));
                    first.CopyTo(Rec(i + 1));
                    ag.Write(agbno, b, fixCrc: true);
                    return $"{where}: swapped records {i} and {i + 1}";
                }
                case "rec-missing" when n >= 2:
                {
                    int i = rng.Next(1, n);
                    string gone = Show(Rec(i));
                    b.AsSpan(Header + (i + 1) * RecordSize, (n - i - 1) * RecordSize).CopyTo(b.AsSpan(Header + i * RecordSize));
                    b.AsSpan(Header + (n - 1) * RecordSize, RecordSize).Clear();
                    BinaryPrimitives.WriteUInt16BigEndian(b.AsSpan(6), (ushort)(n - 1));
                    ag.Write(agbno, b, fixCrc: true);
                    return $"{where}: deleted record {i} {gone}";
                }
                case "rec-startblock":
                {
                    int i = order[0];
                    uint old = BinaryPrimitives.ReadUInt32BigEndian(Rec(i));
                    uint now = (uint)rng.Next(1, (int)ag.AgLength - 1);
                    if (now == old) now = old / 2 + 1;
                    BinaryPrimitives.WriteUInt32BigEndian(Rec(i), now);
                    ag.Write(agbno, b, fixCrc: true);
                    return $"{where} recs[{i}]: startblock {old} -> {now}";
                }
                case "rec-blockcount":
                    foreach (int i in order)
                    {
                        uint start = BinaryPrimitives.ReadUInt32BigEndian(Rec(i)), old = BinaryPrimitives.ReadUInt32BigEndian(Rec(i)[4..]);
                        // Well past the extent, into blocks that belong to others or are free, but inside the AG.
                        uint now = old + 1024 + (uint)rng.Next(1024);
                        if (start + now > ag.AgLength) continue;
                        BinaryPrimitives.WriteUInt32BigEndian(Rec(i)[4..], now);
                        ag.Write(agbno, b, fixCrc: true);
                        return $"{where} recs[{i}]: blockcount {old} -> {now}";
                    }
                    break;
                case "rec-owner":
                    foreach (int i in dataFirst)
                    {
                        ulong old = BinaryPrimitives.ReadUInt64BigEndian(Rec(i)[8..]);
                        ulong now = IsInode(i) ? old + 1 + (ulong)rng.Next(1, 1 << 20) : 128 + (ulong)rng.Next(1, 1 << 20);
                        BinaryPrimitives.WriteUInt64BigEndian(Rec(i)[8..], now);
                        ag.Write(agbno, b, fixCrc: true);
                        return $"{where} recs[{i}]: owner {old} -> {now}";
                    }
                    break;
                case "rec-offset":
                    foreach (int i in dataFirst)
                    {
                        ulong raw = BinaryPrimitives.ReadUInt64BigEndian(Rec(i)[16..]);
                        ulong old = raw & ~(AttrFork | BmbtBlock | Unwritten);
                        ulong now = old + (ulong)rng.Next(1, 1000);
                        BinaryPrimitives.WriteUInt64BigEndian(Rec(i)[16..], now | (raw & Unwritten));
                        ag.Write(agbno, b, fixCrc: true);
                        return $"{where} recs[{i}]: offset {old} -> {now}";
                    }
                    break;
                case "rec-flags":
                    foreach (int i in dataFirst)
                    {
                        ulong raw = BinaryPrimitives.ReadUInt64BigEndian(Rec(i)[16..]);
                        (ulong flag, string name) = rng.Next(3) switch { 0 => (Unwritten, "unwritten"), 1 => (AttrFork, "attrfork"), _ => (BmbtBlock, "bmbt") };
                        BinaryPrimitives.WriteUInt64BigEndian(Rec(i)[16..], raw ^ flag);
                        ag.Write(agbno, b, fixCrc: true);
                        return $"{where} recs[{i}]: {name} {((raw & flag) != 0 ? "1 -> 0" : "0 -> 1")}";
                    }
                    break;
                case "rec-extra" when n < recordsMax:
                    foreach (int i in dataFirst.Where(i => i + 1 < n))
                    {
                        var copy = Rec(i).ToArray();
                        BinaryPrimitives.WriteUInt64BigEndian(copy.AsSpan(8), BinaryPrimitives.ReadUInt64BigEndian(copy.AsSpan(8)) + 1);
                        if (Compare(copy, Rec(i + 1)) >= 0) continue;   // keep key order
                        Insert(b, n, i + 1, copy);
                        ag.Write(agbno, b, fixCrc: true);
                        return $"{where} recs[{i + 1}]: inserted {Show(copy)} after {Show(Rec(i))}";
                    }
                    break;
                case "rec-extra-free" when n < recordsMax:
                    foreach (var (start, length) in ag.FreeExtents().OrderBy(_ => rng.Next()))
                    {
                        var bogus = new byte[RecordSize];
                        int owner = order.FirstOrDefault(IsInode, -1);
                        BinaryPrimitives.WriteUInt32BigEndian(bogus, start);
                        BinaryPrimitives.WriteUInt32BigEndian(bogus.AsSpan(4), Math.Min(length, 4u));
                        if (owner >= 0) Rec(owner)[8..16].CopyTo(bogus.AsSpan(8));
                        else BinaryPrimitives.WriteUInt64BigEndian(bogus.AsSpan(8), 131);   // an inode number, as an owner would be
                        BinaryPrimitives.WriteUInt64BigEndian(bogus.AsSpan(16), 513);
                        // Inside this leaf's key range, never first (the parent's low key stays right).
                        int at = 0;
                        while (at < n && Compare(Rec(at), bogus) < 0) at++;
                        if (at == 0 || at == n) continue;
                        Insert(b, n, at, bogus);
                        ag.Write(agbno, b, fixCrc: true);
                        return $"{where} recs[{at}]: inserted {Show(bogus)} mapping free extent ({start}, len {length})";
                    }
                    break;
            }
        }
        throw new InvalidOperationException($"AG {ag.Agno}: no rmapbt leaf where {kind} applies");
    }

    static void Insert(byte[] b, int n, int at, ReadOnlySpan<byte> record)
    {
        b.AsSpan(Header + at * RecordSize, (n - at) * RecordSize).CopyTo(b.AsSpan(Header + (at + 1) * RecordSize));
        record.CopyTo(b.AsSpan(Header + at * RecordSize));
        BinaryPrimitives.WriteUInt16BigEndian(b.AsSpan(6), (ushort)(n + 1));
    }

    /// <summary>rmapbt key order: startblock, owner, offset (with the attr and bmbt flags, without unwritten).</summary>
    static int Compare(ReadOnlySpan<byte> x, ReadOnlySpan<byte> y)
    {
        int c = BinaryPrimitives.ReadUInt32BigEndian(x).CompareTo(BinaryPrimitives.ReadUInt32BigEndian(y));
        if (c != 0) return c;
        c = BinaryPrimitives.ReadUInt64BigEndian(x[8..]).CompareTo(BinaryPrimitives.ReadUInt64BigEndian(y[8..]));
        if (c != 0) return c;
        return (BinaryPrimitives.ReadUInt64BigEndian(x[16..]) & ~Unwritten).CompareTo(BinaryPrimitives.ReadUInt64BigEndian(y[16..]) & ~Unwritten);
    }

    static string Show(ReadOnlySpan<byte> r) => string.Create(CultureInfo.InvariantCulture,
        $"[{BinaryPrimitives.ReadUInt32BigEndian(r)}, {BinaryPrimitives.ReadUInt32BigEndian(r[4..])}, {(long)BinaryPrimitives.ReadUInt64BigEndian(r[8..])}, 0x{BinaryPrimitives.ReadUInt64BigEndian(r[16..]):x}]");

    /// <summary>One AG: its AGF, and its rmapbt's leaves and nodes found by walking down from the AGF root.</summary>
    sealed class Ag
    {
        readonly Microsoft.Win32.SafeHandles.SafeFileHandle _file;
        readonly byte[] _agf;

        public Ag(Microsoft.Win32.SafeHandles.SafeFileHandle file, FixtureGeometry geo, uint agno)
        {
            _file = file;
            Geo = geo;
            Agno = agno;
            AgLength = geo.AgLength(agno);
            _agf = new byte[geo.SectorSize];
            RandomAccess.Read(file, _agf, AgfOffset);
            if (BinaryPrimitives.ReadUInt32BigEndian(_agf) != 0x58414746) throw new InvalidDataException($"AG {agno}: no AGF magic");
            var level = new List<uint> { AgfWord(AgfRoots + 8) };
            for (uint height = AgfWord(AgfLevels + 8); height > 1; height--)
            {
                Nodes.AddRange(level);
                level = level.SelectMany(Children).ToList();
            }
            Leaves.AddRange(level);
        }

        public FixtureGeometry Geo { get; }
        public uint Agno { get; }
        public uint AgLength { get; }
        public List<uint> Nodes { get; } = [];
        public List<uint> Leaves { get; } = [];
        long AgfOffset => ((long)Agno * Geo.AgBlocks) * Geo.BlockSize + Geo.SectorSize;

        public uint AgfWord(int offset) => BinaryPrimitives.ReadUInt32BigEndian(_agf.AsSpan(offset));

        public string EditAgf(int offset, Func<uint, uint> edit, string name)
        {
            uint old = AgfWord(offset), now = edit(old);
            BinaryPrimitives.WriteUInt32BigEndian(_agf.AsSpan(offset), now);
            BinaryPrimitives.WriteUInt32LittleEndian(_agf.AsSpan(AgfCrc), Crc32C.Compute(_agf, AgfCrc));
            RandomAccess.Write(_file, _agf, AgfOffset);
            return $"AG {Agno} agf {name} {old} -> {now}";
        }

        public byte[] Read(uint agbno)
        {
            var b = new byte[Geo.BlockSize];
            if (RandomAccess.Read(_file, b, Offset(agbno)) != b.Length) throw new InvalidDataException($"AG {Agno} block {agbno}: short read");
            return b;
        }

        public void Write(uint agbno, byte[] b, bool fixCrc)
        {
            if (fixCrc) BinaryPrimitives.WriteUInt32LittleEndian(b.AsSpan(BlockCrc), Crc32C.Compute(b, BlockCrc));
            RandomAccess.Write(_file, b, Offset(agbno));
        }

        long Offset(uint agbno) => ((long)Agno * Geo.AgBlocks + agbno) * Geo.BlockSize;

        IEnumerable<uint> Children(uint node)
        {
            byte[] b = Read(node);
            if (BinaryPrimitives.ReadUInt32BigEndian(b) != RmapMagic) throw new InvalidDataException($"AG {Agno} block {node}: not an rmapbt block");
            int n = BinaryPrimitives.ReadUInt16BigEndian(b.AsSpan(6));
            int max = (Geo.BlockSize - Header) / (2 * KeySize + PtrSize);
            for (int i = 0; i < n; i++) yield return BinaryPrimitives.ReadUInt32BigEndian(b.AsSpan(Header + max * 2 * KeySize + i * PtrSize));
        }

        /// <summary>Free extents (start, length) from the bnobt leaves.</summary>
        public IEnumerable<(uint Start, uint Length)> FreeExtents()
        {
            var level = new List<uint> { AgfWord(AgfRoots) };
            for (uint height = AgfWord(AgfLevels); height > 1; height--)
            {
                level = level.SelectMany(node =>
                {
                    byte[] b = Read(node);
                    int n = BinaryPrimitives.ReadUInt16BigEndian(b.AsSpan(6));
                    int max = (Geo.BlockSize - Header) / (8 + PtrSize);
                    return Enumerable.Range(0, n).Select(i => BinaryPrimitives.ReadUInt32BigEndian(b.AsSpan(Header + max * 8 + i * PtrSize))).ToList();
                }).ToList();
            }
            foreach (uint leaf in level)
            {
                byte[] b = Read(leaf);
                if (BinaryPrimitives.ReadUInt32BigEndian(b) != BnoMagic) throw new InvalidDataException($"AG {Agno} block {leaf}: not a bnobt block");
                int n = BinaryPrimitives.ReadUInt16BigEndian(b.AsSpan(6));
                for (int i = 0; i < n; i++)
                    yield return (BinaryPrimitives.ReadUInt32BigEndian(b.AsSpan(Header + i * 8)), BinaryPrimitives.ReadUInt32BigEndian(b.AsSpan(Header + i * 8 + 4)));
            }
        }
    }
}
