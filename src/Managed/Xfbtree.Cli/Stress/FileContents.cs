using System.Security.Cryptography;

namespace Xfbtree.Cli.Stress;

/// <summary>
/// The stress model of one regular file's bytes: a size and sparse 4 KiB chunks (a missing chunk is zeros), so
/// holes, punches and truncates cost no memory. Invariant: every byte at or past <see cref="Size"/> is zero, which
/// is what a file shows when it grows again. Not thread-safe: the stress runner holds the file's model lock.
/// </summary>
internal sealed class FileContents
{
    public const int ChunkSize = 4096;
    readonly Dictionary<long, byte[]> _chunks = new();

    public long Size { get; private set; }

    /// <summary>Memory the chunks hold.</summary>
    public long ChunkBytes => (long)_chunks.Count * ChunkSize;

    public FileContents Clone()
    {
        var copy = new FileContents { Size = Size };
        foreach (var (index, chunk) in _chunks) copy._chunks[index] = (byte[])chunk.Clone();
        return copy;
    }

    /// <summary>pwrite: the bytes land at <paramref name="offset"/>; the size grows to cover them.</summary>
    public void Write(long offset, ReadOnlySpan<byte> data)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(offset);
        long position = offset;
        while (!data.IsEmpty)
        {
            long index = position / ChunkSize;
            int within = (int)(position % ChunkSize);
            int n = Math.Min(data.Length, ChunkSize - within);
            if (!_chunks.TryGetValue(index, out var chunk))
            {
                if (data[..n].IndexOfAnyExcept((byte)0) < 0) { position += n; data = data[n..]; continue; }
                _chunks[index] = chunk = new byte[ChunkSize];
            }
            data[..n].CopyTo(chunk.AsSpan(within));
            position += n;
            data = data[n..];
        }
        Size = Math.Max(Size, position);
    }

    /// <summary>pread: up to <paramref name="destination"/>.Length bytes, stopping at EOF; returns the count.</summary>
    public int Read(long offset, Span<byte> destination)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(offset);
        if (offset >= Size) return 0;
        int total = (int)Math.Min(destination.Length, Size - offset);
        var dest = destination[..total];
        long position = offset;
        while (!dest.IsEmpty)
        {
            long index = position / ChunkSize;
            int within = (int)(position % ChunkSize);
            int n = Math.Min(dest.Length, ChunkSize - within);
            if (_chunks.TryGetValue(index, out var chunk)) chunk.AsSpan(within, n).CopyTo(dest);
            else dest[..n].Clear();
            position += n;
            dest = dest[n..];
        }
        return total;
    }

    /// <summary>Zeros [offset, offset+length) without changing the size (punch hole).</summary>
    public void Zero(long offset, long length)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(offset);
        ArgumentOutOfRangeException.ThrowIfNegative(length);
        if (length == 0) return;
        long end = offset + length;
        long first = offset / ChunkSize, last = (end - 1) / ChunkSize;
        if (last - first > _chunks.Count)
        {
            // A huge range over a sparse file: visit the chunks that exist instead of every index.
            foreach (long index in _chunks.Keys.Where(i => i >= first && i <= last).ToList()) ZeroInChunk(index, offset, end);
            return;
        }
        for (long index = first; index <= last; index++) ZeroInChunk(index, offset, end);
    }

    void ZeroInChunk(long index, long start, long end)
    {
        if (!_chunks.TryGetValue(index, out var chunk)) return;
        long chunkStart = index * ChunkSize;
        int from = (int)Math.Max(0, start - chunkStart), to = (int)Math.Min(ChunkSize, end - chunkStart);
        if (from == 0 && to == ChunkSize) { _chunks.Remove(index); return; }
        chunk.AsSpan(from, to - from).Clear();
    }

    /// <summary>truncate: shrinking drops the bytes past the new size, growing adds zeros.</summary>
    public void SetSize(long size)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(size);
        if (size < Size) Zero(size, Size - size);
        Size = size;
    }

    /// <summary>fallocate mode 0: the size grows to cover the range, the bytes stay.</summary>
    public void ExtendTo(long size) => Size = Math.Max(Size, size);

    /// <summary>fallocate FALLOC_FL_COLLAPSE_RANGE: the bytes after [offset, +length) move down by length.</summary>
    public void Collapse(long offset, long length)
    {
        var tail = new byte[Size - offset - length];
        Read(offset + length, tail);
        SetSize(offset);
        Write(offset, tail);
        Size = offset + tail.Length;
    }

    /// <summary>fallocate FALLOC_FL_INSERT_RANGE: the bytes from offset on move up by length, zeros in between.</summary>
    public void Insert(long offset, long length)
    {
        var tail = new byte[Size - offset];
        Read(offset, tail);
        SetSize(offset);
        Write(offset + length, tail);
        Size = offset + length + tail.Length;
    }

    /// <summary>reflink/copy: the bytes of <paramref name="source"/> [sourceOffset, +length) at <paramref name="offset"/>.</summary>
    public void CopyFrom(FileContents source, long sourceOffset, long offset, long length)
    {
        ArgumentNullException.ThrowIfNull(source);
        var buffer = new byte[Math.Min(length, 1 << 20)];
        for (long done = 0; done < length;)
        {
            int n = (int)Math.Min(buffer.Length, length - done);
            int got = source.Read(sourceOffset + done, buffer.AsSpan(0, n));
            buffer.AsSpan(got, n - got).Clear();
            Write(offset + done, buffer.AsSpan(0, n));
            done += n;
        }
    }

    /// <summary>SHA-256 of the file's bytes [0, Size), lower-case hex.</summary>
    public string Sha256Hex()
    {
        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        var buffer = new byte[1 << 16];
        for (long done = 0; done < Size;)
        {
            int n = Read(done, buffer);
            hash.AppendData(buffer, 0, n);
            done += n;
        }
        return Convert.ToHexStringLower(hash.GetHashAndReset());
    }
}

/// <summary>The bytes a stress write puts down: a reproducible function of a seed, so an op log can replay them.</summary>
internal static class StressData
{
    public static void Fill(Span<byte> destination, int seed)
    {
        ulong state = (ulong)(uint)seed * 0x9E3779B97F4A7C15UL + 0x2545F4914F6CDD1DUL;
        int i = 0;
        while (i < destination.Length)
        {
            // xorshift64*: fast, and a shifted or misplaced block never matches.
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            ulong value = state * 0x2545F4914F6CDD1DUL;
            for (int b = 0; b < 8 && i < destination.Length; b++, i++) destination[i] = (byte)(value >> (8 * b));
        }
    }
}
