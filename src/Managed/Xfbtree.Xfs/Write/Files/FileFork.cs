using System.Buffers.Binary;
using Xfbtree.Btree;
using Xfbtree.Buffers;
using Xfbtree.Xfs.Format;
using Xfbtree.Xfs.Trees;
using Xfbtree.Xfs.Write.Engine;

namespace Xfbtree.Xfs.Write.Files;

/// <summary>
/// One fork of a locked inode inside a transaction: its extents read into an <see cref="ExtentList"/> (from the
/// packed records of an extents-format fork, or from the leaves of its bmbt), edited in memory by the operation,
/// then written back by <see cref="Store"/> in the format the kernel requires for the new count: extents when the
/// records fit the fork's literal area, btree otherwise (conversions both ways, bmbt blocks owned by the inode with
/// BMBT-flagged rmaps, counted in di_nblocks). The caller adjusts di_nblocks for data blocks itself.
/// </summary>
internal sealed class FileFork
{
    readonly WriteTransaction _tx;
    readonly XfsGeometry _geo;
    readonly BtreeGeometry _bmbtGeo;
    readonly BtreeBlockVerifier _verifier;
    readonly BtreeBlockStore _store;
    /// <summary>Non-root bmbt blocks (fsbno) the fork had when loaded, in tree order (level by level, left to right).</summary>
    readonly List<ulong> _bmbtBlocks = new();
    /// <summary>Blocks read (joined) by the load: rewritten in place when reused.</summary>
    readonly HashSet<ulong> _loaded = new();
    /// <summary>Offset of the LSN in a long-form btree block header.</summary>
    const int LsnOffset = 32;

    FileFork(WriteTransaction tx, IncoreInode inode, bool attr)
    {
        _tx = tx;
        Inode = inode;
        Attr = attr;
        _geo = tx.Engine.Geometry;
        _store = tx.FsStore(null, null);
        var ops = new BmbtOps();
        _bmbtGeo = BtreeGeometry.For(ops, _geo.BlockSize);
        _verifier = new BtreeBlockVerifier("bmbt block", BmbtOps.MagicValue, _bmbtGeo, _store, _geo.MetaUuid, (long)inode.Ino);
        Extents = new ExtentList();
    }

    public IncoreInode Inode { get; }
    public bool Attr { get; }
    /// <summary>The fork's mappings; edits are tracked (<see cref="ExtentList.ChangedWindow"/>) since the load or the
    /// last store, for the record diff applied to a btree that stays a btree.</summary>
    public ExtentList Extents { get; private set; }
    ForkFormat _loadedFormat = ForkFormat.Extents;
    string Where => $"inode {Inode.Ino} {(Attr ? "attr" : "data")} fork";

    /// <summary>Bytes of the fork area.</summary>
    public int ForkSize => InodeFields.Fork(Inode.Core, Attr).Length;

    /// <summary>Records an extents-format fork holds (fork size / 16).</summary>
    public int ExtentCapacity => ForkSize / Dinode.ExtentSize;

    /// <summary>Reads the fork of a locked inode. Local-format and device forks are refused.</summary>
    public static FileFork Load(WriteTransaction tx, IncoreInode inode, bool attr)
    {
        ArgumentNullException.ThrowIfNull(tx);
        ArgumentNullException.ThrowIfNull(inode);
        var f = new FileFork(tx, inode, attr);
        f.Read();
        return f;
    }

