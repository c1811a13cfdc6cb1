using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics.X86;

namespace Xfbtree.Btree;

// The search inside one block, shared by every lookup, insert and batch: a lower bound that touches few cache lines.
// A page-sized block holds 100-170 entries over ~64 cache lines; a plain binary search makes ~8 dependent misses, and
// prefetching the whole block costs 64 line fills per level (memory bandwidth, not latency, then limits lookups).
// Instead: seven samples at maxrecs/8 .. 7 maxrecs/8 (those below numrecs) are compared, which leaves a segment of
// about n/8 entries (~8 lines); its lines (and, in a node, its pointers) are prefetched at once and searched. The
// samples' positions do not depend on numrecs, so a lookup prefetches them together with the child's header as soon
// as it knows the child pointer: about 16 lines and two waits per block instead of 64 lines or eight waits.
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
        int at = SampleSegment(entries, pointers, n, leaf, key, out int lo, out int hi);
        if (at >= 0)
        {
            exact = true;
            return at;
        }
        return SearchSegment(entries, lo, hi, leaf, key, out exact);
    }

    /// <summary>
    /// First half of <see cref="LowerBound"/>: compares the samples and prefetches the segment [lo, hi] the answer lies
    /// in (and, in a node, its pointers); returns the index of a sample equal to the key, or -1.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    int SampleSegment(byte* entries, byte* pointers, int n, bool leaf, ReadOnlySpan<byte> key, out int lo, out int hi)
    {
        int stride = leaf ? _recordSize : _keySlotSize;
        lo = 0;
        hi = n; // the answer lies in [lo, hi]
        if (n >= SampledSearchMinEntries)
        {
            // Samples at maxrecs * j / 8 (those below n): positions known before numrecs is read, so the parent's
            // search already prefetched them with the header (PrefetchSearchStart).
            int max = leaf ? _leafMaxRecords : _nodeMaxRecords;
            int samples = 7;
            while (samples > 0 && SampleAt(max, samples) >= n) samples--;
            int jlo = 0, jhi = samples + 1; // sample 0 is the virtual bound 0, sample samples+1 the virtual bound n
            while (jhi - jlo > 1)
            {
                int j = (jlo + jhi) >> 1;
                int at = SampleAt(max, j);
                int c = Compare(entries + (long)at * stride, leaf, key);
                if (c < 0) jlo = j;
                else if (c > 0) jhi = j;
                else return at;
            }
            lo = jlo == 0 ? 0 : SampleAt(max, jlo) + 1;
            hi = jhi == samples + 1 ? n : SampleAt(max, jhi);
        }
        PrefetchLines(entries + (long)lo * stride, (hi - lo) * stride);
        if (pointers != null) PrefetchLines(pointers + (long)lo * _pointerSize, (hi - lo + 1) * _pointerSize);
        return -1;
    }

    /// <summary>Second half of <see cref="LowerBound"/>: the lower bound inside [lo, hi] (entries below lo are below the key, the entry at hi is not).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    int SearchSegment(byte* entries, int lo, int hi, bool leaf, ReadOnlySpan<byte> key, out bool exact)
    {
        int stride = leaf ? _recordSize : _keySlotSize;
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

    /// <summary>
    /// Prefetches what the search of the block at <paramref name="block"/> (level <paramref name="level"/>) reads first:
    /// its header and its seven sample entries. Called as soon as a child pointer is known, so these misses overlap
    /// instead of waiting for numrecs first. Never dereferences: the block may be anything.
    /// </summary>
    void PrefetchSearchStart(byte* block, int level)
    {
        if (block == null || !Sse.IsSupported) return;
        bool leaf = level == 0;
        int stride = leaf ? _recordSize : _keySlotSize;
        int max = leaf ? _leafMaxRecords : _nodeMaxRecords;
        int span = (leaf ? _recordSize : _keySize) - 1;
        Sse.Prefetch0(block);
        byte* entries = block + _headerSize;
        for (int j = 1; j < 8; j++)
        {
            byte* at = entries + (long)SampleAt(max, j) * stride;
            Sse.Prefetch0(at);
            Sse.Prefetch0(at + span);
        }
    }

    /// <summary>Entry index of sample <paramref name="j"/> (1..7) of a block of <paramref name="maxRecords"/>: one formula for the search and its prefetch.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static int SampleAt(int maxRecords, int j) => maxRecords * j >> 3;

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
