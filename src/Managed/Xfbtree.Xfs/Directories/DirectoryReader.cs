using System.Buffers.Binary;
using Xfbtree.Buffers;
using Xfbtree.Xfs.Format;
using Xfbtree.Xfs.Write;

namespace Xfbtree.Xfs.Directories;

/// <summary>How a directory is stored (xfs_dir2_isblock / isleaf).</summary>
internal enum DirectoryLayout
{
    /// <summary>Inline in the inode (LOCAL data fork).</summary>
    Shortform,
    /// <summary>One directory block at offset 0 holding data, leaf and tail.</summary>
    Block,
    /// <summary>Data blocks plus one leaf block at the 32 GiB offset.</summary>
    Leaf,
    /// <summary>Data blocks, a da-btree of leaf blocks and free-index blocks.</summary>
    Node,
}

/// <summary>Reads <c>destination.Length</c> bytes of committed blocks starting at fs block <c>fsbno</c>.</summary>
internal delegate void FsBlockReader(ulong fsbno, Span<byte> destination);

/// <summary>The file types stored in the '.' and '..' entries of a block, leaf or node directory (ftype feature).</summary>
internal readonly record struct DotEntryTypes(byte Dot, byte DotDot);

/// <summary>
/// Read-only access to directories of every format: the data-fork mapping (extent list or bmbt), the layout,
/// and the live entries. Every directory block is checked (magic, CRC, blkno, owner, UUID, entry structure)
/// before anything in it is trusted; damage is an <see cref="XfsWriteException"/> Corrupt naming the directory.
/// </summary>
internal sealed class DirectoryReader
{
    readonly XfsImage _image;
    readonly XfsGeometry _geo;

    public DirectoryReader(XfsImage image)
    {
        _image = image;
        _geo = image.Geometry;
        DirBlockFsbs = 1 << image.Superblock.DirBlockLog;
        DirBlockSize = _geo.BlockSize * DirBlockFsbs;
        HasFtype = (image.Superblock.FeaturesIncompat & Superblock.IncompatFtype) != 0;
        LeafOffsetFsb = (ulong)(DirectoryFormat.LeafOffsetBytes >> _geo.BlockLog);
        Geometry = new DirectoryGeometry(image.Superblock);
    }

    /// <summary>Sizes and address arithmetic of this filesystem's directories.</summary>
    public DirectoryGeometry Geometry { get; }

    public int DirBlockFsbs { get; }
    public int DirBlockSize { get; }
    public bool HasFtype { get; }
    public ulong LeafOffsetFsb { get; }

    /// <summary>The data-fork extents of a verified inode, in file-offset order (extents or btree format).</summary>
    public List<BmbtExtent> DataExtents(ulong ino, ReadOnlySpan<byte> core, string where)
    {
        var d = new Dinode(core);
        var list = new List<BmbtExtent>();
        switch (d.Format)
        {
            case ForkFormat.Extents:
                {
                    ulong n = d.DataExtents;
                    var fork = d.DataFork;
                    if (n > (ulong)(fork.Length / Dinode.ExtentSize)) throw Corrupt(where, $"{n} extents do not fit the data fork");
                    for (int k = 0; k < (int)n; k++) list.Add(BmbtExtent.Read(fork[(k * Dinode.ExtentSize)..]));
                    break;
                }
            case ForkFormat.Btree:
                {
                    var tree = _image.OpenBmbt(ino, d.DataFork);
                    using var cursor = tree.CreateCursor();
                    try
                    {
                        for (bool ok = cursor.MoveFirst(); ok && cursor.HasRecord; ok = cursor.Increment())
                        {
                            list.Add(BmbtExtent.Read(cursor.Current));
                            if (list.Count > 1 << 24) throw Corrupt(where, "bmbt holds more extents than a directory can");
                        }
                    }
                    catch (CorruptionException e) { throw Corrupt(where, e.Message); }
                    break;
                }
            default:
                throw Corrupt(where, $"data fork format {(int)d.Format} has no extents");
        }
        ulong next = 0;
        foreach (var e in list)
        {
            if (e.Validate(_geo) is { } why) throw Corrupt(where, why);
            if (e.StartOffset < next) throw Corrupt(where, "extents overlap or are out of order");
            next = e.StartOffset + e.BlockCount;
        }
        return list;
    }

