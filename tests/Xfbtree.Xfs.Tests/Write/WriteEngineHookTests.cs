using Xfbtree.Xfs.Format;
using Xfbtree.Xfs.Tests.Repair;
using Xfbtree.Xfs.Trees;
using Xfbtree.Xfs.Write.Engine;
using static Xfbtree.Xfs.Tests.Write.WriteEngineTestSupport;

namespace Xfbtree.Xfs.Tests.Write;

/// <summary>rmap hooks: exactly the committed changes, none of cancelled ones, under the AG lock, failures isolated.</summary>
public sealed class WriteEngineHookTests
{
    sealed class Recorder(WriteEngine engine, bool throwing = false) : IRmapHook
    {
        public readonly List<RmapUpdate> Updates = new();
        public readonly List<Exception> Failures = new();
        public bool LockHeldEveryTime = true;

        public void OnRmapUpdate(in RmapUpdate update)
        {
            LockHeldEveryTime &= engine.Ag(update.AgNumber).Lock.IsHeld;
            Updates.Add(update);
            if (throwing)
            {
                throw new InvalidOperationException("observer bug");
            }
        }

        public void OnHookFailed(Exception error) => Failures.Add(error);
    }

    static List<RmapRecord> Records(WriteEngine engine, uint agno)
    {
        var list = new List<RmapRecord>();
        using var cur = engine.Image.OpenRmapbt(engine.Image.ReadAgf(agno)).CreateCursor();
        for (bool ok = cur.MoveFirst(); ok; ok = cur.Increment()) list.Add(RmapRecord.Read(cur.Current));
        return list;
    }

    /// <summary>Per-block owner multiset of a record list (what map/unmap must transform exactly).</summary>
    static SortedDictionary<(uint Block, ulong Owner, ulong Offset), int> Blocks(IEnumerable<RmapRecord> records)
    {
        var d = new SortedDictionary<(uint, ulong, ulong), int>();
        foreach (var r in records)
        {
            for (uint i = 0; i < r.BlockCount; i++)
            {
                var key = (r.StartBlock + i, r.Owner, RmapOwner.IsSpecial(r.Owner) || r.IsBmbtBlock ? 0 : r.Offset + i);
                d[key] = d.GetValueOrDefault(key) + 1;
            }
        }
        return d;
    }

    [Fact]
    public void WriteEngine_HooksSeeExactlyTheCommittedRmapChanges()
    {
        using var scratch = new RepairScratch();
        string image = scratch.CopyFixture("geom-bs1k");
        using (var engine = WriteEngine.Open(image, Fast))
        {
            var recorder = new Recorder(engine);
            var thrower = new Recorder(engine, throwing: true);
            var before = Records(engine, 1);
            using (engine.RegisterRmapHook(1, recorder))
            using (engine.RegisterRmapHook(1, thrower))
            {
                var rnd = new Random(3);
                // Cancelled: nothing delivered.
                Assert.Throws<InvalidOperationException>(() => engine.Execute("cancelled", tx =>
                {
                    tx.LockAg(1);
                    AllocatedExtent e = tx.Allocate(new AllocationRequest(engine.Geometry.AgbToFsb(1, 300), 5, 5, AllocationPurpose.FileData, OnlyAg: 1));
                    tx.RmapMap(1, new RmapRecord(e.AgBlock, e.Length, 1UL << 40, 0), shared: false);
                    throw new InvalidOperationException("no");
                }));
                Assert.Empty(recorder.Updates);
                // Committed: a mapping stays (and is removed again by a second transaction).
                AllocatedExtent kept = default;
                engine.Execute("map", tx =>
                {
                    for (int i = 0; i < 200; i++)
                    {
                        AllocatedExtent e = tx.Allocate(new AllocationRequest(engine.Geometry.AgbToFsb(1, (uint)rnd.Next(100, 8000)), 1, 3, AllocationPurpose.FileData, OnlyAg: 1));
                        tx.RmapMap(1, new RmapRecord(e.AgBlock, e.Length, (1UL << 40) + (ulong)i, 0), shared: false);
                        if (i == 0)
                        {
                            kept = e;
                        }
                        else
                        {
                            tx.RmapUnmap(1, new RmapRecord(e.AgBlock, e.Length, (1UL << 40) + (ulong)i, 0), shared: false);
                            tx.Free(1, e.AgBlock, e.Length);
                        }
                    }
                });
                var middle = Records(engine, 1);
                AssertApplied(before, recorder.Updates, middle);
                Assert.Contains(recorder.Updates, u => u.Record.Owner == RmapOwner.Ag);
                Assert.Contains(recorder.Updates, u => u.Record.Owner == 1UL << 40 && u.Kind == RmapUpdateKind.Map);
                Assert.True(recorder.LockHeldEveryTime, "a hook ran without the AG lock");
                Assert.Equal(thrower.Updates.Count, thrower.Failures.Count);
                Assert.Equal(recorder.Updates.Count, thrower.Updates.Count);
                int seen = recorder.Updates.Count;
                engine.Execute("unmap", tx =>
                {
                    tx.RmapUnmap(1, new RmapRecord(kept.AgBlock, kept.Length, 1UL << 40, 0), shared: false);
                    tx.Free(1, kept.AgBlock, kept.Length);
                });
                AssertApplied(middle, recorder.Updates.Skip(seen), Records(engine, 1));
            }
            // Unregistered: nothing more.
            int total = recorder.Updates.Count;
            engine.Execute("after", tx =>
            {
                AllocatedExtent e = tx.Allocate(new AllocationRequest(engine.Geometry.AgbToFsb(1, 500), 1, 1, AllocationPurpose.FileData, OnlyAg: 1));
                tx.RmapMap(1, new RmapRecord(e.AgBlock, 1, 1UL << 41, 0), shared: false);
                tx.RmapUnmap(1, new RmapRecord(e.AgBlock, 1, 1UL << 41, 0), shared: false);
                tx.Free(1, e.AgBlock, 1);
            });
            Assert.Equal(total, recorder.Updates.Count);
            AssertInvariants(engine, "after the hook test");
            engine.Close();
        }
        AssertOraclesClean(image, "hooks");
    }

