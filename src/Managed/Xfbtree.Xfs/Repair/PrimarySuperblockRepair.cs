using System.Buffers.Binary;
using Microsoft.Win32.SafeHandles;
using Xfbtree.Buffers;
using Xfbtree.Xfs.Format;

namespace Xfbtree.Xfs.Repair;

/// <summary>
/// Restores a damaged primary superblock of an unmounted image from a secondary, as xfs_repair does: a sector of the
/// image that verifies as a superblock (magic, CRC, geometry) and lies where its own geometry puts a secondary (the
/// start of AG 1 or later), confirmed by the other secondaries its geometry locates (every field mkfs fixes equal).
/// The copy becomes the primary with what secondaries do not keep up to date put right: sb_inprogress cleared, the
/// root directory and the realtime bitmap and summary inodes (left null in some secondaries by mkfs) set to the inodes
/// mkfs places first in AG 0 when those are in use with the right type, quota inodes 0 read as none, and the summary counters from the AG headers.
/// NEEDSREPAIR protocol: the copy is written first with NEEDSREPAIR set (a crash then leaves an image the kernel
/// refuses and xfs_repair finishes), synced; then the counters, with NEEDSREPAIR cleared, synced.
/// </summary>
internal static class PrimarySuperblockRepair
{
    // Superblock field offsets (big-endian).
    private const int RootInoOffset = 56, RbmInoOffset = 64, RsumInoOffset = 72, VersionOffset = 100, InProgressOffset = 126,
        IcountOffset = 128, IfreeOffset = 136, FdblocksOffset = 144, UquotInoOffset = 160, GquotInoOffset = 168, QflagsOffset = 176,
        IncompatOffset = 216, CrcOffset = 224, PquotInoOffset = 232;
    private const ulong NullIno = ulong.MaxValue;

    /// <summary>Secondaries read to confirm a candidate, at most.</summary>
    public const int MaxConfirmations = 8;

    /// <summary>Why the primary superblock of <paramref name="path"/> does not verify, or null when it does (or the
    /// image cannot be read at all: the usual open reports that).</summary>
    public static string? Damage(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        if (!File.Exists(path)) return null;
        using SafeFileHandle fh = File.OpenHandle(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite);
        if (RandomAccess.GetLength(fh) < 4096) return null;
        byte[] sector = new byte[512];
        RandomAccess.Read(fh, sector, 0);
        if (BinaryPrimitives.ReadUInt32BigEndian(sector) != Superblock.MagicValue)
        {
            return "no XFSB magic";
        }
        try
        {
            return Verify(fh, 0, out Superblock? sb) ?? Outvoted(fh, sb!);
        }
        catch (XfsUnsupportedException) when (UnknownFeaturesOutvoted(fh) is { } why)
        {
            return why;
        }
    }

    // Feature words (big-endian u32): compat, ro_compat, incompat.
    private const int CompatOffset = 208, RoCompatOffset = 212;

