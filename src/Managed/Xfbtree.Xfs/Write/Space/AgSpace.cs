using System.Buffers.Binary;
using Xfbtree.Btree;
using Xfbtree.Buffers;
using Xfbtree.Xfs.Format;
using Xfbtree.Xfs.Trees;
using Xfbtree.Xfs.Write.Engine;

namespace Xfbtree.Xfs.Write.Space;

/// <summary>
/// One locked AG inside one transaction: its AGF and AGFL (joined buffers, fields edited in place and logged),
/// the free-space trees, the free list, the rmapbt and the refcountbt, all read and written through the
/// transaction. Every AGF counter is kept exact as the kernel keeps it (docs/xfs-format.md §9.4, §9.5):
/// freeblks and longest follow the cntbt, flcount/flfirst/fllast the list, btreeblks the bnobt, cntbt and rmapbt
/// blocks beyond their roots, rmap_blocks and refcount_blocks every block of their trees, levels and roots the
/// trees. bnobt, cntbt and rmapbt blocks come from the AGFL head and return to its tail; refcountbt blocks come
/// from free space (OWN_REFC).
/// </summary>
internal sealed partial class AgSpace
{
    private readonly WriteTransaction tx;
    private readonly XfsGeometry geo;
    private readonly uint agLength;
    private readonly int slots;
    private readonly SpaceLimits limits;
    private BlockBuffer? agf;
    private BlockBuffer? agfl;

    public AgSpace(WriteTransaction tx, uint agno)
    {
        this.tx = tx;
        AgNumber = agno;
        geo = tx.Geometry;
        agLength = geo.AgLength(agno);
        slots = geo.AgflSlots;
        limits = SpaceLimits.For(geo);
    }

    public uint AgNumber { get; }

    public uint AgLength => agLength;

    /// <summary>Whether the filesystem keeps a reverse-mapping btree (the rmapbt feature): without one no rmap record
    /// is kept anywhere, the free list feeds only the bnobt and cntbt, and no RMAPBT reservation pool exists, as in
    /// the kernel (each use below asks this, per image, never a mode set on the space).</summary>
    public bool HasRmapbt => geo.Superblock.HasRmapbt;

    /// <summary>Set by online rmap repair before the AGF is first read: problems of the AGF's rmap fields (root,
    /// level, rmap_blocks) are not corruption here, the repair replaces them.</summary>
    internal bool ToleratesRmapFieldDamage { get; set; }

    /// <summary>Set by a scrub repair before the AGF is first read: AGF problems naming one of these (a tree it
    /// rebuilds, a counter it recomputes: "bnobt", "agf_freeblks") are not corruption here, the repair replaces them.</summary>
    internal IReadOnlyList<string> ToleratedAgfProblems { get; set; } = [];

    // ------------------------------------------------------------------ AGF fields

    private BlockBuffer Agf
    {
        get
        {
            if (agf is null)
            {
                BlockBuffer b = tx.ReadAgHeader(AgHeaderKind.Agf, AgNumber);
                var parsed = Format.Agf.Parse(b.Span, geo, AgNumber);
                // Online repair of a damaged rmapbt reads the AGF whose rmap fields it is about to replace.
                string? problem = parsed.Problems.FirstOrDefault(p => (!ToleratesRmapFieldDamage || !p.Contains("rmap", StringComparison.Ordinal)) && !IsToleratedAgfProblem(p));
                if (problem is not null)
                {
                    throw new CorruptionException("AGF", b.Daddr, problem);
                }
                if (!parsed.FreeListConsistent(slots))
                {
                    throw new CorruptionException("AGF", b.Daddr, "free list counters inconsistent");
                }
                agf = b;
            }
            return agf;
        }
    }

    private bool IsToleratedAgfProblem(string problem)
    {
        foreach (string field in ToleratedAgfProblems)
        {
            if (problem.Contains(field, StringComparison.Ordinal))
            {
                return true;
            }
        }
        return false;
    }

    private BlockBuffer Agfl => agfl ??= tx.ReadAgHeader(AgHeaderKind.Agfl, AgNumber);

    private uint Field(int offset) => BinaryPrimitives.ReadUInt32BigEndian(Agf.Span[offset..]);

    private void SetField(int offset, uint value)
    {
        BlockBuffer b = Agf;
        BinaryPrimitives.WriteUInt32BigEndian(b.Span[offset..], value);
        tx.LogBuffer(b, offset, 4);
    }

