using System.Buffers.Binary;
using Xfbtree.Btree;
using Xfbtree.Buffers;
using Xfbtree.Xfs.Attributes;
using Xfbtree.Xfs.Format;
using Xfbtree.Xfs.Trees;

namespace Xfbtree.Xfs.Scan;

/// <summary>
/// One scan worker: computes the rmap records of one AG's metadata and of every in-use inode of that AG (whose
/// fork extents may lie in any AG) and streams them, merged at the source, into the per-AG sets through a
/// <see cref="RmapBatcher"/>. Every on-disk value is range-checked before it is used; damage is reported to the
/// AG's problem list and the scan goes on with what is still trustworthy. Not thread-safe: one per thread.
/// </summary>
internal sealed class AgScanner
{
    readonly XfsImage _img;
    readonly XfsGeometry _geo;
    readonly RmapScanOptions _options;
    readonly RmapBatcher _out;
    readonly ProblemList[] _problems;
    readonly List<uint> _blocks = new();
    readonly List<ulong> _bmbtBlocks = new();
    readonly Stack<(long Ptr, int Level)> _stack = new();
    readonly HashSet<long> _visited = new();
    readonly HashSet<long> _bmbtSeen = new();
    readonly List<(uint Start, uint Length)> _chunkRuns = new();

    // Current fork being scanned and its pending (not yet emitted) merged extent.
    ulong _ino;
    uint _inoAgno;
    bool _attr;
    bool _emitExtents;
    string _forkName = "";
    bool _pending;
    uint _pAgno, _pAgbno, _pLen;
    ulong _pOff;
    bool _pUnwritten;
    ulong _nextOffset;
    long _forkExtents;
    ulong _forkBlocks;
    // The current inode: a fork walk met damage (its counts are then not judged), and the core rules' scratch.
    bool _inodeForkDamaged;
    byte[]? _coreScratch;
    readonly List<InodeCoreProblem> _coreProblems = new();
    // The current inode's attr fork mapping (file offset order), for the check of its blocks.
    readonly MappedAttrBlocks _attrBlocks;

    public AgScanner(XfsImage image, RmapScanOptions options, RmapBatcher output, ProblemList[] problems)
    {
        _img = image;
        _geo = image.Geometry;
        _options = options;
        _out = output;
        _problems = problems;
        _attrBlocks = new MappedAttrBlocks(image.Cache, image.Target, _geo);
    }

    void Problem(uint agno, string where, string what) => _problems[agno].Add(agno, where, what);

    /// <summary>
    /// Reads the AGF, AGI and AGFL of <paramref name="res"/>'s AG into it, each problem (unreadable, or a field the
    /// parser refuses) into <paramref name="problems"/>; false when there was one. The offline scan and the online
    /// scrub (a read view under the AG lock) read the headers this one way.
    /// </summary>
    internal static bool ReadHeaders(XfsImage image, AgScanResult res, ProblemList problems)
    {
        uint agno = res.AgNumber;
        bool complete = true;
        void Problem(string where, string what) { problems.Add(agno, where, what); complete = false; }
        try { res.Agf = image.ReadAgf(agno); }
        catch (CorruptionException e) { Problem("AGF", e.Message); }
        try { res.Agi = image.ReadAgi(agno); }
        catch (CorruptionException e) { Problem("AGI", e.Message); }
        if (res.Agf is { } agf)
        {
            foreach (var p in agf.Problems) Problem("AGF", p);
        }
        if (res.Agi is { } agi)
        {
            foreach (var p in agi.Problems) Problem("AGI", p);
        }
        if (res.Agf is { } f)
        {
            try
            {
                res.Agfl = image.ReadAgfl(agno, f);
                foreach (var p in res.Agfl.Problems) Problem("AGFL", p);
            }
            catch (CorruptionException e) { Problem("AGFL", e.Message); }
        }
        return complete;
    }

