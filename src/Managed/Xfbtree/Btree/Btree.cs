namespace Xfbtree.Btree;

/// <summary>
/// One btree: an ops table, its geometry at the store's block size, the block store, the root location and
/// the identity stamped in every block (metadata UUID, owner). Create cursors to work on it.
/// Threads: not thread-safe; one thread works on a tree at a time (the typed maps in <c>Xfbtree.InMemory</c> add
/// any number of readers and one writer at a time on top of it).
/// </summary>
public sealed class Btree<TOps> where TOps : struct, IBtreeOps
{
    /// <summary>Describes a tree.</summary>
    /// <param name="ops">The ops table.</param>
    /// <param name="store">Where its blocks live.</param>
    /// <param name="root">Where its root lives.</param>
    /// <param name="uuid">Metadata UUID written to and expected in every block (16 bytes).</param>
    /// <param name="owner">Header owner: the AG number, the inode number, or the in-memory tree's owner.</param>
    /// <param name="maxRecords">Upper bound on records, used to compute maxlevels.</param>
    public Btree(TOps ops, BtreeBlockStore store, BtreeRoot root, ReadOnlySpan<byte> uuid, long owner, long maxRecords = 1L << 40)
    {
        Ops = ops;
        Store = store;
        Root = root;
        Owner = owner;
        Geometry = BtreeGeometry.For(ops, store.BlockSize, maxRecords);
        Verifier = new BtreeBlockVerifier(ops.Name, ops.Magic, Geometry, store, uuid, owner);
    }

    /// <summary>The ops table that gives the tree its record and key format.</summary>
    public TOps Ops { get; }
    /// <summary>Where the tree's blocks live (disk through the buffer cache, an xfile, or a test store).</summary>
    public BtreeBlockStore Store { get; }
    /// <summary>The tree's root pointer and height (in an AG header, an inode fork or memory).</summary>
    public BtreeRoot Root { get; }
    /// <summary>The owner stamped into and checked in every block header (an AG number or an inode number).</summary>
    public long Owner { get; }
    /// <summary>Block size, header, record, key and pointer sizes and the records per block.</summary>
    public BtreeGeometry Geometry { get; }
    /// <summary>The verifier every block of this tree passes when it is read.</summary>
    public BtreeBlockVerifier Verifier { get; }
    /// <summary>The tree's name in messages (the ops table's).</summary>
    public string Name => Ops.Name;

    /// <summary>
    /// Bumped by every write of any cursor of this tree. A cursor that kept its path after an insert (see
    /// <see cref="BtreeBlockStore.PathsMayStayHeld"/>) trusts it only while the stamp is the one it saw.
    /// </summary>
    internal long WriteStamp;

    /// <summary>A cursor; reuse it for many operations (no allocation per operation). Dispose releases its buffers.</summary>
    public BtreeCursor<TOps> CreateCursor() => new(this);

    /// <summary>
    /// Formats an empty tree: allocates one leaf and points the root at it. Under an inode root
    /// (<see cref="BtreeInodeRoot"/>) the fork root becomes a level-1 node with one entry for the empty leaf (a fork
    /// root is never a leaf; the first insert sets the entry's key), reported through <see cref="BtreeRoot.Set"/>.
    /// </summary>
    public void CreateEmpty()
    {
        if (Root is BtreeInodeRoot inodeRoot)
        {
            CreateEmptyUnderInodeRoot(inodeRoot);
            return;
        }
        long ptr = Store.AllocateBlock();
        var block = Store.GetNew(ptr, Verifier);
        try
        {
            InitializeBlock(block, 0);
            Store.MarkDirty(block);
        }
        finally { Store.Release(block); }
        Root.Set(ptr, 1);
    }

    void CreateEmptyUnderInodeRoot(BtreeInodeRoot root)
    {
        long ptr = Store.AllocateBlock();
        var block = Store.GetNew(ptr, Verifier);
        try
        {
            InitializeBlock(block, 0);
            Store.MarkDirty(block);
        }
        finally { Store.Release(block); }
        var image = root.Image;
        BtreeHeader.Initialize(image, Geometry.LongPointers, Ops.Magic, 1, 0, new byte[16], 0);
        BtreeHeader.WritePointer(image[Geometry.PointerOffset(0, root.MaxRecords)..], Geometry.LongPointers, ptr);
        BtreeHeader.SetNumRecords(image, 1);
        root.Set(BtreeHeader.NullPointer, 2);
    }

    internal unsafe void InitializeBlock(in BtreeBlockRef block, int level)
    {
        System.Diagnostics.Debug.Assert(!block.IsNull, "formatting a null block");
        BtreeHeader.Initialize(new Span<byte>(block.Data, Geometry.BlockSize), Geometry.LongPointers, Ops.Magic, level,
            Store.PointerToDaddr(block.Pointer), Verifier.Uuid, Owner);
    }

    /// <summary>Runs the structure checker (scrub) and returns every violation found.</summary>
    public BtreeCheckReport Check(long maxBlocks = long.MaxValue) => new BtreeChecker<TOps>(this, maxBlocks).Run();

    /// <summary>
    /// Runs the structure checker and hands every leaf record of every readable leaf to <paramref name="onRecord"/>
    /// in walk order (key order in a sound tree), so a caller can compare records and structure in one walk.
    /// </summary>
    public BtreeCheckReport Check(long maxBlocks, BtreeRecordCallback? onRecord) => new BtreeChecker<TOps>(this, maxBlocks, onRecord).Run();
}

/// <summary>Receives one leaf record (valid only during the call).</summary>
public delegate void BtreeRecordCallback(ReadOnlySpan<byte> record);
