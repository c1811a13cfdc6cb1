namespace Xfbtree.Buffers;

/// <summary>Block number to pinned frame map with hold/lock, dirty tracking, verifiers and LRU reclaim.</summary>
/// <remarks>
/// <para>Buffers are keyed by (target, daddr, length). One cache lock guards the map, the hold counts and the
/// LRU list and is held only for those few pointer updates, never during I/O, verification or a wait for a
/// buffer lock. A cache hit takes it once in <see cref="Read"/> and once in <see cref="Release"/> and allocates
/// nothing.</para>
/// <para>A miss inserts the buffer locked exclusively and not yet up to date, then attaches memory, reads and
/// verifies outside the cache lock; concurrent readers of the same block wait on its lock. When the read or the
/// verifier fails the buffer is removed before anyone can use it (waiters retry from scratch), so a bad block is
/// never cached as valid.</para>
/// <para>Idle buffers (unheld, clean) sit on an LRU list; when their bytes exceed
/// <see cref="BufferCacheOptions.MemoryLimitBytes"/> the least recently released are dropped. Held, dirty and
/// (until their last release) stale buffers are never reclaimed.</para>
/// </remarks>
public sealed class BufferCache : IDisposable
{
    private readonly Lock gate = new();
    private readonly Dictionary<BufferKey, BlockBuffer> map = new();
    private BlockBuffer? lruHead;
    private BlockBuffer? lruTail;
    private long lruBytes;
    private long cachedBytes;
    private long hits;
    private long misses;
    private long reads;
    private long writes;
    private long bytesRead;
    private long bytesWritten;
    private long reclaimed;
    private long pinnedBytes;
    private bool disposed;

    /// <summary>An empty cache (<see cref="BufferCacheOptions"/> sets the memory limit).</summary>
    public BufferCache(BufferCacheOptions? options = null)
    {
        options ??= new BufferCacheOptions();
        ArgumentOutOfRangeException.ThrowIfNegative(options.MemoryLimitBytes, nameof(options.MemoryLimitBytes));
        MemoryLimitBytes = options.MemoryLimitBytes;
    }

    /// <summary>Bound on the bytes of idle (unheld, clean) buffers.</summary>
    public long MemoryLimitBytes { get; }

    /// <summary>Returns the held and locked buffer, reading and verifying it on a miss.</summary>
    /// <exception cref="CorruptionException">The verifier rejected the block (it is not cached).</exception>
    /// <exception cref="BufferIOException">The target failed or the block lies outside it (names the address).</exception>
    /// <exception cref="InvalidOperationException">This thread already holds the buffer exclusively.</exception>
    public unsafe BlockBuffer Read(BufferTarget target, long daddr, int lengthBB, IBufferVerifier? verifier, BufferLockMode mode = BufferLockMode.Exclusive)
    {
        ArgumentNullException.ThrowIfNull(target);
        target.CheckAddress(daddr, lengthBB);
        var key = new BufferKey(target, daddr, lengthBB);
        while (true)
        {
            BlockBuffer buffer = HoldOrInsert(key, out bool created);
            if (created)
            {
                Instantiate(buffer, verifier, read: true);
                if (mode == BufferLockMode.Shared)
                {
                    buffer.Downgrade();
                }
                return buffer;
            }
            if (!LockOrDrop(buffer, mode))
            {
                continue;
            }
            if (!buffer.IsUptodate)
            {
                if (mode == BufferLockMode.Shared)
                {
                    buffer.Unlock();
                    if (!LockOrDrop(buffer, BufferLockMode.Exclusive))
                    {
                        continue;
                    }
                }
                if (!buffer.IsUptodate)
                {
                    Refill(buffer, verifier);
                }
                if (mode == BufferLockMode.Shared)
                {
                    buffer.Downgrade();
                }
                return buffer;
            }
            if (verifier != null && !ReferenceEquals(verifier, buffer.Verifier))
            {
                Adopt(buffer, verifier);
            }
            return buffer;
        }
    }

