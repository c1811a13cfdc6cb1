using System.Buffers.Binary;
using Xfbtree.Xfs.Directories;
using Xfbtree.Xfs.Format;
using Xfbtree.Xfs.Trees;
using Xfbtree.Xfs.Write.Engine;
using Xfbtree.Xfs.Write.Files;

namespace Xfbtree.Xfs.Write.Namespace;

/// <summary>One entry of a resumable directory read: <see cref="Cookie"/> is its data pointer (byte address in
/// the directory / 8), stable while the entry exists; resume after it with <c>Cookie + 1</c>.</summary>
internal sealed record DirectoryCookieEntry(byte[] Name, ulong Ino, byte FileType, ulong Cookie);

/// <summary>
/// Changes one directory inside a transaction that holds its inode lock: lookup, listing, emptiness, resumable
/// reads, add, remove and replace in every format (shortform, block, leaf, node), growing and shrinking through
/// the kernel's conversions (shortform ↔ block ↔ leaf ↔ node, empty data blocks freed). The formats themselves
/// (parse, verify, lay out) are in <c>Xfbtree.Xfs.Directories</c>; this class joins their blocks to the
/// transaction, allocates and frees directory blocks (rmap, free space, data-fork mapping through
/// <see cref="FileEdit"/>) and keeps di_size. Every block is read through the transaction and verified before it
/// is used, and rewritten whole from its model. Models read in one editor are cached, so one block never has two.
/// </summary>
internal sealed class DirectoryEditor
{
    readonly WriteTransaction _tx;
    readonly IncoreInode _dir;
    readonly DirectoryReader _reader;
    readonly XfsGeometry _geo;
    readonly DirectoryGeometry _g;
    readonly string _where;
    FileEdit? _edit;
    readonly Dictionary<ulong, (DirectoryBuffer Buf, HashBlock Block)> _hash = new();
    readonly Dictionary<ulong, (DirectoryBuffer Buf, DataBlock Block)> _data = new();
    readonly Dictionary<ulong, (DirectoryBuffer Buf, FreeIndexBlock Block)> _free = new();

    /// <summary>An editor for the locked directory <paramref name="dir"/>, named <paramref name="where"/> in messages.</summary>
    public DirectoryEditor(WriteTransaction tx, IncoreInode dir, DirectoryReader reader, string where)
    {
        _tx = tx;
        _dir = dir;
        _reader = reader;
        _geo = tx.Engine.Geometry;
        _g = reader.Geometry;
        _where = where;
        if (!InodeCore.IsDirectory(dir.Core)) throw new XfsWriteException(WriteErrorKind.NotDirectory, $"'{where}' is not a directory");
        if (InodeCore.Nlink(dir.Core) == 0) throw new XfsWriteException(WriteErrorKind.NotFound, $"'{where}' was removed");
        LoadMapping();
    }

    /// <summary>The directory's format as it stands (it changes as entries are added and removed).</summary>
    public DirectoryLayout Layout { get; private set; }

    void LoadMapping()
    {
        var d = new Dinode(_dir.Core);
        if (d.Format == ForkFormat.Local)
        {
            _edit = null;
            Layout = DirectoryLayout.Shortform;
            return;
        }
        if (d.Format is not (ForkFormat.Extents or ForkFormat.Btree))
            throw Corrupt($"data fork format {(int)d.Format} for a directory");
        _edit = new FileEdit(_tx, _dir, FileFork.Load(_tx, _dir, attr: false));
        var ext = Extents;
        if (ext.Count == 0) throw Corrupt("a directory without blocks in extents or btree format");
        var last = ext[ext.Count - 1];
        ulong end = last.StartOffset + last.BlockCount;
        if (end == (ulong)_g.FsbsPerBlock)
        {
            if (d.Size != (ulong)_g.BlockSize) throw Corrupt($"block directory with di_size {d.Size}, expected {_g.BlockSize}");
            Layout = DirectoryLayout.Block;
        }
        else if (end == _g.LeafFileBlock + (ulong)_g.FsbsPerBlock) Layout = DirectoryLayout.Leaf;
        else if (end > _g.FreeFileBlock) Layout = DirectoryLayout.Node;
        else throw Corrupt($"the last mapped block {end - 1} fits no directory format");
    }

    ExtentList Extents => _edit!.Fork.Extents;

    XfsWriteException Corrupt(string why) => new(WriteErrorKind.Corrupt, $"directory '{_where}': {why}");

    /// <summary>XFS_SB_VERSION_BORGBIT: names hash and compare case-insensitively (mkfs -n version=ci).</summary>
    const ushort VersionAsciiCi = 0x4000;

    void RefuseEdit(string what)
    {
        if ((_geo.Superblock.VersionNum & VersionAsciiCi) != 0)
            throw new XfsWriteException(WriteErrorKind.NotSupported,
                $"directory '{_where}': the filesystem has ASCII case-insensitive names, which the engine does not modify ({what})");
    }

    // ------------------------------------------------------------------ blocks

    /// <summary>The disk pieces of directory block at <paramref name="fileBlock"/>; null when any of it is a hole.</summary>
    List<(long Daddr, int LengthBB)>? Pieces(ulong fileBlock)
    {
        var list = new List<(long, int)>(1);
        int bb = _geo.BasicBlocksPerBlock;
        for (int i = 0; i < _g.FsbsPerBlock;)
        {
            if (!Extents.Lookup(fileBlock + (ulong)i, out var m, out _)) return null;
            if (m.Unwritten) throw Corrupt($"directory block at file block {fileBlock} is mapped unwritten");
            int run = (int)Math.Min((ulong)(_g.FsbsPerBlock - i), m.BlockCount);
            long daddr = _reader.DaddrOf(m.StartBlock);
            if (list.Count > 0 && list[^1].Item1 + list[^1].Item2 == daddr) list[^1] = (list[^1].Item1, list[^1].Item2 + run * bb);
            else list.Add((daddr, run * bb));
            i += run;
        }
        return list;
    }

    bool IsMapped(ulong fileBlock) => Extents.Lookup(fileBlock, out _, out _);

    DirectoryBuffer ReadBuffer(ulong fileBlock, string what)
    {
        var pieces = Pieces(fileBlock) ?? throw Corrupt($"{what} at file block {fileBlock} is not mapped");
        return DirectoryBuffer.Read(_tx, fileBlock, pieces, _dir.Ino, $"directory '{_where}' {what}");
    }

    Func<string, XfsWriteException> Bad(string what, ulong fileBlock) => why => Corrupt($"{what} at file block {fileBlock}: {why}");

    (DirectoryBuffer Buf, HashBlock Block) Hash(ulong fileBlock)
    {
        if (_hash.TryGetValue(fileBlock, out var got)) return got;
        var buf = ReadBuffer(fileBlock, "leaf/node block");
        if (DirectoryFormat.HasDir3Header(buf.Span)) throw Corrupt($"file block {fileBlock} in the leaf space is not a leaf or node block");
        got = (buf, HashBlock.Parse(buf.Span, _g, Bad("leaf/node block", fileBlock)));
        _hash[fileBlock] = got;
        return got;
    }

    (DirectoryBuffer Buf, DataBlock Block) Data(uint db)
    {
        ulong fb = _g.FileBlockOfDb(db);
        if (_data.TryGetValue(fb, out var got)) return got;
        var buf = ReadBuffer(fb, "data block");
        got = (buf, DataBlock.Parse(buf.Span, _g.HasFtype, Bad("data block", fb)));
        _data[fb] = got;
        return got;
    }