    /// <summary>Scans AG <paramref name="res"/>.AgNumber; <paramref name="metadata"/> false skips the AG's own metadata records (AG not selected).</summary>
    public void ScanAg(AgScanResult res, bool metadata, CancellationToken cancel)
    {
        uint agno = res.AgNumber;
        uint agLen = _geo.AgLength(agno);
        bool complete = true;
        var store = _img.CreateAgStore(agno);

        complete &= ReadHeaders(_img, res, _problems[agno]);
        var agf = res.Agf;
        var agi = res.Agi;

        if (metadata)
        {
            // OWN_FS: the header sectors; OWN_LOG: the internal log if it lives here.
            Emit(agno, new RmapRecord(0, _geo.FirstFreeBlock, RmapOwner.Fs, 0));
            var sb = _img.Superblock;
            if (sb.LogStart != 0 && _geo.FsbToAgno(sb.LogStart) == agno)
                Emit(agno, new RmapRecord(_geo.FsbToAgbno(sb.LogStart), sb.LogBlocks, RmapOwner.Log, 0));

            // OWN_AG: bnobt, cntbt, rmapbt blocks and the AGFL.
            var bno = new List<uint>();
            var cnt = new List<uint>();
            var rmap = new List<uint>();
            if (agf != null)
            {
                if (agf.TreeRootUsable(AgfTree.Bnobt, _geo)) complete &= CollectBlocks(_img.OpenBnobt(agf, store), agno, "bnobt", bno);
                if (agf.TreeRootUsable(AgfTree.Cntbt, _geo)) complete &= CollectBlocks(_img.OpenCntbt(agf, store), agno, "cntbt", cnt);
                // The rmapbt's own damage is the check's to report; here only its block set matters.
                if (agf.TreeRootUsable(AgfTree.Rmapbt, _geo)) res.RmapbtBlocksComplete = CollectBlocks(_img.OpenRmapbt(agf, store), agno, "rmapbt", rmap, report: false);
            }
            bno.Sort(); cnt.Sort(); rmap.Sort();
            res.BnobtBlocks = bno;
            res.CntbtBlocks = cnt;
            res.RmapbtBlocks = rmap;
            _blocks.Clear();
            _blocks.AddRange(bno);
            _blocks.AddRange(cnt);
            if (_options.IncludeOwnAg)
            {
                _blocks.AddRange(rmap);
                if (res.Agfl != null) _blocks.AddRange(res.Agfl.Blocks);
            }
            EmitBlockRuns(agno, RmapOwner.Ag, _blocks, "OWN_AG");

            // OWN_INOBT: inobt and finobt blocks.
            _blocks.Clear();
            bool chunksGiven = _options.ChunksGiven?.AgNumber == agno;
            if (agi != null)
            {
                if (!chunksGiven && agi.TreeRootUsable(AgiTree.Inobt, _geo)) complete &= CollectBlocks(_img.OpenInobt(agi, AgiTree.Inobt, store), agno, "inobt", _blocks);
                if (sb.HasFinobt && agi.TreeRootUsable(AgiTree.Finobt, _geo)) complete &= CollectBlocks(_img.OpenInobt(agi, AgiTree.Finobt, store), agno, "finobt", _blocks);
            }
            EmitBlockRuns(agno, RmapOwner.Inobt, _blocks, "OWN_INOBT");

            // OWN_REFC and OWN_COW.
            if (sb.HasReflink && agf != null && agf.TreeRootUsable(AgfTree.Refcountbt, _geo))
            {
                var refc = _img.OpenRefcountbt(agf, store);
                _blocks.Clear();
                complete &= CollectBlocks(refc, agno, "refcountbt", _blocks);
                EmitBlockRuns(agno, RmapOwner.Refc, _blocks, "OWN_REFC");
                complete &= ScanCowStaging(refc, agno, agLen);
            }
        }

        // Inode chunks (OWN_INODES) and every in-use inode's forks.
        if (_options.ChunksGiven is { } given && given.AgNumber == agno)
        {
            res.CoresJudged();
            ScanGivenChunks(given.Chunks, res, metadata, cancel);
        }
        else if (agi != null && agi.TreeRootUsable(AgiTree.Inobt, _geo))
        {
            res.CoresJudged();
            complete &= ScanInodes(_img.OpenInobt(agi, AgiTree.Inobt, store), res, metadata, cancel);
        }
        else
            complete = false;
        res.MetadataComplete = complete;
    }

    void Emit(uint agno, in RmapRecord r) => _out.Add(agno, r);

