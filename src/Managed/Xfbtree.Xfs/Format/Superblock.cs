using System.Buffers.Binary;
using System.Numerics;
using Xfbtree.Buffers;

namespace Xfbtree.Xfs.Format;

/// <summary>
/// The XFS superblock (docs/xfs-format.md §2): 264 bytes at the start of sector 0 of every AG; the CRC (offset 224)
/// covers the whole sector. <see cref="Parse"/> copies the fields; <see cref="Validate"/> checks every geometry
/// value that later address arithmetic relies on; <see cref="RequireSupported"/> refuses what this tool cannot
/// handle. Nothing read from disk is used before both have passed.
/// </summary>
internal sealed class Superblock
{
    public const uint MagicValue = 0x58465342; // "XFSB"
    public const int CrcOffset = 224;
    /// <summary>Bytes of the structure (the rest of the sector is zero).</summary>
    public const int StructSize = 264;

    // ro_compat / incompat / features2 bits.
    public const uint RoCompatFinobt = 0x1, RoCompatRmapbt = 0x2, RoCompatReflink = 0x4, RoCompatInobtCount = 0x8;
    public const uint RoCompatKnown = 0xF;
    public const uint IncompatFtype = 0x1, IncompatSparseInodes = 0x2, IncompatMetaUuid = 0x4, IncompatBigtime = 0x8,
                      IncompatNeedsRepair = 0x10, IncompatNrext64 = 0x20;
    public const uint IncompatKnown = 0x3F;
    public const uint Features2Crc = 0x100;

    // Field offsets (for callers that edit the primary superblock, e.g. NEEDSREPAIR and fdblocks).
    public const int OffsetFdblocks = 144, OffsetIncompat = 216;

    byte[] _uuid = new byte[16];
    byte[] _metaUuidField = new byte[16];

    public uint Magic { get; private init; }
    public uint BlockSize { get; private init; }
    public ulong DataBlocks { get; private init; }
    public ulong RtBlocks { get; private init; }
    public ulong RtExtents { get; private init; }
    public ReadOnlySpan<byte> Uuid => _uuid;
    public ulong LogStart { get; private init; }
    public ulong RootIno { get; private init; }
    public ulong RbmIno { get; private init; }
    public ulong RsumIno { get; private init; }
    /// <summary>sb_uquotino: the user quota inode (0 or NULLFSINO when absent).</summary>
    public ulong UserQuotaIno { get; private init; }
    /// <summary>sb_gquotino: the group quota inode (0 or NULLFSINO when absent).</summary>
    public ulong GroupQuotaIno { get; private init; }
    /// <summary>sb_pquotino: the project quota inode (0 or NULLFSINO when absent).</summary>
    public ulong ProjectQuotaIno { get; private init; }
    public uint RtExtSize { get; private init; }
    public uint AgBlocks { get; private init; }
    public uint AgCount { get; private init; }
    public uint RbmBlocks { get; private init; }
    /// <summary>sb_rextslog: log2 of the realtime extent count (0 without a realtime device).</summary>
    public byte RtExtentsLog { get; private init; }
    /// <summary>sb_frextents: free realtime extents (0 without a realtime device).</summary>
    public ulong FreeRtExtents { get; private init; }
    public uint LogBlocks { get; private init; }
    public ushort VersionNum { get; private init; }
    public ushort SectorSize { get; private init; }
    public ushort InodeSize { get; private init; }
    public ushort InodesPerBlock { get; private init; }
    public byte BlockLog { get; private init; }
    public byte SectorLog { get; private init; }
    public byte InodeLog { get; private init; }
    public byte InodesPerBlockLog { get; private init; }
    public byte AgBlockLog { get; private init; }
    public byte InProgress { get; private init; }
    /// <summary>sb_imax_pct: the share of the data blocks inodes may take, in percent (0: no limit).</summary>
    public byte InodeMaxPercent { get; private init; }
    public ulong InodeCount { get; private init; }
    public ulong FreeInodes { get; private init; }
    public ulong FreeDataBlocks { get; private init; }
    public uint InodeAlignment { get; private init; }
    public uint StripeUnit { get; private init; }
    public uint StripeWidth { get; private init; }
    public byte DirBlockLog { get; private init; }
    public uint Features2 { get; private init; }
    public uint BadFeatures2 { get; private init; }
    public uint FeaturesCompat { get; private init; }
    public uint FeaturesRoCompat { get; private init; }
    public uint FeaturesIncompat { get; private init; }
    public uint FeaturesLogIncompat { get; private init; }
    public uint Crc { get; private init; }
    public uint SparseInodeAlignment { get; private init; }
    public ulong Lsn { get; private init; }
    /// <summary>True when the stored CRC matched the sector (set by <see cref="Parse"/>).</summary>
    public bool CrcValid { get; private init; }

