namespace Xfbtree.Native;

/// <summary>
/// A failed operating-system call: names the call, the error number (errno on Linux, Win32 error elsewhere)
/// and the system's text for it. Thrown only by the one translator, <see cref="NativeErrors"/>.
/// </summary>
public sealed class NativeCallException : IOException
{
    /// <summary>Creates the exception; prefer <see cref="NativeErrors.Throw(string, int)"/>.</summary>
    public NativeCallException(string call, int errorNumber, string errorText, string? detail = null)
        : base(FormatMessage(call, errorNumber, errorText, detail))
    {
        Call = call;
        ErrorNumber = errorNumber;
        ErrorText = errorText;
    }

    /// <summary>Creates an exception without a call (serialization-style constructor for analyzers).</summary>
    public NativeCallException() : this("unknown", 0, "unknown error") { }

    /// <summary>Creates an exception with a free-form message.</summary>
    public NativeCallException(string message) : base(message)
    {
        Call = "unknown";
        ErrorText = message;
    }

    /// <summary>Creates an exception with a free-form message and an inner exception.</summary>
    public NativeCallException(string message, Exception innerException) : base(message, innerException)
    {
        Call = "unknown";
        ErrorText = message;
    }

    /// <summary>The failing call, e.g. "fallocate".</summary>
    public string Call { get; }

    /// <summary>errno (Linux) or the Win32 error code.</summary>
    public int ErrorNumber { get; }

    /// <summary>The system's description of <see cref="ErrorNumber"/> (strerror).</summary>
    public string ErrorText { get; }

    /// <summary>True for "no space / no memory / quota" errors: the caller asked for more than the system has.</summary>
    public bool IsOutOfSpace => ErrorNumber is NativeErrors.ENOSPC or NativeErrors.ENOMEM or NativeErrors.EDQUOT;

    private static string FormatMessage(string call, int errorNumber, string errorText, string? detail) =>
        detail is null
            ? $"{call} failed: errno {errorNumber} ({errorText})"
            : $"{call} failed: errno {errorNumber} ({errorText}) [{detail}]";
}
