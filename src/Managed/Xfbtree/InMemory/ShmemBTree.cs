using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Xfbtree.Btree;
using Xfbtree.Storage;

namespace Xfbtree.InMemory;

/// <summary>Orders records of a <see cref="ShmemBTree{TRecord, TComparer}"/>. Implement it on a struct so the JIT specialises the tree for it.</summary>
/// <remarks>
/// Threads: readers call it on many threads at once, without a lock, and may call it on a record the writer is
/// changing at that moment (the reader then discards what it read and looks again): keep it a pure function of its
/// two arguments that does not throw for any bit pattern (comparing fields does not; indexing a table by a field may).
/// </remarks>
/// <typeparam name="TRecord">The fixed-size record type.</typeparam>
public interface IRecordComparer<TRecord> where TRecord : unmanaged
{
    /// <summary>Negative when <paramref name="x"/> sorts before <paramref name="y"/>, zero when they are the same key, positive otherwise.</summary>
    int Compare(in TRecord x, in TRecord y);
}

/// <summary>Where a <see cref="ShmemBTree{TRecord, TComparer}"/> keeps its blocks.</summary>
public sealed record ShmemBTreeOptions
{
    /// <summary>An existing xfile to use (shared with other trees through partitions); null = the tree creates and owns one.</summary>
    public Xfile? Xfile { get; init; }
    /// <summary>Page-aligned start of this tree's partition inside <see cref="Xfile"/>.</summary>
    public long PartitionStart { get; init; }
    /// <summary>Bytes of the partition; -1 = to the end of the xfile.</summary>
    public long PartitionLength { get; init; } = -1;
    /// <summary>Options for the xfile the tree creates when <see cref="Xfile"/> is null.</summary>
    public XfileOptions? XfileOptions { get; init; }
}

