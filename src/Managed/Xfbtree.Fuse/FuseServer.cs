using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Versioning;
using Xfbtree.Native;

namespace Xfbtree.Fuse;

/// <summary>How the server talks to the kernel.</summary>
internal sealed record FuseServerOptions
{
    /// <summary>Worker threads reading the device (each with its own pair of pinned buffers).</summary>
    public int Threads { get; init; } = Math.Clamp(Environment.ProcessorCount, 2, 8);

    /// <summary>The largest WRITE (and READ) the kernel sends: 1 MiB.</summary>
    public int MaxWrite { get; init; } = 1 << 20;

    /// <summary>Ask for the kernel's writeback cache (the file system must keep no state the kernel's cached size or times could contradict).</summary>
    public bool WritebackCache { get; init; }

    /// <summary>
    /// Negotiate FUSE_HANDLE_KILLPRIV_V2: the file system clears set-user-ID, set-group-ID (when group-executable)
    /// and the security.capability attribute itself where the kernel's WRITE, SETATTR and OPEN say so. The kernel
    /// then no longer asks for security.capability (a GETXATTR round trip) before every write.
    /// </summary>
    public bool KillPrivileges { get; init; }

    /// <summary>
    /// Where the kernel offers it (FUSE_NO_OPENDIR_SUPPORT), answer the first OPENDIR with ENOSYS, without asking the
    /// file system: the kernel then opens directories itself and sends neither OPENDIR nor RELEASEDIR again (two
    /// round trips less per directory read). Only for a file system whose directory reads need no handle and whose
    /// OpenDir checks nothing the kernel does not know already (that the node is a directory).
    /// </summary>
    public bool ZeroMessageOpenDir { get; init; }

    /// <summary>
    /// How long one request may run before a parked worker starts reading the device beside it (see
    /// <see cref="ReaderBaton"/>). Only one worker waits in read(2) at a time: a program's requests come one after
    /// another, and a second worker waiting too made the kernel wake it for every other request (a context switch
    /// and a wakeup on the other CPU each time: a round trip of 20-36 us instead of 8 us here). A request that
    /// runs longer than this (an fsync, a large write, a repair asked through the control channel) gets a worker
    /// beside it, so other programs' requests are not held up longer than this.
    /// </summary>
    public TimeSpan ReaderTakeover { get; init; } = TimeSpan.FromMilliseconds(1);

    /// <summary>Where the server reports what it could not handle (handler exceptions, a failing device). Never called per request otherwise.</summary>
    public Action<string>? Log { get; init; }
}

/// <summary>Transport of whole requests and replies; the device in production, memory in the allocation test.</summary>
internal interface IFuseChannel
{
    /// <summary>One request into <paramref name="buffer"/>; returns 0 or an errno (ENODEV: the session is over).</summary>
    int Receive(Span<byte> buffer, out int length);

    /// <summary>One reply; returns 0 or an errno (ENOENT: the request was interrupted and is gone).</summary>
    int Send(ReadOnlySpan<byte> reply);
}

/// <summary>
/// Serves a file system over a mounted <see cref="FuseSession"/>: answers INIT on the calling thread, then runs
/// <see cref="FuseServerOptions.Threads"/> workers (the calling thread is one of them) that each read a request
/// into their own pinned buffer, view its arguments in place as the kernel's structs, call the file system and
/// write the reply with one write(2). No allocation per request: buffers are made once per worker, requests are
/// spans over them, handlers are called through the interface with structs passed by reference.
/// Returns when the kernel ends the session (ENODEV: unmounted, or the connection aborted).
/// </summary>
[SupportedOSPlatform("linux")]
internal sealed class FuseServer
{
    /// <summary>A failed request runs at most this often in all (<see cref="IFuseFileSystem.RetryAfterFailure"/>).</summary>
    public const int MaxAttempts = 3;

    /// <summary>Room for the request header and the largest argument struct ahead of WRITE data (libfuse keeps 4 KiB too).</summary>
    internal const int HeaderRoom = 4096;

    readonly IFuseFileSystem _fileSystem;
    readonly FuseServerOptions _options;
    readonly List<FuseWorker> _workers = new();
    ReaderBaton? _baton;
    int _failure;
    int _destroyed;

    public FuseServer(IFuseFileSystem fileSystem, FuseServerOptions? options = null)
    {
        _fileSystem = fileSystem ?? throw new ArgumentNullException(nameof(fileSystem));
        _options = options ?? new FuseServerOptions();
        if (_options.MaxWrite < 4096 || _options.MaxWrite % 4096 != 0 || _options.MaxWrite > 1 << 24)
        {
            throw new ArgumentOutOfRangeException(nameof(options), "MaxWrite must be a multiple of 4096 between 4 KiB and 16 MiB");
        }
    }

    internal IFuseFileSystem FileSystem => _fileSystem;

    internal FuseServerOptions Options => _options;

    /// <summary>What INIT settled (valid once <see cref="Run"/> called its <c>initialized</c> callback).</summary>
    public FuseConnectionInfo Connection { get; internal set; }

