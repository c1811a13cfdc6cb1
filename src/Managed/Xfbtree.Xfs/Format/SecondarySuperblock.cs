using System.Buffers.Binary;
using Xfbtree.Buffers;

namespace Xfbtree.Xfs.Format;

/// <summary>
/// The secondary superblocks (sector 0 of AG 1 and up; docs/xfs-format.md §2.1): each must verify (magic, CRC) and
/// agree with the primary on every field mkfs fixes (the kernel scrub's "corrupt" class: geometry, feature words,
/// the metadata UUID); fields that may lag behind the primary (summary counters, realtime and quota inode numbers,
/// the ATTR/NLINK/QUOTA version bits, imax_pct, stripe geometry, inprogress, LSN) are not compared, as mkfs itself
/// writes several of them differently (rbmino null, inprogress 1), but each copy must still meet the verifier's rules
/// on its own (<see cref="SelfProblems"/>: xfs_repair -n judges every secondary by them). The rest of the sector must
/// be zero. A repair rewrites the sector as a copy of the primary with
/// NEEDSREPAIR and the log-incompat word cleared (upstream's xrep_superblock).
/// </summary>
internal static class SecondarySuperblock
{
    /// <summary>sb_versionnum bits set at mkfs time (NUMBITS, ALIGN, DALIGN, SHARED, LOGV2, SECTOR, EXTFLG, DIRV2).</summary>
    private const uint VersionMkfsBits = 0x3F8F;

    /// <summary>sb_features2 bits set at mkfs time (LAZYSBCOUNT, PROJID32, CRC, FTYPE).</summary>
    private const uint Features2MkfsBits = 0x382;

    private const int LogIncompatOffset = 220;

    /// <summary>(name, offset, size, mask) of each field compared; mask 0 means every bit.</summary>
    private static readonly (string Name, int Offset, int Size, uint Mask)[] Fields =
    [
        ("sb_blocksize", 4, 4, 0), ("sb_dblocks", 8, 8, 0), ("sb_rblocks", 16, 8, 0), ("sb_rextents", 24, 8, 0),
        ("sb_logstart", 48, 8, 0), ("sb_rextsize", 80, 4, 0), ("sb_agblocks", 84, 4, 0), ("sb_agcount", 88, 4, 0),
        ("sb_rbmblocks", 92, 4, 0), ("sb_logblocks", 96, 4, 0), ("sb_versionnum", 100, 2, VersionMkfsBits),
        ("sb_sectsize", 102, 2, 0), ("sb_inodesize", 104, 2, 0), ("sb_inopblock", 106, 2, 0), ("sb_blocklog", 120, 1, 0),
        ("sb_sectlog", 121, 1, 0), ("sb_inodelog", 122, 1, 0), ("sb_inopblog", 123, 1, 0), ("sb_agblklog", 124, 1, 0),
        ("sb_rextslog", 125, 1, 0), ("sb_flags", 178, 1, 0), ("sb_shared_vn", 179, 1, 0), ("sb_inoalignmt", 180, 4, 0),
        ("sb_dirblklog", 192, 1, 0), ("sb_logsectlog", 193, 1, 0), ("sb_logsectsize", 194, 2, 0), ("sb_logsunit", 196, 4, 0),
        ("sb_features2", 200, 4, Features2MkfsBits), ("sb_features_compat", 208, 4, 0), ("sb_features_ro_compat", 212, 4, 0),
        ("sb_features_incompat", 216, 4, ~Superblock.IncompatNeedsRepair), ("sb_spino_align", 228, 4, 0),
    ];

