using System.Buffers.Binary;
using Xfbtree.Buffers;

namespace Xfbtree.Xfs.Attributes;

/// <summary>A parsed attr leaf block: its sibling links and entries in hash order.</summary>
/// <param name="Forw">Logical block of the next leaf (0: none).</param>
/// <param name="Back">Logical block of the previous leaf (0: none).</param>
/// <param name="Entries">The entries in hash order (remote values not read).</param>
internal sealed record AttrLeaf(uint Forw, uint Back, List<AttrEntry> Entries);

/// <summary>A parsed da node block of an attr fork: level (1 = just above the leaves), sibling links, and
/// (hash, child) pairs where each hash is the largest hash below that child.</summary>
/// <param name="Level">Height above the leaves (1 or more).</param>
/// <param name="Forw">Logical block of the next node of the level (0: none).</param>
/// <param name="Back">Logical block of the previous node of the level (0: none).</param>
/// <param name="Entries">(largest hash below, child logical block) pairs in hash order.</param>
internal sealed record AttrNode(int Level, uint Forw, uint Back, List<(uint Hash, uint Child)> Entries);

/// <summary>
/// Parse, check and format of the three kinds of attr-fork block (xfs_attr_leaf.c, xfs_da_btree.c,
/// xfs_attr_remote.c). Parsers take one whole block already known to have a good CRC and check the rest of what
/// the kernel's verifiers check (magic, blkno, owner, UUID, counts, offsets, hash order) before returning anything.
/// </summary>
internal static class AttrBlocks
{
    // ------------------------------------------------------------------ shared da3 header

    /// <summary>Null when the da3 header names this block (magic, daddr, owner, UUID), else why not.</summary>
    public static string? CheckDaHeader(ReadOnlySpan<byte> block, ushort magic, long daddr, ulong owner, ReadOnlySpan<byte> uuid)
    {
        ushort m = AttrFormat.DaMagic(block);
        if (m != magic) return $"magic 0x{m:x4}, expected 0x{magic:x4}";
        if (BinaryPrimitives.ReadInt64BigEndian(block[AttrFormat.OffBlkno..]) != daddr) return "blkno is not the block's address";
        if (!block.Slice(AttrFormat.OffUuid, 16).SequenceEqual(uuid)) return "metadata UUID mismatch";
        if (BinaryPrimitives.ReadUInt64BigEndian(block[AttrFormat.OffOwner..]) != owner) return $"owner is not inode {owner}";
        return null;
    }

    static void WriteDaHeader(Span<byte> block, ushort magic, long daddr, ulong owner, ReadOnlySpan<byte> uuid, uint forw, uint back, ulong lsn)
    {
        BinaryPrimitives.WriteUInt32BigEndian(block[AttrFormat.OffForw..], forw);
        BinaryPrimitives.WriteUInt32BigEndian(block[AttrFormat.OffBack..], back);
        BinaryPrimitives.WriteUInt16BigEndian(block[AttrFormat.OffMagic..], magic);
        BinaryPrimitives.WriteInt64BigEndian(block[AttrFormat.OffBlkno..], daddr);
        BinaryPrimitives.WriteUInt64BigEndian(block[AttrFormat.OffLsn..], lsn);
        uuid.CopyTo(block[AttrFormat.OffUuid..]);
        BinaryPrimitives.WriteUInt64BigEndian(block[AttrFormat.OffOwner..], owner);
    }

    // ------------------------------------------------------------------ leaf

    /// <summary>firstused as stored: a 64 KiB block's empty value 65536 does not fit 16 bits and is stored as 0.</summary>
    static int FirstUsed(ReadOnlySpan<byte> block)
    {
        int v = BinaryPrimitives.ReadUInt16BigEndian(block[AttrFormat.OffFirstUsed..]);
        return v == 0 && block.Length == 65536 ? 65536 : v;
    }

