using Xfbtree.Xfs.Write.Files;

namespace Xfbtree.Cli;

/// <summary>
/// CRC-64/XZ (the check of the xz format: ECMA-182 polynomial, reflected, initial value and final xor all ones; the
/// check value of "123456789" is 0x995DC9BBDF1939FA): the digest <c>xfbtree io</c>'s pread prints. Unlike a
/// cryptographic hash, a CRC is linear, so appending <c>n</c> zero bytes is one matrix power applied to the
/// register: <see cref="AppendZeros"/> costs O(log n), and a sparse range of any length hashes in time proportional
/// to its extents. Also an <see cref="IFileReadSink"/>, so it can take a read directly.
/// </summary>
internal sealed class Crc64 : IFileReadSink
{
    private const ulong Polynomial = 0xC96C5795D7870F42UL;
    private static readonly ulong[] Table = BuildTable();
    // Slicing by 8: Slices[k][b] is the register contribution of byte b followed by k zero bytes.
    private static readonly ulong[][] Slices = BuildSlices();
    // ZeroPowers[k]: the register map of 2^k zero bytes, as the images of the 64 single-bit registers.
    private static readonly ulong[][] ZeroPowers = BuildZeroPowers();
    private ulong register = ulong.MaxValue;

    /// <summary>Bytes appended so far (data and zeros).</summary>
    public long Length { get; private set; }

    /// <summary>The CRC of everything appended so far.</summary>
    public ulong Value => ~register;

    /// <summary>Appends bytes.</summary>
    public void Append(ReadOnlySpan<byte> bytes)
    {
        ulong r = register;
        int length = bytes.Length;
        ReadOnlySpan<byte> rest = bytes;
        ulong[] t0 = Slices[0], t1 = Slices[1], t2 = Slices[2], t3 = Slices[3], t4 = Slices[4], t5 = Slices[5], t6 = Slices[6], t7 = Slices[7];
        while (rest.Length >= 8)
        {
            r ^= System.Buffers.Binary.BinaryPrimitives.ReadUInt64LittleEndian(rest);
            r = t7[(byte)r] ^ t6[(byte)(r >> 8)] ^ t5[(byte)(r >> 16)] ^ t4[(byte)(r >> 24)]
                ^ t3[(byte)(r >> 32)] ^ t2[(byte)(r >> 40)] ^ t1[(byte)(r >> 48)] ^ t0[(byte)(r >> 56)];
            rest = rest[8..];
        }
        foreach (byte b in rest)
        {
            r = Table[(byte)(r ^ b)] ^ (r >> 8);
        }
        register = r;
        Length += length;
    }

    /// <summary>Appends <paramref name="count"/> zero bytes in O(log count) without materialising them.</summary>
    public void AppendZeros(long count)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(count);
        ulong r = register;
        for (int k = 0; k < 63 && (count >> k) != 0; k++)
        {
            if (((count >> k) & 1) != 0)
            {
                r = Apply(ZeroPowers[k], r);
            }
        }
        register = r;
        Length += count;
    }

    void IFileReadSink.Data(long fileOffset, ReadOnlySpan<byte> bytes) => Append(bytes);

    void IFileReadSink.Zeros(long fileOffset, long length) => AppendZeros(length);

    private static ulong Apply(ulong[] matrix, ulong vector)
    {
        ulong result = 0;
        for (int i = 0; vector != 0; i++, vector >>= 1)
        {
            if ((vector & 1) != 0)
            {
                result ^= matrix[i];
            }
        }
        return result;
    }

    private static ulong[] BuildTable()
    {
        var table = new ulong[256];
        for (uint i = 0; i < 256; i++)
        {
            ulong c = i;
            for (int k = 0; k < 8; k++)
            {
                c = (c & 1) != 0 ? (c >> 1) ^ Polynomial : c >> 1;
            }
            table[i] = c;
        }
        return table;
    }

    private static ulong[][] BuildSlices()
    {
        var slices = new ulong[8][];
        slices[0] = Table;
        for (int k = 1; k < 8; k++)
        {
            var previous = slices[k - 1];
            var slice = new ulong[256];
            for (int i = 0; i < 256; i++)
            {
                slice[i] = Table[(byte)previous[i]] ^ (previous[i] >> 8);
            }
            slices[k] = slice;
        }
        return slices;
    }

    private static ulong[][] BuildZeroPowers()
    {
        var powers = new ulong[63][];
        // One zero byte: r -> Table[r & 0xff] ^ (r >> 8), linear in r over GF(2).
        var one = new ulong[64];
        for (int i = 0; i < 64; i++)
        {
            ulong r = 1UL << i;
            one[i] = Table[(byte)r] ^ (r >> 8);
        }
        powers[0] = one;
        for (int k = 1; k < powers.Length; k++)
        {
            var previous = powers[k - 1];
            var square = new ulong[64];
            for (int i = 0; i < 64; i++)
            {
                square[i] = Apply(previous, previous[i]);
            }
            powers[k] = square;
        }
        return powers;
    }
}
