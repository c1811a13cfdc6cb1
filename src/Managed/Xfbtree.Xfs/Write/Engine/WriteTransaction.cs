using Xfbtree.Btree;
using Xfbtree.Buffers;
using Xfbtree.Xfs.Format;
using Xfbtree.Xfs.Trees;

namespace Xfbtree.Xfs.Write.Engine;

/// <summary>What an allocation is for: decides the per-AG reservation it may not dip into and the free-list rules.</summary>
public enum AllocationPurpose
{
    /// <summary>File data (write, fallocate, CoW): may not use the per-AG metadata reservations.</summary>
    FileData,
    /// <summary>A bmbt block of an inode fork.</summary>
    BmbtBlock,
    /// <summary>An inobt or finobt block (from free space, OWN_INOBT).</summary>
    InodeBtreeBlock,
    /// <summary>A refcountbt block (from free space, OWN_REFC).</summary>
    RefcountBtreeBlock,
    /// <summary>A new inode chunk (alignment given in the request).</summary>
    InodeChunk,
    /// <summary>A directory or symlink block.</summary>
    DirectoryBlock,
}

/// <summary>An allocation request: at least <see cref="MinLength"/>, at most <see cref="MaxLength"/> blocks in one AG.</summary>
/// <param name="HintFsbno">Where to look first (NullFsbno = anywhere; the AG of the hint is tried first).</param>
/// <param name="MinLength">Smallest acceptable length.</param>
/// <param name="MaxLength">Largest wanted length.</param>
/// <param name="Purpose">What the blocks are for.</param>
/// <param name="Exact">Only at exactly the hint.</param>
/// <param name="Alignment">Start alignment in blocks (1 = none); inode chunks use the chunk alignment.</param>
/// <param name="OnlyAg">Restrict to one AG (e.g. inode chunk in the parent's AG, refcountbt block in its AG).</param>
public readonly record struct AllocationRequest(
    ulong HintFsbno, uint MinLength, uint MaxLength, AllocationPurpose Purpose,
    bool Exact = false, uint Alignment = 1, uint? OnlyAg = null)
{
    public const ulong NullFsbno = ulong.MaxValue;
}

/// <summary>One allocated extent.</summary>
public readonly record struct AllocatedExtent(uint AgNumber, uint AgBlock, uint Length, ulong Fsbno);

/// <summary>
/// One operation's transaction. OWNER: write-core. Everything the operation changes goes through it: buffers
/// (joined, exclusively locked until the end), in-core inodes (logged), file data (journaled), free space, rmap
/// and refcount records, superblock counters. Commit journals every change, then writes it in place; cancel
/// leaves image and memory as they were. Lock order: inode locks (ascending inode number), then AG locks
/// (ascending AG number), then buffers; inode cluster buffers only at commit, in daddr order.
/// </summary>
public sealed class WriteTransaction : IDisposable
{
    private WriteTransaction() => throw new NotImplementedException("write-core");

    public WriteEngine Engine => throw new NotImplementedException("write-core");

    /// <summary>Operation name (for messages).</summary>
    public string Operation => throw new NotImplementedException("write-core");

    // ------------------------------------------------------------------ locks

    /// <summary>Locks inodes (sorted ascending, skipping ones already held). Must come before any AG lock, except
    /// for an inode this transaction has just allocated (nobody else can see it yet).</summary>
    public void LockInodes(params IncoreInode[] inodes) => throw new NotImplementedException("write-core");

    /// <summary>Locks an AG (its AGF, AGI, AGFL and AG btrees). Out of ascending order: tries, and on contention
    /// restarts the operation with that AG locked first.</summary>
    public void LockAg(uint agno) => throw new NotImplementedException("write-core");

    public bool HoldsAg(uint agno) => throw new NotImplementedException("write-core");

    // ------------------------------------------------------------------ buffers

    /// <summary>Reads (verified) and joins a buffer; the caller must hold the lock that protects it.</summary>
    public BlockBuffer ReadBuffer(long daddr, int lengthBB, IBufferVerifier? verifier) => throw new NotImplementedException("write-core");

    /// <summary>A buffer about to be formatted (no read), joined.</summary>
    public BlockBuffer GetNewBuffer(long daddr, int lengthBB, IBufferVerifier? verifier) => throw new NotImplementedException("write-core");

