using System.Runtime.InteropServices;
using System.Runtime.Versioning;

namespace Xfbtree.Native;

/// <summary>Owns a Linux file descriptor; closes it exactly once (also from the finalizer).</summary>
[SupportedOSPlatform("linux")]
internal sealed class SafeFdHandle : SafeHandle
{
    /// <summary>Creates an invalid handle (fd -1).</summary>
    public SafeFdHandle() : base(new IntPtr(-1), ownsHandle: true) { }

    /// <summary>Takes ownership of <paramref name="fd"/>.</summary>
    public SafeFdHandle(int fd) : base(new IntPtr(-1), ownsHandle: true) => SetHandle(new IntPtr(fd));

    /// <inheritdoc/>
    public override bool IsInvalid => handle.ToInt64() < 0;

    /// <summary>The raw descriptor. Only valid while a reference is held (see <see cref="SafeHandle.DangerousAddRef"/>).</summary>
    public int Fd => (int)handle.ToInt64();

    /// <inheritdoc/>
    protected override bool ReleaseHandle()
    {
        // close() must not be retried on EINTR on Linux: the fd is gone either way.
        return Tmds.Linux.LibC.close(Fd) == 0;
    }
}
