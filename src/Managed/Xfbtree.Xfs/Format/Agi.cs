using System.Buffers.Binary;

namespace Xfbtree.Xfs.Format;

/// <summary>The AGI (docs/xfs-format.md §3.2), parsed from a sector that passed <see cref="AgHeaderVerifier"/>.</summary>
internal sealed class Agi
{
    public const uint MagicValue = 0x58414749; // "XAGI"
    public const int CrcOffset = 312;
    public const uint NullAgino = 0xFFFFFFFF;

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
            Length = U(s, 12),
            Count = U(s, 16),
            Root = U(s, 20),
            Level = U(s, 24),
            FreeCount = U(s, 28),
            NewIno = U(s, 32),
            FreeRoot = U(s, 328),
            FreeLevel = U(s, 332),
            InobtBlocks = U(s, 336),
            FinobtBlocks = U(s, 340),
        };
        var p = new List<string>();
        uint len = geo.AgLength(agno);
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
