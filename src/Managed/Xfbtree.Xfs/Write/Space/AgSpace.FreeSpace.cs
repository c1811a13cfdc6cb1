using Xfbtree.Btree;
using Xfbtree.Buffers;
using Xfbtree.Xfs.Format;
using Xfbtree.Xfs.Trees;
using Xfbtree.Xfs.Write.Engine;

namespace Xfbtree.Xfs.Write.Space;

/// <summary>The free-space trees: finding, carving out and returning extents (bnobt and cntbt in step).</summary>
internal sealed partial class AgSpace
{
    /// <summary>How many bnobt records a near search looks at on each side of the hint before settling.</summary>
    private const int NearSearchRecords = 64;

    private static uint AlignUp(uint value, uint alignment) => alignment <= 1 ? value : (uint)Math.Min(uint.MaxValue, ((ulong)value + alignment - 1) / alignment * alignment);

    /// <summary>
    /// Allocates in this AG (locked by the caller) as the request asks, or returns false (nothing changed but
    /// possibly the free list). Checks the kernel's space rule first (xfs_alloc_space_available): the longest
    /// extent and the free total, less the free list's needs and the per-AG reservations the purpose may not use.
    /// With <c>skipRmapUpdates</c> the free-list fix this allocation makes edits no rmap record (upstream's "skip
    /// rmap update" owner): online repair reserving its new rmapbt, whose OWN_AG records it computes itself.
    /// </summary>
    public bool TryAllocateHere(in AllocationRequest request, out uint agbno, out uint length, bool skipRmapUpdates = false)
    {
        agbno = 0;
        length = 0;
        uint align = Math.Max(1u, request.Alignment);
        if (!SpaceAvailable(request.Purpose, request.MinLength, align))
        {
            return false;
        }
        bool hintHere = request.HintFsbno != AllocationRequest.NullFsbno && geo.FsbToAgno(request.HintFsbno) == AgNumber
            && geo.FsbToAgbno(request.HintFsbno) < agLength;
        uint hint = hintHere ? geo.FsbToAgbno(request.HintFsbno) : 0;
        FixFreeList(hintHere ? hint : null, skipRmapUpdates);
        if (!SpaceAvailable(request.Purpose, request.MinLength, align))
        {
            return false;
        }
        uint fbno = 0, flen = 0, abno = 0, alen = 0;
        // File data is written in place at commit: it avoids busy extents (blocks freed by records not yet durable)
        // while other space serves, and only then takes them (its write syncs the journal first; see JournalCoverage).
        BusyView busy = request.Purpose == AllocationPurpose.FileData && !request.Exact ? BusyView.For(tx, this) : default;
        bool found = busy.Any && (hintHere
            ? FindNear(hint, request.MinLength, request.MaxLength, align, busy, out fbno, out flen, out abno, out alen)
              || FindBySize(request.MaxLength, request.MinLength, align, busy, out fbno, out flen, out abno, out alen)
            : FindBySize(request.MaxLength, request.MinLength, align, busy, out fbno, out flen, out abno, out alen));
        if (!found && request.Exact)
        {
            found = hintHere && FindExact(hint, request.MinLength, request.MaxLength, align, out fbno, out flen, out abno, out alen);
        }
        else if (!found && hintHere)
        {
            found = FindNear(hint, request.MinLength, request.MaxLength, align, default, out fbno, out flen, out abno, out alen)
                || FindBySize(request.MaxLength, request.MinLength, align, default, out fbno, out flen, out abno, out alen);
        }
        else if (!found)
        {
            found = FindBySize(request.MaxLength, request.MinLength, align, default, out fbno, out flen, out abno, out alen);
        }
        if (!found)
        {
            return false;
        }
        // The pick may not leave less than the reservation behind (a longer pick than the rule allowed is trimmed).
        uint cap = AllowedLength(request.Purpose);
        if (alen > cap)
        {
            if (cap < request.MinLength)
            {
                return false;
            }
            alen = cap;
        }
        RemoveFree(fbno, flen, abno, alen);
        agbno = abno;
        length = alen;
        return true;
    }

