namespace Xfbtree.Xfs.Attributes;

/// <summary>
/// Reads one attr-fork block: copies logical block <paramref name="logicalBlock"/> (whose magic and CRC the source
/// has checked) into <paramref name="destination"/> and returns its disk address (512-byte units). Throws
/// <see cref="AttrFormatException"/> when the block is not mapped.
/// </summary>
internal delegate long AttrBlockSource(uint logicalBlock, Span<byte> destination);

/// <summary>
/// Walks a leaf- or node-format attr fork: from the root at logical block 0 down the leftmost path to the first
/// leaf, then along the leaves' forward links, checking every block (type, level, sibling links, hash order)
/// before its entries are used. Shared by the write engine and any reader of images.
/// </summary>
internal static class AttrForkReader
{
    /// <summary>Every entry of a leaf- or node-format fork in hash order; at most <paramref name="maxBlocks"/>
    /// blocks are visited (the fork's mapped block count), so a cycle cannot loop forever.</summary>
    public static List<AttrEntry> ReadTree(ulong owner, ReadOnlySpan<byte> uuid, int blockSize, AttrBlockSource read, long maxBlocks)
    {
        ArgumentNullException.ThrowIfNull(read);
        var block = new byte[blockSize];
        long visited = 0;
        uint current = 0;
        long daddr = Visit(read, 0, block, ref visited, maxBlocks);
        int level = int.MaxValue;
        // Down the leftmost path.
        while (AttrFormat.DaMagic(block) == AttrFormat.NodeMagic)
        {
            var node = AttrBlocks.ParseNode(block, daddr, owner, uuid);
            if (node.Level >= level) throw new AttrFormatException($"attr node at block {current} has level {node.Level} below a node of level {level}");
            if (current == 0 && (node.Forw != 0 || node.Back != 0)) throw new AttrFormatException("attr root node has siblings");
            level = node.Level;
            current = node.Entries[0].Child;
            if (current == 0) throw new AttrFormatException("attr node points at the root");
            daddr = Visit(read, current, block, ref visited, maxBlocks);
            if (level == 1 && AttrFormat.DaMagic(block) != AttrFormat.LeafMagic) throw new AttrFormatException($"attr block {current} below a level-1 node is not a leaf");
        }
        var entries = new List<AttrEntry>();
        uint previous = 0;
        uint lastHash = 0;
        while (true)
        {
            var leaf = AttrBlocks.ParseLeaf(block, daddr, owner, uuid);
            if (leaf.Back != previous) throw new AttrFormatException($"attr leaf {current} links back to {leaf.Back}, not {previous}");
            if (current == 0 && leaf.Forw != 0) throw new AttrFormatException("attr root leaf has siblings");
            foreach (var e in leaf.Entries)
            {
                if (e.Hash < lastHash) throw new AttrFormatException($"attr leaf {current} is out of hash order with the leaf before it");
                lastHash = e.Hash;
                if ((e.Flags & AttrFormat.FlagIncomplete) == 0) entries.Add(e);
            }
            if (leaf.Forw == 0) break;
            previous = current;
            current = leaf.Forw;
            daddr = Visit(read, current, block, ref visited, maxBlocks);
        }
        return entries;
    }

    static long Visit(AttrBlockSource read, uint logical, byte[] block, ref long visited, long maxBlocks)
    {
        if (++visited > maxBlocks) throw new AttrFormatException($"attr fork walk visits more blocks than the fork maps ({maxBlocks}): a cycle");
        return read(logical, block);
    }

    /// <summary>Reads a remote value (every block's header checked: magic, offset, bytes, owner, blkno, UUID).</summary>
    public static byte[] ReadRemoteValue(AttrEntry entry, ulong owner, ReadOnlySpan<byte> uuid, int blockSize, AttrBlockSource read)
    {
        ArgumentNullException.ThrowIfNull(entry);
        ArgumentNullException.ThrowIfNull(read);
        var value = new byte[entry.ValueLength];
        var block = new byte[blockSize];
        int per = AttrFormat.RemoteBytesPerBlock(blockSize);
        int blocks = AttrFormat.RemoteBlocks(entry.ValueLength, blockSize);
        for (int i = 0; i < blocks; i++)
        {
            long daddr = read(checked(entry.RemoteBlock + (uint)i), block);
            int offset = i * per, bytes = Math.Min(per, entry.ValueLength - offset);
            if (AttrBlocks.CheckRemote(block, offset, bytes, daddr, owner, uuid) is { } bad) throw new AttrFormatException($"{entry}: {bad}");
            block.AsSpan(AttrFormat.RemoteHeaderSize, bytes).CopyTo(value.AsSpan(offset));
        }
        return value;
    }
}
