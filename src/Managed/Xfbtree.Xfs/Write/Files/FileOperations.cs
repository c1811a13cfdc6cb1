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
public sealed class FileOperations
{
    /// <summary>Largest file size: the kernel's MAX_LFS_FILESIZE (2^63 - 1) rounded down to 64 KiB, the largest block
    /// size, so that rounding any offset up to a block boundary cannot overflow.</summary>
    public const long MaxFileSize = long.MaxValue / 65536 * 65536;

    public FileOperations(WriteEngine engine) => Engine = engine;

    public WriteEngine Engine { get; }

    /// <summary>Writes <paramref name="data"/> at <paramref name="offset"/> (allocating holes, converting unwritten
    /// ranges, copying shared blocks on write); extends the size.</summary>
    public void Write(ulong ino, long offset, ReadOnlySpan<byte> data)
    {
        CheckRange(offset, data.Length, "write");
        var inode = Engine.GetInode(ino);
        byte[] bytes = data.ToArray();
        Engine.Execute("write", tx =>
        {
            var edit = FileEdit.Begin(tx, inode);
            if (bytes.Length == 0) return;
            long end = offset + bytes.Length;
            long oldSize = edit.Size;
            edit.EnsureSpaceFor(offset, end, allocateHoles: true);
            // Bytes between the old EOF and the write read as zeros: clear the old EOF block's tail first.
            if (offset > oldSize) edit.ZeroEofTail(oldSize, offset);
            edit.Modify(offset, end, bytes, ModifyMode.Data);
            if (end > oldSize) edit.Size = end;
            edit.Touch();
            edit.Finish();
        });
    }

    /// <summary>Reads up to <paramref name="buffer"/>.Length bytes at <paramref name="offset"/> (holes and unwritten
    /// ranges read as zeros; stops at EOF). Returns the bytes read.</summary>
    public int Read(ulong ino, long offset, Span<byte> buffer)
    {
        // A read may reach past the largest size: it stops at EOF anyway.
        CheckRange(offset, 0, "read");
        var inode = Engine.GetInode(ino);
        ExtentList extents;
        long size;
        using (Engine.LockInodeForRead(inode))
        {
            CheckRegular(inode);
            size = InodeFields.Size(inode.Core);
            if (offset >= size || buffer.IsEmpty) return 0;
            extents = ReadExtentsLocked(inode);
            int n = (int)Math.Min(buffer.Length, size - offset);
            var dest = buffer[..n];
            dest.Clear();
            int bs = Engine.Geometry.BlockSize;
            ulong first = (ulong)(offset / bs), last = (ulong)((offset + n - 1) / bs);
            byte[] block = new byte[bs];
            foreach (var piece in extents.MappingsIn(first, last - first + 1))
            {
                if (piece.Unwritten) continue;
                for (ulong i = 0; i < piece.BlockCount; i++)
                {
                    long fileByte = (long)(piece.StartOffset + i) * bs;
                    long from = Math.Max(fileByte, offset), to = Math.Min(fileByte + bs, offset + n);
                    if (from >= to) continue;
                    Engine.ReadData(piece.StartBlock + i, block);
                    block.AsSpan((int)(from - fileByte), (int)(to - from)).CopyTo(dest[(int)(from - offset)..]);
                }
            }
            return n;
        }
    }

    /// <summary>Preallocates unwritten extents over the holes of the range, as fallocate(2) with mode 0:
    /// the size grows to cover the range.</summary>
    public void Fallocate(ulong ino, long offset, long length)
    {
        CheckRange(offset, length, "fallocate");
        if (length == 0) throw new XfsWriteException(WriteErrorKind.InvalidArgument, "fallocate: length must be positive");
        var inode = Engine.GetInode(ino);
        Engine.Execute("fallocate", tx =>
        {
            var edit = FileEdit.Begin(tx, inode);
            long end = offset + length;
            edit.EnsureSpaceFor(offset, end, allocateHoles: true);
            long oldSize = edit.Size;
            if (end > oldSize && offset > oldSize) edit.ZeroEofTail(oldSize, offset);
            edit.Preallocate(offset, end);
            if (end > oldSize) edit.Size = end;
            InodeFields.SetFlags(inode.Core, (ushort)(InodeFields.Flags(inode.Core) | InodeFields.FlagPrealloc));
            edit.Touch();
            edit.Finish();
        });
    }

