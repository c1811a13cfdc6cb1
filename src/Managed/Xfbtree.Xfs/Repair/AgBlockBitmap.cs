using System.Numerics;

namespace Xfbtree.Xfs.Repair;

/// <summary>
/// One bit per block of an allocation group. Repair uses it to classify every block of an AG (fixed metadata, free
/// space, free-space btree blocks, AGFL) and to find what is left over: the old rmapbt blocks plus leaked blocks.
/// An AG has at most 2^31 blocks, so the largest bitmap is 256 MiB; typical AGs need a few tens of KiB.
/// </summary>
internal sealed class AgBlockBitmap
{
    private readonly ulong[] _words;

    /// <summary>Creates an empty bitmap for an AG of <paramref name="agLength"/> blocks.</summary>
    public AgBlockBitmap(uint agLength)
    {
        AgLength = agLength;
        _words = new ulong[(agLength + 63) / 64];
    }

    /// <summary>Number of blocks covered.</summary>
    public uint AgLength { get; }

    /// <summary>True when block <paramref name="agbno"/> is set.</summary>
    public bool IsSet(uint agbno)
    {
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(agbno, AgLength);
        return (_words[agbno >> 6] & (1UL << (int)(agbno & 63))) != 0;
    }

    /// <summary>Sets [start, start+length). The range must lie inside the AG.</summary>
    public void Set(uint start, uint length) => Apply(start, length, set: true);

    /// <summary>Clears [start, start+length). The range must lie inside the AG.</summary>
    public void Clear(uint start, uint length) => Apply(start, length, set: false);

    /// <summary>True when any block of [start, start+length) is set.</summary>
    public bool AnySet(uint start, uint length)
    {
        CheckRange(start, length);
        for (ulong b = start, end = (ulong)start + length; b < end;)
        {
            ulong mask = WordMask(b, end, out int take);
            if ((_words[b >> 6] & mask) != 0)
            {
                return true;
            }
            b += (ulong)take;
        }
        return false;
    }

    /// <summary>Number of set blocks.</summary>
    public long CountSet()
    {
        long n = 0;
        foreach (ulong w in _words)
        {
            n += BitOperations.PopCount(w);
        }
        return n;
    }

    /// <summary>Sets every block that is set in <paramref name="other"/>.</summary>
    public void UnionWith(AgBlockBitmap other)
    {
        ArgumentNullException.ThrowIfNull(other);
        if (other.AgLength != AgLength)
        {
            throw new ArgumentException("bitmaps of different AG lengths", nameof(other));
        }
        for (int i = 0; i < _words.Length; i++)
        {
            _words[i] |= other._words[i];
        }
    }

    /// <summary>A new bitmap of the blocks set here and not in <paramref name="other"/>.</summary>
    public AgBlockBitmap Minus(AgBlockBitmap other)
    {
        ArgumentNullException.ThrowIfNull(other);
        if (other.AgLength != AgLength)
        {
            throw new ArgumentException("bitmaps of different AG lengths", nameof(other));
        }
        var result = new AgBlockBitmap(AgLength);
        for (int i = 0; i < _words.Length; i++)
        {
            result._words[i] = _words[i] & ~other._words[i];
        }
        return result;
    }

    /// <summary>The complement inside the AG.</summary>
    public AgBlockBitmap Complement()
    {
        var result = new AgBlockBitmap(AgLength);
        for (int i = 0; i < _words.Length; i++)
        {
            result._words[i] = ~_words[i];
        }
        int tail = (int)(AgLength & 63);
        if (tail != 0)
        {
            result._words[^1] &= (1UL << tail) - 1;
        }
        return result;
    }

    /// <summary>Finds the first run of set blocks at or after <paramref name="from"/>; false when there is none.</summary>
    public bool NextExtent(uint from, out uint start, out uint length)
    {
        start = 0;
        length = 0;
        long first = NextBit(from, wantSet: true);
        if (first < 0)
        {
            return false;
        }
        long end = NextBit((uint)first, wantSet: false);
        start = (uint)first;
        length = (uint)((end < 0 ? AgLength : end) - first);
        return true;
    }

    /// <summary>Set blocks in ascending order, at most <paramref name="max"/> of them.</summary>
    public List<uint> TakeLowest(long max)
    {
        var result = new List<uint>();
        uint from = 0;
        while (result.Count < max && from < AgLength && NextExtent(from, out uint start, out uint length))
        {
            for (uint i = 0; i < length && result.Count < max; i++)
            {
                result.Add(start + i);
            }
            from = start + length;
        }
        return result;
    }

    private long NextBit(uint from, bool wantSet)
    {
        for (ulong b = from; b < AgLength;)
        {
            ulong word = _words[b >> 6];
            if (!wantSet)
            {
                word = ~word;
            }
            word &= ulong.MaxValue << (int)(b & 63);
            if (word != 0)
            {
                ulong found = (b & ~63UL) + (ulong)BitOperations.TrailingZeroCount(word);
                return found < AgLength ? (long)found : -1;
            }
            b = (b & ~63UL) + 64;
        }
        return -1;
    }

    private void Apply(uint start, uint length, bool set)
    {
        CheckRange(start, length);
        for (ulong b = start, end = (ulong)start + length; b < end;)
        {
            ulong mask = WordMask(b, end, out int take);
            if (set)
            {
                _words[b >> 6] |= mask;
            }
            else
            {
                _words[b >> 6] &= ~mask;
            }
            b += (ulong)take;
        }
    }

    /// <summary>The bits of the word holding <paramref name="b"/> that lie in [b, end), and how many they are.</summary>
    private static ulong WordMask(ulong b, ulong end, out int take)
    {
        int bit = (int)(b & 63);
        take = (int)Math.Min(64UL - (ulong)bit, end - b);
        return take == 64 ? ulong.MaxValue : ((1UL << take) - 1) << bit;
    }

    private void CheckRange(uint start, uint length)
    {
        if ((ulong)start + length > AgLength)
        {
            throw new ArgumentOutOfRangeException(nameof(length), $"blocks [{start}, {(ulong)start + length}) lie outside an AG of {AgLength} blocks");
        }
    }
}