    /// <summary>The layout of a directory from its format and mapping (the last mapped offset decides).</summary>
    public DirectoryLayout Layout(ReadOnlySpan<byte> core, List<BmbtExtent>? extents, string where)
    {
        var d = new Dinode(core);
        if (d.Format == ForkFormat.Local) return DirectoryLayout.Shortform;
        if (extents == null || extents.Count == 0) throw Corrupt(where, "a directory without blocks in extents or btree format");
        ulong end = extents[^1].StartOffset + extents[^1].BlockCount;
        if (end == (ulong)DirBlockFsbs)
        {
            if (d.Size != (ulong)DirBlockSize) throw Corrupt(where, $"block directory with di_size {d.Size}, expected {DirBlockSize}");
            return DirectoryLayout.Block;
        }
        if (end == LeafOffsetFsb + (ulong)DirBlockFsbs) return DirectoryLayout.Leaf;
        return DirectoryLayout.Node;
    }

    /// <summary>Reads directory block at file block <paramref name="fileBlock"/> through the mapping (the pieces may
    /// lie in several extents). Null when it is not fully mapped. Checks the dir3 header against
    /// <paramref name="magic"/>, the CRC, blkno, owner and UUID.</summary>
    public byte[]? ReadDirBlock(ulong ino, List<BmbtExtent> extents, ulong fileBlock, uint magic, FsBlockReader read, string where)
    {
        var buf = new byte[DirBlockSize];
        ulong firstFsb = 0;
        for (int i = 0; i < DirBlockFsbs;)
        {
            ulong fb = fileBlock + (ulong)i;
            int k = extents.FindIndex(e => e.StartOffset <= fb && fb < e.StartOffset + e.BlockCount);
            if (k < 0) return null;
            var e = extents[k];
            ulong fsb = e.StartBlock + (fb - e.StartOffset);
            int run = (int)Math.Min((ulong)(DirBlockFsbs - i), e.StartOffset + e.BlockCount - fb);
            if (i == 0) firstFsb = fsb;
            read(fsb, buf.AsSpan(i * _geo.BlockSize, run * _geo.BlockSize));
            i += run;
        }
        CheckHeader(buf, ino, DaddrOf(firstFsb), magic, $"{where}: directory block at offset {fileBlock}");
        return buf;
    }

    public long DaddrOf(ulong fsbno) => _geo.AgBlockToDaddr(_geo.FsbToAgno(fsbno), _geo.FsbToAgbno(fsbno));

    /// <summary>Checks a dir3 data/block header; throws Corrupt.</summary>
    public void CheckHeader(ReadOnlySpan<byte> block, ulong ino, long daddr, uint magic, string where)
    {
        uint m = BinaryPrimitives.ReadUInt32BigEndian(block);
        if (m != magic) throw Corrupt(where, $"magic 0x{m:x8}, expected 0x{magic:x8}");
        if (!XfsCrc.Verify(block, DirectoryFormat.CrcOffset)) throw Corrupt(where, "bad CRC");
        long blkno = (long)BinaryPrimitives.ReadUInt64BigEndian(block[8..]);
        if (blkno != daddr) throw Corrupt(where, $"blkno {blkno}, expected {daddr}");
        if (!block.Slice(24, 16).SequenceEqual(_geo.MetaUuid)) throw Corrupt(where, "metadata UUID mismatch");
        ulong owner = BinaryPrimitives.ReadUInt64BigEndian(block[40..]);
        if (owner != ino) throw Corrupt(where, $"owner {owner}, expected inode {ino}");
    }

    /// <summary>
    /// Every live entry of a directory ("." and ".." excluded) and its parent, in directory order (offset order
    /// within each data block, blocks in file order).
    /// </summary>
    public (ulong Parent, List<DataEntry> Entries, DirectoryLayout Layout) ReadAll(ulong ino, ReadOnlySpan<byte> core, FsBlockReader read, string where)
        => ReadAll(ino, core, read, where, out _);

