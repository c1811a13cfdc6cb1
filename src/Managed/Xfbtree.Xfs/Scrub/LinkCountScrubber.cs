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
/// Memory: one count per in-use inode (the scan must see every directory before any count is final).
/// </summary>
internal sealed class LinkCountScrubber
{
    readonly XfsImage _image;
    readonly XfsGeometry _geo;
    readonly DirectoryReader _reader;
    readonly Dictionary<ulong, uint> _nlink = new();
    readonly Dictionary<ulong, long> _counted = new();
    readonly HashSet<ulong> _unreadable = new();
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
        _nlink[ino] = d.NLink;
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

    void Count(ulong ino) => _counted[ino] = _counted.GetValueOrDefault(ino) + 1;

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
        var wrong = new List<LinkCountMismatch>();
        long total = 0;
        foreach (var (ino, nlink) in _nlink.OrderBy(kv => kv.Key))
        {
            long counted = _counted.GetValueOrDefault(ino);
            if (counted == 0 && _metadata.Contains(ino)) continue;
            if (nlink == counted) continue;
            total++;
            if (wrong.Count < limit) wrong.Add(new LinkCountMismatch(ino, nlink, counted));
        }
        ReportWrongCounts(_finding, total);
        long dangling = 0;
        string? first = null;
        foreach (var (ino, n) in _counted.OrderBy(kv => kv.Key))
        {
            if (_nlink.ContainsKey(ino) || _unreadable.Contains(ino)) continue;
            dangling += n;
            first ??= $"inode {ino}";
        }
        _finding.Damage(dangling, $"{dangling} directory entries name inodes that are not in use (first {first})");
        _finding.Note = $"{_nlink.Count} inodes, {_counted.Values.Sum()} links";
        return (_finding, wrong, total);
    }
}
