using System.Buffers.Binary;
using Xfbtree.Buffers;
using Xfbtree.Xfs.Format;
using Xfbtree.Xfs.Repair;

namespace Xfbtree.Xfs.Write.Engine;

public sealed partial class WriteEngine
{
    /// <summary>The journal of an image: beside the file the path names after every symbolic link is resolved
    /// (realpath) + ".xfbtree-journal", so that every name of the image (a symlink, a relative path) finds the
    /// journal a crash left.</summary>
    public static string DefaultJournalPath(string imagePath)
    {
        ArgumentNullException.ThrowIfNull(imagePath);
        return ImageUseCheck.RealPath(imagePath) + ".xfbtree-journal";
    }

    /// <summary>Opens <paramref name="imagePath"/> for writing. Throws <see cref="XfsWriteException"/> (Busy, NotSupported, Corrupt, Io).</summary>
    public static WriteEngine Open(string imagePath, WriteEngineOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(imagePath);
        options ??= new WriteEngineOptions();
        if (Directory.Exists(imagePath) || !File.Exists(imagePath))
        {
            throw new XfsWriteException(WriteErrorKind.NotFound, $"{imagePath}: no such image file");
        }
        IReadOnlyList<string> loops;
        try
        {
            loops = ImageUseCheck.LoopDevicesBacking(imagePath);
        }
        catch (XfsFormatException e)
        {
            // Whether the kernel uses the image is unknown: refuse as for an image in use.
            throw new XfsWriteException(WriteErrorKind.Busy, e.Message, e);
        }
        if (loops.Count > 0)
        {
            throw new XfsWriteException(WriteErrorKind.Busy, $"{imagePath}: in use through {string.Join(", ", loops)} (mounted or attached); unmount and detach it first");
        }
        try
        {
            // The write engine has no read-only mode to offer: writing is what it is for.
            RmapRepairPreconditions.BeforeOpen(imagePath, willWrite: true,
                readOnlyAdvice: "make it writable (chmod u+w) to change it; xfbtree rmap check only reads");
        }
        catch (XfsFormatException e)
        {
            throw new XfsWriteException(WriteErrorKind.NotSupported, e.Message, e);
        }
        IDisposable? writerLock;
        try
        {
            writerLock = OperatingSystem.IsLinux() ? Native.ImageFileLock.TryAcquireExclusive(imagePath) : null;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or Native.NativeCallException)
        {
            throw new XfsWriteException(WriteErrorKind.Io, $"{imagePath}: cannot lock the image: {e.Message}", e);
        }
        if (writerLock is null && OperatingSystem.IsLinux())
        {
            throw new XfsWriteException(WriteErrorKind.Busy, $"{imagePath}: another writer (xfbtree io, stress or repair) holds the image");
        }
        try
        {
            WriteEngine engine = OpenLocked(imagePath, options);
            engine.writerLock = writerLock;
            return engine;
        }
        catch
        {
            writerLock?.Dispose();
            throw;
        }
    }

    private static WriteEngine OpenLocked(string imagePath, WriteEngineOptions options)
    {
        XfsImage img;
        try
        {
            img = XfsImage.Open(imagePath, new XfsImageOptions { Writable = true, CacheBytes = options.CacheBytes, AllowMissingRmapbt = true });
        }
        catch (XfsUnsupportedException e)
        {
            throw new XfsWriteException(WriteErrorKind.NotSupported, e.Message, e);
        }
        catch (XfsFormatException e)
        {
            throw new XfsWriteException(WriteErrorKind.Corrupt, e.Message, e);
        }
        WriteJournal? journal = null;
        try
        {
            var disk = (DiskBufferTarget)img.Target;
            if (disk.IsBlockDevice)
            {
                throw new XfsWriteException(WriteErrorKind.NotSupported, $"{imagePath}: block devices are not supported by the write engine; use an image file");
            }
            if (options.Faults is { } faults)
            {
                disk.FaultHook = (write, _, _) =>
                {
                    if (write)
                    {
                        faults.BeforeWrite();
                    }
                    return DiskBufferTarget.DiskFault.None;
                };
            }
            string journalPath = options.JournalPath ?? DefaultJournalPath(imagePath);
            Superblock sb = img.Superblock;
            bool ours = false;
            if (File.Exists(journalPath))
            {
                byte[]? owner = WriteJournal.ReadOwner(journalPath);
                if (owner is not null && !owner.AsSpan().SequenceEqual(sb.Uuid))
                {
                    throw new XfsWriteException(WriteErrorKind.NotSupported, $"{journalPath} is the journal of another filesystem; move it away first");
                }
                ours = owner is not null || sb.NeedsRepair; // a torn header: we crashed while creating it
                // Records are only appended while NEEDSREPAIR is on disk, and a clean close empties the journal
                // before it clears the flag: records without the flag mean another program (xfs_repair) has
                // changed the image since, and replaying them would undo its work.
                if (owner is not null && !sb.NeedsRepair && new FileInfo(journalPath).Length > WriteJournal.HeaderLength)
                {
                    throw new XfsWriteException(WriteErrorKind.NotSupported,
                        $"{journalPath} holds transactions but the filesystem is no longer marked NEEDSREPAIR (repaired since?); move the stale journal away");
                }
            }
            CheckWritable(img, allowNeedsRepair: ours);
            int replayed = 0;
            if (ours && File.Exists(journalPath) && WriteJournal.ReadOwner(journalPath) is not null)
            {
                replayed = WriteJournal.Replay(journalPath, (offset, bytes) => WriteReplayed(disk, offset, bytes));
                disk.Sync();
            }
            journal = WriteJournal.Create(journalPath, sb.Uuid, options.Faults);
            var engine = new WriteEngine(img, disk, journal, options, replayed);
            if (options.CheckWriteAhead)
            {
                DiskBufferTarget.DiskFaultHook? previous = disk.FaultHook;
                disk.FaultHook = (write, daddr, lengthBB) =>
                {
                    if (write)
                    {
                        engine.CheckWriteAhead(daddr, lengthBB);
                    }
                    return previous?.Invoke(write, daddr, lengthBB) ?? DiskBufferTarget.DiskFault.None;
                };
            }
            engine.SetNeedsRepair(true);
            engine.LoadAgSummaries();
            return engine;
        }
        catch (Exception e) when (e is not XfsWriteException)
        {
            journal?.Dispose();
            img.Dispose();
            throw e switch
            {
                CorruptionException c => new XfsWriteException(WriteErrorKind.Corrupt, $"{imagePath}: {c.Message}", c),
                IOException io => new XfsWriteException(WriteErrorKind.Io, $"{imagePath}: {io.Message}", io),
                UnauthorizedAccessException ua => new XfsWriteException(WriteErrorKind.Io, $"{imagePath}: {ua.Message}", ua),
                _ => e,
            };
        }
        catch
        {
            journal?.Dispose();
            img.Dispose();
            throw;
        }
    }