    /// <summary>
    /// Why a primary whose feature words carry bits this tool does not know is the damaged copy, or null (then the
    /// refusal stands: a newer filesystem, not a damaged one). It is damaged when, with those bits cleared, it
    /// verifies (CRC aside) and equals the secondaries in every field mkfs fixes, and the secondaries it locates (at
    /// least two, each verifying on its own) agree with each other and carry none of them. xfs_repair 6.1 refuses
    /// such an image whatever the secondaries say ("Found unsupported filesystem features", exit 1, with -n and
    /// without); restoring the primary from the secondaries gives back the features mkfs wrote everywhere.
    /// </summary>
    private static string? UnknownFeaturesOutvoted(SafeFileHandle fh)
    {
        byte[] head = new byte[512];
        if (RandomAccess.Read(fh, head, 0) < head.Length) return null;
        int sectorSize = BinaryPrimitives.ReadUInt16BigEndian(head.AsSpan(102));
        if (sectorSize < 512 || sectorSize > 32768 || (sectorSize & (sectorSize - 1)) != 0) return null;
        byte[] primary = new byte[sectorSize];
        if (RandomAccess.Read(fh, primary, 0) < primary.Length) return null;
        uint compat = BinaryPrimitives.ReadUInt32BigEndian(primary.AsSpan(CompatOffset));
        uint roCompat = BinaryPrimitives.ReadUInt32BigEndian(primary.AsSpan(RoCompatOffset));
        uint incompat = BinaryPrimitives.ReadUInt32BigEndian(primary.AsSpan(IncompatOffset));
        // v5 defines no compat feature: every compat bit is unknown.
        uint unknownRo = roCompat & ~Superblock.RoCompatKnown, unknownIn = incompat & ~Superblock.IncompatKnown;
        if (compat == 0 && unknownRo == 0 && unknownIn == 0) return null;
        byte[] cleared = (byte[])primary.Clone();
        BinaryPrimitives.WriteUInt32BigEndian(cleared.AsSpan(CompatOffset), 0);
        BinaryPrimitives.WriteUInt32BigEndian(cleared.AsSpan(RoCompatOffset), roCompat & Superblock.RoCompatKnown);
        BinaryPrimitives.WriteUInt32BigEndian(cleared.AsSpan(IncompatOffset), incompat & Superblock.IncompatKnown);
        XfsCrc.Update(cleared, CrcOffset);
        Superblock sb;
        try
        {
            sb = Superblock.Parse(cleared);
            sb.Validate();
        }
        catch (XfsFormatException)
        {
            return null;
        }
        long agBytes = (long)sb.AgBlocks * sb.BlockSize;
        var secondaries = new List<byte[]>();
        for (uint a = 1; a < sb.AgCount && secondaries.Count < MaxConfirmations; a++)
        {
            try
            {
                if (Verify(fh, a * agBytes, out _) is not null) return null;
            }
            catch (XfsUnsupportedException)
            {
                return null; // a secondary with unknown features too: a newer filesystem
            }
            byte[] other = new byte[sb.SectorSize];
            if (RandomAccess.Read(fh, other, a * agBytes) < other.Length) return null;
            secondaries.Add(other);
        }
        if (secondaries.Count < 2) return null;
        foreach (byte[] other in secondaries)
        {
            if (SecondarySuperblock.Differences(secondaries[0], other, sb.SectorSize).Count > 0) return null;
            if (SecondarySuperblock.Differences(other, cleared, sb.SectorSize).Count > 0) return null;
        }
        var bits = new List<string>();
        if (compat != 0) bits.Add($"compat 0x{compat:x}");
        if (unknownRo != 0) bits.Add($"ro_compat 0x{unknownRo:x}");
        if (unknownIn != 0) bits.Add($"incompat 0x{unknownIn:x}");
        return $"unknown feature bits ({string.Join(", ", bits)}) that none of the {secondaries.Count} secondaries read carries (they agree with each other and with the rest of the primary)";
    }

