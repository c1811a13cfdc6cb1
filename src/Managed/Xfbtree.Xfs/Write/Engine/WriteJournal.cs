using System.Buffers;
using System.Buffers.Binary;
using Xfbtree.Buffers;
using Microsoft.Win32.SafeHandles;

namespace Xfbtree.Xfs.Write.Engine;

/// <summary>One block image of a journal record: <see cref="Bytes"/> go to byte <see cref="Offset"/> of the image.</summary>
internal readonly record struct JournalEntry(long Offset, ReadOnlyMemory<byte> Bytes);

/// <summary>
/// The redo journal beside the image (docs/write-engine.md, "Crash safety"). Layout, little-endian:
/// a 64-byte file header ("XFBTJNL1", version, header length, the filesystem's sb_uuid, CRC32C of the first 60
/// bytes) followed by records. A record is: magic "XFRJ", entry count, sequence number, payload length, the
/// entries (byte offset u64, length u32, bytes), then a trailer: CRC32C over everything before it and the commit
/// marker "XFCM". Body and trailer go out in one write: a write cut short (a crash, a full disk) leaves a record
/// without its trailer or with a CRC that does not match, a torn tail that replay ignores, and the CRC is what
/// tells a complete record on power loss too (the page cache writes pages back in any order). An entry is file data (whole blocks), a buffer formatted in
/// memory (whole), or a run of a buffer's dirty 128-byte chunks (version 2; version 1 logged whole buffers): the
/// bytes the transaction changed, plus the checksum its verifier recomputed. Replaying the records in order sets
/// every logged byte to its last logged value and leaves the rest as the image has it, which no record changed; so
/// replaying a record twice, or records whose blocks were already written in place, gives the same image.
/// </summary>
internal sealed class WriteJournal : IDisposable
{
    private const ulong FileMagic = 0x314C4E4A54424658; // "XFBTJNL1" little-endian
    private const uint RecordMagic = 0x4A524658;        // "XFRJ"
    private const uint CommitMarker = 0x4D434658;       // "XFCM"
    private const int Version = 2;
    public const int HeaderLength = 64;
    private const int RecordHeaderLength = 24;
    private const int EntryHeaderLength = 12;
    private const int TrailerLength = 8;

    private readonly FileStream stream;
    // The descriptor, taken once: FileStream.SafeFileHandle is not a plain field read (it was 1 % of an untar's server CPU).
    private readonly SafeFileHandle handle;
    private readonly Lock appendGate = new();
    private readonly WriteFaultHook? faults;
    private long end;
    // Group sync: the journal length a completed fsync covered, and the lock that lets one fsync at a time run
    // while later callers wait for it and then find their record already covered.
    private readonly Lock syncGate = new();
    private long syncedEnd;
    private ulong sequence;

    private WriteJournal(string path, FileStream stream, WriteFaultHook? faults)
    {
        Path = path;
        this.stream = stream;
        this.faults = faults;
        handle = stream.SafeFileHandle;
    }

    public string Path { get; }

    /// <summary>Bytes in the journal file (header included).</summary>
    public long Length => Interlocked.Read(ref end);

    /// <summary>Reads the header of an existing journal: the filesystem UUID it names, or null when the file is not
    /// a journal (or its header is torn).</summary>
    public static byte[]? ReadOwner(string path)
    {
        using var h = File.OpenHandle(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite);
        var header = new byte[HeaderLength];
        if (RandomAccess.Read(h, header, 0) != HeaderLength)
        {
            return null;
        }
        if (BinaryPrimitives.ReadUInt64LittleEndian(header) != FileMagic
            || BinaryPrimitives.ReadUInt32LittleEndian(header.AsSpan(60)) != XfsCrc.Crc32C(header.AsSpan(0, 60)))
        {
            return null;
        }
        return header.AsSpan(16, 16).ToArray();
    }