    static void AssertApplied(List<RmapRecord> before, IEnumerable<RmapUpdate> updates, List<RmapRecord> after)
    {
        var model = Blocks(before);
        foreach (RmapUpdate u in updates)
        {
            Assert.Equal(1u, u.AgNumber);
            var one = Blocks([u.Record]);
            foreach (var (key, n) in one)
            {
                if (u.Kind == RmapUpdateKind.Map)
                {
                    model[key] = model.GetValueOrDefault(key) + n;
                }
                else if (u.Kind == RmapUpdateKind.Unmap)
                {
                    Assert.True(model.TryGetValue(key, out int have) && have >= n, $"unmap of {u.Record} not mapped in the model");
                    if (have == n) model.Remove(key); else model[key] = have - n;
                }
            }
        }
        var actual = Blocks(after);
        Assert.Equal(actual.Count, model.Count);
        Assert.True(actual.SequenceEqual(model), "the hook stream does not transform the rmapbt before into the rmapbt after");
    }

    /// <summary>Without an rmapbt no rmap change is ever made: registering an observer, outside a transaction or
    /// inside one holding the AG, is refused with NotSupported, and nothing is registered.</summary>
    [Fact]
    public void WriteEngine_WithoutAnRmapbtRefusesEveryHookRegistration()
    {
        using var scratch = new RepairScratch();
        string image = Path.Combine(scratch.Directory, "normap.img");
        RepairTools.MkfsSmall(image, 64L << 20, "-m", "crc=1,rmapbt=0");
        using var engine = WriteEngine.Open(image, Fast);
        var recorder = new Recorder(engine);
        var outside = Assert.Throws<Xfbtree.Xfs.Write.XfsWriteException>(() => engine.RegisterRmapHook(0, recorder));
        Assert.Equal(Xfbtree.Xfs.Write.WriteErrorKind.NotSupported, outside.Kind);
        var held = Assert.Throws<Xfbtree.Xfs.Write.XfsWriteException>(() => engine.Execute("hook", tx =>
        {
            tx.LockAg(0);
            tx.RegisterRmapHookHeld(0, recorder).Dispose();
        }));
        Assert.Equal(Xfbtree.Xfs.Write.WriteErrorKind.NotSupported, held.Kind);
        Assert.False(engine.Ag(0).HasHooks);
    }
}