    /// <summary>
    /// Why a primary that verifies is still the damaged copy, or null: the secondaries it locates (AG 1 and up, at
    /// most <see cref="MaxConfirmations"/>, at least two) all agree with each other and each differs from it in a field
    /// mkfs fixes, or in the root, realtime bitmap or summary inode they name alike; or its root inode is no directory
    /// in use. The secondary check (<c>AG N superblock</c>) compares each secondary with the primary and cannot tell
    /// which side is wrong: without this a damaged primary would be copied over every good secondary.
    /// </summary>
    private static string? Outvoted(SafeFileHandle fh, Superblock sb)
    {
        byte[] primary = new byte[sb.SectorSize];
        if (RandomAccess.Read(fh, primary, 0) < primary.Length) return null;
        // mkfs leaves sb_inprogress set in some secondaries, never in the primary of a finished filesystem.
        if (primary[InProgressOffset] != 0) return $"sb_inprogress {primary[InProgressOffset]}: the filesystem says it is still being made";
        ulong root = BinaryPrimitives.ReadUInt64BigEndian(primary.AsSpan(RootInoOffset));
        if (!IsInUse(fh, sb, root, 0x4000)) return $"its root inode {root} is not a directory in use";
        long agBytes = (long)sb.AgBlocks * sb.BlockSize;
        var secondaries = new List<byte[]>();
        for (uint a = 1; a < sb.AgCount && secondaries.Count < MaxConfirmations; a++)
        {
            byte[] other = new byte[sb.SectorSize];
            if (RandomAccess.Read(fh, other, a * agBytes) < other.Length) return null;
            secondaries.Add(other);
        }
        if (secondaries.Count < 2) return null;
        for (int i = 1; i < secondaries.Count; i++)
        {
            if (SecondarySuperblock.Differences(secondaries[0], secondaries[i], sb.SectorSize).Count > 0) return null;
        }
        // Differences names each field first ("sb_agblocks 0x..., primary 0x..."): the name is what is said here.
        List<string> differences = SecondarySuperblock.Differences(secondaries[0], primary, sb.SectorSize).ConvertAll(d => d.Split(' ')[0]);
        foreach (var (offset, name) in new[] { (RootInoOffset, "sb_rootino"), (RbmInoOffset, "sb_rbmino"), (RsumInoOffset, "sb_rsumino") })
        {
            // Secondaries written before mkfs had the inode say NULLFSINO: only the ones that name an inode vote.
            ulong mine = BinaryPrimitives.ReadUInt64BigEndian(primary.AsSpan(offset));
            ulong? agreed = null;
            int voters = 0;
            foreach (byte[] other in secondaries)
            {
                ulong theirs = BinaryPrimitives.ReadUInt64BigEndian(other.AsSpan(offset));
                if (theirs == NullIno) continue;
                if (agreed is { } v && v != theirs) { voters = 0; break; }
                agreed = theirs;
                voters++;
            }
            if (voters >= 2 && agreed != mine) differences.Add($"{name} {mine}, the secondaries {agreed}");
            else if (voters == 0 && offset != RootInoOffset)
            {
                // No secondary names them: mkfs puts the realtime bitmap and summary inodes right after the root (as
                // xfs_repair calculates them, and as the restore sets them).
                ulong expected = root + (offset == RbmInoOffset ? 1UL : 2UL);
                if (mine != expected && IsInUse(fh, sb, expected, 0x8000)) return $"{name} {mine}, but inode {expected} after the root is the realtime {(offset == RbmInoOffset ? "bitmap" : "summary")} mkfs made";
            }
        }
        return differences.Count == 0 ? null
            : $"it differs from all {secondaries.Count} secondaries read, which agree with each other ({string.Join("; ", differences.Take(3))})";
    }

    /// <summary>Null when the sector at <paramref name="offset"/> verifies as a superblock (the parsed superblock in
    /// <paramref name="sb"/>), else why not. An unsupported feature is not damage: it is thrown.</summary>
    private static string? Verify(SafeFileHandle fh, long offset, out Superblock? sb)
    {
        sb = null;
        byte[] head = new byte[512];
        if (RandomAccess.Read(fh, head, offset) < head.Length) return "truncated";
        int sectorSize = BinaryPrimitives.ReadUInt16BigEndian(head.AsSpan(102));
        if (sectorSize < 512 || sectorSize > 32768 || (sectorSize & (sectorSize - 1)) != 0) return $"bad sector size {sectorSize}";
        byte[] sector = new byte[sectorSize];
        if (RandomAccess.Read(fh, sector, offset) < sector.Length) return "truncated";
        var parsed = Superblock.Parse(sector);
        try
        {
            parsed.Validate();
        }
        catch (XfsFormatException e) when (e is not XfsUnsupportedException)
        {
            return e.Message;
        }
        sb = parsed;
        return null;
    }

