using System.Buffers;
using System.Runtime.ExceptionServices;

namespace Xfbtree.Buffers;

/// <summary>Joins buffers, logs dirty ranges, then commits (write-verify + write) or cancels.</summary>
/// <remarks>
/// <para>A transaction collects exclusively locked buffers and keeps their holds and locks until it ends.
/// There is no journal: it is the unit of "these blocks change together, verified".</para>
/// <para><b>Commit.</b> Disk buffers that are dirty are run through their write verifier (CRC) and written in
/// ascending (target, daddr) order; stale (freed) ones are dropped unwritten. If a verifier or a write fails,
/// writing stops: the failed buffer and every dirty buffer not yet written are invalidated (their next use
/// re-reads the disk), so the cache again mirrors the disk, and the first error is thrown after every buffer
/// was released. Xfile buffers: dirty ones are structure-checked (their write verifier; there is no I/O),
/// stale ones are punched out of the xfile when released; the first verifier error is thrown after all were
/// processed and released (upstream xfbtree_trans_commit).</para>
/// <para><b>Cancel</b> writes nothing. Disk buffers with changes are invalidated: the changes are dropped and
/// the block is re-read on next use. Xfile buffers cannot be undone (their memory is the xfile, as upstream);
/// the flags are cleared and, when there were changes, the <see cref="XfileBufferTarget"/> is poisoned so the
/// half-changed structure cannot be used by mistake (see <see cref="XfileBufferTarget.IsPoisoned"/>).</para>
/// </remarks>
public sealed class BufferTransaction : IDisposable
{
    private readonly BufferCache cache;
    private readonly List<BlockBuffer> items = new();
    private Dictionary<BlockBuffer, byte[]>? joinImages;
    private bool done;

    /// <summary>An empty transaction on <paramref name="cache"/>.</summary>
    public BufferTransaction(BufferCache cache)
    {
        ArgumentNullException.ThrowIfNull(cache);
        this.cache = cache;
    }

    /// <summary>
    /// A checking aid (tests): each disk buffer's contents are copied when it joins, so that
    /// <see cref="FirstUnloggedChange"/> can tell a change made without <see cref="LogRange"/>. A journal that logs
    /// only dirty ranges would lose such a change in a crash. Costs a copy per join; off by default.
    /// </summary>
    public bool TrackChanges
    {
        get => joinImages != null;
        init => joinImages = value ? new Dictionary<BlockBuffer, byte[]>() : null;
    }

    /// <summary>
    /// With <see cref="TrackChanges"/>: the offset of the first byte of <paramref name="buffer"/> that differs
    /// from its contents when it joined and lies outside every dirty chunk; -1 when there is none (or the buffer
    /// was formatted or freed in this transaction, or tracking is off).
    /// </summary>
    public int FirstUnloggedChange(BlockBuffer buffer)
    {
        ArgumentNullException.ThrowIfNull(buffer);
        if (joinImages is null || buffer.IsStale || buffer.IsFormatted || !joinImages.TryGetValue(buffer, out byte[]? before))
        {
            return -1;
        }
        ReadOnlySpan<byte> now = buffer.Span;
        for (int at = 0; at < buffer.Length; at += BlockBuffer.DirtyChunkSize)
        {
            if (buffer.IsRangeDirty(at, BlockBuffer.DirtyChunkSize))
            {
                continue;
            }
            int differs = now.Slice(at, BlockBuffer.DirtyChunkSize).CommonPrefixLength(before.AsSpan(at, BlockBuffer.DirtyChunkSize));
            if (differs < BlockBuffer.DirtyChunkSize)
            {
                return at + differs;
            }
        }
        return -1;
    }

    /// <summary>Buffers joined so far.</summary>
    public int Count => items.Count;

    /// <summary>The joined buffers, in join order (valid until commit or cancel).</summary>
    public IReadOnlyList<BlockBuffer> Joined => items;

    /// <summary>True after Commit or Cancel.</summary>
    public bool IsFinished => done;

