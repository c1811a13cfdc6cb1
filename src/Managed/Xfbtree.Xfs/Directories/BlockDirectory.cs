using System.Buffers.Binary;
using Xfbtree.Xfs.Write;

namespace Xfbtree.Xfs.Directories;

/// <summary>One live entry of a directory data block ("." and ".." included), at byte <see cref="Offset"/>.</summary>
internal sealed record DataEntry(byte[] Name, ulong Ino, byte FileType, int Offset);

/// <summary>
/// An in-memory single-block ("XDB3") directory (xfs_dir2_block.c, xfs_dir2_data.c): data entries at fixed
/// offsets after the 64-byte dir3 header, unused regions between them, the leaf array (hash, address = offset/8,
/// 0 when stale) sorted by hash just before the 8-byte tail (count, stale). <see cref="WriteBody"/> lays the
/// block out again from the model: entries keep their offsets (readdir cookies), the gaps become merged unused
/// regions and the bestfree table lists the three largest.
/// </summary>
internal sealed class BlockDirectory
{
    readonly bool _ftype;

    BlockDirectory(int blockSize, bool hasFtype)
    {
        BlockSize = blockSize;
        _ftype = hasFtype;
    }

    public int BlockSize { get; }
    /// <summary>Live entries sorted by offset.</summary>
    public List<DataEntry> Entries { get; } = new();
    /// <summary>Leaf entries in on-disk order (sorted by hash); address 0 = stale.</summary>
    public List<(uint Hash, uint Address)> Leaf { get; } = new();
    public int Stale => Leaf.Count(l => l.Address == 0);
    int LeafStart => BlockSize - DirectoryFormat.BlockTailSize - Leaf.Count * DirectoryFormat.LeafEntrySize;
    int EntrySize(DataEntry e) => DirectoryFormat.DataEntrySize(e.Name.Length, _ftype);

    /// <summary>The block form of a shortform directory (xfs_dir2_sf_to_block): "." and ".." first, every entry at
    /// its shortform offset. Throws Corrupt when the entries do not fit a block (the shortform was bad).</summary>
    public static BlockDirectory FromShortform(ShortformDirectory sf, ulong dirIno, int blockSize, bool hasFtype)
    {
        var d = new BlockDirectory(blockSize, hasFtype);
        d.Entries.Add(new DataEntry([(byte)'.'], dirIno, DirectoryFormat.FtDirectory, DirectoryFormat.DotOffset));
        d.Entries.Add(new DataEntry([(byte)'.', (byte)'.'], sf.Parent, DirectoryFormat.FtDirectory,
            DirectoryFormat.DotOffset + DirectoryFormat.DataEntrySize(1, hasFtype)));
        foreach (var e in sf.Entries) d.Entries.Add(new DataEntry(e.Name, e.Ino, e.FileType, e.Offset));
        foreach (var e in d.Entries) d.Leaf.Add((DirectoryFormat.HashName(e.Name), (uint)(e.Offset >> 3)));
        d.SortLeaf();
        var last = d.Entries[^1];
        if (last.Offset + d.EntrySize(last) > d.LeafStart)
            throw new XfsWriteException(WriteErrorKind.Corrupt, "shortform directory entries do not fit one directory block");
        return d;
    }

    void SortLeaf()
    {
        // Stable by hash: entries of equal hash keep their relative order, as the kernel's insertion does.
        var sorted = Leaf.Select((l, i) => (l, i)).OrderBy(t => t.l.Hash).ThenBy(t => t.i).Select(t => t.l).ToList();
        Leaf.Clear();
        Leaf.AddRange(sorted);
    }

