using System.Buffers.Binary;
using Xfbtree.Btree;
using Xfbtree.Buffers;
using Xfbtree.Xfs.Format;
using Xfbtree.Xfs.Repair;
using Xfbtree.Xfs.Scan;
using Xfbtree.Xfs.Trees;
using Xfbtree.Xfs.Write.Engine;

namespace Xfbtree.Xfs.Online;

/// <summary>
/// Finds the inode chunks of one AG of a filesystem without an rmapbt whose inobt cannot be walked (a leaf that does
/// not verify, a root or level gone wrong), as xfs_repair finds chunks its inobt does not list (an inode block is one
/// whose every slot holds an inode core of its own number: magic, version, CRC, di_ino, UUID), and proves the result
/// complete before anything is rebuilt from it. Offline only, with commits paused for each scan.
/// <list type="number">
/// <item>Scan the AG with no inode chunks of its own (every other owner: headers, log, AGFL, free-space trees, finobt,
/// refcountbt, the forks of every other AG's inodes).</item>
/// <item>The blocks the bnobt says are in use and nothing of that scan claims hold this AG's chunks, its inodes'
/// forks and the old inobt: every granule there (the sparse allocation unit, or the chunk alignment) whose every slot
/// is an inode core of its number is an inode block.</item>
/// <item>Scan again with those chunks (their free masks from the cores), so every inode's forks are claimed.</item>
/// <item>Refuse unless the AG then partitions exactly: no block both free and claimed, no two claims on a block
/// unless both are shareable data (reflink), and every in-use block nothing claims is a block of the old inobt (it
/// verifies as one, or the AGI or a verified old inobt node names it). A chunk missed, a stale copy of cores taken for
/// one, or an inode whose forks do not read all leave a block unexplained or claimed twice.</item>
/// <item>Cross-check with the finobt when it walks: every record names a found chunk with the same holes and free
/// inodes, and every found chunk with free inodes has a record.</item>
/// </list>
/// The bnobt must walk (it is what says which blocks are in use); the AGI must verify (its header is rewritten around
/// the new roots).
/// </summary>
internal static class InodeChunkDiscovery
{
    /// <summary>The found chunks and the scan that holds the AG against them (the inode btree rebuild's source;
    /// owned by the caller).</summary>
    internal sealed record Found(List<(uint Start, uint Length)> InodeBlocks, List<InobtRecord> Chunks, long OldInobtBlocks, ScannedAgRmaps Source)
    {
        public override string ToString() => $"{Chunks.Count} inode chunks found by reading their cores, {OldInobtBlocks} blocks of the old inobt";
    }

    /// <summary>
    /// Why AG <paramref name="agno"/>'s inobt cannot be walked (its root unusable, a block that does not verify or
    /// sits at the wrong level, a record that cannot be a chunk's place), read through a read view with commits
    /// paused; null when every record is reached and placed.
    /// </summary>
    public static string? InobtWalkProblem(WriteEngine engine, uint agno)
    {
        ArgumentNullException.ThrowIfNull(engine);
        using (engine.PauseCommits())
        {
            using XfsImage view = engine.Image.CreateReadView();
            try
            {
                Agi agi = view.ReadAgi(agno);
                if (!agi.TreeRootUsable(AgiTree.Inobt, view.Geometry)) return $"AG {agno}: the AGI's inobt root {agi.Root} / level {agi.Level} is unusable";
                XfsGeometry geo = view.Geometry;
                bool sparse = geo.Superblock.HasSparseInodes;
                uint alignment = InodeChunkLayout.ChunkAlignmentInodes(geo);
                ulong nextFree = 0;
                using BtreeCursor<InobtOps> cur = view.OpenInobt(agi, AgiTree.Inobt).CreateCursor();
                for (bool ok = cur.MoveFirst(); ok; ok = cur.Increment())
                {
                    // A record that cannot be a chunk's place (a numrecs gone up reads one more): the leaf is damaged.
                    var r = InobtRecord.Read(cur.Current, sparse);
                    if (r.StartIno < nextFree || r.StartIno % alignment != 0 || !InodeChunkLayout.ChunkInsideAg(geo, agno, r.StartIno))
                    {
                        return $"AG {agno}: inobt record {r.StartIno} is out of order, misaligned or outside the AG";
                    }
                    nextFree = (ulong)r.StartIno + InobtRecord.InodesPerChunk;
                }
                return null;
            }
            catch (CorruptionException e)
            {
                return $"AG {agno}: the inobt does not walk: {e.Message}";
            }
        }
    }

