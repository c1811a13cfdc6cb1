using System.Buffers.Binary;
using System.Security.Cryptography;
using Xfbtree.Buffers;
using Xfbtree.Xfs.Attributes;
using Xfbtree.Xfs.Directories;
using Xfbtree.Xfs.Format;
using Xfbtree.Xfs.Write.Engine;
using Xfbtree.Xfs.Write.Files;
using Xfbtree.Xfs.Write.Namespace;

namespace Xfbtree.Xfs.Write.Attributes;

/// <summary>setxattr(2) flags.</summary>
[Flags]
public enum XattrSetFlags
{
    /// <summary>Create or replace.</summary>
    None = 0,
    /// <summary>XATTR_CREATE: fail with EEXIST when the attribute exists.</summary>
    Create = 1,
    /// <summary>XATTR_REPLACE: fail with ENODATA when the attribute does not exist.</summary>
    Replace = 2,
}

/// <summary>
/// Extended attributes of inodes, each call one engine transaction: set, get, list and remove in shortform, leaf
/// and node attr forks with local and remote values, in the user, trusted and security namespaces, with the
/// errors of the syscalls (EEXIST, ENODATA, E2BIG, ERANGE, EOPNOTSUPP, EPERM).
/// </summary>
/// <remarks>
/// A change that stays inside one leaf block of a leaf- or node-form fork is made there in place
/// (<c>AttributeOperations.InPlace.cs</c>). Any other change reads the fork's entries (values of untouched remote
/// attributes stay where they are, unread), applies the change, then writes the fork back in the form the kernel would hold for that set: shortform in the inode
/// when every entry fits beside the data fork (di_forkoff as xfs_attr_shortform_bytesfit), else one leaf block,
/// else a da btree of leaves under node blocks; no entries at all removes the fork. Blocks of the fork no longer
/// needed are unmapped and freed, missing ones allocated and mapped (attr-fork rmaps, the fork's own bmbt when its
/// extents overflow the inode), and ctime is updated. A failure anywhere cancels the transaction.
/// </remarks>
internal sealed partial class AttributeOperations
{
    /// <summary>Operations on <paramref name="engine"/>'s image.</summary>
    public AttributeOperations(WriteEngine engine) => Engine = engine ?? throw new ArgumentNullException(nameof(engine));

    /// <summary>The engine the operations run on.</summary>
    public WriteEngine Engine { get; }

    XfsGeometry Geo => Engine.Geometry;

    DirectoryReader? _directoryReader;

    /// <summary>Directory geometry and mapping for a shortform directory moved out of the inode (stateless, so a
    /// race creating two is harmless).</summary>
    internal DirectoryReader DirectoryReader => _directoryReader ??= new DirectoryReader(Engine.Image);

    // ------------------------------------------------------------------ public operations

    /// <summary>setxattr(2): sets <paramref name="fullName"/> (with its namespace prefix) to <paramref name="value"/>.</summary>
    public void Set(ulong ino, ReadOnlySpan<byte> fullName, ReadOnlySpan<byte> value, XattrSetFlags flags = XattrSetFlags.None)
    {
        var name = CheckName(fullName, "setxattr");
        if ((flags & ~(XattrSetFlags.Create | XattrSetFlags.Replace)) != 0 || flags == (XattrSetFlags.Create | XattrSetFlags.Replace))
            throw new XfsWriteException(WriteErrorKind.InvalidArgument, $"setxattr: flags {(int)flags} are not XATTR_CREATE or XATTR_REPLACE");
        if (value.Length > AttrFormat.MaxValueLength)
            throw new XfsWriteException(WriteErrorKind.TooBig, $"setxattr {name.FullName}: a value of {value.Length} bytes is larger than {AttrFormat.MaxValueLength}");
        var inode = Engine.GetInode(ino);
        byte[] bytes = value.ToArray();
        Engine.Execute("setxattr", tx =>
        {
            tx.LockInodes(inode);
            CheckInode(inode, name, write: true);
            var entry = new AttrEntry(name.Flags, name.Name, bytes);
            if (TryChangeInPlace(tx, inode, name, entry, flags, "setxattr"))
            {
                Changed(tx, inode);
                return;
            }
            var entries = LoadEntries(tx, inode);
            int at = IndexOf(entries, name);
            if (at >= 0 && (flags & XattrSetFlags.Create) != 0)
                throw new XfsWriteException(WriteErrorKind.Exists, $"setxattr {name.FullName}: inode {ino} has it already (XATTR_CREATE)");
            if (at < 0 && (flags & XattrSetFlags.Replace) != 0)
                throw new XfsWriteException(WriteErrorKind.NoData, $"setxattr {name.FullName}: inode {ino} has no such attribute (XATTR_REPLACE)");
            entry.RemoteBlock = 0;
            if (at >= 0) entries[at] = entry;
            else entries.Add(entry);
            int sfHint = AttrFormat.ShortformHeaderSize + AttrFormat.ShortformEntrySize(name.Name.Length, bytes.Length);
            new ForkWriter(this, tx, inode).Write(entries, sfHint);
            Changed(tx, inode);
        });
    }