    /// <summary>
    /// Collects the blocks of a per-AG tree: the root and every child pointer of every node (leaves are not read).
    /// Nodes are read through the store and verified; a damaged node is reported and its subtree skipped; a block
    /// reached twice (cycle, cross-link) is reported once and not followed.
    /// </summary>
    bool CollectBlocks<TOps>(Btree<TOps> tree, uint agno, string name, List<uint> into, bool report = true) where TOps : struct, IBtreeOps
    {
        void Problem(uint a, string where, string what) { if (report) this.Problem(a, where, what); }
        var geo = tree.Geometry;
        var store = tree.Store;
        bool ok = true;
        int height = tree.Root.Height;
        if (height < 1 || height > geo.MaxLevels) { Problem(agno, name, $"height {height} outside 1..{geo.MaxLevels}"); return false; }
        _stack.Clear();
        _visited.Clear();
        _stack.Push((tree.Root.Pointer, height - 1));
        while (_stack.Count > 0)
        {
            var (ptr, level) = _stack.Pop();
            if (!store.IsValidPointer(ptr)) { Problem(agno, name, $"level {level} pointer {ptr} outside the AG"); ok = false; continue; }
            if (!_visited.Add(ptr)) { Problem(agno, name, $"block {ptr} reached twice (cycle or cross-link)"); ok = false; continue; }
            into.Add((uint)ptr);
            if (level == 0) continue;
            BtreeBlockRef block;
            try { block = store.Read(ptr, tree.Verifier); }
            catch (CorruptionException e) { Problem(agno, name, e.Message); ok = false; continue; }
            try
            {
                ReadOnlySpan<byte> b;
                unsafe { b = new ReadOnlySpan<byte>(block.Data, geo.BlockSize); }
                int lev = BtreeHeader.Level(b);
                if (lev != level) { Problem(agno, name, $"block {ptr}: level {lev}, expected {level}"); ok = false; continue; }
                int n = BtreeHeader.NumRecords(b);
                if (n == 0) { Problem(agno, name, $"node block {ptr} is empty"); ok = false; continue; }
                for (int i = 0; i < n; i++)
                    _stack.Push((BtreeHeader.ReadPointer(b[geo.PointerOffset(i, geo.NodeMaxRecords)..], geo.LongPointers), level - 1));
            }
            finally { store.Release(block); }
        }
        return ok;
    }

    /// <summary>Sorts block numbers and emits one record per maximal run; a block listed twice is reported.</summary>
    void EmitBlockRuns(uint agno, ulong owner, List<uint> blocks, string what)
    {
        if (blocks.Count == 0) return;
        blocks.Sort();
        uint start = blocks[0], end = blocks[0] + 1;
        for (int i = 1; i < blocks.Count; i++)
        {
            uint b = blocks[i];
            if (b < end) { Problem(agno, what, $"block {b} claimed twice by {what} structures"); continue; }
            if (b == end) { end++; continue; }
            Emit(agno, new RmapRecord(start, end - start, owner, 0));
            start = b;
            end = b + 1;
        }
        Emit(agno, new RmapRecord(start, end - start, owner, 0));
    }

    /// <summary>OWN_COW: every CoW-domain refcount record (startblock bit 31), merged when adjacent.</summary>
    bool ScanCowStaging(Btree<RefcountbtOps> refc, uint agno, uint agLen)
    {
        Span<byte> key = stackalloc byte[4];
        BinaryPrimitives.WriteUInt32BigEndian(key, RefcountbtOps.CowFlag);
        bool have = false;
        uint start = 0, end = 0;
        try
        {
            using var cur = refc.CreateCursor();
            if (cur.Lookup(key, BtreeLookup.GreaterOrEqual))
            {
                do
                {
                    var r = cur.Current;
                    uint s = BinaryPrimitives.ReadUInt32BigEndian(r);
                    uint len = BinaryPrimitives.ReadUInt32BigEndian(r[4..]);
                    if ((s & RefcountbtOps.CowFlag) == 0) { Problem(agno, "refcountbt", $"shared record {s} after CoW records"); return false; }
                    s &= ~RefcountbtOps.CowFlag;
                    if (len == 0 || (ulong)s + len > agLen || s < _geo.FirstFreeBlock) { Problem(agno, "refcountbt", $"CoW extent {s} length {len} outside the AG"); continue; }
                    if (have && s == end && (ulong)(end - start) + len <= uint.MaxValue) { end += len; continue; }
                    if (have) Emit(agno, new RmapRecord(start, end - start, RmapOwner.Cow, 0));
                    have = true;
                    start = s;
                    end = s + len;
                }
                while (cur.Increment());
            }
        }
        catch (CorruptionException e) { Problem(agno, "refcountbt", e.Message); return false; }
        finally
        {
            if (have) Emit(agno, new RmapRecord(start, end - start, RmapOwner.Cow, 0));
        }
        return true;
    }