    /// <summary>Attaches a held buffer; the transaction takes over the caller's hold and releases it at commit/cancel.</summary>
    /// <exception cref="InvalidOperationException">The buffer is not locked exclusively, or already joined.</exception>
    public void Join(BlockBuffer buffer)
    {
        cache.CheckOwned(buffer);
        ThrowIfDone();
        if (!buffer.IsLockedExclusive)
        {
            throw new InvalidOperationException($"{buffer}: only exclusively locked buffers can join a transaction");
        }
        if (buffer.Transaction != null)
        {
            throw new InvalidOperationException(ReferenceEquals(buffer.Transaction, this)
                ? $"{buffer} is already joined to this transaction"
                : $"{buffer} is joined to another transaction");
        }
        buffer.Transaction = this;
        items.Add(buffer);
        if (buffer.Pinned && !buffer.Target.IsInMemory && buffer.IsUptodate)
        {
            // Committed changes not yet in place: the disk cannot give them back after a cancel, and a write-back
            // while this transaction changes the buffer must write them, not ours. Saved under the pin guard.
            byte[] committed = ArrayPool<byte>.Shared.Rent(buffer.Length);
            buffer.Span.CopyTo(committed);
            buffer.EnterPinGuard();
            buffer.CommittedImage = committed;
            buffer.ExitPinGuard();
        }
        if (joinImages != null && !buffer.Target.IsInMemory && buffer.IsUptodate && !buffer.IsFormatted)
        {
            joinImages[buffer] = buffer.Span.ToArray();
        }
    }

    /// <summary>
    /// Reads a buffer into the transaction: one already joined is returned as it is, otherwise it is read
    /// (exclusively) through the cache and joined. The transaction owns the hold: do not release it.
    /// </summary>
    public BlockBuffer Read(BufferTarget target, long daddr, int lengthBB, IBufferVerifier? verifier)
    {
        ThrowIfDone();
        if (Find(target, daddr, lengthBB) is { } joined)
        {
            return joined;
        }
        var buffer = cache.Read(target, daddr, lengthBB, verifier, BufferLockMode.Exclusive);
        Join(buffer);
        return buffer;
    }

    /// <summary>
    /// Like <see cref="BufferCache.GetNew"/>, joined. A buffer already joined is returned with the new verifier
    /// (a block freed by one tree and formatted by another in the same transaction is written as the latter);
    /// when it was freed (stale) its contents start from zeros, as a fresh one would.
    /// </summary>
    public BlockBuffer GetNew(BufferTarget target, long daddr, int lengthBB, IBufferVerifier? verifier)
    {
        ThrowIfDone();
        if (Find(target, daddr, lengthBB) is { } joined)
        {
            if (joined.IsStale)
            {
                joined.Span.Clear();
                joined.ClearDirtyAndStale();
                joined.Verifier = verifier;
            }
            else if (verifier != null)
            {
                joined.Verifier = verifier;
            }
            joined.SetFormatted();
            return joined;
        }
        var buffer = cache.GetNew(target, daddr, lengthBB, verifier);
        Join(buffer);
        return buffer;
    }

    /// <summary>
    /// The block was freed by this transaction: its buffer, if one is joined or cached, joins the transaction and is
    /// marked stale (xfs_trans_binval), so it is never written and leaves the cache when the transaction ends (on a
    /// cancel it is re-read on next use). A later allocation of the block can then only find it formatted anew.
    /// Returns false when no buffer of exactly this address and length was in memory.
    /// </summary>
    public bool Invalidate(BufferTarget target, long daddr, int lengthBB)
    {
        ArgumentNullException.ThrowIfNull(target);
        ThrowIfDone();
        BlockBuffer? buffer = Find(target, daddr, lengthBB);
        if (buffer is null)
        {
            buffer = cache.TryGetCached(target, daddr, lengthBB);
            if (buffer is null)
            {
                return false;
            }
            Join(buffer);
        }
        buffer.MarkStale();
        return true;
    }

    /// <summary>Marks a range of a joined buffer dirty.</summary>
    public void LogRange(BlockBuffer buffer, int offset, int length)
    {
        ArgumentNullException.ThrowIfNull(buffer);
        ThrowIfDone();
        if (!ReferenceEquals(buffer.Transaction, this))
        {
            throw new InvalidOperationException($"{buffer} is not joined to this transaction");
        }
        buffer.MarkDirty(offset, length);
    }

    /// <summary>Writes every joined dirty buffer (verifiers first, in daddr order) and releases them; no fsync.</summary>
    public void Commit() => CommitCore(sync: false, prepared: false);

    /// <summary>As <see cref="Commit"/> for a caller that already ran the write verifier of every dirty disk buffer
    /// (a journaling commit, which logs the checksummed bytes) and changed nothing since: the checksums are not
    /// computed a second time.</summary>
    public void CommitPrepared() => CommitCore(sync: false, prepared: true);