    /// <summary>Free-index block <paramref name="k"/>, or null when it is not mapped.</summary>
    (DirectoryBuffer Buf, FreeIndexBlock Block)? Free(int k)
    {
        ulong fb = _g.FreeFileBlock + (ulong)k * (ulong)_g.FsbsPerBlock;
        if (_free.TryGetValue(fb, out var got)) return got;
        if (!IsMapped(fb)) return null;
        var buf = ReadBuffer(fb, "free-index block");
        got = (buf, FreeIndexBlock.Parse(buf.Span, _g, k * _g.FreeMaxBests, Bad("free-index block", fb)));
        _free[fb] = got;
        return got;
    }

    void WriteHash(DirectoryBuffer buf, HashBlock block)
    {
        block.Write(buf.Span, _g);
        HashBlock.Parse(buf.Span, _g, Bad("rewritten leaf/node block", buf.FileBlock));
        buf.Log(_tx);
    }

    void WriteData(DirectoryBuffer buf, DataBlock block)
    {
        BinaryPrimitives.WriteUInt32BigEndian(buf.Span, DirectoryFormat.DataMagic);
        block.WriteBody(buf.Span);
        var back = DataBlock.Parse(buf.Span, _g.HasFtype, Bad("rewritten data block", buf.FileBlock));
        if (back.Entries.Count != block.Entries.Count) throw Corrupt("a rewritten data block does not read back as written");
        buf.Log(_tx);
    }

    void WriteFree(DirectoryBuffer buf, FreeIndexBlock block)
    {
        block.Write(buf.Span);
        FreeIndexBlock.Parse(buf.Span, _g, block.FirstDb, Bad("rewritten free-index block", buf.FileBlock));
        buf.Log(_tx);
    }

    /// <summary>The first directory-block-aligned file block in [<paramref name="from"/>, <paramref name="limit"/>)
    /// with no mapping (where the kernel's xfs_da_grow_inode puts a new block).</summary>
    ulong FirstHole(ulong from, ulong limit)
    {
        ulong fb = from;
        while (fb < limit)
        {
            if (!Extents.Lookup(fb, out var m, out ulong hole))
            {
                if (hole >= (ulong)_g.FsbsPerBlock) return fb;
                fb += hole;
            }
            else fb = m.StartOffset + m.BlockCount;
            ulong per = (ulong)_g.FsbsPerBlock;
            fb = (fb + per - 1) / per * per;
        }
        throw new XfsWriteException(WriteErrorKind.NoSpace, $"directory '{_where}': its address space is full");
    }

    /// <summary>Allocates and maps a directory block at <paramref name="fileBlock"/> (near the block before it,
    /// in as few pieces as free space allows) and returns zeroed buffers with the header identity written.</summary>
    DirectoryBuffer NewBlock(ulong fileBlock, bool dir3Header)
    {
        var pieces = new List<(long, int)>();
        uint need = (uint)_g.FsbsPerBlock;
        ulong hint = AllocationHint(fileBlock);
        ulong at = fileBlock;
        while (need > 0)
        {
            var got = _tx.Allocate(new AllocationRequest(hint, 1, need, AllocationPurpose.DirectoryBlock));
            _edit!.Map(new BmbtExtent(at, got.Fsbno, got.Length, false));
            pieces.Add((_reader.DaddrOf(got.Fsbno), (int)got.Length * _geo.BasicBlocksPerBlock));
            at += got.Length;
            need -= got.Length;
            hint = got.Fsbno + got.Length;
        }
        var buf = DirectoryBuffer.New(_tx, fileBlock, pieces, _dir.Ino);
        DirectoryFormat.WriteIdentity(buf.Span, dir3Header, buf.Daddr, _dir.Ino, _geo.MetaUuid);
        return buf;
    }

    ulong AllocationHint(ulong fileBlock)
    {
        int i = Extents.IndexAtOrAfter(fileBlock);
        if (i > 0)
        {
            var left = Extents[i - 1];
            ulong end = left.StartBlock + left.BlockCount;
            if (_geo.IsValidExtent(end, 1)) return end;
            return left.StartBlock;
        }
        return _geo.AgbToFsb(_geo.InoToAgno(_dir.Ino), _geo.AginoToAgbno(_geo.InoToAgino(_dir.Ino)));
    }

    /// <summary>Unmaps and frees a directory block (rmap, free space, di_nblocks); its buffers are never written.</summary>
    void FreeBlock(DirectoryBuffer buf)
    {
        buf.MarkFreed();
        _hash.Remove(buf.FileBlock);
        _data.Remove(buf.FileBlock);
        _free.Remove(buf.FileBlock);
        _edit!.Unmap(buf.FileBlock, (ulong)_g.FsbsPerBlock);
    }

    /// <summary>di_size of a leaf or node directory: the end of its last data block.</summary>
    void UpdateDataSize()
    {
        int i = Extents.IndexAtOrAfter(_g.LeafFileBlock);
        ulong end = 0;
        if (i > 0)
        {
            var e = Extents[i - 1];
            end = Math.Min(e.StartOffset + e.BlockCount, _g.LeafFileBlock);
        }
        InodeCore.SetSize(_dir.Core, end * (ulong)_g.FsBlockSize);
    }

    // ------------------------------------------------------------------ shortform and block

    ShortformDirectory ReadShortform()
    {
        var d = new Dinode(_dir.Core);
        return ShortformDirectory.Parse(d.DataFork, (long)d.Size, _g.HasFtype, _g.BlockSize, _where);
    }

    (DirectoryBuffer Buf, BlockDirectory Block) ReadBlockForm()
    {
        var buf = ReadBuffer(0, "directory block");
        return (buf, BlockDirectory.Parse(buf.Span, _g.HasFtype, $"directory '{_where}'"));
    }

    /// <summary>Lays the model out into the joined block, checks the result parses as a block directory with the
    /// model's entries (fail closed: a bad layout cancels the transaction), logs it whole.</summary>
    void WriteBlockForm(DirectoryBuffer buf, BlockDirectory block)
    {
        BinaryPrimitives.WriteUInt32BigEndian(buf.Span, DirectoryFormat.BlockMagic);
        block.WriteBody(buf.Span);
        var check = BlockDirectory.Parse(buf.Span, _g.HasFtype, _where);
        if (check.Entries.Count != block.Entries.Count || check.Stale != block.Stale)
            throw Corrupt("the rewritten directory block does not read back as written");
        buf.Log(_tx);
    }

    /// <summary>Replaces a shortform directory's bytes after checking they parse back to the model.</summary>
    void WriteShortform(ShortformDirectory sf)
    {
        var bytes = sf.Serialize();
        var check = ShortformDirectory.Parse(bytes, bytes.Length, _g.HasFtype, _g.BlockSize, _where);
        if (check.Entries.Count != sf.Entries.Count || check.Parent != sf.Parent)
            throw Corrupt("the rewritten shortform directory does not read back as written");
        InodeCore.SetLocalData(_dir.Core, bytes);
    }

