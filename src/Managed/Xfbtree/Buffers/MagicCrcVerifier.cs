using System.Buffers.Binary;

namespace Xfbtree.Buffers;

/// <summary>
/// A ready-made verifier for XFS structures with a big-endian magic at offset 0 and a CRC-32C field (superblock,
/// AGF, AGI, AGFL, btree blocks): read verify = magic, CRC over <see cref="CoveredLength"/> bytes, then the
/// optional structural check; write prepare = structural check, then recompute the CRC.
/// </summary>
public sealed class MagicCrcVerifier : IBufferVerifier
{
    private readonly Func<BlockBuffer, string?>? structure;

    /// <param name="name">Block type for messages, e.g. "AGF".</param>
    /// <param name="magic">Expected big-endian magic at offset 0.</param>
    /// <param name="crcOffset">Offset of the little-endian CRC field.</param>
    /// <param name="coveredLength">Bytes the CRC covers from offset 0 (0: the whole buffer; AG headers: one sector).</param>
    /// <param name="structure">Optional check: returns null when fine, else the failed check's description.</param>
    public MagicCrcVerifier(string name, uint magic, int crcOffset, int coveredLength = 0, Func<BlockBuffer, string?>? structure = null)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(crcOffset);
        ArgumentOutOfRangeException.ThrowIfNegative(coveredLength);
        if (coveredLength != 0 && crcOffset + 4 > coveredLength)
        {
            throw new ArgumentOutOfRangeException(nameof(crcOffset), "CRC field outside the covered length");
        }
        Name = name;
        Magic = magic;
        CrcOffset = crcOffset;
        CoveredLength = coveredLength;
        this.structure = structure;
    }

    /// <inheritdoc />
    public string Name { get; }
    /// <inheritdoc />
    public uint Magic { get; }
    /// <summary>Offset of the CRC field.</summary>
    public int CrcOffset { get; }
    /// <summary>Bytes the CRC covers (0: the whole buffer).</summary>
    public int CoveredLength { get; }

    /// <inheritdoc />
    public void VerifyRead(BlockBuffer buffer)
    {
        var block = Covered(buffer);
        uint magic = BinaryPrimitives.ReadUInt32BigEndian(block);
        if (magic != Magic)
        {
            throw new CorruptionException(Name, buffer.Daddr, $"bad magic 0x{magic:x8} (expected 0x{Magic:x8})");
        }
        uint computed = XfsCrc.Compute(block, CrcOffset);
        uint stored = XfsCrc.Stored(block, CrcOffset);
        if (computed != stored)
        {
            throw new CorruptionException(Name, buffer.Daddr, $"bad CRC (stored 0x{stored:x8}, computed 0x{computed:x8})");
        }
        CheckStructure(buffer);
    }

    /// <inheritdoc />
    public void PrepareWrite(BlockBuffer buffer)
    {
        var block = Covered(buffer);
        uint magic = BinaryPrimitives.ReadUInt32BigEndian(block);
        if (magic != Magic)
        {
            throw new CorruptionException(Name, buffer.Daddr, $"bad magic 0x{magic:x8} before write (expected 0x{Magic:x8})");
        }
        CheckStructure(buffer);
        XfsCrc.Update(block, CrcOffset);
    }

    private void CheckStructure(BlockBuffer buffer)
    {
        if (structure?.Invoke(buffer) is { } failed)
        {
            throw new CorruptionException(Name, buffer.Daddr, failed);
        }
    }

    private Span<byte> Covered(BlockBuffer buffer)
    {
        var span = buffer.Span;
        int length = CoveredLength == 0 ? span.Length : CoveredLength;
        if (length > span.Length || CrcOffset + 4 > length)
        {
            throw new CorruptionException(Name, buffer.Daddr, $"buffer of {span.Length} bytes is too short (needs {Math.Max(length, CrcOffset + 4)})");
        }
        return span[..length];
    }
}
