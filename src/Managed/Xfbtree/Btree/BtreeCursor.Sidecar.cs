using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics.X86;

namespace Xfbtree.Btree;

// Searches through the key-prefix sidecars (BtreeSidecars): a block's sampled prefixes are counted against the key's
// prefix with vector compares, which leaves a segment of about one sampling step (2 entries in a 4 KiB leaf of 24-byte
// records); only that segment is compared with the ops' comparer. A sidecar is used only when it carries the version
// the reader noted for its block (so it describes the block as read), and the reader validates that version at the
// end as always; any other sidecar is ignored and the block searched itself.
public sealed unsafe partial class BtreeCursor<TOps>
{
    /// <summary>True when readers may search the sidecars (there are some, and their prefixes were never found out of order).</summary>
    bool SidecarsUsable => _sidecars is { Usable: true };

    /// <summary>True when blocks at <paramref name="level"/> have sidecars (nodes always; leaves when <see cref="BtreeSidecars.LeafSamples"/>).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    bool HasSidecar(int level) => level > 0 || _leafSidecars;

    /// <summary>The sign-flipped prefix of the key at <paramref name="key"/> (compared with the sidecars' samples).</summary>
    long FlippedKeyPrefix(byte* key) => (long)(_sidecars!.Prefixer.KeyPrefix(key) ^ 0x8000_0000_0000_0000UL);

    /// <summary>The sidecar of block <paramref name="ptr"/> (a pointer already checked against the table).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    byte* SidecarOf(long ptr) => _sidecarBase + ptr * BtreeSidecars.Stride;

    /// <summary>Asks for the lines of block <paramref name="ptr"/>'s sidecar that a search at <paramref name="level"/> reads (header and samples).</summary>
    void PrefetchSidecar(long ptr, int level)
    {
        if (!Sse.IsSupported) return;
        byte* sc = SidecarOf(ptr);
        int samples = level == 0 ? (_leafMaxRecords + _sidecars!.LeafStep - 1) / _sidecars.LeafStep : (_nodeMaxRecords + _sidecars!.NodeStep - 1) / _sidecars.NodeStep;
        byte* end = sc + BtreeSidecars.HeaderBytes + samples * sizeof(long);
        for (byte* p = sc; p < end; p += 64) Sse.Prefetch0(p);
    }

    /// <summary>
    /// The segment [<paramref name="lo"/>, <paramref name="hi"/>] of a block of <paramref name="n"/> entries the lower
    /// bound of the key with the sign-flipped prefix <paramref name="prefix"/> lies in, from the block's sidecar
    /// <paramref name="sc"/> (whose version the caller matched with the block's); false when the sidecar's sample count
    /// is out of bounds. The segment is clamped into [0, n] whatever the sidecar holds (it may be rebuilt meanwhile; the
    /// caller's validation rejects such a read).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    bool SidecarSegment(byte* sc, int n, bool leaf, long prefix, out int lo, out int hi)
    {
        int count = *(int*)(sc + 12);
        if ((uint)count > BtreeSidecars.MaxSamples)
        {
            lo = hi = 0;
            return false;
        }
        int step = leaf ? _sidecars!.LeafStep : _sidecars!.NodeStep;
        BtreeSidecars.Count((long*)(sc + BtreeSidecars.HeaderBytes), count, prefix, out int below, out int atMost);
        // Samples below the key's prefix are below the key; samples above it are above; equal ones are undecided.
        lo = below == 0 ? 0 : (below - 1) * step + 1;
        hi = atMost >= count ? n : atMost * step;
        if (hi > n) hi = n;
        if (lo > hi) lo = hi;
        return true;
    }

    /// <summary>
    /// <see cref="LowerBound"/> through the sidecar of block <paramref name="ptr"/> when it describes the version
    /// <paramref name="version"/> noted for it with this level and entry count; else the block's own sampled search.
    /// Not inlined: its callers are large, and in a large method the JIT stops inlining the comparer.
    /// </summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    int LowerBoundPrefixed(byte* b, long ptr, long version, int level, int n, bool usePrefix, long prefix, ReadOnlySpan<byte> key, out bool exact)
    {
        bool leaf = level == 0;
        byte* entries = b + _headerSize;
        if (usePrefix)
        {
            byte* sc = SidecarOf(ptr);
            if (*(long*)sc == version && *(ushort*)(sc + 8) == n && *(ushort*)(sc + 10) == level
                && SidecarSegment(sc, n, leaf, prefix, out int lo, out int hi))
            {
                if (!leaf) PrefetchLines(entries + _nodeMaxRecords * _keySlotSize + (long)Math.Max(0, lo - 1) * _pointerSize, (hi - lo + 2) * _pointerSize);
                return SearchSegment(entries, lo, hi, leaf, key, out exact);
            }
        }
        return LowerBound(entries, leaf ? null : entries + _nodeMaxRecords * _keySlotSize, n, leaf, key, out exact);
    }
}