    /// <summary>
    /// Restores the primary superblock; returns what was done, one line. Throws <see cref="XfsFormatException"/> when
    /// no secondary is usable (nothing written then).
    /// </summary>
    public static string Restore(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        using SafeFileHandle fh = File.OpenHandle(path, FileMode.Open, FileAccess.ReadWrite, FileShare.None);
        long length = RandomAccess.GetLength(fh);
        var (candidate, agno, agreed, checkedOthers) = FindSecondary(fh, length);
        Superblock sb = Superblock.Parse(candidate);
        byte[] primary = (byte[])candidate.Clone();
        var notes = new List<string>();
        primary[InProgressOffset] = 0;
        if ((BinaryPrimitives.ReadUInt16BigEndian(primary.AsSpan(VersionOffset)) & 0xF) == 5)
        {
            // ATTRBIT: always meaningful on v5 (the kernel sets it in the primary at the first attribute).
            BinaryPrimitives.WriteUInt16BigEndian(primary.AsSpan(VersionOffset), (ushort)(BinaryPrimitives.ReadUInt16BigEndian(primary.AsSpan(VersionOffset)) | 0x10));
        }
        ulong root = BinaryPrimitives.ReadUInt64BigEndian(primary.AsSpan(RootInoOffset));
        if (root == NullIno)
        {
            // Some secondaries are written before mkfs knows the root: it is the first inode of AG 0's first chunk.
            root = FirstInodeOfAg0(fh, sb);
            if (!IsInUse(fh, sb, root, 0x4000))
            {
                throw new XfsFormatException($"the secondary superblock of AG {agno} names no root directory, and inode {root} (the first of AG 0's first chunk) is not one");
            }
            BinaryPrimitives.WriteUInt64BigEndian(primary.AsSpan(RootInoOffset), root);
            notes.Add($"root directory inode {root}");
        }
        if (BinaryPrimitives.ReadUInt64BigEndian(primary.AsSpan(RbmInoOffset)) == NullIno && BinaryPrimitives.ReadUInt64BigEndian(primary.AsSpan(RsumInoOffset)) == NullIno
            && IsInUse(fh, sb, root + 1, 0x8000) && IsInUse(fh, sb, root + 2, 0x8000))
        {
            BinaryPrimitives.WriteUInt64BigEndian(primary.AsSpan(RbmInoOffset), root + 1);
            BinaryPrimitives.WriteUInt64BigEndian(primary.AsSpan(RsumInoOffset), root + 2);
            notes.Add($"realtime bitmap and summary inodes {root + 1} and {root + 2}");
        }
        if (BinaryPrimitives.ReadUInt16BigEndian(primary.AsSpan(QflagsOffset)) == 0)
        {
            foreach (int at in new[] { UquotInoOffset, GquotInoOffset, PquotInoOffset })
            {
                if (BinaryPrimitives.ReadUInt64BigEndian(primary.AsSpan(at)) == 0) BinaryPrimitives.WriteUInt64BigEndian(primary.AsSpan(at), NullIno);
            }
        }
        // Step 1: the geometry back, marked as needing repair.
        uint incompat = BinaryPrimitives.ReadUInt32BigEndian(primary.AsSpan(IncompatOffset));
        BinaryPrimitives.WriteUInt32BigEndian(primary.AsSpan(IncompatOffset), incompat | Superblock.IncompatNeedsRepair);
        WriteSynced(fh, primary);
        // Step 2: the summary counters from the AG headers, NEEDSREPAIR cleared.
        var (fdblocks, icount, ifree, unreadable) = CountersFromAgHeaders(fh, sb);
        BinaryPrimitives.WriteUInt64BigEndian(primary.AsSpan(IcountOffset), icount);
        BinaryPrimitives.WriteUInt64BigEndian(primary.AsSpan(IfreeOffset), ifree);
        BinaryPrimitives.WriteUInt64BigEndian(primary.AsSpan(FdblocksOffset), fdblocks);
        BinaryPrimitives.WriteUInt32BigEndian(primary.AsSpan(IncompatOffset), incompat & ~Superblock.IncompatNeedsRepair);
        WriteSynced(fh, primary);
        notes.Add(unreadable == 0 ? "counters from the AG headers" : $"counters from the AG headers ({unreadable} unreadable: left out, the check reports them)");
        string confirmed = checkedOthers == 0 ? "the only secondary" : $"{agreed} of {checkedOthers} other secondaries agree";
        return $"copied from the secondary superblock of AG {agno} ({confirmed}); {string.Join("; ", notes)}";
    }

