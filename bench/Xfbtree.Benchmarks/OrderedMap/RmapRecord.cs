using System.Buffers.Binary;
using System.Runtime.InteropServices;

namespace Xfbtree.Benchmarks.OrderedMap;

/// <summary>
/// A 24-byte rmap-like record (XFS rmapbt record shape): start block, block count, owner, offset+flags.
/// Order: start block, owner, offset (the rmapbt key order); the block count is payload.
/// </summary>
[StructLayout(LayoutKind.Sequential, Pack = 4, Size = 24)]
public readonly record struct RmapRecord(uint StartBlock, uint BlockCount, ulong Owner, ulong Offset)
{
    /// <summary>Size of the LMDB key encoding (start block, owner, offset; big-endian so memcmp sorts right).</summary>
    public const int KeySize = 20;

    /// <summary>Writes the big-endian key.</summary>
    public void WriteKey(Span<byte> key)
    {
        BinaryPrimitives.WriteUInt32BigEndian(key, StartBlock);
        BinaryPrimitives.WriteUInt64BigEndian(key[4..], Owner);
        BinaryPrimitives.WriteUInt64BigEndian(key[12..], Offset);
    }

    /// <summary>Reads a record back from an LMDB key and 4-byte value.</summary>
    public static RmapRecord FromKeyValue(ReadOnlySpan<byte> key, ReadOnlySpan<byte> value) => new(
        BinaryPrimitives.ReadUInt32BigEndian(key),
        BinaryPrimitives.ReadUInt32BigEndian(value),
        BinaryPrimitives.ReadUInt64BigEndian(key[4..]),
        BinaryPrimitives.ReadUInt64BigEndian(key[12..]));
}

/// <summary>The rmapbt key order as a struct comparer (so generic code specializes on it).</summary>
public readonly struct RmapRecordComparer : IComparer<RmapRecord>
{
    /// <inheritdoc/>
    public int Compare(RmapRecord x, RmapRecord y)
    {
        if (x.StartBlock != y.StartBlock)
        {
            return x.StartBlock < y.StartBlock ? -1 : 1;
        }
        if (x.Owner != y.Owner)
        {
            return x.Owner < y.Owner ? -1 : 1;
        }
        return x.Offset.CompareTo(y.Offset);
    }
}

/// <summary>Class wrapper of <see cref="RmapRecordComparer"/> for the BCL collections (which box the comparer otherwise).</summary>
public sealed class RmapRecordClassComparer : IComparer<RmapRecord>
{
    /// <summary>Shared instance.</summary>
    public static readonly RmapRecordClassComparer Instance = new();

    /// <inheritdoc/>
    public int Compare(RmapRecord x, RmapRecord y) => default(RmapRecordComparer).Compare(x, y);
}

/// <summary>The key part of a record, for SortedDictionary (value = block count).</summary>
public readonly record struct RmapKey(uint StartBlock, ulong Owner, ulong Offset) : IComparable<RmapKey>
{
    /// <inheritdoc/>
    public int CompareTo(RmapKey other)
    {
        if (StartBlock != other.StartBlock)
        {
            return StartBlock < other.StartBlock ? -1 : 1;
        }
        if (Owner != other.Owner)
        {
            return Owner < other.Owner ? -1 : 1;
        }
        return Offset.CompareTo(other.Offset);
    }

    public static bool operator <(RmapKey left, RmapKey right) => left.CompareTo(right) < 0;
    public static bool operator >(RmapKey left, RmapKey right) => left.CompareTo(right) > 0;
    public static bool operator <=(RmapKey left, RmapKey right) => left.CompareTo(right) <= 0;
    public static bool operator >=(RmapKey left, RmapKey right) => left.CompareTo(right) >= 0;
}

/// <summary>A block range [Low, High] whose overlapping records a range query returns.</summary>
public readonly record struct BlockRange(uint Low, uint High)
{
    /// <summary>
    /// Lowest start block of an extent that can overlap the range: extents are at most
    /// <see cref="RmapDataSet.MaxBlockCount"/> long, so peers without an interval index scan from here.
    /// </summary>
    public uint FirstPossibleStart => Low >= RmapDataSet.MaxBlockCount ? Low - RmapDataSet.MaxBlockCount + 1 : 0;
}

/// <summary>Deterministic rmap-like data sets.</summary>
public static class RmapDataSet
{
    /// <summary>Longest extent generated; range queries start this many blocks before the range.</summary>
    public const uint MaxBlockCount = 8;

    /// <summary>
    /// <paramref name="count"/> records in key order: non-overlapping extents at increasing start blocks with
    /// gaps, owners and offsets like inode data forks (seeded, so every peer sees the same records).
    /// </summary>
    public static RmapRecord[] Sorted(int count, int seed = 5)
    {
        var random = new Random(seed);
        var records = new RmapRecord[count];
        uint block = 16;
        for (int i = 0; i < count; i++)
        {
            uint length = (uint)random.Next(1, (int)MaxBlockCount + 1);
            ulong owner = 128 + (ulong)random.Next(0, Math.Max(1, count / 4));
            ulong offset = (ulong)random.Next(0, 1 << 24);
            records[i] = new RmapRecord(block, length, owner, offset);
            block += length + (uint)random.Next(0, 2);
        }
        return records;
    }

    /// <summary>A seeded permutation of <paramref name="sorted"/>.</summary>
    public static RmapRecord[] Shuffled(RmapRecord[] sorted, int seed = 11)
    {
        var copy = (RmapRecord[])sorted.Clone();
        new Random(seed).Shuffle(copy);
        return copy;
    }

    /// <summary><paramref name="count"/> existing records picked at random (the lookup keys).</summary>
    public static RmapRecord[] LookupKeys(RmapRecord[] sorted, int count, int seed = 17)
    {
        var random = new Random(seed);
        var keys = new RmapRecord[count];
        for (int i = 0; i < count; i++)
        {
            keys[i] = sorted[random.Next(sorted.Length)];
        }
        return keys;
    }

    /// <summary>Random block ranges about <paramref name="width"/> blocks wide inside the data set.</summary>
    public static BlockRange[] Ranges(RmapRecord[] sorted, int count, uint width, int seed = 23)
    {
        var random = new Random(seed);
        uint last = sorted[^1].StartBlock;
        var ranges = new BlockRange[count];
        for (int i = 0; i < count; i++)
        {
            uint low = (uint)random.NextInt64(0, last);
            ranges[i] = new BlockRange(low, low + width - 1);
        }
        return ranges;
    }
}
