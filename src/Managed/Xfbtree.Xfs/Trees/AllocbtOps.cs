using System.Buffers.Binary;
using Xfbtree.Btree;

namespace Xfbtree.Xfs.Trees;

/// <summary>
/// bnobt ("AB3B"): free extents by start block. Record and key: startblock u32, blockcount u32; ordered by
/// startblock; the high key is the last free block.
/// </summary>
internal readonly struct BnobtOps : IBtreeOps
{
    public const uint MagicValue = 0x41423342;
    readonly uint _agLength;
    /// <param name="agLength">When non-zero, extents must lie inside the AG.</param>
    public BnobtOps(uint agLength) => _agLength = agLength;
    public string Name => "bnobt";
    public uint Magic => MagicValue;
    public bool LongPointers => false;
    public int RecordSize => 8;
    public int KeySize => 8;
    public bool Overlapping => false;
    public int CompareKeys(ReadOnlySpan<byte> a, ReadOnlySpan<byte> b)
        => BinaryPrimitives.ReadUInt32BigEndian(a).CompareTo(BinaryPrimitives.ReadUInt32BigEndian(b));
    public int CompareRecordToKey(ReadOnlySpan<byte> record, ReadOnlySpan<byte> key) => CompareKeys(record, key);
    public void GetKey(ReadOnlySpan<byte> record, Span<byte> key) => record[..8].CopyTo(key);
    public void GetHighKey(ReadOnlySpan<byte> record, Span<byte> key)
    {
        uint len = BinaryPrimitives.ReadUInt32BigEndian(record[4..]);
        BinaryPrimitives.WriteUInt32BigEndian(key, BinaryPrimitives.ReadUInt32BigEndian(record) + (len == 0 ? 0 : len - 1));
        BinaryPrimitives.WriteUInt32BigEndian(key[4..], len);
    }
    public bool RecordsInOrder(ReadOnlySpan<byte> previous, ReadOnlySpan<byte> next)
        => (ulong)BinaryPrimitives.ReadUInt32BigEndian(previous) + BinaryPrimitives.ReadUInt32BigEndian(previous[4..]) <= BinaryPrimitives.ReadUInt32BigEndian(next);
    public string? ValidateRecord(ReadOnlySpan<byte> record) => AllocRecord.Validate(record, _agLength);
}

/// <summary>
/// cntbt ("AB3C"): free extents by size. Same record and key bytes as the bnobt, ordered by
/// (blockcount, startblock).
/// </summary>
internal readonly struct CntbtOps : IBtreeOps
{
    public const uint MagicValue = 0x41423343;
    readonly uint _agLength;
    public CntbtOps(uint agLength) => _agLength = agLength;
    public string Name => "cntbt";
    public uint Magic => MagicValue;
    public bool LongPointers => false;
    public int RecordSize => 8;
    public int KeySize => 8;
    public bool Overlapping => false;
    public int CompareKeys(ReadOnlySpan<byte> a, ReadOnlySpan<byte> b)
    {
        int c = BinaryPrimitives.ReadUInt32BigEndian(a[4..]).CompareTo(BinaryPrimitives.ReadUInt32BigEndian(b[4..]));
        return c != 0 ? c : BinaryPrimitives.ReadUInt32BigEndian(a).CompareTo(BinaryPrimitives.ReadUInt32BigEndian(b));
    }
    public int CompareRecordToKey(ReadOnlySpan<byte> record, ReadOnlySpan<byte> key) => CompareKeys(record, key);
    public void GetKey(ReadOnlySpan<byte> record, Span<byte> key) => record[..8].CopyTo(key);
    public void GetHighKey(ReadOnlySpan<byte> record, Span<byte> key) => record[..8].CopyTo(key);
    public bool RecordsInOrder(ReadOnlySpan<byte> previous, ReadOnlySpan<byte> next) => CompareKeys(previous, next) < 0;
    public string? ValidateRecord(ReadOnlySpan<byte> record) => AllocRecord.Validate(record, _agLength);
}

/// <summary>Free-space record helpers.</summary>
internal static class AllocRecord
{
    public static uint StartBlock(ReadOnlySpan<byte> r) => BinaryPrimitives.ReadUInt32BigEndian(r);
    public static uint BlockCount(ReadOnlySpan<byte> r) => BinaryPrimitives.ReadUInt32BigEndian(r[4..]);
    public static void Write(Span<byte> r, uint start, uint count)
    {
        BinaryPrimitives.WriteUInt32BigEndian(r, start);
        BinaryPrimitives.WriteUInt32BigEndian(r[4..], count);
    }
    internal static string? Validate(ReadOnlySpan<byte> record, uint agLength)
    {
        uint len = BlockCount(record);
        if (len == 0) return "zero length";
        // Without a known AG length the extent must at least not wrap the 32-bit block space (its high key would).
        if ((ulong)StartBlock(record) + len > (agLength != 0 ? agLength : 1UL << 32)) return "extent past the end of the AG";
        return null;
    }
}
