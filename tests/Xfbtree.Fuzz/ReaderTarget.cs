namespace Xfbtree.Fuzz;

/// <summary>
/// Target <c>reader</c>: a patch list applied to a small real XFS image, then <c>rmap check</c> and <c>rmap dump</c>
/// in-process. Waits for the XFS scan and CLI (branch xfs); until then every input is a no-op.
/// </summary>
public static class ReaderTarget
{
    public static FuzzOutcome Run(ReadOnlySpan<byte> input) => FuzzOutcome.Ok;
}