    /// <summary>OPENDIR is answered ENOSYS (<see cref="FuseServerOptions.ZeroMessageOpenDir"/>, offered by the kernel).</summary>
    public bool OpenDirByKernel { get; internal set; }

    /// <summary>Requests answered (or consumed without an answer) so far.</summary>
    public long RequestsServed
    {
        get
        {
            long sum = 0;
            lock (_workers)
            {
                foreach (var w in _workers) sum += Volatile.Read(ref w.Requests);
            }
            return sum;
        }
    }

    /// <summary>Times a parked worker started reading because a request ran longer than <see cref="FuseServerOptions.ReaderTakeover"/>.</summary>
    public long ReaderTakeovers => _baton?.Takeovers ?? 0;

    /// <summary>The errno that stopped a worker other than the session's end (0: none).</summary>
    public int DeviceFailure => _failure;

    /// <summary>
    /// Serves <paramref name="session"/> until the kernel ends it. <paramref name="initialized"/> runs once INIT
    /// has been answered (the mount is usable from then on).
    /// </summary>
    public void Run(FuseSession session, Action? initialized = null)
    {
        ArgumentNullException.ThrowIfNull(session);
        bool added = false;
        try
        {
            session.Device.DangerousAddRef(ref added);
            Serve(new DeviceChannel(session.Device.Fd), initialized);
            if (_failure == 0) session.MarkEnded(); // every worker read ENODEV
        }
        finally
        {
            if (added) session.Device.DangerousRelease();
        }
    }

    /// <summary>INIT on this thread, then the workers until every one has seen the end.</summary>
    internal void Serve(IFuseChannel channel, Action? initialized)
    {
        var first = NewWorker(channel);
        if (!first.ServeUntilInitialized())
        {
            EndOfSession();
            return;
        }
        initialized?.Invoke();
        var baton = _options.Threads > 1 ? new ReaderBaton(_options.ReaderTakeover) : null;
        _baton = baton;
        var threads = new List<Thread>();
        for (int i = 1; i < _options.Threads; i++)
        {
            var worker = NewWorker(channel);
            var thread = new Thread(() => worker.Loop(baton, reading: false)) { IsBackground = true, Name = $"fuse-worker-{i}" };
            thread.Start();
            threads.Add(thread);
        }
        first.Loop(baton, reading: true);
        foreach (var t in threads) t.Join();
        EndOfSession();
    }

    internal FuseWorker NewWorker(IFuseChannel channel)
    {
        var worker = new FuseWorker(this, channel);
        lock (_workers) _workers.Add(worker);
        return worker;
    }

    internal void Fail(int errno, string what)
    {
        Interlocked.CompareExchange(ref _failure, errno, 0);
        _options.Log?.Invoke($"fuse: {what}: {NativeErrors.Describe(errno)}");
    }

    internal void EndOfSession()
    {
        if (Interlocked.Exchange(ref _destroyed, 1) == 0) _fileSystem.Destroy();
    }

    sealed class DeviceChannel(int fd) : IFuseChannel
    {
        public int Receive(Span<byte> buffer, out int length) => LinuxFuse.Read(fd, buffer, out length);

        public int Send(ReadOnlySpan<byte> reply) => LinuxFuse.Write(fd, reply);
    }
}

/// <summary>One worker: its pinned request and reply buffers and the dispatch of one request at a time.</summary>
[SupportedOSPlatform("linux")]
internal sealed class FuseWorker
{
    const int InHeaderSize = 40;
    const int OutHeaderSize = 16;
    const int NoReply = -1;
    const int PathMax = 4096;

    readonly FuseServer _server;
    readonly IFuseFileSystem _fs;
    readonly IFuseChannel _channel;
    readonly byte[] _request;
    readonly byte[] _reply;
    internal long Requests;

    internal FuseWorker(FuseServer server, IFuseChannel channel)
    {
        _server = server;
        _fs = server.FileSystem;
        _channel = channel;
        // Pinned once for the worker's life: read(2)/write(2) take their addresses without pinning per call.
        _request = GC.AllocateUninitializedArray<byte>(server.Options.MaxWrite + FuseServer.HeaderRoom, pinned: true);
        _reply = GC.AllocateUninitializedArray<byte>(server.Options.MaxWrite + FuseServer.HeaderRoom, pinned: true);
    }

    /// <summary>Reads until INIT was answered (true) or the session ended (false).</summary>
    internal bool ServeUntilInitialized()
    {
        while (true)
        {
            int n = ReceiveOne();
            if (n < 0) return false;
            ref readonly FuseInHeader header = ref MemoryMarshal.AsRef<FuseInHeader>(_request);
            if (header.Opcode != FuseOpcode.Init)
            {
                // Nothing but INIT is meaningful before INIT.
                SendError(header.Unique, FuseErrno.EIO);
                continue;
            }
            Dispatch(n);
            if (_server.Connection.NegotiatedMinor != 0) return true;
        }
    }

    /// <summary>Serves requests until the session ends, this worker alone reading (tests).</summary>
    internal void Loop() => Loop(null, reading: true);

