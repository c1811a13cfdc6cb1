using Xfbtree.InMemory;
using Xfbtree.Storage;

namespace Xfbtree.Benchmarks.OrderedMap;

/// <summary>
/// The rmapbt key order for the typed ordered maps (a struct, so the tree is specialised for it), and the rmapbt
/// high key (start + length - 1, owner, offset) for the interval map's overlapped query.
/// </summary>
public readonly struct RmapRecordMapComparer : IIntervalRecordComparer<RmapRecord>, IRecordKeyPrefix<RmapRecord>
{
    /// <summary>(start block, owner clamped to 32 bits): orders like <see cref="Compare"/>, so the plain map's searches compare integers first.</summary>
    public ulong GetKeyPrefix(in RmapRecord record) => (ulong)record.StartBlock << 32 | Math.Min(record.Owner, uint.MaxValue);

    /// <inheritdoc/>
    public void GetHighKey(in RmapRecord record, out RmapRecord highKey) =>
        highKey = record with { StartBlock = record.StartBlock + record.BlockCount - 1 };

    /// <inheritdoc/>
    public int Compare(in RmapRecord x, in RmapRecord y)
    {
        if (x.StartBlock != y.StartBlock)
        {
            return x.StartBlock < y.StartBlock ? -1 : 1;
        }
        if (x.Owner != y.Owner)
        {
            return x.Owner < y.Owner ? -1 : 1;
        }
        return x.Offset.CompareTo(y.Offset);
    }
}

/// <summary>
/// Xfbtree's typed interval map (<see cref="ShmemIntervalBTree{TRecord, TComparer}"/>): the XFS btree engine with
/// rmapbt-style overlapping node keys on page-sized blocks of a private xfile (memfd on Linux); the overlapped range
/// query is the engine's overlapped query (subtrees pruned by their high keys), as the rmap repair uses it.
/// </summary>
public sealed class XfbtreePeer : XfbtreeMapPeer<XfbtreeIntervalMap>
{
    /// <summary>Creates the peer (the record count is only a sizing hint for other peers).</summary>
    public static IOrderedMapPeer TryCreate(int expectedRecords) => new XfbtreePeer();

    /// <summary>Always available: the map needs nothing outside the library.</summary>
    public static bool IsAvailable(out string? why)
    {
        why = null;
        return true;
    }

    /// <inheritdoc/>
    public override string Name => "Xfbtree";

    /// <inheritdoc/>
    public override long QueryOverlapping(ReadOnlySpan<BlockRange> ranges)
    {
        var counter = new CountingVisitor();
        foreach (BlockRange range in ranges)
        {
            // Every record whose [start, start + length - 1] meets [Low, High]: no filtering needed afterwards.
            var low = new RmapRecord(range.Low, 0, 0, 0);
            var high = new RmapRecord(range.High, 0, ulong.MaxValue, ulong.MaxValue);
            Map.Tree.QueryOverlapping(low, high, ref counter);
        }
        return counter.Count;
    }

    private struct CountingVisitor : IRecordVisitor<RmapRecord>
    {
        public long Count;
        public long StartSum;

        public bool Visit(in RmapRecord record)
        {
            Count++;
            StartSum += record.StartBlock;
            return true;
        }
    }

    /// <inheritdoc/>
    public override long Scan()
    {
        var visitor = new CountingVisitor();
        Map.Tree.VisitAll(ref visitor);
        return visitor.StartSum;
    }
}

/// <summary>
/// Xfbtree's plain typed ordered map (<see cref="ShmemBTree{TRecord, TComparer}"/>, single keys per node slot,
/// so twice the fan-out of the interval map): it has no interval index, so its overlapped range query is
/// <c>Range</c> from the first possible start plus a filter, as SortedSet's.
/// </summary>
public sealed class XfbtreePlainPeer : XfbtreeMapPeer<XfbtreePlainMap>
{
    /// <inheritdoc/>
    public override string Name => "Xfbtree-plain";

    /// <inheritdoc/>
    public override string? RangeQueryNote => "no interval index: Range from the first possible start + filter";

    /// <inheritdoc/>
    public override long QueryOverlapping(ReadOnlySpan<BlockRange> ranges)
    {
        long found = 0;
        foreach (BlockRange range in ranges)
        {
            var low = new RmapRecord(range.FirstPossibleStart, 0, 0, 0);
            var high = new RmapRecord(range.High, 0, ulong.MaxValue, ulong.MaxValue);
            foreach (ref readonly RmapRecord record in Map.Tree.Range(low, high))
            {
                if (record.StartBlock + record.BlockCount > range.Low)
                {
                    found++;
                }
            }
        }
        return found;
    }