    /// <summary>
    /// The directory repair's first step: every block of the data fork (data, leaf, node and free-index blocks, and a
    /// bmbt) released, their buffers invalidated without being read (they may not verify), and the directory made
    /// an empty shortform one naming <paramref name="parent"/>; the salvaged entries are then added back with
    /// <see cref="Add"/>. No directory update is queued here: the caller says which names leave.
    /// </summary>
    public void ResetToEmpty(ulong parent)
    {
        if (Layout != DirectoryLayout.Shortform)
        {
            var mapped = Extents;
            for (int i = 0; i < mapped.Count; i++)
            {
                var e = mapped[i];
                uint agno = _geo.FsbToAgno(e.StartBlock);
                FileOperations.LockAg(_tx, agno);
                _tx.InvalidateFreedBlocks(agno, _geo.FsbToAgbno(e.StartBlock), e.BlockCount);
            }
            if (mapped.Count > 0)
            {
                var last = mapped[mapped.Count - 1];
                _edit!.Unmap(0, last.StartOffset + last.BlockCount);
            }
            // The empty list goes through the mapping code so that any bmbt blocks are released, then becomes inline.
            _edit!.Fork.Store();
            _hash.Clear();
            _data.Clear();
            _free.Clear();
            var c = _dir.Core.AsSpan();
            c[InodeCore.OffFormat] = (byte)ForkFormat.Local;
            InodeCore.SetDataExtents(c, 0);
            ForkCache.Forget(_dir);
            _edit = null;
            Layout = DirectoryLayout.Shortform;
        }
        WriteShortform(new ShortformDirectory(parent, _g.HasFtype, _g.BlockSize));
        _tx.LogInode(_dir);
    }

    /// <summary>xfs_dir2_sf_to_block: a new directory block (rmap owner = the directory, offset 0) holding the
    /// model, the data fork turned into one extent, di_size = the directory block size, nblocks grown.</summary>
    void ConvertToBlock(BlockDirectory block)
    {
        uint len = (uint)_g.FsbsPerBlock;
        var ino = _dir.Ino;
        var got = _tx.Allocate(new AllocationRequest(_geo.AgbToFsb(_geo.InoToAgno(ino), _geo.AginoToAgbno(_geo.InoToAgino(ino))),
            len, len, AllocationPurpose.DirectoryBlock));
        _tx.RmapMap(got.AgNumber, new RmapRecord(got.AgBlock, len, ino, 0), false);
        long daddr = _geo.AgBlockToDaddr(got.AgNumber, got.AgBlock);
        var buf = DirectoryBuffer.New(_tx, 0, [(daddr, (int)len * _geo.BasicBlocksPerBlock)], ino);
        DirectoryFormat.WriteIdentity(buf.Span, true, daddr, ino, _geo.MetaUuid);
        WriteBlockForm(buf, block);

        var c = _dir.Core.AsSpan();
        c.Slice(Dinode.CoreSize, new Dinode(c).DataFork.Length).Clear();
        c[InodeCore.OffFormat] = (byte)ForkFormat.Extents;
        InodeCore.WriteExtent(c[Dinode.CoreSize..], 0, got.Fsbno, len);
        InodeCore.SetDataExtents(c, 1);
        InodeCore.SetSize(c, (ulong)_g.BlockSize);
        InodeCore.SetNblocks(c, InodeCore.Nblocks(c) + len);
        LoadMapping();
    }

    /// <summary>
    /// xfs_bmap_add_attrfork_local for a directory: a shortform directory becomes a block directory (same entries,
    /// same offsets, so readdir cookies survive) to leave the inode's literal area to a new attribute fork. The
    /// directory's times do not change (the attribute change sets ctime). Nothing happens to other formats.
    /// </summary>
    public void MoveShortformOutOfInode()
    {
        if (Layout != DirectoryLayout.Shortform) return;
        RefuseEdit("moving its entries out of the inode for an attribute fork");
        ConvertToBlock(BlockDirectory.FromShortform(ReadShortform(), _dir.Ino, _g.BlockSize, _g.HasFtype));
        _edit?.Finish();
        _tx.LogInode(_dir);
    }

    /// <summary>xfs_dir2_block_to_sf: when the entries of a block directory fit the inode's data fork inline, the
    /// block is freed and the directory becomes shortform (same offsets, so readdir cookies survive).</summary>
    bool TryBlockToShortform(DirectoryBuffer buf, BlockDirectory block)
    {
        ulong parent = block.Entries.FirstOrDefault(e => DirectoryFormat.IsDotDot(e.Name))?.Ino ?? throw Corrupt("no '..' entry");
        var sf = new ShortformDirectory(parent, _g.HasFtype, _g.BlockSize);
        foreach (var e in block.Entries)
            if (!DirectoryFormat.IsDot(e.Name) && !DirectoryFormat.IsDotDot(e.Name)) sf.Entries.Add(new ShortformEntry(e.Name, e.Ino, e.FileType, e.Offset));
        if (sf.Entries.Count > byte.MaxValue || sf.Size > new Dinode(_dir.Core).DataFork.Length) return false;
        FreeBlock(buf);
        // The fork goes through the mapping code first so any bmbt blocks are released, then becomes inline.
        _edit!.Fork.Store();
        var c = _dir.Core.AsSpan();
        c[InodeCore.OffFormat] = (byte)ForkFormat.Local;
        InodeCore.SetDataExtents(c, 0);
        WriteShortform(sf);
        ForkCache.Forget(_dir);
        _edit = null;
        Layout = DirectoryLayout.Shortform;
        return true;
    }

    /// <summary>xfs_dir2_block_to_leaf: the block becomes data block 0 (its leaf and tail area turned into free
    /// space) and a leaf1 block at the leaf offset takes the hash entries and the best-free table.</summary>
    void BlockToLeaf(DirectoryBuffer buf, BlockDirectory block)
    {
        var data = DataBlock.Of(block.Entries, _g.BlockSize, _g.HasFtype);
        _data[0] = (buf, data);
        WriteData(buf, data);
        var leaf = new HashBlock(HashBlockKind.Leaf1, 0);
        foreach (var (hash, address) in block.Leaf)
            if (address != 0) leaf.Entries.Add((hash, address));
        leaf.Bests.Add((ushort)data.LargestFree);
        var lbuf = NewBlock(_g.LeafFileBlock, dir3Header: false);
        _hash[_g.LeafFileBlock] = (lbuf, leaf);
        WriteHash(lbuf, leaf);
        Layout = DirectoryLayout.Leaf;
    }

    // ------------------------------------------------------------------ hashed lookup

    /// <summary>A found entry of a leaf or node directory: the leaf path to it and its data pointer.</summary>
    sealed record Found(List<PathStep> Path, int LeafIndex, uint Ptr, DataEntry Entry);

    /// <summary>One block on a root-to-leaf path and the entry index taken in it.</summary>
    sealed class PathStep(ulong fileBlock, DirectoryBuffer buf, HashBlock block, int index)
    {
        /// <summary>File block of the block.</summary>
        public ulong FileBlock { get; } = fileBlock;
        /// <summary>Its buffers.</summary>
        public DirectoryBuffer Buf { get; } = buf;
        /// <summary>Its model (the editor's cached one).</summary>
        public HashBlock Block { get; } = block;
        /// <summary>Entry taken: the child followed in a node, the search position in a leaf.</summary>
        public int Index { get; set; } = index;
        /// <summary>The model changed and must be written (and its parent's key checked).</summary>
        public bool Dirty { get; set; }
    }

    /// <summary>The path from the root of the hash index to the leaf where <paramref name="hash"/> is or would go:
    /// in each node the first child whose largest hash is at least <paramref name="hash"/> (else the last).</summary>
    List<PathStep> Descend(uint hash)
    {
        var path = new List<PathStep>();
        ulong fb = _g.LeafFileBlock;
        int expectLevel = -1;
        while (true)
        {
            var (buf, blk) = Hash(fb);
            if (Layout == DirectoryLayout.Leaf)
            {
                if (blk.Kind != HashBlockKind.Leaf1) throw Corrupt("the leaf block of a leaf directory is not a leaf1 block");
            }
            else if (blk.Kind == HashBlockKind.Leaf1) throw Corrupt($"leaf1 block at file block {fb} in a node directory");
            if (expectLevel >= 0 && blk.Level != expectLevel) throw Corrupt($"da block at file block {fb} has level {blk.Level}, expected {expectLevel}");
            if (path.Count == 0 && (blk.Forw != 0 || blk.Back != 0)) throw Corrupt("the da btree root has siblings");
            if (blk.IsLeaf)
            {
                path.Add(new PathStep(fb, buf, blk, blk.LowerBound(hash)));
                return path;
            }
            if (path.Count >= DirectoryFormat.MaxDaDepth) throw Corrupt("da btree deeper than the kernel builds");
            int idx = Math.Min(blk.LowerBound(hash), blk.Entries.Count - 1);
            path.Add(new PathStep(fb, buf, blk, idx));
            expectLevel = blk.Level - 1;
            fb = blk.Entries[idx].Value;
        }
    }

