namespace Xfbtree.Tests.Support;

/// <summary>
/// Measures what a piece of code allocates on the calling thread, for the "allocates nothing" tests. The runtime now
/// and then charges a thread the rest of its current allocation context at a random moment (seen in every such test:
/// a few KiB, always under one 8 KiB quantum, with no collection and no exception in between), which is not an
/// allocation of the code under test. Code on a deterministic path allocates the same every time, so a reading under
/// a quantum is taken again, at most twice: a real allocation shows every time, the runtime's charge does not repeat.
/// </summary>
internal static class AllocationProbe
{
    /// <summary>The GC's allocation quantum: the most the runtime's one-off charge can be.</summary>
    public const long Quantum = 8 << 10;

    /// <summary>Bytes <paramref name="measured"/> allocated on this thread (it must be repeatable).</summary>
    public static long Measure(Action measured) => Measure(() =>
    {
        long before = GC.GetAllocatedBytesForCurrentThread();
        measured();
        return GC.GetAllocatedBytesForCurrentThread() - before;
    });

    /// <summary>The bytes <paramref name="scenario"/> reports for its measured part (it sets itself up afresh each
    /// time, for code whose first use is what is measured, e.g. a tree growing from empty).</summary>
    public static long Measure(Func<long> scenario)
    {
        long bytes = 0;
        for (int attempt = 0; attempt < 3; attempt++)
        {
            bytes = scenario();
            if (bytes == 0 || bytes >= Quantum) return bytes;
        }
        return bytes;
    }
}