    private void AddField(int offset, long delta)
    {
        long v = Field(offset) + delta;
        if (v < 0 || v > uint.MaxValue)
        {
            throw new CorruptionException("AGF", Agf.Daddr, $"counter at offset {offset} would become {v}");
        }
        SetField(offset, (uint)v);
    }

    public uint FreeBlocks => Field(Format.Agf.OffsetFreeBlocks);
    public uint Longest => Field(Format.Agf.OffsetLongest);
    public uint FlCount => Field(Format.Agf.OffsetFlCount);
    public uint BtreeBlocks => Field(Format.Agf.OffsetBtreeBlocks);
    public uint RmapBlocks => Field(Format.Agf.OffsetRmapBlocks);
    public uint RefcountBlocks => Field(Format.Agf.OffsetRefcountBlocks);

    /// <summary>Height of a tree rooted in the AGF, as this transaction sees it.</summary>
    public uint Level(AgfTree tree) => tree switch
    {
        AgfTree.Bnobt => Field(Format.Agf.OffsetLevels),
        AgfTree.Cntbt => Field(Format.Agf.OffsetLevels + 4),
        AgfTree.Rmapbt => Field(Format.Agf.OffsetRmapLevel),
        _ => Field(Format.Agf.OffsetRefcountLevel),
    };

    /// <summary>Reads the figures AG selection uses (published to <see cref="EngineAg"/> after the commit).</summary>
    public AgSummary? CaptureSummary()
    {
        if (agf is null)
        {
            return null;
        }
        var (meta, rmap) = AgReservations.Reserved(tx, this);
        return new AgSummary(FreeBlocks, Longest, FlCount, MinFreeList(), meta, rmap);
    }

    // ------------------------------------------------------------------ trees

    private BtreeRootValue Root(AgfTree tree)
    {
        int rootOffset, levelOffset;
        switch (tree)
        {
            case AgfTree.Bnobt: rootOffset = Format.Agf.OffsetRoots; levelOffset = Format.Agf.OffsetLevels; break;
            case AgfTree.Cntbt: rootOffset = Format.Agf.OffsetRoots + 4; levelOffset = Format.Agf.OffsetLevels + 4; break;
            case AgfTree.Rmapbt: rootOffset = Format.Agf.OffsetRmapRoot; levelOffset = Format.Agf.OffsetRmapLevel; break;
            default: rootOffset = Format.Agf.OffsetRefcountRoot; levelOffset = Format.Agf.OffsetRefcountLevel; break;
        }
        return new BtreeRootValue(Field(rootOffset), (int)Field(levelOffset))
        {
            Changed = (pointer, height) =>
            {
                SetField(rootOffset, (uint)pointer);
                SetField(levelOffset, (uint)height);
            },
        };
    }

    public Btree<BnobtOps> Bnobt() => new(new BnobtOps(agLength), tx.AgStore(AgNumber, () => TakeFromFreeList(AgfTree.Bnobt), b => ReturnToFreeList(AgfTree.Bnobt, b)),
        Root(AgfTree.Bnobt), geo.MetaUuid, AgNumber, limits.MaxRecords[(int)AgfTree.Bnobt]);

    public Btree<CntbtOps> Cntbt() => new(new CntbtOps(agLength), tx.AgStore(AgNumber, () => TakeFromFreeList(AgfTree.Cntbt), b => ReturnToFreeList(AgfTree.Cntbt, b)),
        Root(AgfTree.Cntbt), geo.MetaUuid, AgNumber, limits.MaxRecords[(int)AgfTree.Cntbt]);

    public Btree<RmapbtOps> Rmapbt() => new(new RmapbtOps(false, agLength), tx.AgStore(AgNumber, () => TakeFromFreeList(AgfTree.Rmapbt), b => ReturnToFreeList(AgfTree.Rmapbt, b)),
        Root(AgfTree.Rmapbt), geo.MetaUuid, AgNumber, limits.MaxRecords[(int)AgfTree.Rmapbt]);

    public Btree<RefcountbtOps> Refcountbt()
    {
        if (!geo.Superblock.HasReflink)
        {
            throw new XfsWriteException(WriteErrorKind.NotSupported, $"{tx.Operation}: the filesystem has no reflink feature (no refcount btree)");
        }
        return new(new RefcountbtOps(), tx.AgStore(AgNumber, AllocateRefcountBlock, FreeRefcountBlock),
            Root(AgfTree.Refcountbt), geo.MetaUuid, AgNumber, limits.MaxRecords[(int)AgfTree.Refcountbt]);
    }

