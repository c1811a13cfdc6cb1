using System.Buffers.Binary;
using Xfbtree.Buffers;
using Xfbtree.Xfs.Format;
using Xfbtree.Xfs.Trees;
using Xfbtree.Xfs.Write.Engine;

namespace Xfbtree.Xfs.Write.Namespace;

/// <summary>
/// Changes one directory inside a transaction that holds its inode lock: lookup, emptiness, add and remove for
/// shortform and block directories (with the shortform to block conversion), read-only lookups for leaf and
/// node directories, whose edits are refused naming the format. Every block is read through the transaction,
/// verified, and logged whole after the change.
/// </summary>
internal sealed class DirectoryEditor
{
    readonly WriteTransaction _tx;
    readonly IncoreInode _dir;
    readonly DirectoryReader _reader;
    readonly XfsGeometry _geo;
    readonly string _where;
    readonly List<BmbtExtent>? _extents;

    public DirectoryEditor(WriteTransaction tx, IncoreInode dir, DirectoryReader reader, string where)
    {
        _tx = tx;
        _dir = dir;
        _reader = reader;
        _geo = tx.Engine.Geometry;
        _where = where;
        if (!InodeCore.IsDirectory(dir.Core)) throw new XfsWriteException(WriteErrorKind.NotDirectory, $"'{where}' is not a directory");
        if (InodeCore.Nlink(dir.Core) == 0) throw new XfsWriteException(WriteErrorKind.NotFound, $"'{where}' was removed");
        var d = new Dinode(dir.Core);
        if (d.Format != ForkFormat.Local) _extents = reader.DataExtents(dir.Ino, dir.Core, where);
        Layout = reader.Layout(dir.Core, _extents, where);
    }

    public DirectoryLayout Layout { get; }

    static string FormatName(DirectoryLayout layout) => layout switch
    {
        DirectoryLayout.Leaf => "leaf",
        DirectoryLayout.Node => "node",
        DirectoryLayout.Block => "block",
        _ => "shortform",
    };

    /// <summary>XFS_SB_VERSION_BORGBIT: names hash and compare case-insensitively (mkfs -n version=ci).</summary>
    const ushort VersionAsciiCi = 0x4000;

    void RefuseEdit(string what)
    {
        if ((_geo.Superblock.VersionNum & VersionAsciiCi) != 0)
            throw new XfsWriteException(WriteErrorKind.NotSupported,
                $"directory '{_where}': the filesystem has ASCII case-insensitive names, which the engine does not modify yet ({what})");
        if (Layout is DirectoryLayout.Leaf or DirectoryLayout.Node)
            throw new XfsWriteException(WriteErrorKind.NotSupported,
                $"directory '{_where}' is in {FormatName(Layout)} format, which the engine does not modify yet ({what})");
    }

    ShortformDirectory ReadShortform()
    {
        var d = new Dinode(_dir.Core);
        return ShortformDirectory.Parse(d.DataFork, (long)d.Size, _reader.HasFtype, _reader.DirBlockSize, _where);
    }

    IBufferVerifier BlockVerifier(uint magic) => new MagicCrcVerifier("directory block", magic, DirectoryFormat.CrcOffset, 0, b =>
    {
        var s = b.Span;
        if ((long)BinaryPrimitives.ReadUInt64BigEndian(s[8..]) != b.Daddr) return "blkno is not the block's address";
        if (!s.Slice(24, 16).SequenceEqual(_geo.MetaUuid)) return "metadata UUID mismatch";
        if (BinaryPrimitives.ReadUInt64BigEndian(s[40..]) != _dir.Ino) return $"owner is not inode {_dir.Ino}";
        return null;
    });

    /// <summary>The block of a block directory, joined to the transaction (its mapping must be one contiguous run).</summary>
    BlockBuffer ReadBlockBuffer()
    {
        var first = _extents![0];
        if (first.StartOffset != 0 || first.BlockCount < _reader.DirBlockFsbs)
            throw new XfsWriteException(WriteErrorKind.NotSupported, $"directory '{_where}': its directory block is not one contiguous extent, which the engine does not modify yet");
        if (first.Unwritten) throw new XfsWriteException(WriteErrorKind.Corrupt, $"'{_where}': directory block mapped unwritten");
        try
        {
            return _tx.ReadBuffer(_reader.DaddrOf(first.StartBlock), _reader.DirBlockSize / 512, BlockVerifier(DirectoryFormat.BlockMagic));
        }
        catch (CorruptionException e) { throw new XfsWriteException(WriteErrorKind.Corrupt, $"'{_where}': {e.Message}", e); }
    }

