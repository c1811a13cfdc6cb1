using System.Buffers.Binary;
using Xfbtree.Buffers;

namespace Xfbtree.Xfs.Format;

/// <summary>What the forks of an inode map, counted by a walk of them: the value di_nblocks and the extent counts
/// must have.</summary>
/// <param name="Blocks">Blocks both forks map plus their bmbt blocks (the root, in the inode, not counted).</param>
/// <param name="DataExtents">Extent records of the data fork.</param>
/// <param name="AttrExtents">Extent records of the attr fork.</param>
internal readonly record struct InodeForkCounts(ulong Blocks, ulong DataExtents, ulong AttrExtents);

/// <summary>One problem of an inode core: what is wrong, and whether its right value is certain (then
/// <see cref="InodeCoreRules.Examine"/> has set it in the bytes it was given).</summary>
internal readonly record struct InodeCoreProblem(string What, bool Certain);

/// <summary>
/// The rules an in-use v3 inode core must meet beyond the structure <see cref="Dinode.VerifyStructure"/> checks (the
/// kernel's inode verifier, xfs_dinode_verify, the kernel scrubber's inode checks and xfs_repair's phases 3 and 4;
/// docs/scrub.md "Inode cores"): the CRC, di_onlink (di_metatype on newer kernels: 0 on a v3 inode outside the
/// metadata directory tree, which this project does not support), the padding, the flags and flags2 bits and how
/// they go with the file type and the filesystem's features, the extent size hints, the timestamps' nanoseconds, the
/// attr fork format without an attr fork, the size of devices, directories and symlinks, and di_nblocks and the
/// extent counts against what the forks map. One function both judges and mends, so that the check and the repair
/// cannot disagree: each rule whose right value is certain (the kernel's xrep_inode and xfs_repair set the same) is
/// applied to the bytes given; the others (an inode xfs_repair clears) are reported as not certain and left as they
/// are. Check with a copy of the core; repair with the core itself, then recompute the CRC.
/// </summary>
internal static class InodeCoreRules
{
    // di_flags bits (xfs_format.h).
    internal const ushort FlagRealtime = 0x1, FlagPrealloc = 0x2, FlagNewRtBitmap = 0x4, FlagRtInherit = 0x100, FlagProjInherit = 0x200,
                          FlagNoSymlinks = 0x400, FlagExtSize = 0x800, FlagExtSzInherit = 0x1000, FlagFilestream = 0x4000;
    /// <summary>Every di_flags bit XFS defines (XFS_DIFLAG_ANY): bit 15 is unused.</summary>
    internal const ushort FlagsKnown = 0x7FFF;
    // di_flags2 bits.
    internal const ulong Flag2Dax = 0x1, Flag2Reflink = 0x2, Flag2CowExtSize = 0x4, Flag2Bigtime = 0x8, Flag2Nrext64 = 0x10;
    /// <summary>Every di_flags2 bit of a filesystem without the metadata directory tree (XFS_DIFLAG2_ANY).</summary>
    internal const ulong Flags2Known = 0x1F;
    /// <summary>Largest extent length and extent size hint (XFS_MAX_BMBT_EXTLEN).</summary>
    internal const uint MaxExtentLength = (1u << 21) - 1;
    /// <summary>Largest directory size: the data space ends where the leaf space starts (XFS_DIR2_LEAF_OFFSET, 32 GiB).</summary>
    internal const ulong DirectoryDataSpace = 32UL << 30;
    /// <summary>Longest symlink target (XFS_SYMLINK_MAXLEN).</summary>
    internal const ulong MaxSymlinkLength = 1024;

    const int OffOnlink = 6, OffPad = 24, OffSize = 56, OffNblocks = 64, OffExtsize = 72, OffNextents = 76, OffAnextents = 80,
              OffAformat = 83, OffFlags = 90, OffFlags2 = 120, OffCowExtsize = 128;
    static readonly int[] TimestampOffsets = [32, 40, 48, 144];   // atime, mtime, ctime, crtime

