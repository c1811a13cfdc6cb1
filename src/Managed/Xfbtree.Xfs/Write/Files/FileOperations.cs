using Xfbtree.Xfs.Format;
using Xfbtree.Xfs.Trees;
using Xfbtree.Xfs.Write.Engine;

namespace Xfbtree.Xfs.Write.Files;

/// <summary>
/// Regular-file data operations on inode numbers, each one transaction.
/// Fork mapping in extents and btree format (with the kernel's conversions both ways), rmap and refcount
/// updates through the transaction, reflink and copy-on-write.
/// </summary>
/// <remarks>
/// Each operation runs as one <see cref="WriteEngine.Execute(string, Action{WriteTransaction})"/>: it locks its
/// inode(s) (ascending), reads the data fork into an <see cref="ExtentList"/>, checks the space it may need, then
/// changes blocks, rmap and refcount records and the in-memory list, and finally writes the list back into the
/// inode (<see cref="FileFork.Store"/>). Any failure cancels the transaction: nothing reaches the image.
/// </remarks>
internal sealed class FileOperations
{
    /// <summary>Largest file size: the kernel's MAX_LFS_FILESIZE (2^63 - 1) rounded down to 64 KiB, the largest block
    /// size, so that rounding any offset up to a block boundary cannot overflow.</summary>
    public const long MaxFileSize = long.MaxValue / 65536 * 65536;

    public FileOperations(WriteEngine engine) => Engine = engine;

    public WriteEngine Engine { get; }

    /// <summary>Writes <paramref name="data"/> at <paramref name="offset"/> (allocating holes, converting unwritten
    /// ranges, copying shared blocks on write); extends the size.</summary>
    public void Write(ulong ino, long offset, ReadOnlySpan<byte> data) => WriteCore(ino, null, offset, data);

    /// <summary>As <see cref="Write(ulong, long, ReadOnlySpan{byte})"/> through a handle: the generation is checked under the inode lock (ESTALE
    /// when the inode was freed, and maybe reused, since the handle was made).</summary>
    public void Write(Namespace.InodeHandle file, long offset, ReadOnlySpan<byte> data) => WriteCore(file.Ino, file.Generation, offset, data);

    /// <summary>As <see cref="Write(Namespace.InodeHandle, long, ReadOnlySpan{byte})"/>; with
    /// <see cref="FileWriteFlags.KillSuidGid"/> (a caller without CAP_FSETID: FUSE's FUSE_WRITE_KILL_SUIDGID) a
    /// write of at least one byte to a regular file also clears set-user-ID, and set-group-ID when group-execute
    /// is set, in the same transaction, as the kernel's <c>file_remove_privs</c>.</summary>
    public void Write(Namespace.InodeHandle file, long offset, ReadOnlySpan<byte> data, FileWriteFlags flags)
        => WriteCore(file.Ino, file.Generation, offset, data, flags);

    void WriteCore(ulong ino, uint? generation, long offset, ReadOnlySpan<byte> data, FileWriteFlags flags = FileWriteFlags.None)
    {
        if ((flags & ~FileWriteFlags.KillSuidGid) != 0) throw new XfsWriteException(WriteErrorKind.InvalidArgument, $"write: unknown flags {flags}");
        CheckRange(offset, data.Length, "write");
        var inode = Engine.GetInode(ino);
        if (TryOverwriteInPlace(inode, generation, offset, data, flags)) return;
        // A copy the transaction body can hold (a span cannot be captured), from the shared pool: a large write
        // would otherwise allocate a large-object-heap array per call. Only its first data.Length bytes count.
        int length = data.Length;
        byte[] bytes = System.Buffers.ArrayPool<byte>.Shared.Rent(length);
        data.CopyTo(bytes);
        try
        {
            ExecuteWrite(inode, generation, offset, bytes, length, flags);
        }
        finally
        {
            System.Buffers.ArrayPool<byte>.Shared.Return(bytes);
        }
    }

    /// <summary>Granularity of the times an overwrite in place sets: mtime and ctime move when they are older than
    /// the current 4 ms tick, as the kernel's coarse clock (a jiffy at HZ=250) moves them at most once a tick.</summary>
    internal static readonly long WriteTimeGranularityTicks = TimeSpan.FromMilliseconds(4).Ticks;

    /// <summary>
    /// Overwrites in place, without a transaction: a write of at least one byte that stays within the size, into
    /// blocks the file holds as written data, of a file without the reflink flag (no shared blocks), where no journal
    /// record since the checkpoint holds a sector and no record that is not durable logged or freed one
    /// (<see cref="WriteEngine.MayOverwriteInPlace"/>), changes file data only: it goes straight to the image, with no
    /// journal record (the kernel's XFS writes such data through the page cache and logs nothing for it). mtime and
    /// ctime follow in a times-only transaction when older than the current tick
    /// (<see cref="WriteTimeGranularityTicks"/>). Durability: fdatasync syncs the image
    /// (<see cref="WriteEngine.SyncFileData"/>), fsync and the journal flusher too (<see cref="WriteEngine.SyncJournal"/>).
    /// A crash before that sync may keep any mix of old and new blocks of the write, as with the kernel. Returns false,
    /// having changed nothing, when any condition fails: the write then goes the journaled way.
    /// </summary>
    bool TryOverwriteInPlace(IncoreInode inode, uint? generation, long offset, ReadOnlySpan<byte> data, FileWriteFlags flags)
    {
        if (data.IsEmpty || !Engine.Options.InPlaceOverwrites || WriteEngine.Current is not null) return false;
        var geo = Engine.Geometry;
        int bs = geo.BlockSize;
        long end = offset + data.Length;
        long sequence;
        using (Engine.LockInodeForRead(inode)) // the inode lock itself (exclusive): no transaction changes the file meanwhile
        {
            CheckGeneration(inode, generation);
            CheckRegular(inode);
            var core = inode.Core;
            if (end > InodeFields.Size(core) || InodeFields.IsReflink(core)) return false;
            ushort mode = InodeFields.Mode(core);
            // A write that must clear set-user-ID or set-group-ID changes the inode: the transaction does that.
            if ((flags & FileWriteFlags.KillSuidGid) != 0 && ((mode & 0x800) != 0 || (mode & 0x408) == 0x408)) return false;
            var extents = ReadExtentsLocked(inode);
            ulong first = (ulong)(offset / bs), last = (ulong)((end - 1) / bs);
            // Every block of the range mapped written, and each run allowed in place; nothing is written before all are.
            ulong p = first;
            for (int i = extents.IndexAtOrAfter(first); p <= last; i++)
            {
                if (i >= extents.Count) return false;
                var e = extents[i];
                if (e.StartOffset > p || e.Unwritten) return false;
                ulong to = Math.Min(e.StartOffset + e.BlockCount - 1, last);
                    if (!Engine.MayOverwriteInPlace(ByteOfFileBlock(e, p), (long)(to - p + 1) * bs)) return false;
                p = to + 1;
            }
            sequence = 0;
            p = first;
            for (int i = extents.IndexAtOrAfter(first); p <= last; i++)
            {
                var e = extents[i];
                ulong to = Math.Min(e.StartOffset + e.BlockCount - 1, last);
                sequence = OverwriteRun(e, p, to, offset, data);
                p = to + 1;
            }
            Volatile.Write(ref inode.OverwriteSequence, sequence);
        }
        UpdateWriteTimes(inode, generation);
        return true;
    }

    /// <summary>Writes the bytes of <paramref name="data"/> (file offset <paramref name="offset"/>) that fall in file
    /// blocks [<paramref name="from"/>, <paramref name="to"/>] of written extent <paramref name="e"/>: whole blocks
    /// straight from the request, a partial block at either end read, patched and written whole. Returns the
    /// engine's overwrite count after the last write.</summary>
    long OverwriteRun(in BmbtExtent e, ulong from, ulong to, long offset, ReadOnlySpan<byte> data)
    {
        var geo = Engine.Geometry;
        int bs = geo.BlockSize;
        long end = offset + data.Length;
        long sequence = 0;
        ulong wholeFrom = from, wholeEnd = to + 1; // the whole blocks: [wholeFrom, wholeEnd)
        bool head = (long)from * bs < offset, tail = (long)(to + 1) * bs > end;
        if (head)
        {
            sequence = OverwritePartialBlock(e, from, offset, end, data, ByteOfFileBlock(e, from));
            wholeFrom = from + 1;
        }
        if (tail)
        {
            if (!head || to != from) sequence = OverwritePartialBlock(e, to, offset, end, data, ByteOfFileBlock(e, to)); // else done above
            wholeEnd = to;
        }
        if (wholeFrom < wholeEnd)
        {
            long fileStart = (long)wholeFrom * bs;
            int length = checked((int)((wholeEnd - wholeFrom) * (ulong)bs));
            sequence = Engine.OverwriteInPlace(ByteOfFileBlock(e, wholeFrom), data.Slice((int)(fileStart - offset), length));
        }
        return sequence;
    }

