using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Xfbtree.Btree;
using Xfbtree.Storage;

namespace Xfbtree.InMemory;

/// <summary>Orders records of a <see cref="ShmemBTree{TRecord, TComparer}"/>. Implement it on a struct so the JIT specialises the tree for it.</summary>
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
/// look up by a record whose key fields are set. Not thread-safe.
/// </summary>
/// <typeparam name="TRecord">Record type (at most 64 bytes; its whole value is stored, the comparer defines the order).</typeparam>
/// <typeparam name="TComparer">Struct comparer defining the order.</typeparam>
public sealed class ShmemBTree<TRecord, TComparer> : IDisposable
    where TRecord : unmanaged
    where TComparer : struct, IRecordComparer<TRecord>
{
    ShmemTreeCore<TRecord, TypedRecordOps<TRecord, TComparer>> _core; // mutable struct: not readonly
    readonly TComparer _comparer;
    int _version;            // moves on every change (and on Dispose)
    int _enumerationToken;   // moves when an enumeration starts
    int _stamp;              // moves with either: the one value an enumerator compares per record

    /// <summary>Creates an empty tree.</summary>
    /// <param name="comparer">The order (default instance when omitted).</param>
    /// <param name="options">Where to keep the blocks; null = a private xfile.</param>
    public ShmemBTree(TComparer comparer = default, ShmemBTreeOptions? options = null)
    {
        _core = new ShmemTreeCore<TRecord, TypedRecordOps<TRecord, TComparer>>(new TypedRecordOps<TRecord, TComparer>(comparer), options, "xfbtree-shmem-btree", withEnumCursor: true);
        _comparer = comparer;
    }

    static ReadOnlySpan<byte> Bytes(in TRecord record) => ShmemTreeCore<TRecord, TypedRecordOps<TRecord, TComparer>>.Bytes(in record);

    /// <summary>Number of records.</summary>
    public long Count { get { ThrowIfDisposed(); return _core.Count; } }

    /// <summary>Bytes of shared memory held by the tree's blocks (page-sized btree blocks in use).</summary>
    public long MemoryBytes { get { ThrowIfDisposed(); return _core.Tree.BytesInUse; } }

    /// <summary>Btree blocks in the tree (for tests of the tree's shape; <see cref="MemoryBytes"/> may include pages committed ahead).</summary>
    internal long BlockCount { get { ThrowIfDisposed(); return _core.Tree.BlockCount; } }

    /// <summary>Bytes the backing xfile really has allocated (for a private xfile: this tree's memory; for a shared one: every tree's).</summary>
    public long XfileBytesUsed { get { ThrowIfDisposed(); return _core.Xfile.BytesUsed; } }

    /// <summary>Native bytes of the block table (bookkeeping outside the xfile and the managed heap).</summary>
    public long TableBytes { get { ThrowIfDisposed(); return _core.Tree.Store.TableBytes; } }

    /// <summary>Height of the underlying btree (1 = a single leaf).</summary>
    public int Height { get { ThrowIfDisposed(); return _core.Tree.Root.Height; } }

    /// <summary>Adds a record; false (nothing changed) when a record with the same key exists.</summary>
    public bool Insert(in TRecord record)
    {
        ThrowIfDisposed();
        if (!_core.Insert(in record)) return false;
        Changed();
        return true;
    }

    /// <summary>Removes the record with the key of <paramref name="key"/>; false when there is none.</summary>
    public bool Remove(in TRecord key)
    {
        ThrowIfDisposed();
        if (!_core.Remove(in key)) return false;
        Changed();
        return true;
    }

    /// <summary>Finds the record with the key of <paramref name="key"/>.</summary>
    public bool TryFind(in TRecord key, out TRecord record)
    {
        ThrowIfDisposed();
        return _core.TryFind(in key, BtreeLookup.Equal, out record);
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
        return _core.Cursor.Lookup(Bytes(key), BtreeLookup.Equal);
    }

    /// <summary>Finds the last record whose key is at most <paramref name="key"/> (floor).</summary>
    public bool TryFindLessOrEqual(in TRecord key, out TRecord record)
    {
        ThrowIfDisposed();
        return _core.TryFind(in key, BtreeLookup.LessOrEqual, out record);
    }

    /// <summary>Finds the first record whose key is at least <paramref name="key"/> (ceiling).</summary>
    public bool TryFindGreaterOrEqual(in TRecord key, out TRecord record)
    {
        ThrowIfDisposed();
        return _core.TryFind(in key, BtreeLookup.GreaterOrEqual, out record);
    }

    /// <summary>
    /// Enumerates, in order and without allocating, the records from <paramref name="low"/> to
    /// <paramref name="high"/> (both inclusive). Modifying the tree, or starting another enumeration, ends
    /// this one with <see cref="InvalidOperationException"/>.
    /// </summary>
    public RangeEnumerator Range(in TRecord low, in TRecord high)
    {
        ThrowIfDisposed();
        _core.EnumCursor!.Release();
        _enumerationToken++;
        _stamp++;
        return new RangeEnumerator(this, low, high, bounded: true);
    }

    /// <summary>Enumerates every record in order (see <see cref="Range"/>).</summary>
    public RangeEnumerator GetEnumerator()
    {
        ThrowIfDisposed();
        _core.EnumCursor!.Release();
        _enumerationToken++;
        _stamp++;
        return new RangeEnumerator(this, default, default, bounded: false);
    }

    /// <summary>
    /// Loads records sorted strictly ascending into an empty tree (blocks filled to about 75 %, as XFS's
    /// bulk loader does by default). Throws <see cref="ArgumentException"/> when the input is not strictly sorted.
    /// </summary>
    public void BulkLoad(ReadOnlySpan<TRecord> sorted)
    {
        ThrowIfDisposed();
        if (_core.BulkLoad(sorted)) Changed();
    }

    /// <summary>Runs the engine's structure checker (for tests and diagnostics); returns the violations found.</summary>
    public IReadOnlyList<string> CheckStructure()
    {
        ThrowIfDisposed();
        return _core.CheckStructure();
    }

    /// <summary>Releases the tree's memory (and its xfile when the tree created it). Later calls throw <see cref="ObjectDisposedException"/>.</summary>
    public void Dispose()
    {
        Changed(); // ends enumerations (their records' memory goes with the tree)
        _core.Dispose();
    }

    void Changed()
    {
        _version++;
        _stamp++;
    }

    void ThrowIfDisposed() => ObjectDisposedException.ThrowIf(_core.Disposed, this);

    /// <summary>
    /// An allocation-free, in-order enumerator over a key range (a ref struct: use it with foreach). It reads the
    /// records of one leaf in place and goes to the engine's cursor only at leaf boundaries (every step between
    /// leaves is checked as <c>Increment</c> checks it); per record, <see cref="MoveNext"/> compares the map's stamp
    /// (moved by every change, every new enumeration and Dispose) and an index. The high bound is compared once per
    /// leaf when the leaf's last record is in range, else the leaf's in-range prefix is found once by binary search.
    /// </summary>
    public unsafe ref struct RangeEnumerator
    {
        readonly ShmemBTree<TRecord, TComparer> _map;
        readonly TRecord _low;
        readonly TRecord _high;
        readonly bool _bounded;
        readonly int _stamp;   // the map's stamp when this enumeration started (compared per record)
        readonly int _version; // the map's version and enumeration token then (to say which one moved)
        readonly int _token;
        TRecord* _records;   // the current leaf's records (null before the first MoveNext and after the end)
        int _index;          // current record in the leaf
        int _limit;          // records of the leaf that are in range: [0, _limit)
        bool _lastLeaf;      // the high bound ends inside this leaf
        bool _started;

        internal RangeEnumerator(ShmemBTree<TRecord, TComparer> map, TRecord low, TRecord high, bool bounded)
        {
            _map = map;
            _low = low;
            _high = high;
            _bounded = bounded;
            _stamp = map._stamp;
            _version = map._version;
            _token = map._enumerationToken;
        }

        /// <summary>Returns this enumerator (foreach support).</summary>
        public readonly RangeEnumerator GetEnumerator() => this;

        /// <summary>The current record, read in place (valid until the next <see cref="MoveNext"/> and while the map is unchanged).</summary>
        public readonly ref readonly TRecord Current
        {
            [MethodImpl(MethodImplOptions.AggressiveInlining)]
            get
            {
                // The stamp also moves on Dispose, so the leaf's memory is still mapped when this passes.
                if (_stamp != _map._stamp || (uint)_index >= (uint)_limit) ThrowNoCurrent();
                return ref _records[_index];
            }
        }

        /// <summary>Advances to the next record in range; false at the end.</summary>
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public bool MoveNext()
        {
            if (_stamp != _map._stamp) ThrowChanged();
            if (++_index < _limit) return true;
            return MoveToNextLeaf();
        }

        bool MoveToNextLeaf()
        {
            var cur = _map._core.EnumCursor!;
            bool found;
            if (!_started)
            {
                _started = true;
                found = _bounded ? cur.Lookup(Bytes(_low), BtreeLookup.GreaterOrEqual) : cur.MoveFirst();
            }
            else
            {
                found = _records != null && !_lastLeaf && cur.NextLeaf();
            }
            if (!found)
            {
                End();
                return false;
            }
            _records = (TRecord*)cur.LeafRecords(out int n);
            _index = cur.IndexAt(0);
            _limit = n;
            if (_bounded && _map._comparer.Compare(in _records[n - 1], in _high) > 0)
            {
                // The range ends in this leaf: first record above the high bound, by binary search in [_index, n).
                int lo = _index, hi = n - 1;
                while (lo < hi)
                {
                    int mid = (lo + hi) >>> 1;
                    if (_map._comparer.Compare(in _records[mid], in _high) > 0) hi = mid;
                    else lo = mid + 1;
                }
                _limit = lo;
                _lastLeaf = true;
            }
            if (_index < _limit) return true;
            End();
            return false;
        }

        void End()
        {
            _records = null;
            _index = 0;
            _limit = 0;
            _lastLeaf = true;
        }

        [MethodImpl(MethodImplOptions.NoInlining)]
        readonly void ThrowChanged()
        {
            _map.ThrowIfDisposed();
            if (_version != _map._version) throw new InvalidOperationException("the tree changed during enumeration");
            throw new InvalidOperationException("another enumeration of this tree was started");
        }

        [MethodImpl(MethodImplOptions.NoInlining)]
        readonly void ThrowNoCurrent()
        {
            if (_stamp != _map._stamp) ThrowChanged();
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