    /// <summary>
    /// A sparse inode chunk's piece (the last attempt of xfs_ialloc_ag_alloc): exactly <paramref name="length"/>
    /// blocks aligned to <paramref name="align"/> (sb_spino_align), starting inside [<paramref name="minAgbno"/>,
    /// <paramref name="maxAgbno"/>] so that the 64-inode record around it lies inside the AG. Same space rule as
    /// every allocation (the kernel's: the longest extent must hold length + align - 1); the piece comes from the
    /// smallest free extent that holds one inside the bounds (the kernel searches near the inobt root: any placement
    /// inside the bounds makes the same valid record, and best fit keeps the longer extents for full chunks and
    /// files). False when none (nothing changed but possibly the free list).
    /// </summary>
    public bool TryAllocateInodePiece(uint length, uint align, uint minAgbno, uint maxAgbno, out uint agbno)
    {
        agbno = 0;
        align = Math.Max(1u, align);
        if (length == 0 || minAgbno > maxAgbno || !SpaceAvailable(AllocationPurpose.InodeChunk, length, align))
        {
            return false;
        }
        FixFreeList(null, false);
        if (!SpaceAvailable(AllocationPurpose.InodeChunk, length, align) || AllowedLength(AllocationPurpose.InodeChunk) < length)
        {
            return false;
        }
        if (!FindBoundedBySize(length, align, minAgbno, maxAgbno, out uint fbno, out uint flen, out uint abno))
        {
            return false;
        }
        RemoveFree(fbno, flen, abno, length);
        agbno = abno;
        return true;
    }

    /// <summary>True when [<paramref name="agbno"/>, +<paramref name="length"/>) is wholly free (one bnobt lookup).</summary>
    public bool IsFree(uint agbno, uint length)
    {
        var tree = Bnobt();
        using var cur = tree.CreateCursor();
        Span<byte> key = stackalloc byte[8];
        AllocRecord.Write(key, agbno, 0);
        if (!cur.Lookup(key, BtreeLookup.LessOrEqual))
        {
            return false;
        }
        ulong start = AllocRecord.StartBlock(cur.Current), end = start + AllocRecord.BlockCount(cur.Current);
        return start <= agbno && (ulong)agbno + length <= end;
    }

    /// <summary>The cntbt walked up from <paramref name="length"/>: the first (smallest) extent holding an aligned
    /// piece that starts inside the bounds.</summary>
    private bool FindBoundedBySize(uint length, uint align, uint minAgbno, uint maxAgbno, out uint fbno, out uint flen, out uint abno)
    {
        fbno = flen = abno = 0;
        var tree = Cntbt();
        using var cur = tree.CreateCursor();
        Span<byte> key = stackalloc byte[8];
        AllocRecord.Write(key, 0, length);
        for (bool ok = cur.Lookup(key, BtreeLookup.GreaterOrEqual); ok; ok = cur.Increment())
        {
            uint s = AllocRecord.StartBlock(cur.Current), l = AllocRecord.BlockCount(cur.Current);
            ulong start = AlignUp(Math.Max(s, minAgbno), align);
            if (start <= maxAgbno && start + length <= (ulong)s + l)
            {
                fbno = s;
                flen = l;
                abno = (uint)start;
                return true;
            }
        }
        return false;
    }

    /// <summary>Blocks the purpose may take from this AG now, after the free list's needs and the reservations.</summary>
    private uint AllowedLength(AllocationPurpose purpose)
    {
        long reserved = AgReservations.Needed(tx, this, purpose);
        uint need = MinFreeList();
        long available = (long)FreeBlocks + Math.Min(FlCount, need) - reserved - need;
        return (uint)Math.Clamp(available, 0, uint.MaxValue);
    }

