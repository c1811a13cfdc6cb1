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
    readonly Xfile? _ownedXfile;
    readonly Xfile _xfile;
    readonly Xfbtree<TypedRecordOps<TRecord, TComparer>> _tree;
    readonly BtreeCursor<TypedRecordOps<TRecord, TComparer>> _cursor;
    readonly BtreeCursor<TypedRecordOps<TRecord, TComparer>> _enumCursor;
    readonly TComparer _comparer;
    long _count;
    int _version;
    int _enumerationToken;
    bool _disposed;

    /// <summary>Creates an empty tree.</summary>
    /// <param name="comparer">The order (default instance when omitted).</param>
    /// <param name="options">Where to keep the blocks; null = a private xfile.</param>
    public ShmemBTree(TComparer comparer = default, ShmemBTreeOptions? options = null)
    {
        options ??= new ShmemBTreeOptions();
        // The whole record is the key, and the engine takes keys of up to MaxKeySize / 2 bytes (node slots of
        // overlapping trees hold two keys in the same scratch).
        if (Unsafe.SizeOf<TRecord>() > BtreeGeometry.MaxKeySize / 2) throw new ArgumentException($"records larger than {BtreeGeometry.MaxKeySize / 2} bytes are not supported");
        _comparer = comparer;
        if (options.Xfile is null) _ownedXfile = Xfile.Create(options.XfileOptions ?? new XfileOptions { Name = "xfbtree-shmem-btree" });
        _xfile = options.Xfile ?? _ownedXfile!;
        try
        {
            _tree = new Xfbtree<TypedRecordOps<TRecord, TComparer>>(new TypedRecordOps<TRecord, TComparer>(comparer), _xfile, 0, options.PartitionStart, options.PartitionLength);
            _tree.Store.TrackDirty = false;
            _cursor = _tree.CreateCursor();
            _enumCursor = _tree.CreateCursor();
        }
        catch
        {
            _ownedXfile?.Dispose();
            throw;
        }
    }

    /// <summary>Number of records.</summary>
    public long Count { get { ThrowIfDisposed(); return _count; } }

    /// <summary>Bytes of shared memory held by the tree's blocks (page-sized btree blocks in use).</summary>
    public long MemoryBytes { get { ThrowIfDisposed(); return _tree.BytesInUse; } }

    /// <summary>Bytes the backing xfile really has allocated (for a private xfile: this tree's memory; for a shared one: every tree's).</summary>
    public long XfileBytesUsed { get { ThrowIfDisposed(); return _xfile.BytesUsed; } }

    /// <summary>Native bytes of the block table (bookkeeping outside the xfile and the managed heap).</summary>
    public long TableBytes { get { ThrowIfDisposed(); return _tree.Store.TableBytes; } }

    /// <summary>Height of the underlying btree (1 = a single leaf).</summary>
    public int Height { get { ThrowIfDisposed(); return _tree.Root.Height; } }

    static ReadOnlySpan<byte> Bytes(in TRecord record) => MemoryMarshal.AsBytes(new ReadOnlySpan<TRecord>(in record));

    /// <summary>Adds a record; false (nothing changed) when a record with the same key exists.</summary>
    public bool Insert(in TRecord record)
    {
        ThrowIfDisposed();
        if (!_cursor.Insert(Bytes(record))) return false;
        _count++;
        _version++;
        return true;
    }

    /// <summary>Removes the record with the key of <paramref name="key"/>; false when there is none.</summary>
    public bool Remove(in TRecord key)
    {
        ThrowIfDisposed();
        if (!_cursor.Lookup(Bytes(key), BtreeLookup.Equal)) return false;
        _cursor.Delete();
        _count--;
        _version++;
        return true;
    }

    /// <summary>Finds the record with the key of <paramref name="key"/>.</summary>
    public bool TryFind(in TRecord key, out TRecord record)
    {
        ThrowIfDisposed();
        if (_cursor.Lookup(Bytes(key), BtreeLookup.Equal))
        {
            record = MemoryMarshal.Read<TRecord>(_cursor.Current);
            return true;
        }
        record = default;
        return false;
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
        if (records.Length < keys.Length) throw new ArgumentException("records is shorter than keys", nameof(records));
        if (found.Length < keys.Length) throw new ArgumentException("found is shorter than keys", nameof(found));
        return _cursor.LookupEqualBatch(MemoryMarshal.AsBytes(keys), MemoryMarshal.AsBytes(records), found);
    }

    /// <summary>True when a record with the key of <paramref name="key"/> exists.</summary>
    public bool Contains(in TRecord key)
    {
        ThrowIfDisposed();
        return _cursor.Lookup(Bytes(key), BtreeLookup.Equal);
    }

    /// <summary>Finds the last record whose key is at most <paramref name="key"/> (floor).</summary>
    public bool TryFindLessOrEqual(in TRecord key, out TRecord record)
    {
        ThrowIfDisposed();
        if (_cursor.Lookup(Bytes(key), BtreeLookup.LessOrEqual))
        {
            record = MemoryMarshal.Read<TRecord>(_cursor.Current);
            return true;
        }
        record = default;
        return false;
    }

    /// <summary>Finds the first record whose key is at least <paramref name="key"/> (ceiling).</summary>
    public bool TryFindGreaterOrEqual(in TRecord key, out TRecord record)
    {
        ThrowIfDisposed();
        if (_cursor.Lookup(Bytes(key), BtreeLookup.GreaterOrEqual))
        {
            record = MemoryMarshal.Read<TRecord>(_cursor.Current);
            return true;
        }
        record = default;
        return false;
    }

    /// <summary>
    /// Enumerates, in order and without allocating, the records from <paramref name="low"/> to
    /// <paramref name="high"/> (both inclusive). Modifying the tree, or starting another enumeration, ends
    /// this one with <see cref="InvalidOperationException"/>.
    /// </summary>
    public RangeEnumerator Range(in TRecord low, in TRecord high)
    {
        ThrowIfDisposed();
        _enumCursor.Release();
        return new RangeEnumerator(this, low, high, bounded: true, ++_enumerationToken);
    }

    /// <summary>Enumerates every record in order (see <see cref="Range"/>).</summary>
    public RangeEnumerator GetEnumerator()
    {
        ThrowIfDisposed();
        _enumCursor.Release();
        return new RangeEnumerator(this, default, default, bounded: false, ++_enumerationToken);
    }

    /// <summary>
    /// Loads records sorted strictly ascending into an empty tree (blocks filled to about 75 %, as XFS's
    /// bulk loader does by default). Throws <see cref="ArgumentException"/> when the input is not strictly sorted.
    /// </summary>
    public void BulkLoad(ReadOnlySpan<TRecord> sorted)
    {
        ThrowIfDisposed();
        if (_count != 0) throw new InvalidOperationException("bulk load needs an empty tree");
        if (sorted.IsEmpty) return;
        _cursor.Release();
        _enumCursor.Release();
        var store = _tree.Store;
        long oldRoot = _tree.Root.Pointer;
        var plan = BtreeBulkLoader.ComputeGeometry(_tree.Tree.Geometry, sorted.Length);
        var source = new SpanSource(MemoryMarshal.AsBytes(sorted), Unsafe.SizeOf<TRecord>());
        var staged = new BtreeRootValue(BtreeHeader.NullPointer, 1);
        var staging = new Btree<TypedRecordOps<TRecord, TComparer>>(_tree.Tree.Ops, store, staged, new byte[16], 0);
        BtreeBulkLoader.Load(staging, plan, ref source, store.AllocateBlock);
        // Commit: one root update, then free the old empty root leaf.
        _tree.Root.Set(staged.Pointer, staged.Height);
        store.FreeBlock(oldRoot);
        _count = sorted.Length;
        _version++;
    }

    ref struct SpanSource(ReadOnlySpan<byte> data, int recordSize) : IBtreeRecordSource
    {
        readonly ReadOnlySpan<byte> _data = data;
        int _offset;
        public void Fill(Span<byte> destination, int count)
        {
            int bytes = count * recordSize;
            _data.Slice(_offset, bytes).CopyTo(destination);
            _offset += bytes;
        }
    }

    /// <summary>Runs the engine's structure checker (for tests and diagnostics); returns the violations found.</summary>
    public IReadOnlyList<string> CheckStructure()
    {
        ThrowIfDisposed();
        _cursor.Release();
        _enumCursor.Release();
        return _tree.Tree.Check().Violations;
    }

    /// <summary>Releases the tree's memory (and its xfile when the tree created it). Later calls throw <see cref="ObjectDisposedException"/>.</summary>
    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        _cursor?.Dispose();
        _enumCursor?.Dispose();
        _tree?.Dispose();
        _ownedXfile?.Dispose();
    }

    void ThrowIfDisposed() => ObjectDisposedException.ThrowIf(_disposed, this);

    /// <summary>An allocation-free, in-order enumerator over a key range (a ref struct: use it with foreach).</summary>
    public ref struct RangeEnumerator
    {
        readonly ShmemBTree<TRecord, TComparer> _map;
        readonly TRecord _low;
        readonly TRecord _high;
        readonly bool _bounded;
        readonly int _version;
        readonly int _token;
        bool _started;
        bool _done;

        internal RangeEnumerator(ShmemBTree<TRecord, TComparer> map, TRecord low, TRecord high, bool bounded, int token)
        {
            _map = map;
            _low = low;
            _high = high;
            _bounded = bounded;
            _version = map._version;
            _token = token;
        }

        /// <summary>Returns this enumerator (foreach support).</summary>
        public readonly RangeEnumerator GetEnumerator() => this;

        /// <summary>The current record (valid until the next <see cref="MoveNext"/>).</summary>
        public readonly ref readonly TRecord Current => ref MemoryMarshal.AsRef<TRecord>(_map._enumCursor.Current);

        /// <summary>Advances to the next record in range; false at the end.</summary>
        public bool MoveNext()
        {
            _map.ThrowIfDisposed();
            if (_version != _map._version) throw new InvalidOperationException("the tree changed during enumeration");
            if (_token != _map._enumerationToken) throw new InvalidOperationException("another enumeration of this tree was started");
            if (_done) return false;
            var cur = _map._enumCursor;
            bool found;
            if (!_started)
            {
                _started = true;
                found = _bounded ? cur.Lookup(Bytes(_low), BtreeLookup.GreaterOrEqual) : cur.MoveFirst();
            }
            else
            {
                found = cur.Increment();
            }
            if (found && _bounded && _map._comparer.Compare(in MemoryMarshal.AsRef<TRecord>(cur.Current), in _high) > 0) found = false;
            if (!found) _done = true;
            return found;
        }
    }
}