    /// <summary>Image byte offset of file block <paramref name="fileBlock"/> of mapping <paramref name="e"/>.</summary>
    long ByteOfFileBlock(in BmbtExtent e, ulong fileBlock)
    {
        var geo = Engine.Geometry;
        ulong fsbno = e.StartBlock + (fileBlock - e.StartOffset);
        return geo.AgBlockToByte(geo.FsbToAgno(fsbno), geo.FsbToAgbno(fsbno));
    }

    /// <summary>
    /// fdatasync(2) of <paramref name="file"/>: returns once its data and what reading it back needs (size, mapping)
    /// are durable; its times may follow later (within the journal flusher's bound), as with the kernel's fdatasync.
    /// A file changed only by overwrites in place since the last sync costs one image fdatasync and no journal fsync.
    /// </summary>
    public void SyncData(Namespace.InodeHandle file) => Engine.SyncFileData(Engine.GetInode(file.Ino));

    /// <summary>One block of an overwrite that the write covers partly: read, patched with the write's bytes, written.</summary>
    long OverwritePartialBlock(in BmbtExtent e, ulong fileBlock, long offset, long end, ReadOnlySpan<byte> data, long byteOffset)
    {
        int bs = Engine.Geometry.BlockSize;
        byte[] block = t_blockScratch is { } b && b.Length == bs ? b : t_blockScratch = new byte[bs];
        Engine.ReadData(e.StartBlock + (fileBlock - e.StartOffset), block);
        long blockStart = (long)fileBlock * bs;
        long from = Math.Max(blockStart, offset), to = Math.Min(blockStart + bs, end);
        data.Slice((int)(from - offset), (int)(to - from)).CopyTo(block.AsSpan((int)(from - blockStart)));
        return Engine.OverwriteInPlace(byteOffset, block);
    }

    /// <summary>mtime and ctime (and the change counter) to now after an overwrite in place, in a times-only transaction,
    /// when either is older than the current tick; nothing (no transaction) otherwise.</summary>
    void UpdateWriteTimes(IncoreInode inode, uint? generation)
    {
        var now = DateTimeOffset.UtcNow;
        var tick = Namespace.InodeTime.FromDateTimeOffset(new DateTimeOffset(now.UtcTicks - now.UtcTicks % WriteTimeGranularityTicks, TimeSpan.Zero));
        // A first look without the lock saves the transaction in the common case; the transaction looks again.
        if (WriteTimesStale(inode.Core, tick)) LogWriteTimes(inode, generation, now, tick);
    }

    /// <summary>True when mtime or ctime of <paramref name="core"/> is older than <paramref name="tick"/>.</summary>
    static bool WriteTimesStale(byte[] core, Namespace.InodeTime tick)
    {
        static bool Older(Namespace.InodeTime t, Namespace.InodeTime than) => t.Seconds != than.Seconds ? t.Seconds < than.Seconds : t.Nanoseconds < than.Nanoseconds;
        return Older(Namespace.InodeAttributeFields.GetTime(core, Namespace.InodeCore.OffMtime), tick)
            || Older(Namespace.InodeAttributeFields.GetTime(core, Namespace.InodeCore.OffCtime), tick);
    }

    /// <summary>The times-only transaction of <see cref="UpdateWriteTimes"/> (its own method: the closure is made only
    /// when a transaction runs).</summary>
    void LogWriteTimes(IncoreInode inode, uint? generation, DateTimeOffset now, Namespace.InodeTime tick)
    {
        Engine.Execute("write times", tx =>
        {
            tx.LockInodes(inode);
            CheckGeneration(inode, generation);
            if (!WriteTimesStale(inode.Core, tick)) return;
            InodeFields.Touch(inode.Core, now);
            tx.LogInode(inode);
            tx.TimesOnly = true;
        });
    }

    void ExecuteWrite(IncoreInode inode, uint? generation, long offset, byte[] bytes, int length, FileWriteFlags flags)
    {
        if (length > 0) HidePastEofDataInSteps(inode, generation, "write", offset);
        Engine.Execute("write", tx =>
        {
            var edit = FileEdit.Begin(tx, inode, generation: generation);
            if (length == 0) return;
            long end = offset + length;
            long oldSize = edit.Size;
            edit.EnsureSpaceFor(offset, end, allocateHoles: true, extraRecords: offset > oldSize ? edit.PastEofDataRecords(oldSize, offset) : 0);
            // Bytes between the old EOF and the write read as zeros: clear the old EOF block's tail first, and hide
            // whatever written blocks a crash left past EOF up to the write (its first block included).
            if (offset > oldSize)
            {
                edit.ZeroEofTail(oldSize, offset);
                edit.HidePastEofData(oldSize, offset);
            }
            edit.Modify(offset, end, bytes, ModifyMode.Data);
            if (end > oldSize) edit.Size = end;
            edit.Touch();
            if ((flags & FileWriteFlags.KillSuidGid) != 0) edit.KillSuidGid();
            edit.Finish();
        });
    }

    /// <summary>
    /// Fails with NoSpace, changing nothing, unless free space outside the reservations could take a write of
    /// <paramref name="length"/> bytes at <paramref name="offset"/> now: the holes it would fill, the shared blocks
    /// it would copy, the old EOF block and the worst-case bmbt growth (the check each <see cref="Write(ulong, long, ReadOnlySpan{byte})"/> makes for
    /// itself, made for the whole range before a write split into several operations starts).
    /// </summary>
    public void EnsureWriteSpace(ulong ino, long offset, long length)
    {
        CheckRange(offset, length, "write");
        if (length == 0) return;
        var inode = Engine.GetInode(ino);
        Engine.Execute("write", tx =>
        {
            var edit = FileEdit.Begin(tx, inode);
            // The old EOF block may be zeroed (a copy when shared) when the write starts past it.
            edit.EnsureSpaceFor(offset, offset + length, allocateHoles: true, extra: offset > edit.Size ? edit.BlockSize : 0);
        });
    }

    /// <summary>Reads up to <paramref name="buffer"/>.Length bytes at <paramref name="offset"/> (holes and unwritten
    /// ranges read as zeros; stops at EOF). Returns the bytes read.</summary>
    public int Read(ulong ino, long offset, Span<byte> buffer) => ReadCore(ino, null, offset, buffer);

    /// <summary>As <see cref="Read(ulong, long, Span{byte})"/> through a handle: the generation is checked under the inode lock (ESTALE
    /// when the inode was freed, and maybe reused, since the handle was made).</summary>
    public int Read(Namespace.InodeHandle file, long offset, Span<byte> buffer) => ReadCore(file.Ino, file.Generation, offset, buffer);

    int ReadCore(ulong ino, uint? generation, long offset, Span<byte> buffer)
    {
        // A read may reach past the largest size: it stops at EOF anyway.
        CheckRange(offset, 0, "read");
        var inode = Engine.GetInode(ino);
        int n = ReadLocked(inode, generation, offset, buffer, out bool touch);
        if (touch) Namespace.AccessTimes.Update(Engine, inode, generation);
        return n;
    }

