using System.Globalization;
using System.Text;
using Xfbtree.Xfs.Directories;
using Xfbtree.Xfs.Format;
using Xfbtree.Xfs.Write.Engine;

namespace Xfbtree.Xfs.Write.Namespace;

/// <summary>What <see cref="NamespaceOperations.AdoptOrphan"/> did.</summary>
internal enum AdoptOutcome
{
    /// <summary>Named in the orphanage; its nlink set.</summary>
    Adopted,
    /// <summary>Nothing left to do: freed, or named by some directory, by the time it was locked.</summary>
    Settled,
    /// <summary>The orphanage is no directory in use any more (removed meanwhile): find or make it again.</summary>
    OrphanageGone,
    /// <summary>Cannot be adopted (the detail says why).</summary>
    Refused,
}

internal sealed partial class NamespaceOperations
{
    /// <summary>The orphanage: a directory of the root with this name, as xfs_repair's phase 6 and the kernel's
    /// online repair make it.</summary>
    internal static ReadOnlySpan<byte> OrphanageName => "lost+found"u8;

    /// <summary>Permission bits of a new orphanage: 0755, owned by root:root (xfs_repair's mk_orphanage).</summary>
    internal const int OrphanageMode = 0x1ED;

    /// <summary>Names tried in the orphanage for one inode before giving up ("N", "N.1", ... "N.MaxOrphanNameTries").</summary>
    const int MaxOrphanNameTries = 1000;

    /// <summary>
    /// The root's <c>lost+found</c>, made (a directory 0755 owned by root:root, the root gaining the link of its '..')
    /// when the root does not name it; a name made by a writer meanwhile is taken. Null, with why, when the root
    /// names something else than a directory by that name (xfs_repair would not use it either).
    /// </summary>
    internal ulong? FindOrMakeOrphanage(out string? why)
    {
        why = null;
        for (int attempt = 0; ; attempt++)
        {
            if (TryLookup(RootIno, OrphanageName, out InodeAttributes found))
            {
                if (found.Type == InodeType.Directory) return found.Ino;
                why = $"'/lost+found' is a {found.Type.ToString().ToLowerInvariant()}, not a directory";
                return null;
            }
            try
            {
                return Mkdir(RootIno, OrphanageName, OrphanageMode, 0, 0).Ino;
            }
            catch (XfsWriteException e) when (e.Kind == WriteErrorKind.Exists && attempt < MaxRestarts)
            {
                // A writer made it between the lookup and the mkdir: look again.
            }
        }
    }

