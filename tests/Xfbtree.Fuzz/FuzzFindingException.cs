namespace Xfbtree.Fuzz;

/// <summary>
/// A finding raised by a harness itself: a model mismatch, a broken store contract, a hold leak or a walk that
/// went past its bound (a hang). Like any exception other than the expected corruption report it escapes the
/// harness, so afl++ records the input as a crash.
/// </summary>
public sealed class FuzzFindingException : Exception
{
    public FuzzFindingException(string message) : base(message) { }
    public FuzzFindingException(string message, Exception inner) : base(message, inner) { }
    public FuzzFindingException() { }
}
