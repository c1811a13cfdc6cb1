namespace Xfbtree.Native;

/// <summary>madvise hints the storage layer uses (mapped to the kernel's MADV_* values in one place).</summary>
internal enum MemoryAdvice
{
    /// <summary>MADV_NORMAL.</summary>
    Normal,
    /// <summary>MADV_RANDOM: no read-ahead (btree pages are accessed randomly).</summary>
    Random,
    /// <summary>MADV_SEQUENTIAL.</summary>
    Sequential,
    /// <summary>MADV_WILLNEED.</summary>
    WillNeed,
    /// <summary>MADV_DONTNEED: drop this process's page-table entries (shared data stays).</summary>
    DontNeed,
    /// <summary>MADV_REMOVE: free the backing store of the range (like punch hole).</summary>
    Remove,
    /// <summary>MADV_DONTFORK: children do not inherit the range.</summary>
    DontFork,
    /// <summary>MADV_DONTDUMP: keep the (possibly huge, sparse) range out of core dumps.</summary>
    DontDump,
    /// <summary>MADV_HUGEPAGE: back the range with transparent huge pages where possible.</summary>
    HugePage,
    /// <summary>MADV_NOHUGEPAGE: never back the range with transparent huge pages.</summary>
    NoHugePage,
    /// <summary>MADV_POPULATE_WRITE (Linux 5.14): fault the range in writable now; failure is an error, not SIGBUS.</summary>
    PopulateWrite,
}
