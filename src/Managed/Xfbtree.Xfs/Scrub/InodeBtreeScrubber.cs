using System.Numerics;
using Xfbtree.Buffers;
using Xfbtree.Xfs.Format;
using Xfbtree.Xfs.Trees;

namespace Xfbtree.Xfs.Scrub;

/// <summary>
/// inobt and finobt of one AG. Sources of truth: the inode cores (every inode of a chunk that is not a hole must
/// be a valid core, in use exactly when its free bit is clear), the on-disk rmapbt's OWN_INODES records (the
/// allocated blocks of every chunk, sparse chunks included) and each other (the finobt holds exactly the inobt
/// records with free inodes, field for field). Also per record: the free count against the free mask, the count
/// against the hole mask, holes marked free, the chunk inside the AG. Every in-use inode core read here is handed to
/// the link count scan.
/// </summary>
internal static class InodeBtreeScrubber
{
    /// <summary>Checks both trees; the finobt finding is null without the finobt feature.</summary>
    public static (ScrubFinding Inobt, ScrubFinding? Finobt) Check(AgScrubContext ctx, LinkCountScrubber? links)
    {
        var geo = ctx.Geometry;
        var sb = ctx.Image.Superblock;
        bool sparse = sb.HasSparseInodes;
        var ino = new ScrubFinding("inobt", ctx.AgNumber, ctx.Options.ProblemLimit);
        var fino = sb.HasFinobt ? new ScrubFinding("finobt", ctx.AgNumber, ctx.Options.ProblemLimit) : null;
        var agi = ctx.Scan.Agi;
        if (agi == null)
        {
            ino.Damage("the AGI is unreadable, so the tree cannot be located");
            fino?.Damage("the AGI is unreadable, so the tree cannot be located");
            return (ino, fino);
        }

        List<InobtRecord>? records = null;
        if (!agi.TreeRootUsable(AgiTree.Inobt, geo)) ino.Damage($"AGI inobt root {agi.Root} / level {agi.Level} unusable");
        else
        {
            records = new List<InobtRecord>();
            var list = records;
            var check = ctx.Image.OpenInobt(agi, AgiTree.Inobt, ctx.Store).Check(ctx.AgLength, r => list.Add(InobtRecord.Read(r, sparse)));
            AgScrubContext.AddViolations(ino, check);
            ctx.InobtBlocks = check.Blocks;
            ctx.InobtHeight = ctx.CheckRoot(ino, agi.Root, InobtOps.InobtMagic);
            long inodes = 0, free = 0;
            foreach (var rec in records)
            {
                inodes += sparse ? rec.Count : InobtRecord.InodesPerChunk;
                free += rec.FreeCount;
                CheckRecord(ctx, ino, rec, sparse);
            }
            ctx.InobtInodes = inodes;
            ctx.Unlinked = new UnlinkedInodeState(records);
            ctx.InobtFreeInodes = free;
            CheckChunksAgainstRmap(ctx, ino, records);
            long cores = 0;
            foreach (var rec in records)
                if (InodeChunkLayout.ChunkInsideAg(geo, ctx.AgNumber, rec.StartIno)) cores += CheckCores(ctx, ino, rec, links);
            ino.Note = $"{records.Count} chunks, {cores} inode cores";
        }

        if (fino != null)
        {
            if (!agi.TreeRootUsable(AgiTree.Finobt, geo)) fino.Damage($"AGI finobt root {agi.FreeRoot} / level {agi.FreeLevel} unusable");
            else
            {
                var frecs = new List<InobtRecord>();
                var check = ctx.Image.OpenInobt(agi, AgiTree.Finobt, ctx.Store).Check(ctx.AgLength, r => frecs.Add(InobtRecord.Read(r, sparse)));
                AgScrubContext.AddViolations(fino, check);
                ctx.FinobtBlocks = check.Blocks;
                ctx.FinobtHeight = ctx.CheckRoot(fino, agi.FreeRoot, InobtOps.FinobtMagic);
                if (records != null) CompareFinobt(fino, records, frecs);
                else fino.Skip("not compared with the inobt, which cannot be read");
                fino.Note = $"{frecs.Count} chunks with free inodes";
            }
        }
        return (ino, fino);
    }

