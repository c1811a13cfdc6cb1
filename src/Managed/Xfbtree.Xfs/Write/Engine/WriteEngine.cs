using Xfbtree.Xfs.Format;

namespace Xfbtree.Xfs.Write.Engine;

/// <summary>Options of <see cref="WriteEngine.Open"/>.</summary>
public sealed record WriteEngineOptions
{
    /// <summary>Buffer cache size for metadata.</summary>
    public long CacheBytes { get; init; } = 64L << 20;
    /// <summary>Journal file; default: the image path + ".xfbtree-journal".</summary>
    public string? JournalPath { get; init; }
    /// <summary>fsync the journal at every commit (crash safety). Tests and benchmarks may turn it off.</summary>
    public bool SyncCommits { get; init; } = true;
}

/// <summary>
/// Opens an unmounted XFS v5 image read-write and changes it as the kernel would. OWNER: write-core.
/// Open: refuses what the engine cannot write (dirty log, v4, no rmapbt, realtime, quota, unknown features,
/// mounted or loop-attached, another writer's lock); takes an exclusive lock on the image file; replays the
/// journal of a crashed run; sets NEEDSREPAIR on disk while open so the kernel refuses to mount it.
/// Close: checkpoints, writes the superblock counters, clears NEEDSREPAIR, fsyncs, unlocks.
/// </summary>
public sealed class WriteEngine : IDisposable
{
    private WriteEngine() => throw new NotImplementedException("write-core");

    /// <summary>Opens <paramref name="imagePath"/> for writing. Throws <see cref="XfsWriteException"/> (Busy, NotSupported, Corrupt, Io).</summary>
    public static WriteEngine Open(string imagePath, WriteEngineOptions? options = null) => throw new NotImplementedException("write-core");

    /// <summary>The image (superblock, geometry, cache, AG headers and trees for reading).</summary>
    public XfsImage Image => throw new NotImplementedException("write-core");

    public XfsGeometry Geometry => throw new NotImplementedException("write-core");

    /// <summary>Per-AG state: sickness, hook chain.</summary>
    public EngineAg Ag(uint agno) => throw new NotImplementedException("write-core");

    /// <summary>The in-core inode of <paramref name="ino"/> (read and verified on first use, then cached).
    /// Throws XfsWriteException NotFound for an invalid inode number, Corrupt for a bad inode.</summary>
    public IncoreInode GetInode(ulong ino) => throw new NotImplementedException("write-core");

    /// <summary>Runs <paramref name="body"/> as one transaction: commit when it returns, cancel (nothing changed)
    /// when it throws. A lock taken out of order restarts the body once with that lock taken first, so a body
    /// must not have effects outside its transaction. Metadata corruption marks the AG sick and becomes
    /// <see cref="XfsWriteException"/> Corrupt.</summary>
    public T Execute<T>(string operation, Func<WriteTransaction, T> body) => throw new NotImplementedException("write-core");

    /// <inheritdoc cref="Execute{T}(string, Func{WriteTransaction, T})"/>
    public void Execute(string operation, Action<WriteTransaction> body) => throw new NotImplementedException("write-core");

    /// <summary>Holds the inode lock for reading outside a transaction (pread, stat, readdir). Dispose to release.</summary>
    public IDisposable LockInodeForRead(IncoreInode inode) => throw new NotImplementedException("write-core");

    /// <summary>Reads committed file data: <paramref name="destination"/>.Length bytes from fs block <paramref name="fsbno"/> on.</summary>
    public void ReadData(ulong fsbno, Span<byte> destination) => throw new NotImplementedException("write-core");

    /// <summary>Adds an observer of AG <paramref name="agno"/>'s rmap changes; dispose the result to remove it.</summary>
    public IDisposable RegisterRmapHook(uint agno, IRmapHook hook) => throw new NotImplementedException("write-core");

    /// <summary>Clean close (see the class remarks). Dispose without Close leaves NEEDSREPAIR set and the journal in place.</summary>
    public void Close() => throw new NotImplementedException("write-core");

    public void Dispose() => throw new NotImplementedException("write-core");
}

/// <summary>Per-AG state of an open engine. OWNER: write-core.</summary>
public sealed class EngineAg
{
    private EngineAg() => throw new NotImplementedException("write-core");

    public uint AgNumber => throw new NotImplementedException("write-core");

    /// <summary>True after corruption was found in this AG: no allocation here, operations touching it fail.</summary>
    public bool IsSick => throw new NotImplementedException("write-core");

    public string? SickReason => throw new NotImplementedException("write-core");

    public void MarkSick(string reason) => throw new NotImplementedException("write-core");

    public void MarkHealthy() => throw new NotImplementedException("write-core");
}