    /// <summary>Takes a hold on the cached buffer for <paramref name="key"/>, or inserts a new (not yet filled) one.</summary>
    BlockBuffer HoldOrInsert(BufferKey key, out bool created)
    {
        lock (gate)
        {
            ObjectDisposedException.ThrowIf(disposed, this);
            if (map.TryGetValue(key, out BlockBuffer? buffer))
            {
                TakeHold(buffer);
                hits++;
                created = false;
                return buffer;
            }
            misses++;
            created = true;
            return Insert(key);
        }
    }

    /// <summary>Returns a held, exclusively locked buffer for a block about to be formatted: no read, contents zeroed unless cached.</summary>
    public unsafe BlockBuffer GetNew(BufferTarget target, long daddr, int lengthBB, IBufferVerifier? verifier)
    {
        ArgumentNullException.ThrowIfNull(target);
        target.CheckAddress(daddr, lengthBB);
        var key = new BufferKey(target, daddr, lengthBB);
        while (true)
        {
            BlockBuffer buffer = HoldOrInsert(key, out bool created);
            if (created)
            {
                Instantiate(buffer, verifier, read: false);
                buffer.SetFormatted();
                return buffer;
            }
            if (!LockOrDrop(buffer, BufferLockMode.Exclusive))
            {
                continue;
            }
            if (!buffer.IsUptodate || buffer.IsStale)
            {
                // A freed or invalidated block being formatted again: start from zeros.
                buffer.Span.Clear();
                buffer.ClearDirtyAndStale();
                buffer.SetUptodate();
            }
            buffer.SetFormatted();
            // A block being formatted is what its formatter says, never what it was before (a null verifier
            // means unverified, not "keep the old type": an old btree verifier would reject the new contents).
            buffer.Verifier = verifier;
            return buffer;
        }
    }

    /// <summary>
    /// The cached buffer of a block, held and exclusively locked, or null when the cache has none: nothing is read.
    /// For a transaction that frees the block and must invalidate whatever buffer of it is in memory (xfs_buf_incore).
    /// </summary>
    /// <exception cref="InvalidOperationException">This thread already holds the buffer exclusively.</exception>
    public BlockBuffer? TryGetCached(BufferTarget target, long daddr, int lengthBB)
    {
        ArgumentNullException.ThrowIfNull(target);
        var key = new BufferKey(target, daddr, lengthBB);
        while (true)
        {
            BlockBuffer? buffer;
            lock (gate)
            {
                ObjectDisposedException.ThrowIf(disposed, this);
                if (!map.TryGetValue(key, out buffer))
                {
                    return null;
                }
                TakeHold(buffer);
            }
            if (LockOrDrop(buffer, BufferLockMode.Exclusive))
            {
                return buffer;
            }
        }
    }

    /// <summary>Unlocks and drops a hold.</summary>
    public void Release(BlockBuffer buffer)
    {
        CheckOwned(buffer);
        if (buffer.Transaction != null)
        {
            throw new InvalidOperationException($"{buffer} is joined to a transaction, which releases it at commit or cancel");
        }
        buffer.Unlock();
        DropHold(buffer);
    }

    /// <summary>Writes every dirty buffer (of one target, or all) in ascending daddr order, running write verifiers.</summary>
    public void Flush(BufferTarget? target = null) => FlushCore(target, sync: false);

    /// <summary>
    /// <see cref="Flush"/>, then fsync every disk target written (and <paramref name="target"/>): a write-ordering
    /// barrier after which every write is durable (e.g. new blocks before the header that points at them).
    /// </summary>
    public void FlushAndSync(BufferTarget? target = null) => FlushCore(target, sync: true);

