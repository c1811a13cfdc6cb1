using System.Runtime.Versioning;
using Xfbtree.Fuse;

namespace Xfbtree.Cli.Mount;

/// <summary>
/// The mount's side of the control channel (<see cref="MountControl"/>): the control ioctl answered on a FUSE
/// worker for root and the mount's owner only, and the healing of requests that failed on a sick AG.
/// </summary>
[SupportedOSPlatform("linux")]
internal sealed class MountControlServer(MountRepairs repairs, string image, uint ownerUid, bool readOnly, Action<string> log)
{
    readonly MountScrubs _scrubs = new(repairs, log);

    [ThreadStatic]
    static uint t_sickAg;
    [ThreadStatic]
    static bool t_failedOnSickAg;

    /// <summary>The uid the mount belongs to (who mounted it); root and this uid may use the channel.</summary>
    public uint OwnerUid => ownerUid;

    /// <summary>The adapter saw a request on this thread fail as corrupt, naming AG <paramref name="agno"/>.</summary>
    public void NoteCorruptFailure(uint? agno)
    {
        // Only a failure on an AG that is sick now can heal: other corruption (a directory block, an inode) stays.
        t_failedOnSickAg = agno is { } ag && repairs.IsSick(ag);
        t_sickAg = agno ?? 0;
    }

    /// <summary>
    /// EUCLEAN from an AG that is sick: when the mount heals sick AGs (its rotation runs), wait for the repair and let
    /// the request run again; the operation that failed was cancelled whole, so running it again is what the program
    /// asked for. Otherwise the program gets the error, as the kernel's XFS would give it (EFSCORRUPTED).
    /// </summary>
    public bool RetryAfterFailure(int error)
    {
        if (error != FuseErrno.EUCLEAN || !t_failedOnSickAg) return false;
        t_failedOnSickAg = false;
        return repairs.WaitForHealing(t_sickAg);
    }

    public int Handle(in FuseRequestContext context, uint command, ReadOnlySpan<byte> input, Span<byte> output, out int result, out int outputLength)
    {
        result = 0;
        outputLength = 0;
        if (command != MountControl.Command && command != MountControl.ScrubCommand) return FuseErrno.ENOTTY;
        if (context.Uid != 0 && context.Uid != ownerUid)
        {
            log($"xfbtree: mount: refused a control request from uid {context.Uid} (pid {context.Pid}): only root and the mount's owner (uid {ownerUid}) may use it");
            return FuseErrno.EPERM;
        }
        int size = FuseIoctl.SizeOf(command);
        if (input.Length < size || output.Length < size) return FuseErrno.EINVAL;
        output = output[..size];
        var request = MountControl.ReadHeader(input);
        if (request.Version != MountControl.Version) return FuseErrno.EPROTO;
        bool scrub = request.Operation is MountControlOperation.ScrubAg or MountControlOperation.ScrubFilesystem or MountControlOperation.ScrubRepair;
        if (scrub != (command == MountControl.ScrubCommand)) return FuseErrno.EINVAL; // findings need the large message
        MountControlHeader reply;
        string? text;
        if (MountControl.CpuShareOf(request.Flags, repairs.CpuShare) is not { } share) return FuseErrno.EINVAL;
        switch (request.Operation)
        {
            case MountControlOperation.Info:
                reply = new MountControlHeader
                {
                    AgCount = repairs.AgCount,
                    RepairEveryMs = repairs.Every is { } every ? (long)every.TotalMilliseconds : 0,
                    OwnerUid = ownerUid,
                };
                text = image;
                break;
            case MountControlOperation.Health:
                if (request.Ag >= repairs.AgCount) return FuseErrno.EINVAL;
                reply = repairs.Health(request.Ag, out text);
                break;
            case MountControlOperation.Repair:
            {
                if (request.Ag >= repairs.AgCount) return FuseErrno.EINVAL;
                if (readOnly) return FuseErrno.EROFS;
                var outcome = repairs.RunRepair(request.Ag, (request.Flags & MountControl.FlagVerify) != 0, context.Uid, share);
                reply = repairs.Health(request.Ag, out _);
                text = outcome.Failure ?? outcome.Verdict?.Detail;
                if (outcome.Result is { } r)
                {
                    reply.Records = r.Records;
                    reply.Applied = r.LiveUpdatesApplied;
                    reply.Ignored = r.LiveUpdatesIgnored;
                    reply.ElapsedUs = (long)r.Elapsed.TotalMicroseconds;
                }
                else
                {
                    reply.Error = outcome.FailureErrno == 0 ? FuseErrno.EIO : outcome.FailureErrno;
                }
                if (outcome.Verdict is { } v)
                {
                    reply.Verified = 1;
                    reply.Missing = v.Missing;
                    reply.Extra = v.Extra;
                    reply.Different = v.Different;
                    reply.Structure = v.Structure;
                }
                break;
            }
            case MountControlOperation.ScrubAg:
                if (request.Ag >= repairs.AgCount) return FuseErrno.EINVAL;
                reply = _scrubs.CheckAg(request.Ag, share, output.Length - MountControl.HeaderSize, out text);
                break;
            case MountControlOperation.ScrubFilesystem:
                reply = _scrubs.CheckFilesystem(share, output.Length - MountControl.HeaderSize, out text);
                break;
            case MountControlOperation.ScrubRepair:
                if (request.Ag != MountControl.AllAgs && request.Ag >= repairs.AgCount) return FuseErrno.EINVAL;
                if (readOnly) return FuseErrno.EROFS;
                reply = _scrubs.Repair(request.Ag == MountControl.AllAgs ? null : request.Ag, context.Uid, share, output.Length - MountControl.HeaderSize, out text);
                break;
            default:
                return FuseErrno.EINVAL;
        }
        reply.Version = MountControl.Version;
        reply.Operation = request.Operation;
        reply.Ag = request.Ag;
        reply.Flags = request.Flags;
        MountControl.Write(output, reply, text);
        outputLength = size;
        return 0;
    }
}
