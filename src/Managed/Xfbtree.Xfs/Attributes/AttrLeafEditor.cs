using System.Buffers.Binary;

namespace Xfbtree.Xfs.Attributes;

/// <summary>
/// Edits one attr leaf block in place, keeping its header as the kernel's xfs_attr3_leaf code keeps it: entries
/// sorted by hash, count, usedbytes (bytes of name entries), firstused (lowest name entry), holes (set when a name
/// left from above firstused, so the name area has gaps only a compaction recovers) and the three-slot free map
/// (free regions; a region that borders the entry table shifts with it). Every method takes a block that
/// <see cref="AttrBlocks.ParseLeaf"/> and <see cref="CheckFreeMap"/> accepted, so offsets inside it are trusted.
/// </summary>
internal static class AttrLeafEditor
{
    /// <summary>Slots of the leaf header's free map (XFS_ATTR_LEAF_MAPSIZE).</summary>
    public const int FreeMapSlots = 3;

    /// <summary>Entries in the leaf.</summary>
    public static int Count(ReadOnlySpan<byte> block) => BinaryPrimitives.ReadUInt16BigEndian(block[AttrFormat.OffCount..]);

    /// <summary>Hash of entry <paramref name="index"/>.</summary>
    public static uint HashAt(ReadOnlySpan<byte> block, int index) => BinaryPrimitives.ReadUInt32BigEndian(Entry(block, index));

    /// <summary>The largest hash of a leaf with entries (that of its last entry).</summary>
    public static uint LastHash(ReadOnlySpan<byte> block) => HashAt(block, Count(block) - 1);

    /// <summary>Bytes the leaf's header, entry table and name entries take (xfs_attr3_leaf_toosmall's measure).</summary>
    public static int BytesInUse(ReadOnlySpan<byte> block)
        => AttrFormat.LeafHeaderSize + Count(block) * AttrFormat.LeafEntrySize + UsedBytes(block);

    /// <summary>
    /// True when the kernel would join a node fork's leaf with a sibling after a removal (xfs_attr3_leaf_toosmall):
    /// the leaf is at most half full and the sibling's entries would fit beside its own with a quarter of the block
    /// to spare. <paramref name="sibling"/> is a verified leaf.
    /// </summary>
    public static bool WouldJoin(ReadOnlySpan<byte> leaf, ReadOnlySpan<byte> sibling)
        => BytesInUse(leaf) <= leaf.Length / 2
           && leaf.Length - leaf.Length / 4 - AttrFormat.LeafHeaderSize - (Count(leaf) + Count(sibling)) * AttrFormat.LeafEntrySize
              - UsedBytes(leaf) - UsedBytes(sibling) >= 0;

    /// <summary>Where a new entry of <paramref name="hash"/> goes: after every entry of a smaller or equal hash.</summary>
    public static int InsertIndex(ReadOnlySpan<byte> block, uint hash)
    {
        int lo = 0, hi = Count(block);
        while (lo < hi)
        {
            int mid = (lo + hi) >>> 1;
            if (HashAt(block, mid) <= hash) lo = mid + 1;
            else hi = mid;
        }
        return lo;
    }

    /// <summary>Null when every free-map region lies inside the block on 4-byte boundaries (what the kernel's leaf
    /// verifier checks), else why not. Where a region may go is checked again before it is used.</summary>
    public static string? CheckFreeMap(ReadOnlySpan<byte> block)
    {
        for (int i = 0; i < FreeMapSlots; i++)
        {
            int b = FreeBase(block, i), s = FreeSize(block, i);
            if ((b & 3) != 0 || (s & 3) != 0 || b + s > block.Length) return $"free map slot {i} ({b}+{s}) is not an aligned region of the block";
        }
        return null;
    }

    /// <summary>Bytes of entry <paramref name="index"/>'s name entry (xfs_attr_leaf_entsize).</summary>
    public static int NameEntrySize(ReadOnlySpan<byte> block, int index)
    {
        var ent = Entry(block, index);
        var name = block[BinaryPrimitives.ReadUInt16BigEndian(ent[4..])..];
        return (ent[6] & AttrFormat.FlagLocal) != 0
            ? AttrFormat.LocalNameSize(name[2], BinaryPrimitives.ReadUInt16BigEndian(name))
            : AttrFormat.RemoteNameSize(name[8]);
    }