/// <summary>Ops table of the typed map: the whole record is the key, ordered by the comparer, on long-form blocks.</summary>
internal readonly struct TypedRecordOps<TRecord, TComparer> : IBtreeOps
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

    // The engine always hands exact-size slices (RecordSize/KeySize bytes), so the reinterpretation below stays
    // inside the span; skipping MemoryMarshal.AsRef's length check matters in the binary search.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public int CompareKeys(ReadOnlySpan<byte> a, ReadOnlySpan<byte> b)
        => _comparer.Compare(in Unsafe.As<byte, TRecord>(ref MemoryMarshal.GetReference(a)), in Unsafe.As<byte, TRecord>(ref MemoryMarshal.GetReference(b)));
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public int CompareRecordToKey(ReadOnlySpan<byte> record, ReadOnlySpan<byte> key)
        => _comparer.Compare(in Unsafe.As<byte, TRecord>(ref MemoryMarshal.GetReference(record)), in Unsafe.As<byte, TRecord>(ref MemoryMarshal.GetReference(key)));
    public void GetKey(ReadOnlySpan<byte> record, Span<byte> key) => record[..Unsafe.SizeOf<TRecord>()].CopyTo(key);
    public void GetHighKey(ReadOnlySpan<byte> record, Span<byte> key) => record[..Unsafe.SizeOf<TRecord>()].CopyTo(key);
    public bool RecordsInOrder(ReadOnlySpan<byte> previous, ReadOnlySpan<byte> next) => CompareKeys(previous, next) < 0;
    public string? ValidateRecord(ReadOnlySpan<byte> record) => null;
}
