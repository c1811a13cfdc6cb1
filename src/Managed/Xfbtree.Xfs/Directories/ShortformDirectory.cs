using System.Buffers.Binary;
using Xfbtree.Xfs.Write;

namespace Xfbtree.Xfs.Directories;

/// <summary>One entry of a shortform directory: name, inode, file type and its data-block offset cookie.</summary>
internal sealed record ShortformEntry(byte[] Name, ulong Ino, byte FileType, int Offset);

/// <summary>Why a name could not be added to a shortform directory.</summary>
internal enum ShortformAddResult
{
    Added,
    /// <summary>The entry does not fit the inode's data fork, or its offset would not fit a directory block:
    /// the directory must be converted to block form (xfs_dir2_sf_to_block) first.</summary>
    NeedsBlockForm,
}

/// <summary>
/// An in-memory shortform (inline, LOCAL data fork) directory (xfs_dir2_sf.c): header count u8, i8count u8,
/// parent 4 or 8 bytes; entries namelen u8, offset u16, name, ftype u8 (with the ftype feature), inode 4 or 8
/// bytes. All numbers are 8 bytes wide as soon as one (parent included) does not fit in 32 bits. Offsets are the
/// positions the entries would have in the block form and increase strictly with the entry order.
/// </summary>
internal sealed class ShortformDirectory
{
    readonly bool _ftype;
    readonly int _dirBlockSize;

    public ShortformDirectory(ulong parent, bool hasFtype, int dirBlockSize)
    {
        Parent = parent;
        _ftype = hasFtype;
        _dirBlockSize = dirBlockSize;
    }

    public ulong Parent { get; set; }
    public List<ShortformEntry> Entries { get; } = new();

    /// <summary>Offset of the first entry after "." and "..": data header + two 16-byte entries (or 16 with ftype off too).</summary>
    public int FirstOffset => DirectoryFormat.DataHeaderSize + DirectoryFormat.DataEntrySize(1, _ftype) + DirectoryFormat.DataEntrySize(2, _ftype);

    bool Wide => Parent > DirectoryFormat.MaxShortInode || Entries.Exists(e => e.Ino > DirectoryFormat.MaxShortInode);
    int InoSize => Wide ? 8 : 4;

    /// <summary>di_size of the directory: the bytes <see cref="Serialize"/> produces.</summary>
    public int Size
    {
        get
        {
            int ino = InoSize, n = 2 + ino;
            foreach (var e in Entries) n += 3 + e.Name.Length + (_ftype ? 1 : 0) + ino;
            return n;
        }
    }

    /// <summary>Parses and checks (as xfs_dir2_sf_verify) the first <paramref name="size"/> bytes of a LOCAL data fork.
    /// Throws <see cref="XfsWriteException"/> Corrupt naming <paramref name="where"/>.</summary>
    public static ShortformDirectory Parse(ReadOnlySpan<byte> fork, long size, bool hasFtype, int dirBlockSize, string where)
    {
        XfsWriteException Bad(string why) => new(WriteErrorKind.Corrupt, $"{where}: shortform directory {why}");
        if (size < 6 || size > fork.Length) throw Bad($"size {size} outside 6..{fork.Length}");
        var b = fork[..(int)size];
        int count = b[0], i8 = b[1];
        int ino = i8 != 0 ? 8 : 4;
        if (b.Length < 2 + ino) throw Bad("header truncated");
        ulong parent = ino == 8 ? BinaryPrimitives.ReadUInt64BigEndian(b[2..]) : BinaryPrimitives.ReadUInt32BigEndian(b[2..]);
        var dir = new ShortformDirectory(parent, hasFtype, dirBlockSize);
        int wideSeen = parent > DirectoryFormat.MaxShortInode ? 1 : 0;
        int pos = 2 + ino, nextOffset = dir.FirstOffset;
        for (int k = 0; k < count; k++)
        {
            if (pos + 3 > b.Length) throw Bad($"entry {k} beyond the end");
            int len = b[pos];
            if (len == 0) throw Bad($"entry {k} has an empty name");
            int off = BinaryPrimitives.ReadUInt16BigEndian(b[(pos + 1)..]);
            int end = pos + 3 + len + (hasFtype ? 1 : 0) + ino;
            if (end > b.Length) throw Bad($"entry {k} beyond the end");
            if (off < nextOffset) throw Bad($"entry {k} offset {off} below {nextOffset}");
            byte[] name = b.Slice(pos + 3, len).ToArray();
            byte ftype = hasFtype ? b[pos + 3 + len] : DirectoryFormat.FtUnknown;
            if (ftype >= DirectoryFormat.FtMax) throw Bad($"entry {k} file type {ftype}");
            var ip = b[(pos + 3 + len + (hasFtype ? 1 : 0))..];
            ulong entryIno = ino == 8 ? BinaryPrimitives.ReadUInt64BigEndian(ip) : BinaryPrimitives.ReadUInt32BigEndian(ip);
            if (entryIno > DirectoryFormat.MaxShortInode) wideSeen++;
            dir.Entries.Add(new ShortformEntry(name, entryIno, ftype, off));
            nextOffset = off + DirectoryFormat.DataEntrySize(len, hasFtype);
            pos = end;
        }
        if (wideSeen != i8) throw Bad($"i8count {i8}, counted {wideSeen}");
        if (pos != b.Length) throw Bad($"size {size}, entries end at {pos}");
        if (nextOffset + (count + 2) * DirectoryFormat.LeafEntrySize + DirectoryFormat.BlockTailSize > dirBlockSize)
            throw Bad("offsets too high for the block form");
        return dir;
    }

