using System.Diagnostics;
using Xfbtree.Btree;
using Xfbtree.Xfs.Format;
using Xfbtree.Xfs.Trees;
using Xfbtree.Xfs.Write;
using Xfbtree.Xfs.Write.Engine;
using Xfbtree.Xfs.Write.Files;

namespace Xfbtree.Xfs.Online;

/// <summary>What one fork repair did.</summary>
/// <param name="Ino">The inode.</param>
/// <param name="AttrFork">True for the attribute fork.</param>
/// <param name="Mappings">Mappings of the new fork (rmap records of the fork, split at the bmbt record's largest length).</param>
/// <param name="Blocks">Blocks they map.</param>
/// <param name="Format">"extents" or "btree": how the new fork is written.</param>
/// <param name="OldBmbtBlocks">The fork's bmbt blocks per the rmap (reused as the new tree's or freed).</param>
/// <param name="NewBmbtBlocks">Blocks of the new bmbt (0 in extents format).</param>
/// <param name="TimeLocked">Time the inode (and every AG, while its rmapbt was read) was held: the whole repair is one transaction.</param>
internal sealed record OnlineBmapRepairResult(ulong Ino, bool AttrFork, int Mappings, ulong Blocks, string Format, int OldBmbtBlocks, int NewBmbtBlocks, TimeSpan TimeLocked)
{
    public override string ToString() =>
        $"inode {Ino} {(AttrFork ? "attr" : "data")} fork: {Mappings} mappings ({Blocks} blocks) from the rmapbt, written as {Format}"
        + $"{(NewBmbtBlocks > 0 ? $" ({NewBmbtBlocks} bmbt blocks)" : "")}, {OldBmbtBlocks} old bmbt blocks reaped or reused, locked {TimeLocked.TotalMilliseconds:F1} ms";
}

/// <summary>Test-only callbacks of the fork repair.</summary>
internal sealed class OnlineBmapRepairTestHooks
{
    /// <summary>Runs inside the repair's transaction once the inode is locked, before any AG lock (repair thread): a
    /// test starts a writer of the same file here and sees it wait for the repair.</summary>
    public Action<ulong>? AfterInodeLock { get; init; }
}

/// <summary>
/// Rebuilds the data or attribute fork mappings of one inode from the rmapbt (upstream's <c>xrep_bmap</c>,
/// fs/xfs/scrub/bmap_repair.c), for a fork whose bmbt or extent list is damaged, in ONE engine transaction:
/// <list type="number">
/// <item>lock the inode (every writer that changes its mappings holds that lock until it has committed the rmap
/// updates, so the inode's rmap records cannot change while it is held);</item>
/// <item>collect: every AG's rmapbt, each AG locked in ascending order (the engine's lock order: inode, then AGs
/// ascending) and held to the commit, walked for the records of this inode: those of the fork (not bmbt blocks) are
/// its mappings (file offset, block, length, unwritten flag; a reflinked extent is the inode's own record among the
/// shared ones), the BMBT-flagged ones of the fork are the old tree's blocks; every record of the inode counts in
/// di_nblocks;</item>
/// <item>check the mappings (inside the filesystem, no two at one file offset: a healthy rmapbt never says that, so
/// such a source is refused and nothing changes);</item>
/// <item>build the new fork (<see cref="FileFork.Rebuild"/>): extents format when the records fit the literal area,
/// else a new bmbt in the old tree's blocks (formatted anew, never read) and blocks allocated near the inode;
/// di_nextents, di_nblocks and the format set with the fork in the inode core;</item>
/// <item>reap: old bmbt blocks the new fork does not use freed (BMBT rmap removed, buffers invalidated).</item>
/// </list>
/// One journal record: a crash leaves the old fork or the new one. The rmapbt must be healthy (the repair order puts
/// it first; when both are damaged, see docs/scrub.md). File contents are not touched: only the map of them.
/// </summary>
internal static class OnlineBmapRepair
{
    /// <summary>Repairs the fork of <paramref name="ino"/>; throws <see cref="OnlineRepairException"/> (nothing changed)
    /// when the fork cannot be rebuilt from the rmapbt, <see cref="XfsWriteException"/> for engine refusals.</summary>
    public static OnlineBmapRepairResult Run(WriteEngine engine, ulong ino, bool attrFork, OnlineBmapRepairTestHooks? hooks = null)
    {
        ArgumentNullException.ThrowIfNull(engine);
        XfsGeometry geo = engine.Geometry;
        if (!geo.Superblock.HasRmapbt)
        {
            throw new XfsWriteException(WriteErrorKind.NotSupported, "the filesystem has no rmapbt to rebuild a block map from");
        }
        string fork = attrFork ? "attr" : "data";
        var locked = new Stopwatch();
        return engine.Execute($"scrub repair inode {ino} {fork} fork", tx =>
        {
            IncoreInode inode = engine.GetInode(ino);
            tx.LockInodes(inode);
            locked.Restart();
            hooks?.AfterInodeLock?.Invoke(ino);
            byte[] core = inode.Core;
            if (InodeFields.Mode(core) == 0)
            {
                throw new OnlineRepairException($"inode {ino} is free: no fork to repair");
            }
            if (!attrFork && (InodeFields.Flags(core) & Dinode.FlagRealtime) != 0)
            {
                throw new OnlineRepairException($"inode {ino} is a realtime file: its data fork maps the realtime device, which the rmapbt does not describe");
            }
            if (attrFork && InodeFields.ForkOffset(core) == 0)
            {
                throw new OnlineRepairException($"inode {ino} has no attr fork");
            }
            ForkFormat format = InodeFields.Format(core, attrFork);
            if (format is not (ForkFormat.Extents or ForkFormat.Btree))
            {
                throw new OnlineRepairException($"inode {ino} {fork} fork is in format {(int)format}: it maps no blocks (not a block map)");
            }

            // Collect (every AG, ascending, each held to the commit).
            var mappings = new List<BmbtExtent>();
            var oldBmbt = new List<ulong>();
            ulong inodeBlocks = 0;
            for (uint agno = 0; agno < geo.AgCount; agno++)
            {
                tx.LockAgForRepair(agno);
                CollectAg(tx, agno, ino, attrFork, mappings, oldBmbt, ref inodeBlocks);
            }
            mappings.Sort(static (a, b) => a.StartOffset.CompareTo(b.StartOffset));
            List<BmbtExtent> records = SplitAndCheck(mappings, geo, $"inode {ino} {fork} fork");
            oldBmbt.Sort();

            // Build, switch and reap in the inode core (one transaction).
            InodeFields.SetNBlocks(core, inodeBlocks);
            var rebuilt = FileFork.Rebuild(tx, inode, attrFork, records, oldBmbt);
            int newBmbt = rebuilt.BmbtBlocksFor(records.Count);
            ulong mapped = 0;
            foreach (BmbtExtent e in records)
            {
                mapped += e.BlockCount;
            }
            return new OnlineBmapRepairResult(ino, attrFork, records.Count, mapped, newBmbt == 0 ? "extents" : "btree", oldBmbt.Count, newBmbt, locked.Elapsed);
        }) with { TimeLocked = locked.Elapsed };
    }