    /// <summary>
    /// As <see cref="ReadAll(ulong, ReadOnlySpan{byte}, FsBlockReader, string)"/>, and the file types the '.' and '..'
    /// entries carry (<paramref name="dotTypes"/>): a block, leaf or node directory stores both as entries with a
    /// file type byte under the ftype feature (the kernel writes "directory" in both); a shortform directory stores
    /// neither ('..' is its parent field, '.' implied), nor does a directory without the feature: null then.
    /// </summary>
    public (ulong Parent, List<DataEntry> Entries, DirectoryLayout Layout) ReadAll(ulong ino, ReadOnlySpan<byte> core, FsBlockReader read, string where, out DotEntryTypes? dotTypes)
    {
        dotTypes = null;
        var d = new Dinode(core);
        if ((d.Mode & 0xF000) != 0x4000) throw new XfsWriteException(WriteErrorKind.NotDirectory, $"{where} is not a directory");
        if (d.Format == ForkFormat.Local)
        {
            var sf = ShortformDirectory.Parse(d.DataFork, (long)d.Size, HasFtype, DirBlockSize, where);
            return (sf.Parent, sf.Entries.Select(e => new DataEntry(e.Name, e.Ino, e.FileType, e.Offset)).ToList(), DirectoryLayout.Shortform);
        }
        var extents = DataExtents(ino, core, where);
        var layout = Layout(core, extents, where);
        var all = new List<DataEntry>();
        if (layout == DirectoryLayout.Block)
        {
            var block = ReadDirBlock(ino, extents, 0, DirectoryFormat.BlockMagic, read, where)
                ?? throw Corrupt(where, "directory block not mapped");
            all.AddRange(BlockDirectory.Parse(block, HasFtype, where).Entries);
        }
        else
        {
            var starts = new SortedSet<ulong>();
            foreach (var e in extents)
            {
                if (e.StartOffset >= LeafOffsetFsb) break;
                ulong last = Math.Min(e.StartOffset + e.BlockCount, LeafOffsetFsb);
                for (ulong fb = e.StartOffset - e.StartOffset % (ulong)DirBlockFsbs; fb < last; fb += (ulong)DirBlockFsbs)
                    starts.Add(fb);
            }
            foreach (ulong fb in starts)
            {
                var block = ReadDirBlock(ino, extents, fb, DirectoryFormat.DataMagic, read, where)
                    ?? throw Corrupt(where, $"data block at offset {fb} only partly mapped");
                all.AddRange(DataBlock.Parse(block, HasFtype, why => Corrupt(where, $"data block at offset {fb}: {why}")).Entries);
            }
        }
        ulong parent = 0;
        bool dot = false, dotdot = false;
        byte dotType = 0, dotdotType = 0;
        var result = new List<DataEntry>(all.Count);
        foreach (var e in all)
        {
            if (DirectoryFormat.IsDot(e.Name)) { dot = true; dotType = e.FileType; continue; }
            if (DirectoryFormat.IsDotDot(e.Name)) { dotdot = true; parent = e.Ino; dotdotType = e.FileType; continue; }
            result.Add(e);
        }
        if (!dot || !dotdot) throw Corrupt(where, "'.' or '..' entry missing");
        if (HasFtype) dotTypes = new DotEntryTypes(dotType, dotdotType);
        return (parent, result, layout);
    }