    /// <summary>
    /// Replaces a fork whose mappings cannot be trusted (its bmbt or extent list damaged) with
    /// <paramref name="mappings"/> (sorted by file offset, from the rmap: the fork repair): the old tree is never read;
    /// its blocks (<paramref name="oldBmbtBlocks"/>, the inode's BMBT blocks of this fork in the rmap) are reused as the
    /// new tree's, formatted anew, or freed when the new fork needs fewer (their rmaps removed, buffers invalidated),
    /// and the rest are allocated; the fork is written in extents format when the records fit, else as a bmbt.
    /// di_nblocks moves by one per bmbt block freed or allocated: the caller sets it first.
    /// </summary>
    public static FileFork Rebuild(WriteTransaction tx, IncoreInode inode, bool attr, List<BmbtExtent> mappings, IReadOnlyList<ulong> oldBmbtBlocks)
    {
        ArgumentNullException.ThrowIfNull(tx);
        ArgumentNullException.ThrowIfNull(inode);
        ArgumentNullException.ThrowIfNull(oldBmbtBlocks);
        var f = new FileFork(tx, inode, attr);
        f.Extents = ExtentList.FromRecords(mappings, f._geo, f.Where);
        f._bmbtBlocks.AddRange(oldBmbtBlocks);
        // Laid out whole (Store's extents-or-new-tree path), never edited record by record in the damaged tree.
        f._loadedFormat = ForkFormat.Extents;
        if (!attr)
        {
            ForkCache.Forget(inode);
        }
        f.Store();
        return f;
    }

    void Read()
    {
        // The cached list is shared with readers until this operation's first edit, which then takes its records
        // (no copy: the inode is locked by this transaction, readers wait; the cache entry, left without records,
        // is dropped; a cancel thus leaves no cache entry, and the next operation reads the fork again).
        if (!Attr && ForkCache.TryGetShared(Inode, out var cached, out var blocks))
        {
            _loadedFormat = InodeFields.Format(Inode.Core, attr: false);
            Extents = cached.Snapshot(takeAtFirstEdit: true);
            _bmbtBlocks.AddRange(blocks);
            _loaded.UnionWith(blocks);
        }
        else
        {
            ReadFork();
            if (!Attr && InodeFields.Format(Inode.Core, attr: false) is ForkFormat.Extents or ForkFormat.Btree)
            {
                ForkCache.PutShared(Inode, Extents, _bmbtBlocks);
                Extents = Extents.Snapshot(takeAtFirstEdit: true);
            }
        }
    }

    void ReadFork()
    {
        var core = Inode.Core;
        if (Attr && InodeFields.ForkOffset(core) == 0) return;
        _loadedFormat = InodeFields.Format(core, Attr);
        var fork = InodeFields.Fork(core, Attr);
        ulong count = InodeFields.Extents(core, Attr);
        switch (InodeFields.Format(core, Attr))
        {
            case ForkFormat.Extents:
                if (count > (ulong)(fork.Length / Dinode.ExtentSize))
                    throw new XfsWriteException(WriteErrorKind.Corrupt, $"{Where}: {count} extents do not fit the fork");
                Extents = ExtentList.Decode(fork, (int)count, _geo, Where);
                break;
            case ForkFormat.Btree:
                ReadBtree(fork, count);
                break;
            case ForkFormat.Local:
                if (Attr) return; // inline attributes own no blocks
                throw new XfsWriteException(WriteErrorKind.NotSupported, $"{Where} is in local (inline) format, which the engine does not handle for file data");
            default:
                throw new XfsWriteException(WriteErrorKind.NotSupported, $"{Where} has format {(int)InodeFields.Format(core, Attr)}, which the engine does not handle");
        }
    }

