using System.Buffers.Binary;
using Xfbtree.Btree;
using Xfbtree.Buffers;
using Xfbtree.Xfs.Format;
using Xfbtree.Xfs.Trees;
using Xfbtree.Xfs.Write.Engine;

namespace Xfbtree.Xfs.Write.Space;

/// <summary>
/// The engine's own consistency check of every AG (docs/xfs-format.md §9.2: `xfs_repair -n` misses some of
/// these): bnobt and cntbt hold the same extents, merged and non-overlapping; the AGF counters equal the trees
/// (freeblks, longest, flcount, btreeblks, rmap_blocks, refcount_blocks); the free list is consistent and none of
/// its blocks is free; OWN_AG rmap = bnobt + cntbt + rmapbt blocks + the AGFL exactly; OWN_REFC = refcountbt
/// blocks; every block of the AG is either mapped in the rmapbt or free, never both; the refcountbt is
/// canonical (counts ≥ 2, equal neighbours merged, no CoW records); consecutive rmap records are not mergeable;
/// each tree passes the structure checker. On a filesystem without an rmapbt the rmap parts are left out (and its AGF
/// rmap fields must stay zero). Takes each AG's lock while it looks (call it outside transactions).
/// </summary>
internal static class WriteInvariants
{
    public static List<string> Check(WriteEngine engine)
    {
        ArgumentNullException.ThrowIfNull(engine);
        var problems = new List<string>();
        for (uint agno = 0; agno < engine.Geometry.AgCount; agno++)
        {
            EngineAg ag = engine.Ag(agno);
            ag.Lock.Enter();
            try
            {
                CheckAg(engine, agno, problems);
            }
            catch (CorruptionException e)
            {
                problems.Add($"AG {agno}: {e.Message}");
            }
            finally
            {
                ag.Lock.Exit();
            }
        }
        return problems;
    }

    private sealed class BlockCollector : IBtreeBlockVisitor
    {
        public readonly List<uint> Blocks = new();

        public void Visit(int level, long pointer, ReadOnlySpan<byte> block) => Blocks.Add((uint)pointer);
    }

    private static List<uint> TreeBlocks<TOps>(Btree<TOps> tree) where TOps : struct, IBtreeOps
    {
        var c = new BlockCollector();
        using var cur = tree.CreateCursor();
        cur.VisitBlocks(ref c);
        return c.Blocks;
    }

    private static List<(uint Start, uint Length)> AllocRecords<TOps>(Btree<TOps> tree) where TOps : struct, IBtreeOps
    {
        var list = new List<(uint, uint)>();
        using var cur = tree.CreateCursor();
        for (bool ok = cur.MoveFirst(); ok; ok = cur.Increment())
        {
            list.Add((AllocRecord.StartBlock(cur.Current), AllocRecord.BlockCount(cur.Current)));
        }
        return list;
    }

