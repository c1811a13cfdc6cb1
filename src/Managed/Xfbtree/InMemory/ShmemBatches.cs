using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Xfbtree.Btree;

namespace Xfbtree.InMemory;

/// <summary>
/// Batched writes of the typed maps: the batch is copied in chunks to a scratch buffer, each chunk sorted by the map's
/// comparer and applied in key order under one hold of the write lock (each record is still its own write operation,
/// so readers that overlap one wait for one record's change, not for the chunk). In key order, the next key usually
/// falls into the leaf the previous insert kept (the cursor's kept insert path), so it needs no descent; the larger the
/// chunk against the tree's leaf count, the more often. The scratch is bounded by a constant
/// (<see cref="BatchChunk{T}"/>): the memory of a batch does not grow with its length.
/// </summary>
internal static class ShmemBatches<TRecord, TComparer>
    where TRecord : unmanaged
    where TComparer : struct, IRecordComparer<TRecord>
{
    readonly struct Order(TComparer comparer) : IStableOrder<TRecord>
    {
        readonly TComparer _comparer = comparer;
        public int Compare(in TRecord x, in TRecord y) => _comparer.Compare(in x, in y);
    }

    internal static int InsertMany<TOps>(ref ShmemTreeCore<TRecord, TOps> core, TComparer comparer, ReadOnlySpan<TRecord> records)
        where TOps : struct, IBtreeOps
        => Apply(ref core, comparer, records, insert: true);

    internal static int RemoveMany<TOps>(ref ShmemTreeCore<TRecord, TOps> core, TComparer comparer, ReadOnlySpan<TRecord> keys)
        where TOps : struct, IBtreeOps
        => Apply(ref core, comparer, keys, insert: false);

    static int Apply<TOps>(ref ShmemTreeCore<TRecord, TOps> core, TComparer comparer, ReadOnlySpan<TRecord> input, bool insert)
        where TOps : struct, IBtreeOps
    {
        int small = BatchChunk<TRecord>.StackCapacity;
        using var chunk = input.Length <= small ? default : new BatchChunk<TRecord>(input.Length);
        Span<TRecord> buffer = input.Length <= small ? stackalloc TRecord[small] : chunk.Buffer;
        Span<TRecord> scratch = input.Length <= small ? stackalloc TRecord[small] : chunk.Scratch;
        int changed = 0;
        for (int start = 0; start < input.Length; start += buffer.Length)
        {
            var part = buffer[..Math.Min(buffer.Length, input.Length - start)];
            input.Slice(start, part.Length).CopyTo(part);
            StableSort.Sort(part, scratch, new Order(comparer));
            changed += insert ? core.InsertSorted(part) : core.RemoveSorted(part);
        }
        return changed;
    }
}

/// <summary>
/// The scratch of a batch write: a chunk of the batch and the sort's scratch beside it. Batches of up to
/// <see cref="StackCapacity"/> elements use the stack (the caller's stackalloc); larger ones native memory of at most
/// <see cref="MaxChunkBytes"/> per span, freed when the batch ends (no managed allocation). A larger chunk keeps more
/// neighbouring keys in one leaf (measured at 10 M random records: 16 KiB chunks hardly ever put two keys in one leaf).
/// </summary>
internal readonly unsafe struct BatchChunk<T> : IDisposable where T : unmanaged
{
    /// <summary>Bytes of one chunk on the stack.</summary>
    internal const int StackBytes = 16 * 1024;
    /// <summary>Most bytes of one native chunk (the sort's scratch is as large again).</summary>
    internal const int MaxChunkBytes = 1 << 20;

    /// <summary>Elements of a chunk on the stack.</summary>
    internal static int StackCapacity => Math.Max(1, StackBytes / sizeof(T));

    readonly T* _memory;
    readonly int _capacity;

    /// <summary>Native memory for a batch of <paramref name="length"/> elements, or a chunk of them.</summary>
    internal BatchChunk(int length)
    {
        _capacity = Math.Max(1, Math.Min(length, MaxChunkBytes / sizeof(T)));
        _memory = (T*)NativeMemory.Alloc((nuint)_capacity * 2, (nuint)sizeof(T));
    }

    internal Span<T> Buffer => new(_memory, _capacity);
    internal Span<T> Scratch => new(_memory + _capacity, _capacity);

    public void Dispose()
    {
        if (_memory != null) NativeMemory.Free(_memory);
    }
}

/// <summary>An order for <see cref="StableSort"/> (a struct, so the sort is specialised and inlines it).</summary>
internal interface IStableOrder<T>
{
    /// <summary>Negative, zero or positive as <paramref name="x"/> sorts before, with or after <paramref name="y"/>.</summary>
    int Compare(in T x, in T y);
}

/// <summary>
/// A stable, allocation-free sort of a span (bottom-up merge sort through a scratch span of the same length, with
/// insertion-sorted runs of 16): equal elements keep their input order, so the first of equal keys in a batch is the one
/// inserted, and the last of equal keys given to a batch upsert is the value kept. (Span.Sort with a comparer boxes
/// it and is not stable.)
/// </summary>
internal static class StableSort
{
    const int Run = 16;

    internal static void Sort<T, TOrder>(Span<T> data, Span<T> scratch, TOrder order) where TOrder : struct, IStableOrder<T>
    {
        int n = data.Length;
        for (int start = 0; start < n; start += Run)
        {
            int end = Math.Min(n, start + Run);
            for (int i = start + 1; i < end; i++)
            {
                T x = data[i];
                int j = i - 1;
                while (j >= start && order.Compare(in data[j], in x) > 0)
                {
                    data[j + 1] = data[j];
                    j--;
                }
                data[j + 1] = x;
            }
        }
        var from = data;
        var to = scratch[..n];
        for (int width = Run; width < n; width *= 2)
        {
            for (int lo = 0; lo < n; lo += 2 * width)
            {
                int mid = Math.Min(n, lo + width), hi = Math.Min(n, lo + 2 * width);
                int a = lo, b = mid, o = lo;
                while (a < mid && b < hi) to[o++] = order.Compare(in from[b], in from[a]) < 0 ? from[b++] : from[a++];
                while (a < mid) to[o++] = from[a++];
                while (b < hi) to[o++] = from[b++];
            }
            var swap = from;
            from = to;
            to = swap;
        }
        if (from != data) from.CopyTo(data);
    }
}