    /// <summary>Serves requests until the session ends; with several workers, reads only while it holds the
    /// reader's role (<paramref name="reading"/> at the start) and parks otherwise.</summary>
    internal void Loop(ReaderBaton? baton, bool reading)
    {
        if (baton is null)
        {
            while (true)
            {
                int n = ReceiveOne();
                if (n < 0) return;
                Dispatch(n);
            }
        }
        bool ended = false;
        try
        {
            while (true)
            {
                if (!reading && !baton.Park()) return;
                int n = ReceiveOne();
                if (n == SessionEnded)
                {
                    ended = true;
                    return;
                }
                if (n < 0)
                {
                    // A failed read ends this worker only, as before the hand-off: another one reads instead.
                    baton.LeaveReading();
                    return;
                }
                baton.StartDispatch();
                try
                {
                    Dispatch(n);
                }
                finally
                {
                    reading = baton.EndDispatch();
                }
            }
        }
        catch
        {
            ended = true; // an exception out of the loop ends the process; let no worker wait for this one
            throw;
        }
        finally
        {
            // The session is over (ENODEV): the parked workers end too.
            if (ended) baton.End();
        }
    }

    /// <summary><see cref="ReceiveOne"/>: the kernel ended the session (ENODEV).</summary>
    const int SessionEnded = -1;

    /// <summary><see cref="ReceiveOne"/>: the device failed (logged; this worker stops).</summary>
    const int DeviceFailed = -2;

    /// <summary>Length of the next request, or <see cref="SessionEnded"/> or <see cref="DeviceFailed"/>.</summary>
    int ReceiveOne()
    {
        while (true)
        {
            int error = _channel.Receive(_request, out int length);
            if (error == 0)
            {
                if (length >= InHeaderSize) return length;
                continue; // a short read is not a request
            }
            // EINTR: a signal; EAGAIN: nothing yet; ENOENT: the kernel dropped an interrupted request before we read it.
            if (error is FuseErrno.EINTR or FuseErrno.EAGAIN or FuseErrno.ENOENT) continue;
            if (error == FuseErrno.ENODEV) return SessionEnded;
            _server.Fail(error, "read from /dev/fuse");
            return DeviceFailed;
        }
    }

    /// <summary>Parses, calls the file system and replies. Public to the assembly for the allocation test.</summary>
    internal void Dispatch(int length)
    {
        Requests++;
        ReadOnlySpan<byte> request = _request.AsSpan(0, length);
        ref readonly FuseInHeader header = ref MemoryMarshal.AsRef<FuseInHeader>(request);
        ulong unique = header.Unique;
        int end = (int)Math.Min((uint)length, header.Length);
        if (end < InHeaderSize)
        {
            SendError(unique, FuseErrno.EINVAL);
            return;
        }
        var context = new FuseRequestContext(unique, header.NodeId, header.Uid, header.Gid, header.Pid);
        ReadOnlySpan<byte> body = request[InHeaderSize..end];
        int result;
        int attempts = 0;
        while (true)
        {
            try
            {
                result = Handle(header.Opcode, in context, body);
            }
            catch (Exception ex)
            {
                // A file system must answer with an errno; an exception here is a bug: log it, answer EIO.
                _server.Options.Log?.Invoke($"fuse: {header.Opcode} on node {context.NodeId} failed: {ex.GetType().Name}: {ex.Message}");
                result = header.Opcode is FuseOpcode.Forget or FuseOpcode.BatchForget or FuseOpcode.Interrupt ? NoReply : FuseErrno.EIO;
                break;
            }
            // An error is replied by this method, so nothing was sent yet: the file system may ask for another attempt.
            if (result <= 0 || ++attempts >= FuseServer.MaxAttempts || !_fs.RetryAfterFailure(in context, result)) break;
        }
        if (result > 0) SendError(unique, result);
    }