    /// <summary>
    /// Removes entry <paramref name="index"/> as xfs_attr3_leaf_remove does: its name bytes join a neighbouring
    /// free region (or replace the smallest region when larger), the slot freed at the end of the entry table
    /// joins the region bordering it, the name area is zeroed, and firstused is found again when the name was the
    /// lowest, else holes is set.
    /// </summary>
    public static void Remove(Span<byte> block, int index)
    {
        int count = Count(block);
        if ((uint)index >= (uint)count) throw new ArgumentOutOfRangeException(nameof(index));
        int tableEnd = AttrFormat.LeafHeaderSize + count * AttrFormat.LeafEntrySize;
        int nameIdx = BinaryPrimitives.ReadUInt16BigEndian(Entry(block, index)[4..]);
        int size = NameEntrySize(block, index);
        int before = -1, after = -1, smallest = FreeMapSlots - 1, smallestSize = FreeSize(block, 0);
        for (int i = 0; i < FreeMapSlots; i++)
        {
            int b = FreeBase(block, i), s = FreeSize(block, i);
            if (b == tableEnd)
            {
                b -= AttrFormat.LeafEntrySize;
                s += AttrFormat.LeafEntrySize;
                SetFree(block, i, b, s);
            }
            if (b + s == nameIdx) before = i;
            else if (b == nameIdx + size) after = i;
            else if (s < smallestSize)
            {
                smallestSize = s;
                smallest = i;
            }
        }
        if (before >= 0 && after >= 0)
        {
            SetFree(block, before, FreeBase(block, before), FreeSize(block, before) + size + FreeSize(block, after));
            SetFree(block, after, 0, 0);
        }
        else if (before >= 0)
        {
            SetFree(block, before, FreeBase(block, before), FreeSize(block, before) + size);
        }
        else if (after >= 0)
        {
            SetFree(block, after, nameIdx, FreeSize(block, after) + size);
        }
        else if (FreeSize(block, smallest) < size)
        {
            SetFree(block, smallest, nameIdx, size);
        }

        bool wasFirst = nameIdx == FirstUsed(block);
        block.Slice(nameIdx, size).Clear();
        SetUsedBytes(block, UsedBytes(block) - size);
        var table = block[AttrFormat.LeafHeaderSize..tableEnd];
        table[((index + 1) * AttrFormat.LeafEntrySize)..].CopyTo(table[(index * AttrFormat.LeafEntrySize)..]);
        table[^AttrFormat.LeafEntrySize..].Clear();
        count--;
        SetCount(block, count);
        if (wasFirst)
        {
            int first = block.Length;
            for (int i = 0; i < count; i++) first = Math.Min(first, BinaryPrimitives.ReadUInt16BigEndian(Entry(block, i)[4..]));
            SetFirstUsed(block, first);
        }
        else
        {
            block[AttrFormat.OffHoles] = 1;
        }
    }

