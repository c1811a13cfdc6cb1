using System.Diagnostics;
using Xfbtree.Btree;
using Xfbtree.Xfs.Repair;
using Xfbtree.Xfs.Trees;
using Xfbtree.Xfs.Write;
using Xfbtree.Xfs.Write.Engine;
using Xfbtree.Xfs.Write.Space;

namespace Xfbtree.Xfs.Online;

/// <summary>Test-only callbacks of the scrub repairs (free space, inode btrees, refcountbt).</summary>
internal sealed class AgRebuildTestHooks
{
    /// <summary>Runs inside the repair's transaction right after the AG lock was taken (repair thread): a test
    /// starts a writer to the same AG here and sees it wait for the repair.</summary>
    public Action<uint>? AfterLock { get; init; }

    /// <summary>Runs inside the transaction after the new tree was switched in, before its commit.</summary>
    public Action<uint>? AfterSwitch { get; init; }
}

/// <summary>What one scrub repair of one AG did.</summary>
/// <param name="AgNumber">The AG.</param>
/// <param name="Structure">"bnobt+cntbt", "inobt+finobt", "refcountbt".</param>
/// <param name="Records">Records of the new tree(s) (for bnobt+cntbt: free extents, each in both trees).</param>
/// <param name="NewBlocks">Blocks of the new tree(s).</param>
/// <param name="OldBlocksReaped">Blocks of the old tree(s) freed.</param>
/// <param name="TimeLocked">Time the AG lock was held (the whole repair is one transaction).</param>
internal sealed record AgRebuildResult(uint AgNumber, string Structure, long Records, long NewBlocks, long OldBlocksReaped, TimeSpan TimeLocked)
{
    /// <summary>What an AG header rebuild found (the roots and how), said first in its line; null for tree rebuilds.</summary>
    public string? Found { get; init; }

    public override string ToString() => (Found is null ? "" : Found + "; ")
        + $"{Records} records, {NewBlocks} new blocks, {OldBlocksReaped} old blocks reaped, AG locked {TimeLocked.TotalMilliseconds:F1} ms";
}

/// <summary>Pieces shared by the scrub repairs that rebuild an AG btree in one locked transaction.</summary>
internal static class AgRebuild
{
    /// <summary>
    /// AGF problems the free-space and refcountbt rebuilds from scans both tolerate (a filesystem without an rmapbt,
    /// offline): the AGF repair there is those two rebuilds one after the other, each setting its own fields, so each
    /// reads an AGF whose other counters are still the damaged ones.
    /// </summary>
    public static readonly string[] AgfCountersRecomputedFromScans = ["bnobt", "cntbt", "agf_freeblks", "agf_longest", "agf_btreeblks", "refcountbt", "agf_refcount_blocks"];

    /// <summary>
    /// Runs <paramref name="rebuild"/> as one engine transaction that holds AG <paramref name="agno"/>'s lock for
    /// repair from its start, so the rebuild's source of truth and the structure it replaces cannot change under it;
    /// the result carries how long the lock was held.
    /// </summary>
    /// <param name="engine">The open write engine.</param>
    /// <param name="agno">The AG whose structure is rebuilt.</param>
    /// <param name="structure">What is rebuilt, as the transaction's name says it ("bnobt+cntbt", "AGF", ...).</param>
    /// <param name="rmapbtNeededTo">What the rebuild needs the rmapbt for, said when the filesystem has none.</param>
    /// <param name="hooks">Test callbacks, or null.</param>
    /// <param name="rebuild">The rebuild, inside the transaction with the AG locked, given its source of reverse
    /// mappings; returns what it did.</param>
    /// <param name="rmaps">Where the rebuild reads the AG's reverse mappings: null, the on-disk rmapbt (refused on a
    /// filesystem without one); the offline scrub repair of such a filesystem passes the offline scan's set.</param>
    public static AgRebuildResult RunLocked(WriteEngine engine, uint agno, string structure, string rmapbtNeededTo, AgRebuildTestHooks? hooks,
        Func<WriteTransaction, AgRmapSource, AgRebuildResult> rebuild, AgRmapSource? rmaps = null)
    {
        ArgumentNullException.ThrowIfNull(engine);
        rmaps ??= AgRmapSource.OnDisk;
        if (rmaps.IsOnDiskRmapbt && !engine.Geometry.Superblock.HasRmapbt)
        {
            throw new XfsWriteException(WriteErrorKind.NotSupported, $"the filesystem has no rmapbt to {rmapbtNeededTo}");
        }
        _ = engine.Ag(agno);
        var locked = new Stopwatch();
        AgRebuildResult? result = null;
        engine.Execute($"scrub repair AG {agno} {structure}", tx =>
        {
            tx.LockAgForRepair(agno);
            locked.Restart();
            hooks?.AfterLock?.Invoke(agno);
            result = rebuild(tx, rmaps);
        });
        return (result ?? throw new InvalidOperationException("the repair committed without a result")) with { TimeLocked = locked.Elapsed };
    }