    /// <summary>getxattr(2): copies the value into <paramref name="buffer"/> and returns its length; an empty buffer
    /// asks for the length only; a buffer too small is ERANGE.</summary>
    public int Get(ulong ino, ReadOnlySpan<byte> fullName, Span<byte> buffer)
    {
        var value = GetValue(ino, fullName);
        if (buffer.IsEmpty) return value.Length;
        if (buffer.Length < value.Length)
            throw new XfsWriteException(WriteErrorKind.OutOfRange, $"getxattr: the value has {value.Length} bytes, the buffer {buffer.Length}");
        value.CopyTo(buffer);
        return value.Length;
    }

    /// <summary>
    /// True when getxattr(2) of <paramref name="fullName"/> is ENODATA because the inode has no attribute fork at all
    /// (most files: the kernel asks for security.capability before writes), answered under the inode's read lock
    /// without a transaction, an exception or an allocation. False means "ask <see cref="Get"/>": a fork to search,
    /// a name <see cref="Get"/> refuses (its error is the answer), a free inode.
    /// </summary>
    public bool IsAbsentWithoutFork(ulong ino, ReadOnlySpan<byte> fullName) => IsUsableName(fullName) && HasNoFork(ino);

    /// <summary>True when the inode is in use and has no attribute fork (checked under its read lock, no transaction).</summary>
    bool HasNoFork(ulong ino)
    {
        var inode = Engine.GetInode(ino);
        using (Engine.LockInodeForRead(inode))
        {
            return InodeFields.Mode(inode.Core) != 0 && InodeFields.ForkOffset(inode.Core) == 0;
        }
    }

    /// <summary>
    /// True when <paramref name="fullName"/> is outside the user, trusted and security namespaces, which every call
    /// refuses with EOPNOTSUPP (<see cref="WriteErrorKind.NotSupported"/>): the system.posix_acl_* names that cp -a
    /// and tar ask for on every file. Lets a caller answer them without a call that throws. Allocates nothing.
    /// </summary>
    public static bool IsUnsupportedNamespace(ReadOnlySpan<byte> fullName)
        => fullName.Length is > 0 and <= XattrName.MaxFullNameLength
           && !fullName.StartsWith("user."u8) && !fullName.StartsWith("trusted."u8) && !fullName.StartsWith("security."u8);

    /// <summary>A name <see cref="CheckName"/> accepts, checked without allocating.</summary>
    static bool IsUsableName(ReadOnlySpan<byte> fullName)
    {
        if (fullName.Length == 0 || fullName.Length > XattrName.MaxFullNameLength) return false;
        return HasSuffixAfter(fullName, "user."u8) || HasSuffixAfter(fullName, "trusted."u8) || HasSuffixAfter(fullName, "security."u8);

        static bool HasSuffixAfter(ReadOnlySpan<byte> name, ReadOnlySpan<byte> prefix) => name.Length > prefix.Length && name.StartsWith(prefix);
    }

    /// <summary>The value of <paramref name="fullName"/> (ENODATA when the inode has no such attribute).</summary>
    public byte[] GetValue(ulong ino, ReadOnlySpan<byte> fullName)
    {
        var name = CheckName(fullName, "getxattr");
        var inode = Engine.GetInode(ino);
        byte[] result = [];
        Engine.Execute("getxattr", tx =>
        {
            tx.LockInodes(inode);
            CheckInode(inode, name, write: false);
            if (TryGetFromLeaf(tx, inode, name, out result)) return;
            var entries = LoadEntries(tx, inode);
            int at = IndexOf(entries, name);
            if (at < 0) throw new XfsWriteException(WriteErrorKind.NoData, $"getxattr {name.FullName}: inode {ino} has no such attribute");
            result = ValueOf(tx, inode, entries[at]);
        });
        return result;
    }

    /// <summary>listxattr(2): the names, each with its prefix and a NUL, in the fork's order, into
    /// <paramref name="buffer"/>; returns the bytes the list takes (an empty buffer asks for the size only).</summary>
    public int List(ulong ino, Span<byte> buffer)
    {
        // Most inodes have no attribute fork: their list is empty, answered without a transaction (cp -a asks twice
        // per file).
        if (HasNoFork(ino)) return 0;
        var names = ListNames(ino);
        int total = 0;
        foreach (var n in names) total += n.FullNameLength + 1;
        if (buffer.IsEmpty) return total;
        if (buffer.Length < total) throw new XfsWriteException(WriteErrorKind.OutOfRange, $"listxattr: the list has {total} bytes, the buffer {buffer.Length}");
        int p = 0;
        foreach (var n in names)
        {
            p += n.WriteFullName(buffer[p..]);
            buffer[p++] = 0;
        }
        return total;
    }