    /// <summary>
    /// The inode <paramref name="name"/> names in a directory (".." gives the parent, "." the directory), or null.
    /// Leaf and node directories are searched through their hash index (the da btree descended by the name's
    /// hash, equal hashes followed over sibling leaves), reading only the blocks on the way; every block read is
    /// verified first.
    /// </summary>
    public ulong? Lookup(ulong ino, ReadOnlySpan<byte> core, ReadOnlySpan<byte> name, FsBlockReader read, string where)
    {
        if (DirectoryFormat.IsDot(name)) return ino;
        var d = new Dinode(core);
        if ((d.Mode & 0xF000) != 0x4000) throw new XfsWriteException(WriteErrorKind.NotDirectory, $"{where} is not a directory");
        if (d.Format == ForkFormat.Local)
        {
            var sf = ShortformDirectory.Parse(d.DataFork, (long)d.Size, HasFtype, DirBlockSize, where);
            return DirectoryFormat.IsDotDot(name) ? sf.Parent : sf.Find(name)?.Ino;
        }
        var extents = DataExtents(ino, core, where);
        var layout = Layout(core, extents, where);
        if (layout == DirectoryLayout.Block || DirectoryFormat.IsDotDot(name))
        {
            uint magic = layout == DirectoryLayout.Block ? DirectoryFormat.BlockMagic : DirectoryFormat.DataMagic;
            var block = ReadDirBlock(ino, extents, 0, magic, read, where) ?? throw Corrupt(where, "directory block 0 not mapped");
            var entries = layout == DirectoryLayout.Block
                ? BlockDirectory.Parse(block, HasFtype, where).Entries
                : DataBlock.Parse(block, HasFtype, why => Corrupt(where, $"data block 0: {why}")).Entries;
            foreach (var e in entries)
                if (name.SequenceEqual(e.Name)) return e.Ino;
            return null;
        }
        var g = Geometry;
        uint hash = DirectoryFormat.HashName(name);
        HashBlock Hash(ulong fb)
        {
            var b = ReadVerified(ino, extents, fb, read, where, "leaf/node block");
            if (DirectoryFormat.HasDir3Header(b)) throw Corrupt(where, $"file block {fb} in the leaf space is not a leaf or node block");
            return HashBlock.Parse(b, g, why => Corrupt(where, $"leaf/node block at file block {fb}: {why}"));
        }
        ulong fb = g.LeafFileBlock;
        var blk = Hash(fb);
        for (int depth = 0; !blk.IsLeaf; depth++)
        {
            if (depth >= DirectoryFormat.MaxDaDepth) throw Corrupt(where, "da btree deeper than the kernel builds");
            int idx = blk.LowerBound(hash);
            if (idx == blk.Entries.Count) return null;
            int level = blk.Level;
            fb = blk.Entries[idx].Value;
            blk = Hash(fb);
            if (blk.Level != level - 1) throw Corrupt(where, $"da block at file block {fb} has level {blk.Level}, expected {level - 1}");
        }
        if ((layout == DirectoryLayout.Leaf) != (blk.Kind == HashBlockKind.Leaf1)) throw Corrupt(where, $"leaf block at file block {fb} does not match the {layout} format");
        for (int leaves = 0; ; leaves++)
        {
            int i = blk.LowerBound(hash);
            for (; i < blk.Entries.Count && blk.Entries[i].Hash == hash; i++)
            {
                uint ptr = blk.Entries[i].Value;
                uint db = g.DbOfPtr(ptr);
                var data = ReadVerified(ino, extents, g.FileBlockOfDb(db), read, where, "data block");
                var parsed = DataBlock.Parse(data, HasFtype, why => Corrupt(where, $"data block {db}: {why}"));
                var e = parsed.At(g.OffsetOfPtr(ptr)) ?? throw Corrupt(where, $"leaf entry address {ptr} names no data entry");
                if (name.SequenceEqual(e.Name)) return e.Ino;
            }
            if (i < blk.Entries.Count || blk.Forw == 0 || leaves > 1 << 20) return null;
            ulong prev = fb;
            fb = blk.Forw;
            blk = Hash(fb);
            if (blk.Back != prev || !blk.IsLeaf) throw Corrupt(where, $"leaf at file block {fb} does not link back to {prev}");
        }
    }