    int Handle(FuseOpcode opcode, in FuseRequestContext c, ReadOnlySpan<byte> body)
    {
        ulong node = c.NodeId;
        switch (opcode)
        {
            case FuseOpcode.Init:
                return Init(in c, body);
            case FuseOpcode.Lookup:
            {
                int e = TakeName(ref body, out var name);
                if (e != 0) return e;
                e = _fs.Lookup(in c, node, name, out FuseEntryOut entry);
                return e != 0 ? e : Reply(c.Unique, in entry);
            }
            case FuseOpcode.Forget:
            {
                if (!TryArg(body, out FuseForgetIn forget)) return NoReply;
                _fs.Forget(node, forget.Nlookup);
                return NoReply;
            }
            case FuseOpcode.BatchForget:
            {
                if (!TryArg(body, out FuseBatchForgetIn batch)) return NoReply;
                var items = MemoryMarshal.Cast<byte, FuseForgetOne>(body[8..]);
                int count = (int)Math.Min(batch.Count, (uint)items.Length);
                for (int i = 0; i < count; i++) _fs.Forget(items[i].NodeId, items[i].Nlookup);
                return NoReply;
            }
            case FuseOpcode.GetAttr:
            {
                TryArg(body, out FuseGetAttrIn args);
                int e = _fs.GetAttr(in c, node, (args.GetAttrFlags & FuseConstants.GetAttrFh) != 0, args.Fh, out FuseAttrOut attr);
                return e != 0 ? e : Reply(c.Unique, in attr);
            }
            case FuseOpcode.SetAttr:
            {
                if (!TryArgRef(body, out int e)) return e;
                ref readonly FuseSetAttrIn change = ref MemoryMarshal.AsRef<FuseSetAttrIn>(body);
                e = _fs.SetAttr(in c, node, in change, out FuseAttrOut attr);
                return e != 0 ? e : Reply(c.Unique, in attr);
            }
            case FuseOpcode.ReadLink:
            {
                int e = _fs.ReadLink(in c, node, _reply.AsSpan(OutHeaderSize, PathMax), out int n);
                return e != 0 ? e : ReplyData(c.Unique, Math.Clamp(n, 0, PathMax));
            }
            case FuseOpcode.Symlink:
            {
                int e = TakeName(ref body, out var name);
                if (e != 0) return e;
                e = TakeTarget(ref body, out var target);
                if (e != 0) return e;
                e = _fs.Symlink(in c, node, name, target, out FuseEntryOut entry);
                return e != 0 ? e : Reply(c.Unique, in entry);
            }
            case FuseOpcode.MkNod:
            {
                if (!TryArg(body, out FuseMkNodIn args)) return FuseErrno.EINVAL;
                body = body[16..];
                int e = TakeName(ref body, out var name);
                if (e != 0) return e;
                e = _fs.MkNod(in c, node, name, args.Mode, args.Rdev, args.Umask, out FuseEntryOut entry);
                return e != 0 ? e : Reply(c.Unique, in entry);
            }
            case FuseOpcode.MkDir:
            {
                if (!TryArg(body, out FuseMkDirIn args)) return FuseErrno.EINVAL;
                body = body[8..];
                int e = TakeName(ref body, out var name);
                if (e != 0) return e;
                e = _fs.MkDir(in c, node, name, args.Mode, args.Umask, out FuseEntryOut entry);
                return e != 0 ? e : Reply(c.Unique, in entry);
            }
            case FuseOpcode.Unlink:
            case FuseOpcode.RmDir:
            {
                int e = TakeName(ref body, out var name);
                if (e != 0) return e;
                e = opcode == FuseOpcode.Unlink ? _fs.Unlink(in c, node, name) : _fs.RmDir(in c, node, name);
                return e != 0 ? e : ReplyData(c.Unique, 0);
            }
            case FuseOpcode.Rename:
            case FuseOpcode.Rename2:
            {
                ulong newDir;
                uint flags = 0;
                if (opcode == FuseOpcode.Rename)
                {
                    if (!TryArg(body, out FuseRenameIn r)) return FuseErrno.EINVAL;
                    newDir = r.NewDir;
                    body = body[8..];
                }
                else
                {
                    if (!TryArg(body, out FuseRename2In r)) return FuseErrno.EINVAL;
                    newDir = r.NewDir;
                    flags = r.Flags;
                    body = body[16..];
                }
                int e = TakeName(ref body, out var oldName);
                if (e != 0) return e;
                e = TakeName(ref body, out var newName);
                if (e != 0) return e;
                e = _fs.Rename(in c, node, oldName, newDir, newName, flags);
                return e != 0 ? e : ReplyData(c.Unique, 0);
            }
            case FuseOpcode.Link:
            {
                if (!TryArg(body, out FuseLinkIn args)) return FuseErrno.EINVAL;
                body = body[8..];
                int e = TakeName(ref body, out var name);
                if (e != 0) return e;
                e = _fs.Link(in c, args.OldNodeId, node, name, out FuseEntryOut entry);
                return e != 0 ? e : Reply(c.Unique, in entry);
            }
            case FuseOpcode.Open:
            case FuseOpcode.OpenDir:
            {
                if (opcode == FuseOpcode.OpenDir && _server.OpenDirByKernel) return FuseErrno.ENOSYS;
                TryArg(body, out FuseOpenIn args);
                int e = opcode == FuseOpcode.Open
                    ? _fs.Open(in c, node, args.Flags, args.OpenFlags, out FuseOpenOut open)
                    : _fs.OpenDir(in c, node, args.Flags, out open);
                return e != 0 ? e : Reply(c.Unique, in open);
            }
            case FuseOpcode.Read:
            {
                if (!TryArg(body, out FuseReadIn args)) return FuseErrno.EINVAL;
                if (args.Offset > long.MaxValue) return FuseErrno.EINVAL;
                int size = (int)Math.Min(args.Size, (uint)(_reply.Length - OutHeaderSize));
                int e = _fs.Read(in c, node, args.Fh, (long)args.Offset, _reply.AsSpan(OutHeaderSize, size), out int n);
                return e != 0 ? e : ReplyData(c.Unique, Math.Clamp(n, 0, size));
            }
            case FuseOpcode.Write:
            {
                if (!TryArg(body, out FuseWriteIn args)) return FuseErrno.EINVAL;
                ReadOnlySpan<byte> data = body[40..];
                if (args.Size > (uint)data.Length || args.Offset > long.MaxValue) return FuseErrno.EINVAL;
                int e = _fs.Write(in c, node, args.Fh, (long)args.Offset, data[..(int)args.Size], args.WriteFlags, out uint written);
                var result = new FuseWriteOut { Size = written };
                return e != 0 ? e : Reply(c.Unique, in result);
            }
            case FuseOpcode.StatFs:
            {
                int e = _fs.StatFs(in c, node, out FuseStatFsOut statfs);
                return e != 0 ? e : Reply(c.Unique, in statfs);
            }
            case FuseOpcode.Release:
            case FuseOpcode.ReleaseDir:
            {
                TryArg(body, out FuseReleaseIn args);
                int e = opcode == FuseOpcode.Release ? _fs.Release(in c, node, args.Fh, args.Flags) : _fs.ReleaseDir(in c, node, args.Fh);
                return e != 0 ? e : ReplyData(c.Unique, 0);
            }
            case FuseOpcode.Fsync:
            case FuseOpcode.FsyncDir:
            {
                TryArg(body, out FuseFsyncIn args);
                bool dataOnly = (args.FsyncFlags & FuseConstants.FsyncDataOnly) != 0;
                int e = opcode == FuseOpcode.Fsync ? _fs.Fsync(in c, node, args.Fh, dataOnly) : _fs.FsyncDir(in c, node, args.Fh, dataOnly);
                return e != 0 ? e : ReplyData(c.Unique, 0);
            }
            case FuseOpcode.Flush:
            {
                TryArg(body, out FuseFlushIn args);
                int e = _fs.Flush(in c, node, args.Fh, args.LockOwner);
                return e != 0 ? e : ReplyData(c.Unique, 0);
            }
            case FuseOpcode.SetXattr:
            {
                if (!TryArg(body, out FuseSetXattrIn args)) return FuseErrno.EINVAL;
                body = body[8..];
                int e = TakeXattrName(ref body, out var name);
                if (e != 0) return e;
                if (args.Size > (uint)body.Length) return FuseErrno.EINVAL;
                e = _fs.SetXattr(in c, node, name, body[..(int)args.Size], args.Flags);
                return e != 0 ? e : ReplyData(c.Unique, 0);
            }
            case FuseOpcode.GetXattr:
            case FuseOpcode.ListXattr:
            {
                if (!TryArg(body, out FuseGetXattrIn args)) return FuseErrno.EINVAL;
                body = body[8..];
                ReadOnlySpan<byte> name = body[..0];
                if (opcode == FuseOpcode.GetXattr)
                {
                    int ne = TakeXattrName(ref body, out name);
                    if (ne != 0) return ne;
                }
                int size = (int)Math.Min(args.Size, (uint)(_reply.Length - OutHeaderSize));
                Span<byte> value = _reply.AsSpan(OutHeaderSize, size);
                int e = opcode == FuseOpcode.GetXattr ? _fs.GetXattr(in c, node, name, value, out int n) : _fs.ListXattr(in c, node, value, out n);
                if (e != 0) return e;
                if (size == 0)
                {
                    var sizeOnly = new FuseGetXattrOut { Size = (uint)Math.Max(n, 0) };
                    return Reply(c.Unique, in sizeOnly);
                }
                return ReplyData(c.Unique, Math.Clamp(n, 0, size));
            }
            case FuseOpcode.RemoveXattr:
            {
                int e = TakeXattrName(ref body, out var name);
                if (e != 0) return e;
                e = _fs.RemoveXattr(in c, node, name);
                return e != 0 ? e : ReplyData(c.Unique, 0);
            }
            case FuseOpcode.ReadDir:
            case FuseOpcode.ReadDirPlus:
            {
                if (!TryArg(body, out FuseReadIn args)) return FuseErrno.EINVAL;
                if (args.Offset > long.MaxValue) return FuseErrno.EINVAL;
                int size = (int)Math.Min(args.Size, (uint)(_reply.Length - OutHeaderSize));
                var writer = new FuseDirectoryWriter(_reply.AsSpan(OutHeaderSize, size), opcode == FuseOpcode.ReadDirPlus);
                int e = _fs.ReadDir(in c, node, args.Fh, (long)args.Offset, ref writer);
                return e != 0 ? e : ReplyData(c.Unique, writer.Length);
            }
            case FuseOpcode.Access:
            {
                TryArg(body, out FuseAccessIn args);
                int e = _fs.Access(in c, node, args.Mask);
                return e != 0 ? e : ReplyData(c.Unique, 0);
            }
            case FuseOpcode.Create:
            {
                if (!TryArg(body, out FuseCreateIn args)) return FuseErrno.EINVAL;
                body = body[16..];
                int e = TakeName(ref body, out var name);
                if (e != 0) return e;
                e = _fs.Create(in c, node, name, args.Flags, args.Mode, args.Umask, out FuseEntryOut entry, out FuseOpenOut open);
                if (e != 0) return e;
                Span<byte> payload = _reply.AsSpan(OutHeaderSize);
                MemoryMarshal.Write(payload, in entry);
                MemoryMarshal.Write(payload[128..], in open);
                return ReplyData(c.Unique, 128 + 16);
            }
            case FuseOpcode.Interrupt:
                // Every operation here finishes in bounded time, so the interrupted request simply completes; the
                // protocol allows ignoring INTERRUPT (it has no reply of its own).
                return NoReply;
            case FuseOpcode.Destroy:
                _server.EndOfSession();
                return ReplyData(c.Unique, 0);
            case FuseOpcode.Fallocate:
            {
                if (!TryArg(body, out FuseFallocateIn args)) return FuseErrno.EINVAL;
                if (args.Offset > long.MaxValue || args.Length > long.MaxValue) return FuseErrno.EINVAL;
                int e = _fs.Fallocate(in c, node, args.Fh, (long)args.Offset, (long)args.Length, args.Mode);
                return e != 0 ? e : ReplyData(c.Unique, 0);
            }
            case FuseOpcode.Lseek:
            {
                if (!TryArg(body, out FuseLseekIn args)) return FuseErrno.EINVAL;
                if (args.Offset > long.MaxValue) return FuseErrno.ENXIO;
                int e = _fs.Lseek(in c, node, args.Fh, (long)args.Offset, args.Whence, out long position);
                var result = new FuseLseekOut { Offset = (ulong)position };
                return e != 0 ? e : Reply(c.Unique, in result);
            }
            case FuseOpcode.CopyFileRange:
            {
                if (!TryArg(body, out FuseCopyFileRangeIn a)) return FuseErrno.EINVAL;
                if (a.OffsetIn > long.MaxValue || a.OffsetOut > long.MaxValue || a.Length > long.MaxValue) return FuseErrno.EINVAL;
                int e = _fs.CopyFileRange(in c, node, a.FhIn, (long)a.OffsetIn, a.NodeIdOut, a.FhOut, (long)a.OffsetOut, (long)a.Length,
                    a.Flags, out long copied);
                // The reply's size is 32 bits: a file system copies at most 4 GiB - 1 per call (the kernel asks again).
                var result = new FuseWriteOut { Size = (uint)Math.Clamp(copied, 0, uint.MaxValue) };
                return e != 0 ? e : Reply(c.Unique, in result);
            }
            case FuseOpcode.SyncFs:
            {
                int e = _fs.SyncFs(in c);
                return e != 0 ? e : ReplyData(c.Unique, 0);
            }
            case FuseOpcode.Ioctl:
            {
                if (!TryArg(body, out FuseIoctlIn args)) return FuseErrno.EINVAL;
                // Restricted ioctls only (the kernel sets UNRESTRICTED for CUSE alone): the data sizes come from the
                // command's _IOC_SIZE, at most 16 KiB, and the input follows the struct.
                if ((args.Flags & FuseConstants.IoctlUnrestricted) != 0) return FuseErrno.ENOSYS;
                ReadOnlySpan<byte> input = body[Unsafe.SizeOf<FuseIoctlIn>()..];
                if (input.Length < args.InSize) return FuseErrno.EINVAL;
                input = input[..(int)args.InSize];
                const int Room = OutHeaderSize + 16;
                int outSize = (int)Math.Min(args.OutSize, (uint)(_reply.Length - Room));
                int e = _fs.Ioctl(in c, node, args.Fh, args.Flags, args.Command, input, _reply.AsSpan(Room, outSize), out int result, out int written);
                if (e != 0) return e;
                var reply = new FuseIoctlOut { Result = result };
                MemoryMarshal.Write(_reply.AsSpan(OutHeaderSize), in reply);
                return ReplyData(c.Unique, 16 + Math.Clamp(written, 0, outSize));
            }
            case FuseOpcode.NotifyReply:
                return NoReply; // no notifications are sent, so no retrieve replies are awaited
            default:
                return FuseErrno.ENOSYS;
        }
    }