    /// <summary>Moves a path to the next leaf in hash order (xfs_da3_path_shift); false at the last leaf.</summary>
    bool NextLeaf(List<PathStep> path)
    {
        int level = path.Count - 2;
        while (level >= 0 && path[level].Index + 1 >= path[level].Block.Entries.Count) level--;
        if (level < 0) return false;
        ulong prevLeaf = path[^1].FileBlock;
        path[level].Index++;
        for (int i = level + 1; i < path.Count; i++)
        {
            ulong fb = path[i - 1].Block.Entries[path[i - 1].Index].Value;
            var (buf, blk) = Hash(fb);
            if (blk.Level != path[i - 1].Block.Level - 1 || blk.Kind == HashBlockKind.Leaf1)
                throw Corrupt($"da block at file block {fb} does not fit its parent");
            path[i] = new PathStep(fb, buf, blk, 0);
        }
        if (path[^1].Block.Back != prevLeaf) throw Corrupt($"leaf at file block {path[^1].FileBlock} does not link back to {prevLeaf}");
        return true;
    }

    /// <summary>Looks <paramref name="name"/> up through the hash index (equal hashes may run over several leaves).</summary>
    Found? Lookup(ReadOnlySpan<byte> name)
    {
        uint hash = DirectoryFormat.HashName(name);
        var path = Descend(hash);
        while (true)
        {
            var leaf = path[^1];
            int i = leaf.Index;
            for (; i < leaf.Block.Entries.Count && leaf.Block.Entries[i].Hash == hash; i++)
            {
                uint ptr = leaf.Block.Entries[i].Value;
                var e = EntryAt(ptr);
                if (name.SequenceEqual(e.Name)) return new Found(path, i, ptr, e);
            }
            if (i < leaf.Block.Entries.Count || Layout == DirectoryLayout.Leaf || !NextLeaf(path)) return null;
        }
    }

    DataEntry EntryAt(uint ptr)
    {
        uint db = _g.DbOfPtr(ptr);
        if (db >= _g.DbOfFileBlock(_g.LeafFileBlock) || !IsMapped(_g.FileBlockOfDb(db)))
            throw Corrupt($"leaf entry address {ptr} names data block {db}, which does not exist");
        return Data(db).Block.At(_g.OffsetOfPtr(ptr)) ?? throw Corrupt($"leaf entry address {ptr} names no data entry");
    }

    // ------------------------------------------------------------------ reads

    /// <summary>Every data block of a leaf or node directory, in file order.</summary>
    IEnumerable<uint> DataBlocks(uint fromDb = 0)
    {
        ulong per = (ulong)_g.FsbsPerBlock;
        uint last = uint.MaxValue;
        for (int i = Extents.IndexAtOrAfter(_g.FileBlockOfDb(fromDb)); i < Extents.Count; i++)
        {
            var e = Extents[i];
            if (e.StartOffset >= _g.LeafFileBlock) yield break;
            ulong end = Math.Min(e.StartOffset + e.BlockCount, _g.LeafFileBlock);
            for (ulong fb = Math.Max(e.StartOffset / per * per, _g.FileBlockOfDb(fromDb)); fb < end; fb += per)
            {
                uint db = _g.DbOfFileBlock(fb);
                if (db == last) continue;
                last = db;
                yield return db;
            }
        }
    }

    /// <summary>Every live entry ("." and ".." excluded) and the parent.</summary>
    public (ulong Parent, List<DataEntry> Entries) ReadAll()
    {
        var all = ReadFrom(0, int.MaxValue);
        ulong? parent = null;
        var list = new List<DataEntry>(all.Count);
        foreach (var e in all)
        {
            if (DirectoryFormat.IsDotDot(e.Name)) parent = e.Ino;
            else if (!DirectoryFormat.IsDot(e.Name)) list.Add(new DataEntry(e.Name, e.Ino, e.FileType, _g.OffsetOfPtr((uint)e.Cookie)));
        }
        return (parent ?? throw Corrupt("no '..' entry"), list);
    }

    /// <summary>True when the directory holds no entry besides "." and "..".</summary>
    public bool IsEmpty()
    {
        switch (Layout)
        {
            case DirectoryLayout.Shortform: return ReadShortform().Entries.Count == 0;
            case DirectoryLayout.Block: return ReadBlockForm().Block.Entries.Count <= 2;
            default:
                foreach (uint db in DataBlocks())
                    foreach (var e in Data(db).Block.Entries)
                        if (!DirectoryFormat.IsDot(e.Name) && !DirectoryFormat.IsDotDot(e.Name)) return false;
                return true;
        }
    }

    /// <summary>
    /// Up to <paramref name="max"/> entries ("." and ".." included) whose cookie is at least
    /// <paramref name="cookie"/>, in cookie order. The cookie is the entry's data pointer, as the kernel's readdir
    /// offset: it does not change while the entry exists, whatever else is added or removed, so a reader resumes
    /// with the last cookie + 1.
    /// </summary>
    public List<DirectoryCookieEntry> ReadFrom(ulong cookie, int max)
    {
        var result = new List<DirectoryCookieEntry>();
        if (max <= 0) return result;
        void Take(DataEntry e, uint db)
        {
            ulong c = _g.DataPtr(db, e.Offset);
            if (c >= cookie && result.Count < max) result.Add(new DirectoryCookieEntry(e.Name, e.Ino, e.FileType, c));
        }
        switch (Layout)
        {
            case DirectoryLayout.Shortform:
                {
                    var sf = ReadShortform();
                    Take(new DataEntry([(byte)'.'], _dir.Ino, DirectoryFormat.FtDirectory, DirectoryFormat.DotOffset), 0);
                    Take(new DataEntry([(byte)'.', (byte)'.'], sf.Parent, DirectoryFormat.FtDirectory,
                        DirectoryFormat.DotOffset + DirectoryFormat.DataEntrySize(1, _g.HasFtype)), 0);
                    foreach (var e in sf.Entries) Take(new DataEntry(e.Name, e.Ino, e.FileType, e.Offset), 0);
                    break;
                }
            case DirectoryLayout.Block:
                foreach (var e in ReadBlockForm().Block.Entries) Take(e, 0);
                break;
            default:
                if (cookie > uint.MaxValue) break;
                foreach (uint db in DataBlocks(_g.DbOfPtr((uint)cookie)))
                {
                    foreach (var e in Data(db).Block.Entries) Take(e, db);
                    if (result.Count >= max) break;
                }
                break;
        }
        return result;
    }

    /// <summary>The entry named <paramref name="name"/> (its Offset is the byte offset in its data block), or null.</summary>
    public DataEntry? Find(ReadOnlySpan<byte> name)
    {
        switch (Layout)
        {
            case DirectoryLayout.Shortform:
                {
                    var e = ReadShortform().Find(name);
                    return e is null ? null : new DataEntry(e.Name, e.Ino, e.FileType, e.Offset);
                }
            case DirectoryLayout.Block:
                {
                    var e = ReadBlockForm().Block.Find(name);
                    return e is null || DirectoryFormat.IsDot(e.Name) || DirectoryFormat.IsDotDot(e.Name) ? null : e;
                }
            default:
                if (DirectoryFormat.IsDot(name) || DirectoryFormat.IsDotDot(name)) return null;
                return Lookup(name)?.Entry;
        }
    }

