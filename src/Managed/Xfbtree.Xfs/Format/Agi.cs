using System.Buffers.Binary;

namespace Xfbtree.Xfs.Format;

/// <summary>The AGI (docs/xfs-format.md §3.2), parsed from a sector that passed <see cref="AgHeaderVerifier"/>.</summary>
internal sealed class Agi
{
    public const uint MagicValue = 0x58414749; // "XAGI"
    public const int CrcOffset = 312;
    public const uint NullAgino = 0xFFFFFFFF;

    // Field offsets (big-endian u32 each), for the readers here and the write engine's in-place edits.
    internal const int LengthOffset = 12, CountOffset = 16, RootOffset = 20, LevelOffset = 24, FreeCountOffset = 28,
        NewInoOffset = 32, UnlinkedOffset = 40, FreeRootOffset = 328, FreeLevelOffset = 332, InobtBlocksOffset = 336,
        FinobtBlocksOffset = 340;

    /// <summary>Buckets of the unlinked-inode hash (agi_unlinked[64], an inode in bucket agino % 64).</summary>
    internal const int UnlinkedBuckets = 64;

    public uint AgNumber { get; private init; }
    public uint Length { get; private init; }
    public uint Count { get; private init; }
    public uint Root { get; private init; }
    public uint Level { get; private init; }
    public uint FreeCount { get; private init; }
    public uint NewIno { get; private init; }
    public uint FreeRoot { get; private init; }
    public uint FreeLevel { get; private init; }
    public uint InobtBlocks { get; private init; }
    public uint FinobtBlocks { get; private init; }
    /// <summary>agi_versionnum: XFS_AGI_VERSION, 1.</summary>
    public uint VersionNum { get; private init; }
    /// <summary>Field sanity violations.</summary>
    public IReadOnlyList<string> Problems { get; private set; } = [];

    /// <summary>Parses a verified AGI sector of AG <paramref name="agno"/>.</summary>
    public static Agi Parse(ReadOnlySpan<byte> s, XfsGeometry geo, uint agno)
    {
        ArgumentNullException.ThrowIfNull(geo);
        if (s.Length < 344) throw new ArgumentException("AGI sector too short", nameof(s));
        static uint U(ReadOnlySpan<byte> b, int o) => BinaryPrimitives.ReadUInt32BigEndian(b[o..]);
        var agi = new Agi
        {
            AgNumber = agno,
            VersionNum = U(s, 4),
            Length = U(s, LengthOffset),
            Count = U(s, CountOffset),
            Root = U(s, RootOffset),
            Level = U(s, LevelOffset),
            FreeCount = U(s, FreeCountOffset),
            NewIno = U(s, NewInoOffset),
            FreeRoot = U(s, FreeRootOffset),
            FreeLevel = U(s, FreeLevelOffset),
            InobtBlocks = U(s, InobtBlocksOffset),
            FinobtBlocks = U(s, FinobtBlocksOffset),
        };
        var p = new List<string>();
        uint len = geo.AgLength(agno);
        if (agi.VersionNum != 1) p.Add($"agi_versionnum {agi.VersionNum}, expected 1");
        if (agi.Length != len) p.Add($"agi_length {agi.Length}, expected {len}");
        if (agi.FreeCount > agi.Count) p.Add($"agi_freecount {agi.FreeCount} > agi_count {agi.Count}");
        if (!agi.TreeRootUsable(AgiTree.Inobt, geo)) p.Add($"inobt root {agi.Root} level {agi.Level} unusable");
        if (geo.Superblock.HasFinobt && !agi.TreeRootUsable(AgiTree.Finobt, geo)) p.Add($"finobt root {agi.FreeRoot} level {agi.FreeLevel} unusable");
        agi.Problems = p;
        return agi;
    }

    /// <summary>Root agbno and height of an inode btree.</summary>
    public (uint Root, uint Level) RootOf(AgiTree tree) => tree == AgiTree.Inobt ? (Root, Level) : (FreeRoot, FreeLevel);

    /// <summary>True when the tree's root lies inside the AG and its level is within 1..maxlevels.</summary>
    public bool TreeRootUsable(AgiTree tree, XfsGeometry geo)
    {
        ArgumentNullException.ThrowIfNull(geo);
        var (root, level) = RootOf(tree);
        return level >= 1 && level <= XfsTreeLimits.MaxInobtLevels(geo) && root >= geo.FirstFreeBlock && root < geo.AgLength(AgNumber);
    }
}
