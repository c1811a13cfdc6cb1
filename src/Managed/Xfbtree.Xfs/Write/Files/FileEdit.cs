using Xfbtree.Xfs.Format;
using Xfbtree.Xfs.Trees;
using Xfbtree.Xfs.Write.Engine;

namespace Xfbtree.Xfs.Write.Files;

/// <summary>How <see cref="FileEdit.Modify"/> treats each block of its range.</summary>
internal enum ModifyMode
{
    /// <summary>New bytes: holes allocated, unwritten converted, shared blocks copied, written blocks overwritten.</summary>
    Data,
    /// <summary>Zeros where the file has written data (holes and unwritten ranges already read as zeros).</summary>
    Zero,
    /// <summary>Shared written blocks get private copies of their own content; nothing else changes.</summary>
    Unshare,
}

/// <summary>
/// One operation's edit of one inode's data (or attr) fork inside a transaction: the block-level primitives
/// (map, unmap, convert, copy-on-write, data writes) that keep the extent list, the rmapbt, the refcountbt,
/// free space and di_nblocks in step. <see cref="Finish"/> writes the fork back and logs the inode.
/// </summary>
internal sealed class FileEdit
{
    readonly WriteTransaction _tx;
    readonly XfsGeometry _geo;

    internal FileEdit(WriteTransaction tx, IncoreInode inode, FileFork fork)
    {
        _tx = tx;
        Inode = inode;
        Fork = fork;
        _geo = tx.Engine.Geometry;
        BlockSize = _geo.BlockSize;
    }

    /// <summary>Locks (unless done) and checks a regular file (and the handle's generation when given), then loads its data fork.</summary>
    public static FileEdit Begin(WriteTransaction tx, IncoreInode inode, bool alreadyLocked = false, uint? generation = null)
    {
        if (!alreadyLocked) tx.LockInodes(inode);
        FileOperations.CheckGeneration(inode, generation);
        FileOperations.CheckRegular(inode);
        return new FileEdit(tx, inode, FileFork.Load(tx, inode, attr: false));
    }

    public IncoreInode Inode { get; }
    public FileFork Fork { get; }
    public int BlockSize { get; }
    ExtentList Extents => Fork.Extents;
    byte[] Core => Inode.Core;
    /// <summary>True when the fork's mapping changed (the fork must be stored).</summary>
    public bool MappingChanged { get; private set; }

    /// <summary>Reflink inode: data-fork rmap changes use the _shared variants and unmaps go through the refcountbt.</summary>
    public bool Reflink => !Fork.Attr && InodeFields.IsReflink(Core);

    /// <summary>The fork's blocks are metadata (attribute blocks; a directory's or symlink's blocks): freed ones
    /// have their buffers invalidated.</summary>
    bool HoldsMetadata => Fork.Attr || (InodeFields.Mode(Core) & Namespace.InodeCore.ModeTypeMask) != Namespace.InodeCore.ModeRegular;

    public long Size
    {
        get => InodeFields.Size(Core);
        set => InodeFields.SetSize(Core, value);
    }

    public void Touch() => InodeFields.Touch(Core, DateTimeOffset.UtcNow);

    /// <summary>Clears set-user-ID (and set-group-ID with group-execute) of a regular file: see
    /// <see cref="InodeFields.KillSuidGid"/>.</summary>
    public void KillSuidGid() => InodeFields.KillSuidGid(Core);

    public void SetReflinkFlag() => InodeFields.SetFlags2(Core, InodeFields.Flags2(Core) | InodeFields.Flag2Reflink);

    /// <summary>Writes the fork back (when its mapping changed) and logs the inode.</summary>
    public void Finish()
    {
        if (MappingChanged) Fork.Store();
        _tx.LogInode(Inode);
    }

    public (uint Agno, uint Agbno) Split(ulong fsbno) => (_geo.FsbToAgno(fsbno), _geo.FsbToAgbno(fsbno));