    void ReadBtree(ReadOnlySpan<byte> fork, ulong count)
    {
        if (fork.Length < 4 + 16) throw new XfsWriteException(WriteErrorKind.Corrupt, $"{Where}: btree root in a fork too small");
        int level = BinaryPrimitives.ReadUInt16BigEndian(fork);
        int n = BinaryPrimitives.ReadUInt16BigEndian(fork[2..]);
        int rootMax = Dinode.BmbtRootMaxRecords(fork.Length);
        if (level < 1 || level >= Dinode.MaxBmbtLevels || n < 1 || n > rootMax)
            throw new XfsWriteException(WriteErrorKind.Corrupt, $"{Where}: bmbt root level {level} numrecs {n}");
        var records = new List<BmbtExtent>();
        var children = new List<ulong>(n);
        for (int i = 0; i < n; i++) children.Add(BinaryPrimitives.ReadUInt64BigEndian(fork[(4 + rootMax * 8 + i * 8)..]));
        var seen = new HashSet<ulong>();
        // Level by level, left to right: each level's blocks are the pointers of the level above.
        for (int lv = level - 1; lv >= 0; lv--)
        {
            var next = new List<ulong>();
            foreach (ulong ptr in children)
            {
                if (!_store.IsValidPointer((long)ptr)) throw new XfsWriteException(WriteErrorKind.Corrupt, $"{Where}: bmbt pointer {ptr} outside the filesystem");
                if (!seen.Add(ptr)) throw new XfsWriteException(WriteErrorKind.Corrupt, $"{Where}: bmbt block {ptr} reached twice");
                _bmbtBlocks.Add(ptr);
                _loaded.Add(ptr);
                var buf = ReadBlock(ptr);
                var b = buf.Span[.._geo.BlockSize];
                if (BtreeHeader.Level(b) != lv) throw new XfsWriteException(WriteErrorKind.Corrupt, $"{Where}: bmbt block {ptr} has level {BtreeHeader.Level(b)}, expected {lv}");
                int recs = BtreeHeader.NumRecords(b);
                if (recs == 0) throw new XfsWriteException(WriteErrorKind.Corrupt, $"{Where}: empty bmbt block {ptr}");
                if (lv == 0)
                {
                    for (int i = 0; i < recs; i++) records.Add(BmbtExtent.Read(b[_bmbtGeo.RecordOffset(i)..]));
                }
                else
                {
                    int max = _bmbtGeo.NodeMaxRecords;
                    for (int i = 0; i < recs; i++) next.Add(BinaryPrimitives.ReadUInt64BigEndian(b[_bmbtGeo.PointerOffset(i, max)..]));
                }
            }
            children = next;
        }
        if ((ulong)records.Count != count)
            throw new XfsWriteException(WriteErrorKind.Corrupt, $"{Where}: the bmbt holds {records.Count} records but the inode counts {count}");
        Extents = ExtentList.FromRecords(records, _geo, Where);
    }

    BlockBuffer ReadBlock(ulong fsbno)
    {
        try { return _tx.ReadBuffer(_store.PointerToDaddr((long)fsbno), _geo.BasicBlocksPerBlock, _verifier); }
        catch (CorruptionException e) { throw new XfsWriteException(WriteErrorKind.Corrupt, $"{Where}: {e.Message}", e); }
    }

    /// <summary>Blocks of the bmbt (below the inode root) that holding <paramref name="records"/> records needs: 0 when they fit the fork as extents.</summary>
    public int BmbtBlocksFor(long records)
    {
        if (records <= ExtentCapacity) return 0;
        int total = 0;
        long items = records;
        int rootMax = Dinode.BmbtRootMaxRecords(ForkSize);
        for (int lv = 0; ; lv++)
        {
            int max = _bmbtGeo.MaxRecords(lv);
            long blocks = (items + max - 1) / max;
            total += (int)blocks;
            if (blocks <= rootMax) return total;
            items = blocks;
        }
    }

    /// <summary>Worst-case bmbt blocks a store may allocate after an edit that adds at most <paramref name="addedRecords"/> records.</summary>
    public int WorstCaseNewBmbtBlocks(int addedRecords)
        => Math.Max(0, BmbtBlocksFor(Extents.Count + (long)addedRecords) - _bmbtBlocks.Count) + 1;

