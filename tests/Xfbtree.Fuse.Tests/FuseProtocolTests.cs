using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace Xfbtree.Fuse.Tests;

/// <summary>The wire structs, the dispatcher's checks and replies, and no allocation per request, without a mount.</summary>
public sealed class FuseProtocolTests
{
    [Fact]
    public void Structs_HaveTheKernelsSizes()
    {
        // Sizes from include/uapi/linux/fuse.h.
        Assert.Equal(40, Unsafe.SizeOf<FuseInHeader>());
        Assert.Equal(16, Unsafe.SizeOf<FuseOutHeader>());
        Assert.Equal(88, Unsafe.SizeOf<FuseAttr>());
        Assert.Equal(128, Unsafe.SizeOf<FuseEntryOut>());
        Assert.Equal(104, Unsafe.SizeOf<FuseAttrOut>());
        Assert.Equal(88, Unsafe.SizeOf<FuseSetAttrIn>());
        Assert.Equal(16, Unsafe.SizeOf<FuseOpenOut>());
        Assert.Equal(40, Unsafe.SizeOf<FuseReadIn>());
        Assert.Equal(40, Unsafe.SizeOf<FuseWriteIn>());
        Assert.Equal(80, Unsafe.SizeOf<FuseStatFsOut>());
        Assert.Equal(64, Unsafe.SizeOf<FuseInitOut>());
        Assert.Equal(16, Unsafe.SizeOf<FuseCreateIn>());
        Assert.Equal(16, Unsafe.SizeOf<FuseMkNodIn>());
        Assert.Equal(24, Unsafe.SizeOf<FuseReleaseIn>());
        Assert.Equal(24, Unsafe.SizeOf<FuseFlushIn>());
        Assert.Equal(32, Unsafe.SizeOf<FuseFallocateIn>());
        Assert.Equal(24, Unsafe.SizeOf<FuseLseekIn>());
        Assert.Equal(56, Unsafe.SizeOf<FuseCopyFileRangeIn>());
        Assert.Equal(24, Unsafe.SizeOf<FuseDirent>());
        Assert.Equal(68, Marshal.OffsetOf<FuseSetAttrIn>(nameof(FuseSetAttrIn.Mode)));
        Assert.Equal(28, Marshal.OffsetOf<FuseInitOut>(nameof(FuseInitOut.MaxPages)));
    }

    [Fact]
    public void Init_NegotiatesBigWritesAndMaxPages_AndRefusesOldKernels()
    {
        var fs = new MemoryFileSystem();
        var server = new FuseServer(fs, new FuseServerOptions { Threads = 1 });
        var init = new FuseInitIn { Major = 7, Minor = 44, MaxReadahead = 128 * 1024, Flags = uint.MaxValue };
        var channel = new MemoryChannel([FuseRequests.Build(FuseOpcode.Init, 0, in init)], 1);
        server.Serve(channel, null);
        Assert.Equal(0, channel.LastError);
        var reply = MemoryMarshal.Read<FuseInitOut>(channel.LastReply.AsSpan(16));
        Assert.Equal(7u, reply.Major);
        Assert.Equal(FuseConstants.ServerMinorVersion, reply.Minor);
        Assert.Equal(1u << 20, reply.MaxWrite);
        Assert.Equal(256, reply.MaxPages);
        Assert.NotEqual(0u, reply.Flags & FuseConstants.InitBigWrites);
        Assert.NotEqual(0u, reply.Flags & FuseConstants.InitParallelDirops);
        Assert.NotEqual(0u, reply.Flags & FuseConstants.InitDoReaddirplus);
        Assert.NotEqual(0u, reply.Flags & FuseConstants.InitAtomicOTrunc);
        Assert.Equal(0u, reply.Flags & FuseConstants.InitWritebackCache);
        Assert.Equal(0u, reply.Flags & FuseConstants.InitPosixLocks);
        Assert.Equal(1, fs.Initialized);
        Assert.Equal(1, fs.Destroyed);

        var old = new FuseInitIn { Major = 7, Minor = 26, Flags = uint.MaxValue };
        var oldChannel = new MemoryChannel([FuseRequests.Build(FuseOpcode.Init, 0, in old)], 1);
        new FuseServer(new MemoryFileSystem(), new FuseServerOptions { Threads = 1 }).Serve(oldChannel, null);
        Assert.Equal(-FuseErrno.EPROTO, oldChannel.LastError);
    }