    RmapRecord Rmap(in BmbtExtent e)
    {
        ulong raw = e.StartOffset | (Fork.Attr ? RmapbtOps.AttrForkFlag : 0) | (e.Unwritten ? RmapbtOps.UnwrittenFlag : 0);
        return new RmapRecord(_geo.FsbToAgbno(e.StartBlock), e.BlockCount, Inode.Ino, raw);
    }

    // ------------------------------------------------------------------ space check

    /// <summary>
    /// Fails with NoSpace before anything changes unless the blocks this edit may allocate are available: holes
    /// in [start, end) (when allocating), shared blocks there (copy-on-write), and bmbt growth.
    /// </summary>
    public void EnsureSpaceFor(long start, long end, bool allocateHoles, long extra = 0, int extraRecords = 0)
    {
        long blocks = 0;
        int records = extraRecords;
        if (end > start)
        {
            ulong first = (ulong)(start / BlockSize), last = (ulong)((end - 1) / BlockSize);
            ulong total = last - first + 1;
            var pieces = Extents.MappingsIn(first, total);
            ulong mapped = 0;
            foreach (var p in pieces)
            {
                mapped += p.BlockCount;
                if (Reflink && IsShared(p)) blocks += p.BlockCount;
            }
            if (allocateHoles) blocks += (long)(total - mapped);
            records += 2 * pieces.Count + 2;
        }
        blocks += (extra + BlockSize - 1) / BlockSize;
        blocks += Fork.WorstCaseNewBmbtBlocks(records);
        if (blocks > 0) _tx.EnsureSpace(blocks, AllocationPurpose.FileData);
    }

    bool IsShared(in BmbtExtent p)
    {
        var (agno, agbno) = Split(p.StartBlock);
        FileOperations.LockAg(_tx, agno);
        return _tx.IsShared(agno, agbno, p.BlockCount);
    }

    // ------------------------------------------------------------------ mapping primitives

    /// <summary>Maps a piece over a hole: rmap map, list insert (merging), di_nblocks.</summary>
    public void Map(in BmbtExtent piece)
    {
        var (agno, _) = Split(piece.StartBlock);
        FileOperations.LockAg(_tx, agno);
        _tx.RmapMap(agno, Rmap(piece), Reflink);
        Extents.Insert(piece);
        InodeFields.SetNBlocks(Core, InodeFields.NBlocks(Core) + piece.BlockCount);
        MappingChanged = true;
    }

    /// <summary>Unmaps every mapped block of [first, +count) and frees it (through the refcountbt for a reflink inode).</summary>
    public void Unmap(ulong first, ulong count)
    {
        if (count == 0) return;
        foreach (var piece in Extents.Remove(first, count))
        {
            MappingChanged = true;
            ReleasePiece(piece);
        }
    }

    /// <summary>Rmap unmap and free (or refcount decrement) of a piece already removed from the list.</summary>
    void ReleasePiece(in BmbtExtent piece)
    {
        var (agno, agbno) = Split(piece.StartBlock);
        FileOperations.LockAg(_tx, agno);
        _tx.RmapUnmap(agno, Rmap(piece), Reflink);
        if (Reflink)
        {
            foreach (var (start, length) in _tx.RefcountDecrement(agno, agbno, piece.BlockCount)) _tx.Free(agno, start, length);
        }
        else if (HoldsMetadata)
        {
            _tx.FreeMetadata(agno, agbno, piece.BlockCount);
        }
        else
        {
            _tx.Free(agno, agbno, piece.BlockCount);
        }
        InodeFields.SetNBlocks(Core, InodeFields.NBlocks(Core) - piece.BlockCount);
    }

