using System.Buffers.Binary;
using System.Numerics;
using Xfbtree.Btree;
using Xfbtree.Buffers;
using Xfbtree.Xfs.Format;
using Xfbtree.Xfs.Trees;
using Xfbtree.Xfs.Write.Engine;

namespace Xfbtree.Xfs.Write.Namespace;

/// <summary>
/// Inode allocation and free inside a transaction, as xfs_ialloc.c does it: a free inode found through the
/// finobt (nearest chunk to the parent in the parent's AG first, then the other AGs), or a new 64-inode chunk
/// (aligned to sb_inoalignmt, OWN_INODES rmap, inodes initialised, inobt and finobt records); the inobt and
/// finobt kept exact mirrors, the AGI and the superblock counters updated. Freeing sets the inobt free bit and
/// inserts or updates the finobt record; the last inode freed in a chunk frees the chunk (noikeep, see <see cref="Free"/>).
/// Caller holds the inode locks it needs; this class takes the AG locks (ascending after the inode locks).
/// </summary>
internal sealed class InodeAllocator
{
    // AGI field offsets (Format/Agi.cs).
    const int AgiCount = Agi.CountOffset, AgiRoot = Agi.RootOffset, AgiLevel = Agi.LevelOffset, AgiFreecount = Agi.FreeCountOffset,
        AgiNewino = Agi.NewInoOffset, AgiFreeRoot = Agi.FreeRootOffset, AgiFreeLevel = Agi.FreeLevelOffset,
        AgiIblocks = Agi.InobtBlocksOffset, AgiFblocks = Agi.FinobtBlocksOffset;

    readonly WriteEngine _engine;
    readonly XfsGeometry _geo;
    readonly Superblock _sb;

    public InodeAllocator(WriteEngine engine)
    {
        _engine = engine;
        _geo = engine.Geometry;
        _sb = _geo.Superblock;
    }

    // The record layout is decoded in one place for the scan, the online collector, the allocator and the scrub.
    InobtRecord Decode(ReadOnlySpan<byte> r) => InobtRecord.Read(r, _sb.HasSparseInodes);

    void Encode(in InobtRecord rec, Span<byte> r) => rec.Write(r, _sb.HasSparseInodes);

    static XfsWriteException Corrupt(uint agno, string why) => new(WriteErrorKind.Corrupt, $"AG {agno}: {why}");

    // ------------------------------------------------------------------ AGI and trees

    sealed class AgContext
    {
        public required uint AgNumber;
        public required BlockBuffer Agi;
        public required Btree<InobtOps> Inobt;
        public Btree<InobtOps>? Finobt;
    }

    AgContext OpenAg(WriteTransaction tx, uint agno)
    {
        tx.LockAg(agno);
        var agiBuf = tx.ReadAgHeader(AgHeaderKind.Agi, agno);
        var agi = Agi.Parse(agiBuf.Span, _geo, agno);
        if (agi.Problems.Count > 0) throw Corrupt(agno, "AGI: " + string.Join("; ", agi.Problems));
        var ctx = new AgContext { AgNumber = agno, Agi = agiBuf, Inobt = null! };
        ctx.Inobt = OpenTree(tx, ctx, finobt: false, agi.Root, agi.Level);
        if (_sb.HasFinobt) ctx.Finobt = OpenTree(tx, ctx, finobt: true, agi.FreeRoot, agi.FreeLevel);
        return ctx;
    }

    Btree<InobtOps> OpenTree(WriteTransaction tx, AgContext ctx, bool finobt, uint root, uint level)
    {
        uint agno = ctx.AgNumber;
        var store = tx.AgStore(agno, () => AllocateTreeBlock(tx, ctx, finobt), b => FreeTreeBlock(tx, ctx, finobt, b));
        var rootValue = new BtreeRootValue(root, (int)level)
        {
            Changed = (ptr, height) =>
            {
                SetAgi(tx, ctx, finobt ? AgiFreeRoot : AgiRoot, (uint)ptr);
                SetAgi(tx, ctx, finobt ? AgiFreeLevel : AgiLevel, (uint)height);
            },
        };
        return new Btree<InobtOps>(new InobtOps(finobt, _sb.HasSparseInodes), store, rootValue, _geo.MetaUuid, agno, XfsTreeLimits.MaxInobtRecords(_geo));
    }

