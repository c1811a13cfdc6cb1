namespace Xfbtree.Xfs.Scrub;

/// <summary>
/// The lists one AG's checks fill (free extents, special-owner records, refcount records, the shared-extent sweep),
/// lent to each AG in turn: they keep their capacity, so the scrub holds one AG's worth (the largest AG's) instead of
/// every AG's, and does not leave a large-object-heap array behind per AG.
/// </summary>
internal sealed class ScrubScratch
{
    /// <summary>Free extents the expected rmap set implies (packed, see <see cref="AgScrubContext.Pack"/>).</summary>
    public readonly List<ulong> FreeExtents = new();
    /// <summary>On-disk rmapbt records of OWN_AG, OWN_INODES and OWN_COW.</summary>
    public readonly List<(uint Start, uint Length)> OwnAg = new(), InodeChunks = new(), Cow = new();
    /// <summary>The refcountbt's shared-domain records, as walked.</summary>
    public readonly List<(uint Start, uint Length, uint Count)> RefcountShared = new();
    /// <summary>The refcountbt's CoW staging extents (adjacent ones merged).</summary>
    public readonly List<(uint Start, uint Length)> RefcountCow = new();
    /// <summary>Owners of data records that share blocks, met in this AG's expected set (reflink only).</summary>
    public readonly HashSet<ulong> SharedOwnersOfAg = new();
    /// <summary>The same over every AG whose expected set was complete: the inodes that must carry the reflink flag
    /// (kept across AGs, since a file's extents lie in any AG; as many as there are files sharing blocks).</summary>
    public readonly HashSet<ulong> SharedOwners = new();
    readonly SharedExtentSweep _sweep = new();

    /// <summary>The shared-extent sweep, reset.</summary>
    public SharedExtentSweep Sweep()
    {
        _sweep.Reset();
        return _sweep;
    }
}