    /// <summary>xfs_alloc_space_available for a request of <paramref name="minLength"/> blocks.</summary>
    private bool SpaceAvailable(AllocationPurpose purpose, uint minLength, uint align)
    {
        long reserved = AgReservations.Needed(tx, this, purpose);
        uint need = MinFreeList();
        long allocLength = (long)minLength + align - 1;
        if (LongestFree(need, reserved) < allocLength)
        {
            return false;
        }
        long available = (long)FreeBlocks + Math.Min(FlCount, need) - reserved - need;
        return available >= allocLength;
    }

    /// <summary>xfs_alloc_longest_free_extent: the longest extent less what the free list and the others'
    /// reservations would take from it.</summary>
    private long LongestFree(uint need, long reserved)
    {
        long longest = Longest, free = FreeBlocks, fl = FlCount;
        long delta = need > fl ? need - fl : 0;
        if (free - longest < reserved)
        {
            delta += reserved - (free - longest);
        }
        if (longest > delta)
        {
            return longest - delta;
        }
        return fl > 0 || longest > 0 ? 1 : 0;
    }

    private bool FindExact(uint hint, uint minLength, uint maxLength, uint align, out uint fbno, out uint flen, out uint abno, out uint alen)
    {
        fbno = flen = abno = alen = 0;
        if (AlignUp(hint, align) != hint)
        {
            return false;
        }
        var tree = Bnobt();
        using var cur = tree.CreateCursor();
        Span<byte> key = stackalloc byte[8];
        AllocRecord.Write(key, hint, 0);
        if (!cur.Lookup(key, BtreeLookup.LessOrEqual))
        {
            return false;
        }
        uint s = AllocRecord.StartBlock(cur.Current), l = AllocRecord.BlockCount(cur.Current);
        ulong end = (ulong)s + l;
        if (end <= hint || end - hint < minLength)
        {
            return false;
        }
        fbno = s;
        flen = l;
        abno = hint;
        alen = (uint)Math.Min(maxLength, end - hint);
        return true;
    }

    /// <summary>
    /// Near allocation: walks the bnobt outwards from the hint (a bounded number of records each side) and
    /// takes the closest placement of the full length, or failing that the longest acceptable one.
    /// </summary>
    private bool FindNear(uint hint, uint minLength, uint maxLength, uint align, BusyView busy, out uint fbno, out uint flen, out uint abno, out uint alen)
    {
        fbno = flen = abno = alen = 0;
        var tree = Bnobt();
        using var cur = tree.CreateCursor();
        Span<byte> key = stackalloc byte[8];
        AllocRecord.Write(key, hint, 0);
        bool haveBest = false;
        bool bestFull = false;
        ulong bestDistance = ulong.MaxValue;
        uint bestLen = 0;
        void Consider(uint fs, uint fl, in BusyView busy, ref bool haveBest, ref bool bestFull, ref ulong bestDistance, ref uint bestLen,
            ref uint fbno, ref uint flen, ref uint abno, ref uint alen)
        {
            // With busy extents to avoid, the placement is inside the extent's longest piece that is not busy.
            uint s = fs, l = fl;
            if (busy.Any && !busy.LongestPiece(fs, fl, out s, out l))
            {
                return;
            }
            ulong end = (ulong)s + l;
            // Start as close to the hint as the extent allows, aligned.
            ulong want = maxLength;
            ulong start = Math.Clamp(hint, s, end > want ? Math.Max(s, end - want) : s);
            start = AlignUp((uint)start, align);
            if (start >= end)
            {
                return;
            }
            ulong len = Math.Min(want, end - start);
            if (len < minLength)
            {
                start = AlignUp(s, align);
                if (start >= end)
                {
                    return;
                }
                len = Math.Min(want, end - start);
                if (len < minLength)
                {
                    return;
                }
            }
            ulong distance = start > hint ? start - hint : hint - start;
            bool full = len >= maxLength;
            bool better = !haveBest
                || (full && !bestFull)
                || (full == bestFull && (full ? distance < bestDistance : len > bestLen || (len == bestLen && distance < bestDistance)));
            if (better)
            {
                haveBest = true;
                bestFull = full;
                bestDistance = distance;
                bestLen = (uint)len;
                fbno = fs;
                flen = fl;
                abno = (uint)start;
                alen = (uint)len;
            }
        }
        // Left side: the record at or before the hint, then further left.
        if (cur.Lookup(key, BtreeLookup.LessOrEqual))
        {
            for (int i = 0; i < NearSearchRecords; i++)
            {
                uint s = AllocRecord.StartBlock(cur.Current), l = AllocRecord.BlockCount(cur.Current);
                if (bestFull && (ulong)s + l <= hint && hint - ((ulong)s + l) > bestDistance)
                {
                    break;
                }
                Consider(s, l, busy, ref haveBest, ref bestFull, ref bestDistance, ref bestLen, ref fbno, ref flen, ref abno, ref alen);
                if (!cur.Decrement())
                {
                    break;
                }
            }
        }
        AllocRecord.Write(key, hint == uint.MaxValue ? hint : hint + 1, 0);
        if (cur.Lookup(key, BtreeLookup.GreaterOrEqual))
        {
            for (int i = 0; i < NearSearchRecords; i++)
            {
                uint s = AllocRecord.StartBlock(cur.Current), l = AllocRecord.BlockCount(cur.Current);
                if (bestFull && s > hint && s - hint > bestDistance)
                {
                    break;
                }
                Consider(s, l, busy, ref haveBest, ref bestFull, ref bestDistance, ref bestLen, ref fbno, ref flen, ref abno, ref alen);
                if (!cur.Increment())
                {
                    break;
                }
            }
        }
        return haveBest;
    }

