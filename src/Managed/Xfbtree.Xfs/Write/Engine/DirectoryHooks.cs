namespace Xfbtree.Xfs.Write.Engine;

/// <summary>Which kind of directory entry changed (the link count scanner counts them apart).</summary>
internal enum DirectoryEntryKind
{
    /// <summary>A named entry (not '.' or '..').</summary>
    Name,
    /// <summary>A directory's '.' (it names the directory itself).</summary>
    Dot,
    /// <summary>A directory's '..' (it names the parent).</summary>
    DotDot,
}

/// <summary>
/// One directory entry that appeared (<see cref="Delta"/> +1) or went away (-1) in directory <see cref="DirIno"/>,
/// naming <see cref="ChildIno"/> (upstream's xfs_dir_update_hook). A replaced entry is two updates; a new
/// directory's '.' and '..' appear with it, and vanish when it is removed.
/// </summary>
internal readonly record struct DirectoryUpdate(ulong DirIno, ulong ChildIno, int Delta, DirectoryEntryKind Kind);

/// <summary>An observer of directory entry changes (the online link count scanner's live hook). Called at commit,
/// synchronously, while the writer still holds its inode locks: the directory's and the named inode's (every
/// operation that adds or removes a name locks both). An exception thrown here is caught by the engine, never
/// fails the writer, and is reported through <see cref="IEngineHook{TUpdate}.OnHookFailed"/>.</summary>
internal interface IDirectoryHook : IEngineHook<DirectoryUpdate>
{
    void OnDirectoryUpdate(in DirectoryUpdate update);

    void IEngineHook<DirectoryUpdate>.OnUpdate(in DirectoryUpdate update) => OnDirectoryUpdate(update);
}

/// <summary>The engine's directory observers.</summary>
internal sealed class DirectoryHookChain
{
    private readonly HookChain<IDirectoryHook, DirectoryUpdate> chain = new();

    public bool HasHooks => chain.HasHooks;

    public IDisposable Add(IDirectoryHook hook)
    {
        chain.Add(hook);
        return new HookRegistration(() => chain.Remove(hook));
    }

    /// <summary>Hands one update to every observer; a throwing observer is told through OnHookFailed.</summary>
    public void Deliver(in DirectoryUpdate update) => chain.Deliver(update);
}