    long AllocateTreeBlock(WriteTransaction tx, AgContext ctx, bool finobt)
    {
        uint agno = ctx.AgNumber;
        var got = tx.Allocate(new AllocationRequest(_geo.AgbToFsb(agno, GetAgi(ctx, finobt ? AgiFreeRoot : AgiRoot)), 1, 1,
            AllocationPurpose.InodeBtreeBlock, OnlyAg: agno));
        tx.RmapMap(agno, new RmapRecord(got.AgBlock, 1, RmapOwner.Inobt, 0), false);
        if (_sb.HasInobtCounts) AddAgi(tx, ctx, finobt ? AgiFblocks : AgiIblocks, 1);
        return got.AgBlock;
    }

    void FreeTreeBlock(WriteTransaction tx, AgContext ctx, bool finobt, long agbno)
    {
        uint agno = ctx.AgNumber;
        tx.RmapUnmap(agno, new RmapRecord((uint)agbno, 1, RmapOwner.Inobt, 0), false);
        tx.FreeMetadata(agno, (uint)agbno, 1);
        if (_sb.HasInobtCounts) AddAgi(tx, ctx, finobt ? AgiFblocks : AgiIblocks, -1);
    }

    static uint GetAgi(AgContext ctx, int offset) => BinaryPrimitives.ReadUInt32BigEndian(ctx.Agi.Span[offset..]);

    static void SetAgi(WriteTransaction tx, AgContext ctx, int offset, uint value)
    {
        BinaryPrimitives.WriteUInt32BigEndian(ctx.Agi.Span[offset..], value);
        tx.LogBuffer(ctx.Agi, offset, 4);
    }

    static void AddAgi(WriteTransaction tx, AgContext ctx, int offset, long delta)
    {
        long v = GetAgi(ctx, offset) + delta;
        if (v < 0 || v > uint.MaxValue) throw Corrupt(ctx.AgNumber, $"AGI field at {offset} would become {v}");
        SetAgi(tx, ctx, offset, (uint)v);
    }

    /// <summary>
    /// Points AG <paramref name="agno"/>'s AGI (locked by <paramref name="tx"/>) at an inobt and a finobt a scrub
    /// repair has built (upstream's xrep_ibt commit): roots, levels, inode and free inode counts, and with
    /// inobtcount the trees' block counts. The old trees' blocks are the caller's to reap.
    /// </summary>
    internal static void InstallRebuiltInodeBtrees(WriteTransaction tx, uint agno, (uint Root, int Level, long Blocks) inobt,
        (uint Root, int Level, long Blocks)? finobt, uint count, uint freeCount)
    {
        var sb = tx.Geometry.Superblock;
        var ctx = new AgContext { AgNumber = agno, Agi = tx.ReadAgHeader(AgHeaderKind.Agi, agno), Inobt = null! };
        SetAgi(tx, ctx, AgiRoot, inobt.Root);
        SetAgi(tx, ctx, AgiLevel, (uint)inobt.Level);
        SetAgi(tx, ctx, AgiCount, count);
        SetAgi(tx, ctx, AgiFreecount, freeCount);
        if (sb.HasInobtCounts) SetAgi(tx, ctx, AgiIblocks, checked((uint)inobt.Blocks));
        if (finobt is { } f)
        {
            SetAgi(tx, ctx, AgiFreeRoot, f.Root);
            SetAgi(tx, ctx, AgiFreeLevel, (uint)f.Level);
            if (sb.HasInobtCounts) SetAgi(tx, ctx, AgiFblocks, checked((uint)f.Blocks));
        }
    }

    // ------------------------------------------------------------------ allocation

