namespace Xfbtree.Xfs.Write.Engine;

/// <summary>
/// A lock a transaction could not take in order (try-lock of a lower AG or inode failed): the engine cancels the
/// transaction and restarts the body with that lock in its <see cref="LockPlan"/>, taken first next time.
/// Never escapes <see cref="WriteEngine.Execute{T}"/>.
/// </summary>
internal sealed class LockRestartException : Exception
{
    public LockRestartException(uint agno) : base($"restart: AG {agno} out of order") => Ag = agno;

    public LockRestartException(IncoreInode inode) : base($"restart: {inode} out of order") => Inode = inode;

    public uint? Ag { get; }

    public IncoreInode? Inode { get; }
}

/// <summary>Locks a restarted transaction takes before the ones its body asks for (in lock order).</summary>
internal sealed class LockPlan
{
    public SortedDictionary<ulong, IncoreInode> Inodes { get; } = new();

    public SortedSet<uint> Ags { get; } = new();

    public void Add(LockRestartException restart)
    {
        if (restart.Inode is { } inode)
        {
            Inodes[inode.Ino] = inode;
        }
        if (restart.Ag is { } ag)
        {
            Ags.Add(ag);
        }
    }
}
