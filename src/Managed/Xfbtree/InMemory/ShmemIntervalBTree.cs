using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Xfbtree.Btree;
using Xfbtree.Storage;

namespace Xfbtree.InMemory;

/// <summary>
/// Orders records of a <see cref="ShmemIntervalBTree{TRecord, TComparer}"/> and says how far each reaches.
/// Implement it on a struct so the JIT specialises the tree for it.
/// </summary>
/// <typeparam name="TRecord">The fixed-size record type.</typeparam>
public interface IIntervalRecordComparer<TRecord> : IRecordComparer<TRecord> where TRecord : unmanaged
{
    /// <summary>
    /// The record's high key: a record value whose key fields are the last key the record covers (for an extent
    /// (start, length, owner): (start + length - 1, owner)), ordered by <see cref="IRecordComparer{TRecord}.Compare"/>;
    /// never below the record itself. Called by writers, and by overlapped queries on any thread (the same rules as
    /// <see cref="IRecordComparer{TRecord}.Compare"/>: pure, and no throw for any bit pattern).
    /// </summary>
    void GetHighKey(in TRecord record, out TRecord highKey);
}

/// <summary>Receives records of an overlapped query.</summary>
/// <remarks>
/// Threads: called on the thread that runs the query, with a checked copy of each record; no lock is held, so the
/// visitor may read or change the tree (a change is seen by the rest of the walk or not, as for any concurrent write).
/// </remarks>
/// <typeparam name="TRecord">The record type.</typeparam>
public interface IRecordVisitor<TRecord> where TRecord : unmanaged
{
    /// <summary>Called once per record in key order (the reference is valid during the call only); false stops the query.</summary>
    bool Visit(in TRecord record);
}

