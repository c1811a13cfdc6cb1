using Xfbtree.Xfs.Write.Engine;

namespace Xfbtree.Xfs.Write.Files;

/// <summary>
/// The decoded data-fork extent list of in-core inodes (the kernel keeps its iext tree in the inode the same way),
/// so an operation on a btree-format file does not walk every bmbt block again. An entry is valid only while the
/// inode's bytes equal the stamp taken with it (CRC and LSN excepted): every change of the mapping goes through
/// <see cref="FileFork.Store"/>, which bumps di_changecount and re-stamps, and a cancelled transaction restores the
/// inode bytes, which then no longer match. Callers hold the inode lock. The entry lives in the in-core inode
/// (<see cref="IncoreInode.DataForkCache"/>), so it goes when the inode cache lets the inode go.
/// </summary>
internal static class ForkCache
{
    /// <summary>
    /// The cached list itself and the bmbt blocks when the inode still has the bytes they were taken with. Readers
    /// under the inode lock share the list without a copy; a writer (holding the inode exclusively) edits a snapshot
    /// that takes the records at its first edit, which leaves this entry without records, so it is never read again:
    /// a copy per operation cost O(extents) each time, a large part of a small write to a file of thousands of extents.
    /// </summary>
    public static bool TryGetShared(IncoreInode inode, out ExtentList extents, out ulong[] bmbtBlocks)
    {
        // A list whose records an edit took (that operation's store puts its own list here; a cancel does not).
        if (inode.DataForkCache is { } e && e.Extents.HasRecords && SameInode(e.Stamp, inode.Core))
        {
            extents = e.Extents;
            bmbtBlocks = e.BmbtBlocks;
            return true;
        }
        extents = null!;
        bmbtBlocks = [];
        return false;
    }

    /// <summary>Remembers a list that matches the inode's current bytes; the caller never changes it afterwards.</summary>
    public static void PutShared(IncoreInode inode, ExtentList extents, IEnumerable<ulong> bmbtBlocks)
        => inode.DataForkCache = new ForkCacheEntry((byte[])inode.Core.Clone(), extents, bmbtBlocks.ToArray());

    public static void Forget(IncoreInode inode) => inode.DataForkCache = null;

    /// <summary>Byte equality except the CRC (100..103) and the LSN (112..119), which the commit may rewrite.</summary>
    static bool SameInode(byte[] stamp, byte[] core)
    {
        if (stamp.Length != core.Length) return false;
        var a = stamp.AsSpan();
        var b = core.AsSpan();
        return a[..100].SequenceEqual(b[..100]) && a[104..112].SequenceEqual(b[104..112]) && a[120..].SequenceEqual(b[120..]);
    }
}

/// <summary>One inode's cached data-fork mapping and the inode bytes it was taken with.</summary>
internal sealed class ForkCacheEntry(byte[] stamp, ExtentList extents, ulong[] bmbtBlocks)
{
    public byte[] Stamp { get; } = stamp;
    public ExtentList Extents { get; } = extents;
    public ulong[] BmbtBlocks { get; } = bmbtBlocks;
}