    /// <summary>
    /// Allocates an inode for a new child of <paramref name="parentIno"/>: marks it used in the inode btrees and
    /// counters and returns its number. The inode's core is still the free on-disk one (the caller formats it).
    /// Throws NoSpace when no AG has a free inode or room for a new chunk.
    /// </summary>
    public ulong Allocate(WriteTransaction tx, ulong parentIno)
    {
        uint agCount = _geo.AgCount;
        uint first = _geo.InoToAgno(parentIno);
        // No new chunk once the inodes would pass sb_imax_pct of the data blocks (the kernel's maxicount, checked
        // with a whole chunk's inodes even when a sparse piece is what would be allocated).
        ulong maxInodes = MaxInodeCount();
        bool mayAddChunk = maxInodes == 0 || CurrentInodeCount() + (ulong)ChunkInodes <= maxInodes;
        // As xfs_dialloc: from the parent's AG on, take a free inode, else a new chunk in that AG, else the next AG.
        for (uint k = 0; k < agCount; k++)
        {
            uint agno = (first + k) % agCount;
            if (_engine.Ag(agno).IsSick) continue;
            var ctx = OpenAg(tx, agno);
            if (GetAgi(ctx, AgiFreecount) != 0)
                return TakeFreeInode(tx, ctx, agno == first ? _geo.InoToAgino(parentIno) : GetAgi(ctx, AgiNewino));
            if (!mayAddChunk) continue;
            if (TryNewChunk(tx, ctx) is ulong ino) return ino;
            if (TrySparseChunk(tx, ctx) is ulong sparseIno) return sparseIno;
        }
        if (!mayAddChunk)
            throw new XfsWriteException(WriteErrorKind.NoSpace, $"{tx.Operation}: no free inode, and a new inode chunk would pass the {_sb.InodeMaxPercent}% of the data blocks that inodes may take ({maxInodes} inodes)");
        throw new XfsWriteException(WriteErrorKind.NoSpace, $"{tx.Operation}: no free inode and no room for a new inode chunk in any AG");
    }

    /// <summary>Inodes one chunk allocation adds (igeo->ialloc_inos): 64, or a block's worth when a block holds more.</summary>
    int ChunkInodes => Math.Max(InobtRecord.InodesPerChunk, _geo.InodesPerBlock);

    /// <summary>The kernel's maxicount (xfs_ialloc_setup_geometry): sb_imax_pct of the data blocks, rounded down to
    /// whole chunks, in inodes; 0 means no limit.</summary>
    ulong MaxInodeCount()
    {
        ulong chunkBlocks = (ulong)Math.Max(1, _geo.InodeChunkBlocks);
        if (_sb.InodeMaxPercent == 0) return 0;
        ulong blocks = _sb.DataBlocks * _sb.InodeMaxPercent / 100 / chunkBlocks * chunkBlocks;
        return blocks << _geo.InodesPerBlockLog;
    }

    /// <summary>Allocated inodes now (sb_icount at open plus committed changes), as the kernel's in-core counter.</summary>
    ulong CurrentInodeCount()
    {
        long count = (long)_sb.InodeCount + _engine.InodeCounterDeltas.Icount;
        return (ulong)Math.Max(0, count);
    }

    /// <summary>Takes the free inode nearest to <paramref name="nearAgino"/> (finobt LE/GE, as xfs_dialloc_ag_finobt_near).</summary>
    ulong TakeFreeInode(WriteTransaction tx, AgContext ctx, uint nearAgino)
    {
        uint agno = ctx.AgNumber;
        Span<byte> key = stackalloc byte[4];
        Span<byte> raw = stackalloc byte[16];
        InobtRecord rec;
        if (ctx.Finobt is { } fino)
        {
            using var cur = fino.CreateCursor();
            BinaryPrimitives.WriteUInt32BigEndian(key, nearAgino);
            InobtRecord? below = null, above = null;
            if (cur.Lookup(key, BtreeLookup.LessOrEqual) && cur.HasRecord) below = Decode(cur.Current);
            if (cur.Lookup(key, BtreeLookup.GreaterOrEqual) && cur.HasRecord) above = Decode(cur.Current);
            if (below is null && above is null) throw Corrupt(agno, $"agi_freecount {GetAgi(ctx, AgiFreecount)} but the finobt is empty");
            rec = below is { } b && (above is not { } a || nearAgino - b.StartIno <= a.StartIno - nearAgino) ? b : above!.Value;
            cur.Release();
        }
        else
        {
            using var cur = ctx.Inobt.CreateCursor();
            InobtRecord? found = null;
            for (bool ok = cur.MoveFirst(); ok && cur.HasRecord; ok = cur.Increment())
            {
                var r = Decode(cur.Current);
                if (r.FreeCount > 0) { found = r; break; }
            }
            rec = found ?? throw Corrupt(agno, $"agi_freecount {GetAgi(ctx, AgiFreecount)} but no inobt record has a free inode");
            cur.Release();
        }
        ulong realFree = rec.RealFree;
        if (realFree == 0 || rec.FreeCount == 0) throw Corrupt(agno, $"inode chunk {rec.StartIno} listed as having free inodes has none");
        int bit = BitOperations.TrailingZeroCount(realFree);
        var updated = rec with { Free = rec.Free & ~(1UL << bit), FreeCount = rec.FreeCount - 1 };

        // inobt: the chunk's record must agree with the finobt's.
        using (var cur = ctx.Inobt.CreateCursor())
        {
            BinaryPrimitives.WriteUInt32BigEndian(key, rec.StartIno);
            if (!cur.Lookup(key, BtreeLookup.Equal)) throw Corrupt(agno, $"finobt record {rec.StartIno} has no inobt record");
            var inobtRec = Decode(cur.Current);
            if (inobtRec != rec) throw Corrupt(agno, $"finobt and inobt disagree on chunk {rec.StartIno}");
            Encode(updated, raw);
            cur.Update(raw);
            cur.Release();
        }
        if (ctx.Finobt is { } f)
        {
            using var cur = f.CreateCursor();
            BinaryPrimitives.WriteUInt32BigEndian(key, rec.StartIno);
            if (!cur.Lookup(key, BtreeLookup.Equal)) throw Corrupt(agno, $"finobt record {rec.StartIno} vanished");
            if (updated.FreeCount == 0) cur.Delete();
            else cur.Update(raw);
            cur.Release();
        }
        AddAgi(tx, ctx, AgiFreecount, -1);
        tx.ModInodeCounters(0, -1);
        return _geo.AginoToIno(agno, rec.StartIno + (uint)bit);
    }