    int Init(in FuseRequestContext c, ReadOnlySpan<byte> body)
    {
        if (!TryArg(body, out FuseInitIn init)) return FuseErrno.EINVAL;
        var options = _server.Options;
        if (init.Major > FuseConstants.KernelVersion)
        {
            // A newer major: answer ours alone; the kernel sends INIT again in our version.
            var older = new FuseInitOut { Major = FuseConstants.KernelVersion, Minor = FuseConstants.ServerMinorVersion };
            return Reply(c.Unique, in older);
        }
        if (init.Major < FuseConstants.KernelVersion || init.Minor < FuseConstants.OldestKernelMinor)
        {
            options.Log?.Invoke($"fuse: the kernel speaks FUSE {init.Major}.{init.Minor}; 7.{FuseConstants.OldestKernelMinor} or later is needed");
            return FuseErrno.EPROTO;
        }
        uint wanted = FuseConstants.InitAsyncRead | FuseConstants.InitAtomicOTrunc | FuseConstants.InitBigWrites
            | FuseConstants.InitAutoInvalData | FuseConstants.InitDoReaddirplus | FuseConstants.InitReaddirplusAuto
            | FuseConstants.InitAsyncDio | FuseConstants.InitParallelDirops | FuseConstants.InitMaxPages
            | FuseConstants.InitCacheSymlinks | (options.WritebackCache ? FuseConstants.InitWritebackCache : 0)
            | (options.KillPrivileges ? FuseConstants.InitHandleKillprivV2 : 0);
        uint flags = init.Flags & wanted;
        uint minor = Math.Min(init.Minor, FuseConstants.ServerMinorVersion);
        var reply = new FuseInitOut
        {
            Major = FuseConstants.KernelVersion,
            Minor = minor,
            MaxReadahead = init.MaxReadahead,
            Flags = flags,
            MaxBackground = 64,
            CongestionThreshold = 48,
            MaxWrite = (uint)options.MaxWrite,
            TimeGranularity = 1,
            MaxPages = (ushort)(options.MaxWrite / 4096),
        };
        var info = new FuseConnectionInfo(init.Minor, minor, flags, (uint)options.MaxWrite, init.MaxReadahead,
            (flags & FuseConstants.InitWritebackCache) != 0);
        _fs.Initialize(in info);
        _server.OpenDirByKernel = options.ZeroMessageOpenDir && (init.Flags & FuseConstants.InitNoOpendirSupport) != 0;
        int sent = Reply(c.Unique, in reply);
        _server.Connection = info;
        return sent;
    }