    /// <summary>
    /// Writes every dirty buffer (of one target, or all; targets in creation order, each in ascending daddr
    /// order) after its write verifier, then, with <paramref name="sync"/>, fsyncs every disk target written (and
    /// <paramref name="target"/>).
    /// </summary>
    /// <remarks>A buffer held by another thread is waited for; one this thread holds exclusively is written as it
    /// is. On the first failure (verifier or I/O) the flush stops and throws; that buffer and the ones not yet
    /// written stay dirty, so the cache still mirrors what the caller wrote.</remarks>
    private void FlushCore(BufferTarget? target, bool sync)
    {
        List<BlockBuffer> dirty = CollectDirty(target);
        dirty.Sort(FlushOrder.Instance);
        List<BufferTarget>? written = sync ? new List<BufferTarget>() : null;
        int next = 0;
        try
        {
            for (; next < dirty.Count; next++)
            {
                BlockBuffer buffer = dirty[next];
                bool own = buffer.IsLockedExclusiveByCurrentThread;
                if (!own)
                {
                    buffer.Lock(BufferLockMode.Exclusive);
                }
                try
                {
                    if (WriteLocked(buffer) && written != null && !written.Contains(buffer.Target))
                    {
                        written.Add(buffer.Target);
                    }
                }
                finally
                {
                    if (!own)
                    {
                        buffer.Unlock();
                    }
                    DropHold(buffer);
                }
            }
        }
        finally
        {
            for (next++; next < dirty.Count; next++)
            {
                DropHold(dirty[next]);
            }
        }
        if (written != null)
        {
            if (target != null && !written.Contains(target))
            {
                written.Add(target);
            }
            foreach (var t in written)
            {
                t.SyncForFlush();
            }
        }
    }

    /// <summary>Drops every unheld buffer of a target (dirty ones are an error).</summary>
    /// <exception cref="InvalidOperationException">A buffer of the target is dirty; nothing was dropped.</exception>
    public void Purge(BufferTarget target)
    {
        ArgumentNullException.ThrowIfNull(target);
        lock (gate)
        {
            var victims = new List<BlockBuffer>();
            foreach (var buffer in map.Values)
            {
                if (buffer.Target != target)
                {
                    continue;
                }
                if (buffer.IsDirty || buffer.Pinned)
                {
                    throw new InvalidOperationException($"cannot purge {target.Name}: buffer at daddr {buffer.Daddr} is dirty (flush or cancel first)");
                }
                if (buffer.Holds == 0)
                {
                    victims.Add(buffer);
                }
            }
            foreach (var buffer in victims)
            {
                RemoveLocked(buffer);
                FreeLocked(buffer);
            }
        }
    }

    /// <summary>A snapshot of the cache's counters.</summary>
    public BufferCacheStatistics Statistics
    {
        get
        {
            lock (gate)
            {
                return new BufferCacheStatistics(hits, misses, Interlocked.Read(ref reads), Interlocked.Read(ref writes),
                    Interlocked.Read(ref bytesRead), Interlocked.Read(ref bytesWritten), map.Count, cachedBytes)
                {
                    IdleBytes = lruBytes,
                    Reclaimed = reclaimed,
                };
            }
        }
    }

    /// <summary>
    /// Drops every buffer without writing anything (dirty changes are lost: flush first). Buffers still held stay
    /// valid until their release, which then frees them. Later Read/GetNew throw <see cref="ObjectDisposedException"/>.
    /// </summary>
    public void Dispose()
    {
        lock (gate)
        {
            if (disposed)
            {
                return;
            }
            disposed = true;
            var all = new List<BlockBuffer>(map.Values);
            foreach (var buffer in all)
            {
                RemoveLocked(buffer);
                if (buffer.Holds == 0)
                {
                    FreeLocked(buffer);
                }
            }
        }
    }

    // ---------------------------------------------------------------------------------------------------
    // Internals shared with BufferTransaction.