    /// <summary>Allocates, initialises and records a new inode chunk and takes its first inode; null when the AG
    /// has no room (nothing changed). A chunk is 64 inodes, or one block when a block holds more (64 KiB blocks):
    /// then it gets one inobt record per 64 inodes, as xfs_ialloc_ag_alloc does.</summary>
    ulong? TryNewChunk(WriteTransaction tx, AgContext ctx)
    {
        uint agno = ctx.AgNumber;
        uint chunkBlocks = (uint)_geo.InodeChunkBlocks;
        uint chunkInodes = (uint)Math.Max(64, _geo.InodesPerBlock);
        uint align = Math.Max(1u, _sb.InodeAlignment);
        AllocatedExtent got;
        try
        {
            got = tx.Allocate(new AllocationRequest(_geo.AgbToFsb(agno, _geo.FirstFreeBlock), chunkBlocks, chunkBlocks,
                AllocationPurpose.InodeChunk, Alignment: align, OnlyAg: agno));
        }
        catch (XfsWriteException e) when (e.Kind == WriteErrorKind.NoSpace)
        {
            return null;
        }
        uint startAgino = got.AgBlock << _geo.InodesPerBlockLog;
        // A chunk starts where sb_inoalignmt puts it (a multiple of 64 inodes only when the alignment is a whole
        // chunk, as on every sparse filesystem; an older layout aligns to the cluster).
        if (!_geo.IsValidAgino(agno, startAgino) || !InodeChunkLayout.ChunkInsideAg(_geo, agno, startAgino))
            throw Corrupt(agno, $"new inode chunk at agbno {got.AgBlock} gives an invalid first inode {startAgino}");
        tx.RmapMap(agno, new RmapRecord(got.AgBlock, chunkBlocks, RmapOwner.Inodes, 0), false);
        InitialiseInodes(tx, agno, got.AgBlock, chunkBlocks);

        // The first inode is taken at once: the first record goes in with 63 free.
        Span<byte> raw = stackalloc byte[16];
        for (uint r = 0; r < chunkInodes / 64; r++)
        {
            var rec = r == 0 ? new InobtRecord(startAgino, 0, 64, 63, ~1UL) : new InobtRecord(startAgino + 64 * r, 0, 64, 64, ~0UL);
            Encode(rec, raw);
            using (var cur = ctx.Inobt.CreateCursor())
            {
                if (!cur.Insert(raw)) throw Corrupt(agno, $"inobt already has a record for new chunk {rec.StartIno}");
            }
            if (ctx.Finobt is { } f)
            {
                using var cur = f.CreateCursor();
                if (!cur.Insert(raw)) throw Corrupt(agno, $"finobt already has a record for new chunk {rec.StartIno}");
            }
        }
        AddAgi(tx, ctx, AgiCount, chunkInodes);
        AddAgi(tx, ctx, AgiFreecount, chunkInodes - 1);
        SetAgi(tx, ctx, AgiNewino, startAgino);
        tx.ModInodeCounters(chunkInodes, chunkInodes - 1);
        return _geo.AginoToIno(agno, startAgino);
    }

