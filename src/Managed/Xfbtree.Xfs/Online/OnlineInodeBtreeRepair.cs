using System.Buffers.Binary;
using System.Numerics;
using Xfbtree.Btree;
using Xfbtree.Buffers;
using Xfbtree.Xfs.Format;
using Xfbtree.Xfs.Trees;
using Xfbtree.Xfs.Write;
using Xfbtree.Xfs.Write.Engine;
using Xfbtree.Xfs.Write.Namespace;

namespace Xfbtree.Xfs.Online;

/// <summary>
/// Rebuilds the inobt and the finobt of one AG of an open <see cref="WriteEngine"/> (upstream's xrep_ibt), in ONE
/// engine transaction holding the AG lock: the chunks are the rmapbt's OWN_INODES blocks (a 64-inode chunk whose
/// blocks are only partly OWN_INODES is sparse: the missing 4-inode groups are holes), the free mask is read from
/// every inode core of the chunks (mode 0 = free; inode allocation and freeing both hold this AG's lock, so the
/// cores on disk are current); the new trees' blocks come from free space through the allocator (OWN_INOBT), the
/// AGI is switched (<c>InodeAllocator.InstallRebuiltInodeBtrees</c>: roots, levels, count, freecount, block counts)
/// and the old trees' blocks (the OWN_INOBT records found before) are reaped. One journal record: a crash leaves the
/// old trees or the new. The rmapbt and the free-space trees must be healthy (the repair order puts them first).
/// </summary>
internal static class OnlineInodeBtreeRepair
{
    /// <param name="engine">The open write engine.</param>
    /// <param name="agno">The AG.</param>
    /// <param name="hooks">Test callbacks, or null.</param>
    /// <param name="rmaps">The reverse mappings to rebuild from (OWN_INODES, OWN_INOBT): null, the on-disk rmapbt;
    /// without one, the offline scan's set, whose chunks come from the inobt's records and are checked here against
    /// the inode cores (a record naming blocks that hold no inodes refuses the repair).</param>
    /// <param name="relinkUnlinked">Also rebuild the AGI's unlinked lists from the inodes with nlink 0, in the same
    /// transaction (the AGI repair of a filesystem without an rmapbt: its header rewrite finds the trees through the
    /// rmapbt, so there the AGI is repaired as its trees, its counters and its lists).</param>
    /// <param name="inodeBlocksFound">Without an rmapbt, the inode blocks a chunk discovery found
    /// (<see cref="InodeChunkDiscovery"/>: the inobt could not be walked); null, the inobt's records.</param>
    public static AgRebuildResult Run(WriteEngine engine, uint agno, AgRebuildTestHooks? hooks = null, AgRmapSource? rmaps = null, bool relinkUnlinked = false,
        List<(uint Start, uint Length)>? inodeBlocksFound = null)
    {
        XfsGeometry geo = engine.Geometry;
        Superblock sb = geo.Superblock;
        return AgRebuild.RunLocked(engine, agno, "inobt+finobt", "rebuild the inode btrees from", hooks, (tx, source) =>
        {
            var space = tx.Space(agno);

            // 1. collect: chunks from OWN_INODES, the old trees' blocks from OWN_INOBT
            var inodeBlocks = new List<(uint Start, uint Length)>();
            var old = new List<(uint Start, uint Length)>();
            source.ForEach(space, r =>
            {
                if (r.Owner == RmapOwner.Inodes) inodeBlocks.Add((r.StartBlock, r.BlockCount));
                else if (r.Owner == RmapOwner.Inobt) old.Add((r.StartBlock, r.BlockCount));
            });
            if (!source.IsOnDiskRmapbt)
            {
                // No rmapbt: the scan's chunks are the inobt's records it could validate, so a record with a wrong
                // count would be left out with its inodes; take each record's place from the inobt itself instead.
                inodeBlocks = inodeBlocksFound ?? ChunkBlocksOfTheInobt(tx, agno);
            }
            List<InobtRecord> chunks = Chunks(engine, agno, inodeBlocks);
            long inodes = 0, freeInodes = 0;
            int finobtRecords = 0;
            foreach (InobtRecord c in chunks)
            {
                inodes += c.Count;
                freeInodes += c.FreeCount;
                if (c.FreeCount > 0) finobtRecords++;
            }

            // 2. reserve from free space (OWN_INOBT mapped as the allocator hands the blocks out)
            var geometry = BtreeGeometry.For(new InobtOps(false, sb.HasSparseInodes), geo.BlockSize, XfsTreeLimits.MaxInobtRecords(geo));
            BtreeBulkGeometry inoPlan = BtreeBulkLoader.ComputeGeometry(geometry, chunks.Count);
            BtreeBulkGeometry? finoPlan = sb.HasFinobt ? BtreeBulkLoader.ComputeGeometry(geometry, finobtRecords) : null;
            long need = inoPlan.TotalBlocks + (finoPlan?.TotalBlocks ?? 0);
            uint hint = old.Count > 0 ? old[0].Start : geo.FirstFreeBlock;
            List<uint> claimed = AgRebuild.AllocateNewTreeBlocks(tx, agno, need, hint, AllocationPurpose.InodeBtreeBlock, RmapOwner.Inobt);

            // 3. load
            var ino = Load(tx, agno, finobt: false, inoPlan, new ChunkSource(chunks, freeOnly: false, sb.HasSparseInodes), AgRebuild.Claimer(claimed, 0, (int)inoPlan.TotalBlocks));
            (uint, int, long)? fino = finoPlan is null ? null
                : Load(tx, agno, finobt: true, finoPlan, new ChunkSource(chunks, freeOnly: true, sb.HasSparseInodes), AgRebuild.Claimer(claimed, (int)inoPlan.TotalBlocks, (int)finoPlan.TotalBlocks));

            // 4. switch the AGI
            InodeAllocator.InstallRebuiltInodeBtrees(tx, agno, ino, fino, checked((uint)inodes), checked((uint)freeInodes));
            if (relinkUnlinked)
            {
                uint[] heads = OnlineUnlinkedListRepair.Rebuild(engine, tx, agno, chunks, out _);
                BlockBuffer agi = tx.ReadAgHeader(AgHeaderKind.Agi, agno);
                for (int b = 0; b < Agi.UnlinkedBuckets; b++)
                {
                    BinaryPrimitives.WriteUInt32BigEndian(agi.Span[(Agi.UnlinkedOffset + 4 * b)..], heads[b]);
                }
                tx.LogBuffer(agi, Agi.UnlinkedOffset, 4 * Agi.UnlinkedBuckets);
            }
            hooks?.AfterSwitch?.Invoke(agno);

            // 5. reap the old trees
            long reaped = AgRebuild.ReapOldBlocks(tx, agno, old, RmapOwner.Inobt);
            return new AgRebuildResult(agno, "inobt+finobt", chunks.Count + finobtRecords, need, reaped, TimeSpan.Zero);
        }, rmaps);
    }

