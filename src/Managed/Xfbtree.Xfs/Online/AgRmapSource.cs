using Xfbtree.Btree;
using Xfbtree.Xfs.Scan;
using Xfbtree.Xfs.Trees;
using Xfbtree.Xfs.Write;
using Xfbtree.Xfs.Write.Engine;
using Xfbtree.Xfs.Write.Space;

namespace Xfbtree.Xfs.Online;

/// <summary>
/// Where an AG rebuild (free-space trees, inode btrees, refcountbt) reads the AG's reverse mappings, its source of
/// truth: the on-disk rmapbt (<see cref="OnDisk"/>, online and offline, as the kernel's repairs do), or, on a
/// filesystem without one, the offline scan's expected rmap set taken just before the repair with commits paused
/// (<see cref="ScannedAgRmaps"/>: offline only, where no writer can change the AG between the scan and the repair).
/// </summary>
internal abstract class AgRmapSource
{
    /// <summary>The AG's on-disk rmapbt, read through the repair's transaction.</summary>
    public static readonly AgRmapSource OnDisk = new OnDiskRmaps();

    /// <summary>True when the source is the on-disk rmapbt (a filesystem without one refuses it).</summary>
    public abstract bool IsOnDiskRmapbt { get; }

    /// <summary>Every record of the locked AG, in key order; a record outside the AG is damage of the source.</summary>
    public abstract void ForEach(AgSpace space, Action<RmapRecord> each);

    private sealed class OnDiskRmaps : AgRmapSource
    {
        public override bool IsOnDiskRmapbt => true;

        public override void ForEach(AgSpace space, Action<RmapRecord> each)
        {
            uint agLength = space.AgLength;
            using BtreeCursor<RmapbtOps> cur = space.Rmapbt().CreateCursor();
            for (bool ok = cur.MoveFirst(); ok; ok = cur.Increment())
            {
                var r = RmapRecord.Read(cur.Current);
                if (r.BlockCount == 0 || (ulong)r.StartBlock + r.BlockCount > agLength)
                {
                    throw new OnlineRepairException($"AG {space.AgNumber}: rmapbt record {r} lies outside the AG; repair the rmapbt first");
                }
                each(r);
            }
        }
    }
}

/// <summary>
/// The offline scan's expected rmap set of one AG (every inode's forks, the inode chunks the inobt lists, the AG's
/// own trees as walked from its headers: what the offline check holds the AG against) as the source of an AG rebuild
/// on a filesystem without an rmapbt. Taken with the engine's commits paused and written back (the image file shows
/// every commit), offline, where nothing but the repairs writes: each repair takes a new one, since the one before
/// changed the AG. Owns the scan (its xfile) until disposed.
/// </summary>
internal sealed class ScannedAgRmaps : AgRmapSource, IDisposable
{
    private readonly RmapScanResult scan;
    private readonly AgScanResult ag;

    private ScannedAgRmaps(RmapScanResult scan, AgScanResult ag)
    {
        this.scan = scan;
        this.ag = ag;
    }

    public override bool IsOnDiskRmapbt => false;

    /// <summary>Damage the scan met in this AG (its Where names the structure: "bnobt", "inobt", "inode 123 data fork").</summary>
    public IReadOnlyList<ScanProblem> Problems => ag.Problems.Items;

    /// <summary>Every problem the scan met in this AG, kept or not.</summary>
    public long ProblemTotal => ag.Problems.Total;

    /// <summary>
    /// Scans AG <paramref name="agno"/> of the engine's image (every inode, for the forks mapping into it) while its
    /// commits are paused. Call outside any transaction; offline only (the scrub repairs without an rmapbt).
    /// </summary>
    /// <param name="engine">The engine.</param>
    /// <param name="agno">The AG.</param>
    /// <param name="cancel">Cancels the scan.</param>
    /// <param name="chunksGiven">The AG's inode chunks when they are not to be read from its inobt (a chunk
    /// discovery's, <see cref="InodeChunkDiscovery"/>); null, the inobt's.</param>
    public static ScannedAgRmaps Take(WriteEngine engine, uint agno, CancellationToken cancel, InodeChunksOfAg? chunksGiven = null)
    {
        ArgumentNullException.ThrowIfNull(engine);
        RmapScanResult scan;
        using (engine.PauseCommits())
        {
            using XfsImage view = engine.Image.CreateReadView();
            scan = RmapScanner.Scan(view, new RmapScanOptions { OnlyAg = agno, IncludeOwnAg = true, ChunksGiven = chunksGiven }, cancel);
        }
        AgScanResult? ag = scan.Ags.FirstOrDefault(a => a.AgNumber == agno && a.Expected is not null);
        if (ag is null)
        {
            scan.Dispose();
            throw new OnlineRepairException($"AG {agno}: the offline scan did not reach the AG");
        }
        return new ScannedAgRmaps(scan, ag);
    }

    /// <summary>
    /// Refuses (<see cref="OnlineRepairException"/>) when the scan met damage outside <paramref name="rebuilt"/>, the
    /// structures the repair replaces (their damage is what it repairs; anything else would leave blocks in use out
    /// of the set, and a rebuild from it would give them away).
    /// </summary>
    public void RequireCompleteBut(params string[] rebuilt)
    {
        foreach (ScanProblem p in ag.Problems.Items)
        {
            if (Array.IndexOf(rebuilt, p.Where) < 0)
            {
                throw new OnlineRepairException($"AG {ag.AgNumber}: without an rmapbt the source is the offline scan, which met damage it cannot place: {p.Where}: {p.What}");
            }
        }
        if (ag.Problems.Total > ag.Problems.Items.Count)
        {
            throw new OnlineRepairException($"AG {ag.AgNumber}: without an rmapbt the source is the offline scan, which met {ag.Problems.Total} problems");
        }
    }

    public override void ForEach(AgSpace space, Action<RmapRecord> each)
    {
        if (space.AgNumber != ag.AgNumber)
        {
            throw new InvalidOperationException($"the scan of AG {ag.AgNumber} read for AG {space.AgNumber}");
        }
        ForEach(space.AgLength, each);
    }

    /// <summary>Every record of the scanned AG (of <paramref name="agLength"/> blocks), in key order.</summary>
    public void ForEach(uint agLength, Action<RmapRecord> each)
    {
        uint agNumber = ag.AgNumber;
        using var cursor = ag.Expected!.CreateCursor();
        for (bool ok = cursor.MoveFirst(); ok; ok = cursor.Increment())
        {
            var r = RmapRecord.Read(cursor.Current);
            if (r.BlockCount == 0 || (ulong)r.StartBlock + r.BlockCount > agLength)
            {
                throw new OnlineRepairException($"AG {agNumber}: scanned rmap record {r} lies outside the AG");
            }
            each(r);
        }
    }

    public void Dispose() => scan.Dispose();
}
