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
            ops.GetKey(block.Slice(geo.RecordOffset(0), geo.RecordSize), low);
            if (!geo.Overlapping) return;
            ops.GetHighKey(block.Slice(geo.RecordOffset(0), geo.RecordSize), high);
            for (int i = 1; i < n; i++)
            {
                ops.GetHighKey(block.Slice(geo.RecordOffset(i), geo.RecordSize), tmp);
                if (ops.CompareKeys(tmp, high) > 0) tmp.CopyTo(high);
            }
            return;
        }
        block.Slice(geo.KeyOffset(0), ks).CopyTo(low);
        if (!geo.Overlapping) return;
        block.Slice(geo.KeyOffset(0) + ks, ks).CopyTo(high);
        for (int i = 1; i < n; i++)
        {
            var h = block.Slice(geo.KeyOffset(i) + ks, ks);
            if (ops.CompareKeys(h, high) > 0) h.CopyTo(high);
        }
    }
}
