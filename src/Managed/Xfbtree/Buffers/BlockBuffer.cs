using System.Numerics;

namespace Xfbtree.Buffers;

/// <summary>A cached block: its memory stays valid while held.</summary>
/// <remarks>
/// <para>State is split by who may change it. The cache changes the hold count, the LRU links and the "dead"
/// mark under its own lock. The holder of the buffer lock changes the contents, the flags (up to date, dirty,
/// stale) and the dirty ranges; a reader holding it shared sees them stable.</para>
/// <para>The lock is a reader/writer lock with no thread affinity (like XFS's buffer semaphore, a transaction may
/// release it from another thread): an int that is the number of shared holders, or -1 for an exclusive one,
/// taken with one compare-exchange when uncontended; waiters spin briefly, then sleep on the buffer's monitor.
/// Waiting writers have preference: while one waits, new shared lockers queue behind it, so a stream of
/// readers cannot starve a writer (hence a thread must not take a second shared lock on a buffer it already
/// holds shared). Asking for a buffer this thread already holds exclusively throws instead of deadlocking.</para>
/// </remarks>
public sealed unsafe class BlockBuffer
{
    /// <summary>Granularity of dirty-range tracking (XFS logs buffers in 128-byte chunks).</summary>
    public const int DirtyChunkSize = 128;

    private const int FlagUptodate = 1;
    private const int FlagDirty = 2;
    private const int FlagStale = 4;
    private const int FlagFormatted = 8;
    private const int Exclusive = -1;

    private readonly ulong[] dirtyChunks;
    private byte* data;
    private int flags;
    private int lockState;
    private int lockWaiters;
    private int writersWaiting;
    private int exclusiveOwner;

    // Cache-owned (under the cache lock).
    internal int Holds;
    internal bool Dead;
    internal bool InLru;
    internal BlockBuffer? LruPrev;
    internal BlockBuffer? LruNext;
    internal BufferTransaction? Transaction;

    // Delayed write-back (a journaling user's committed changes, not yet written in place). Pinned is changed under
    // the cache lock (it keeps the buffer off the LRU); CommittedImage, the committed contents saved when a
    // transaction joins a pinned buffer, is published and cleared under the pin guard, which the write-back takes
    // to copy the committed contents of a buffer it does not lock.
    internal bool Pinned;
    internal byte[]? CommittedImage;
    private int pinGuard;

    internal BlockBuffer(BufferCache cache, BufferTarget target, long daddr, int lengthBB)
    {
        Cache = cache;
        Target = target;
        Daddr = daddr;
        LengthBB = lengthBB;
        Length = lengthBB * 512;
        dirtyChunks = new ulong[(Length / DirtyChunkSize + 63) / 64];
    }

    internal BufferCache Cache { get; }
    /// <summary>The target the buffer belongs to.</summary>
    public BufferTarget Target { get; }
    /// <summary>Address in 512-byte basic blocks.</summary>
    public long Daddr { get; }
    /// <summary>Length in basic blocks.</summary>
    public int LengthBB { get; }
    /// <summary>Length in bytes.</summary>
    public int Length { get; }
    /// <summary>SAFETY: valid only while the buffer is held.</summary>
    public byte* Data => data;
    /// <summary>The block bytes; valid only while the buffer is held.</summary>
    public Span<byte> Span => new(data, Length);
    /// <summary>The verifier the buffer was read with (run again before it is written).</summary>
    public IBufferVerifier? Verifier { get; internal set; }
    /// <summary>True once the contents are valid (read and verified, or formatted by GetNew).</summary>
    public bool IsUptodate => (Volatile.Read(ref flags) & FlagUptodate) != 0;
    /// <summary>Whether the buffer holds changes not yet written.</summary>
    public bool IsDirty => (Volatile.Read(ref flags) & FlagDirty) != 0;
    /// <summary>Whether the buffer's block was freed (its contents are not written back).</summary>
    public bool IsStale => (Volatile.Read(ref flags) & FlagStale) != 0;
    /// <summary>
    /// Whether the contents were formatted in memory (<see cref="BufferCache.GetNew"/>) and not written since: what
    /// the disk holds under the unlogged bytes is unknown (zeros here, an old block there), so a journal must log
    /// all of the buffer, not only its dirty ranges. Cleared when the buffer is written, invalidated or freed.
    /// </summary>
    public bool IsFormatted => (Volatile.Read(ref flags) & FlagFormatted) != 0;
    /// <summary>Current holds (callers, transactions, a flush in progress).</summary>
    public int HoldCount => Volatile.Read(ref Holds);
    /// <summary>True while some holder has the buffer locked exclusively.</summary>
    public bool IsLockedExclusive => Volatile.Read(ref lockState) == Exclusive;
    /// <summary>Number of shared lockers (0 when free or exclusively locked).</summary>
    public int SharedLockCount => Math.Max(0, Volatile.Read(ref lockState));

    internal void SetData(byte* memory) => data = memory;