    // ------------------------------------------------------------------ inodes

    bool ScanInodes(Btree<InobtOps> inobt, AgScanResult res, bool metadata, CancellationToken cancel)
    {
        uint agno = res.AgNumber;
        bool ok = true;
        bool haveRun = false;
        uint runStart = 0, runEnd = 0;
        uint prevStart = 0;
        bool first = true;
        var ops = inobt.Ops;
        try
        {
            using var cur = inobt.CreateCursor();
            if (!cur.MoveFirst()) return true;
            do
            {
                cancel.ThrowIfCancellationRequested();
                var rec = cur.Current;
                uint startino = BinaryPrimitives.ReadUInt32BigEndian(rec);
                if (!first && startino < (ulong)prevStart + 64) { Problem(agno, "inobt", $"record {startino} out of order"); ok = false; continue; }
                first = false;
                prevStart = startino;
                if (ops.ValidateRecord(rec) is { } why) { Problem(agno, "inobt", $"record {startino}: {why}"); ok = false; continue; }
                if (!InodeChunkLayout.ChunkInsideAg(_geo, agno, startino)) { Problem(agno, "inobt", $"chunk {startino} outside the AG"); ok = false; continue; }
                var chunk = InobtRecord.Read(rec, _img.Superblock.HasSparseInodes);
                if (metadata) AddOwnInodesRuns(agno, startino, chunk.HoleMask, ref haveRun, ref runStart, ref runEnd);
                ScanChunkInodes(res, chunk);
            }
            while (cur.Increment());
        }
        catch (CorruptionException e) { Problem(agno, "inobt", e.Message); ok = false; }
        finally
        {
            if (haveRun) Emit(agno, new RmapRecord(runStart, runEnd - runStart, RmapOwner.Inodes, 0));
        }
        return ok;
    }

    /// <summary>OWN_INODES: the allocated (non-hole) blocks of one chunk merged into the run being built (chunks come
    /// in block order); a run that cannot grow is emitted and a new one started. The caller emits the last run.</summary>
    void AddOwnInodesRuns(uint agno, uint startino, ushort holeMask, ref bool haveRun, ref uint runStart, ref uint runEnd)
    {
        _chunkRuns.Clear();
        InodeChunkLayout.AllocatedBlockRuns(_geo, startino, holeMask, _chunkRuns);
        foreach (var (bStart, bLen) in _chunkRuns)
        {
            if (haveRun && bStart <= runEnd) { runEnd = Math.Max(runEnd, bStart + bLen); continue; }
            if (haveRun) Emit(agno, new RmapRecord(runStart, runEnd - runStart, RmapOwner.Inodes, 0));
            haveRun = true;
            runStart = bStart;
            runEnd = bStart + bLen;
        }
    }

    /// <summary>The chunks of <see cref="RmapScanOptions.ChunksGiven"/>, as <see cref="ScanInodes"/> does the inobt's.</summary>
    void ScanGivenChunks(IReadOnlyList<InobtRecord> chunks, AgScanResult res, bool metadata, CancellationToken cancel)
    {
        uint agno = res.AgNumber;
        bool haveRun = false;
        uint runStart = 0, runEnd = 0;
        foreach (var chunk in chunks)
        {
            cancel.ThrowIfCancellationRequested();
            if (metadata) AddOwnInodesRuns(agno, chunk.StartIno, chunk.HoleMask, ref haveRun, ref runStart, ref runEnd);
            ScanChunkInodes(res, chunk);
        }
        if (haveRun) Emit(agno, new RmapRecord(runStart, runEnd - runStart, RmapOwner.Inodes, 0));
    }