    /// <summary>
    /// Applies every complete record of the journal at <paramref name="path"/> in order through
    /// <paramref name="write"/> (byte offset, bytes); stops at the first torn or damaged record. Returns the
    /// number of records applied.
    /// </summary>
    public static int Replay(string path, Action<long, byte[]> write)
    {
        using var h = File.OpenHandle(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite);
        long length = RandomAccess.GetLength(h);
        long at = HeaderLength;
        int applied = 0;
        var head = new byte[RecordHeaderLength];
        while (at + RecordHeaderLength + TrailerLength <= length)
        {
            if (RandomAccess.Read(h, head, at) != RecordHeaderLength || BinaryPrimitives.ReadUInt32LittleEndian(head) != RecordMagic)
            {
                break;
            }
            uint count = BinaryPrimitives.ReadUInt32LittleEndian(head.AsSpan(4));
            long payload = BinaryPrimitives.ReadInt64LittleEndian(head.AsSpan(16));
            if (payload < 0 || payload > length - at - RecordHeaderLength - TrailerLength || payload > int.MaxValue - RecordHeaderLength - TrailerLength)
            {
                break;
            }
            var record = new byte[RecordHeaderLength + payload + TrailerLength];
            if (RandomAccess.Read(h, record, at) != record.Length)
            {
                break;
            }
            int body = RecordHeaderLength + (int)payload;
            if (BinaryPrimitives.ReadUInt32LittleEndian(record.AsSpan(body)) != XfsCrc.Crc32C(record.AsSpan(0, body))
                || BinaryPrimitives.ReadUInt32LittleEndian(record.AsSpan(body + 4)) != CommitMarker)
            {
                break;
            }
            var entries = new List<(long, byte[])>();
            int p = RecordHeaderLength;
            bool sound = true;
            for (uint i = 0; i < count; i++)
            {
                if (p + EntryHeaderLength > body)
                {
                    sound = false;
                    break;
                }
                long offset = BinaryPrimitives.ReadInt64LittleEndian(record.AsSpan(p));
                int len = BinaryPrimitives.ReadInt32LittleEndian(record.AsSpan(p + 8));
                p += EntryHeaderLength;
                if (offset < 0 || len <= 0 || len > body - p)
                {
                    sound = false;
                    break;
                }
                entries.Add((offset, record.AsSpan(p, len).ToArray()));
                p += len;
            }
            if (!sound || p != body)
            {
                // The CRC matched a record we did not write this way: treat as the end, never apply half of it.
                break;
            }
            foreach (var (offset, bytes) in entries)
            {
                write(offset, bytes);
            }
            applied++;
            at += record.Length;
        }
        return applied;
    }

    /// <summary>Creates (or truncates) the journal with a header naming <paramref name="fsUuid"/>, synced.</summary>
    public static WriteJournal Create(string path, ReadOnlySpan<byte> fsUuid, WriteFaultHook? faults)
    {
        var stream = new FileStream(path, new FileStreamOptions
        {
            Mode = FileMode.OpenOrCreate,
            Access = FileAccess.ReadWrite,
            Share = FileShare.None,
            BufferSize = 0,
        });
        try
        {
            var journal = new WriteJournal(path, stream, faults);
            var header = new byte[HeaderLength];
            BinaryPrimitives.WriteUInt64LittleEndian(header, FileMagic);
            BinaryPrimitives.WriteInt32LittleEndian(header.AsSpan(8), Version);
            BinaryPrimitives.WriteInt32LittleEndian(header.AsSpan(12), HeaderLength);
            fsUuid.CopyTo(header.AsSpan(16, 16));
            BinaryPrimitives.WriteUInt32LittleEndian(header.AsSpan(60), XfsCrc.Crc32C(header.AsSpan(0, 60)));
            faults?.BeforeWrite();
            RandomAccess.SetLength(stream.SafeFileHandle, HeaderLength);
            RandomAccess.Write(stream.SafeFileHandle, header, 0);
            stream.Flush(flushToDisk: true);
            journal.end = HeaderLength;
            return journal;
        }
        catch
        {
            stream.Dispose();
            throw;
        }
    }

    /// <summary>Journal length the last completed fsync covered: every record ending at or before it is durable.</summary>
    public long SyncedEnd => Interlocked.Read(ref syncedEnd);

    private long discarded;

    /// <summary>The position of journal length <paramref name="length"/> in the journal's whole history: record bytes
    /// the truncations since open dropped, plus the length. Unlike lengths, positions never go back at a checkpoint,
    /// so a position kept across one (<see cref="IncoreInode.DataRecordEnd"/>) still compares right with
    /// <see cref="SyncedPosition"/>. Appends do not race a truncation (both run under the commit gate's rules).</summary>
    public long PositionOf(long length) => Interlocked.Read(ref discarded) + length;

    /// <summary>The position (<see cref="PositionOf"/>) of the journal's current end.</summary>
    public long Position => PositionOf(Length);

    /// <summary>The position (<see cref="PositionOf"/>) every completed fsync covered: every record ending at or before
    /// it is durable (records dropped by a truncation were made durable in place first). Read in the order that can
    /// only understate it while a truncation runs.</summary>
    public long SyncedPosition
    {
        get
        {
            long before = Interlocked.Read(ref discarded);
            return before + Interlocked.Read(ref syncedEnd);
        }
    }