    /// <summary>
    /// Ends the transaction of a journaling user whose record holds every change and who ran the write verifier of
    /// every dirty disk buffer: nothing is written; each dirty, non-stale disk buffer is pinned in the cache
    /// (<see cref="BufferCache.Pin"/>) with its dirty state cleared, to be written in place by the user's write-back
    /// once the record is durable. Stale buffers leave the cache unwritten; xfile buffers as in <see cref="Commit"/>.
    /// </summary>
    internal void CommitPinned()
    {
        ThrowIfDone();
        done = true;
        Exception? first = null;
        try
        {
            foreach (var buffer in items)
            {
                if (buffer.IsStale || !buffer.IsDirty)
                {
                    continue;
                }
                if (buffer.Target.IsInMemory)
                {
                    try
                    {
                        buffer.Verifier?.PrepareWrite(buffer);
                    }
                    catch (CorruptionException e)
                    {
                        first ??= e;
                    }
                    buffer.ClearDirty();
                    continue;
                }
                buffer.ClearDirty();
                cache.Pin(buffer);
            }
        }
        finally
        {
            ReleaseAll();
        }
        if (first != null)
        {
            ExceptionDispatchInfo.Throw(first);
        }
    }

    /// <summary>Commits, then fsyncs every disk target written before the buffers are released (a durability barrier).</summary>
    public void CommitAndSync() => CommitCore(sync: true, prepared: false);

    private void CommitCore(bool sync, bool prepared)
    {
        ThrowIfDone();
        done = true;
        Exception? first = null;
        try
        {
            var disk = new List<BlockBuffer>();
            foreach (var buffer in items)
            {
                if (!buffer.Target.IsInMemory && buffer.IsDirty && !buffer.IsStale)
                {
                    disk.Add(buffer);
                }
            }
            disk.Sort(static (x, y) => x.Target.Id != y.Target.Id ? x.Target.Id.CompareTo(y.Target.Id) : x.Daddr.CompareTo(y.Daddr));
            List<BufferTarget>? written = sync ? new List<BufferTarget>() : null;
            foreach (var buffer in disk)
            {
                if (first != null)
                {
                    buffer.Invalidate();
                    continue;
                }
                try
                {
                    cache.WriteLocked(buffer, prepared);
                    if (written != null && !written.Contains(buffer.Target))
                    {
                        written.Add(buffer.Target);
                    }
                }
                catch (Exception e) when (e is IOException or CorruptionException)
                {
                    first = e;
                    buffer.Invalidate();
                }
            }
            foreach (var buffer in items)
            {
                if (!buffer.Target.IsInMemory || buffer.IsStale || !buffer.IsDirty)
                {
                    continue;
                }
                try
                {
                    buffer.Verifier?.PrepareWrite(buffer);
                }
                catch (CorruptionException e)
                {
                    first ??= e;
                }
                buffer.ClearDirty();
            }
            if (first == null && written != null)
            {
                foreach (var target in written)
                {
                    target.SyncForFlush();
                }
            }
        }
        finally
        {
            ReleaseAll();
        }
        if (first != null)
        {
            ExceptionDispatchInfo.Throw(first);
        }
    }

    /// <summary>Ends the transaction writing nothing (see the class remarks for xfile targets).</summary>
    public void Cancel()
    {
        ThrowIfDone();
        done = true;
        try
        {
            foreach (var buffer in items)
            {
                if (buffer.CommittedImage is { } committed)
                {
                    buffer.RestoreCommitted(committed); // pinned: the disk does not hold its committed contents
                    continue;
                }
                if (!buffer.IsDirty && !buffer.IsStale)
                {
                    continue;
                }
                if (buffer.Target.IsInMemory)
                {
                    buffer.ClearDirtyAndStale();
                    (buffer.Target as XfileBufferTarget)?.Poison();
                }
                else
                {
                    buffer.Invalidate();
                }
            }
        }
        finally
        {
            ReleaseAll();
        }
    }

    /// <summary>Cancels when neither committed nor cancelled.</summary>
    public void Dispose()
    {
        if (!done)
        {
            Cancel();
        }
    }

    private BlockBuffer? Find(BufferTarget target, long daddr, int lengthBB)
    {
        foreach (var buffer in items)
        {
            if (buffer.Daddr == daddr && buffer.LengthBB == lengthBB && ReferenceEquals(buffer.Target, target))
            {
                return buffer;
            }
        }
        return null;
    }

    private void ReleaseAll()
    {
        Exception? first = null;
        foreach (var buffer in items)
        {
            try
            {
                buffer.Transaction = null;
                if (buffer.CommittedImage is { } committed)
                {
                    buffer.EnterPinGuard();
                    buffer.CommittedImage = null;
                    buffer.ExitPinGuard();
                    ArrayPool<byte>.Shared.Return(committed);
                }
                buffer.Unlock();
                cache.DropHold(buffer);
            }
            catch (Exception e)
            {
                first ??= e;
            }
        }
        items.Clear();
        joinImages?.Clear();
        if (first != null)
        {
            ExceptionDispatchInfo.Throw(first);
        }
    }

    private void ThrowIfDone()
    {
        if (done)
        {
            throw new InvalidOperationException("the transaction is already committed or cancelled");
        }
    }
}
