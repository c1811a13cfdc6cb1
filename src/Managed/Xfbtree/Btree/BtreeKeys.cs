namespace Xfbtree.Btree;

/// <summary>Key derivation shared by the cursor, the bulk loader and the checker.</summary>
public static class BtreeKeys
{
    /// <summary>
    /// Computes a block's low key (first record's key / first slot's low key) and, for overlapping trees,
    /// its high key (maximum over all records' high keys / all slots' high keys).
    /// </summary>
    public static void ComputeBlockKeys<TOps>(in TOps ops, BtreeGeometry geo, ReadOnlySpan<byte> block, int level,
        Span<byte> low, Span<byte> high, Span<byte> tmp) where TOps : struct, IBtreeOps
    {
        int n = BtreeHeader.NumRecords(block);
        int ks = geo.KeySize;
        if (level == 0)
        {
            int rs = geo.RecordSize;
            var records = block.Slice(geo.RecordOffset(0), Math.Max(n, 1) * rs);
            ops.GetKey(records[..rs], low);
            if (!geo.Overlapping) return;
            // The running maximum lives in one of two buffers and the buffers swap instead of copying: this runs over
            // every record of a block on each key recomputation (splits, shifts), so it is kept to one GetHighKey and
            // one compare per record.
            var best = high;
            var next = tmp;
            bool bestIsHigh = true;
            ops.GetHighKey(records[..rs], best);
            for (int i = 1; i < n; i++)
            {
                ops.GetHighKey(records.Slice(i * rs, rs), next);
                if (ops.CompareKeys(next, best) > 0)
                {
                    var swap = best;
                    best = next;
                    next = swap;
                    bestIsHigh = !bestIsHigh;
                }
            }
            if (!bestIsHigh) best.CopyTo(high);
            return;
        }
        int slot = geo.KeySlotSize;
        var slots = block.Slice(geo.KeyOffset(0), Math.Max(n, 1) * slot);
        slots[..ks].CopyTo(low);
        if (!geo.Overlapping) return;
        int at = ks; // offset of the largest high key so far
        for (int i = 1; i < n; i++)
        {
            if (ops.CompareKeys(slots.Slice(i * slot + ks, ks), slots.Slice(at, ks)) > 0) at = i * slot + ks;
        }
        slots.Slice(at, ks).CopyTo(high);
    }
}
