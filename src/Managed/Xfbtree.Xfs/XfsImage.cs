using Microsoft.Win32.SafeHandles;
using Xfbtree.Btree;
using Xfbtree.Buffers;
using Xfbtree.Xfs.Format;
using Xfbtree.Xfs.Trees;

namespace Xfbtree.Xfs;

/// <summary>Options for <see cref="XfsImage.Open"/>.</summary>
public sealed record XfsImageOptions
{
    /// <summary>Open for writing (repair). Default read-only.</summary>
    public bool Writable { get; init; }
    /// <summary>
    /// Memory the buffer cache may keep in unheld clean buffers. Default 2 MiB: a scan reads each metadata block once
    /// (the check walks the on-disk rmapbt once too), so a larger cache only costs memory (measured in docs/xfs-scan.md).
    /// </summary>
    public long CacheBytes { get; init; } = 2L << 20;
    /// <summary>Test seam (internal): called with the disk target right after it is opened writable, before any
    /// block is read through it (crash models install their write interceptor here).</summary>
    internal Action<DiskBufferTarget>? ConfigureWritableTarget { get; init; }
    /// <summary>Opens a filesystem without the reverse-mapping btree too (internal: only the offline scrub check,
    /// which reads it without the on-disk rmapbt). Default false: <see cref="Format.Superblock.RequireRmapbt"/> refuses it.</summary>
    internal bool AllowMissingRmapbt { get; init; }
}

/// <summary>
/// An XFS v5 image (file or block device) opened for reading (and, for repair, writing) through the shared
/// <see cref="BufferCache"/> over a <see cref="DiskBufferTarget"/>: the primary superblock (validated, supported
/// features only), the geometry, verified AG headers and every per-AG and inode-rooted btree through the generic
/// engine. Every metadata block read goes through the cache and a verifier.
/// </summary>
/// <remarks>
/// <see cref="Open"/> turns every kind of bad input into an <see cref="XfsFormatException"/> with a one-line message:
/// missing file, directory, empty file, not XFS, unsupported feature, corrupt superblock, truncated image.
/// Header reads (<see cref="ReadAgf"/>, ...) throw <see cref="CorruptionException"/> when the sector is not the
/// header it should be; parsed headers list field problems in their <c>Problems</c>.
/// Thread safety: header reads and tree objects may be used from several threads at once as long as each cursor
/// is used by one thread (the cache serialises buffer access).
/// </remarks>
public sealed class XfsImage : IDisposable
{
    readonly SafeFileHandle _raw;
    readonly BufferTarget _target;
    readonly BufferCache _cache;
    readonly FsBtreeBlockStore _fsStore;
    readonly bool _view;
    bool _disposed;

    XfsImage(string path, SafeFileHandle raw, Superblock sb, BufferTarget target, BufferCache cache)
    {
        Path = path;
        _raw = raw;
        Superblock = sb;
        Geometry = new XfsGeometry(sb);
        _target = target;
        _cache = cache;
        _fsStore = new FsBtreeBlockStore(cache, target, Geometry.BlockSize, Geometry.AgBlocks, Geometry.AgBlockLog, Geometry.AgCount, Geometry.DataBlocks);
    }

    /// <summary>The path the image was opened from.</summary>
    public string Path { get; }
    internal Superblock Superblock { get; }
    /// <summary>The filesystem's geometry, from the validated primary superblock.</summary>
    public XfsGeometry Geometry { get; }
    internal BufferCache Cache => _cache;
    /// <summary>The probe handle of the image file (the write engine takes its exclusive flock on it).</summary>
    internal SafeFileHandle RawHandle => _raw;
    internal BufferTarget Target => _target;
    /// <summary>Blocks addressed by fsbno (bmbt blocks of every inode).</summary>
    internal FsBtreeBlockStore FsStore => _fsStore;