    /// <summary>A name of a directory entry: NUL-terminated, 1-255 bytes, no '/'.</summary>
    static int TakeName(scoped ref ReadOnlySpan<byte> rest, out ReadOnlySpan<byte> name)
    {
        int nul = rest.IndexOf((byte)0);
        if (nul < 0)
        {
            name = default;
            return FuseErrno.EINVAL;
        }
        name = rest[..nul];
        rest = rest[(nul + 1)..];
        if (name.Length == 0 || name.Contains((byte)'/')) return FuseErrno.EINVAL;
        return name.Length > FuseConstants.NameMax ? FuseErrno.ENAMETOOLONG : 0;
    }

    /// <summary>A symlink target: NUL-terminated, 1 to PATH_MAX - 1 bytes.</summary>
    static int TakeTarget(scoped ref ReadOnlySpan<byte> rest, out ReadOnlySpan<byte> target)
    {
        int nul = rest.IndexOf((byte)0);
        if (nul < 0)
        {
            target = default;
            return FuseErrno.EINVAL;
        }
        target = rest[..nul];
        rest = rest[(nul + 1)..];
        if (target.Length == 0) return FuseErrno.ENOENT;
        return target.Length >= PathMax ? FuseErrno.ENAMETOOLONG : 0;
    }

    /// <summary>An extended attribute name: NUL-terminated, 1-255 bytes.</summary>
    static int TakeXattrName(scoped ref ReadOnlySpan<byte> rest, out ReadOnlySpan<byte> name)
    {
        int nul = rest.IndexOf((byte)0);
        if (nul < 0)
        {
            name = default;
            return FuseErrno.EINVAL;
        }
        name = rest[..nul];
        rest = rest[(nul + 1)..];
        if (name.Length == 0) return FuseErrno.EINVAL;
        return name.Length > FuseConstants.NameMax ? FuseErrno.ERANGE : 0;
    }