    /// <summary>The read itself, under the inode's read lock; <paramref name="touch"/> says whether atime should follow.</summary>
    int ReadLocked(IncoreInode inode, uint? generation, long offset, Span<byte> buffer, out bool touch)
    {
        ExtentList extents;
        long size;
        using (Engine.LockInodeForRead(inode))
        {
            CheckGeneration(inode, generation);
            CheckRegular(inode);
            // As the kernel's filemap_read: a read of at least one byte touches atime, at EOF too.
            touch = !buffer.IsEmpty && Namespace.AccessTimes.Wanted(Engine, inode.Core);
            size = InodeFields.Size(inode.Core);
            if (offset >= size || buffer.IsEmpty) return 0;
            extents = ReadExtentsLocked(inode);
            int n = (int)Math.Min(buffer.Length, size - offset);
            var dest = buffer[..n];
            int bs = Engine.Geometry.BlockSize;
            long readEnd = offset + n;
            ulong first = (ulong)(offset / bs), last = (ulong)((readEnd - 1) / bs);
            // The extents in place (no list of pieces), and only holes and unwritten ranges zeroed: every other byte
            // of the destination is read into.
            long filled = offset;
            for (int i = extents.IndexAtOrAfter(first); i < extents.Count && extents[i].StartOffset <= last; i++)
            {
                var piece = extents[i];
                if (piece.Unwritten) continue;
                long pieceStart = (long)piece.StartOffset * bs;
                long from = Math.Max(pieceStart, offset), to = Math.Min(pieceStart + (long)piece.BlockCount * bs, readEnd);
                if (from >= to) continue;
                if (from > filled) dest[(int)(filled - offset)..(int)(from - offset)].Clear();
                filled = to;
                // The whole blocks of the run go straight into the destination with one read; a partial block at
                // either end (an unaligned offset or length) goes through one block of scratch.
                long alignedFrom = RoundUp(from, bs), alignedTo = to / bs * bs;
                if (from < alignedFrom || alignedFrom >= alignedTo)
                {
                    long blockStart = from / bs * bs;
                    ReadPartialBlock(piece, blockStart, from, Math.Min(to, blockStart + bs), offset, dest);
                    if (alignedFrom >= alignedTo)
                    {
                        if (to > blockStart + bs) ReadPartialBlock(piece, alignedTo, alignedTo, to, offset, dest);
                        continue;
                    }
                }
                Engine.ReadData(piece.StartBlock + (ulong)((alignedFrom - pieceStart) / bs), dest.Slice((int)(alignedFrom - offset), (int)(alignedTo - alignedFrom)));
                if (to > alignedTo) ReadPartialBlock(piece, alignedTo, alignedTo, to, offset, dest);
            }
            if (readEnd > filled) dest[(int)(filled - offset)..].Clear();
            return n;
        }
    }

    [ThreadStatic] static byte[]? t_blockScratch;

    /// <summary>Copies file bytes [<paramref name="from"/>, <paramref name="to"/>) of the block at file byte
    /// <paramref name="blockStart"/> of written run <paramref name="piece"/> into <paramref name="dest"/> (which
    /// starts at file byte <paramref name="destStart"/>), through one block of per-thread scratch.</summary>
    void ReadPartialBlock(in BmbtExtent piece, long blockStart, long from, long to, long destStart, Span<byte> dest)
    {
        int bs = Engine.Geometry.BlockSize;
        byte[] block = t_blockScratch is { } b && b.Length == bs ? b : t_blockScratch = new byte[bs];
        Engine.ReadData(piece.StartBlock + (ulong)(blockStart / bs) - piece.StartOffset, block);
        block.AsSpan((int)(from - blockStart), (int)(to - from)).CopyTo(dest[(int)(from - destStart)..]);
    }

    /// <summary>Largest piece of data <see cref="ReadInto(ulong, long, long, IFileReadSink)"/> reads at once (its only buffer).</summary>
    public const int ReadPiece = 1 << 20;

    /// <summary>
    /// Streams [<paramref name="offset"/>, +<paramref name="length"/>), capped at EOF, into <paramref name="sink"/> in
    /// file order: written extents as bytes (read in pieces of at most <see cref="ReadPiece"/>), holes and unwritten
    /// extents as zero lengths without reading or materialising anything. The inode is read-locked for the whole
    /// call. Returns the bytes covered (0 at or past EOF).
    /// </summary>
    public long ReadInto(ulong ino, long offset, long length, IFileReadSink sink) => ReadIntoCore(ino, null, offset, length, sink);

    /// <summary>As <see cref="ReadInto(ulong, long, long, IFileReadSink)"/> through a handle: the generation is checked under the inode lock (ESTALE
    /// when the inode was freed, and maybe reused, since the handle was made).</summary>
    public long ReadInto(Namespace.InodeHandle file, long offset, long length, IFileReadSink sink) => ReadIntoCore(file.Ino, file.Generation, offset, length, sink);

    long ReadIntoCore(ulong ino, uint? generation, long offset, long length, IFileReadSink sink)
    {
        ArgumentNullException.ThrowIfNull(sink);
        CheckRange(offset, 0, "read");
        if (length < 0) throw new XfsWriteException(WriteErrorKind.InvalidArgument, $"read: negative length {length}");
        var inode = Engine.GetInode(ino);
        long covered = ReadIntoLocked(inode, generation, offset, length, sink, out bool touch);
        if (touch) Namespace.AccessTimes.Update(Engine, inode, generation);
        return covered;
    }

    /// <summary>The streaming read itself, under the inode's read lock; <paramref name="touch"/> says whether atime should follow.</summary>
    long ReadIntoLocked(IncoreInode inode, uint? generation, long offset, long length, IFileReadSink sink, out bool touch)
    {
        using (Engine.LockInodeForRead(inode))
        {
            CheckGeneration(inode, generation);
            CheckRegular(inode);
            touch = length > 0 && Namespace.AccessTimes.Wanted(Engine, inode.Core);
            long size = InodeFields.Size(inode.Core);
            if (offset >= size || length == 0) return 0;
            long end = offset + Math.Min(length, size - offset);
            var extents = ReadExtentsLocked(inode);
            int bs = Engine.Geometry.BlockSize;
            ulong first = (ulong)(offset / bs), last = (ulong)((end - 1) / bs);
            byte[]? buffer = null;
            long pos = offset;
            foreach (var piece in extents.MappingsIn(first, last - first + 1))
            {
                long pieceStart = Math.Max((long)piece.StartOffset * bs, offset);
                long pieceEnd = Math.Min((long)(piece.StartOffset + piece.BlockCount) * bs, end);
                if (pieceStart > pos) sink.Zeros(pos, pieceStart - pos);
                pos = pieceStart;
                if (piece.Unwritten)
                {
                    sink.Zeros(pos, pieceEnd - pos);
                    pos = pieceEnd;
                    continue;
                }
                buffer ??= new byte[Math.Max(bs, ReadPiece / bs * bs)];
                while (pos < pieceEnd)
                {
                    long fileBlock = pos / bs, blockStart = fileBlock * bs;
                    int blocks = (int)Math.Min(buffer.Length / bs, (pieceEnd - blockStart + bs - 1) / bs);
                    Engine.ReadData(piece.StartBlock + (ulong)fileBlock - piece.StartOffset, buffer.AsSpan(0, blocks * bs));
                    int skip = (int)(pos - blockStart);
                    int take = (int)Math.Min((long)blocks * bs - skip, pieceEnd - pos);
                    sink.Data(pos, buffer.AsSpan(skip, take));
                    pos += take;
                }
            }
            if (pos < end) sink.Zeros(pos, end - pos);
            return end - offset;
        }
    }

    /// <summary>
    /// lseek(2) SEEK_DATA (<paramref name="data"/>) or SEEK_HOLE from the extent map: the first offset at or after
    /// <paramref name="offset"/> inside a written extent, or outside one (EOF counts as a hole). Unwritten extents
    /// read as zeros and count as holes, as for the kernel's clean unwritten extents. Returns -1 (ENXIO) when
    /// <paramref name="offset"/> is at or past EOF, or SEEK_DATA finds no data before EOF.
    /// </summary>
    public long Seek(ulong ino, long offset, bool data)
    {
        CheckRange(offset, 0, "seek");
        var inode = Engine.GetInode(ino);
        using (Engine.LockInodeForRead(inode))
        {
            CheckRegular(inode);
            long size = (long)InodeFields.Size(inode.Core);
            if (offset >= size) return -1;
            var extents = ReadExtentsLocked(inode);
            int bs = Engine.Geometry.BlockSize;
            long position = offset;
            for (int i = extents.IndexAtOrAfter((ulong)(offset / bs)); i < extents.Count && position < size; i++)
            {
                var e = extents[i];
                long start = (long)e.StartOffset * bs, end = (long)(e.StartOffset + e.BlockCount) * bs;
                if (end <= position) continue;
                if (e.Unwritten) continue;
                if (start > position)
                {
                    // A hole (or an unwritten run) lies before this extent.
                    if (!data) return position;
                    position = start;
                }
                if (data) return Math.Min(position, size) < size ? position : -1;
                position = end;
            }
            if (data) return -1;
            return Math.Min(position, size);
        }
    }