    /// <summary>By size (cntbt): the smallest extent that holds the full aligned length, else the largest.</summary>
    private bool FindBySize(uint maxLength, uint minLength, uint align, BusyView busy, out uint fbno, out uint flen, out uint abno, out uint alen)
    {
        fbno = flen = abno = alen = 0;
        var tree = Cntbt();
        using var cur = tree.CreateCursor();
        Span<byte> key = stackalloc byte[8];
        ulong fit = (ulong)maxLength + align - 1;
        AllocRecord.Write(key, 0, (uint)Math.Min(fit, uint.MaxValue));
        if (busy.Any)
        {
            return FindBySizeAvoiding(cur, key, maxLength, minLength, align, busy, out fbno, out flen, out abno, out alen);
        }
        bool found = cur.Lookup(key, BtreeLookup.GreaterOrEqual) || cur.MoveLast();
        if (!found)
        {
            return false;
        }
        uint s = AllocRecord.StartBlock(cur.Current), l = AllocRecord.BlockCount(cur.Current);
        ulong end = (ulong)s + l;
        ulong start = AlignUp(s, align);
        if (start >= end)
        {
            return false;
        }
        ulong len = Math.Min(maxLength, end - start);
        if (len < minLength)
        {
            return false;
        }
        fbno = s;
        flen = l;
        abno = (uint)start;
        alen = (uint)len;
        return true;
    }

    /// <summary>How many cntbt records a by-size search avoiding busy extents looks at in each direction.</summary>
    private const int BusySearchRecords = 64;

