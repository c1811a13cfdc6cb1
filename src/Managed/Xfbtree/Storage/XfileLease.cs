using System.Runtime.InteropServices;

namespace Xfbtree.Storage;

/// <summary>
/// Reference-counted lifetime of an xfile's native resources. Every in-flight call and every pin holds a
/// reference (<see cref="SafeHandle.DangerousAddRef"/>), so Dispose only releases the backend once the last
/// pin is dropped: a pinned pointer never dangles, even across Dispose. The finalizer releases a forgotten
/// xfile, unless pins are still outstanding (then the memory leaks rather than vanishing under a pointer).
/// </summary>
internal sealed class XfileLease : SafeHandle
{
    private readonly XfileBackend backend;

    public XfileLease(XfileBackend backend) : base(IntPtr.Zero, ownsHandle: true)
    {
        this.backend = backend;
        SetHandle(new IntPtr(1));
    }

    public override bool IsInvalid => handle == IntPtr.Zero;

    protected override bool ReleaseHandle()
    {
        backend.ReleaseResources();
        return true;
    }
}
