using System.Buffers.Binary;
using Xfbtree.Xfs.Format;

namespace Xfbtree.Xfs.Attributes;

/// <summary>
/// Where the attr fork starts in an inode (di_forkoff, in 8-byte units of the literal area): the kernel's
/// xfs_attr_shortform_bytesfit and xfs_default_attroffset, computed from the raw inode.
/// </summary>
internal static class AttrForkGeometry
{
    /// <summary>Smallest key/pointer pairs a data-fork bmbt root must have room for (MINDBTPTRS).</summary>
    public const int MinDataBtreePointers = 3;
    /// <summary>Smallest key/pointer pairs an attr-fork bmbt root must have room for (MINABTPTRS).</summary>
    public const int MinAttrBtreePointers = 2;

    /// <summary>Bytes of an in-inode bmbt root with <paramref name="records"/> key/pointer pairs (XFS_BMDR_SPACE_CALC).</summary>
    public static int BmdrSpace(int records) => 4 + records * 16;

    /// <summary>Bytes of the literal area (inode size less the 176-byte core).</summary>
    public static int LiteralSize(int inodeSize) => inodeSize - Dinode.CoreSize;

    /// <summary>The bytes the data fork holds now (the kernel's if_bytes; a btree root counts by its numrecs).</summary>
    public static int DataForkBytes(ReadOnlySpan<byte> inode)
    {
        var d = new Dinode(inode);
        return d.Format switch
        {
            ForkFormat.Extents => (int)Math.Min(d.DataExtents * Dinode.ExtentSize, int.MaxValue),
            ForkFormat.Local => (int)Math.Min(d.Size, int.MaxValue),
            ForkFormat.Btree => BmdrSpace(BinaryPrimitives.ReadUInt16BigEndian(d.DataFork[2..])),
            ForkFormat.Dev => 4,
            _ => 0,
        };
    }

    /// <summary>xfs_default_attroffset in bytes: where a new attr fork goes when the shortform sizing gives none.</summary>
    public static int DefaultForkOffsetBytes(ReadOnlySpan<byte> inode)
    {
        var d = new Dinode(inode);
        if (d.Format == ForkFormat.Dev) return 8;
        int literal = LiteralSize(inode.Length);
        return inode.Length == 256 ? literal - BmdrSpace(MinAttrBtreePointers) : BmdrSpace(6 * MinAttrBtreePointers);
    }

    /// <summary>
    /// xfs_attr_shortform_bytesfit: the forkoff (8-byte units) at which an attr fork of <paramref name="bytes"/>
    /// fits beside the data fork, or 0 when it cannot. Keeps the current forkoff when the fork is big enough already;
    /// otherwise the attr fork gets as much room as the data fork spares, bounded by room for a data btree root of
    /// three pointers below and an attr btree root of two above.
    /// </summary>
    public static int BytesFit(ReadOnlySpan<byte> inode, int bytes)
    {
        var d = new Dinode(inode);
        int literal = LiteralSize(inode.Length);
        if (bytes > literal) return 0;
        int offset = (literal - bytes) >> 3;
        if (d.Format == ForkFormat.Dev)
        {
            const int devForkOff = 1;
            return offset >= devForkOff ? devForkOff : 0;
        }
        if (d.ForkOffset != 0 && bytes <= literal - d.ForkOffset * 8) return d.ForkOffset;
        long dsize = DataForkBytes(inode);
        switch (d.Format)
        {
            case ForkFormat.Extents:
                // No attr fork yet and the extents would not fit beside the default one: the data fork becomes a
                // btree, so it only needs room for a root.
                if (d.ForkOffset == 0 && dsize > DefaultForkOffsetBytes(inode)) dsize = BmdrSpace(MinDataBtreePointers);
                break;
            case ForkFormat.Btree:
                if (d.ForkOffset != 0) return offset < d.ForkOffset ? 0 : d.ForkOffset;
                break;
        }
        long minForkOff = (Math.Max(dsize, BmdrSpace(MinDataBtreePointers)) + 7) >> 3;
        int maxForkOff = (literal - BmdrSpace(MinAttrBtreePointers)) >> 3;
        if (offset >= maxForkOff) return maxForkOff;
        if (offset >= minForkOff) return offset;
        return 0;
    }
}

/// <summary>
/// The shape of a leaf- or node-format attr fork for a set of entries: entries packed into leaves in hash order,
/// da node levels above them (each entry naming a child's largest hash). Block 0 is the root.
/// </summary>
internal static class AttrTreeLayout
{
    /// <summary>
    /// Entries sorted by hash (stable for equal hashes) packed into leaves: one leaf when they all fit it, else
    /// leaves filled to three quarters, so that later changes find room in their leaf and are made in place (the
    /// kernel's splits leave leaves about half full).
    /// </summary>
    public static List<List<AttrEntry>> PackLeaves(IReadOnlyList<AttrEntry> entries, int blockSize)
    {
        ArgumentNullException.ThrowIfNull(entries);
        var sorted = entries.OrderBy(e => e.Hash).ToList();
        int room = blockSize - AttrFormat.LeafHeaderSize;
        var leaves = Pack(sorted, blockSize, room);
        return leaves.Count > 1 ? Pack(sorted, blockSize, room / 4 * 3) : leaves;
    }

    /// <summary>Sorted entries into leaves of at most <paramref name="fill"/> bytes each (an entry larger than
    /// that goes alone: it fits the block).</summary>
    static List<List<AttrEntry>> Pack(List<AttrEntry> sorted, int blockSize, int fill)
    {
        var leaves = new List<List<AttrEntry>>();
        var current = new List<AttrEntry>();
        int room = fill;
        foreach (var e in sorted)
        {
            int need = AttrBlocks.LeafBytes(e, blockSize);
            if (need > room && current.Count > 0)
            {
                leaves.Add(current);
                current = new List<AttrEntry>();
                room = fill;
            }
            current.Add(e);
            room -= need;
        }
        if (current.Count > 0) leaves.Add(current);
        return leaves;
    }

    /// <summary>How many children each node of the level above <paramref name="children"/> children gets
    /// (as even as possible, at most a node's capacity each).</summary>
    public static List<int> SplitLevel(int children, int blockSize)
    {
        int max = AttrFormat.NodeMaxEntries(blockSize);
        int nodes = (children + max - 1) / max;
        var counts = new List<int>(nodes);
        for (int i = 0; i < nodes; i++) counts.Add(children / nodes + (i < children % nodes ? 1 : 0));
        return counts;
    }

    /// <summary>Node blocks above <paramref name="leaves"/> leaves (0 for one leaf).</summary>
    public static int NodeBlocks(int leaves, int blockSize)
    {
        int total = 0;
        int n = leaves;
        while (n > 1)
        {
            n = SplitLevel(n, blockSize).Count;
            total += n;
        }
        return total;
    }
}