    /// <summary>
    /// By size, avoiding busy extents: from the smallest extent that could hold the full length upwards, the first
    /// whose longest piece that is not busy holds it; failing that, from the largest extent downwards, the longest
    /// such piece of at least the minimum. A bounded number of records each way (a miss falls back to the plain
    /// search, which may take busy blocks).
    /// </summary>
    private static bool FindBySizeAvoiding(BtreeCursor<CntbtOps> cur, ReadOnlySpan<byte> key, uint maxLength, uint minLength, uint align, in BusyView busy,
        out uint fbno, out uint flen, out uint abno, out uint alen)
    {
        fbno = flen = abno = alen = 0;
        ulong bestLen = 0;
        for (int pass = 0; pass < 2; pass++)
        {
            bool ok = pass == 0 ? cur.Lookup(key, BtreeLookup.GreaterOrEqual) : cur.MoveLast();
            for (int i = 0; ok && i < BusySearchRecords; i++, ok = pass == 0 ? cur.Increment() : cur.Decrement())
            {
                uint s = AllocRecord.StartBlock(cur.Current), l = AllocRecord.BlockCount(cur.Current);
                if (l <= bestLen || !busy.LongestPiece(s, l, out uint ps, out uint pl))
                {
                    continue;
                }
                ulong end = (ulong)ps + pl;
                ulong start = AlignUp(ps, align);
                if (start >= end)
                {
                    continue;
                }
                ulong len = Math.Min(maxLength, end - start);
                if (len < minLength || len <= bestLen)
                {
                    continue;
                }
                fbno = s;
                flen = l;
                abno = (uint)start;
                alen = (uint)len;
                bestLen = len;
                if (len >= maxLength)
                {
                    return true;
                }
            }
        }
        return bestLen > 0;
    }

    /// <summary>
    /// The busy extents one allocation avoids in this AG: the engine's (<see cref="WriteEngine.Busy"/>: extents freed
    /// by records not durable yet) and the transaction's own frees (busy from the moment they are made, as the
    /// kernel's). Default: nothing to avoid.
    /// </summary>
    private readonly struct BusyView
    {
        /// <summary>Pieces a free extent is cut into at most before the rest of it counts as busy (bounds the work).</summary>
        private const int MaxSteps = 64;

        private readonly AgSpace? space;
        private readonly JournalCoverage? coverage;
        private readonly List<(long Daddr, long LengthBB)>? own;
        private readonly long syncedEnd;

        private BusyView(AgSpace space, JournalCoverage? coverage, List<(long, long)>? own, long syncedEnd)
        {
            this.space = space;
            this.coverage = coverage;
            this.own = own;
            this.syncedEnd = syncedEnd;
        }

        public bool Any => space is not null;

        public static BusyView For(WriteTransaction tx, AgSpace space)
        {
            WriteEngine engine = tx.Engine;
            long synced = engine.Journal.SyncedEnd;
            JournalCoverage? coverage = engine.Busy.AnyBusy(synced) ? engine.Busy : null;
            List<(long, long)>? own = tx.FreedExtents is { Count: > 0 } list ? list : null;
            return coverage is null && own is null ? default : new BusyView(space, coverage, own, synced);
        }

        /// <summary>The longest piece of free extent [<paramref name="s"/>, +<paramref name="l"/>) that no busy range
        /// overlaps; false when all of it is busy.</summary>
        public bool LongestPiece(uint s, uint l, out uint pieceStart, out uint pieceLength)
        {
            XfsGeometry geo = space!.geo;
            int blockBB = geo.BasicBlocksPerBlock;
            long agDaddr = geo.AgBlockToDaddr(space.AgNumber, 0);
            ulong end = (ulong)s + l;
            ulong p = s;
            pieceStart = pieceLength = 0;
            for (int step = 0; step < MaxSteps && p < end; step++)
            {
                // The first busy range at or after p, from either source, in AG blocks.
                ulong busyStart = end, busyEnd = end;
                long from = agDaddr + (long)p * blockBB, to = agDaddr + (long)end * blockBB;
                if (coverage is not null && coverage.NextBusy(from, to, syncedEnd, out long bs, out long be))
                {
                    busyStart = (ulong)Math.Max((long)p, (bs - agDaddr) / blockBB);
                    busyEnd = (ulong)Math.Min((long)end, (be - agDaddr + blockBB - 1) / blockBB);
                }
                if (own is not null)
                {
                    foreach (var (daddr, lengthBB) in own)
                    {
                        if (daddr < to && daddr + lengthBB > from)
                        {
                            ulong os = (ulong)Math.Max((long)p, (daddr - agDaddr) / blockBB);
                            if (os < busyStart)
                            {
                                busyStart = os;
                                busyEnd = (ulong)Math.Min((long)end, (daddr + lengthBB - agDaddr + blockBB - 1) / blockBB);
                            }
                        }
                    }
                }
                if (busyStart - p > pieceLength)
                {
                    pieceStart = (uint)p;
                    pieceLength = (uint)(busyStart - p);
                }
                if (busyStart >= end)
                {
                    return pieceLength > 0;
                }
                p = Math.Max(busyEnd, busyStart + 1);
            }
            return pieceLength > 0;
        }
    }