    /// <summary>
    /// Judges the in-use inode <paramref name="inode"/> (the whole dinode, which passed
    /// <see cref="Dinode.VerifyStructure"/>) and sets every field whose right value is certain, adding one problem
    /// per rule broken. <paramref name="counts"/>: what its forks map (null when a fork could not be walked: the counts
    /// are then not judged). <paramref name="dataShared"/>: its data fork maps blocks with more than one owner (then a
    /// regular file must carry the reflink flag; false when not known). The CRC is judged but not recomputed: the
    /// caller writes the core and recomputes it.
    /// </summary>
    public static void Examine(Span<byte> inode, XfsGeometry geo, ulong ino, InodeForkCounts? counts, List<InodeCoreProblem> problems, bool dataShared = false)
    {
        ArgumentNullException.ThrowIfNull(geo);
        ArgumentNullException.ThrowIfNull(problems);
        var sb = geo.Superblock;
        void Fixed(string what) => problems.Add(new InodeCoreProblem(what, true));
        void Uncertain(string what) => problems.Add(new InodeCoreProblem(what, false));

        if (!XfsCrc.Verify(inode, Dinode.CrcOffset)) Fixed("bad CRC");
        ushort mode = BinaryPrimitives.ReadUInt16BigEndian(inode[2..]);
        int type = mode & 0xF000;
        bool isDir = type == 0x4000, isReg = type == 0x8000, isLink = type == 0xA000;
        bool isDev = type is 0x2000 or 0x6000 or 0x1000 or 0xC000;

        ushort onlink = BinaryPrimitives.ReadUInt16BigEndian(inode[OffOnlink..]);
        if (onlink != 0)
        {
            Fixed($"di_onlink {onlink} (must be 0 in a v3 inode)");
            BinaryPrimitives.WriteUInt16BigEndian(inode[OffOnlink..], 0);
        }

        ulong flags2 = BinaryPrimitives.ReadUInt64BigEndian(inode[OffFlags2..]);
        bool nrext64 = (flags2 & Flag2Nrext64) != 0;   // without the feature VerifyStructure refused the inode
        if (nrext64)
        {
            ushort pad = BinaryPrimitives.ReadUInt16BigEndian(inode[OffAnextents..]);
            if (pad != 0) { Fixed($"di_nrext64_pad {pad} (must be 0)"); BinaryPrimitives.WriteUInt16BigEndian(inode[OffAnextents..], 0); }
        }
        else
        {
            ulong pad = BinaryPrimitives.ReadUInt64BigEndian(inode[OffPad..]);
            if (pad != 0) { Fixed($"di_v3_pad 0x{pad:x} (must be 0)"); inode.Slice(OffPad, 8).Clear(); }
        }

        ulong size = BinaryPrimitives.ReadUInt64BigEndian(inode[OffSize..]);
        if ((long)size < 0) Uncertain($"negative size {(long)size}");

        // di_flags: unknown bits, a realtime file without a realtime device (this project supports none), the
        // realtime bitmap's flag elsewhere, directory-only and regular-file-only flags (xfs_repair clears each).
        ushort flags = BinaryPrimitives.ReadUInt16BigEndian(inode[OffFlags..]);
        ushort goodFlags = (ushort)(flags & FlagsKnown);
        if ((flags & ~FlagsKnown) != 0) Fixed($"unknown di_flags bits 0x{flags & ~FlagsKnown:x4}");
        if ((goodFlags & FlagRealtime) != 0 && sb.RtBlocks == 0) { Fixed("realtime flag without a realtime device"); goodFlags &= unchecked((ushort)~FlagRealtime); }
        if ((goodFlags & FlagNewRtBitmap) != 0 && ino != sb.RbmIno) { Fixed("realtime bitmap flag on an inode that is not the realtime bitmap"); goodFlags &= unchecked((ushort)~FlagNewRtBitmap); }
        const ushort dirOnly = FlagRtInherit | FlagExtSzInherit | FlagProjInherit | FlagNoSymlinks;
        if ((goodFlags & dirOnly) != 0 && !isDir) { Fixed($"directory flags 0x{goodFlags & dirOnly:x4} on a non-directory"); goodFlags &= unchecked((ushort)~dirOnly); }
        const ushort fileOnly = FlagRealtime | FlagExtSize;
        if ((goodFlags & fileOnly) != 0 && !isReg) { Fixed($"regular file flags 0x{goodFlags & fileOnly:x4} on a file that is not regular"); goodFlags &= unchecked((ushort)~fileOnly); }
        if (goodFlags != flags) BinaryPrimitives.WriteUInt16BigEndian(inode[OffFlags..], flags = goodFlags);

        // di_flags2: unknown bits, DAX on special files, reflink (regular files of a reflink filesystem only, never
        // realtime), the CoW extent size flag (reflink filesystems, files and directories), bigtime.
        ulong goodFlags2 = flags2 & Flags2Known;
        if ((flags2 & ~Flags2Known) != 0) Fixed($"unknown di_flags2 bits 0x{flags2 & ~Flags2Known:x}");
        if ((goodFlags2 & Flag2Dax) != 0 && !(isReg || isDir)) { Fixed("DAX flag on a special file"); goodFlags2 &= ~Flag2Dax; }
        if ((goodFlags2 & Flag2Reflink) != 0)
        {
            // No block of such a file can be shared, so the flag (which only makes the kernel look the blocks up in
            // the refcountbt) goes; xfs_repair clears the whole inode instead.
            string? why = !sb.HasReflink ? "reflink flag on a filesystem without reflink"
                : !isReg ? "reflink flag on a file that is not regular"
                : (flags & (FlagRealtime | FlagRtInherit)) != 0 ? "reflink flag on a realtime file" : null;
            if (why != null) { Fixed(why); goodFlags2 &= ~Flag2Reflink; }
        }
        if ((goodFlags2 & Flag2CowExtSize) != 0)
        {
            string? why = !sb.HasReflink ? "CoW extent size flag on a filesystem without reflink"
                : !(isReg || isDir) ? "CoW extent size flag on a special file"
                : (flags & (FlagRealtime | FlagRtInherit)) != 0 ? "CoW extent size flag on a realtime file" : null;
            if (why != null) { Fixed(why); goodFlags2 &= ~Flag2CowExtSize; }
        }
        bool fsBigtime = (sb.FeaturesIncompat & Superblock.IncompatBigtime) != 0;
        if ((goodFlags2 & Flag2Bigtime) != 0 && !fsBigtime)
        {
            // xfs_repair zeroes the timestamps: what they meant in the other encoding is not known.
            Fixed("bigtime flag on a filesystem without large timestamps (timestamps zeroed)");
            goodFlags2 &= ~Flag2Bigtime;
            foreach (int at in TimestampOffsets) inode.Slice(at, 8).Clear();
        }
        if (goodFlags2 != flags2) BinaryPrimitives.WriteUInt64BigEndian(inode[OffFlags2..], flags2 = goodFlags2);
        // A file whose data blocks are shared must carry the reflink flag: without it the kernel writes those blocks in
        // place, into the other owners' data too (xfs_repair sets it, the kernel's scrubber calls it corrupt).
        if (dataShared && MissingReflinkFlag(inode, geo))
        {
            Fixed(ReflinkFlagMissing);
            BinaryPrimitives.WriteUInt64BigEndian(inode[OffFlags2..], flags2 |= Flag2Reflink);
        }

        // Extent size hints (xfs_inode_validate_extsize, xfs_inode_validate_cowextsize; no realtime device here).
        uint extsize = BinaryPrimitives.ReadUInt32BigEndian(inode[OffExtsize..]);
        if (ExtentSizeHintProblem(extsize, isReg, isDir, flags, sb.AgBlocks) is { } extWhy)
        {
            Fixed($"extent size hint {extsize}: {extWhy} (hint and its flags cleared)");
            BinaryPrimitives.WriteUInt32BigEndian(inode[OffExtsize..], 0);
            BinaryPrimitives.WriteUInt16BigEndian(inode[OffFlags..], flags = (ushort)(flags & ~(FlagExtSize | FlagExtSzInherit)));
        }
        uint cowExtsize = BinaryPrimitives.ReadUInt32BigEndian(inode[OffCowExtsize..]);
        if (CowExtentSizeHintProblem(cowExtsize, (flags2 & Flag2CowExtSize) != 0, sb.AgBlocks) is { } cowWhy)
        {
            Fixed($"CoW extent size hint {cowExtsize}: {cowWhy} (hint and its flag cleared)");
            BinaryPrimitives.WriteUInt32BigEndian(inode[OffCowExtsize..], 0);
            BinaryPrimitives.WriteUInt64BigEndian(inode[OffFlags2..], flags2 &= ~Flag2CowExtSize);
        }

        // Legacy timestamps: seconds and nanoseconds, which must stay below one second (bigtime: one 64-bit count).
        if ((flags2 & Flag2Bigtime) == 0)
        {
            for (int i = 0; i < TimestampOffsets.Length; i++)
            {
                uint nsec = BinaryPrimitives.ReadUInt32BigEndian(inode[(TimestampOffsets[i] + 4)..]);
                if (nsec < 1_000_000_000) continue;
                Fixed($"{TimestampNames[i]} nanoseconds {nsec} (reset to 0)");
                BinaryPrimitives.WriteUInt32BigEndian(inode[(TimestampOffsets[i] + 4)..], 0);
            }
        }

        // No attr fork: the attr fork format is extents and its extent count 0 (what xfs_repair resets them to).
        var d = new Dinode(inode);
        if (!d.HasAttrFork)
        {
            if (inode[OffAformat] != (byte)ForkFormat.Extents) { Fixed($"attr fork format {inode[OffAformat]} without an attr fork"); inode[OffAformat] = (byte)ForkFormat.Extents; }
            if (d.AttrExtents != 0) { Fixed($"{d.AttrExtents} attr fork extents without an attr fork"); SetAttrExtents(inode, nrext64, 0); }
        }

        // Sizes (xfs_repair's process_check_inode_sizes and the kernel's fork checks).
        int dataForkSize = d.DataFork.Length;
        if (isDev)
        {
            if (size != 0) { Fixed($"size {size} of a device, fifo or socket (must be 0)"); BinaryPrimitives.WriteUInt64BigEndian(inode[OffSize..], size = 0); }
            if (d.HasAttrFork && d.ForkOffset != 1) Uncertain($"attr fork offset {d.ForkOffset} of a device, fifo or socket (must be 1)");
        }
        else if ((long)size >= 0)
        {
            var format = d.Format;
            if ((isDir || isLink) && size == 0 && d.NLink != 0) Uncertain($"{(isDir ? "directory" : "symlink")} of size 0 with {d.NLink} links");
            if (format == ForkFormat.Local && size > (ulong)dataForkSize) Uncertain($"size {size} larger than the inline data fork ({dataForkSize} bytes)");
            if (isDir && size != 0 && size <= (ulong)dataForkSize && format != ForkFormat.Local) Uncertain($"directory of size {size} that fits its inode, but not in local format");
            if (isDir && size > DirectoryDataSpace) Uncertain($"directory size {size} beyond the directory data space");
            if (isLink && size > MaxSymlinkLength) Uncertain($"symlink size {size} longer than a target may be");
        }

        // Extent counts and di_nblocks against what the forks map. Local and device forks map nothing; an extent
        // list's count is what the walk read; a bmbt's count is its leaf records.
        if (counts is { } c)
        {
            ulong dataExtents = d.DataExtents;
            if (dataExtents != c.DataExtents)
            {
                Fixed($"di_nextents {dataExtents}, the data fork maps {c.DataExtents} extents");
                if (nrext64) BinaryPrimitives.WriteUInt64BigEndian(inode[OffPad..], c.DataExtents);
                else BinaryPrimitives.WriteUInt32BigEndian(inode[OffNextents..], (uint)c.DataExtents);
            }
            ulong attrExtents = d.AttrExtents;
            if (attrExtents != c.AttrExtents)
            {
                Fixed($"di_anextents {attrExtents}, the attr fork maps {c.AttrExtents} extents");
                SetAttrExtents(inode, nrext64, c.AttrExtents);
            }
            ulong nblocks = BinaryPrimitives.ReadUInt64BigEndian(inode[OffNblocks..]);
            if (nblocks != c.Blocks)
            {
                Fixed($"di_nblocks {nblocks}, the forks map {c.Blocks} blocks");
                BinaryPrimitives.WriteUInt64BigEndian(inode[OffNblocks..], c.Blocks);
            }
        }
    }