    /// <summary>
    /// The inode blocks of every record of the on-disk inobt, read through the transaction (a filesystem without an
    /// rmapbt: nothing else records where the chunks are). Only a record's place is taken (startino and, with sparse
    /// inodes, the holemask); its counts and free mask are recomputed from the inode cores by <see cref="Chunks(WriteEngine, uint, List{ValueTuple{uint, uint}})"/>,
    /// which refuses a record whose blocks hold no inode cores of their own numbers. Records must lie inside the AG,
    /// aligned, ascending and apart; a tree that does not walk refuses the repair.
    /// </summary>
    private static List<(uint Start, uint Length)> ChunkBlocksOfTheInobt(WriteTransaction tx, uint agno)
    {
        XfsGeometry geo = tx.Geometry;
        bool sparse = geo.Superblock.HasSparseInodes;
        Agi agi = Agi.Parse(tx.ReadAgHeader(AgHeaderKind.Agi, agno).Span, geo, agno);
        if (!agi.TreeRootUsable(AgiTree.Inobt, geo))
        {
            throw new OnlineRepairException($"AG {agno}: the AGI's inobt root {agi.Root} / level {agi.Level} is unusable, and without an rmapbt nothing else says where the inode chunks are");
        }
        var inobt = new Btree<InobtOps>(new InobtOps(false, sparse), tx.AgStore(agno, null, null), new BtreeRootValue(agi.Root, (int)agi.Level),
            geo.MetaUuid, agno, XfsTreeLimits.MaxInobtRecords(geo));
        var runs = new List<(uint Start, uint Length)>();
        var blocks = new List<(uint Start, uint Length)>();
        uint alignment = InodeChunkLayout.ChunkAlignmentInodes(geo);
        ulong nextFree = 0;
        using BtreeCursor<InobtOps> cur = inobt.CreateCursor();
        for (bool ok = cur.MoveFirst(); ok; ok = cur.Increment())
        {
            var r = InobtRecord.Read(cur.Current, sparse);
            if (r.StartIno < nextFree || r.StartIno % alignment != 0 || !InodeChunkLayout.ChunkInsideAg(geo, agno, r.StartIno))
            {
                throw new OnlineRepairException($"AG {agno}: inobt record {r.StartIno} is out of order, misaligned or outside the AG; without an rmapbt its chunk cannot be placed");
            }
            nextFree = (ulong)r.StartIno + InobtRecord.InodesPerChunk;
            runs.Clear();
            InodeChunkLayout.AllocatedBlockRuns(geo, r.StartIno, sparse ? r.HoleMask : (ushort)0, runs);
            foreach (var (start, length) in runs)
            {
                if (blocks.Count > 0 && blocks[^1].Start + blocks[^1].Length == start) blocks[^1] = (blocks[^1].Start, blocks[^1].Length + length);
                else blocks.Add((start, length));
            }
        }
        return blocks;
    }