    /// <summary>Writes fresh free inodes into <paramref name="blocks"/> new blocks at <paramref name="agbno"/>
    /// (xfs_ialloc_inode_init): magic, version 3, one generation, next_unlinked NULLAGINO, number, UUID, CRC;
    /// everything else zero. The generation is random, as the kernel's, except over inodes of a chunk freed since
    /// open: then one above the highest they reached, so no handle made before the free reaches the new inodes.</summary>
    void InitialiseInodes(WriteTransaction tx, uint agno, uint agbno, uint blocks)
    {
        uint firstAgino = agbno << _geo.InodesPerBlockLog, count = blocks << _geo.InodesPerBlockLog;
        var retired = _engine.Ag(agno).RetiredChunks;
        uint gen = retired.HighestGeneration(firstAgino, count) is uint highest ? unchecked(highest + 1) : (uint)Random.Shared.Next() | 1u;
        int isize = _geo.InodeSize;
        for (uint b = 0; b < blocks; b++)
        {
            var buf = tx.GetNewBuffer(_geo.AgBlockToDaddr(agno, agbno + b), _geo.BasicBlocksPerBlock, null);
            var span = buf.Span;
            span.Clear();
            for (int slot = 0; slot < _geo.InodesPerBlock; slot++)
            {
                uint agino = ((agbno + b) << _geo.InodesPerBlockLog) | (uint)slot;
                Dinode.FormatUnallocated(span.Slice(slot * isize, isize), _geo.AginoToIno(agno, agino), gen, _geo.MetaUuid);
            }
            tx.LogBuffer(buf, 0, span.Length);
        }
        if (retired.Count > 0) tx.OnCommitted(() => retired.Reuse(firstAgino, count));
    }

    // ------------------------------------------------------------------ sparse chunks

    /// <summary>How many free hole pieces of existing sparse records one allocation tries before it takes new space
    /// (the bound keeps an allocation's cost constant).</summary>
    const int HoleCandidates = 32;

    /// <summary>How many inobt records the search for holes reads at most (constant cost per allocation on an AG
    /// with many chunks; holes further on are left, as the kernel never looks for them at all).</summary>
    const int HoleSearchRecords = 1024;

    /// <summary>
    /// Blocks of one sparse piece (sb_spino_align: one inode cluster), or 0 when sparse chunks cannot be made here:
    /// no SPINODES, a piece as large as a chunk, a chunk inside one block, or an alignment that is not the chunk
    /// size (the layout every sparse filesystem has: mkfs sets sb_inoalignmt to the chunk, the kernel's superblock
    /// verifier insists).
    /// </summary>
    uint SparsePieceBlocks()
    {
        if (!_sb.HasSparseInodes) return 0;
        uint piece = _sb.SparseInodeAlignment;
        uint chunkBlocks = (uint)_geo.InodeChunkBlocks;
        if (piece == 0 || _geo.InodesPerBlock >= InobtRecord.InodesPerChunk || piece >= chunkBlocks
            || _sb.InodeAlignment != chunkBlocks || chunkBlocks % piece != 0
            || ((int)piece << _geo.InodesPerBlockLog) % InobtRecord.InodesPerHoleBit != 0)
            return 0;
        return piece;
    }