    /// <summary>The problem of a file whose data blocks are shared but that lacks the reflink flag.</summary>
    public const string ReflinkFlagMissing = "reflink flag missing on a file whose data blocks are shared";

    /// <summary>True when <paramref name="inode"/> is a regular, non-realtime file of a reflink filesystem without the
    /// reflink flag: if its data blocks are shared, it must carry it.</summary>
    public static bool MissingReflinkFlag(ReadOnlySpan<byte> inode, XfsGeometry geo)
    {
        ArgumentNullException.ThrowIfNull(geo);
        ushort mode = BinaryPrimitives.ReadUInt16BigEndian(inode[2..]);
        ushort flags = BinaryPrimitives.ReadUInt16BigEndian(inode[OffFlags..]);
        ulong flags2 = BinaryPrimitives.ReadUInt64BigEndian(inode[OffFlags2..]);
        return geo.Superblock.HasReflink && (mode & 0xF000) == 0x8000 && (flags2 & Flag2Reflink) == 0 && (flags & (FlagRealtime | FlagRtInherit)) == 0;
    }

    /// <summary>
    /// The extent records an extents-format fork holds when its count says <paramref name="nextents"/> (which fits
    /// the fork): the count less the records at its end that are all zero. A zero record is no extent (its length is
    /// 0) and a fork's unused slots are zero, so those are slots a too large di_nextents names, not mappings lost.
    /// </summary>
    public static int ExtentRecords(ReadOnlySpan<byte> fork, ulong nextents)
    {
        int n = (int)nextents;
        while (n > 0 && !fork.Slice((n - 1) * Dinode.ExtentSize, Dinode.ExtentSize).ContainsAnyExcept((byte)0)) n--;
        return n;
    }

