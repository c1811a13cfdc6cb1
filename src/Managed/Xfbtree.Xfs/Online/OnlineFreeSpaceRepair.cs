using Xfbtree.Btree;
using Xfbtree.Xfs.Format;
using Xfbtree.Xfs.Repair;
using Xfbtree.Xfs.Trees;
using Xfbtree.Xfs.Write;
using Xfbtree.Xfs.Write.Engine;
using Xfbtree.Xfs.Write.Space;

namespace Xfbtree.Xfs.Online;

/// <summary>
/// Rebuilds the bnobt and the cntbt of one AG of an open <see cref="WriteEngine"/> from the gaps of its rmapbt
/// (upstream's xrep_abt), in ONE engine transaction holding the AG lock (writers to other AGs go on; writers to this
/// AG wait for the commit, then see the new trees):
/// <list type="number">
/// <item>collect: every block in no rmapbt record is free; OWN_AG blocks that are neither rmapbt blocks nor AGFL
/// blocks are the old free-space trees (and leaks);</item>
/// <item>reserve the new trees' blocks (a fixpoint: taking blocks out of free space changes the record count):
/// old tree blocks first (already OWN_AG), then the lowest free blocks (mapped OWN_AG after the switch);</item>
/// <item>load both trees (bulk loader) with the free extents left, in block order and in (length, start) order;</item>
/// <item>switch the AGF (<c>AgSpace.InstallRebuiltFreeSpaceTrees</c>: roots, levels, freeblks, longest, btreeblks);</item>
/// <item>reap, through the new trees: new blocks taken from free space mapped OWN_AG, unused claims and the old
/// trees' remaining blocks freed (OWN_AG unmapped, buffers invalidated).</item>
/// </list>
/// A crash leaves the old trees or the new ones: the whole repair is one journal record. The rmapbt must be healthy
/// (the repair order puts it first).
/// </summary>
internal static class OnlineFreeSpaceRepair
{
    /// <summary>AGF problems this repair replaces (the AGF's free-space fields).</summary>
    private static readonly string[] ToleratedAgf = ["bnobt", "cntbt", "agf_freeblks", "agf_longest", "agf_btreeblks"];