    /// <summary>
    /// When no full chunk fits, as xfs_ialloc_ag_alloc's sparse attempt: one cluster-sized piece aligned to
    /// sb_spino_align, first in a hole of an existing sparse record (the chunk grows in place), else anywhere
    /// between the first aligned block and the last one a whole chunk still fits after; its record is the 64-inode
    /// chunk around it with the rest as holes, merged into an existing record of that chunk (inobt), the merged
    /// record replacing or inserted into the finobt. Takes the piece's first inode; null when the AG has no room.
    /// </summary>
    ulong? TrySparseChunk(WriteTransaction tx, AgContext ctx)
    {
        uint piece = SparsePieceBlocks();
        if (piece == 0) return null;
        uint agno = ctx.AgNumber;
        int pieceInodes = (int)piece << _geo.InodesPerBlockLog;
        uint chunkBlocks = (uint)_geo.InodeChunkBlocks;
        var space = tx.Space(agno);
        uint agbno = 0;
        bool got = false;

        Span<uint> holes = stackalloc uint[HoleCandidates];
        int found = CollectFreeHolePieces(ctx, space, pieceInodes, piece, holes);
        for (int i = 0; i < found && !got; i++)
        {
            var exact = new AllocationRequest(_geo.AgbToFsb(agno, holes[i]), piece, piece, AllocationPurpose.InodeChunk,
                Exact: true, Alignment: piece, OnlyAg: agno);
            got = space.TryAllocateHere(exact, out agbno, out uint len) && len == piece;
        }
        if (got)
        {
            Interlocked.Increment(ref _holePiecesFilled);
        }
        else
        {
            uint align = _sb.InodeAlignment;
            uint last = _geo.AgLength(agno) / align * align;
            if (last < chunkBlocks + align) return null;
            got = space.TryAllocateInodePiece(piece, piece, align, last - chunkBlocks, out agbno);
            if (got) Interlocked.Increment(ref _piecesElsewhere);
        }
        if (!got) return null;

        uint pieceAgino = agbno << _geo.InodesPerBlockLog;
        var rec = InobtRecord.ForSparsePiece(pieceAgino, pieceInodes);
        if (!_geo.IsValidAgino(agno, rec.StartIno) || !InodeChunkLayout.ChunkInsideAg(_geo, agno, rec.StartIno))
            throw Corrupt(agno, $"sparse inode piece at agbno {agbno} gives a chunk at agino {rec.StartIno} outside the AG");
        tx.RmapMap(agno, new RmapRecord(agbno, piece, RmapOwner.Inodes, 0), false);
        InitialiseInodes(tx, agno, agbno, piece);

        // The piece's first inode is taken at once.
        int bit = (int)(pieceAgino - rec.StartIno);
        rec = rec with { Free = rec.Free & ~(1UL << bit), FreeCount = rec.FreeCount - 1 };
        Span<byte> key = stackalloc byte[4];
        Span<byte> raw = stackalloc byte[InobtRecord.Size];
        BinaryPrimitives.WriteUInt32BigEndian(key, rec.StartIno);
        using (var cur = ctx.Inobt.CreateCursor())
        {
            if (cur.Lookup(key, BtreeLookup.Equal))
            {
                var existing = Decode(cur.Current);
                if (!existing.CanMerge(rec) || !existing.CountsConsistent)
                    throw Corrupt(agno, $"inobt record {existing.StartIno} (holemask 0x{existing.HoleMask:x4}, count {existing.Count}) cannot take the sparse piece at agbno {agbno}");
                rec = existing.Merge(rec);
                Encode(rec, raw);
                cur.Update(raw);
            }
            else
            {
                Encode(rec, raw);
                if (!cur.Insert(raw)) throw Corrupt(agno, $"inobt insert of sparse chunk {rec.StartIno} failed");
            }
            cur.Release();
        }
        if (ctx.Finobt is { } f)
        {
            // The finobt gets the merged record (replacing any it had for the chunk), as xfs_finobt_insert_sprec.
            using var cur = f.CreateCursor();
            if (cur.Lookup(key, BtreeLookup.Equal)) cur.Update(raw);
            else if (!cur.Insert(raw)) throw Corrupt(agno, $"finobt insert of sparse chunk {rec.StartIno} failed");
            cur.Release();
        }
        AddAgi(tx, ctx, AgiCount, pieceInodes);
        AddAgi(tx, ctx, AgiFreecount, pieceInodes - 1);
        SetAgi(tx, ctx, AgiNewino, rec.StartIno);
        tx.ModInodeCounters(pieceInodes, pieceInodes - 1);
        return _geo.AginoToIno(agno, pieceAgino);
    }

    /// <summary>Up to <paramref name="into"/>.Length first blocks of hole pieces of the AG's sparse records whose
    /// blocks are free now, in inode order among the first <see cref="HoleSearchRecords"/> records (one inobt walk,
    /// a bnobt lookup per hole piece; the cursor released before any allocation).</summary>
    int CollectFreeHolePieces(AgContext ctx, Space.AgSpace space, int pieceInodes, uint pieceBlocks, Span<uint> into)
    {
        int n = 0, read = 0;
        using var cur = ctx.Inobt.CreateCursor();
        for (bool ok = cur.MoveFirst(); ok && cur.HasRecord && n < into.Length && read++ < HoleSearchRecords; ok = cur.Increment())
        {
            var r = Decode(cur.Current);
            if (r.HoleMask == 0) continue;
            for (int offset = r.NextHolePiece(pieceInodes); offset >= 0 && n < into.Length; offset = r.NextHolePiece(pieceInodes, offset + pieceInodes))
            {
                uint agbno = _geo.AginoToAgbno(r.StartIno + (uint)offset);
                if (space.IsFree(agbno, pieceBlocks)) into[n++] = agbno;
            }
        }
        cur.Release();
        return n;
    }