    [Theory]
    [InlineData(true, true, -FuseErrno.ENOSYS)]
    [InlineData(true, false, 0)]
    [InlineData(false, true, 0)]
    public void OpenDir_AnsweredEnosys_OnlyWhenAskedForAndTheKernelOffersZeroMessageOpenDir(bool asked, bool offered, int expected)
    {
        var server = new FuseServer(new MemoryFileSystem(), new FuseServerOptions { Threads = 1, ZeroMessageOpenDir = asked });
        var init = new FuseInitIn { Major = 7, Minor = 44, Flags = offered ? uint.MaxValue : uint.MaxValue & ~FuseConstants.InitNoOpendirSupport };
        var open = new FuseOpenIn();
        var channel = new MemoryChannel([FuseRequests.Build(FuseOpcode.Init, 0, in init), FuseRequests.Build(FuseOpcode.OpenDir, 1, in open)], 2);
        server.Serve(channel, null);
        Assert.Equal(expected, channel.LastError);
        Assert.Equal(asked && offered, server.OpenDirByKernel);
    }

    [Theory]
    [InlineData("", FuseErrno.EINVAL)]
    [InlineData("a/b", FuseErrno.EINVAL)]
    [InlineData("hello", 0)]
    [InlineData("nothere", FuseErrno.ENOENT)]
    public void Names_AreCheckedBeforeTheFileSystemSeesThem(string name, int errno)
    {
        var bytes = new byte[System.Text.Encoding.UTF8.GetByteCount(name) + 1];
        System.Text.Encoding.UTF8.GetBytes(name, bytes);
        Assert.Equal(-errno, Dispatch(FuseRequests.Bare(FuseOpcode.Lookup, 1, bytes)).Error);
    }

    [Fact]
    public void Names_LongerThan255Bytes_OrWithoutTheirNul_AreRefused()
    {
        var longName = new byte[257];
        longName.AsSpan(0, 256).Fill((byte)'x');
        Assert.Equal(-FuseErrno.ENAMETOOLONG, Dispatch(FuseRequests.Bare(FuseOpcode.Lookup, 1, longName)).Error);
        Assert.Equal(-FuseErrno.EINVAL, Dispatch(FuseRequests.Bare(FuseOpcode.Lookup, 1, "hello"u8)).Error);
        var mkdir = new FuseMkDirIn { Mode = 0x1ED };
        Assert.Equal(-FuseErrno.EINVAL, Dispatch(FuseRequests.Build(FuseOpcode.MkDir, 1, in mkdir, "x/y\0"u8)).Error);
    }

    [Fact]
    public void Unhandled_AnswersEnosys_XattrsEopnotsupp_ForgetAndInterruptNothing()
    {
        Assert.Equal(-FuseErrno.ENOSYS, Dispatch(FuseRequests.Bare(FuseOpcode.Bmap, 2)).Error);
        Assert.Equal(-FuseErrno.ENOSYS, Dispatch(FuseRequests.Bare((FuseOpcode)999, 2)).Error);
        var get = new FuseGetXattrIn { Size = 0 };
        Assert.Equal(-FuseErrno.EOPNOTSUPP, Dispatch(FuseRequests.Build(FuseOpcode.GetXattr, 2, in get, "user.a\0"u8)).Error);
        var forget = new FuseForgetIn { Nlookup = 3 };
        var fs = new MemoryFileSystem();
        var interrupt = new FuseInterruptIn { Unique = 5 };
        var channel = RunBurst(fs, [FuseRequests.Build(FuseOpcode.Forget, 2, in forget), FuseRequests.Build(FuseOpcode.Interrupt, 0, in interrupt)], 2);
        Assert.Equal(0, channel.Replies);
        Assert.Equal(3, fs.Forgotten);
    }

    [Fact]
    public void ReadAndReaddirplus_ReplyInPlace()
    {
        var read = new FuseReadIn { Fh = 0, Offset = 0, Size = 4096 };
        var (error, payload) = Dispatch(FuseRequests.Build(FuseOpcode.Read, MemoryFileSystem.FileNode, in read));
        Assert.Equal(0, error);
        Assert.Equal("hello, fuse\n"u8.ToArray(), payload);

        var fs = new MemoryFileSystem();
        var channel = RunBurst(fs, [FuseRequests.Build(FuseOpcode.ReadDirPlus, 1, in read)], 1);
        Assert.Equal(0, channel.LastError);
        // ".", "..", "hello": 128 + 24 + name, each padded to 160 bytes; only "hello" counts a lookup.
        Assert.Equal(16 + 3 * 160, channel.LastReplyLength);
        Assert.Equal(1, fs.Lookups);
        var small = new FuseReadIn { Size = 200 };
        var smallChannel = RunBurst(fs, [FuseRequests.Build(FuseOpcode.ReadDirPlus, 1, in small)], 1);
        Assert.Equal(16 + 160, smallChannel.LastReplyLength);
    }

