using System.Buffers.Binary;
using Xfbtree.Buffers;

namespace Xfbtree.Xfs.Format;

/// <summary>Inode fork formats (di_format / di_aformat).</summary>
internal enum ForkFormat : byte
{
    Dev = 0,
    Local = 1,
    Extents = 2,
    Btree = 3,
    Uuid = 4,
}

/// <summary>
/// A zero-copy view of a v3 on-disk inode (docs/xfs-format.md §6): core fields, fork areas and extent counts.
/// Call <see cref="Verify"/> first: until it returns null no field may be trusted; afterwards the fork spans lie
/// inside the inode, extent lists fit their fork and a btree root's numrecs fits its fork.
/// </summary>
internal readonly ref struct Dinode
{
    public const ushort MagicValue = 0x494E; // "IN"
    public const int CoreSize = 176;
    public const int CrcOffset = 100;
    public const ushort FlagRealtime = 0x1;
    public const ulong Flag2Reflink = 0x2, Flag2Nrext64 = 0x10;
    /// <summary>Bytes of an extent record.</summary>
    public const int ExtentSize = 16;
    /// <summary>Largest bmbt height XFS allows in a fork (generous).</summary>
    public const int MaxBmbtLevels = 9;

    readonly ReadOnlySpan<byte> _b;

    /// <summary>
    /// Writes an unallocated inode as a new chunk holds it (xfs_ialloc_inode_init): magic, version 3,
    /// <paramref name="generation"/>, next_unlinked NULLAGINO, the number, the metadata UUID, the CRC; the rest zero.
    /// </summary>
    public static void FormatUnallocated(Span<byte> inode, ulong ino, uint generation, ReadOnlySpan<byte> uuid)
    {
        inode.Clear();
        BinaryPrimitives.WriteUInt16BigEndian(inode, MagicValue);
        inode[4] = 3;
        BinaryPrimitives.WriteUInt32BigEndian(inode[92..], generation);
        BinaryPrimitives.WriteUInt32BigEndian(inode[96..], uint.MaxValue);
        BinaryPrimitives.WriteUInt64BigEndian(inode[152..], ino);
        uuid.CopyTo(inode[160..]);
        XfsCrc.Update(inode, CrcOffset);
    }

    /// <summary>A view over exactly one inode (sb_inodesize bytes).</summary>
    public Dinode(ReadOnlySpan<byte> inode) => _b = inode;

    public ReadOnlySpan<byte> Bytes => _b;
    public ushort Magic => BinaryPrimitives.ReadUInt16BigEndian(_b);
    public ushort Mode => BinaryPrimitives.ReadUInt16BigEndian(_b[2..]);
    public byte Version => _b[4];
    public ForkFormat Format => (ForkFormat)_b[5];
    /// <summary>di_nlink (v2/v3 inodes): the number of directory entries naming the inode.</summary>
    public uint NLink => BinaryPrimitives.ReadUInt32BigEndian(_b[16..]);
    /// <summary>di_next_unlinked: the next inode (agino) on this inode's AGI unlinked list, or NULLAGINO.</summary>
    public uint NextUnlinked => BinaryPrimitives.ReadUInt32BigEndian(_b[96..]);
    public ulong Size => BinaryPrimitives.ReadUInt64BigEndian(_b[56..]);
    public ulong NBlocks => BinaryPrimitives.ReadUInt64BigEndian(_b[64..]);
    public byte ForkOffset => _b[82];
    public ForkFormat AttrFormat => (ForkFormat)_b[83];
    public ushort Flags => BinaryPrimitives.ReadUInt16BigEndian(_b[90..]);
    public ulong Flags2 => BinaryPrimitives.ReadUInt64BigEndian(_b[120..]);
    public ulong Ino => BinaryPrimitives.ReadUInt64BigEndian(_b[152..]);
    /// <summary>di_gen: the incarnation of the inode number (grows at every free).</summary>
    public uint Generation => BinaryPrimitives.ReadUInt32BigEndian(_b[92..]);
    public ReadOnlySpan<byte> Uuid => _b.Slice(160, 16);
    public bool IsFree => Mode == 0;
    public bool IsRealtime => (Flags & FlagRealtime) != 0;
    public bool HasNrext64 => (Flags2 & Flag2Nrext64) != 0;
    public bool HasAttrFork => ForkOffset != 0;
    /// <summary>S_IFMT bits of the mode.</summary>
    public int FileType => Mode & 0xF000;

    /// <summary>Data-fork extent count (64-bit big_nextents with NREXT64, else the 32-bit nextents).</summary>
    public ulong DataExtents => HasNrext64 ? BinaryPrimitives.ReadUInt64BigEndian(_b[24..]) : BinaryPrimitives.ReadUInt32BigEndian(_b[76..]);
    /// <summary>Attr-fork extent count (32-bit with NREXT64, else 16-bit).</summary>
    public ulong AttrExtents => HasNrext64 ? BinaryPrimitives.ReadUInt32BigEndian(_b[76..]) : BinaryPrimitives.ReadUInt16BigEndian(_b[80..]);

    int Literal => _b.Length - CoreSize;
    /// <summary>The data fork area.</summary>
    public ReadOnlySpan<byte> DataFork => _b.Slice(CoreSize, ForkOffset != 0 ? ForkOffset * 8 : Literal);
    /// <summary>The attr fork area (empty without an attr fork).</summary>
    public ReadOnlySpan<byte> AttrFork => ForkOffset != 0 ? _b[(CoreSize + ForkOffset * 8)..] : default;

    /// <summary>Fork area, format and extent count of one fork.</summary>
    public ReadOnlySpan<byte> Fork(bool attr) => attr ? AttrFork : DataFork;
    public ForkFormat FormatOf(bool attr) => attr ? AttrFormat : Format;
    public ulong ExtentsOf(bool attr) => attr ? AttrExtents : DataExtents;

    /// <summary>
    /// Null when the inode is a valid in-use v3 inode numbered <paramref name="ino"/>, else the reason. Checks magic,
    /// version, CRC, inode number, UUID, mode, fork offset and formats, NREXT64 use, extent counts against fork
    /// sizes and btree roots (level and numrecs).
    /// </summary>
    public string? Verify(XfsGeometry geo, ulong ino) => Check(geo, ino, strict: true);

    /// <summary>
    /// As <see cref="Verify"/> but for the CRC and a realtime flag without a realtime device: null when the inode's
    /// forks can be read as its core describes them. The scrub reads such an inode's forks and reports those two with
    /// the other core fields it judges (<see cref="InodeCoreRules"/>), whose right values are certain.
    /// </summary>
    public string? VerifyStructure(XfsGeometry geo, ulong ino) => Check(geo, ino, strict: false);

    string? Check(XfsGeometry geo, ulong ino, bool strict)
    {
        ArgumentNullException.ThrowIfNull(geo);
        if (_b.Length != geo.InodeSize) return "inode buffer has the wrong size";
        if (Magic != MagicValue) return $"bad magic 0x{Magic:x4}";
        if (Version != 3) return $"version {Version}, expected 3";
        if (strict && !XfsCrc.Verify(_b, CrcOffset)) return "bad CRC";
        if (Ino != ino) return $"di_ino {Ino} is not the inode's number";
        if (!Uuid.SequenceEqual(geo.MetaUuid)) return "metadata UUID mismatch";
        if (Mode == 0) return "free (mode 0) but the inode btree says it is in use";
        if (HasNrext64 && !geo.Superblock.HasNrext64) return "NREXT64 inode on a filesystem without NREXT64";
        if (ForkOffset * 8 >= Literal) return $"forkoff {ForkOffset} beyond the literal area";
        if (strict && IsRealtime && geo.Superblock.RtBlocks == 0) return "realtime inode on a filesystem without a realtime device";
        int type = FileType;
        var fmt = Format;
        bool ok = type switch
        {
            0x8000 => fmt is ForkFormat.Extents or ForkFormat.Btree,
            0x4000 or 0xA000 => fmt is ForkFormat.Local or ForkFormat.Extents or ForkFormat.Btree,
            0x2000 or 0x6000 or 0x1000 or 0xC000 => fmt == ForkFormat.Dev,
            _ => false,
        };
        if (!ok) return $"mode 0{Convert.ToString(Mode, 8)} with data fork format {(int)fmt}"; // .NET has no octal format specifier
        if (VerifyFork(attr: false) is { } d) return "data fork: " + d;
        if (ForkOffset != 0)
        {
            if (AttrFormat is not (ForkFormat.Local or ForkFormat.Extents or ForkFormat.Btree)) return $"attr fork format {(int)AttrFormat}";
            if (VerifyFork(attr: true) is { } a) return "attr fork: " + a;
        }
        return null;
    }

    string? VerifyFork(bool attr)
    {
        var fork = Fork(attr);
        ulong n = ExtentsOf(attr);
        switch (FormatOf(attr))
        {
            case ForkFormat.Extents:
                if (n > (ulong)(fork.Length / ExtentSize)) return $"{n} extents do not fit a fork of {fork.Length} bytes";
                return null;
            case ForkFormat.Btree:
                if (fork.Length < 4 + 16) return "btree root in a fork too small";
                int level = BinaryPrimitives.ReadUInt16BigEndian(fork);
                int recs = BinaryPrimitives.ReadUInt16BigEndian(fork[2..]);
                int max = BmbtRootMaxRecords(fork.Length);
                if (level < 1 || level >= MaxBmbtLevels) return $"bmbt root level {level}";
                if (recs < 1 || recs > max) return $"bmbt root numrecs {recs} outside 1..{max}";
                return null;
            case ForkFormat.Local:
            case ForkFormat.Dev:
                return null;
            default:
                return $"format {(int)FormatOf(attr)}";
        }
    }

    /// <summary>Key/pointer slots of a bmbt root in a fork of <paramref name="forkSize"/> bytes: (size - 4) / 16.</summary>
    public static int BmbtRootMaxRecords(int forkSize) => (forkSize - 4) / 16;
}

