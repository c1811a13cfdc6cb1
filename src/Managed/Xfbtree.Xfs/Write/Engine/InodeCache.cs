using System.Collections.Concurrent;

namespace Xfbtree.Xfs.Write.Engine;

/// <summary>
/// The engine's in-core inodes, bounded. An inode number maps to at most one live <see cref="IncoreInode"/>: the table
/// holds each weakly, and a clock of <see cref="Capacity"/> slots holds the recently used ones strongly. An inode
/// the clock lets go stays the one <see cref="Find"/> returns for as long as anyone still references it (a
/// transaction that locked it, a caller between GetInode and its lock, the namespace's held inodes, an open handle
/// through those), so two threads never lock two copies of one inode; once nobody does, the collector takes it and
/// the next use reads it again from its cluster buffer, where every commit left it. Evicting therefore needs no
/// lock and no flag: what is unreachable cannot be locked, held or in a transaction.
/// <para>Load stamps: a counter per stripe of inode numbers, raised each time an in-core inode of a number in that
/// stripe becomes the live one (after it is in the table). A reader that saw no live inode of a number and the same
/// stamp before and after reading its core from the cluster buffer knows that no in-core inode of it was live at any
/// moment in between, so no writer changed it meanwhile (a writer changes a core only through its live in-core inode,
/// and all its changes are committed to the cluster buffer before that inode can become unreachable).</para>
/// </summary>
internal sealed class InodeCache
{
    private const int StampStripes = 1024; // a power of two; 8 KiB of counters
    private readonly ConcurrentDictionary<ulong, WeakReference<IncoreInode>> table = new();
    private readonly long[] loadStamps = new long[StampStripes];
    private readonly IncoreInode?[] clock;
    private readonly Lock clockLock = new();
    private int hand;
    private int admittedSinceSweep;

    public InodeCache(int capacity)
    {
        if (capacity < 1)
        {
            throw new ArgumentOutOfRangeException(nameof(capacity), capacity, "the inode cache needs at least one slot");
        }
        clock = new IncoreInode?[capacity];
    }

    /// <summary>Inodes held strongly at most.</summary>
    public int Capacity => clock.Length;

    /// <summary>Entries of the table (live inodes and entries whose inode was collected and not yet swept).</summary>
    public int TableCount => table.Count;

    /// <summary>Inodes the clock holds strongly now.</summary>
    public int StronglyHeld
    {
        get
        {
            lock (clockLock)
            {
                int n = 0;
                foreach (IncoreInode? slot in clock)
                {
                    if (slot is not null)
                    {
                        n++;
                    }
                }
                return n;
            }
        }
    }

    /// <summary>The live in-core inode of <paramref name="ino"/>, if any (marked recently used).</summary>
    public IncoreInode? Find(ulong ino)
    {
        if (table.TryGetValue(ino, out WeakReference<IncoreInode>? weak) && weak.TryGetTarget(out IncoreInode? inode))
        {
            inode.RecentlyUsed = true;
            return inode;
        }
        return null;
    }

    /// <summary>The live in-core inode of <paramref name="ino"/>, if any, without marking it used.</summary>
    public IncoreInode? Peek(ulong ino)
        => table.TryGetValue(ino, out WeakReference<IncoreInode>? weak) && weak.TryGetTarget(out IncoreInode? inode) ? inode : null;

    /// <summary>The load stamp of <paramref name="ino"/>'s stripe: it changes whenever an in-core inode of a number
    /// in the stripe becomes live (read it before looking for a live inode with <see cref="Peek"/>).</summary>
    public long LoadStamp(ulong ino) => Volatile.Read(ref loadStamps[(int)(ino & (StampStripes - 1))]);

    /// <summary>Lets the clock go of the inodes [<paramref name="firstIno"/>, + <paramref name="count"/>) (a freed chunk):
    /// each then lives only as long as something still references it, as the one object of its number (one pass
    /// over the clock).</summary>
    public void Evict(ulong firstIno, int count)
    {
        lock (clockLock)
        {
            for (int i = 0; i < clock.Length; i++)
            {
                if (clock[i] is { } slot && slot.Ino >= firstIno && slot.Ino - firstIno < (ulong)count)
                {
                    clock[i] = null;
                }
            }
        }
    }

    /// <summary>Adds <paramref name="loaded"/> unless another thread's inode of the same number is live: returns the
    /// one that is (the caller uses it and drops its own). With <paramref name="admit"/> false it is only in the table
    /// (weakly), not on the clock: it lives as long as someone references it.</summary>
    public IncoreInode Add(IncoreInode loaded, bool admit = true)
    {
        var weak = new WeakReference<IncoreInode>(loaded);
        while (true)
        {
            if (table.TryGetValue(loaded.Ino, out WeakReference<IncoreInode>? existing))
            {
                if (existing.TryGetTarget(out IncoreInode? other))
                {
                    other.RecentlyUsed = true;
                    return other;
                }
                if (table.TryUpdate(loaded.Ino, weak, existing))
                {
                    break;
                }
            }
            else if (table.TryAdd(loaded.Ino, weak))
            {
                break;
            }
        }
        // After the table has it: a reader whose second Peek missed it sees the stamp moved (see the class summary).
        Interlocked.Increment(ref loadStamps[(int)(loaded.Ino & (StampStripes - 1))]);
        if (admit)
        {
            Admit(loaded);
        }
        else
        {
            CountTableEntryAdded();
        }
        return loaded;
    }

    /// <summary>Forgets <paramref name="inode"/> if it is the live one of its number (a cancelled transaction formatted it).</summary>
    public void Remove(IncoreInode inode)
    {
        if (table.TryGetValue(inode.Ino, out WeakReference<IncoreInode>? weak) && weak.TryGetTarget(out IncoreInode? live)
            && ReferenceEquals(live, inode))
        {
            table.TryRemove(new KeyValuePair<ulong, WeakReference<IncoreInode>>(inode.Ino, weak));
        }
    }

    /// <summary>Removes the table entries whose inode was collected (also done every <see cref="Capacity"/> admissions).</summary>
    public void SweepCollected()
    {
        foreach (KeyValuePair<ulong, WeakReference<IncoreInode>> entry in table)
        {
            if (!entry.Value.TryGetTarget(out _))
            {
                table.TryRemove(entry);
            }
        }
    }

    /// <summary>Puts a newly loaded inode on the clock: the hand passes recently used inodes once (clearing the
    /// mark) and replaces the first one that was not, which from then on lives only as long as others reference it.</summary>
    private void Admit(IncoreInode inode)
    {
        lock (clockLock)
        {
            for (int step = 0; ; step++)
            {
                IncoreInode? slot = clock[hand];
                if (slot is null || !slot.RecentlyUsed || step >= clock.Length)
                {
                    clock[hand] = inode;
                    hand = (hand + 1) % clock.Length;
                    break;
                }
                slot.RecentlyUsed = false;
                hand = (hand + 1) % clock.Length;
            }
        }
        CountTableEntryAdded();
    }

    /// <summary>Sweeps the table's collected entries once every <see cref="Capacity"/> additions (admitted or not).</summary>
    private void CountTableEntryAdded()
    {
        bool sweep;
        lock (clockLock)
        {
            sweep = ++admittedSinceSweep >= clock.Length;
            if (sweep)
            {
                admittedSinceSweep = 0;
            }
        }
        if (sweep)
        {
            SweepCollected();
        }
    }
}