    /// <param name="engine">The open write engine.</param>
    /// <param name="agno">The AG.</param>
    /// <param name="hooks">Test callbacks, or null.</param>
    /// <param name="rmaps">The reverse mappings to rebuild from: null, the on-disk rmapbt; without one, the offline
    /// scan's set (<see cref="ScannedAgRmaps"/>).</param>
    /// <param name="emptyFreeListFirst">Rewrite the free list empty first, in the same transaction (the free-list
    /// repair of a filesystem without an rmapbt: nothing tells its blocks apart but the list itself, so they go back
    /// to free space with the old trees' and the free-list fix refills it from the new trees).</param>
    public static AgRebuildResult Run(WriteEngine engine, uint agno, AgRebuildTestHooks? hooks = null, AgRmapSource? rmaps = null, bool emptyFreeListFirst = false)
    {
        XfsGeometry geo = engine.Geometry;
        return AgRebuild.RunLocked(engine, agno, emptyFreeListFirst ? "AGFL+bnobt+cntbt" : "bnobt+cntbt", "rebuild the free-space btrees from", hooks, (tx, source) =>
        {
            AgSpace space = tx.Space(agno);
            space.ToleratedAgfProblems = source.IsOnDiskRmapbt ? ToleratedAgf : AgRebuild.AgfCountersRecomputedFromScans;
            if (emptyFreeListFirst)
            {
                space.InstallRebuiltFreeList([]);
            }
            uint agLength = space.AgLength;

            // 1. collect
            var used = new AgBlockBitmap(agLength);
            var ownAg = new AgBlockBitmap(agLength);
            var otherOwners = new AgBlockBitmap(agLength);
            source.ForEach(space, r =>
            {
                used.Set(r.StartBlock, r.BlockCount);
                (r.Owner == RmapOwner.Ag ? ownAg : otherOwners).Set(r.StartBlock, r.BlockCount);
            });
            var rmapBlocks = new AgBlockBitmap(agLength);
            if (space.HasRmapbt)
            {
                AgRebuild.MarkTreeBlocks(space.Rmapbt(), rmapBlocks);
            }
            var agflBlocks = new AgBlockBitmap(agLength);
            foreach (uint b in space.FreeListBlocks())
            {
                if (b >= agLength || !ownAg.IsSet(b))
                {
                    throw new OnlineRepairException($"AG {agno}: AGFL block {b} is not OWN_AG in the {(source.IsOnDiskRmapbt ? "rmapbt; repair the rmapbt first" : "offline scan")}");
                }
                agflBlocks.Set(b, 1);
            }
            var old = new AgBlockBitmap(agLength);
            old.UnionWith(ownAg);
            foreach (var (s, l) in AgRebuild.Runs(rmapBlocks))
            {
                if (!IsAllSet(ownAg, s, l))
                {
                    throw new OnlineRepairException($"AG {agno}: rmapbt blocks [{s}, +{l}) are not OWN_AG in the rmapbt; repair the rmapbt first");
                }
                old.Clear(s, l);
            }
            foreach (var (s, l) in AgRebuild.Runs(agflBlocks))
            {
                old.Clear(s, l);
            }
            // A block another owner claims too (an old list's slot past its true end naming a file's block, a
            // cross-link) is never freed with the old trees: it stays whoever else's it is.
            foreach (var (s, l) in AgRebuild.Runs(otherOwners))
            {
                old.Clear(s, l);
            }
            AgBlockBitmap free = used.Complement();

            // 2. reserve (fixpoint)
            var bnoGeometry = BtreeGeometry.For(new BnobtOps(agLength), geo.BlockSize, XfsTreeLimits.MaxRecords(geo, AgfTree.Bnobt));
            var cntGeometry = BtreeGeometry.For(new CntbtOps(agLength), geo.BlockSize, XfsTreeLimits.MaxRecords(geo, AgfTree.Cntbt));
            var fromOld = new List<uint>();
            var fromFree = new List<uint>();
            BtreeBulkGeometry bnoPlan, cntPlan;
            for (int round = 0; ; round++)
            {
                if (round > 64)
                {
                    throw new OnlineRepairException($"AG {agno}: the new free-space trees' reservation does not converge");
                }
                long extents = AgRebuild.Runs(free).Count;
                bnoPlan = BtreeBulkLoader.ComputeGeometry(bnoGeometry, extents);
                cntPlan = BtreeBulkLoader.ComputeGeometry(cntGeometry, extents);
                long shortfall = bnoPlan.TotalBlocks + cntPlan.TotalBlocks - fromOld.Count - fromFree.Count;
                if (shortfall <= 0)
                {
                    break;
                }
                foreach (uint b in old.TakeLowest(shortfall))
                {
                    old.Clear(b, 1);
                    tx.InvalidateFreedBlocks(agno, b, 1); // formatted anew by the loader, never read as the old block
                    fromOld.Add(b);
                    shortfall--;
                }
                if (shortfall > 0)
                {
                    List<uint> taken = free.TakeLowest(shortfall);
                    if (taken.Count < shortfall)
                    {
                        throw new OnlineRepairNoSpaceException(agno, $"AG {agno}: no room for the new free-space btrees ({bnoPlan.TotalBlocks + cntPlan.TotalBlocks} blocks); the AG was left as it was");
                    }
                    foreach (uint b in taken)
                    {
                        free.Clear(b, 1);
                        fromFree.Add(b);
                    }
                }
            }

            // 3. load
            var claimed = new List<uint>(fromOld.Count + fromFree.Count);
            claimed.AddRange(fromOld);
            claimed.AddRange(fromFree);
            claimed.Sort();
            var (bnoRoot, bnoBlocks) = LoadTree(tx, agno, new BnobtOps(agLength), AgfTree.Bnobt, bnoPlan, new BlockOrderSource(free), AgRebuild.Claimer(claimed, 0, (int)bnoPlan.TotalBlocks));
            var bySize = new CntOrderSource(free);
            var (cntRoot, cntBlocks) = LoadTree(tx, agno, new CntbtOps(agLength), AgfTree.Cntbt, cntPlan, bySize,
                AgRebuild.Claimer(claimed, (int)bnoPlan.TotalBlocks, (int)cntPlan.TotalBlocks));

            // 4. switch
            space.InstallRebuiltFreeSpaceTrees(bnoRoot, bnoPlan.Height, bnoBlocks, cntRoot, cntPlan.Height, cntBlocks,
                checked((uint)free.CountSet()), bySize.Longest);
            hooks?.AfterSwitch?.Invoke(agno);

            // 5. reap, through the new trees
            int usedCount = (int)(bnoBlocks + cntBlocks);
            var usedSet = new HashSet<uint>(claimed.GetRange(0, usedCount));
            var fromFreeUsed = fromFree.Where(usedSet.Contains).Order().ToList();
            foreach (var (s, l) in AgRebuild.Runs(fromFreeUsed))
            {
                space.RmapChange(RmapUpdateKind.Map, new RmapRecord(s, l, RmapOwner.Ag, 0), shared: false);
            }
            foreach (uint b in fromFree.Where(b => !usedSet.Contains(b)))
            {
                space.FreeExtent(b, 1);
            }
            foreach (uint b in fromOld.Where(b => !usedSet.Contains(b)))
            {
                old.Set(b, 1);
            }
            long reaped = 0;
            foreach (var (s, l) in AgRebuild.Runs(old))
            {
                space.RmapChange(RmapUpdateKind.Unmap, new RmapRecord(s, l, RmapOwner.Ag, 0), shared: false);
                space.FreeMetadataExtent(s, l);
                reaped += l;
            }
            return new AgRebuildResult(agno, "bnobt+cntbt", bySize.Count, bnoBlocks + cntBlocks, reaped, TimeSpan.Zero);
        }, rmaps);
    }

