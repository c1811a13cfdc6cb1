using Xfbtree.Buffers;
using Xfbtree.Xfs.Format;
using Xfbtree.Xfs.Write;
using Xfbtree.Xfs.Write.Engine;
using Xfbtree.Xfs.Write.Namespace;

namespace Xfbtree.Xfs.Online;

/// <summary>What the rebuild of one AG's unlinked lists did.</summary>
/// <param name="OnLists">Inodes on the rebuilt lists (allocated, nlink 0).</param>
/// <param name="Buckets">Non-empty buckets.</param>
/// <param name="Relinked">Inode cores whose di_next_unlinked changed (members relinked, stale pointers cleared).</param>
internal readonly record struct UnlinkedRebuild(long OnLists, int Buckets, long Relinked)
{
    public override string ToString() => $"unlinked lists: {OnLists} inodes in {Buckets} buckets, {Relinked} cores relinked";
}

/// <summary>
/// Rebuilds the AGI unlinked lists of one AG from the inode cores, inside the AGI rebuild's transaction (upstream's AGI
/// repair rebuilds them the same way, from the inodes with nlink 0). Source of truth: every allocated inode (per the
/// inobt records the rebuild found) whose core on disk says nlink 0 belongs on the list of bucket agino % 64. The
/// members of a bucket are chained in ascending inode order; every core whose di_next_unlinked differs from that
/// (a member in another order, an inode on no list with a stale pointer) is changed through its in-core inode.
/// <para>
/// Why this is right while writers run: the caller holds the AG lock. Every change to these lists (an inode put on
/// one at its last unlink while held open, taken off at the last release or by log recovery) and every nlink that
/// reaches 0 (the unlink frees the inode or lists it, in the same transaction) holds the lock of the inode's AG, and a
/// transaction's inode cores are written into their cluster buffers before it lets the AG lock go; so the cores on
/// disk, read under a shared buffer lock, say exactly which inodes have nlink 0 and where they point. The inodes to
/// change are locked after the AG lock: a contended one restarts the transaction with it taken first (the engine's
/// lock order), and everything is read again then.
/// </para>
/// </summary>
internal static class OnlineUnlinkedListRepair
{
    /// <summary>
    /// Relinks the cores of AG <paramref name="agno"/> (the AG locked by <paramref name="tx"/>) and returns the 64 bucket
    /// heads for the new AGI.
    /// </summary>
    public static uint[] Rebuild(WriteEngine engine, WriteTransaction tx, uint agno, List<InobtRecord> records, out UnlinkedRebuild result)
    {
        ArgumentNullException.ThrowIfNull(engine);
        ArgumentNullException.ThrowIfNull(tx);
        ArgumentNullException.ThrowIfNull(records);
        tx.RequireAg(agno);
        XfsGeometry geo = engine.Geometry;
        var members = new List<uint>();
        var pointing = new Dictionary<uint, uint>();   // in-use cores with di_next_unlinked set: agino -> next
        ReadCores(engine, agno, records, members, pointing);
        members.Sort();

        // Target: per bucket, the members in ascending order; the last points nowhere.
        var heads = new uint[Agi.UnlinkedBuckets];
        Array.Fill(heads, Agi.NullAgino);
        var target = new Dictionary<uint, uint>(members.Count);
        var tails = new uint[Agi.UnlinkedBuckets];
        Array.Fill(tails, Agi.NullAgino);
        foreach (uint agino in members)
        {
            int bucket = (int)(agino % Agi.UnlinkedBuckets);
            if (tails[bucket] == Agi.NullAgino) heads[bucket] = agino;
            else target[tails[bucket]] = agino;
            target[agino] = Agi.NullAgino;
            tails[bucket] = agino;
        }

        // Cores to change: members whose pointer differs, and non-members pointing somewhere.
        var change = new List<(uint Agino, uint Next)>();
        foreach (var (agino, next) in target)
        {
            uint now = pointing.TryGetValue(agino, out uint n) ? n : Agi.NullAgino;
            if (now != next) change.Add((agino, next));
        }
        foreach (var (agino, _) in pointing)
        {
            if (!target.ContainsKey(agino)) change.Add((agino, Agi.NullAgino));
        }
        change.Sort((a, b) => a.Agino.CompareTo(b.Agino));
        foreach (var (agino, next) in change)
        {
            ulong ino = geo.AginoToIno(agno, agino);
            IncoreInode inode = engine.GetInode(ino);
            tx.LockInodes(inode);   // after the AG lock: tried; contended, the transaction restarts with it first
            if (new Dinode(inode.Core).IsFree)
            {
                throw new OnlineRepairException($"AG {agno}: inode {ino} is in use on disk but free in core");
            }
            InodeAttributeFields.SetNextUnlinked(inode.Core, next);
            tx.LogInode(inode);
        }
        int buckets = 0;
        foreach (uint h in heads)
        {
            if (h != Agi.NullAgino) buckets++;
        }
        result = new UnlinkedRebuild(members.Count, buckets, change.Count);
        return heads;
    }

    /// <summary>Reads every allocated inode core of the chunks (each cluster block once, with a shared buffer lock).</summary>
    private static void ReadCores(WriteEngine engine, uint agno, List<InobtRecord> records, List<uint> members, Dictionary<uint, uint> pointing)
    {
        XfsGeometry geo = engine.Geometry;
        using var cores = new InodeClusterReader(engine, agno);
        foreach (InobtRecord rec in records)
        {
            if (!InodeChunkLayout.ChunkInsideAg(geo, agno, rec.StartIno))
            {
                throw new OnlineRepairException($"AG {agno}: inobt record {rec.StartIno} lies outside the AG");
            }
            ulong inUse = rec.InUse;
            for (int i = 0; i < InobtRecord.InodesPerChunk; i++)
            {
                if (((inUse >> i) & 1) == 0) continue;
                uint agino = rec.StartIno + (uint)i;
                var core = cores.Core(geo.AginoToIno(agno, agino), "is allocated in the inobt but its core does not read", "repair the inode btrees first");
                if (core.IsFree) continue;   // the inobt rebuild's to judge; nothing of a free core is listed
                if (core.NLink == 0) members.Add(agino);
                if (core.NextUnlinked != Agi.NullAgino) pointing[agino] = core.NextUnlinked;
            }
        }
    }
}