    /// <summary>The names of the inode's attributes in the fork's order (shortform order, or hash order).</summary>
    public IReadOnlyList<XattrName> ListNames(ulong ino)
    {
        var inode = Engine.GetInode(ino);
        var names = new List<XattrName>();
        Engine.Execute("listxattr", tx =>
        {
            names.Clear();
            tx.LockInodes(inode);
            CheckInUse(inode);
            foreach (var e in LoadEntries(tx, inode))
            {
                if (XattrName.NamespaceOf(e.Flags) is { } ns) names.Add(new XattrName(ns, e.Name));
            }
        });
        return names;
    }

    /// <summary>
    /// The scrub's repair of a damaged attr fork (xfs_repair's clear_dinode_attr): when the whole-fork check
    /// (<see cref="AttrForkChecker"/>, through this transaction) still finds a problem, every block of the fork is
    /// unmapped and freed and the fork removed, the attributes lost; returns that problem, or null when the fork is
    /// sound now (nothing changed). The inode must be locked by <paramref name="tx"/>.
    /// </summary>
    internal string? ClearIfDamaged(WriteTransaction tx, IncoreInode inode)
    {
        ArgumentNullException.ThrowIfNull(tx);
        ArgumentNullException.ThrowIfNull(inode);
        var core = inode.Core;
        if (InodeFields.ForkOffset(core) == 0) return null;
        string? why;
        switch (InodeFields.Format(core, attr: true))
        {
            case ForkFormat.Local:
                why = AttrForkChecker.CheckShortform(InodeFields.Fork(core, attr: true));
                break;
            case ForkFormat.Extents:
            case ForkFormat.Btree:
                var fork = FileFork.Load(tx, inode, attr: true);
                why = fork.Extents.Count == 0 ? null
                    : AttrForkChecker.CheckTree(inode.Ino, Geo.MetaUuid, Geo.BlockSize, Source(tx, fork), (long)Math.Min(fork.Extents.MappedBlocks, int.MaxValue));
                break;
            default:
                throw new XfsWriteException(WriteErrorKind.Corrupt, $"{Where(inode)} has format {InodeFields.Format(core, attr: true)}");
        }
        if (why == null) return null;
        new ForkWriter(this, tx, inode).Write(new List<AttrEntry>(), 0);
        return why;
    }

    /// <summary>Every attribute with its value (remote values read), in the fork's order.</summary>
    public IReadOnlyList<(XattrName Name, byte[] Value)> ReadAll(ulong ino)
    {
        var inode = Engine.GetInode(ino);
        var all = new List<(XattrName, byte[])>();
        Engine.Execute("listxattr", tx =>
        {
            all.Clear();
            tx.LockInodes(inode);
            CheckInUse(inode);
            FileFork? fork = null;
            foreach (var e in LoadEntries(tx, inode))
            {
                if (XattrName.NamespaceOf(e.Flags) is not { } ns) continue;
                if (e.Value is null) fork ??= FileFork.Load(tx, inode, attr: true);
                all.Add((new XattrName(ns, e.Name), ValueOf(tx, inode, e, fork)));
            }
        });
        return all;
    }

    /// <summary>removexattr(2): removes <paramref name="fullName"/> (ENODATA when absent).</summary>
    public void Remove(ulong ino, ReadOnlySpan<byte> fullName)
    {
        var name = CheckName(fullName, "removexattr");
        var inode = Engine.GetInode(ino);
        Engine.Execute("removexattr", tx =>
        {
            tx.LockInodes(inode);
            CheckInode(inode, name, write: true);
            if (TryChangeInPlace(tx, inode, name, null, XattrSetFlags.None, "removexattr"))
            {
                Changed(tx, inode);
                return;
            }
            var entries = LoadEntries(tx, inode);
            int at = IndexOf(entries, name);
            if (at < 0) throw new XfsWriteException(WriteErrorKind.NoData, $"removexattr {name.FullName}: inode {ino} has no such attribute");
            entries.RemoveAt(at);
            new ForkWriter(this, tx, inode).Write(entries, 0);
            Changed(tx, inode);
        });
    }

    /// <summary>
    /// The XATTRS column of the stress manifest: the lowercase hex SHA-256 of the inode's attributes as lines
    /// "name=value\n" (full name with prefix, raw value bytes) sorted bytewise and concatenated; "-" when it has none.
    /// </summary>
    public string Digest(ulong ino) => DigestOf(ReadAll(ino));

    /// <summary>The manifest digest of a set of attributes (see <see cref="Digest"/>); "-" for none.</summary>
    public static string DigestOf(IEnumerable<(XattrName Name, byte[] Value)> attributes)
    {
        ArgumentNullException.ThrowIfNull(attributes);
        var lines = new List<byte[]>();
        foreach (var (name, value) in attributes)
        {
            var line = new byte[name.FullNameLength + 1 + value.Length + 1];
            int p = name.WriteFullName(line);
            line[p++] = (byte)'=';
            value.CopyTo(line, p);
            line[^1] = (byte)'\n';
            lines.Add(line);
        }
        if (lines.Count == 0) return "-";
        lines.Sort((a, b) => a.AsSpan().SequenceCompareTo(b));
        using var sha = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        foreach (var l in lines) sha.AppendData(l);
        return Convert.ToHexStringLower(sha.GetHashAndReset());
    }