    /// <summary>The on-disk bytes (di_size = their length).</summary>
    public byte[] Serialize()
    {
        bool wide = Wide;
        int ino = wide ? 8 : 4;
        var b = new byte[Size];
        b[0] = checked((byte)Entries.Count);
        b[1] = (byte)((Parent > DirectoryFormat.MaxShortInode ? 1 : 0) + Entries.Count(e => e.Ino > DirectoryFormat.MaxShortInode));
        WriteIno(b.AsSpan(2), Parent, wide);
        int pos = 2 + ino;
        foreach (var e in Entries)
        {
            b[pos] = (byte)e.Name.Length;
            BinaryPrimitives.WriteUInt16BigEndian(b.AsSpan(pos + 1), checked((ushort)e.Offset));
            e.Name.CopyTo(b.AsSpan(pos + 3));
            int p = pos + 3 + e.Name.Length;
            if (_ftype) b[p++] = e.FileType;
            WriteIno(b.AsSpan(p), e.Ino, wide);
            pos = p + ino;
        }
        return b;
    }

    static void WriteIno(Span<byte> to, ulong ino, bool wide)
    {
        if (wide) BinaryPrimitives.WriteUInt64BigEndian(to, ino);
        else BinaryPrimitives.WriteUInt32BigEndian(to, (uint)ino);
    }

    public ShortformEntry? Find(ReadOnlySpan<byte> name)
    {
        foreach (var e in Entries)
            if (name.SequenceEqual(e.Name)) return e;
        return null;
    }

    /// <summary>
    /// Adds an entry as xfs_dir2_sf_addname does: appended after the last offset when that still leaves the block
    /// form room, else in the first offset hole that fits when the leaf entry it adds still fits the block;
    /// <see cref="ShortformAddResult.NeedsBlockForm"/> (nothing changed) when the new size exceeds
    /// <paramref name="forkSize"/> or no offset fits the block form.
    /// </summary>
    public ShortformAddResult TryAdd(byte[] name, ulong ino, byte fileType, int forkSize)
    {
        int size = DirectoryFormat.DataEntrySize(name.Length, _ftype);
        Entries.Add(new ShortformEntry(name, ino, fileType, 0));
        int newSize = Size;
        Entries.RemoveAt(Entries.Count - 1);
        if (newSize > forkSize) return ShortformAddResult.NeedsBlockForm;

        int offset = FirstOffset, holeIndex = -1, holeOffset = 0;
        for (int k = 0; k < Entries.Count; k++)
        {
            if (holeIndex < 0 && offset + size <= Entries[k].Offset) { holeIndex = k; holeOffset = offset; }
            offset = Entries[k].Offset + DirectoryFormat.DataEntrySize(Entries[k].Name.Length, _ftype);
        }
        // The block form of the result: the last entry's end, a leaf entry per entry ('.', '..' and the new one
        // included) and the tail. In a hole the new entry takes no data space, but its leaf entry still must fit.
        int used = offset + (Entries.Count + 3) * DirectoryFormat.LeafEntrySize + DirectoryFormat.BlockTailSize;
        bool endFits = used + size <= _dirBlockSize;
        if (!endFits && (holeIndex < 0 || used > _dirBlockSize)) return ShortformAddResult.NeedsBlockForm;
        if (endFits)
            Entries.Add(new ShortformEntry(name, ino, fileType, offset));
        else
            Entries.Insert(holeIndex, new ShortformEntry(name, ino, fileType, holeOffset));
        return ShortformAddResult.Added;
    }

    /// <summary>Removes the entry named <paramref name="name"/>; false when there is none.</summary>
    public bool Remove(ReadOnlySpan<byte> name)
    {
        for (int k = 0; k < Entries.Count; k++)
            if (name.SequenceEqual(Entries[k].Name)) { Entries.RemoveAt(k); return true; }
        return false;
    }
}
