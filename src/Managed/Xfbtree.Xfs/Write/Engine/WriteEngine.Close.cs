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
            CheckpointLocked();
        }
        finally
        {
            commitGate.ExitWriteLock();
        }
    }

    /// <summary>The checkpoint proper, under the commit gate held exclusively: the write-back (journal fsynced, then
    /// every pinned buffer written in place once), the image fsynced, the journal emptied.</summary>
    private void CheckpointLocked()
    {
        WriteBackLocked();
        long overwrites = OverwritesWritten;
        disk.Sync();
        NoteOverwritesSynced(overwrites);
        journal.Truncate();
        coverage.Clear();
        busy.Clear();
        journaledSinceCheckpoint.Clear();
        Interlocked.Increment(ref checkpoints);
    }

    /// <summary>
    /// Writes every committed change still pinned in the cache in place, after the journal records that hold them are
    /// durable (the write-ahead rule); no image fsync, the journal keeps its records. For readers of the image file
    /// itself (the online repairs' raw reads and read views): afterwards the file shows every commit made before
    /// this call. Callable inside a transaction (the caller's own uncommitted changes are not written).
    /// </summary>
    internal void WriteBackCommitted()
    {
        ThrowIfUnusable();
        commitGate.EnterWriteLock();
        try
        {
            WriteBackLocked();
        }
        finally
        {
            commitGate.ExitWriteLock();
        }
    }

    /// <summary>
    /// The delayed write-back, under the commit gate held exclusively (no commit in flight, so every pinned buffer
    /// holds committed contents, or a running transaction changes it and saved its committed contents when it joined
    /// it). The journal is fsynced first, then each pinned buffer is copied under its pin guard (from the saved
    /// committed contents when a transaction holds it, else from the buffer, which nobody can change without joining
    /// it, which takes the guard), written in place in daddr order, and unpinned. Takes no buffer lock: a running
    /// transaction holding one waits for this gate at its commit, so waiting for it here would deadlock.
    /// </summary>
    private void WriteBackLocked()
    {
        if (image.Cache.PinnedBytes == 0)
        {
            return;
        }
        journal.Sync();
        List<BlockBuffer> pinned = image.Cache.CollectPinned(disk);
        pinned.Sort(static (x, y) => x.Daddr.CompareTo(y.Daddr));
        int largest = 0;
        foreach (BlockBuffer b in pinned)
        {
            largest = Math.Max(largest, b.Length);
        }
        byte[] staging = System.Buffers.ArrayPool<byte>.Shared.Rent(Math.Max(largest, 512));
        int next = 0;
        try
        {
            for (; next < pinned.Count; next++)
            {
                BlockBuffer b = pinned[next];
                bool write;
                b.EnterPinGuard();
                try
                {
                    write = b.Pinned;
                    if (write)
                    {
                        if (b.CommittedImage is { } committed)
                        {
                            committed.AsSpan(0, b.Length).CopyTo(staging);
                        }
                        else
                        {
                            b.Span.CopyTo(staging);
                        }
                    }
                }
                finally
                {
                    b.ExitPinGuard();
                }
                if (write)
                {
                    WriteRaw(disk, b.Daddr * 512, staging.AsSpan(0, b.Length));
                    image.Cache.Unpin(b);
                    Interlocked.Increment(ref writtenBackBuffers);
                    Interlocked.Add(ref writtenBackBytes, b.Length);
                }
                image.Cache.DropHold(b);
            }
        }
        finally
        {
            for (next++; next < pinned.Count; next++)
            {
                image.Cache.DropHold(pinned[next]);
            }
            System.Buffers.ArrayPool<byte>.Shared.Return(staging);
        }
    }

    private long checkpoints, writtenBackBuffers, writtenBackBytes;

    /// <summary>With <see cref="WriteEngineOptions.CheckWriteAhead"/>: called before every write to the image; throws
    /// when a sector of it was logged as metadata, or freed, by a journal record that is not durable yet.</summary>
    private void CheckWriteAhead(long daddr, int lengthBB)
    {
        long latest = LatestRecordOver(daddr * 512, (long)lengthBB * 512);
        long synced = journal.SyncedEnd;
        if (latest > synced)
        {
            throw new WriteAheadViolationException(
                $"write-ahead rule broken: in-place write of daddr {daddr} (+{lengthBB} BB) before the journal record ending at byte {latest} is durable (fsynced to {synced})");
        }
    }

    /// <summary>Checkpoints since open (a test and measurement hook).</summary>
    internal long Checkpoints => Interlocked.Read(ref checkpoints);

    /// <summary>Metadata buffers and bytes the delayed write-back wrote in place since open (each committed buffer is
    /// written once per checkpoint, however many commits changed it).</summary>
    internal (long Buffers, long Bytes) WrittenBack => (Interlocked.Read(ref writtenBackBuffers), Interlocked.Read(ref writtenBackBytes));

    /// <summary>Bytes of committed metadata pinned in the cache, waiting for the next checkpoint's write-back.</summary>
    internal long PinnedBytes => image.Cache.PinnedBytes;

    /// <summary>
    /// Makes every committed operation durable (its journal record fsynced) without a checkpoint. Concurrent callers
    /// share fsyncs. With <see cref="WriteEngineOptions.SyncCommits"/> every commit is durable already and this
    /// returns at once.
    /// </summary>
    public void SyncJournal()
    {
        ThrowIfUnusable();
        journal.Sync();
        SyncOverwrites(OverwritesWritten);
    }

    /// <summary>
    /// fdatasync of one file: makes durable what its data needs and nothing more, as the kernel's fdatasync forces
    /// the log only when the inode has changes that matter to its data. The journal is synced when a record that
    /// logged the inode for more than its times (<see cref="IncoreInode.DataRecordEnd"/>) is not durable yet (a
    /// journaled write, a new mapping, a size); the image is fdatasynced when the file has overwrites in place not yet
    /// synced. A file with only overwrites in place since the last sync costs one image fdatasync and no journal fsync.
    /// </summary>
    internal void SyncFileData(IncoreInode inode)
    {
        ThrowIfUnusable();
        if (Volatile.Read(ref inode.DataRecordEnd) > journal.SyncedPosition)
        {
            journal.Sync();
        }
        SyncOverwrites(Volatile.Read(ref inode.OverwriteSequence));
    }

    /// <summary>After a commit: checkpoint when the journal outgrew its bound or the pinned buffers theirs.</summary>
    internal void MaybeCheckpoint()
    {
        if (journal.Length > options.CheckpointBytes || image.Cache.PinnedBytes > options.PinnedBytesLimit)
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

/// <summary>Thrown by <see cref="WriteEngineOptions.CheckWriteAhead"/>: an in-place write came before the journal record
/// that logged its sectors was durable.</summary>
internal sealed class WriteAheadViolationException(string message) : InvalidOperationException(message);
