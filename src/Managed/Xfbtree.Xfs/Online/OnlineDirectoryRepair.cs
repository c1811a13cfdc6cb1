using System.Diagnostics;
using Xfbtree.Xfs.Directories;
using Xfbtree.Xfs.Format;
using Xfbtree.Xfs.Write;
using Xfbtree.Xfs.Write.Engine;
using Xfbtree.Xfs.Write.Files;
using Xfbtree.Xfs.Write.Namespace;

namespace Xfbtree.Xfs.Online;

/// <summary>What one directory salvage did.</summary>
/// <param name="Ino">The directory.</param>
/// <param name="Salvaged">Entries read back that name a live inode (added to the rebuilt directory).</param>
/// <param name="Dropped">Entries read back that were not kept: naming a free or unreadable inode, the directory
/// itself, or a name already taken.</param>
/// <param name="FileTypesSet">Kept entries whose file type byte was set from the inode's mode.</param>
/// <param name="Layout">The format of the rebuilt directory.</param>
/// <param name="TimeLocked">Time the directory was locked (the whole repair is one transaction).</param>
internal sealed record OnlineDirectoryRepairResult(ulong Ino, int Salvaged, int Dropped, int FileTypesSet, string Layout, TimeSpan TimeLocked)
{
    public override string ToString() =>
        $"directory {Ino}: {Salvaged} entries salvaged, {Dropped} dropped, {FileTypesSet} file types set, rebuilt in {Layout} form, locked {TimeLocked.TotalMilliseconds:F1} ms";
}

/// <summary>
/// Salvages a damaged directory and rebuilds it (upstream's <c>xrep_dir</c>, fs/xfs/scrub/dir_repair.c), in place, in
/// ONE engine transaction under the directory's inode lock:
/// <list type="number">
/// <item>salvage (<see cref="DirectorySalvage"/>): every entry of the shortform area or of the data blocks (their
/// mapping read through the data fork: a damaged block map is repaired first) that still verifies; leaf, node and
/// free-index blocks are not read;</item>
/// <item>keep an entry when it names a live inode (its core read and in use, not the directory itself), the first
/// of equal names; its file type byte is set from that inode's mode; '..' is the salvaged one when it names a live
/// directory (the root's is the root), else the repair refuses (nothing changed): the parent cannot be made up;</item>
/// <item>release every block of the data fork (buffers invalidated unread) and make the directory an empty
/// shortform one naming its parent, then add the kept entries back through the engine's directory editor, which
/// grows it into block, leaf or node form as the kernel would.</item>
/// </list>
/// One journal record: a crash leaves the old directory or the rebuilt one. Entries that could not be salvaged
/// leave the inodes they named without that name: the link count repair, which runs after this one, finds them and
/// names them in /lost+found, and sets the counts. The directory's own nlink and its subdirectories' '..' are not
/// changed here. Each kept entry's removal and re-addition reach the directory hooks (-1 then +1: a link count scan
/// running meanwhile counts no change for it).
/// </summary>
internal static class OnlineDirectoryRepair
{
    public static OnlineDirectoryRepairResult Run(WriteEngine engine, ulong dirIno)
    {
        ArgumentNullException.ThrowIfNull(engine);
        XfsGeometry geo = engine.Geometry;
        var reader = new DirectoryReader(engine.Image);
        bool ftype = reader.HasFtype;
        var locked = new Stopwatch();
        return engine.Execute($"scrub repair directory {dirIno}", tx =>
        {
            IncoreInode dir = engine.GetInode(dirIno);
            tx.LockInodes(dir);
            locked.Restart();
            if (!InodeCore.IsDirectory(dir.Core))
            {
                throw new OnlineRepairException($"inode {dirIno} is not a directory");
            }
            if (InodeCore.Nlink(dir.Core) == 0)
            {
                throw new OnlineRepairException($"directory {dirIno} has nlink 0: removed, or its count is damaged (the link count repair's)");
            }

            // 1. salvage
            ulong? parent;
            List<SalvagedEntry> found;
            var d = new Dinode(dir.Core);
            if (d.Format == ForkFormat.Local)
            {
                (parent, found) = DirectorySalvage.Shortform(d.DataFork, (long)d.Size, ftype, geo);
            }
            else
            {
                found = SalvageBlocks(tx, dir, reader, geo);
                parent = null;
                foreach (SalvagedEntry e in found)
                {
                    if (DirectoryFormat.IsDotDot(e.Name))
                    {
                        parent = e.Ino;
                        break;
                    }
                }
            }
            if (dirIno == geo.Superblock.RootIno)
            {
                parent = dirIno;
            }

            // 2. keep what names a live inode
            if (parent is not { } p || !IsLiveDirectory(engine, p))
            {
                throw new OnlineRepairException($"directory {dirIno}: its '..' could not be salvaged (it names {(parent is { } q ? $"inode {q}, no live directory" : "nothing readable")}); the parent cannot be made up");
            }
            var kept = new List<SalvagedEntry>();
            var names = new HashSet<string>(StringComparer.Ordinal);
            int dropped = 0, typesSet = 0;
            foreach (SalvagedEntry e in found)
            {
                if (DirectoryFormat.IsDot(e.Name) || DirectoryFormat.IsDotDot(e.Name))
                {
                    continue;
                }
                byte? type = e.Ino == dirIno ? null : LiveFileType(engine, e.Ino);
                if (type is not { } t || !names.Add(Convert.ToHexString(e.Name)))
                {
                    dropped++;
                    continue;
                }
                if (ftype && t != e.FileType)
                {
                    typesSet++;
                }
                kept.Add(e with { FileType = ftype ? t : DirectoryFormat.FtUnknown });
            }

            // 3. rebuild in place
            var editor = new DirectoryEditor(tx, dir, reader, $"directory {dirIno}");
            foreach (SalvagedEntry e in kept)
            {
                tx.QueueDirectoryUpdate(dirIno, e.Ino, -1, DirectoryEntryKind.Name);
            }
            editor.ResetToEmpty(p);
            DateTimeOffset now = DateTimeOffset.UtcNow;
            foreach (SalvagedEntry e in kept)
            {
                editor.Add(e.Name, e.Ino, e.FileType, now);
            }
            tx.LogInode(dir);
            return new OnlineDirectoryRepairResult(dirIno, kept.Count, dropped, typesSet, editor.Layout.ToString().ToLowerInvariant(), locked.Elapsed);
        }) with { TimeLocked = locked.Elapsed };
    }

