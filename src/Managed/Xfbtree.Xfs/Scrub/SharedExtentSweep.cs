using Xfbtree.Xfs.Format;
using Xfbtree.Xfs.Trees;

namespace Xfbtree.Xfs.Scrub;

/// <summary>
/// The reference counts implied by the overlaps of an AG's rmap records of data blocks (inode-owned, not bmbt
/// blocks, not attr forks: the only records that may share blocks): fed the records in start order, it yields the
/// shared extents (count 2 or more), ascending, maximal (adjacent ranges of equal count merged). A sweep over record
/// starts with a min-heap of the active records' ends: memory is the deepest overlap, not the record count. Used by
/// the refcountbt check (against the expected rmap set) and its repair (from the on-disk rmapbt).
/// </summary>
internal sealed class SharedExtentSweep
{
    private readonly List<(uint Start, uint Length, uint Count)> result = new();
    private readonly PriorityQueue<ulong, ulong> ends = new();
    private ulong pos;

    /// <summary>Starts over (the result list and the heap keep their capacity: the scrub reuses one sweep for every AG).</summary>
    public void Reset()
    {
        result.Clear();
        ends.Clear();
        pos = 0;
    }

    /// <summary>Adds one rmap record (records must come in start order); records that cannot share are skipped.</summary>
    public void Add(in RmapRecord r)
    {
        if (RmapOwner.IsSpecial(r.Owner) || r.IsBmbtBlock || r.IsAttrFork) return;
        Advance(r.StartBlock);
        ulong e = (ulong)r.StartBlock + r.BlockCount;
        ends.Enqueue(e, e);
    }

    /// <summary>The shared extents, after the last record.</summary>
    public List<(uint Start, uint Length, uint Count)> Finish()
    {
        Advance(ulong.MaxValue >> 1);
        return result;
    }

    private void Emit(ulong s, ulong e, int count)
    {
        if (count < 2 || e <= s) return;
        if (result.Count > 0 && (ulong)result[^1].Start + result[^1].Length == s && result[^1].Count == (uint)count)
            result[^1] = (result[^1].Start, (uint)(e - result[^1].Start), (uint)count);
        else result.Add(((uint)s, (uint)(e - s), (uint)count));
    }

    private void Advance(ulong target)
    {
        while (ends.Count > 0 && ends.Peek() <= target)
        {
            ulong end = ends.Peek();
            Emit(pos, end, ends.Count);
            pos = Math.Max(pos, end);
            while (ends.Count > 0 && ends.Peek() == end) ends.Dequeue();
        }
        Emit(pos, target, ends.Count);
        pos = Math.Max(pos, target);
    }
}