    // ------------------------------------------------------------------ add

    /// <summary>Adds <paramref name="name"/> → <paramref name="ino"/>; the caller checked it is absent.</summary>
    public void Add(byte[] name, ulong ino, byte fileType, DateTimeOffset now)
    {
        RefuseEdit("adding an entry");
        if (DirectoryFormat.CheckNewName(name) is { } why) throw new XfsWriteException(WriteErrorKind.InvalidArgument, $"'{_where}/{DirectoryFormat.Show(name)}': {why}");
        _tx.QueueDirectoryUpdate(_dir.Ino, ino, +1, DirectoryEntryKind.Name);
        switch (Layout)
        {
            case DirectoryLayout.Shortform:
                {
                    var sf = ReadShortform();
                    int forkSize = new Dinode(_dir.Core).DataFork.Length;
                    if (sf.TryAdd(name, ino, fileType, forkSize) == ShortformAddResult.Added)
                    {
                        WriteShortform(sf);
                    }
                    else
                    {
                        var block = BlockDirectory.FromShortform(sf, _dir.Ino, _g.BlockSize, _g.HasFtype);
                        if (block.TryAdd(name, ino, fileType))
                        {
                            ConvertToBlock(block);
                            break;
                        }
                        // The shortform entries keep their offsets, so the last one can end just below the block's
                        // leaf area and leave no room for one more leaf entry: as xfs_dir2_block_addname after
                        // xfs_dir2_sf_to_block, the new block then grows into leaf form.
                        Reserve(3, "growing into leaf format");
                        ConvertToBlock(block);
                        var (buf, converted) = ReadBlockForm();
                        BlockToLeaf(buf, converted);
                        LeafAdd(name, ino, fileType);
                    }
                    break;
                }
            case DirectoryLayout.Block:
                {
                    var (buf, block) = ReadBlockForm();
                    if (block.TryAdd(name, ino, fileType))
                    {
                        WriteBlockForm(buf, block);
                        break;
                    }
                    Reserve(2, "growing into leaf format");
                    BlockToLeaf(buf, block);
                    LeafAdd(name, ino, fileType);
                    break;
                }
            case DirectoryLayout.Leaf:
                LeafAdd(name, ino, fileType);
                break;
            default:
                NodeAdd(name, ino, fileType);
                break;
        }
        Finish(now);
    }

    /// <summary>Fails with NoSpace before anything changes unless <paramref name="dirBlocks"/> new directory blocks
    /// and the bmbt growth their mappings may need can be allocated. Called only when an add needs new blocks, so
    /// a name that fits the existing blocks still goes in on a full filesystem, as in the kernel.</summary>
    void Reserve(int dirBlocks, string why)
    {
        if (dirBlocks <= 0) return;
        // A shortform directory has no mapping yet; its first few directory blocks fit the inode as extents.
        long blocks = (long)dirBlocks * _g.FsbsPerBlock + (_edit?.Fork.WorstCaseNewBmbtBlocks(dirBlocks * _g.FsbsPerBlock + 2) ?? 0);
        try { _tx.EnsureSpace(blocks, AllocationPurpose.DirectoryBlock); }
        catch (XfsWriteException e) when (e.Kind == WriteErrorKind.NoSpace)
        {
            throw new XfsWriteException(WriteErrorKind.NoSpace, $"directory '{_where}': no space for {why} ({e.Message})", e);
        }
    }

    void Finish(DateTimeOffset now)
    {
        _edit?.Finish();
        InodeCore.Touch(_dir.Core, now);
        _tx.LogInode(_dir);
    }

    /// <summary>xfs_dir2_leaf_addname: a data block whose best free region fits (else the first hole, else a new
    /// block at the end), the leaf entry in hash order, the best-free table updated; when the leaf has no room for
    /// the entry and the table the directory becomes a node directory first.</summary>
    void LeafAdd(byte[] name, ulong ino, byte fileType)
    {
        var (lbuf, leaf) = Hash(_g.LeafFileBlock);
        if (leaf.Kind != HashBlockKind.Leaf1) throw Corrupt("the leaf block of a leaf directory is not a leaf1 block");
        int size = DirectoryFormat.DataEntrySize(name.Length, _g.HasFtype);
        int use = -1;
        for (int i = 0; i < leaf.Bests.Count && use < 0; i++)
            if (leaf.Bests[i] != DirectoryFormat.NullDataOff && leaf.Bests[i] >= size) use = i;
        bool fresh = use < 0;
        if (fresh)
        {
            use = leaf.Bests.IndexOf(DirectoryFormat.NullDataOff);
            if (use < 0) use = leaf.Bests.Count;
        }
        if (leaf.Entries.Count + 1 > _g.Leaf1MaxEntries(Math.Max(leaf.Bests.Count, use + 1)))
        {
            // Free-index block, data block, a leaf split with a new root.
            Reserve(4, "growing into node format");
            LeafToNode(lbuf, leaf);
            NodeAdd(name, ino, fileType);
            return;
        }
        if (fresh) Reserve(1, "a new data block");
        var (dbuf, data) = fresh ? NewDataBlock((uint)use) : Data((uint)use);
        int off = data.TryAdd(name, ino, fileType);
        if (off < 0) throw Corrupt($"the leaf's best-free table promises room in data block {use} that it does not have");
        WriteData(dbuf, data);
        while (leaf.Bests.Count <= use) leaf.Bests.Add(DirectoryFormat.NullDataOff);
        leaf.Bests[use] = (ushort)data.LargestFree;
        uint hash = DirectoryFormat.HashName(name);
        leaf.Entries.Insert(leaf.UpperBound(hash), (hash, _g.DataPtr((uint)use, off)));
        WriteHash(lbuf, leaf);
    }

    (DirectoryBuffer, DataBlock) NewDataBlock(uint db)
    {
        ulong fb = _g.FileBlockOfDb(db);
        if (IsMapped(fb) || IsMapped(fb + (ulong)_g.FsbsPerBlock - 1)) throw Corrupt($"data block {db} is mapped but marked absent");
        var buf = NewBlock(fb, dir3Header: true);
        var data = DataBlock.Empty(_g.BlockSize, _g.HasFtype);
        _data[fb] = (buf, data);
        ulong end = (fb + (ulong)_g.FsbsPerBlock) * (ulong)_g.FsBlockSize;
        if (InodeCore.Size(_dir.Core) < end) InodeCore.SetSize(_dir.Core, end);
        return (buf, data);
    }

    /// <summary>xfs_dir2_leaf_to_node: the best-free table moves to a new free-index block at the free offset and
    /// the leaf1 block becomes the only leaf-n block (the root) of a da btree.</summary>
    void LeafToNode(DirectoryBuffer lbuf, HashBlock leaf)
    {
        var free = new FreeIndexBlock(0);
        free.Bests.AddRange(leaf.Bests);
        var fbuf = NewBlock(_g.FreeFileBlock, dir3Header: true);
        BinaryPrimitives.WriteUInt32BigEndian(fbuf.Span, DirectoryFormat.FreeMagic);
        _free[_g.FreeFileBlock] = (fbuf, free);
        WriteFree(fbuf, free);
        leaf.Kind = HashBlockKind.LeafN;
        leaf.Bests.Clear();
        WriteHash(lbuf, leaf);
        Layout = DirectoryLayout.Node;
    }