    /// <summary>
    /// Names an inode that no directory names in the orphanage, under its inode number ("1234", then "1234.1",
    /// "1234.2", ... while the name is taken: xfs_repair's mv_orphanage), in one transaction under the locks of the
    /// orphanage, the inode and, for a directory, the parent its '..' names. A directory's '..' is pointed at the
    /// orphanage, which gains that link; the old parent, when it is a directory in use whose nlink counts the link
    /// (more than 2), loses it. <paramref name="linksOnceNamed"/>, called under the inode's lock, gives the inode's
    /// nlink once named there (null: it is no orphan any more, e.g. named by a writer meanwhile). An inode with nlink
    /// 0 leaves the AGI unlinked list it may be on. The entry and the '..' change reach the directory hooks.
    /// </summary>
    internal AdoptOutcome AdoptOrphan(ulong orphanageIno, ulong ino, Func<uint?> linksOnceNamed, out string detail)
    {
        ArgumentNullException.ThrowIfNull(linksOnceNamed);
        IncoreInode home, child;
        try
        {
            home = Engine.GetInode(orphanageIno);
        }
        catch (XfsWriteException e) when (e.Kind is WriteErrorKind.NotFound or WriteErrorKind.Corrupt)
        {
            detail = e.Message;
            return AdoptOutcome.OrphanageGone;
        }
        try
        {
            child = Engine.GetInode(ino);
        }
        catch (XfsWriteException e) when (e.Kind == WriteErrorKind.NotFound)
        {
            detail = e.Message;
            return AdoptOutcome.Settled;
        }
        string said = "";
        // A directory changes parent here: under the cross-directory rename lock, as every such change.
        lock (_crossDirectoryRename)
        {
            AdoptOutcome outcome = Engine.Execute($"nlinks repair: adopt inode {ino} into lost+found", tx =>
            {
                tx.LockInodes(home, child);
                said = "";
                if (new Dinode(child.Core).IsFree) return AdoptOutcome.Settled;
                if (new Dinode(home.Core).IsFree || !InodeCore.IsDirectory(home.Core) || InodeCore.Nlink(home.Core) == 0) return AdoptOutcome.OrphanageGone;
                uint oldLinks = InodeCore.Nlink(child.Core);
                if (oldLinks == 0 && Volatile.Read(ref child.References) > 0)
                {
                    said = $"inode {ino} has nlink 0 and is held open (on the unlinked list): it is not adopted";
                    return AdoptOutcome.Refused;
                }
                if (linksOnceNamed() is not uint links) return AdoptOutcome.Settled;
                bool isDir = InodeCore.IsDirectory(child.Core);
                string where = $"directory {ino}";
                IncoreInode? oldParent = null;
                ulong oldParentIno = 0;
                if (isDir)
                {
                    if (InodeCore.Nlink(home.Core) >= MaxLinks)
                    {
                        said = $"'/lost+found' has {InodeCore.Nlink(home.Core)} links, the most XFS allows";
                        return AdoptOutcome.Refused;
                    }
                    oldParentIno = Reader.Lookup(ino, child.Core, ".."u8, Engine.ReadMetadataBlocks, where)
                        ?? throw new XfsWriteException(WriteErrorKind.Corrupt, $"{where} has no '..' entry");
                    if (oldParentIno != orphanageIno && oldParentIno != ino && Engine.Geometry.IsValidIno(oldParentIno))
                    {
                        try
                        {
                            oldParent = Engine.GetInode(oldParentIno);
                        }
                        catch (XfsWriteException e) when (e.Kind is WriteErrorKind.NotFound or WriteErrorKind.Corrupt)
                        {
                            oldParent = null; // '..' names no inode that reads: nothing to take a link from
                        }
                        // Out of the ascending order: tried, and on contention the transaction restarts with it first.
                        if (oldParent is not null) tx.LockInodes(oldParent);
                    }
                }
                var editor = new DirectoryEditor(tx, home, Reader, "/lost+found");
                byte[]? name = null;
                for (int n = 0; n <= MaxOrphanNameTries && name is null; n++)
                {
                    string text = n == 0 ? ino.ToString(CultureInfo.InvariantCulture) : string.Create(CultureInfo.InvariantCulture, $"{ino}.{n}");
                    byte[] candidate = Encoding.ASCII.GetBytes(text);
                    if (editor.Find(candidate) is null) name = candidate;
                }
                if (name is null)
                {
                    said = $"'/lost+found' already names {MaxOrphanNameTries + 1} entries after inode {ino}";
                    return AdoptOutcome.Refused;
                }
                var now = DateTimeOffset.UtcNow;
                editor.Add(name, ino, DirectoryFormat.FileTypeOfMode(new Dinode(child.Core).Mode), now);
                if (isDir && oldParentIno != orphanageIno)
                {
                    SetParent(tx, child, oldParentIno, orphanageIno, where);
                    InodeCore.SetNlink(home.Core, InodeCore.Nlink(home.Core) + 1);
                    if (oldParent is not null && !new Dinode(oldParent.Core).IsFree && InodeCore.IsDirectory(oldParent.Core) && InodeCore.Nlink(oldParent.Core) > 2)
                    {
                        InodeCore.SetNlink(oldParent.Core, InodeCore.Nlink(oldParent.Core) - 1);
                        tx.LogInode(oldParent);
                    }
                }
                InodeCore.SetNlink(child.Core, links);
                InodeCore.SetTime(child.Core, InodeCore.OffCtime, now);
                tx.LogInode(child);
                tx.LogInode(home);
                // Given a link back from nlink 0: off the unlinked list the AGI repair may have put it on.
                if (oldLinks == 0) TakeOffUnlinkedList(tx, child, $"inode {ino}");
                said = $"/lost+found/{Encoding.ASCII.GetString(name)}";
                return AdoptOutcome.Adopted;
            });
            detail = said;
            return outcome;
        }
    }
}
