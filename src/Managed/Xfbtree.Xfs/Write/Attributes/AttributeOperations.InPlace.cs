using Xfbtree.Buffers;
using Xfbtree.Xfs.Attributes;
using Xfbtree.Xfs.Format;
using Xfbtree.Xfs.Write.Engine;
using Xfbtree.Xfs.Write.Files;

namespace Xfbtree.Xfs.Write.Attributes;

/// <summary>The in-place path of a change to a leaf- or node-form attr fork (docs/attributes.md, "Writing a change").</summary>
internal sealed partial class AttributeOperations
{
    long inPlaceChanges;

    /// <summary>Changes made in place since the engine opened (a test hook: proves the path was taken).</summary>
    internal long InPlaceChanges => Interlocked.Read(ref inPlaceChanges);

    long leafGets;

    /// <summary>getxattr calls answered from one leaf since the engine opened (a test hook).</summary>
    internal long LeafGets => Interlocked.Read(ref leafGets);

    /// <summary>
    /// Makes the change (<paramref name="replacement"/> set, or the name removed when it is null) inside the one
    /// leaf block that holds the name's hash, when it stays there: the leaf is found by hash (block 0 of a leaf
    /// fork; a descent of the da btree, every block checked, in a node fork), the entry removed, added or replaced
    /// in that block (compacted when its free map is too fragmented), the remote value blocks of that entry alone
    /// allocated or freed, and the hash keys of the ancestors fixed when the leaf's largest hash moved. False,
    /// with nothing changed, when the change needs the whole-fork rewrite: the entry does not fit the leaf, the leaf
    /// would be left empty or small enough for the kernel to join it with a sibling, a leaf fork's result would fit
    /// shortform, the name may lie in the next leaf (equal hashes across a leaf boundary), the leaf holds half-made
    /// (INCOMPLETE) entries, or the keys above the leaf do not match it. The errors of the syscall (EEXIST,
    /// ENODATA) are thrown as the whole path would.
    /// </summary>
    bool TryChangeInPlace(WriteTransaction tx, IncoreInode inode, XattrName name, AttrEntry? replacement, XattrSetFlags flags, string op)
    {
        var core = inode.Core;
        if (!HasTreeFork(core)) return false;
        var fork = FileFork.Load(tx, inode, attr: true);
        if (fork.Extents.Count == 0) return false;
        int bs = Geo.BlockSize;
        uint hash = DaHash.HashName(name.Name);
        try
        {
            if (FindLeaf(tx, inode, fork, hash) is not { } located) return false;
            var (path, leafBuffer, logical, leaf) = located;
            var leafBlock = leafBuffer.Span[..bs];
            var entries = leaf.Entries;
            if (entries.Count == 0) return false;
            foreach (var e in entries)
            {
                if ((e.Flags & AttrFormat.FlagIncomplete) != 0) return false;
            }
            uint oldLast = entries[^1].Hash;
            int found = -1;
            for (int i = 0; i < entries.Count; i++)
            {
                if (entries[i].Hash == hash && entries[i].Matches(name.Flags, name.Name)) { found = i; break; }
            }
            // Equal hashes may continue into the next leaf: only the whole path looks there.
            if (found < 0 && oldLast == hash && leaf.Forw != 0) return false;

            if (found >= 0 && (flags & XattrSetFlags.Create) != 0)
                throw new XfsWriteException(WriteErrorKind.Exists, $"{op} {name.FullName}: inode {inode.Ino} has it already (XATTR_CREATE)");
            if (found < 0 && (replacement is null || (flags & XattrSetFlags.Replace) != 0))
            {
                string why = replacement is null ? "" : " (XATTR_REPLACE)";
                throw new XfsWriteException(WriteErrorKind.NoData, $"{op} {name.FullName}: inode {inode.Ino} has no such attribute{why}");
            }

            int remaining = entries.Count - (found >= 0 ? 1 : 0) + (replacement is null ? 0 : 1);
            if (remaining == 0) return false;
            if (path.Count == 0)
            {
                // A leaf fork whose result fits shortform goes back into the inode (xfs_attr_shortform_allfit).
                var result = new List<AttrEntry>(entries);
                if (found >= 0) result.RemoveAt(found);
                if (replacement is not null) result.Add(replacement);
                if (ShortformAttributes.AllEligible(result) && AttrForkGeometry.BytesFit(core, ShortformAttributes.Size(result)) != 0) return false;
            }

            // The new remote value's blocks: the first run of unmapped logical blocks long enough (xfs_bmap_first_unused).
            int newRemoteBlocks = 0;
            if (replacement is not null && !AttrFormat.IsLocalInLeaf(replacement.Name.Length, replacement.ValueLength, bs))
            {
                newRemoteBlocks = AttrFormat.RemoteBlocks(replacement.ValueLength, bs);
                replacement.RemoteBlock = FirstUnusedRun(fork.Extents, newRemoteBlocks, inode);
            }

            // Edit a copy: a change that does not fit leaves the leaf as it was for the whole path.
            var edited = new byte[bs];
            var scratch = new byte[bs];
            leafBlock.CopyTo(edited);
            if (found >= 0) AttrLeafEditor.Remove(edited, found);
            if (replacement is not null && !AttrLeafEditor.TryAdd(edited, AttrLeafEditor.InsertIndex(edited, replacement.Hash), replacement, scratch)) return false;
            // A removal that leaves the leaf small enough for the kernel to join it with a sibling: the rewrite
            // repacks the fork (and so a shrinking fork passes through the forms the kernel's would).
            if (replacement is null && path.Count > 0 && AttrLeafEditor.BytesInUse(edited) <= bs / 2)
            {
                foreach (uint sibling in (ReadOnlySpan<uint>)[leaf.Forw, leaf.Back])
                {
                    if (sibling == 0) continue;
                    var buf = ReadForkBlock(tx, fork, sibling);
                    if (AttrBlocks.CheckDaHeader(buf.Span[..bs], AttrFormat.LeafMagic, buf.Daddr, inode.Ino, Geo.MetaUuid) is { } bad)
                        throw new AttrFormatException($"attr leaf {sibling} (a sibling of leaf {logical}): {bad}");
                    if (AttrLeafEditor.WouldJoin(edited, buf.Span[..bs])) return false;
                }
            }

            // From here on the change is made (a failure cancels the transaction).
            var old = found >= 0 ? entries[found] : null;
            if (newRemoteBlocks > 0 || (old is not null && old.RemoteBlock != 0))
            {
                // New value blocks, and bmbt blocks for the records they add or an unmap in mid-extent splits off.
                tx.EnsureSpace(newRemoteBlocks + fork.WorstCaseNewBmbtBlocks(2 * newRemoteBlocks + 2), AllocationPurpose.FileData);
                var edit = new FileEdit(tx, inode, fork);
                if (newRemoteBlocks > 0)
                {
                    ulong hint = InodeFsbno(inode);
                    MapHoles(tx, edit, fork, replacement!.RemoteBlock, (ulong)newRemoteBlocks, ref hint, Where(inode));
                    for (int i = 0; i < newRemoteBlocks; i++)
                    {
                        var buf = NewForkBlock(tx, fork, replacement.RemoteBlock + (uint)i, inode);
                        AttrBlocks.FormatRemote(buf.Span[..bs], replacement.Value, i, buf.Daddr, inode.Ino, Geo.MetaUuid);
                        tx.LogBuffer(buf, 0, buf.Length);
                    }
                }
                if (old is not null && old.RemoteBlock != 0)
                    edit.Unmap(old.RemoteBlock, (ulong)AttrFormat.RemoteBlocks(old.ValueLength, bs));
                if (edit.MappingChanged) fork.Store();
            }
            edited.CopyTo(leafBlock);
            tx.LogBuffer(leafBuffer, 0, bs);

            // xfs_da3_fixhashpath: a new largest hash goes up while the changed entry is the last of its node.
            uint newLast = AttrLeafEditor.LastHash(leafBlock);
            for (int p = path.Count - 1; p >= 0 && newLast != oldLast; p--)
            {
                var (buf, at, count) = path[p];
                AttrNodeEditor.SetHash(buf.Span[..bs], at, newLast);
                tx.LogBuffer(buf, 0, bs);
                if (at != count - 1) break;
            }
            Interlocked.Increment(ref inPlaceChanges);
            return true;
        }
        catch (AttrFormatException e)
        {
            throw new XfsWriteException(WriteErrorKind.Corrupt, $"{Where(inode)}: {e.Message}", e);
        }
    }