    /// <summary>Parses a leaf block; throws <see cref="AttrFormatException"/> when it breaks a rule.</summary>
    public static AttrLeaf ParseLeaf(ReadOnlySpan<byte> block, long daddr, ulong owner, ReadOnlySpan<byte> uuid)
    {
        if (CheckDaHeader(block, AttrFormat.LeafMagic, daddr, owner, uuid) is { } bad) throw new AttrFormatException("attr leaf: " + bad);
        int size = block.Length;
        int count = BinaryPrimitives.ReadUInt16BigEndian(block[AttrFormat.OffCount..]);
        int used = BinaryPrimitives.ReadUInt16BigEndian(block[AttrFormat.OffUsedBytes..]);
        int firstUsed = FirstUsed(block);
        int entriesEnd = AttrFormat.LeafHeaderSize + count * AttrFormat.LeafEntrySize;
        if (entriesEnd > firstUsed || firstUsed > size) throw new AttrFormatException($"attr leaf: {count} entries end at {entriesEnd}, names start at {firstUsed}");
        if (used > size - firstUsed) throw new AttrFormatException($"attr leaf: usedbytes {used} exceed the name area of {size - firstUsed}");
        if (AttrLeafEditor.CheckFreeMap(block) is { } badMap) throw new AttrFormatException("attr leaf: " + badMap);
        var entries = new List<AttrEntry>(count);
        uint lastHash = 0;
        for (int i = 0; i < count; i++)
        {
            var ent = block.Slice(AttrFormat.LeafHeaderSize + i * AttrFormat.LeafEntrySize, AttrFormat.LeafEntrySize);
            uint hash = BinaryPrimitives.ReadUInt32BigEndian(ent);
            int nameIdx = BinaryPrimitives.ReadUInt16BigEndian(ent[4..]);
            byte flags = ent[6];
            if (hash < lastHash) throw new AttrFormatException($"attr leaf: entry {i} out of hash order");
            lastHash = hash;
            if (nameIdx < firstUsed || nameIdx >= size) throw new AttrFormatException($"attr leaf: entry {i} name at {nameIdx} outside the name area");
            if ((flags & AttrFormat.FlagParent) != 0) throw new AttrFormatException($"attr leaf: entry {i} is a parent pointer, which the engine does not handle");
            if (System.Numerics.BitOperations.PopCount((uint)(flags & AttrFormat.NamespaceMask)) > 1) throw new AttrFormatException($"attr leaf: entry {i} has flags 0x{flags:x2}");
            var nameArea = block[nameIdx..];
            byte nsFlags = (byte)(flags & (AttrFormat.NamespaceMask | AttrFormat.FlagIncomplete));
            AttrEntry entry;
            if ((flags & AttrFormat.FlagLocal) != 0)
            {
                if (nameArea.Length < 3) throw new AttrFormatException($"attr leaf: entry {i} runs off the block");
                int valueLength = BinaryPrimitives.ReadUInt16BigEndian(nameArea);
                int nameLength = nameArea[2];
                if (nameLength == 0 || AttrFormat.LocalNameSize(nameLength, valueLength) > nameArea.Length) throw new AttrFormatException($"attr leaf: entry {i} runs off the block");
                entry = new AttrEntry(nsFlags, nameArea.Slice(3, nameLength).ToArray(), nameArea.Slice(3 + nameLength, valueLength).ToArray());
            }
            else
            {
                if (nameArea.Length < 9) throw new AttrFormatException($"attr leaf: entry {i} runs off the block");
                uint valueBlock = BinaryPrimitives.ReadUInt32BigEndian(nameArea);
                int valueLength = (int)Math.Min(BinaryPrimitives.ReadUInt32BigEndian(nameArea[4..]), int.MaxValue);
                int nameLength = nameArea[8];
                if (nameLength == 0 || AttrFormat.RemoteNameSize(nameLength) > nameArea.Length) throw new AttrFormatException($"attr leaf: entry {i} runs off the block");
                if ((flags & AttrFormat.FlagIncomplete) == 0 && (valueBlock == 0 || valueLength > AttrFormat.MaxValueLength))
                    throw new AttrFormatException($"attr leaf: entry {i} has a remote value of {valueLength} bytes at block {valueBlock}");
                entry = new AttrEntry(nsFlags, nameArea.Slice(9, nameLength).ToArray(), valueBlock, valueLength);
            }
            if (entry.Hash != hash) throw new AttrFormatException($"attr leaf: entry {i} hash 0x{hash:x8} is not its name's hash 0x{entry.Hash:x8}");
            entries.Add(entry);
        }
        return new AttrLeaf(BinaryPrimitives.ReadUInt32BigEndian(block[AttrFormat.OffForw..]), BinaryPrimitives.ReadUInt32BigEndian(block[AttrFormat.OffBack..]), entries);
    }

