namespace Xfbtree.Btree;

/// <summary>Sizes and offsets of one tree type at one block size, computed as XFS does.</summary>
public sealed class BtreeGeometry
{
    /// <summary>Short-form header size (per-AG trees).</summary>
    public const int ShortHeaderSize = 56;
    /// <summary>Long-form header size (bmbt, in-memory trees).</summary>
    public const int LongHeaderSize = 72;
    /// <summary>Largest supported key (bytes); stack scratch is sized from it.</summary>
    public const int MaxKeySize = 128;
    /// <summary>Largest supported record (bytes).</summary>
    public const int MaxRecordSize = 256;

    /// <summary>Computes the geometry; <paramref name="maxRecords"/> bounds the height (maxlevels) as XFS does with minrecs.</summary>
    public BtreeGeometry(int blockSize, bool longPointers, int recordSize, int keySize, bool overlapping, long maxRecords = 1L << 40)
    {
        if (blockSize < 512 || blockSize > 65536 || (blockSize & (blockSize - 1)) != 0)
            throw new ArgumentOutOfRangeException(nameof(blockSize), blockSize, "block size must be a power of two in 512..65536");
        if (recordSize <= 0 || recordSize > MaxRecordSize) throw new ArgumentOutOfRangeException(nameof(recordSize));
        if (keySize <= 0 || keySize > MaxKeySize / 2) throw new ArgumentOutOfRangeException(nameof(keySize));
        BlockSize = blockSize;
        LongPointers = longPointers;
        RecordSize = recordSize;
        KeySize = keySize;
        Overlapping = overlapping;
        HeaderSize = longPointers ? LongHeaderSize : ShortHeaderSize;
        PointerSize = longPointers ? 8 : 4;
        KeySlotSize = overlapping ? 2 * keySize : keySize;
        LeafMaxRecords = (blockSize - HeaderSize) / recordSize;
        NodeMaxRecords = (blockSize - HeaderSize) / (KeySlotSize + PointerSize);
        LeafMinRecords = LeafMaxRecords / 2;
        NodeMinRecords = NodeMaxRecords / 2;
        if (LeafMaxRecords < 2 || NodeMaxRecords < 4)
            throw new ArgumentException($"block size {blockSize} too small for records of {recordSize} and key slots of {KeySlotSize} bytes");
        int levels = 1;
        long capacity = Math.Max(1, LeafMinRecords);
        while (capacity < maxRecords && levels < 32)
        {
            capacity = capacity > long.MaxValue / NodeMinRecords ? long.MaxValue : capacity * NodeMinRecords;
            levels++;
        }
        MaxLevels = levels;
    }

    /// <summary>Bytes per block.</summary>
    public int BlockSize { get; }
    /// <summary>Long-form blocks (64-bit pointers and siblings, 72-byte header) rather than short-form.</summary>
    public bool LongPointers { get; }
    /// <summary>Bytes per leaf record.</summary>
    public int RecordSize { get; }
    /// <summary>Bytes per key (an overlapping tree stores a low and a high key per node entry).</summary>
    public int KeySize { get; }
    /// <summary>Whether node entries carry a high key as well (the rmapbt).</summary>
    public bool Overlapping { get; }
    /// <summary>Bytes of the block header (56 short form, 72 long form).</summary>
    public int HeaderSize { get; }
    /// <summary>Bytes per child pointer (4 short form, 8 long form).</summary>
    public int PointerSize { get; }
    /// <summary>Bytes per node key slot: the key, or low key + high key for overlapping trees.</summary>
    public int KeySlotSize { get; }
    /// <summary>Most records a leaf holds.</summary>
    public int LeafMaxRecords { get; }
    /// <summary>Most entries a node holds.</summary>
    public int NodeMaxRecords { get; }
    /// <summary>Fewest records a non-root leaf may hold.</summary>
    public int LeafMinRecords { get; }
    /// <summary>Fewest entries a non-root node may hold.</summary>
    public int NodeMinRecords { get; }
    /// <summary>Tallest legal tree (levels); blocks claiming a level at or above it are corrupt.</summary>
    public int MaxLevels { get; }
    /// <summary>Offset of the CRC field in the header.</summary>
    public int CrcOffset => LongPointers ? 64 : 52;

    /// <summary>maxrecs of a block at <paramref name="level"/>.</summary>
    public int MaxRecords(int level) => level == 0 ? LeafMaxRecords : NodeMaxRecords;
    /// <summary>minrecs of a non-root block at <paramref name="level"/>.</summary>
    public int MinRecords(int level) => level == 0 ? LeafMinRecords : NodeMinRecords;
    /// <summary>Byte offset of record <paramref name="index"/> (0-based) in a leaf.</summary>
    public int RecordOffset(int index) => HeaderSize + index * RecordSize;
    /// <summary>Byte offset of key slot <paramref name="index"/> in a node.</summary>
    public int KeyOffset(int index) => HeaderSize + index * KeySlotSize;
    /// <summary>Byte offset of pointer <paramref name="index"/> in a node whose key area holds <paramref name="nodeMaxRecords"/> slots.</summary>
    public int PointerOffset(int index, int nodeMaxRecords) => HeaderSize + nodeMaxRecords * KeySlotSize + index * PointerSize;

    /// <summary>Computes the geometry for an ops table.</summary>
    public static BtreeGeometry For<TOps>(in TOps ops, int blockSize, long maxRecords = 1L << 40) where TOps : struct, IBtreeOps
        => new(blockSize, ops.LongPointers, ops.RecordSize, ops.KeySize, ops.Overlapping, maxRecords);
}