    static bool HasTreeFork(byte[] core)
        => InodeFields.ForkOffset(core) != 0 && InodeFields.Format(core, attr: true) is ForkFormat.Extents or ForkFormat.Btree;

    /// <summary>
    /// The leaf that holds <paramref name="hash"/> and the node path to it: block 0 of a leaf fork; in a node fork
    /// a descent from the root taking the first child whose key is at least the hash (else the last), every block
    /// checked (magic, CRC, header, levels decreasing, at most <see cref="AttrFormat.MaxNodeDepth"/> levels). Null
    /// when a key above the leaf is not the largest hash below it: only the whole-fork path trusts such a tree.
    /// </summary>
    (List<(BlockBuffer Buffer, int Index, int Count)> Path, BlockBuffer Leaf, uint Logical, AttrLeaf Parsed)? FindLeaf(
        WriteTransaction tx, IncoreInode inode, FileFork fork, uint hash)
    {
        int bs = Geo.BlockSize;
        var path = new List<(BlockBuffer Buffer, int Index, int Count)>(AttrFormat.MaxNodeDepth);
        uint logical = 0;
        uint expectedLast = 0;
        int level = int.MaxValue;
        while (true)
        {
            var buf = ReadForkBlock(tx, fork, logical);
            var block = buf.Span[..bs];
            if (AttrFormat.DaMagic(block) != AttrFormat.NodeMagic)
            {
                if (path.Count > 0 && level != 1) throw new AttrFormatException($"attr block {logical} below a node of level {level} is not a node");
                var leaf = AttrBlocks.ParseLeaf(block, buf.Daddr, inode.Ino, Geo.MetaUuid);
                if (path.Count == 0 && (leaf.Forw != 0 || leaf.Back != 0)) throw new AttrFormatException("attr root leaf has siblings");
                if (path.Count > 0 && (leaf.Entries.Count == 0 || leaf.Entries[^1].Hash != expectedLast)) return null;
                return (path, buf, logical, leaf);
            }
            if (path.Count >= AttrFormat.MaxNodeDepth - 1) throw new AttrFormatException($"attr da btree deeper than {AttrFormat.MaxNodeDepth} levels");
            var node = AttrBlocks.ParseNode(block, buf.Daddr, inode.Ino, Geo.MetaUuid);
            if (node.Level >= level) throw new AttrFormatException($"attr node at block {logical} has level {node.Level} below a node of level {level}");
            if (logical == 0 && (node.Forw != 0 || node.Back != 0)) throw new AttrFormatException("attr root node has siblings");
            if (path.Count > 0 && node.Entries[^1].Hash != expectedLast) return null;
            level = node.Level;
            int at = AttrNodeEditor.ChildIndexFor(node, hash);
            path.Add((buf, at, node.Entries.Count));
            expectedLast = node.Entries[at].Hash;
            logical = node.Entries[at].Child;
            if (logical == 0) throw new AttrFormatException("attr node points at the root");
        }
    }