    long _holePiecesFilled, _piecesElsewhere;

    /// <summary>Sparse pieces put into a hole of an existing record, and elsewhere, since this allocator was made
    /// (tests and measurements).</summary>
    internal (long IntoHoles, long Elsewhere) SparsePieces => (Interlocked.Read(ref _holePiecesFilled), Interlocked.Read(ref _piecesElsewhere));

    // ------------------------------------------------------------------ free

    /// <summary>
    /// Marks inode <paramref name="ino"/> free in the inode btrees and counters (its core is the caller's, logged
    /// already). When it was the chunk's last inode in use, as xfs_difree_inobt/xfs_difree_finobt with `noikeep`
    /// (the kernel's default; not when a block holds more than a chunk): the chunk goes in the same transaction --
    /// its inobt and finobt records deleted, agi_count and agi_freecount (and the superblock counters) lowered by its
    /// inodes, its allocated blocks (holes left alone) freed with their OWN_INODES rmap and their buffers
    /// invalidated (the inodes' final cores are not written: the blocks are free) -- and, at commit, the chunk is
    /// remembered as retired (<see cref="RetiredInodeChunks"/>) and its inodes leave the in-core cache's clock.
    /// </summary>
    public void Free(WriteTransaction tx, ulong ino)
    {
        uint agno = _geo.InoToAgno(ino), agino = _geo.InoToAgino(ino);
        var ctx = OpenAg(tx, agno);
        Span<byte> key = stackalloc byte[4];
        Span<byte> raw = stackalloc byte[16];
        BinaryPrimitives.WriteUInt32BigEndian(key, agino);
        InobtRecord rec;
        bool freeChunk;
        using (var cur = ctx.Inobt.CreateCursor())
        {
            if (!cur.Lookup(key, BtreeLookup.LessOrEqual) || !cur.HasRecord) throw Corrupt(agno, $"no inobt record holds inode {ino}");
            rec = Decode(cur.Current);
            int bit = (int)(agino - rec.StartIno);
            if (agino < rec.StartIno || bit >= 64 || (rec.Holes & (1UL << bit)) != 0)
                throw Corrupt(agno, $"no inobt record holds inode {ino}");
            if ((rec.Free & (1UL << bit)) != 0) throw Corrupt(agno, $"inode {ino} is already free in the inobt");
            if (rec.FreeCount >= rec.Count) throw Corrupt(agno, $"inobt record {rec.StartIno} freecount {rec.FreeCount} of {rec.Count}");
            rec = rec with { Free = rec.Free | (1UL << bit), FreeCount = rec.FreeCount + 1 };
            freeChunk = rec.Free == ulong.MaxValue && MayFreeChunks && _engine.Ag(agno).RetiredChunks.HasRoom;
            if (freeChunk)
            {
                if (!rec.CountsConsistent) throw Corrupt(agno, $"inobt record {rec.StartIno}: count {rec.Count}, freecount {rec.FreeCount} for holemask 0x{rec.HoleMask:x4}");
                cur.Delete();
            }
            else
            {
                Encode(rec, raw);
                cur.Update(raw);
            }
            cur.Release();
        }
        if (ctx.Finobt is { } f)
        {
            Encode(rec, raw);
            using var cur = f.CreateCursor();
            BinaryPrimitives.WriteUInt32BigEndian(key, rec.StartIno);
            bool exists = cur.Lookup(key, BtreeLookup.Equal);
            if (exists != (rec.FreeCount > 1)) throw Corrupt(agno, $"finobt {(exists ? "has" : "lacks")} a record for chunk {rec.StartIno} with {rec.FreeCount - 1} free inodes");
            if (exists)
            {
                var finobtRec = Decode(cur.Current);
                if (finobtRec.Free != (rec.Free & ~(1UL << (int)(agino - rec.StartIno))) || finobtRec.FreeCount != rec.FreeCount - 1)
                    throw Corrupt(agno, $"finobt and inobt disagree on chunk {rec.StartIno}");
                if (freeChunk) cur.Delete();
                else cur.Update(raw);
            }
            else if (freeChunk)
            {
                // A chunk of one inode: never made by XFS (pieces are at least 4 inodes); nothing to delete.
            }
            else if (!cur.Insert(raw)) throw Corrupt(agno, $"finobt insert of chunk {rec.StartIno} failed");
            cur.Release();
        }
        if (!freeChunk)
        {
            AddAgi(tx, ctx, AgiFreecount, 1);
            tx.ModInodeCounters(0, 1);
            return;
        }
        uint inodes = rec.FreeCount;
        AddAgi(tx, ctx, AgiCount, -inodes);
        AddAgi(tx, ctx, AgiFreecount, -(inodes - 1));
        tx.ModInodeCounters(-inodes, -(inodes - 1));
        FreeChunkBlocks(tx, agno, rec);
    }