    /// <summary>Opens and validates an image. Throws <see cref="XfsFormatException"/> (one-line cause) for bad input.</summary>
    public static XfsImage Open(string path, XfsImageOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(path);
        options ??= new XfsImageOptions();
        if (Directory.Exists(path)) throw new XfsFormatException($"{path}: is a directory, not an XFS image");
        if (!File.Exists(path)) throw new XfsFormatException($"{path}: no such file");
        SafeFileHandle raw;
        try { raw = File.OpenHandle(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { throw new XfsFormatException($"{path}: cannot open: {e.Message}"); }
        BufferTarget? target = null;
        BufferCache? cache = null;
        try
        {
            var probe = new byte[512];
            int got = ReadFully(raw, probe, 0);
            if (got == 0) throw new XfsFormatException($"{path}: empty file (0 bytes), not an XFS image");
            if (got < 512) throw new XfsFormatException($"{path}: {got} bytes, too short for an XFS superblock");
            var sb = Superblock.Parse(probe);
            if (sb.Magic != Superblock.MagicValue)
                throw new XfsFormatException($"{path}: not an XFS filesystem (no XFSB superblock magic)");
            sb.RequireSupported();
            if (!options.AllowMissingRmapbt) sb.RequireRmapbt();
            if (sb.SectorSize > 512 && sb.SectorSize <= 32768 && (sb.SectorSize & (sb.SectorSize - 1)) == 0)
            {
                var sector = new byte[sb.SectorSize];
                got = ReadFully(raw, sector, 0);
                if (got < sector.Length) throw new XfsFormatException($"{path}: truncated image: the superblock sector is incomplete");
                sb = Superblock.Parse(sector);
            }
            try { sb.Validate(); }
            catch (XfsFormatException e) when (e is not XfsUnsupportedException) { throw new XfsFormatException($"{path}: {e.Message}"); }

            DiskBufferTarget disk;
            try { disk = DiskBufferTarget.Open(path, new DiskTargetOptions { ReadOnly = !options.Writable }); }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException) { throw new XfsFormatException($"{path}: cannot open: {e.Message}"); }
            target = disk;
            if (options.Writable) options.ConfigureWritableTarget?.Invoke(disk);
            long needBytes = (long)sb.DataBlocks * sb.BlockSize;
            long haveBytes = target.SizeInBasicBlocks * 512;
            if (haveBytes < needBytes)
                throw new XfsFormatException($"{path}: truncated image: {haveBytes} bytes, but the superblock describes {needBytes} ({sb.DataBlocks} blocks of {sb.BlockSize})");
            cache = new BufferCache(new BufferCacheOptions { MemoryLimitBytes = options.CacheBytes });
            return new XfsImage(path, raw, sb, target, cache);
        }
        catch (XfsUnsupportedException e)
        {
            raw.Dispose(); cache?.Dispose(); target?.Dispose();
            throw new XfsUnsupportedException($"{path}: {e.Message}");
        }
        catch
        {
            raw.Dispose(); cache?.Dispose(); target?.Dispose();
            throw;
        }
    }

    static int ReadFully(SafeFileHandle fh, Span<byte> dest, long offset)
    {
        int total = 0;
        while (total < dest.Length)
        {
            int n = RandomAccess.Read(fh, dest[total..], offset + total);
            if (n <= 0) break;
            total += n;
        }
        return total;
    }

    /// <summary>Clean-log test (docs/xfs-format.md §8.4).</summary>
    public LogInspection InspectLog() => XfsLog.Inspect(_raw, Geometry);

    /// <summary>Verifier of an AG header sector (also the write verifier: recomputes the CRC).</summary>
    internal AgHeaderVerifier HeaderVerifier(AgHeaderKind kind, uint agno) => new(kind, Geometry, agno);

    /// <summary>Reads (through the cache, verified) and holds an AG header sector; release it with <see cref="BufferCache.Release"/>.</summary>
    internal BlockBuffer ReadHeaderBuffer(AgHeaderKind kind, uint agno, BufferLockMode mode = BufferLockMode.Shared)
    {
        CheckAg(agno);
        return _cache.Read(_target, Geometry.AgHeaderDaddr(agno, (int)kind), Geometry.SectorBasicBlocks, HeaderVerifier(kind, agno), mode);
    }

    /// <summary>Reads and parses the AGF of AG <paramref name="agno"/>. Throws <see cref="CorruptionException"/>.</summary>
    internal Agf ReadAgf(uint agno)
    {
        var buf = ReadHeaderBuffer(AgHeaderKind.Agf, agno);
        try { return Agf.Parse(buf.Span, Geometry, agno); }
        finally { _cache.Release(buf); }
    }

    /// <summary>Reads and parses the AGI of AG <paramref name="agno"/>. Throws <see cref="CorruptionException"/>.</summary>
    internal Agi ReadAgi(uint agno)
    {
        var buf = ReadHeaderBuffer(AgHeaderKind.Agi, agno);
        try { return Agi.Parse(buf.Span, Geometry, agno); }
        finally { _cache.Release(buf); }
    }

    /// <summary>Reads and parses the AGFL of AG <paramref name="agno"/> (live range from <paramref name="agf"/>).</summary>
    internal Agfl ReadAgfl(uint agno, Agf agf)
    {
        var buf = ReadHeaderBuffer(AgHeaderKind.Agfl, agno);
        try { return Agfl.Parse(buf.Span, Geometry, agf); }
        finally { _cache.Release(buf); }
    }

    void CheckAg(uint agno)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (agno >= Geometry.AgCount) throw new ArgumentOutOfRangeException(nameof(agno), agno, $"the filesystem has {Geometry.AgCount} AGs");
    }

    /// <summary>A block store for the trees of AG <paramref name="agno"/> (pointers are agbnos).</summary>
    internal AgBtreeBlockStore CreateAgStore(uint agno)
    {
        CheckAg(agno);
        return new AgBtreeBlockStore(_cache, _target, Geometry.BlockSize, agno, Geometry.AgBlocks, Geometry.AgLength(agno));
    }

