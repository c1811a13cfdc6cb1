using Xfbtree.Xfs.Format;
using Xfbtree.Xfs.Write.Files;

namespace Xfbtree.Xfs.Tests.Write;

/// <summary>The in-core extent list of a fork: lookup, insert/remove/convert with the kernel's merge rules, record codec.</summary>
public sealed class WriteFileExtentListTests
{
    static BmbtExtent E(ulong off, ulong blk, uint len, bool unwritten = false) => new(off, blk, len, unwritten);

    /// <summary>A range whose mappings all fit in one step is one step, up to the range's end: a reflink of 45
    /// blocks onto a destination mapped only in its first 19 took two transactions, and a kill between them left
    /// the destination half remapped (found by the kill -9 crash test).</summary>
    [Fact]
    public void AStepRunsToTheRangesEndWhenEveryMappingFits()
    {
        var list = new ExtentList([E(100, 500, 19), E(200, 700, 4), E(210, 800, 4)]);
        Assert.Equal((100UL, 145UL), Xfbtree.Xfs.Write.Files.FileOperations.NextStep(list, 100, 145, 1024, ulong.MaxValue));
        Assert.Equal((100UL, 250UL), Xfbtree.Xfs.Write.Files.FileOperations.NextStep(list, 50, 250, 1024, ulong.MaxValue));
        // Bounded by pieces: the step ends where its last mapping does, the rest is the next step's.
        Assert.Equal((100UL, 204UL), Xfbtree.Xfs.Write.Files.FileOperations.NextStep(list, 50, 250, 2, ulong.MaxValue));
        Assert.Equal((210UL, 250UL), Xfbtree.Xfs.Write.Files.FileOperations.NextStep(list, 204, 250, 2, ulong.MaxValue));
        // Bounded by blocks.
        Assert.Equal((100UL, 110UL), Xfbtree.Xfs.Write.Files.FileOperations.NextStep(list, 100, 250, 1024, 10));
        // Nothing mapped.
        Assert.Equal((300UL, 300UL), Xfbtree.Xfs.Write.Files.FileOperations.NextStep(list, 220, 300, 1024, ulong.MaxValue));
    }

    [Fact]
    public void InsertMergesWithLogicallyAndPhysicallyAdjacentNeighboursOnly()
    {
        var list = new ExtentList();
        list.Insert(E(0, 100, 4));
        list.Insert(E(4, 104, 4));            // adjacent both ways: merges left
        Assert.Equal([E(0, 100, 8)], list.Items);
        list.Insert(E(8, 200, 4));            // logically adjacent, physically not
        list.Insert(E(20, 112, 4));           // physically adjacent to nothing logically
        list.Insert(E(12, 204, 4, unwritten: true)); // adjacent both ways but another state
        Assert.Equal(4, list.Count);
        list.Insert(E(16, 208, 4, unwritten: true)); // merges left with the unwritten one
        Assert.Equal([E(0, 100, 8), E(8, 200, 4), E(12, 204, 8, true), E(20, 112, 4)], list.Items);
    }

    [Fact]
    public void InsertFillingAGapMergesBothSides()
    {
        var list = new ExtentList([E(0, 10, 2), E(4, 14, 2)]);
        list.Insert(E(2, 12, 2));
        Assert.Equal([E(0, 10, 6)], list.Items);
    }

    [Fact]
    public void MergeStopsAtTheLargestExtentLength()
    {
        const uint Max = ExtentList.MaxExtentLength;
        var list = new ExtentList([E(0, 1000, Max - 1)]);
        list.Insert(E(Max - 1, 1000 + Max - 1, 2));
        Assert.Equal([E(0, 1000, Max - 1), E(Max - 1, 1000 + Max - 1, 2)], list.Items);
        // Left first: a hole between two neighbours merges with the left when both would not fit.
        var list2 = new ExtentList([E(0, 0, Max - 5), E(Max - 3, Max - 3, 10)]);
        list2.Insert(E(Max - 5, Max - 5, 2));
        Assert.Equal([E(0, 0, Max - 3), E(Max - 3, Max - 3, 10)], list2.Items);
    }

    [Fact]
    public void InsertOverAMappingIsRefused()
    {
        var list = new ExtentList([E(10, 100, 10)]);
        Assert.Throws<InvalidOperationException>(() => list.Insert(E(5, 50, 6)));
        Assert.Throws<InvalidOperationException>(() => list.Insert(E(19, 50, 1)));
        Assert.Throws<ArgumentException>(() => list.Insert(E(0, 50, 0)));
    }

