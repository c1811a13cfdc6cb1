using Xfbtree.InMemory;
using Xunit;
using Xunit.Abstractions;

namespace Xfbtree.Tests.InMemory;

/// <summary>
/// <see cref="ShmemIntervalBTree{TRecord, TComparer}.QueryOverlapping"/> as an optimistic reader: stopped in a leaf while
/// the writer joins and splits around it, and with readers and a writer running at once; every result checked.
/// </summary>
public sealed class ShmemIntervalConcurrentQueryTests(ITestOutputHelper output)
{
    static MapRecord Point(uint start) => new(start, 1, 0, 0);
    static MapRecord Key(uint start) => new(start, 0, 0, 0);

    struct Collect : IRecordVisitor<MapRecord>
    {
        public List<MapRecord> Found;
        public bool Visit(in MapRecord record)
        {
            Found.Add(record);
            return true;
        }
    }

    /// <summary>
    /// A query stopped (the test hook) in the first leaf after noting its version; the writer removes records of that
    /// leaf until it joins with its sibling, then inserts until a split. The query must look again and visit, in
    /// order and once each, every record that was there the whole time, and only records that were there at some time.
    /// </summary>
    [Fact]
    public void AQueryCaughtInTheMiddleOfAJoinAndASplitVisitsEachRecordOnce()
    {
        using var map = new ShmemIntervalBTree<MapRecord, MapIntervalComparer>();
        uint count = 0;
        while (map.Height < 2 || map.BlockCount < 4) Assert.True(map.Insert(Point(count++ * 10)));
        var initial = Enumerable.Range(0, (int)count).Select(i => (uint)i * 10).ToHashSet();
        var removed = new HashSet<uint>();
        var inserted = new HashSet<uint>();
        using var inLeaf = new ManualResetEventSlim();
        using var go = new ManualResetEventSlim();
        int rootEntries = 0;
        int top = map.Height - 1;
        var cursor = map.CursorForTests;
        cursor.ConcurrentReadHook = level =>
        {
            if (level == top) Interlocked.Increment(ref rootEntries);
            else if (level == 0 && !inLeaf.IsSet)
            {
                inLeaf.Set();
                go.Wait();
            }
        };
        var got = new List<MapRecord>();
        Exception? failure = null;
        var reader = new Thread(() =>
        {
            try
            {
                var visitor = new Collect { Found = got };
                Assert.True(map.QueryOverlapping(Key(0), Key(uint.MaxValue), ref visitor));
            }
            catch (Exception e) { failure = e; }
        });
        try
        {
            reader.Start();
            Assert.True(inLeaf.Wait(TimeSpan.FromSeconds(30)), "the query never entered a leaf");
            long blocks = map.BlockCount;
            for (uint k = 10; map.BlockCount == blocks; k += 10)
            {
                Assert.True(map.Remove(Key(k)));
                removed.Add(k);
            }
            blocks = map.BlockCount;
            for (uint k = 5; map.BlockCount == blocks; k += 10)
            {
                Assert.True(map.Insert(Point(k)));
                inserted.Add(k);
            }
        }
        finally
        {
            go.Set();
            reader.Join();
            cursor.ConcurrentReadHook = null;
        }
        Assert.Null(failure);
        var starts = got.Select(r => r.Start).ToList();
        for (int i = 1; i < starts.Count; i++) Assert.True(starts[i - 1] < starts[i], $"records out of order or twice: {starts[i - 1]} then {starts[i]}");
        foreach (uint k in initial.Except(removed)) Assert.Contains(k, starts);
        foreach (var r in got) Assert.True(initial.Contains(r.Start) || inserted.Contains(r.Start), $"record {r.Start} was never in the tree");
        Assert.True(rootEntries >= 2, $"the query read a changed leaf and did not start again ({rootEntries} walks)");
        Assert.Empty(map.CheckStructure());
    }

    /// <summary>
    /// Readers run overlapped queries while a writer keeps adding and removing the odd records (splits, joins, block
    /// reuse on a small tree): every even record in a query's range is visited once, in order, and nothing outside it.
    /// Bounded by a count of queries, which it reports.
    /// </summary>
    [Fact]
    public void QueriesWithAWriterRunningSeeEveryStableRecordOnce()
    {
        using var map = new ShmemIntervalBTree<MapRecord, MapIntervalComparer>();
        const uint Keys = 1200;
        for (uint k = 0; k < Keys; k += 2) Assert.True(map.Insert(Point(k)));
        int stop = 0;
        long queries = 0, recordsChecked = 0;
        Exception? failure = null;
        var writer = new Thread(() =>
        {
            var rnd = new Random(3);
            try
            {
                while (Volatile.Read(ref stop) == 0)
                {
                    uint k = (uint)rnd.Next((int)Keys / 2) * 2 + 1;
                    if (!map.Remove(Key(k))) Assert.True(map.Insert(Point(k)));
                }
            }
            catch (Exception e) { failure ??= e; }
        });
        var readers = Enumerable.Range(0, 2).Select(seed => new Thread(() =>
        {
            var rnd = new Random(seed + 10);
            var found = new List<MapRecord>();
            try
            {
                for (int q = 0; q < 1500; q++)
                {
                    uint a = (uint)rnd.Next((int)Keys), b = a + (uint)rnd.Next(400);
                    found.Clear();
                    var visitor = new Collect { Found = found };
                    Assert.True(map.QueryOverlapping(Key(a), Key(b), ref visitor));
                    uint expected = (a + 1) / 2 * 2;
                    foreach (var r in found)
                    {
                        Assert.InRange(r.Start, a, b);
                        Assert.Equal(1u, r.Length);
                        if (r.Start % 2 == 1) continue;
                        Assert.Equal(expected, r.Start);
                        expected += 2;
                    }
                    Assert.True(expected > Math.Min(b, Keys - 1), $"query [{a}, {b}] missed the stable record {expected}");
                    for (int i = 1; i < found.Count; i++) Assert.True(found[i - 1].Start < found[i].Start);
                    Interlocked.Increment(ref queries);
                    Interlocked.Add(ref recordsChecked, found.Count);
                }
            }
            catch (Exception e) { failure ??= e; }
        })).ToList();
        writer.Start();
        readers.ForEach(t => t.Start());
        readers.ForEach(t => t.Join());
        Volatile.Write(ref stop, 1);
        writer.Join();
        Assert.Null(failure);
        output.WriteLine($"{queries} queries, {recordsChecked} records checked");
        Assert.Equal(3000, queries);
        Assert.Empty(map.CheckStructure());
    }
}
