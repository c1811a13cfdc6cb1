using System.Buffers.Binary;
using System.IO.Hashing;

namespace Xfbtree.Buffers;

/// <summary>XFS CRC-32C: standard Castagnoli CRC over the block with the CRC field taken as zero, stored little-endian.</summary>
/// <remarks>
/// The standard CRC-32C (initial value and final XOR 0xFFFFFFFF; "123456789" → 0xE3069283) is exactly what XFS
/// stores: the kernel's raw crc32c(~0, ...) followed by its inversion, written little-endian. The bytes come from
/// System.IO.Hashing's hardware-accelerated <see cref="Crc32"/> with <see cref="Crc32ParameterSet.Crc32C"/>; one
/// hasher per thread is reused, so computing a CRC allocates nothing.
/// </remarks>
public static class XfsCrc
{
    [ThreadStatic]
    private static Crc32? hasher;

    /// <summary>Standard CRC-32C of <paramref name="data"/>.</summary>
    public static uint Crc32C(ReadOnlySpan<byte> data) => System.IO.Hashing.Crc32.HashToUInt32(Crc32ParameterSet.Crc32C, data);

    /// <summary>CRC of <paramref name="block"/> with the 4 bytes at <paramref name="crcOffset"/> taken as zero.</summary>
    /// <exception cref="ArgumentOutOfRangeException">The CRC field is not inside the block.</exception>
    public static uint Compute(ReadOnlySpan<byte> block, int crcOffset)
    {
        if ((uint)crcOffset > (uint)(block.Length - 4) || block.Length < 4)
        {
            throw new ArgumentOutOfRangeException(nameof(crcOffset), crcOffset, $"CRC field outside a {block.Length}-byte block");
        }
        var crc = hasher ??= new Crc32(Crc32ParameterSet.Crc32C);
        crc.Reset();
        crc.Append(block[..crcOffset]);
        crc.Append([0, 0, 0, 0]);
        crc.Append(block[(crcOffset + 4)..]);
        return crc.GetCurrentHashAsUInt32();
    }

    /// <summary>True when the stored CRC matches.</summary>
    public static bool Verify(ReadOnlySpan<byte> block, int crcOffset) =>
        Compute(block, crcOffset) == BinaryPrimitives.ReadUInt32LittleEndian(block[crcOffset..]);

    /// <summary>Computes and stores the CRC.</summary>
    public static void Update(Span<byte> block, int crcOffset) =>
        BinaryPrimitives.WriteUInt32LittleEndian(block[crcOffset..], Compute(block, crcOffset));

    /// <summary>The CRC stored in the block (little-endian at <paramref name="crcOffset"/>).</summary>
    public static uint Stored(ReadOnlySpan<byte> block, int crcOffset) => BinaryPrimitives.ReadUInt32LittleEndian(block[crcOffset..]);
}