    private static void WriteSynced(SafeFileHandle fh, byte[] sector)
    {
        XfsCrc.Update(sector, CrcOffset);
        RandomAccess.Write(fh, sector, 0);
        RandomAccess.FlushToDisk(fh);
    }

    /// <summary>
    /// The first sector past the primary (in file order) that verifies as a superblock at the start of one of its own
    /// AGs (1 and up), whose geometry fits the image, and that at least as many of the other secondaries it locates
    /// agree with as disagree (at least one, unless it is the only secondary). Read in 1 MiB runs.
    /// </summary>
    private static (byte[] Sector, uint Agno, int Agreed, int Checked) FindSecondary(SafeFileHandle fh, long length)
    {
        const int Run = 1 << 20;
        byte[] chunk = new byte[Run];
        int candidates = 0;
        string? lastWhy = null;
        for (long at = 0; at < length; at += Run)
        {
            int got = RandomAccess.Read(fh, chunk, at);
            for (int i = 0; i + 4 <= got; i += 512)
            {
                long offset = at + i;
                if (offset == 0 || BinaryPrimitives.ReadUInt32BigEndian(chunk.AsSpan(i)) != Superblock.MagicValue) continue;
                candidates++;
                if (Candidate(fh, length, offset, out lastWhy) is { } found) return found;
            }
        }
        throw new XfsFormatException(candidates == 0
            ? "no secondary superblock found: no sector past the primary carries the XFSB magic"
            : $"no usable secondary superblock: {candidates} sectors carry the XFSB magic, none verifies where its geometry puts a secondary with the others agreeing (last: {lastWhy})");
    }

    private static (byte[] Sector, uint Agno, int Agreed, int Checked)? Candidate(SafeFileHandle fh, long length, long offset, out string? why)
    {
        why = Verify(fh, offset, out Superblock? sb);
        if (sb is null) return null;
        long agBytes = (long)sb.AgBlocks * sb.BlockSize;
        if (offset % agBytes != 0 || offset / agBytes >= sb.AgCount)
        {
            why = $"the superblock at byte {offset} is not at the start of one of its AGs";
            return null;
        }
        if ((long)sb.DataBlocks * sb.BlockSize > length)
        {
            why = $"the superblock at byte {offset} describes {sb.DataBlocks} blocks, more than the image holds";
            return null;
        }
        uint agno = (uint)(offset / agBytes);
        byte[] sector = new byte[sb.SectorSize];
        RandomAccess.Read(fh, sector, offset);
        int agreed = 0, disagreed = 0;
        byte[] other = new byte[sb.SectorSize];
        for (uint a = 1; a < sb.AgCount && agreed + disagreed < MaxConfirmations; a++)
        {
            if (a == agno) continue;
            if (RandomAccess.Read(fh, other, a * agBytes) < other.Length || SecondarySuperblock.Differences(sector, other, sb.SectorSize).Count > 0) disagreed++;
            else agreed++;
        }
        if (agreed + disagreed > 0 && (agreed == 0 || agreed < disagreed))
        {
            why = $"the superblock of AG {agno}: {agreed} of {agreed + disagreed} other secondaries agree with it";
            return null;
        }
        return (sector, agno, agreed, agreed + disagreed);
    }