    /// <summary>Unmaps and frees the whole blocks of the range, zeroing partial blocks at its ends.</summary>
    public void PunchHole(ulong ino, long offset, long length)
    {
        CheckRange(offset, length, "punch");
        if (length == 0) throw new XfsWriteException(WriteErrorKind.InvalidArgument, "punch: length must be positive");
        var inode = Engine.GetInode(ino);
        Engine.Execute("punch", tx =>
        {
            var edit = FileEdit.Begin(tx, inode);
            long end = offset + length;
            int bs = edit.BlockSize;
            long firstWhole = RoundUp(offset, bs), endWhole = end / bs * bs;
            // Partial blocks at the ends are zeroed (a CoW when shared); whole blocks are unmapped and freed.
            edit.EnsureSpaceFor(offset, Math.Min(end, firstWhole), allocateHoles: false, extra: 2 * bs);
            if (firstWhole >= endWhole)
            {
                edit.Modify(offset, end, null, ModifyMode.Zero);
            }
            else
            {
                if (offset < firstWhole) edit.Modify(offset, firstWhole, null, ModifyMode.Zero);
                if (endWhole < end) edit.Modify(endWhole, end, null, ModifyMode.Zero);
                edit.Unmap((ulong)(firstWhole / bs), (ulong)((endWhole - firstWhole) / bs));
            }
            edit.Touch();
            edit.Finish();
        });
    }

    /// <summary>Sets the size: shrinking frees the blocks past the new EOF, growing leaves a hole.</summary>
    public void Truncate(ulong ino, long size)
    {
        CheckRange(size, 0, "truncate");
        var inode = Engine.GetInode(ino);
        Engine.Execute("truncate", tx =>
        {
            var edit = FileEdit.Begin(tx, inode);
            long old = edit.Size;
            int bs = edit.BlockSize;
            if (size < old)
            {
                edit.EnsureSpaceFor(size, Math.Min(old, RoundUp(size, bs)), allocateHoles: false);
                if (size % bs != 0) edit.Modify(size, RoundUp(size, bs), null, ModifyMode.Zero);
                ulong from = (ulong)(RoundUp(size, bs) / bs);
                edit.Unmap(from, BmbtExtent.MaxFileOffset - from);
            }
            else if (size > old)
            {
                edit.EnsureSpaceFor(old, Math.Min(size, RoundUp(old, bs)), allocateHoles: false);
                edit.ZeroEofTail(old, size);
            }
            edit.Size = size;
            edit.Touch();
            edit.Finish();
        });
    }