    /// <summary>
    /// getxattr of a leaf- or node-form fork through the one leaf that holds the name's hash (its value read,
    /// remote blocks included). False, to ask the whole-fork read, when that leaf cannot answer alone: equal hashes
    /// run on into the next leaf, or the keys above the leaf do not match it. ENODATA when it is absent.
    /// </summary>
    bool TryGetFromLeaf(WriteTransaction tx, IncoreInode inode, XattrName name, out byte[] value)
    {
        value = [];
        if (!HasTreeFork(inode.Core)) return false;
        var fork = FileFork.Load(tx, inode, attr: true);
        if (fork.Extents.Count == 0) return false;
        uint hash = DaHash.HashName(name.Name);
        AttrLeaf leaf;
        try
        {
            if (FindLeaf(tx, inode, fork, hash) is not { } found) return false;
            leaf = found.Parsed;
        }
        catch (AttrFormatException e)
        {
            throw new XfsWriteException(WriteErrorKind.Corrupt, $"{Where(inode)}: {e.Message}", e);
        }
        foreach (var e in leaf.Entries)
        {
            if (e.Hash == hash && (e.Flags & AttrFormat.FlagIncomplete) == 0 && e.Matches(name.Flags, name.Name))
            {
                value = ValueOf(tx, inode, e, fork);
                Interlocked.Increment(ref leafGets);
                return true;
            }
        }
        if (leaf.Entries.Count > 0 && leaf.Entries[^1].Hash == hash && leaf.Forw != 0) return false;
        Interlocked.Increment(ref leafGets);
        throw new XfsWriteException(WriteErrorKind.NoData, $"getxattr {name.FullName}: inode {inode.Ino} has no such attribute");
    }