/// <summary>
/// An ordered set of fixed-size interval records in shared memory, on the same engine as
/// <see cref="ShmemBTree{TRecord, TComparer}"/> but with XFS's overlapping-interval node keys (low and high key
/// per slot, as in the rmapbt): <see cref="QueryOverlapping"/> walks only the subtrees whose key range
/// intersects the query (the engine's overlapped query), instead of scanning from a conservative start.
/// Records are unique by <typeparamref name="TComparer"/>. No allocation per operation.
/// </summary>
/// <remarks>
/// <b>Threads: any number of readers and one writer at a time</b>, as for <see cref="ShmemBTree{TRecord, TComparer}"/>:
/// <see cref="TryFind"/>, <see cref="TryFindMany"/>, <see cref="Contains"/>, <see cref="TryGetFirst"/>,
/// <see cref="TryGetLast"/>, <see cref="QueryOverlapping"/>, <see cref="VisitAll"/> and <see cref="Count"/> take no lock
/// and may run on any number of threads while one thread writes; writes take the tree's write lock.
/// <see cref="Dispose"/> must not run while any other call does. The tree cannot be shared with another process (see
/// <see cref="ShmemBTree{TRecord, TComparer}"/>).
/// </remarks>
/// <typeparam name="TRecord">Record type (at most 64 bytes).</typeparam>
/// <typeparam name="TComparer">Struct comparer defining the order and the high key.</typeparam>
public sealed class ShmemIntervalBTree<TRecord, TComparer> : IDisposable
    where TRecord : unmanaged
    where TComparer : struct, IIntervalRecordComparer<TRecord>
{
    ShmemTreeCore<TRecord, IntervalRecordOps<TRecord, TComparer>> _core; // mutable struct: not readonly
    readonly TComparer _comparer;

    /// <summary>Creates an empty tree.</summary>
    /// <param name="comparer">The order and high key (default instance when omitted).</param>
    /// <param name="options">Where to keep the blocks; null = a private xfile.</param>
    public ShmemIntervalBTree(TComparer comparer = default, ShmemBTreeOptions? options = null)
    {
        _core = new ShmemTreeCore<TRecord, IntervalRecordOps<TRecord, TComparer>>(new IntervalRecordOps<TRecord, TComparer>(comparer), options, "xfbtree-shmem-interval-btree");
        _comparer = comparer;
    }

    /// <summary>Number of records (safe to read while another thread writes).</summary>
    public long Count { get { ThrowIfDisposed(); return Volatile.Read(ref _core.Count.Value); } }

    /// <summary>Which pages the tree's memory got (huge pages or not; see <see cref="Xfile.HugePageDescription"/> for why).</summary>
    public XfileHugePageMode HugePageMode { get { ThrowIfDisposed(); return _core.Xfile.HugePageMode; } }

    /// <summary>The readers' engine cursor (for tests that hook the concurrent reads).</summary>
    internal BtreeCursor<IntervalRecordOps<TRecord, TComparer>> CursorForTests => _core.Reader;

    /// <summary>The writer's engine cursor (for tests of its counters).</summary>
    internal BtreeCursor<IntervalRecordOps<TRecord, TComparer>> WriterCursorForTests => _core.Cursor;

    /// <summary>Bytes of shared memory held by the tree's blocks.</summary>
    public long MemoryBytes { get { ThrowIfDisposed(); return _core.Tree.BytesInUse; } }

    /// <summary>Btree blocks in the tree (for tests of the tree's shape; <see cref="MemoryBytes"/> may include pages committed ahead).</summary>
    internal long BlockCount { get { ThrowIfDisposed(); return _core.Tree.BlockCount; } }

    /// <summary>Bytes the backing xfile really has allocated.</summary>
    public long XfileBytesUsed { get { ThrowIfDisposed(); return _core.Xfile.BytesUsed; } }

    /// <summary>Native bytes of the block table (bookkeeping outside the xfile).</summary>
    public long TableBytes { get { ThrowIfDisposed(); return _core.Tree.Store.TableBytes; } }

    /// <summary>Height of the underlying btree.</summary>
    public int Height { get { ThrowIfDisposed(); return _core.Tree.Root.Height; } }

    static ReadOnlySpan<byte> Bytes(in TRecord record) => ShmemTreeCore<TRecord, IntervalRecordOps<TRecord, TComparer>>.Bytes(in record);

    /// <summary>Adds a record; false (nothing changed) when a record with the same key exists.</summary>
    public bool Insert(in TRecord record)
    {
        ThrowIfDisposed();
        return _core.Insert(in record);
    }

    /// <summary>Adds the records in any order; returns how many were added (see <see cref="ShmemBTree{TRecord, TComparer}.InsertMany"/>).</summary>
    public int InsertMany(ReadOnlySpan<TRecord> records)
    {
        ThrowIfDisposed();
        return ShmemBatches<TRecord, TComparer>.InsertMany(ref _core, _comparer, records);
    }

    /// <summary>Adds the record, or replaces the record with its key (its high key may change); true when it replaced one.</summary>
    public bool Upsert(in TRecord record)
    {
        ThrowIfDisposed();
        return _core.Upsert(in record);
    }

    /// <summary>Removes the record with the key of <paramref name="key"/>; false when there is none.</summary>
    public bool Remove(in TRecord key)
    {
        ThrowIfDisposed();
        return _core.Remove(in key);
    }

    /// <summary>Removes the records with the keys of <paramref name="keys"/> (any order, repeats allowed); returns how many were removed.</summary>
    public int RemoveMany(ReadOnlySpan<TRecord> keys)
    {
        ThrowIfDisposed();
        return ShmemBatches<TRecord, TComparer>.RemoveMany(ref _core, _comparer, keys);
    }

    /// <summary>Removes every record (the tree stays usable).</summary>
    public void Clear()
    {
        ThrowIfDisposed();
        _core.Clear();
    }

    /// <summary>Finds the record with the key of <paramref name="key"/>.</summary>
    public bool TryFind(in TRecord key, out TRecord record)
    {
        ThrowIfDisposed();
        return _core.TryFind(in key, ConcurrentSeek.Equal, out record);
    }

    /// <summary>True when a record with the key of <paramref name="key"/> exists.</summary>
    public bool Contains(in TRecord key)
    {
        ThrowIfDisposed();
        return _core.TryFind(in key, ConcurrentSeek.Equal, out _);
    }

    /// <summary>The record with the smallest key; false when the tree is empty.</summary>
    public bool TryGetFirst(out TRecord record)
    {
        ThrowIfDisposed();
        return _core.TryFind(default, ConcurrentSeek.First, out record);
    }

    /// <summary>The record with the largest key; false when the tree is empty.</summary>
    public bool TryGetLast(out TRecord record)
    {
        ThrowIfDisposed();
        return _core.TryFind(default, ConcurrentSeek.Last, out record);
    }

    /// <summary>Looks up many keys at once (see <see cref="ShmemBTree{TRecord, TComparer}.TryFindMany"/>).</summary>
    public int TryFindMany(ReadOnlySpan<TRecord> keys, Span<TRecord> records, Span<bool> found)
    {
        ThrowIfDisposed();
        return _core.TryFindMany(keys, records, found);
    }

    /// <summary>
    /// Visits, in key order, every record whose [key, high key] intersects [<paramref name="low"/>,
    /// <paramref name="high"/>] (both are compared as keys). Returns false when the visitor stopped the query. Safe
    /// while another thread writes: each record visited was in the tree at some moment of the call, none twice, and
    /// none missed that was there for the whole call.
    /// </summary>
    public bool QueryOverlapping<TVisitor>(in TRecord low, in TRecord high, ref TVisitor visitor)
        where TVisitor : IRecordVisitor<TRecord>
    {
        ThrowIfDisposed();
        var adapter = new VisitorAdapter<TVisitor>(ref visitor);
        return _core.Reader.QueryOverlappingConcurrent(Bytes(low), Bytes(high), ref adapter);
    }

    /// <summary>
    /// Visits every record in key order; returns false when the visitor stopped. Each record is a copy checked
    /// against concurrent writes (safe while another thread writes); implement the visitor on a struct so it is inlined.
    /// </summary>
    public bool VisitAll<TVisitor>(ref TVisitor visitor) where TVisitor : IRecordVisitor<TRecord>
    {
        ThrowIfDisposed();
        return _core.VisitAll(ref visitor);
    }

    ref struct VisitorAdapter<TVisitor>(ref TVisitor inner) : IBtreeRecordVisitor where TVisitor : IRecordVisitor<TRecord>
    {
        readonly ref TVisitor _inner = ref inner;
        public bool Visit(ReadOnlySpan<byte> record) => _inner.Visit(in MemoryMarshal.AsRef<TRecord>(record));
    }

    /// <summary>Loads records sorted strictly ascending into an empty tree (blocks about 75 % full).</summary>
    public void BulkLoad(ReadOnlySpan<TRecord> sorted)
    {
        ThrowIfDisposed();
        _core.BulkLoad(sorted);
    }

    /// <summary>Runs the engine's structure checker (including the high keys of every node slot).</summary>
    public IReadOnlyList<string> CheckStructure()
    {
        ThrowIfDisposed();
        return _core.CheckStructure();
    }

    /// <summary>Releases the tree's memory (and its xfile when the tree created it).</summary>
    public void Dispose() => _core.Dispose();

    void ThrowIfDisposed() => ObjectDisposedException.ThrowIf(_core.Disposed, this);
}

