using System.Buffers.Binary;
using System.Runtime.CompilerServices;
using Xfbtree.Btree;

namespace Xfbtree.Xfs.Trees;

/// <summary>
/// rmapbt ("RMB3"), an overlapping tree. Record (24 bytes): startblock u32, blockcount u32, owner u64,
/// offset u64 (bit 63 attr fork, 62 bmbt block, 61 unwritten, 53..0 file offset). Key (20 bytes): startblock,
/// owner, offset with the unwritten bit cleared. Ordered by (startblock, owner, offset) as unsigned values.
/// The same ops serve the on-disk AG tree (short pointers) and the in-memory tree (long pointers).
/// </summary>
internal readonly struct RmapbtOps : IBtreeOps
{
    /// <summary>"RMB3".</summary>
    public const uint MagicValue = 0x524D4233;
    public const int RecordLength = 24;
    public const int KeyLength = 20;
    public const ulong AttrForkFlag = 1UL << 63;
    public const ulong BmbtBlockFlag = 1UL << 62;
    public const ulong UnwrittenFlag = 1UL << 61;
    public const ulong OffsetMask = (1UL << 54) - 1;
    /// <summary>Bits 60..54 must be zero.</summary>
    public const ulong ReservedOffsetBits = ((1UL << 61) - 1) & ~OffsetMask;
    /// <summary>Smallest special owner value that is legal on disk is above OWN_MIN (0xFFFFFFFFFFFFFFF6).</summary>
    public const ulong OwnMin = 0xFFFFFFFFFFFFFFF6;
    /// <summary>OWN_FS (-3), the largest legal special owner.</summary>
    public const ulong OwnFs = 0xFFFFFFFFFFFFFFFD;

    readonly bool _longPointers;
    readonly uint _agLength;

    /// <summary>Ops for the on-disk tree (<paramref name="longPointers"/> false) or an in-memory tree (true).</summary>
    /// <param name="longPointers">Long-form headers and 64-bit pointers (in-memory trees, as upstream).</param>
    /// <param name="agLength">When non-zero, records must lie inside [0, agLength).</param>
    public RmapbtOps(bool longPointers, uint agLength = 0) { _longPointers = longPointers; _agLength = agLength; }

    public string Name => _longPointers ? "in-memory rmapbt" : "rmapbt";
    public uint Magic => MagicValue;
    public bool LongPointers => _longPointers;
    public int RecordSize => RecordLength;
    public int KeySize => KeyLength;
    public bool Overlapping => true;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public int CompareKeys(ReadOnlySpan<byte> a, ReadOnlySpan<byte> b)
    {
        uint sa = BinaryPrimitives.ReadUInt32BigEndian(a), sb = BinaryPrimitives.ReadUInt32BigEndian(b);
        if (sa != sb) return sa < sb ? -1 : 1;
        ulong oa = BinaryPrimitives.ReadUInt64BigEndian(a[4..]), ob = BinaryPrimitives.ReadUInt64BigEndian(b[4..]);
        if (oa != ob) return oa < ob ? -1 : 1;
        ulong fa = BinaryPrimitives.ReadUInt64BigEndian(a[12..]), fb = BinaryPrimitives.ReadUInt64BigEndian(b[12..]);
        return fa == fb ? 0 : fa < fb ? -1 : 1;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public int CompareRecordToKey(ReadOnlySpan<byte> record, ReadOnlySpan<byte> key)
    {
        uint sa = BinaryPrimitives.ReadUInt32BigEndian(record), sb = BinaryPrimitives.ReadUInt32BigEndian(key);
        if (sa != sb) return sa < sb ? -1 : 1;
        ulong oa = BinaryPrimitives.ReadUInt64BigEndian(record[8..]), ob = BinaryPrimitives.ReadUInt64BigEndian(key[4..]);
        if (oa != ob) return oa < ob ? -1 : 1;
        ulong fa = BinaryPrimitives.ReadUInt64BigEndian(record[16..]) & ~UnwrittenFlag, fb = BinaryPrimitives.ReadUInt64BigEndian(key[12..]);
        return fa == fb ? 0 : fa < fb ? -1 : 1;
    }

    public void GetKey(ReadOnlySpan<byte> record, Span<byte> key)
    {
        BinaryPrimitives.WriteUInt32BigEndian(key, BinaryPrimitives.ReadUInt32BigEndian(record));
        BinaryPrimitives.WriteUInt64BigEndian(key[4..], BinaryPrimitives.ReadUInt64BigEndian(record[8..]));
        BinaryPrimitives.WriteUInt64BigEndian(key[12..], BinaryPrimitives.ReadUInt64BigEndian(record[16..]) & ~UnwrittenFlag);
    }

    public void GetHighKey(ReadOnlySpan<byte> record, Span<byte> key)
    {
        uint start = BinaryPrimitives.ReadUInt32BigEndian(record);
        uint len = BinaryPrimitives.ReadUInt32BigEndian(record[4..]);
        ulong owner = BinaryPrimitives.ReadUInt64BigEndian(record[8..]);
        ulong offset = BinaryPrimitives.ReadUInt64BigEndian(record[16..]) & ~UnwrittenFlag;
        uint adjust = len == 0 ? 0 : len - 1;
        BinaryPrimitives.WriteUInt32BigEndian(key, start + adjust);
        BinaryPrimitives.WriteUInt64BigEndian(key[4..], owner);
        if (!IsSpecialOwner(owner) && (offset & BmbtBlockFlag) == 0) offset += adjust;
        BinaryPrimitives.WriteUInt64BigEndian(key[12..], offset);
    }

    public bool RecordsInOrder(ReadOnlySpan<byte> previous, ReadOnlySpan<byte> next)
    {
        Span<byte> k = stackalloc byte[KeyLength];
        GetKey(next, k);
        return CompareRecordToKey(previous, k) < 0;
    }

    public string? ValidateRecord(ReadOnlySpan<byte> record)
    {
        var r = RmapRecord.Read(record);
        if (r.BlockCount == 0) return "zero length";
        if ((ulong)r.StartBlock + r.BlockCount > (_agLength == 0 ? 1UL << 32 : _agLength)) return "extent past the end of the AG";
        if ((r.RawOffset & ReservedOffsetBits) != 0) return "reserved offset bits set";
        if (IsSpecialOwner(r.Owner))
        {
            if (r.Owner <= OwnMin || r.Owner > OwnFs) return $"invalid special owner {(long)r.Owner}";
            if (r.RawOffset != 0) return "special owner with flags or offset";
        }
        else if ((r.RawOffset & BmbtBlockFlag) != 0)
        {
            if ((r.RawOffset & (OffsetMask | UnwrittenFlag)) != 0) return "bmbt block record with offset or unwritten flag";
        }
        else if ((r.RawOffset & OffsetMask) + r.BlockCount > OffsetMask + 1)
        {
            // The high key adds the length to the offset: past 2^54 it would carry into the flag bits.
            return "file range past the largest file offset";
        }
        return null;
    }

    /// <summary>Owners with bit 63 set are special (OWN_FS, OWN_AG, ...).</summary>
    public static bool IsSpecialOwner(ulong owner) => (owner & (1UL << 63)) != 0;
}

/// <summary>A decoded rmap record (for callers and tests; the engine compares raw bytes).</summary>
public readonly record struct RmapRecord(uint StartBlock, uint BlockCount, ulong Owner, ulong RawOffset)
{
    /// <summary>Logical offset (bits 53..0).</summary>
    public ulong Offset => RawOffset & RmapbtOps.OffsetMask;
    /// <summary>The mapping is of the owner's attribute fork (not its data fork).</summary>
    public bool IsAttrFork => (RawOffset & RmapbtOps.AttrForkFlag) != 0;
    /// <summary>The mapping is a block of the owner's bmbt (block map btree), not file data.</summary>
    public bool IsBmbtBlock => (RawOffset & RmapbtOps.BmbtBlockFlag) != 0;
    /// <summary>The extent is allocated but unwritten (reads as zeros).</summary>
    public bool IsUnwritten => (RawOffset & RmapbtOps.UnwrittenFlag) != 0;

    internal static RmapRecord Read(ReadOnlySpan<byte> r) => new(
        BinaryPrimitives.ReadUInt32BigEndian(r), BinaryPrimitives.ReadUInt32BigEndian(r[4..]),
        BinaryPrimitives.ReadUInt64BigEndian(r[8..]), BinaryPrimitives.ReadUInt64BigEndian(r[16..]));

    internal void Write(Span<byte> r)
    {
        BinaryPrimitives.WriteUInt32BigEndian(r, StartBlock);
        BinaryPrimitives.WriteUInt32BigEndian(r[4..], BlockCount);
        BinaryPrimitives.WriteUInt64BigEndian(r[8..], Owner);
        BinaryPrimitives.WriteUInt64BigEndian(r[16..], RawOffset);
    }

    /// <summary>Writes the 20-byte low key (unwritten bit cleared).</summary>
    public void WriteKey(Span<byte> key)
    {
        BinaryPrimitives.WriteUInt32BigEndian(key, StartBlock);
        BinaryPrimitives.WriteUInt64BigEndian(key[4..], Owner);
        BinaryPrimitives.WriteUInt64BigEndian(key[12..], RawOffset & ~RmapbtOps.UnwrittenFlag);
    }

    /// <summary>Writes a 20-byte key from its parts.</summary>
    public static void WriteKey(Span<byte> key, uint startBlock, ulong owner, ulong offsetWithFlags)
    {
        BinaryPrimitives.WriteUInt32BigEndian(key, startBlock);
        BinaryPrimitives.WriteUInt64BigEndian(key[4..], owner);
        BinaryPrimitives.WriteUInt64BigEndian(key[12..], offsetWithFlags & ~RmapbtOps.UnwrittenFlag);
    }
}