    static void CheckRecord(AgScrubContext ctx, ScrubFinding f, in InobtRecord rec, bool sparse)
    {
        if (!InodeChunkLayout.ChunkInsideAg(ctx.Geometry, ctx.AgNumber, rec.StartIno)) { f.Damage($"chunk {rec.StartIno} outside the AG or misaligned"); return; }
        uint alignment = InodeChunkLayout.ChunkAlignmentInodes(ctx.Geometry);
        if (rec.StartIno % alignment != 0) f.Damage($"chunk {rec.StartIno} is not aligned to {alignment} inodes (sb_inoalignmt)");
        int realFree = BitOperations.PopCount(rec.RealFree);
        if (rec.FreeCount != realFree) f.Damage($"chunk {rec.StartIno}: freecount {rec.FreeCount}, but the free mask has {realFree} free inodes");
        if (sparse)
        {
            if (rec.Count != rec.AllocatedInodes) f.Damage($"chunk {rec.StartIno}: count {rec.Count}, but the hole mask leaves {rec.AllocatedInodes} inodes");
            if ((rec.Holes & ~rec.Free) != 0) f.Damage($"chunk {rec.StartIno}: holes marked in use");
        }
    }

    /// <summary>The allocated blocks of the chunks, merged into runs, must be exactly the rmapbt's OWN_INODES records.</summary>
    static void CheckChunksAgainstRmap(AgScrubContext ctx, ScrubFinding f, List<InobtRecord> records)
    {
        if (ctx.OnDiskInodeChunks is not { } onDisk) { f.Skip("chunks not compared with the rmapbt: " + ctx.OnDiskRmapUnusable); return; }
        var runs = new List<(uint Start, uint Length)>();
        var blocks = new List<(uint Start, uint Length)>();
        foreach (var rec in records)
        {
            if (!InodeChunkLayout.ChunkInsideAg(ctx.Geometry, ctx.AgNumber, rec.StartIno)) continue;
            blocks.Clear();
            InodeChunkLayout.AllocatedBlockRuns(ctx.Geometry, rec.StartIno, rec.HoleMask, blocks);
            foreach (var (s, l) in blocks)
            {
                // Runs touching or overlapping the previous one merge, as the rmap merges them (several chunks share a
                // block when it holds more than 64 inodes).
                if (runs.Count > 0 && s <= (ulong)runs[^1].Start + runs[^1].Length)
                {
                    var last = runs[^1];
                    runs[^1] = (last.Start, (uint)Math.Max((ulong)last.Start + last.Length, (ulong)s + l) - last.Start);
                }
                else runs.Add((s, l));
            }
        }
        int i = 0, j = 0;
        long missing = 0, extra = 0;
        string? firstMissing = null, firstExtra = null;
        // Blame: the inode cores decide which side is wrong. A chunk run of the inobt whose blocks hold the inode
        // cores they should is right, so its absence from the OWN_INODES records is the rmapbt's damage (the rmapbt
        // line reports it: its expected set has the run from the inobt); an OWN_INODES record over blocks that hold no
        // such cores is the rmapbt's damage too. Blaming the inobt there had its repair rebuild it from the damaged
        // rmapbt, dropping every inode of a live chunk.
        while (i < runs.Count || j < onDisk.Count)
        {
            if (j >= onDisk.Count || (i < runs.Count && runs[i].Start < onDisk[j].Start))
            {
                if (!HoldsInodeCores(ctx, runs[i].Start, runs[i].Length)) { missing++; firstMissing ??= $"[{runs[i].Start}, +{runs[i].Length})"; }
                i++;
            }
            else if (i >= runs.Count || onDisk[j].Start < runs[i].Start)
            {
                if (HoldsInodeCores(ctx, onDisk[j].Start, onDisk[j].Length)) { extra++; firstExtra ??= $"[{onDisk[j].Start}, +{onDisk[j].Length})"; }
                j++;
            }
            else
            {
                if (runs[i].Length != onDisk[j].Length)
                {
                    // The longer side's blocks past the shorter one decide: cores there mean that side is right.
                    uint shorter = Math.Min(runs[i].Length, onDisk[j].Length), longer = Math.Max(runs[i].Length, onDisk[j].Length);
                    bool tailHoldsCores = HoldsInodeCores(ctx, runs[i].Start + shorter, longer - shorter);
                    if (tailHoldsCores != (runs[i].Length > onDisk[j].Length)) { missing++; firstMissing ??= $"[{runs[i].Start}, +{runs[i].Length}) (rmapbt: +{onDisk[j].Length})"; }
                }
                i++; j++;
            }
        }
        f.Damage(missing, $"{missing} chunk block runs are not OWN_INODES in the rmapbt (first {firstMissing})");
        f.Damage(extra, $"{extra} OWN_INODES records of the rmapbt belong to no chunk (first {firstExtra})");
    }

