using System.Buffers.Binary;
using Xfbtree.Btree;
using Xfbtree.Buffers;

namespace Xfbtree.Tests.Btree;

/// <summary>
/// Test-only block store: pinned arrays per block, a free list, hold accounting (leaks and double holds
/// fail the test), and optionally "disk" behaviour: blocks are copied out on release and re-verified on every
/// read, so a stale view or a missed MarkDirty shows up.
/// </summary>
internal sealed unsafe class BtreeTestStore : BtreeBlockStore
{
    readonly List<byte[]?> _blocks = new() { null }; // pointer 0 is never a block
    readonly Dictionary<long, int> _holds = new();
    readonly Stack<long> _free = new();
    readonly HashSet<long> _dirty = new();

    public BtreeTestStore(int blockSize, bool exclusiveHolds = true) { BlockSize = blockSize; ExclusiveHolds = exclusiveHolds; }

    public override int BlockSize { get; }
    public bool ExclusiveHolds { get; }
    public override bool ChecksCrc => false;
    public long Reads { get; private set; }
    public int LiveBlocks => _blocks.Count - 1 - _free.Count;
    public int HeldBlocks => _holds.Count;

    public override long PointerToDaddr(long pointer) => pointer * (BlockSize / 512);
    public override bool IsValidPointer(long pointer) => pointer >= 1 && pointer < _blocks.Count && _blocks[(int)pointer] != null;

    BtreeBlockRef Hold(long pointer)
    {
        if (_holds.TryGetValue(pointer, out int h))
        {
            if (ExclusiveHolds) throw new InvalidOperationException($"block {pointer} held twice (would deadlock an exclusive cache)");
            _holds[pointer] = h + 1;
        }
        else _holds[pointer] = 1;
        fixed (byte* p = _blocks[(int)pointer]) return new BtreeBlockRef(pointer, p, pointer);
    }

    public override BtreeBlockRef Read(long pointer, BtreeBlockVerifier verifier)
    {
        if (!IsValidPointer(pointer)) throw new InvalidOperationException($"engine read invalid pointer {pointer}");
        Reads++;
        if (!_holds.ContainsKey(pointer)) verifier.Verify(_blocks[(int)pointer], PointerToDaddr(pointer));
        return Hold(pointer);
    }

    public override BtreeBlockRef GetNew(long pointer, BtreeBlockVerifier verifier)
    {
        if (!IsValidPointer(pointer)) throw new InvalidOperationException($"GetNew of unallocated pointer {pointer}");
        return Hold(pointer);
    }

    public override void Release(in BtreeBlockRef block)
    {
        long p = block.Pointer;
        if (!_holds.TryGetValue(p, out int h)) throw new InvalidOperationException($"release of unheld block {p}");
        if (h == 1) _holds.Remove(p); else _holds[p] = h - 1;
    }

    public override void MarkDirty(in BtreeBlockRef block)
    {
        if (!_holds.ContainsKey(block.Pointer)) throw new InvalidOperationException("dirtying an unheld block");
        _dirty.Add(block.Pointer);
    }

    public override void MarkStale(in BtreeBlockRef block)
    {
        if (!_holds.ContainsKey(block.Pointer)) throw new InvalidOperationException("staling an unheld block");
    }

    public override long AllocateBlock()
    {
        if (_free.Count > 0)
        {
            long p = _free.Pop();
            _blocks[(int)p] = GC.AllocateArray<byte>(BlockSize, pinned: true);
            return p;
        }
        _blocks.Add(GC.AllocateArray<byte>(BlockSize, pinned: true));
        return _blocks.Count - 1;
    }

    public override void FreeBlock(long pointer)
    {
        if (!IsValidPointer(pointer)) throw new InvalidOperationException($"free of invalid block {pointer}");
        if (_holds.ContainsKey(pointer)) throw new InvalidOperationException($"free of held block {pointer}");
        _blocks[(int)pointer] = null;
        _free.Push(pointer);
    }

    /// <summary>Raw block bytes (tests corrupt them).</summary>
    public byte[] RawBlock(long pointer) => _blocks[(int)pointer]!;

    public void AssertNoHolds()
    {
        if (_holds.Count != 0) throw new InvalidOperationException($"blocks still held: {string.Join(",", _holds.Keys)}");
    }
}

/// <summary>Non-overlapping test ops: record = key u64 + value u64, key = u64.</summary>
internal readonly struct U64Ops : IBtreeOps
{
    readonly bool _long;
    public U64Ops(bool longPointers) => _long = longPointers;
    public string Name => "u64 test tree";
    public uint Magic => 0x54535431;
    public bool LongPointers => _long;
    public int RecordSize => 16;
    public int KeySize => 8;
    public bool Overlapping => false;
    public int CompareKeys(ReadOnlySpan<byte> a, ReadOnlySpan<byte> b) => BinaryPrimitives.ReadUInt64BigEndian(a).CompareTo(BinaryPrimitives.ReadUInt64BigEndian(b));
    public int CompareRecordToKey(ReadOnlySpan<byte> record, ReadOnlySpan<byte> key) => CompareKeys(record, key);
    public void GetKey(ReadOnlySpan<byte> record, Span<byte> key) => record[..8].CopyTo(key);
    public void GetHighKey(ReadOnlySpan<byte> record, Span<byte> key) => record[..8].CopyTo(key);
    public bool RecordsInOrder(ReadOnlySpan<byte> previous, ReadOnlySpan<byte> next) => CompareKeys(previous, next) < 0;
    public string? ValidateRecord(ReadOnlySpan<byte> record) => BinaryPrimitives.ReadUInt64BigEndian(record[8..]) == ulong.MaxValue ? "poison value" : null;

    public static byte[] Record(ulong key, ulong value)
    {
        var r = new byte[16];
        BinaryPrimitives.WriteUInt64BigEndian(r, key);
        BinaryPrimitives.WriteUInt64BigEndian(r.AsSpan(8), value);
        return r;
    }
    public static byte[] Key(ulong key) { var k = new byte[8]; BinaryPrimitives.WriteUInt64BigEndian(k, key); return k; }
}

