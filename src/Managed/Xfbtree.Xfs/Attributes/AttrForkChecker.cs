using System.Buffers.Binary;

namespace Xfbtree.Xfs.Attributes;

/// <summary>
/// The scrub's check of a whole attr fork (the kernel's attr verifiers and xattr scrubber, xfs_repair's
/// attr_repair.c and da_util.c): a shortform list (header size and count against its entries, names, flags), or
/// every block of a leaf or node fork reached from its root: node levels one below their parent, hash order within
/// and across blocks, each node entry's hash the largest of its child, sibling links of each level in tree order, no
/// block reached twice; every leaf's header (counts, firstused, usedbytes, free map), entries (bounds, no two claiming
/// the same bytes, known flags, one namespace, not INCOMPLETE, a name without NUL whose hash is the entry's) and
/// every remote value's blocks (mapped, magic, CRC, owner, blkno, UUID, offset and bytes). Returns the first problem
/// met, or null. Reads at most the blocks the fork maps.
/// </summary>
internal static class AttrForkChecker
{
    /// <summary>Flags an attr entry may carry on disk (XFS_ATTR_ONDISK_MASK): namespaces, LOCAL, INCOMPLETE.</summary>
    const byte OnDiskFlags = AttrFormat.NamespaceMask | AttrFormat.FlagLocal | AttrFormat.FlagIncomplete;

    /// <summary>The first problem of the shortform list in <paramref name="fork"/>, or null.</summary>
    public static string? CheckShortform(ReadOnlySpan<byte> fork)
    {
        List<AttrEntry> entries;
        try { entries = ShortformAttributes.Parse(fork); }
        catch (AttrFormatException e) { return e.Message; }
        for (int i = 0; i < entries.Count; i++)
        {
            if (entries[i].Name.AsSpan().Contains((byte)0)) return $"shortform entry {i} has a NUL in its name";
        }
        return null;
    }

    /// <summary>
    /// The first problem of the leaf- or node-format fork whose blocks <paramref name="read"/> gives (it checks the
    /// block's magic and CRC, and throws <see cref="AttrFormatException"/> for an unmapped one), or null.
    /// <paramref name="mappedBlocks"/>: the blocks the fork maps (bounds the walk).
    /// </summary>
    public static string? CheckTree(ulong owner, ReadOnlySpan<byte> uuid, int blockSize, AttrBlockSource read, long mappedBlocks)
    {
        ArgumentNullException.ThrowIfNull(read);
        var walk = new Walk(owner, uuid.ToArray(), blockSize, read, mappedBlocks);
        try
        {
            walk.Block(0, parentLevel: int.MaxValue, out _);
            walk.FinishLevels();
            foreach (var e in walk.Remote) walk.CheckRemoteValue(e);
            return null;
        }
        catch (AttrFormatException e) { return e.Message; }
    }

    sealed class Walk(ulong owner, byte[] uuid, int blockSize, AttrBlockSource read, long mappedBlocks)
    {
        readonly HashSet<uint> _visited = new();
        // Per level (0 = leaves): the last block met in tree order and its forward link, for the sibling chain.
        readonly Dictionary<int, (uint Block, uint Forw)> _lastAtLevel = new();
        uint _lastLeafHash;
        // One block buffer for the whole walk: a node's entries are parsed out of it before its children are read.
        readonly byte[] _block = new byte[blockSize];
        public readonly List<AttrEntry> Remote = new();

        /// <summary>Checks logical block <paramref name="logical"/> and its subtree; returns its level and, in
        /// <paramref name="maxHash"/>, its largest hash.</summary>
        public int Block(uint logical, int parentLevel, out uint maxHash)
        {
            if (!_visited.Add(logical)) throw new AttrFormatException($"attr block {logical} reached twice (a cycle or a cross-link)");
            if (_visited.Count > mappedBlocks) throw new AttrFormatException($"attr fork walk visits more blocks than the fork maps ({mappedBlocks})");
            var block = _block;
            long daddr = read(logical, block);
            ushort magic = AttrFormat.DaMagic(block);
            if (magic == AttrFormat.NodeMagic)
            {
                var node = AttrBlocks.ParseNode(block, daddr, owner, uuid);
                if (parentLevel != int.MaxValue && node.Level != parentLevel - 1) throw new AttrFormatException($"attr node {logical} has level {node.Level} below a node of level {parentLevel}");
                Sibling(node.Level, logical, node.Back, node.Forw, root: parentLevel == int.MaxValue);
                maxHash = 0;
                foreach (var (hash, child) in node.Entries)
                {
                    if (child == 0) throw new AttrFormatException($"attr node {logical} points at the root");
                    int level = Block(child, node.Level, out uint childMax);
                    if (node.Level == 1 && level != 0) throw new AttrFormatException($"attr block {child} below a level-1 node is not a leaf");
                    if (childMax != hash) throw new AttrFormatException($"attr node {logical}: entry hash 0x{hash:x8} is not the largest hash below it (0x{childMax:x8})");
                    maxHash = hash;
                }
                return node.Level;
            }
            if (magic != AttrFormat.LeafMagic) throw new AttrFormatException($"attr block {logical} is neither a leaf nor a node (magic 0x{magic:x4})");
            if (parentLevel != int.MaxValue && parentLevel != 1) throw new AttrFormatException($"attr leaf {logical} below a node of level {parentLevel}");
            var leaf = AttrBlocks.ParseLeaf(block, daddr, owner, uuid);
            Sibling(0, logical, leaf.Back, leaf.Forw, root: parentLevel == int.MaxValue);
            CheckLeafSpace(block, logical);
            if (leaf.Entries.Count == 0 && logical != 0) throw new AttrFormatException($"attr leaf {logical} has no entries");
            foreach (var e in leaf.Entries)
            {
                if (e.Hash < _lastLeafHash) throw new AttrFormatException($"attr leaf {logical} is out of hash order with the leaf before it");
                _lastLeafHash = e.Hash;
                if ((e.Flags & AttrFormat.FlagIncomplete) != 0) throw new AttrFormatException($"attr leaf {logical}: entry {e} is INCOMPLETE");
                if (e.Name.AsSpan().Contains((byte)0)) throw new AttrFormatException($"attr leaf {logical}: entry {e} has a NUL in its name");
                if (e.Value is null) Remote.Add(e);
            }
            maxHash = leaf.Entries.Count > 0 ? leaf.Entries[^1].Hash : 0;
            return 0;
        }