    /// <summary>
    /// Moves the mapping <paramref name="piece"/> (exactly the part of one extent) to file block
    /// <paramref name="newOffset"/> (collapse and insert range): the blocks, their state, di_nblocks and the
    /// refcounts stay; the extent record and the rmap record change offset. The destination must be a hole once the
    /// piece has left its place: otherwise Busy (another operation mapped blocks there between two steps).
    /// </summary>
    public void Remap(in BmbtExtent piece, ulong newOffset)
    {
        var removed = Extents.Remove(piece.StartOffset, piece.BlockCount);
        if (removed.Count != 1 || removed[0] != piece)
            throw new InvalidOperationException($"inode {Inode.Ino}: {piece} is not one mapping of the fork");
        var moved = piece with { StartOffset = newOffset };
        if (Extents.MappingsIn(newOffset, piece.BlockCount).Count != 0)
            throw new XfsWriteException(WriteErrorKind.Busy, $"inode {Inode.Ino}: file blocks [{newOffset}, {newOffset + piece.BlockCount}) were mapped by another operation while the range shift ran");
        var (agno, _) = Split(piece.StartBlock);
        FileOperations.LockAg(_tx, agno);
        _tx.RmapUnmap(agno, Rmap(piece), Reflink);
        _tx.RmapMap(agno, Rmap(moved), Reflink);
        Extents.Insert(moved);
        MappingChanged = true;
    }

    /// <summary>Allocation hint: just past the physical end of the mapping before <paramref name="fileBlock"/> (as
    /// xfs_bmap_adjacent), else the inode's own block.</summary>
    ulong Hint(ulong fileBlock)
    {
        int i = Extents.IndexAtOrAfter(fileBlock);
        if (i > 0)
        {
            var left = Extents[i - 1];
            ulong end = left.StartBlock + left.BlockCount;
            ulong gap = fileBlock - (left.StartOffset + left.BlockCount);
            if (gap < 1024 && _geo.IsValidExtent(end + gap, 1)) return end + gap;
            if (_geo.IsValidExtent(end, 1)) return end;
            return left.StartBlock;
        }
        uint agno = _geo.InoToAgno(Inode.Ino);
        return _geo.AgbToFsb(agno, _geo.AginoToAgbno(_geo.InoToAgino(Inode.Ino)));
    }

    AllocatedExtent Allocate(ulong hint, ulong wanted)
    {
        uint max = (uint)Math.Min(wanted, ExtentList.MaxExtentLength);
        return _tx.Allocate(new AllocationRequest(hint, 1, max, AllocationPurpose.FileData));
    }

    /// <summary>Unwritten extents over the holes of file blocks [first, stop), at most
    /// <paramref name="maxAllocations"/> allocations; returns the block where it stopped (stop when done).</summary>
    public ulong Preallocate(ulong first, ulong stop, int maxAllocations)
    {
        ulong p = first;
        int allocations = 0;
        while (p < stop)
        {
            if (Extents.Lookup(p, out var m, out ulong hole))
            {
                p += m.BlockCount;
                continue;
            }
            ulong n = Math.Min(hole, stop - p);
            while (n > 0)
            {
                if (allocations++ == maxAllocations) return p;
                var got = Allocate(Hint(p), n);
                Map(new BmbtExtent(p, got.Fsbno, got.Length, Unwritten: true));
                p += got.Length;
                n -= got.Length;
            }
        }
        return stop;
    }

    /// <summary>
    /// Zeroes [oldSize, min(limit, end of its block)) when the old EOF block holds written data: bytes past EOF
    /// must read as zeros once the size grows (the kernel's post-EOF zeroing).
    /// </summary>
    public void ZeroEofTail(long oldSize, long limit)
    {
        if (oldSize % BlockSize == 0) return;
        long blockEnd = (oldSize / BlockSize + 1) * BlockSize;
        Modify(oldSize, Math.Min(limit, blockEnd), null, ModifyMode.Zero);
    }

