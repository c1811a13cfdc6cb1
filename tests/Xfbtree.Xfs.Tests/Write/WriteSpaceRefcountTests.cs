using Xfbtree.Xfs.Tests.Repair;
using Xfbtree.Xfs.Write.Engine;
using Xfbtree.Xfs.Write.Space;
using static Xfbtree.Xfs.Tests.Write.WriteEngineTestSupport;

namespace Xfbtree.Xfs.Tests.Write;

/// <summary>Refcount increment/decrement against a per-block model (xfs_refcount_adjust's canonical outcome).</summary>
public sealed class WriteSpaceRefcountTests
{
    /// <summary>The canonical records of a per-block count array: maximal runs of equal count ≥ 2.</summary>
    static List<(uint, uint, uint)> Canonical(int[] counts, uint baseBlock)
    {
        var list = new List<(uint, uint, uint)>();
        for (int i = 0; i < counts.Length;)
        {
            int j = i;
            while (j < counts.Length && counts[j] == counts[i]) j++;
            if (counts[i] >= 2) list.Add((baseBlock + (uint)i, (uint)(j - i), (uint)counts[i]));
            i = j;
        }
        return list;
    }

    [Theory]
    [InlineData("fresh-4ag", 1)]
    [InlineData("geom-bs1k", 2)]
    public void WriteSpace_RefcountAdjustMatchesTheModel(string fixture, int seed)
    {
        using var scratch = new RepairScratch();
        string image = scratch.CopyFixture(fixture);
        using (var engine = WriteEngine.Open(image, Fast))
        {
            uint agno = 2;
            const uint Base = 1000;
            const int Span = 3000;
            var rnd = new Random(seed);
            engine.Execute("refcount model", tx =>
            {
                tx.LockAg(agno);
                AgSpace space = tx.Space(agno);
                var counts = new int[Span];
                Array.Fill(counts, 1);
                for (int op = 0; op < 400; op++)
                {
                    int start = rnd.Next(Span - 1);
                    int len = rnd.Next(1, Math.Min(Span - start, op % 50 == 0 ? 2000 : 40) + 1);
                    bool inc = rnd.Next(3) != 0 || counts.AsSpan(start, len).IndexOfAnyExcept(1) < 0 && false;
                    if (!inc && counts.AsSpan(start, len).ToArray().Any(c => c < 1)) inc = true;
                    if (inc)
                    {
                        tx.RefcountIncrement(agno, Base + (uint)start, (uint)len);
                        for (int i = start; i < start + len; i++) counts[i]++;
                    }
                    else
                    {
                        var freed = tx.RefcountDecrement(agno, Base + (uint)start, (uint)len);
                        var expectFreed = new List<(uint, uint)>();
                        for (int i = start; i < start + len; i++)
                        {
                            counts[i]--;
                            if (counts[i] == 0)
                            {
                                if (expectFreed.Count > 0 && expectFreed[^1].Item1 + expectFreed[^1].Item2 == Base + (uint)i)
                                    expectFreed[^1] = (expectFreed[^1].Item1, expectFreed[^1].Item2 + 1);
                                else
                                    expectFreed.Add((Base + (uint)i, 1));
                                counts[i] = 1; // freed and owned again by someone: no record, as before
                            }
                        }
                        Assert.Equal(expectFreed, freed.Select(f => (f.AgBlock, f.Length)).ToList());
                    }
                    Assert.Equal(Canonical(counts, Base), space.RefcountRecords(0, uint.MaxValue - 1).Select(r => (r.Start, r.Length, r.Count)).ToList());
                    Assert.Equal(counts.Any(c => c >= 2) , tx.IsShared(agno, Base, Span));
                }
                // Back to no sharing at all, one decrement per block level.
                for (int i = 0; i < Span; i++)
                {
                    while (counts[i] > 1)
                    {
                        int j = i;
                        while (j < Span && counts[j] > 1) j++;
                        tx.RefcountDecrement(agno, Base + (uint)i, (uint)(j - i));
                        for (int k = i; k < j; k++) counts[k]--;
                    }
                }
                Assert.Empty(space.RefcountRecords(0, uint.MaxValue - 1));
            });
            AssertInvariants(engine, "after the refcount model");
            engine.Close();
        }
        AssertOraclesClean(image, "refcount model");
    }
}