    /// <summary>Carves [abno, +alen) out of the free extent [fbno, +flen): bnobt and cntbt keep the leftovers.</summary>
    private void RemoveFree(uint fbno, uint flen, uint abno, uint alen)
    {
        if (abno < fbno || (ulong)abno + alen > (ulong)fbno + flen || alen == 0)
        {
            throw new InvalidOperationException($"allocation [{abno}, +{alen}) outside the free extent [{fbno}, +{flen})");
        }
        uint leftLen = abno - fbno;
        uint rightStart = abno + alen;
        uint rightLen = (uint)((ulong)fbno + flen - rightStart);
        Span<byte> rec = stackalloc byte[8];

        var bno = Bnobt();
        using (var cur = bno.CreateCursor())
        {
            AllocRecord.Write(rec, fbno, flen);
            if (!cur.Lookup(rec, BtreeLookup.Equal) || AllocRecord.BlockCount(cur.Current) != flen)
            {
                throw new CorruptionException("bnobt", geo.AgBlockToDaddr(AgNumber, 0), $"AG {AgNumber}: free extent [{fbno}, +{flen}) is not in the bnobt");
            }
            if (leftLen > 0)
            {
                AllocRecord.Write(rec, fbno, leftLen);
                cur.Update(rec);
                if (rightLen > 0)
                {
                    AllocRecord.Write(rec, rightStart, rightLen);
                    InsertOrCorrupt(cur, rec, "bnobt");
                }
            }
            else if (rightLen > 0)
            {
                AllocRecord.Write(rec, rightStart, rightLen);
                cur.Update(rec);
            }
            else
            {
                cur.Delete();
            }
        }
        var cnt = Cntbt();
        using (var cur = cnt.CreateCursor())
        {
            AllocRecord.Write(rec, fbno, flen);
            if (!cur.Lookup(rec, BtreeLookup.Equal))
            {
                throw new CorruptionException("cntbt", geo.AgBlockToDaddr(AgNumber, 0), $"AG {AgNumber}: free extent [{fbno}, +{flen}) is not in the cntbt");
            }
            cur.Delete();
            if (leftLen > 0)
            {
                AllocRecord.Write(rec, fbno, leftLen);
                InsertOrCorrupt(cur, rec, "cntbt");
            }
            if (rightLen > 0)
            {
                AllocRecord.Write(rec, rightStart, rightLen);
                InsertOrCorrupt(cur, rec, "cntbt");
            }
        }
        AddField(Format.Agf.OffsetFreeBlocks, -(long)alen);
        UpdateLongest();
    }