/// <summary>
/// Overlapping test ops (rmap-like intervals): record = start u32, len u32, owner u64; key = start u32 + owner u64;
/// high key = (start + len - 1, owner). Ordered by (start, owner).
/// </summary>
internal readonly struct IntervalOps : IBtreeOps
{
    readonly bool _long;
    public IntervalOps(bool longPointers) => _long = longPointers;
    public string Name => "interval test tree";
    public uint Magic => 0x54535432;
    public bool LongPointers => _long;
    public int RecordSize => 16;
    public int KeySize => 12;
    public bool Overlapping => true;
    public int CompareKeys(ReadOnlySpan<byte> a, ReadOnlySpan<byte> b)
    {
        int c = BinaryPrimitives.ReadUInt32BigEndian(a).CompareTo(BinaryPrimitives.ReadUInt32BigEndian(b));
        return c != 0 ? c : BinaryPrimitives.ReadUInt64BigEndian(a[4..]).CompareTo(BinaryPrimitives.ReadUInt64BigEndian(b[4..]));
    }
    public int CompareRecordToKey(ReadOnlySpan<byte> record, ReadOnlySpan<byte> key)
    {
        int c = BinaryPrimitives.ReadUInt32BigEndian(record).CompareTo(BinaryPrimitives.ReadUInt32BigEndian(key));
        return c != 0 ? c : BinaryPrimitives.ReadUInt64BigEndian(record[8..]).CompareTo(BinaryPrimitives.ReadUInt64BigEndian(key[4..]));
    }
    public void GetKey(ReadOnlySpan<byte> record, Span<byte> key)
    {
        record[..4].CopyTo(key);
        record.Slice(8, 8).CopyTo(key[4..]);
    }
    public void GetHighKey(ReadOnlySpan<byte> record, Span<byte> key)
    {
        uint len = BinaryPrimitives.ReadUInt32BigEndian(record[4..]);
        BinaryPrimitives.WriteUInt32BigEndian(key, BinaryPrimitives.ReadUInt32BigEndian(record) + len - 1);
        record.Slice(8, 8).CopyTo(key[4..]);
    }
    public bool RecordsInOrder(ReadOnlySpan<byte> previous, ReadOnlySpan<byte> next)
    {
        Span<byte> k = stackalloc byte[12];
        GetKey(next, k);
        return CompareRecordToKey(previous, k) < 0;
    }
    public string? ValidateRecord(ReadOnlySpan<byte> record) => BinaryPrimitives.ReadUInt32BigEndian(record[4..]) == 0 ? "zero length" : null;

    public static byte[] Record(uint start, uint len, ulong owner)
    {
        var r = new byte[16];
        BinaryPrimitives.WriteUInt32BigEndian(r, start);
        BinaryPrimitives.WriteUInt32BigEndian(r.AsSpan(4), len);
        BinaryPrimitives.WriteUInt64BigEndian(r.AsSpan(8), owner);
        return r;
    }
    public static byte[] Key(uint start, ulong owner)
    {
        var k = new byte[12];
        BinaryPrimitives.WriteUInt32BigEndian(k, start);
        BinaryPrimitives.WriteUInt64BigEndian(k.AsSpan(4), owner);
        return k;
    }
    public static (uint Start, uint Len, ulong Owner) Decode(ReadOnlySpan<byte> r)
        => (BinaryPrimitives.ReadUInt32BigEndian(r), BinaryPrimitives.ReadUInt32BigEndian(r[4..]), BinaryPrimitives.ReadUInt64BigEndian(r[8..]));
}

/// <summary>Collects visited records.</summary>
internal struct CollectVisitor : IBtreeRecordVisitor
{
    public List<byte[]> Records;
    public bool Visit(ReadOnlySpan<byte> record) { (Records ??= new()).Add(record.ToArray()); return true; }
}

internal static class BtreeTestTrees
{
    public static readonly byte[] Uuid = Enumerable.Range(1, 16).Select(i => (byte)i).ToArray();

    public static (Btree<TOps> Tree, BtreeTestStore Store) NewTree<TOps>(TOps ops, int blockSize) where TOps : struct, IBtreeOps
    {
        var store = new BtreeTestStore(blockSize);
        var tree = new Btree<TOps>(ops, store, new BtreeRootValue(BtreeHeader.NullPointer, 1), Uuid, owner: 7);
        tree.CreateEmpty();
        return (tree, store);
    }
}