    /// <summary>xfs_dir2_node_addname: a data block with room found through the free index (else a new one in
    /// the first hole of the data space), then the leaf entry inserted in hash order, splitting full blocks up
    /// the path (a full root moves into a new block under a new root).</summary>
    void NodeAdd(byte[] name, ulong ino, byte fileType)
    {
        int size = DirectoryFormat.DataEntrySize(name.Length, _g.HasFtype);
        uint? use = null;
        foreach (int k in FreeBlockIndexes())
        {
            var f = Free(k)!.Value.Block;
            for (int i = 0; i < f.Bests.Count && use is null; i++)
                if (f.Bests[i] != DirectoryFormat.NullDataOff && f.Bests[i] >= size) use = (uint)(f.FirstDb + i);
            if (use is not null) break;
        }
        uint hash = DirectoryFormat.HashName(name);
        var path = Descend(hash);
        // Blocks this add may allocate: a data block, its free-index block, and a split at every full level of
        // the path plus a new root.
        int need = 0;
        if (use is null)
        {
            need += 2;
        }
        for (int i = path.Count - 1; i >= 0 && path[i].Block.Entries.Count + 1 > path[i].Block.Capacity(_g); i--) need += i == 0 ? 2 : 1;
        Reserve(need, "a new directory block");
        DirectoryBuffer dbuf;
        DataBlock data;
        uint db;
        if (use is uint found)
        {
            db = found;
            (dbuf, data) = Data(db);
        }
        else
        {
            db = _g.DbOfFileBlock(FirstHole(0, _g.LeafFileBlock));
            (dbuf, data) = NewDataBlock(db);
        }
        int off = data.TryAdd(name, ino, fileType);
        if (off < 0) throw Corrupt($"the free index promises room in data block {db} that it does not have");
        WriteData(dbuf, data);
        SetFreeBest(db, (ushort)data.LargestFree);

        var leaf = path[^1];
        leaf.Block.Entries.Insert(leaf.Block.UpperBound(hash), (hash, _g.DataPtr(db, off)));
        leaf.Dirty = true;
        SplitUp(path);
    }

    /// <summary>Indexes of the mapped free-index blocks, in order.</summary>
    List<int> FreeBlockIndexes()
    {
        var list = new List<int>();
        ulong per = (ulong)_g.FsbsPerBlock;
        for (int i = Extents.IndexAtOrAfter(_g.FreeFileBlock); i < Extents.Count; i++)
        {
            var e = Extents[i];
            for (ulong fb = Math.Max(e.StartOffset, _g.FreeFileBlock) / per * per; fb < e.StartOffset + e.BlockCount; fb += per)
            {
                int k = (int)((fb - _g.FreeFileBlock) / per);
                if (list.Count == 0 || list[^1] != k) list.Add(k);
            }
        }
        return list;
    }

    /// <summary>Sets the free-index slot of data block <paramref name="db"/> (creating its free-index block, or
    /// extending nvalid, when needed).</summary>
    void SetFreeBest(uint db, ushort best)
    {
        int k = (int)(db / (uint)_g.FreeMaxBests);
        DirectoryBuffer fbuf;
        FreeIndexBlock free;
        if (Free(k) is { } got) (fbuf, free) = got;
        else
        {
            ulong fb = _g.FreeFileBlock + (ulong)k * (ulong)_g.FsbsPerBlock;
            fbuf = NewBlock(fb, dir3Header: true);
            BinaryPrimitives.WriteUInt32BigEndian(fbuf.Span, DirectoryFormat.FreeMagic);
            free = new FreeIndexBlock(k * _g.FreeMaxBests);
            _free[fb] = (fbuf, free);
        }
        int slot = (int)db - free.FirstDb;
        while (free.Bests.Count <= slot) free.Bests.Add(DirectoryFormat.NullDataOff);
        free.Bests[slot] = best;
        WriteFree(fbuf, free);
    }

    /// <summary>xfs_dir3_data_block_free's free-index side: the slot of a freed data block becomes null (nvalid
    /// shrinks when it was the last), and a free-index block with no used slot left is freed.</summary>
    void ClearFreeBest(uint db)
    {
        int k = (int)(db / (uint)_g.FreeMaxBests);
        var (fbuf, free) = Free(k) ?? throw Corrupt($"no free-index block covers data block {db}");
        int slot = (int)db - free.FirstDb;
        if (slot >= free.Bests.Count || free.Bests[slot] == DirectoryFormat.NullDataOff) throw Corrupt($"the free index does not list data block {db}");
        if (slot == free.Bests.Count - 1)
        {
            free.Bests.RemoveAt(slot);
            while (free.Bests.Count > 0 && free.Bests[^1] == DirectoryFormat.NullDataOff) free.Bests.RemoveAt(free.Bests.Count - 1);
        }
        else free.Bests[slot] = DirectoryFormat.NullDataOff;
        if (free.Used == 0) FreeBlock(fbuf);
        else WriteFree(fbuf, free);
    }

    /// <summary>Writes the changed blocks of a path bottom-up, splitting any that overflow (xfs_da3_split) and
    /// keeping every node key equal to its child's largest hash.</summary>
    void SplitUp(List<PathStep> path)
    {
        for (int i = path.Count - 1; i >= 0; i--)
        {
            var s = path[i];
            if (!s.Dirty) continue;
            if (s.Block.Entries.Count > s.Block.Capacity(_g))
            {
                if (i == 0)
                {
                    RootSplit(s);
                    return;
                }
                var p = path[i - 1];
                var (rightFb, right) = SplitBlock(s.FileBlock, s.Buf, s.Block);
                p.Block.Entries[p.Index] = (s.Block.LastHash, (uint)s.FileBlock);
                p.Block.Entries.Insert(p.Index + 1, (right.LastHash, (uint)rightFb));
                p.Dirty = true;
                continue;
            }
            WriteHash(s.Buf, s.Block);
            if (i > 0)
            {
                var p = path[i - 1];
                if (p.Block.Entries[p.Index].Hash != s.Block.LastHash)
                {
                    p.Block.Entries[p.Index] = (s.Block.LastHash, p.Block.Entries[p.Index].Value);
                    p.Dirty = true;
                }
            }
        }
    }

    /// <summary>Moves the upper half of an overflowing block into a new block linked after it; writes both.</summary>
    (ulong Fb, HashBlock Right) SplitBlock(ulong fb, DirectoryBuffer buf, HashBlock blk)
    {
        ulong rightFb = FirstHole(_g.LeafFileBlock, _g.FreeFileBlock);
        var rbuf = NewBlock(rightFb, dir3Header: false);
        var right = new HashBlock(blk.Kind, blk.Level) { Back = (uint)fb, Forw = blk.Forw };
        int keep = blk.Entries.Count / 2;
        right.Entries.AddRange(blk.Entries.GetRange(keep, blk.Entries.Count - keep));
        blk.Entries.RemoveRange(keep, blk.Entries.Count - keep);
        if (blk.Forw != 0)
        {
            var (nbuf, next) = Hash(blk.Forw);
            if (next.Back != (uint)fb) throw Corrupt($"da block at file block {blk.Forw} does not link back to {fb}");
            next.Back = (uint)rightFb;
            WriteHash(nbuf, next);
        }
        blk.Forw = (uint)rightFb;
        _hash[rightFb] = (rbuf, right);
        WriteHash(buf, blk);
        WriteHash(rbuf, right);
        return (rightFb, right);
    }