    /// <summary>
    /// Writes the list back into the inode: extents format when it fits the literal area, else a bmbt below an
    /// in-inode root (reusing the fork's old bmbt blocks, allocating or freeing the difference with their rmaps);
    /// sets the format and extent count and logs the inode.
    /// </summary>
    public void Store()
    {
        var core = Inode.Core;
        int count = Extents.Count;
        var fork = InodeFields.Fork(core, Attr);
        if (fork.IsEmpty) throw new InvalidOperationException($"{Where} does not exist");
        int needed = BmbtBlocksFor(count);
        if (needed > 0 && _loadedFormat == ForkFormat.Btree && _bmbtBlocks.Count > 0)
        {
            // A btree that stays a btree: the record changes go through the generic engine's cursor (splits,
            // joins, new_iroot and kill_iroot included), then the root image is copied back into the fork.
            UpdateBtree();
            InodeFields.SetExtents(core, Attr, (ulong)count);
            Stored();
            return;
        }
        var blocks = new List<ulong>(_bmbtBlocks);
        // Surplus old blocks go back to free space; missing ones are allocated near the inode (or the last bmbt block).
        while (blocks.Count > needed)
        {
            ulong fsbno = blocks[^1];
            blocks.RemoveAt(blocks.Count - 1);
            FreeBmbtBlock(fsbno);
        }
        while (blocks.Count < needed) blocks.Add(AllocateBmbtBlock(blocks.Count > 0 ? blocks[^1] + 1 : InodeFsbno()));
        _bmbtBlocks.Clear();
        _bmbtBlocks.AddRange(blocks);
        if (needed == 0)
        {
            Extents.EncodeTo(fork);
            InodeFields.SetFormat(core, Attr, ForkFormat.Extents);
        }
        else
        {
            WriteBtree(fork, blocks);
            InodeFields.SetFormat(core, Attr, ForkFormat.Btree);
        }
        InodeFields.SetExtents(core, Attr, (ulong)count);
        _loadedFormat = needed == 0 ? ForkFormat.Extents : ForkFormat.Btree;
        Stored();
    }

    /// <summary>After a store: di_changecount moves (so a cancel's restored inode never matches the cache stamp),
    /// the list becomes the new baseline, the inode is logged and the cache re-stamped.</summary>
    void Stored()
    {
        var counter = Inode.Core.AsSpan(104);
        BinaryPrimitives.WriteUInt64BigEndian(counter, BinaryPrimitives.ReadUInt64BigEndian(counter) + 1);
        _tx.LogInode(Inode);
        if (Attr)
        {
            Extents.ResetChanges(); // the stored records are the baseline of the next store
            return;
        }
        // The stored list goes to the cache; later edits of this operation take it back (a fresh baseline).
        ForkCache.PutShared(Inode, Extents, _bmbtBlocks);
        Extents = Extents.Snapshot(takeAtFirstEdit: true);
    }