    /// <summary>Bytes a leaf spends on one entry (the entry slot and its name entry).</summary>
    public static int LeafBytes(AttrEntry entry, int blockSize)
    {
        ArgumentNullException.ThrowIfNull(entry);
        return AttrFormat.LeafEntrySize + (AttrFormat.IsLocalInLeaf(entry.Name.Length, entry.ValueLength, blockSize)
            ? AttrFormat.LocalNameSize(entry.Name.Length, entry.ValueLength)
            : AttrFormat.RemoteNameSize(entry.Name.Length));
    }

    /// <summary>
    /// Formats a compacted leaf (as xfs_attr3_leaf_compact leaves one): entries in the given (hash) order, names
    /// packed down from the end of the block in entry order, one free region between entries and names, no holes.
    /// Remote entries must have <see cref="AttrEntry.RemoteBlock"/> assigned.
    /// </summary>
    public static void FormatLeaf(Span<byte> block, IReadOnlyList<AttrEntry> entries, long daddr, ulong owner, ReadOnlySpan<byte> uuid, uint forw, uint back, ulong lsn)
    {
        ArgumentNullException.ThrowIfNull(entries);
        int size = block.Length;
        block.Clear();
        WriteDaHeader(block, AttrFormat.LeafMagic, daddr, owner, uuid, forw, back, lsn);
        int top = size;
        int used = 0;
        for (int i = 0; i < entries.Count; i++)
        {
            var e = entries[i];
            bool local = AttrFormat.IsLocalInLeaf(e.Name.Length, e.ValueLength, size);
            int nameSize = local ? AttrFormat.LocalNameSize(e.Name.Length, e.ValueLength) : AttrFormat.RemoteNameSize(e.Name.Length);
            top -= nameSize;
            used += nameSize;
            if (top < AttrFormat.LeafHeaderSize + entries.Count * AttrFormat.LeafEntrySize) throw new ArgumentException("attr entries do not fit one leaf block", nameof(entries));
            var name = block[top..];
            if (local)
            {
                BinaryPrimitives.WriteUInt16BigEndian(name, (ushort)e.ValueLength);
                name[2] = (byte)e.Name.Length;
                e.Name.CopyTo(name[3..]);
                e.Value!.CopyTo(name[(3 + e.Name.Length)..]);
            }
            else
            {
                if (e.RemoteBlock == 0) throw new ArgumentException($"remote entry {e} has no value block", nameof(entries));
                BinaryPrimitives.WriteUInt32BigEndian(name, e.RemoteBlock);
                BinaryPrimitives.WriteUInt32BigEndian(name[4..], (uint)e.ValueLength);
                name[8] = (byte)e.Name.Length;
                e.Name.CopyTo(name[9..]);
            }
            var ent = block.Slice(AttrFormat.LeafHeaderSize + i * AttrFormat.LeafEntrySize, AttrFormat.LeafEntrySize);
            BinaryPrimitives.WriteUInt32BigEndian(ent, e.Hash);
            BinaryPrimitives.WriteUInt16BigEndian(ent[4..], (ushort)top);
            ent[6] = (byte)((e.Flags & AttrFormat.NamespaceMask) | (local ? AttrFormat.FlagLocal : 0));
        }
        int firstFree = AttrFormat.LeafHeaderSize + entries.Count * AttrFormat.LeafEntrySize;
        BinaryPrimitives.WriteUInt16BigEndian(block[AttrFormat.OffCount..], (ushort)entries.Count);
        BinaryPrimitives.WriteUInt16BigEndian(block[AttrFormat.OffUsedBytes..], (ushort)used);
        BinaryPrimitives.WriteUInt16BigEndian(block[AttrFormat.OffFirstUsed..], (ushort)(top == 65536 ? 0 : top));
        block[AttrFormat.OffHoles] = 0;
        BinaryPrimitives.WriteUInt16BigEndian(block[AttrFormat.OffFreeMap..], (ushort)firstFree);
        BinaryPrimitives.WriteUInt16BigEndian(block[(AttrFormat.OffFreeMap + 2)..], (ushort)(top - firstFree));
    }

