using System.Buffers.Binary;

namespace Xfbtree.Btree;

/// <summary>
/// Field access for the v5 btree block header, short (56 bytes, 32-bit AG-relative pointers) or long
/// (72 bytes, 64-bit pointers). Null sibling pointers are returned as -1 in both forms.
/// </summary>
public static class BtreeHeader
{
    /// <summary>NULLAGBLOCK / NULLFSBLOCK as the engine sees it.</summary>
    public const long NullPointer = -1;

    /// <summary>The block's magic number.</summary>
    public static uint Magic(ReadOnlySpan<byte> b) => BinaryPrimitives.ReadUInt32BigEndian(b);
    /// <summary>The block's level (0 for a leaf).</summary>
    public static int Level(ReadOnlySpan<byte> b) => BinaryPrimitives.ReadUInt16BigEndian(b[4..]);
    /// <summary>The number of records (leaf) or entries (node) in the block.</summary>
    public static int NumRecords(ReadOnlySpan<byte> b) => BinaryPrimitives.ReadUInt16BigEndian(b[6..]);
    /// <summary>Sets the number of records or entries.</summary>
    public static void SetNumRecords(Span<byte> b, int n) => BinaryPrimitives.WriteUInt16BigEndian(b[6..], checked((ushort)n));
    /// <summary>Sets the block's level.</summary>
    public static void SetLevel(Span<byte> b, int level) => BinaryPrimitives.WriteUInt16BigEndian(b[4..], checked((ushort)level));

    /// <summary>The left sibling pointer (<see cref="NullPointer"/> at the left end).</summary>
    public static long LeftSibling(ReadOnlySpan<byte> b, bool longForm) => longForm ? ReadLong(b[8..]) : ReadShort(b[8..]);
    /// <summary>The right sibling pointer (<see cref="NullPointer"/> at the right end).</summary>
    public static long RightSibling(ReadOnlySpan<byte> b, bool longForm) => longForm ? ReadLong(b[16..]) : ReadShort(b[12..]);
    /// <summary>Sets the left sibling pointer.</summary>
    public static void SetLeftSibling(Span<byte> b, bool longForm, long ptr) { if (longForm) WriteLong(b[8..], ptr); else WriteShort(b[8..], ptr); }
    /// <summary>Sets the right sibling pointer.</summary>
    public static void SetRightSibling(Span<byte> b, bool longForm, long ptr) { if (longForm) WriteLong(b[16..], ptr); else WriteShort(b[12..], ptr); }
    /// <summary>The block's own disk address (daddr) as its header records it.</summary>
    public static long BlockNumber(ReadOnlySpan<byte> b, bool longForm) => BinaryPrimitives.ReadInt64BigEndian(b[(longForm ? 24 : 16)..]);
    /// <summary>The metadata UUID in the header.</summary>
    public static ReadOnlySpan<byte> Uuid(ReadOnlySpan<byte> b, bool longForm) => b.Slice(longForm ? 40 : 32, 16);
    /// <summary>The owner in the header (AG number short form, inode number long form).</summary>
    public static long Owner(ReadOnlySpan<byte> b, bool longForm)
        => longForm ? BinaryPrimitives.ReadInt64BigEndian(b[56..]) : BinaryPrimitives.ReadUInt32BigEndian(b[48..]);
    /// <summary>Offset of the CRC field (52 short form, 64 long form).</summary>
    public static int CrcOffset(bool longForm) => longForm ? 64 : 52;

    /// <summary>Formats an empty block: magic, level, zero records, null siblings, blkno, zero lsn, uuid, owner, zero crc/pad.</summary>
    public static void Initialize(Span<byte> b, bool longForm, uint magic, int level, long daddr, ReadOnlySpan<byte> uuid, long owner)
    {
        b.Clear();
        BinaryPrimitives.WriteUInt32BigEndian(b, magic);
        SetLevel(b, level);
        SetLeftSibling(b, longForm, NullPointer);
        SetRightSibling(b, longForm, NullPointer);
        BinaryPrimitives.WriteInt64BigEndian(b[(longForm ? 24 : 16)..], daddr);
        uuid.CopyTo(b.Slice(longForm ? 40 : 32, 16));
        if (longForm) BinaryPrimitives.WriteInt64BigEndian(b[56..], owner);
        else BinaryPrimitives.WriteUInt32BigEndian(b[48..], checked((uint)owner));
    }

    /// <summary>Reads a child pointer (short: u32 agbno, long: u64), mapping the null value to -1.</summary>
    public static long ReadPointer(ReadOnlySpan<byte> at, bool longForm) => longForm ? ReadLong(at) : ReadShort(at);
    /// <summary>Writes a child pointer.</summary>
    public static void WritePointer(Span<byte> at, bool longForm, long ptr) { if (longForm) WriteLong(at, ptr); else WriteShort(at, ptr); }

    static long ReadShort(ReadOnlySpan<byte> s) { uint v = BinaryPrimitives.ReadUInt32BigEndian(s); return v == uint.MaxValue ? NullPointer : v; }
    // Other values with the top bit set come back negative and fail IsValidPointer.
    static long ReadLong(ReadOnlySpan<byte> s) => BinaryPrimitives.ReadInt64BigEndian(s);
    static void WriteShort(Span<byte> s, long p) => BinaryPrimitives.WriteUInt32BigEndian(s, p == NullPointer ? uint.MaxValue : checked((uint)p));
    static void WriteLong(Span<byte> s, long p) => BinaryPrimitives.WriteUInt64BigEndian(s, p == NullPointer ? ulong.MaxValue : (ulong)p);
}