    /// <summary>
    /// Applies the difference between the loaded records and the current list to the on-disk bmbt through
    /// <see cref="Btree{TOps}"/> cursors: deletes first, then in-place updates (same start offset), then inserts,
    /// so that no intermediate state holds overlapping records. Blocks the tree allocates or frees get their BMBT
    /// rmaps and di_nblocks through the store's callbacks.
    /// </summary>
    void UpdateBtree()
    {
        var ops = new BmbtOps();
        var store = _tx.FsStore(
            () =>
            {
                ulong fsbno = AllocateBmbtBlock(_bmbtBlocks.Count > 0 ? _bmbtBlocks[^1] + 1 : InodeFsbno());
                _bmbtBlocks.Add(fsbno);
                return (long)fsbno;
            },
            ptr =>
            {
                FreeBmbtBlock((ulong)ptr);
                _bmbtBlocks.Remove((ulong)ptr);
            });
        var root = new BtreeInodeRoot(_bmbtGeo, BmbtOps.MagicValue, InodeFields.Fork(Inode.Core, Attr));
        var tree = new Btree<BmbtOps>(ops, store, root, _geo.MetaUuid, (long)Inode.Ino);
        var deletes = new List<ulong>();
        var updates = new List<BmbtExtent>();
        var inserts = new List<BmbtExtent>();
        // Only the window the edits touched can differ (the records before it and after it are as loaded): a write
        // that changes one extent of a file of thousands compares a few records, not all of them.
        var after = Extents;
        after.ChangedWindow(out int prefix, out int suffix, out var before);
        int i = 0, j = prefix;
        int beforeEnd = before.Count, afterEnd = after.Count - suffix;
        while (i < beforeEnd || j < afterEnd)
        {
            if (j >= afterEnd || (i < beforeEnd && before[i].StartOffset < after[j].StartOffset)) deletes.Add(before[i++].StartOffset);
            else if (i >= beforeEnd || after[j].StartOffset < before[i].StartOffset) inserts.Add(after[j++]);
            else
            {
                if (before[i] != after[j]) updates.Add(after[j]);
                i++;
                j++;
            }
        }
        Span<byte> key = stackalloc byte[8];
        Span<byte> record = stackalloc byte[Dinode.ExtentSize];
        try
        {
            using var cur = tree.CreateCursor();
            foreach (ulong off in deletes)
            {
                BinaryPrimitives.WriteUInt64BigEndian(key, off);
                if (!cur.Lookup(key, BtreeLookup.Equal)) throw new XfsWriteException(WriteErrorKind.Corrupt, $"{Where}: bmbt record at offset {off} vanished");
                cur.Delete();
            }
            foreach (var e in updates)
            {
                BinaryPrimitives.WriteUInt64BigEndian(key, e.StartOffset);
                if (!cur.Lookup(key, BtreeLookup.Equal)) throw new XfsWriteException(WriteErrorKind.Corrupt, $"{Where}: bmbt record at offset {e.StartOffset} vanished");
                ExtentList.Encode(e, record);
                cur.Update(record);
            }
            foreach (var e in inserts)
            {
                ExtentList.Encode(e, record);
                if (!cur.Insert(record)) throw new XfsWriteException(WriteErrorKind.Corrupt, $"{Where}: bmbt already holds a record at offset {e.StartOffset}");
            }
        }
        catch (CorruptionException e)
        {
            throw new XfsWriteException(WriteErrorKind.Corrupt, $"{Where}: {e.Message}", e);
        }
        root.WriteTo(InodeFields.Fork(Inode.Core, Attr));
    }

    /// <summary>Frees every bmbt block (for an inode whose fork is emptied); the list must be empty.</summary>
    public void ReleaseAllBmbtBlocks()
    {
        foreach (ulong b in _bmbtBlocks) FreeBmbtBlock(b);
        _bmbtBlocks.Clear();
    }

    ulong InodeFsbno()
    {
        uint agno = _geo.InoToAgno(Inode.Ino);
        return _geo.AgbToFsb(agno, _geo.AginoToAgbno(_geo.InoToAgino(Inode.Ino)));
    }

    RmapRecord BmbtRmap(uint agbno) => new(agbno, 1, Inode.Ino, RmapbtOps.BmbtBlockFlag | (Attr ? RmapbtOps.AttrForkFlag : 0));

    ulong AllocateBmbtBlock(ulong hint)
    {
        var got = _tx.Allocate(new AllocationRequest(hint, 1, 1, AllocationPurpose.BmbtBlock));
        FileOperations.LockAg(_tx, got.AgNumber);
        // bmbt blocks use the plain (non-shared) rmap calls, as the kernel's allocator does for them.
        _tx.RmapMap(got.AgNumber, BmbtRmap(got.AgBlock), shared: false);
        InodeFields.SetNBlocks(Inode.Core, InodeFields.NBlocks(Inode.Core) + 1);
        return got.Fsbno;
    }

    void FreeBmbtBlock(ulong fsbno)
    {
        uint agno = _geo.FsbToAgno(fsbno), agbno = _geo.FsbToAgbno(fsbno);
        FileOperations.LockAg(_tx, agno);
        _tx.RmapUnmap(agno, BmbtRmap(agbno), shared: false);
        _tx.FreeMetadata(agno, agbno, 1);
        InodeFields.SetNBlocks(Inode.Core, InodeFields.NBlocks(Inode.Core) - 1);
    }

