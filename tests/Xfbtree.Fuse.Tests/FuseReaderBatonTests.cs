using System.Runtime.InteropServices;

namespace Xfbtree.Fuse.Tests;

/// <summary>
/// The workers' hand-off of /dev/fuse (<see cref="ReaderBaton"/>): one program's requests, each sent after the
/// previous reply as the kernel does for a synchronous system call, are read by one worker at a time (a second
/// worker waiting in read(2) made the kernel wake it for every other request); a request that runs long still gets
/// a worker beside it.
/// </summary>
public sealed class FuseReaderBatonTests
{
    /// <summary>
    /// Hands out requests as one program sends them: the next only after the reply to the previous one, INIT first.
    /// Counts how many threads wait in <see cref="Receive"/> at once. Before the first request after INIT it waits
    /// (at most <see cref="StartWait"/>) for every worker to be in Receive, so a server whose workers all read is
    /// seen doing so.
    /// </summary>
    sealed class OneProgramChannel(byte[] init, byte[] request, int count, int workers) : IFuseChannel
    {
        static readonly TimeSpan StartWait = TimeSpan.FromMilliseconds(500);
        readonly object _gate = new();
        int _sent;          // requests handed out, INIT included
        int _replied;
        int _inside;
        internal int MostInside;
        internal int Replies;
        internal int Errors;

        public int Receive(Span<byte> buffer, out int length)
        {
            lock (_gate)
            {
                _inside++;
                MostInside = Math.Max(MostInside, _inside);
                Monitor.PulseAll(_gate);
                try
                {
                    if (_sent == 1)
                    {
                        var until = DateTime.UtcNow + StartWait;
                        while (_inside < workers && DateTime.UtcNow < until) Monitor.Wait(_gate, StartWait);
                    }
                    while (_sent < count + 1 && _replied < _sent) Monitor.Wait(_gate);
                    if (_sent >= count + 1)
                    {
                        length = 0;
                        return FuseErrno.ENODEV;
                    }
                    byte[] next = _sent == 0 ? init : request;
                    _sent++;
                    next.CopyTo(buffer);
                    length = next.Length;
                    return 0;
                }
                finally
                {
                    _inside--;
                }
            }
        }

        public int Send(ReadOnlySpan<byte> reply)
        {
            int error = MemoryMarshal.Read<FuseOutHeader>(reply).Error;
            lock (_gate)
            {
                _replied++;
                Replies++;
                if (error != 0) Errors++;
                Monitor.PulseAll(_gate);
            }
            return 0;
        }
    }

    [Fact]
    public void OneProgramsRequests_AreReadByOneWorkerAtATime()
    {
        const int Workers = 3, Requests = 2000;
        var server = new FuseServer(new MemoryFileSystem(), new FuseServerOptions { Threads = Workers, ReaderTakeover = TimeSpan.FromMinutes(10) });
        var init = new FuseInitIn { Major = 7, Minor = 44, Flags = uint.MaxValue };
        var getattr = new FuseGetAttrIn();
        var channel = new OneProgramChannel(FuseRequests.Build(FuseOpcode.Init, 0, in init),
            FuseRequests.Build(FuseOpcode.GetAttr, FuseConstants.RootNodeId, in getattr), Requests, Workers);
        server.Serve(channel, null);
        Assert.Equal(Requests + 1, channel.Replies);
        Assert.Equal(0, channel.Errors);
        // Every worker in read(2) at once was the old way: each request then woke a sleeping worker.
        Assert.Equal(1, channel.MostInside);
        Assert.Equal(0, server.ReaderTakeovers);
    }

    /// <summary>GETATTR of node 2 waits until a STATFS has been answered: only a second worker can answer that.</summary>
    sealed class WaitingFileSystem : IFuseFileSystem
    {
        internal readonly ManualResetEventSlim StatFsAnswered = new();
        internal bool GetAttrWaitedInVain;

        public int GetAttr(in FuseRequestContext context, ulong node, bool hasHandle, ulong handle, out FuseAttrOut attr)
        {
            attr = default;
            attr.Attr.Ino = node;
            attr.Attr.Mode = 0x41ED;
            // Bounded: a server that cannot serve the STATFS meanwhile fails the test instead of hanging it.
            if (node == 2 && !StatFsAnswered.Wait(TimeSpan.FromSeconds(30))) GetAttrWaitedInVain = true;
            return 0;
        }

