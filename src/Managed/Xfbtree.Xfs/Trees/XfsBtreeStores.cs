using Xfbtree.Btree;
using Xfbtree.Buffers;

namespace Xfbtree.Xfs.Trees;

/// <summary>
/// Blocks of a per-AG tree: pointers are agbnos, daddr = (agno * agblocks + agbno) * (bs / 512).
/// Valid pointers are 1..agLength-1 (block 0 holds the AG headers). Allocation is delegated to the caller
/// (free-space trees, a reservation list, or a repair's block pool).
/// </summary>
internal sealed class AgBtreeBlockStore : CachedBtreeBlockStore
{
    public AgBtreeBlockStore(BufferCache cache, BufferTarget target, int blockSize, uint agNumber, uint agBlocks, uint agLength)
        : base(cache, target, blockSize)
    {
        AgNumber = agNumber;
        AgBlocks = agBlocks;
        AgLength = agLength;
    }

    public uint AgNumber { get; }
    /// <summary>sb_agblocks.</summary>
    public uint AgBlocks { get; }
    /// <summary>This AG's length (shorter for the last AG).</summary>
    public uint AgLength { get; }
    /// <summary>Block allocator used by splits and new roots.</summary>
    public Func<long>? Allocator { get; set; }
    /// <summary>Receives blocks freed by joins and root collapses.</summary>
    public Action<long>? Freer { get; set; }

    public override long PointerToDaddr(long pointer) => ((long)AgNumber * AgBlocks + pointer) * (BlockSize / 512);
    public override bool IsValidPointer(long pointer) => pointer >= 1 && pointer < AgLength;
    public override long AllocateBlock() => Allocator is { } a ? a() : base.AllocateBlock();
    public override void FreeBlock(long pointer) { if (Freer is { } f) f(pointer); else base.FreeBlock(pointer); }
}

/// <summary>
/// Blocks addressed by fsbno (bmbt): agno = fsbno >> agblklog, agbno = the low agblklog bits;
/// byte offset = (agno * agblocks + agbno) * bs. fsbno space has holes when agblocks is not a power of two.
/// </summary>
internal sealed class FsBtreeBlockStore : CachedBtreeBlockStore
{
    public FsBtreeBlockStore(BufferCache cache, BufferTarget target, int blockSize, uint agBlocks, int agBlockLog, uint agCount, long dataBlocks)
        : base(cache, target, blockSize)
    {
        AgBlocks = agBlocks;
        AgBlockLog = agBlockLog;
        AgCount = agCount;
        DataBlocks = dataBlocks;
    }

    public uint AgBlocks { get; }
    public int AgBlockLog { get; }
    public uint AgCount { get; }
    public long DataBlocks { get; }
    /// <summary>Block allocator used by splits and new roots (the write engine's bmbt stores).</summary>
    public Func<long>? Allocator { get; set; }
    /// <summary>Receives blocks freed by joins and root collapses.</summary>
    public Action<long>? Freer { get; set; }
    public override long AllocateBlock() => Allocator is { } a ? a() : base.AllocateBlock();
    public override void FreeBlock(long pointer) { if (Freer is { } f) f(pointer); else base.FreeBlock(pointer); }

    long Linear(long fsbno) => (fsbno >> AgBlockLog) * AgBlocks + (fsbno & ((1L << AgBlockLog) - 1));
    public override long PointerToDaddr(long pointer) => Linear(pointer) * (BlockSize / 512);
    public override bool IsValidPointer(long pointer)
    {
        if (pointer < 0) return false;
        long agno = pointer >> AgBlockLog, agbno = pointer & ((1L << AgBlockLog) - 1);
        return agno < AgCount && agbno >= 1 && agbno < AgBlocks && Linear(pointer) < DataBlocks;
    }
}
