using System.Runtime.InteropServices;
using Xfbtree.Buffers;
using Xfbtree.Xfs.Directories;
using Xfbtree.Xfs.Format;
using Xfbtree.Xfs.Write;

namespace Xfbtree.Xfs.Scrub;

/// <summary>
/// Link counts (the nlinks scanner, offline). Source of truth: the directory tree. Every in-use inode core the
/// inobt check reads is handed over (<see cref="OnInode"/>): its di_nlink is kept, and a directory's entries are
/// read (every format, through <see cref="DirectoryReader"/>) and each counts one link of the inode it names, plus
/// '.' for the directory itself and '..' for its parent. <see cref="Finish"/> compares: an inode whose nlink differs
/// from its count is wrong, and an entry naming an inode that is not in use is damage too. The metadata inodes the
/// superblock names (realtime bitmap and summary, quota inodes) are named by no directory and are left out.
/// Memory: the scan must see every directory before any count is final, so it keeps 12 bytes per in-use inode (its
/// number and nlink, in arrays filled in scan order) and 8 per link counted (the number each entry names); both are
/// sorted at the end and merge-joined, which replaces two dictionaries of 60-100 bytes per inode.
/// </summary>
internal sealed class LinkCountScrubber
{
    readonly XfsImage _image;
    readonly XfsGeometry _geo;
    readonly DirectoryReader _reader;
    // In-use inodes read (number, di_nlink) in parallel lists; the number named by each link counted; inodes whose
    // core did not verify. Sorted by Finish.
    readonly List<ulong> _inodes;
    readonly List<uint> _nlinks;
    readonly List<ulong> _named;
    readonly List<ulong> _unreadable = new();
    readonly HashSet<ulong> _metadata = new();
    readonly ScrubFinding _finding;

    /// <summary>A link count scan of <paramref name="image"/>.</summary>
    public LinkCountScrubber(XfsImage image, ScrubOptions options)
    {
        _image = image;
        _geo = image.Geometry;
        _reader = new DirectoryReader(image);
        _finding = new ScrubFinding("nlinks", null, options.ProblemLimit);
        var sb = image.Superblock;
        // Sized from the superblock's count of inodes in use (a hint only: bounded, and the lists grow past it).
        int hint = (int)Math.Min(sb.InodeCount - Math.Min(sb.FreeInodes, sb.InodeCount), MaxCapacityHint);
        _inodes = new List<ulong>(hint);
        _nlinks = new List<uint>(hint);
        _named = new List<ulong>(hint + hint / 8);
        foreach (ulong ino in new[] { sb.RbmIno, sb.RsumIno, sb.UserQuotaIno, sb.GroupQuotaIno, sb.ProjectQuotaIno })
            if (ino != 0 && ino != ulong.MaxValue) _metadata.Add(ino);
    }

    /// <summary>Takes one in-use inode core: its link count, and the entries it holds when it is a directory.</summary>
    public void OnInode(ulong ino, ReadOnlySpan<byte> core)
    {
        var d = new Dinode(core);
        if (d.Verify(_geo, ino) is { } why)
        {
            // The scan reports the inode (rmapbt finding); here it only means its count and entries are unknown.
            _unreadable.Add(ino);
            if (d.FileType == 0x4000) _finding.Damage($"directory {ino} unreadable ({why}): the counts of the inodes it names are incomplete");
            return;
        }
        _inodes.Add(ino);
        _nlinks.Add(d.NLink);
        if (d.FileType != 0x4000) return;
        try
        {
            var (parent, entries, _) = _reader.ReadAll(ino, core, ReadBlocks, $"directory {ino}");
            Count(ino);      // '.'
            Count(parent);   // '..'
            foreach (var e in entries) Count(e.Ino);
        }
        catch (Exception e) when (e is XfsWriteException or CorruptionException or IOException)
        {
            _finding.Damage($"directory {ino} unreadable ({e.Message}): the counts of the inodes it names are incomplete");
        }
    }

    /// <summary>The most entries the lists are sized for up front from the superblock (which may be damaged).</summary>
    const int MaxCapacityHint = 1 << 18;

    void Count(ulong ino) => _named.Add(ino);

    void ReadBlocks(ulong fsbno, Span<byte> destination)
    {
        int blocks = destination.Length / _geo.BlockSize;
        uint agno = _geo.FsbToAgno(fsbno), agbno = _geo.FsbToAgbno(fsbno);
        if (agno >= _geo.AgCount || (ulong)agbno + (ulong)blocks > _geo.AgLength(agno))
            throw new XfsWriteException(WriteErrorKind.Corrupt, $"directory block {fsbno} outside the filesystem");
        var buf = _image.Cache.Read(_image.Target, _geo.AgBlockToDaddr(agno, agbno), blocks * _geo.BasicBlocksPerBlock, null, BufferLockMode.Shared);
        try { buf.Span[..destination.Length].CopyTo(destination); }
        finally { _image.Cache.Release(buf); }
    }

    /// <summary>The nlinks finding's damage for <paramref name="total"/> wrong counts (offline and online alike).</summary>
    internal static void ReportWrongCounts(ScrubFinding finding, long total) =>
        finding.Damage(total, total == 1 ? "1 inode has a wrong link count" : $"{total} inodes have a wrong link count");

    /// <summary>Compares every count with the inode's nlink; returns the finding and the wrong counts (bounded).</summary>
    public (ScrubFinding Finding, List<LinkCountMismatch> Mismatches, long Total) Finish(int limit)
    {
        var inodes = CollectionsMarshal.AsSpan(_inodes);
        inodes.Sort(CollectionsMarshal.AsSpan(_nlinks));
        var nlinks = CollectionsMarshal.AsSpan(_nlinks);
        var named = CollectionsMarshal.AsSpan(_named);
        named.Sort();
        var unreadable = CollectionsMarshal.AsSpan(_unreadable);
        unreadable.Sort();

        // Each inode (ascending, once: a chunk listed twice hands its cores over twice) against the links naming it.
        var wrong = new List<LinkCountMismatch>();
        long total = 0, distinct = 0;
        int n = 0;
        for (int i = 0; i < inodes.Length; i++)
        {
            ulong ino = inodes[i];
            if (i > 0 && inodes[i - 1] == ino) continue;
            distinct++;
            while (n < named.Length && named[n] < ino) n++;
            long counted = 0;
            while (n < named.Length && named[n] == ino) { counted++; n++; }
            if (counted == 0 && _metadata.Contains(ino)) continue;
            if (nlinks[i] == counted) continue;
            total++;
            if (wrong.Count < limit) wrong.Add(new LinkCountMismatch(ino, nlinks[i], counted));
        }
        ReportWrongCounts(_finding, total);

        // Links naming an inode that is neither in use nor unreadable.
        long dangling = 0;
        string? first = null;
        int k = 0, u = 0;
        foreach (ulong ino in named)
        {
            while (k < inodes.Length && inodes[k] < ino) k++;
            while (u < unreadable.Length && unreadable[u] < ino) u++;
            if ((k < inodes.Length && inodes[k] == ino) || (u < unreadable.Length && unreadable[u] == ino)) continue;
            dangling++;
            first ??= $"inode {ino}";
        }
        _finding.Damage(dangling, $"{dangling} directory entries name inodes that are not in use (first {first})");
        _finding.Note = $"{distinct} inodes, {named.Length} links";
        return (_finding, wrong, total);
    }
}
