using System.Buffers.Binary;
using Xfbtree.Xfs.Write;

namespace Xfbtree.Xfs.Directories;

/// <summary>
/// The data area shared by single-block ("XDB3") and data ("XDD3") directory blocks (xfs_dir2_data.c): entries
/// and tagged unused regions tile [64, end), the header's bestfree table names the three largest unused regions.
/// </summary>
internal static class DataArea
{
    /// <summary>Unused regions between <paramref name="entries"/> (sorted by offset) in [64, <paramref name="end"/>).</summary>
    public static List<(int Offset, int Length)> FreeRegions(List<DataEntry> entries, int end, bool hasFtype)
    {
        var list = new List<(int, int)>();
        int pos = DirectoryFormat.DataHeaderSize;
        foreach (var e in entries)
        {
            if (e.Offset > pos) list.Add((pos, e.Offset - pos));
            pos = e.Offset + DirectoryFormat.DataEntrySize(e.Name.Length, hasFtype);
        }
        if (end > pos) list.Add((pos, end - pos));
        return list;
    }

    /// <summary>Where an entry of <paramref name="size"/> bytes goes: the start of the largest unused region
    /// (lowest offset among equals), as the kernel takes bestfree[0]; -1 when no region is large enough.</summary>
    public static int BestOffset(List<DataEntry> entries, int end, bool hasFtype, int size)
    {
        int best = -1, bestLength = 0;
        foreach (var (off, len) in FreeRegions(entries, end, hasFtype))
            if (len >= size && len > bestLength) { best = off; bestLength = len; }
        return best;
    }

    /// <summary>Length of the largest unused region (bestfree[0].length), 0 when there is none.</summary>
    public static int LargestFree(List<DataEntry> entries, int end, bool hasFtype)
    {
        int best = 0;
        foreach (var (_, len) in FreeRegions(entries, end, hasFtype)) best = Math.Max(best, len);
        return best;
    }

    /// <summary>Inserts <paramref name="entry"/> keeping <paramref name="entries"/> sorted by offset.</summary>
    public static void Insert(List<DataEntry> entries, DataEntry entry)
    {
        int at = entries.FindIndex(e => e.Offset > entry.Offset);
        entries.Insert(at < 0 ? entries.Count : at, entry);
    }

    /// <summary>Writes bytes 48..<paramref name="end"/>: bestfree, entries with their tags, unused regions
    /// (zeroed, tagged, merged). Bytes 0..47 (the block header) are the caller's.</summary>
    public static void Write(Span<byte> block, List<DataEntry> entries, int end, bool hasFtype)
    {
        block[DirectoryFormat.BestFreeOffset..end].Clear();
        foreach (var e in entries)
        {
            var s = block[e.Offset..];
            int size = DirectoryFormat.DataEntrySize(e.Name.Length, hasFtype);
            BinaryPrimitives.WriteUInt64BigEndian(s, e.Ino);
            s[8] = (byte)e.Name.Length;
            e.Name.CopyTo(s[9..]);
            if (hasFtype) s[9 + e.Name.Length] = e.FileType;
            BinaryPrimitives.WriteUInt16BigEndian(s[(size - 2)..], (ushort)e.Offset);
        }
        var free = FreeRegions(entries, end, hasFtype);
        foreach (var (off, len) in free)
        {
            BinaryPrimitives.WriteUInt16BigEndian(block[off..], DirectoryFormat.FreeTag);
            BinaryPrimitives.WriteUInt16BigEndian(block[(off + 2)..], (ushort)len);
            BinaryPrimitives.WriteUInt16BigEndian(block[(off + len - 2)..], (ushort)off);
        }
        int slot = 0;
        foreach (var (off, len) in free.OrderByDescending(r => r.Length).ThenBy(r => r.Offset).Take(3))
        {
            BinaryPrimitives.WriteUInt16BigEndian(block[(DirectoryFormat.BestFreeOffset + slot * 4)..], (ushort)off);
            BinaryPrimitives.WriteUInt16BigEndian(block[(DirectoryFormat.BestFreeOffset + slot * 4 + 2)..], (ushort)len);
            slot++;
        }
    }

