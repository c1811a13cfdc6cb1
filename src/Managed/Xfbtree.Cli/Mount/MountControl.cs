using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Text;
using Xfbtree.Fuse;

namespace Xfbtree.Cli.Mount;

/// <summary>What a control request asks a running mount.</summary>
internal enum MountControlOperation : uint
{
    /// <summary>The mount: AG count, image, owner, repair period.</summary>
    Info = 1,

    /// <summary>One AG's health.</summary>
    Health = 2,

    /// <summary>Rebuild one AG's rmap btree online now (and verify it with commits paused when asked); blocks until done.</summary>
    Repair = 3,

    /// <summary>Scrub one AG online (every structure of it); the findings come back as JSON text (scrub messages only).</summary>
    ScrubAg = 4,

    /// <summary>Scrub the filesystem-wide structures online (superblock counters, link counts).</summary>
    ScrubFilesystem = 5,

    /// <summary>Check online (one AG, or every AG and the filesystem-wide structures when the AG is
    /// <see cref="MountControl.AllAgs"/>) and repair what is damaged, with a re-check between rounds; the repair
    /// outcomes come back as JSON text.</summary>
    ScrubRepair = 6,
}

/// <summary>An AG's health as the mount reports it.</summary>
internal enum MountAgState : uint
{
    Healthy = 0,

    /// <summary>Corruption was found; no allocation there, operations that need the AG wait for or fail without a repair.</summary>
    Sick = 1,

    /// <summary>Found sick while mounted and rebuilt online since (healthy again).</summary>
    Repaired = 2,
}

/// <summary>
/// The fixed part of a control message (<see cref="MountControl.HeaderSize"/> bytes; UTF-8 text follows, up to the
/// message's end). One struct both ways: the tool fills the request fields, the mount fills the rest.
/// </summary>
[StructLayout(LayoutKind.Sequential)]
internal struct MountControlHeader
{
    // Request.
    public uint Version;
    public MountControlOperation Operation;
    public uint Ag;
    public uint Flags;

    // Reply.
    public int Error;
    public uint AgCount;
    public MountAgState State;
    public uint TextLength;
    public long SickSinceMs;
    public long RepairedAtMs;
    public long LastRebuiltMs;
    public long Repairs;
    public long FailedRepairs;
    public long Records;
    public long Applied;
    public long Ignored;
    public long ElapsedUs;
    public long Missing;
    public long Extra;
    public long Different;
    public long Structure;
    public long RepairEveryMs;
    public uint OwnerUid;
    public uint Verified;
}

/// <summary>
/// The repair and health channel of a running mount: one ioctl on any directory of the mount (as xfs_scrub asks
/// the kernel through XFS_IOC_SCRUB_METADATA on a file of the file system), answered by the mount's FUSE server.
/// The kernel forwards it with the caller's uid; the server serves only root and the mount's owner (EPERM for
/// anyone else), and without <c>allow_other</c> the kernel already refuses every other user (EACCES).
/// </summary>
[System.Runtime.Versioning.SupportedOSPlatform("linux")]
internal static class MountControl
{
    /// <summary>The message's layout version.</summary>
    public const uint Version = 1;

    /// <summary>Request and reply size: the ioctl's _IOC_SIZE.</summary>
    public const int MessageSize = 1024;

    public const uint FlagVerify = 1;

    /// <summary>Bits 8-23 of a repair's or scrub's flags: the share of one CPU it may use, in ten-thousandths (1 to
    /// 10000); 0: the mount's <c>--repair-cpu-share</c>. A mount that predates them ignores them.</summary>
    const int CpuShareShift = 8;
    const uint CpuShareScale = 10000;

    /// <summary>The flag bits that ask for <paramref name="share"/> (more than 0, at most 1; null: the mount's own).</summary>
    public static uint CpuShareFlags(double? share) =>
        share is { } s ? (uint)Math.Clamp(Math.Round(s * CpuShareScale), 1, CpuShareScale) << CpuShareShift : 0;

    /// <summary>The share a request's <paramref name="flags"/> ask for, <paramref name="mountShare"/> when they ask for
    /// none, null when what they ask for is out of range.</summary>
    public static double? CpuShareOf(uint flags, double mountShare)
    {
        uint v = (flags >> CpuShareShift) & 0xFFFF;
        return v == 0 ? mountShare : v <= CpuShareScale ? (double)v / CpuShareScale : null;
    }

    /// <summary>The AG field of a request about every AG.</summary>
    public const uint AllAgs = uint.MaxValue;

    /// <summary>_IOWR('x', 0xB7, 1024 bytes): a number no kernel ioctl of the VFS takes for itself.</summary>
    public static readonly uint Command = FuseIoctl.ReadWrite('x', 0xB7, MessageSize);

    /// <summary>Request and reply size of the scrub operations: the largest an ioctl number can carry (the findings
    /// of one AG, problems included, as JSON).</summary>
    public const int ScrubMessageSize = 0x3FFF;

    /// <summary>_IOWR('x', 0xB8, 16383 bytes): the same header and text as <see cref="Command"/>, with room for findings.</summary>
    public static readonly uint ScrubCommand = FuseIoctl.ReadWrite('x', 0xB8, ScrubMessageSize);

    public static int HeaderSize => Unsafe.SizeOf<MountControlHeader>();

    public static int TextRoom => MessageSize - HeaderSize;

    public static MountControlHeader ReadHeader(ReadOnlySpan<byte> message) => MemoryMarshal.Read<MountControlHeader>(message);

    public static string ReadText(ReadOnlySpan<byte> message, in MountControlHeader header) =>
        Encoding.UTF8.GetString(message.Slice(HeaderSize, (int)Math.Min(header.TextLength, (uint)(message.Length - HeaderSize))));

    /// <summary>Writes the header and as much of <paramref name="text"/> as fits in the message (cut at a character boundary).</summary>
    public static void Write(Span<byte> message, MountControlHeader header, string? text)
    {
        Span<byte> room = message[HeaderSize..];
        int length = 0;
        if (!string.IsNullOrEmpty(text))
        {
            var encoder = Encoding.UTF8.GetEncoder();
            encoder.Convert(text.AsSpan(), room, flush: true, out _, out length, out _);
        }
        header.TextLength = (uint)length;
        MemoryMarshal.Write(message, in header);
    }

    public static DateTimeOffset? Time(long unixMs) => unixMs == 0 ? null : DateTimeOffset.FromUnixTimeMilliseconds(unixMs);
}