    /// <summary>
    /// Verifies the index of a leaf or node directory (nothing for the other formats, whose blocks
    /// <see cref="ReadAll(ulong, ReadOnlySpan{byte}, FsBlockReader, string)"/> reads): every mapped block of the leaf
    /// space (leaf1, leafn, node: identity, structure, hash order, stale count) and of the free space (identity,
    /// first data block by its place, used count), and against the data blocks: the live leaf entries are exactly
    /// the (hash, address) of every entry '.' and '..' included, the leaf1 best-free table and the free-index
    /// slots give each data block's largest unused region (0xffff where no data block is), leafn sibling links
    /// agree both ways. Throws Corrupt naming the first problem.
    /// Memory is a few directory blocks whatever the directory's size: one pass over the blocks in file order; the
    /// two sides' (hash, address) sets are compared as multisets by their count and two independent 64-bit sums of
    /// a mix of each pair (a differing set passes only if both sums collide); each data block's best free is checked
    /// against the leaf1 table or the free-index block covering it as the data block is read; each leafn's siblings
    /// are read back to check their links.
    /// </summary>
    public void VerifyIndex(ulong ino, ReadOnlySpan<byte> core, FsBlockReader read, string where)
    {
        var d = new Dinode(core);
        if (d.Format == ForkFormat.Local) return;
        var extents = DataExtents(ino, core, where);
        var layout = Layout(core, extents, where);
        if (layout is not (DirectoryLayout.Leaf or DirectoryLayout.Node)) return;
        var g = Geometry;
        HashBlock ParseHash(ulong fb)
        {
            var block = ReadVerified(ino, extents, fb, read, where, "leaf or node block");
            return HashBlock.Parse(block, g, why => Corrupt(where, $"leaf or node block at offset {fb}: {why}"));
        }
        // Leaf format: its one leaf1 block (the only block of the leaf space) holds the best-free table the data
        // blocks are checked against as they are read.
        HashBlock? leaf1 = null;
        if (layout == DirectoryLayout.Leaf)
        {
            leaf1 = ParseHash(g.LeafFileBlock);
            if (leaf1.Kind != HashBlockKind.Leaf1) throw Corrupt(where, "no leaf1 block");
        }
        FreeIndexBlock? free = null;
        ulong freeAt = ulong.MaxValue;
        string? bestProblem = null, siblingProblem = null;
        uint dataBlocks = 0;
        void CheckBest(uint db, ushort best)
        {
            if (bestProblem is not null) return;
            if (leaf1 is not null)
            {
                if (db < leaf1.Bests.Count && leaf1.Bests[(int)db] != best)
                    bestProblem = $"the leaf's best free of data block {db} is {leaf1.Bests[(int)db]}, the block's is {best}";
                return;
            }
            uint index = db / (uint)g.FreeMaxBests;
            ulong fb = g.FreeFileBlock + (ulong)index * (ulong)DirBlockFsbs;
            if (fb != freeAt)
            {
                freeAt = fb;
                free = MappedAt(extents, fb)
                    ? FreeIndexBlock.Parse(ReadVerified(ino, extents, fb, read, where, "free-index block"), g, (int)(index * (uint)g.FreeMaxBests), why => Corrupt(where, $"free-index block at offset {fb}: {why}"))
                    : null;
            }
            int slotIndex = (int)(db - index * (uint)g.FreeMaxBests);
            ushort slot = free is not null && slotIndex < free.Bests.Count ? free.Bests[slotIndex] : DirectoryFormat.NullDataOff;
            if (slot != best) bestProblem = $"the free index says {slot} for data block {db}, the block's best free is {best}";
        }
        void CheckSiblings(ulong fb, HashBlock h)
        {
            if (siblingProblem is not null) return;
            if (h.Forw != 0 && !LinksTo(h.Forw, back: true, fb)) siblingProblem = $"leaf at offset {fb}: its right sibling {h.Forw} does not link back";
            else if (h.Back != 0 && !LinksTo(h.Back, back: false, fb)) siblingProblem = $"leaf at offset {fb}: its left sibling {h.Back} does not link to it";
        }
        bool LinksTo(ulong sibling, bool back, ulong fb)
        {
            if (sibling < LeafOffsetFsb || sibling >= g.FreeFileBlock || sibling % (ulong)DirBlockFsbs != 0 || !MappedAt(extents, sibling)) return false;
            var s = ParseHash(sibling);
            return s.Kind == HashBlockKind.LeafN && (back ? s.Back : s.Forw) == (uint)fb;
        }
        var dataSide = new PairMultiset();
        var leafSide = new PairMultiset();
        ulong done = 0;
        bool any = false;
        foreach (var e in extents)
        {
            for (ulong fb = e.StartOffset - e.StartOffset % (ulong)DirBlockFsbs; fb < e.StartOffset + e.BlockCount; fb += (ulong)DirBlockFsbs)
            {
                // A directory block mapped by two extents is met twice.
                if (any && fb <= done) continue;
                any = true;
                done = fb;
                if (fb < LeafOffsetFsb)
                {
                    var block = ReadDirBlock(ino, extents, fb, DirectoryFormat.DataMagic, read, where) ?? throw Corrupt(where, $"data block at offset {fb} only partly mapped");
                    uint db = g.DbOfFileBlock(fb);
                    AddDataEntries(block, db, ref dataSide, where, fb);
                    // Data blocks not mapped before this one are holes: no best free (0xffff) in the index.
                    for (uint hole = dataBlocks; hole < db; hole++) CheckBest(hole, DirectoryFormat.NullDataOff);
                    CheckBest(db, BinaryPrimitives.ReadUInt16BigEndian(block.AsSpan(DirectoryFormat.BestFreeOffset + 2)));
                    dataBlocks = db + 1;
                }
                else if (fb < g.FreeFileBlock)
                {
                    var h = fb == g.LeafFileBlock && leaf1 is not null ? leaf1 : ParseHash(fb);
                    if (h.Kind == HashBlockKind.Leaf1 && layout != DirectoryLayout.Leaf) throw Corrupt(where, $"a leaf1 block at offset {fb} in a node directory");
                    if (h.IsLeaf)
                    {
                        foreach (var (hash, ptr) in h.Entries) leafSide.Add(hash, ptr);
                    }
                    if (h.Kind == HashBlockKind.LeafN) CheckSiblings(fb, h);
                }
                else
                {
                    uint index = (uint)((fb - g.FreeFileBlock) / (ulong)DirBlockFsbs);
                    FreeIndexBlock.Parse(ReadVerified(ino, extents, fb, read, where, "free-index block"), g, (int)(index * (uint)g.FreeMaxBests), why => Corrupt(where, $"free-index block at offset {fb}: {why}"));
                }
            }
        }
        if (!dataSide.Equals(leafSide))
            throw Corrupt(where, $"the hash index holds {leafSide.Count} live entries, the data blocks {dataSide.Count} (or they differ)");
        if (leaf1 is not null && leaf1.Bests.Count != dataBlocks) throw Corrupt(where, $"the leaf's best-free table has {leaf1.Bests.Count} slots for {dataBlocks} data blocks");
        if (bestProblem is not null) throw Corrupt(where, bestProblem);
        if (siblingProblem is not null) throw Corrupt(where, siblingProblem);
    }