    /// <summary>Finds AG <paramref name="agno"/>'s chunks, or refuses (<see cref="OnlineRepairException"/>) saying
    /// what could not be made certain.</summary>
    public static Found Run(WriteEngine engine, uint agno, CancellationToken cancel)
    {
        ArgumentNullException.ThrowIfNull(engine);
        XfsGeometry geo = engine.Geometry;
        uint agLength = geo.AgLength(agno);
        AgBlockBitmap inUse;
        List<(uint Start, uint Length)> inodeBlocks;
        List<InobtRecord> chunks;
        using (ScannedAgRmaps bare = ScannedAgRmaps.Take(engine, agno, cancel, new InodeChunksOfAg(agno, [])))
        {
            bare.RequireCompleteBut();
            using (engine.PauseCommits())
            {
                using XfsImage view = engine.Image.CreateReadView();
                inUse = InUseByTheBnobt(view, agno);
                AgBlockBitmap claimed = Claims(bare, agno, agLength, inUse, geo.Superblock.HasReflink);
                AgBlockBitmap unclaimed = inUse.Minus(claimed);
                inodeBlocks = InodeGranules(view, agno, unclaimed, cancel);
                chunks = OnlineInodeBtreeRepair.Chunks(geo, agno, inodeBlocks, (start, holes) => FreeInodes(view, agno, start, holes));
            }
        }
        ScannedAgRmaps source = ScannedAgRmaps.Take(engine, agno, cancel, new InodeChunksOfAg(agno, chunks));
        try
        {
            source.RequireCompleteBut();
            long old;
            using (engine.PauseCommits())
            {
                using XfsImage view = engine.Image.CreateReadView();
                AgBlockBitmap claimed = Claims(source, agno, agLength, inUse, geo.Superblock.HasReflink);
                AgBlockBitmap unclaimed = inUse.Minus(claimed);
                old = OldInobtBlocks(view, agno, unclaimed);
                CrossCheckFinobt(view, agno, chunks);
            }
            return new Found(inodeBlocks, chunks, old, source);
        }
        catch
        {
            source.Dispose();
            throw;
        }
    }

    /// <summary>Every block of the AG but the bnobt's free extents, which must walk in order without overlap.</summary>
    private static AgBlockBitmap InUseByTheBnobt(XfsImage view, uint agno)
    {
        uint agLength = view.Geometry.AgLength(agno);
        var inUse = new AgBlockBitmap(agLength);
        inUse.Set(0, agLength);
        Agf agf = view.ReadAgf(agno);
        if (!agf.TreeRootUsable(AgfTree.Bnobt, view.Geometry))
        {
            throw new OnlineRepairException($"AG {agno}: the bnobt's root is unusable, and the inode chunk discovery needs it to know which blocks are in use");
        }
        ulong next = 0;
        try
        {
            using BtreeCursor<BnobtOps> cur = view.OpenBnobt(agf).CreateCursor();
            for (bool ok = cur.MoveFirst(); ok; ok = cur.Increment())
            {
                uint start = BinaryPrimitives.ReadUInt32BigEndian(cur.Current);
                uint length = BinaryPrimitives.ReadUInt32BigEndian(cur.Current[4..]);
                if (length == 0 || start < next || (ulong)start + length > agLength)
                {
                    throw new OnlineRepairException($"AG {agno}: bnobt record {start} (+{length}) is out of order or outside the AG; the inode chunk discovery needs a sound bnobt");
                }
                inUse.Clear(start, length);
                next = (ulong)start + length;
            }
        }
        catch (CorruptionException e)
        {
            throw new OnlineRepairException($"AG {agno}: the bnobt does not walk ({e.Message}); the inode chunk discovery needs it to know which blocks are in use");
        }
        return inUse;
    }

