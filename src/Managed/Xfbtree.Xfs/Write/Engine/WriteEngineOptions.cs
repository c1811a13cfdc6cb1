namespace Xfbtree.Xfs.Write.Engine;

/// <summary>When reads change an inode's access time (the kernel's atime mount options).</summary>
public enum AccessTimeUpdates
{
    /// <summary>Never (`noatime`): reads take no transaction.</summary>
    None,

    /// <summary>The kernel's default `relatime`: a read, readdir or readlink sets atime to now when atime is not newer
    /// than mtime or ctime, or is at least 24 hours old (not on inodes with the NOATIME flag).</summary>
    Relatime,
}

/// <summary>Options of <see cref="WriteEngine.Open"/>.</summary>
public sealed record WriteEngineOptions
{
    /// <summary>Buffer cache size for metadata.</summary>
    public long CacheBytes { get; init; } = 64L << 20;
    /// <summary>Journal file; default: <see cref="WriteEngine.DefaultJournalPath"/> (the resolved image path + ".xfbtree-journal").</summary>
    public string? JournalPath { get; init; }
    /// <summary>fsync the journal at every commit (crash safety). Tests and benchmarks may turn it off.</summary>
    public bool SyncCommits { get; init; } = true;
    /// <summary>The journal is checkpointed (image synced, journal emptied) when it grows past this many bytes.</summary>
    public long CheckpointBytes { get; init; } = 64L << 20;
    /// <summary>Committed metadata buffers are kept in the cache (pinned) and written in place at the next checkpoint,
    /// once, after their journal records are durable; more pinned bytes than this force a checkpoint after the commit
    /// that passed it (so memory stays bounded: this, plus one transaction's buffers, plus the idle cache).</summary>
    internal long PinnedBytesLimit { get; init; } = DefaultPinnedBytesLimit;
    /// <summary>Default of <see cref="PinnedBytesLimit"/>: 32 MiB.</summary>
    internal const long DefaultPinnedBytesLimit = 32L << 20;
    /// <summary>Fails any in-place write of the image whose sectors a journal record not yet durable logged as
    /// metadata (the write-ahead rule; see <see cref="JournalCoverage"/>): an exception from the write instead of the
    /// write. For tests; also on when the environment variable <c>XFBTREE_CHECK_WRITE_AHEAD</c> is 1.</summary>
    internal bool CheckWriteAhead { get; init; } = Environment.GetEnvironmentVariable("XFBTREE_CHECK_WRITE_AHEAD") == "1";
    /// <summary>Checks at every commit that no buffer changed outside the ranges its transaction logged (the journal
    /// holds only those): a copy of each buffer as it joins a transaction, compared at commit; a change found fails
    /// the commit (nothing written). For tests (costs a copy per buffer); also on when the environment variable
    /// <c>XFBTREE_CHECK_LOGGED_RANGES</c> is 1, so a test can turn it on in an <c>xfbtree</c> child process.</summary>
    internal bool CheckLoggedRanges { get; init; } = Environment.GetEnvironmentVariable("XFBTREE_CHECK_LOGGED_RANGES") == "1";
    /// <summary>A transaction whose fresh file data (new blocks, unwritten blocks written) adds up to at least this
    /// many bytes writes that data in place and syncs the image before its journal record, which then holds only the
    /// mapping (ordered data, as the kernel writes new blocks before the commit that maps them); below it the data
    /// is journaled (no fdatasync in the request). 0 turns ordered data off. Default 1 MiB; the environment variable
    /// <c>XFBTREE_ORDERED_DATA_MIN_BYTES</c> (a byte count, 0 = off) sets it for a child <c>xfbtree mount</c>, to
    /// compare both ways with one build.</summary>
    internal long OrderedDataMinBytes { get; init; } =
        long.TryParse(Environment.GetEnvironmentVariable("XFBTREE_ORDERED_DATA_MIN_BYTES"), System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out long bytes)
            ? bytes : DefaultOrderedDataMinBytes;
    /// <summary>Default of <see cref="OrderedDataMinBytes"/>: 1 MiB, a whole max_write WRITE of the mount. The
    /// fdatasync in the request is a wait (and a wake-up) more: with 256 KiB writes on the loaded machine a dd took
    /// 2-5x longer than journaling them; with 1 MiB writes the wall time came out level, the server's CPU a fifth lower
    /// and half the bytes written to the disk (docs/mount.md, "The data path").</summary>
    internal const long DefaultOrderedDataMinBytes = 1 << 20;
    /// <summary>Test-only crash points (see <see cref="WriteFaultHook"/>).</summary>
    internal WriteFaultHook? Faults { get; init; }
    /// <summary>Mappings one step of a split operation (punch, truncate, reflink, unshare) covers at most
    /// (internal: tests make it small to see the steps).</summary>
    internal int StepPieces { get; init; } = Files.FileOperations.StepPieces;
    /// <summary>Test hook: called with the operation's name after each step of a split operation committed, outside
    /// any transaction (a test runs another operation there to race the next step deterministically).</summary>
    internal Action<string>? StepCommitted { get; init; }
    /// <summary>Test hook: called with the inode number when the free of a released unlinked inode is counted as in
    /// flight, before its transaction starts, outside any lock (a test holds the free there to race an allocation).</summary>
    internal Action<ulong>? DeferredFreeStarting { get; init; }
    /// <summary>Test hook: called with the operation's name when it met NoSpace and waits for deferred frees in flight,
    /// holding no engine lock.</summary>
    internal Action<string>? WaitingForDeferredFrees { get; init; }
    /// <summary>Bytes of shared data one unshare step copies at most (internal, as <see cref="StepPieces"/>).</summary>
    internal int UnshareStepBytes { get; init; } = Files.FileOperations.UnshareStepBytes;
    /// <summary>In-core inodes kept strongly at most (others live only while something references them).</summary>
    internal int InodeCacheCapacity { get; init; } = DefaultInodeCacheCapacity;
    /// <summary>Default of <see cref="InodeCacheCapacity"/>: a few thousand inodes (about 1.5 MiB of 512-byte cores,
    /// plus their cached extent lists).</summary>
    internal const int DefaultInodeCacheCapacity = 4096;
    /// <summary>Whether reads update atime (<see cref="AccessTimeUpdates.None"/> by default; <c>xfbtree mount</c> uses
    /// <see cref="AccessTimeUpdates.Relatime"/>, as the kernel mounts by default).</summary>
    public AccessTimeUpdates AccessTimes { get; init; }
    /// <summary>Keep inode chunks whose inodes are all free (the kernel's `ikeep` mount option). Off by default, as the
    /// kernel's default `noikeep`: the last inode freed in a chunk frees the chunk's blocks and its inobt and finobt
    /// records.</summary>
    public bool KeepEmptyInodeChunks { get; init; }
    /// <summary>Freed inode chunks one AG remembers at most (<see cref="RetiredInodeChunks"/>: each entry about 40
    /// bytes); past it further chunks are kept allocated, as with <see cref="KeepEmptyInodeChunks"/>.</summary>
    internal int RetiredInodeChunkCapacity { get; init; } = 65536;
    /// <summary>Slots of the namespace's directory lookup cache (a power of two; 0 turns it off).</summary>
    internal int LookupCacheSlots { get; init; } = Namespace.DirectoryLookupCache.DefaultSlots;
}