    /// <summary>First logical block of the lowest run of <paramref name="length"/> unmapped attr-fork blocks.</summary>
    uint FirstUnusedRun(ExtentList extents, int length, IncoreInode inode)
    {
        ulong start = 0;
        foreach (var e in extents.Items)
        {
            if (e.StartOffset >= start + (ulong)length) break;
            start = Math.Max(start, e.StartOffset + e.BlockCount);
        }
        if (start + (ulong)length > uint.MaxValue)
            throw new XfsWriteException(WriteErrorKind.NoSpace, $"{Where(inode)}: no run of {length} free logical blocks below 2^32");
        return (uint)start;
    }

    /// <summary>Maps newly allocated blocks under the holes of attr-fork blocks [start, +length).</summary>
    static void MapHoles(WriteTransaction tx, FileEdit edit, FileFork fork, ulong start, ulong length, ref ulong hint, string where)
    {
        ulong p = start, end = start + length;
        while (p < end)
        {
            if (fork.Extents.Lookup(p, out var m, out ulong hole))
            {
                if (m.Unwritten) throw new XfsWriteException(WriteErrorKind.Corrupt, $"{where}: block {p} is mapped unwritten");
                hint = m.StartBlock + m.BlockCount;
                p += m.BlockCount;
                continue;
            }
            ulong n = Math.Min(hole, end - p);
            var got = tx.Allocate(new AllocationRequest(hint, 1, (uint)Math.Min(n, ExtentList.MaxExtentLength), AllocationPurpose.FileData));
            edit.Map(new BmbtExtent(p, got.Fsbno, got.Length, Unwritten: false));
            hint = got.Fsbno + got.Length;
            p += got.Length;
        }
    }

    ulong InodeFsbno(IncoreInode inode)
    {
        uint agno = Geo.InoToAgno(inode.Ino);
        return Geo.AgbToFsb(agno, Geo.AginoToAgbno(Geo.InoToAgino(inode.Ino)));
    }

    /// <summary>An attr-fork block through the transaction (joined; magic and CRC checked by the verifier).</summary>
    BlockBuffer ReadForkBlock(WriteTransaction tx, FileFork fork, uint logical)
    {
        if (!fork.Extents.Lookup(logical, out var m, out _) || m.Unwritten)
            throw new AttrFormatException($"attr fork block {logical} is not mapped (or unwritten)");
        try
        {
            return tx.ReadBuffer(DaddrOf(m.StartBlock), Geo.BasicBlocksPerBlock, AttrBlockVerifier.Instance);
        }
        catch (CorruptionException e)
        {
            throw new AttrFormatException($"attr fork block {logical}: {e.Message}");
        }
    }

    BlockBuffer NewForkBlock(WriteTransaction tx, FileFork fork, uint logical, IncoreInode inode)
    {
        if (!fork.Extents.Lookup(logical, out var m, out _)) throw new InvalidOperationException($"{Where(inode)}: block {logical} was not mapped");
        return tx.GetNewBuffer(DaddrOf(m.StartBlock), Geo.BasicBlocksPerBlock, AttrBlockVerifier.Instance);
    }
}
