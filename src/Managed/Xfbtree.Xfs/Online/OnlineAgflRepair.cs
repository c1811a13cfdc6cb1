using Xfbtree.Btree;
using Xfbtree.Xfs.Format;
using Xfbtree.Xfs.Repair;
using Xfbtree.Xfs.Trees;
using Xfbtree.Xfs.Write;
using Xfbtree.Xfs.Write.Engine;

namespace Xfbtree.Xfs.Online;

/// <summary>
/// Rebuilds the free list (AGFL and the AGF's flfirst, fllast, flcount) of one AG of an open <see cref="WriteEngine"/>
/// (upstream's xrep_agfl), in ONE engine transaction holding the AG lock: the list's blocks are the rmapbt's OWN_AG
/// blocks that are in none of the bnobt, cntbt and rmapbt (the free list is the rest of OWN_AG) and that no other
/// rmap record claims too; as many as the AGFL
/// holds go into it from slot 0, any beyond are freed (OWN_AG unmapped); then the list is brought to its usual length
/// (the free-list fix). The rmapbt, bnobt and cntbt must be readable (their roots are followed from the AGF as it is).
/// </summary>
internal static class OnlineAgflRepair
{
    public static AgRebuildResult Run(WriteEngine engine, uint agno)
    {
        XfsGeometry geo = engine.Geometry;
        return AgRebuild.RunLocked(engine, agno, "AGFL", "rebuild the free list from", null, (tx, _) =>
        {
            return RebuildIn(engine, tx, agno);
        });
    }

    /// <summary>The rebuild inside a transaction that holds AG <paramref name="agno"/>'s lock (the AGF repair runs it
    /// after writing the new AGF, in the same transaction).</summary>
    internal static AgRebuildResult RebuildIn(WriteEngine engine, WriteTransaction tx, uint agno)
    {
        XfsGeometry geo = engine.Geometry;
        uint agLength = geo.AgLength(agno);
        Agf agf = Agf.Parse(tx.ReadAgHeader(AgHeaderKind.Agf, agno).Span, geo, agno);
        foreach (AgfTree tree in new[] { AgfTree.Rmapbt, AgfTree.Bnobt, AgfTree.Cntbt })
        {
            if (!agf.TreeRootUsable(tree, geo))
            {
                throw new OnlineRepairException($"AG {agno}: the AGF's {tree.ToString().ToLowerInvariant()} root is unusable; the free list cannot be told apart from it");
            }
        }
        AgBtreeBlockStore store = tx.AgStore(agno, null, null);
        Btree<RmapbtOps> rmapbt = engine.Image.OpenRmapbt(agf, store);
        var list = new AgBlockBitmap(agLength);
        var otherOwners = new AgBlockBitmap(agLength);
        using (BtreeCursor<RmapbtOps> cur = rmapbt.CreateCursor())
        {
            for (bool ok = cur.MoveFirst(); ok; ok = cur.Increment())
            {
                var r = RmapRecord.Read(cur.Current);
                if ((ulong)r.StartBlock + r.BlockCount > agLength)
                {
                    continue;
                }
                (r.Owner == RmapOwner.Ag ? list : otherOwners).Set(r.StartBlock, r.BlockCount);
            }
        }
        // A block the rmapbt also gives to another owner is cross-linked: it goes neither on the list nor back to free
        // space (upstream's xrep_agfl strikes such blocks out the same way); the rmapbt check reports it.
        foreach (var (s, l) in AgRebuild.Runs(otherOwners))
        {
            list.Clear(s, l);
        }
        var trees = new AgBlockBitmap(agLength);
        AgRebuild.MarkTreeBlocks(rmapbt, trees);
        AgRebuild.MarkTreeBlocks(engine.Image.OpenBnobt(agf, store), trees);
        AgRebuild.MarkTreeBlocks(engine.Image.OpenCntbt(agf, store), trees);
        foreach (var (s, l) in AgRebuild.Runs(trees))
        {
            list.Clear(s, l);
        }
        List<uint> blocks = list.TakeLowest(geo.AgflSlots);
        foreach (uint b in blocks)
        {
            list.Clear(b, 1);
        }
        var space = tx.Space(agno);
        space.InstallRebuiltFreeList(blocks);
        long freed = 0;
        foreach (var (s, l) in AgRebuild.Runs(list))
        {
            space.RmapChange(RmapUpdateKind.Unmap, new RmapRecord(s, l, RmapOwner.Ag, 0), shared: false);
            space.FreeMetadataExtent(s, l);
            freed += l;
        }
        space.FixFreeList();
        return new AgRebuildResult(agno, "AGFL", blocks.Count, 0, freed, TimeSpan.Zero);
    }
}