    /// <summary>True when every block of the run (at most 64 looked at) holds, in its first slot, the inode core its
    /// position says (magic and di_ino): the blocks are an inode chunk's, whatever the rmapbt says of them.</summary>
    static bool HoldsInodeCores(AgScrubContext ctx, uint start, uint length)
    {
        var geo = ctx.Geometry;
        if (length == 0 || (ulong)start + length > ctx.AgLength) return false;
        for (uint b = start; b < start + Math.Min(length, 64u); b++)
        {
            BlockBuffer buf;
            try { buf = ctx.ReadBlock(b); }
            catch (Exception e) when (e is CorruptionException or IOException) { return false; }
            try
            {
                var d = new Dinode(buf.Span[..geo.InodeSize]);
                uint agino = b << geo.InodesPerBlockLog;
                if (d.Magic != Dinode.MagicValue || d.Ino != geo.AginoToIno(ctx.AgNumber, agino)) return false;
            }
            finally { ctx.Image.Cache.Release(buf); }
        }
        return true;
    }

    /// <summary>Reads every non-hole inode of the chunk: a valid core, in use exactly when its free bit is clear.</summary>
    static long CheckCores(AgScrubContext ctx, ScrubFinding f, in InobtRecord rec, LinkCountScrubber? links)
    {
        var geo = ctx.Geometry;
        int isz = geo.InodeSize;
        long cores = 0;
        uint heldBlock = uint.MaxValue;
        BlockBuffer? buf = null;
        try
        {
            for (int i = 0; i < InobtRecord.InodesPerChunk; i++)
            {
                if (rec.IsHole(i)) continue;
                uint agino = rec.StartIno + (uint)i;
                uint agbno = geo.AginoToAgbno(agino);
                ulong inum = geo.AginoToIno(ctx.AgNumber, agino);
                if (agbno != heldBlock)
                {
                    if (buf != null) { ctx.Image.Cache.Release(buf); buf = null; }
                    heldBlock = agbno;
                    try { buf = ctx.ReadBlock(agbno); }
                    catch (Exception e) when (e is CorruptionException or IOException)
                    {
                        f.Damage($"inode cluster block {agbno} unreadable: {e.Message}");
                        if (ctx.Unlinked != null) ctx.Unlinked.CoresComplete = false;
                        continue;
                    }
                }
                if (buf == null) continue;
                var core = buf.Span.Slice(geo.AginoToSlot(agino) * isz, isz);
                var d = new Dinode(core);
                cores++;
                bool free = (rec.Free & (1UL << i)) != 0;
                if (d.Magic != Dinode.MagicValue)
                {
                    f.Damage($"inode {inum}: bad magic 0x{d.Magic:x4}");
                    if (ctx.Unlinked != null) ctx.Unlinked.CoresComplete = false;
                    continue;
                }
                ctx.Unlinked?.OnCore(agino, !free && d.Mode != 0, d.NLink, d.NextUnlinked);
                if (free && d.Mode != 0) f.Damage($"inode {inum} is free in the inobt but its core is in use (mode 0{Convert.ToString(d.Mode, 8)})");
                else if (!free && d.Mode == 0) f.Damage($"inode {inum} is in use in the inobt but its core is free");
                else if (!free && links != null) links.OnInode(inum, core);
            }
        }
        finally
        {
            if (buf != null) ctx.Image.Cache.Release(buf);
        }
        return cores;
    }

    static void CompareFinobt(ScrubFinding f, List<InobtRecord> inobt, List<InobtRecord> finobt)
    {
        int i = 0, j = 0;
        long differ = 0;
        string? first = null;
        void Differ(string what) { differ++; first ??= what; }
        while (true)
        {
            while (i < inobt.Count && inobt[i].RealFree == 0 && inobt[i].FreeCount == 0) i++;
            if (i >= inobt.Count && j >= finobt.Count) break;
            if (j >= finobt.Count || (i < inobt.Count && inobt[i].StartIno < finobt[j].StartIno)) { Differ($"chunk {inobt[i].StartIno} has free inodes but no finobt record"); i++; }
            else if (i >= inobt.Count || finobt[j].StartIno < inobt[i].StartIno) { Differ($"finobt record {finobt[j].StartIno} has no inobt record with free inodes"); j++; }
            else
            {
                if (inobt[i] != finobt[j]) Differ($"finobt record {finobt[j].StartIno} differs from the inobt's");
                i++; j++;
            }
        }
        f.Damage(differ, $"{differ} records differ from the inobt (first: {first})");
    }
}
