using System.Buffers.Binary;
using Xfbtree.Xfs.Format;

namespace Xfbtree.Xfs.Directories;

/// <summary>One entry recovered from a damaged directory: its name, the inode it names and its file type byte.</summary>
internal sealed record SalvagedEntry(byte[] Name, ulong Ino, byte FileType);

/// <summary>
/// Reads what can still be trusted of a damaged directory (upstream's dir_repair.c salvage): the entries of its
/// data blocks and of its shortform area, each walked from the start as far as the entries verify, ignoring every
/// leaf, node and free-index block (they index the entries; the rebuild makes them anew). A block is walked only
/// when its header names it: a data or block magic, the blkno of its own place, the metadata UUID and the directory as
/// owner (its CRC may be bad: a bad CRC over entries that each verify loses nothing). The walk of a block stops at
/// the first entry or unused region that does not verify (its length, its tag, its name, its inode number): past
/// that, bytes cannot be told from a deleted entry's leftovers, and resurrecting a name is worse than losing one
/// (the inode it named is found by the link count repair and named in /lost+found). The inode numbers are checked
/// against the geometry only: whether they name a live inode of the right type is the repair's to check.
/// </summary>
internal static class DirectorySalvage
{
    /// <summary>Entries of a shortform area ('.' is implied, the parent field gives '..'); the parent is null when the
    /// header cannot be read.</summary>
    public static (ulong? Parent, List<SalvagedEntry> Entries) Shortform(ReadOnlySpan<byte> fork, long size, bool hasFtype, XfsGeometry geo)
    {
        var entries = new List<SalvagedEntry>();
        var b = fork[..(int)Math.Clamp(size, 0, fork.Length)];
        if (b.Length < 6)
        {
            return (null, entries);
        }
        int count = b[0];
        int inoSize = b[1] != 0 ? 8 : 4;
        if (b.Length < 2 + inoSize)
        {
            return (null, entries);
        }
        ulong parent = inoSize == 8 ? BinaryPrimitives.ReadUInt64BigEndian(b[2..]) : BinaryPrimitives.ReadUInt32BigEndian(b[2..]);
        int pos = 2 + inoSize;
        for (int k = 0; k < count; k++)
        {
            if (pos + 3 > b.Length) break;
            int len = b[pos];
            int end = pos + 3 + len + (hasFtype ? 1 : 0) + inoSize;
            if (len == 0 || end > b.Length) break;
            var name = b.Slice(pos + 3, len);
            byte ftype = hasFtype ? b[pos + 3 + len] : DirectoryFormat.FtUnknown;
            var ip = b[(pos + 3 + len + (hasFtype ? 1 : 0))..];
            ulong ino = inoSize == 8 ? BinaryPrimitives.ReadUInt64BigEndian(ip) : BinaryPrimitives.ReadUInt32BigEndian(ip);
            if (!NameIsValid(name) || ftype >= DirectoryFormat.FtMax || !geo.IsValidIno(ino)) break;
            entries.Add(new SalvagedEntry(name.ToArray(), ino, ftype));
            pos = end;
        }
        return (geo.IsValidIno(parent) ? parent : null, entries);
    }

    /// <summary>
    /// Entries of one data block ("XDD3") or single-block directory ("XDB3", <paramref name="blockForm"/>: the
    /// directory's only block) whose header names it; '.' and '..' included as they are stored. A header names the
    /// block when its magic is the one its place wants and at least two of blkno (<paramref name="daddr"/>), metadata
    /// UUID and owner (<paramref name="owner"/>) agree, or when the magic alone is wrong and all three agree: one
    /// damaged field does not lose the block, but a block of something else is never read as entries.
    /// </summary>
    public static List<SalvagedEntry> DataBlock(ReadOnlySpan<byte> block, long daddr, ulong owner, bool blockForm, bool hasFtype, XfsGeometry geo)
    {
        var entries = new List<SalvagedEntry>();
        if (block.Length < DirectoryFormat.DataHeaderSize) return entries;
        uint magic = BinaryPrimitives.ReadUInt32BigEndian(block);
        int agree = ((long)BinaryPrimitives.ReadUInt64BigEndian(block[8..]) == daddr ? 1 : 0)
            + (block.Slice(24, 16).SequenceEqual(geo.MetaUuid) ? 1 : 0)
            + (BinaryPrimitives.ReadUInt64BigEndian(block[40..]) == owner ? 1 : 0);
        bool magicRight = magic == (blockForm ? DirectoryFormat.BlockMagic : DirectoryFormat.DataMagic);
        if (!(magicRight ? agree >= 2 : agree == 3)) return entries;
        int end = block.Length;
        if (blockForm)
        {
            // The leaf entries and the tail sit at the end: bound the entries by the tail's count when it is
            // plausible, else by the tail alone (the walk stops at the first bad entry anyway).
            uint count = BinaryPrimitives.ReadUInt32BigEndian(block[(end - DirectoryFormat.BlockTailSize)..]);
            long leafStart = end - DirectoryFormat.BlockTailSize - (long)count * DirectoryFormat.LeafEntrySize;
            end = leafStart >= DirectoryFormat.DataHeaderSize ? (int)leafStart : end - DirectoryFormat.BlockTailSize;
        }
        int off = DirectoryFormat.DataHeaderSize;
        while (off + 8 <= end)
        {
            if (BinaryPrimitives.ReadUInt16BigEndian(block[off..]) == DirectoryFormat.FreeTag)
            {
                int length = BinaryPrimitives.ReadUInt16BigEndian(block[(off + 2)..]);
                if (length < 8 || length % 8 != 0 || off + length > end || BinaryPrimitives.ReadUInt16BigEndian(block[(off + length - 2)..]) != off) break;
                off += length;
                continue;
            }
            if (off + 9 > end) break;
            int len = block[off + 8];
            int size = DirectoryFormat.DataEntrySize(len, hasFtype);
            if (len == 0 || off + size > end || BinaryPrimitives.ReadUInt16BigEndian(block[(off + size - 2)..]) != off) break;
            var name = block.Slice(off + 9, len);
            byte ftype = hasFtype ? block[off + 9 + len] : DirectoryFormat.FtUnknown;
            ulong ino = BinaryPrimitives.ReadUInt64BigEndian(block[off..]);
            if (!NameIsValid(name) || ftype >= DirectoryFormat.FtMax || !geo.IsValidIno(ino)) break;
            entries.Add(new SalvagedEntry(name.ToArray(), ino, ftype));
            off += size;
        }
        return entries;
    }

    /// <summary>A name a directory may hold: no '/' and no NUL ('.' and '..' are told apart by the caller).</summary>
    private static bool NameIsValid(ReadOnlySpan<byte> name) => name.IndexOfAny((byte)'/', (byte)0) < 0;
}