    /// <summary>
    /// Adds <paramref name="entry"/> at <paramref name="index"/> (which must keep hash order; a remote entry needs
    /// its <see cref="AttrEntry.RemoteBlock"/>) as xfs_attr3_leaf_add does: the first free region from the last
    /// slot down that holds the name entry (and the new table slot, for the region bordering the table) gives the
    /// name its end; when none does the block is compacted first. False when the entry does not fit even then:
    /// the block may have been compacted, so callers edit a copy.
    /// </summary>
    public static bool TryAdd(Span<byte> block, int index, AttrEntry entry, Span<byte> scratch)
    {
        ArgumentNullException.ThrowIfNull(entry);
        int count = Count(block);
        if ((uint)index > (uint)count) throw new ArgumentOutOfRangeException(nameof(index));
        bool local = AttrFormat.IsLocalInLeaf(entry.Name.Length, entry.ValueLength, block.Length);
        int size = local ? AttrFormat.LocalNameSize(entry.Name.Length, entry.ValueLength) : AttrFormat.RemoteNameSize(entry.Name.Length);
        int newTableEnd = AttrFormat.LeafHeaderSize + (count + 1) * AttrFormat.LeafEntrySize;
        int slot = -1;
        if (newTableEnd <= FirstUsed(block))
        {
            for (int i = FreeMapSlots - 1; i >= 0; i--)
            {
                int s = FreeSize(block, i);
                if (s == 0) continue;
                int need = size + (FreeBase(block, i) < FirstUsed(block) ? AttrFormat.LeafEntrySize : 0);
                if (s >= need && RegionIsFree(block, i, count))
                {
                    slot = i;
                    break;
                }
            }
        }
        if (slot < 0)
        {
            Compact(block, scratch);
            if (FreeSize(block, 0) < size + AttrFormat.LeafEntrySize) return false;
            slot = 0;
        }

        var table = block[AttrFormat.LeafHeaderSize..newTableEnd];
        table[(index * AttrFormat.LeafEntrySize)..^AttrFormat.LeafEntrySize].CopyTo(table[((index + 1) * AttrFormat.LeafEntrySize)..]);
        count++;
        SetCount(block, count);
        int regionSize = FreeSize(block, slot) - size;
        int nameIdx = FreeBase(block, slot) + regionSize;
        SetFree(block, slot, FreeBase(block, slot), regionSize);
        WriteName(block, nameIdx, entry, local);
        var ent = Entry(block, index);
        BinaryPrimitives.WriteUInt32BigEndian(ent, entry.Hash);
        BinaryPrimitives.WriteUInt16BigEndian(ent[4..], (ushort)nameIdx);
        ent[6] = (byte)((entry.Flags & AttrFormat.NamespaceMask) | (local ? AttrFormat.FlagLocal : 0));
        ent[7] = 0;
        if (nameIdx < FirstUsed(block)) SetFirstUsed(block, nameIdx);
        // The region that bordered the old end of the table gave up the new slot.
        int oldTableEnd = newTableEnd - AttrFormat.LeafEntrySize;
        for (int i = 0; i < FreeMapSlots; i++)
        {
            if (FreeBase(block, i) == oldTableEnd)
                SetFree(block, i, oldTableEnd + AttrFormat.LeafEntrySize, FreeSize(block, i) - Math.Min(FreeSize(block, i), AttrFormat.LeafEntrySize));
        }
        SetUsedBytes(block, UsedBytes(block) + size);
        return true;
    }

    /// <summary>
    /// True when free-map slot <paramref name="slot"/> really is free: past the entry table (starting right at its
    /// end when below firstused), inside the block, clear of the other slots and of every name entry. A map that
    /// says otherwise (the verifiers do not check it) is not trusted: the block is compacted instead.
    /// </summary>
    static bool RegionIsFree(ReadOnlySpan<byte> block, int slot, int count)
    {
        int b = FreeBase(block, slot), end = b + FreeSize(block, slot);
        int tableEnd = AttrFormat.LeafHeaderSize + count * AttrFormat.LeafEntrySize;
        if (b < tableEnd || end > block.Length || (b < FirstUsed(block) && b != tableEnd)) return false;
        for (int i = 0; i < FreeMapSlots; i++)
        {
            if (i == slot || FreeSize(block, i) == 0) continue;
            int ob = FreeBase(block, i);
            if (ob < end && b < ob + FreeSize(block, i)) return false;
        }
        for (int i = 0; i < count; i++)
        {
            int nameIdx = BinaryPrimitives.ReadUInt16BigEndian(Entry(block, i)[4..]);
            if (nameIdx < end && b < nameIdx + NameEntrySize(block, i)) return false;
        }
        return true;
    }

    /// <summary>
    /// Compacts the name area as xfs_attr3_leaf_compact does: the da3 header (siblings, owner, address, LSN) kept,
    /// names packed down from the end of the block in entry order, one free region (slot 0) between the table and
    /// the names, holes cleared. <paramref name="scratch"/> holds at least one block.
    /// </summary>
    public static void Compact(Span<byte> block, Span<byte> scratch)
    {
        int size = block.Length;
        var old = scratch[..size];
        block.CopyTo(old);
        int count = Count(old);
        block[AttrFormat.OffCount..].Clear();
        int top = size, used = 0;
        for (int i = 0; i < count; i++)
        {
            var ent = Entry(old, i);
            int nameSize = NameEntrySize(old, i);
            top -= nameSize;
            used += nameSize;
            old.Slice(BinaryPrimitives.ReadUInt16BigEndian(ent[4..]), nameSize).CopyTo(block[top..]);
            var dst = Entry(block, i);
            ent.CopyTo(dst);
            BinaryPrimitives.WriteUInt16BigEndian(dst[4..], (ushort)top);
        }
        int tableEnd = AttrFormat.LeafHeaderSize + count * AttrFormat.LeafEntrySize;
        SetCount(block, count);
        SetUsedBytes(block, used);
        SetFirstUsed(block, top);
        block[AttrFormat.OffHoles] = 0;
        SetFree(block, 0, tableEnd, top - tableEnd);
    }