    private static (uint Root, int Level, long Blocks) Load(WriteTransaction tx, uint agno, bool finobt, BtreeBulkGeometry plan, ChunkSource source, Func<long> claim)
    {
        XfsGeometry geo = tx.Geometry;
        var staged = new BtreeRootValue(BtreeHeader.NullPointer, 1);
        var tree = new Btree<InobtOps>(new InobtOps(finobt, geo.Superblock.HasSparseInodes), tx.AgStore(agno, null, null), staged, geo.MetaUuid, agno, XfsTreeLimits.MaxInobtRecords(geo));
        long blocks = BtreeBulkLoader.Load(tree, plan, ref source, claim);
        return ((uint)staged.Pointer, plan.Height, blocks);
    }

    /// <summary>
    /// The inobt records of the AG: each OWN_INODES block contributes its inodes to the 64-inode chunk holding them
    /// (blocks with 64 or more inodes: every chunk of the block); a chunk's 4-inode groups no block supplies are
    /// holes (sparse inodes; without them a partial chunk is damage); the free mask from the inode cores.
    /// </summary>
    internal static List<InobtRecord> Chunks(WriteEngine engine, uint agno, List<(uint Start, uint Length)> inodeBlocks)
        => Chunks(engine.Geometry, agno, inodeBlocks, (start, holes) => FreeInodes(engine, agno, start, holes));

    /// <summary>As <see cref="Chunks(WriteEngine, uint, List{ValueTuple{uint, uint}})"/>, the free mask of each chunk's
    /// allocated inodes from <paramref name="freeInodes"/> (startino, hole bits).</summary>
    internal static List<InobtRecord> Chunks(XfsGeometry geo, uint agno, List<(uint Start, uint Length)> inodeBlocks, Func<uint, ulong, ulong> freeInodes)
    {
        int ipb = geo.InodesPerBlock;
        bool sparse = geo.Superblock.HasSparseInodes;
        var allocated = new List<(uint StartIno, ulong Mask)>();
        if (!sparse && ipb < InobtRecord.InodesPerChunk) TileWholeChunks(geo, agno, inodeBlocks, allocated);
        else foreach (var (s, l) in inodeBlocks)
        {
            for (uint b = s; b < s + l; b++)
            {
                uint agino = b << geo.InodesPerBlockLog;
                if (ipb >= InobtRecord.InodesPerChunk)
                {
                    for (int k = 0; k < ipb; k += InobtRecord.InodesPerChunk)
                    {
                        allocated.Add((agino + (uint)k, ulong.MaxValue));
                    }
                    continue;
                }
                uint start = agino & ~(uint)(InobtRecord.InodesPerChunk - 1);
                ulong bits = ((1UL << ipb) - 1) << (int)(agino - start);
                if (allocated.Count > 0 && allocated[^1].StartIno == start) allocated[^1] = (start, allocated[^1].Mask | bits);
                else if (allocated.Count > 0 && allocated[^1].StartIno > start) throw new OnlineRepairException($"AG {agno}: OWN_INODES records out of order");
                else allocated.Add((start, bits));
            }
        }
        var records = new List<InobtRecord>(allocated.Count);
        uint alignment = InodeChunkLayout.ChunkAlignmentInodes(geo);
        foreach (var (start, mask) in allocated)
        {
            if (!InodeChunkLayout.ChunkInsideAg(geo, agno, start) || start % alignment != 0)
            {
                throw new OnlineRepairException($"AG {agno}: inode chunk at agino {start} (from OWN_INODES) does not lie inside the AG where a chunk may start");
            }
            ushort holemask = 0;
            for (int k = 0; k < 16; k++)
            {
                ulong group = (mask >> (4 * k)) & 0xF;
                if (group == 0) holemask |= (ushort)(1 << k);
                else if (group != 0xF) throw new OnlineRepairException($"AG {agno}: inode chunk at agino {start}: OWN_INODES covers part of a 4-inode group");
            }
            if (holemask != 0 && !sparse)
            {
                throw new OnlineRepairException($"AG {agno}: inode chunk at agino {start} is partly OWN_INODES on a filesystem without sparse inodes");
            }
            ulong holes = InobtRecord.HoleBits(holemask);
            ulong free = holes | freeInodes(start, holes);
            int count = InobtRecord.InodesPerChunk - 4 * BitOperations.PopCount(holemask);
            records.Add(new InobtRecord(start, holemask, (uint)count, (uint)BitOperations.PopCount(free & ~holes), free));
        }
        return records;
    }