    void ScanChunkInodes(AgScanResult res, in InobtRecord chunk)
    {
        uint startino = chunk.StartIno;
        int ipb = _geo.InodesPerBlock;
        ulong inUse = chunk.InUse;
        if (inUse == 0) return;
        // Read runs of blocks that hold in-use inodes, one buffer per run.
        int firstSlot = _geo.AginoToSlot(startino);
        int i0 = 0;
        while (i0 < 64)
        {
            if ((inUse & (1UL << i0)) == 0) { i0++; continue; }
            int blockOf0 = (firstSlot + i0) / ipb;
            int i1 = i0;
            int lastBlock = blockOf0;
            // Extend over following inodes whose block is the same or the next one.
            while (i1 + 1 < 64)
            {
                int nb = (firstSlot + i1 + 1) / ipb;
                bool used = (inUse & (1UL << (i1 + 1))) != 0;
                if (nb == lastBlock) { i1++; continue; }
                if (nb == lastBlock + 1 && used) { i1++; lastBlock = nb; continue; }
                break;
            }
            ReadInodes(res, startino, i0, i1, blockOf0, lastBlock, inUse);
            i0 = i1 + 1;
        }
    }

    void ReadInodes(AgScanResult res, uint startino, int i0, int i1, int block0, int block1, ulong inUse)
    {
        uint agno = res.AgNumber;
        uint agbno = _geo.AginoToAgbno(startino) + (uint)block0;
        int nblocks = block1 - block0 + 1;
        long daddr = _geo.AgBlockToDaddr(agno, agbno);
        BlockBuffer buf;
        try { buf = _img.Cache.Read(_img.Target, daddr, nblocks * _geo.BasicBlocksPerBlock, null, BufferLockMode.Shared); }
        catch (Exception e) when (e is CorruptionException or IOException)
        {
            Problem(agno, $"inode cluster at block {agbno}", e.Message);
            return;
        }
        try
        {
            var span = buf.Span;
            int isz = _geo.InodeSize;
            int firstSlot = _geo.AginoToSlot(startino);
            for (int i = i0; i <= i1; i++)
            {
                if ((inUse & (1UL << i)) == 0) continue;
                int off = ((firstSlot + i) - block0 * _geo.InodesPerBlock) * isz;
                if (off < 0 || off + isz > span.Length) continue;
                ulong ino = _geo.AginoToIno(agno, startino + (uint)i);
                var d = new Dinode(span.Slice(off, isz));
                // A core whose forks cannot be read as it describes them is the scan's damage (the expected set misses
                // its records); the CRC and the other core fields are judged after the forks are read.
                if (d.VerifyStructure(_geo, ino) is { } why)
                {
                    Problem(agno, $"inode {ino}", why);
                    res.AddDamagedInode(new DamagedInode(ino, $"does not verify: {why}", Certain: false));
                    continue;
                }
                res.InodesScanned++;
                ScanInode(agno, ino, d);
                CheckCore(res, ino, d);
                CheckAttrFork(res, ino, d);
            }
        }
        finally { _img.Cache.Release(buf); }
    }

    // What the current inode's forks map, for its core's di_nblocks and extent counts.
    ulong _inodeBlocks, _inodeDataExtents, _inodeAttrExtents;

    void ScanInode(uint agno, ulong ino, Dinode d)
    {
        _ino = ino;
        _inoAgno = agno;
        _inodeForkDamaged = false;
        _inodeBlocks = _inodeDataExtents = _inodeAttrExtents = 0;
        _attrBlocks.Map.Clear();
        for (int f = 0; f < 2; f++)
        {
            bool attr = f == 1;
            if (attr && !d.HasAttrFork) continue;
            var fmt = d.FormatOf(attr);
            if (fmt is not (ForkFormat.Extents or ForkFormat.Btree)) continue;
            _attr = attr;
            // A realtime flag counts only with a realtime device (none is supported): without one the flag is the
            // core's damage (InodeCoreRules) and the extents are the data device's.
            _emitExtents = attr || !(d.IsRealtime && _img.Superblock.RtBlocks != 0);
            _forkName = attr ? "attr fork" : "data fork";
            _pending = false;
            _nextOffset = 0;
            _forkExtents = 0;
            _forkBlocks = 0;
            var fork = d.Fork(attr);
            if (fmt == ForkFormat.Extents)
            {
                // Verified: the count fits the fork. Zero records at its end are a too large count (the core's damage).
                int n = InodeCoreRules.ExtentRecords(fork, d.ExtentsOf(attr));
                for (int i = 0; i < n; i++) AddExtent(BmbtExtent.Read(fork[(i * Dinode.ExtentSize)..]));
            }
            else
            {
                long before = _problems[agno].Total;
                ScanBmbt(ino, fork);
                _forkBlocks += (ulong)_bmbtBlocks.Count;
                // A walk that read every leaf clean must have found the records the inode counts (a numrecs or a
                // pointer damaged with a correct CRC drops or repeats a leaf's records and verifies).
                if (_problems[agno].Total == before && (ulong)_forkExtents != d.ExtentsOf(attr))
                    Problem(agno, $"inode {ino} {_forkName} bmbt", $"holds {_forkExtents} records, but the inode counts {d.ExtentsOf(attr)} extents");
            }
            FlushExtent();
            _inodeBlocks += _forkBlocks;
            if (attr) _inodeAttrExtents = (ulong)_forkExtents;
            else _inodeDataExtents = (ulong)_forkExtents;
        }
    }