    /// <summary>The form of the inode's attr fork: "none", "shortform", "leaf" or "node" (for stat and tests).</summary>
    public string DescribeForm(ulong ino)
    {
        var inode = Engine.GetInode(ino);
        string form = "none";
        Engine.Execute("stat attr fork", tx =>
        {
            tx.LockInodes(inode);
            CheckInUse(inode);
            var core = inode.Core;
            if (InodeFields.ForkOffset(core) == 0) { form = "none"; return; }
            if (InodeFields.Format(core, attr: true) == ForkFormat.Local) { form = "shortform"; return; }
            var fork = FileFork.Load(tx, inode, attr: true);
            if (fork.Extents.Count == 0) { form = "none"; return; }
            var block = new byte[Geo.BlockSize];
            try { Source(tx, fork)(0, block); }
            catch (AttrFormatException e) { throw new XfsWriteException(WriteErrorKind.Corrupt, $"{Where(inode)}: {e.Message}", e); }
            form = AttrFormat.DaMagic(block) == AttrFormat.NodeMagic ? "node" : "leaf";
        });
        return form;
    }

    // ------------------------------------------------------------------ checks

    static XattrName CheckName(ReadOnlySpan<byte> fullName, string op)
    {
        var name = XattrName.Parse(fullName, out var problem);
        string shown = System.Text.Encoding.UTF8.GetString(fullName);
        return problem switch
        {
            XattrNameProblem.None => name,
            XattrNameProblem.BadLength => throw new XfsWriteException(WriteErrorKind.OutOfRange, $"{op}: a name of {fullName.Length} bytes (1 to {XattrName.MaxFullNameLength} allowed)"),
            XattrNameProblem.EmptySuffix => throw new XfsWriteException(WriteErrorKind.InvalidArgument, $"{op}: '{shown}' names no attribute after its prefix"),
            _ => throw new XfsWriteException(WriteErrorKind.NotSupported, $"{op}: '{shown}' is not in the user, trusted or security namespace"),
        };
    }

    static void CheckInUse(IncoreInode inode)
    {
        if (InodeFields.Mode(inode.Core) == 0) throw new XfsWriteException(WriteErrorKind.NotFound, $"inode {inode.Ino} is free");
    }

    /// <summary>As the VFS's xattr_permission: user.* attributes exist only on regular files and directories.</summary>
    static void CheckInode(IncoreInode inode, XattrName name, bool write)
    {
        CheckInUse(inode);
        int type = InodeFields.Mode(inode.Core) & 0xF000;
        if (name.Namespace == XattrNamespace.User && type is not (0x8000 or 0x4000))
        {
            if (write) throw new XfsWriteException(WriteErrorKind.NotPermitted, $"{name.FullName}: user attributes belong to regular files and directories only (inode {inode.Ino} has mode 0{Convert.ToString(InodeFields.Mode(inode.Core), 8)})");
            throw new XfsWriteException(WriteErrorKind.NoData, $"getxattr {name.FullName}: inode {inode.Ino} has no such attribute");
        }
    }

    static int IndexOf(List<AttrEntry> entries, XattrName name)
    {
        for (int i = 0; i < entries.Count; i++)
        {
            if (entries[i].Matches(name.Flags, name.Name)) return i;
        }
        return -1;
    }

    static void Changed(WriteTransaction tx, IncoreInode inode)
    {
        InodeFields.Touch(inode.Core, DateTimeOffset.UtcNow, modify: false);
        tx.LogInode(inode);
    }

    // ------------------------------------------------------------------ reading

    string Where(IncoreInode inode) => $"inode {inode.Ino} attr fork";

    /// <summary>The entries of a locked inode's attr fork (remote values not read).</summary>
    internal List<AttrEntry> LoadEntries(WriteTransaction tx, IncoreInode inode)
    {
        var core = inode.Core;
        if (InodeFields.ForkOffset(core) == 0) return new List<AttrEntry>();
        try
        {
            switch (InodeFields.Format(core, attr: true))
            {
                case ForkFormat.Local:
                    return ShortformAttributes.Parse(InodeFields.Fork(core, attr: true));
                case ForkFormat.Extents:
                case ForkFormat.Btree:
                    var fork = FileFork.Load(tx, inode, attr: true);
                    if (fork.Extents.Count == 0) return new List<AttrEntry>();
                    return AttrForkReader.ReadTree(inode.Ino, Geo.MetaUuid, Geo.BlockSize, Source(tx, fork), (long)fork.Extents.MappedBlocks);
                default:
                    throw new XfsWriteException(WriteErrorKind.Corrupt, $"{Where(inode)} has format {InodeFields.Format(core, attr: true)}");
            }
        }
        catch (AttrFormatException e)
        {
            throw new XfsWriteException(WriteErrorKind.Corrupt, $"{Where(inode)}: {e.Message}", e);
        }
    }

