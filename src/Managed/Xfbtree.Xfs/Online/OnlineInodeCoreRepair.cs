using Xfbtree.Buffers;
using Xfbtree.Xfs.Format;
using Xfbtree.Xfs.Write;
using Xfbtree.Xfs.Write.Engine;

namespace Xfbtree.Xfs.Online;

/// <summary>What the repair of one AG's inode cores did.</summary>
/// <param name="Examined">Inodes judged again.</param>
/// <param name="Repaired">Cores rewritten with every field set to its certain value.</param>
/// <param name="NotRepaired">Inodes left as they were, each with why (a problem with no certain fix).</param>
internal sealed record InodeCoreRepairResult(long Examined, long Repaired, List<string> NotRepaired);

/// <summary>
/// Sets the fields of damaged inode cores whose right value is certain (upstream's xrep_inode; the rules and their
/// fixes are <see cref="InodeCoreRules"/>, the very function the check judges with): di_nblocks and the extent counts
/// recomputed from the forks, di_onlink and the padding zeroed, unknown and misplaced flags cleared, bad extent size
/// hints reset, nanoseconds past a second zeroed, the attr fork format of an inode without one reset, the size of a
/// device set to 0, the CRC recomputed. One engine transaction per inode, so it runs beside writers:
/// <list type="bullet">
/// <item>an inode that verifies is changed through its in-core inode under its lock (a writer that holds it waits, and
/// works on the repaired core afterwards), the forks walked under that lock;</item>
/// <item>an inode that does not verify only for its CRC or a realtime flag without a realtime device cannot be in core
/// (the engine refuses to load it), so its slot in the cluster buffer is rewritten in a transaction that joins that
/// buffer, after its forks were walked and the core read again unchanged there; when someone has it in core after
/// all (it was loaded before the damage reached the disk), the in-core copy is the truth and is written back whole.</item>
/// </list>
/// A core with a problem that has no certain fix (xfs_repair clears such an inode) is left alone and said.
/// </summary>
internal static class OnlineInodeCoreRepair
{
    /// <summary>Repairs <paramref name="inodes"/> (the damaged inodes of AG <paramref name="agno"/> a check found;
    /// the check keeps a bounded number per AG, so a later round's check hands over the rest).</summary>
    public static InodeCoreRepairResult Run(WriteEngine engine, uint agno, IReadOnlyList<ulong> inodes, CancellationToken cancel = default)
    {
        ArgumentNullException.ThrowIfNull(engine);
        ArgumentNullException.ThrowIfNull(inodes);
        var notRepaired = new List<string>();
        long examined = 0, repaired = 0;
        foreach (ulong ino in inodes)
        {
            cancel.ThrowIfCancellationRequested();
            if (engine.Geometry.InoToAgno(ino) != agno) continue;
            examined++;
            string? why = RepairOne(engine, ino, out bool changed);
            if (why != null) notRepaired.Add($"inode {ino}: {why}");
            else if (changed) repaired++;
        }
        return new InodeCoreRepairResult(examined, repaired, notRepaired);
    }

    /// <summary>Null when the core is right now (<paramref name="changed"/>: it was rewritten), else why not.</summary>
    static string? RepairOne(WriteEngine engine, ulong ino, out bool changed)
    {
        changed = false;
        XfsGeometry geo = engine.Geometry;
        var onDisk = new byte[geo.InodeSize];
        ReadSlot(engine, ino, onDisk);
        var disk = new Dinode(onDisk);
        if (disk.IsFree) return null;   // freed meanwhile: nothing left to judge
        if (disk.Verify(geo, ino) is null || engine.InodeCache.Peek(ino) is not null)
        {
            bool wrote = false;
            string? why = null;
            engine.Execute("repair inode core", tx =>
            {
                IncoreInode inode = engine.GetInode(ino, keepCached: false);
                tx.LockInodes(inode);
                var fixedCore = (byte[])inode.Core.Clone();
                if (new Dinode(fixedCore).IsFree) return;
                var problems = new List<InodeCoreProblem>();
                var data = new List<BmbtExtent>();
                InodeForkCounts? counts = CountForks(engine.Image, ino, fixedCore, data);
                InodeCoreRules.Examine(fixedCore, geo, ino, counts, problems, DataShared(tx, geo, fixedCore, data));
                why = Uncertain(problems);
                if (why != null) return;
                // The in-core copy is the truth: write it back when it changed, or when the disk differs from it
                // (damage that reached the disk under a live in-core inode).
                ReadSlot(engine, ino, onDisk);
                bool diskDiffers = !onDisk.AsSpan().SequenceEqual(inode.Core) || !XfsCrc.Verify(onDisk, Dinode.CrcOffset);
                if (problems.Count == 0 && !diskDiffers) return;
                fixedCore.CopyTo(inode.Core, 0);
                tx.LogInode(inode);
                wrote = true;
            });
            changed = wrote;
            return why;
        }

        // Not loadable: rewrite the slot, if the structure is sound and every problem has a certain fix.
        if (disk.VerifyStructure(geo, ino) is { } bad) return $"does not verify ({bad}); no certain fix (xfs_repair clears such an inode)";
        var fixedSlot = (byte[])onDisk.Clone();
        var found = new List<InodeCoreProblem>();
        var slotData = new List<BmbtExtent>();
        InodeForkCounts? slotCounts = CountForks(engine.Image, ino, fixedSlot, slotData);
        InodeCoreRules.Examine(fixedSlot, geo, ino, slotCounts, found);
        if (Uncertain(found) is { } no) return no;
        var (daddr, offset) = engine.InodeLocation(ino);
        string? raced = null;
        bool shareJudged = false;
        engine.Execute("repair inode core", tx =>
        {
            // The reference counts first (AG locks come before buffer locks): the flag a shared file must carry.
            if (!shareJudged && DataShared(tx, geo, onDisk, slotData))
            {
                shareJudged = true;
                found.Clear();
                fixedSlot = (byte[])onDisk.Clone();
                InodeCoreRules.Examine(fixedSlot, geo, ino, slotCounts, found, dataShared: true);
            }
            if (found.Count == 0) return;
            BlockBuffer cluster = tx.ReadBuffer(daddr, geo.BasicBlocksPerBlock, null);
            Span<byte> slot = cluster.Span.Slice(offset, geo.InodeSize);
            if (!slot.SequenceEqual(onDisk) || engine.InodeCache.Peek(ino) is not null)
            {
                raced = "changed while it was judged; run the repair again";
                return;
            }
            fixedSlot.CopyTo(slot);
            XfsCrc.Update(slot, Dinode.CrcOffset);
            tx.LogBuffer(cluster, offset, geo.InodeSize);
        });
        changed = raced == null && found.Count > 0;
        return raced;
    }