    /// <summary>The inode's records in one locked AG: the fork's mappings, its bmbt blocks, and every block it owns.</summary>
    private static void CollectAg(WriteTransaction tx, uint agno, ulong ino, bool attrFork, List<BmbtExtent> mappings, List<ulong> oldBmbt, ref ulong inodeBlocks)
    {
        XfsGeometry geo = tx.Geometry;
        uint agLength = geo.AgLength(agno);
        using BtreeCursor<RmapbtOps> cur = tx.Space(agno).Rmapbt().CreateCursor();
        for (bool ok = cur.MoveFirst(); ok; ok = cur.Increment())
        {
            var r = RmapRecord.Read(cur.Current);
            if (r.Owner != ino)
            {
                continue;
            }
            if (r.BlockCount == 0 || (ulong)r.StartBlock + r.BlockCount > agLength)
            {
                throw new OnlineRepairException($"AG {agno}: rmapbt record {r} lies outside the AG; repair the rmapbt first");
            }
            inodeBlocks += r.BlockCount;
            if (r.IsAttrFork != attrFork)
            {
                continue;
            }
            ulong fsbno = geo.AgbToFsb(agno, r.StartBlock);
            if (r.IsBmbtBlock)
            {
                for (uint b = 0; b < r.BlockCount; b++)
                {
                    oldBmbt.Add(fsbno + b);
                }
                continue;
            }
            if (r.Offset + r.BlockCount > BmbtExtent.MaxFileOffset)
            {
                throw new OnlineRepairException($"AG {agno}: rmapbt record {r} maps beyond the largest file offset; repair the rmapbt first");
            }
            mappings.Add(new BmbtExtent(r.Offset, fsbno, r.BlockCount, r.IsUnwritten));
        }
    }

    /// <summary>
    /// The sorted rmap mappings as bmbt records: each cut at the largest length a record holds (the rmap merges what
    /// the bmbt must keep apart), and none overlapping another in file offset (the rmapbt would be damaged: refused).
    /// </summary>
    private static List<BmbtExtent> SplitAndCheck(List<BmbtExtent> sorted, XfsGeometry geo, string where)
    {
        var records = new List<BmbtExtent>(sorted.Count);
        ulong next = 0;
        foreach (BmbtExtent m in sorted)
        {
            if (m.StartOffset < next)
            {
                throw new OnlineRepairException($"{where}: the rmapbt maps file offset {m.StartOffset} twice; the rmapbt is damaged too, repair it first (it needs a readable fork: see docs/scrub.md)");
            }
            next = m.StartOffset + m.BlockCount;
            ulong done = 0;
            while (done < m.BlockCount)
            {
                uint piece = (uint)Math.Min(m.BlockCount - done, ExtentList.MaxExtentLength);
                var e = new BmbtExtent(m.StartOffset + done, m.StartBlock + done, piece, m.Unwritten);
                if (e.Validate(geo) is { } why)
                {
                    throw new OnlineRepairException($"{where}: rmap mapping {e}: {why}");
                }
                records.Add(e);
                done += piece;
            }
        }
        return records;
    }
}
