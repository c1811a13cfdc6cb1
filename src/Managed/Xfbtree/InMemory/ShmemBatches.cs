using System.Runtime.CompilerServices;
using Xfbtree.Btree;

namespace Xfbtree.InMemory;

/// <summary>
/// Batched writes of the typed maps: the batch is copied in slices to the stack, each slice sorted by the map's
/// comparer and applied in key order under one hold of the write lock (each record is still its own write operation,
/// so readers that overlap one wait for one record's change, not for the slice). In key order, the next key usually
/// falls into the leaf the previous insert kept (the cursor's kept insert path), so it needs no descent.
/// </summary>
internal static class ShmemBatches<TRecord, TComparer>
    where TRecord : unmanaged
    where TComparer : struct, IRecordComparer<TRecord>
{
    /// <summary>Bytes of one sorted slice (on the stack).</summary>
    const int SliceBytes = 16 * 1024;

    readonly struct Order(TComparer comparer) : IComparer<TRecord>
    {
        readonly TComparer _comparer = comparer;
        public int Compare(TRecord x, TRecord y) => _comparer.Compare(in x, in y);
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
        int slice = Math.Max(1, SliceBytes / Unsafe.SizeOf<TRecord>());
        Span<TRecord> buffer = stackalloc TRecord[Math.Min(slice, Math.Max(1, input.Length))];
        int changed = 0;
        for (int start = 0; start < input.Length; start += buffer.Length)
        {
            var part = buffer[..Math.Min(buffer.Length, input.Length - start)];
            input.Slice(start, part.Length).CopyTo(part);
            part.Sort(new Order(comparer));
            changed += insert ? core.InsertSorted(part) : core.RemoveSorted(part);
        }
        return changed;
    }
}