    private static void CheckWritable(XfsImage img, bool allowNeedsRepair)
    {
        Superblock sb = img.Superblock;
        string path = img.Path;
        if (sb.NeedsRepair && !allowNeedsRepair)
        {
            throw new XfsWriteException(WriteErrorKind.NotSupported, $"{path}: the filesystem is marked NEEDSREPAIR (not by this engine); run xfs_repair first");
        }
        if (sb.InProgress != 0)
        {
            throw new XfsWriteException(WriteErrorKind.NotSupported, $"{path}: sb_inprogress is set (mkfs did not finish)");
        }
        if (sb.FeaturesLogIncompat != 0)
        {
            throw new XfsWriteException(WriteErrorKind.NotSupported, $"{path}: the log holds log-incompatible items (0x{sb.FeaturesLogIncompat:x}); mount and unmount the filesystem first");
        }
        var sector = new byte[512];
        RandomAccess.Read(img.RawHandle, sector, 0);
        ushort qflags = BinaryPrimitives.ReadUInt16BigEndian(sector.AsSpan(QflagsOffset));
        if ((qflags & QuotaAccountingBits) != 0)
        {
            throw new XfsWriteException(WriteErrorKind.NotSupported, $"{path}: quota accounting is on (sb_qflags 0x{qflags:x}): not supported by the write engine");
        }
        LogInspection log = img.InspectLog();
        if (log.State != LogState.Clean)
        {
            throw new XfsWriteException(WriteErrorKind.NotSupported, log.State == LogState.Dirty
                ? $"{path}: the log is dirty ({log.Detail}); mount and unmount the filesystem to replay it first"
                : $"{path}: cannot tell whether the log is clean ({log.Detail}); refusing to write");
        }
    }

    // sb_qflags (big-endian u16 at 176): user, project and group quota accounting.
    private const int QflagsOffset = 176;
    private const ushort QuotaAccountingBits = 0x0001 | 0x0008 | 0x0040;

    /// <summary>
    /// The engine journal a writer left beside <paramref name="imagePath"/> without closing cleanly (a crash, a
    /// kill), or null when there is none (a clean close removes it) or it names another filesystem. Its committed
    /// transactions are replayed by the next open (<c>xfbtree recover IMAGE</c>); nothing is changed here. While a
    /// writer has the image open its journal exists too: ask <c>ImageUseCheck.InUseBy</c> first.
    /// </summary>
    /// <exception cref="IOException">The journal or the image cannot be read.</exception>
    public static PendingJournal? FindPendingJournal(string imagePath)
    {
        string path = DefaultJournalPath(imagePath);
        if (!File.Exists(path))
        {
            return null;
        }
        byte[]? owner = WriteJournal.ReadOwner(path);
        if (owner is not null)
        {
            var uuid = new byte[16];
            using (var h = File.OpenHandle(imagePath, FileMode.Open, FileAccess.Read, FileShare.ReadWrite))
            {
                if (RandomAccess.Read(h, uuid, SuperblockUuidOffset) != uuid.Length || !owner.AsSpan().SequenceEqual(uuid))
                {
                    return null;
                }
            }
        }
        int transactions = owner is null ? 0 : WriteJournal.Replay(path, static (_, _) => { });
        return new PendingJournal(path, transactions, new FileInfo(path).Length);
    }