    /// <summary>The on-disk rmapbt of an AG, rooted where the AGF says.</summary>
    internal Btree<RmapbtOps> OpenRmapbt(Agf agf, AgBtreeBlockStore? store = null)
    {
        ArgumentNullException.ThrowIfNull(agf);
        return new Btree<RmapbtOps>(new RmapbtOps(false, Geometry.AgLength(agf.AgNumber)), store ?? CreateAgStore(agf.AgNumber),
            new BtreeRootValue(agf.RmapRoot, (int)agf.RmapLevel), Geometry.MetaUuid, agf.AgNumber, XfsTreeLimits.MaxRecords(Geometry, AgfTree.Rmapbt));
    }

    /// <summary>The on-disk bnobt of an AG.</summary>
    internal Btree<BnobtOps> OpenBnobt(Agf agf, AgBtreeBlockStore? store = null)
    {
        ArgumentNullException.ThrowIfNull(agf);
        return new Btree<BnobtOps>(new BnobtOps(Geometry.AgLength(agf.AgNumber)), store ?? CreateAgStore(agf.AgNumber),
            new BtreeRootValue(agf.BnoRoot, (int)agf.BnoLevel), Geometry.MetaUuid, agf.AgNumber, XfsTreeLimits.MaxRecords(Geometry, AgfTree.Bnobt));
    }

    /// <summary>The on-disk cntbt of an AG.</summary>
    internal Btree<CntbtOps> OpenCntbt(Agf agf, AgBtreeBlockStore? store = null)
    {
        ArgumentNullException.ThrowIfNull(agf);
        return new Btree<CntbtOps>(new CntbtOps(Geometry.AgLength(agf.AgNumber)), store ?? CreateAgStore(agf.AgNumber),
            new BtreeRootValue(agf.CntRoot, (int)agf.CntLevel), Geometry.MetaUuid, agf.AgNumber, XfsTreeLimits.MaxRecords(Geometry, AgfTree.Cntbt));
    }

    /// <summary>The on-disk refcountbt of an AG (reflink filesystems).</summary>
    internal Btree<RefcountbtOps> OpenRefcountbt(Agf agf, AgBtreeBlockStore? store = null)
    {
        ArgumentNullException.ThrowIfNull(agf);
        return new Btree<RefcountbtOps>(new RefcountbtOps(), store ?? CreateAgStore(agf.AgNumber),
            new BtreeRootValue(agf.RefcountRoot, (int)agf.RefcountLevel), Geometry.MetaUuid, agf.AgNumber, XfsTreeLimits.MaxRecords(Geometry, AgfTree.Refcountbt));
    }

    /// <summary>The on-disk inobt or finobt of an AG.</summary>
    internal Btree<InobtOps> OpenInobt(Agi agi, AgiTree tree, AgBtreeBlockStore? store = null)
    {
        ArgumentNullException.ThrowIfNull(agi);
        var (root, level) = agi.RootOf(tree);
        return new Btree<InobtOps>(new InobtOps(tree == AgiTree.Finobt, Superblock.HasSparseInodes), store ?? CreateAgStore(agi.AgNumber),
            new BtreeRootValue(root, (int)level), Geometry.MetaUuid, agi.AgNumber, XfsTreeLimits.MaxInobtRecords(Geometry));
    }

    /// <summary>
    /// The bmbt of one inode fork whose format is BTREE (<paramref name="fork"/> is the whole fork area of a
    /// verified inode). Blocks are addressed by fsbno; each block's owner must be the inode.
    /// </summary>
    internal Btree<BmbtOps> OpenBmbt(ulong ino, ReadOnlySpan<byte> fork)
    {
        var ops = new BmbtOps();
        var geo = BtreeGeometry.For(ops, Geometry.BlockSize);
        var root = new BtreeInodeRoot(geo, BmbtOps.MagicValue, fork);
        return new Btree<BmbtOps>(ops, _fsStore, root, Geometry.MetaUuid, (long)ino);
    }

    XfsImage(XfsImage shared, long cacheBytes) : this(shared.Path, shared._raw, shared.Superblock, shared._target, new BufferCache(new BufferCacheOptions { MemoryLimitBytes = cacheBytes }))
    {
        _view = true;
    }

    /// <summary>
    /// A read-only view of the same image through its own buffer cache (same target and handle, which stay owned by
    /// this image): an oracle can scan what is on disk while the write engine holds this image, its locks and its
    /// buffers (online repair's --verify-repairs, with commits paused). Disposing the view frees only its cache.
    /// </summary>
    internal XfsImage CreateReadView(long cacheBytes = 8L << 20)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        return new XfsImage(this, cacheBytes);
    }

    /// <summary>Releases the cache, the target and the probe handle (a view: only its cache).</summary>
    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        _cache.Dispose();
        if (_view) return;
        _target.Dispose();
        _raw.Dispose();
    }
}
