using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics.X86;

namespace Xfbtree.Btree;

// The search inside one block, shared by every lookup, insert and batch: a lower bound that touches few cache lines.
// A page-sized block holds 100-170 entries over ~64 cache lines; a plain binary search makes ~8 dependent misses, and
// prefetching the whole block costs 64 line fills per level (memory bandwidth, not latency, then limits lookups).
// Instead: seven samples at n/8 .. 7n/8 are prefetched at once and compared (one round trip), which leaves a segment
// of about n/8 entries (~8 lines); its lines (and, in a node, its pointers) are prefetched at once and searched
// (a second round trip). About 16 lines and two waits per block instead of 64 lines or eight waits.
public sealed unsafe partial class BtreeCursor<TOps>
{
    /// <summary>Below this many entries the whole entry array is prefetched and binary searched.</summary>
    const int SampledSearchMinEntries = 32;

    /// <summary>
    /// Number of entries of a block whose key is below <paramref name="key"/> (the lower bound, 0..n);
    /// <paramref name="exact"/> when the entry at that index has exactly that key. The caller has checked numrecs
    /// (<paramref name="n"/>) against the block's maxrecs, so every entry read lies inside the block.
    /// </summary>
    /// <param name="entries">First entry (records in a leaf, key slots in a node).</param>
    /// <param name="pointers">First child pointer of a node (prefetched with the segment); null in a leaf.</param>
    /// <param name="n">Entries in the block (checked against maxrecs).</param>
    /// <param name="leaf">Records (compared with CompareRecordToKey) rather than node key slots.</param>
    /// <param name="key">The key searched.</param>
    /// <param name="exact">The entry at the returned index has the key.</param>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    int LowerBound(byte* entries, byte* pointers, int n, bool leaf, ReadOnlySpan<byte> key, out bool exact)
    {
        int stride = leaf ? _recordSize : _keySlotSize;
        int lo = 0, hi = n; // the answer lies in [lo, hi]
        if (n >= SampledSearchMinEntries)
        {
            // Sample j (1..7) is entry (n * j) / 8; its compared bytes may straddle two lines.
            int span = (leaf ? _recordSize : _keySize) - 1;
            for (int j = 1; j < 8; j++)
            {
                byte* at = entries + (long)(n * j >> 3) * stride;
                Prefetch(at);
                Prefetch(at + span);
            }
            // Branchy binary search over the samples: the lines are all in flight, so the compares only wait once.
            int jlo = 0, jhi = 8; // samples 0 and 8 are the virtual bounds 0 and n
            while (jhi - jlo > 1)
            {
                int j = (jlo + jhi) >> 1;
                int at = n * j >> 3;
                int c = Compare(entries + (long)at * stride, leaf, key);
                if (c < 0) jlo = j;
                else if (c > 0) jhi = j;
                else
                {
                    exact = true;
                    return at;
                }
            }
            lo = jlo == 0 ? 0 : (n * jlo >> 3) + 1;
            hi = jhi == 8 ? n : n * jhi >> 3;
        }
        PrefetchLines(entries + (long)lo * stride, (hi - lo) * stride);
        if (pointers != null) PrefetchLines(pointers + (long)lo * _pointerSize, (hi - lo + 1) * _pointerSize);
        // Lower bound in [lo, hi): entries below lo are < key, the entry at hi (if any) is >= key.
        exact = false;
        while (lo < hi)
        {
            int mid = (lo + hi) >> 1;
            int c = Compare(entries + (long)mid * stride, leaf, key);
            if (c < 0) lo = mid + 1;
            else
            {
                hi = mid;
                if (c == 0)
                {
                    exact = true;
                    break;
                }
            }
        }
        return exact ? hi : lo;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    int Compare(byte* entry, bool leaf, ReadOnlySpan<byte> key)
        => leaf ? _ops.CompareRecordToKey(new ReadOnlySpan<byte>(entry, _recordSize), key)
                : _ops.CompareKeys(new ReadOnlySpan<byte>(entry, _keySize), key);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static void Prefetch(byte* at)
    {
        if (Sse.IsSupported) Sse.Prefetch0(at);
    }

    /// <summary>Asks for every cache line of [<paramref name="start"/>, +<paramref name="bytes"/>) at once. A prefetch never faults.</summary>
    static void PrefetchLines(byte* start, int bytes)
    {
        Debug.Assert(bytes >= 0, "negative prefetch length");
        if (!Sse.IsSupported || bytes <= 0) return;
        byte* end = start + bytes - 1;
        for (byte* p = (byte*)((nint)start & ~(nint)63); p <= end; p += 64) Sse.Prefetch0(p);
    }
}