    [Fact]
    public void SteadyState_AllocatesNothingPerRequest()
    {
        var fs = new MemoryFileSystem();
        var read = new FuseReadIn { Size = 65536 };
        var write = new FuseWriteIn { Offset = 4096, Size = 8192 };
        var getattr = new FuseGetAttrIn();
        var open = new FuseOpenIn();
        var release = new FuseReleaseIn();
        var flush = new FuseFlushIn();
        var forget = new FuseForgetIn { Nlookup = 1 };
        var batch = new FuseBatchForgetIn { Count = 2 };
        var forgetTail = new byte[32];
        MemoryMarshal.Write(forgetTail, new FuseForgetOne { NodeId = 2, Nlookup = 1 });
        MemoryMarshal.Write(forgetTail.AsSpan(16), new FuseForgetOne { NodeId = 2, Nlookup = 1 });
        var getx = new FuseGetXattrIn { Size = 64 };
        byte[][] requests =
        [
            FuseRequests.Bare(FuseOpcode.Lookup, 1, "hello\0"u8),
            FuseRequests.Bare(FuseOpcode.Lookup, 1, "absent\0"u8),
            FuseRequests.Build(FuseOpcode.GetAttr, 2, in getattr),
            FuseRequests.Build(FuseOpcode.Open, 2, in open),
            FuseRequests.Build(FuseOpcode.Read, 2, in read),
            FuseRequests.Build(FuseOpcode.Write, 2, in write, new byte[8192]),
            FuseRequests.Build(FuseOpcode.OpenDir, 1, in open),
            FuseRequests.Build(FuseOpcode.ReadDir, 1, in read),
            FuseRequests.Build(FuseOpcode.ReadDirPlus, 1, in read),
            FuseRequests.Build(FuseOpcode.Flush, 2, in flush),
            FuseRequests.Build(FuseOpcode.Release, 2, in release),
            FuseRequests.Bare(FuseOpcode.StatFs, 1),
            FuseRequests.Build(FuseOpcode.Forget, 2, in forget),
            FuseRequests.Build(FuseOpcode.BatchForget, 0, in batch, forgetTail),
            FuseRequests.Build(FuseOpcode.GetXattr, 2, in getx, "user.x\0"u8),
            FuseRequests.Bare(FuseOpcode.Bmap, 2),
        ];
        var server = new FuseServer(fs, new FuseServerOptions { Threads = 1 });
        var channel = new MemoryChannel(requests, requests.Length * 50);
        var worker = server.NewWorker(channel);
        worker.Loop(); // warm-up: JIT, first-call paths
        const int Burst = 20_000, Rounds = 4;
        // Every round must allocate nothing, except that the runtime may charge this thread the rest of its 8 KiB
        // allocation context once, at a random moment (see the mount adapter's allocation test): one such round is
        // tolerated, below a quantum. A per-request allocation shows in every round.
        var perRound = new long[Rounds];
        for (int round = 0; round < Rounds; round++)
        {
            channel.Reset(Burst);
            long before = GC.GetAllocatedBytesForCurrentThread();
            worker.Loop();
            perRound[round] = GC.GetAllocatedBytesForCurrentThread() - before;
        }
        int quiet = 0;
        long largest = 0;
        foreach (long bytes in perRound)
        {
            if (bytes == 0) quiet++;
            largest = Math.Max(largest, bytes);
        }
        Assert.True(quiet >= Rounds - 1 && largest < 8 << 10, $"bytes allocated per round of {Burst} requests: {string.Join(", ", perRound)}");
        Assert.Equal(requests.Length * 50 + Rounds * Burst, server.RequestsServed);
    }

    static (int Error, byte[] Payload) Dispatch(byte[] request)
    {
        var channel = RunBurst(new MemoryFileSystem(), [request], 1);
        Assert.Equal(1, channel.Replies);
        return (channel.LastError, channel.LastReply.AsSpan(16, channel.LastReplyLength - 16).ToArray());
    }

    static MemoryChannel RunBurst(MemoryFileSystem fs, byte[][] requests, int count)
    {
        var server = new FuseServer(fs, new FuseServerOptions { Threads = 1 });
        var channel = new MemoryChannel(requests, count);
        server.NewWorker(channel).Loop();
        return channel;
    }
}