    /// <summary>The metadata UUID stamped into every header: sb_meta_uuid with META_UUID, else sb_uuid.</summary>
    public ReadOnlySpan<byte> MetaUuid => (FeaturesIncompat & IncompatMetaUuid) != 0 ? _metaUuidField : _uuid;

    public int Version => VersionNum & 0xF;
    public bool HasFinobt => (FeaturesRoCompat & RoCompatFinobt) != 0;
    public bool HasRmapbt => (FeaturesRoCompat & RoCompatRmapbt) != 0;
    public bool HasReflink => (FeaturesRoCompat & RoCompatReflink) != 0;
    public bool HasInobtCounts => (FeaturesRoCompat & RoCompatInobtCount) != 0;
    public bool HasSparseInodes => (FeaturesIncompat & IncompatSparseInodes) != 0;
    public bool HasNrext64 => (FeaturesIncompat & IncompatNrext64) != 0;
    public bool NeedsRepair => (FeaturesIncompat & IncompatNeedsRepair) != 0;

    /// <summary>
    /// Copies the fields of a superblock sector. <paramref name="sector"/> must hold at least 512 bytes; the CRC is
    /// checked over <see cref="SectorSize"/> bytes when the span is that long (else <see cref="CrcValid"/> is false).
    /// </summary>
    public static Superblock Parse(ReadOnlySpan<byte> sector)
    {
        if (sector.Length < 512) throw new XfsFormatException($"superblock sector too short ({sector.Length} bytes)");
        static uint U32(ReadOnlySpan<byte> s, int o) => BinaryPrimitives.ReadUInt32BigEndian(s[o..]);
        static ulong U64(ReadOnlySpan<byte> s, int o) => BinaryPrimitives.ReadUInt64BigEndian(s[o..]);
        static ushort U16(ReadOnlySpan<byte> s, int o) => BinaryPrimitives.ReadUInt16BigEndian(s[o..]);
        ushort sect = U16(sector, 102);
        bool crcOk = sect >= 512 && sector.Length >= sect && XfsCrc.Verify(sector[..sect], CrcOffset);
        return new Superblock
        {
            Magic = U32(sector, 0),
            BlockSize = U32(sector, 4),
            DataBlocks = U64(sector, 8),
            RtBlocks = U64(sector, 16),
            RtExtents = U64(sector, 24),
            _uuid = sector.Slice(32, 16).ToArray(),
            LogStart = U64(sector, 48),
            RootIno = U64(sector, 56),
            RbmIno = U64(sector, 64),
            RsumIno = U64(sector, 72),
            UserQuotaIno = U64(sector, 160),
            GroupQuotaIno = U64(sector, 168),
            ProjectQuotaIno = U64(sector, 232),
            RtExtSize = U32(sector, 80),
            AgBlocks = U32(sector, 84),
            AgCount = U32(sector, 88),
            RbmBlocks = U32(sector, 92),
            LogBlocks = U32(sector, 96),
            VersionNum = U16(sector, 100),
            SectorSize = sect,
            InodeSize = U16(sector, 104),
            InodesPerBlock = U16(sector, 106),
            BlockLog = sector[120],
            SectorLog = sector[121],
            InodeLog = sector[122],
            InodesPerBlockLog = sector[123],
            AgBlockLog = sector[124],
            RtExtentsLog = sector[125],
            InProgress = sector[126],
            InodeMaxPercent = sector[127],
            InodeCount = U64(sector, 128),
            FreeInodes = U64(sector, 136),
            FreeDataBlocks = U64(sector, 144),
            FreeRtExtents = U64(sector, 152),
            InodeAlignment = U32(sector, 180),
            StripeUnit = U32(sector, 184),
            StripeWidth = U32(sector, 188),
            DirBlockLog = sector[192],
            Features2 = U32(sector, 200),
            BadFeatures2 = U32(sector, 204),
            FeaturesCompat = U32(sector, 208),
            FeaturesRoCompat = U32(sector, 212),
            FeaturesIncompat = U32(sector, 216),
            FeaturesLogIncompat = U32(sector, 220),
            Crc = BinaryPrimitives.ReadUInt32LittleEndian(sector[CrcOffset..]),
            SparseInodeAlignment = U32(sector, 228),
            Lsn = U64(sector, 240),
            _metaUuidField = sector.Slice(248, 16).ToArray(),
            CrcValid = crcOk,
        };
    }

