using System.Runtime.CompilerServices;
using Xfbtree.Btree;

namespace Xfbtree.InMemory;

/// <summary>
/// Optional for a comparer of a typed map (<see cref="IRecordComparer{TRecord}"/>): a 64-bit prefix of a record's key
/// that orders like the comparer, so that lookups compare integers and call the comparer only among keys with equal
/// prefixes. For example, for records ordered by (uint Start, ulong Owner, ...): <c>(ulong)Start &lt;&lt; 32 |
/// Math.Min(Owner, uint.MaxValue)</c>.
/// </summary>
/// <typeparam name="TRecord">The record (or key) type the comparer orders.</typeparam>
/// <remarks>
/// The contract: when <c>Compare(x, y) &lt;= 0</c> then <c>GetKeyPrefix(x) &lt;= GetKeyPrefix(y)</c> (as unsigned
/// numbers); equal prefixes say nothing. The more keys it tells apart, the fewer comparer calls; a constant is correct
/// and useless. Like the comparer, it runs on reader threads without a lock, possibly on a record being changed (the
/// reader then discards what it read): it must be a pure function that does not throw for any bit pattern. The map
/// checks the order of the prefixes of the entries it samples; prefixes found out of order make the write that found
/// them throw <see cref="InvalidOperationException"/> (after the write completed), and the map searches without
/// prefixes from then on.
/// </remarks>
public interface IRecordKeyPrefix<TRecord> where TRecord : unmanaged
{
    /// <summary>The prefix of <paramref name="record"/>'s key (see the contract in the remarks).</summary>
    ulong GetKeyPrefix(in TRecord record);
}

/// <summary>Creates the engine's prefix function for a comparer that implements <see cref="IRecordKeyPrefix{TRecord}"/> (else null).</summary>
internal static class RecordKeyPrefixes
{
    internal static BtreeKeyPrefixer? For<TKey, TComparer>(TComparer comparer) where TKey : unmanaged where TComparer : struct
    {
        if (!typeof(IRecordKeyPrefix<TKey>).IsAssignableFrom(typeof(TComparer))) return null;
        // A constrained generic instance, made once per map: the struct comparer is never boxed per call.
        var type = typeof(TypedKeyPrefixer<,>).MakeGenericType(typeof(TKey), typeof(TComparer));
        return (BtreeKeyPrefixer)Activator.CreateInstance(type, comparer)!;
    }
}

/// <summary>The prefix function of a comparer of <typeparamref name="TKey"/>: keys at the start of every entry (records of a plain map, map entries, node key slots).</summary>
internal sealed unsafe class TypedKeyPrefixer<TKey, TComparer>(TComparer comparer) : BtreeKeyPrefixer
    where TKey : unmanaged
    where TComparer : struct, IRecordKeyPrefix<TKey>
{
    readonly TComparer _comparer = comparer;

    internal override ulong KeyPrefix(byte* key) => _comparer.GetKeyPrefix(in Unsafe.AsRef<TKey>(key));

    internal override bool SamplePrefixes(byte* entries, int stride, int step, int count, long* destination)
    {
        long stepBytes = (long)stride * step;
        ulong previous = 0;
        bool ordered = true;
        for (int i = 0; i < count; i++)
        {
            ulong p = _comparer.GetKeyPrefix(in Unsafe.AsRef<TKey>(entries + i * stepBytes));
            ordered &= p >= previous;
            previous = p;
            destination[i] = (long)(p ^ 0x8000_0000_0000_0000UL);
        }
        return ordered;
    }
}