    /// <summary>Null when the header's bestfree table lists the largest unused regions (lengths in decreasing
    /// order, each naming a real region, none larger left out, unused slots zero), else what is wrong.</summary>
    public static string? CheckBestFree(ReadOnlySpan<byte> block, List<(int Offset, int Length)> free)
    {
        var want = free.Select(r => r.Length).OrderByDescending(l => l).Take(3).ToList();
        for (int slot = 0; slot < 3; slot++)
        {
            int off = BinaryPrimitives.ReadUInt16BigEndian(block[(DirectoryFormat.BestFreeOffset + slot * 4)..]);
            int len = BinaryPrimitives.ReadUInt16BigEndian(block[(DirectoryFormat.BestFreeOffset + slot * 4 + 2)..]);
            if (slot >= want.Count)
            {
                if (off != 0 || len != 0) return $"bestfree slot {slot} ({off}, {len}) names no region";
                continue;
            }
            if (len != want[slot]) return $"bestfree slot {slot} has length {len}, the region of that rank is {want[slot]} bytes";
            if (!free.Contains((off, len))) return $"bestfree slot {slot} ({off}, {len}) is not an unused region";
        }
        return null;
    }
}

/// <summary>
/// An in-memory data block ("XDD3") of a leaf or node directory: its live entries by offset. The offsets are the
/// entries' readdir cookies and never move; <see cref="WriteBody"/> lays the block out again from the model.
/// </summary>
internal sealed class DataBlock
{
    readonly bool _ftype;

    DataBlock(int blockSize, bool hasFtype)
    {
        BlockSize = blockSize;
        _ftype = hasFtype;
    }

    /// <summary>Directory block size.</summary>
    public int BlockSize { get; }
    /// <summary>Live entries sorted by offset ("." and ".." in data block 0 included).</summary>
    public List<DataEntry> Entries { get; } = new();

    /// <summary>A data block without entries (one unused region after the header).</summary>
    public static DataBlock Empty(int blockSize, bool hasFtype) => new(blockSize, hasFtype);

    /// <summary>A data block holding <paramref name="entries"/> at their offsets.</summary>
    public static DataBlock Of(IEnumerable<DataEntry> entries, int blockSize, bool hasFtype)
    {
        var d = new DataBlock(blockSize, hasFtype);
        d.Entries.AddRange(entries.OrderBy(e => e.Offset));
        return d;
    }

    /// <summary>Parses and checks a whole XDD3 block (magic, entry tiling and tags, bestfree); the header identity
    /// (CRC, blkno, owner, UUID) is the caller's. Throws what <paramref name="bad"/> makes.</summary>
    public static DataBlock Parse(ReadOnlySpan<byte> block, bool hasFtype, Func<string, XfsWriteException> bad)
    {
        if (BinaryPrimitives.ReadUInt32BigEndian(block) != DirectoryFormat.DataMagic) throw bad("not a data block");
        var d = new DataBlock(block.Length, hasFtype);
        var free = new List<(int, int)>();
        BlockDirectory.ScanData(block, block.Length, hasFtype, d.Entries, free, bad);
        if (DataArea.CheckBestFree(block, free) is { } why) throw bad(why);
        return d;
    }

    /// <summary>bestfree[0].length: the largest unused region.</summary>
    public int LargestFree => DataArea.LargestFree(Entries, BlockSize, _ftype);

    /// <summary>True when no entry is left (the block can be freed).</summary>
    public bool IsEmpty => Entries.Count == 0;

    /// <summary>The entry at byte <paramref name="offset"/>, or null.</summary>
    public DataEntry? At(int offset)
    {
        foreach (var e in Entries)
            if (e.Offset == offset) return e;
        return null;
    }

    /// <summary>Adds an entry at the start of the largest unused region; its offset, or -1 (nothing changed) when
    /// no region is large enough.</summary>
    public int TryAdd(byte[] name, ulong ino, byte fileType)
    {
        int offset = DataArea.BestOffset(Entries, BlockSize, _ftype, DirectoryFormat.DataEntrySize(name.Length, _ftype));
        if (offset < 0) return -1;
        DataArea.Insert(Entries, new DataEntry(name, ino, fileType, offset));
        return offset;
    }

    /// <summary>Removes the entry at <paramref name="offset"/>; false when there is none.</summary>
    public bool RemoveAt(int offset)
    {
        int k = Entries.FindIndex(e => e.Offset == offset);
        if (k < 0) return false;
        Entries.RemoveAt(k);
        return true;
    }

    /// <summary>Replaces the inode and file type of the entry at <paramref name="offset"/> (same name, same place).</summary>
    public bool ReplaceAt(int offset, ulong ino, byte fileType)
    {
        int k = Entries.FindIndex(e => e.Offset == offset);
        if (k < 0) return false;
        Entries[k] = Entries[k] with { Ino = ino, FileType = fileType };
        return true;
    }

    /// <summary>Writes everything after the 48-byte header (magic and identity are the caller's).</summary>
    public void WriteBody(Span<byte> block)
    {
        if (block.Length != BlockSize) throw new ArgumentException("block size mismatch", nameof(block));
        DataArea.Write(block, Entries, BlockSize, _ftype);
    }
}