    /// <summary>
    /// Parses and checks a whole XDB3 block (header fields other than the magic are the caller's to verify):
    /// entries and unused regions tile [64, leaf start) with correct tags, every leaf address names a live entry
    /// whose hash it carries, leaf sorted by hash, counts agree. Throws Corrupt naming <paramref name="where"/>.
    /// </summary>
    public static BlockDirectory Parse(ReadOnlySpan<byte> block, bool hasFtype, string where)
    {
        XfsWriteException Bad(string why) => new(WriteErrorKind.Corrupt, $"{where}: directory block {why}");
        int bs = block.Length;
        var d = new BlockDirectory(bs, hasFtype);
        if (BinaryPrimitives.ReadUInt32BigEndian(block) != DirectoryFormat.BlockMagic) throw Bad("bad magic");
        uint count = BinaryPrimitives.ReadUInt32BigEndian(block[(bs - 8)..]);
        uint stale = BinaryPrimitives.ReadUInt32BigEndian(block[(bs - 4)..]);
        long leafStart = bs - DirectoryFormat.BlockTailSize - (long)count * DirectoryFormat.LeafEntrySize;
        if (leafStart < DirectoryFormat.DataHeaderSize || stale > count) throw Bad($"tail count {count} stale {stale} impossible");
        var free = new List<(int Offset, int Length)>();
        var byOffset = ScanData(block, (int)leafStart, hasFtype, d.Entries, free, Bad);
        if (DataArea.CheckBestFree(block, free) is { } bestFreeWrong) throw Bad(bestFreeWrong);
        uint staleSeen = 0, prevHash = 0;
        for (int k = 0; k < count; k++)
        {
            var l = block[((int)leafStart + k * 8)..];
            uint hash = BinaryPrimitives.ReadUInt32BigEndian(l), addr = BinaryPrimitives.ReadUInt32BigEndian(l[4..]);
            if (k > 0 && hash < prevHash) throw Bad("leaf not sorted by hash");
            prevHash = hash;
            if (addr == 0) staleSeen++;
            else if (!byOffset.TryGetValue((int)(addr << 3), out var e) || DirectoryFormat.HashName(e.Name) != hash)
                throw Bad($"leaf entry {k} (hash 0x{hash:x8}, address {addr}) names no entry of that hash");
            d.Leaf.Add((hash, addr));
        }
        if (staleSeen != stale) throw Bad($"tail says {stale} stale leaf entries, found {staleSeen}");
        if (count - stale != d.Entries.Count) throw Bad($"{count - stale} live leaf entries for {d.Entries.Count} data entries");
        if (d.Leaf.Where(l => l.Address != 0).Select(l => l.Address).Distinct().Count() != d.Entries.Count) throw Bad("two leaf entries name one entry");
        return d;
    }

    /// <summary>
    /// Walks the data area [64, <paramref name="end"/>) of a data or block directory block: live entries go to
    /// <paramref name="entries"/> (and by offset into the result), unused regions to <paramref name="free"/>.
    /// </summary>
    public static Dictionary<int, DataEntry> ScanData(ReadOnlySpan<byte> block, int end, bool hasFtype, List<DataEntry> entries,
        List<(int Offset, int Length)>? free, Func<string, XfsWriteException> bad)
    {
        var byOffset = new Dictionary<int, DataEntry>();
        int pos = DirectoryFormat.DataHeaderSize;
        bool lastFree = false;
        while (pos < end)
        {
            if (end - pos < 8) throw bad($"data area ends with {end - pos} stray bytes at {pos}");
            if (BinaryPrimitives.ReadUInt16BigEndian(block[pos..]) == DirectoryFormat.FreeTag)
            {
                int len = BinaryPrimitives.ReadUInt16BigEndian(block[(pos + 2)..]);
                if (len < 8 || (len & 7) != 0 || pos + len > end) throw bad($"unused region at {pos} of length {len}");
                if (BinaryPrimitives.ReadUInt16BigEndian(block[(pos + len - 2)..]) != pos) throw bad($"unused region at {pos} has a bad tag");
                if (lastFree) throw bad($"two adjacent unused regions at {pos}");
                free?.Add((pos, len));
                lastFree = true;
                pos += len;
                continue;
            }
            ulong ino = BinaryPrimitives.ReadUInt64BigEndian(block[pos..]);
            int namelen = block[pos + 8];
            int size = DirectoryFormat.DataEntrySize(namelen, hasFtype);
            if (namelen == 0 || pos + size > end) throw bad($"entry at {pos} with name length {namelen} overruns the data area");
            if (BinaryPrimitives.ReadUInt16BigEndian(block[(pos + size - 2)..]) != pos) throw bad($"entry at {pos} has a bad tag");
            byte ftype = hasFtype ? block[pos + 9 + namelen] : DirectoryFormat.FtUnknown;
            if (ftype >= DirectoryFormat.FtMax) throw bad($"entry at {pos} has file type {ftype}");
            var e = new DataEntry(block.Slice(pos + 9, namelen).ToArray(), ino, ftype, pos);
            entries.Add(e);
            byOffset[pos] = e;
            lastFree = false;
            pos += size;
        }
        return byOffset;
    }

    public DataEntry? Find(ReadOnlySpan<byte> name)
    {
        foreach (var e in Entries)
            if (name.SequenceEqual(e.Name)) return e;
        return null;
    }

    /// <summary>Free regions of the data area as the model stands, given a leaf of <paramref name="leafCount"/> entries.</summary>
    List<(int Offset, int Length)> FreeRegions(int leafCount)
        => DataArea.FreeRegions(Entries, BlockSize - DirectoryFormat.BlockTailSize - leafCount * DirectoryFormat.LeafEntrySize, _ftype);