    // ------------------------------------------------------------------ the free list

    /// <summary>AGFL slot <paramref name="slot"/>.</summary>
    private uint Slot(uint slot) => BinaryPrimitives.ReadUInt32BigEndian(Agfl.Span[(Format.Agfl.HeaderSize + 4 * (int)slot)..]);

    private void SetSlot(uint slot, uint agbno)
    {
        BlockBuffer b = Agfl;
        int offset = Format.Agfl.HeaderSize + 4 * (int)slot;
        BinaryPrimitives.WriteUInt32BigEndian(b.Span[offset..], agbno);
        tx.LogBuffer(b, offset, 4);
    }

    /// <summary>The free list's live blocks in list order.</summary>
    public List<uint> FreeListBlocks()
    {
        var list = new List<uint>();
        uint n = FlCount, i = Field(Format.Agf.OffsetFlFirst);
        for (uint k = 0; k < n; k++, i = (i + 1) % (uint)slots)
        {
            list.Add(Slot(i));
        }
        return list;
    }

    /// <summary>
    /// Takes the block at the list head for the rmapbt online repair is building (the AGFL is what feeds the rmapbt):
    /// no counter but the list's changes, as <see cref="InstallRebuiltRmapbt"/> sets the tree's counters; the block
    /// stays OWN_AG. False when the list is empty.
    /// </summary>
    internal bool TryTakeFreeListBlockForRebuiltRmapbt(out uint agbno) => TryPopFreeListHead(out agbno);

    /// <summary>
    /// Removes the block at the free list's head (the list half of xfs_alloc_get_freelist): the slot is checked to
    /// name a block inside the AG, flfirst advances and flcount drops; the caller decides whose block it becomes.
    /// False when the list is empty.
    /// </summary>
    private bool TryPopFreeListHead(out uint agbno)
    {
        agbno = 0;
        uint count = FlCount;
        if (count == 0)
        {
            return false;
        }
        uint first = Field(Format.Agf.OffsetFlFirst);
        agbno = Slot(first);
        if (agbno < geo.FirstFreeBlock || agbno >= agLength)
        {
            throw new CorruptionException("AGFL", Agfl.Daddr, $"slot {first} holds block {agbno}, outside the AG");
        }
        SetField(Format.Agf.OffsetFlFirst, (first + 1) % (uint)slots);
        SetField(Format.Agf.OffsetFlCount, count - 1);
        return true;
    }

    /// <summary>
    /// Rewrites the free list a scrub repair has rebuilt (upstream's xrep_agfl commit): the AGFL slots hold
    /// <paramref name="blocks"/> from slot 0 on (the rest NULLAGBNO), the AGF's flfirst, fllast and flcount describe
    /// them. Must be the first use of this AG's space in the transaction: the AGF is read without the free-list
    /// checks it replaces, and its other fields are checked once the list is in place.
    /// </summary>
    internal void InstallRebuiltFreeList(IReadOnlyList<uint> blocks)
    {
        if (agf is not null)
        {
            throw new InvalidOperationException("the free list is rebuilt before anything else reads this AG's AGF");
        }
        if (blocks.Count > slots)
        {
            throw new ArgumentException($"{blocks.Count} blocks do not fit an AGFL of {slots} slots", nameof(blocks));
        }
        BlockBuffer b = tx.ReadAgHeader(AgHeaderKind.Agf, AgNumber);
        agf = b;
        // The list is rewritten whole, so the AGFL sector is formatted anew rather than read: one with a bad magic or
        // CRC is repaired too.
        BlockBuffer list = tx.GetNewAgHeader(AgHeaderKind.Agfl, AgNumber);
        Span<byte> sector = list.Span[..geo.SectorSize];
        sector.Clear();
        BinaryPrimitives.WriteUInt32BigEndian(sector, Format.Agfl.MagicValue);
        BinaryPrimitives.WriteUInt32BigEndian(sector[4..], AgNumber);
        geo.MetaUuid.CopyTo(sector[8..24]);
        XfsCrc.Update(sector, Format.Agfl.CrcOffset);
        tx.LogBuffer(list, 0, geo.SectorSize);
        agfl = list;
        for (int i = 0; i < slots; i++)
        {
            SetSlot((uint)i, i < blocks.Count ? blocks[i] : NullAgBlock);
        }
        SetField(Format.Agf.OffsetFlFirst, 0);
        SetField(Format.Agf.OffsetFlLast, blocks.Count == 0 ? (uint)slots - 1 : (uint)blocks.Count - 1);
        SetField(Format.Agf.OffsetFlCount, (uint)blocks.Count);
        var parsed = Format.Agf.Parse(b.Span, geo, AgNumber);
        if (parsed.Problems.FirstOrDefault(p => !IsToleratedAgfProblem(p)) is { } problem)
        {
            agf = null;
            throw new CorruptionException("AGF", b.Daddr, problem);
        }
    }