    /// <summary>Runs the write verifier and writes one dirty, non-stale buffer the caller holds exclusively.
    /// Returns true when it wrote to a disk target.</summary>
    internal unsafe bool WriteLocked(BlockBuffer buffer, bool prepared = false)
    {
        if (!buffer.IsDirty || buffer.IsStale)
        {
            return false;
        }
        if (!prepared)
        {
            buffer.Verifier?.PrepareWrite(buffer);
        }
        bool io = !buffer.Target.IsInMemory;
        if (io)
        {
            buffer.Target.WriteFrom(buffer.Data, buffer.Daddr, buffer.LengthBB);
            Interlocked.Increment(ref writes);
            Interlocked.Add(ref bytesWritten, buffer.Length);
        }
        buffer.ClearDirty();
        return io;
    }

    /// <summary>Drops one hold (the lock was released, or is kept by a transaction that releases it itself).</summary>
    internal unsafe void DropHold(BlockBuffer buffer)
    {
        lock (gate)
        {
            if (buffer.Holds <= 0)
            {
                throw new InvalidOperationException($"{buffer}: release of a buffer that is not held");
            }
            if (--buffer.Holds > 0)
            {
                return;
            }
            if (buffer.Dead)
            {
                FreeLocked(buffer);
                return;
            }
            if (buffer.IsStale || !buffer.IsUptodate)
            {
                // Freed blocks and invalidated contents are not worth keeping. A freed xfile block is punched out
                // here, under the cache lock, so a new buffer for the same address cannot be instantiated between
                // the unpin and the punch.
                bool stale = buffer.IsStale;
                RemoveLocked(buffer);
                FreeLocked(buffer);
                if (stale)
                {
                    buffer.Target.Forget(buffer.Daddr, buffer.LengthBB);
                }
            }
            else if (!buffer.IsDirty && !buffer.Pinned)
            {
                LruPushFront(buffer);
                Reclaim();
            }
        }
    }

    /// <summary>Bytes of pinned buffers: committed changes of a journaling user not yet written in place.</summary>
    internal long PinnedBytes => Interlocked.Read(ref pinnedBytes);

    /// <summary>
    /// Keeps a committed buffer in memory until <see cref="Unpin"/> instead of writing it (a journaling user's delayed
    /// write-back: the journal holds its changes, the block is written in place later, once): the caller holds it
    /// exclusively and has cleared its dirty state; it never goes on the LRU while pinned.
    /// </summary>
    internal void Pin(BlockBuffer buffer)
    {
        lock (gate)
        {
            if (!buffer.Pinned && !buffer.Dead)
            {
                buffer.Pinned = true;
                pinnedBytes += buffer.Length;
            }
        }
    }

    /// <summary>The buffer's committed contents are in place: it may be reclaimed again once idle.</summary>
    internal void Unpin(BlockBuffer buffer)
    {
        lock (gate)
        {
            if (!buffer.Pinned)
            {
                return;
            }
            buffer.Pinned = false;
            pinnedBytes -= buffer.Length;
            if (buffer.Holds == 0 && !buffer.Dead && !buffer.IsDirty && buffer.IsUptodate && !buffer.IsStale && !buffer.InLru)
            {
                LruPushFront(buffer);
                Reclaim();
            }
        }
    }

    /// <summary>
    /// Copies the committed contents of the pinned buffer of exactly (<paramref name="target"/>, <paramref name="daddr"/>,
    /// <paramref name="lengthBB"/>) into <paramref name="destination"/> (its length): the contents saved when a running
    /// transaction joined it, else the buffer's own. False when no such buffer is pinned (its committed contents, if
    /// any, are in place). For a reader of the target that does not go through the cache; takes no buffer lock.
    /// </summary>
    internal bool TryCopyPinned(BufferTarget target, long daddr, int lengthBB, Span<byte> destination)
    {
        BlockBuffer? buffer;
        lock (gate)
        {
            ObjectDisposedException.ThrowIf(disposed, this);
            if (!map.TryGetValue(new BufferKey(target, daddr, lengthBB), out buffer) || !buffer.Pinned)
            {
                return false;
            }
            TakeHold(buffer);
        }
        try
        {
            buffer.EnterPinGuard();
            try
            {
                if (!buffer.Pinned)
                {
                    return false;
                }
                if (buffer.CommittedImage is { } committed)
                {
                    committed.AsSpan(0, buffer.Length).CopyTo(destination);
                }
                else
                {
                    buffer.Span.CopyTo(destination);
                }
                return true;
            }
            finally
            {
                buffer.ExitPinGuard();
            }
        }
        finally
        {
            DropHold(buffer);
        }
    }

