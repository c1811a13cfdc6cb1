using System.Runtime.InteropServices;
using System.Runtime.Versioning;

namespace Xfbtree.Native;

/// <summary>
/// Owns one mmap'ed range; unmaps it exactly once, when disposed and the last
/// <see cref="SafeHandle.DangerousAddRef"/> lease is released, so a pinned pointer never outlives its memory.
/// </summary>
[SupportedOSPlatform("linux")]
internal sealed unsafe class SafeMappingHandle : SafeHandle
{
    /// <summary>Creates an invalid handle.</summary>
    public SafeMappingHandle() : base(IntPtr.Zero, ownsHandle: true) { }

    /// <summary>Takes ownership of the mapping [<paramref name="address"/>, +<paramref name="length"/>).</summary>
    public SafeMappingHandle(void* address, long length) : base(IntPtr.Zero, ownsHandle: true)
    {
        Length = length;
        SetHandle((IntPtr)address);
    }

    /// <summary>Length of the mapping in bytes.</summary>
    public long Length { get; }

    /// <summary>Base address. Only valid while a reference is held or the handle is known to be open.</summary>
    public byte* Address => (byte*)handle;

    /// <inheritdoc/>
    public override bool IsInvalid => handle == IntPtr.Zero;

    /// <inheritdoc/>
    protected override bool ReleaseHandle() => Tmds.Linux.LibC.munmap((void*)handle, (Tmds.Linux.size_t)(ulong)Length) == 0;
}