    byte[] ValueOf(WriteTransaction tx, IncoreInode inode, AttrEntry entry, FileFork? loaded = null)
    {
        if (entry.Value is { } v) return v;
        try
        {
            var fork = loaded ?? FileFork.Load(tx, inode, attr: true);
            return AttrForkReader.ReadRemoteValue(entry, inode.Ino, Geo.MetaUuid, Geo.BlockSize, Source(tx, fork));
        }
        catch (AttrFormatException e)
        {
            throw new XfsWriteException(WriteErrorKind.Corrupt, $"{Where(inode)}: {e.Message}", e);
        }
    }

    /// <summary>Attr-fork blocks through the transaction (joined; magic and CRC checked by the verifier).</summary>
    AttrBlockSource Source(WriteTransaction tx, FileFork fork) => (logical, destination) =>
    {
        if (!fork.Extents.Lookup(logical, out var m, out _) || m.Unwritten)
            throw new AttrFormatException($"attr fork block {logical} is not mapped (or unwritten)");
        long daddr = DaddrOf(m.StartBlock);
        try
        {
            var buf = tx.ReadBuffer(daddr, Geo.BasicBlocksPerBlock, AttrBlockVerifier.Instance);
            buf.Span[..Geo.BlockSize].CopyTo(destination);
        }
        catch (CorruptionException e)
        {
            throw new AttrFormatException($"attr fork block {logical}: {e.Message}");
        }
        return daddr;
    };

    long DaddrOf(ulong fsbno) => Geo.AgBlockToDaddr(Geo.FsbToAgno(fsbno), Geo.FsbToAgbno(fsbno));

    // ------------------------------------------------------------------ writing

    /// <summary>Writes a new entry set into one locked inode's attr fork inside one transaction.</summary>
    sealed class ForkWriter(AttributeOperations ops, WriteTransaction tx, IncoreInode inode)
    {
        readonly XfsGeometry _geo = ops.Geo;
        byte[] Core => inode.Core;
        string Where => ops.Where(inode);
        int Literal => AttrForkGeometry.LiteralSize(Core.Length);

        public void Write(List<AttrEntry> entries, int shortformHint)
        {
            if (entries.Count == 0)
            {
                if (InodeFields.ForkOffset(Core) == 0) return;
                // Beside a btree data fork the kernel keeps an empty shortform fork (xfs_attr_sf_removename,
                // xfs_attr_shortform_allfit): the data btree then never fits the whole literal area's extent slots.
                if (InodeFields.Format(Core, attr: false) != ForkFormat.Btree)
                {
                    RemoveFork();
                    return;
                }
            }
            if (InodeFields.ForkOffset(Core) == 0) MoveInlineDataOutForNewFork(entries, shortformHint);
            if (ShortformAttributes.AllEligible(entries))
            {
                int bytes = ShortformAttributes.Size(entries);
                int forkoff = AttrForkGeometry.BytesFit(Core, bytes);
                if (forkoff != 0)
                {
                    ReleaseBlocks();
                    SetForkOffset(forkoff);
                    var fork = InodeFields.Fork(Core, attr: true);
                    ShortformAttributes.Write(fork, entries);
                    InodeFields.SetFormat(Core, attr: true, ForkFormat.Local);
                    InodeFields.SetExtents(Core, attr: true, 0);
                    return;
                }
            }
            EnsureBlockFork(shortformHint);
            WriteTree(entries);
        }

        /// <summary>
        /// xfs_bmap_add_attrfork: a new attr fork starts where xfs_attr_shortform_bytesfit puts the first attribute,
        /// else at the default offset. Inline data that would not fit below that offset moves out of the inode first,
        /// in this transaction (xfs_bmap_add_attrfork_local): a shortform directory becomes a block directory, an
        /// inline symlink target moves to a remote block. The fork is then created empty at that offset, and the
        /// entries are written as beside any extents data fork.
        /// </summary>
        void MoveInlineDataOutForNewFork(List<AttrEntry> entries, int shortformHint)
        {
            var d = new Dinode(Core);
            if (d.Format != ForkFormat.Local) return;
            if (shortformHint == 0 && ShortformAttributes.AllEligible(entries)) shortformHint = ShortformAttributes.Size(entries);
            int forkoff = shortformHint > 0 ? AttrForkGeometry.BytesFit(Core, shortformHint) : 0;
            if (forkoff == 0) forkoff = AttrForkGeometry.DefaultForkOffsetBytes(Core) >> 3;
            if (d.Size <= (ulong)forkoff * 8) return;
            int type = InodeFields.Mode(Core) & 0xF000;
            if (type == 0x4000)
            {
                new DirectoryEditor(tx, inode, ops.DirectoryReader, $"directory {inode.Ino}").MoveShortformOutOfInode();
            }
            else if (type == 0xA000)
            {
                if (d.Size > (ulong)d.DataFork.Length)
                    throw new XfsWriteException(WriteErrorKind.Corrupt, $"inode {inode.Ino}: an inline symlink of {d.Size} bytes in a data fork of {d.DataFork.Length}");
                byte[] target = d.DataFork[..(int)d.Size].ToArray();
                NamespaceOperations.WriteSymlinkTarget(tx, inode, target, remote: true, $"symlink {inode.Ino}");
            }
            else
            {
                throw new XfsWriteException(WriteErrorKind.Corrupt,
                    $"inode {inode.Ino}: inline data in an inode of type 0{Convert.ToString(type >> 12, 8)}, which only directories and symlinks have");
            }
            SetForkOffset(forkoff);
            InodeFields.Fork(Core, attr: true).Clear();
            InodeFields.SetFormat(Core, attr: true, ForkFormat.Extents);
            InodeFields.SetExtents(Core, attr: true, 0);
        }