    /// <summary>
    /// Without sparse inodes every chunk is whole, but it may start at any multiple of sb_inoalignmt, which can be
    /// less than a chunk: the chunks are cut from the start of each run of adjacent OWN_INODES blocks (the rmapbt
    /// merges neighbouring chunks into one record), never from a 64-inode boundary. A run that is not a whole
    /// number of chunks is damage.
    /// </summary>
    private static void TileWholeChunks(XfsGeometry geo, uint agno, List<(uint Start, uint Length)> inodeBlocks, List<(uint StartIno, ulong Mask)> into)
    {
        uint chunkBlocks = (uint)geo.InodeChunkBlocks;
        int i = 0;
        while (i < inodeBlocks.Count)
        {
            uint start = inodeBlocks[i].Start;
            ulong end = (ulong)start + inodeBlocks[i].Length;
            for (i++; i < inodeBlocks.Count && inodeBlocks[i].Start <= end; i++)
            {
                if (inodeBlocks[i].Start < start) throw new OnlineRepairException($"AG {agno}: OWN_INODES records out of order");
                end = Math.Max(end, (ulong)inodeBlocks[i].Start + inodeBlocks[i].Length);
            }
            if ((end - start) % chunkBlocks != 0)
            {
                throw new OnlineRepairException($"AG {agno}: inode chunk at agino {start << geo.InodesPerBlockLog} is partly OWN_INODES on a filesystem without sparse inodes");
            }
            for (ulong b = start; b < end; b += chunkBlocks) into.Add(((uint)b << geo.InodesPerBlockLog, ulong.MaxValue));
        }
    }

    /// <summary>The free bits of the chunk's allocated inodes, from their cores (each block read once, shared).</summary>
    private static ulong FreeInodes(WriteEngine engine, uint agno, uint startIno, ulong holes)
    {
        XfsGeometry geo = engine.Geometry;
        ulong free = 0;
        using var cores = new InodeClusterReader(engine, agno);
        for (int i = 0; i < InobtRecord.InodesPerChunk; i++)
        {
            if (((holes >> i) & 1) != 0) continue;
            if (cores.Core(geo.AginoToIno(agno, startIno + (uint)i), "of an OWN_INODES chunk is not an inode core", "its state cannot be known").IsFree) free |= 1UL << i;
        }
        return free;
    }

    private struct ChunkSource(List<InobtRecord> chunks, bool freeOnly, bool sparse) : IBtreeRecordSource
    {
        private int next;

        public void Fill(Span<byte> destination, int count)
        {
            for (int i = 0; i < count; i++)
            {
                while (freeOnly && chunks[next].FreeCount == 0) next++;
                chunks[next++].Write(destination[(i * InobtRecord.Size)..], sparse);
            }
        }
    }
}