    /// <inheritdoc/>
    public override long Scan()
    {
        long sum = 0;
        foreach (ref readonly RmapRecord record in Map.Tree)
        {
            sum += record.StartBlock;
        }
        return sum;
    }
}

/// <summary>One of Xfbtree's typed maps of <see cref="RmapRecord"/>, as a struct the peers are specialised for.</summary>
/// <typeparam name="TSelf">The implementing struct.</typeparam>
public interface IXfbtreeRmapMap<TSelf> : IDisposable where TSelf : struct, IXfbtreeRmapMap<TSelf>
{
    /// <summary>A new empty map on a private xfile.</summary>
    static abstract TSelf Create();
    /// <summary>Records in the map.</summary>
    long Count { get; }
    /// <summary>Bytes of the xfile plus the block table.</summary>
    long NativeBytes { get; }
    /// <summary>Adds a record.</summary>
    bool Insert(in RmapRecord record);
    /// <summary>Finds the record with the key of <paramref name="key"/>.</summary>
    bool TryFind(in RmapRecord key, out RmapRecord record);
    /// <summary>Looks up many keys at once.</summary>
    int TryFindMany(ReadOnlySpan<RmapRecord> keys, Span<RmapRecord> records, Span<bool> found);
    /// <summary>Loads sorted records into the empty map.</summary>
    void BulkLoad(ReadOnlySpan<RmapRecord> sorted);
    /// <summary>The map's xfile (created by the map, disposed with it).</summary>
    Xfile Xfile { get; }
}

/// <summary>How the benchmark's Xfbtree maps get their memory.</summary>
public static class XfbtreeMaps
{
    /// <summary>
    /// A private xfile with <see cref="XfileHugePages.Preferred"/>: 2 MiB pages where the system allows them (on this
    /// kind of machine anonymous THP; shmem THP needs the administrator's shmem_enabled), else 4 KiB pages. The
    /// benchmark prints what it got (<see cref="IOrderedMapPeer.MemoryNote"/>). XFBTREE_BENCH_HUGEPAGES=0 turns it off.
    /// </summary>
    public static Xfile CreateXfile(string name) => Xfile.Create(new XfileOptions
    {
        Name = name,
        HugePages = Environment.GetEnvironmentVariable("XFBTREE_BENCH_HUGEPAGES") == "0" ? XfileHugePages.Off : XfileHugePages.Preferred,
    });

    /// <summary>"anonymous THP: 236 of 240 MiB in 2 MiB pages" style description of an xfile's memory now.</summary>
    public static string Describe(Xfile xfile)
    {
        XfileMemoryUsage usage = xfile.MeasureMemory();
        string measured = usage.Available
            ? $"{usage.HugePageBytes >> 20} of {usage.ResidentBytes >> 20} MiB resident in 2 MiB pages"
            : "pages not measurable";
        return $"xfile {xfile.BackingDescription}, huge pages {xfile.HugePageMode}: {xfile.HugePageDescription}; {measured}";
    }
}

/// <summary>The interval map as an <see cref="IXfbtreeRmapMap{TSelf}"/>.</summary>
public readonly struct XfbtreeIntervalMap(ShmemIntervalBTree<RmapRecord, RmapRecordMapComparer> tree, Xfile xfile) : IXfbtreeRmapMap<XfbtreeIntervalMap>
{
    /// <summary>The map itself.</summary>
    public ShmemIntervalBTree<RmapRecord, RmapRecordMapComparer> Tree { get; } = tree;
    /// <inheritdoc/>
    public Xfile Xfile { get; } = xfile;
    /// <inheritdoc/>
    public static XfbtreeIntervalMap Create()
    {
        Xfile xfile = XfbtreeMaps.CreateXfile("xfbtree-bench-interval");
        return new(new ShmemIntervalBTree<RmapRecord, RmapRecordMapComparer>(default, new ShmemBTreeOptions { Xfile = xfile }), xfile);
    }
    /// <inheritdoc/>
    public long Count => Tree.Count;
    /// <inheritdoc/>
    public long NativeBytes => Tree.XfileBytesUsed + Tree.TableBytes;
    /// <inheritdoc/>
    public bool Insert(in RmapRecord record) => Tree.Insert(record);
    /// <inheritdoc/>
    public bool TryFind(in RmapRecord key, out RmapRecord record) => Tree.TryFind(key, out record);
    /// <inheritdoc/>
    public int TryFindMany(ReadOnlySpan<RmapRecord> keys, Span<RmapRecord> records, Span<bool> found) => Tree.TryFindMany(keys, records, found);
    /// <inheritdoc/>
    public void BulkLoad(ReadOnlySpan<RmapRecord> sorted) => Tree.BulkLoad(sorted);
    /// <inheritdoc/>
    public void Dispose()
    {
        Tree.Dispose();
        Xfile.Dispose();
    }
}