    [Fact]
    public void RemoveTrimsSplitsAndReportsThePieces()
    {
        var list = new ExtentList([E(0, 100, 10), E(20, 300, 10, true)]);
        var removed = list.Remove(5, 20);
        Assert.Equal([E(5, 105, 5), E(20, 300, 5, true)], removed);
        Assert.Equal([E(0, 100, 5), E(25, 305, 5, true)], list.Items);
        removed = list.Remove(1, 2); // middle split
        Assert.Equal([E(1, 101, 2)], removed);
        Assert.Equal([E(0, 100, 1), E(3, 103, 2), E(25, 305, 5, true)], list.Items);
        Assert.Empty(list.Remove(10, 10));
    }

    [Fact]
    public void SetStateSplitsAndMergesLikeTheKernel()
    {
        var list = new ExtentList([E(0, 100, 10, true)]);
        var changed = list.SetState(3, 4, unwritten: false);
        Assert.Equal([E(3, 103, 4)], changed);
        Assert.Equal([E(0, 100, 3, true), E(3, 103, 4), E(7, 107, 3, true)], list.Items);
        list.SetState(0, 3, unwritten: false); // merges with the written middle
        Assert.Equal([E(0, 100, 7), E(7, 107, 3, true)], list.Items);
        list.SetState(7, 3, unwritten: false);
        Assert.Equal([E(0, 100, 10)], list.Items);
        Assert.Empty(list.SetState(0, 10, unwritten: false));
    }

    [Fact]
    public void LookupGivesTheMappingFromTheOffsetOrTheHoleLength()
    {
        var list = new ExtentList([E(10, 100, 10)]);
        Assert.False(list.Lookup(3, out _, out ulong hole));
        Assert.Equal(7UL, hole);
        Assert.True(list.Lookup(12, out var m, out _));
        Assert.Equal(E(12, 102, 8), m);
        Assert.False(list.Lookup(20, out _, out hole));
        Assert.Equal(BmbtExtent.MaxFileOffset - 20, hole);
    }

    [Fact]
    public void RecordsRoundTripThroughTheOnDiskEncoding()
    {
        var samples = new[] { E(0, 1, 1), E((1UL << 54) - 2, (1UL << 52) - 1, 1, true), E(123456789, 987654321, ExtentList.MaxExtentLength) };
        var buf = new byte[16];
        foreach (var e in samples)
        {
            ExtentList.Encode(e, buf);
            Assert.Equal(e, BmbtExtent.Read(buf));
        }
        Assert.Throws<ArgumentOutOfRangeException>(() => ExtentList.Encode(E(1UL << 54, 0, 1), buf));
    }

    /// <summary>Random edits against a per-block model: each file block maps to (physical block, unwritten) or nothing;
    /// after every edit the list must describe exactly the model and hold no mergeable neighbours it created.</summary>
    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    [InlineData(4)]
    public void RandomEditsMatchAPerBlockModel(int seed)
    {
        var rng = new Random(seed);
        const int Span = 200;
        var model = new (ulong Phys, bool Unwritten)?[Span];
        var list = new ExtentList();
        ulong nextPhys = 1000;
        for (int step = 0; step < 2000; step++)
        {
            ulong off = (ulong)rng.Next(Span);
            ulong len = (ulong)rng.Next(1, 20);
            if (off + len > Span) len = Span - off;
            switch (rng.Next(3))
            {
                case 0:
                {
                    // Map the holes of the range, physically contiguous with the file offset (so merges happen).
                    for (ulong p = off; p < off + len;)
                    {
                        if (model[p] is not null) { p++; continue; }
                        ulong q = p;
                        while (q < off + len && model[q] is null) q++;
                        bool unwritten = rng.Next(2) == 0;
                        ulong phys = rng.Next(3) == 0 ? nextPhys : 5000 + p;
                        nextPhys += 300;
                        list.Insert(E(p, phys, (uint)(q - p), unwritten));
                        for (ulong i = p; i < q; i++) model[i] = (phys + (i - p), unwritten);
                        p = q;
                    }
                    break;
                }
                case 1:
                {
                    var removed = list.Remove(off, len);
                    foreach (var r in removed)
                    {
                        for (ulong i = 0; i < r.BlockCount; i++)
                        {
                            Assert.Equal(model[r.StartOffset + i], (r.StartBlock + i, r.Unwritten));
                            model[r.StartOffset + i] = null;
                        }
                    }
                    for (ulong i = off; i < off + len; i++) Assert.Null(model[i]);
                    break;
                }
                default:
                {
                    bool unwritten = rng.Next(2) == 0;
                    list.SetState(off, len, unwritten);
                    for (ulong i = off; i < off + len; i++)
                    {
                        if (model[i] is { } v) model[i] = (v.Phys, unwritten);
                    }
                    break;
                }
            }
            // The list equals the model, block by block, and is sorted and non-overlapping.
            var seen = new (ulong, bool)?[Span];
            ulong prevEnd = 0;
            foreach (var e in list.Items)
            {
                Assert.True(e.StartOffset >= prevEnd);
                prevEnd = e.StartOffset + e.BlockCount;
                for (ulong i = 0; i < e.BlockCount; i++) seen[e.StartOffset + i] = (e.StartBlock + i, e.Unwritten);
            }
            Assert.Equal(model, seen);
        }
    }

