using System.Globalization;
using System.Runtime.Versioning;
using Xfbtree.Fuse;

namespace Xfbtree.Cli.Mount;

/// <summary>The tool's side of the control channel: one request to the mount serving DIR, or why it could not ask.</summary>
[SupportedOSPlatform("linux")]
internal static class MountControlClient
{
    const int ENOTCONN = 107;

    /// <summary>Sends one request; null and the reply, or the one-line reason the mount could not be asked.</summary>
    public static string? Ask(string directory, MountControlOperation operation, uint ag, uint flags, out MountControlHeader reply, out string text)
    {
        // The scrub operations carry findings: the larger message of their own command number.
        bool scrub = operation is MountControlOperation.ScrubAg or MountControlOperation.ScrubFilesystem or MountControlOperation.ScrubRepair;
        byte[] message = new byte[scrub ? MountControl.ScrubMessageSize : MountControl.MessageSize];
        MountControl.Write(message, new MountControlHeader { Version = MountControl.Version, Operation = operation, Ag = ag, Flags = flags }, null);
        int errno = FuseIoctl.Call(directory, scrub ? MountControl.ScrubCommand : MountControl.Command, message, out _);
        if (errno != 0)
        {
            reply = default;
            text = "";
            return Explain(directory, errno);
        }
        reply = MountControl.ReadHeader(message);
        text = MountControl.ReadText(message, reply);
        if (reply.Version != MountControl.Version) return $"{directory}: the mount answered in control version {reply.Version}, this tool speaks {MountControl.Version}";
        return null;
    }

    static string Explain(string directory, int errno) => errno switch
    {
        FuseErrno.ENOENT or FuseErrno.ENOTDIR => $"{directory}: no such directory",
        FuseErrno.EACCES or FuseErrno.EPERM => $"{directory}: permission denied: only root and the owner of the mount may use its repair channel",
        FuseErrno.ENOTTY or FuseErrno.ENOSYS => $"{directory}: not an xfbtree mount (the file system there does not answer xfbtree's control requests)",
        ENOTCONN => $"{directory}: the mount's server is gone (transport endpoint is not connected): umount {directory}; the next xfbtree mount replays the journal",
        FuseErrno.EROFS => $"{directory}: the mount is read-only: no online repair",
        FuseErrno.EPROTO => $"{directory}: the mount speaks another version of the control requests",
        _ => $"{directory}: {Xfbtree.Native.NativeErrors.Describe(errno)}",
    };

    /// <summary>A time of the mount's reports: UTC, to the millisecond.</summary>
    public static string Format(DateTimeOffset time) => time.UtcDateTime.ToString("yyyy-MM-dd'T'HH:mm:ss.fff'Z'", CultureInfo.InvariantCulture);
}