        /// <summary>Blocks of a level are met left to right: each one's back link names the one before, whose forward
        /// link names it; the root has neither.</summary>
        void Sibling(int level, uint logical, uint back, uint forw, bool root)
        {
            if (root)
            {
                if (back != 0 || forw != 0) throw new AttrFormatException($"attr root block {logical} has siblings");
                return;
            }
            _lastAtLevel.TryGetValue(level, out var last);
            bool first = !_lastAtLevel.ContainsKey(level);
            if (back != (first ? 0 : last.Block)) throw new AttrFormatException($"attr block {logical} (level {level}) links back to {back}, not {(first ? 0 : last.Block)}");
            if (!first && last.Forw != logical) throw new AttrFormatException($"attr block {last.Block} (level {level}) links forward to {last.Forw}, not {logical}");
            _lastAtLevel[level] = (logical, forw);
        }

        /// <summary>The last block of each level links forward to nothing.</summary>
        public void FinishLevels()
        {
            foreach (var (level, last) in _lastAtLevel)
            {
                if (last.Forw != 0) throw new AttrFormatException($"attr block {last.Block} (level {level}) is the last of its level but links forward to {last.Forw}");
            }
        }

        /// <summary>xfs_repair's leaf space rules beyond the parser's: entry table and name entries claim disjoint
        /// bytes, known flags only, usedbytes = the name entries' bytes, firstused = the lowest name (at most it when
        /// the leaf has holes).</summary>
        void CheckLeafSpace(ReadOnlySpan<byte> block, uint logical)
        {
            int count = BinaryPrimitives.ReadUInt16BigEndian(block[AttrFormat.OffCount..]);
            int usedBytes = BinaryPrimitives.ReadUInt16BigEndian(block[AttrFormat.OffUsedBytes..]);
            int firstUsed = BinaryPrimitives.ReadUInt16BigEndian(block[AttrFormat.OffFirstUsed..]);
            if (firstUsed == 0 && block.Length == 65536) firstUsed = 65536;
            bool holes = block[AttrFormat.OffHoles] != 0;
            var claimed = new System.Collections.BitArray(block.Length);
            int lowest = block.Length, used = 0;
            for (int i = 0; i < count; i++)
            {
                var ent = block.Slice(AttrFormat.LeafHeaderSize + i * AttrFormat.LeafEntrySize, AttrFormat.LeafEntrySize);
                int nameIdx = BinaryPrimitives.ReadUInt16BigEndian(ent[4..]);
                byte flags = ent[6];
                if ((flags & ~OnDiskFlags) != 0) throw new AttrFormatException($"attr leaf {logical}: entry {i} has unknown flags 0x{flags:x2}");
                var name = block[nameIdx..];   // bounds checked by the parser
                int size = (flags & AttrFormat.FlagLocal) != 0
                    ? AttrFormat.LocalNameSize(name[2], BinaryPrimitives.ReadUInt16BigEndian(name))
                    : AttrFormat.RemoteNameSize(name[8]);
                if (nameIdx + size > block.Length) throw new AttrFormatException($"attr leaf {logical}: entry {i} runs off the block");
                for (int b = nameIdx; b < nameIdx + size; b++)
                {
                    if (claimed[b]) throw new AttrFormatException($"attr leaf {logical}: entry {i} claims bytes another entry claims");
                    claimed[b] = true;
                }
                lowest = Math.Min(lowest, nameIdx);
                used += size;
            }
            if (used != usedBytes) throw new AttrFormatException($"attr leaf {logical}: usedbytes {usedBytes}, its entries' names take {used}");
            if ((!holes && firstUsed != lowest) || firstUsed > lowest) throw new AttrFormatException($"attr leaf {logical}: firstused {firstUsed}, its lowest name is at {lowest}");
        }

        public void CheckRemoteValue(AttrEntry e)
        {
            // Remote value blocks are read once each; they are outside the da tree (not in _visited).
            int per = AttrFormat.RemoteBytesPerBlock(blockSize);
            int blocks = AttrFormat.RemoteBlocks(e.ValueLength, blockSize);
            if (blocks == 0) throw new AttrFormatException($"{e}: a remote value of 0 bytes");
            var block = _block;
            for (int i = 0; i < blocks; i++)
            {
                ulong at = (ulong)e.RemoteBlock + (uint)i;
                if (at > uint.MaxValue) throw new AttrFormatException($"{e}: its value runs past the last logical block");
                uint logical = (uint)at;
                if (_visited.Contains(logical)) throw new AttrFormatException($"{e}: its value block {logical} is a leaf or node block too");
                long daddr = read(logical, block);
                int offset = i * per, bytes = Math.Min(per, e.ValueLength - offset);
                if (AttrBlocks.CheckRemote(block, offset, bytes, daddr, owner, uuid) is { } bad) throw new AttrFormatException($"{e}: {bad}");
            }
        }
    }
}