    /// <summary>An AG header buffer (AGF, AGI, AGFL), joined; the AG must be locked.</summary>
    public BlockBuffer ReadAgHeader(AgHeaderKind kind, uint agno) => throw new NotImplementedException("write-core");

    /// <summary>A block store of AG <paramref name="agno"/> whose blocks are read through this transaction.
    /// <paramref name="allocate"/>/<paramref name="free"/> serve tree splits and joins (null: not allowed).</summary>
    public AgBtreeBlockStore AgStore(uint agno, Func<long>? allocate, Action<long>? free) => throw new NotImplementedException("write-core");

    /// <summary>An fsbno-addressed block store (bmbt) whose blocks are read through this transaction.</summary>
    public BtreeBlockStore FsStore(Func<long>? allocate, Action<long>? free) => throw new NotImplementedException("write-core");

    // ------------------------------------------------------------------ inodes and data

    /// <summary>The inode's <see cref="IncoreInode.Core"/> changed: copied into its cluster buffer at commit.</summary>
    public void LogInode(IncoreInode inode) => throw new NotImplementedException("write-core");

    /// <summary>Writes file data (whole blocks) at fs block <paramref name="fsbno"/>, journaled with the transaction.</summary>
    public void WriteData(ulong fsbno, ReadOnlySpan<byte> blocks) => throw new NotImplementedException("write-core");

    // ------------------------------------------------------------------ space (free-space trees, AGFL, OWN_AG)

    /// <summary>Allocates one extent (AG selection, free-list upkeep, reservations). The rmap of the new extent is
    /// the caller's job (except OWN_AG, which the free list keeps itself). Throws NoSpace.</summary>
    public AllocatedExtent Allocate(in AllocationRequest request) => throw new NotImplementedException("write-core");

    /// <summary>Returns an extent to free space (merging in bnobt and cntbt). The rmap unmap is the caller's job.</summary>
    public void Free(uint agno, uint agbno, uint length) => throw new NotImplementedException("write-core");

    /// <summary>Fails with NoSpace unless <paramref name="blocks"/> could be allocated for <paramref name="purpose"/>
    /// (used before an operation changes anything).</summary>
    public void EnsureSpace(long blocks, AllocationPurpose purpose) => throw new NotImplementedException("write-core");

    // ------------------------------------------------------------------ rmap and refcount (AG lock needed)

    /// <summary>Maps a record in AG <paramref name="agno"/>'s rmapbt (merging) and notifies the AG's hooks.</summary>
    public void RmapMap(uint agno, RmapRecord record, bool shared) => throw new NotImplementedException("write-core");

    /// <summary>Unmaps a record (trim/split) and notifies the hooks.</summary>
    public void RmapUnmap(uint agno, RmapRecord record, bool shared) => throw new NotImplementedException("write-core");

    /// <summary>Sets the unwritten state of a mapped range to that of <paramref name="record"/> and notifies the hooks.</summary>
    public void RmapConvert(uint agno, RmapRecord record, bool shared) => throw new NotImplementedException("write-core");

    /// <summary>Adds one reference to every block of the range (gaps become count-2 records).</summary>
    public void RefcountIncrement(uint agno, uint agbno, uint length) => throw new NotImplementedException("write-core");

    /// <summary>Drops one reference from every block of the range; returns the sub-ranges whose count reached
    /// zero (no other owner): the caller frees them.</summary>
    public IReadOnlyList<(uint AgBlock, uint Length)> RefcountDecrement(uint agno, uint agbno, uint length) => throw new NotImplementedException("write-core");

    /// <summary>True when any block of the range is shared (has a refcount record).</summary>
    public bool IsShared(uint agno, uint agbno, uint length) => throw new NotImplementedException("write-core");

    // ------------------------------------------------------------------ superblock counters

    /// <summary>Adjusts sb_icount / sb_ifree (sb_fdblocks follows the space calls by itself).</summary>
    public void ModInodeCounters(long icountDelta, long ifreeDelta) => throw new NotImplementedException("write-core");

    // ------------------------------------------------------------------ end

    /// <summary>Commits (normally done by <see cref="WriteEngine.Execute{T}"/>).</summary>
    public void Commit() => throw new NotImplementedException("write-core");

    /// <summary>Cancels: nothing of this transaction remains, on disk or in memory.</summary>
    public void Cancel() => throw new NotImplementedException("write-core");

    public void Dispose() => throw new NotImplementedException("write-core");
}
