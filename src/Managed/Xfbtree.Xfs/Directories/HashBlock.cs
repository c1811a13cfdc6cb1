using System.Buffers.Binary;
using Xfbtree.Xfs.Write;

namespace Xfbtree.Xfs.Directories;

/// <summary>What a block of a directory's leaf space is.</summary>
internal enum HashBlockKind
{
    /// <summary>The one leaf of a leaf directory: hash entries plus the best-free table of every data block.</summary>
    Leaf1,
    /// <summary>A leaf of a node directory's da btree: hash entries only.</summary>
    LeafN,
    /// <summary>An interior da btree block: (largest hash below, child block) pairs.</summary>
    Node,
}

/// <summary>
/// An in-memory leaf or node block of a directory's hash index (xfs_dir2_leaf.c, xfs_dir2_node.c,
/// xfs_da_btree.c). Header (da3 blkinfo): forw u32, back u32 (file blocks of the siblings at the same level),
/// magic u16, pad, crc, blkno, lsn, uuid, owner; then count u16, stale u16 (leaf) or level u16 (node), pad u32.
/// Entries from byte 64: (hash, data pointer) in a leaf, (hash, child file block) in a node, sorted by hash; a
/// node's hash is the largest hash of its child's subtree. A leaf1 block ends with bests[bestcount] u16 and
/// bestcount u32. Stale leaf entries (data pointer 0) are dropped when parsed: a rewritten leaf has none.
/// </summary>
internal sealed class HashBlock
{
    /// <summary>An empty block of <paramref name="kind"/> (level 0 for leaves).</summary>
    public HashBlock(HashBlockKind kind, int level)
    {
        Kind = kind;
        Level = level;
    }

    /// <summary>Leaf1, leaf-n or node.</summary>
    public HashBlockKind Kind { get; set; }
    /// <summary>File block of the next block at this level (0 = none).</summary>
    public uint Forw { get; set; }
    /// <summary>File block of the previous block at this level (0 = none).</summary>
    public uint Back { get; set; }
    /// <summary>0 for leaves, 1 and up for nodes (1 = children are leaves).</summary>
    public int Level { get; set; }
    /// <summary>(hash, data pointer) for leaves, (hash, child file block) for nodes, in hash order.</summary>
    public List<(uint Hash, uint Value)> Entries { get; } = new();
    /// <summary>Leaf1 only: bestfree[0].length of every data block, <see cref="DirectoryFormat.NullDataOff"/> for a hole.</summary>
    public List<ushort> Bests { get; } = new();
    /// <summary>Stale entries the block had on disk (dropped from <see cref="Entries"/>).</summary>
    public int StaleOnDisk { get; private set; }

    /// <summary>True for leaf1 and leaf-n blocks.</summary>
    public bool IsLeaf => Kind != HashBlockKind.Node;
    /// <summary>The largest hash in the block (its parent's key for it).</summary>
    public uint LastHash => Entries[^1].Hash;

    /// <summary>How many entries the block may hold as it stands.</summary>
    public int Capacity(DirectoryGeometry g) => Kind == HashBlockKind.Leaf1 ? g.Leaf1MaxEntries(Bests.Count) : g.HashBlockMaxEntries;

    /// <summary>Index of the first entry whose hash is at least <paramref name="hash"/> (Count when none).</summary>
    public int LowerBound(uint hash)
    {
        int lo = 0, hi = Entries.Count;
        while (lo < hi)
        {
            int mid = (lo + hi) >>> 1;
            if (Entries[mid].Hash < hash) lo = mid + 1; else hi = mid;
        }
        return lo;
    }

    /// <summary>Index after the last entry whose hash is at most <paramref name="hash"/>.</summary>
    public int UpperBound(uint hash)
    {
        int lo = 0, hi = Entries.Count;
        while (lo < hi)
        {
            int mid = (lo + hi) >>> 1;
            if (Entries[mid].Hash <= hash) lo = mid + 1; else hi = mid;
        }
        return lo;
    }

    /// <summary>The kind a da3 magic names, or null.</summary>
    public static HashBlockKind? KindOf(ushort magic) => magic switch
    {
        DirectoryFormat.Leaf1Magic => HashBlockKind.Leaf1,
        DirectoryFormat.LeafNMagic => HashBlockKind.LeafN,
        DirectoryFormat.NodeMagic => HashBlockKind.Node,
        _ => null,
    };