    /// <summary>
    /// Adds an entry (xfs_dir2_block_addname): stale leaf entries are compacted away first, the entry takes the
    /// start of the largest free region (lowest offset among equals), its leaf entry goes in hash order. False
    /// (nothing changed) when the block has no room: the directory would need the leaf format.
    /// </summary>
    public bool TryAdd(byte[] name, ulong ino, byte fileType)
    {
        int size = DirectoryFormat.DataEntrySize(name.Length, _ftype);
        int leafCount = Leaf.Count - Stale + 1;
        int end = BlockSize - DirectoryFormat.BlockTailSize - leafCount * DirectoryFormat.LeafEntrySize;
        if (Entries.Count > 0 && Entries[^1].Offset + EntrySize(Entries[^1]) > end) return false;
        var best = FreeRegions(leafCount).Where(r => r.Length >= size)
            .OrderByDescending(r => r.Length).ThenBy(r => r.Offset).Select(r => (int?)r.Offset).FirstOrDefault();
        if (best is not int offset) return false;
        Leaf.RemoveAll(l => l.Address == 0);
        var entry = new DataEntry(name, ino, fileType, offset);
        int at = Entries.FindIndex(e => e.Offset > offset);
        Entries.Insert(at < 0 ? Entries.Count : at, entry);
        uint hash = DirectoryFormat.HashName(name);
        int li = Leaf.FindIndex(l => l.Hash > hash);
        Leaf.Insert(li < 0 ? Leaf.Count : li, (hash, (uint)(offset >> 3)));
        return true;
    }

    /// <summary>Removes an entry (xfs_dir2_block_removename): its space becomes free, its leaf entry stale. False when absent.</summary>
    public bool Remove(ReadOnlySpan<byte> name)
    {
        int k = -1;
        for (int i = 0; i < Entries.Count && k < 0; i++)
            if (name.SequenceEqual(Entries[i].Name)) k = i;
        if (k < 0 || DirectoryFormat.IsDot(name) || DirectoryFormat.IsDotDot(name)) return false;
        uint address = (uint)(Entries[k].Offset >> 3);
        int li = Leaf.FindIndex(l => l.Address == address);
        Leaf[li] = (Leaf[li].Hash, 0);
        Entries.RemoveAt(k);
        return true;
    }

    /// <summary>Points the entry named <paramref name="name"/> at another inode and file type (its place and leaf
    /// entry stay). False when absent or "." / "..".</summary>
    public bool Replace(ReadOnlySpan<byte> name, ulong ino, byte fileType)
    {
        for (int i = 0; i < Entries.Count; i++)
        {
            if (!name.SequenceEqual(Entries[i].Name)) continue;
            Entries[i] = Entries[i] with { Ino = ino, FileType = fileType };
            return true;
        }
        return false;
    }

    /// <summary>The block form of a directory's only data block (xfs_dir2_leaf_to_block): the same entries at the
    /// same offsets, a leaf of their hashes; null when the entries reach into the room the leaf and tail need.</summary>
    public static BlockDirectory? FromData(List<DataEntry> entries, int blockSize, bool hasFtype)
    {
        var d = new BlockDirectory(blockSize, hasFtype);
        d.Entries.AddRange(entries.OrderBy(e => e.Offset));
        foreach (var e in d.Entries) d.Leaf.Add((DirectoryFormat.HashName(e.Name), (uint)(e.Offset >> 3)));
        d.SortLeaf();
        if (d.Entries.Count > 0)
        {
            var last = d.Entries[^1];
            if (last.Offset + d.EntrySize(last) > d.LeafStart) return null;
        }
        return d;
    }

    /// <summary>
    /// Writes everything after the 48-byte block header: bestfree, entries, unused regions (zeroed, tagged),
    /// leaf and tail. The header (magic, CRC, blkno, LSN, UUID, owner) is the caller's.
    /// </summary>
    public void WriteBody(Span<byte> block)
    {
        if (block.Length != BlockSize) throw new ArgumentException("block size mismatch", nameof(block));
        block[DirectoryFormat.BestFreeOffset..].Clear();
        DataArea.Write(block, Entries, LeafStart, _ftype);
        int leafStart = LeafStart;
        for (int k = 0; k < Leaf.Count; k++)
        {
            BinaryPrimitives.WriteUInt32BigEndian(block[(leafStart + k * 8)..], Leaf[k].Hash);
            BinaryPrimitives.WriteUInt32BigEndian(block[(leafStart + k * 8 + 4)..], Leaf[k].Address);
        }
        BinaryPrimitives.WriteUInt32BigEndian(block[(BlockSize - 8)..], (uint)Leaf.Count);
        BinaryPrimitives.WriteUInt32BigEndian(block[(BlockSize - 4)..], (uint)Stale);
    }
}
