using System.Buffers.Binary;
using System.Collections.Concurrent;
using Xfbtree.Xfs.Format;
using Xfbtree.Xfs.Write.Engine;

namespace Xfbtree.Xfs.Write.Namespace;

internal sealed partial class NamespaceOperations
{
    /// <summary>AGI: agi_unlinked[64], the heads of the unlinked-inode hash buckets (agino % 64).</summary>
    const int AgiUnlinkedOffset = Agi.UnlinkedOffset, UnlinkedBuckets = Agi.UnlinkedBuckets;
    /// <summary>Inodes this instance holds references on (released at <see cref="ReleaseAll"/>).</summary>
    readonly ConcurrentDictionary<ulong, IncoreInode> _held = new();

    /// <summary>
    /// Takes a reference on the incarnation <paramref name="handle"/> names (an open file; FUSE's lookup count): until
    /// the matching <see cref="Release"/>, the inode survives the removal of its last name (it waits on the AGI
    /// unlinked list, as XFS keeps open-but-unlinked files) and stays reachable through the handle. ESTALE when the
    /// inode was freed since the handle was made.
    /// </summary>
    public void Acquire(InodeHandle handle)
    {
        var inode = Engine.GetInode(handle.Ino);
        using (Engine.LockInodeForRead(inode))
        {
            CheckAlive(inode, handle.Generation, $"inode {handle.Ino}");
            Interlocked.Increment(ref inode.References);
            _held.TryAdd(handle.Ino, inode);
        }
    }

    /// <summary>
    /// Drops a reference taken by <see cref="Acquire"/>. The last one on an inode with no links left frees it (its
    /// blocks and the inode), taking it off the AGI unlinked list, in one transaction.
    /// </summary>
    public void Release(InodeHandle handle)
    {
        var inode = Engine.GetInode(handle.Ino);
        string where = $"inode {handle.Ino}";
        using (Engine.LockInodeForRead(inode))
        {
            CheckAlive(inode, handle.Generation, where);
            if (Volatile.Read(ref inode.References) <= 0) throw new XfsWriteException(WriteErrorKind.InvalidArgument, $"{where}: released more often than acquired");
            if (Volatile.Read(ref inode.References) > 1 || InodeCore.Nlink(inode.Core) > 0)
            {
                if (Interlocked.Decrement(ref inode.References) == 0) _held.TryRemove(handle.Ino, out _);
                return;
            }
        }
        bool dropped = false;
        try
        {
            Engine.ExecuteDeferredFree($"release {where}", inode.Ino, tx =>
            {
                tx.LockInodes(inode);
                CheckAlive(inode, handle.Generation, where);
                bool last = Volatile.Read(ref inode.References) == 1 && InodeCore.Nlink(inode.Core) == 0;
                if (last)
                {
                    RemoveFromUnlinkedList(tx, inode, where);
                    FreeInode(tx, inode, where);
                }
                // Last statement of the body: a lock restart cannot follow, only the commit (undone below).
                Interlocked.Decrement(ref inode.References);
                dropped = true;
            });
        }
        catch
        {
            if (dropped) Interlocked.Increment(ref inode.References);
            throw;
        }
        if (Volatile.Read(ref inode.References) == 0) _held.TryRemove(handle.Ino, out _);
    }

    /// <summary>Releases every reference this instance still holds (a clean close: the kernel evicts every inode at
    /// unmount, freeing the unlinked ones).</summary>
    public void ReleaseAll()
    {
        foreach (var (ino, inode) in _held)
        {
            while (true)
            {
                uint generation;
                using (Engine.LockInodeForRead(inode))
                {
                    if (Volatile.Read(ref inode.References) <= 0 || new Dinode(inode.Core).IsFree) break;
                    generation = InodeAttributeFields.Generation(inode.Core);
                }
                Release(new InodeHandle(ino, generation));
            }
            _held.TryRemove(ino, out _);
        }
    }

    /// <summary>An inode reached 0 links: freed now, or, while someone holds it, kept on the AGI unlinked list
    /// (xfs_iunlink) until the last <see cref="Release"/>.</summary>
    void ReleaseLastLink(WriteTransaction tx, IncoreInode child, string where)
    {
        if (Volatile.Read(ref child.References) > 0) AddToUnlinkedList(tx, child);
        else FreeInode(tx, child, where);
    }

    (uint Agno, uint Agino, int Bucket) UnlinkedPosition(ulong ino)
    {
        var geo = Engine.Geometry;
        uint agino = geo.InoToAgino(ino);
        return (geo.InoToAgno(ino), agino, (int)(agino % UnlinkedBuckets));
    }

    /// <summary>xfs_iunlink: the locked inode goes to the head of its AGI bucket; its di_next_unlinked names the old head.</summary>
    void AddToUnlinkedList(WriteTransaction tx, IncoreInode inode)
    {
        var (agno, agino, bucket) = UnlinkedPosition(inode.Ino);
        if (!tx.HoldsAg(agno)) tx.LockAg(agno);
        var agi = tx.ReadAgHeader(AgHeaderKind.Agi, agno);
        int at = AgiUnlinkedOffset + bucket * 4;
        uint head = BinaryPrimitives.ReadUInt32BigEndian(agi.Span[at..]);
        if (head == agino) throw new XfsWriteException(WriteErrorKind.Corrupt, $"inode {inode.Ino} is already on the unlinked list of AG {agno}");
        InodeAttributeFields.SetNextUnlinked(inode.Core, head);
        tx.LogInode(inode);
        BinaryPrimitives.WriteUInt32BigEndian(agi.Span[at..], agino);
        tx.LogBuffer(agi, at, 4);
    }