    /// <summary>xfs_da3_root_split: the root stays at the leaf offset; its contents move to a new block, which
    /// splits in two, and the root becomes a node one level higher over both.</summary>
    void RootSplit(PathStep root)
    {
        ulong leftFb = FirstHole(_g.LeafFileBlock, _g.FreeFileBlock);
        var lbuf = NewBlock(leftFb, dir3Header: false);
        var left = new HashBlock(root.Block.Kind, root.Block.Level);
        left.Entries.AddRange(root.Block.Entries);
        _hash[leftFb] = (lbuf, left);
        var (rightFb, right) = SplitBlock(leftFb, lbuf, left);
        var r = root.Block;
        r.Level = left.Level + 1;
        r.Kind = HashBlockKind.Node;
        r.Entries.Clear();
        r.Entries.Add((left.LastHash, (uint)leftFb));
        r.Entries.Add((right.LastHash, (uint)rightFb));
        if (r.Level >= DirectoryFormat.MaxDaDepth) throw new XfsWriteException(WriteErrorKind.NoSpace, $"directory '{_where}': its da btree is as deep as XFS allows");
        WriteHash(root.Buf, r);
    }

    // ------------------------------------------------------------------ remove

    /// <summary>Removes <paramref name="name"/> (present: the caller found it).</summary>
    public void Remove(byte[] name, DateTimeOffset now)
    {
        RefuseEdit("removing an entry");
        if (DirectoryFormat.IsDot(name) || DirectoryFormat.IsDotDot(name))
            throw new XfsWriteException(WriteErrorKind.InvalidArgument, $"'{_where}': '.' and '..' cannot be removed");
        XfsWriteException Missing() => new(WriteErrorKind.NotFound, $"'{_where}/{DirectoryFormat.Show(name)}' does not exist");
        if (_tx.WantsDirectoryUpdates)
        {
            _tx.QueueDirectoryUpdate(_dir.Ino, (Find(name) ?? throw Missing()).Ino, -1, DirectoryEntryKind.Name);
        }
        switch (Layout)
        {
            case DirectoryLayout.Shortform:
                {
                    var sf = ReadShortform();
                    if (!sf.Remove(name)) throw Missing();
                    WriteShortform(sf);
                    break;
                }
            case DirectoryLayout.Block:
                {
                    var (buf, block) = ReadBlockForm();
                    if (!block.Remove(name)) throw Missing();
                    if (!TryBlockToShortform(buf, block)) WriteBlockForm(buf, block);
                    break;
                }
            case DirectoryLayout.Leaf:
                {
                    var found = Lookup(name) ?? throw Missing();
                    LeafRemove(found);
                    break;
                }
            default:
                {
                    var found = Lookup(name) ?? throw Missing();
                    NodeRemove(found);
                    break;
                }
        }
        Finish(now);
    }

    /// <summary>Removes a data entry; frees its data block when it empties (never block 0, which holds "." and
    /// ".."). Returns the block's new best free length, or null when it was freed.</summary>
    ushort? RemoveData(uint ptr)
    {
        uint db = _g.DbOfPtr(ptr);
        var (dbuf, data) = Data(db);
        if (!data.RemoveAt(_g.OffsetOfPtr(ptr))) throw Corrupt($"no data entry at address {ptr}");
        if (data.IsEmpty && db != 0)
        {
            FreeBlock(dbuf);
            UpdateDataSize();
            return null;
        }
        WriteData(dbuf, data);
        return (ushort)data.LargestFree;
    }

    /// <summary>xfs_dir2_leaf_removename: leaf entry and data entry go, the best-free table follows (trailing
    /// slots of freed blocks trimmed), then the block form is tried.</summary>
    void LeafRemove(Found found)
    {
        var leafStep = found.Path[^1];
        var leaf = leafStep.Block;
        leaf.Entries.RemoveAt(found.LeafIndex);
        uint db = _g.DbOfPtr(found.Ptr);
        if (db >= leaf.Bests.Count) throw Corrupt($"data block {db} has no best-free slot");
        ushort? best = RemoveData(found.Ptr);
        if (best is ushort b) leaf.Bests[(int)db] = b;
        else if (db == leaf.Bests.Count - 1)
        {
            leaf.Bests.RemoveAt((int)db);
            while (leaf.Bests.Count > 1 && leaf.Bests[^1] == DirectoryFormat.NullDataOff) leaf.Bests.RemoveAt(leaf.Bests.Count - 1);
        }
        else leaf.Bests[(int)db] = DirectoryFormat.NullDataOff;
        WriteHash(leafStep.Buf, leaf);
        TryLeafToBlock(leafStep.Buf, leaf);
    }

    /// <summary>xfs_dir2_leaf_to_block: with data block 0 the only one left and room in it for the leaf entries
    /// and tail, it becomes the single directory block and the leaf block is freed; then shortform is tried.</summary>
    void TryLeafToBlock(DirectoryBuffer lbuf, HashBlock leaf)
    {
        if (leaf.Bests.Count != 1) return;
        var (dbuf, data) = Data(0);
        if (data.Entries.Count != leaf.Entries.Count)
            throw Corrupt($"the leaf holds {leaf.Entries.Count} live entries for {data.Entries.Count} data entries");
        var block = BlockDirectory.FromData(data.Entries, _g.BlockSize, _g.HasFtype);
        if (block is null) return;
        FreeBlock(lbuf);
        _data.Remove(0);
        WriteBlockForm(dbuf, block);
        InodeCore.SetSize(_dir.Core, (ulong)_g.BlockSize);
        Layout = DirectoryLayout.Block;
        TryBlockToShortform(dbuf, block);
    }

    /// <summary>xfs_dir2_node_removename: the leaf entry and data entry go, the free index follows, empty and
    /// small leaves are joined (xfs_da3_join), a root with one child takes its child's place, and a tree that is
    /// down to one leaf with one free-index block becomes a leaf directory again.</summary>
    void NodeRemove(Found found)
    {
        var path = found.Path;
        var leaf = path[^1];
        leaf.Block.Entries.RemoveAt(found.LeafIndex);
        leaf.Dirty = true;
        uint db = _g.DbOfPtr(found.Ptr);
        ushort? best = RemoveData(found.Ptr);
        if (best is ushort b) SetFreeBest(db, b);
        else ClearFreeBest(db);
        JoinUp(path);
        TryNodeToLeaf();
    }

    /// <summary>Bottom-up after a removal: an empty block leaves the tree; a block under half full merges with a
    /// sibling under the same parent when both fit in three quarters of a block; node keys follow their children;
    /// finally a root node with one child absorbs it (xfs_da3_root_join).</summary>
    void JoinUp(List<PathStep> path)
    {
        for (int i = path.Count - 1; i >= 1; i--)
        {
            var s = path[i];
            var p = path[i - 1];
            if (!s.Dirty) continue;
            if (s.Block.Entries.Count == 0)
            {
                Unlink(s.FileBlock, s.Block);
                FreeBlock(s.Buf);
                p.Block.Entries.RemoveAt(p.Index);
                p.Dirty = true;
                continue;
            }
            if (DirectoryFormat.DaHeaderSize + 8 * s.Block.Entries.Count < _g.BlockSize / 2 && TryMerge(s, p)) continue;
            WriteHash(s.Buf, s.Block);
            if (p.Block.Entries[p.Index].Hash != s.Block.LastHash)
            {
                p.Block.Entries[p.Index] = (s.Block.LastHash, p.Block.Entries[p.Index].Value);
                p.Dirty = true;
            }
        }
        var root = path[0];
        while (root.Block.Kind == HashBlockKind.Node && root.Block.Entries.Count == 1)
        {
            ulong childFb = root.Block.Entries[0].Value;
            var (cbuf, child) = Hash(childFb);
            if (child.Forw != 0 || child.Back != 0) throw Corrupt($"the only child of the root (file block {childFb}) has siblings");
            if (child.Level != root.Block.Level - 1) throw Corrupt($"da block at file block {childFb} does not fit its parent");
            root.Block.Kind = child.Kind;
            root.Block.Level = child.Level;
            root.Block.Entries.Clear();
            root.Block.Entries.AddRange(child.Entries);
            FreeBlock(cbuf);
            root.Dirty = true;
        }
        if (root.Block.Entries.Count == 0) throw Corrupt("the da btree lost its last entry");
        if (root.Dirty) WriteHash(root.Buf, root.Block);
    }