    /// <summary>
    /// Lays the records out bottom up (entries spread evenly over each level's blocks, so every block below the
    /// root's children holds at least minrecs) and writes the in-inode root (level, numrecs, keys, then pointers
    /// at 4 + maxrecs(forksize) * 8).
    /// </summary>
    void WriteBtree(Span<byte> fork, List<ulong> blocks)
    {
        int rootMax = Dinode.BmbtRootMaxRecords(fork.Length);
        // Level 0 entries: the records; each upper level: (first key, block) of the level below.
        int used = 0;
        int level = 0;
        List<ulong> levelPointers;
        List<ulong> levelKeys;
        long items = Extents.Count;
        var childKeys = new List<ulong>();
        var childPtrs = new List<ulong>();
        while (true)
        {
            int max = _bmbtGeo.MaxRecords(level);
            int nblocks = (int)((items + max - 1) / max);
            int per = (int)(items / nblocks), extra = (int)(items % nblocks);
            levelPointers = blocks.GetRange(used, nblocks);
            used += nblocks;
            levelKeys = new List<ulong>(nblocks);
            int next = 0;
            for (int k = 0; k < nblocks; k++)
            {
                int n = per + (k < extra ? 1 : 0);
                ulong fsbno = levelPointers[k];
                // A reused block keeps its LSN (it is modified, not new); a new block gets LSN 0.
                bool reused = _loaded.Contains(fsbno);
                var buf = reused ? ReadBlock(fsbno) : _tx.GetNewBuffer(_store.PointerToDaddr((long)fsbno), _geo.BasicBlocksPerBlock, _verifier);
                var b = buf.Span[.._geo.BlockSize];
                ulong lsn = reused ? BinaryPrimitives.ReadUInt64BigEndian(b[LsnOffset..]) : 0;
                b.Clear();
                BtreeHeader.Initialize(b, longForm: true, BmbtOps.MagicValue, level, _store.PointerToDaddr((long)fsbno), _geo.MetaUuid, (long)Inode.Ino);
                BinaryPrimitives.WriteUInt64BigEndian(b[LsnOffset..], lsn);
                BtreeHeader.SetNumRecords(b, n);
                BtreeHeader.SetLeftSibling(b, true, k > 0 ? (long)levelPointers[k - 1] : BtreeHeader.NullPointer);
                BtreeHeader.SetRightSibling(b, true, k + 1 < nblocks ? (long)levelPointers[k + 1] : BtreeHeader.NullPointer);
                if (level == 0)
                {
                    for (int i = 0; i < n; i++) ExtentList.Encode(Extents[next + i], b[_bmbtGeo.RecordOffset(i)..]);
                    levelKeys.Add(Extents[next].StartOffset);
                }
                else
                {
                    for (int i = 0; i < n; i++)
                    {
                        BinaryPrimitives.WriteUInt64BigEndian(b[_bmbtGeo.KeyOffset(i)..], childKeys[next + i]);
                        BinaryPrimitives.WriteUInt64BigEndian(b[_bmbtGeo.PointerOffset(i, _bmbtGeo.NodeMaxRecords)..], childPtrs[next + i]);
                    }
                    levelKeys.Add(childKeys[next]);
                }
                next += n;
                _tx.LogBuffer(buf, 0, buf.Length);
            }
            childKeys = levelKeys;
            childPtrs = levelPointers;
            level++;
            if (nblocks <= rootMax) break;
            items = nblocks;
        }
        if (used != blocks.Count) throw new InvalidOperationException($"bmbt layout used {used} of {blocks.Count} blocks");
        fork.Clear();
        BinaryPrimitives.WriteUInt16BigEndian(fork, (ushort)level);
        BinaryPrimitives.WriteUInt16BigEndian(fork[2..], (ushort)childPtrs.Count);
        for (int i = 0; i < childPtrs.Count; i++)
        {
            BinaryPrimitives.WriteUInt64BigEndian(fork[(4 + i * 8)..], childKeys[i]);
            BinaryPrimitives.WriteUInt64BigEndian(fork[(4 + rootMax * 8 + i * 8)..], childPtrs[i]);
        }
    }
}