    static void WriteName(Span<byte> block, int at, AttrEntry e, bool local)
    {
        var name = block[at..];
        if (local)
        {
            BinaryPrimitives.WriteUInt16BigEndian(name, (ushort)e.ValueLength);
            name[2] = (byte)e.Name.Length;
            e.Name.CopyTo(name[3..]);
            (e.Value ?? throw new ArgumentException($"local entry {e} has no value", nameof(e))).CopyTo(name[(3 + e.Name.Length)..]);
        }
        else
        {
            if (e.RemoteBlock == 0) throw new ArgumentException($"remote entry {e} has no value block", nameof(e));
            BinaryPrimitives.WriteUInt32BigEndian(name, e.RemoteBlock);
            BinaryPrimitives.WriteUInt32BigEndian(name[4..], (uint)e.ValueLength);
            name[8] = (byte)e.Name.Length;
            e.Name.CopyTo(name[9..]);
        }
    }

    static ReadOnlySpan<byte> Entry(ReadOnlySpan<byte> block, int index) => block.Slice(AttrFormat.LeafHeaderSize + index * AttrFormat.LeafEntrySize, AttrFormat.LeafEntrySize);
    static Span<byte> Entry(Span<byte> block, int index) => block.Slice(AttrFormat.LeafHeaderSize + index * AttrFormat.LeafEntrySize, AttrFormat.LeafEntrySize);
    static void SetCount(Span<byte> block, int count) => BinaryPrimitives.WriteUInt16BigEndian(block[AttrFormat.OffCount..], (ushort)count);
    static int UsedBytes(ReadOnlySpan<byte> block) => BinaryPrimitives.ReadUInt16BigEndian(block[AttrFormat.OffUsedBytes..]);
    static void SetUsedBytes(Span<byte> block, int used) => BinaryPrimitives.WriteUInt16BigEndian(block[AttrFormat.OffUsedBytes..], (ushort)used);

    /// <summary>firstused; a 64 KiB block's empty value 65536 is stored as 0.</summary>
    static int FirstUsed(ReadOnlySpan<byte> block)
    {
        int v = BinaryPrimitives.ReadUInt16BigEndian(block[AttrFormat.OffFirstUsed..]);
        return v == 0 && block.Length == 65536 ? 65536 : v;
    }

    static void SetFirstUsed(Span<byte> block, int value) => BinaryPrimitives.WriteUInt16BigEndian(block[AttrFormat.OffFirstUsed..], (ushort)(value == 65536 ? 0 : value));
    static int FreeBase(ReadOnlySpan<byte> block, int slot) => BinaryPrimitives.ReadUInt16BigEndian(block[(AttrFormat.OffFreeMap + slot * 4)..]);
    static int FreeSize(ReadOnlySpan<byte> block, int slot) => BinaryPrimitives.ReadUInt16BigEndian(block[(AttrFormat.OffFreeMap + slot * 4 + 2)..]);

    static void SetFree(Span<byte> block, int slot, int baseOffset, int size)
    {
        BinaryPrimitives.WriteUInt16BigEndian(block[(AttrFormat.OffFreeMap + slot * 4)..], (ushort)baseOffset);
        BinaryPrimitives.WriteUInt16BigEndian(block[(AttrFormat.OffFreeMap + slot * 4 + 2)..], (ushort)size);
    }
}

/// <summary>Hash keys of da node blocks, for the in-place path (xfs_da3_node_lookup_int, xfs_da3_fixhashpath).</summary>
internal static class AttrNodeEditor
{
    /// <summary>The child that holds <paramref name="hash"/>: the first whose largest hash is at least it, else the last.</summary>
    public static int ChildIndexFor(AttrNode node, uint hash)
    {
        ArgumentNullException.ThrowIfNull(node);
        for (int i = 0; i < node.Entries.Count; i++)
        {
            if (node.Entries[i].Hash >= hash) return i;
        }
        return node.Entries.Count - 1;
    }

    /// <summary>Sets the hash key of entry <paramref name="index"/> of a node block.</summary>
    public static void SetHash(Span<byte> block, int index, uint hash)
        => BinaryPrimitives.WriteUInt32BigEndian(block[(AttrFormat.NodeHeaderSize + index * AttrFormat.NodeEntrySize)..], hash);
}
