using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Xfbtree.Btree;

namespace Xfbtree.InMemory;

/// <summary>
/// Batched writes of the typed maps: the batch is copied in chunks to a scratch buffer, each chunk sorted by the map's
/// comparer and applied in key order under one hold of the write lock (each record is still its own write operation,
/// so readers that overlap one wait for one record's change, not for the chunk). In key order, the next key usually
/// falls into the leaf the previous insert kept (the cursor's kept insert path), so it needs no descent, and the keys of
/// one leaf go in as one merge; the larger the chunk against the tree's leaf count, the more often. A key in another leaf
/// is found from the kept path (only the levels below the lowest block whose subtree holds it are searched again). The
/// scratch is bounded by a constant (<see cref="BatchChunk{T}"/>): the memory of a batch does not grow with its length.
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
        Span<byte> bucketOf = input.Length <= small ? default : chunk.BucketOf;
        int chunkLength = BatchTestHooks.ChunkLength(buffer.Length);
        int changed = 0;
        bool chunked = input.Length > chunkLength;
        if (chunked) core.BeginBatchCall();
        try
        {
            for (int start = 0; start < input.Length; start += chunkLength)
            {
                var part = buffer[..Math.Min(chunkLength, input.Length - start)];
                input.Slice(start, part.Length).CopyTo(part);
                BucketSort.Sort(part, scratch, bucketOf, new Order(comparer));
                changed += insert ? core.InsertSorted(part) : core.RemoveSorted(part);
                if (chunked) BatchTestHooks.AfterChunk?.Invoke();
            }
        }
        finally
        {
            if (chunked) core.EndBatchCall();
        }
        return changed;
    }
}

/// <summary>
/// Test hooks of the batch writes, per thread (so tests running beside each other do not see them): chunks smaller than
/// the scratch allows, so that small batches are applied in several chunks under one batch call, and a call after each
/// chunk of such a call (the write lock is not held then).
/// </summary>
internal static class BatchTestHooks
{
    /// <summary>Most elements per chunk on this thread (0: the scratch's size).</summary>
    [ThreadStatic] internal static int ChunkLimit;
    /// <summary>Called after each chunk of a batch call of several chunks on this thread.</summary>
    [ThreadStatic] internal static Action? AfterChunk;

    /// <summary>The chunk length to use with a scratch of <paramref name="capacity"/> elements on this thread.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static int ChunkLength(int capacity) => ChunkLimit > 0 && ChunkLimit < capacity ? ChunkLimit : capacity;
}