    /// <summary>Returns [agbno, +length) to free space, merging with free neighbours on both sides.</summary>
    private void InsertFree(uint agbno, uint length)
    {
        if (length == 0 || agbno < geo.FirstFreeBlock || (ulong)agbno + length > agLength)
        {
            throw new XfsWriteException(WriteErrorKind.InvalidArgument, $"{tx.Operation}: free of [{agbno}, +{length}) outside AG {AgNumber}'s usable blocks");
        }
        Span<byte> rec = stackalloc byte[8];
        uint leftStart = 0, leftLen = 0, rightStart = 0, rightLen = 0;
        var bno = Bnobt();
        using (var cur = bno.CreateCursor())
        {
            AllocRecord.Write(rec, agbno, 0);
            if (cur.Lookup(rec, BtreeLookup.LessOrEqual))
            {
                uint s = AllocRecord.StartBlock(cur.Current), l = AllocRecord.BlockCount(cur.Current);
                if ((ulong)s + l > agbno)
                {
                    throw new CorruptionException("bnobt", geo.AgBlockToDaddr(AgNumber, 0), $"AG {AgNumber}: freeing [{agbno}, +{length}) overlaps free extent [{s}, +{l})");
                }
                if ((ulong)s + l == agbno)
                {
                    leftStart = s;
                    leftLen = l;
                }
            }
            AllocRecord.Write(rec, agbno, 0);
            if (cur.Lookup(rec, BtreeLookup.GreaterOrEqual))
            {
                uint s = AllocRecord.StartBlock(cur.Current), l = AllocRecord.BlockCount(cur.Current);
                if (s < (ulong)agbno + length)
                {
                    throw new CorruptionException("bnobt", geo.AgBlockToDaddr(AgNumber, 0), $"AG {AgNumber}: freeing [{agbno}, +{length}) overlaps free extent [{s}, +{l})");
                }
                if (s == (ulong)agbno + length)
                {
                    rightStart = s;
                    rightLen = l;
                }
            }
            uint newStart = leftLen > 0 ? leftStart : agbno;
            uint newLen = leftLen + length + rightLen;
            if (leftLen > 0)
            {
                AllocRecord.Write(rec, leftStart, 0);
                cur.Lookup(rec, BtreeLookup.Equal);
                AllocRecord.Write(rec, newStart, newLen);
                cur.Update(rec);
                if (rightLen > 0)
                {
                    AllocRecord.Write(rec, rightStart, 0);
                    if (!cur.Lookup(rec, BtreeLookup.Equal))
                    {
                        throw new InvalidOperationException($"bnobt record {rightStart} vanished");
                    }
                    cur.Delete();
                }
            }
            else if (rightLen > 0)
            {
                AllocRecord.Write(rec, rightStart, 0);
                if (!cur.Lookup(rec, BtreeLookup.Equal))
                {
                    throw new InvalidOperationException($"bnobt record {rightStart} vanished");
                }
                AllocRecord.Write(rec, newStart, newLen);
                cur.Update(rec);
            }
            else
            {
                AllocRecord.Write(rec, newStart, newLen);
                InsertOrCorrupt(cur, rec, "bnobt");
            }

            var cnt = Cntbt();
            using var c2 = cnt.CreateCursor();
            if (leftLen > 0)
            {
                DeleteExact(c2, leftStart, leftLen);
            }
            if (rightLen > 0)
            {
                DeleteExact(c2, rightStart, rightLen);
            }
            AllocRecord.Write(rec, newStart, newLen);
            InsertOrCorrupt(c2, rec, "cntbt");
        }
        AddField(Format.Agf.OffsetFreeBlocks, length);
        UpdateLongest();
        tx.NoteFreed(AgNumber, agbno, length); // busy until this record is durable
    }

    private void DeleteExact(BtreeCursor<CntbtOps> cur, uint start, uint length)
    {
        Span<byte> rec = stackalloc byte[8];
        AllocRecord.Write(rec, start, length);
        if (!cur.Lookup(rec, BtreeLookup.Equal))
        {
            throw new CorruptionException("cntbt", geo.AgBlockToDaddr(AgNumber, 0), $"AG {AgNumber}: free extent [{start}, +{length}) is in the bnobt but not in the cntbt");
        }
        cur.Delete();
    }