    private static void CheckAg(WriteEngine engine, uint agno, List<string> problems)
    {
        XfsImage image = engine.Image;
        XfsGeometry geo = image.Geometry;
        string at = $"AG {agno}";
        Agf agf = image.ReadAgf(agno);
        foreach (string p in agf.Problems)
        {
            problems.Add($"{at}: AGF {p}");
        }
        Agfl agfl = image.ReadAgfl(agno, agf);
        foreach (string p in agfl.Problems)
        {
            problems.Add($"{at}: AGFL {p}");
        }
        uint agLength = geo.AgLength(agno);

        var bnobt = image.OpenBnobt(agf);
        var cntbt = image.OpenCntbt(agf);
        bool hasRmapbt = geo.Superblock.HasRmapbt;
        var rmapbt = hasRmapbt ? image.OpenRmapbt(agf) : null;
        var structures = new List<(string, BtreeCheckReport)> { ("bnobt", bnobt.Check()), ("cntbt", cntbt.Check()) };
        if (rmapbt is not null) structures.Add(("rmapbt", rmapbt.Check()));
        foreach (var (name, report) in structures)
        {
            foreach (string v in report.Violations)
            {
                problems.Add($"{at}: {name}: {v}");
            }
        }

        var byBno = AllocRecords(bnobt);
        var byCnt = AllocRecords(cntbt);
        var sortedCnt = new List<(uint, uint)>(byCnt);
        sortedCnt.Sort();
        if (!byBno.SequenceEqual(sortedCnt))
        {
            problems.Add($"{at}: bnobt ({byBno.Count} extents) and cntbt ({byCnt.Count} extents) differ");
        }
        for (int i = 1; i < byBno.Count; i++)
        {
            ulong prevEnd = (ulong)byBno[i - 1].Start + byBno[i - 1].Length;
            if (prevEnd > byBno[i].Start) problems.Add($"{at}: free extents [{byBno[i - 1].Start}, +{byBno[i - 1].Length}) and [{byBno[i].Start}, +{byBno[i].Length}) overlap");
            else if (prevEnd == byBno[i].Start) problems.Add($"{at}: free extents [{byBno[i - 1].Start}, +{byBno[i - 1].Length}) and [{byBno[i].Start}, +{byBno[i].Length}) are not merged");
        }
        long free = byBno.Sum(e => (long)e.Length);
        uint longest = byCnt.Count == 0 ? 0 : byCnt[^1].Length;
        if (agf.FreeBlocks != free) problems.Add($"{at}: agf_freeblks {agf.FreeBlocks}, the trees hold {free}");
        if (agf.Longest != longest) problems.Add($"{at}: agf_longest {agf.Longest}, the cntbt says {longest}");
        if (agf.FlCount != agfl.Blocks.Count) problems.Add($"{at}: agf_flcount {agf.FlCount}, the AGFL lists {agfl.Blocks.Count}");

        // Without an rmapbt its AGF fields stay zero and btreeblks counts the free-space trees alone.
        List<uint> bnoBlocks = TreeBlocks(bnobt), cntBlocks = TreeBlocks(cntbt), rmapBlocks = rmapbt is null ? [] : TreeBlocks(rmapbt);
        long btree = bnoBlocks.Count + cntBlocks.Count + rmapBlocks.Count - (rmapbt is null ? 2 : 3);
        if (rmapbt is null && (agf.RmapRoot != 0 || agf.RmapLevel != 0)) problems.Add($"{at}: no rmapbt, but the AGF has rmap root {agf.RmapRoot} level {agf.RmapLevel}");
        if (agf.BtreeBlocks != btree) problems.Add($"{at}: agf_btreeblks {agf.BtreeBlocks}, the trees have {btree} non-root blocks");
        if (agf.RmapBlocks != rmapBlocks.Count) problems.Add($"{at}: agf_rmap_blocks {agf.RmapBlocks}, the rmapbt has {rmapBlocks.Count}");

        List<uint> refcBlocks = new();
        if (geo.Superblock.HasReflink)
        {
            var refcbt = image.OpenRefcountbt(agf);
            foreach (string v in refcbt.Check().Violations)
            {
                problems.Add($"{at}: refcountbt: {v}");
            }
            refcBlocks = TreeBlocks(refcbt);
            if (agf.RefcountBlocks != refcBlocks.Count) problems.Add($"{at}: agf_refcount_blocks {agf.RefcountBlocks}, the refcountbt has {refcBlocks.Count}");
            CheckRefcounts(refcbt, at, problems);
        }

        // Free-list blocks are not free space.
        foreach (uint b in agfl.Blocks)
        {
            int i = byBno.FindLastIndex(e => e.Start <= b);
            if (i >= 0 && (ulong)byBno[i].Start + byBno[i].Length > b) problems.Add($"{at}: AGFL block {b} is also free in the bnobt");
        }

        if (rmapbt is null)
        {
            return; // no rmap to hold the rest against: the offline scrub's scan is that oracle (WriteEngineTestSupport)
        }

        // rmap: OWN_AG and OWN_REFC exactly; coverage of the AG; merged neighbours.
        var ownAg = new List<uint>();
        var ownRefc = new List<uint>();
        var mapped = new List<(ulong Start, ulong End)>();
        RmapRecord? previous = null;
        using (var cur = rmapbt.CreateCursor())
        {
            for (bool ok = cur.MoveFirst(); ok; ok = cur.Increment())
            {
                var r = RmapRecord.Read(cur.Current);
                if (r.Owner == RmapOwner.Ag) for (uint b = 0; b < r.BlockCount; b++) ownAg.Add(r.StartBlock + b);
                if (r.Owner == RmapOwner.Refc) for (uint b = 0; b < r.BlockCount; b++) ownRefc.Add(r.StartBlock + b);
                if (r.Owner == RmapOwner.Cow) problems.Add($"{at}: leftover CoW rmap {r}");
                if (previous is { } p && RmapEditor.Mergeable(p, r)) problems.Add($"{at}: rmap records {p} and {r} should be one record");
                previous = r;
                mapped.Add((r.StartBlock, (ulong)r.StartBlock + r.BlockCount));
            }
        }
        var expectAg = new List<uint>();
        expectAg.AddRange(bnoBlocks);
        expectAg.AddRange(cntBlocks);
        expectAg.AddRange(rmapBlocks);
        expectAg.AddRange(agfl.Blocks);
        expectAg.Sort();
        ownAg.Sort();
        if (!expectAg.SequenceEqual(ownAg))
        {
            var missing = expectAg.Except(ownAg).Take(5).ToList();
            var extra = ownAg.Except(expectAg).Take(5).ToList();
            problems.Add($"{at}: OWN_AG rmap covers {ownAg.Count} blocks, bnobt+cntbt+rmapbt+AGFL have {expectAg.Count} (missing {string.Join(',', missing)}; extra {string.Join(',', extra)})");
        }
        refcBlocks.Sort();
        ownRefc.Sort();
        if (!refcBlocks.SequenceEqual(ownRefc))
        {
            problems.Add($"{at}: OWN_REFC rmap covers {ownRefc.Count} blocks, the refcountbt has {refcBlocks.Count}");
        }
        mapped.Sort();
        var union = new List<(ulong Start, ulong End)>();
        foreach (var m in mapped)
        {
            if (union.Count > 0 && m.Start <= union[^1].End) union[^1] = (union[^1].Start, Math.Max(union[^1].End, m.End));
            else union.Add(m);
        }
        int u = 0;
        ulong covered = 0;
        foreach (var x in union) covered += x.End - x.Start;
        foreach (var (s, l) in byBno)
        {
            ulong e = (ulong)s + l;
            while (u < union.Count && union[u].End <= s) u++;
            if (u < union.Count && union[u].Start < e) problems.Add($"{at}: free extent [{s}, +{l}) is also mapped in the rmapbt");
        }
        if (covered + (ulong)free != agLength)
        {
            problems.Add($"{at}: rmap-mapped blocks {covered} + free {free} != AG length {agLength}");
        }
    }

    private static void CheckRefcounts(Btree<RefcountbtOps> tree, string at, List<string> problems)
    {
        using var cur = tree.CreateCursor();
        uint prevStart = 0, prevLen = 0, prevCount = 0;
        bool have = false;
        for (bool ok = cur.MoveFirst(); ok; ok = cur.Increment())
        {
            ReadOnlySpan<byte> r = cur.Current;
            uint start = BinaryPrimitives.ReadUInt32BigEndian(r), len = BinaryPrimitives.ReadUInt32BigEndian(r[4..]), count = BinaryPrimitives.ReadUInt32BigEndian(r[8..]);
            if ((start & RefcountbtOps.CowFlag) != 0)
            {
                problems.Add($"{at}: leftover CoW refcount record at {start & ~RefcountbtOps.CowFlag}");
                continue;
            }
            if (count < 2) problems.Add($"{at}: refcount record [{start}, +{len}) has count {count}");
            if (have && (ulong)prevStart + prevLen == start && prevCount == count) problems.Add($"{at}: refcount records at {prevStart} and {start} (count {count}) are not merged");
            prevStart = start;
            prevLen = len;
            prevCount = count;
            have = true;
        }
    }
}