    /// <summary>True when file block <paramref name="fileBlock"/> is mapped.</summary>
    static bool MappedAt(List<BmbtExtent> extents, ulong fileBlock)
    {
        foreach (var e in extents)
        {
            if (e.StartOffset > fileBlock) return false;
            if (fileBlock < e.StartOffset + e.BlockCount) return true;
        }
        return false;
    }

    /// <summary>
    /// The (name hash, address) of every entry of a data block, '.' and '..' included, into <paramref name="into"/>,
    /// read in place (no entry is copied out). The block's structure is checked as
    /// <see cref="BlockDirectory.ScanData"/> checks it: every entry and unused region inside the block.
    /// </summary>
    void AddDataEntries(ReadOnlySpan<byte> block, uint db, ref PairMultiset into, string where, ulong fb)
    {
        var g = Geometry;
        int pos = DirectoryFormat.DataHeaderSize, end = block.Length;
        while (pos < end)
        {
            if (end - pos < 8) throw Corrupt(where, $"data block at offset {fb}: data area ends with {end - pos} stray bytes at {pos}");
            if (BinaryPrimitives.ReadUInt16BigEndian(block[pos..]) == DirectoryFormat.FreeTag)
            {
                int len = BinaryPrimitives.ReadUInt16BigEndian(block[(pos + 2)..]);
                if (len < 8 || (len & 7) != 0 || pos + len > end) throw Corrupt(where, $"data block at offset {fb}: unused region at {pos} of length {len}");
                pos += len;
                continue;
            }
            int namelen = block[pos + 8];
            int size = DirectoryFormat.DataEntrySize(namelen, HasFtype);
            if (namelen == 0 || pos + size > end) throw Corrupt(where, $"data block at offset {fb}: entry at {pos} with name length {namelen} overruns the data area");
            into.Add(DaHash.HashName(block.Slice(pos + 9, namelen)), g.DataPtr(db, pos));
            pos += size;
        }
    }