    /// <summary>Preallocates unwritten extents over the holes of the range, as fallocate(2) with mode 0:
    /// the size grows to cover the range. The space of the whole range is checked first (NoSpace changes
    /// nothing); the allocations then go in steps of at most <see cref="StepPieces"/>, one transaction each, the
    /// last of which sets the size (unwritten extents past EOF left by a crash between steps are legal).</summary>
    public void Fallocate(ulong ino, long offset, long length) => FallocateCore(ino, null, offset, length, FallocateFlags.None);

    /// <summary>As <see cref="Fallocate(ulong, long, long)"/> through a handle: the generation is checked under the inode lock (ESTALE
    /// when the inode was freed, and maybe reused, since the handle was made).</summary>
    public void Fallocate(Namespace.InodeHandle file, long offset, long length) => FallocateCore(file.Ino, file.Generation, offset, length, FallocateFlags.None);

    /// <summary>As <see cref="Fallocate(Namespace.InodeHandle, long, long)"/>; with <see cref="FallocateFlags.KeepSize"/>
    /// (FALLOC_FL_KEEP_SIZE, XFS_IOC_RESVSP64) the size stays: blocks past EOF become unwritten extents there, as the
    /// kernel's XFS preallocates them (counted in di_nblocks, read as nothing while past EOF, freed by a truncate at or
    /// below them, written and converted by a write that reaches them).</summary>
    public void Fallocate(Namespace.InodeHandle file, long offset, long length, FallocateFlags flags) => FallocateCore(file.Ino, file.Generation, offset, length, flags);

    internal void FallocateCore(ulong ino, uint? generation, long offset, long length, FallocateFlags flags)
    {
        if ((flags & ~FallocateFlags.KeepSize) != 0) throw new XfsWriteException(WriteErrorKind.InvalidArgument, $"fallocate: unknown flags {flags}");
        CheckRange(offset, length, "fallocate");
        if (length == 0) throw new XfsWriteException(WriteErrorKind.InvalidArgument, "fallocate: length must be positive");
        bool keepSize = (flags & FallocateFlags.KeepSize) != 0;
        var inode = Engine.GetInode(ino);
        int bs = Engine.Geometry.BlockSize;
        long end = offset + length;
        ulong pos = (ulong)(offset / bs), stop = (ulong)(RoundUp(end, bs) / bs);
        if (!keepSize) HidePastEofDataInSteps(inode, generation, "fallocate", end);
        bool first = true, finished = false;
        while (!finished)
        {
            ulong from = (ulong)(offset / bs);
            (finished, pos) = Step("fallocate", !first, () => $"unwritten extents cover the holes of file blocks [{from}, {pos}), not those from {pos} on; the size is unchanged", tx =>
            {
                var edit = FileEdit.Begin(tx, inode, generation: generation);
                long oldSize = edit.Size;
                // Written blocks a crash left past EOF in the range become unwritten (or, shared, holes that the
                // preallocation fills) in the first step, before the size grows over them; the last step hides any
                // that another operation left there meanwhile.
                bool hide = !keepSize && end > oldSize;
                edit.EnsureSpaceFor(first ? offset : (long)pos * bs, end, allocateHoles: true, extraRecords: hide ? edit.PastEofDataRecords(oldSize, end) : 0);
                // With KEEP_SIZE the old EOF block keeps its tail: it is zeroed when the size grows over it.
                if (hide && first && offset > oldSize) edit.ZeroEofTail(oldSize, offset);
                if (hide && first) edit.HidePastEofData(oldSize, end);
                ulong reached = edit.Preallocate(pos, stop, Engine.Options.StepPieces);
                bool last = reached >= stop;
                if (hide && last && !first) edit.HidePastEofData(oldSize, end);
                if (hide && last) edit.Size = end;
                if (first) InodeFields.SetFlags(inode.Core, (ushort)(InodeFields.Flags(inode.Core) | InodeFields.FlagPrealloc));
                if (first || last) edit.Touch();
                edit.Finish();
                return (last, reached);
            });
            first = false;
        }
    }

    /// <summary>
    /// FALLOC_FL_COLLAPSE_RANGE: removes [<paramref name="offset"/>, +<paramref name="length"/>) from the file, the
    /// mappings after it moving down by <paramref name="length"/> and the size shrinking by it. Offset and length are
    /// multiples of the block size, and the range ends before EOF (InvalidArgument otherwise, as the kernel's XFS).
    /// </summary>
    /// <remarks>As the kernel's <c>xfs_collapse_file_space</c>, in bounded steps (at most <see cref="StepPieces"/>
    /// mappings a transaction): the range is freed and the blocks past EOF with it, then the mappings after the range
    /// move down in ascending order, each keeping its blocks, state and refcount (its extent and rmap records change
    /// offset), and the last step sets the size. A crash between steps leaves a valid file with the range freed and a
    /// prefix of the mappings after it moved: at most a hole where the unmoved ones will land, and the old size.</remarks>
    public void CollapseRange(Namespace.InodeHandle file, long offset, long length) => ShiftCore(file.Ino, file.Generation, offset, length, insert: false);

    /// <summary>
    /// FALLOC_FL_INSERT_RANGE: inserts a hole of <paramref name="length"/> bytes at <paramref name="offset"/>, the
    /// mappings from it on moving up by <paramref name="length"/> and the size growing by it. Offset and length are
    /// multiples of the block size and the offset lies below EOF (InvalidArgument otherwise; FileTooBig past the
    /// largest size, as the kernel's XFS).
    /// </summary>
    /// <remarks>As the kernel's <c>xfs_insert_file_space</c>: the first step sets the size (zeroing the old EOF
    /// block's tail) and splits the mapping across the offset, then the mappings from the offset on move up in
    /// descending order, at most <see cref="StepPieces"/> a transaction. A crash between steps leaves a valid file of
    /// the new size with the last mappings moved and the others not yet: a hole of the inserted length in between,
    /// never a mapping past EOF that holds data.</remarks>
    public void InsertRange(Namespace.InodeHandle file, long offset, long length) => ShiftCore(file.Ino, file.Generation, offset, length, insert: true);

    internal void CollapseRange(ulong ino, long offset, long length) => ShiftCore(ino, null, offset, length, insert: false);

    internal void InsertRange(ulong ino, long offset, long length) => ShiftCore(ino, null, offset, length, insert: true);

