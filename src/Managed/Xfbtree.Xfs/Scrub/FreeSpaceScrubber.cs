using Xfbtree.Btree;
using Xfbtree.Xfs.Format;
using Xfbtree.Xfs.Trees;

namespace Xfbtree.Xfs.Scrub;

/// <summary>
/// bnobt and cntbt of one AG. Source of truth: the free space the expected rmap set implies (every block of the AG
/// is in exactly one of a free extent and an rmap record, the AGFL being OWN_AG). The bnobt must list exactly those
/// extents in block order; every cntbt record must be one of them and the cntbt must hold as many. When the rmap
/// set is not usable (the scan met damage) the cntbt is compared with the bnobt instead. Structure (keys, pointers,
/// levels, siblings, CRC, magic, numrecs, record order and ranges) comes from the engine's checker.
/// </summary>
internal static class FreeSpaceScrubber
{
    /// <summary>Checks both trees; returns the bnobt and cntbt findings.</summary>
    public static (ScrubFinding Bnobt, ScrubFinding Cntbt) Check(AgScrubContext ctx)
    {
        var bno = new ScrubFinding("bnobt", ctx.AgNumber, ctx.Options.ProblemLimit);
        var cnt = new ScrubFinding("cntbt", ctx.AgNumber, ctx.Options.ProblemLimit);
        var agf = ctx.Scan.Agf;
        if (agf == null)
        {
            bno.Damage("the AGF is unreadable, so the tree cannot be located");
            cnt.Damage("the AGF is unreadable, so the tree cannot be located");
            return (bno, cnt);
        }
        var truth = ctx.FreeExtents;
        List<ulong>? bnoRecords = truth == null ? new List<ulong>() : null;
        if (truth == null) bno.Skip("not compared with the rmap: " + ctx.RmapUnusable);

        if (!agf.TreeRootUsable(AgfTree.Bnobt, ctx.Geometry)) bno.Damage($"AGF bnobt root {agf.BnoRoot} / level {agf.BnoLevel} unusable");
        else
        {
            var walk = new BnobtWalk(truth, bnoRecords, bno);
            var check = ctx.Image.OpenBnobt(agf, ctx.Store).Check(ctx.AgLength, walk.Record);
            AgScrubContext.AddViolations(bno, check);
            walk.Finish();
            ctx.BnobtBlocks = check.Blocks;
            ctx.BnobtHeight = ctx.CheckRoot(bno, agf.BnoRoot, BnobtOps.MagicValue);
            bno.Note = $"{check.Records} free extents, {walk.Blocks} blocks";
        }

        var reference = truth ?? bnoRecords;
        if (!agf.TreeRootUsable(AgfTree.Cntbt, ctx.Geometry)) cnt.Damage($"AGF cntbt root {agf.CntRoot} / level {agf.CntLevel} unusable");
        else
        {
            string against = truth != null ? "the rmap" : "the bnobt";
            long records = 0, notFree = 0;
            string? first = null;
            var check = ctx.Image.OpenCntbt(agf, ctx.Store).Check(ctx.AgLength, r =>
            {
                records++;
                uint s = AllocRecord.StartBlock(r), l = AllocRecord.BlockCount(r);
                if (reference != null && reference.BinarySearch(AgScrubContext.Pack(s, l)) < 0)
                {
                    notFree++;
                    first ??= $"[{s}, +{l})";
                }
            });
            AgScrubContext.AddViolations(cnt, check);
            ctx.CntbtBlocks = check.Blocks;
            ctx.CntbtHeight = ctx.CheckRoot(cnt, agf.CntRoot, CntbtOps.MagicValue);
            if (reference != null)
            {
                cnt.Damage(notFree, $"{notFree} records are not free extents per {against} (first {first})");
                if (records != reference.Count) cnt.Damage($"{records} records, but {against} has {reference.Count} free extents");
            }
            cnt.Note = $"{records} free extents";
        }
        return (bno, cnt);
    }

    /// <summary>Merge-join of the bnobt's records (block order) with the free extents the rmap implies.</summary>
    sealed class BnobtWalk(List<ulong>? truth, List<ulong>? collect, ScrubFinding finding)
    {
        int _next;
        long _missing, _extra;
        string? _firstMissing, _firstExtra;
        /// <summary>Blocks of all bnobt records.</summary>
        public long Blocks;

        /// <summary>One bnobt record, in walk order.</summary>
        public void Record(ReadOnlySpan<byte> r)
        {
            uint s = AllocRecord.StartBlock(r), l = AllocRecord.BlockCount(r);
            Blocks += l;
            collect?.Add(AgScrubContext.Pack(s, l));
            if (truth == null) return;
            while (_next < truth.Count && AgScrubContext.StartOf(truth[_next]) < s) Missing(truth[_next++]);
            if (_next < truth.Count && truth[_next] == AgScrubContext.Pack(s, l)) { _next++; return; }
            _extra++;
            _firstExtra ??= $"[{s}, +{l})";
        }

        void Missing(ulong gap)
        {
            _missing++;
            _firstMissing ??= $"[{AgScrubContext.StartOf(gap)}, +{AgScrubContext.LengthOf(gap)})";
        }

        /// <summary>Counts the free extents no record matched and reports the totals.</summary>
        public void Finish()
        {
            if (truth == null) { collect?.Sort(); return; }
            while (_next < truth.Count) Missing(truth[_next++]);
            finding.Damage(_extra, $"{_extra} records are not free extents per the rmap (first {_firstExtra})");
            finding.Damage(_missing, $"{_missing} free extents per the rmap are missing (first {_firstMissing})");
        }
    }
}