        public int StatFs(in FuseRequestContext context, ulong node, out FuseStatFsOut statfs)
        {
            statfs = new FuseStatFsOut { Blocks = 1, BlockSize = 4096, NameLength = 255 };
            StatFsAnswered.Set();
            return 0;
        }
    }

    /// <summary>INIT, then two requests at once (two programs), then the end once both were answered.</summary>
    sealed class TwoProgramsChannel(byte[][] requests) : IFuseChannel
    {
        readonly object _gate = new();
        int _next;
        int _replies;
        internal int Replies
        {
            get { lock (_gate) return _replies; }
        }

        public int Receive(Span<byte> buffer, out int length)
        {
            lock (_gate)
            {
                // INIT is answered before the others are handed out; the end comes once every request was answered.
                while ((_next == 1 && _replies < 1) || (_next == requests.Length && _replies < requests.Length)) Monitor.Wait(_gate);
                if (_next == requests.Length)
                {
                    length = 0;
                    return FuseErrno.ENODEV;
                }
                byte[] next = requests[_next++];
                next.CopyTo(buffer);
                length = next.Length;
                return 0;
            }
        }

        public int Send(ReadOnlySpan<byte> reply)
        {
            lock (_gate)
            {
                _replies++;
                Monitor.PulseAll(_gate);
            }
            return 0;
        }
    }

    [Fact]
    public void ALongRequest_GetsAWorkerBesideIt()
    {
        var fs = new WaitingFileSystem();
        var server = new FuseServer(fs, new FuseServerOptions { Threads = 2, ReaderTakeover = TimeSpan.FromMilliseconds(1) });
        var init = new FuseInitIn { Major = 7, Minor = 44, Flags = uint.MaxValue };
        var getattr = new FuseGetAttrIn();
        var channel = new TwoProgramsChannel([
            FuseRequests.Build(FuseOpcode.Init, 0, in init),
            FuseRequests.Build(FuseOpcode.GetAttr, 2, in getattr),
            FuseRequests.Bare(FuseOpcode.StatFs, FuseConstants.RootNodeId),
        ]);
        server.Serve(channel, null);
        Assert.False(fs.GetAttrWaitedInVain, "the STATFS was not served while the GETATTR ran");
        Assert.Equal(3, channel.Replies);
        Assert.True(server.ReaderTakeovers >= 1, $"takeovers: {server.ReaderTakeovers}");
    }

    /// <summary>INIT, then one failed read (EIO), then requests one at a time, then the end.</summary>
    sealed class FailOnceChannel(byte[] init, byte[] request, int count) : IFuseChannel
    {
        readonly object _gate = new();
        int _step;      // 0: INIT next, 1: the failure next, then requests
        int _handedOut;
        int _replies;
        internal int Replies
        {
            get { lock (_gate) return _replies; }
        }

        public int Receive(Span<byte> buffer, out int length)
        {
            lock (_gate)
            {
                length = 0;
                if (_step == 0)
                {
                    _step = 1;
                    init.CopyTo(buffer);
                    length = init.Length;
                    return 0;
                }
                if (_step == 1)
                {
                    _step = 2;
                    return FuseErrno.EIO;
                }
                while (_handedOut < count && _replies < _handedOut + 1) Monitor.Wait(_gate);
                if (_handedOut == count)
                {
                    while (_replies < count + 1) Monitor.Wait(_gate);
                    return FuseErrno.ENODEV;
                }
                _handedOut++;
                request.CopyTo(buffer);
                length = request.Length;
                return 0;
            }
        }

        public int Send(ReadOnlySpan<byte> reply)
        {
            lock (_gate)
            {
                _replies++;
                Monitor.PulseAll(_gate);
            }
            return 0;
        }
    }

    [Fact]
    public void AFailedRead_EndsThatWorkerOnly_AnotherReadsOn()
    {
        const int Requests = 50;
        var server = new FuseServer(new MemoryFileSystem(), new FuseServerOptions { Threads = 2, ReaderTakeover = TimeSpan.FromMilliseconds(1) });
        var init = new FuseInitIn { Major = 7, Minor = 44, Flags = uint.MaxValue };
        var getattr = new FuseGetAttrIn();
        var channel = new FailOnceChannel(FuseRequests.Build(FuseOpcode.Init, 0, in init),
            FuseRequests.Build(FuseOpcode.GetAttr, FuseConstants.RootNodeId, in getattr), Requests);
        server.Serve(channel, null);
        Assert.Equal(FuseErrno.EIO, server.DeviceFailure);
        Assert.Equal(Requests + 1, channel.Replies);
    }
}
