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
/// from its count is wrong; an entry naming an inode that is not in use, or (ftype feature) with a file type other
/// than its inode's mode gives, is damage too, reported by directory and name. The metadata inodes the superblock
/// names (realtime bitmap and summary, quota inodes) are named by no directory and are left out.
/// Memory: the scan must see every directory before any count is final, so it keeps 16 bytes per in-use inode (its
/// number, nlink and file type, in arrays filled in scan order), 9 per link counted (the number each entry names and
/// its file type) and 8 per directory; they are sorted at the end and merge-joined, which replaces two dictionaries of
/// 60-100 bytes per inode. Wrong entries are found by name in a second pass over the directories, only when some exist.
/// </summary>
internal sealed class LinkCountScrubber
{
    readonly XfsImage _image;
    readonly XfsGeometry _geo;
    readonly DirectoryReader _reader;
    // In-use inodes read (number; di_nlink and the directory file type of its mode, packed) in parallel lists; the
    // number named by each link counted and the file type its entry says (NoFileType when it carries none: shortform '..', no ftype feature); inodes whose
    // core did not verify; the directories read. Sorted by Finish.
    readonly List<ulong> _inodes;
    readonly List<ulong> _nlinks;
    readonly List<ulong> _named;
    readonly List<byte> _namedTypes;
    readonly List<ulong> _directories = new();
    readonly List<ulong> _unreadable = new();
    readonly HashSet<ulong> _metadata = new();
    readonly ScrubFinding _finding;
    // The shape of the tree: the '..' of every directory read, and the entries that may name directories (with the
    // ftype feature those that say so; without it every entry, the child's type known only at the end).
    readonly Dictionary<ulong, ulong> _dotDot = new();
    readonly List<DirectoryEdge> _dirEdges = new();
    readonly ulong _root;
    // The inode the root's 'lost+found' names, if any (xfs_repair junks that entry when it is not a directory).
    ulong? _lostFound;
    // Inodes on a well-formed AGI unlinked list, and the AGs whose lists were checked: an in-use inode with nlink 0
    // that no directory names is an orphan only when it is on no list of a checked AG.
    readonly HashSet<ulong> _onUnlinkedLists = new();
    readonly HashSet<uint> _listsChecked = new();

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
        _nlinks = new List<ulong>(hint);
        _named = new List<ulong>(hint + hint / 8);
        _namedTypes = new List<byte>(hint + hint / 8);
        foreach (ulong ino in new[] { sb.RbmIno, sb.RsumIno, sb.UserQuotaIno, sb.GroupQuotaIno, sb.ProjectQuotaIno })
            if (ino != 0 && ino != ulong.MaxValue) _metadata.Add(ino);
        _root = sb.RootIno;
    }

    /// <summary>The AGI check of AG <paramref name="agno"/> walked its unlinked lists: <paramref name="listed"/> are
    /// the inodes on them (pending, freed at the next open for writing: no orphans).</summary>
    public void OnUnlinkedLists(uint agno, IEnumerable<ulong> listed)
    {
        _listsChecked.Add(agno);
        foreach (ulong ino in listed) _onUnlinkedLists.Add(ino);
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
        _nlinks.Add(PackInode(d.NLink, DirectoryFormat.FileTypeOfMode(d.Mode)));
        if (d.FileType != 0x4000) return;
        try
        {
            var (parent, entries, _) = _reader.ReadAll(ino, core, ReadBlocks, $"directory {ino}", out var dots);
            // '.' and '..' carry a file type in block, leaf and node directories (ftype), none in shortform.
            Count(ino, dots?.Dot ?? NoFileType);
            Count(parent, dots?.DotDot ?? NoFileType);
            foreach (var e in entries)
            {
                Count(e.Ino, _reader.HasFtype ? e.FileType : NoFileType);
                if (!_reader.HasFtype || e.FileType == DirectoryFormat.FtDirectory) _dirEdges.Add(new DirectoryEdge(ino, e.Ino, null));
                if (ino == _root && e.Name.AsSpan().SequenceEqual(Write.Namespace.NamespaceOperations.OrphanageName)) _lostFound = e.Ino;
            }
            _dotDot[ino] = parent;
            _directories.Add(ino);
        }
        catch (Exception e) when (e is XfsWriteException or CorruptionException or IOException)
        {
            _finding.Damage($"directory {ino} unreadable ({e.Message}): the counts of the inodes it names are incomplete");
        }
    }

    /// <summary>The most entries the lists are sized for up front from the superblock (which may be damaged).</summary>
    const int MaxCapacityHint = 1 << 18;

    /// <summary>The file type of a link that carries none ('.', '..', entries without the ftype feature).</summary>
    const byte NoFileType = 0xFF;

    void Count(ulong ino, byte fileType)
    {
        _named.Add(ino);
        _namedTypes.Add(fileType);
    }

    static ulong PackInode(uint nlink, byte fileType) => ((ulong)fileType << 32) | nlink;

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

    /// <summary>Compares every count with the inode's nlink and every entry's file type with its inode's; returns the
    /// finding and the wrong counts (bounded).</summary>
    public (ScrubFinding Finding, List<LinkCountMismatch> Mismatches, long Total) Finish(int limit)
    {
        var inodes = CollectionsMarshal.AsSpan(_inodes);
        inodes.Sort(CollectionsMarshal.AsSpan(_nlinks));
        var info = CollectionsMarshal.AsSpan(_nlinks);
        var named = CollectionsMarshal.AsSpan(_named);
        named.Sort(CollectionsMarshal.AsSpan(_namedTypes));
        var namedTypes = CollectionsMarshal.AsSpan(_namedTypes);
        var unreadable = CollectionsMarshal.AsSpan(_unreadable);
        unreadable.Sort();

        // Each inode (ascending, once: a chunk listed twice hands its cores over twice) against the links naming it,
        // and each entry's file type against the inode's mode.
        var wrong = new List<LinkCountMismatch>();
        long total = 0, distinct = 0, wrongType = 0, orphans = 0;
        var directoryInodes = new HashSet<ulong>();
        var wrongTypeInodes = new Dictionary<ulong, byte>();
        int n = 0;
        for (int i = 0; i < inodes.Length; i++)
        {
            ulong ino = inodes[i];
            if (i > 0 && inodes[i - 1] == ino) continue;
            distinct++;
            uint nlink = (uint)info[i];
            byte type = (byte)(info[i] >> 32);
            while (n < named.Length && named[n] < ino) n++;
            long counted = 0;
            for (; n < named.Length && named[n] == ino; n++)
            {
                counted++;
                if (namedTypes[n] == NoFileType || namedTypes[n] == type) continue;
                wrongType++;
                if (wrongTypeInodes.Count < EntryReportLimit) wrongTypeInodes.TryAdd(ino, type);
            }
            if (type == DirectoryFormat.FtDirectory) directoryInodes.Add(ino);
            if (counted == 0 && _metadata.Contains(ino)) continue;
            if (nlink == 0 && counted == 0 && ino != _root && _listsChecked.Contains(_geo.InoToAgno(ino)) && !_onUnlinkedLists.Contains(ino))
            {
                // In use, no link, on no unlinked list: nothing will ever free it or reach it (xfs_repair moves it to
                // lost+found, and so does the repair here).
                orphans++;
                _finding.Damage($"inode {ino} is in use with nlink 0, on no unlinked list, and no directory names it (an orphan: it goes to /lost+found)");
                continue;
            }
            if (nlink == counted) continue;
            total++;
            if (wrong.Count < limit) wrong.Add(new LinkCountMismatch(ino, nlink, counted));
        }
        ReportWrongCounts(_finding, total);

        // Links naming an inode that is neither in use nor unreadable.
        long dangling = 0;
        var danglingInodes = new HashSet<ulong>();
        int k = 0, u = 0;
        foreach (ulong ino in named)
        {
            while (k < inodes.Length && inodes[k] < ino) k++;
            while (u < unreadable.Length && unreadable[u] < ino) u++;
            if ((k < inodes.Length && inodes[k] == ino) || (u < unreadable.Length && unreadable[u] == ino)) continue;
            dangling++;
            if (danglingInodes.Count < EntryReportLimit) danglingInodes.Add(ino);
        }
        if (dangling + wrongType > 0) ReportEntries(dangling, danglingInodes, wrongType, wrongTypeInodes, limit);
        if (_lostFound is { } lf && !directoryInodes.Contains(lf) && inodes.BinarySearch(lf) >= 0)
            _finding.Damage($"'/lost+found' names inode {lf}, which is not a directory (xfs_repair removes that entry; the inode goes to a new /lost+found when nothing else names it)");
        ReportTree(directoryInodes);
        _finding.Note = $"{distinct} inodes, {named.Length} links" + (orphans > 0 ? $", {orphans} orphans" : "");
        return (_finding, wrong, total);
    }

    /// <summary>The shape of the tree (<see cref="DirectoryTree"/>) over the directories read: entries naming a
    /// directory whose '..' names another one, second names, cycles the root does not reach.</summary>
    void ReportTree(HashSet<ulong> directoryInodes)
    {
        var edges = new List<DirectoryEdge>();
        foreach (var e in _dirEdges)
            if (directoryInodes.Contains(e.Child)) edges.Add(e);
        foreach (var p in DirectoryTree.Analyze(_root, _dotDot, edges)) _finding.Damage(p.ToString());
    }

    /// <summary>Inodes whose naming entries a second pass looks for (each pass reads every directory again).</summary>
    const int EntryReportLimit = 64;

    /// <summary>
    /// Names the entries behind the totals: a second pass over the directories read (only when some entry is wrong)
    /// finds each entry naming an inode that is not in use, or naming an inode whose type its file type does not say,
    /// and reports it by directory and name. The totals stay exact; the lines are bounded.
    /// </summary>
    void ReportEntries(long dangling, HashSet<ulong> danglingInodes, long wrongType, Dictionary<ulong, byte> wrongTypeInodes, int limit)
    {
        long reported = 0;
        int isz = _geo.InodeSize;
        foreach (ulong dir in _directories)
        {
            if (reported >= limit) break;
            var (daddr, offset) = (_geo.AgBlockToDaddr(_geo.InoToAgno(dir), _geo.AginoToAgbno(_geo.InoToAgino(dir))), _geo.AginoToSlot(_geo.InoToAgino(dir)) * isz);
            var buf = _image.Cache.Read(_image.Target, daddr, _geo.BasicBlocksPerBlock, null, BufferLockMode.Shared);
            List<DataEntry> entries;
            ulong parent;
            DotEntryTypes? dots;
            try { (parent, entries, _) = _reader.ReadAll(dir, buf.Span.Slice(offset, isz), ReadBlocks, $"directory {dir}", out dots); }
            catch (Exception e) when (e is XfsWriteException or CorruptionException or IOException) { continue; }
            finally { _image.Cache.Release(buf); }
            if (dots is { } t)
            {
                // '.' and '..' first (their file types only: a '..' naming a free inode is counted, not named here).
                entries.Insert(0, new DataEntry([(byte)'.', (byte)'.'], parent, t.DotDot, 0));
                entries.Insert(0, new DataEntry([(byte)'.'], dir, t.Dot, 0));
            }
            foreach (var e in entries)
            {
                if (reported >= limit) break;
                string name = System.Text.Encoding.UTF8.GetString(e.Name);
                if (danglingInodes.Contains(e.Ino) && !DirectoryFormat.IsDot(e.Name) && !DirectoryFormat.IsDotDot(e.Name))
                {
                    _finding.Damage($"directory {dir} entry '{name}' names inode {e.Ino}, which is not in use");
                    reported++;
                }
                else if (_reader.HasFtype && wrongTypeInodes.TryGetValue(e.Ino, out byte type) && e.FileType != type)
                {
                    _finding.Damage($"directory {dir} entry '{name}' says {FileTypeName(e.FileType)}, but inode {e.Ino} is {FileTypeName(type)}");
                    reported++;
                }
            }
        }
        _finding.Damage(dangling + wrongType - reported, $"{dangling} directory entries name inodes that are not in use, {wrongType} have a file type other than their inode's ({dangling + wrongType - reported} not listed)");
    }

    /// <summary>"a regular file", "a directory", ... for a directory entry file type.</summary>
    internal static string FileTypeName(byte fileType) => DirectoryFormat.TypeOfFileType(fileType) switch
    {
        Write.Namespace.InodeType.RegularFile => "a regular file",
        Write.Namespace.InodeType.Directory => "a directory",
        Write.Namespace.InodeType.Symlink => "a symlink",
        Write.Namespace.InodeType.CharDevice => "a character device",
        Write.Namespace.InodeType.BlockDevice => "a block device",
        Write.Namespace.InodeType.Fifo => "a fifo",
        Write.Namespace.InodeType.Socket => "a socket",
        _ => $"file type {fileType}",
    };
}
