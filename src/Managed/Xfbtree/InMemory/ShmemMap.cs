using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Xfbtree.Btree;
using Xfbtree.Storage;

namespace Xfbtree.InMemory;

/// <summary>One key and its value as a <see cref="ShmemMap{TKey, TValue, TComparer}"/> stores them (the key first). A plain value: each reader gets its own copy.</summary>
/// <typeparam name="TKey">The key type.</typeparam>
/// <typeparam name="TValue">The value type.</typeparam>
[StructLayout(LayoutKind.Sequential)]
public struct ShmemMapEntry<TKey, TValue>
    where TKey : unmanaged
    where TValue : unmanaged
{
    /// <summary>The key.</summary>
    public TKey Key;
    /// <summary>The value.</summary>
    public TValue Value;

    /// <summary>An entry of <paramref name="key"/> and <paramref name="value"/>.</summary>
    public ShmemMapEntry(TKey key, TValue value)
    {
        Key = key;
        Value = value;
    }
}

/// <summary>
/// A sorted dictionary of unmanaged keys and values in shared memory (an xfile), on the same btree engine as
/// <see cref="ShmemBTree{TRecord, TComparer}"/>: each entry is stored as one record (key, then value), ordered and
/// looked up by the key alone with <typeparamref name="TComparer"/>. No per-entry objects and no allocation per
/// operation.
/// </summary>
/// <remarks>
/// <b>Threads: any number of readers and one writer at a time</b>, as for <see cref="ShmemBTree{TRecord, TComparer}"/>:
/// <see cref="TryGetValue"/>, <see cref="ContainsKey"/>, <see cref="TryGetValues"/>, <see cref="TryGetFirst"/>,
/// <see cref="TryGetLast"/>, <see cref="Range"/>, <see cref="RangeDescending"/>, enumeration and <see cref="Count"/>
/// take no lock and may run on any number of threads while one thread writes (<see cref="TryAdd"/>, <see cref="Set"/>,
/// <see cref="SetMany"/>, <see cref="Remove"/>, <see cref="Clear"/>, which take the map's write lock). A read returns
/// only entries that were in the map at some moment during the call. <see cref="Dispose"/> must not run while any
/// other call does. The map cannot be shared with another process (its block table and lock live in this one).
/// </remarks>
/// <typeparam name="TKey">Key type (key and value together at most 64 bytes).</typeparam>
/// <typeparam name="TValue">Value type.</typeparam>
/// <typeparam name="TComparer">Struct comparer of keys (implement it on a struct so the JIT inlines it).</typeparam>
public sealed class ShmemMap<TKey, TValue, TComparer> : IDisposable
    where TKey : unmanaged
    where TValue : unmanaged
    where TComparer : struct, IRecordComparer<TKey>
{
    ShmemTreeCore<ShmemMapEntry<TKey, TValue>, MapEntryOps<TKey, TValue, TComparer>> _core; // mutable struct: not readonly
    readonly TComparer _comparer;

    /// <summary>Creates an empty map.</summary>
    /// <param name="comparer">The key order (default instance when omitted).</param>
    /// <param name="options">Where to keep the blocks; null = a private xfile.</param>
    public ShmemMap(TComparer comparer = default, ShmemBTreeOptions? options = null)
    {
        _core = new(new MapEntryOps<TKey, TValue, TComparer>(comparer), options, "xfbtree-shmem-map", RecordKeyPrefixes.For<TKey, TComparer>(comparer));
        _comparer = comparer;
    }

    static ReadOnlySpan<byte> KeyBytes(in TKey key) => MemoryMarshal.AsBytes(new ReadOnlySpan<TKey>(in key));
    static ReadOnlySpan<byte> EntryBytes(in ShmemMapEntry<TKey, TValue> entry) => MemoryMarshal.AsBytes(new ReadOnlySpan<ShmemMapEntry<TKey, TValue>>(in entry));

    /// <summary>The block store (tests and the fuzz target).</summary>
    internal XfbtreeBlockStore StoreForTests => _core.Tree.Store;

    /// <summary>Number of entries (safe to read while another thread writes).</summary>
    public long Count { get { ThrowIfDisposed(); return Volatile.Read(ref _core.Count.Value); } }

    /// <summary>Sidecars that differ from their blocks (and, in <paramref name="current"/>, how many are current); tests and the fuzz target.</summary>
    internal int CheckSidecars(out long current) { ThrowIfDisposed(); return _core.CheckSidecars(out current); }

    /// <summary>Bytes of shared memory held by the map's blocks.</summary>
    public long MemoryBytes { get { ThrowIfDisposed(); return _core.Tree.BytesInUse; } }

    /// <summary>Which pages the map's memory got (huge pages or not; see <see cref="Xfile.HugePageDescription"/> for why).</summary>
    public XfileHugePageMode HugePageMode { get { ThrowIfDisposed(); return _core.Xfile.HugePageMode; } }

    /// <summary>Adds the key with the value; false (nothing changed) when the key is already there.</summary>
    public bool TryAdd(in TKey key, in TValue value)
    {
        ThrowIfDisposed();
        var entry = new ShmemMapEntry<TKey, TValue>(key, value);
        return _core.Insert(in entry);
    }

    /// <summary>Sets the key's value, adding the key when it is not there; true when it replaced a value.</summary>
    public bool Set(in TKey key, in TValue value)
    {
        ThrowIfDisposed();
        var entry = new ShmemMapEntry<TKey, TValue>(key, value);
        return _core.Upsert(in entry);
    }

    /// <summary>
    /// Sets <paramref name="values"/>[i] for each <paramref name="keys"/>[i] (any order; for a key given twice, the
    /// last of its values wins); returns how many keys were added (the others were replaced). The pairs are sorted in chunks of bounded size
    /// (the stack, or native memory of about twice the batch and at most 64 MiB, freed before it returns) and applied in
    /// key order. Allocates nothing on the managed heap.
    /// </summary>
    public int SetMany(ReadOnlySpan<TKey> keys, ReadOnlySpan<TValue> values)
    {
        ThrowIfDisposed();
        if (values.Length != keys.Length) throw new ArgumentException("values and keys differ in length", nameof(values));
        int small = BatchChunk<ShmemMapEntry<TKey, TValue>>.StackCapacity;
        using var chunk = keys.Length <= small ? default : new BatchChunk<ShmemMapEntry<TKey, TValue>>(keys.Length);
        Span<ShmemMapEntry<TKey, TValue>> buffer = keys.Length <= small ? stackalloc ShmemMapEntry<TKey, TValue>[small] : chunk.Buffer;
        Span<ShmemMapEntry<TKey, TValue>> scratch = keys.Length <= small ? stackalloc ShmemMapEntry<TKey, TValue>[small] : chunk.Scratch;
        Span<byte> bucketOf = keys.Length <= small ? default : chunk.BucketOf;
        int chunkLength = BatchTestHooks.ChunkLength(buffer.Length);
        int added = 0;
        bool chunked = keys.Length > chunkLength;
        if (chunked) _core.BeginBatchCall();
        try
        {
            for (int start = 0; start < keys.Length; start += chunkLength)
            {
                var part = buffer[..Math.Min(chunkLength, keys.Length - start)];
                for (int i = 0; i < part.Length; i++) part[i] = new(keys[start + i], values[start + i]);
                BucketSort.Sort(part, scratch, bucketOf, new KeyOrder(_comparer));
                added += _core.UpsertSorted(part);
                if (chunked) BatchTestHooks.AfterChunk?.Invoke();
            }
        }
        finally
        {
            if (chunked) _core.EndBatchCall();
        }
        return added;
    }

    readonly struct KeyOrder(TComparer comparer) : IStableOrder<ShmemMapEntry<TKey, TValue>>
    {
        readonly TComparer _comparer = comparer;
        public int Compare(in ShmemMapEntry<TKey, TValue> x, in ShmemMapEntry<TKey, TValue> y) => _comparer.Compare(in x.Key, in y.Key);
    }

    /// <summary>The value of <paramref name="key"/>; false when the key is not there.</summary>
    public bool TryGetValue(in TKey key, out TValue value)
    {
        ThrowIfDisposed();
        ShmemMapEntry<TKey, TValue> entry = default;
        bool found = _core.Reader.LookupConcurrent(KeyBytes(key), ConcurrentSeek.Equal, MemoryMarshal.AsBytes(new Span<ShmemMapEntry<TKey, TValue>>(ref entry)));
        value = entry.Value;
        return found;
    }

    /// <summary>True when the key is there.</summary>
    public bool ContainsKey(in TKey key) => TryGetValue(key, out _);

    /// <summary>
    /// Looks up many keys at once (their cache misses overlap). For each i, <paramref name="values"/>[i] is the value of
    /// <paramref name="keys"/>[i] when <paramref name="found"/>[i] is true (unchanged otherwise). Returns how many were
    /// found. Allocates nothing.
    /// </summary>
    public int TryGetValues(ReadOnlySpan<TKey> keys, Span<TValue> values, Span<bool> found)
    {
        ThrowIfDisposed();
        if (values.Length < keys.Length) throw new ArgumentException("values is shorter than keys", nameof(values));
        if (found.Length < keys.Length) throw new ArgumentException("found is shorter than keys", nameof(found));
        const int Slice = 64;
        Span<ShmemMapEntry<TKey, TValue>> entries = stackalloc ShmemMapEntry<TKey, TValue>[Slice];
        int hits = 0;
        for (int start = 0; start < keys.Length; start += Slice)
        {
            int n = Math.Min(Slice, keys.Length - start);
            var flags = found.Slice(start, n);
            hits += _core.Reader.LookupEqualBatchConcurrent(MemoryMarshal.AsBytes(keys.Slice(start, n)), MemoryMarshal.AsBytes(entries[..n]), flags);
            for (int i = 0; i < n; i++)
                if (flags[i]) values[start + i] = entries[i].Value;
        }
        return hits;
    }

    /// <summary>The entry with the smallest key; false when the map is empty.</summary>
    public bool TryGetFirst(out TKey key, out TValue value) => TryGetEdge(ConcurrentSeek.First, out key, out value);

    /// <summary>The entry with the largest key; false when the map is empty.</summary>
    public bool TryGetLast(out TKey key, out TValue value) => TryGetEdge(ConcurrentSeek.Last, out key, out value);

    bool TryGetEdge(ConcurrentSeek how, out TKey key, out TValue value)
    {
        ThrowIfDisposed();
        ShmemMapEntry<TKey, TValue> entry = default;
        bool found = _core.Reader.LookupConcurrent(default, how, MemoryMarshal.AsBytes(new Span<ShmemMapEntry<TKey, TValue>>(ref entry)));
        key = entry.Key;
        value = entry.Value;
        return found;
    }

    /// <summary>Removes the key and its value; false when the key is not there.</summary>
    public bool Remove(in TKey key)
    {
        ThrowIfDisposed();
        return _core.RemoveKey(KeyBytes(key));
    }

    /// <summary>Removes every entry (the map stays usable).</summary>
    public void Clear()
    {
        ThrowIfDisposed();
        _core.Clear();
    }

    /// <summary>Enumerates, in ascending key order and without allocating, the entries whose keys are in [<paramref name="low"/>, <paramref name="high"/>].</summary>
    public RangeEnumerator Range(in TKey low, in TKey high)
    {
        ThrowIfDisposed();
        return new RangeEnumerator(this, low, high, bounded: true, descending: false);
    }

    /// <summary>Enumerates, in descending key order, the entries whose keys are in [<paramref name="low"/>, <paramref name="high"/>].</summary>
    public RangeEnumerator RangeDescending(in TKey low, in TKey high)
    {
        ThrowIfDisposed();
        return new RangeEnumerator(this, low, high, bounded: true, descending: true);
    }

    /// <summary>Enumerates every entry in ascending key order.</summary>
    public RangeEnumerator GetEnumerator()
    {
        ThrowIfDisposed();
        return new RangeEnumerator(this, default, default, bounded: false, descending: false);
    }

    /// <summary>Runs the engine's structure checker (for tests and diagnostics); returns the violations found.</summary>
    public IReadOnlyList<string> CheckStructure()
    {
        ThrowIfDisposed();
        return _core.CheckStructure();
    }

    /// <summary>Releases the map's memory (and its xfile when the map created it). Later calls throw <see cref="ObjectDisposedException"/>.</summary>
    public void Dispose() => _core.Dispose();

    void ThrowIfDisposed() => ObjectDisposedException.ThrowIf(_core.Disposed, this);

    /// <summary>
    /// An allocation-free ordered enumerator of entries (a ref struct: use it with foreach); <see cref="Current"/> is a
    /// copy of the entry (key and value by reference into it), checked against concurrent writes, valid until the next
    /// <see cref="MoveNext"/>. Safe while another thread writes (see the class remarks).
    /// </summary>
    public ref struct RangeEnumerator
    {
        readonly ShmemMap<TKey, TValue, TComparer> _map;
        readonly TKey _low;
        readonly TKey _high;
        readonly bool _bounded;
        readonly bool _descending;
        ConcurrentScanPosition _position;
        ShmemMapEntry<TKey, TValue> _a;
        ShmemMapEntry<TKey, TValue> _b;
        bool _inB;
        bool _started;
        bool _onEntry;
        bool _ended;

        internal RangeEnumerator(ShmemMap<TKey, TValue, TComparer> map, TKey low, TKey high, bool bounded, bool descending)
        {
            _map = map;
            _low = low;
            _high = high;
            _bounded = bounded;
            _descending = descending;
        }

        /// <summary>Returns this enumerator (foreach support).</summary>
        public readonly RangeEnumerator GetEnumerator() => this;

        /// <summary>The current entry (a copy; valid until the next <see cref="MoveNext"/>).</summary>
        [System.Diagnostics.CodeAnalysis.UnscopedRef]
        public ref readonly ShmemMapEntry<TKey, TValue> Current
        {
            [MethodImpl(MethodImplOptions.AggressiveInlining)]
            get
            {
                if (!_onEntry) ThrowNoCurrent();
                return ref _inB ? ref _b : ref _a;
            }
        }

        /// <summary>Advances to the next entry in range; false at the end.</summary>
        public bool MoveNext()
        {
            _map.ThrowIfDisposed();
            if (_ended) return false;
            var cursor = _map._core.Reader;
            var current = MemoryMarshal.AsBytes(new Span<ShmemMapEntry<TKey, TValue>>(ref _inB ? ref _b : ref _a));
            var next = MemoryMarshal.AsBytes(new Span<ShmemMapEntry<TKey, TValue>>(ref _inB ? ref _a : ref _b));
            bool found;
            if (!_started)
            {
                _started = true;
                var how = _bounded ? (_descending ? ConcurrentSeek.LessOrEqual : ConcurrentSeek.GreaterOrEqual) : (_descending ? ConcurrentSeek.Last : ConcurrentSeek.First);
                found = cursor.SeekConcurrent(_bounded ? KeyBytes(_descending ? _high : _low) : default, how, next, ref _position);
            }
            else found = cursor.StepConcurrent(ref _position, !_descending, current, next);
            if (found && _bounded)
            {
                ref readonly TKey key = ref (_inB ? ref _a : ref _b).Key;
                if (_descending ? _map._comparer.Compare(in key, in _low) < 0 : _map._comparer.Compare(in key, in _high) > 0) found = false;
            }
            if (!found)
            {
                _ended = true;
                _onEntry = false;
                return false;
            }
            _inB = !_inB;
            _onEntry = true;
            return true;
        }

        [MethodImpl(MethodImplOptions.NoInlining)]
        readonly void ThrowNoCurrent()
        {
            _map.ThrowIfDisposed();
            throw new InvalidOperationException("the enumerator is not on an entry");
        }
    }
}

