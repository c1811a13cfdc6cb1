using Xfbtree.Storage;
using Xfbtree.Xfs.Scan;
using Xfbtree.Xfs.Trees;

namespace Xfbtree.Xfs.Tests.Scan;

/// <summary>
/// The per-AG expected set: sorted runs staged in the xfile, k-way merged (more runs than the fan-in, so merges
/// of merges happen), bulk-loaded; repeated keys reported once each and dropped; single adds after sealing.
/// </summary>
public sealed class ScanRmapSetTests
{
    static RmapRecord Random(Random rng)
    {
        uint start = (uint)rng.Next(0, 1 << 20), len = (uint)rng.Next(1, 64);
        if (rng.Next(4) == 0) return new RmapRecord(start, len, 0xFFFFFFFFFFFFFFF7 + (ulong)rng.Next(0, 5), 0);   // OWN_COW..OWN_AG
        return new RmapRecord(start, len, (ulong)rng.Next(128, 100000), (ulong)(uint)rng.Next(0, 1000) | (rng.Next(8) == 0 ? RmapbtOps.UnwrittenFlag : 0UL));
    }

    [Theory]
    [InlineData(0, 0)]
    [InlineData(1, 1)]
    [InlineData(50, 37)]
    [InlineData(300, 200)]     // 300 runs > fan-in 64: intermediate merges
    public void ScanStagedRunsMergeIntoTheTreeInKeyOrder(int runs, int seed)
    {
        var rng = new Random(seed);
        using var xfile = Xfile.Create(new XfileOptions { MaxSize = 1L << 32 });
        using var set = new AgRmapSet(0, 1u << 21, xfile, 0, 1L << 31, 1L << 31, 1L << 31);
        var model = new SortedDictionary<(uint, ulong, ulong), RmapRecord>();
        var kept = new List<RmapRecord>();
        int expectedDuplicates = 0;
        for (int r = 0; r < runs; r++)
        {
            var batch = new List<RmapRecord>();
            int n = rng.Next(1, 400);
            for (int i = 0; i < n; i++)
            {
                // Every 50th record repeats the key of an earlier one (possibly in another run).
                var rec = kept.Count > 0 && rng.Next(50) == 0 ? kept[rng.Next(kept.Count)] with { BlockCount = 7 } : Random(rng);
                var key = (rec.StartBlock, rec.Owner, rec.RawOffset & ~RmapbtOps.UnwrittenFlag);
                if (batch.Any(b => (b.StartBlock, b.Owner, b.RawOffset & ~RmapbtOps.UnwrittenFlag) == key)) continue;
                if (!model.TryAdd(key, rec)) expectedDuplicates++;
                batch.Add(rec);
                kept.Add(rec);
            }
            var span = batch.ToArray().AsSpan();
            span.Sort(new RmapKeyComparer());
            set.AppendSorted(span);
        }
        var dups = new List<RmapRecord>();
        set.Seal(dups.Add);
        Assert.Equal(expectedDuplicates, dups.Count);
        Assert.Equal(model.Count, set.Count);
        var check = set.Tree.Tree.Check();
        Assert.True(check.IsClean, check.ToString());
        using var cur = set.CreateCursor();
        var got = new List<(uint, ulong, ulong)>();
        if (cur.MoveFirst())
            do { var r = RmapRecord.Read(cur.Current); got.Add((r.StartBlock, r.Owner, r.RawOffset & ~RmapbtOps.UnwrittenFlag)); }
            while (cur.Increment());
        Assert.Equal(model.Keys, got);
        Assert.Equal(0, xfile.BytesUsed - set.BytesInUse);   // staging returned

        // After sealing: single adds (a repair's OWN_AG records), duplicates refused.
        var extra = new RmapRecord((1u << 20) + 5, 3, 0xFFFFFFFFFFFFFFFB, 0);
        Assert.True(set.Add(extra));
        Assert.False(set.Add(extra));
        Assert.Equal(model.Count + 1, set.Count);
        Assert.Throws<InvalidOperationException>(() => set.AppendSorted([extra]));
    }
}
