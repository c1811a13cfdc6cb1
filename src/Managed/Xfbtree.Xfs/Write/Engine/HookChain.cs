namespace Xfbtree.Xfs.Write.Engine;

/// <summary>An observer of one kind of engine change (rmap records of an AG, directory entries), called
/// synchronously at commit. An exception thrown here is caught by the engine, never fails the writer, and is
/// reported to the observer through <see cref="OnHookFailed"/>.</summary>
internal interface IEngineHook<TUpdate> where TUpdate : struct
{
    void OnUpdate(in TUpdate update);
    void OnHookFailed(Exception error);
}

/// <summary>
/// The observers of one kind of change, kept as a snapshot array so that a writer's delivery takes no lock and
/// allocates nothing; adding and removing copy the array under a small lock of their own (the owner takes any
/// coarser lock it needs around them, as an AG takes its AG lock).
/// </summary>
internal sealed class HookChain<THook, TUpdate> where THook : class, IEngineHook<TUpdate> where TUpdate : struct
{
    private readonly Lock gate = new();
    private volatile THook[] hooks = [];

    public bool HasHooks => hooks.Length != 0;

    public void Add(THook hook)
    {
        lock (gate)
        {
            hooks = [.. hooks, hook];
        }
    }

    public void Remove(THook hook)
    {
        lock (gate)
        {
            var list = new List<THook>(hooks);
            list.Remove(hook);
            hooks = [.. list];
        }
    }

    /// <summary>Hands one update to every observer; a throwing observer is told through OnHookFailed.</summary>
    public void Deliver(in TUpdate update)
    {
        foreach (THook hook in hooks)
        {
            try
            {
                hook.OnUpdate(update);
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
}

/// <summary>One observer's registration: disposing it (once; later calls do nothing) runs its removal.</summary>
internal sealed class HookRegistration(Action remove) : IDisposable
{
    private int disposed;

    public void Dispose()
    {
        if (Interlocked.Exchange(ref disposed, 1) == 0)
        {
            remove();
        }
    }
}
