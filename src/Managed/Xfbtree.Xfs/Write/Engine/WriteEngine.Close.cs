using System.Buffers.Binary;
using Xfbtree.Buffers;
using Xfbtree.Xfs.Format;
using Xfbtree.Xfs.Repair;

namespace Xfbtree.Xfs.Write.Engine;

public sealed partial class WriteEngine
{
    // ------------------------------------------------------------------ checkpoint and close

    /// <summary>Makes every committed change durable in the image and empties the journal (blocks commits meanwhile).</summary>
    public void Checkpoint()
    {
        ThrowIfUnusable();
        commitGate.EnterWriteLock();
        try
        {
            disk.Sync();
            journal.Truncate();
        }
        finally
        {
            commitGate.ExitWriteLock();
        }
    }

    /// <summary>
    /// Makes every committed operation durable (its journal record fsynced) without a checkpoint. Concurrent callers
    /// share fsyncs. With <see cref="WriteEngineOptions.SyncCommits"/> every commit is durable already and this
    /// returns at once.
    /// </summary>
    public void SyncJournal()
    {
        ThrowIfUnusable();
        journal.Sync();
    }

    /// <summary>After a commit: checkpoint when the journal outgrew its bound.</summary>
    internal void MaybeCheckpoint()
    {
        if (journal.Length > options.CheckpointBytes)
        {
            Checkpoint();
        }
    }

    /// <summary>Clean close (see the class remarks). Dispose without Close leaves NEEDSREPAIR set and the journal in place.</summary>
    public void Close()
    {
        ThrowIfUnusable();
        if (current is not null)
        {
            throw new InvalidOperationException("Close inside a transaction");
        }
        try
        {
            Checkpoint();
            commitGate.EnterWriteLock();
            try
            {
                WriteCleanSuperblock();
                disk.Sync();
                journal.Dispose();
                File.Delete(journal.Path);
            }
            finally
            {
                commitGate.ExitWriteLock();
            }
        }
        catch (Exception e) when (e is IOException or CorruptionException)
        {
            Dispose();
            throw new XfsWriteException(e is CorruptionException ? WriteErrorKind.Corrupt : WriteErrorKind.Io,
                $"{image.Path}: clean close failed ({e.Message}); the journal and NEEDSREPAIR stay, reopen to recover", e);
        }
        Dispose();
    }

    /// <summary>Releases everything without writing (no checkpoint): NEEDSREPAIR and the journal stay.</summary>
    public void Dispose()
    {
        if (Interlocked.Exchange(ref state, 1) != 0)
        {
            return;
        }
        try
        {
            journal.Dispose();
            image.Dispose();
        }
        finally
        {
            writerLock?.Dispose(); // last: no other writer may start while our descriptors still write
            commitGate.Dispose();
        }
    }

    // sb_icount and sb_ifree (big-endian u64).
    private const int IcountOffset = 128, IfreeOffset = 136;

    /// <summary>The counters the kernel derives at mount (sb_fdblocks = Σ freeblks + flcount + btreeblks,
    /// sb_icount = Σ agi_count, sb_ifree = Σ agi_freecount), read from the AG headers on disk.</summary>
    internal (ulong Fdblocks, ulong Icount, ulong Ifree) ComputeSuperblockCounters()
    {
        ulong fd = 0, ic = 0, ifr = 0;
        for (uint a = 0; a < ags.Length; a++)
        {
            var c = AgCounters(a) ?? throw new CorruptionException("AGF", Geometry.AgHeaderDaddr(a, 1), $"AG {a}: headers unreadable");
            fd += c.Fdblocks;
            ic += c.Icount;
            ifr += c.Ifree;
        }
        return (fd, ic, ifr);
    }

    /// <summary>One AG's share of the superblock counters, or null when its AGF or AGI cannot be read.</summary>
    private (ulong Fdblocks, ulong Icount, ulong Ifree)? AgCounters(uint agno)
    {
        try
        {
            Agf agf = image.ReadAgf(agno);
            Agi agi = image.ReadAgi(agno);
            return ((ulong)agf.FreeBlocks + agf.FlCount + agf.BtreeBlocks, agi.Count, agi.FreeCount);
        }
        catch (CorruptionException)
        {
            return null;
        }
    }

    /// <summary>Per-AG counter shares at open (null: unreadable), for a close when some AG is unreadable.</summary>
    private (ulong Fdblocks, ulong Icount, ulong Ifree)?[]? countersAtOpen;

    private void WriteCleanSuperblock()
    {
        var now = new (ulong Fdblocks, ulong Icount, ulong Ifree)?[ags.Length];
        bool complete = true;
        for (uint a = 0; a < ags.Length; a++)
        {
            now[a] = AgCounters(a);
            complete &= now[a] is not null;
        }
        BlockBuffer sb = image.Cache.Read(disk, 0, Geometry.SectorBasicBlocks, SuperblockVerifier(), BufferLockMode.Exclusive);
        try
        {
            Span<byte> s = sb.Span[..Geometry.SectorSize];
            ulong fd = 0, ic = 0, ifr = 0;
            if (complete)
            {
                // As the kernel derives them at mount: every AG's share, whatever the superblock said before.
                foreach (var c in now)
                {
                    fd += c!.Value.Fdblocks;
                    ic += c.Value.Icount;
                    ifr += c.Value.Ifree;
                }
            }
            else
            {
                // An AG with unreadable headers (sick): keep the superblock's figures and add what changed in the
                // AGs that can be read (the engine never changed the others).
                fd = AgHeaderEditor.FreeDataBlocks(s);
                ic = BinaryPrimitives.ReadUInt64BigEndian(s[IcountOffset..]);
                ifr = BinaryPrimitives.ReadUInt64BigEndian(s[IfreeOffset..]);
                for (int a = 0; a < now.Length; a++)
                {
                    if (now[a] is { } n && countersAtOpen?[a] is { } o)
                    {
                        fd = fd + n.Fdblocks - o.Fdblocks;
                        ic = ic + n.Icount - o.Icount;
                        ifr = ifr + n.Ifree - o.Ifree;
                    }
                }
            }
            BinaryPrimitives.WriteUInt64BigEndian(s[IcountOffset..], ic);
            BinaryPrimitives.WriteUInt64BigEndian(s[IfreeOffset..], ifr);
            AgHeaderEditor.SetFreeDataBlocks(s, fd);
            AgHeaderEditor.SetNeedsRepair(s, on: false);
            sb.MarkDirty();
        }
        finally
        {
            image.Cache.Release(sb);
        }
        image.Cache.Flush(disk);
    }
}
