using System.Buffers.Binary;
using Xfbtree.Btree;

namespace Xfbtree.Xfs.Trees;

/// <summary>
/// inobt ("IAB3") and finobt ("FIB3"). Record (16 bytes): startino u32, then holemask u16, count u8,
/// freecount u8 (sparse layout) or freecount u32, then the free mask u64. Key: startino. A record covers
/// 64 inodes, so its high key is startino + 63.
/// </summary>
internal readonly struct InobtOps : IBtreeOps
{
    public const uint InobtMagic = 0x49414233;
    public const uint FinobtMagic = 0x46494233;
    readonly bool _free;
    readonly bool _sparse;

    /// <param name="freeInodeTree">True for the finobt.</param>
    /// <param name="sparseInodes">SPINODES: records use the holemask/count/freecount layout.</param>
    public InobtOps(bool freeInodeTree, bool sparseInodes) { _free = freeInodeTree; _sparse = sparseInodes; }
    public string Name => _free ? "finobt" : "inobt";
    public uint Magic => _free ? FinobtMagic : InobtMagic;
    public bool LongPointers => false;
    public int RecordSize => 16;
    public int KeySize => 4;
    public bool Overlapping => false;
    public int CompareKeys(ReadOnlySpan<byte> a, ReadOnlySpan<byte> b)
        => BinaryPrimitives.ReadUInt32BigEndian(a).CompareTo(BinaryPrimitives.ReadUInt32BigEndian(b));
    public int CompareRecordToKey(ReadOnlySpan<byte> record, ReadOnlySpan<byte> key) => CompareKeys(record, key);
    public void GetKey(ReadOnlySpan<byte> record, Span<byte> key) => record[..4].CopyTo(key);
    public void GetHighKey(ReadOnlySpan<byte> record, Span<byte> key)
        => BinaryPrimitives.WriteUInt32BigEndian(key, BinaryPrimitives.ReadUInt32BigEndian(record) + 63);
    public bool RecordsInOrder(ReadOnlySpan<byte> previous, ReadOnlySpan<byte> next)
        => (ulong)BinaryPrimitives.ReadUInt32BigEndian(previous) + 64 <= BinaryPrimitives.ReadUInt32BigEndian(next);
    public string? ValidateRecord(ReadOnlySpan<byte> record)
    {
        // The chunk's 64 inodes must fit the 32-bit AG inode space (its high key is startino + 63).
        if (BinaryPrimitives.ReadUInt32BigEndian(record) > uint.MaxValue - 63) return "chunk past the end of the AG inode space";
        if (!_sparse)
            return BinaryPrimitives.ReadUInt32BigEndian(record[4..]) > 64 ? "freecount above 64" : null;
        int count = record[6], freecount = record[7];
        if (count > 64) return "count above 64";
        if (freecount > count) return "freecount above count";
        ushort holemask = BinaryPrimitives.ReadUInt16BigEndian(record[4..]);
        if (64 - 4 * System.Numerics.BitOperations.PopCount(holemask) != count) return "count disagrees with holemask";
        return null;
    }
}

