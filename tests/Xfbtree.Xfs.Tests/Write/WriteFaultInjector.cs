using System.Diagnostics;

namespace Xfbtree.Xfs.Write.Engine;

/// <summary>
/// Crash points for the tests, plugged into the engine's <see cref="WriteFaultHook"/> seam: every write the engine makes to the image or its journal asks <see cref="BeforeWrite"/> first, and the
/// <see cref="CrashAtWrite"/>-th one never happens: the crash action runs instead (default: SIGKILL of this
/// process, as kill -9). With a throwing action the engine is "dead" from then on: every later write throws too,
/// so a test can crash in process and reopen after disposing the engine (the page cache survives a kill -9, so
/// what reached pwrite is exactly what a killed process leaves).
/// </summary>
internal sealed class WriteFaultInjector(int crashAtWrite, Action? crash = null) : WriteFaultHook
{
    private int writes;
    private volatile bool crashed;
    private int crashAtWrite = crashAtWrite;

    /// <summary>1-based index of the write that does not happen.</summary>
    public int CrashAtWrite => Volatile.Read(ref crashAtWrite);

    /// <summary>Moves the crash point to the next write (a test that reaches the moment it wants by running, not by
    /// counting: the power goes off at whatever the engine writes next).</summary>
    public void CrashAtNextWrite() => Volatile.Write(ref crashAtWrite, Volatile.Read(ref writes) + 1);

    /// <summary>Writes allowed so far.</summary>
    public int Writes => Volatile.Read(ref writes);

    /// <summary>True once the crash point was reached.</summary>
    public bool Crashed => crashed;

    public override bool IsCrash(Exception exception) => exception is SimulatedCrashException;

    public override void BeforeWrite()
    {
        if (crashed)
        {
            throw new SimulatedCrashException();
        }
        if (Interlocked.Increment(ref writes) == CrashAtWrite)
        {
            crashed = true;
            if (crash is null)
            {
                using var self = Process.GetCurrentProcess();
                self.Kill();
                Environment.FailFast("crash point reached");
            }
            crash();
            throw new SimulatedCrashException();
        }
    }
}

/// <summary>Thrown at and after a simulated crash point (in-process crash tests).</summary>
internal sealed class SimulatedCrashException : IOException
{
    public SimulatedCrashException() : base("simulated crash: no more writes reach the image or the journal") { }
}