    /// <summary>Records that [offset, offset+length) changed.</summary>
    /// <exception cref="ArgumentOutOfRangeException">The range is not inside the buffer.</exception>
    /// <exception cref="InvalidOperationException">The buffer is not locked exclusively.</exception>
    public void MarkDirty(int offset, int length)
    {
        if ((uint)offset > (uint)Length || (uint)length > (uint)(Length - offset))
        {
            throw new ArgumentOutOfRangeException(nameof(length), $"dirty range [{offset}, +{length}) outside a {Length}-byte buffer");
        }
        RequireExclusive("dirty");
        if (length == 0)
        {
            return;
        }
        int first = offset / DirtyChunkSize;
        int last = (offset + length - 1) / DirtyChunkSize;
        for (int c = first; c <= last; c++)
        {
            dirtyChunks[c >> 6] |= 1UL << (c & 63);
        }
        // Logging a freed block again revives it (as xfs_trans_dirty_buf cancels a stale mark).
        Volatile.Write(ref flags, (flags | FlagDirty) & ~FlagStale);
    }

    /// <summary>Records that the whole buffer changed.</summary>
    public void MarkDirty() => MarkDirty(0, Length);

    /// <summary>The block was freed: never write it back (xfile targets punch the page on commit).</summary>
    /// <exception cref="InvalidOperationException">The buffer is not locked exclusively.</exception>
    public void MarkStale()
    {
        RequireExclusive("mark stale");
        Array.Clear(dirtyChunks);
        Volatile.Write(ref flags, (flags & ~(FlagDirty | FlagFormatted)) | FlagStale);
    }

    /// <summary>True when some byte of [offset, offset+length) is inside a dirty chunk.</summary>
    public bool IsRangeDirty(int offset, int length)
    {
        if ((uint)offset > (uint)Length || (uint)length > (uint)(Length - offset))
        {
            throw new ArgumentOutOfRangeException(nameof(length));
        }
        if (length == 0)
        {
            return false;
        }
        int last = (offset + length - 1) / DirtyChunkSize;
        for (int c = offset / DirtyChunkSize; c <= last; c++)
        {
            if ((dirtyChunks[c >> 6] & (1UL << (c & 63))) != 0)
            {
                return true;
            }
        }
        return false;
    }

    /// <summary>
    /// The first run of dirty chunks at or after byte <paramref name="from"/> (a multiple of
    /// <see cref="DirtyChunkSize"/>): its byte offset, and its length in <paramref name="length"/>; -1 when there
    /// is none. Allocates nothing (a commit walks its buffers' dirty ranges with it).
    /// </summary>
    public int NextDirtyRange(int from, out int length)
    {
        int chunks = Length / DirtyChunkSize;
        int c = NextChunk(from / DirtyChunkSize, chunks, dirty: true);
        if (c >= chunks)
        {
            length = 0;
            return -1;
        }
        int end = NextChunk(c, chunks, dirty: false);
        length = (end - c) * DirtyChunkSize;
        return c * DirtyChunkSize;
    }

    /// <summary>Dirty byte ranges, merged, in 128-byte chunk granularity (diagnostics; allocates).</summary>
    public IReadOnlyList<(int Offset, int Length)> GetDirtyRanges()
    {
        var ranges = new List<(int, int)>();
        int chunks = Length / DirtyChunkSize;
        int c = 0;
        while (c < chunks)
        {
            c = NextChunk(c, chunks, dirty: true);
            if (c >= chunks)
            {
                break;
            }
            int end = NextChunk(c, chunks, dirty: false);
            ranges.Add((c * DirtyChunkSize, (end - c) * DirtyChunkSize));
            c = end;
        }
        return ranges;
    }

    private int NextChunk(int from, int chunks, bool dirty)
    {
        for (int c = from; c < chunks;)
        {
            ulong word = dirtyChunks[c >> 6] >> (c & 63);
            if (!dirty)
            {
                word = ~word;
            }
            if (word != 0)
            {
                return Math.Min(chunks, c + BitOperations.TrailingZeroCount(word));
            }
            c = (c | 63) + 1;
        }
        return chunks;
    }

    /// <inheritdoc />
    public override string ToString() => $"{Target.Name} daddr {Daddr} +{LengthBB} BB";

    // ---- state changed by the lock holder (cache internals) ----

    internal void SetUptodate() => Volatile.Write(ref flags, flags | FlagUptodate);

    internal void SetFormatted() => Volatile.Write(ref flags, flags | FlagFormatted);

    /// <summary>Forget the contents: re-read on next use (cancelled changes of a disk buffer).</summary>
    internal void Invalidate()
    {
        Array.Clear(dirtyChunks);
        Volatile.Write(ref flags, 0);
    }

    internal void ClearDirty()
    {
        Array.Clear(dirtyChunks);
        Volatile.Write(ref flags, flags & ~(FlagDirty | FlagFormatted));
    }

    /// <summary>Takes the pin guard (a spin lock held for a copy of the block at most).</summary>
    internal void EnterPinGuard()
    {
        var spin = new SpinWait();
        while (Interlocked.CompareExchange(ref pinGuard, 1, 0) != 0)
        {
            spin.SpinOnce();
        }
    }