/// <summary>
/// An ordered set of fixed-size unmanaged records kept in shared memory (an xfile) by the same btree engine
/// that reads and writes XFS metadata trees: page-sized blocks, no per-record objects, nothing on the managed
/// heap per record, and no allocation per operation. Records are unique by <typeparamref name="TComparer"/>;
/// look up by a record whose key fields are set.
/// </summary>
/// <remarks>
/// <para><b>Threads: any number of readers and one writer at a time.</b> Reads (<see cref="TryFind"/>,
/// <see cref="TryFindMany"/>, <see cref="Contains"/>, the neighbour lookups, <see cref="TryGetFirst"/>,
/// <see cref="TryGetLast"/>, <see cref="Range"/>, <see cref="RangeDescending"/>, enumeration, <see cref="Count"/>)
/// may run on any number of threads at once and while another thread writes; they take no lock and write no shared
/// memory (each block's version is checked after it was read, and a read that a write overlapped is done again). A
/// read returns only records that were in the tree at some moment during the call, and never misses one that was there
/// for the whole call. Writes (<see cref="Insert"/>, <see cref="InsertMany"/>, <see cref="Upsert"/>,
/// <see cref="Remove"/>, <see cref="RemoveMany"/>, <see cref="Clear"/>, <see cref="BulkLoad"/>) take the tree's write
/// lock, so writers run one at a time; readers never block a writer. An enumeration (<see cref="Range"/>) sees each
/// record as it was when it reached it: records written behind it are not seen, records written ahead of it are, and
/// it never returns a record twice or out of order. <see cref="Dispose"/> must not run while any other call does.</para>
/// <para>Sharing across processes: the blocks live in an xfile (a memfd or a file), but the block table, the write
/// sequence and the lock live in this process, so another process cannot open the tree; only this process's threads
/// may read and write it.</para>
/// </remarks>
/// <typeparam name="TRecord">Record type (at most 64 bytes; its whole value is stored, the comparer defines the order).</typeparam>
/// <typeparam name="TComparer">Struct comparer defining the order.</typeparam>
public sealed class ShmemBTree<TRecord, TComparer> : IDisposable
    where TRecord : unmanaged
    where TComparer : struct, IRecordComparer<TRecord>
{
    ShmemTreeCore<TRecord, TypedRecordOps<TRecord, TComparer>> _core; // mutable struct: not readonly
    readonly TComparer _comparer;

    /// <summary>Creates an empty tree.</summary>
    /// <param name="comparer">The order (default instance when omitted).</param>
    /// <param name="options">Where to keep the blocks; null = a private xfile.</param>
    public ShmemBTree(TComparer comparer = default, ShmemBTreeOptions? options = null)
    {
        _core = new ShmemTreeCore<TRecord, TypedRecordOps<TRecord, TComparer>>(new TypedRecordOps<TRecord, TComparer>(comparer), options, "xfbtree-shmem-btree",
            RecordKeyPrefixes.For<TRecord, TComparer>(comparer));
        _comparer = comparer;
    }

    /// <summary>Number of records (safe to read while another thread writes: the count at some moment of the call).</summary>
    public long Count { get { ThrowIfDisposed(); return Volatile.Read(ref _core.Count.Value); } }

    /// <summary>Bytes of shared memory held by the tree's blocks (page-sized btree blocks in use).</summary>
    public long MemoryBytes { get { ThrowIfDisposed(); return _core.Tree.BytesInUse; } }

    /// <summary>Btree blocks in the tree (for tests of the tree's shape; <see cref="MemoryBytes"/> may include pages committed ahead).</summary>
    internal long BlockCount { get { ThrowIfDisposed(); return _core.Tree.BlockCount; } }

    /// <summary>Sidecars that differ from their blocks (and, in <paramref name="current"/>, how many are current); tests and the fuzz target.</summary>
    internal int CheckSidecars(out long current) { ThrowIfDisposed(); return _core.CheckSidecars(out current); }

    /// <summary>The store's sidecars (tests), or null.</summary>
    internal BtreeSidecars? SidecarsForTests => _core.Tree.Store.Sidecars;
    /// <summary>The block store (tests).</summary>
    internal XfbtreeBlockStore StoreForTests => _core.Tree.Store;

    /// <summary>The readers' engine cursor (for tests that hook the concurrent reads).</summary>
    internal BtreeCursor<TypedRecordOps<TRecord, TComparer>> CursorForTests => _core.Reader;

    /// <summary>The writer's engine cursor (for tests of its counters).</summary>
    internal BtreeCursor<TypedRecordOps<TRecord, TComparer>> WriterCursorForTests => _core.Cursor;

    /// <summary>Bytes the backing xfile really has allocated (for a private xfile: this tree's memory; for a shared one: every tree's).</summary>
    public long XfileBytesUsed { get { ThrowIfDisposed(); return _core.Xfile.BytesUsed; } }

    /// <summary>Native bytes of the block table (bookkeeping outside the xfile and the managed heap).</summary>
    public long TableBytes { get { ThrowIfDisposed(); return _core.Tree.Store.TableBytes; } }

    /// <summary>Height of the underlying btree (1 = a single leaf).</summary>
    public int Height { get { ThrowIfDisposed(); return _core.Tree.Root.Height; } }

    /// <summary>Which pages the tree's memory got (huge pages or not; see <see cref="Xfile.HugePageDescription"/> for why).</summary>
    public XfileHugePageMode HugePageMode { get { ThrowIfDisposed(); return _core.Xfile.HugePageMode; } }

    /// <summary>Adds a record; false (nothing changed) when a record with the same key exists.</summary>
    public bool Insert(in TRecord record)
    {
        ThrowIfDisposed();
        return _core.Insert(in record);
    }

    /// <summary>
    /// Adds the records in any order; returns how many were added (a record whose key is already in the tree, or
    /// repeats an earlier one of the batch, is skipped). The batch is sorted in chunks of bounded size (the stack, or
    /// native memory of about twice the batch and at most 64 MiB whatever its length, freed before it returns) and
    /// inserted in key order: keys that fall into one leaf go in as one merge, and a key in another leaf is found from the
    /// previous key's path, not from the root. Allocates nothing on the managed heap.
    /// </summary>
    public int InsertMany(ReadOnlySpan<TRecord> records)
    {
        ThrowIfDisposed();
        return ShmemBatches<TRecord, TComparer>.InsertMany(ref _core, _comparer, records);
    }

    /// <summary>Adds the record, or replaces the record with its key; true when it replaced one.</summary>
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

    /// <summary>Removes the records with the keys of <paramref name="keys"/> (any order, repeats allowed); returns how many were removed. Allocates nothing.</summary>
    public int RemoveMany(ReadOnlySpan<TRecord> keys)
    {
        ThrowIfDisposed();
        return ShmemBatches<TRecord, TComparer>.RemoveMany(ref _core, _comparer, keys);
    }

    /// <summary>Removes every record (the memory of the blocks is returned; the tree stays usable).</summary>
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

    /// <summary>
    /// Looks up many keys at once (faster than one <see cref="TryFind"/> per key: the keys descend the tree
    /// together, so their cache misses overlap). For each i, <paramref name="records"/>[i] is the record with the
    /// key of <paramref name="keys"/>[i] when <paramref name="found"/>[i] is true (unchanged otherwise). Returns
    /// how many were found. Allocates nothing.
    /// </summary>
    public int TryFindMany(ReadOnlySpan<TRecord> keys, Span<TRecord> records, Span<bool> found)
    {
        ThrowIfDisposed();
        return _core.TryFindMany(keys, records, found);
    }

    /// <summary>True when a record with the key of <paramref name="key"/> exists.</summary>
    public bool Contains(in TRecord key)
    {
        ThrowIfDisposed();
        return _core.TryFind(in key, ConcurrentSeek.Equal, out _);
    }

    /// <summary>Finds the last record whose key is at most <paramref name="key"/> (floor).</summary>
    public bool TryFindLessOrEqual(in TRecord key, out TRecord record)
    {
        ThrowIfDisposed();
        return _core.TryFind(in key, ConcurrentSeek.LessOrEqual, out record);
    }

    /// <summary>Finds the first record whose key is at least <paramref name="key"/> (ceiling).</summary>
    public bool TryFindGreaterOrEqual(in TRecord key, out TRecord record)
    {
        ThrowIfDisposed();
        return _core.TryFind(in key, ConcurrentSeek.GreaterOrEqual, out record);
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

    /// <summary>
    /// Enumerates, in ascending order and without allocating, the records from <paramref name="low"/> to
    /// <paramref name="high"/> (both inclusive). Safe while another thread writes (see the class remarks).
    /// </summary>
    public RangeEnumerator Range(in TRecord low, in TRecord high)
    {
        ThrowIfDisposed();
        return new RangeEnumerator(this, low, high, bounded: true, descending: false);
    }

    /// <summary>Enumerates, in descending order, the records from <paramref name="high"/> down to <paramref name="low"/> (both inclusive).</summary>
    public RangeEnumerator RangeDescending(in TRecord low, in TRecord high)
    {
        ThrowIfDisposed();
        return new RangeEnumerator(this, low, high, bounded: true, descending: true);
    }

    /// <summary>Enumerates every record in descending order.</summary>
    public RangeEnumerator Descending()
    {
        ThrowIfDisposed();
        return new RangeEnumerator(this, default, default, bounded: false, descending: true);
    }

    /// <summary>Enumerates every record in ascending order (see <see cref="Range"/>).</summary>
    public RangeEnumerator GetEnumerator()
    {
        ThrowIfDisposed();
        return new RangeEnumerator(this, default, default, bounded: false, descending: false);
    }

    /// <summary>
    /// Loads records sorted strictly ascending into an empty tree (blocks filled to about 75 %, as XFS's
    /// bulk loader does by default). Throws <see cref="ArgumentException"/> when the input is not strictly sorted.
    /// </summary>
    public void BulkLoad(ReadOnlySpan<TRecord> sorted)
    {
        ThrowIfDisposed();
        _core.BulkLoad(sorted);
    }

    /// <summary>Runs the engine's structure checker (for tests and diagnostics); returns the violations found.</summary>
    public IReadOnlyList<string> CheckStructure()
    {
        ThrowIfDisposed();
        return _core.CheckStructure();
    }

    /// <summary>Releases the tree's memory (and its xfile when the tree created it). Later calls throw <see cref="ObjectDisposedException"/>.</summary>
    public void Dispose() => _core.Dispose();

    void ThrowIfDisposed() => ObjectDisposedException.ThrowIf(_core.Disposed, this);

    /// <summary>
    /// An allocation-free, ordered enumerator over a key range (a ref struct: use it with foreach). Each record is
    /// copied out of its leaf and checked against concurrent writes before it is returned (see the class remarks);
    /// <see cref="Current"/> refers to that copy, valid until the next <see cref="MoveNext"/>. Within a leaf a step is a
    /// copy and one read of the tree's write sequence; the engine is asked only at leaf boundaries (through the sibling
    /// pointer) and after a write touched the leaf (a new lookup after the record returned last).
    /// </summary>
    public ref struct RangeEnumerator
    {
        readonly ShmemBTree<TRecord, TComparer> _map;
        readonly TRecord _low;
        readonly TRecord _high;
        readonly bool _bounded;
        readonly bool _descending;
        ConcurrentScanPosition _position;
        TRecord _a;          // the current record and the next one, alternately (a step reads the last while it writes the next)
        TRecord _b;
        bool _inB;           // Current is _b
        bool _started;
        bool _onRecord;
        bool _ended;

        internal RangeEnumerator(ShmemBTree<TRecord, TComparer> map, TRecord low, TRecord high, bool bounded, bool descending)
        {
            _map = map;
            _low = low;
            _high = high;
            _bounded = bounded;
            _descending = descending;
        }

        /// <summary>Returns this enumerator (foreach support).</summary>
        public readonly RangeEnumerator GetEnumerator() => this;

        /// <summary>The current record (a copy; valid until the next <see cref="MoveNext"/>).</summary>
        [System.Diagnostics.CodeAnalysis.UnscopedRef]
        public ref readonly TRecord Current
        {
            [MethodImpl(MethodImplOptions.AggressiveInlining)]
            get
            {
                if (!_onRecord) ThrowNoCurrent();
                return ref _inB ? ref _b : ref _a;
            }
        }

        /// <summary>Advances to the next record in range; false at the end.</summary>
        public bool MoveNext()
        {
            _map.ThrowIfDisposed();
            if (_ended) return false;
            var cursor = _map._core.Reader;
            var current = MemoryMarshal.AsBytes(new Span<TRecord>(ref _inB ? ref _b : ref _a));
            var next = MemoryMarshal.AsBytes(new Span<TRecord>(ref _inB ? ref _a : ref _b));
            bool found;
            if (!_started)
            {
                _started = true;
                var how = _bounded ? (_descending ? ConcurrentSeek.LessOrEqual : ConcurrentSeek.GreaterOrEqual) : (_descending ? ConcurrentSeek.Last : ConcurrentSeek.First);
                found = cursor.SeekConcurrent(_bounded ? Bytes(_descending ? _high : _low) : default, how, next, ref _position);
            }
            else found = cursor.StepConcurrent(ref _position, !_descending, current, next);
            if (found)
            {
                ref readonly TRecord candidate = ref _inB ? ref _a : ref _b;
                if (_bounded && (_descending ? _map._comparer.Compare(in candidate, in _low) < 0 : _map._comparer.Compare(in candidate, in _high) > 0)) found = false;
            }
            if (!found)
            {
                _ended = true;
                _onRecord = false;
                return false;
            }
            _inB = !_inB;
            _onRecord = true;
            return true;
        }

        static ReadOnlySpan<byte> Bytes(in TRecord record) => ShmemTreeCore<TRecord, TypedRecordOps<TRecord, TComparer>>.Bytes(in record);

        [MethodImpl(MethodImplOptions.NoInlining)]
        readonly void ThrowNoCurrent()
        {
            _map.ThrowIfDisposed();
            throw new InvalidOperationException("the enumerator is not on a record");
        }
    }
}

/// <summary>Ops table of the typed map: the whole record is the key, ordered by the comparer, on long-form blocks.</summary>
internal readonly struct TypedRecordOps<TRecord, TComparer> : IBtreeOps, IBtreeLeafRunOps
    where TRecord : unmanaged
    where TComparer : struct, IRecordComparer<TRecord>
{
    readonly TComparer _comparer;
    public TypedRecordOps(TComparer comparer) => _comparer = comparer;
    public string Name => "shmem btree";
    public uint Magic => 0x58544D33; // "XTM3"
    public bool LongPointers => true;
    public int RecordSize => Unsafe.SizeOf<TRecord>();
    public int KeySize => Unsafe.SizeOf<TRecord>();
    public bool Overlapping => false;

    // Exact-size slices from the engine (see WholeRecordKeys).
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public int CompareKeys(ReadOnlySpan<byte> a, ReadOnlySpan<byte> b)
        => WholeRecordKeys<TRecord>.Compare(in _comparer, a, b);
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public int CompareRecordToKey(ReadOnlySpan<byte> record, ReadOnlySpan<byte> key)
        => WholeRecordKeys<TRecord>.Compare(in _comparer, record, key);
    public void GetKey(ReadOnlySpan<byte> record, Span<byte> key) => WholeRecordKeys<TRecord>.CopyKey(record, key);
    public void GetHighKey(ReadOnlySpan<byte> record, Span<byte> key) => WholeRecordKeys<TRecord>.CopyKey(record, key);
    public bool RecordsInOrder(ReadOnlySpan<byte> previous, ReadOnlySpan<byte> next) => CompareKeys(previous, next) < 0;
    public string? ValidateRecord(ReadOnlySpan<byte> record) => null;
    public int CheckLeafRun(ReadOnlySpan<byte> records, int count, bool checkOrder, Span<byte> highKey)
        => WholeRecordKeys<TRecord>.CheckLeafRun(in _comparer, default(RecordIsItsHighKey<TRecord>), records, count, checkOrder, highKey);
}
