namespace Xfbtree.Xfs.Format;

/// <summary>
/// The name hash of XFS da btrees (xfs_da_hashname): directories and extended attributes hash their names the
/// same way, so both keep their entries in this order.
/// </summary>
internal static class DaHash
{
    /// <summary>Rotates the hash by 7 bits per byte and xors the bytes in, four at a time.</summary>
    public static uint HashName(ReadOnlySpan<byte> name)
    {
        uint hash = 0;
        int i = 0;
        for (; name.Length - i >= 4; i += 4)
            hash = ((uint)name[i] << 21) ^ ((uint)name[i + 1] << 14) ^ ((uint)name[i + 2] << 7) ^ name[i + 3] ^ uint.RotateLeft(hash, 28);
        return (name.Length - i) switch
        {
            3 => ((uint)name[i] << 14) ^ ((uint)name[i + 1] << 7) ^ name[i + 2] ^ uint.RotateLeft(hash, 21),
            2 => ((uint)name[i] << 7) ^ name[i + 1] ^ uint.RotateLeft(hash, 14),
            1 => name[i] ^ uint.RotateLeft(hash, 7),
            _ => hash,
        };
    }
}