    private static bool IsAllSet(AgBlockBitmap bitmap, uint start, uint length)
    {
        for (uint b = start; b < start + length; b++)
        {
            if (!bitmap.IsSet(b))
            {
                return false;
            }
        }
        return true;
    }

    private static (uint Root, long Blocks) LoadTree<TOps, TSource>(WriteTransaction tx, uint agno, TOps ops, AgfTree which, BtreeBulkGeometry plan, TSource source, Func<long> claim)
        where TOps : struct, IBtreeOps where TSource : IBtreeRecordSource
    {
        XfsGeometry geo = tx.Geometry;
        var staged = new BtreeRootValue(BtreeHeader.NullPointer, 1);
        var tree = new Btree<TOps>(ops, tx.AgStore(agno, null, null), staged, geo.MetaUuid, agno, XfsTreeLimits.MaxRecords(geo, which));
        long blocks = BtreeBulkLoader.Load(tree, plan, ref source, claim);
        return ((uint)staged.Pointer, blocks);
    }

    /// <summary>The free extents in block order (bnobt records).</summary>
    private struct BlockOrderSource(AgBlockBitmap free) : IBtreeRecordSource
    {
        private uint from;

        public void Fill(Span<byte> destination, int count)
        {
            for (int i = 0; i < count; i++)
            {
                if (!free.NextExtent(from, out uint s, out uint l))
                {
                    throw new InvalidOperationException("fewer free extents than planned");
                }
                AllocRecord.Write(destination[(i * 8)..], s, l);
                from = s + l;
            }
        }
    }

    /// <summary>The free extents in (length, start) order (cntbt records); one 8-byte key per extent.</summary>
    private sealed class CntOrderSource : IBtreeRecordSource
    {
        private readonly ulong[] keys;
        private int next;

        public CntOrderSource(AgBlockBitmap free)
        {
            var list = new List<ulong>();
            foreach (var (s, l) in AgRebuild.Runs(free))
            {
                list.Add(((ulong)l << 32) | s);
            }
            keys = [.. list];
            Array.Sort(keys);
        }

        public long Count => keys.Length;

        public uint Longest => keys.Length == 0 ? 0 : (uint)(keys[^1] >> 32);

        public void Fill(Span<byte> destination, int count)
        {
            for (int i = 0; i < count; i++)
            {
                ulong k = keys[next++];
                AllocRecord.Write(destination[(i * 8)..], (uint)k, (uint)(k >> 32));
            }
        }
    }
}