/// <summary>
/// A decoded bmbt extent record (docs/xfs-format.md §5.5): l0 bit 63 unwritten, startoff l0:62..9, startblock (fsbno)
/// l0:8..0 + l1:63..21, blockcount l1:20..0.
/// </summary>
internal readonly record struct BmbtExtent(ulong StartOffset, ulong StartBlock, uint BlockCount, bool Unwritten)
{
    /// <summary>Largest file offset + 1 (2^54).</summary>
    public const ulong MaxFileOffset = 1UL << 54;

    /// <summary>Decodes the 16-byte record at the start of <paramref name="r"/>.</summary>
    public static BmbtExtent Read(ReadOnlySpan<byte> r)
    {
        ulong l0 = BinaryPrimitives.ReadUInt64BigEndian(r);
        ulong l1 = BinaryPrimitives.ReadUInt64BigEndian(r[8..]);
        return new BmbtExtent((l0 >> 9) & (MaxFileOffset - 1), ((l0 & 0x1FF) << 43) | (l1 >> 21), (uint)(l1 & 0x1FFFFF), (l0 >> 63) != 0);
    }

    /// <summary>Null when the extent is non-empty, inside one AG and below the largest file offset; else the reason.</summary>
    public string? Validate(XfsGeometry geo)
    {
        ArgumentNullException.ThrowIfNull(geo);
        if (BlockCount == 0) return "zero-length extent";
        if (StartOffset + BlockCount > MaxFileOffset) return $"extent at file offset {StartOffset} beyond the largest offset";
        if (!geo.IsValidExtent(StartBlock, BlockCount)) return $"extent fsbno {StartBlock} length {BlockCount} outside the filesystem or crossing an AG";
        return null;
    }
}
