using System.Runtime.InteropServices;
using Xfbtree.Btree;
using Xfbtree.InMemory;
using Xfbtree.Storage;
using Xfbtree.Xfs.Format;
using Xfbtree.Xfs.Trees;

namespace Xfbtree.Xfs.Scan;

/// <summary>
/// The expected rmap records of one AG, ending up in an in-memory rmapbt (xfbtree: the generic engine with the
/// rmapbt ops on page-sized blocks in a partition of the scan's xfile).
/// </summary>
/// <remarks>
/// Two phases. While the scan runs, records (already merged at the source, see docs/xfs-scan.md) arrive in sorted
/// batches that are appended as runs to a staging partition of the same xfile (<see cref="AppendSorted"/>, thread-safe,
/// a memcpy per batch). <see cref="Seal"/> then merges the runs (k-way, at most 64 at a time) and bulk-loads the tree
/// with XFS's bulk loader, reporting records whose key appears twice (one block claimed twice by one owner at one
/// offset) and dropping the repeats, and returns the staging memory. Bulk loading is ~20x cheaper than inserting
/// each record, and the records never live in managed memory. After sealing, <see cref="Add"/> inserts single
/// records through a cursor (e.g. a repair adding OWN_AG records for the blocks it chooses).
/// </remarks>
internal sealed class AgRmapSet : IDisposable
{
    const int FanIn = 64;
    const int RunBufferRecords = 128;
    static readonly int RecordBytes = Marshal.SizeOf<RmapRecord>();

    readonly Lock _lock = new();
    readonly Xfile _xfile;
    readonly long _stageStart, _stageLength;
    readonly List<(long Offset, long Count)> _runs = new();
    long _stageEnd;           // bytes appended (relative to _stageStart)
    long _stageDiscarded;     // page-aligned prefix of the staging partition already returned
    readonly byte[] _record = new byte[RmapbtOps.RecordLength];
    BtreeCursor<RmapbtOps>? _insertCursor;
    long _count;
    long _staged;
    bool _sealed;

    internal AgRmapSet(uint agno, uint agLength, Xfile xfile, long treeStart, long treeLength, long stageStart, long stageLength)
    {
        AgNumber = agno;
        _xfile = xfile;
        _stageStart = stageStart;
        _stageLength = stageLength;
        Tree = new Xfbtree<RmapbtOps>(new RmapbtOps(true, agLength), xfile, agno, treeStart, treeLength);
        Tree.Store.TrackDirty = false;
    }

    public uint AgNumber { get; }
    /// <summary>The in-memory rmapbt (long-form blocks, same key order as the on-disk tree). Complete after <see cref="Seal"/>.</summary>
    public Xfbtree<RmapbtOps> Tree { get; }
    /// <summary>Records in the tree (after <see cref="Seal"/>).</summary>
    public long Count => Interlocked.Read(ref _count);
    /// <summary>Records appended so far (before sealing).</summary>
    public long Staged => Interlocked.Read(ref _staged);
    public bool IsSealed => _sealed;
    /// <summary>Bytes of xfile memory the tree occupies.</summary>
    public long BytesInUse => Tree.BytesInUse;

    /// <summary>Appends a batch sorted in key order as one run (thread-safe; before <see cref="Seal"/>).</summary>
    public void AppendSorted(ReadOnlySpan<RmapRecord> sorted)
    {
        if (sorted.IsEmpty) return;
        var bytes = MemoryMarshal.AsBytes(sorted);
        lock (_lock)
        {
            if (_sealed) throw new InvalidOperationException($"AG {AgNumber}: the expected set is sealed; use Add");
            if (_stageEnd + bytes.Length > _stageLength) throw new XfileFullException($"AG {AgNumber}: staging partition full");
            _xfile.Store(_stageStart + _stageEnd, bytes);
            _runs.Add((_stageEnd, sorted.Length));
            _stageEnd += bytes.Length;
            _staged += sorted.Length;
        }
    }

    /// <summary>
    /// Merges the staged runs and bulk-loads the tree; records whose key was already seen are reported to
    /// <paramref name="duplicate"/> and dropped. Idempotent.
    /// </summary>
    public void Seal(Action<RmapRecord>? duplicate = null)
    {
        lock (_lock)
        {
            if (_sealed) return;
            while (_runs.Count > FanIn) MergeFrontRuns();
            var merger = new RunMerger(this, _runs);
            long unique = 0;
            while (merger.Next(out var r, out bool dup))
            {
                if (dup) duplicate?.Invoke(r);
                else unique++;
            }
            if (unique > 0)
            {
                merger.Reset();
                var store = Tree.Store;
                long oldRoot = Tree.Root.Pointer;
                // Full blocks: the expected tree is mostly read (check, bulk-load source); later inserts split as usual.
                var plan = BtreeBulkLoader.ComputeGeometry(Tree.Tree.Geometry, unique, leafSlack: 0, nodeSlack: 0);
                var staged = new BtreeRootValue(BtreeHeader.NullPointer, 1);
                var staging = new Btree<RmapbtOps>(Tree.Tree.Ops, store, staged, new byte[16], AgNumber);
                var source = new MergeSource(merger);
                BtreeBulkLoader.Load(staging, plan, ref source, store.AllocateBlock, checkOrder: false);
                Tree.Root.Set(staged.Pointer, staged.Height);
                store.FreeBlock(oldRoot);
            }
            _count = unique;
            DiscardStage(_stageEnd);
            _runs.Clear();
            _sealed = true;
        }
    }

