using System.Buffers.Binary;
using Xfbtree.Buffers;

namespace Xfbtree.Xfs.Format;

/// <summary>Which AG header sector.</summary>
internal enum AgHeaderKind
{
    /// <summary>Free-space header, sector 1.</summary>
    Agf = 1,
    /// <summary>Inode header, sector 2.</summary>
    Agi = 2,
    /// <summary>Free list, sector 3.</summary>
    Agfl = 3,
}

/// <summary>
/// Buffer verifier of an AG header sector (AGF, AGI, AGFL): on read, magic, CRC over the whole sector, AG number
/// (seqno) and metadata UUID; these say "this sector is the header it claims to be". Field sanity is reported
/// separately by the parsed header's <c>Problems</c>, so one bad field does not hide the rest. On write the CRC
/// is recomputed.
/// </summary>
internal sealed class AgHeaderVerifier : IBufferVerifier
{
    readonly byte[] _uuid;

    public AgHeaderVerifier(AgHeaderKind kind, XfsGeometry geometry, uint agno)
    {
        ArgumentNullException.ThrowIfNull(geometry);
        Kind = kind;
        AgNumber = agno;
        SectorSize = geometry.SectorSize;
        _uuid = geometry.MetaUuid.ToArray();
    }

    public AgHeaderKind Kind { get; }
    public uint AgNumber { get; }
    public int SectorSize { get; }
    public string Name => Kind switch { AgHeaderKind.Agf => "AGF", AgHeaderKind.Agi => "AGI", _ => "AGFL" };

    uint Magic => Kind switch { AgHeaderKind.Agf => Agf.MagicValue, AgHeaderKind.Agi => Agi.MagicValue, _ => Agfl.MagicValue };
    int CrcOffset => Kind switch { AgHeaderKind.Agf => Agf.CrcOffset, AgHeaderKind.Agi => Agi.CrcOffset, _ => Agfl.CrcOffset };
    int SeqnoOffset => Kind == AgHeaderKind.Agfl ? 4 : 8;
    int UuidOffset => Kind switch { AgHeaderKind.Agf => 64, AgHeaderKind.Agi => 296, _ => 8 };

    /// <summary>Throws <see cref="CorruptionException"/> when the sector is not this AG's header.</summary>
    public void Verify(ReadOnlySpan<byte> sector, long daddr)
    {
        if (sector.Length < SectorSize) throw new CorruptionException(Name, daddr, "short sector");
        sector = sector[..SectorSize];
        uint magic = BinaryPrimitives.ReadUInt32BigEndian(sector);
        if (magic != Magic) throw new CorruptionException(Name, daddr, $"bad magic 0x{magic:x8}");
        if (!XfsCrc.Verify(sector, CrcOffset)) throw new CorruptionException(Name, daddr, "bad CRC");
        uint seq = BinaryPrimitives.ReadUInt32BigEndian(sector[SeqnoOffset..]);
        if (seq != AgNumber) throw new CorruptionException(Name, daddr, $"seqno {seq}, expected AG {AgNumber}");
        if (!sector.Slice(UuidOffset, 16).SequenceEqual(_uuid)) throw new CorruptionException(Name, daddr, "metadata UUID mismatch");
    }

    void IBufferVerifier.VerifyRead(BlockBuffer buffer) => Verify(buffer.Span, buffer.Daddr);

    void IBufferVerifier.PrepareWrite(BlockBuffer buffer)
    {
        var s = buffer.Span[..SectorSize];
        XfsCrc.Update(s, CrcOffset);
        Verify(s, buffer.Daddr);
    }
}

/// <summary>
/// The AGF (docs/xfs-format.md §3.1), parsed from a sector that passed <see cref="AgHeaderVerifier"/>. Field sanity
/// (the kernel verifier's rules) is listed in <see cref="Problems"/>; <see cref="TreeRootUsable"/> says whether a
/// tree's root/level may be followed.
/// </summary>
internal sealed class Agf
{
    public const uint MagicValue = 0x58414746; // "XAGF"
    public const int CrcOffset = 216;
    // Field offsets, for callers that rewrite the AGF (then recompute the CRC: the verifier's PrepareWrite does).
    public const int OffsetRoots = 16, OffsetLevels = 28, OffsetFlFirst = 40, OffsetFlLast = 44, OffsetFlCount = 48,
                     OffsetFreeBlocks = 52, OffsetLongest = 56, OffsetBtreeBlocks = 60, OffsetRmapBlocks = 80,
                     OffsetRefcountBlocks = 84, OffsetRefcountRoot = 88, OffsetRefcountLevel = 92;
    public const int OffsetRmapRoot = OffsetRoots + 8, OffsetRmapLevel = OffsetLevels + 8;

    public uint AgNumber { get; private init; }
    public uint Length { get; private init; }
    public uint BnoRoot { get; private init; }
    public uint CntRoot { get; private init; }
    public uint RmapRoot { get; private init; }
    public uint BnoLevel { get; private init; }
    public uint CntLevel { get; private init; }
    public uint RmapLevel { get; private init; }
    public uint FlFirst { get; private init; }
    public uint FlLast { get; private init; }
    public uint FlCount { get; private init; }
    public uint FreeBlocks { get; private init; }
    public uint Longest { get; private init; }
    public uint BtreeBlocks { get; private init; }
    public uint RmapBlocks { get; private init; }
    public uint RefcountBlocks { get; private init; }
    public uint RefcountRoot { get; private init; }
    public uint RefcountLevel { get; private init; }
    public ulong Lsn { get; private init; }
    /// <summary>agf_versionnum: XFS_AGF_VERSION, 1.</summary>
    public uint VersionNum { get; private init; }
    /// <summary>Field sanity violations (empty when every field is plausible).</summary>
    public IReadOnlyList<string> Problems { get; private set; } = [];