    static readonly string[] TimestampNames = ["atime", "mtime", "ctime", "crtime"];

    static void SetAttrExtents(Span<byte> inode, bool nrext64, ulong n)
    {
        if (nrext64) BinaryPrimitives.WriteUInt32BigEndian(inode[OffNextents..], (uint)n);
        else BinaryPrimitives.WriteUInt16BigEndian(inode[OffAnextents..], (ushort)n);
    }

    /// <summary>Why di_extsize breaks the kernel's rules (xfs_inode_validate_extsize without a realtime device), or null.</summary>
    internal static string? ExtentSizeHintProblem(uint extsize, bool isReg, bool isDir, ushort flags, uint agBlocks)
    {
        bool hint = (flags & FlagExtSize) != 0, inherit = (flags & FlagExtSzInherit) != 0;
        if (hint && !isReg) return "the hint flag on a file that is not regular";
        if (inherit && !isDir) return "the inherit flag on a non-directory";
        if ((hint || inherit) && extsize == 0) return "zero with its flag set";
        if (!(hint || inherit) && extsize != 0) return "set without its flag";
        if (extsize > MaxExtentLength) return $"larger than the longest extent ({MaxExtentLength} blocks)";
        if (extsize > agBlocks / 2) return $"larger than half an AG ({agBlocks / 2} blocks)";
        return null;
    }

    /// <summary>Why di_cowextsize breaks the kernel's rules (xfs_inode_validate_cowextsize; its flag's own rules are
    /// judged before), or null.</summary>
    internal static string? CowExtentSizeHintProblem(uint cowExtsize, bool hint, uint agBlocks)
    {
        if (hint && cowExtsize == 0) return "zero with its flag set";
        if (!hint && cowExtsize != 0) return "set without its flag";
        if (cowExtsize > MaxExtentLength) return $"larger than the longest extent ({MaxExtentLength} blocks)";
        if (cowExtsize > agBlocks / 2) return $"larger than half an AG ({agBlocks / 2} blocks)";
        return null;
    }
}