    void ShiftCore(ulong ino, uint? generation, long offset, long length, bool insert)
    {
        string op = insert ? "insert range" : "collapse range";
        CheckRange(offset, length, op);
        if (length == 0) throw new XfsWriteException(WriteErrorKind.InvalidArgument, $"{op}: length must be positive");
        int bs = Engine.Geometry.BlockSize;
        if (offset % bs != 0 || length % bs != 0)
            throw new XfsWriteException(WriteErrorKind.InvalidArgument, $"{op}: offset {offset} and length {length} must be multiples of the block size {bs}");
        var inode = Engine.GetInode(ino);
        if (insert) HidePastEofDataInSteps(inode, generation, op, -length);
        ulong first = (ulong)(offset / bs), shift = (ulong)(length / bs);
        int stepPieces = Engine.Options.StepPieces;
        // Collapse: phase 0 frees the range, phase 1 the blocks past EOF, phase 2 moves mappings down from `pos` on.
        // Insert: phase 2 moves the mappings below `pos` (the lowest moved so far) up, last first.
        int phase = insert ? 2 : 0;
        ulong pos = insert ? ulong.MaxValue : first;
        ulong eofBlock = 0;
        long expectedSize = 0;
        bool firstStep = true, finished = false;
        while (!finished)
        {
            (finished, phase, pos, eofBlock, expectedSize) = Step(op, !firstStep, () => ShiftProgress(insert, first, shift, phase, pos), tx =>
            {
                // The body may run again after a lock restart: it works on copies of the progress and returns them.
                int ph = phase;
                ulong p = pos, eof = eofBlock;
                var edit = FileEdit.Begin(tx, inode, generation: generation);
                var extents = edit.Fork.Extents;
                long size = edit.Size;
                // The kernel holds the inode's I/O lock for the whole shift; here each step locks it anew, so a size
                // changed by another operation in between (data could move past EOF) stops the shift.
                if (!firstStep && size != expectedSize)
                    throw new XfsWriteException(WriteErrorKind.Busy, $"inode {inode.Ino}: another operation changed the size to {size} while the {op} ran");
                long expect = firstStep && insert ? size + length : size;
                if (firstStep)
                {
                    if (insert)
                    {
                        if (offset >= size) throw new XfsWriteException(WriteErrorKind.InvalidArgument, $"{op}: offset {offset} is not below EOF {size}");
                        if (size > MaxFileSize - length) throw new XfsWriteException(WriteErrorKind.FileTooBig, $"{op}: the size {size} + {length} is beyond the largest file size");
                        if (extents.Count > 0)
                        {
                            var lastMapping = extents[extents.Count - 1];
                            if (lastMapping.StartOffset + lastMapping.BlockCount > BmbtExtent.MaxFileOffset - shift)
                                throw new XfsWriteException(WriteErrorKind.FileTooBig, $"{op}: a mapping past EOF would move beyond the largest file offset");
                        }
                        // The size first (as the kernel's fallocate): a crash later never leaves moved data past EOF.
                        // Written blocks a crash left in [EOF, EOF + length) are hidden with it: the size now covers
                        // them until the shift moves them beyond the new EOF.
                        edit.EnsureSpaceFor(size, Math.Min(size + length, RoundUp(size, bs)), allocateHoles: false, extraRecords: 2 + edit.PastEofDataRecords(size, size + length));
                        edit.ZeroEofTail(size, size + length);
                        edit.HidePastEofData(size, size + length);
                        edit.Size = size + length;
                    }
                    else
                    {
                        if (offset + length >= size)
                            throw new XfsWriteException(WriteErrorKind.InvalidArgument, $"{op}: the range [{offset}, {offset + length}) does not end before EOF {size}");
                    }
                    eof = (ulong)(RoundUp(size, bs) / bs);
                    edit.Touch();
                }
                int budget = stepPieces;
                // Moves keep the record count; the splits at the range's ends add at most two records a step.
                edit.EnsureSpaceFor(0, 0, allocateHoles: false, extraRecords: 4);
                while (budget > 0 && ph < 3)
                {
                    if (ph < 2)
                    {
                        // Frees [p, stop) in stretches of the remaining budget (holes cost nothing).
                        ulong stop = ph == 0 ? first + shift : BmbtExtent.MaxFileOffset;
                        var (from, to) = NextStep(extents, p, stop, budget, ulong.MaxValue);
                        if (from < to)
                        {
                            budget -= Math.Max(1, extents.MappingsIn(from, to - from).Count);
                            edit.Unmap(from, to - from);
                        }
                        p = to;
                        if (p >= stop)
                        {
                            // Each phase has a budget of its own: a file of at most StepPieces mappings is shifted in
                            // one transaction, all or nothing (the stress crash test relies on it).
                            ph++;
                            p = ph == 1 ? Math.Max(eof, first + shift) : first + shift;
                            budget = stepPieces;
                        }
                        continue;
                    }
                    if (!insert)
                    {
                        // The first mapping at or after pos moves down by shift (everything in [first, pos) is
                        // already a hole or a moved mapping ending below pos - shift).
                        int i = extents.IndexAtOrAfter(p);
                        if (i >= extents.Count) { ph = 3; break; }
                        var e = extents[i];
                        ulong start = Math.Max(e.StartOffset, p);
                        var piece = new BmbtExtent(start, e.StartBlock + (start - e.StartOffset), (uint)(e.StartOffset + e.BlockCount - start), e.Unwritten);
                        edit.Remap(piece, start - shift);
                        p = start + piece.BlockCount;
                    }
                    else
                    {
                        // The last mapping below pos (and ending after first) moves up by shift; one that crosses
                        // first is split there, its lower part staying.
                        int i = p == ulong.MaxValue ? extents.Count - 1 : extents.IndexAtOrAfter(p) - 1;
                        if (i < 0 || extents[i].StartOffset + extents[i].BlockCount <= first) { ph = 3; break; }
                        var e = extents[i];
                        ulong start = Math.Max(e.StartOffset, first);
                        var piece = new BmbtExtent(start, e.StartBlock + (start - e.StartOffset), (uint)(e.StartOffset + e.BlockCount - start), e.Unwritten);
                        edit.Remap(piece, start + shift);
                        p = start;
                    }
                    budget--;
                }
                bool done = ph == 3;
                if (done && !insert)
                {
                    // The size last (as the kernel's fallocate): until then a crash leaves the old size.
                    long now = edit.Size;
                    edit.Size = now >= offset + length ? now - length : Math.Min(now, offset);
                }
                if (done) edit.Touch();
                edit.Finish();
                return (done, ph, p, eof, expect);
            });
            firstStep = false;
        }
    }

    static string ShiftProgress(bool insert, ulong first, ulong shift, int phase, ulong pos) => insert
        ? $"the size grew; the mappings from file block {(pos == ulong.MaxValue ? "(none)" : pos.ToString(System.Globalization.CultureInfo.InvariantCulture))} on moved up by {shift} blocks, those from {first} below it did not"
        : phase < 2
            ? $"file blocks [{first}, {first + shift}) and blocks past EOF are being freed (up to block {pos}); nothing moved and the size is unchanged"
            : $"file blocks [{first}, {first + shift}) and blocks past EOF were freed; the mappings from block {first + shift} up to {pos} moved down by {shift} blocks, those from {pos} on did not, and the size is unchanged";

    /// <summary>Largest step of an operation over a range, in extent mappings, when it is split into several
    /// transactions: each mapping touches a bounded number of btree records, so a step's blocks, memory and
    /// journal record are bounded. A range of at most this many mappings stays one transaction (all or nothing).</summary>
    public const int StepPieces = 1024;

    /// <summary>Largest step of unshare, in bytes of copied data (as pwrite's pieces): a transaction keeps its data
    /// in memory and journals it whole.</summary>
    public const int UnshareStepBytes = 1 << 20;

    /// <summary>Unmaps and frees the whole blocks of the range, zeroing partial blocks at its ends. The partial
    /// blocks are one transaction; the whole blocks are unmapped in steps of at most <see cref="StepPieces"/>
    /// mappings, one transaction each (as the kernel unmaps extent by extent): memory and journal records stay
    /// bounded whatever the range, and a failure or crash between steps leaves a partly punched range, never a
    /// damaged file.</summary>
    public void PunchHole(ulong ino, long offset, long length) => PunchHoleCore(ino, null, offset, length);

    /// <summary>As <see cref="PunchHole(ulong, long, long)"/> through a handle: the generation is checked under the inode lock (ESTALE
    /// when the inode was freed, and maybe reused, since the handle was made).</summary>
    public void PunchHole(Namespace.InodeHandle file, long offset, long length) => PunchHoleCore(file.Ino, file.Generation, offset, length);

    void PunchHoleCore(ulong ino, uint? generation, long offset, long length)
    {
        CheckRange(offset, length, "punch");
        if (length == 0) throw new XfsWriteException(WriteErrorKind.InvalidArgument, "punch: length must be positive");
        var inode = Engine.GetInode(ino);
        long end = offset + length;
        int bs = Engine.Geometry.BlockSize;
        long firstWhole = RoundUp(offset, bs), endWhole = end / bs * bs;
        // Partial blocks at the ends are zeroed (a CoW when shared) in the first step, with the first stretch of
        // whole blocks, so that a range of one step stays one transaction.
        UnmapInSteps(inode, generation, "punch", (ulong)(firstWhole / bs), (ulong)(Math.Max(firstWhole, endWhole) / bs), "the partial blocks at the ends are zeroed", edit =>
        {
            edit.EnsureSpaceFor(offset, Math.Min(end, firstWhole), allocateHoles: false, extra: 2 * bs);
            if (firstWhole >= endWhole)
            {
                edit.Modify(offset, end, null, ModifyMode.Zero);
            }
            else
            {
                if (offset < firstWhole) edit.Modify(offset, firstWhole, null, ModifyMode.Zero);
                if (endWhole < end) edit.Modify(endWhole, end, null, ModifyMode.Zero);
            }
            return firstWhole < endWhole;
        });
    }