    /// <summary>Parses a verified AGF sector of AG <paramref name="agno"/>.</summary>
    public static Agf Parse(ReadOnlySpan<byte> s, XfsGeometry geo, uint agno)
    {
        ArgumentNullException.ThrowIfNull(geo);
        if (s.Length < 224) throw new ArgumentException("AGF sector too short", nameof(s));
        static uint U(ReadOnlySpan<byte> b, int o) => BinaryPrimitives.ReadUInt32BigEndian(b[o..]);
        var agf = new Agf
        {
            AgNumber = agno,
            VersionNum = U(s, 4),
            Length = U(s, 12),
            BnoRoot = U(s, 16), CntRoot = U(s, 20), RmapRoot = U(s, 24),
            BnoLevel = U(s, 28), CntLevel = U(s, 32), RmapLevel = U(s, 36),
            FlFirst = U(s, 40), FlLast = U(s, 44), FlCount = U(s, 48),
            FreeBlocks = U(s, 52), Longest = U(s, 56), BtreeBlocks = U(s, 60),
            RmapBlocks = U(s, 80), RefcountBlocks = U(s, 84), RefcountRoot = U(s, 88), RefcountLevel = U(s, 92),
            Lsn = BinaryPrimitives.ReadUInt64BigEndian(s[208..]),
        };
        agf.Problems = agf.Check(geo);
        return agf;
    }

    List<string> Check(XfsGeometry geo)
    {
        var p = new List<string>();
        uint expected = geo.AgLength(AgNumber);
        if (VersionNum != 1) p.Add($"agf_versionnum {VersionNum}, expected 1");
        if (Length != expected) p.Add($"agf_length {Length}, expected {expected}");
        uint slots = (uint)geo.AgflSlots;
        if (FlFirst >= slots) p.Add($"agf_flfirst {FlFirst} >= AGFL size {slots}");
        if (FlLast >= slots) p.Add($"agf_fllast {FlLast} >= AGFL size {slots}");
        if (FlCount > slots) p.Add($"agf_flcount {FlCount} > AGFL size {slots}");
        if (FreeBlocks > expected) p.Add($"agf_freeblks {FreeBlocks} > AG length {expected}");
        if (Longest > FreeBlocks) p.Add($"agf_longest {Longest} > agf_freeblks {FreeBlocks}");
        if (BtreeBlocks > expected) p.Add($"agf_btreeblks {BtreeBlocks} > AG length");
        if (RmapBlocks > expected) p.Add($"agf_rmap_blocks {RmapBlocks} > AG length");
        if (RefcountBlocks > expected) p.Add($"agf_refcount_blocks {RefcountBlocks} > AG length");
        foreach (var tree in new[] { AgfTree.Bnobt, AgfTree.Cntbt, AgfTree.Rmapbt, AgfTree.Refcountbt })
        {
            if (tree == AgfTree.Refcountbt && !geo.Superblock.HasReflink) continue;
            var (root, level) = RootOf(tree);
            int max = XfsTreeLimits.MaxLevels(geo, tree);
            if (level < 1 || level > max) p.Add($"{tree.ToString().ToLowerInvariant()} level {level} outside 1..{max}");
            if (root < geo.FirstFreeBlock || root >= expected) p.Add($"{tree.ToString().ToLowerInvariant()} root {root} outside the AG");
        }
        return p;
    }

    /// <summary>Root agbno and height of a tree rooted in the AGF.</summary>
    public (uint Root, uint Level) RootOf(AgfTree tree) => tree switch
    {
        AgfTree.Bnobt => (BnoRoot, BnoLevel),
        AgfTree.Cntbt => (CntRoot, CntLevel),
        AgfTree.Rmapbt => (RmapRoot, RmapLevel),
        _ => (RefcountRoot, RefcountLevel),
    };

    /// <summary>True when the tree's root lies inside the AG and its level is within 1..maxlevels.</summary>
    public bool TreeRootUsable(AgfTree tree, XfsGeometry geo)
    {
        ArgumentNullException.ThrowIfNull(geo);
        var (root, level) = RootOf(tree);
        return level >= 1 && level <= XfsTreeLimits.MaxLevels(geo, tree) && root >= geo.FirstFreeBlock && root < geo.AgLength(AgNumber);
    }

    /// <summary>
    /// True when flfirst/fllast/flcount describe the circular list consistently (the kernel's check): flcount ==
    /// fllast-flfirst+1 (or wrapped), and 0 slots when flcount is 0.
    /// </summary>
    public bool FreeListConsistent(int slots)
    {
        if (FlFirst >= slots || FlLast >= slots || FlCount > slots) return false;
        if (FlCount == 0) return true;
        long active = FlLast >= FlFirst ? FlLast - FlFirst + 1 : slots - FlFirst + FlLast + 1;
        return active == FlCount;
    }
}

/// <summary>Trees whose roots live in the AGF.</summary>
internal enum AgfTree
{
    Bnobt,
    Cntbt,
    Rmapbt,
    Refcountbt,
}

/// <summary>Trees whose roots live in the AGI.</summary>
internal enum AgiTree
{
    Inobt,
    Finobt,
}