    /// <summary>Merges a small block with its right (else left) sibling under the same parent when together they
    /// fill at most three quarters of a block: the right one's entries move left and it leaves the tree.</summary>
    bool TryMerge(PathStep s, PathStep p)
    {
        int limit = s.Block.Capacity(_g) * 3 / 4;
        foreach (int sibling in new[] { p.Index + 1, p.Index - 1 })
        {
            if (sibling < 0 || sibling >= p.Block.Entries.Count) continue;
            ulong sibFb = p.Block.Entries[sibling].Value;
            var (sbuf, sib) = Hash(sibFb);
            if (sib.Kind != s.Block.Kind || sib.Level != s.Block.Level) throw Corrupt($"da block at file block {sibFb} does not fit its parent");
            if (sib.Entries.Count + s.Block.Entries.Count > limit) continue;
            bool sIsLeft = sibling > p.Index;
            ulong leftFb = sIsLeft ? s.FileBlock : sibFb, rightFb = sIsLeft ? sibFb : s.FileBlock;
            var (leftBuf, left) = sIsLeft ? (s.Buf, s.Block) : (sbuf, sib);
            var (rightBuf, right) = sIsLeft ? (sbuf, sib) : (s.Buf, s.Block);
            if (left.Forw != (uint)rightFb || right.Back != (uint)leftFb) throw Corrupt($"da blocks {leftFb} and {rightFb} are not linked as siblings");
            left.Entries.AddRange(right.Entries);
            right.Entries.Clear();
            Unlink(rightFb, right);
            FreeBlock(rightBuf);
            WriteHash(leftBuf, left);
            int leftIndex = Math.Min(p.Index, sibling), rightIndex = Math.Max(p.Index, sibling);
            p.Block.Entries[leftIndex] = (left.LastHash, (uint)leftFb);
            p.Block.Entries.RemoveAt(rightIndex);
            p.Dirty = true;
            return true;
        }
        return false;
    }

    /// <summary>Takes a block out of its level's sibling list (xfs_da3_blk_unlink).</summary>
    void Unlink(ulong fb, HashBlock blk)
    {
        if (blk.Back != 0)
        {
            var (buf, prev) = Hash(blk.Back);
            if (prev.Forw != (uint)fb) throw Corrupt($"da block at file block {blk.Back} does not link forward to {fb}");
            prev.Forw = blk.Forw;
            WriteHash(buf, prev);
        }
        if (blk.Forw != 0)
        {
            var (buf, next) = Hash(blk.Forw);
            if (next.Back != (uint)fb) throw Corrupt($"da block at file block {blk.Forw} does not link back to {fb}");
            next.Back = blk.Back;
            WriteHash(buf, next);
        }
    }

    /// <summary>xfs_dir2_node_to_leaf: a root that is a single leaf-n block, one free-index block, and room in the
    /// leaf for its entries plus the best-free table: the table moves into the leaf, the free block is freed.</summary>
    void TryNodeToLeaf()
    {
        var (rbuf, root) = Hash(_g.LeafFileBlock);
        if (root.Kind != HashBlockKind.LeafN) return;
        var indexes = FreeBlockIndexes();
        if (indexes.Count != 1 || indexes[0] != 0) return;
        var (fbuf, free) = Free(0)!.Value;
        if (free.Bests.Count == 0 || root.Entries.Count > _g.Leaf1MaxEntries(free.Bests.Count)) return;
        root.Kind = HashBlockKind.Leaf1;
        root.Bests.Clear();
        root.Bests.AddRange(free.Bests);
        FreeBlock(fbuf);
        WriteHash(rbuf, root);
        Layout = DirectoryLayout.Leaf;
        TryLeafToBlock(rbuf, root);
    }

    // ------------------------------------------------------------------ replace

    /// <summary>
    /// Points <paramref name="name"/> at <paramref name="ino"/> with file type <paramref name="fileType"/> (rename
    /// over an existing name, ".." of a moved directory, or the file type of "." or ".." set right by the link count
    /// repair); the entry keeps its place and cookie. Throws NotFound when the name is absent.
    /// </summary>
    public void Replace(byte[] name, ulong ino, byte fileType, DateTimeOffset now)
    {
        RefuseEdit("replacing an entry");
        XfsWriteException Missing() => new(WriteErrorKind.NotFound, $"'{_where}/{DirectoryFormat.Show(name)}' does not exist");
        // '.' names the directory itself: only its file type may be set again (the link count repair's fix).
        if (DirectoryFormat.IsDot(name) && ino != _dir.Ino) throw new XfsWriteException(WriteErrorKind.InvalidArgument, $"'{_where}': '.' cannot be replaced");
        if (_tx.WantsDirectoryUpdates && !DirectoryFormat.IsDotDot(name) && !DirectoryFormat.IsDot(name))
        {
            // '..' of a moved directory: the caller knows the old parent and says it (NamespaceOperations.SetParent).
            _tx.QueueDirectoryUpdate(_dir.Ino, (Find(name) ?? throw Missing()).Ino, -1, DirectoryEntryKind.Name);
            _tx.QueueDirectoryUpdate(_dir.Ino, ino, +1, DirectoryEntryKind.Name);
        }
        switch (Layout)
        {
            case DirectoryLayout.Shortform:
                {
                    var sf = ReadShortform();
                    if (DirectoryFormat.IsDot(name)) break; // not stored in shortform: nothing to set
                    if (DirectoryFormat.IsDotDot(name)) sf.Parent = ino;
                    else
                    {
                        int k = sf.Entries.FindIndex(e => name.AsSpan().SequenceEqual(e.Name));
                        if (k < 0) throw Missing();
                        sf.Entries[k] = sf.Entries[k] with { Ino = ino, FileType = fileType };
                    }
                    if (sf.Size <= new Dinode(_dir.Core).DataFork.Length) WriteShortform(sf);
                    else
                    {
                        // An 8-byte inode number widened every entry past the inline room: go to block form.
                        ConvertToBlock(BlockDirectory.FromShortform(sf, _dir.Ino, _g.BlockSize, _g.HasFtype));
                    }
                    break;
                }
            case DirectoryLayout.Block:
                {
                    var (buf, block) = ReadBlockForm();
                    if (!block.Replace(name, ino, fileType)) throw Missing();
                    WriteBlockForm(buf, block);
                    break;
                }
            default:
                {
                    uint ptr;
                    if (DirectoryFormat.IsDotDot(name) || DirectoryFormat.IsDot(name))
                    {
                        var dots = Data(0).Block.Entries.FirstOrDefault(e => name.AsSpan().SequenceEqual(e.Name)) ?? throw Corrupt($"no '{DirectoryFormat.Show(name)}' entry");
                        ptr = _g.DataPtr(0, dots.Offset);
                    }
                    else ptr = (Lookup(name) ?? throw Missing()).Ptr;
                    var (dbuf, data) = Data(_g.DbOfPtr(ptr));
                    data.ReplaceAt(_g.OffsetOfPtr(ptr), ino, fileType);
                    WriteData(dbuf, data);
                    break;
                }
        }
        Finish(now);
    }
}