    /// <summary>
    /// The blocks the scan's records claim, refusing a claim on a free block and two claims on one block unless both
    /// are shareable data (a reflink filesystem's data fork extents).
    /// </summary>
    private static AgBlockBitmap Claims(ScannedAgRmaps scan, uint agno, uint agLength, AgBlockBitmap inUse, bool reflink)
    {
        var claimed = new AgBlockBitmap(agLength);
        ulong exclusiveEnd = 0, anyEnd = 0;
        scan.ForEach(agLength, r =>
        {
            bool shareable = reflink && !RmapbtOps.IsSpecialOwner(r.Owner) && !r.IsAttrFork && !r.IsBmbtBlock;
            ulong end = (ulong)r.StartBlock + r.BlockCount;
            if (r.StartBlock < exclusiveEnd || (!shareable && r.StartBlock < anyEnd))
            {
                throw new OnlineRepairException($"AG {agno}: block {r.StartBlock} is claimed twice ({AgRmapSet.OwnerText(r.Owner)} and another owner); the inode chunks found cannot be made certain");
            }
            if (AnyClear(inUse, r.StartBlock, r.BlockCount))
            {
                throw new OnlineRepairException($"AG {agno}: {AgRmapSet.OwnerText(r.Owner)} claims blocks {r.StartBlock} (+{r.BlockCount}) that the bnobt says are free; the inode chunks found cannot be made certain");
            }
            claimed.Set(r.StartBlock, r.BlockCount);
            anyEnd = Math.Max(anyEnd, end);
            if (!shareable) exclusiveEnd = Math.Max(exclusiveEnd, end);
        });
        return claimed;
    }

    private static bool AnyClear(AgBlockBitmap bitmap, uint start, uint length)
    {
        for (uint b = start; b < start + length; b++)
        {
            if (!bitmap.IsSet(b)) return true;
        }
        return false;
    }

    /// <summary>
    /// The granules inside <paramref name="unclaimed"/> whose every inode slot is a core of its own number, as runs of
    /// blocks. A granule is the unit a chunk is allocated in: the sparse allocation unit (sb_spino_align), else the
    /// chunk alignment (sb_inoalignmt, at most a chunk), a block where a block holds whole chunks.
    /// </summary>
    private static List<(uint Start, uint Length)> InodeGranules(XfsImage view, uint agno, AgBlockBitmap unclaimed, CancellationToken cancel)
    {
        XfsGeometry geo = view.Geometry;
        Superblock sb = geo.Superblock;
        uint granule = geo.InodesPerBlock >= InobtRecord.InodesPerChunk ? 1
            : sb.HasSparseInodes && sb.SparseInodeAlignment != 0 ? sb.SparseInodeAlignment
            : Math.Min(Math.Max(1u, sb.InodeAlignment), (uint)geo.InodeChunkBlocks);
        var runs = new List<(uint Start, uint Length)>();
        for (uint from = 0; from < unclaimed.AgLength && unclaimed.NextExtent(from, out uint start, out uint length); from = start + length)
        {
            cancel.ThrowIfCancellationRequested();
            ulong end = (ulong)start + length;
            for (ulong g = (start + (ulong)granule - 1) / granule * granule; g + granule <= end; g += granule)
            {
                if (!GranuleHoldsInodes(view, agno, (uint)g, granule)) continue;
                if (runs.Count > 0 && runs[^1].Start + runs[^1].Length == (uint)g) runs[^1] = (runs[^1].Start, runs[^1].Length + granule);
                else runs.Add(((uint)g, granule));
            }
        }
        return runs;
    }

