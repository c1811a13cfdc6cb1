namespace Xfbtree.Xfs.Write.Engine;

/// <summary>
/// A mutual-exclusion lock without thread affinity (a transaction may be released on another thread than the
/// one that locked, as the kernel's inode and AGF locks): the inode and AG locks of the engine.
/// </summary>
internal sealed class GateLock
{
    private readonly object monitor = new();
    private bool held;
    private int waiters;

    public void Enter()
    {
        lock (monitor)
        {
            while (held)
            {
                waiters++;
                try
                {
                    Monitor.Wait(monitor);
                }
                finally
                {
                    waiters--;
                }
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

    /// <summary>Waits at most <paramref name="timeout"/> for the lock (online repair's busy-inode deadline).</summary>
    public bool TryEnter(TimeSpan timeout)
    {
        long deadline = Environment.TickCount64 + (long)timeout.TotalMilliseconds;
        lock (monitor)
        {
            while (held)
            {
                long left = deadline - Environment.TickCount64;
                if (left <= 0 || (!Monitor.Wait(monitor, (int)Math.Min(left, int.MaxValue)) && held))
                {
                    return false;
                }
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

    /// <summary>Threads blocked in <see cref="Enter"/> (tests: a writer is known to wait for a repair).</summary>
    public int Waiters
    {
        get
        {
            lock (monitor)
            {
                return waiters;
            }
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