    // ------------------------------------------------------------------ node

    /// <summary>Parses a da node block; throws <see cref="AttrFormatException"/> when it breaks a rule.</summary>
    public static AttrNode ParseNode(ReadOnlySpan<byte> block, long daddr, ulong owner, ReadOnlySpan<byte> uuid)
    {
        if (CheckDaHeader(block, AttrFormat.NodeMagic, daddr, owner, uuid) is { } bad) throw new AttrFormatException("attr node: " + bad);
        int count = BinaryPrimitives.ReadUInt16BigEndian(block[AttrFormat.OffNodeCount..]);
        int level = BinaryPrimitives.ReadUInt16BigEndian(block[AttrFormat.OffNodeLevel..]);
        if (level < 1 || level >= AttrFormat.MaxNodeDepth) throw new AttrFormatException($"attr node: level {level}");
        if (count < 1 || count > AttrFormat.NodeMaxEntries(block.Length)) throw new AttrFormatException($"attr node: count {count}");
        var entries = new List<(uint, uint)>(count);
        uint last = 0;
        for (int i = 0; i < count; i++)
        {
            var ent = block[(AttrFormat.NodeHeaderSize + i * AttrFormat.NodeEntrySize)..];
            uint hash = BinaryPrimitives.ReadUInt32BigEndian(ent);
            if (hash < last) throw new AttrFormatException($"attr node: entry {i} out of hash order");
            last = hash;
            entries.Add((hash, BinaryPrimitives.ReadUInt32BigEndian(ent[4..])));
        }
        return new AttrNode(level, BinaryPrimitives.ReadUInt32BigEndian(block[AttrFormat.OffForw..]), BinaryPrimitives.ReadUInt32BigEndian(block[AttrFormat.OffBack..]), entries);
    }

    /// <summary>Formats a da node block of <paramref name="level"/> with (largest hash, child block) entries.</summary>
    public static void FormatNode(Span<byte> block, int level, IReadOnlyList<(uint Hash, uint Child)> entries, long daddr, ulong owner, ReadOnlySpan<byte> uuid, uint forw, uint back, ulong lsn)
    {
        ArgumentNullException.ThrowIfNull(entries);
        if (entries.Count == 0 || entries.Count > AttrFormat.NodeMaxEntries(block.Length)) throw new ArgumentException($"{entries.Count} node entries", nameof(entries));
        block.Clear();
        WriteDaHeader(block, AttrFormat.NodeMagic, daddr, owner, uuid, forw, back, lsn);
        BinaryPrimitives.WriteUInt16BigEndian(block[AttrFormat.OffNodeCount..], (ushort)entries.Count);
        BinaryPrimitives.WriteUInt16BigEndian(block[AttrFormat.OffNodeLevel..], (ushort)level);
        for (int i = 0; i < entries.Count; i++)
        {
            var ent = block[(AttrFormat.NodeHeaderSize + i * AttrFormat.NodeEntrySize)..];
            BinaryPrimitives.WriteUInt32BigEndian(ent, entries[i].Hash);
            BinaryPrimitives.WriteUInt32BigEndian(ent[4..], entries[i].Child);
        }
    }

    // ------------------------------------------------------------------ remote