/// <summary>Ops table of the dictionary-shaped map: records are entries, keys are their key part, ordered by the key comparer.</summary>
internal readonly struct MapEntryOps<TKey, TValue, TComparer> : IBtreeOps
    where TKey : unmanaged
    where TValue : unmanaged
    where TComparer : struct, IRecordComparer<TKey>
{
    readonly TComparer _comparer;
    public MapEntryOps(TComparer comparer) => _comparer = comparer;
    public string Name => "shmem map";
    public uint Magic => 0x58544D4B; // "XTMK"
    public bool LongPointers => true;
    public int RecordSize => Unsafe.SizeOf<ShmemMapEntry<TKey, TValue>>();
    public int KeySize => Unsafe.SizeOf<TKey>();
    public bool Overlapping => false;

    // The engine hands exact-size slices (a record or a key); the key is the record's first KeySize bytes.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public int CompareKeys(ReadOnlySpan<byte> a, ReadOnlySpan<byte> b)
        => _comparer.Compare(in Unsafe.As<byte, TKey>(ref MemoryMarshal.GetReference(a)), in Unsafe.As<byte, TKey>(ref MemoryMarshal.GetReference(b)));
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public int CompareRecordToKey(ReadOnlySpan<byte> record, ReadOnlySpan<byte> key)
        => _comparer.Compare(in Unsafe.As<byte, TKey>(ref MemoryMarshal.GetReference(record)), in Unsafe.As<byte, TKey>(ref MemoryMarshal.GetReference(key)));
    public void GetKey(ReadOnlySpan<byte> record, Span<byte> key) => record[..Unsafe.SizeOf<TKey>()].CopyTo(key);
    public void GetHighKey(ReadOnlySpan<byte> record, Span<byte> key) => record[..Unsafe.SizeOf<TKey>()].CopyTo(key);
    public bool RecordsInOrder(ReadOnlySpan<byte> previous, ReadOnlySpan<byte> next) => CompareKeys(previous, next) < 0;
    public string? ValidateRecord(ReadOnlySpan<byte> record) => null;
}
