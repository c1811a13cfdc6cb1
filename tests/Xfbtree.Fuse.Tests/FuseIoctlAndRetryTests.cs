using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace Xfbtree.Fuse.Tests;

/// <summary>IOCTL dispatch (restricted ioctls: data in and out, the caller's credentials) and the retry of a failed request.</summary>
public sealed class FuseIoctlAndRetryTests
{
    static readonly uint Command = FuseIoctl.ReadWrite('x', 0x42, 8);

    sealed class ControlFileSystem : IFuseFileSystem
    {
        public int FailuresLeft;
        public bool AllowRetry;
        public int Calls, RetryAsks;
        public uint SeenUid, SeenFlags;
        public ulong SeenHandle;

        public int GetAttr(in FuseRequestContext context, ulong node, bool hasHandle, ulong handle, out FuseAttrOut attr)
        {
            attr = default;
            Calls++;
            if (FailuresLeft-- > 0) return FuseErrno.EUCLEAN;
            attr.Attr.Ino = node;
            return 0;
        }

        public bool RetryAfterFailure(in FuseRequestContext context, int error)
        {
            RetryAsks++;
            return AllowRetry && error == FuseErrno.EUCLEAN;
        }

        public int Ioctl(in FuseRequestContext context, ulong node, ulong handle, uint flags, uint command, ReadOnlySpan<byte> input,
            Span<byte> output, out int result, out int outputLength)
        {
            (result, outputLength) = (0, 0);
            if (command != Command) return FuseErrno.ENOTTY;
            (SeenUid, SeenFlags, SeenHandle) = (context.Uid, flags, handle);
            for (int i = 0; i < input.Length; i++) output[i] = (byte)(input[input.Length - 1 - i] + 1);
            result = 7;
            outputLength = input.Length;
            return 0;
        }
    }

    static MemoryChannel Run(IFuseFileSystem fs, byte[] request)
    {
        var server = new FuseServer(fs, new FuseServerOptions { Threads = 1 });
        var channel = new MemoryChannel([request], 1);
        server.NewWorker(channel).Loop();
        Assert.Equal(1, channel.Replies);
        return channel;
    }

    static byte[] IoctlRequest(uint command, uint flags, uint uid, byte[] data)
    {
        var args = new FuseIoctlIn { Fh = 3, Flags = flags, Command = command, InSize = (uint)data.Length, OutSize = (uint)data.Length };
        byte[] request = FuseRequests.Build(FuseOpcode.Ioctl, 1, in args, data);
        MemoryMarshal.Write(request.AsSpan(24), in uid); // fuse_in_header.uid
        return request;
    }

    [Fact]
    public void Ioctl_HandsOverTheCallersDataAndUid_AndRepliesTheResultAndData()
    {
        Assert.Equal(32, Unsafe.SizeOf<FuseIoctlIn>());
        Assert.Equal(16, Unsafe.SizeOf<FuseIoctlOut>());
        Assert.Equal(8, FuseIoctl.SizeOf(Command));
        var fs = new ControlFileSystem();
        var channel = Run(fs, IoctlRequest(Command, FuseConstants.IoctlDir, 1234, [1, 2, 3, 4, 5, 6, 7, 8]));
        Assert.Equal(0, channel.LastError);
        Assert.Equal(16 + 16 + 8, channel.LastReplyLength);
        var reply = MemoryMarshal.Read<FuseIoctlOut>(channel.LastReply.AsSpan(16));
        Assert.Equal(7, reply.Result);
        Assert.Equal(0u, reply.Flags); // never FUSE_IOCTL_RETRY: restricted ioctls cannot ask for it
        Assert.Equal(new byte[] { 9, 8, 7, 6, 5, 4, 3, 2 }, channel.LastReply.AsSpan(32, 8).ToArray());
        Assert.Equal((1234u, FuseConstants.IoctlDir, 3ul), (fs.SeenUid, fs.SeenFlags, fs.SeenHandle));
    }

    [Fact]
    public void Ioctl_Unknown_AnswersEnotty_Unrestricted_Enosys_Truncated_Einval()
    {
        Assert.Equal(-FuseErrno.ENOTTY, Run(new ControlFileSystem(), IoctlRequest(FuseIoctl.ReadWrite('x', 0x43, 8), 0, 0, new byte[8])).LastError);
        Assert.Equal(-FuseErrno.ENOTTY, Run(new MemoryFileSystem(), IoctlRequest(Command, 0, 0, new byte[8])).LastError);
        Assert.Equal(-FuseErrno.ENOSYS, Run(new ControlFileSystem(), IoctlRequest(Command, FuseConstants.IoctlUnrestricted, 0, new byte[8])).LastError);
        byte[] truncated = IoctlRequest(Command, 0, 0, new byte[8]);
        MemoryMarshal.Write(truncated, (uint)(truncated.Length - 4)); // the header's length cuts the input short
        Assert.Equal(-FuseErrno.EINVAL, Run(new ControlFileSystem(), truncated[..^4]).LastError);
    }

    [Fact]
    public void AFailedRequest_RunsAgainWhenTheFileSystemAsks_AtMostMaxAttemptsInAll()
    {
        var healed = new ControlFileSystem { FailuresLeft = 1, AllowRetry = true };
        Assert.Equal(0, Run(healed, FuseRequests.Bare(FuseOpcode.GetAttr, 5, new byte[16])).LastError);
        Assert.Equal((2, 1), (healed.Calls, healed.RetryAsks));

        var never = new ControlFileSystem { FailuresLeft = 100, AllowRetry = true };
        Assert.Equal(-FuseErrno.EUCLEAN, Run(never, FuseRequests.Bare(FuseOpcode.GetAttr, 5, new byte[16])).LastError);
        Assert.Equal((FuseServer.MaxAttempts, FuseServer.MaxAttempts - 1), (never.Calls, never.RetryAsks));

        var refused = new ControlFileSystem { FailuresLeft = 1, AllowRetry = false };
        Assert.Equal(-FuseErrno.EUCLEAN, Run(refused, FuseRequests.Bare(FuseOpcode.GetAttr, 5, new byte[16])).LastError);
        Assert.Equal((1, 1), (refused.Calls, refused.RetryAsks));
    }
}