    /// <summary>
    /// Appends one record (one write: body and trailer) under the append lock, then, with
    /// <paramref name="sync"/>, makes it durable. Returns when the record is complete in the file, with the journal
    /// length at the record's end (it is durable once <see cref="SyncedEnd"/> reaches that).
    /// </summary>
    public long Append(IReadOnlyList<JournalEntry> entries, bool sync)
    {
        long payload = 0;
        foreach (var e in entries)
        {
            payload += EntryHeaderLength + e.Bytes.Length;
        }
        if (payload > int.MaxValue - RecordHeaderLength - TrailerLength)
        {
            throw new IOException($"journal record of {payload} bytes is too large");
        }
        int body = RecordHeaderLength + (int)payload;
        // From the shared pool: a record of a large write would otherwise be a large-object-heap array per commit.
        byte[] record = ArrayPool<byte>.Shared.Rent(body + TrailerLength);
        try
        {
            return AppendRecord(entries, record, body, sync);
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(record);
        }
    }

    private long AppendRecord(IReadOnlyList<JournalEntry> entries, byte[] record, int body, bool sync)
    {
        long payload = body - RecordHeaderLength;
        record.AsSpan(0, RecordHeaderLength).Clear();
        BinaryPrimitives.WriteUInt32LittleEndian(record, RecordMagic);
        BinaryPrimitives.WriteUInt32LittleEndian(record.AsSpan(4), (uint)entries.Count);
        BinaryPrimitives.WriteInt64LittleEndian(record.AsSpan(16), payload);
        int p = RecordHeaderLength;
        long recordEnd;
        foreach (var e in entries)
        {
            BinaryPrimitives.WriteInt64LittleEndian(record.AsSpan(p), e.Offset);
            BinaryPrimitives.WriteInt32LittleEndian(record.AsSpan(p + 8), e.Bytes.Length);
            p += EntryHeaderLength;
            e.Bytes.Span.CopyTo(record.AsSpan(p));
            p += e.Bytes.Length;
        }
        lock (appendGate)
        {
            BinaryPrimitives.WriteUInt64LittleEndian(record.AsSpan(8), ++sequence);
            BinaryPrimitives.WriteUInt32LittleEndian(record.AsSpan(body), XfsCrc.Crc32C(record.AsSpan(0, body)));
            BinaryPrimitives.WriteUInt32LittleEndian(record.AsSpan(body + 4), CommitMarker);
            long at = end;
            faults?.BeforeWrite();
            // One pwrite per commit: every request that changes something pays for it.
            RandomAccess.Write(handle, record.AsSpan(0, body + TrailerLength), at);
            recordEnd = at + body + TrailerLength;
            Interlocked.Exchange(ref end, recordEnd);
        }
        if (sync)
        {
            // Outside the append lock: one fsync covers every record written before it, so concurrent
            // committers share the wait instead of queueing behind each other's flush (group commit).
            Sync();
        }
        return recordEnd;
    }

    /// <summary>
    /// Makes every record appended before this call durable, sharing fsyncs: a caller whose records an fsync that
    /// started after them already covered returns without its own; callers arriving during an fsync wait for it and
    /// then run one fsync for all of them (group commit for <c>SyncCommits = false</c>).
    /// </summary>
    public void Sync()
    {
        long target = Interlocked.Read(ref end);
        if (Interlocked.Read(ref syncedEnd) >= target) return;
        lock (syncGate)
        {
            if (Interlocked.Read(ref syncedEnd) >= target) return;
            long covering = Interlocked.Read(ref end);
            stream.Flush(flushToDisk: true);
            Interlocked.Exchange(ref syncedEnd, covering);
        }
    }

    /// <summary>Drops every record (the caller made the image durable first and blocks commits meanwhile).</summary>
    public void Truncate()
    {
        lock (appendGate)
        {
            RandomAccess.SetLength(handle, HeaderLength);
            stream.Flush(flushToDisk: true);
            // syncedEnd first: a reader of SyncedPosition between the two sees the old discarded count with the new
            // synced length, an understatement, never the reverse.
            long dropped = end - HeaderLength;
            Interlocked.Exchange(ref syncedEnd, HeaderLength);
            Interlocked.Add(ref discarded, dropped);
            end = HeaderLength;
        }
    }

    public void Dispose() => stream.Dispose();
}
