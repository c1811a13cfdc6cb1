using System.Diagnostics.CodeAnalysis;
using System.Runtime.InteropServices;

namespace Xfbtree.Native;

/// <summary>
/// The one errno/Win32-error to exception translator. Native wrappers return status internally and call
/// one of these at the edge, so every OS failure surfaces as a <see cref="NativeCallException"/>.
/// </summary>
public static class NativeErrors
{
    // Linux generic errno values (identical on x86-64 and arm64); kept here so no caller needs Tmds.Linux.
    internal const int EINTR = 4;
    internal const int EIO = 5;
    internal const int EBADF = 9;
    internal const int ENOMEM = 12;
    internal const int EBUSY = 16;
    internal const int EEXIST = 17;
    internal const int EISDIR = 21;
    internal const int EINVAL = 22;
    internal const int ENOSPC = 28;
    internal const int ENOSYS = 38;
    internal const int EOPNOTSUPP = 95;
    internal const int EDQUOT = 122;

    /// <summary>Throws a <see cref="NativeCallException"/> for <paramref name="errorNumber"/> returned by <paramref name="call"/>.</summary>
    [DoesNotReturn]
    public static void Throw(string call, int errorNumber) => throw Create(call, errorNumber, null);

    /// <summary>Same as <see cref="Throw(string, int)"/> with extra context (path, offset, length).</summary>
    [DoesNotReturn]
    public static void Throw(string call, int errorNumber, string detail) => throw Create(call, errorNumber, detail);

    /// <summary>Builds the exception without throwing (for callers that aggregate or wrap).</summary>
    public static NativeCallException Create(string call, int errorNumber, string? detail = null) =>
        new(call, errorNumber, Describe(errorNumber), detail);

    /// <summary>The system's text for an error number (strerror on Unix, FormatMessage on Windows).</summary>
    public static string Describe(int errorNumber) => Marshal.GetPInvokeErrorMessage(errorNumber);
}
