using System.Diagnostics;

namespace Xfbtree.Xfs.Tests;

/// <summary>
/// Every child process of this test assembly starts here. A child forked by <see cref="Process.Start()"/> holds a
/// copy of every descriptor of the test process until it execs (close-on-exec closes them only then), and tests run
/// in parallel: a file one test has open on a mount, or had open a moment ago, can be held by the child of another
/// test, and that test's umount then fails "target is busy". .NET's Process.Start returns only once the child has
/// exec'd (or failed to), so an umount started while no other start is in flight meets no such copy: starts share
/// a gate, and umount takes it alone.
/// </summary>
internal static class ChildProcesses
{
    // Recursion: the umount itself is a child started under the exclusive gate.
    static readonly ReaderWriterLockSlim Gate = new(LockRecursionPolicy.SupportsRecursion);

    /// <summary>Starts <paramref name="psi"/>: beside other starts, or alone when it runs umount.</summary>
    public static Process Start(ProcessStartInfo psi)
    {
        var process = new Process { StartInfo = psi };
        Start(process);
        return process;
    }

    /// <summary>Starts <paramref name="process"/> (its handlers already attached) under the gate.</summary>
    public static void Start(Process process)
    {
        bool alone = IsUmount(process.StartInfo.FileName);
        if (alone) Gate.EnterWriteLock(); else Gate.EnterReadLock();
        try
        {
            process.Start();
        }
        finally
        {
            if (alone) Gate.ExitWriteLock(); else Gate.ExitReadLock();
        }
    }

    static bool IsUmount(string file) => Path.GetFileName(file) == "umount";
}
