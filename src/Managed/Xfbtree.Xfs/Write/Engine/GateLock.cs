namespace Xfbtree.Xfs.Write.Engine;

/// <summary>
/// A mutual-exclusion lock without thread affinity (a transaction may be released on another thread than the
/// one that locked, as the kernel's inode and AGF locks): the inode and AG locks of the engine.
/// </summary>
internal sealed class GateLock
{
    private readonly object monitor = new();
    private bool held;

    public void Enter()
    {
        lock (monitor)
        {
            while (held)
            {
                Monitor.Wait(monitor);
            }
            held = true;
        }
    }

    public bool TryEnter()
    {
        lock (monitor)
        {
            if (held)
            {
                return false;
            }
            held = true;
            return true;
        }
    }

    public void Exit()
    {
        lock (monitor)
        {
            if (!held)
            {
                throw new InvalidOperationException("release of a lock that is not held");
            }
            held = false;
            Monitor.Pulse(monitor);
        }
    }

    /// <summary>True while someone holds it (diagnostics and assertions only).</summary>
    public bool IsHeld
    {
        get
        {
            lock (monitor)
            {
                return held;
            }
        }
    }
}
