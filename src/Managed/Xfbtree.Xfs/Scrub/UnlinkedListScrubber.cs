using System.Buffers.Binary;
using Xfbtree.Xfs.Format;

namespace Xfbtree.Xfs.Scrub;

/// <summary>
/// What the inode core walk of one AG (<see cref="InodeBtreeScrubber"/>) keeps for the AGI unlinked list check: the
/// inobt records (which inodes are allocated), the allocated inodes whose core says nlink 0 and every core whose
/// di_next_unlinked is set. Memory: the records (16 bytes per chunk) and one entry per such inode only (none on a
/// healthy, quiet image).
/// </summary>
internal sealed class UnlinkedInodeState(List<InobtRecord> records)
{
    readonly List<InobtRecord> _records = records;
    List<uint>? _zeroNlink;
    Dictionary<uint, uint>? _next;

    /// <summary>False when a core of a chunk could not be read (an unreadable cluster, a bad magic): then an inode with
    /// nlink 0 may have been missed, and "on no list" is not judged.</summary>
    public bool CoresComplete { get; set; } = true;

    /// <summary>Allocated inodes with nlink 0, ascending once <see cref="Seal"/> ran.</summary>
    public IReadOnlyList<uint> ZeroNlink => (IReadOnlyList<uint>?)_zeroNlink ?? [];

    /// <summary>Sorts what the walk collected (in inobt order, which a damaged inobt may not keep).</summary>
    public void Seal() => _zeroNlink?.Sort();

    /// <summary>Takes one core that verified its magic: <paramref name="inUse"/> per the inobt's free bit.</summary>
    public void OnCore(uint agino, bool inUse, uint nlink, uint nextUnlinked)
    {
        if (inUse && nlink == 0) (_zeroNlink ??= []).Add(agino);
        if (nextUnlinked != Agi.NullAgino) (_next ??= [])[agino] = nextUnlinked;
    }

    /// <summary>di_next_unlinked of a core read (NULLAGINO when unset or not read).</summary>
    public uint NextOf(uint agino) => _next != null && _next.TryGetValue(agino, out uint n) ? n : Agi.NullAgino;

    /// <summary>Cores with di_next_unlinked set, in no particular order.</summary>
    public IEnumerable<KeyValuePair<uint, uint>> WithNext => (IEnumerable<KeyValuePair<uint, uint>>?)_next ?? [];

    /// <summary>True when the inobt holds <paramref name="agino"/> as an allocated (in use, not a hole) inode.</summary>
    public bool IsAllocated(uint agino) => Find(agino) is { } r && !r.IsHole((int)(agino - r.StartIno)) && ((r.Free >> (int)(agino - r.StartIno)) & 1) == 0;

    /// <summary>True when the inobt has a chunk (not a hole) holding <paramref name="agino"/>.</summary>
    public bool IsInChunk(uint agino) => Find(agino) is { } r && !r.IsHole((int)(agino - r.StartIno));

    /// <summary>True when <paramref name="agino"/> is allocated with nlink 0.</summary>
    public bool IsZeroNlink(uint agino) => _zeroNlink != null && _zeroNlink.BinarySearch(agino) >= 0;

    InobtRecord? Find(uint agino)
    {
        int lo = 0, hi = _records.Count - 1;
        while (lo <= hi)
        {
            int mid = (lo + hi) >>> 1;
            var r = _records[mid];
            if (agino < r.StartIno) hi = mid - 1;
            else if (agino >= r.StartIno + (ulong)InobtRecord.InodesPerChunk) lo = mid + 1;
            else return r;
        }
        return null;
    }
}

/// <summary>
/// The AGI unlinked lists of one AG (part of the AGI finding). Source of truth: the inode cores (allocated per the
/// inobt, nlink, di_next_unlinked). Each bucket's chain, from the AGI's head through di_next_unlinked, must name
/// inodes of this AG that hash to the bucket (agino % 64), each allocated with nlink 0, none twice (no cycle, no
/// inode on two lists); every allocated inode with nlink 0 must be on a list (the write engine keeps an inode held
/// open after its last unlink there, and frees it at the last release; an inode with nlink 0 on no list is leaked);
/// and no core on no list may have di_next_unlinked set. Inodes on well-formed lists are not damage: a clean image
/// may carry them (unlinked while open when the filesystem was last written, not yet freed), and the next open for
/// writing frees them as the kernel's log recovery does; the line's note counts them.
/// </summary>
internal static class UnlinkedListScrubber
{
    /// <summary>Checks the lists whose heads are in the verified AGI sector <paramref name="agiSector"/>.</summary>
    public static void Check(AgScrubContext ctx, ScrubFinding f, ReadOnlySpan<byte> agiSector, out long onLists)
    {
        onLists = 0;
        if (ctx.Unlinked is not { } state)
        {
            f.Skip("unlinked lists not checked: the inobt cannot be read");
            return;
        }
        state.Seal();
        var geo = ctx.Geometry;
        uint agno = ctx.AgNumber;
        var seen = new HashSet<uint>();
        for (int bucket = 0; bucket < Agi.UnlinkedBuckets; bucket++)
        {
            uint cur = BinaryPrimitives.ReadUInt32BigEndian(agiSector[(Agi.UnlinkedOffset + 4 * bucket)..]);
            string from = $"unlinked bucket {bucket}";
            while (cur != Agi.NullAgino)
            {
                if (!geo.IsValidAgino(agno, cur) || !state.IsInChunk(cur))
                {
                    f.Damage($"{from} names agino {cur}, which is no inode of the AG's chunks");
                    break;
                }
                ulong ino = geo.AginoToIno(agno, cur);
                if (!seen.Add(cur))
                {
                    f.Damage($"{from} names inode {ino} again: it is on a list twice (a cycle, or two lists)");
                    break;
                }
                onLists++;
                if (cur % Agi.UnlinkedBuckets != bucket) f.Damage($"inode {ino} is on unlinked bucket {bucket}, but it hashes to bucket {cur % Agi.UnlinkedBuckets}");
                if (!state.IsAllocated(cur)) f.Damage($"inode {ino} on unlinked bucket {bucket} is free");
                else if (!state.IsZeroNlink(cur)) f.Damage($"inode {ino} on unlinked bucket {bucket} has links (nlink > 0)");
                from = $"inode {ino}'s di_next_unlinked";
                cur = state.NextOf(cur);
            }
        }
        if (!state.CoresComplete)
        {
            f.Skip("inodes on no unlinked list not judged: some inode cores of the AG are unreadable (see inobt)");
            return;
        }
        ctx.Links?.OnUnlinkedLists(agno, seen.Select(a => geo.AginoToIno(agno, a)));
        long leaked = 0;
        string? firstLeaked = null;
        foreach (uint agino in state.ZeroNlink)
        {
            if (seen.Contains(agino)) continue;
            leaked++;
            firstLeaked ??= $"inode {geo.AginoToIno(agno, agino)}";
        }
        f.Damage(leaked, $"{leaked} allocated inodes have nlink 0 but are on no unlinked list (first {firstLeaked})");
        long stale = 0;
        uint firstStale = Agi.NullAgino;
        foreach (var (agino, _) in state.WithNext)
        {
            if (seen.Contains(agino) || !state.IsAllocated(agino)) continue;
            stale++;
            firstStale = Math.Min(firstStale, agino);
        }
        if (stale > 0) f.Damage(stale, $"{stale} inodes in use on no unlinked list have di_next_unlinked set (first inode {geo.AginoToIno(agno, firstStale)}: {state.NextOf(firstStale)})");
    }
}