    /// <summary>The online link count repair gives a locked inode with nlink 0 its links back: it leaves its AGI
    /// unlinked list when it is on one (as upstream's nlinks repair does); false when it was on none.</summary>
    internal bool TakeOffUnlinkedList(WriteTransaction tx, IncoreInode inode, string where) => RemoveFromUnlinkedList(tx, inode, where, mustBeOnList: false);

    /// <summary>xfs_iunlink_remove: takes the locked inode off its AGI bucket (the head, or after the inode before it
    /// in the chain, which is locked too) and clears its di_next_unlinked. An inode not on the bucket's chain is
    /// corruption, unless <paramref name="mustBeOnList"/> is false (then false is returned, its pointer cleared).</summary>
    bool RemoveFromUnlinkedList(WriteTransaction tx, IncoreInode inode, string where, bool mustBeOnList = true)
    {
        var geo = Engine.Geometry;
        var (agno, agino, bucket) = UnlinkedPosition(inode.Ino);
        if (!tx.HoldsAg(agno)) tx.LockAg(agno);
        var agi = tx.ReadAgHeader(AgHeaderKind.Agi, agno);
        int at = AgiUnlinkedOffset + bucket * 4;
        uint head = BinaryPrimitives.ReadUInt32BigEndian(agi.Span[at..]);
        uint next = InodeAttributeFields.NextUnlinked(inode.Core);
        if (head == agino)
        {
            BinaryPrimitives.WriteUInt32BigEndian(agi.Span[at..], next);
            tx.LogBuffer(agi, at, 4);
        }
        else
        {
            uint cur = head;
            for (int steps = 0; ; steps++)
            {
                if (cur == Agi.NullAgino && !mustBeOnList)
                {
                    if (next != Agi.NullAgino)
                    {
                        InodeAttributeFields.SetNextUnlinked(inode.Core, Agi.NullAgino);
                        tx.LogInode(inode);
                    }
                    return false;
                }
                if (cur == Agi.NullAgino || steps > 1 << 22 || !geo.IsValidIno(geo.AginoToIno(agno, cur)))
                    throw new XfsWriteException(WriteErrorKind.Corrupt, $"{where}: not found on unlinked bucket {bucket} of AG {agno}");
                var prev = Engine.GetInode(geo.AginoToIno(agno, cur));
                tx.LockInodes(prev); // after the AG lock: tried, and on contention the transaction restarts
                uint prevNext = InodeAttributeFields.NextUnlinked(prev.Core);
                if (prevNext == agino)
                {
                    InodeAttributeFields.SetNextUnlinked(prev.Core, next);
                    tx.LogInode(prev);
                    break;
                }
                cur = prevNext;
            }
        }
        InodeAttributeFields.SetNextUnlinked(inode.Core, Agi.NullAgino);
        tx.LogInode(inode);
        return true;
    }

    /// <summary>
    /// What the kernel's log recovery does with the AGI unlinked lists after a crash: every inode left on them (held
    /// when the image was last open, its last name already gone) is freed, blocks and all; an inode on a list that
    /// still has links is only taken off. One transaction per inode. Returns how many inodes were freed.
    /// </summary>
    public int ClearUnlinkedInodes()
    {
        var geo = Engine.Geometry;
        int freed = 0;
        for (uint agno = 0; agno < geo.AgCount; agno++)
        {
            if (Engine.Ag(agno).IsSick) continue;
            uint capturedAgno = agno;
            uint[] heads = Engine.Execute($"read the unlinked buckets of AG {agno}", tx =>
            {
                tx.LockAg(capturedAgno);
                var agi = tx.ReadAgHeader(AgHeaderKind.Agi, capturedAgno);
                var all = new uint[UnlinkedBuckets];
                for (int b = 0; b < UnlinkedBuckets; b++) all[b] = BinaryPrimitives.ReadUInt32BigEndian(agi.Span[(AgiUnlinkedOffset + b * 4)..]);
                return all;
            });
            for (int bucket = 0; bucket < UnlinkedBuckets; bucket++)
            {
                if (heads[bucket] == Agi.NullAgino) continue;
                for (int guard = 0; ; guard++)
                {
                    int capturedBucket = bucket;
                    uint head = Engine.Execute($"read unlinked bucket {bucket} of AG {agno}", tx =>
                    {
                        tx.LockAg(capturedAgno);
                        var agi = tx.ReadAgHeader(AgHeaderKind.Agi, capturedAgno);
                        return BinaryPrimitives.ReadUInt32BigEndian(agi.Span[(AgiUnlinkedOffset + capturedBucket * 4)..]);
                    });
                    if (head == Agi.NullAgino) break;
                    ulong ino = geo.AginoToIno(agno, head);
                    if (head % UnlinkedBuckets != (uint)bucket || !geo.IsValidIno(ino) || guard > 1 << 22)
                        throw new XfsWriteException(WriteErrorKind.Corrupt, $"AG {agno} unlinked bucket {bucket} names agino {head}");
                    var inode = Engine.GetInode(ino);
                    string where = $"unlinked inode {ino}";
                    bool wasFreed = Engine.Execute($"recover {where}", tx =>
                    {
                        tx.LockInodes(inode);
                        if (new Dinode(inode.Core).IsFree) throw new XfsWriteException(WriteErrorKind.Corrupt, $"{where} is free");
                        RemoveFromUnlinkedList(tx, inode, where);
                        if (InodeCore.Nlink(inode.Core) > 0) return false;
                        FreeInode(tx, inode, where);
                        return true;
                    });
                    if (wasFreed) freed++;
                }
            }
        }
        return freed;
    }
}