    private const int SuperblockUuidOffset = 32; // sb_uuid

    private MagicCrcVerifier SuperblockVerifier() =>
        new("superblock", Superblock.MagicValue, Superblock.CrcOffset, Geometry.SectorSize);

    private void SetNeedsRepair(bool on)
    {
        BlockBuffer sb = image.Cache.Read(disk, 0, Geometry.SectorBasicBlocks, SuperblockVerifier(), BufferLockMode.Exclusive);
        try
        {
            bool set = (BinaryPrimitives.ReadUInt32BigEndian(sb.Span[Superblock.OffsetIncompat..]) & Superblock.IncompatNeedsRepair) != 0;
            if (set != on)
            {
                AgHeaderEditor.SetNeedsRepair(sb.Span[..Geometry.SectorSize], on);
                sb.MarkDirty();
            }
        }
        finally
        {
            image.Cache.Release(sb);
        }
        image.Cache.FlushAndSync(disk);
        if (on)
        {
            // The engine's in-core superblock: the sector as it is on disk now, verified at open, NEEDSREPAIR set. The
            // engine writes the primary again only at its clean close, so until then the disk must hold exactly this.
            byte[] held = new byte[Geometry.SectorSize];
            ReadRaw(disk, 0, held);
            primaryInCore = held;
        }
    }

    private byte[]? primaryInCore;
    private readonly object primaryGate = new();

    /// <summary>The primary superblock sector as the engine holds it (see <see cref="SetNeedsRepair"/>): what the disk
    /// must hold while the engine is open (a copy).</summary>
    internal byte[] PrimarySuperblockInCore => (byte[])(primaryInCore ?? throw new InvalidOperationException("the engine is not open")).Clone();

    /// <summary>The primary superblock sector as it is on disk now (read past the cache).</summary>
    internal byte[] ReadPrimarySuperblockFromDisk()
    {
        byte[] now = new byte[Geometry.SectorSize];
        ReadRaw(disk, 0, now);
        return now;
    }

    /// <summary>
    /// Writes the primary superblock sector whole from the engine's in-core copy (the kernel's way: its in-core
    /// superblock is authoritative and the sector is formatted from it, never read back), and syncs: a primary damaged
    /// on disk while the engine runs is restored. Not read first, so one that does not verify is rewritten too.
    /// </summary>
    internal void RestorePrimarySuperblock()
    {
        byte[] held = primaryInCore ?? throw new InvalidOperationException("the engine is not open");
        lock (primaryGate)
        {
            BlockBuffer sb = image.Cache.GetNew(disk, 0, Geometry.SectorBasicBlocks, SuperblockVerifier());
            try
            {
                held.CopyTo(sb.Span);
                sb.MarkDirty();
            }
            finally
            {
                image.Cache.Release(sb);
            }
            image.Cache.FlushAndSync(disk);
        }
    }

    /// <summary>Reads every AGF once so AG selection has figures before the first allocation; an AG whose
    /// headers are corrupt is marked sick instead of failing the open.</summary>
    private void LoadAgSummaries()
    {
        countersAtOpen = new (ulong, ulong, ulong)?[ags.Length];
        foreach (EngineAg ag in ags)
        {
            countersAtOpen[ag.AgNumber] = AgCounters(ag.AgNumber);
            try
            {
                Agf agf = image.ReadAgf(ag.AgNumber);
                if (agf.Problems.Count > 0)
                {
                    ag.MarkSick($"AGF: {agf.Problems[0]}");
                    continue;
                }
                Agi agi = image.ReadAgi(ag.AgNumber);
                var (metaAsk, rmapAsk) = ag.ReservationAsks;
                long metaUsed = agf.RefcountBlocks + (image.Superblock.HasInobtCounts ? agi.FinobtBlocks : 0);
                ag.Publish(new AgSummary(agf.FreeBlocks, agf.Longest, agf.FlCount,
                    Space.AgSpace.MinFreeList(Geometry, agf.BnoLevel, agf.CntLevel, agf.RmapLevel),
                    Math.Max(0, (long)metaAsk - metaUsed), Math.Max(0, (long)rmapAsk - agf.RmapBlocks)));
            }
            catch (CorruptionException e)
            {
                ag.MarkSick(e.Message);
            }
        }
    }
}

/// <summary>An engine journal left beside an image by a writer that did not close it cleanly
/// (<see cref="WriteEngine.FindPendingJournal"/>).</summary>
/// <param name="Path">The journal file.</param>
/// <param name="Transactions">Complete committed transactions in it (what a replay applies).</param>
/// <param name="Bytes">Its size.</param>
public sealed record PendingJournal(string Path, int Transactions, long Bytes);