/// <summary>The plain ordered map as an <see cref="IXfbtreeRmapMap{TSelf}"/>.</summary>
public readonly struct XfbtreePlainMap(ShmemBTree<RmapRecord, RmapRecordMapComparer> tree, Xfile xfile) : IXfbtreeRmapMap<XfbtreePlainMap>
{
    /// <summary>The map itself.</summary>
    public ShmemBTree<RmapRecord, RmapRecordMapComparer> Tree { get; } = tree;
    /// <inheritdoc/>
    public Xfile Xfile { get; } = xfile;
    /// <inheritdoc/>
    public static XfbtreePlainMap Create()
    {
        Xfile xfile = XfbtreeMaps.CreateXfile("xfbtree-bench-plain");
        return new(new ShmemBTree<RmapRecord, RmapRecordMapComparer>(default, new ShmemBTreeOptions { Xfile = xfile }), xfile);
    }
    /// <inheritdoc/>
    public long Count => Tree.Count;
    /// <inheritdoc/>
    public long NativeBytes => Tree.XfileBytesUsed + Tree.TableBytes;
    /// <inheritdoc/>
    public bool Insert(in RmapRecord record) => Tree.Insert(record);
    /// <inheritdoc/>
    public bool TryFind(in RmapRecord key, out RmapRecord record) => Tree.TryFind(key, out record);
    /// <inheritdoc/>
    public int TryFindMany(ReadOnlySpan<RmapRecord> keys, Span<RmapRecord> records, Span<bool> found) => Tree.TryFindMany(keys, records, found);
    /// <inheritdoc/>
    public void BulkLoad(ReadOnlySpan<RmapRecord> sorted) => Tree.BulkLoad(sorted);
    /// <inheritdoc/>
    public void Dispose()
    {
        Tree.Dispose();
        Xfile.Dispose();
    }
}

/// <summary>
/// What the two Xfbtree peers share: insert, bulk load (on a fresh map when this one is not empty), point and
/// batched lookups, count, memory and disposal, specialised by the JIT for <typeparamref name="TMap"/>.
/// </summary>
/// <typeparam name="TMap">The typed map.</typeparam>
public abstract class XfbtreeMapPeer<TMap> : IOrderedMapPeer where TMap : struct, IXfbtreeRmapMap<TMap>
{
    private TMap map = TMap.Create();

    /// <summary>The map.</summary>
    protected TMap Map => map;

    /// <inheritdoc/>
    public abstract string Name { get; }

    /// <inheritdoc/>
    public virtual string? RangeQueryNote => null;

    /// <inheritdoc/>
    public void Insert(ReadOnlySpan<RmapRecord> records)
    {
        foreach (ref readonly RmapRecord record in records)
        {
            map.Insert(record);
        }
    }

    /// <inheritdoc/>
    public void BulkLoad(RmapRecord[] sorted)
    {
        if (map.Count != 0)
        {
            map.Dispose();
            map = TMap.Create();
        }
        map.BulkLoad(sorted);
    }

    /// <inheritdoc/>
    public long Lookup(ReadOnlySpan<RmapRecord> keys)
    {
        long sum = 0;
        foreach (ref readonly RmapRecord key in keys)
        {
            if (map.TryFind(key, out RmapRecord found))
            {
                sum += found.BlockCount;
            }
        }
        return sum;
    }

    /// <inheritdoc/>
    public bool HasBatchLookup => true;

    /// <inheritdoc/>
    public long LookupBatch(ReadOnlySpan<RmapRecord> keys)
    {
        const int Chunk = 256;
        Span<RmapRecord> found = stackalloc RmapRecord[Chunk];
        Span<bool> hit = stackalloc bool[Chunk];
        long sum = 0;
        for (int start = 0; start < keys.Length; start += Chunk)
        {
            ReadOnlySpan<RmapRecord> part = keys.Slice(start, Math.Min(Chunk, keys.Length - start));
            map.TryFindMany(part, found, hit);
            for (int i = 0; i < part.Length; i++)
            {
                if (hit[i])
                {
                    sum += found[i].BlockCount;
                }
            }
        }
        return sum;
    }

    /// <inheritdoc/>
    public abstract long QueryOverlapping(ReadOnlySpan<BlockRange> ranges);

    /// <inheritdoc/>
    public abstract long Scan();

    /// <inheritdoc/>
    public long Count => map.Count;

    /// <inheritdoc/>
    public string? MemoryNote => XfbtreeMaps.Describe(map.Xfile);

    /// <inheritdoc/>
    public long NativeBytes => map.NativeBytes;

    /// <inheritdoc/>
    public void Dispose() => map.Dispose();
}