    static bool IsPow2(ulong v) => v != 0 && (v & (v - 1)) == 0;

    /// <summary>
    /// Throws <see cref="XfsUnsupportedException"/> for a filesystem this tool does not read at all: not v5, an unknown incompat or ro_compat feature, a realtime device in use. Call after <see cref="Validate"/>'s magic
    /// check (it is called by <see cref="Validate"/> itself before the geometry checks).
    /// </summary>
    public void RequireSupported()
    {
        if (Version < 5) throw new XfsUnsupportedException($"XFS v{Version} filesystem: only v5 (CRC-enabled) filesystems are supported");
        if (Version != 5) throw new XfsUnsupportedException($"unknown XFS superblock version {Version}");
        if ((Features2 & Features2Crc) == 0) throw new XfsUnsupportedException("v5 superblock without the CRC feature bit");
        if ((FeaturesIncompat & ~IncompatKnown) != 0)
            throw new XfsUnsupportedException($"unsupported incompatible feature bits 0x{FeaturesIncompat & ~IncompatKnown:x} (known: 0x{IncompatKnown:x})");
        if ((FeaturesRoCompat & ~RoCompatKnown) != 0)
            throw new XfsUnsupportedException($"unsupported read-only-compatible feature bits 0x{FeaturesRoCompat & ~RoCompatKnown:x}");
        if (RtBlocks != 0 || RtExtents != 0) throw new XfsUnsupportedException($"a realtime device is in use ({RtBlocks} rt blocks): not supported");
    }

    /// <summary>The refusal of the rmap commands (<c>xfbtree rmap check/repair/dump</c>) on a filesystem without the
    /// reverse-mapping btree (mkfs.xfs 6.x makes one only with <c>-m rmapbt=1</c>): they have nothing to read. Every
    /// other command works on such a filesystem (the write engine keeps no rmap there, as the kernel does).</summary>
    public const string NoRmapbtRefusal = "the filesystem has no reverse-mapping btree (made without mkfs.xfs -m rmapbt=1): there is no rmapbt to check or repair; `xfbtree scrub` checks (and with --repair repairs) everything else";

    /// <summary>
    /// Throws <see cref="XfsUnsupportedException"/> when the filesystem has no reverse-mapping btree: what reads or
    /// rebuilds the on-disk rmapbt (the rmap commands) needs one. The write engine and the offline scrub open such a
    /// filesystem with <see cref="XfsImageOptions"/>' opt-out (the scrub's source of truth is the rmap set its scan
    /// computes, not the on-disk tree).
    /// </summary>
    public void RequireRmapbt()
    {
        if (!HasRmapbt) throw new XfsUnsupportedException(NoRmapbtRefusal);
    }