    /// <summary>The first inode of the first record of AG 0's inobt (its root block's first record; a leaf or a node's
    /// first key alike start with startino), or NULLFSINO when that does not read.</summary>
    private static ulong FirstInodeOfAg0(SafeFileHandle fh, Superblock sb)
    {
        byte[] agi = new byte[sb.SectorSize];
        RandomAccess.Read(fh, agi, 2L * sb.SectorSize);
        if (BinaryPrimitives.ReadUInt32BigEndian(agi) != Agi.MagicValue || !XfsCrc.Verify(agi, Agi.CrcOffset)) return NullIno;
        uint rootBlock = BinaryPrimitives.ReadUInt32BigEndian(agi.AsSpan(Agi.RootOffset));
        if (rootBlock == 0 || rootBlock >= sb.AgBlocks) return NullIno;
        byte[] block = new byte[sb.BlockSize];
        RandomAccess.Read(fh, block, (long)rootBlock * sb.BlockSize);
        const int ShortBlockHeader = 56;
        if (!XfsCrc.Verify(block, 52) || BinaryPrimitives.ReadUInt16BigEndian(block.AsSpan(6)) == 0) return NullIno;
        return BinaryPrimitives.ReadUInt32BigEndian(block.AsSpan(ShortBlockHeader));
    }

    private static bool IsInUse(SafeFileHandle fh, Superblock sb, ulong ino, int fileType)
    {
        if (ino == NullIno) return false;
        int aginoLog = sb.AgBlockLog + sb.InodesPerBlockLog;
        ulong agno = ino >> aginoLog, agino = ino & ((1UL << aginoLog) - 1);
        if (agno >= sb.AgCount) return false;
        ulong agbno = agino >> sb.InodesPerBlockLog;
        long offset = (long)((agno * sb.AgBlocks + agbno) * sb.BlockSize + (agino & (ulong)(sb.InodesPerBlock - 1)) * sb.InodeSize);
        byte[] core = new byte[sb.InodeSize];
        if (RandomAccess.Read(fh, core, offset) < core.Length) return false;
        var d = new Dinode(core);
        return d.Magic == Dinode.MagicValue && d.FileType == fileType && d.Ino == ino;
    }

    /// <summary>sb_fdblocks, sb_icount and sb_ifree as the kernel derives them at mount, from the AG headers whose magic
    /// is right (the scrub that follows checks every header and counter).</summary>
    private static (ulong Fdblocks, ulong Icount, ulong Ifree, int Unreadable) CountersFromAgHeaders(SafeFileHandle fh, Superblock sb)
    {
        ulong fd = 0, ic = 0, ifr = 0;
        int unreadable = 0;
        byte[] sector = new byte[sb.SectorSize];
        for (uint a = 0; a < sb.AgCount; a++)
        {
            long ag = (long)a * sb.AgBlocks * sb.BlockSize;
            RandomAccess.Read(fh, sector, ag + sb.SectorSize);
            bool agfOk = BinaryPrimitives.ReadUInt32BigEndian(sector) == Agf.MagicValue;
            if (agfOk)
            {
                fd += (ulong)BinaryPrimitives.ReadUInt32BigEndian(sector.AsSpan(Agf.OffsetFreeBlocks)) + BinaryPrimitives.ReadUInt32BigEndian(sector.AsSpan(Agf.OffsetFlCount))
                    + BinaryPrimitives.ReadUInt32BigEndian(sector.AsSpan(Agf.OffsetBtreeBlocks));
            }
            RandomAccess.Read(fh, sector, ag + 2L * sb.SectorSize);
            bool agiOk = BinaryPrimitives.ReadUInt32BigEndian(sector) == Agi.MagicValue;
            if (agiOk)
            {
                ic += BinaryPrimitives.ReadUInt32BigEndian(sector.AsSpan(Agi.CountOffset));
                ifr += BinaryPrimitives.ReadUInt32BigEndian(sector.AsSpan(Agi.FreeCountOffset));
            }
            if (!agfOk || !agiOk) unreadable++;
        }
        return (fd, ic, ifr, unreadable);
    }
}