    internal void ExitPinGuard() => Volatile.Write(ref pinGuard, 0);

    /// <summary>Puts back the committed contents saved at join (a cancelled transaction on a pinned buffer): changes,
    /// stale and formatted marks dropped, the buffer up to date and still pinned.</summary>
    internal void RestoreCommitted(byte[] committed)
    {
        committed.AsSpan(0, Length).CopyTo(Span);
        Array.Clear(dirtyChunks);
        Volatile.Write(ref flags, FlagUptodate);
    }

    internal void ClearDirtyAndStale()
    {
        Array.Clear(dirtyChunks);
        Volatile.Write(ref flags, flags & ~(FlagDirty | FlagStale));
    }

    private void RequireExclusive(string what)
    {
        if (Volatile.Read(ref lockState) != Exclusive)
        {
            throw new InvalidOperationException($"{this}: cannot {what} a buffer that is not locked exclusively");
        }
    }

    // ---- the buffer lock ----

    /// <summary>Takes the lock of a buffer nobody else can see yet.</summary>
    internal void LockNew()
    {
        lockState = Exclusive;
        exclusiveOwner = Environment.CurrentManagedThreadId;
    }

    internal bool IsLockedExclusiveByCurrentThread =>
        Volatile.Read(ref lockState) == Exclusive && Volatile.Read(ref exclusiveOwner) == Environment.CurrentManagedThreadId;

    private bool TryLock(BufferLockMode mode)
    {
        if (mode == BufferLockMode.Exclusive)
        {
            if (Interlocked.CompareExchange(ref lockState, Exclusive, 0) == 0)
            {
                Volatile.Write(ref exclusiveOwner, Environment.CurrentManagedThreadId);
                return true;
            }
            return false;
        }
        // Writer preference: once a writer waits, new readers queue behind it (readers never starve a writer).
        if (Volatile.Read(ref writersWaiting) != 0)
        {
            return false;
        }
        int s = Volatile.Read(ref lockState);
        while (s >= 0)
        {
            int seen = Interlocked.CompareExchange(ref lockState, s + 1, s);
            if (seen == s)
            {
                return true;
            }
            s = seen;
        }
        return false;
    }

    internal void Lock(BufferLockMode mode)
    {
        if (TryLock(mode))
        {
            return;
        }
        LockSlow(mode);
    }

    private void LockSlow(BufferLockMode mode)
    {
        if (IsLockedExclusiveByCurrentThread)
        {
            throw new InvalidOperationException($"{this}: this thread already holds the buffer locked exclusively (a second lock would deadlock)");
        }
        bool writer = mode == BufferLockMode.Exclusive;
        if (writer)
        {
            Interlocked.Increment(ref writersWaiting);
        }
        try
        {
            var spin = new SpinWait();
            for (int i = 0; i < 20; i++)
            {
                spin.SpinOnce(sleep1Threshold: -1);
                if (TryLock(mode))
                {
                    return;
                }
            }
            lock (this)
            {
                Interlocked.Increment(ref lockWaiters);
                try
                {
                    while (!TryLock(mode))
                    {
                        Monitor.Wait(this);
                    }
                }
                finally
                {
                    Interlocked.Decrement(ref lockWaiters);
                }
            }
        }
        finally
        {
            if (writer && Interlocked.Decrement(ref writersWaiting) == 0)
            {
                // Readers that queued behind this writer may proceed once it releases; nothing to wake now
                // unless it failed to acquire (exception), in which case they must re-check.
                WakeWaiters();
            }
        }
    }

    internal void Unlock()
    {
        int s = Volatile.Read(ref lockState);
        if (s == Exclusive)
        {
            Volatile.Write(ref exclusiveOwner, 0);
            Interlocked.Exchange(ref lockState, 0);
        }
        else if (s > 0)
        {
            while (true)
            {
                int seen = Interlocked.CompareExchange(ref lockState, s - 1, s);
                if (seen == s)
                {
                    break;
                }
                if (seen <= 0)
                {
                    throw new InvalidOperationException($"{this}: unlock of a buffer that is not locked");
                }
                s = seen;
            }
        }
        else
        {
            throw new InvalidOperationException($"{this}: unlock of a buffer that is not locked");
        }
        WakeWaiters();
    }

    /// <summary>Exclusive → one shared holder (the caller), letting other readers in.</summary>
    internal void Downgrade()
    {
        Volatile.Write(ref exclusiveOwner, 0);
        Interlocked.Exchange(ref lockState, 1);
        WakeWaiters();
    }

    private void WakeWaiters()
    {
        // The Interlocked write above is a full fence; a waiter increments lockWaiters before it re-tries
        // under the monitor, so either it sees the release or we see it and pulse (no lost wake-up).
        if (Volatile.Read(ref lockWaiters) != 0)
        {
            lock (this)
            {
                Monitor.PulseAll(this);
            }
        }
    }
}
