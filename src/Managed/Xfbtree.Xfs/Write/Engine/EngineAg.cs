using Xfbtree.Xfs.Format;

namespace Xfbtree.Xfs.Write.Engine;

/// <summary>An AG's free-space figures as the last commit left them (read without the AG lock, for AG selection).</summary>
internal sealed record AgSummary(uint FreeBlocks, uint Longest, uint FlCount, uint MinFreeList, long MetadataReserved, long RmapReserved);

/// <summary>Per-AG state of an open engine.</summary>
internal sealed class EngineAg
{
    private readonly HookChain<IRmapHook, RmapUpdate> hooks = new();
    private string? sickReason; // read and written through Volatile / Interlocked
    private volatile AgSummary summary = new(0, 0, 0, 0, 0, 0);

    internal EngineAg(WriteEngine engine, uint agno)
    {
        Engine = engine;
        AgNumber = agno;
        ReservationAsks = Space.AgReservations.Asks(engine.Geometry, agno);
        Verifiers = [null, new(AgHeaderKind.Agf, engine.Geometry, agno), new(AgHeaderKind.Agi, engine.Geometry, agno), new(AgHeaderKind.Agfl, engine.Geometry, agno)];
        RetiredChunks = new RetiredInodeChunks(engine.Geometry.Superblock.InodeAlignment << engine.Geometry.InodesPerBlockLog,
            engine.Options.RetiredInodeChunkCapacity);
    }

    /// <summary>Inode chunks of this AG freed since open and not allocated again (generations, free answers).</summary>
    internal RetiredInodeChunks RetiredChunks { get; }

    internal WriteEngine Engine { get; }

    public uint AgNumber { get; }

    /// <summary>True after corruption was found in this AG: no allocation here, operations touching it fail.</summary>
    public bool IsSick => Volatile.Read(ref sickReason) is not null;

    public string? SickReason => Volatile.Read(ref sickReason);

    /// <summary>Marks the AG sick (the first reason stays); a healthy AG turning sick raises <see cref="WriteEngine.AgMarkedSick"/>.</summary>
    public void MarkSick(string reason)
    {
        ArgumentNullException.ThrowIfNull(reason);
        if (Interlocked.CompareExchange(ref sickReason, reason, null) is null)
        {
            Engine.RaiseAgMarkedSick(this, reason);
        }
    }

    public void MarkHealthy() => Volatile.Write(ref sickReason, null);

    /// <summary>The AG lock (AGF, AGI, AGFL and the AG's btrees): a binary semaphore, no thread affinity.</summary>
    internal GateLock Lock { get; } = new();

    /// <summary>Header verifiers indexed by <see cref="AgHeaderKind"/>.</summary>
    internal AgHeaderVerifier?[] Verifiers { get; }

    /// <summary>Free blocks (agf_freeblks) as of the last commit that touched the AG.</summary>
    public uint FreeBlocks => summary.FreeBlocks;

    /// <summary>Longest free extent as of the last commit.</summary>
    public uint Longest => summary.Longest;

    /// <summary>Free-list length as of the last commit.</summary>
    public uint FreeListCount => summary.FlCount;

    /// <summary>(METADATA, RMAPBT) reservation asks of the AG (xfs_ag_resv_init's, fixed for the AG's size).</summary>
    internal (ulong Metadata, ulong Rmap) ReservationAsks { get; }

    /// <summary>Blocks an allocation for <paramref name="purpose"/> must leave free here, as of the last commit
    /// (reservations it may not use plus the free list's minimum).</summary>
    internal long PublishedReserve(AllocationPurpose purpose)
    {
        AgSummary s = summary;
        long reserved = Space.AgReservations.ForPurpose(Engine.Geometry, purpose, s.MetadataReserved, s.RmapReserved);
        return reserved + s.MinFreeList - Math.Min(s.FlCount, s.MinFreeList);
    }

    internal void Publish(AgSummary s) => summary = s;

    internal bool HasHooks => hooks.HasHooks;

    internal IDisposable AddHook(IRmapHook hook)
    {
        Lock.Enter();
        try
        {
            return AddHookLocked(hook);
        }
        finally
        {
            Lock.Exit();
        }
    }

    /// <summary>Adds an observer while the caller's transaction holds this AG's lock (online repair registers
    /// its hook in the same locked section that snapshots the AG's metadata).</summary>
    internal IDisposable AddHookHeld(IRmapHook hook)
    {
        if (!Lock.IsHeld)
        {
            throw new InvalidOperationException($"AG {AgNumber}: AddHookHeld without the AG lock");
        }
        return AddHookLocked(hook);
    }

    private IDisposable AddHookLocked(IRmapHook hook)
    {
        if (!Engine.Geometry.Superblock.HasRmapbt)
        {
            // No rmap change is ever made to observe: an observer would wait for events that never come.
            throw new XfsWriteException(WriteErrorKind.NotSupported, "the filesystem has no rmapbt: there are no rmap changes to observe");
        }
        hooks.Add(hook);
        return new HookRegistration(() => RemoveHook(hook));
    }

    private void RemoveHook(IRmapHook hook)
    {
        Lock.Enter();
        try
        {
            hooks.Remove(hook);
        }
        finally
        {
            Lock.Exit();
        }
    }

    /// <summary>Hands one update to every observer; a throwing observer is told through OnHookFailed and never fails the writer.</summary>
    internal void Deliver(in RmapUpdate update) => hooks.Deliver(update);

    public override string ToString() => $"AG {AgNumber}{(IsSick ? " (sick)" : "")}";
}
