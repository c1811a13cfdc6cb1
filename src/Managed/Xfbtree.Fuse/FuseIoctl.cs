using System.Runtime.Versioning;
using Xfbtree.Native;

namespace Xfbtree.Fuse;

/// <summary>
/// The client side of a file system's ioctl: what a tool uses to ask a mounted FUSE file system's server for
/// something (the request reaches <see cref="IFuseFileSystem.Ioctl"/> with the caller's credentials, as the kernel
/// states them).
/// </summary>
[SupportedOSPlatform("linux")]
internal static class FuseIoctl
{
    /// <summary>The size an ioctl command number carries (_IOC_SIZE).</summary>
    public static int SizeOf(uint command) => (int)((command >> 16) & 0x3FFF);

    /// <summary>An _IOWR command number: data copied in and back, <paramref name="size"/> bytes (at most 16383).</summary>
    public static uint ReadWrite(char type, byte number, int size)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(size);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(size, 0x3FFF);
        return (3u << 30) | ((uint)size << 16) | ((uint)(byte)type << 8) | number;
    }

    /// <summary>
    /// Opens <paramref name="path"/> read-only, calls ioctl(2) with <paramref name="argument"/> (exactly the
    /// command's size) and closes it. Returns 0 and ioctl's result, or the errno of the open or the ioctl.
    /// </summary>
    public static int Call(string path, uint command, Span<byte> argument, out int result)
    {
        ArgumentNullException.ThrowIfNull(path);
        if (argument.Length != SizeOf(command))
        {
            throw new ArgumentException($"the argument must be the command's {SizeOf(command)} bytes", nameof(argument));
        }
        return LinuxFuse.IoctlOnPath(path, command, argument, out result);
    }
}