    /// <summary>The entries of every data block of a block, leaf or node directory, blocks in file order.</summary>
    private static List<SalvagedEntry> SalvageBlocks(WriteTransaction tx, IncoreInode dir, DirectoryReader reader, XfsGeometry geo)
    {
        var all = new List<SalvagedEntry>();
        ExtentList extents = FileFork.Load(tx, dir, attr: false).Extents;
        int fsbs = reader.DirBlockFsbs;
        var starts = new SortedSet<ulong>();
        for (int i = 0; i < extents.Count; i++)
        {
            BmbtExtent e = extents[i];
            if (e.StartOffset >= reader.LeafOffsetFsb) break;
            ulong last = Math.Min(e.StartOffset + e.BlockCount, reader.LeafOffsetFsb);
            for (ulong fb = e.StartOffset - (e.StartOffset % (ulong)fsbs); fb < last; fb += (ulong)fsbs)
            {
                starts.Add(fb);
            }
        }
        // A block directory maps exactly one directory block, at offset 0.
        bool blockForm = extents.Count > 0 && extents[extents.Count - 1].StartOffset + extents[extents.Count - 1].BlockCount == (ulong)fsbs;
        byte[] block = new byte[reader.DirBlockSize];
        foreach (ulong fb in starts)
        {
            long firstDaddr = -1;
            bool whole = true;
            for (int i = 0; i < fsbs && whole; i++)
            {
                if (!extents.Lookup(fb + (ulong)i, out BmbtExtent m, out _) || m.Unwritten)
                {
                    whole = false;
                    break;
                }
                ulong fsbno = m.StartBlock + (fb + (ulong)i - m.StartOffset);
                long daddr = reader.DaddrOf(fsbno);
                if (i == 0) firstDaddr = daddr;
                // Read raw (no verifier: a block that does not verify is what is salvaged), through the transaction's
                // cache so that the last committed contents are read; the buffer is invalidated by the rebuild.
                var buf = tx.ReadBuffer(daddr, geo.BasicBlocksPerBlock, null);
                buf.Span[..geo.BlockSize].CopyTo(block.AsSpan(i * geo.BlockSize));
            }
            if (whole)
            {
                all.AddRange(DirectorySalvage.DataBlock(block, firstDaddr, dir.Ino, blockForm, reader.HasFtype, geo));
            }
        }
        return all;
    }

    /// <summary>The file type of a live inode (its core read and in use), or null.</summary>
    private static byte? LiveFileType(WriteEngine engine, ulong ino)
    {
        if (!engine.Geometry.IsValidIno(ino)) return null;
        try
        {
            IncoreInode inode = engine.GetInode(ino, keepCached: false);
            int mode = InodeFields.Mode(inode.Core);
            return mode == 0 ? null : DirectoryFormat.FileTypeOfMode(mode);
        }
        catch (XfsWriteException e) when (e.Kind is WriteErrorKind.Corrupt or WriteErrorKind.NotFound)
        {
            return null;
        }
    }

    private static bool IsLiveDirectory(WriteEngine engine, ulong ino) => LiveFileType(engine, ino) == DirectoryFormat.FtDirectory;
}
