using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Xfbtree.Btree;
using Xfbtree.Storage;

namespace Xfbtree.InMemory;

/// <summary>
/// The part <see cref="ShmemBTree{TRecord, TComparer}"/> and <see cref="ShmemIntervalBTree{TRecord, TComparer}"/>
/// share: the xfile (owned or given), the tree on it, its cursor, the record count, bulk load, lookups and
/// disposal. A mutable struct held in a (non-readonly) field of its owner: no allocation and no indirection of its own.
/// </summary>
/// <remarks>
/// Threads: every write takes the write lock (writers exclude each other) and runs as one write operation of the
/// block store (blocks it changes get new versions) through the writer's cursor; reads take no lock and write nothing
/// shared: they use the readers' cursor's concurrent lookups (<c>BtreeCursor.LookupConcurrent</c> and friends), which
/// touch no mutable state of the cursor, so any number of threads read through that one cursor while one writes through
/// the other.
/// </remarks>
[System.Diagnostics.CodeAnalysis.SuppressMessage("Design", "CA1001", Justification = "It is IDisposable; the analyzer still reports the struct. Its owners call Dispose from theirs.")]
internal struct ShmemTreeCore<TRecord, TOps> : IDisposable
    where TRecord : unmanaged
    where TOps : struct, IBtreeOps
{
    readonly Xfile? _ownedXfile;
    internal readonly Xfile Xfile;
    internal readonly Xfbtree<TOps> Tree;
    /// <summary>The writer's cursor (used under the write lock only).</summary>
    internal readonly BtreeCursor<TOps> Cursor;
    /// <summary>
    /// The readers' cursor: every concurrent lookup, batch and scan of any thread goes through it. Nothing writes its
    /// fields after construction, so the geometry the readers load on every step never shares a cache line with the
    /// writer's path state (which changes on every write).
    /// </summary>
    internal readonly BtreeCursor<TOps> Reader;
    readonly Lock _writeLock;
    readonly XfbtreeBlockStore _store;
    /// <summary>The record count (changed by every write; padded away from the fields readers load on every call).</summary>
    internal PaddedLong Count;
    internal bool Disposed;
    readonly Func<long> _claimBlock;     // the store's AllocateBlock / FreeBlock, made once (bulk loads allocate no delegate)
    readonly Action<long> _unclaimBlock;

    internal ShmemTreeCore(TOps ops, ShmemBTreeOptions? options, string xfileName, BtreeKeyPrefixer? prefixer = null)
    {
        options ??= new ShmemBTreeOptions();
        // The whole record is the key, and the engine takes keys of up to MaxKeySize / 2 bytes (node slots of
        // overlapping trees hold two keys in the same scratch).
        if (Unsafe.SizeOf<TRecord>() > BtreeGeometry.MaxKeySize / 2) throw new ArgumentException($"records larger than {BtreeGeometry.MaxKeySize / 2} bytes are not supported");
        _ownedXfile = null;
        if (options.Xfile is null) _ownedXfile = Xfile.Create(options.XfileOptions ?? new XfileOptions { Name = xfileName });
        Xfile = options.Xfile ?? _ownedXfile!;
        try
        {
            Tree = new Xfbtree<TOps>(ops, Xfile, 0, options.PartitionStart, options.PartitionLength);
            Tree.Store.TrackDirty = false;
            if (prefixer != null && Xfile.IsOneMapping)
            {
                // Before the cursors: they take the store's sidecars when they are made.
                var hugePages = Xfile.HugePageMode == XfileHugePageMode.None ? XfileHugePages.Off : XfileHugePages.Preferred;
                Tree.Store.EnableSidecars(new BtreeSidecars(prefixer, Tree.Tree.Geometry, Tree.Store.MaxBlocks, hugePages));
            }
            Cursor = Tree.CreateCursor();
            Reader = Tree.CreateCursor();
            _store = Tree.Store;
            _writeLock = new Lock();
            _claimBlock = Tree.Store.AllocateBlock;
            _unclaimBlock = Tree.Store.FreeBlock;
        }
        catch
        {
            _ownedXfile?.Dispose();
            throw;
        }
        Count.Value = 0;
        Disposed = false;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static ReadOnlySpan<byte> Bytes(in TRecord record) => MemoryMarshal.AsBytes(new ReadOnlySpan<TRecord>(in record));

    /// <summary>Takes the write lock and starts a write operation of the store (see the remarks).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal readonly void BeginWrite()
    {
        _writeLock.Enter();
        _store.BeginWriteOperation();
    }

    /// <summary>Ends the write operation and releases the write lock.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal readonly void EndWrite()
    {
        bool unordered = false;
        try { _store.EndWriteOperation(); }
        finally
        {
            unordered = _store.TakePrefixOrderFailure();
            _writeLock.Exit();
        }
        if (unordered) ThrowPrefixesUnordered();
    }

    /// <summary>After a write completed: the comparer's key prefixes were found out of order (the sidecars are off from now on).</summary>
    static void ThrowPrefixesUnordered() => throw new InvalidOperationException("the comparer's key prefixes (IRecordKeyPrefix.GetKeyPrefix) are not in the comparer's order: the tree searches without them from now on");

    /// <summary>Ends a batch call: its leaves' sidecars are rebuilt (XfbtreeBlockStore.EndSidecarBatch), then the write lock is released.</summary>
    readonly void EndBatch()
    {
        bool unordered = false;
        try { _store.EndSidecarBatch(); }
        finally
        {
            unordered = _store.TakePrefixOrderFailure();
            _writeLock.Exit();
        }
        if (unordered) ThrowPrefixesUnordered();
    }

    /// <summary>
    /// Opens a batch call made of several chunks (<c>InsertMany</c>, <c>RemoveMany</c>, <c>SetMany</c> of more records
    /// than one sorted chunk holds): the leaves any of its chunks change get their sidecars rebuilt once, at
    /// <see cref="EndBatchCall"/>, instead of at the end of every chunk. Every chunk of a large random batch touches
    /// nearly every leaf, and rebuilding them all after each chunk read every leaf back from memory once per chunk.
    /// Between chunks (the write lock released) readers search a leaf whose sidecar is stale in the leaf itself, as
    /// they do after any single write. Must be paired with <see cref="EndBatchCall"/> (in a finally).
    /// </summary>
    internal readonly void BeginBatchCall()
    {
        _writeLock.Enter();
        try { _store.BeginSidecarBatch(); }
        finally { _writeLock.Exit(); }
    }

    /// <summary>Closes the batch call opened by <see cref="BeginBatchCall"/>: rebuilds its leaves' sidecars under the write lock.</summary>
    internal readonly void EndBatchCall()
    {
        _writeLock.Enter();
        EndBatch();
    }

    /// <summary>Adds a record; false (nothing changed) when a record with the same key exists.</summary>
    internal bool Insert(in TRecord record)
    {
        BeginWrite();
        try
        {
            if (!Cursor.Insert(Bytes(record))) return false;
            Count.Value++;
            return true;
        }
        finally { EndWrite(); }
    }

    /// <summary>
    /// Adds records sorted ascending (repeats allowed: the first of a key wins) under one hold of the write lock; returns
    /// how many were added. Records that fall into the leaf the previous insert kept go in as one run (one merge, one
    /// write operation: readers see the run appear at once); any other record is one insert and one write operation.
    /// </summary>
    internal int InsertSorted(ReadOnlySpan<TRecord> sorted)
    {
        int added = 0;
        _writeLock.Enter();
        _store.BeginSidecarBatch();
        try
        {
            for (int i = 0; i < sorted.Length;)
            {
                _store.BeginWriteOperation();
                try
                {
                    int taken = Cursor.InsertRunOnKeptPath(MemoryMarshal.AsBytes(sorted[i..]), out int inserted);
                    if (taken > 0)
                    {
                        Count.Value += inserted;
                        added += inserted;
                        i += taken;
                    }
                    else
                    {
                        if (Cursor.Insert(Bytes(sorted[i])))
                        {
                            Count.Value++;
                            added++;
                        }
                        i++;
                    }
                }
                finally { _store.EndWriteOperation(); }
            }
        }
        finally { EndBatch(); }
        return added;
    }

    /// <summary>
    /// Removes the records with the keys of <paramref name="sorted"/> (ascending, repeats allowed) as
    /// <see cref="InsertSorted"/> adds: the keys that fall into the leaf of the one looked up go as one run when the leaf
    /// keeps enough records (one pass, one write operation), any other key is one delete; returns how many were removed.
    /// </summary>
    internal int RemoveSorted(ReadOnlySpan<TRecord> sorted)
    {
        int removed = 0;
        _writeLock.Enter();
        _store.BeginSidecarBatch();
        try
        {
            for (int i = 0; i < sorted.Length;)
            {
                _store.BeginWriteOperation();
                try
                {
                    if (!Cursor.Lookup(Bytes(sorted[i]), BtreeLookup.Equal))
                    {
                        i++;
                        continue;
                    }
                    int taken = Cursor.DeleteRunInLeaf(MemoryMarshal.AsBytes(sorted[i..]), out int gone);
                    if (taken > 0)
                    {
                        Count.Value -= gone;
                        removed += gone;
                        i += taken;
                    }
                    else
                    {
                        Cursor.Delete();
                        Count.Value--;
                        removed++;
                        i++;
                    }
                }
                finally { _store.EndWriteOperation(); }
            }
        }
        finally { EndBatch(); }
        return removed;
    }

    /// <summary>Adds or replaces the record with the key of <paramref name="record"/>; true when it replaced one.</summary>
    internal bool Upsert(in TRecord record)
    {
        BeginWrite();
        try { return UpsertLocked(Bytes(record)); }
        finally { EndWrite(); }
    }

    bool UpsertLocked(ReadOnlySpan<byte> bytes)
    {
        if (Cursor.Insert(bytes))
        {
            Count.Value++;
            return false;
        }
        if (!Cursor.Lookup(bytes, BtreeLookup.Equal)) throw new InvalidOperationException("a record refused as a duplicate was not found");
        Cursor.Update(bytes);
        return true;
    }

    /// <summary>Adds or replaces records sorted by key, each its own write operation, under one hold of the write lock; returns how many were added (not replaced).</summary>
    internal int UpsertSorted(ReadOnlySpan<TRecord> sorted)
    {
        int added = 0;
        _writeLock.Enter();
        _store.BeginSidecarBatch();
        try
        {
            foreach (ref readonly var record in sorted)
            {
                _store.BeginWriteOperation();
                try
                {
                    if (!UpsertLocked(Bytes(record))) added++;
                }
                finally { _store.EndWriteOperation(); }
            }
        }
        finally { EndBatch(); }
        return added;
    }

    /// <summary>Removes the record with the key <paramref name="key"/> (key bytes); false when there is none.</summary>
    internal bool RemoveKey(ReadOnlySpan<byte> key)
    {
        BeginWrite();
        try
        {
            if (!Cursor.LookupToDelete(key)) return false;
            Cursor.Delete();
            Count.Value--;
            return true;
        }
        finally { EndWrite(); }
    }

    /// <summary>Removes the record with the key of <paramref name="key"/>; false when there is none.</summary>
    internal bool Remove(in TRecord key)
    {
        BeginWrite();
        try
        {
            if (!Cursor.LookupToDelete(Bytes(key))) return false;
            Cursor.Delete();
            Count.Value--;
            return true;
        }
        finally { EndWrite(); }
    }

    /// <summary>
    /// Removes every record: the root becomes a new empty leaf first (readers that start afterwards see an empty
    /// tree), then every old block is freed level by level along the sibling chains (readers still in the old tree see
    /// their blocks' versions move and look again).
    /// </summary>
    internal unsafe void Clear()
    {
        BeginWrite();
        try
        {
            Cursor.Release();
            var root = Tree.Root;
            long ptr = root.Pointer;
            int height = root.Height;
            Tree.Tree.CreateEmpty();
            Count.Value = 0;
            var verifier = Tree.Tree.Verifier;
            bool longPointers = Tree.Tree.Geometry.LongPointers;
            int pointerOffset = Tree.Tree.Geometry.PointerOffset(0, Tree.Tree.Geometry.NodeMaxRecords);
            for (int level = height - 1; level >= 0 && ptr != BtreeHeader.NullPointer; level--)
            {
                long leftmostChild = BtreeHeader.NullPointer;
                for (long p = ptr; p != BtreeHeader.NullPointer;)
                {
                    var block = _store.Read(p, verifier);
                    var b = new ReadOnlySpan<byte>(block.Data, _store.BlockSize);
                    if (p == ptr && level > 0) leftmostChild = BtreeHeader.ReadPointer(b[pointerOffset..], longPointers);
                    long next = BtreeHeader.RightSibling(b, longPointers);
                    _store.Release(block);
                    _store.FreeBlock(p);
                    p = next;
                }
                ptr = leftmostChild;
            }
        }
        finally { EndWrite(); }
    }

    /// <summary>The record found by a concurrent lookup of <paramref name="key"/> with <paramref name="how"/> (safe while others read and one writes).</summary>
    internal readonly bool TryFind(in TRecord key, ConcurrentSeek how, out TRecord record)
    {
        record = default;
        return Reader.LookupConcurrent(Bytes(key), how, MemoryMarshal.AsBytes(new Span<TRecord>(ref record)));
    }

    internal readonly int TryFindMany(ReadOnlySpan<TRecord> keys, Span<TRecord> records, Span<bool> found)
    {
        if (records.Length < keys.Length) throw new ArgumentException("records is shorter than keys", nameof(records));
        if (found.Length < keys.Length) throw new ArgumentException("found is shorter than keys", nameof(found));
        return Reader.LookupEqualBatchConcurrent(MemoryMarshal.AsBytes(keys), MemoryMarshal.AsBytes(records[..keys.Length]), found);
    }

    /// <summary>
    /// Loads records sorted strictly ascending into an empty tree; false when there were none (nothing changed).
    /// Throws <see cref="ArgumentException"/> (tree unchanged, no block kept) when they are not strictly ascending.
    /// </summary>
    internal bool BulkLoad(ReadOnlySpan<TRecord> sorted)
    {
        _writeLock.Enter();
        _store.BeginSidecarBatch();
        try
        {
            _store.BeginWriteOperation();
            try { return BulkLoadLocked(sorted); }
            finally { _store.EndWriteOperation(); }
        }
        finally { EndBatch(); }
    }

    bool BulkLoadLocked(ReadOnlySpan<TRecord> sorted)
    {
        if (Count.Value != 0) throw new InvalidOperationException("bulk load needs an empty tree");
        if (sorted.IsEmpty) return false;
        Cursor.Release();
        var store = Tree.Store;
        var root = Tree.Root;
        long oldRoot = root.Pointer;
        int oldHeight = root.Height;
        var plan = BtreeBulkLoader.ComputeGeometry(Tree.Tree.Geometry, sorted.Length);
        var source = new SpanSource(MemoryMarshal.AsBytes(sorted), Unsafe.SizeOf<TRecord>());
        // The tree itself is the staging target: the loader sets its root once, after the last block is written;
        // a failed load (records out of order, memory full) leaves the root alone and hands its blocks back.
        BtreeBulkLoader.Load(Tree.Tree, plan, ref source, _claimBlock, checkOrder: true, _unclaimBlock);
        System.Diagnostics.Debug.Assert(root.Pointer != oldRoot || root.Height != oldHeight, "bulk load did not set the root");
        store.FreeBlock(oldRoot);
        Count.Value = sorted.Length;
        return true;
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

    /// <summary>
    /// Visits every record in key order (or from the last, <paramref name="reverse"/>), each one a copy checked against
    /// concurrent writes (see <c>BtreeCursor.StepConcurrent</c>); false when the visitor stopped.
    /// </summary>
    internal readonly bool VisitAll<TVisitor>(ref TVisitor visitor, bool reverse = false) where TVisitor : IRecordVisitor<TRecord>
    {
        var position = default(ConcurrentScanPosition);
        TRecord last = default;
        var lastBytes = MemoryMarshal.AsBytes(new Span<TRecord>(ref last));
        if (!Reader.SeekConcurrent(default, reverse ? ConcurrentSeek.Last : ConcurrentSeek.First, lastBytes, ref position)) return true;
        // A leaf at a time: its records are copied to the stack and checked once, then visited from the copy.
        int blockSize = Tree.Store.BlockSize;
        Span<TRecord> leaf = stackalloc TRecord[blockSize / Unsafe.SizeOf<TRecord>() + 1]; // a page: at most 64 KiB
        var leafBytes = MemoryMarshal.AsBytes(leaf);
        bool visited = false;
        while (true)
        {
            int n = Reader.CopyLeafRest(ref position, !reverse, leafBytes);
            if (n < 0)
            {
                // A write touched the leaf: continue after the record visited last (its key is in `last`).
                position = default;
                TRecord previous = last;
                bool more = visited
                    ? Reader.SeekConcurrent(ShmemTreeCore<TRecord, TOps>.Bytes(previous), reverse ? ConcurrentSeek.Less : ConcurrentSeek.Greater, lastBytes, ref position)
                    : Reader.SeekConcurrent(default, reverse ? ConcurrentSeek.Last : ConcurrentSeek.First, lastBytes, ref position);
                if (!more) return true;
                continue;
            }
            visited = true;
            if (reverse)
            {
                for (int i = n - 1; i >= 0; i--)
                    if (!visitor.Visit(in leaf[i])) return false;
                last = leaf[0];
            }
            else
            {
                for (int i = 0; i < n; i++)
                    if (!visitor.Visit(in leaf[i])) return false;
                last = leaf[n - 1];
            }
            TRecord previousLast = last;
            if (!Reader.StepConcurrent(ref position, !reverse, ShmemTreeCore<TRecord, TOps>.Bytes(previousLast), lastBytes)) return true;
        }
    }

    /// <summary>Compares every current sidecar with its block (<c>XfbtreeBlockStore.CheckSidecars</c>) under the write lock; tests and the fuzz target.</summary>
    internal readonly int CheckSidecars(out long current)
    {
        _writeLock.Enter();
        try { return _store.CheckSidecars(out current); }
        finally { _writeLock.Exit(); }
    }

    /// <summary>Runs the engine's structure checker; returns the violations found.</summary>
    internal readonly IReadOnlyList<string> CheckStructure()
    {
        _writeLock.Enter();
        try
        {
            Cursor.Release();
            return Tree.Tree.Check().Violations;
        }
        finally { _writeLock.Exit(); }
    }

    /// <summary>Releases the tree's memory (and its xfile when the tree created it); once.</summary>
    public void Dispose()
    {
        if (Disposed) return;
        Disposed = true;
        Cursor?.Dispose();
        Reader?.Dispose();
        Tree?.Dispose();
        _ownedXfile?.Dispose();
    }
}

/// <summary>
/// The key handling both ops tables share: the whole record is the key, ordered by the record comparer. The engine
/// always hands exact-size slices (RecordSize/KeySize bytes), so the reinterpretation below stays inside the span;
/// skipping MemoryMarshal.AsRef's length check matters in the binary search.
/// </summary>
internal static class WholeRecordKeys<TRecord> where TRecord : unmanaged
{
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static int Compare<TComparer>(in TComparer comparer, ReadOnlySpan<byte> a, ReadOnlySpan<byte> b)
        where TComparer : struct, IRecordComparer<TRecord>
        => comparer.Compare(in Unsafe.As<byte, TRecord>(ref MemoryMarshal.GetReference(a)), in Unsafe.As<byte, TRecord>(ref MemoryMarshal.GetReference(b)));

    internal static void CopyKey(ReadOnlySpan<byte> record, Span<byte> key) => record[..Unsafe.SizeOf<TRecord>()].CopyTo(key);

    /// <summary>
    /// The bulk loader's per-leaf pass (<see cref="IBtreeLeafRunOps"/>) as one loop over the records as
    /// <typeparamref name="TRecord"/>: strict order of adjacent records, and the highest high key when
    /// <paramref name="highKey"/> is not empty (interval maps).
    /// </summary>
    internal static int CheckLeafRun<TComparer, THighKey>(in TComparer comparer, in THighKey highKeys, ReadOnlySpan<byte> records, int count, bool checkOrder, Span<byte> highKey)
        where TComparer : struct, IRecordComparer<TRecord>
        where THighKey : struct, IHighKeyOf<TRecord>
    {
        var run = MemoryMarshal.Cast<byte, TRecord>(records)[..count];
        if (checkOrder)
        {
            for (int i = 1; i < run.Length; i++)
                if (comparer.Compare(in run[i - 1], in run[i]) >= 0) return i;
        }
        if (!highKey.IsEmpty)
        {
            highKeys.GetHighKey(in run[0], out TRecord best);
            for (int i = 1; i < run.Length; i++)
            {
                highKeys.GetHighKey(in run[i], out TRecord high);
                if (comparer.Compare(in high, in best) > 0) best = high;
            }
            MemoryMarshal.Write(highKey, in best);
        }
        return -1;
    }
}

/// <summary>How <see cref="WholeRecordKeys{TRecord}.CheckLeafRun"/> gets a record's high key (the interval comparer's, or the record itself).</summary>
internal interface IHighKeyOf<TRecord> where TRecord : unmanaged
{
    void GetHighKey(in TRecord record, out TRecord highKey);
}

/// <summary>A plain map's records are points: the high key is the record.</summary>
internal readonly struct RecordIsItsHighKey<TRecord> : IHighKeyOf<TRecord> where TRecord : unmanaged
{
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void GetHighKey(in TRecord record, out TRecord highKey) => highKey = record;
}
