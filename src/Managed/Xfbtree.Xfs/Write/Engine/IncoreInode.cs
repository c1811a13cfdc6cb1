namespace Xfbtree.Xfs.Write.Engine;

/// <summary>
/// The in-core copy of one on-disk inode: <see cref="Core"/> is the whole dinode (sb_inodesize bytes, core,
/// data fork and attr fork) and is the truth while the inode is locked by a transaction. A transaction that
/// logs the inode (<see cref="WriteTransaction.LogInode"/>) copies it into its cluster buffer at commit and
/// recomputes the CRC; a cancelled transaction restores the bytes it saw when it locked the inode.
/// Readers and writers of <see cref="Core"/> must hold the inode lock (through a transaction, or
/// <see cref="WriteEngine.LockInodeForRead"/>).
/// </summary>
internal sealed class IncoreInode
{
    internal IncoreInode(ulong ino, byte[] core)
    {
        Ino = ino;
        Core = core;
    }

    /// <summary>Inode number.</summary>
    public ulong Ino { get; }

    /// <summary>The whole on-disk inode image (big-endian, as on disk). Mutable under the inode lock.</summary>
    public byte[] Core { get; }

    /// <summary>The inode lock (engine-internal: taken through transactions, in ascending inode order).</summary>
    internal readonly object Gate = new();

    /// <summary>The lock itself (no thread affinity, as the kernel's inode lock).</summary>
    internal readonly GateLock Lock = new();

    /// <summary>Holders of this incarnation (the namespace's Acquire/Release, as open files and the kernel's
    /// inode references): while non-zero, losing the last link puts the inode on the AGI unlinked list instead of
    /// freeing it. Read and changed under the inode lock (Interlocked for the commit-failure undo).</summary>
    internal int References;

    private static long versions;

    /// <summary>Content version: a number no other in-core inode or earlier state of this one had, taken when the
    /// inode is loaded and whenever a transaction locks it (before it changes anything). The directory lookup cache
    /// trusts an entry only at the version it was read at. Changed under the inode lock.</summary>
    internal long ContentVersion = NewVersion();

    /// <summary>A version never handed out before.</summary>
    internal static long NewVersion() => Interlocked.Increment(ref versions);

    /// <summary>Set at every use; the inode cache's clock clears it and lets go of inodes it finds unset.</summary>
    internal volatile bool RecentlyUsed = true;

    /// <summary>The decoded data-fork mapping of this incarnation (<see cref="Files.ForkCache"/>), valid while the
    /// inode's bytes equal its stamp; read and written under the inode lock, gone with the in-core inode.</summary>
    internal Files.ForkCacheEntry? DataForkCache;

    /// <summary>Journal position (<see cref="WriteJournal.PositionOf"/>) at the end of the latest record that logged this inode for more than its times (its
    /// size, mapping, mode...): fdatasync makes the journal durable up to it, and no further (the kernel's fdatasync
    /// forces the log only for changes that matter to the data). Set at commit; a freshly loaded inode starts at the
    /// journal's position then, since an earlier incarnation's records may not be durable.</summary>
    internal long DataRecordEnd;

    /// <summary>The engine's overwrite count (<see cref="WriteEngine.OverwritesWritten"/>) after this inode's latest
    /// overwrite in place: fdatasync syncs the image when the synced count is below it. A freshly loaded inode starts
    /// at the count then (an earlier incarnation's overwrites may not be synced).</summary>
    internal long OverwriteSequence;

    public override string ToString() => $"inode {Ino}";
}
