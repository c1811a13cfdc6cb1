namespace Xfbtree.Storage;

/// <summary>
/// Per-page state of an xfile: a "committed" bit (backing store allocated, safe to touch) and a pin count.
/// Two lazily allocated levels so a sparse 1 TiB xfile costs 32 KiB until it is used: a group covers
/// 2^16 pages (256 MiB with 4 KiB pages) with an 8 KiB bitmap; pin counters come in blocks of 4096 pages
/// allocated on the first pin in that block. All members are thread-safe; creation races are settled with
/// compare-exchange, bits with Interlocked.Or/And.
/// </summary>
internal sealed class XfilePageTable
{
    internal const int GroupShift = 16;
    internal const long GroupPages = 1L << GroupShift;
    private const int WordsPerGroup = (int)(GroupPages / 64);
    private const int PinBlockShift = 12;
    private const int PinBlockPages = 1 << PinBlockShift;
    private const int PinBlocksPerGroup = (int)(GroupPages / PinBlockPages);

    private readonly Group?[] groups;

    public XfilePageTable(long pageCount)
    {
        PageCount = pageCount;
        groups = new Group?[(pageCount + GroupPages - 1) >> GroupShift];
    }

    /// <summary>Number of pages addressed by the table.</summary>
    public long PageCount { get; }

    /// <summary>True when the page's backing store is allocated.</summary>
    public bool IsCommitted(long page)
    {
        Group? group = Volatile.Read(ref groups[page >> GroupShift]);
        if (group is null)
        {
            return false;
        }
        ulong word = Volatile.Read(ref group.Committed[(page >> 6) & (WordsPerGroup - 1)]);
        return (word & (1UL << (int)(page & 63))) != 0;
    }

    /// <summary>Marks a page committed.</summary>
    public void SetCommitted(long page)
    {
        Group group = GetOrCreateGroup(page >> GroupShift);
        Interlocked.Or(ref group.Committed[(page >> 6) & (WordsPerGroup - 1)], 1UL << (int)(page & 63));
    }

    /// <summary>Clears the committed bit of every page in [first, end); returns how many were set.</summary>
    public long ClearCommitted(long first, long end)
    {
        long cleared = 0;
        for (long page = first; page < end;)
        {
            Group? group = Volatile.Read(ref groups[page >> GroupShift]);
            if (group is null)
            {
                page = NextGroupStart(page);
                continue;
            }
            int wordIndex = (int)((page >> 6) & (WordsPerGroup - 1));
            int bit = (int)(page & 63);
            long wordEnd = Math.Min(end, (page | 63) + 1);
            int bits = (int)(wordEnd - page);
            ulong mask = (bits == 64 ? ulong.MaxValue : ((1UL << bits) - 1)) << bit;
            ulong before = Interlocked.And(ref group.Committed[wordIndex], ~mask);
            cleared += (long)ulong.PopCount(before & mask);
            page = wordEnd;
        }
        return cleared;
    }

    /// <summary>First committed page in [from, end), or <paramref name="end"/>.</summary>
    public long NextCommitted(long from, long end) => NextWithState(from, end, committed: true);

    /// <summary>First uncommitted page in [from, end), or <paramref name="end"/>.</summary>
    public long NextUncommitted(long from, long end) => NextWithState(from, end, committed: false);

    /// <summary>Adds a pin to the page.</summary>
    public void Pin(long page)
    {
        int[] block = GetOrCreatePinBlock(page);
        Interlocked.Increment(ref block[page & (PinBlockPages - 1)]);
    }

    /// <summary>Drops a pin; false (and no change) when the page was not pinned.</summary>
    public bool TryUnpin(long page)
    {
        Group? group = Volatile.Read(ref groups[page >> GroupShift]);
        int[]? block = group is null ? null : Volatile.Read(ref group.Pins[(page >> PinBlockShift) & (PinBlocksPerGroup - 1)]);
        if (block is null)
        {
            return false;
        }
        ref int count = ref block[page & (PinBlockPages - 1)];
        while (true)
        {
            int current = Volatile.Read(ref count);
            if (current <= 0)
            {
                return false;
            }
            if (Interlocked.CompareExchange(ref count, current - 1, current) == current)
            {
                return true;
            }
        }
    }

    /// <summary>Current pin count of a page.</summary>
    public int PinCount(long page)
    {
        Group? group = Volatile.Read(ref groups[page >> GroupShift]);
        int[]? block = group is null ? null : Volatile.Read(ref group.Pins[(page >> PinBlockShift) & (PinBlocksPerGroup - 1)]);
        return block is null ? 0 : Volatile.Read(ref block[page & (PinBlockPages - 1)]);
    }

    /// <summary>First pinned page in [first, end), or -1.</summary>
    public long FindPinned(long first, long end)
    {
        for (long page = first; page < end;)
        {
            Group? group = Volatile.Read(ref groups[page >> GroupShift]);
            if (group is null)
            {
                page = NextGroupStart(page);
                continue;
            }
            int[]? block = Volatile.Read(ref group.Pins[(page >> PinBlockShift) & (PinBlocksPerGroup - 1)]);
            long blockEnd = Math.Min(end, ((page >> PinBlockShift) + 1) << PinBlockShift);
            if (block is not null)
            {
                for (long p = page; p < blockEnd; p++)
                {
                    if (Volatile.Read(ref block[p & (PinBlockPages - 1)]) != 0)
                    {
                        return p;
                    }
                }
            }
            page = blockEnd;
        }
        return -1;
    }

    private long NextWithState(long from, long end, bool committed)
    {
        for (long page = from; page < end;)
        {
            Group? group = Volatile.Read(ref groups[page >> GroupShift]);
            if (group is null)
            {
                if (!committed)
                {
                    return page;
                }
                page = NextGroupStart(page);
                continue;
            }
            ulong word = Volatile.Read(ref group.Committed[(page >> 6) & (WordsPerGroup - 1)]);
            if (!committed)
            {
                word = ~word;
            }
            word >>= (int)(page & 63);
            if (word != 0)
            {
                long found = page + (long)ulong.TrailingZeroCount(word);
                return Math.Min(found, end);
            }
            page = (page | 63) + 1;
        }
        return end;
    }

    private static long NextGroupStart(long page) => ((page >> GroupShift) + 1) << GroupShift;

    private Group GetOrCreateGroup(long groupIndex)
    {
        Group? group = Volatile.Read(ref groups[groupIndex]);
        if (group is not null)
        {
            return group;
        }
        var created = new Group();
        return Interlocked.CompareExchange(ref groups[groupIndex], created, null) ?? created;
    }

    private int[] GetOrCreatePinBlock(long page)
    {
        Group group = GetOrCreateGroup(page >> GroupShift);
        ref int[]? slot = ref group.Pins[(page >> PinBlockShift) & (PinBlocksPerGroup - 1)];
        int[]? block = Volatile.Read(ref slot);
        if (block is not null)
        {
            return block;
        }
        var created = new int[PinBlockPages];
        return Interlocked.CompareExchange(ref slot, created, null) ?? created;
    }

    private sealed class Group
    {
        public readonly ulong[] Committed = new ulong[WordsPerGroup];
        public readonly int[]?[] Pins = new int[]?[PinBlocksPerGroup];
    }
}