    /// <summary>Shares the blocks of src [srcOffset, +length) into dst at dstOffset (block-aligned; length may end at
    /// src EOF). dst's old mapping of the range is removed first. Sets the reflink flag on both.</summary>
    public void Reflink(ulong srcIno, long srcOffset, ulong dstIno, long dstOffset, long length)
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
        Engine.Execute("reflink", tx =>
        {
            tx.LockInodes(src, dst);
            var s = FileEdit.Begin(tx, src, alreadyLocked: true);
            var d = srcIno == dstIno ? s : FileEdit.Begin(tx, dst, alreadyLocked: true);
            long srcSize = s.Size, dstSize = d.Size;
            if (srcOffset + length > srcSize)
                throw new XfsWriteException(WriteErrorKind.InvalidArgument, $"reflink: source range ends at {srcOffset + length}, past the source EOF {srcSize}");
            if (length % bs != 0)
            {
                // A partial last block may be shared only when it is the source's EOF block and becomes the
                // destination's EOF block (the kernel's remap_prep rule; otherwise stale bytes would show).
                if (srcOffset + length != srcSize || dstOffset + length < dstSize)
                    throw new XfsWriteException(WriteErrorKind.InvalidArgument, "reflink: a length that is not a multiple of the block size must end at the source EOF and reach the destination EOF");
            }
            ulong sb = (ulong)(srcOffset / bs), db = (ulong)(dstOffset / bs), n = (ulong)(RoundUp(length, bs) / bs);
            if (srcIno == dstIno && sb < db + n && db < sb + n)
                throw new XfsWriteException(WriteErrorKind.InvalidArgument, "reflink: source and destination ranges of one file overlap");
            d.EnsureSpaceFor(dstOffset, dstOffset, allocateHoles: false, extraRecords: s.Fork.Extents.MappingsIn(sb, n).Count + 2);
            if (dstOffset > dstSize) d.ZeroEofTail(dstSize, dstOffset);
            s.SetReflinkFlag();
            d.SetReflinkFlag();
            d.Unmap(db, n);
            foreach (var piece in s.Fork.Extents.MappingsIn(sb, n))
            {
                // Only written blocks are shared (xfs_reflink_remap_extent): an unwritten source range leaves a hole.
                if (piece.Unwritten) continue;
                var (agno, agbno) = d.Split(piece.StartBlock);
                LockAg(tx, agno);
                tx.RefcountIncrement(agno, agbno, piece.BlockCount);
                d.Map(piece with { StartOffset = db + (piece.StartOffset - sb) });
            }
            if (dstOffset + length > d.Size) d.Size = dstOffset + length;
            d.Touch();
            if (!ReferenceEquals(s, d)) s.Finish();
            d.Finish();
        });
    }

    /// <summary>Gives the range private copies of its shared blocks.</summary>
    public void Unshare(ulong ino, long offset, long length)
    {
        CheckRange(offset, length, "unshare");
        var inode = Engine.GetInode(ino);
        Engine.Execute("unshare", tx =>
        {
            var edit = FileEdit.Begin(tx, inode);
            if (!edit.Reflink || length == 0) return;
            long end = Math.Min(offset + length, edit.Size);
            if (end <= offset) return;
            int bs = edit.BlockSize;
            long from = offset / bs * bs, to = RoundUp(end, bs);
            edit.EnsureSpaceFor(from, to, allocateHoles: false);
            edit.Modify(from, to, null, ModifyMode.Unshare);
            edit.Finish();
        });
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

    internal static void CheckRegular(IncoreInode inode)
    {
        var core = inode.Core;
        int type = InodeFields.Mode(core) & 0xF000;
        if (InodeFields.Mode(core) == 0) throw new XfsWriteException(WriteErrorKind.NotFound, $"inode {inode.Ino} is free");
        if (type == 0x4000) throw new XfsWriteException(WriteErrorKind.IsDirectory, $"inode {inode.Ino} is a directory");
        if (type != 0x8000) throw new XfsWriteException(WriteErrorKind.InvalidArgument, $"inode {inode.Ino} is not a regular file (mode 0{Convert.ToString(InodeFields.Mode(core), 8)})");
        if ((InodeFields.Flags(core) & Dinode.FlagRealtime) != 0)
            throw new XfsWriteException(WriteErrorKind.NotSupported, $"inode {inode.Ino} is a realtime file, which the engine does not handle");
        var format = InodeFields.Format(core, attr: false);
        if (format is not (ForkFormat.Extents or ForkFormat.Btree))
            throw new XfsWriteException(WriteErrorKind.NotSupported, $"inode {inode.Ino} has a data fork in format {format}, which the engine does not handle for file data");
    }

    /// <summary>The data-fork extents of an inode locked for reading (extents format from the inode, btree format
    /// through the read path's bmbt walk).</summary>
    ExtentList ReadExtentsLocked(IncoreInode inode)
    {
        if (ForkCache.TryGet(inode, out var cached, out _)) return cached;
        var core = inode.Core;
        var geo = Engine.Geometry;
        var fork = InodeFields.Fork(core, attr: false);
        ulong count = InodeFields.Extents(core, attr: false);
        string where = $"inode {inode.Ino} data fork";
        if (InodeFields.Format(core, false) == ForkFormat.Extents)
        {
            if (count > (ulong)(fork.Length / Dinode.ExtentSize)) throw new XfsWriteException(WriteErrorKind.Corrupt, $"{where}: {count} extents do not fit the fork");
            return ExtentList.Decode(fork, (int)count, geo, where);
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
