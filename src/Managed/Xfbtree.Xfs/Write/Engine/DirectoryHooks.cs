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
/// fails the writer, and is reported through <see cref="OnHookFailed"/>.</summary>
internal interface IDirectoryHook
{
    void OnDirectoryUpdate(in DirectoryUpdate update);
    void OnHookFailed(Exception error);
}

/// <summary>The engine's directory observers: a snapshot array, so that delivery takes no lock.</summary>
internal sealed class DirectoryHookChain
{
    private static readonly IDirectoryHook[] None = [];
    private readonly Lock gate = new();
    private volatile IDirectoryHook[] hooks = None;

    public bool HasHooks => hooks.Length != 0;

    public IDisposable Add(IDirectoryHook hook)
    {
        lock (gate)
        {
            hooks = [.. hooks, hook];
        }
        return new Registration(this, hook);
    }

    private void Remove(IDirectoryHook hook)
    {
        lock (gate)
        {
            var list = new List<IDirectoryHook>(hooks);
            list.Remove(hook);
            hooks = list.Count == 0 ? None : list.ToArray();
        }
    }

    /// <summary>Hands one update to every observer; a throwing observer is told through OnHookFailed.</summary>
    public void Deliver(in DirectoryUpdate update)
    {
        foreach (IDirectoryHook hook in hooks)
        {
            try
            {
                hook.OnDirectoryUpdate(update);
            }
            catch (Exception e)
            {
                try
                {
                    hook.OnHookFailed(e);
                }
                catch (Exception)
                {
                    // An observer that fails to take its own failure report is beyond help; the writer goes on.
                }
            }
        }
    }

    private sealed class Registration(DirectoryHookChain chain, IDirectoryHook hook) : IDisposable
    {
        private int disposed;

        public void Dispose()
        {
            if (Interlocked.Exchange(ref disposed, 1) == 0)
            {
                chain.Remove(hook);
            }
        }
    }
}