    /// <summary>
    /// True when <paramref name="core"/> is a regular file of a reflink filesystem without the reflink flag (realtime files aside) whose data
    /// fork (<paramref name="data"/>, its extents) maps a block the refcountbt counts as shared, each looked up under its
    /// AG's lock (taken by <paramref name="tx"/>; the inode's lock keeps its mapping still). Sharing a file's blocks
    /// takes its inode lock and sets its flag in the same transaction, so a flagless file found shared here is damaged.
    /// </summary>
    internal static bool DataShared(WriteTransaction tx, XfsGeometry geo, byte[] core, List<BmbtExtent> data)
    {
        if (!InodeCoreRules.MissingReflinkFlag(core, geo)) return false;
        foreach (BmbtExtent e in data)
        {
            if (tx.IsShared(geo.FsbToAgno(e.StartBlock), geo.FsbToAgbno(e.StartBlock), e.BlockCount)) return true;
        }
        return false;
    }

    static string? Uncertain(List<InodeCoreProblem> problems)
    {
        foreach (var p in problems)
        {
            if (!p.Certain) return $"{p.What}: no certain fix (xfs_repair clears such an inode)";
        }
        return null;
    }

    /// <summary>Copies the inode's slot of its cluster buffer (a shared buffer lock for the copy).</summary>
    static void ReadSlot(WriteEngine engine, ulong ino, byte[] into)
    {
        var (daddr, offset) = engine.InodeLocation(ino);
        BlockBuffer buffer = engine.Image.Cache.Read(engine.Disk, daddr, engine.Geometry.BasicBlocksPerBlock, null, BufferLockMode.Shared);
        try { buffer.Span.Slice(offset, into.Length).CopyTo(into); }
        finally { engine.Image.Cache.Release(buffer); }
    }

    /// <summary>
    /// What the forks of <paramref name="inode"/> map (as the offline scan counts them: extent lengths, bmbt blocks
    /// but the root in the inode, extent records), or null when a fork does not read clean: then the counts are
    /// not judged, as the check does not judge them either. <paramref name="dataMap"/> and <paramref name="attrMap"/>,
    /// when given, receive each fork's extents in file offset order.
    /// </summary>
    internal static InodeForkCounts? CountForks(XfsImage image, ulong ino, byte[] inode, List<BmbtExtent>? dataMap = null, List<BmbtExtent>? attrMap = null)
    {
        dataMap?.Clear();
        attrMap?.Clear();
        var geo = image.Geometry;
        var d = new Dinode(inode);
        ulong blocks = 0, dataExtents = 0, attrExtents = 0;
        for (int f = 0; f < 2; f++)
        {
            bool attr = f == 1;
            if (attr && !d.HasAttrFork) continue;
            ReadOnlySpan<byte> fork = d.Fork(attr);
            List<BmbtExtent>? map = attr ? attrMap : dataMap;
            ulong extents = 0;
            switch (d.FormatOf(attr))
            {
                case ForkFormat.Extents:
                    int n = InodeCoreRules.ExtentRecords(fork, d.ExtentsOf(attr));
                    for (int i = 0; i < n; i++)
                    {
                        var e = BmbtExtent.Read(fork[(i * Dinode.ExtentSize)..]);
                        if (e.Validate(geo) != null) return null;
                        blocks += e.BlockCount;
                        map?.Add(e);
                    }
                    extents = (ulong)n;
                    break;
                case ForkFormat.Btree:
                    if (fork.Length < MinBmbtRootFork) return null;
                    var tree = image.OpenBmbt(ino, fork);
                    ulong mapped = 0, records = 0;
                    bool valid = true;
                    var report = tree.Check(long.MaxValue, r =>
                    {
                        var e = BmbtExtent.Read(r);
                        valid &= e.Validate(geo) == null;
                        mapped += e.BlockCount;
                        map?.Add(e);
                        records++;
                    });
                    if (!report.IsClean || !valid) return null;
                    blocks += mapped + (ulong)(report.Blocks - 1);   // the root lives in the inode
                    extents = records;
                    break;
            }
            if (attr) attrExtents = extents;
            else dataExtents = extents;
        }
        return new InodeForkCounts(blocks, dataExtents, attrExtents);
    }

    static readonly int MinBmbtRootFork = 4 + Btree.BtreeGeometry.For(new Trees.BmbtOps(), 4096).KeySlotSize + Btree.BtreeGeometry.For(new Trees.BmbtOps(), 4096).PointerSize;
}
