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
    /// </summary>
    public void VerifyIndex(ulong ino, ReadOnlySpan<byte> core, FsBlockReader read, string where)
    {
        var d = new Dinode(core);
        if (d.Format == ForkFormat.Local) return;
        var extents = DataExtents(ino, core, where);
        var layout = Layout(core, extents, where);
        if (layout is not (DirectoryLayout.Leaf or DirectoryLayout.Node)) return;
        var g = Geometry;
        var expected = new List<(uint Hash, uint Ptr)>();
        var bests = new Dictionary<uint, ushort>();
        var leafEntries = new List<(uint Hash, uint Ptr)>();
        var freeSlots = new Dictionary<uint, ushort>();
        var leafBlocks = new Dictionary<ulong, HashBlock>();
        var starts = new SortedSet<ulong>();
        foreach (var e in extents)
        {
            for (ulong fb = e.StartOffset - e.StartOffset % (ulong)DirBlockFsbs; fb < e.StartOffset + e.BlockCount; fb += (ulong)DirBlockFsbs)
                starts.Add(fb);
        }
        HashBlock? leaf1 = null;
        foreach (ulong fb in starts)
        {
            if (fb < LeafOffsetFsb)
            {
                var block = ReadDirBlock(ino, extents, fb, DirectoryFormat.DataMagic, read, where) ?? throw Corrupt(where, $"data block at offset {fb} only partly mapped");
                uint db = g.DbOfFileBlock(fb);
                var parsed = DataBlock.Parse(block, HasFtype, why => Corrupt(where, $"data block at offset {fb}: {why}"));
                foreach (var e in parsed.Entries) expected.Add((DaHash.HashName(e.Name), g.DataPtr(db, e.Offset)));
                bests[db] = BinaryPrimitives.ReadUInt16BigEndian(block.AsSpan(DirectoryFormat.BestFreeOffset + 2));
            }
            else if (fb < g.FreeFileBlock)
            {
                var block = ReadVerified(ino, extents, fb, read, where, "leaf or node block");
                var h = HashBlock.Parse(block, g, why => Corrupt(where, $"leaf or node block at offset {fb}: {why}"));
                leafBlocks[fb] = h;
                if (h.Kind == HashBlockKind.Leaf1)
                {
                    if (layout != DirectoryLayout.Leaf) throw Corrupt(where, $"a leaf1 block at offset {fb} in a node directory");
                    leaf1 = h;
                }
                if (h.IsLeaf) leafEntries.AddRange(h.Entries.Select(x => (x.Hash, x.Value)));
            }
            else
            {
                var block = ReadVerified(ino, extents, fb, read, where, "free-index block");
                uint index = (uint)((fb - g.FreeFileBlock) / (ulong)DirBlockFsbs);
                int firstDb = (int)(index * (uint)g.FreeMaxBests);
                var f = FreeIndexBlock.Parse(block, g, firstDb, why => Corrupt(where, $"free-index block at offset {fb}: {why}"));
                for (int i = 0; i < f.Bests.Count; i++) freeSlots[(uint)(firstDb + i)] = f.Bests[i];
            }
        }
        expected.Sort();
        leafEntries.Sort();
        if (!expected.SequenceEqual(leafEntries))
            throw Corrupt(where, $"the hash index holds {leafEntries.Count} live entries, the data blocks {expected.Count} (or they differ)");
        uint dataBlocks = bests.Count == 0 ? 0 : bests.Keys.Max() + 1;
        ushort BestOf(uint db) => bests.TryGetValue(db, out ushort b) ? b : DirectoryFormat.NullDataOff;
        if (layout == DirectoryLayout.Leaf)
        {
            if (leaf1 is null) throw Corrupt(where, "no leaf1 block");
            if (leaf1.Bests.Count != dataBlocks) throw Corrupt(where, $"the leaf's best-free table has {leaf1.Bests.Count} slots for {dataBlocks} data blocks");
            for (int i = 0; i < leaf1.Bests.Count; i++)
                if (leaf1.Bests[i] != BestOf((uint)i)) throw Corrupt(where, $"the leaf's best free of data block {i} is {leaf1.Bests[i]}, the block's is {BestOf((uint)i)}");
        }
        else
        {
            for (uint db = 0; db < dataBlocks; db++)
            {
                ushort slot = freeSlots.TryGetValue(db, out ushort s) ? s : DirectoryFormat.NullDataOff;
                if (slot != BestOf(db)) throw Corrupt(where, $"the free index says {slot} for data block {db}, the block's best free is {BestOf(db)}");
            }
            foreach (var (fb, h) in leafBlocks)
            {
                if (h.Kind != HashBlockKind.LeafN) continue;
                if (h.Forw != 0 && (!leafBlocks.TryGetValue(h.Forw, out var next) || next.Kind != HashBlockKind.LeafN || next.Back != (uint)fb))
                    throw Corrupt(where, $"leaf at offset {fb}: its right sibling {h.Forw} does not link back");
                if (h.Back != 0 && (!leafBlocks.TryGetValue(h.Back, out var prev) || prev.Kind != HashBlockKind.LeafN || prev.Forw != (uint)fb))
                    throw Corrupt(where, $"leaf at offset {fb}: its left sibling {h.Back} does not link to it");
            }
        }
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