    /// <summary>Null when a remote block's header names this piece of this value (magic, offset, bytes, UUID,
    /// owner, daddr), else why not.</summary>
    public static string? CheckRemote(ReadOnlySpan<byte> block, int offset, int bytes, long daddr, ulong owner, ReadOnlySpan<byte> uuid)
    {
        uint magic = BinaryPrimitives.ReadUInt32BigEndian(block);
        if (magic != AttrFormat.RemoteMagic) return $"remote value block magic 0x{magic:x8}";
        if (BinaryPrimitives.ReadInt32BigEndian(block[AttrFormat.OffRmtOffset..]) != offset) return $"remote value block offset is not {offset}";
        if (BinaryPrimitives.ReadInt32BigEndian(block[AttrFormat.OffRmtBytes..]) != bytes) return $"remote value block holds not {bytes} bytes";
        if (!block.Slice(AttrFormat.OffRmtUuid, 16).SequenceEqual(uuid)) return "remote value block: metadata UUID mismatch";
        if (BinaryPrimitives.ReadUInt64BigEndian(block[AttrFormat.OffRmtOwner..]) != owner) return $"remote value block owner is not inode {owner}";
        if (BinaryPrimitives.ReadInt64BigEndian(block[AttrFormat.OffRmtBlkno..]) != daddr) return "remote value block blkno is not its address";
        return null;
    }

    /// <summary>Formats block <paramref name="index"/> of a remote value: header (offset and bytes of its piece,
    /// NULLCOMMITLSN) and the piece; the rest of the block is zero.</summary>
    public static void FormatRemote(Span<byte> block, ReadOnlySpan<byte> value, int index, long daddr, ulong owner, ReadOnlySpan<byte> uuid)
    {
        int per = AttrFormat.RemoteBytesPerBlock(block.Length);
        int offset = index * per;
        int bytes = Math.Min(per, value.Length - offset);
        block.Clear();
        BinaryPrimitives.WriteUInt32BigEndian(block, AttrFormat.RemoteMagic);
        BinaryPrimitives.WriteInt32BigEndian(block[AttrFormat.OffRmtOffset..], offset);
        BinaryPrimitives.WriteInt32BigEndian(block[AttrFormat.OffRmtBytes..], bytes);
        uuid.CopyTo(block[AttrFormat.OffRmtUuid..]);
        BinaryPrimitives.WriteUInt64BigEndian(block[AttrFormat.OffRmtOwner..], owner);
        BinaryPrimitives.WriteInt64BigEndian(block[AttrFormat.OffRmtBlkno..], daddr);
        BinaryPrimitives.WriteUInt64BigEndian(block[AttrFormat.OffRmtLsn..], AttrFormat.RemoteLsn);
        value.Slice(offset, bytes).CopyTo(block[AttrFormat.RemoteHeaderSize..]);
    }
}

/// <summary>
/// Buffer verifier of attr-fork blocks: leaf, node or remote magic and the CRC at byte 12 on read; the CRC
/// recomputed before a write. The structure is checked by the parsers of <see cref="AttrBlocks"/>.
/// </summary>
internal sealed class AttrBlockVerifier : IBufferVerifier
{
    /// <summary>The one instance (stateless).</summary>
    public static readonly AttrBlockVerifier Instance = new();

    /// <inheritdoc/>
    public string Name => "attr fork block";

    /// <summary>True when the block has one of the three attr-fork magics.</summary>
    public static bool HasAttrMagic(ReadOnlySpan<byte> block)
        => block.Length >= 16 && (BinaryPrimitives.ReadUInt32BigEndian(block) == AttrFormat.RemoteMagic
                                  || AttrFormat.DaMagic(block) is AttrFormat.LeafMagic or AttrFormat.NodeMagic);

    /// <inheritdoc/>
    public void VerifyRead(BlockBuffer buffer)
    {
        ArgumentNullException.ThrowIfNull(buffer);
        var b = buffer.Span;
        if (!HasAttrMagic(b)) throw new CorruptionException(Name, buffer.Daddr, "no leaf, node or remote value magic");
        if (!XfsCrc.Verify(b, AttrFormat.CrcOffset)) throw new CorruptionException(Name, buffer.Daddr, "bad CRC");
    }

    /// <inheritdoc/>
    public void PrepareWrite(BlockBuffer buffer)
    {
        ArgumentNullException.ThrowIfNull(buffer);
        var b = buffer.Span;
        if (!HasAttrMagic(b)) throw new CorruptionException(Name, buffer.Daddr, "no leaf, node or remote value magic before write");
        XfsCrc.Update(b, AttrFormat.CrcOffset);
    }
}