    private const uint NullAgBlock = 0xFFFFFFFF;

    /// <summary>The AGF's rmapbt root as this transaction sees it (maybe damaged: online repair reads it as a hint).</summary>
    internal uint RmapRoot => Field(Format.Agf.OffsetRmapRoot);

    /// <summary>
    /// Points the AGF at an rmapbt online repair has built (upstream's xfs_rmapbt_commit_staged_btree): root, level
    /// and rmap_blocks, and btreeblks recounted from the free-space trees as they are now plus the new tree's
    /// blocks beyond its root. The old tree's blocks are the caller's to reap.
    /// </summary>
    internal void InstallRebuiltRmapbt(uint root, int level, uint blocks)
    {
        long freeSpaceTreeBlocks = CountBlocks(Bnobt()) + CountBlocks(Cntbt());
        SetField(Format.Agf.OffsetRmapRoot, root);
        SetField(Format.Agf.OffsetRmapLevel, (uint)level);
        SetField(Format.Agf.OffsetRmapBlocks, blocks);
        SetField(Format.Agf.OffsetBtreeBlocks, checked((uint)(freeSpaceTreeBlocks - 2 + blocks - 1)));
    }

    /// <summary>
    /// Points the AGF at a bnobt and a cntbt a scrub repair has built (upstream's xrep_abt commit): roots, levels,
    /// free blocks and longest extent as the new trees hold them, and btreeblks recounted (both new trees' blocks
    /// beyond their roots plus the rmapbt's). The old trees' blocks are the caller's to reap, through these trees.
    /// </summary>
    internal void InstallRebuiltFreeSpaceTrees(uint bnoRoot, int bnoLevel, long bnoBlocks, uint cntRoot, int cntLevel, long cntBlocks, uint freeBlocks, uint longest)
    {
        // Without an rmapbt the AGF's rmap fields are zero and btreeblks counts the free-space trees alone.
        long rmapBlocks = HasRmapbt ? CountBlocks(Rmapbt()) : 0;
        SetField(Format.Agf.OffsetRoots, bnoRoot);
        SetField(Format.Agf.OffsetLevels, (uint)bnoLevel);
        SetField(Format.Agf.OffsetRoots + 4, cntRoot);
        SetField(Format.Agf.OffsetLevels + 4, (uint)cntLevel);
        SetField(Format.Agf.OffsetFreeBlocks, freeBlocks);
        SetField(Format.Agf.OffsetLongest, longest);
        if (HasRmapbt)
        {
            SetField(Format.Agf.OffsetRmapBlocks, checked((uint)rmapBlocks));
        }
        SetField(Format.Agf.OffsetBtreeBlocks, checked((uint)(bnoBlocks - 1 + cntBlocks - 1 + Math.Max(0, rmapBlocks - 1))));
    }

    /// <summary>Points the AGF at a refcountbt a scrub repair has built: root, level and refcount_blocks. The old
    /// tree's blocks are the caller's to reap.</summary>
    internal void InstallRebuiltRefcountbt(uint root, int level, long blocks)
    {
        SetField(Format.Agf.OffsetRefcountRoot, root);
        SetField(Format.Agf.OffsetRefcountLevel, (uint)level);
        SetField(Format.Agf.OffsetRefcountBlocks, checked((uint)blocks));
    }

    private static long CountBlocks<TOps>(Btree<TOps> tree) where TOps : struct, IBtreeOps
    {
        var counter = new BlockCounter();
        using BtreeCursor<TOps> cur = tree.CreateCursor();
        return cur.VisitBlocks(ref counter);
    }

    private struct BlockCounter : IBtreeBlockVisitor
    {
        public readonly void Visit(int level, long pointer, ReadOnlySpan<byte> block)
        {
        }
    }

