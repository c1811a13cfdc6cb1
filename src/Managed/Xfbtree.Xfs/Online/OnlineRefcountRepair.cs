using System.Buffers.Binary;
using Xfbtree.Btree;
using Xfbtree.Xfs.Format;
using Xfbtree.Xfs.Scrub;
using Xfbtree.Xfs.Trees;
using Xfbtree.Xfs.Write;
using Xfbtree.Xfs.Write.Engine;

namespace Xfbtree.Xfs.Online;

/// <summary>
/// Rebuilds the refcountbt of one AG of an open <see cref="WriteEngine"/> (upstream's xrep_refcountbt), in ONE engine
/// transaction holding the AG lock: the shared domain from the overlaps of the rmapbt's data records
/// (<see cref="SharedExtentSweep"/>), the CoW staging domain from its OWN_COW records (refcount 1); the new tree's
/// blocks from free space through the allocator (OWN_REFC); the AGF switched (<c>AgSpace.InstallRebuiltRefcountbt</c>);
/// the old tree's blocks (the OWN_REFC records found before) reaped. One journal record: a crash leaves the old tree
/// or the new. The rmapbt and the free-space trees must be healthy (the repair order puts them first).
/// </summary>
internal static class OnlineRefcountRepair
{
    private static readonly string[] ToleratedAgf = ["refcountbt", "agf_refcount_blocks"];

    /// <param name="engine">The open write engine.</param>
    /// <param name="agno">The AG.</param>
    /// <param name="hooks">Test callbacks, or null.</param>
    /// <param name="rmaps">The reverse mappings to rebuild from: null, the on-disk rmapbt; without one, the offline
    /// scan's set (the data and attribute fork mappings of every inode, the CoW staging extents).</param>
    public static AgRebuildResult Run(WriteEngine engine, uint agno, AgRebuildTestHooks? hooks = null, AgRmapSource? rmaps = null)
    {
        ArgumentNullException.ThrowIfNull(engine);
        XfsGeometry geo = engine.Geometry;
        if (!geo.Superblock.HasReflink)
        {
            throw new XfsWriteException(WriteErrorKind.NotSupported, "the filesystem has no refcountbt");
        }
        return AgRebuild.RunLocked(engine, agno, "refcountbt", "rebuild the refcountbt from", hooks, (tx, rmapSource) =>
        {
            var space = tx.Space(agno);
            space.ToleratedAgfProblems = rmapSource.IsOnDiskRmapbt ? ToleratedAgf : AgRebuild.AgfCountersRecomputedFromScans;

            // 1. collect
            var sweep = new SharedExtentSweep();
            var cow = new List<(uint Start, uint Length)>();
            var old = new List<(uint Start, uint Length)>();
            rmapSource.ForEach(space, r =>
            {
                if (r.Owner == RmapOwner.Refc) old.Add((r.StartBlock, r.BlockCount));
                else if (r.Owner == RmapOwner.Cow) cow.Add((r.StartBlock, r.BlockCount));
                else sweep.Add(r);
            });
            List<(uint Start, uint Length, uint Count)> shared = sweep.Finish();
            long records = shared.Count + cow.Count;

            // 2. reserve
            var geometry = BtreeGeometry.For(new RefcountbtOps(), geo.BlockSize, XfsTreeLimits.MaxRecords(geo, AgfTree.Refcountbt));
            BtreeBulkGeometry plan = BtreeBulkLoader.ComputeGeometry(geometry, records);
            uint hint = old.Count > 0 ? old[0].Start : geo.FirstFreeBlock;
            List<uint> claimed = AgRebuild.AllocateNewTreeBlocks(tx, agno, plan.TotalBlocks, hint, AllocationPurpose.RefcountBtreeBlock, RmapOwner.Refc);

            // 3. load
            var staged = new BtreeRootValue(BtreeHeader.NullPointer, 1);
            var tree = new Btree<RefcountbtOps>(new RefcountbtOps(), tx.AgStore(agno, null, null), staged, geo.MetaUuid, agno, XfsTreeLimits.MaxRecords(geo, AgfTree.Refcountbt));
            var source = new RefcountSource(shared, cow);
            long blocks = BtreeBulkLoader.Load(tree, plan, ref source, AgRebuild.Claimer(claimed, 0, (int)plan.TotalBlocks));

            // 4. switch, 5. reap
            space.InstallRebuiltRefcountbt((uint)staged.Pointer, plan.Height, blocks);
            hooks?.AfterSwitch?.Invoke(agno);
            long reaped = AgRebuild.ReapOldBlocks(tx, agno, old, RmapOwner.Refc);
            return new AgRebuildResult(agno, "refcountbt", records, blocks, reaped, TimeSpan.Zero);
        }, rmaps);
    }

    /// <summary>Shared extents (their counts), then CoW staging extents (start with the CoW flag, refcount 1).</summary>
    private struct RefcountSource(List<(uint Start, uint Length, uint Count)> shared, List<(uint Start, uint Length)> cow) : IBtreeRecordSource
    {
        private int next;

        public void Fill(Span<byte> destination, int count)
        {
            for (int i = 0; i < count; i++, next++)
            {
                Span<byte> r = destination[(i * 12)..];
                if (next < shared.Count)
                {
                    var (s, l, c) = shared[next];
                    Write(r, s, l, c);
                }
                else
                {
                    var (s, l) = cow[next - shared.Count];
                    Write(r, s | RefcountbtOps.CowFlag, l, 1);
                }
            }
        }

        private static void Write(Span<byte> r, uint start, uint length, uint count)
        {
            BinaryPrimitives.WriteUInt32BigEndian(r, start);
            BinaryPrimitives.WriteUInt32BigEndian(r[4..], length);
            BinaryPrimitives.WriteUInt32BigEndian(r[8..], count);
        }
    }
}
