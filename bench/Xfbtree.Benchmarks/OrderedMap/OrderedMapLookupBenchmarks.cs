using BenchmarkDotNet.Attributes;

namespace Xfbtree.Benchmarks.OrderedMap;

/// <summary>
/// Steady-state reads under BenchmarkDotNet (many invocations, memory diagnoser): point lookups and overlapped
/// range queries on a bulk-loaded map of <see cref="Records"/> rmap-like records. Insert/bulk-load throughput on
/// whole data sets lives in <see cref="OrderedMapSuite"/>.
/// </summary>
[MemoryDiagnoser]
public class OrderedMapLookupBenchmarks
{
    private const int LookupsPerInvoke = 4096;
    private const int RangesPerInvoke = 256;

    private IOrderedMapPeer? peer;
    private RmapRecord[] keys = [];
    private BlockRange[] ranges = [];

    /// <summary>Records in the map.</summary>
    [Params(1_000_000)]
    public int Records { get; set; }

    /// <summary>Implementation under test.</summary>
    [Params("Xfbtree", "SortedSet", "SortedDictionary", "SortedArray", "LMDB")]
    public string Peer { get; set; } = "SortedSet";

    [GlobalSetup]
    public void Setup()
    {
        RmapRecord[] sorted = RmapDataSet.Sorted(Records);
        keys = RmapDataSet.LookupKeys(sorted, LookupsPerInvoke);
        ranges = RmapDataSet.Ranges(sorted, RangesPerInvoke, width: 64);
        peer = Peer switch
        {
            "SortedSet" => new SortedSetPeer(),
            "SortedDictionary" => new SortedDictionaryPeer(),
            "SortedArray" => new SortedArrayPeer(),
            "LMDB" => new LmdbPeer(Records),
            "Xfbtree" => new XfbtreePeer(),
            _ => throw new ArgumentOutOfRangeException(nameof(Peer), Peer, "unknown peer"),
        };
        peer.BulkLoad(sorted);
    }

    [GlobalCleanup]
    public void Cleanup() => peer?.Dispose();

    [Benchmark(OperationsPerInvoke = LookupsPerInvoke)]
    public long PointLookup() => peer!.Lookup(keys);

    [Benchmark(OperationsPerInvoke = RangesPerInvoke)]
    public long OverlappedRangeQuery() => peer!.QueryOverlapping(ranges); // SortedDictionary: a full enumeration per range (no range API)
}