        /// <summary>Unmaps and frees every block of an extents/btree attr fork (bmbt blocks included).</summary>
        void ReleaseBlocks()
        {
            if (InodeFields.ForkOffset(Core) == 0 || InodeFields.Format(Core, attr: true) is not (ForkFormat.Extents or ForkFormat.Btree)) return;
            var fork = FileFork.Load(tx, inode, attr: true);
            if (fork.Extents.Count == 0 && InodeFields.Format(Core, attr: true) == ForkFormat.Extents) return;
            var edit = new FileEdit(tx, inode, fork);
            edit.Unmap(0, BmbtExtent.MaxFileOffset);
            fork.Store();
        }

        /// <summary>xfs_attr_fork_remove: no attr fork at all (forkoff 0, format EXTENTS, no extents).</summary>
        void RemoveFork()
        {
            if (InodeFields.ForkOffset(Core) == 0) return;
            ReleaseBlocks();
            InodeFields.Fork(Core, attr: true).Clear();
            InodeFields.SetExtents(Core, attr: true, 0);
            SetForkOffset(0);
            InodeFields.SetFormat(Core, attr: true, ForkFormat.Extents);
        }

        /// <summary>Makes the attr fork an extents/btree fork (creating it where the kernel would, or from shortform).</summary>
        void EnsureBlockFork(int shortformHint)
        {
            if (InodeFields.ForkOffset(Core) == 0)
            {
                int forkoff = shortformHint > 0 ? AttrForkGeometry.BytesFit(Core, shortformHint) : 0;
                if (forkoff == 0) forkoff = AttrForkGeometry.DefaultForkOffsetBytes(Core) >> 3;
                SetForkOffset(forkoff);
                InodeFields.Fork(Core, attr: true).Clear();
                InodeFields.SetFormat(Core, attr: true, ForkFormat.Extents);
                InodeFields.SetExtents(Core, attr: true, 0);
            }
            else if (InodeFields.Format(Core, attr: true) == ForkFormat.Local)
            {
                InodeFields.Fork(Core, attr: true).Clear();
                InodeFields.SetFormat(Core, attr: true, ForkFormat.Extents);
                InodeFields.SetExtents(Core, attr: true, 0);
            }
        }

        /// <summary>
        /// Moves di_forkoff. The data fork keeps its content: inline data and extents must fit the new size
        /// (extents that do not are converted to a btree, as xfs_bmap_add_attrfork does), a btree root is laid out
        /// again for the new size (its pointers sit after maxrecs keys). The attr fork area is cleared. A remote
        /// symlink target that the grown data fork holds goes back inline
        /// (<see cref="NamespaceOperations.MoveRemoteTargetInline"/>).
        /// </summary>
        void SetForkOffset(int forkoff)
        {
            int old = InodeFields.ForkOffset(Core);
            if (old == forkoff) return;
            int oldSize = old == 0 ? Literal : old * 8;
            int newSize = forkoff == 0 ? Literal : forkoff * 8;
            var d = new Dinode(Core);
            var format = d.Format;
            FileFork? convert = null;
            switch (format)
            {
                case ForkFormat.Local:
                    // MoveInlineDataOutForNewFork moved inline data that does not fit a new fork's offset; a
                    // forkoff moved later is bounded by the data fork's size (xfs_attr_shortform_bytesfit).
                    if (d.Size > (ulong)newSize)
                        throw new XfsWriteException(WriteErrorKind.Corrupt,
                            $"inode {inode.Ino}: its inline data ({d.Size} bytes) does not fit a data fork of {newSize} bytes");
                    break;
                case ForkFormat.Extents:
                    if (d.DataExtents * Dinode.ExtentSize > (ulong)newSize) convert = FileFork.Load(tx, inode, attr: false);
                    break;
                case ForkFormat.Btree:
                    RelayoutDataRoot(oldSize, newSize);
                    break;
            }
            var lit = Core.AsSpan(Dinode.CoreSize, Literal);
            Core[82] = (byte)forkoff;
            if (forkoff != 0) lit[newSize..].Clear();
            if (newSize > oldSize && format != ForkFormat.Btree) lit[oldSize..newSize].Clear();
            convert?.Store();
            // A symlink target moved out for the fork comes back when the data fork holds it again.
            if (newSize > oldSize && format == ForkFormat.Extents) NamespaceOperations.MoveRemoteTargetInline(tx, inode, Where);
        }