    /// <summary>
    /// A snapshot reads its source until its first edit, which copies the records (the source never changes) or,
    /// made to take them, takes them without a copy (the source and any other snapshot of it then throw instead of
    /// showing the edited records). Either way the changed window is exact: the records before it and after it are
    /// the source's, and the records it replaced are the source's between them. Random edits in runs of 1-4 (one
    /// operation), each operation's list the next one's source, as a fork stores and goes on.
    /// </summary>
    [Theory]
    [InlineData(1, false)]
    [InlineData(2, false)]
    [InlineData(3, true)]
    [InlineData(4, true)]
    public void SnapshotsCopyOrTakeTheirSourceAndTheirWindowHoldsEveryChange(int seed, bool take)
    {
        var rng = new Random(seed);
        const int Span = 400;
        var source = new ExtentList();
        for (ulong off = 0; off < Span; off += 4) source.Insert(E(off, 10_000 + off * 7, 2, unwritten: off % 8 == 0));
        int smallWindows = 0;
        for (int op = 0; op < 600; op++)
        {
            var frozen = source.Items.ToArray();
            var edited = source.Snapshot(takeAtFirstEdit: take);
            var bystander = source.Snapshot();
            edited.ChangedWindow(out int p0, out int s0, out var r0);
            Assert.Equal((source.Count, 0, 0), (p0, s0, r0.Count)); // no edit yet: an empty window
            int edits = rng.Next(1, 5);
            for (int k = 0; k < edits; k++)
            {
                ulong off = (ulong)rng.Next(Span), len = (ulong)rng.Next(1, 6);
                switch (rng.Next(3))
                {
                    case 0:
                        edited.Remove(off, len);
                        break;
                    case 1:
                        edited.SetState(off, len, rng.Next(2) == 0);
                        break;
                    default:
                        if (edited.MappingsIn(off, len).Count == 0) edited.Insert(E(off, 50_000 + off, (uint)len));
                        break;
                }
            }
            edited.ChangedWindow(out int prefix, out int suffix, out var replaced);
            var now = edited.Items.ToArray();
            if (replaced.Count + prefix + suffix == 0 && now.Length == 0) continue;
            // The source, rebuilt from the edited list and its window, is the source as it was.
            var rebuilt = now[..prefix].Concat(replaced).Concat(now[(now.Length - suffix)..]).ToArray();
            Assert.Equal(frozen, rebuilt);
            bool changed = !frozen.SequenceEqual(now);
            if (take && changed) Assert.False(source.HasRecords);
            if (!take) Assert.True(source.HasRecords);
            if (!source.HasRecords)
            {
                Assert.Throws<InvalidOperationException>(() => source.Count);
                Assert.Throws<InvalidOperationException>(() => bystander[0]);
            }
            else
            {
                Assert.Equal(frozen, source.Items.ToArray()); // copied, or never edited: the source is untouched
                Assert.Equal(frozen, bystander.Items.ToArray());
            }
            if (now.Length - prefix - suffix <= 4 * edits + 2) smallWindows++;
            edited.ResetChanges();
            source = edited; // the stored list becomes the next operation's source
        }
        // Edits far apart make a wide window; many operations here stay within a few records of what they touched.
        Assert.True(smallWindows > 150, $"only {smallWindows} of 600 operations kept their window small");
    }
}
