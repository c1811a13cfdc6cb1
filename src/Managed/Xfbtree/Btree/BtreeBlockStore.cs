using Xfbtree.Buffers;

namespace Xfbtree.Btree;

/// <summary>
/// A held block as the engine sees it: an opaque handle of the store (the cache's <see cref="BlockBuffer"/>),
/// the address of its memory (valid while held) and the tree pointer it was read for.
/// </summary>
public readonly unsafe struct BtreeBlockRef
{
    /// <summary>A held block: the store's handle, the address of its memory and its pointer.</summary>
    public BtreeBlockRef(object? handle, byte* data, long pointer) { Handle = handle; Data = data; Pointer = pointer; }
    /// <summary>Store-specific handle (for the buffer cache: the <see cref="BlockBuffer"/>).</summary>
    public object? Handle { get; }
    /// <summary>SAFETY: block memory, <c>BlockSize</c> bytes, valid only while the block is held.</summary>
    public byte* Data { get; }
    /// <summary>Tree pointer (agbno, fsbno or in-memory block number).</summary>
    public long Pointer { get; }
    /// <summary>True for the default (no block).</summary>
    public bool IsNull => Data == null;
}

/// <summary>
/// Where the blocks of one tree live: maps tree pointers to buffers of a target, allocates and frees
/// blocks. The engine never touches a cache or a device directly; see <see cref="CachedBtreeBlockStore"/>.
/// </summary>
public abstract class BtreeBlockStore
{
    /// <summary>Block size in bytes.</summary>
    public abstract int BlockSize { get; }
    /// <summary>True for on-disk blocks (CRC computed and checked); false in memory (as upstream xfbtrees).</summary>
    public abstract bool ChecksCrc { get; }
    /// <summary>Address in 512-byte units of the block a pointer names (the header's blkno).</summary>
    public abstract long PointerToDaddr(long pointer);
    /// <summary>True when the pointer names a block inside the target/AG; checked before any read.</summary>
    public abstract bool IsValidPointer(long pointer);
    /// <summary>Reads, verifies (on a miss) and holds a block. Throws <see cref="CorruptionException"/>.</summary>
    public abstract BtreeBlockRef Read(long pointer, BtreeBlockVerifier verifier);
    /// <summary>Holds a block about to be formatted (no read).</summary>
    public abstract BtreeBlockRef GetNew(long pointer, BtreeBlockVerifier verifier);
    /// <summary>Drops the hold.</summary>
    public abstract void Release(in BtreeBlockRef block);
    /// <summary>Records that the held block changed.</summary>
    public abstract void MarkDirty(in BtreeBlockRef block);
    /// <summary>Records that bytes [<paramref name="offset"/>, +<paramref name="length"/>) of the held block changed
    /// (a journal then logs only the changed ranges, as the kernel logs a btree buffer's changed records and header).
    /// Stores that do not track ranges treat it as <see cref="MarkDirty(in BtreeBlockRef)"/>.</summary>
    public virtual void MarkDirty(in BtreeBlockRef block, int offset, int length) => MarkDirty(block);
    /// <summary>
    /// Called before the engine's first change to a held block in a write (the block is about to change; MarkDirty
    /// follows the change). In-memory stores with concurrent readers stamp the block's version here; others need nothing.
    /// </summary>
    public virtual void BeginChange(in BtreeBlockRef block) { }
    /// <summary>Records that the held block was freed and must not be written back.</summary>
    public abstract void MarkStale(in BtreeBlockRef block);
    /// <summary>Allocates a block for a tree that grows (insert splits). Default: not supported.</summary>
    public virtual long AllocateBlock() => throw new NotSupportedException($"{GetType().Name} cannot allocate blocks");
    /// <summary>Returns a block freed by the tree (delete joins, root collapse). Default: not supported.</summary>
    public virtual void FreeBlock(long pointer) => throw new NotSupportedException($"{GetType().Name} cannot free blocks");

    /// <summary>
    /// True when holding a block costs nothing and locks nothing (the blocks are the memory itself, as in an
    /// in-memory tree): a cursor may then keep its path after an insert and append the next record without a
    /// descent. Stores over a buffer cache keep the default (false): a held buffer is locked.
    /// </summary>
    public virtual bool PathsMayStayHeld => false;

    /// <summary>
    /// The address of a block that is resident and cheap to find (memory-backed stores), only to prefetch it before
    /// it is read; null when the store cannot tell without a read (the batch lookup then just does not prefetch).
    /// Never dereferenced: a prefetch of a stale address is harmless.
    /// </summary>
    internal virtual unsafe byte* PeekAddressForPrefetch(long pointer) => null;

    /// <summary>
    /// When not null, block <c>p</c> of this store (any p below the blocks handed out) lives at
    /// <c>DirectBlockBase + p * BlockSize</c> for the store's whole life: a reader can prefetch a child block as soon as it
    /// knows its number, at the same time as the block's table entry, instead of after it. Only for prefetches: reads go
    /// through the table (and its checks).
    /// </summary>
    internal virtual unsafe byte* DirectBlockBase => null;

    /// <summary>Key-prefix sidecars beside the blocks (<see cref="BtreeSidecars"/>), or null.</summary>
    internal virtual BtreeSidecars? Sidecars => null;

