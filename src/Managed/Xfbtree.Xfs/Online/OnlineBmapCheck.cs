using System.Diagnostics;
using Xfbtree.Btree;
using Xfbtree.Buffers;
using Xfbtree.Xfs.Directories;
using Xfbtree.Xfs.Format;
using Xfbtree.Xfs.Trees;
using Xfbtree.Xfs.Write;
using Xfbtree.Xfs.Write.Engine;

namespace Xfbtree.Xfs.Online;

/// <summary>What the online block map check found.</summary>
internal sealed record OnlineBmapCheckResult(long InodesChecked, long ForksChecked, IReadOnlyList<string> Damaged, long DamagedTotal, TimeSpan Elapsed)
{
    /// <summary>Directories whose blocks were read and verified.</summary>
    public long DirectoriesChecked { get; init; }

    /// <summary>Damaged directories, <c>directory N: what</c> (kept up to the limit).</summary>
    public IReadOnlyList<string> DamagedDirectories { get; init; } = [];

    /// <summary>Every damaged directory found.</summary>
    public long DamagedDirectoryTotal { get; init; }
}

/// <summary>
/// The block maps of every inode of an open engine checked while writers run (upstream's xchk_bmap, without the
/// rmap cross-reference, which the rmapbt check makes from the other side): a coordinated inode scan visits every
/// allocated inode under its inode lock (read), and each fork in extents or btree format is checked as the offline
/// scan checks it (<see cref="ForkMapVerifier"/>). Writers change a fork only under that lock, so what the check
/// reads is one committed state. Each damaged fork is one line, <c>inode N data fork ...: what</c>, the form the
/// fork repair (<see cref="OnlineBmapRepair"/>) is asked by. A directory whose forks verify has its blocks read and
/// verified in the same visit, as the offline check does (its entries, and the leaf, node and free-index blocks over
/// them: <see cref="DirectoryReader.VerifyIndex"/>): one line per damaged directory, <c>directory N: what</c>, the
/// directory repair's request (<see cref="OnlineDirectoryRepair"/>). Writers change a directory only under its lock.
/// </summary>
internal static class OnlineBmapCheck
{
    public static OnlineBmapCheckResult Run(WriteEngine engine, int limit, double cpuShare, CancellationToken cancel)
    {
        ArgumentNullException.ThrowIfNull(engine);
        var clock = Stopwatch.StartNew();
        var scan = new OnlineInodeScan(engine, 0);
        var pacer = new ScanPacer(cpuShare);
        var damaged = new List<string>();
        long total = 0, inodes = 0, forks = 0;
        var verifier = new ForkMapVerifier(engine.Image);
        var reader = new DirectoryReader(engine.Image);
        var damagedDirs = new List<string>();
        long dirTotal = 0, dirs = 0;
        while (scan.NextBatch() is { } batch)
        {
            foreach (ulong ino in batch)
            {
                cancel.ThrowIfCancellationRequested();
                IncoreInode inode;
                try
                {
                    inode = engine.GetInode(ino, keepCached: false);
                }
                catch (XfsWriteException e) when (e.Kind is WriteErrorKind.Corrupt or WriteErrorKind.NotFound)
                {
                    // Freed meanwhile, or a core that does not verify: the inode checks' business, not a block map's.
                    scan.MarkVisited(ino);
                    continue;
                }
                using (engine.TryLockInodeForRead(inode, TimeSpan.FromSeconds(30))
                    ?? throw new OnlineRepairException($"inode {ino} stayed busy for more than 30 s; the block map check ends (retry later)"))
                {
                    var d = new Dinode(inode.Core);
                    if (!d.IsFree && d.Verify(engine.Geometry, ino) is null)
                    {
                        inodes++;
                        bool forksClean = true;
                        for (int f = 0; f < 2; f++)
                        {
                            bool attr = f == 1;
                            if ((attr && !d.HasAttrFork) || d.FormatOf(attr) is not (ForkFormat.Extents or ForkFormat.Btree))
                            {
                                continue;
                            }
                            forks++;
                            if (verifier.Check(ino, d, attr) is { } problem)
                            {
                                forksClean = false;
                                total++;
                                if (damaged.Count < limit)
                                {
                                    damaged.Add(problem);
                                }
                            }
                        }
                        if (forksClean && d.FileType == 0x4000 && CheckDirectory(engine, reader, ino, inode.Core) is { } why)
                        {
                            dirTotal++;
                            if (damagedDirs.Count < limit)
                            {
                                damagedDirs.Add($"directory {ino}: {why}");
                            }
                        }
                        if (d.FileType == 0x4000)
                        {
                            dirs++;
                        }
                    }
                    scan.MarkVisited(ino);
                }
            }
            pacer.AfterBatch(cancel);
        }
        return new OnlineBmapCheckResult(inodes, forks, damaged, total, clock.Elapsed)
        {
            DirectoriesChecked = dirs,
            DamagedDirectories = damagedDirs,
            DamagedDirectoryTotal = dirTotal,
        };
    }