/// <summary>
/// The scratch of a batch write: a chunk of the batch and the sort's scratch beside it. Batches of up to
/// <see cref="StackCapacity"/> elements use the stack (the caller's stackalloc); larger ones at most
/// <see cref="MaxScratchBytes"/> of native memory (the chunk, the sort's scratch and a byte per element for the bucket
/// sort), freed when the batch ends (no managed allocation). A larger chunk puts more neighbouring keys into one leaf, which then takes them in one merge:
/// 10 M random records into an empty map went in at 1.9 M per CPU second in 1 MiB chunks, 2.9 in 4 MiB, 3.8 in 16 MiB
/// and 4.3-4.6 in 32 MiB (the chunk now: 64 MiB of scratch in all; shared machine, load 6-18; 16 KiB chunks hardly ever put two keys in one leaf).
/// </summary>
internal readonly unsafe struct BatchChunk<T> : IDisposable where T : unmanaged
{
    /// <summary>Bytes of one chunk on the stack.</summary>
    internal const int StackBytes = 16 * 1024;
    /// <summary>Most bytes of native scratch of one batch: the chunk, the sort's scratch as large again and a byte per element (see the summary for why this size).</summary>
    internal const int MaxScratchBytes = 64 << 20;

    /// <summary>Elements of a chunk on the stack.</summary>
    internal static int StackCapacity => Math.Max(1, StackBytes / sizeof(T));

    readonly T* _memory;
    readonly int _capacity;

    /// <summary>Native memory for a batch of <paramref name="length"/> elements, or a chunk of them.</summary>
    internal BatchChunk(int length)
    {
        _capacity = Math.Max(1, Math.Min(length, MaxScratchBytes / (2 * sizeof(T) + 1)));
        // The chunk, the sort's scratch, and a byte per element for the bucket sort's bucket numbers.
        _memory = (T*)NativeMemory.Alloc((nuint)_capacity * (nuint)(2 * sizeof(T) + 1));
    }

    internal Span<T> Buffer => new(_memory, _capacity);
    internal Span<T> Scratch => new(_memory + _capacity, _capacity);
    internal Span<byte> BucketOf => new(_memory + 2 * (long)_capacity, _capacity);

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
                while (a < mid && b < hi)
                {
                    // Index arithmetic instead of a branch on the comparison (random input mispredicts half of them).
                    int takeRight = order.Compare(in from[b], in from[a]) < 0 ? 1 : 0;
                    to[o++] = from[takeRight != 0 ? b : a];
                    b += takeRight;
                    a += 1 - takeRight;
                }
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

/// <summary>
/// A stable sort of a large span in cache-sized pieces (a sample sort): splitters taken from an evenly spaced sample of
/// the data send every element to one of up to 256 buckets (a binary search over the splitters, which stay in the first
/// level cache), the buckets are laid out one after the other in the scratch span keeping the input order inside each,
/// and each bucket (a few thousand elements) is merge sorted while it is in cache and copied back. It makes as many
/// comparisons as the merge sort alone, but three passes over the whole span instead of one per merge width: at a few
/// MiB the merge sort's passes go to memory each time. Equal elements fall into the same bucket, so it is stable too.
/// </summary>
internal static class BucketSort
{
    /// <summary>Below this many elements the merge sort alone (its passes stay in cache).</summary>
    internal const int MinLength = 1 << 14;
    /// <summary>Elements per bucket aimed at (about 100 KB of 24-byte records).</summary>
    const int BucketTarget = 4096;
    /// <summary>Sampled elements per bucket (the splitters are every Oversample-th of the sorted sample).</summary>
    const int Oversample = 8;

    /// <summary>Elements classified per call (see the loop).</summary>
    const int Piece = 4096;

    /// <summary>Sets each element's bucket (the number of splitters at or below it: equal elements get the same one) and counts the buckets.</summary>
    static void Classify<T, TOrder>(ReadOnlySpan<T> data, Span<byte> bucketOf, ReadOnlySpan<T> splitters, Span<int> counts, TOrder order) where TOrder : struct, IStableOrder<T>
    {
        for (int i = 0; i < data.Length; i++)
        {
            int lo = 0, hi = splitters.Length;
            while (lo < hi)
            {
                int mid = (lo + hi) >> 1;
                if (order.Compare(in splitters[mid], in data[i]) <= 0) lo = mid + 1;
                else hi = mid;
            }
            bucketOf[i] = (byte)lo;
            counts[lo]++;
        }
    }

    internal static void Sort<T, TOrder>(Span<T> data, Span<T> scratch, Span<byte> bucketOf, TOrder order) where TOrder : struct, IStableOrder<T>
    {
        int n = data.Length;
        if (n < MinLength || bucketOf.Length < n || scratch.Length < n)
        {
            StableSort.Sort(data, scratch, order);
            return;
        }
        int buckets = Math.Clamp(n / BucketTarget, 2, 256);
        int sampled = buckets * Oversample;
        // The sample and its sort's scratch sit in the scratch span (n >= MinLength > 2 * 256 * Oversample); the
        // splitters are copied behind them, and everything is overwritten by the distribution below.
        var sample = scratch[..sampled];
        for (int i = 0; i < sampled; i++) sample[i] = data[(int)((long)i * n / sampled)];
        StableSort.Sort(sample, scratch.Slice(sampled, sampled), order);
        int splitterCount = buckets - 1;
        var splitters = scratch.Slice(2 * sampled, splitterCount);
        for (int j = 0; j < splitterCount; j++) splitters[j] = sample[(j + 1) * Oversample - 1];
        Span<int> start = stackalloc int[257];
        start.Clear();
        // In pieces: one InsertMany may make the only call of this method, and the runtime optimises a method (and
        // inlines the comparer into it) once it has been called often, not while one call loops.
        for (int from = 0; from < n; from += Piece)
        {
            int to = Math.Min(n, from + Piece);
            Classify(data[from..to], bucketOf[from..to], splitters, start[1..], order);
        }
        for (int b = 1; b <= buckets; b++) start[b] += start[b - 1];
        Span<int> next = stackalloc int[256];
        start[..buckets].CopyTo(next);
        for (int i = 0; i < n; i++) scratch[next[bucketOf[i]]++] = data[i];
        for (int b = 0; b < buckets; b++)
        {
            var bucket = scratch[start[b]..start[b + 1]];
            StableSort.Sort(bucket, data[start[b]..start[b + 1]], order);
            bucket.CopyTo(data[start[b]..]);
        }
    }
}