    /// <summary>
    /// Makes every written block of file blocks [RoundUp(<paramref name="oldSize"/>), RoundUp(<paramref name="limit"/>))
    /// read as zeros, before the size grows from <paramref name="oldSize"/> over them (with <see cref="ZeroEofTail"/>
    /// for the old EOF block, the kernel zeroes the whole gap [old EOF, new offset) the same way). Written blocks past
    /// EOF are left by a crash between the steps of a truncate, punch, reflink or range shift; once the size grows
    /// over them their stale data would show. A private run becomes unwritten (it stays allocated, as preallocation);
    /// a shared run (reflink inode) is unmapped, its other owners keeping it. Unwritten runs stay as they are. Stops
    /// after <paramref name="maxRuns"/> runs; returns whether no written block is left in the range.
    /// </summary>
    public bool HidePastEofData(long oldSize, long limit, int maxRuns = int.MaxValue)
    {
        var (first, stop) = PastEofBlocks(oldSize, limit);
        int runs = 0;
        for (int i = Extents.IndexAtOrAfter(first); i < Extents.Count && Extents[i].StartOffset < stop;)
        {
            var e = Extents[i];
            if (e.Unwritten)
            {
                i++;
                continue;
            }
            ulong from = Math.Max(e.StartOffset, first), to = Math.Min(e.StartOffset + e.BlockCount, stop);
            var run = new BmbtExtent(from, e.StartBlock + (from - e.StartOffset), (uint)(to - from), Unwritten: false);
            foreach (var (sub, shared) in SplitShared(run))
            {
                if (runs++ == maxRuns) return false;
                if (shared)
                {
                    Unmap(sub.StartOffset, sub.BlockCount);
                    continue;
                }
                Extents.SetState(sub.StartOffset, sub.BlockCount, unwritten: true);
                var (agno, _) = Split(sub.StartBlock);
                FileOperations.LockAg(_tx, agno);
                _tx.RmapConvert(agno, Rmap(sub with { Unwritten = true }), Reflink);
                MappingChanged = true;
            }
            i = Extents.IndexAtOrAfter(to);
        }
        return true;
    }

    /// <summary>Bmbt records <see cref="HidePastEofData"/> may add over the same range: each run it changes can split
    /// its extent in three (counted up to <paramref name="maxRuns"/> runs, so the count stays bounded).</summary>
    public int PastEofDataRecords(long oldSize, long limit, int maxRuns = int.MaxValue)
    {
        var (first, stop) = PastEofBlocks(oldSize, limit);
        int runs = 0;
        for (int i = Extents.IndexAtOrAfter(first); i < Extents.Count && Extents[i].StartOffset < stop && runs < maxRuns; i++)
        {
            var e = Extents[i];
            if (e.Unwritten) continue;
            ulong from = Math.Max(e.StartOffset, first), to = Math.Min(e.StartOffset + e.BlockCount, stop);
            runs += Reflink ? SplitShared(new BmbtExtent(from, e.StartBlock + (from - e.StartOffset), (uint)(to - from), Unwritten: false)).Count : 1;
        }
        return 2 * Math.Min(runs, maxRuns);
    }

    /// <summary>Written extents (not counting a reflink inode's shared splits) among the file blocks past
    /// <paramref name="oldSize"/> up to <paramref name="limit"/>, counted up to <paramref name="max"/>.</summary>
    internal static int WrittenExtentsPastEof(ExtentList extents, long oldSize, long limit, int blockSize, int max)
    {
        ulong first = (ulong)((oldSize + blockSize - 1) / blockSize), stop = (ulong)((limit + blockSize - 1) / blockSize);
        int count = 0;
        if (first >= stop) return 0;
        for (int i = extents.IndexAtOrAfter(first); i < extents.Count && extents[i].StartOffset < stop && count < max; i++)
        {
            if (!extents[i].Unwritten) count++;
        }
        return count;
    }