    private void InsertOrCorrupt<TOps>(BtreeCursor<TOps> cur, ReadOnlySpan<byte> rec, string tree) where TOps : struct, IBtreeOps
    {
        if (!cur.Insert(rec))
        {
            throw new CorruptionException(tree, geo.AgBlockToDaddr(AgNumber, 0), $"AG {AgNumber}: a record with the key of [{AllocRecord.StartBlock(rec)}, +{AllocRecord.BlockCount(rec)}) exists");
        }
    }

    private void UpdateLongest()
    {
        var cnt = Cntbt();
        using var cur = cnt.CreateCursor();
        uint longest = cur.MoveLast() ? AllocRecord.BlockCount(cur.Current) : 0;
        if (Longest != longest)
        {
            SetField(Format.Agf.OffsetLongest, longest);
        }
    }

    /// <summary>Frees an extent of file data (free list fixed first, then merged into bnobt and cntbt).</summary>
    public void FreeExtent(uint agbno, uint length)
    {
        FixFreeList();
        InsertFree(agbno, length);
    }

    /// <summary>Frees an extent that held metadata: its buffers are invalidated in this transaction first
    /// (<see cref="WriteTransaction.InvalidateFreedBlocks"/>), then as <see cref="FreeExtent"/>.</summary>
    public void FreeMetadataExtent(uint agbno, uint length)
    {
        tx.InvalidateFreedBlocks(AgNumber, agbno, length);
        FreeExtent(agbno, length);
    }

    // ------------------------------------------------------------------ rmap

    /// <summary>An rmap change made by a caller: the free list is fixed first (splits draw from it). Nothing at all on a
    /// filesystem without an rmapbt (the kernel's xfs_rmap_update_is_needed: no deferred rmap work, no free-list fix
    /// for it, no hook event).</summary>
    public void RmapChange(RmapUpdateKind kind, RmapRecord record, bool shared)
    {
        if (!HasRmapbt)
        {
            return;
        }
        FixFreeList();
        RmapEdit(kind, record, shared);
    }

    /// <summary>Edits the on-disk rmapbt through <see cref="RmapEditor"/> and queues the change for the hooks;
    /// nothing at all with <paramref name="skip"/> (upstream's XFS_RMAP_OINFO_SKIP_UPDATE owner, passed per call) or
    /// when the filesystem has no rmapbt (nothing to edit, and no hook can be registered on such a filesystem).</summary>
    private void RmapEdit(RmapUpdateKind kind, RmapRecord record, bool shared, bool skip = false)
    {
        if (skip || !HasRmapbt)
        {
            return;
        }
        if ((ulong)record.StartBlock + record.BlockCount > agLength)
        {
            throw new XfsWriteException(WriteErrorKind.InvalidArgument, $"{tx.Operation}: rmap {record} outside AG {AgNumber}");
        }
        var editor = new RmapEditor(Rmapbt());
        try
        {
            switch (kind)
            {
                case RmapUpdateKind.Map:
                    if (shared) editor.MapShared(record); else editor.Map(record);
                    break;
                case RmapUpdateKind.Unmap:
                    if (shared) editor.UnmapShared(record); else editor.Unmap(record);
                    break;
                default:
                    if (shared) editor.ConvertShared(record); else editor.Convert(record);
                    break;
            }
        }
        catch (RmapOperationException e)
        {
            // The rmapbt disagrees with the change the rest of the metadata implies (a record missing, overlapping or
            // different): the AG's rmapbt is damaged. Sick, so allocation avoids it until an online repair rebuilds it.
            string reason = $"rmapbt: {e.Message}";
            tx.Engine.Ag(AgNumber).MarkSick(reason);
            throw new XfsWriteException(WriteErrorKind.Corrupt, $"{tx.Operation}: AG {AgNumber} is corrupt ({reason}); the AG is marked sick", e) { AgNumber = AgNumber };
        }
        finally
        {
            editor.Cursor.Dispose();
        }
        tx.QueueHook(AgNumber, kind, record, shared);
    }
}
