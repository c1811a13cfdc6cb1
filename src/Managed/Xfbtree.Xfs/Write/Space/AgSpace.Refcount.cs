using System.Buffers.Binary;
using Xfbtree.Btree;
using Xfbtree.Buffers;
using Xfbtree.Xfs.Trees;
using Xfbtree.Xfs.Write.Engine;

namespace Xfbtree.Xfs.Write.Space;

/// <summary>Refcount btree updates with xfs_refcount_adjust's outcome (docs/xfs-format.md §9.6).</summary>
internal sealed partial class AgSpace
{
    private readonly record struct RefcountExtent(uint Start, uint Length, uint Count)
    {
        public ulong End => (ulong)Start + Length;
    }

    /// <summary>
    /// Adds <paramref name="delta"/> (+1 or −1) to the reference count of every block of [agbno, +length).
    /// Blocks without a record have count 1. The result is canonical: only counts ≥ 2 have records, adjacent
    /// records with equal counts are merged (the neighbours just outside the range included), a record that
    /// drops to 1 disappears, a gap that is incremented becomes a count-2 record. A gap that is decremented
    /// reached 0: its blocks have no owner left and are returned for the caller to free.
    /// </summary>
    public IReadOnlyList<(uint AgBlock, uint Length)> RefcountAdjust(uint agbno, uint length, int delta)
    {
        if (length == 0 || (ulong)agbno + length > agLength || agbno < geo.FirstFreeBlock)
        {
            throw new XfsWriteException(WriteErrorKind.InvalidArgument, $"{tx.Operation}: refcount range [{agbno}, +{length}) outside AG {AgNumber}");
        }
        FixFreeList();
        ulong end = (ulong)agbno + length;
        // The records overlapping the range and the neighbours that touch it (they may merge).
        List<RefcountExtent> old = QueryRefcounts(agbno == 0 ? 0 : agbno - 1, (uint)Math.Min(end, uint.MaxValue - 1));
        var freed = new List<(uint, uint)>();
        var pieces = new List<RefcountExtent>();
        ulong at = old.Count > 0 ? Math.Min(old[0].Start, agbno) : agbno;
        ulong spanEnd = old.Count > 0 ? Math.Max(old[^1].End, end) : end;
        int next = 0;
        while (at < spanEnd)
        {
            // The piece starting at `at`: inside a record, or in a gap (count 1), cut at the range's ends.
            uint count;
            ulong pieceEnd;
            if (next < old.Count && old[next].Start <= at)
            {
                count = old[next].Count;
                pieceEnd = old[next].End;
            }
            else
            {
                count = 1;
                pieceEnd = next < old.Count ? old[next].Start : spanEnd;
            }
            if (at < agbno && pieceEnd > agbno) pieceEnd = agbno;
            if (at < end && pieceEnd > end) pieceEnd = end;
            bool inside = at >= agbno && at < end;
            long newCount = inside ? count + delta : count;
            if (newCount < 0 || newCount > uint.MaxValue)
            {
                throw new XfsWriteException(WriteErrorKind.InvalidArgument, $"{tx.Operation}: refcount of [{at}, {pieceEnd}) would become {newCount}");
            }
            if (newCount == 0)
            {
                freed.Add(((uint)at, (uint)(pieceEnd - at)));
            }
            else if (newCount >= 2)
            {
                if (pieces.Count > 0 && pieces[^1].End == at && pieces[^1].Count == newCount && pieces[^1].Length + (pieceEnd - at) <= RefcountbtOps.MaxExtentLength)
                {
                    pieces[^1] = pieces[^1] with { Length = pieces[^1].Length + (uint)(pieceEnd - at) };
                }
                else
                {
                    pieces.Add(new RefcountExtent((uint)at, (uint)(pieceEnd - at), (uint)newCount));
                }
            }
            at = pieceEnd;
            if (next < old.Count && at >= old[next].End)
            {
                next++;
            }
        }
        // Apply the difference: records that stay exactly as they were are not touched.
        var keep = new HashSet<RefcountExtent>(old);
        keep.IntersectWith(pieces);
        var tree = Refcountbt();
        Span<byte> rec = stackalloc byte[12];
        foreach (RefcountExtent r in old)
        {
            if (keep.Contains(r))
            {
                continue;
            }
            using var cur = tree.CreateCursor();
            BinaryPrimitives.WriteUInt32BigEndian(rec, r.Start);
            if (!cur.Lookup(rec[..4], BtreeLookup.Equal))
            {
                throw new CorruptionException("refcountbt", geo.AgBlockToDaddr(AgNumber, 0), $"AG {AgNumber}: refcount record at {r.Start} vanished");
            }
            cur.Delete();
        }
        foreach (RefcountExtent r in pieces)
        {
            if (keep.Contains(r))
            {
                continue;
            }
            using var cur = tree.CreateCursor();
            BinaryPrimitives.WriteUInt32BigEndian(rec, r.Start);
            BinaryPrimitives.WriteUInt32BigEndian(rec[4..], r.Length);
            BinaryPrimitives.WriteUInt32BigEndian(rec[8..], r.Count);
            if (!cur.Insert(rec))
            {
                throw new CorruptionException("refcountbt", geo.AgBlockToDaddr(AgNumber, 0), $"AG {AgNumber}: refcount record at {r.Start} exists");
            }
        }
        return freed;
    }

    /// <summary>True when some block of the range has a (shared-domain) refcount record.</summary>
    public bool IsShared(uint agbno, uint length)
    {
        if (!geo.Superblock.HasReflink || length == 0)
        {
            return false;
        }
        return QueryRefcounts(agbno, (uint)Math.Min((ulong)agbno + length - 1, uint.MaxValue - 1)).Exists(r => r.End > agbno && r.Start < (ulong)agbno + length);
    }

    /// <summary>Shared-domain records (start, length, count) overlapping blocks [first, last], in order.</summary>
    public List<(uint Start, uint Length, uint Count)> RefcountRecords(uint first, uint last) =>
        QueryRefcounts(first, last).ConvertAll(r => (r.Start, r.Length, r.Count));

    /// <summary>Shared-domain records overlapping blocks [first, last], in order.</summary>
    private List<RefcountExtent> QueryRefcounts(uint first, uint last)
    {
        var list = new List<RefcountExtent>();
        var tree = Refcountbt();
        using var cur = tree.CreateCursor();
        Span<byte> key = stackalloc byte[4];
        BinaryPrimitives.WriteUInt32BigEndian(key, first);
        bool ok = cur.Lookup(key, BtreeLookup.LessOrEqual) || cur.MoveFirst();
        while (ok)
        {
            ReadOnlySpan<byte> r = cur.Current;
            uint start = BinaryPrimitives.ReadUInt32BigEndian(r);
            if ((start & RefcountbtOps.CowFlag) != 0 || start > last)
            {
                break;
            }
            var e = new RefcountExtent(start, BinaryPrimitives.ReadUInt32BigEndian(r[4..]), BinaryPrimitives.ReadUInt32BigEndian(r[8..]));
            if (e.End > first)
            {
                list.Add(e);
            }
            ok = cur.Increment();
        }
        return list;
    }
}
