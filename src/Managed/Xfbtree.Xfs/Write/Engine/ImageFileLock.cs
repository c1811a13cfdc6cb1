using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;

namespace Xfbtree.Xfs.Write.Engine;

/// <summary>
/// The exclusive, non-blocking flock(2) that keeps a second writer out. It is taken on the image's probe handle
/// (<see cref="XfsImage.RawHandle"/>): .NET already holds a shared flock on that descriptor, and flock converts
/// it in place, whereas a lock on another descriptor of this process would conflict with it.
/// </summary>
internal static partial class ImageFileLock
{
    private const int LockExclusive = 2, LockNonBlocking = 4;
    private const int EWOULDBLOCK = 11;

    /// <summary>True when the lock was taken; false when another open file holds a lock on the image.</summary>
    /// <exception cref="IOException">flock failed for another reason.</exception>
    public static bool TryLockExclusive(SafeFileHandle handle)
    {
        if (!OperatingSystem.IsLinux())
        {
            return true; // FileShare on other systems already made the probe handle's open exclusive enough
        }
        if (Flock(handle, LockExclusive | LockNonBlocking) == 0)
        {
            return true;
        }
        int errno = Marshal.GetLastPInvokeError();
        if (errno == EWOULDBLOCK)
        {
            return false;
        }
        throw new IOException($"flock failed (errno {errno})");
    }

    [LibraryImport("libc", EntryPoint = "flock", SetLastError = true)]
    private static partial int Flock(SafeFileHandle fd, int operation);
}
