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
/// inserts or updates the finobt record; a wholly free chunk stays allocated (as with ikeep).
/// Caller holds the inode locks it needs; this class takes the AG locks (ascending after the inode locks).
/// </summary>
internal sealed class InodeAllocator
{
    // AGI field offsets (docs/xfs-format.md §3.2).
    const int AgiCount = 16, AgiRoot = 20, AgiLevel = 24, AgiFreecount = 28, AgiNewino = 32,
        AgiFreeRoot = 328, AgiFreeLevel = 332, AgiIblocks = 336, AgiFblocks = 340;

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
        // As xfs_dialloc: from the parent's AG on, take a free inode, else a new chunk in that AG, else the next AG.
        for (uint k = 0; k < agCount; k++)
        {
            uint agno = (first + k) % agCount;
            if (_engine.Ag(agno).IsSick) continue;
            var ctx = OpenAg(tx, agno);
            if (GetAgi(ctx, AgiFreecount) != 0)
                return TakeFreeInode(tx, ctx, agno == first ? _geo.InoToAgino(parentIno) : GetAgi(ctx, AgiNewino));
            if (TryNewChunk(tx, ctx) is ulong ino) return ino;
        }
        throw new XfsWriteException(WriteErrorKind.NoSpace, $"{tx.Operation}: no free inode and no room for a new inode chunk in any AG");
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
        if (!_geo.IsValidAgino(agno, startAgino) || (startAgino & 63) != 0)
            throw Corrupt(agno, $"new inode chunk at agbno {got.AgBlock} gives an unaligned or invalid first inode {startAgino}");
        tx.RmapMap(agno, new RmapRecord(got.AgBlock, chunkBlocks, RmapOwner.Inodes, 0), false);

        // Initialise every inode of the chunk (xfs_ialloc_inode_init): magic, version 3, one random generation,
        // next_unlinked NULLAGINO, number, UUID, CRC; everything else zero.
        uint gen = (uint)Random.Shared.Next() | 1u;
        int isize = _geo.InodeSize;
        for (uint b = 0; b < chunkBlocks; b++)
        {
            var buf = tx.GetNewBuffer(_geo.AgBlockToDaddr(agno, got.AgBlock + b), _geo.BasicBlocksPerBlock, null);
            var span = buf.Span;
            span.Clear();
            for (int slot = 0; slot < _geo.InodesPerBlock; slot++)
            {
                var c = span.Slice(slot * isize, isize);
                BinaryPrimitives.WriteUInt16BigEndian(c, Dinode.MagicValue);
                c[4] = 3;
                BinaryPrimitives.WriteUInt32BigEndian(c[InodeCore.OffGen..], gen);
                BinaryPrimitives.WriteUInt32BigEndian(c[InodeCore.OffNextUnlinked..], Agi.NullAgino);
                uint agino = ((got.AgBlock + b) << _geo.InodesPerBlockLog) | (uint)slot;
                BinaryPrimitives.WriteUInt64BigEndian(c[InodeCore.OffIno..], _geo.AginoToIno(agno, agino));
                _geo.MetaUuid.CopyTo(c[InodeCore.OffUuid..]);
                XfsCrc.Update(c, Dinode.CrcOffset);
            }
            tx.LogBuffer(buf, 0, span.Length);
        }

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

    // ------------------------------------------------------------------ free

    /// <summary>Marks inode <paramref name="ino"/> free in the inode btrees and counters (its core is the caller's).</summary>
    public void Free(WriteTransaction tx, ulong ino)
    {
        uint agno = _geo.InoToAgno(ino), agino = _geo.InoToAgino(ino);
        var ctx = OpenAg(tx, agno);
        Span<byte> key = stackalloc byte[4];
        Span<byte> raw = stackalloc byte[16];
        BinaryPrimitives.WriteUInt32BigEndian(key, agino);
        InobtRecord rec;
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
            Encode(rec, raw);
            cur.Update(raw);
            cur.Release();
        }
        if (ctx.Finobt is { } f)
        {
            using var cur = f.CreateCursor();
            BinaryPrimitives.WriteUInt32BigEndian(key, rec.StartIno);
            bool exists = cur.Lookup(key, BtreeLookup.Equal);
            if (exists != (rec.FreeCount > 1)) throw Corrupt(agno, $"finobt {(exists ? "has" : "lacks")} a record for chunk {rec.StartIno} with {rec.FreeCount - 1} free inodes");
            if (exists) cur.Update(raw);
            else if (!cur.Insert(raw)) throw Corrupt(agno, $"finobt insert of chunk {rec.StartIno} failed");
            cur.Release();
        }
        AddAgi(tx, ctx, AgiFreecount, 1);
        tx.ModInodeCounters(0, 1);
    }
}