    /// <summary>The whole file blocks past the EOF block of <paramref name="oldSize"/> that bytes below
    /// <paramref name="limit"/> reach ((0, 0) when none).</summary>
    (ulong First, ulong Stop) PastEofBlocks(long oldSize, long limit)
    {
        ulong first = (ulong)((oldSize + BlockSize - 1) / BlockSize), stop = (ulong)((limit + BlockSize - 1) / BlockSize);
        return first < stop ? (first, stop) : (0, 0);
    }

    /// <summary>
    /// Applies <paramref name="mode"/> to the bytes [start, end): new data (or zeros) for every block of the range,
    /// block by block run: holes allocated (Data only), unwritten runs written then converted, shared runs copied
    /// on write, written runs overwritten in place with read-modify-write of partial blocks.
    /// </summary>
    public void Modify(long start, long end, byte[]? data, ModifyMode mode)
    {
        if (end <= start) return;
        ulong first = (ulong)(start / BlockSize), stop = (ulong)((end - 1) / BlockSize) + 1;
        ulong p = first;
        while (p < stop)
        {
            if (!Extents.Lookup(p, out var m, out ulong hole))
            {
                ulong n = Math.Min(hole, stop - p);
                if (mode == ModifyMode.Data)
                {
                    ulong q = p, left = n;
                    while (left > 0)
                    {
                        var got = Allocate(Hint(q), left);
                        var buf = Compose(q, got.Length, start, end, data, baseData: null);
                        _tx.WriteRentedData(got.Fsbno, buf, checked((int)got.Length * BlockSize), fresh: true);
                        Map(new BmbtExtent(q, got.Fsbno, got.Length, Unwritten: false));
                        q += got.Length;
                        left -= got.Length;
                    }
                }
                p += n;
                continue;
            }
            var run = m with { BlockCount = (uint)Math.Min(m.BlockCount, stop - p) };
            foreach (var (sub, shared) in SplitShared(run))
            {
                if (shared) CopyOnWrite(sub, start, end, data, mode);
                else if (mode == ModifyMode.Unshare) { }
                else if (sub.Unwritten) WriteUnwritten(sub, start, end, data, mode);
                else OverwriteInPlace(sub, start, end, data);
            }
            p += run.BlockCount;
        }
    }

    /// <summary>Splits a mapped run into sub-runs that are wholly shared or wholly private (reflink inodes only).</summary>
    List<(BmbtExtent Run, bool Shared)> SplitShared(in BmbtExtent run)
    {
        var result = new List<(BmbtExtent, bool)>();
        if (!Reflink || !IsShared(run))
        {
            result.Add((run, false));
            return result;
        }
        ulong i = 0;
        while (i < run.BlockCount)
        {
            bool shared = IsShared(new BmbtExtent(run.StartOffset + i, run.StartBlock + i, 1, run.Unwritten));
            ulong j = i + 1;
            while (j < run.BlockCount && IsShared(new BmbtExtent(run.StartOffset + j, run.StartBlock + j, 1, run.Unwritten)) == shared) j++;
            result.Add((new BmbtExtent(run.StartOffset + i, run.StartBlock + i, (uint)(j - i), run.Unwritten), shared));
            i = j;
        }
        return result;
    }

    /// <summary>
    /// The new content of file blocks [fileBlock, +count): <paramref name="baseData"/> (or zeros) overlaid with the
    /// bytes of [start, end) from <paramref name="data"/> (or zeros when null). The result is an array of the
    /// transaction's (<see cref="WriteTransaction.RentData"/>; <paramref name="baseData"/> must be one too), whose
    /// first count blocks are the content.
    /// </summary>
    byte[] Compose(ulong fileBlock, ulong count, long start, long end, byte[]? data, byte[]? baseData)
    {
        int length = checked((int)count * BlockSize);
        long bufStart = (long)fileBlock * BlockSize, bufEnd = bufStart + length;
        long from = Math.Max(bufStart, start), to = Math.Min(bufEnd, end);
        var buf = baseData;
        if (buf is null)
        {
            // Zeros only around the new bytes (a 1 MiB write would otherwise clear the whole MiB, then copy over it).
            buf = _tx.RentData(length, zeroed: false);
            int head = (int)Math.Clamp(from - bufStart, 0, length), tail = (int)Math.Clamp(to - bufStart, head, length);
            buf.AsSpan(0, head).Clear();
            buf.AsSpan(tail, length - tail).Clear();
        }
        if (from < to)
        {
            var target = buf.AsSpan((int)(from - bufStart), (int)(to - from));
            if (data is null) target.Clear();
            else data.AsSpan((int)(from - start), (int)(to - from)).CopyTo(target);
        }
        return buf;
    }