/// <summary>Ops of the interval map: the whole record is the key, the comparer's high key bounds it; overlapping node keys.</summary>
internal readonly struct IntervalRecordOps<TRecord, TComparer> : IBtreeOps, IBtreeLeafRunOps
    where TRecord : unmanaged
    where TComparer : struct, IIntervalRecordComparer<TRecord>
{
    readonly TComparer _comparer;
    public IntervalRecordOps(TComparer comparer) => _comparer = comparer;
    public string Name => "shmem interval btree";
    public uint Magic => 0x58544934; // "XTI4"
    public bool LongPointers => true;
    public int RecordSize => Unsafe.SizeOf<TRecord>();
    public int KeySize => Unsafe.SizeOf<TRecord>();
    public bool Overlapping => true;

    // Exact-size slices from the engine (see WholeRecordKeys).
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public int CompareKeys(ReadOnlySpan<byte> a, ReadOnlySpan<byte> b)
        => WholeRecordKeys<TRecord>.Compare(in _comparer, a, b);
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public int CompareRecordToKey(ReadOnlySpan<byte> record, ReadOnlySpan<byte> key)
        => WholeRecordKeys<TRecord>.Compare(in _comparer, record, key);
    public void GetKey(ReadOnlySpan<byte> record, Span<byte> key) => WholeRecordKeys<TRecord>.CopyKey(record, key);
    public void GetHighKey(ReadOnlySpan<byte> record, Span<byte> key)
    {
        _comparer.GetHighKey(in MemoryMarshal.AsRef<TRecord>(record[..Unsafe.SizeOf<TRecord>()]), out TRecord high);
        MemoryMarshal.Write(key, in high);
    }
    public bool RecordsInOrder(ReadOnlySpan<byte> previous, ReadOnlySpan<byte> next) => CompareKeys(previous, next) < 0;
    public string? ValidateRecord(ReadOnlySpan<byte> record)
    {
        _comparer.GetHighKey(in MemoryMarshal.AsRef<TRecord>(record[..Unsafe.SizeOf<TRecord>()]), out TRecord high);
        return _comparer.Compare(in high, in MemoryMarshal.AsRef<TRecord>(record[..Unsafe.SizeOf<TRecord>()])) < 0 ? "high key below the record's key" : null;
    }
    public int CheckLeafRun(ReadOnlySpan<byte> records, int count, bool checkOrder, Span<byte> highKey)
        => WholeRecordKeys<TRecord>.CheckLeafRun(in _comparer, new ComparerHighKey(_comparer), records, count, checkOrder, highKey);

    readonly struct ComparerHighKey(TComparer comparer) : IHighKeyOf<TRecord>
    {
        readonly TComparer _comparer = comparer;
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public void GetHighKey(in TRecord record, out TRecord highKey) => _comparer.GetHighKey(in record, out highKey);
    }
}