    static ushort MagicOf(HashBlockKind kind) => kind switch
    {
        HashBlockKind.Leaf1 => DirectoryFormat.Leaf1Magic,
        HashBlockKind.LeafN => DirectoryFormat.LeafNMagic,
        _ => DirectoryFormat.NodeMagic,
    };

    /// <summary>
    /// Parses and checks a leaf or node block (header identity is the caller's): counts within the block, hashes
    /// in order, the stale count, a node's level and child pointers inside the leaf space and aligned to directory
    /// blocks, a leaf1's best-free table clear of its entries. Throws what <paramref name="bad"/> makes.
    /// </summary>
    public static HashBlock Parse(ReadOnlySpan<byte> b, DirectoryGeometry g, Func<string, XfsWriteException> bad)
    {
        int bs = b.Length;
        ushort magic = BinaryPrimitives.ReadUInt16BigEndian(b[DirectoryFormat.DaMagicOffset..]);
        if (KindOf(magic) is not HashBlockKind kind) throw bad($"magic 0x{magic:x4} is not a directory leaf or node");
        int count = BinaryPrimitives.ReadUInt16BigEndian(b[56..]);
        int second = BinaryPrimitives.ReadUInt16BigEndian(b[58..]);
        var h = new HashBlock(kind, kind == HashBlockKind.Node ? second : 0)
        {
            Forw = BinaryPrimitives.ReadUInt32BigEndian(b),
            Back = BinaryPrimitives.ReadUInt32BigEndian(b[4..]),
        };
        int entriesEnd = bs;
        if (kind == HashBlockKind.Leaf1)
        {
            uint bestCount = BinaryPrimitives.ReadUInt32BigEndian(b[(bs - 4)..]);
            if (bestCount == 0 || bestCount > (uint)((bs - DirectoryFormat.DaHeaderSize - 4) / 2)) throw bad($"leaf bestcount {bestCount} impossible");
            entriesEnd = bs - 4 - 2 * (int)bestCount;
            for (int i = 0; i < (int)bestCount; i++) h.Bests.Add(BinaryPrimitives.ReadUInt16BigEndian(b[(entriesEnd + 2 * i)..]));
            if (h.Forw != 0 || h.Back != 0) throw bad("leaf1 block has siblings");
        }
        if (DirectoryFormat.DaHeaderSize + 8L * count > entriesEnd) throw bad($"{count} entries overrun the block");
        if (kind == HashBlockKind.Node)
        {
            if (h.Level < 1 || h.Level >= DirectoryFormat.MaxDaDepth) throw bad($"node level {h.Level}");
            if (count == 0) throw bad("empty node");
        }
        else if (second > count) throw bad($"stale {second} above count {count}");
        int stale = 0;
        uint prev = 0;
        for (int i = 0; i < count; i++)
        {
            var e = b[(DirectoryFormat.DaHeaderSize + 8 * i)..];
            uint hash = BinaryPrimitives.ReadUInt32BigEndian(e), value = BinaryPrimitives.ReadUInt32BigEndian(e[4..]);
            if (i > 0 && hash < prev) throw bad($"entry {i} hash 0x{hash:x8} below its predecessor's 0x{prev:x8}");
            prev = hash;
            if (kind == HashBlockKind.Node)
            {
                if (value < g.LeafFileBlock || value >= g.FreeFileBlock || value % (uint)g.FsbsPerBlock != 0)
                    throw bad($"node entry {i} points at file block {value}, outside the leaf space");
                h.Entries.Add((hash, value));
            }
            else if (value == 0)
            {
                stale++;
            }
            else
            {
                if (g.DbOfPtr(value) >= g.DbOfFileBlock(g.LeafFileBlock) || g.OffsetOfPtr(value) < DirectoryFormat.DataHeaderSize)
                    throw bad($"leaf entry {i} address {value} is not in a data block");
                h.Entries.Add((hash, value));
            }
        }
        if (kind != HashBlockKind.Node && stale != second) throw bad($"stale count {second}, found {stale}");
        h.StaleOnDisk = stale;
        return h;
    }