    /// <summary>Every live entry ("." and ".." excluded) and the parent.</summary>
    public (ulong Parent, List<DataEntry> Entries) ReadAll()
    {
        switch (Layout)
        {
            case DirectoryLayout.Shortform:
                {
                    var sf = ReadShortform();
                    return (sf.Parent, sf.Entries.Select(e => new DataEntry(e.Name, e.Ino, e.FileType, e.Offset)).ToList());
                }
            case DirectoryLayout.Block:
                {
                    var buf = ReadBlockBuffer();
                    var block = BlockDirectory.Parse(buf.Span, _reader.HasFtype, _where);
                    ulong parent = block.Entries.FirstOrDefault(e => DirectoryFormat.IsDotDot(e.Name))?.Ino
                        ?? throw new XfsWriteException(WriteErrorKind.Corrupt, $"'{_where}': no '..' entry");
                    return (parent, block.Entries.Where(e => !DirectoryFormat.IsDot(e.Name) && !DirectoryFormat.IsDotDot(e.Name)).ToList());
                }
            default:
                {
                    var (parent, entries, _) = _reader.ReadAll(_dir.Ino, _dir.Core, _tx.ReadData, _where);
                    return (parent, entries);
                }
        }
    }

    public DataEntry? Find(ReadOnlySpan<byte> name)
    {
        foreach (var e in ReadAll().Entries)
            if (name.SequenceEqual(e.Name)) return e;
        return null;
    }

    /// <summary>Adds <paramref name="name"/> → <paramref name="ino"/>; the caller checked it is absent.</summary>
    public void Add(byte[] name, ulong ino, byte fileType, DateTimeOffset now)
    {
        RefuseEdit("adding an entry");
        if (Layout == DirectoryLayout.Shortform)
        {
            var sf = ReadShortform();
            int forkSize = new Dinode(_dir.Core).DataFork.Length;
            if (sf.TryAdd(name, ino, fileType, forkSize) == ShortformAddResult.Added)
            {
                WriteShortform(sf);
            }
            else
            {
                var block = BlockDirectory.FromShortform(sf, _dir.Ino, _reader.DirBlockSize, _reader.HasFtype);
                if (!block.TryAdd(name, ino, fileType)) RefuseFull();
                ConvertToBlock(block);
            }
        }
        else
        {
            var buf = ReadBlockBuffer();
            var block = BlockDirectory.Parse(buf.Span, _reader.HasFtype, _where);
            if (!block.TryAdd(name, ino, fileType)) RefuseFull();
            WriteBlock(buf, block);
        }
        InodeCore.Touch(_dir.Core, now);
        _tx.LogInode(_dir);
    }

    /// <summary>Lays the model out into the joined block, checks the result parses as a block directory with the
    /// model's entries (fail closed: a bad layout cancels the transaction), logs it whole.</summary>
    void WriteBlock(BlockBuffer buf, BlockDirectory block)
    {
        block.WriteBody(buf.Span);
        var check = BlockDirectory.Parse(buf.Span, _reader.HasFtype, _where);
        if (check.Entries.Count != block.Entries.Count || check.Stale != block.Stale)
            throw new XfsWriteException(WriteErrorKind.Corrupt, $"'{_where}': the rewritten directory block does not read back as written");
        XfsCrc.Update(buf.Span, DirectoryFormat.CrcOffset);
        _tx.LogBuffer(buf, 0, buf.Length);
    }

    /// <summary>Replaces a shortform directory's bytes after checking they parse back to the model.</summary>
    void WriteShortform(ShortformDirectory sf)
    {
        var bytes = sf.Serialize();
        var check = ShortformDirectory.Parse(bytes, bytes.Length, _reader.HasFtype, _reader.DirBlockSize, _where);
        if (check.Entries.Count != sf.Entries.Count || check.Parent != sf.Parent)
            throw new XfsWriteException(WriteErrorKind.Corrupt, $"'{_where}': the rewritten shortform directory does not read back as written");
        InodeCore.SetLocalData(_dir.Core, bytes);
    }

    void RefuseFull() => throw new XfsWriteException(WriteErrorKind.NotSupported,
        $"directory '{_where}' is full in block format; growing it into leaf format is not supported yet");