    /// <summary>The first problem of a locked directory's blocks, or null.</summary>
    private static string? CheckDirectory(WriteEngine engine, DirectoryReader reader, ulong ino, byte[] core)
    {
        try
        {
            reader.ReadAll(ino, core, engine.ReadMetadataBlocks, $"directory {ino}");
            reader.VerifyIndex(ino, core, engine.ReadMetadataBlocks, $"directory {ino}");
            return null;
        }
        catch (Exception e) when (e is XfsWriteException or CorruptionException or IOException)
        {
            string prefix = $"directory {ino}: ";
            return e.Message.StartsWith(prefix, StringComparison.Ordinal) ? e.Message[prefix.Length..] : e.Message;
        }
    }
}

/// <summary>
/// The checks of one fork's mappings, shared by the online block map check (the offline scan makes the same ones
/// as it walks): every extent inside the filesystem and one AG, in file offset order without overlap; a bmbt walked
/// by the engine's checker (CRC, magic, owner, level, numrecs, keys against the children's, sibling links); the
/// record count equal to the inode's extent count. The first problem, as <c>inode N data fork[ bmbt]: what</c>.
/// </summary>
internal sealed class ForkMapVerifier(XfsImage image)
{
    public string? Check(ulong ino, Dinode d, bool attr)
    {
        XfsGeometry geo = image.Geometry;
        string where = $"inode {ino} {(attr ? "attr" : "data")} fork";
        ReadOnlySpan<byte> fork = d.Fork(attr);
        ulong expected = d.ExtentsOf(attr);
        if (d.FormatOf(attr) == ForkFormat.Extents)
        {
            ulong next = 0;
            for (int i = 0; i < (int)expected; i++)
            {
                var e = BmbtExtent.Read(fork[(i * Dinode.ExtentSize)..]);
                if (Problem(e, ref next, geo) is { } why) return $"{where}: {why}";
            }
            return null;
        }
        where += " bmbt";
        if (fork.Length < MinRootFork) return $"{where}: fork of {fork.Length} bytes is too small for a btree root ({MinRootFork} at least)";
        try
        {
            Btree<BmbtOps> tree = image.OpenBmbt(ino, fork);
            ulong nextOffset = 0;
            long records = 0;
            string? recordProblem = null;
            BtreeCheckReport report = tree.Check(long.MaxValue, r =>
            {
                records++;
                if (recordProblem is null && Problem(BmbtExtent.Read(r), ref nextOffset, geo) is { } why) recordProblem = why;
            });
            if (report.Violations.Count > 0) return $"{where}: {report.Violations[0]}";
            if (recordProblem is not null) return $"{where}: {recordProblem}";
            if ((ulong)records != expected) return $"{where}: holds {records} records, but the inode counts {expected} extents";
            return null;
        }
        catch (CorruptionException e)
        {
            return $"{where}: {e.Message}";
        }
    }

    /// <summary>Smallest fork that holds a bmbt root: level, numrecs, one key and one pointer.</summary>
    private static readonly int MinRootFork = 4 + BtreeGeometry.For(new BmbtOps(), 4096).KeySlotSize + BtreeGeometry.For(new BmbtOps(), 4096).PointerSize;

    private static string? Problem(in BmbtExtent e, ref ulong next, XfsGeometry geo)
    {
        if (e.Validate(geo) is { } why) return why;
        if (e.StartOffset < next) return $"extent at offset {e.StartOffset} overlaps or precedes the previous one";
        next = e.StartOffset + e.BlockCount;
        return null;
    }
}
