using System.Buffers.Binary;
using System.Numerics;
using Microsoft.Win32.SafeHandles;
using Xfbtree.Btree;
using Xfbtree.Buffers;

namespace Xfbtree.Tests.Btree;

/// <summary>
/// Test-only disk-image target: blocks live in a sparse temp file and are read with pread (then CRC32C- and
/// structure-verified) and written back with pwrite (CRC recomputed) when the last hold on a dirty block is
/// released, so every step of a model run goes through the on-disk byte format. Stands in for the shared
/// DiskBufferTarget + BufferCache until those land.
/// </summary>
internal sealed unsafe class BtreeImageFileStore : BtreeBlockStore, IDisposable
{
    readonly SafeFileHandle _file;
    readonly Dictionary<long, (byte[] Data, int Holds, bool Dirty, BtreeBlockVerifier V)> _held = new();
    readonly SortedSet<long> _free = new();
    readonly HashSet<long> _allocated = new();
    long _next = 1;

    public BtreeImageFileStore(int blockSize)
    {
        BlockSize = blockSize;
        string path = Path.Combine(Path.GetTempPath(), $"xfbtree-btree-{Guid.NewGuid():N}.img");
        _file = File.OpenHandle(path, FileMode.CreateNew, FileAccess.ReadWrite, FileShare.None, FileOptions.DeleteOnClose);
    }

    public override int BlockSize { get; }
    public override bool ChecksCrc => false; // CRC32C is checked here (test implementation) until the shared XfsCrc lands
    public int LiveBlocks => _allocated.Count;
    public override long PointerToDaddr(long pointer) => pointer * (BlockSize / 512);
    public override bool IsValidPointer(long pointer) => _allocated.Contains(pointer);

    public override BtreeBlockRef Read(long pointer, BtreeBlockVerifier verifier)
    {
        if (!_allocated.Contains(pointer)) throw new InvalidOperationException($"engine read unallocated block {pointer}");
        if (!_held.TryGetValue(pointer, out var e))
        {
            var data = GC.AllocateArray<byte>(BlockSize, pinned: true);
            RandomAccess.Read(_file, data, pointer * BlockSize);
            int crcOff = verifier.Geometry.CrcOffset;
            if (BinaryPrimitives.ReadUInt32LittleEndian(data.AsSpan(crcOff)) != Crc(data, crcOff))
                throw new CorruptionException(verifier.Name, PointerToDaddr(pointer), "bad CRC");
            verifier.Verify(data, PointerToDaddr(pointer));
            e = (data, 0, false, verifier);
        }
        else throw new InvalidOperationException($"block {pointer} held twice (would deadlock an exclusive cache)");
        _held[pointer] = (e.Data, 1, false, verifier);
        fixed (byte* p = e.Data) return new BtreeBlockRef(null, p, pointer);
    }

    public override BtreeBlockRef GetNew(long pointer, BtreeBlockVerifier verifier)
    {
        if (_held.ContainsKey(pointer)) throw new InvalidOperationException($"block {pointer} held twice");
        var data = GC.AllocateArray<byte>(BlockSize, pinned: true);
        _held[pointer] = (data, 1, true, verifier);
        fixed (byte* p = data) return new BtreeBlockRef(null, p, pointer);
    }

    public override void Release(in BtreeBlockRef block)
    {
        var e = _held[block.Pointer];
        _held.Remove(block.Pointer);
        if (!e.Dirty) return;
        int crcOff = e.V.Geometry.CrcOffset;
        BinaryPrimitives.WriteUInt32LittleEndian(e.Data.AsSpan(crcOff), Crc(e.Data, crcOff));
        e.V.Verify(e.Data, PointerToDaddr(block.Pointer));
        RandomAccess.Write(_file, e.Data, block.Pointer * BlockSize);
    }

    public override void MarkDirty(in BtreeBlockRef block)
    {
        var e = _held[block.Pointer];
        _held[block.Pointer] = (e.Data, e.Holds, true, e.V);
    }

    public override void MarkStale(in BtreeBlockRef block)
    {
        var e = _held[block.Pointer];
        _held[block.Pointer] = (e.Data, e.Holds, false, e.V);
    }

    public override long AllocateBlock()
    {
        long b;
        if (_free.Count > 0) { b = _free.Min; _free.Remove(b); }
        else b = _next++;
        _allocated.Add(b);
        return b;
    }

    public override void FreeBlock(long pointer)
    {
        if (_held.ContainsKey(pointer)) throw new InvalidOperationException($"freeing held block {pointer}");
        if (!_allocated.Remove(pointer)) throw new InvalidOperationException($"double free of {pointer}");
        RandomAccess.Write(_file, new byte[BlockSize], pointer * BlockSize);
        _free.Add(pointer);
    }

    public void AssertNoHolds()
    {
        if (_held.Count != 0) throw new InvalidOperationException($"blocks still held: {string.Join(",", _held.Keys)}");
    }

    public void Dispose() => _file.Dispose();

    static uint Crc(ReadOnlySpan<byte> d, int crcOffset)
    {
        uint crc = Update(~0u, d[..crcOffset]);
        crc = BitOperations.Crc32C(crc, 0u);
        return ~Update(crc, d[(crcOffset + 4)..]);
    }

    static uint Update(uint crc, ReadOnlySpan<byte> d)
    {
        int i = 0;
        for (; i + 8 <= d.Length; i += 8) crc = BitOperations.Crc32C(crc, BinaryPrimitives.ReadUInt64LittleEndian(d[i..]));
        for (; i < d.Length; i++) crc = BitOperations.Crc32C(crc, d[i]);
        return crc;
    }
}