    /// <summary>The pinned buffers of <paramref name="target"/>, each with a hold the caller drops (<see cref="DropHold"/>).</summary>
    internal List<BlockBuffer> CollectPinned(BufferTarget target)
    {
        var pinned = new List<BlockBuffer>();
        lock (gate)
        {
            ObjectDisposedException.ThrowIf(disposed, this);
            foreach (var buffer in map.Values)
            {
                if (buffer.Pinned && buffer.Target == target)
                {
                    TakeHold(buffer);
                    pinned.Add(buffer);
                }
            }
        }
        return pinned;
    }

    internal void CheckOwned(BlockBuffer buffer)
    {
        ArgumentNullException.ThrowIfNull(buffer);
        if (buffer.Cache != this)
        {
            throw new ArgumentException($"{buffer} belongs to another cache", nameof(buffer));
        }
    }

    // ---------------------------------------------------------------------------------------------------

    private BlockBuffer Insert(BufferKey key)
    {
        var buffer = new BlockBuffer(this, key.Target, key.Daddr, key.LengthBB) { Holds = 1 };
        buffer.LockNew();
        map.Add(key, buffer);
        cachedBytes += buffer.Length;
        return buffer;
    }

    private void TakeHold(BlockBuffer buffer)
    {
        if (buffer.Holds++ == 0 && buffer.InLru)
        {
            LruRemove(buffer);
        }
    }

    /// <summary>Locks a buffer found in the map; false (hold dropped) when it died meanwhile.</summary>
    private bool LockOrDrop(BlockBuffer buffer, BufferLockMode mode)
    {
        try
        {
            buffer.Lock(mode);
        }
        catch
        {
            DropHold(buffer);
            throw;
        }
        if (Volatile.Read(ref buffer.Dead))
        {
            buffer.Unlock();
            DropHold(buffer);
            return false;
        }
        return true;
    }

    /// <summary>Attaches memory to a just-inserted buffer and reads + verifies it (or zeroes it for GetNew).</summary>
    private unsafe void Instantiate(BlockBuffer buffer, IBufferVerifier? verifier, bool read)
    {
        try
        {
            buffer.SetData(buffer.Target.AttachMemory(buffer.Daddr, buffer.LengthBB));
            buffer.Verifier = verifier;
            if (read)
            {
                Fill(buffer, verifier);
            }
            else
            {
                buffer.Span.Clear();
            }
            buffer.SetUptodate();
        }
        catch
        {
            Kill(buffer);
            throw;
        }
    }

    /// <summary>Re-reads a cached buffer whose contents were invalidated (cancelled transaction).</summary>
    private void Refill(BlockBuffer buffer, IBufferVerifier? verifier)
    {
        try
        {
            if (verifier != null)
            {
                buffer.Verifier = verifier;
            }
            Fill(buffer, buffer.Verifier);
            buffer.SetUptodate();
        }
        catch
        {
            Kill(buffer);
            throw;
        }
    }

    private unsafe void Fill(BlockBuffer buffer, IBufferVerifier? verifier)
    {
        BufferTarget target = buffer.Target;
        if (!target.IsInMemory)
        {
            target.ReadInto(buffer.Data, buffer.Daddr, buffer.LengthBB);
            Interlocked.Increment(ref reads);
            Interlocked.Add(ref bytesRead, buffer.Length);
        }
        verifier?.VerifyRead(buffer);
    }

    /// <summary>A cached clean buffer is asked for as another block type: verify it as that type first.</summary>
    private void Adopt(BlockBuffer buffer, IBufferVerifier verifier)
    {
        if (!buffer.IsDirty)
        {
            try
            {
                verifier.VerifyRead(buffer);
            }
            catch
            {
                buffer.Unlock();
                DropHold(buffer);
                throw;
            }
        }
        buffer.Verifier = verifier;
    }