    /// <summary>Judges the core of an inode whose forks were just read (<see cref="InodeCoreRules"/>, on a copy).</summary>
    void CheckCore(AgScanResult res, ulong ino, Dinode d)
    {
        _coreScratch ??= new byte[_geo.InodeSize];
        d.Bytes.CopyTo(_coreScratch);
        _coreProblems.Clear();
        InodeForkCounts? counts = _inodeForkDamaged ? null : new InodeForkCounts(_inodeBlocks, _inodeDataExtents, _inodeAttrExtents);
        InodeCoreRules.Examine(_coreScratch, _geo, ino, counts, _coreProblems);
        if (_coreProblems.Count == 0) return;
        bool certain = true;
        foreach (var p in _coreProblems) certain &= p.Certain;
        res.AddDamagedInode(new DamagedInode(ino, DamagedInode.Describe(_coreProblems), certain));
    }

    /// <summary>Checks the attr fork of an inode whose forks were just read (<see cref="AttrForkChecker"/>); a fork
    /// whose mapping met damage is the scan's problem already.</summary>
    void CheckAttrFork(AgScanResult res, ulong ino, Dinode d)
    {
        if (!d.HasAttrFork || _inodeForkDamaged) return;
        string? why = null;
        switch (d.AttrFormat)
        {
            case ForkFormat.Local:
                why = AttrForkChecker.CheckShortform(d.AttrFork);
                break;
            case ForkFormat.Extents or ForkFormat.Btree when _attrBlocks.Map.Count > 0:
                why = _attrBlocks.Check(ino);
                break;
        }
        if (why != null) res.AddDamagedAttrFork(new DamagedInode(ino, why, Certain: false, Part: "attr fork"));
    }

    /// <summary>Damage in a fork of the current inode: reported, and its counts left unjudged.</summary>
    void ForkProblem(string where, string what)
    {
        _inodeForkDamaged = true;
        Problem(_inoAgno, where, what);
    }

    void AddExtent(in BmbtExtent e)
    {
        _forkExtents++;
        _forkBlocks += e.BlockCount;
        if (e.Validate(_geo) is { } why) { ForkProblem($"inode {_ino} {_forkName}", why); return; }
        if (e.StartOffset < _nextOffset) ForkProblem($"inode {_ino} {_forkName}", $"extent at offset {e.StartOffset} overlaps or precedes the previous one");
        _nextOffset = e.StartOffset + e.BlockCount;
        if (_attr) _attrBlocks.Map.Add(e);
        if (!_emitExtents) return;
        uint agno = _geo.FsbToAgno(e.StartBlock), agbno = _geo.FsbToAgbno(e.StartBlock);
        if (_pending && _pAgno == agno && (ulong)_pAgbno + _pLen == agbno && _pOff + _pLen == e.StartOffset
            && _pUnwritten == e.Unwritten && (ulong)_pLen + e.BlockCount <= uint.MaxValue)
        {
            _pLen += e.BlockCount;
            return;
        }
        FlushExtent();
        _pending = true;
        _pAgno = agno;
        _pAgbno = agbno;
        _pLen = e.BlockCount;
        _pOff = e.StartOffset;
        _pUnwritten = e.Unwritten;
    }

