using Xfbtree.Btree;
using Xfbtree.InMemory;
using Xfbtree.Storage;
using Xfbtree.Xfs.Format;
using Xfbtree.Xfs.Trees;

namespace Xfbtree.Xfs.Scan;

/// <summary>
/// The expected rmap records of one AG: an in-memory rmapbt (xfbtree: the generic engine with the rmapbt ops on
/// page-sized blocks in a partition of the scan's xfile). Records arrive already merged (the scanner merges at
/// the source, see docs/xfs-scan.md), so adding is a plain insert; a second record with the same key is damage
/// (the same block claimed twice by one owner at one offset) and is reported, not inserted.
/// Adding is thread-safe (one lock per AG); reading (cursors) is for after the scan.
/// </summary>
public sealed class AgRmapSet : IDisposable
{
    readonly Lock _lock = new();
    readonly BtreeCursor<RmapbtOps> _insertCursor;
    readonly byte[] _record = new byte[RmapbtOps.RecordLength];
    long _count;

    internal AgRmapSet(uint agno, uint agLength, Xfile xfile, long partitionStart, long partitionLength)
    {
        AgNumber = agno;
        Tree = new Xfbtree<RmapbtOps>(new RmapbtOps(true, agLength), xfile, agno, partitionStart, partitionLength);
        Tree.Store.TrackDirty = false;
        _insertCursor = Tree.CreateCursor();
    }

    public uint AgNumber { get; }
    /// <summary>The in-memory rmapbt (long-form blocks, same key order as the on-disk tree).</summary>
    public Xfbtree<RmapbtOps> Tree { get; }
    /// <summary>Records in the tree.</summary>
    public long Count => Interlocked.Read(ref _count);
    /// <summary>Bytes of xfile memory the tree occupies.</summary>
    public long BytesInUse => Tree.BytesInUse;

    /// <summary>Adds one record (thread-safe). False when a record with the same key exists.</summary>
    public bool Add(in RmapRecord record)
    {
        lock (_lock) return AddLocked(record);
    }

    bool AddLocked(in RmapRecord record)
    {
        record.Write(_record);
        if (!_insertCursor.Insert(_record)) return false;
        _count++;
        return true;
    }

    /// <summary>Adds records sorted in key order under one lock; duplicates are reported to <paramref name="problems"/>.</summary>
    internal void AddSorted(ReadOnlySpan<RmapRecord> sorted, ProblemList problems)
    {
        lock (_lock)
        {
            foreach (ref readonly var r in sorted)
                if (!AddLocked(r))
                    problems.Add(AgNumber, "rmap", $"block {r.StartBlock} (+{r.BlockCount}) mapped twice by {OwnerText(r.Owner)} at the same offset {r.Offset}");
        }
    }

    internal static string OwnerText(ulong owner) => RmapOwner.IsSpecial(owner) ? RmapOwner.Name(owner) : $"inode {owner}";

    /// <summary>A cursor over the expected records (use after the scan; one thread per cursor).</summary>
    public BtreeCursor<RmapbtOps> CreateCursor() => Tree.CreateCursor();

    public void Dispose()
    {
        _insertCursor.Dispose();
        Tree.Dispose();
    }
}

/// <summary>
/// Per-worker staging of records by destination AG. Inode forks map blocks in any AG, so a worker scanning AG a
/// produces records for every AG; they are buffered here, sorted, and inserted into the AG's set in batches (one
/// lock per batch, inserts in key order touch each leaf once).
/// </summary>
internal sealed class RmapBatcher
{
    readonly AgRmapSet?[] _sets;
    readonly RmapRecord[][] _buffers;
    readonly int[] _counts;
    readonly ProblemList[] _problems;
    readonly int _capacity;

    public RmapBatcher(AgRmapSet?[] sets, ProblemList[] problems, int capacity = 2048)
    {
        _sets = sets;
        _problems = problems;
        _capacity = capacity;
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
        _sets[agno]!.AddSorted(span, _problems[agno]);
        _counts[agno] = 0;
    }

    public void FlushAll()
    {
        for (uint a = 0; a < _sets.Length; a++) Flush(a);
    }
}