    /// <summary>Removes a failed buffer from the map, unlocks it and drops the caller's hold (waiters retry).</summary>
    private void Kill(BlockBuffer buffer)
    {
        lock (gate)
        {
            if (!buffer.Dead)
            {
                RemoveLocked(buffer);
            }
        }
        buffer.Invalidate();
        buffer.Unlock();
        DropHold(buffer);
    }

    private List<BlockBuffer> CollectDirty(BufferTarget? target)
    {
        var dirty = new List<BlockBuffer>();
        lock (gate)
        {
            ObjectDisposedException.ThrowIf(disposed, this);
            foreach (var buffer in map.Values)
            {
                if (buffer.IsDirty && (target == null || buffer.Target == target))
                {
                    TakeHold(buffer);
                    dirty.Add(buffer);
                }
            }
        }
        return dirty;
    }

    private void RemoveLocked(BlockBuffer buffer)
    {
        if (buffer.InLru)
        {
            LruRemove(buffer);
        }
        if (buffer.Pinned)
        {
            // A freed (stale) block: its committed changes are never written.
            buffer.Pinned = false;
            pinnedBytes -= buffer.Length;
        }
        map.Remove(new BufferKey(buffer.Target, buffer.Daddr, buffer.LengthBB));
        cachedBytes -= buffer.Length;
        Volatile.Write(ref buffer.Dead, true);
    }

    private unsafe void FreeLocked(BlockBuffer buffer)
    {
        byte* data = buffer.Data;
        if (data != null)
        {
            buffer.SetData(null);
            buffer.Target.DetachMemory(data, buffer.Daddr, buffer.LengthBB);
        }
    }

    private void Reclaim()
    {
        while (lruBytes > MemoryLimitBytes && lruTail is { } victim)
        {
            RemoveLocked(victim);
            FreeLocked(victim);
            reclaimed++;
        }
    }

    private void LruPushFront(BlockBuffer buffer)
    {
        buffer.LruPrev = null;
        buffer.LruNext = lruHead;
        if (lruHead != null)
        {
            lruHead.LruPrev = buffer;
        }
        lruHead = buffer;
        lruTail ??= buffer;
        buffer.InLru = true;
        lruBytes += buffer.Length;
    }

    private void LruRemove(BlockBuffer buffer)
    {
        if (buffer.LruPrev != null)
        {
            buffer.LruPrev.LruNext = buffer.LruNext;
        }
        else
        {
            lruHead = buffer.LruNext;
        }
        if (buffer.LruNext != null)
        {
            buffer.LruNext.LruPrev = buffer.LruPrev;
        }
        else
        {
            lruTail = buffer.LruPrev;
        }
        buffer.LruPrev = null;
        buffer.LruNext = null;
        buffer.InLru = false;
        lruBytes -= buffer.Length;
    }

    private readonly struct BufferKey(BufferTarget target, long daddr, int lengthBB) : IEquatable<BufferKey>
    {
        public BufferTarget Target { get; } = target;
        public long Daddr { get; } = daddr;
        public int LengthBB { get; } = lengthBB;
        public bool Equals(BufferKey other) => Daddr == other.Daddr && LengthBB == other.LengthBB && ReferenceEquals(Target, other.Target);
        public override bool Equals(object? obj) => obj is BufferKey other && Equals(other);
        public override int GetHashCode() => HashCode.Combine(Target.Id, Daddr, LengthBB);
    }

    private sealed class FlushOrder : IComparer<BlockBuffer>
    {
        public static readonly FlushOrder Instance = new();
        public int Compare(BlockBuffer? x, BlockBuffer? y)
        {
            int c = x!.Target.Id.CompareTo(y!.Target.Id);
            return c != 0 ? c : x.Daddr.CompareTo(y.Daddr);
        }
    }
}