    /// <summary>
    /// What is wrong with the secondary superblock <paramref name="secondary"/> (one sector) against the primary
    /// <paramref name="primary"/> (one sector, the one the image was opened with); empty when it is right.
    /// </summary>
    public static List<string> Differences(ReadOnlySpan<byte> primary, ReadOnlySpan<byte> secondary, int sectorSize)
    {
        var problems = new List<string>();
        if (secondary.Length < sectorSize || primary.Length < sectorSize)
        {
            problems.Add("short sector");
            return problems;
        }
        secondary = secondary[..sectorSize];
        uint magic = BinaryPrimitives.ReadUInt32BigEndian(secondary);
        if (magic != Superblock.MagicValue)
        {
            problems.Add($"bad magic 0x{magic:x8}");
            return problems;
        }
        if (!XfsCrc.Verify(secondary, Superblock.CrcOffset)) problems.Add("bad CRC");
        foreach (var (name, offset, size, mask) in Fields)
        {
            ulong p = Read(primary, offset, size), s = Read(secondary, offset, size);
            if (mask != 0)
            {
                p &= mask;
                s &= mask;
            }
            if (p != s) problems.Add($"{name} {Hex(s)}, primary {Hex(p)}");
        }
        if ((BinaryPrimitives.ReadUInt32BigEndian(primary[Superblock.OffsetIncompat..]) & Superblock.IncompatMetaUuid) != 0
            && !primary.Slice(248, 16).SequenceEqual(secondary.Slice(248, 16)))
        {
            problems.Add("sb_meta_uuid differs from the primary's");
        }
        if (secondary[Superblock.StructSize..].IndexOfAnyExcept((byte)0) >= 0) problems.Add($"bytes after the superblock ({Superblock.StructSize}) are not zero");
        // Quota flags: a secondary keeps the 0 mkfs wrote, or a copy of the primary's (growfs); nothing else.
        ushort qflags = BinaryPrimitives.ReadUInt16BigEndian(secondary[176..]);
        if (qflags != 0 && qflags != BinaryPrimitives.ReadUInt16BigEndian(primary[176..])) problems.Add($"sb_qflags {Hex(qflags)}, primary {Hex(BinaryPrimitives.ReadUInt16BigEndian(primary[176..]))}");
        SelfProblems(secondary, problems);
        return problems;
    }

    private const int VersionMoreBits = 0x8000, VersionBorgBit = 0x4000, VersionDalignBit = 0x100;
    /// <summary>sb_features2 bits a filesystem may have (LAZYSBCOUNT, ATTR2, PARENT, PROJID32, CRC, FTYPE).</summary>
    private const uint Features2KnownBits = 0x39A;
    private const ushort QuotaOldBits = 0x0030, QuotaAccountingBits = 0x000B;

    /// <summary>
    /// The rules a superblock must meet on its own, whatever the primary says: the fields left out of the comparison
    /// above are still judged by the verifier xfs_repair and the kernel run on every copy (xfs_validate_sb_common):
    /// the version word's MOREBITS set and BORG clear, no unknown sb_features2 bit and sb_bad_features2 equal to it, an
    /// unused sb_meta_uuid zero, no realtime free extents without
    /// a realtime device, the stripe unit and width consistent with the DALIGN bit, no old-style quota flags on v5,
    /// and no quota inode named without quota accounting.
    /// </summary>
    private static void SelfProblems(ReadOnlySpan<byte> sb, List<string> problems)
    {
        int version = BinaryPrimitives.ReadUInt16BigEndian(sb[100..]);
        if ((version & VersionMoreBits) == 0 || (version & VersionBorgBit) != 0) problems.Add($"sb_versionnum {Hex((ulong)version)}: bad version bits");
        uint features2 = BinaryPrimitives.ReadUInt32BigEndian(sb[200..]);
        if ((features2 & ~Features2KnownBits) != 0) problems.Add($"sb_features2 {Hex(features2)}: unknown feature bits");
        uint badFeatures2 = BinaryPrimitives.ReadUInt32BigEndian(sb[204..]);
        if (badFeatures2 != features2) problems.Add($"sb_bad_features2 {Hex(badFeatures2)}, sb_features2 {Hex(features2)}: they must be equal");
        // Without the META_UUID feature the field is unused and zero (xfs_repair zeroes it).
        if ((BinaryPrimitives.ReadUInt32BigEndian(sb[Superblock.OffsetIncompat..]) & Superblock.IncompatMetaUuid) == 0 && sb.Slice(248, 16).IndexOfAnyExcept((byte)0) >= 0)
        {
            problems.Add("sb_meta_uuid set without the META_UUID feature");
        }
        ulong rblocks = BinaryPrimitives.ReadUInt64BigEndian(sb[16..]), frextents = BinaryPrimitives.ReadUInt64BigEndian(sb[152..]);
        if (rblocks == 0 && frextents != 0) problems.Add($"sb_frextents {Hex(frextents)} without a realtime device");
        uint unit = BinaryPrimitives.ReadUInt32BigEndian(sb[184..]), width = BinaryPrimitives.ReadUInt32BigEndian(sb[188..]);
        bool dalign = (version & VersionDalignBit) != 0;
        if (unit != 0 ? !dalign || unit > width || width % unit != 0 : dalign || width != 0)
        {
            problems.Add($"sb_unit {Hex(unit)}, sb_width {Hex(width)}: bad stripe geometry");
        }
        ushort qflags = BinaryPrimitives.ReadUInt16BigEndian(sb[176..]);
        if ((qflags & QuotaOldBits) != 0) problems.Add($"sb_qflags {Hex(qflags)}: old-style quota bits on a v5 superblock");
        if ((qflags & QuotaAccountingBits) == 0)
        {
            foreach (var (name, offset) in new[] { ("sb_uquotino", 160), ("sb_gquotino", 168), ("sb_pquotino", 232) })
            {
                ulong ino = BinaryPrimitives.ReadUInt64BigEndian(sb[offset..]);
                if (ino != 0 && ino != ulong.MaxValue) problems.Add($"{name} {Hex(ino)} without quota accounting");
            }
        }
    }