    /// <summary>Takes the block at the list head (xfs_alloc_get_freelist); <paramref name="tree"/> grows by it.</summary>
    private long TakeFromFreeList(AgfTree tree)
    {
        if (!TryPopFreeListHead(out uint agbno))
        {
            throw new CorruptionException("AGFL", Agfl.Daddr, $"AG {AgNumber}: the free list is empty in the middle of a {tree} split");
        }
        AddField(Format.Agf.OffsetBtreeBlocks, +1);
        if (tree == AgfTree.Rmapbt)
        {
            AddField(Format.Agf.OffsetRmapBlocks, +1);
        }
        return agbno;
    }

    /// <summary>Puts a block at the list tail (xfs_alloc_put_freelist); <paramref name="tree"/> shrinks by it.</summary>
    private void ReturnToFreeList(AgfTree tree, long agbno)
    {
        PutOnFreeList((uint)agbno);
        AddField(Format.Agf.OffsetBtreeBlocks, -1);
        if (tree == AgfTree.Rmapbt)
        {
            AddField(Format.Agf.OffsetRmapBlocks, -1);
        }
    }

    private void PutOnFreeList(uint agbno)
    {
        uint count = FlCount;
        if (count >= slots)
        {
            throw new CorruptionException("AGFL", Agfl.Daddr, $"AG {AgNumber}: the free list is full");
        }
        uint last = (Field(Format.Agf.OffsetFlLast) + 1) % (uint)slots;
        if (count == 0 && Field(Format.Agf.OffsetFlFirst) != last)
        {
            // An empty list may have been left with any flfirst: the one entry is both first and last.
            SetField(Format.Agf.OffsetFlFirst, last);
        }
        SetSlot(last, agbno);
        SetField(Format.Agf.OffsetFlLast, last);
        SetField(Format.Agf.OffsetFlCount, count + 1);
    }

    /// <summary>
    /// The free-list length a split of every AGFL-fed tree needs, as the current kernel computes it
    /// (xfs_alloc_min_freelist since 6.7: Σ over bnobt, cntbt, rmapbt of min(level + 1, maxlevels) * 2 − 2),
    /// or the older Σ min(level + 1, maxlevels) when that is larger. The rmapbt's term only where the filesystem
    /// has one (the kernel adds it under xfs_has_rmapbt).
    /// </summary>
    public uint MinFreeList() => MinFreeList(geo, Level(AgfTree.Bnobt), Level(AgfTree.Cntbt), Level(AgfTree.Rmapbt));

    /// <inheritdoc cref="MinFreeList()"/>
    public static uint MinFreeList(XfsGeometry geo, uint bno, uint cnt, uint rmap)
    {
        SpaceLimits limits = SpaceLimits.For(geo);
        int allocMax = limits.AllocMaxLevels;
        int rmapMax = limits.RmapMaxLevels;
        uint current = Math.Min(bno + 1, (uint)allocMax) * 2 - 2 + Math.Min(cnt + 1, (uint)allocMax) * 2 - 2;
        uint older = Math.Min(bno + 1, (uint)allocMax) + Math.Min(cnt + 1, (uint)allocMax);
        if (geo.Superblock.HasRmapbt)
        {
            current += Math.Min(rmap + 1, (uint)rmapMax) * 2 - 2;
            older += Math.Min(rmap + 1, (uint)rmapMax);
        }
        return Math.Max(current, older);
    }

    /// <summary>
    /// xfs_alloc_fix_freelist: shrinks a list above its minimum (each block back to free space, OWN_AG
    /// unmapped) and refills one below it (extents from the cntbt, OWN_AG mapped, blocks to the tail).
    /// Called before every allocation, free and rmap/refcount change, so splits never find the list empty.
    /// </summary>
    public void FixFreeList() => FixFreeList(null);