    /// <summary>xfs_dir2_sf_to_block: a new directory block (rmap owner = the directory, offset 0) holding the
    /// model, the data fork turned into one extent, di_size = the directory block size, nblocks grown.</summary>
    void ConvertToBlock(BlockDirectory block)
    {
        uint len = (uint)_reader.DirBlockFsbs;
        var ino = _dir.Ino;
        var got = _tx.Allocate(new AllocationRequest(_geo.AgbToFsb(_geo.InoToAgno(ino), _geo.AginoToAgbno(_geo.InoToAgino(ino))),
            len, len, AllocationPurpose.DirectoryBlock));
        _tx.RmapMap(got.AgNumber, new RmapRecord(got.AgBlock, len, ino, 0), false);
        long daddr = _geo.AgBlockToDaddr(got.AgNumber, got.AgBlock);
        var buf = _tx.GetNewBuffer(daddr, _reader.DirBlockSize / 512, BlockVerifier(DirectoryFormat.BlockMagic));
        var s = buf.Span;
        s.Clear();
        BinaryPrimitives.WriteUInt32BigEndian(s, DirectoryFormat.BlockMagic);
        BinaryPrimitives.WriteUInt64BigEndian(s[8..], (ulong)daddr);
        _geo.MetaUuid.CopyTo(s[24..]);
        BinaryPrimitives.WriteUInt64BigEndian(s[40..], ino);
        WriteBlock(buf, block);

        var c = _dir.Core.AsSpan();
        c.Slice(Dinode.CoreSize, new Dinode(c).DataFork.Length).Clear();
        c[InodeCore.OffFormat] = (byte)ForkFormat.Extents;
        InodeCore.WriteExtent(c[Dinode.CoreSize..], 0, got.Fsbno, len);
        InodeCore.SetDataExtents(c, 1);
        InodeCore.SetSize(c, (ulong)_reader.DirBlockSize);
        InodeCore.SetNblocks(c, InodeCore.Nblocks(c) + len);
    }

    /// <summary>Removes <paramref name="name"/> (present: the caller found it).</summary>
    public void Remove(byte[] name, DateTimeOffset now)
    {
        RefuseEdit("removing an entry");
        if (Layout == DirectoryLayout.Shortform)
        {
            var sf = ReadShortform();
            if (!sf.Remove(name)) throw new XfsWriteException(WriteErrorKind.NotFound, $"'{_where}/{DirectoryFormat.Show(name)}' does not exist");
            WriteShortform(sf);
        }
        else
        {
            var buf = ReadBlockBuffer();
            var block = BlockDirectory.Parse(buf.Span, _reader.HasFtype, _where);
            if (!block.Remove(name)) throw new XfsWriteException(WriteErrorKind.NotFound, $"'{_where}/{DirectoryFormat.Show(name)}' does not exist");
            WriteBlock(buf, block);
        }
        InodeCore.Touch(_dir.Core, now);
        _tx.LogInode(_dir);
    }

    /// <summary>Points '..' at <paramref name="parent"/> (a directory renamed into another parent), leaving the
    /// times to the caller. Shortform: the header's parent; every block form: the inode number of the '..' entry,
    /// the second entry of data block 0, rewritten in place (its name and hash do not change).</summary>
    public void SetParent(ulong parent)
    {
        if (Layout == DirectoryLayout.Shortform)
        {
            var sf = ReadShortform();
            sf.Parent = parent;
            if (sf.Size > new Dinode(_dir.Core).DataFork.Length)
                throw new XfsWriteException(WriteErrorKind.NotSupported, $"directory '{_where}': a wider '..' does not fit its shortform fork, which the engine does not convert yet");
            WriteShortform(sf);
            _tx.LogInode(_dir);
            return;
        }
        var first = _extents![0];
        if (first.StartOffset != 0 || first.BlockCount < _reader.DirBlockFsbs || first.Unwritten)
            throw new XfsWriteException(WriteErrorKind.NotSupported, $"directory '{_where}': its first directory block is not one contiguous written extent, which the engine does not modify yet");
        uint magic = Layout == DirectoryLayout.Block ? DirectoryFormat.BlockMagic : DirectoryFormat.DataMagic;
        BlockBuffer buf;
        try { buf = _tx.ReadBuffer(_reader.DaddrOf(first.StartBlock), _reader.DirBlockSize / 512, BlockVerifier(magic)); }
        catch (CorruptionException e) { throw new XfsWriteException(WriteErrorKind.Corrupt, $"'{_where}': {e.Message}", e); }
        var span = buf.Span;
        int at = DirectoryFormat.DotOffset + DirectoryFormat.DataEntrySize(1, _reader.HasFtype);
        if (span[at + 8] != 2 || span[at + 9] != (byte)'.' || span[at + 10] != (byte)'.')
            throw new XfsWriteException(WriteErrorKind.Corrupt, $"'{_where}': the second entry of the first directory block is not '..'");
        BinaryPrimitives.WriteUInt64BigEndian(span[at..], parent);
        XfsCrc.Update(span, DirectoryFormat.CrcOffset);
        _tx.LogBuffer(buf, 0, buf.Length);
    }
}