    /// <summary>Blocks of a tree (every level) into a bitmap.</summary>
    public static long MarkTreeBlocks<TOps>(Btree<TOps> tree, AgBlockBitmap into) where TOps : struct, IBtreeOps
    {
        var visitor = new Marker { Bitmap = into };
        using BtreeCursor<TOps> cur = tree.CreateCursor();
        return cur.VisitBlocks(ref visitor);
    }

    private struct Marker : IBtreeBlockVisitor
    {
        public AgBlockBitmap Bitmap;

        public readonly void Visit(int level, long pointer, ReadOnlySpan<byte> block) => Bitmap.Set((uint)pointer, 1);
    }

    /// <summary>Runs of set bits, in order.</summary>
    public static List<(uint Start, uint Length)> Runs(AgBlockBitmap bitmap)
    {
        var runs = new List<(uint, uint)>();
        for (uint from = 0; from < bitmap.AgLength && bitmap.NextExtent(from, out uint s, out uint l); from = s + l)
        {
            runs.Add((s, l));
        }
        return runs;
    }

    /// <summary>Runs of consecutive numbers of an ascending list.</summary>
    public static List<(uint Start, uint Length)> Runs(List<uint> sortedBlocks)
    {
        var runs = new List<(uint, uint)>();
        for (int i = 0; i < sortedBlocks.Count;)
        {
            int j = i + 1;
            while (j < sortedBlocks.Count && sortedBlocks[j] == sortedBlocks[j - 1] + 1)
            {
                j++;
            }
            runs.Add((sortedBlocks[i], (uint)(j - i)));
            i = j;
        }
        return runs;
    }

    /// <summary>
    /// Allocates <paramref name="blocks"/> blocks of AG <paramref name="agno"/> for a new tree of an owner that
    /// comes from free space (inobt/finobt: OWN_INOBT, refcountbt: OWN_REFC), through the allocator (free list,
    /// reservations) with their rmap, as the kernel's xrep_newbt does; ascending. NoSpace: nothing changed (the
    /// transaction is cancelled by the caller's throw).
    /// </summary>
    public static List<uint> AllocateNewTreeBlocks(WriteTransaction tx, uint agno, long blocks, uint hint, AllocationPurpose purpose, ulong owner)
    {
        var claimed = new List<uint>();
        var geo = tx.Geometry;
        while (claimed.Count < blocks)
        {
            uint want = (uint)Math.Min(blocks - claimed.Count, uint.MaxValue);
            AllocatedExtent got = tx.Allocate(new AllocationRequest(geo.AgbToFsb(agno, hint), 1, want, purpose, OnlyAg: agno));
            tx.RmapMap(agno, new RmapRecord(got.AgBlock, got.Length, owner, 0), false);
            for (uint b = 0; b < got.Length; b++)
            {
                claimed.Add(got.AgBlock + b);
            }
            hint = got.AgBlock + got.Length;
        }
        claimed.Sort();
        return claimed;
    }

    /// <summary>Frees the old tree's blocks (rmap of <paramref name="owner"/> removed, buffers invalidated).</summary>
    public static long ReapOldBlocks(WriteTransaction tx, uint agno, List<(uint Start, uint Length)> old, ulong owner)
    {
        long reaped = 0;
        foreach (var (s, l) in old)
        {
            tx.RmapUnmap(agno, new RmapRecord(s, l, owner, 0), false);
            tx.FreeMetadata(agno, s, l);
            reaped += l;
        }
        return reaped;
    }

    /// <summary>A claim function over an ascending list of blocks for the bulk loader.</summary>
    public static Func<long> Claimer(List<uint> blocks, int first, int count)
    {
        int next = first, end = first + count;
        return () => next < end ? blocks[next++] : throw new InvalidOperationException("the bulk loader claimed more blocks than reserved");
    }
}