    /// <summary>Chunks are freed (xfs_difree_inobt) unless the engine keeps them (ikeep) or a block holds more than a
    /// chunk (the block's other chunks may be in use).</summary>
    bool MayFreeChunks => !_engine.Options.KeepEmptyInodeChunks && _geo.InodesPerBlock <= InobtRecord.InodesPerChunk;

    /// <summary>Frees the allocated parts of a wholly free chunk whose records are gone (xfs_difree_inode_chunk):
    /// each run of allocated blocks unmapped (OWN_INODES) and freed as metadata; at commit the chunk is retired at
    /// the highest generation its inodes reached and its inodes leave the cache's clock.</summary>
    void FreeChunkBlocks(WriteTransaction tx, uint agno, in InobtRecord rec)
    {
        uint generation = HighestGeneration(tx, agno, rec);
        ulong firstIno = _geo.AginoToIno(agno, rec.StartIno);
        tx.DropLoggedInodes(firstIno, InobtRecord.InodesPerChunk);
        var runs = new List<(uint Start, uint Length)>(4);
        InodeChunkLayout.AllocatedBlockRuns(_geo, rec.StartIno, rec.HoleMask, runs);
        foreach (var (start, length) in runs)
        {
            tx.RmapUnmap(agno, new RmapRecord(start, length, RmapOwner.Inodes, 0), false);
            tx.FreeMetadata(agno, start, length);
        }
        var ag = _engine.Ag(agno);
        uint startIno = rec.StartIno;
        ulong allocated = ~rec.Holes;
        tx.OnCommitted(() =>
        {
            ag.RetiredChunks.Retire(startIno, allocated, generation);
            _engine.InodeCache.Evict(firstIno, InobtRecord.InodesPerChunk);
        });
        Interlocked.Increment(ref _chunksFreed);
    }

    /// <summary>The highest generation any allocated inode of the chunk has: on disk (read through the transaction,
    /// which has the chunk's blocks) or in core (a freed inode's new core is logged but not yet in its block).</summary>
    uint HighestGeneration(WriteTransaction tx, uint agno, in InobtRecord rec)
    {
        uint highest = 0;
        int isize = _geo.InodeSize;
        BlockBuffer? block = null;
        long blockDaddr = -1;
        for (int i = 0; i < InobtRecord.InodesPerChunk; i++)
        {
            if (rec.IsHole(i)) continue;
            ulong ino = _geo.AginoToIno(agno, rec.StartIno + (uint)i);
            var (daddr, offset) = _engine.InodeLocation(ino);
            if (daddr != blockDaddr)
            {
                block = tx.ReadBuffer(daddr, _geo.BasicBlocksPerBlock, null);
                blockDaddr = daddr;
            }
            var core = new Dinode(block!.Span.Slice(offset, isize));
            if (core.Magic != Dinode.MagicValue || core.Ino != ino)
                throw Corrupt(agno, $"inode {ino} of free chunk {rec.StartIno} is not an inode core (magic 0x{core.Magic:x4}, di_ino {core.Ino})");
            highest = Math.Max(highest, core.Generation);
            if (_engine.InodeCache.Peek(ino) is { } incore) highest = Math.Max(highest, new Dinode(incore.Core).Generation);
        }
        return highest;
    }

    long _chunksFreed;

    /// <summary>Inode chunks freed since this allocator was made (tests and measurements).</summary>
    internal long ChunksFreed => Interlocked.Read(ref _chunksFreed);
}
