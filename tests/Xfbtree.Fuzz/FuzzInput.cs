using System.Buffers.Binary;

namespace Xfbtree.Fuzz;

/// <summary>Outcome of one harness run that was not a finding.</summary>
public enum FuzzOutcome
{
    /// <summary>Everything ran and matched the model.</summary>
    Ok,
    /// <summary>The library reported corruption (the expected outcome for damaged input).</summary>
    CorruptionReported,
}

/// <summary>Sequential reader over a fuzz input: reads past the end return zeros, so every input is well formed.</summary>
internal ref struct FuzzReader
{
    readonly ReadOnlySpan<byte> _data;
    int _pos;

    public FuzzReader(ReadOnlySpan<byte> data) { _data = data; _pos = 0; }

    public readonly bool AtEnd => _pos >= _data.Length;
    public readonly int Remaining => Math.Max(0, _data.Length - _pos);
    public readonly ReadOnlySpan<byte> Rest => _pos >= _data.Length ? default : _data[_pos..];

    public byte U8() => _pos < _data.Length ? _data[_pos++] : (byte)0;

    public ushort U16()
    {
        int hi = U8();
        return (ushort)((hi << 8) | U8());
    }

    public uint U32() => ((uint)U16() << 16) | U16();

    /// <summary>Up to <paramref name="count"/> bytes (fewer at the end of the input).</summary>
    public ReadOnlySpan<byte> Bytes(int count)
    {
        int n = Math.Min(count, Remaining);
        var s = n == 0 ? default : _data.Slice(_pos, n);
        _pos += n;
        return s;
    }
}

/// <summary>Small deterministic generator (xorshift64*) seeded from the input, for shuffles in the harnesses.</summary>
internal struct FuzzRng
{
    ulong _s;
    public FuzzRng(ReadOnlySpan<byte> seedBytes)
    {
        ulong h = 0x9E3779B97F4A7C15;
        foreach (byte b in seedBytes) h = (h ^ b) * 0x100000001B3;
        _s = h == 0 ? 1 : h;
    }
    public ulong Next()
    {
        _s ^= _s >> 12;
        _s ^= _s << 25;
        _s ^= _s >> 27;
        return _s * 0x2545F4914F6CDD1D;
    }
    /// <summary>Uniform-enough value in [0, n).</summary>
    public int Below(int n) => n <= 1 ? 0 : (int)(Next() % (ulong)n);
    public void Shuffle<T>(IList<T> list)
    {
        for (int i = list.Count - 1; i > 0; i--)
        {
            int j = Below(i + 1);
            (list[i], list[j]) = (list[j], list[i]);
        }
    }
}

internal static class FuzzBytes
{
    /// <summary>Writes a big-endian u16.</summary>
    public static void U16(List<byte> to, int v) { to.Add((byte)(v >> 8)); to.Add((byte)v); }
    public static void U32(List<byte> to, uint v) { U16(to, (int)(v >> 16)); U16(to, (int)(v & 0xFFFF)); }
    public static ulong ReadU64(ReadOnlySpan<byte> s) => BinaryPrimitives.ReadUInt64BigEndian(s);
    public static string Hex(ReadOnlySpan<byte> s) => Convert.ToHexString(s);
}
