using System.Buffers.Binary;
using Xfbtree.Xfs.Format;
using Xfbtree.Xfs.Trees;

namespace Xfbtree.Xfs.Scrub;

/// <summary>
/// refcountbt of one AG (reflink filesystems). Sources of truth: the reference count of every block implied by the
/// overlaps of the expected rmap set's data records (inode-owned, not bmbt blocks, not attr forks: the only records
/// that may share blocks), compared block range by block range with the shared-domain records (so records split or
/// merged differently but saying the same counts agree); and the on-disk rmapbt's OWN_COW records for the CoW staging
/// domain. Structure from the engine's checker (which also refuses refcount 1 in the shared domain, &gt; 1 in the CoW one).
/// </summary>
internal static class RefcountScrubber
{
    /// <summary>The refcountbt finding, or null without reflink.</summary>
    public static ScrubFinding? Check(AgScrubContext ctx)
    {
        if (!ctx.Image.Superblock.HasReflink) return null;
        var f = new ScrubFinding("refcountbt", ctx.AgNumber, ctx.Options.ProblemLimit);
        var agf = ctx.Scan.Agf;
        if (agf == null) { f.Damage("the AGF is unreadable, so the tree cannot be located"); return f; }
        if (!agf.TreeRootUsable(AgfTree.Refcountbt, ctx.Geometry)) { f.Damage($"AGF refcountbt root {agf.RefcountRoot} / level {agf.RefcountLevel} unusable"); return f; }
        var shared = ctx.Scratch.RefcountShared;
        var cow = ctx.Scratch.RefcountCow;
        shared.Clear();
        cow.Clear();
        var check = ctx.Image.OpenRefcountbt(agf, ctx.Store).Check(ctx.AgLength, r =>
        {
            uint s = BinaryPrimitives.ReadUInt32BigEndian(r), l = BinaryPrimitives.ReadUInt32BigEndian(r[4..]), c = BinaryPrimitives.ReadUInt32BigEndian(r[8..]);
            if ((s & RefcountbtOps.CowFlag) != 0)
            {
                s &= ~RefcountbtOps.CowFlag;
                if (cow.Count > 0 && (ulong)cow[^1].Start + cow[^1].Length == s) cow[^1] = (cow[^1].Start, cow[^1].Length + l);
                else cow.Add((s, l));
            }
            else shared.Add((s, l, c));
        });
        AgScrubContext.AddViolations(f, check);
        ctx.RefcountBlocks = check.Blocks;
        ctx.RefcountHeight = ctx.CheckRoot(f, agf.RefcountRoot, RefcountbtOps.MagicValue);
        f.Note = $"{shared.Count} shared extents, {cow.Count} CoW staging extents";

        if (ctx.RmapUnusable != null) f.Skip("reference counts not compared with the rmap: " + ctx.RmapUnusable);
        else CompareCounts(f, ctx.ImpliedShared!, shared);

        // No rmapbt: no independent record of the CoW staging extents (the scan's OWN_COW come from the refcountbt).
        if (!ctx.HasRmapbt) return f;
        if (ctx.OnDiskCow is not { } onDiskCow) f.Skip("CoW staging extents not compared with the rmapbt: " + ctx.OnDiskRmapUnusable);
        else
        {
            long differ = 0;
            string? first = null;
            var disk = new HashSet<(uint, uint)>(onDiskCow);
            foreach (var c in cow) if (!disk.Remove(c)) { differ++; first ??= $"CoW extent [{c.Start}, +{c.Length}) is not OWN_COW in the rmapbt"; }
            foreach (var c in disk) { differ++; first ??= $"OWN_COW record [{c.Item1}, +{c.Item2}) of the rmapbt has no CoW staging record"; }
            f.Damage(differ, $"{differ} CoW staging extents differ from the rmapbt (first: {first})");
        }
        return f;
    }

    /// <summary>Compares two step functions of block → count (uncovered = 0, for the shared domain "1 or 0").</summary>
    static void CompareCounts(ScrubFinding f, List<(uint Start, uint Length, uint Count)> implied, List<(uint Start, uint Length, uint Count)> disk)
    {
        long ranges = 0;
        string? first = null;
        ulong pos = 0, mismatchEnd = ulong.MaxValue;
        int i = 0, j = 0;
        static (ulong Boundary, uint Count) At(List<(uint Start, uint Length, uint Count)> l, int k, ulong pos)
        {
            if (k >= l.Count) return (ulong.MaxValue, 0);
            return pos < l[k].Start ? (l[k].Start, 0) : ((ulong)l[k].Start + l[k].Length, l[k].Count);
        }
        while (i < implied.Count || j < disk.Count)
        {
            var (ba, ca) = At(implied, i, pos);
            var (bb, cb) = At(disk, j, pos);
            ulong next = Math.Min(ba, bb);
            if (next <= pos) { if (j < disk.Count && bb <= pos) j++; if (i < implied.Count && ba <= pos) i++; continue; }   // overlapping disk records: the checker reports the order
            if (ca != cb)
            {
                if (mismatchEnd != pos) { ranges++; first ??= $"blocks {pos}-{next - 1}: refcount {(cb == 0 ? "none" : cb.ToString(System.Globalization.CultureInfo.InvariantCulture))} on disk, {(ca == 0 ? "none (not shared)" : ca.ToString(System.Globalization.CultureInfo.InvariantCulture))} implied by the rmap"; }
                mismatchEnd = next;
            }
            pos = next;
            if (i < implied.Count && pos >= (ulong)implied[i].Start + implied[i].Length) i++;
            if (j < disk.Count && pos >= (ulong)disk[j].Start + disk[j].Length) j++;
        }
        f.Damage(ranges, $"{ranges} block ranges differ from the reference counts the rmap implies (first: {first})");
    }
}