        void RelayoutDataRoot(int oldSize, int newSize)
        {
            var lit = Core.AsSpan(Dinode.CoreSize, Literal);
            var oldRoot = lit[..oldSize].ToArray();
            int level = BinaryPrimitives.ReadUInt16BigEndian(oldRoot);
            int recs = BinaryPrimitives.ReadUInt16BigEndian(oldRoot.AsSpan(2));
            int oldMax = Dinode.BmbtRootMaxRecords(oldSize), newMax = Dinode.BmbtRootMaxRecords(newSize);
            if (recs > newMax)
                throw new XfsWriteException(WriteErrorKind.NotSupported,
                    $"inode {inode.Ino}: its data-fork btree root ({recs} records) does not fit beside a new attribute fork, and the engine does not grow the tree here");
            var root = lit[..newSize];
            root.Clear();
            BinaryPrimitives.WriteUInt16BigEndian(root, (ushort)level);
            BinaryPrimitives.WriteUInt16BigEndian(root[2..], (ushort)recs);
            for (int i = 0; i < recs; i++)
            {
                oldRoot.AsSpan(4 + i * 8, 8).CopyTo(root[(4 + i * 8)..]);
                oldRoot.AsSpan(4 + oldMax * 8 + i * 8, 8).CopyTo(root[(4 + newMax * 8 + i * 8)..]);
            }
            if (newSize > oldSize) lit[newSize..].Clear();
        }

        /// <summary>Lays the entries out as one leaf or a node tree, maps exactly the blocks that needs and writes them.</summary>
        void WriteTree(List<AttrEntry> entries)
        {
            int bs = _geo.BlockSize;
            var fork = FileFork.Load(tx, inode, attr: true);
            var leaves = AttrTreeLayout.PackLeaves(entries, bs);
            int nodeBlocks = AttrTreeLayout.NodeBlocks(leaves.Count, bs);
            if (leaves.Count > 1 && NodeDepth(leaves.Count, bs) >= AttrFormat.MaxNodeDepth)
                throw new XfsWriteException(WriteErrorKind.NoSpace, $"{Where}: {entries.Count} attributes need a da btree deeper than {AttrFormat.MaxNodeDepth} levels");

            // Logical blocks: remote values left untouched keep theirs; the root is block 0, other da blocks take the
            // lowest free ones, new remote values the first run of free blocks long enough (xfs_bmap_first_unused).
            var taken = new SortedSet<uint>();
            var remotes = new List<AttrEntry>();
            foreach (var e in entries)
            {
                if (AttrFormat.IsLocalInLeaf(e.Name.Length, e.ValueLength, bs)) continue;
                if (e.Value is null)
                {
                    if (e.RemoteBlock == 0) throw new XfsWriteException(WriteErrorKind.Corrupt, $"{Where}: {e} has no value block");
                    int n = AttrFormat.RemoteBlocks(e.ValueLength, bs);
                    for (uint b = e.RemoteBlock; b < e.RemoteBlock + (uint)n; b++)
                    {
                        if (b == 0 || !taken.Add(b)) throw new XfsWriteException(WriteErrorKind.Corrupt, $"{Where}: remote values overlap at block {b}");
                    }
                }
                else
                {
                    remotes.Add(e);
                }
            }
            var daBlocks = new List<uint>(leaves.Count + nodeBlocks);
            uint next = 0;
            for (int i = 0; i < leaves.Count + nodeBlocks; i++)
            {
                while (taken.Contains(next)) next++;
                daBlocks.Add(next);
                taken.Add(next);
            }
            if (daBlocks[0] != 0) throw new XfsWriteException(WriteErrorKind.Corrupt, $"{Where}: block 0 is held by a remote value");
            foreach (var e in remotes)
            {
                e.RemoteBlock = FirstUnused(taken, AttrFormat.RemoteBlocks(e.ValueLength, bs));
                for (uint b = 0; b < AttrFormat.RemoteBlocks(e.ValueLength, bs); b++) taken.Add(e.RemoteBlock + b);
            }

            Remap(fork, taken);

            // Node levels above the leaves, then the blocks: root (block 0) first in daBlocks order.
            var levels = new List<List<List<int>>>();
            int count = leaves.Count;
            while (count > 1)
            {
                var split = AttrTreeLayout.SplitLevel(count, bs);
                var groups = new List<List<int>>();
                int c = 0;
                foreach (int n in split)
                {
                    groups.Add(Enumerable.Range(c, n).ToList());
                    c += n;
                }
                levels.Add(groups);
                count = split.Count;
            }
            // Block numbers: root = daBlocks[0]; then the other nodes from the top level down; then the leaves.
            int k = 0;
            var nodeNumbers = new List<uint[]>();
            for (int lv = levels.Count - 1; lv >= 0; lv--) nodeNumbers.Insert(0, levels[lv].Select(_ => daBlocks[k++]).ToArray());
            var leafNumbers = leaves.Select(_ => daBlocks[k++]).ToArray();

            for (int i = 0; i < leaves.Count; i++)
            {
                uint forw = i + 1 < leaves.Count ? leafNumbers[i + 1] : 0, back = i > 0 ? leafNumbers[i - 1] : 0;
                var buf = NewBlock(fork, leafNumbers[i]);
                AttrBlocks.FormatLeaf(buf.Span[..bs], leaves[i], buf.Daddr, inode.Ino, _geo.MetaUuid, forw, back, 0);
                tx.LogBuffer(buf, 0, buf.Length);
            }
            var childNumbers = leafNumbers;
            var childLastHash = leaves.Select(l => l[^1].Hash).ToArray();
            for (int lv = 0; lv < levels.Count; lv++)
            {
                var numbers = nodeNumbers[lv];
                var hashes = new uint[numbers.Length];
                for (int i = 0; i < numbers.Length; i++)
                {
                    var children = levels[lv][i];
                    var items = children.Select(c => (childLastHash[c], childNumbers[c])).ToList();
                    uint forw = i + 1 < numbers.Length ? numbers[i + 1] : 0, back = i > 0 ? numbers[i - 1] : 0;
                    var buf = NewBlock(fork, numbers[i]);
                    AttrBlocks.FormatNode(buf.Span[..bs], lv + 1, items, buf.Daddr, inode.Ino, _geo.MetaUuid, forw, back, 0);
                    tx.LogBuffer(buf, 0, buf.Length);
                    hashes[i] = items[^1].Item1;
                }
                childNumbers = numbers;
                childLastHash = hashes;
            }
            foreach (var e in remotes)
            {
                int n = AttrFormat.RemoteBlocks(e.ValueLength, bs);
                for (int i = 0; i < n; i++)
                {
                    var buf = NewBlock(fork, e.RemoteBlock + (uint)i);
                    AttrBlocks.FormatRemote(buf.Span[..bs], e.Value, i, buf.Daddr, inode.Ino, _geo.MetaUuid);
                    tx.LogBuffer(buf, 0, buf.Length);
                }
            }
        }

