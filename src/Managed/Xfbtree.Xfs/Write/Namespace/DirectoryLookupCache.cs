using Xfbtree.Xfs.Directories;

namespace Xfbtree.Xfs.Write.Namespace;

/// <summary>
/// The engine's dentry cache: (directory inode, name) -> child inode, so a path walk does not parse directory
/// blocks again for every component of every call. Direct-mapped (one entry per hash slot, a new entry replaces
/// what was there), so its memory is bounded by <see cref="Slots"/> entries of at most 255-byte names.
/// An entry is valid only while the directory's in-core inode has the content version it was read at
/// (<see cref="Engine.IncoreInode.ContentVersion"/>): a transaction that locks the inode, as every change of a
/// directory does (entries, '..', the inode itself), gives it a new version before it changes anything, and a
/// reloaded in-core inode starts from a version no entry can hold. Entries are only made and read under the directory's
/// read lock, outside transactions, from what is committed; entries are immutable, slots are swapped whole, so
/// readers take no lock of the cache's own.
/// </summary>
internal sealed class DirectoryLookupCache
{
    /// <summary>Slots by default (a power of two).</summary>
    public const int DefaultSlots = 16384;

    private readonly Entry?[] slots;
    private long hits, misses;

    public DirectoryLookupCache(int slots)
    {
        if (slots < 1 || (slots & (slots - 1)) != 0)
        {
            throw new ArgumentOutOfRangeException(nameof(slots), slots, "the lookup cache needs a power of two of slots");
        }
        this.slots = new Entry?[slots];
    }

    /// <summary>Entries at most.</summary>
    public int Slots => slots.Length;

    /// <summary>Lookups answered from the cache since open (tests and measurements).</summary>
    public long Hits => Interlocked.Read(ref hits);

    /// <summary>Lookups that went to the directory blocks since open.</summary>
    public long Misses => Interlocked.Read(ref misses);

    /// <summary>The child <paramref name="name"/> names in directory <paramref name="dir"/> (read-locked by the caller,
    /// who read its <paramref name="version"/> under the lock), if cached at that version.</summary>
    public bool TryGet(ulong dir, long version, ReadOnlySpan<byte> name, out ulong child)
    {
        Entry? e = Volatile.Read(ref slots[Slot(dir, name)]);
        if (e is not null && e.Directory == dir && e.Version == version && name.SequenceEqual(e.Name))
        {
            Interlocked.Increment(ref hits);
            child = e.Child;
            return true;
        }
        Interlocked.Increment(ref misses);
        child = 0;
        return false;
    }

    /// <summary>Remembers what the directory blocks of <paramref name="dir"/> said at <paramref name="version"/>
    /// (the caller holds the directory's read lock and read the version under it before looking).</summary>
    public void Put(ulong dir, long version, ReadOnlySpan<byte> name, ulong child)
    {
        if (name.Length == 0 || name.Length > DirectoryFormat.MaxNameLength)
        {
            return;
        }
        Volatile.Write(ref slots[Slot(dir, name)], new Entry(dir, version, name.ToArray(), child));
    }

    private int Slot(ulong dir, ReadOnlySpan<byte> name)
    {
        // FNV-1a over the directory number and the name.
        ulong h = 14695981039346656037UL;
        for (int i = 0; i < 8; i++)
        {
            h = (h ^ ((dir >> (8 * i)) & 0xFF)) * 1099511628211UL;
        }
        foreach (byte b in name)
        {
            h = (h ^ b) * 1099511628211UL;
        }
        return (int)(h ^ (h >> 32)) & (slots.Length - 1);
    }

    private sealed class Entry(ulong directory, long version, byte[] name, ulong child)
    {
        public ulong Directory { get; } = directory;
        public long Version { get; } = version;
        public byte[] Name { get; } = name;
        public ulong Child { get; } = child;
    }
}