    /// <summary>
    /// Before an operation grows the size to <paramref name="limit"/> (a negative limit: the size plus its magnitude,
    /// as insert range grows it): when more written extents lie past EOF below the limit than one step takes (a crash
    /// between the steps of a truncate, punch, reflink or shift left them), hides them
    /// (<see cref="FileEdit.HidePastEofData"/>) in steps of their own, one transaction each, so that the growing
    /// transaction hides at most a step's worth. Data past EOF is invisible, so a crash between these steps shows
    /// nothing. The usual case (nothing there) costs a look at the extent list under the read lock, no transaction.
    /// </summary>
    void HidePastEofDataInSteps(IncoreInode inode, uint? generation, string operation, long limit)
    {
        int stepPieces = Engine.Options.StepPieces, bs = Engine.Geometry.BlockSize;
        long Limit(long size) => limit >= 0 ? limit : size > MaxFileSize + limit ? MaxFileSize : size - limit;
        using (Engine.LockInodeForRead(inode))
        {
            CheckGeneration(inode, generation);
            CheckRegular(inode);
            long size = InodeFields.Size(inode.Core);
            if (Limit(size) <= size) return;
            if (FileEdit.WrittenExtentsPastEof(ReadExtentsLocked(inode), size, Limit(size), bs, stepPieces + 1) <= stepPieces) return;
        }
        bool hidden = false;
        while (!hidden)
        {
            hidden = Engine.Execute(operation, tx =>
            {
                var edit = FileEdit.Begin(tx, inode, generation: generation);
                long size = edit.Size;
                if (Limit(size) <= size) return true;
                edit.EnsureSpaceFor(0, 0, allocateHoles: false, extraRecords: edit.PastEofDataRecords(size, Limit(size), stepPieces));
                bool done = edit.HidePastEofData(size, Limit(size), stepPieces);
                edit.Finish();
                return done;
            });
        }
    }

    /// <summary>Runs one step of an operation split into several transactions. A failure after earlier steps
    /// committed is reported with exactly what those steps did (<paramref name="done"/>), as write(2) reports a
    /// short count: they stay.</summary>
    T Step<T>(string operation, bool afterEarlierSteps, Func<string> done, Func<WriteTransaction, T> body)
    {
        try
        {
            var result = Engine.Execute(operation, body);
            Engine.Options.StepCommitted?.Invoke(operation);
            return result;
        }
        catch (Exception e) when (afterEarlierSteps && e is XfsWriteException or IOException)
        {
            var kind = e is XfsWriteException w ? w.Kind : WriteErrorKind.Io;
            // A step whose record was durable before its failure is replayed at the next open: then it is done too.
            string failedStep = Engine.HasFailed ? "; the failing step's journal record is complete, so the next open also applies that step" : "";
            throw new XfsWriteException(kind, $"{operation} stopped part way ({done()}{failedStep}): {e.Message}", e);
        }
    }

    /// <summary>Unmaps (frees, or drops the references of) the mapped blocks of file blocks [first, stop) in
    /// transactions of at most <see cref="StepPieces"/> mappings, skipping holes without work. The first transaction
    /// runs <paramref name="prelude"/> (the operation's other changes) before its stretch, so a range of one step is
    /// one transaction, all or nothing; it returns false when nothing is to be unmapped after all.
    /// <paramref name="before"/> says what the prelude did, for a failure report.</summary>
    void UnmapInSteps(IncoreInode inode, uint? generation, string operation, ulong first, ulong stop, string before, Func<FileEdit, bool> prelude)
    {
        ulong pos = first;
        bool firstStep = true;
        do
        {
            pos = Step(operation, !firstStep, () => $"{before}; file blocks [{first}, {pos}) unmapped, from {pos} on not", tx =>
            {
                var edit = FileEdit.Begin(tx, inode, generation: generation);
                bool unmap = !firstStep || prelude(edit);
                var (from, to) = unmap ? NextStep(edit.Fork.Extents, pos, stop, Engine.Options.StepPieces, ulong.MaxValue) : (stop, stop);
                if (from < to)
                {
                    edit.EnsureSpaceFor(0, 0, allocateHoles: false);
                    edit.Unmap(from, to - from);
                }
                edit.Touch();
                edit.Finish();
                return to;
            });
            firstStep = false;
        }
        while (pos < stop);
    }

    /// <summary>
    /// The next bounded step of an operation over file blocks [<paramref name="start"/>, <paramref name="stop"/>):
    /// from the first mapped block at or after start (holes are skipped, so a sparse range costs nothing) over at
    /// most <paramref name="maxPieces"/> mappings and <paramref name="maxBlocks"/> blocks. When every remaining
    /// mapping fits, the step runs to <paramref name="stop"/> (the hole after the last mapping included), so an
    /// operation within one step's bounds is one transaction, all or nothing at a crash. (stop, stop) when nothing is
    /// mapped there.
    /// </summary>
    internal static (ulong From, ulong To) NextStep(ExtentList extents, ulong start, ulong stop, int maxPieces, ulong maxBlocks)
    {
        int i = extents.IndexAtOrAfter(start);
        if (i >= extents.Count || extents[i].StartOffset >= stop) return (stop, stop);
        ulong from = Math.Max(start, extents[i].StartOffset), to = from;
        for (int pieces = 0; i < extents.Count && pieces < maxPieces && extents[i].StartOffset < stop; i++, pieces++)
        {
            to = Math.Min(stop, extents[i].StartOffset + extents[i].BlockCount);
        }
        if (i >= extents.Count || extents[i].StartOffset >= stop)
        {
            to = stop; // no mapping left in the range: the step need not end where the last one does
        }
        return (from, Math.Min(to, from + Math.Min(maxBlocks, stop - from)));
    }

    /// <summary>Sets the size: shrinking frees the blocks past the new EOF (the size and the new EOF block first,
    /// then the blocks in bounded steps as <see cref="PunchHole(ulong, long, long)"/> does; blocks past EOF left by a crash between
    /// steps are legal post-EOF blocks), growing leaves a hole (the written blocks such a crash left are hidden:
    /// <see cref="FileEdit.HidePastEofData"/>).</summary>
    public void Truncate(ulong ino, long size) => TruncateCore(ino, null, size);

    /// <summary>As <see cref="Truncate(ulong, long)"/> through a handle: the generation is checked under the inode lock (ESTALE
    /// when the inode was freed, and maybe reused, since the handle was made).</summary>
    public void Truncate(Namespace.InodeHandle file, long size) => TruncateCore(file.Ino, file.Generation, size);

    /// <summary>As <see cref="Truncate(Namespace.InodeHandle, long)"/>; with <see cref="FileWriteFlags.KillSuidGid"/>
    /// (a caller without CAP_FSETID) the first step also clears set-user-ID, and set-group-ID when group-execute is
    /// set, as the kernel's truncate does.</summary>
    public void Truncate(Namespace.InodeHandle file, long size, FileWriteFlags flags) => TruncateCore(file.Ino, file.Generation, size, flags);