    /// <summary>Returns the staging pages below <paramref name="upTo"/> (all of them when it is the end).</summary>
    void DiscardStage(long upTo)
    {
        long page = _xfile.PageSize;
        long to = upTo == _stageEnd ? (upTo + page - 1) / page * page : upTo / page * page;
        to = Math.Min(to, _stageLength);
        if (to > _stageDiscarded) _xfile.Discard(_stageStart + _stageDiscarded, to - _stageDiscarded);
        _stageDiscarded = Math.Max(_stageDiscarded, to);   // always page aligned
    }

    /// <summary>Merges the first <see cref="FanIn"/> runs into one run appended at the end, keeping repeats.</summary>
    void MergeFrontRuns()
    {
        var front = _runs.GetRange(0, FanIn);
        var merger = new RunMerger(this, front);
        long outStart = _stageEnd, outCount = 0;
        var buf = new RmapRecord[RunBufferRecords * 8];
        int n = 0;
        while (merger.Next(out var r, out _))
        {
            buf[n++] = r;
            if (n == buf.Length) { Flush(); }
        }
        Flush();
        _runs.RemoveRange(0, FanIn);
        _runs.Add((outStart, outCount));
        DiscardStage(front[^1].Offset + front[^1].Count * RecordBytes);

        void Flush()
        {
            if (n == 0) return;
            var bytes = MemoryMarshal.AsBytes(buf.AsSpan(0, n));
            if (_stageEnd + bytes.Length > _stageLength) throw new XfileFullException($"AG {AgNumber}: staging partition full");
            _xfile.Store(_stageStart + _stageEnd, bytes);
            _stageEnd += bytes.Length;
            outCount += n;
            n = 0;
        }
    }

    /// <summary>k-way merge of sorted runs read back from the staging partition in small chunks.</summary>
    sealed class RunMerger
    {
        readonly AgRmapSet _set;
        readonly List<(long Offset, long Count)> _runs;
        readonly RmapRecord[][] _bufs;
        readonly int[] _pos, _len;
        readonly long[] _next;      // records of the run not yet loaded
        readonly long[] _readAt;    // byte offset of the next chunk
        readonly int[] _heap;       // run indices, min-heap by current record
        int _heapSize;
        RmapRecord _last;
        bool _haveLast;

        public RunMerger(AgRmapSet set, List<(long Offset, long Count)> runs)
        {
            _set = set;
            _runs = runs;
            int k = runs.Count;
            _bufs = new RmapRecord[k][];
            for (int i = 0; i < k; i++) _bufs[i] = new RmapRecord[(int)Math.Min(RunBufferRecords, Math.Max(1, runs[i].Count))];
            _pos = new int[k];
            _len = new int[k];
            _next = new long[k];
            _readAt = new long[k];
            _heap = new int[k];
            Reset();
        }

        public void Reset()
        {
            _heapSize = 0;
            _haveLast = false;
            for (int i = 0; i < _runs.Count; i++)
            {
                _next[i] = _runs[i].Count;
                _readAt[i] = _runs[i].Offset;
                _pos[i] = _len[i] = 0;
                if (Refill(i)) Push(i);
            }
        }

        bool Refill(int i)
        {
            if (_next[i] == 0) return false;
            int n = (int)Math.Min(_bufs[i].Length, _next[i]);
            var dest = MemoryMarshal.AsBytes(_bufs[i].AsSpan(0, n));
            _set._xfile.Load(_set._stageStart + _readAt[i], dest);
            _readAt[i] += dest.Length;
            _next[i] -= n;
            _pos[i] = 0;
            _len[i] = n;
            return true;
        }

        static int Cmp(in RmapRecord a, in RmapRecord b) => new RmapKeyComparer().Compare(a, b);
        ref RmapRecord Head(int run) => ref _bufs[run][_pos[run]];

        void Push(int run)
        {
            int i = _heapSize++;
            _heap[i] = run;
            while (i > 0)
            {
                int p = (i - 1) >> 1;
                if (Cmp(Head(_heap[p]), Head(_heap[i])) <= 0) break;
                (_heap[p], _heap[i]) = (_heap[i], _heap[p]);
                i = p;
            }
        }