    /// <summary>Writes the block except the identity fields (crc, blkno, lsn, uuid, owner at 12..55): links,
    /// magic, counts, entries (no stale ones), a leaf1's tail; the rest is zeroed.</summary>
    public void Write(Span<byte> b, DirectoryGeometry g)
    {
        if (Entries.Count > Capacity(g)) throw new InvalidOperationException($"{Entries.Count} entries in a {Kind} block of {Capacity(g)}");
        BinaryPrimitives.WriteUInt32BigEndian(b, Forw);
        BinaryPrimitives.WriteUInt32BigEndian(b[4..], Back);
        BinaryPrimitives.WriteUInt16BigEndian(b[DirectoryFormat.DaMagicOffset..], MagicOf(Kind));
        BinaryPrimitives.WriteUInt16BigEndian(b[10..], 0);
        b[56..].Clear();
        BinaryPrimitives.WriteUInt16BigEndian(b[56..], (ushort)Entries.Count);
        BinaryPrimitives.WriteUInt16BigEndian(b[58..], (ushort)(Kind == HashBlockKind.Node ? Level : 0));
        for (int i = 0; i < Entries.Count; i++)
        {
            BinaryPrimitives.WriteUInt32BigEndian(b[(DirectoryFormat.DaHeaderSize + 8 * i)..], Entries[i].Hash);
            BinaryPrimitives.WriteUInt32BigEndian(b[(DirectoryFormat.DaHeaderSize + 8 * i + 4)..], Entries[i].Value);
        }
        if (Kind == HashBlockKind.Leaf1)
        {
            int bs = b.Length;
            int start = bs - 4 - 2 * Bests.Count;
            for (int i = 0; i < Bests.Count; i++) BinaryPrimitives.WriteUInt16BigEndian(b[(start + 2 * i)..], Bests[i]);
            BinaryPrimitives.WriteUInt32BigEndian(b[(bs - 4)..], (uint)Bests.Count);
        }
    }
}

/// <summary>
/// An in-memory free-index block ("XDF3") of a node directory (xfs_dir2_node.c): dir3 block header, then firstdb,
/// nvalid, nused, pad (u32 each) and bests[nvalid] u16: the largest unused region of data blocks firstdb.. on,
/// <see cref="DirectoryFormat.NullDataOff"/> for a data block that does not exist. Free block k (at the free
/// offset + k directory blocks) covers data blocks k * maxbests onwards.
/// </summary>
internal sealed class FreeIndexBlock
{
    /// <summary>An empty free-index block covering data blocks from <paramref name="firstDb"/>.</summary>
    public FreeIndexBlock(int firstDb) => FirstDb = firstDb;

    /// <summary>First data block this block covers.</summary>
    public int FirstDb { get; }
    /// <summary>Best-free slots (nvalid of them).</summary>
    public List<ushort> Bests { get; } = new();
    /// <summary>nused: slots naming an existing data block.</summary>
    public int Used => Bests.Count(b => b != DirectoryFormat.NullDataOff);

    /// <summary>Parses and checks a free-index block (header identity is the caller's): magic, firstdb as its
    /// place says, nvalid within the block, nused equal to the non-null slots.</summary>
    public static FreeIndexBlock Parse(ReadOnlySpan<byte> b, DirectoryGeometry g, int expectedFirstDb, Func<string, XfsWriteException> bad)
    {
        if (BinaryPrimitives.ReadUInt32BigEndian(b) != DirectoryFormat.FreeMagic) throw bad("not a free-index block");
        int firstDb = BinaryPrimitives.ReadInt32BigEndian(b[48..]);
        int nvalid = BinaryPrimitives.ReadInt32BigEndian(b[52..]);
        int nused = BinaryPrimitives.ReadInt32BigEndian(b[56..]);
        if (firstDb != expectedFirstDb) throw bad($"firstdb {firstDb}, expected {expectedFirstDb}");
        if (nvalid < 0 || nvalid > g.FreeMaxBests || nused < 0 || nused > nvalid) throw bad($"nvalid {nvalid} nused {nused} impossible");
        var f = new FreeIndexBlock(firstDb);
        for (int i = 0; i < nvalid; i++) f.Bests.Add(BinaryPrimitives.ReadUInt16BigEndian(b[(DirectoryFormat.DaHeaderSize + 2 * i)..]));
        if (f.Used != nused) throw bad($"nused {nused}, counted {f.Used}");
        return f;
    }

    /// <summary>Writes everything after the 48-byte dir3 block header.</summary>
    public void Write(Span<byte> b)
    {
        b[48..].Clear();
        BinaryPrimitives.WriteInt32BigEndian(b[48..], FirstDb);
        BinaryPrimitives.WriteInt32BigEndian(b[52..], Bests.Count);
        BinaryPrimitives.WriteInt32BigEndian(b[56..], Used);
        for (int i = 0; i < Bests.Count; i++) BinaryPrimitives.WriteUInt16BigEndian(b[(DirectoryFormat.DaHeaderSize + 2 * i)..], Bests[i]);
    }
}