    internal void TruncateCore(ulong ino, uint? generation, long size, FileWriteFlags flags = FileWriteFlags.None)
    {
        if ((flags & ~FileWriteFlags.KillSuidGid) != 0) throw new XfsWriteException(WriteErrorKind.InvalidArgument, $"truncate: unknown flags {flags}");
        CheckRange(size, 0, "truncate");
        var inode = Engine.GetInode(ino);
        int bs = Engine.Geometry.BlockSize;
        HidePastEofDataInSteps(inode, generation, "truncate", size);
        // The size, the new EOF block and the first stretch of blocks past it are the first step (one transaction
        // when the blocks past EOF fit one step); the rest of the blocks past EOF follow in steps. Only a shrink
        // frees blocks (post-EOF preallocation included), as before the split.
        UnmapInSteps(inode, generation, "truncate", (ulong)(RoundUp(size, bs) / bs), BmbtExtent.MaxFileOffset, $"the size is {size}; blocks past it stay allocated until freed", edit =>
        {
            long old = edit.Size;
            if (size < old)
            {
                edit.EnsureSpaceFor(size, Math.Min(old, RoundUp(size, bs)), allocateHoles: false);
                if (size % bs != 0) edit.Modify(size, RoundUp(size, bs), null, ModifyMode.Zero);
            }
            else if (size > old)
            {
                edit.EnsureSpaceFor(old, Math.Min(size, RoundUp(old, bs)), allocateHoles: false, extraRecords: edit.PastEofDataRecords(old, size));
                edit.ZeroEofTail(old, size);
                edit.HidePastEofData(old, size);
            }
            edit.Size = size;
            if ((flags & FileWriteFlags.KillSuidGid) != 0) edit.KillSuidGid();
            // As the kernel's xfs_setattr_size: a truncate to the same size also frees the blocks past EOF.
            return size <= old;
        });
    }

    /// <summary>Shares the blocks of src [srcOffset, +length) into dst at dstOffset (block-aligned; length may end at
    /// src EOF). dst's old mapping of the range is removed first. Sets the reflink flag on both.</summary>
    /// <remarks>In steps, one transaction each, as the kernel remaps extent by extent: the first checks the range
    /// against the sizes, sets the flags and zeroes the destination's old EOF block; each step then remaps a
    /// stretch holding at most <see cref="StepPieces"/> mappings of the source and of the destination (stretches
    /// that are holes in both are skipped); the last sets the destination size. A failure or crash between steps
    /// leaves a prefix remapped and the size unchanged (blocks past EOF are legal).</remarks>
    public void Reflink(ulong srcIno, long srcOffset, ulong dstIno, long dstOffset, long length)
        => ReflinkCore(srcIno, null, srcOffset, dstIno, null, dstOffset, length);

    /// <summary>As <see cref="Reflink(ulong, long, ulong, long, long)"/> through handles (generations checked under the locks: ESTALE).</summary>
    public void Reflink(Namespace.InodeHandle source, long srcOffset, Namespace.InodeHandle destination, long dstOffset, long length)
        => ReflinkCore(source.Ino, source.Generation, srcOffset, destination.Ino, destination.Generation, dstOffset, length);

    void ReflinkCore(ulong srcIno, uint? srcGeneration, long srcOffset, ulong dstIno, uint? dstGeneration, long dstOffset, long length)
    {
        CheckRange(srcOffset, length, "reflink");
        CheckRange(dstOffset, length, "reflink");
        var src = Engine.GetInode(srcIno);
        var dst = srcIno == dstIno ? src : Engine.GetInode(dstIno);
        if (!Engine.Geometry.Superblock.HasReflink)
            throw new XfsWriteException(WriteErrorKind.NotSupported, "reflink: the filesystem has no reflink feature");
        int bs = Engine.Geometry.BlockSize;
        if (srcOffset % bs != 0 || dstOffset % bs != 0)
            throw new XfsWriteException(WriteErrorKind.InvalidArgument, $"reflink: offsets must be multiples of the block size {bs}");
        if (length == 0) return;
        ulong sb = (ulong)(srcOffset / bs), db = (ulong)(dstOffset / bs), n = (ulong)(RoundUp(length, bs) / bs);
        if (srcIno == dstIno && sb < db + n && db < sb + n)
            throw new XfsWriteException(WriteErrorKind.InvalidArgument, "reflink: source and destination ranges of one file overlap");
        int stepPieces = Engine.Options.StepPieces;
        HidePastEofDataInSteps(dst, dstGeneration, "reflink", dstOffset);
        ulong done = 0;
        bool first = true, finished = false;
        while (!finished)
        {
            (finished, ulong next) = Step("reflink", !first, () => $"destination file blocks [{db}, {db + done}) share the source's, those from {db + done} on are unchanged, and so is the size", tx =>
            {
                tx.LockInodes(src, dst);
                CheckGeneration(src, srcGeneration);
                CheckGeneration(dst, dstGeneration);
                var s = FileEdit.Begin(tx, src, alreadyLocked: true);
                var d = srcIno == dstIno ? s : FileEdit.Begin(tx, dst, alreadyLocked: true);
                if (first)
                {
                    long srcSize = s.Size, dstSize = d.Size;
                    if (srcOffset + length > srcSize)
                        throw new XfsWriteException(WriteErrorKind.InvalidArgument, $"reflink: source range ends at {srcOffset + length}, past the source EOF {srcSize}");
                    // A partial last block may be shared only when it is the source's EOF block and becomes the
                    // destination's EOF block (the kernel's remap_prep rule; otherwise stale bytes would show).
                    if (length % bs != 0 && (srcOffset + length != srcSize || dstOffset + length < dstSize))
                        throw new XfsWriteException(WriteErrorKind.InvalidArgument, "reflink: a length that is not a multiple of the block size must end at the source EOF and reach the destination EOF");
                    d.EnsureSpaceFor(dstOffset, dstOffset, allocateHoles: false, extra: dstOffset > dstSize ? bs : 0);
                    if (dstOffset > dstSize) d.ZeroEofTail(dstSize, dstOffset);
                    s.SetReflinkFlag();
                    d.SetReflinkFlag();
                }
                // The next stretch (relative to the range) with mappings in the source or the destination.
                var (sFrom, sTo) = NextStep(s.Fork.Extents, sb + done, sb + n, stepPieces, ulong.MaxValue);
                var (dFrom, dTo) = NextStep(d.Fork.Extents, db + done, db + n, stepPieces, ulong.MaxValue);
                ulong from = Math.Min(sFrom - sb, dFrom - db), to = Math.Min(sTo - sb, dTo - db);
                if (from < n)
                {
                    var pieces = s.Fork.Extents.MappingsIn(sb + from, to - from);
                    d.EnsureSpaceFor(0, 0, allocateHoles: false, extraRecords: pieces.Count + 2);
                    d.Unmap(db + from, to - from);
                    foreach (var piece in pieces)
                    {
                        // Only written blocks are shared (xfs_reflink_remap_extent): an unwritten source range leaves a hole.
                        if (piece.Unwritten) continue;
                        var (agno, agbno) = d.Split(piece.StartBlock);
                        LockAg(tx, agno);
                        tx.RefcountIncrement(agno, agbno, piece.BlockCount);
                        d.Map(piece with { StartOffset = db + (piece.StartOffset - sb) });
                    }
                }
                bool last = from >= n || to >= n;
                if (last && dstOffset + length > d.Size)
                {
                    // The range itself was remapped; written blocks a crash left between the old EOF and it are hidden.
                    if (dstOffset > d.Size)
                    {
                        d.EnsureSpaceFor(0, 0, allocateHoles: false, extraRecords: d.PastEofDataRecords(d.Size, dstOffset));
                        d.HidePastEofData(d.Size, dstOffset);
                    }
                    d.Size = dstOffset + length;
                }
                if (last || first) d.Touch();
                if (!ReferenceEquals(s, d)) s.Finish();
                d.Finish();
                return (last, to);
            });
            done = next;
            first = false;
        }
    }

    /// <summary>Gives the range private copies of its shared blocks, in steps of at most
    /// <see cref="UnshareStepBytes"/> (one transaction each, holes skipped): the data a transaction holds and
    /// journals stays bounded whatever the range. A failure (NoSpace) between steps leaves the earlier steps
    /// unshared, which changes no byte of the file.</summary>
    public void Unshare(ulong ino, long offset, long length) => UnshareCore(ino, null, offset, length);

    /// <summary>As <see cref="Unshare(ulong, long, long)"/> through a handle: the generation is checked under the inode lock (ESTALE
    /// when the inode was freed, and maybe reused, since the handle was made).</summary>
    public void Unshare(Namespace.InodeHandle file, long offset, long length) => UnshareCore(file.Ino, file.Generation, offset, length);

