namespace Xfbtree.Xfs.Write.Engine;

/// <summary>
/// A mutual-exclusion lock without thread affinity (a transaction may be released on another thread than the
/// one that locked, as the kernel's inode and AGF locks): the inode and AG locks of the engine.
/// <see cref="Exit"/> pulses only when a thread waits: a pulse needs a wait queue on the monitor (under native AOT
/// an entry in a table of weak handles, under the JIT a sync block), and online scans lock every inode of the
/// filesystem once, so pulsing each fresh inode's lock left a handle per inode for the collector to scan, and its
/// pauses stopped the writers (stress with back-to-back link count checks: writers at 0.3x).
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
                if (left <= 0)
                {
                    return false;
                }
                bool pulsed;
                waiters++;
                try
                {
                    pulsed = Monitor.Wait(monitor, (int)Math.Min(left, int.MaxValue));
                }
                finally
                {
                    waiters--;
                }
                if (!pulsed && held)
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
            if (waiters > 0)
            {
                Monitor.Pulse(monitor);
            }
        }
    }

    /// <summary>Threads blocked in <see cref="Enter"/> or <see cref="TryEnter(TimeSpan)"/> (tests: a writer is known to wait for a repair).</summary>
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