    /// <summary>
    /// A multiset of (hash, address) pairs kept as its size and two sums of independent 64-bit mixes of each pair:
    /// equal multisets give equal values; unequal ones of equal size collide only if both sums do.
    /// </summary>
    struct PairMultiset : IEquatable<PairMultiset>
    {
        public long Count;
        ulong _sum1, _sum2;

        public void Add(uint hash, uint ptr)
        {
            ulong key = ((ulong)hash << 32) | ptr;
            Count++;
            _sum1 += Mix(key ^ 0x9E3779B97F4A7C15UL, 0xBF58476D1CE4E5B9UL, 0x94D049BB133111EBUL);
            _sum2 += Mix(key ^ 0xD6E8FEB86659FD93UL, 0xFF51AFD7ED558CCDUL, 0xC4CEB9FE1A85EC53UL);
        }

        static ulong Mix(ulong x, ulong m1, ulong m2)
        {
            x = (x ^ (x >> 30)) * m1;
            x = (x ^ (x >> 27)) * m2;
            return x ^ (x >> 31);
        }

        public readonly bool Equals(PairMultiset other) => Count == other.Count && _sum1 == other._sum1 && _sum2 == other._sum2;

        public override readonly bool Equals(object? obj) => obj is PairMultiset o && Equals(o);

        public override readonly int GetHashCode() => HashCode.Combine(Count, _sum1, _sum2);
    }

    /// <summary>A whole directory block at <paramref name="fileBlock"/> (pieces gathered through the mapping),
    /// its header identity checked (magic family, CRC, blkno, UUID, owner).</summary>
    byte[] ReadVerified(ulong ino, List<BmbtExtent> extents, ulong fileBlock, FsBlockReader read, string where, string what)
    {
        var buf = new byte[DirBlockSize];
        ulong firstFsb = 0;
        for (int i = 0; i < DirBlockFsbs;)
        {
            ulong fb = fileBlock + (ulong)i;
            int k = extents.FindIndex(e => e.StartOffset <= fb && fb < e.StartOffset + e.BlockCount);
            if (k < 0) throw Corrupt(where, $"{what} at file block {fileBlock} is not mapped");
            var e = extents[k];
            if (e.Unwritten) throw Corrupt(where, $"{what} at file block {fileBlock} is mapped unwritten");
            ulong fsb = e.StartBlock + (fb - e.StartOffset);
            int run = (int)Math.Min((ulong)(DirBlockFsbs - i), e.StartOffset + e.BlockCount - fb);
            if (i == 0) firstFsb = fsb;
            read(fsb, buf.AsSpan(i * _geo.BlockSize, run * _geo.BlockSize));
            i += run;
        }
        if (DirectoryFormat.CheckIdentity(buf, DaddrOf(firstFsb), ino, _geo.MetaUuid) is { } why)
            throw Corrupt(where, $"{what} at file block {fileBlock}: {why}");
        return buf;
    }

    static XfsWriteException Corrupt(string where, string why) => new(WriteErrorKind.Corrupt, $"{where}: {why}");
}