    /// <param name="keepClear">An AG block the caller is about to allocate at (exact or near hint): a refill that
    /// has to use the extent holding it takes that extent's far end, so the exact request still finds its blocks.</param>
    /// <param name="skipRmapUpdates">The blocks moved between the list and free space get no OWN_AG rmap edit (see
    /// <see cref="TryAllocateHere"/>).</param>
    public void FixFreeList(uint? keepClear, bool skipRmapUpdates = false)
    {
        uint need = MinFreeList();
        while (FlCount > need && TryPopFreeListHead(out uint agbno))
        {
            tx.InvalidateFreedBlocks(AgNumber, agbno, 1); // a block of a tree that shrank into the list
            InsertFree(agbno, 1);
            RmapEdit(RmapUpdateKind.Unmap, new RmapRecord(agbno, 1, RmapOwner.Ag, 0), shared: false, skipRmapUpdates);
        }
        int guard = 0;
        while (FlCount < need)
        {
            if (++guard > 64)
            {
                throw new CorruptionException("AGF", Agf.Daddr, $"AG {AgNumber}: the free list does not fill up");
            }
            uint want = need - FlCount;
            if (!FindRefill(want, keepClear, out uint fbno, out uint flen, out uint abno, out uint alen))
            {
                throw new XfsWriteException(WriteErrorKind.NoSpace, $"{tx.Operation}: AG {AgNumber} has no free space left for its free list");
            }
            RemoveFree(fbno, flen, abno, alen);
            RmapEdit(RmapUpdateKind.Map, new RmapRecord(abno, alen, RmapOwner.Ag, 0), shared: false, skipRmapUpdates);
            for (uint b = abno; b < abno + alen; b++)
            {
                PutOnFreeList(b);
            }
        }
    }

    /// <summary>
    /// The extent a refill takes from: by size as the kernel does (the smallest holding <paramref name="want"/>
    /// blocks, else the largest), but passing over the extent that holds <paramref name="keepClear"/> while
    /// another one exists; from that extent it takes the far end.
    /// </summary>
    private bool FindRefill(uint want, uint? keepClear, out uint fbno, out uint flen, out uint abno, out uint alen)
    {
        fbno = flen = abno = alen = 0;
        var tree = Cntbt();
        using var cur = tree.CreateCursor();
        Span<byte> key = stackalloc byte[8];
        Trees.AllocRecord.Write(key, 0, want);
        bool Holds(uint s, uint l) => keepClear is { } k && s <= k && k < (ulong)s + l;
        bool found = false;
        uint avoidStart = 0, avoidLen = 0;
        for (bool ok = cur.Lookup(key, Btree.BtreeLookup.GreaterOrEqual); ok; ok = cur.Increment())
        {
            uint s = Trees.AllocRecord.StartBlock(cur.Current), l = Trees.AllocRecord.BlockCount(cur.Current);
            if (!Holds(s, l))
            {
                (fbno, flen, found) = (s, l, true);
                break;
            }
            (avoidStart, avoidLen) = (s, l);
        }
        if (!found)
        {
            for (bool ok = cur.MoveLast(); ok; ok = cur.Decrement())
            {
                uint s = Trees.AllocRecord.StartBlock(cur.Current), l = Trees.AllocRecord.BlockCount(cur.Current);
                if (!Holds(s, l))
                {
                    (fbno, flen, found) = (s, l, true);
                    break;
                }
                (avoidStart, avoidLen) = (s, l);
            }
        }
        if (!found && avoidLen > 0)
        {
            (fbno, flen, found) = (avoidStart, avoidLen, true);
        }
        if (!found)
        {
            return false;
        }
        alen = Math.Min(want, flen);
        abno = Holds(fbno, flen) ? fbno + flen - alen : fbno;
        return true;
    }

    // ------------------------------------------------------------------ refcountbt blocks (from free space)

    private long AllocateRefcountBlock()
    {
        uint near = Field(Format.Agf.OffsetRefcountRoot);
        if (!TryAllocateHere(new AllocationRequest(geo.AgbToFsb(AgNumber, near), 1, 1, AllocationPurpose.RefcountBtreeBlock, OnlyAg: AgNumber), out uint agbno, out _))
        {
            throw new XfsWriteException(WriteErrorKind.NoSpace, $"{tx.Operation}: AG {AgNumber} has no space for a refcount btree block");
        }
        RmapEdit(RmapUpdateKind.Map, new RmapRecord(agbno, 1, RmapOwner.Refc, 0), shared: false);
        AddField(Format.Agf.OffsetRefcountBlocks, +1);
        return agbno;
    }

    private void FreeRefcountBlock(long agbno)
    {
        FreeMetadataExtent((uint)agbno, 1);
        RmapEdit(RmapUpdateKind.Unmap, new RmapRecord((uint)agbno, 1, RmapOwner.Refc, 0), shared: false);
        AddField(Format.Agf.OffsetRefcountBlocks, -1);
    }
}