    private static bool GranuleHoldsInodes(XfsImage view, uint agno, uint agbno, uint blocks)
    {
        XfsGeometry geo = view.Geometry;
        for (uint b = agbno; b < agbno + blocks; b++)
        {
            BlockBuffer buf = view.Cache.Read(view.Target, geo.AgBlockToDaddr(agno, b), geo.BasicBlocksPerBlock, null, BufferLockMode.Shared);
            try
            {
                for (int slot = 0; slot < geo.InodesPerBlock; slot++)
                {
                    ulong ino = geo.AginoToIno(agno, (b << geo.InodesPerBlockLog) + (uint)slot);
                    if (!IsCoreOf(buf.Span.Slice(slot * geo.InodeSize, geo.InodeSize), geo, ino)) return false;
                }
            }
            finally { view.Cache.Release(buf); }
        }
        return true;
    }

    /// <summary>An inode core of number <paramref name="ino"/>: magic, version 3, CRC, di_ino, UUID; an in-use one
    /// verifies whole (mode, forks).</summary>
    private static bool IsCoreOf(ReadOnlySpan<byte> raw, XfsGeometry geo, ulong ino)
    {
        var d = new Dinode(raw);
        if (d.Magic != Dinode.MagicValue || d.Version != 3 || d.Ino != ino || !d.Uuid.SequenceEqual(geo.MetaUuid)) return false;
        if (!XfsCrc.Verify(raw, Dinode.CrcOffset)) return false;
        return d.IsFree || d.Verify(geo, ino) is null;
    }

    /// <summary>The free bits of a found chunk's allocated inodes, from their cores.</summary>
    private static ulong FreeInodes(XfsImage view, uint agno, uint startIno, ulong holes)
    {
        XfsGeometry geo = view.Geometry;
        ulong free = 0;
        for (int i = 0; i < InobtRecord.InodesPerChunk; i++)
        {
            if (((holes >> i) & 1) != 0) continue;
            uint agino = startIno + (uint)i;
            uint agbno = geo.AginoToAgbno(agino);
            BlockBuffer buf = view.Cache.Read(view.Target, geo.AgBlockToDaddr(agno, agbno), geo.BasicBlocksPerBlock, null, BufferLockMode.Shared);
            try
            {
                int slot = geo.AginoToSlot(agino);
                ReadOnlySpan<byte> raw = buf.Span.Slice(slot * geo.InodeSize, geo.InodeSize);
                var core = new Dinode(raw);
                if (!IsCoreOf(raw, geo, geo.AginoToIno(agno, agino)))
                {
                    throw new OnlineRepairException($"AG {agno}: inode {geo.AginoToIno(agno, agino)} of a found chunk is not an inode core of its number");
                }
                if (core.IsFree) free |= 1UL << i;
            }
            finally { view.Cache.Release(buf); }
        }
        return free;
    }