/// <summary>
/// refcountbt ("R3FC"). Record (12 bytes): startblock u32 (bit 31 = CoW staging domain), blockcount u32,
/// refcount u32. Key: startblock (flag included, so CoW records sort last).
/// </summary>
internal readonly struct RefcountbtOps : IBtreeOps
{
    public const uint MagicValue = 0x52334643;
    public const uint CowFlag = 1u << 31;
    /// <summary>MAXREFCEXTLEN.</summary>
    public const uint MaxExtentLength = (1u << 31) - 1;
    public string Name => "refcountbt";
    public uint Magic => MagicValue;
    public bool LongPointers => false;
    public int RecordSize => 12;
    public int KeySize => 4;
    public bool Overlapping => false;
    public int CompareKeys(ReadOnlySpan<byte> a, ReadOnlySpan<byte> b)
        => BinaryPrimitives.ReadUInt32BigEndian(a).CompareTo(BinaryPrimitives.ReadUInt32BigEndian(b));
    public int CompareRecordToKey(ReadOnlySpan<byte> record, ReadOnlySpan<byte> key) => CompareKeys(record, key);
    public void GetKey(ReadOnlySpan<byte> record, Span<byte> key) => record[..4].CopyTo(key);
    public void GetHighKey(ReadOnlySpan<byte> record, Span<byte> key)
    {
        uint len = BinaryPrimitives.ReadUInt32BigEndian(record[4..]);
        BinaryPrimitives.WriteUInt32BigEndian(key, BinaryPrimitives.ReadUInt32BigEndian(record) + (len == 0 ? 0 : len - 1));
    }
    public bool RecordsInOrder(ReadOnlySpan<byte> previous, ReadOnlySpan<byte> next)
        => (ulong)BinaryPrimitives.ReadUInt32BigEndian(previous) + BinaryPrimitives.ReadUInt32BigEndian(previous[4..]) <= BinaryPrimitives.ReadUInt32BigEndian(next);
    public string? ValidateRecord(ReadOnlySpan<byte> record)
    {
        uint start = BinaryPrimitives.ReadUInt32BigEndian(record);
        uint len = BinaryPrimitives.ReadUInt32BigEndian(record[4..]);
        uint refcount = BinaryPrimitives.ReadUInt32BigEndian(record[8..]);
        if (len == 0) return "zero length";
        // As xfs_refcount_check_irec: the extent must fit the 31-bit AG block space without wrapping (a wrapped
        // extent's high key sorts below its start, which breaks every range query).
        if (len > MaxExtentLength) return "length above MAXREFCEXTLEN";
        if ((ulong)(start & ~CowFlag) + len > CowFlag) return "extent past the end of the AG";
        if ((start & CowFlag) != 0) return refcount == 1 ? null : "CoW staging extent with refcount other than 1";
        return refcount >= 2 ? null : "shared extent with refcount below 2";
    }
}

/// <summary>
/// bmbt ("BMA3"), long form, rooted in an inode fork. Record: l0/l1 (unwritten l0:63, startoff l0:62..9,
/// startblock fsbno l0:8..0 + l1:63..21, blockcount l1:20..0). Key: startoff u64. Pointer: fsbno u64.
/// </summary>
internal readonly struct BmbtOps : IBtreeOps
{
    public const uint MagicValue = 0x424D4133;
    public string Name => "bmbt";
    public uint Magic => MagicValue;
    public bool LongPointers => true;
    public int RecordSize => 16;
    public int KeySize => 8;
    public bool Overlapping => false;
    public int CompareKeys(ReadOnlySpan<byte> a, ReadOnlySpan<byte> b)
        => BinaryPrimitives.ReadUInt64BigEndian(a).CompareTo(BinaryPrimitives.ReadUInt64BigEndian(b));
    public int CompareRecordToKey(ReadOnlySpan<byte> record, ReadOnlySpan<byte> key)
        => StartOffset(record).CompareTo(BinaryPrimitives.ReadUInt64BigEndian(key));
    public void GetKey(ReadOnlySpan<byte> record, Span<byte> key) => BinaryPrimitives.WriteUInt64BigEndian(key, StartOffset(record));
    public void GetHighKey(ReadOnlySpan<byte> record, Span<byte> key)
    {
        ulong len = BlockCount(record);
        BinaryPrimitives.WriteUInt64BigEndian(key, StartOffset(record) + (len == 0 ? 0 : len - 1));
    }
    public bool RecordsInOrder(ReadOnlySpan<byte> previous, ReadOnlySpan<byte> next)
        => StartOffset(previous) + BlockCount(previous) <= StartOffset(next);
    public string? ValidateRecord(ReadOnlySpan<byte> record) => BlockCount(record) == 0 ? "zero length" : null;

    public static ulong StartOffset(ReadOnlySpan<byte> r) => (BinaryPrimitives.ReadUInt64BigEndian(r) >> 9) & ((1UL << 54) - 1);
    public static ulong StartBlock(ReadOnlySpan<byte> r)
        => ((BinaryPrimitives.ReadUInt64BigEndian(r) & 0x1FF) << 43) | (BinaryPrimitives.ReadUInt64BigEndian(r[8..]) >> 21);
    public static uint BlockCount(ReadOnlySpan<byte> r) => (uint)(BinaryPrimitives.ReadUInt64BigEndian(r[8..]) & 0x1FFFFF);
    public static bool IsUnwritten(ReadOnlySpan<byte> r) => (BinaryPrimitives.ReadUInt64BigEndian(r) >> 63) != 0;
}