    void UnshareCore(ulong ino, uint? generation, long offset, long length)
    {
        CheckRange(offset, length, "unshare");
        var inode = Engine.GetInode(ino);
        int bs = Engine.Geometry.BlockSize;
        ulong stepBlocks = (ulong)Math.Max(1, Engine.Options.UnshareStepBytes / bs);
        ulong pos = (ulong)(offset / bs);
        while (true)
        {
            ulong start = (ulong)(offset / bs);
            ulong next = Step("unshare", pos > start, () => $"file blocks [{start}, {pos}) are unshared, from {pos} on not; no byte of the file changed", tx =>
            {
                var edit = FileEdit.Begin(tx, inode, generation: generation);
                if (!edit.Reflink || length == 0) return ulong.MaxValue;
                long end = Math.Min(offset + length, edit.Size);
                if (end <= offset) return ulong.MaxValue;
                ulong stop = (ulong)(RoundUp(end, bs) / bs);
                var (from, to) = NextStep(edit.Fork.Extents, pos, stop, Engine.Options.StepPieces, stepBlocks);
                if (from >= to) return ulong.MaxValue;
                edit.EnsureSpaceFor((long)from * bs, (long)to * bs, allocateHoles: false);
                edit.Modify((long)from * bs, (long)to * bs, null, ModifyMode.Unshare);
                edit.Finish();
                return to;
            });
            if (next == ulong.MaxValue) return;
            pos = next;
        }
    }

    /// <summary>Frees every block of both forks (data, attr, bmbt blocks) of a locked inode inside
    /// <paramref name="tx"/> (unlink). Leaves the forks empty in extents format.</summary>
    public void FreeAllBlocks(WriteTransaction tx, IncoreInode inode)
    {
        ArgumentNullException.ThrowIfNull(tx);
        ArgumentNullException.ThrowIfNull(inode);
        var core = inode.Core;
        if ((InodeFields.Flags(core) & Dinode.FlagRealtime) != 0)
            throw new XfsWriteException(WriteErrorKind.NotSupported, $"inode {inode.Ino} is a realtime file, which the engine does not handle");
        foreach (bool attr in new[] { false, true })
        {
            if (attr && InodeFields.ForkOffset(core) == 0) continue;
            var format = InodeFields.Format(core, attr);
            if (format is not (ForkFormat.Extents or ForkFormat.Btree)) continue; // local, device: no blocks
            var fork = FileFork.Load(tx, inode, attr);
            var edit = new FileEdit(tx, inode, fork);
            edit.Unmap(0, BmbtExtent.MaxFileOffset);
            fork.Store();
        }
    }

    // ------------------------------------------------------------------ helpers

    /// <summary>Locks an AG unless the transaction holds it already.</summary>
    internal static void LockAg(WriteTransaction tx, uint agno)
    {
        if (!tx.HoldsAg(agno)) tx.LockAg(agno);
    }

    static long RoundUp(long value, int blockSize) => (value + blockSize - 1) / blockSize * blockSize;

    static void CheckRange(long offset, long length, string op)
    {
        if (offset < 0) throw new XfsWriteException(WriteErrorKind.InvalidArgument, $"{op}: negative offset {offset}");
        if (length < 0) throw new XfsWriteException(WriteErrorKind.InvalidArgument, $"{op}: negative length {length}");
        if (offset > MaxFileSize - length) throw new XfsWriteException(WriteErrorKind.InvalidArgument, $"{op}: offset {offset} + length {length} is beyond the largest file size");
    }

    /// <summary>ESTALE when a locked inode is not the incarnation a handle's generation names (freed, maybe reused).</summary>
    internal static void CheckGeneration(IncoreInode inode, uint? generation)
    {
        if (generation is not uint g) return;
        var core = inode.Core;
        if (InodeFields.Mode(core) == 0 || System.Buffers.Binary.BinaryPrimitives.ReadUInt32BigEndian(core.AsSpan(92)) != g)
            throw new XfsWriteException(WriteErrorKind.Stale, $"inode {inode.Ino} generation {g} was freed since the handle was made");
    }

    internal static void CheckRegular(IncoreInode inode)
    {
        var core = inode.Core;
        int type = InodeFields.Mode(core) & 0xF000;
        if (InodeFields.Mode(core) == 0) throw new XfsWriteException(WriteErrorKind.NotFound, $"inode {inode.Ino} is free");
        if (type == 0x4000) throw new XfsWriteException(WriteErrorKind.IsDirectory, $"inode {inode.Ino} is a directory");
        if (type == 0xA000) throw new XfsWriteException(WriteErrorKind.Loop, $"inode {inode.Ino} is a symbolic link, which file operations do not follow");
        if (type != 0x8000) throw new XfsWriteException(WriteErrorKind.InvalidArgument, $"inode {inode.Ino} is not a regular file (mode 0{Convert.ToString(InodeFields.Mode(core), 8)})");
        if ((InodeFields.Flags(core) & Dinode.FlagRealtime) != 0)
            throw new XfsWriteException(WriteErrorKind.NotSupported, $"inode {inode.Ino} is a realtime file, which the engine does not handle");
        var format = InodeFields.Format(core, attr: false);
        if (format is not (ForkFormat.Extents or ForkFormat.Btree))
            throw new XfsWriteException(WriteErrorKind.NotSupported, $"inode {inode.Ino} has a data fork in format {format}, which the engine does not handle for file data");
    }

    /// <summary>The data-fork extents of an inode locked for reading (extents format from the inode, btree format
    /// through the read path's bmbt walk). The result may be the fork cache's shared list: read it, never change it.</summary>
    ExtentList ReadExtentsLocked(IncoreInode inode)
    {
        if (ForkCache.TryGetShared(inode, out var cached, out _)) return cached; // read only here
        var core = inode.Core;
        var geo = Engine.Geometry;
        var fork = InodeFields.Fork(core, attr: false);
        ulong count = InodeFields.Extents(core, attr: false);
        string where = $"inode {inode.Ino} data fork";
        if (InodeFields.Format(core, false) == ForkFormat.Extents)
        {
            if (count > (ulong)(fork.Length / Dinode.ExtentSize)) throw new XfsWriteException(WriteErrorKind.Corrupt, $"{where}: {count} extents do not fit the fork");
            var decoded = ExtentList.Decode(fork, (int)count, geo, where);
            // Kept for the next read: readers hold the read lock, so no writer changes the inode meanwhile, and a
            // concurrent reader can only store an equal list for the same bytes.
            ForkCache.PutShared(inode, decoded, []);
            return decoded;
        }
        var records = new List<BmbtExtent>();
        try
        {
            var tree = Engine.Image.OpenBmbt(inode.Ino, fork);
            using var cur = tree.CreateCursor();
            for (bool ok = cur.MoveFirst(); ok; ok = cur.Increment())
            {
                records.Add(BmbtExtent.Read(cur.Current));
                if ((ulong)records.Count > count) break;
            }
        }
        catch (Xfbtree.Buffers.CorruptionException e)
        {
            throw new XfsWriteException(WriteErrorKind.Corrupt, $"{where}: {e.Message}", e);
        }
        if ((ulong)records.Count != count) throw new XfsWriteException(WriteErrorKind.Corrupt, $"{where}: the bmbt holds {records.Count} records but the inode counts {count}");
        // Not cached: the read path does not collect the bmbt block list that a later store needs.
        return ExtentList.FromRecords(records, geo, where);
    }
}

/// <summary>fallocate(2) mode bits the engine's preallocation takes.</summary>
[Flags]
public enum FallocateFlags
{
    /// <summary>Mode 0: the size grows to cover the range.</summary>
    None = 0,
    /// <summary>FALLOC_FL_KEEP_SIZE: the size stays; blocks past EOF become unwritten extents there.</summary>
    KeepSize = 1,
}

/// <summary>How a write or truncate is made (FUSE passes the caller's side of it).</summary>
[Flags]
public enum FileWriteFlags
{
    /// <summary>A caller that may keep set-user-ID and set-group-ID (root: CAP_FSETID).</summary>
    None = 0,
    /// <summary>The caller may not keep them: a regular file loses set-user-ID, and set-group-ID when group-execute
    /// is set (FUSE_WRITE_KILL_SUIDGID, FATTR_KILL_SUIDGID; the kernel's file_remove_privs).</summary>
    KillSuidGid = 1,
}