    /// <summary>The request's argument struct (a copy; zeros when the body is too short, which the caller may refuse).</summary>
    static bool TryArg<T>(ReadOnlySpan<byte> body, out T value) where T : unmanaged
    {
        if (body.Length < Unsafe.SizeOf<T>())
        {
            value = default;
            return false;
        }
        value = MemoryMarshal.Read<T>(body);
        return true;
    }

    static bool TryArgRef(ReadOnlySpan<byte> body, out int error)
    {
        error = body.Length < 88 ? FuseErrno.EINVAL : 0;
        return error == 0;
    }

    int Reply<T>(ulong unique, in T payload) where T : unmanaged
    {
        MemoryMarshal.Write(_reply.AsSpan(OutHeaderSize), in payload);
        return ReplyData(unique, Unsafe.SizeOf<T>());
    }

    /// <summary>Sends the header and <paramref name="payloadLength"/> bytes already placed after it.</summary>
    int ReplyData(ulong unique, int payloadLength)
    {
        var header = new FuseOutHeader { Length = (uint)(OutHeaderSize + payloadLength), Error = 0, Unique = unique };
        MemoryMarshal.Write(_reply, in header);
        Send(OutHeaderSize + payloadLength);
        return 0;
    }

    void SendError(ulong unique, int errno)
    {
        var header = new FuseOutHeader { Length = OutHeaderSize, Error = -errno, Unique = unique };
        MemoryMarshal.Write(_reply, in header);
        Send(OutHeaderSize);
    }