    /// <summary>Reads the current content of a mapped run (zeros when unwritten) as this transaction sees it (an
    /// earlier step of the same operation may have written it).</summary>
    byte[] ReadRun(in BmbtExtent run)
    {
        int length = checked((int)run.BlockCount * BlockSize);
        var buf = _tx.RentData(length, zeroed: run.Unwritten);
        if (!run.Unwritten) _tx.ReadData(run.StartBlock, buf.AsSpan(0, length));
        return buf;
    }

    void OverwriteInPlace(in BmbtExtent run, long start, long end, byte[]? data)
    {
        long runStart = (long)run.StartOffset * BlockSize, runEnd = runStart + (long)run.BlockCount * BlockSize;
        // Read-modify-write only when the range covers the run partially.
        byte[]? baseData = start > runStart || end < runEnd ? ReadRun(run) : null;
        _tx.WriteRentedData(run.StartBlock, Compose(run.StartOffset, run.BlockCount, start, end, data, baseData), checked((int)run.BlockCount * BlockSize));
    }

    void WriteUnwritten(in BmbtExtent run, long start, long end, byte[]? data, ModifyMode mode)
    {
        if (mode == ModifyMode.Zero) return; // already reads as zeros
        // Data first (zeros around the new bytes), then the flip to written.
        _tx.WriteRentedData(run.StartBlock, Compose(run.StartOffset, run.BlockCount, start, end, data, baseData: null), checked((int)run.BlockCount * BlockSize), fresh: true);
        Extents.SetState(run.StartOffset, run.BlockCount, unwritten: false);
        var (agno, _) = Split(run.StartBlock);
        FileOperations.LockAg(_tx, agno);
        _tx.RmapConvert(agno, Rmap(run with { Unwritten = false }), Reflink);
        MappingChanged = true;
    }

    /// <summary>Copy-on-write of a shared run: new blocks with the old content overlaid by the new bytes, the old
    /// mapping unmapped (refcount dropped, blocks that reach zero freed), the new one mapped written.</summary>
    void CopyOnWrite(in BmbtExtent run, long start, long end, byte[]? data, ModifyMode mode)
    {
        if (run.Unwritten && mode != ModifyMode.Data) return; // zeros stay zeros; unshare leaves unwritten blocks alone
        ulong done = 0;
        while (done < run.BlockCount)
        {
            ulong left = run.BlockCount - done;
            var old = new BmbtExtent(run.StartOffset + done, run.StartBlock + done, (uint)left, run.Unwritten);
            var got = Allocate(old.StartBlock + old.BlockCount, left);
            old = old with { BlockCount = got.Length };
            byte[] content = ReadRun(old);
            if (mode != ModifyMode.Unshare) content = Compose(old.StartOffset, old.BlockCount, start, end, data, content);
            _tx.WriteRentedData(got.Fsbno, content, checked((int)got.Length * BlockSize), fresh: true);
            Extents.Remove(old.StartOffset, old.BlockCount);
            MappingChanged = true;
            ReleasePiece(old);
            Map(new BmbtExtent(old.StartOffset, got.Fsbno, got.Length, Unwritten: false));
            done += got.Length;
        }
    }
}