    /// <summary>
    /// Verifies the magic, version/features (<see cref="RequireSupported"/>), the CRC and every geometry field that
    /// address arithmetic uses (xfs_validate_sb_common's rules, reduced to what this tool relies on).
    /// Throws <see cref="XfsFormatException"/> naming the first bad field.
    /// </summary>
    public void Validate()
    {
        if (Magic != MagicValue) throw new XfsFormatException($"not an XFS filesystem (superblock magic 0x{Magic:x8}, expected 0x{MagicValue:x8} \"XFSB\")");
        RequireSupported();
        if (SectorSize < 512 || SectorSize > 32768 || !IsPow2(SectorSize) || (1u << SectorLog) != SectorSize)
            throw Bad($"sector size {SectorSize} (log {SectorLog})");
        if (!CrcValid) throw new XfsFormatException("superblock CRC mismatch: the primary superblock is corrupt");
        if (BlockSize < 512 || BlockSize > 65536 || !IsPow2(BlockSize) || (1u << BlockLog) != BlockSize || BlockSize < SectorSize)
            throw Bad($"block size {BlockSize} (log {BlockLog})");
        if (InodeSize < 512 || InodeSize > 2048 || !IsPow2(InodeSize) || (1u << InodeLog) != InodeSize || InodeSize > BlockSize)
            throw Bad($"inode size {InodeSize} (log {InodeLog})");
        if (InodesPerBlock != BlockSize / InodeSize || (1u << InodesPerBlockLog) != InodesPerBlock)
            throw Bad($"inodes per block {InodesPerBlock} (log {InodesPerBlockLog})");
        if (AgBlocks < 64 || AgBlocks > int.MaxValue) throw Bad($"agblocks {AgBlocks}: an AG holds 64 (XFS_MIN_AG_BLOCKS) to 2^31 - 1 blocks");
        int log = BitOperations.Log2(AgBlocks) + (IsPow2(AgBlocks) ? 0 : 1);
        if (AgBlockLog != log) throw Bad($"agblklog {AgBlockLog} for agblocks {AgBlocks}: it must be log2 of agblocks rounded up ({log})");
        if (AgBlockLog + InodesPerBlockLog > 32) throw Bad($"agblklog {AgBlockLog} + inopblog {InodesPerBlockLog} exceeds 32 bits of agino");
        if (AgCount == 0 || AgCount > (1u << 24)) throw Bad($"agcount {AgCount}: a filesystem has 1 to 2^24 AGs");
        ulong maxBlocks = (ulong)AgCount * AgBlocks;
        ulong minBlocks = (ulong)(AgCount - 1) * AgBlocks + 1;
        if (DataBlocks > maxBlocks || DataBlocks < minBlocks) throw Bad($"dblocks {DataBlocks} for {AgCount} AGs of {AgBlocks} blocks: every AG but the last is full and the last holds 1 to agblocks blocks");
        if (DataBlocks - (ulong)(AgCount - 1) * AgBlocks < 16) throw Bad($"last AG of {DataBlocks - (ulong)(AgCount - 1) * AgBlocks} blocks: it needs at least 16 (room for its headers and btree roots)");
        if (BlockSize / 512 * (ulong)DataBlocks > long.MaxValue / 512) throw Bad($"dblocks {DataBlocks}");
        if (LogStart != 0)
        {
            ulong agno = LogStart >> AgBlockLog, agbno = LogStart & ((1UL << AgBlockLog) - 1);
            if (agno >= AgCount || LogBlocks == 0 || agbno + LogBlocks > AgLengthOf((uint)agno))
                throw Bad($"internal log at fsbno {LogStart} length {LogBlocks}: an internal log lies wholly inside one AG");
        }
        if (BlockLog + DirBlockLog > 16) throw Bad($"dirblklog {DirBlockLog}");
        // The kernel's rules for the realtime fields (xfs_validate_sb_common, xfs_validate_sb_rtdev): a realtime extent
        // is 4 KiB to 1 GiB, and without a realtime device (RequireSupported refuses one) every realtime size is zero.
        // A primary breaking them is damaged (the kernel refuses to mount it; xfs_repair restores it from a secondary),
        // not a geometry the secondaries should be made to copy.
        ulong rtExtentBytes = (ulong)RtExtSize * BlockSize;
        if (rtExtentBytes < 4096 || rtExtentBytes > 1UL << 30) throw Bad($"rextsize {RtExtSize}: a realtime extent is 4 KiB to 1 GiB");
        if (RbmBlocks != 0 || RtExtentsLog != 0 || FreeRtExtents != 0)
            throw Bad($"realtime geometry without a realtime device (rbmblocks {RbmBlocks}, rextslog {RtExtentsLog}, frextents {FreeRtExtents}): each must be 0");
        // spino_align is 0 when a chunk is smaller than a block (64 KiB blocks); otherwise it divides inoalignmt.
        if (HasSparseInodes && SparseInodeAlignment != 0 && (SparseInodeAlignment > InodeAlignment || InodeAlignment % SparseInodeAlignment != 0))
            throw Bad($"sparse inode alignment {SparseInodeAlignment} for inode alignment {InodeAlignment}");
        if (InodeAlignment > InodeAlignmentMax) throw Bad($"inode alignment {InodeAlignment}");
    }

    const uint InodeAlignmentMax = 1u << 20;

    uint AgLengthOf(uint agno) => agno == AgCount - 1 ? (uint)(DataBlocks - (ulong)agno * AgBlocks) : AgBlocks;

    static XfsFormatException Bad(string what) => new($"corrupt superblock: bad {what}");
}