    void Send(int length)
    {
        int error = _channel.Send(_reply.AsSpan(0, length));
        // ENOENT: the request was interrupted and the kernel no longer waits for it; ENODEV: the session ended.
        if (error != 0 && error != FuseErrno.ENOENT && error != FuseErrno.ENODEV) _server.Fail(error, "write to /dev/fuse");
    }
}

/// <summary>
/// Lets one worker at a time wait in read(2) on the device. The kernel wakes the longest-waiting reader for each
/// request, so with every worker in read(2) the requests of one program (each waits for the previous reply)
/// alternated between workers: every other request woke a sleeping thread, often on the other CPU, where the
/// worker that had just replied could have read it at once. Here the worker that reads a request dispatches it
/// and then reads again; the others park. One parked worker, the standby, looks every
/// <see cref="FuseServerOptions.ReaderTakeover"/> whether a request has been running that long with nobody
/// reading, and then reads itself, so a long request (an fsync, a repair through the control channel, a request
/// waiting for a lock) never holds up the others for longer than that. After a while without requests the standby
/// stops looking until the next request wakes it. A worker that finishes a request while another reads parks.
/// </summary>
internal sealed class ReaderBaton
{
    /// <summary>Looks without a request before the standby waits for the next one instead of looking.</summary>
    const int IdleLooksBeforeSleep = 50;

    readonly object _gate = new();
    readonly int _takeoverMilliseconds;
    int _readers = 1;      // workers in (or about to enter) read(2): the first worker starts as the reader
    int _inFlight;         // requests being dispatched
    long _dispatchStarts;  // requests dispatched so far
    int _standbyAsleep;    // 1: the standby waits for the next request instead of looking
    bool _standbyPresent;
    bool _ended;
    long _takeovers;

    internal ReaderBaton(TimeSpan takeover)
    {
        _takeoverMilliseconds = (int)Math.Clamp(takeover.TotalMilliseconds, 1, int.MaxValue);
    }

    internal long Takeovers => Interlocked.Read(ref _takeovers);

    /// <summary>The reader got a request: nobody reads until it is done or the standby takes over.</summary>
    internal void StartDispatch()
    {
        Interlocked.Decrement(ref _readers);
        Interlocked.Increment(ref _dispatchStarts);
        Interlocked.Increment(ref _inFlight);
        // Full fences above; the standby sets its flag and then looks at _inFlight, so one of us sees the other.
        if (Volatile.Read(ref _standbyAsleep) != 0)
        {
            lock (_gate) Monitor.PulseAll(_gate);
        }
    }

    /// <summary>A request is done: true when this worker reads next (nobody else does), false to park.</summary>
    internal bool EndDispatch()
    {
        Interlocked.Decrement(ref _inFlight);
        return Interlocked.CompareExchange(ref _readers, 1, 0) == 0;
    }

    /// <summary>Waits until this worker should read (true) or the session is over (false).</summary>
    internal bool Park()
    {
        lock (_gate)
        {
            bool standby = false;
            long seen = -1;
            int idleLooks = 0;
            try
            {
                while (true)
                {
                    if (_ended) return false;
                    if (!standby)
                    {
                        if (_standbyPresent)
                        {
                            Monitor.Wait(_gate);
                            continue;
                        }
                        _standbyPresent = standby = true;
                    }
                    long starts = Volatile.Read(ref _dispatchStarts);
                    int inFlight = Volatile.Read(ref _inFlight);
                    // Nobody reads, and either no request runs (a worker between its request and its next read) or
                    // the same one has run since the last look.
                    if (Volatile.Read(ref _readers) == 0 && (inFlight == 0 || starts == seen)
                        && Interlocked.CompareExchange(ref _readers, 1, 0) == 0)
                    {
                        if (inFlight != 0) Interlocked.Increment(ref _takeovers);
                        return true;
                    }
                    idleLooks = inFlight == 0 && starts == seen ? idleLooks + 1 : 0;
                    seen = starts;
                    if (idleLooks < IdleLooksBeforeSleep)
                    {
                        Monitor.Wait(_gate, _takeoverMilliseconds);
                        continue;
                    }
                    Interlocked.Exchange(ref _standbyAsleep, 1);
                    if (Volatile.Read(ref _inFlight) == 0 && Volatile.Read(ref _dispatchStarts) == starts) Monitor.Wait(_gate);
                    Interlocked.Exchange(ref _standbyAsleep, 0);
                    idleLooks = 0;
                    seen = Volatile.Read(ref _dispatchStarts); // a request that just started gets its full time
                }
            }
            finally
            {
                if (standby)
                {
                    _standbyPresent = false;
                    Monitor.Pulse(_gate); // another parked worker becomes the standby
                }
            }
        }
    }

    /// <summary>The reader stops reading for good (its read failed): a parked worker reads instead.</summary>
    internal void LeaveReading()
    {
        Interlocked.Decrement(ref _readers);
        lock (_gate) Monitor.PulseAll(_gate);
    }

    /// <summary>The session is over: every parked worker returns.</summary>
    internal void End()
    {
        lock (_gate)
        {
            _ended = true;
            Monitor.PulseAll(_gate);
        }
    }
}