    void FlushExtent()
    {
        if (!_pending) return;
        _pending = false;
        ulong raw = _pOff | (_attr ? RmapbtOps.AttrForkFlag : 0) | (_pUnwritten ? RmapbtOps.UnwrittenFlag : 0);
        Emit(_pAgno, new RmapRecord(_pAgbno, _pLen, _ino, raw));
    }

    sealed class WalkAborted(string why) : Exception(why);

    struct BmbtVisitor : IBtreeBlockVisitor
    {
        public AgScanner Scanner;
        public int RootLevel;
        public void Visit(int level, long pointer, ReadOnlySpan<byte> block) => Scanner.OnBmbtBlock(level, pointer, block, RootLevel);
    }

    /// <summary>Smallest fork that holds a bmbt root: level, numrecs, one key and one pointer.</summary>
    static readonly int MinBmbtRootFork = 4 + BtreeGeometry.For(new BmbtOps(), 4096).KeySlotSize + BtreeGeometry.For(new BmbtOps(), 4096).PointerSize;

    void ScanBmbt(ulong ino, ReadOnlySpan<byte> fork)
    {
        _bmbtBlocks.Clear();
        _bmbtSeen.Clear();
        string where = $"inode {ino} {_forkName} bmbt";
        // The one input check the engine makes with an ArgumentException: test it here as metadata, so that an
        // ArgumentException from anywhere else stays what it is, a bug (internal error), not "damage".
        if (fork.Length < MinBmbtRootFork)
        {
            ForkProblem(where, $"fork of {fork.Length} bytes is too small for a btree root ({MinBmbtRootFork} at least)");
            return;
        }
        try
        {
            var tree = _img.OpenBmbt(ino, fork);
            using (var cur = tree.CreateCursor())
            {
                var v = new BmbtVisitor { Scanner = this, RootLevel = tree.Root.Height - 1 };
                cur.VisitBlocks(ref v);
            }
            // The walk reads every block but compares no node key with its child: a key that says another file
            // offset than the leaf it leads to is damage xfs_repair reports (and an rmapbt rebuilt from the leaves
            // would not mend it). The engine's checker compares them, in one more walk of the few bmbt forks (after
            // the cursor has let its buffers go).
            if (tree.Root.Height > 1)
            {
                var check = tree.Check();
                foreach (string violation in check.Violations) ForkProblem(where, violation);
            }
        }
        catch (CorruptionException e) { ForkProblem(where, e.Message); }
        catch (WalkAborted e) { ForkProblem(where, e.Message); }
        if (_bmbtBlocks.Count == 0) return;
        // bmbt blocks: sorted, merged per AG into runs (BMBT_BLOCK flag, plus ATTR_FORK for the attr fork).
        _bmbtBlocks.Sort();
        ulong flags = RmapbtOps.BmbtBlockFlag | (_attr ? RmapbtOps.AttrForkFlag : 0);
        ulong start = _bmbtBlocks[0], end = start + 1;
        for (int i = 1; i <= _bmbtBlocks.Count; i++)
        {
            if (i < _bmbtBlocks.Count)
            {
                ulong b = _bmbtBlocks[i];
                if (b == end && _geo.FsbToAgno(b) == _geo.FsbToAgno(start) && end - start < uint.MaxValue) { end++; continue; }
            }
            Emit(_geo.FsbToAgno(start), new RmapRecord(_geo.FsbToAgbno(start), (uint)(end - start), ino, flags));
            if (i < _bmbtBlocks.Count) { start = _bmbtBlocks[i]; end = start + 1; }
        }
    }

    void OnBmbtBlock(int level, long pointer, ReadOnlySpan<byte> block, int rootLevel)
    {
        if (level == rootLevel) return;   // the root lives in the inode
        if (!_bmbtSeen.Add(pointer)) throw new WalkAborted($"block {pointer} reached twice (cycle or cross-link)");
        _bmbtBlocks.Add((ulong)pointer);
        if (level != 0) return;
        int n = BtreeHeader.NumRecords(block);   // verified <= maxrecs on read
        for (int i = 0; i < n; i++)
            AddExtent(BmbtExtent.Read(block[(BtreeGeometry.LongHeaderSize + i * 16)..]));
    }
}
