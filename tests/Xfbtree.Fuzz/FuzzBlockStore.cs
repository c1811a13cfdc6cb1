using Xfbtree.Btree;

namespace Xfbtree.Fuzz;

/// <summary>
/// A strict in-memory block store for the btree target: blocks are pinned arrays numbered from 1 (0 is never a
/// block), like an AG whose block 0 holds the headers. The engine's contract is checked on every call and a breach
/// is a <see cref="FuzzFindingException"/> (a finding), not a corruption report: reading a pointer the engine did not
/// range-check first, holding one block twice (a deadlock under an exclusive buffer cache), releasing or dirtying
/// an unheld block, freeing a held block, and holds left behind after a cursor is disposed.
/// </summary>
internal sealed unsafe class FuzzBlockStore : BtreeBlockStore
{
    /// <summary>Blocks the engine may allocate on top of the input's (mutation phase); more means a runaway split.</summary>
    public const int MaxAllocatedBlocks = 1 << 16;
    readonly List<byte[]?> _blocks = new() { null };
    readonly Dictionary<long, int> _holds = new();
    readonly Stack<long> _free = new();
    readonly int _initialBlocks;

    public FuzzBlockStore(int blockSize, IReadOnlyList<byte[]> blocks)
    {
        BlockSize = blockSize;
        foreach (var b in blocks)
        {
            if (b.Length != blockSize) throw new ArgumentException("block of the wrong size", nameof(blocks));
            var pinned = GC.AllocateArray<byte>(blockSize, pinned: true);
            b.CopyTo(pinned, 0);
            _blocks.Add(pinned);
        }
        _initialBlocks = blocks.Count;
    }

    public override int BlockSize { get; }
    public override bool ChecksCrc => false;
    /// <summary>Blocks ever created (input blocks plus allocations).</summary>
    public int BlockSlots => _blocks.Count - 1;
    /// <summary>Reads done (verifier runs).</summary>
    public long Reads { get; private set; }

    public override long PointerToDaddr(long pointer) => pointer * (BlockSize / 512);
    public override bool IsValidPointer(long pointer) => pointer >= 1 && pointer < _blocks.Count && _blocks[(int)pointer] != null;

    /// <summary>The bytes of a block (null when freed or out of range); for the harness's own reference walk.</summary>
    public byte[]? Raw(long pointer) => pointer >= 1 && pointer < _blocks.Count ? _blocks[(int)pointer] : null;

    BtreeBlockRef Hold(long pointer)
    {
        if (_holds.ContainsKey(pointer)) throw new FuzzFindingException($"block {pointer} held twice (would deadlock an exclusive buffer cache)");
        _holds[pointer] = 1;
        fixed (byte* p = _blocks[(int)pointer]) return new BtreeBlockRef(this, p, pointer);
    }

    public override BtreeBlockRef Read(long pointer, BtreeBlockVerifier verifier)
    {
        if (!IsValidPointer(pointer)) throw new FuzzFindingException($"engine read pointer {pointer} without range-checking it");
        Reads++;
        verifier.Verify(_blocks[(int)pointer], PointerToDaddr(pointer));
        return Hold(pointer);
    }

    public override BtreeBlockRef GetNew(long pointer, BtreeBlockVerifier verifier)
    {
        if (!IsValidPointer(pointer)) throw new FuzzFindingException($"GetNew of unallocated pointer {pointer}");
        return Hold(pointer);
    }

    public override void Release(in BtreeBlockRef block)
    {
        if (!ReferenceEquals(block.Handle, this)) throw new FuzzFindingException("release of a block this store did not hand out");
        if (!_holds.Remove(block.Pointer)) throw new FuzzFindingException($"release of unheld block {block.Pointer}");
    }

    public override void MarkDirty(in BtreeBlockRef block)
    {
        if (!_holds.ContainsKey(block.Pointer)) throw new FuzzFindingException($"dirtying unheld block {block.Pointer}");
    }

    public override void MarkStale(in BtreeBlockRef block)
    {
        if (!_holds.ContainsKey(block.Pointer)) throw new FuzzFindingException($"staling unheld block {block.Pointer}");
    }

    public override long AllocateBlock()
    {
        if (_free.Count > 0)
        {
            long p = _free.Pop();
            _blocks[(int)p] = GC.AllocateArray<byte>(BlockSize, pinned: true);
            return p;
        }
        if (_blocks.Count - 1 - _initialBlocks >= MaxAllocatedBlocks) throw new FuzzFindingException($"more than {MaxAllocatedBlocks} blocks allocated: runaway splits");
        _blocks.Add(GC.AllocateArray<byte>(BlockSize, pinned: true));
        return _blocks.Count - 1;
    }

    public override void FreeBlock(long pointer)
    {
        if (!IsValidPointer(pointer)) throw new FuzzFindingException($"free of invalid block {pointer}");
        if (_holds.ContainsKey(pointer)) throw new FuzzFindingException($"free of held block {pointer}");
        _blocks[(int)pointer] = null;
        _free.Push(pointer);
    }

    /// <summary>Fails when any block is still held (called after a cursor is released or disposed).</summary>
    public void AssertNoHolds(string after)
    {
        if (_holds.Count != 0) throw new FuzzFindingException($"{_holds.Count} block(s) still held after {after}: {string.Join(",", _holds.Keys)}");
    }
}
