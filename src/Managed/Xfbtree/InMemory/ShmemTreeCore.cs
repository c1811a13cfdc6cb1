using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Xfbtree.Btree;
using Xfbtree.Storage;

namespace Xfbtree.InMemory;

/// <summary>
/// The part <see cref="ShmemBTree{TRecord, TComparer}"/> and <see cref="ShmemIntervalBTree{TRecord, TComparer}"/>
/// share: the xfile (owned or given), the tree on it, its cursor(s), the record count, bulk load, lookups and
/// disposal. A mutable struct held in a (non-readonly) field of its owner: no allocation and no indirection of its own.
/// </summary>
[System.Diagnostics.CodeAnalysis.SuppressMessage("Design", "CA1001", Justification = "It is IDisposable; the analyzer still reports the struct. Its owners call Dispose from theirs.")]
internal struct ShmemTreeCore<TRecord, TOps> : IDisposable
    where TRecord : unmanaged
    where TOps : struct, IBtreeOps
{
    readonly Xfile? _ownedXfile;
    internal readonly Xfile Xfile;
    internal readonly Xfbtree<TOps> Tree;
    internal readonly BtreeCursor<TOps> Cursor;
    /// <summary>The enumeration cursor, when the owner asked for one.</summary>
    internal readonly BtreeCursor<TOps>? EnumCursor;
    internal long Count;
    internal bool Disposed;
    readonly Func<long> _claimBlock;     // the store's AllocateBlock / FreeBlock, made once (bulk loads allocate no delegate)
    readonly Action<long> _unclaimBlock;

    internal ShmemTreeCore(TOps ops, ShmemBTreeOptions? options, string xfileName, bool withEnumCursor)
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
            Cursor = Tree.CreateCursor();
            EnumCursor = withEnumCursor ? Tree.CreateCursor() : null;
            _claimBlock = Tree.Store.AllocateBlock;
            _unclaimBlock = Tree.Store.FreeBlock;
        }
        catch
        {
            _ownedXfile?.Dispose();
            throw;
        }
        Count = 0;
        Disposed = false;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static ReadOnlySpan<byte> Bytes(in TRecord record) => MemoryMarshal.AsBytes(new ReadOnlySpan<TRecord>(in record));

    /// <summary>Adds a record; false (nothing changed) when a record with the same key exists.</summary>
    internal bool Insert(in TRecord record)
    {
        if (!Cursor.Insert(Bytes(record))) return false;
        Count++;
        return true;
    }

    /// <summary>Removes the record with the key of <paramref name="key"/>; false when there is none.</summary>
    internal bool Remove(in TRecord key)
    {
        if (!Cursor.Lookup(Bytes(key), BtreeLookup.Equal)) return false;
        Cursor.Delete();
        Count--;
        return true;
    }

    /// <summary>The record found by a lookup of <paramref name="key"/> with <paramref name="how"/>.</summary>
    internal readonly bool TryFind(in TRecord key, BtreeLookup how, out TRecord record)
    {
        if (Cursor.Lookup(Bytes(key), how))
        {
            record = MemoryMarshal.Read<TRecord>(Cursor.Current);
            return true;
        }
        record = default;
        return false;
    }

    internal readonly int TryFindMany(ReadOnlySpan<TRecord> keys, Span<TRecord> records, Span<bool> found)
    {
        if (records.Length < keys.Length) throw new ArgumentException("records is shorter than keys", nameof(records));
        if (found.Length < keys.Length) throw new ArgumentException("found is shorter than keys", nameof(found));
        return Cursor.LookupEqualBatch(MemoryMarshal.AsBytes(keys), MemoryMarshal.AsBytes(records), found);
    }

    /// <summary>
    /// Loads records sorted strictly ascending into an empty tree; false when there were none (nothing changed).
    /// Throws <see cref="ArgumentException"/> (tree unchanged, no block kept) when they are not strictly ascending.
    /// </summary>
    internal bool BulkLoad(ReadOnlySpan<TRecord> sorted)
    {
        if (Count != 0) throw new InvalidOperationException("bulk load needs an empty tree");
        if (sorted.IsEmpty) return false;
        Cursor.Release();
        EnumCursor?.Release();
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
        Count = sorted.Length;
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
    /// Visits every record in key order, leaf by leaf: the records of a leaf are read in place (the leaf's record
    /// count was checked against its maxrecs when the cursor entered it), the visitor's Visit is called directly
    /// (inlined for struct visitors), and the cursor is asked only for the next leaf. False when the visitor stopped.
    /// </summary>
    internal readonly unsafe bool VisitAll<TVisitor>(ref TVisitor visitor) where TVisitor : IRecordVisitor<TRecord>
    {
        var cursor = Cursor;
        if (!cursor.MoveFirst()) return true;
        do
        {
            var records = (TRecord*)cursor.LeafRecords(out int n);
            for (int i = 0; i < n; i++)
            {
                if (!visitor.Visit(in records[i]))
                {
                    cursor.SetLeafIndex(i);
                    return false;
                }
            }
        }
        while (cursor.NextLeaf());
        return true;
    }

    /// <summary>Runs the engine's structure checker; returns the violations found.</summary>
    internal readonly IReadOnlyList<string> CheckStructure()
    {
        Cursor.Release();
        EnumCursor?.Release();
        return Tree.Tree.Check().Violations;
    }

    /// <summary>Releases the tree's memory (and its xfile when the tree created it); once.</summary>
    public void Dispose()
    {
        if (Disposed) return;
        Disposed = true;
        Cursor?.Dispose();
        EnumCursor?.Dispose();
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
