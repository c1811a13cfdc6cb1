using Xfbtree.Btree;
using Xfbtree.Storage;

namespace Xfbtree.InMemory;

/// <summary>
/// An in-memory btree (upstream's xfbtree): the generic engine with the same ops as the on-disk tree, on
/// page-sized long-form blocks in a partition of an <see cref="Storage.Xfile"/>. Root and height live in this
/// object (no head block). Several trees can share one xfile by using different partitions
/// (<see cref="XfilePartitions"/>), so hundreds of trees need one descriptor and one mapping.
/// </summary>
/// <remarks>
/// Transactions: changes are made in place. <see cref="Commit"/> verifies every block changed since the last
/// commit or cancel (structure verifier: magic, level, numrecs, siblings, owner) and reports corruption;
/// <see cref="Cancel"/> just forgets the change set and undoes nothing, so after a failed operation the tree
/// must be treated as garbage (as upstream: repair aborts the scan). Not thread-safe: serialise access.
/// </remarks>
public sealed class Xfbtree<TOps> : IDisposable where TOps : struct, IBtreeOps
{
    static readonly byte[] DefaultUuid = new byte[16];
    readonly XfbtreeBlockStore _store;
    bool _disposed;

    /// <summary>Creates an empty tree in [<paramref name="partitionStart"/>, +<paramref name="partitionLength"/>) of <paramref name="xfile"/>.</summary>
    /// <param name="ops">Ops with long pointers (in-memory trees use the long header, as upstream).</param>
    /// <param name="xfile">Backing memory.</param>
    /// <param name="owner">Header owner written into every block (the AG number for an rmap shadow tree).</param>
    /// <param name="partitionStart">Page-aligned start inside the xfile.</param>
    /// <param name="partitionLength">Bytes available; -1 = to the end of the xfile.</param>
    public Xfbtree(TOps ops, Xfile xfile, long owner = 0, long partitionStart = 0, long partitionLength = -1)
    {
        if (!ops.LongPointers) throw new ArgumentException($"{ops.Name}: in-memory btrees use long-form blocks (64-bit pointers)", nameof(ops));
        _store = new XfbtreeBlockStore(xfile, partitionStart, partitionLength);
        Root = new BtreeRootValue(BtreeHeader.NullPointer, 1);
        Tree = new Btree<TOps>(ops, _store, Root, DefaultUuid, owner);
        _store.CommitVerifier = Tree.Verifier;
        Tree.CreateEmpty();
        _store.Cancel();
    }

    /// <summary>The engine tree (ops, geometry, verifier).</summary>
    public Btree<TOps> Tree { get; }
    /// <summary>Root and height.</summary>
    public BtreeRootValue Root { get; }
    /// <summary>The block store (pages of the partition).</summary>
    public XfbtreeBlockStore Store => _store;
    /// <summary>Blocks in use.</summary>
    public long BlockCount => _store.LiveBlocks;
    /// <summary>Bytes of xfile memory the tree holds: its blocks and the pages committed ahead for its next blocks.</summary>
    public long BytesInUse => _store.HeldBytes;

    /// <summary>A cursor, exactly as for on-disk trees.</summary>
    public BtreeCursor<TOps> CreateCursor()
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        return Tree.CreateCursor();
    }

    /// <summary>Verifies every block changed since the last commit/cancel; see the class remarks.</summary>
    public void Commit() => _store.Commit();
    /// <summary>Forgets the change set (nothing is undone); see the class remarks.</summary>
    public void Cancel() => _store.Cancel();

    /// <summary>Releases the pages of the tree.</summary>
    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        _store.Dispose();
    }
}

/// <summary>Hands out page-aligned partitions of one xfile to several in-memory trees. Not thread-safe: one thread hands them out.</summary>
public sealed class XfilePartitions
{
    readonly Xfile _xfile;
    long _next;

    /// <summary>Partitions of <paramref name="xfile"/>, handed out from its start.</summary>
    public XfilePartitions(Xfile xfile) => _xfile = xfile;

    /// <summary>Reserves <paramref name="bytes"/> (rounded up to pages) and returns the partition start.</summary>
    public long Reserve(long bytes)
    {
        long page = _xfile.PageSize;
        long size = (bytes + page - 1) / page * page;
        if (_next + size > _xfile.MaxSize) throw new XfileFullException("no room for another partition in the xfile");
        long start = _next;
        _next += size;
        return start;
    }
}