    /// <summary>
    /// Formats <paramref name="destination"/> (one sector) as the secondary copy of <paramref name="primary"/>: the
    /// superblock structure copied, the rest zero, NEEDSREPAIR and the log-incompat features cleared (both are
    /// ignored on a secondary), the CRC computed.
    /// </summary>
    public static void FormatFromPrimary(ReadOnlySpan<byte> primary, Span<byte> destination)
    {
        destination.Clear();
        primary[..Superblock.StructSize].CopyTo(destination);
        uint incompat = BinaryPrimitives.ReadUInt32BigEndian(destination[Superblock.OffsetIncompat..]);
        BinaryPrimitives.WriteUInt32BigEndian(destination[Superblock.OffsetIncompat..], incompat & ~Superblock.IncompatNeedsRepair);
        BinaryPrimitives.WriteUInt32BigEndian(destination[LogIncompatOffset..], 0);
        XfsCrc.Update(destination, Superblock.CrcOffset);
    }

    private static ulong Read(ReadOnlySpan<byte> s, int offset, int size) => size switch
    {
        1 => s[offset],
        2 => BinaryPrimitives.ReadUInt16BigEndian(s[offset..]),
        4 => BinaryPrimitives.ReadUInt32BigEndian(s[offset..]),
        _ => BinaryPrimitives.ReadUInt64BigEndian(s[offset..]),
    };

    private static string Hex(ulong v) => v < 10 ? v.ToString(System.Globalization.CultureInfo.InvariantCulture) : "0x" + v.ToString("x", System.Globalization.CultureInfo.InvariantCulture);
}

/// <summary>Write verifier of a secondary superblock sector a repair formats: computes the CRC, checks the magic.</summary>
internal sealed class SecondarySuperblockVerifier(int sectorSize) : IBufferVerifier
{
    public string Name => "superblock";

    public void VerifyRead(BlockBuffer buffer)
    {
        ArgumentNullException.ThrowIfNull(buffer);
        var s = buffer.Span[..sectorSize];
        if (BinaryPrimitives.ReadUInt32BigEndian(s) != Superblock.MagicValue) throw new CorruptionException(Name, buffer.Daddr, "bad magic");
        if (!XfsCrc.Verify(s, Superblock.CrcOffset)) throw new CorruptionException(Name, buffer.Daddr, "bad CRC");
    }

    public void PrepareWrite(BlockBuffer buffer)
    {
        ArgumentNullException.ThrowIfNull(buffer);
        XfsCrc.Update(buffer.Span[..sectorSize], Superblock.CrcOffset);
        VerifyRead(buffer);
    }
}