    /// <summary>
    /// The table optimistic readers use (in-memory stores whose writers stamp block versions); false when the store
    /// has none, and the concurrent lookups of <see cref="BtreeCursor{TOps}"/> are then not available.
    /// </summary>
    internal virtual bool TryGetOptimisticTable(out OptimisticBlockTable table)
    {
        table = default;
        return false;
    }
}

/// <summary>One entry of an in-memory store's block table: the page address (or a free-list link, &lt;= 0) and the version.</summary>
[System.Runtime.InteropServices.StructLayout(System.Runtime.InteropServices.LayoutKind.Sequential)]
internal struct BlockSlot
{
    /// <summary>Page address of an allocated block; &lt;= 0 for a free one.</summary>
    public nint Page;
    /// <summary>Id (odd) of the last write operation that changed, allocated or freed the block.</summary>
    public long Version;
}

/// <summary>
/// What an optimistic reader reads besides block memory: the store (for its current table and its high-water mark).
/// See <c>XfbtreeBlockStore</c>'s remarks for the protocol.
/// </summary>
internal readonly unsafe struct OptimisticBlockTable
{
    readonly InMemory.XfbtreeBlockStore? _store;
    internal OptimisticBlockTable(InMemory.XfbtreeBlockStore store) => _store = store;
    /// <summary>True when there is a table.</summary>
    public bool IsAvailable => _store is not null;
    /// <summary>The store.</summary>
    public InMemory.XfbtreeBlockStore Store => _store!;
    /// <summary>The current table; entry -1 holds its capacity in Version.</summary>
    public BlockSlot* Table => _store!.CurrentTable;
    /// <summary>Blocks handed out so far.</summary>
    public long Highest => _store!.HighestVolatile;
}

/// <summary>
/// A block store over the shared <see cref="BufferCache"/>: every block is read through the cache with the
/// tree's verifier. Subclasses (per-AG trees, fsbno trees, xfile trees) supply the pointer arithmetic and
/// allocation. Dirty buffers are written by <see cref="BufferCache.Flush"/>, whose write verifier recomputes the CRC.
/// </summary>
public abstract unsafe class CachedBtreeBlockStore : BtreeBlockStore
{
    /// <summary>A store whose blocks are buffers of <paramref name="target"/> in <paramref name="cache"/>, <paramref name="blockSize"/> bytes each.</summary>
    protected CachedBtreeBlockStore(BufferCache cache, BufferTarget target, int blockSize)
    {
        Cache = cache;
        Target = target;
        BlockSize = blockSize;
        LengthBB = blockSize / 512;
    }

    /// <summary>The buffer cache the blocks are read through.</summary>
    public BufferCache Cache { get; }
    /// <summary>The buffer target (disk image, device or xfile) that holds the blocks.</summary>
    public BufferTarget Target { get; }
    /// <inheritdoc />
    public override int BlockSize { get; }
    /// <summary>Block length in 512-byte units.</summary>
    protected int LengthBB { get; }
    /// <inheritdoc />
    public override bool ChecksCrc => !Target.IsInMemory;

    /// <summary>
    /// When set, blocks are read and formatted through this transaction (joined, held until it ends) and
    /// <see cref="Release"/> leaves them to it: the write engine's per-operation stores.
    /// </summary>
    public BufferTransaction? Transaction { get; set; }

    /// <inheritdoc />
    public override BtreeBlockRef Read(long pointer, BtreeBlockVerifier verifier)
    {
        if (Transaction is { } tx)
        {
            var joined = tx.Read(Target, PointerToDaddr(pointer), LengthBB, verifier);
            if (joined.Length < BlockSize) throw new CorruptionException(verifier.Name, PointerToDaddr(pointer), "buffer shorter than a block");
            return new BtreeBlockRef(joined, joined.Data, pointer);
        }
        var buffer = Cache.Read(Target, PointerToDaddr(pointer), LengthBB, verifier);
        if (buffer.Length < BlockSize)
        {
            Cache.Release(buffer);
            throw new CorruptionException(verifier.Name, PointerToDaddr(pointer), "buffer shorter than a block");
        }
        return new BtreeBlockRef(buffer, buffer.Data, pointer);
    }

    /// <inheritdoc />
    public override BtreeBlockRef GetNew(long pointer, BtreeBlockVerifier verifier)
    {
        if (Transaction is { } tx)
        {
            var joined = tx.GetNew(Target, PointerToDaddr(pointer), LengthBB, verifier);
            return new BtreeBlockRef(joined, joined.Data, pointer);
        }
        var buffer = Cache.GetNew(Target, PointerToDaddr(pointer), LengthBB, verifier);
        return new BtreeBlockRef(buffer, buffer.Data, pointer);
    }

    /// <inheritdoc />
    public override void Release(in BtreeBlockRef block)
    {
        if (Transaction is null) Cache.Release((BlockBuffer)block.Handle!);
    }
    /// <inheritdoc />
    public override void MarkDirty(in BtreeBlockRef block) => ((BlockBuffer)block.Handle!).MarkDirty();
    /// <inheritdoc />
    public override void MarkDirty(in BtreeBlockRef block, int offset, int length) => ((BlockBuffer)block.Handle!).MarkDirty(offset, length);
    /// <inheritdoc />
    public override void MarkStale(in BtreeBlockRef block) => ((BlockBuffer)block.Handle!).MarkStale();
}