        static int NodeDepth(int leaves, int bs)
        {
            int depth = 1;
            for (int n = leaves; n > 1; n = AttrTreeLayout.SplitLevel(n, bs).Count) depth++;
            return depth;
        }

        static uint FirstUnused(SortedSet<uint> taken, int length)
        {
            uint start = 0;
            foreach (uint b in taken)
            {
                if (b >= start + (uint)length) break;
                if (b >= start) start = b + 1;
            }
            return start;
        }

        /// <summary>Unmaps (and frees) the mapped blocks outside <paramref name="wanted"/> and maps new blocks
        /// under the wanted ones that are holes; the fork is stored (extents or btree) when it changed.</summary>
        void Remap(FileFork fork, SortedSet<uint> wanted)
        {
            var edit = new FileEdit(tx, inode, fork);
            // Runs of wanted blocks, and the holes among them.
            var runs = new List<(ulong Start, ulong Length)>();
            foreach (uint b in wanted)
            {
                if (runs.Count > 0 && runs[^1].Start + runs[^1].Length == b) runs[^1] = (runs[^1].Start, runs[^1].Length + 1);
                else runs.Add((b, 1));
            }
            long missing = 0;
            foreach (var (start, length) in runs)
            {
                foreach (var m in fork.Extents.MappingsIn(start, length)) missing -= (long)m.BlockCount;
                missing += (long)length;
            }
            int worstRecords = 2 * runs.Count + 2 * fork.Extents.Count + 2;
            long reserve = missing + fork.WorstCaseNewBmbtBlocks(worstRecords);
            if (reserve > 0) tx.EnsureSpace(reserve, AllocationPurpose.FileData);

            // Unmap what is mapped but not wanted.
            var unwanted = new List<(ulong, ulong)>();
            ulong cursor = 0;
            foreach (var (start, length) in runs)
            {
                if (start > cursor) unwanted.Add((cursor, start - cursor));
                cursor = start + length;
            }
            unwanted.Add((cursor, BmbtExtent.MaxFileOffset - cursor));
            foreach (var (start, length) in unwanted)
            {
                if (fork.Extents.MappingsIn(start, length).Count > 0) edit.Unmap(start, length);
            }
            // Map the holes.
            ulong hint = ops.InodeFsbno(inode);
            foreach (var (start, length) in runs) MapHoles(tx, edit, fork, start, length, ref hint, Where);
            if (edit.MappingChanged || InodeFields.Format(Core, attr: true) is not (ForkFormat.Extents or ForkFormat.Btree)) fork.Store();
        }

        BlockBuffer NewBlock(FileFork fork, uint logical)
        {
            if (!fork.Extents.Lookup(logical, out var m, out _)) throw new InvalidOperationException($"{Where}: block {logical} was not mapped");
            return tx.GetNewBuffer(ops.DaddrOf(m.StartBlock), _geo.BasicBlocksPerBlock, AttrBlockVerifier.Instance);
        }
    }
}