        void SiftDown()
        {
            int i = 0;
            while (true)
            {
                int l = 2 * i + 1, r = l + 1, m = i;
                if (l < _heapSize && Cmp(Head(_heap[l]), Head(_heap[m])) < 0) m = l;
                if (r < _heapSize && Cmp(Head(_heap[r]), Head(_heap[m])) < 0) m = r;
                if (m == i) return;
                (_heap[m], _heap[i]) = (_heap[i], _heap[m]);
                i = m;
            }
        }

        /// <summary>The next record in key order; <paramref name="duplicate"/> when its key equals the previous one's.</summary>
        public bool Next(out RmapRecord record, out bool duplicate)
        {
            if (_heapSize == 0) { record = default; duplicate = false; return false; }
            int run = _heap[0];
            record = Head(run);
            if (++_pos[run] == _len[run] && !Refill(run))
            {
                _heap[0] = _heap[--_heapSize];
            }
            if (_heapSize > 0) SiftDown();
            duplicate = _haveLast && Cmp(_last, record) == 0;
            if (!duplicate) { _last = record; _haveLast = true; }
            return true;
        }
    }

    struct MergeSource(RunMerger merger) : IBtreeRecordSource
    {
        public readonly void Fill(Span<byte> destination, int count)
        {
            for (int i = 0; i < count;)
            {
                if (!merger.Next(out var r, out bool dup)) throw new InvalidOperationException("staged records ran out during the bulk load");
                if (dup) continue;
                r.Write(destination.Slice(i * RmapbtOps.RecordLength, RmapbtOps.RecordLength));
                i++;
            }
        }
    }

    /// <summary>Inserts one record into a sealed set (thread-safe). False when a record with the same key exists.</summary>
    public bool Add(in RmapRecord record)
    {
        lock (_lock)
        {
            if (!_sealed) throw new InvalidOperationException($"AG {AgNumber}: seal the expected set before adding single records");
            record.Write(_record);
            _insertCursor ??= Tree.CreateCursor();
            if (!_insertCursor.Insert(_record)) return false;
            _count++;
            return true;
        }
    }

    internal static string OwnerText(ulong owner) => RmapOwner.IsSpecial(owner) ? RmapOwner.Name(owner) : $"inode {owner}";

    /// <summary>A cursor over the expected records (after <see cref="Seal"/>; one thread per cursor).</summary>
    public BtreeCursor<RmapbtOps> CreateCursor()
    {
        if (!_sealed) throw new InvalidOperationException($"AG {AgNumber}: the expected set is not sealed yet");
        _insertCursor?.Release();
        return Tree.CreateCursor();
    }

    public void Dispose()
    {
        _insertCursor?.Dispose();
        _insertCursor = null;
        Tree.Dispose();
        if (_stageEnd > _stageDiscarded) DiscardStage(_stageEnd);
    }
}

/// <summary>
/// Per-worker staging of records by destination AG. Inode forks map blocks in any AG, so a worker scanning AG a
/// produces records for every AG; they are buffered here, sorted, and appended to the AG's set as one run.
/// </summary>
internal sealed class RmapBatcher
{
    readonly AgRmapSet?[] _sets;
    readonly RmapRecord[][] _buffers;
    readonly int[] _counts;
    readonly int _capacity;

    /// <param name="sets">Destination sets by AG (null: AG not selected).</param>
    /// <param name="capacity">Records per AG batch; default: 4096, fewer with many AGs so a worker's batches stay
    /// within ~64k records (1.5 MiB) however many AGs there are (at least 256 per AG).</param>
    public RmapBatcher(AgRmapSet?[] sets, int capacity = 0)
    {
        _sets = sets;
        _capacity = capacity > 0 ? capacity : Math.Clamp(65536 / Math.Max(1, sets.Length), 256, 4096);
        _buffers = new RmapRecord[sets.Length][];
        _counts = new int[sets.Length];
    }

    public long Emitted { get; private set; }

    public void Add(uint agno, in RmapRecord r)
    {
        if (_sets[agno] is null) return;   // AG not selected
        var buf = _buffers[agno] ??= new RmapRecord[_capacity];
        buf[_counts[agno]++] = r;
        Emitted++;
        if (_counts[agno] == _capacity) Flush(agno);
    }

    void Flush(uint agno)
    {
        int n = _counts[agno];
        if (n == 0) return;
        var span = _buffers[agno].AsSpan(0, n);
        span.Sort(new RmapKeyComparer());
        _sets[agno]!.AppendSorted(span);
        _counts[agno] = 0;
    }

    public void FlushAll()
    {
        for (uint a = 0; a < _sets.Length; a++) Flush(a);
    }
}