    /// <summary>
    /// Counts the in-use blocks nothing claims, each of which must be the old inobt's: a block that verifies as an inobt
    /// block of this AG, the block the AGI names as the inobt's root, or a child a verified one of those names.
    /// </summary>
    private static long OldInobtBlocks(XfsImage view, uint agno, AgBlockBitmap unclaimed)
    {
        XfsGeometry geo = view.Geometry;
        Agi agi = view.ReadAgi(agno);
        var store = view.CreateAgStore(agno);
        var tree = new Btree<InobtOps>(new InobtOps(false, geo.Superblock.HasSparseInodes), store, new BtreeRootValue(agi.Root, 1),
            geo.MetaUuid, agno, XfsTreeLimits.MaxInobtRecords(geo));
        var explained = new AgBlockBitmap(unclaimed.AgLength);
        if (agi.Root < unclaimed.AgLength && unclaimed.IsSet(agi.Root)) explained.Set(agi.Root, 1);
        for (uint from = 0; from < unclaimed.AgLength && unclaimed.NextExtent(from, out uint start, out uint length); from = start + length)
        {
            for (uint b = start; b < start + length; b++)
            {
                BtreeBlockRef block;
                try { block = store.Read(b, tree.Verifier); }
                catch (CorruptionException) { continue; }
                try
                {
                    explained.Set(b, 1);
                    ReadOnlySpan<byte> span = ((BlockBuffer)block.Handle!).Span;
                    int level = BtreeHeader.Level(span);
                    if (level == 0) continue;
                    BtreeGeometry g = tree.Geometry;
                    int n = Math.Min(BtreeHeader.NumRecords(span), g.NodeMaxRecords);
                    for (int i = 0; i < n; i++)
                    {
                        long child = BtreeHeader.ReadPointer(span[g.PointerOffset(i, g.NodeMaxRecords)..], g.LongPointers);
                        if (child >= 0 && child < unclaimed.AgLength && unclaimed.IsSet((uint)child)) explained.Set((uint)child, 1);
                    }
                }
                finally { store.Release(block); }
            }
        }
        long total = unclaimed.CountSet();
        long old = 0;
        for (uint from = 0; from < unclaimed.AgLength && unclaimed.NextExtent(from, out uint start, out uint length); from = start + length)
        {
            for (uint b = start; b < start + length; b++)
            {
                if (!explained.IsSet(b))
                {
                    throw new OnlineRepairException($"AG {agno}: {total - old} blocks the bnobt says are in use are claimed by nothing found (block {b} first) and are no inobt block: an inode chunk or a file may be missing, so the inode chunks found cannot be made certain");
                }
                old++;
            }
        }
        return old;
    }

    /// <summary>The finobt, when it walks, lists exactly the found chunks that have free inodes, with the same holes
    /// and free inodes.</summary>
    private static void CrossCheckFinobt(XfsImage view, uint agno, List<InobtRecord> chunks)
    {
        XfsGeometry geo = view.Geometry;
        if (!geo.Superblock.HasFinobt) return;
        Agi agi = view.ReadAgi(agno);
        if (!agi.TreeRootUsable(AgiTree.Finobt, geo))
        {
            throw new OnlineRepairException($"AG {agno}: the finobt's root is unusable too; the inode chunks found cannot be checked against it");
        }
        bool sparse = geo.Superblock.HasSparseInodes;
        var withFree = new Dictionary<uint, InobtRecord>();
        foreach (InobtRecord c in chunks)
        {
            if (c.FreeCount > 0) withFree[c.StartIno] = c;
        }
        int matched = 0;
        try
        {
            using BtreeCursor<InobtOps> cur = view.OpenInobt(agi, AgiTree.Finobt).CreateCursor();
            for (bool ok = cur.MoveFirst(); ok; ok = cur.Increment())
            {
                var r = InobtRecord.Read(cur.Current, sparse);
                if (!withFree.TryGetValue(r.StartIno, out InobtRecord c) || c.HoleMask != r.HoleMask || c.Free != r.Free)
                {
                    throw new OnlineRepairException($"AG {agno}: finobt record {r.StartIno} does not match the chunk found there ({(withFree.ContainsKey(r.StartIno) ? "holes or free inodes differ" : "no chunk with free inodes found")}); the inode chunks found cannot be made certain");
                }
                matched++;
            }
        }
        catch (CorruptionException e)
        {
            throw new OnlineRepairException($"AG {agno}: the finobt does not walk ({e.Message}); the inode chunks found cannot be checked against it");
        }
        if (matched != withFree.Count)
        {
            throw new OnlineRepairException($"AG {agno}: {withFree.Count} chunks found have free inodes, the finobt lists {matched}; the inode chunks found cannot be made certain");
        }
    }
}
