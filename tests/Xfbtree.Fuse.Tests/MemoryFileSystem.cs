using System.Runtime.InteropServices;

namespace Xfbtree.Fuse.Tests;

/// <summary>
/// A tiny file system for the protocol tests: the root (node 1) holding one regular file "hello" (node 2) with a
/// fixed 64 KiB buffer. Nothing it does allocates, so any allocation measured per request is the protocol layer's.
/// </summary>
internal sealed class MemoryFileSystem : IFuseFileSystem
{
    internal const ulong FileNode = 2;
    static ReadOnlySpan<byte> FileName => "hello"u8;

    readonly byte[] _data = new byte[64 * 1024];
    readonly object _gate = new();
    long _size;
    long _lookups;
    internal long Forgotten;
    internal int Initialized;
    internal int Destroyed;

    public MemoryFileSystem()
    {
        "hello, fuse\n"u8.CopyTo(_data);
        _size = 12;
    }

    internal long Lookups => Interlocked.Read(ref _lookups);

    public void Initialize(in FuseConnectionInfo connection) => Interlocked.Increment(ref Initialized);

    public void Destroy() => Interlocked.Increment(ref Destroyed);

    public int Lookup(in FuseRequestContext context, ulong parent, ReadOnlySpan<byte> name, out FuseEntryOut entry)
    {
        entry = default;
        if (parent != FuseConstants.RootNodeId || !name.SequenceEqual(FileName)) return FuseErrno.ENOENT;
        Interlocked.Increment(ref _lookups);
        entry = Entry(FileNode);
        return 0;
    }

    public void Forget(ulong node, ulong lookups) => Interlocked.Add(ref Forgotten, (long)lookups);

    public int GetAttr(in FuseRequestContext context, ulong node, bool hasHandle, ulong handle, out FuseAttrOut attr)
    {
        attr = default;
        if (node != FuseConstants.RootNodeId && node != FileNode) return FuseErrno.ENOENT;
        attr.AttrValid = 1;
        attr.Attr = Attr(node);
        return 0;
    }

    public int Open(in FuseRequestContext context, ulong node, uint flags, out FuseOpenOut open)
    {
        open = default;
        return node == FileNode ? 0 : FuseErrno.EISDIR;
    }

    public int Read(in FuseRequestContext context, ulong node, ulong handle, long offset, Span<byte> destination, out int length)
    {
        lock (_gate)
        {
            long available = Math.Max(0, _size - offset);
            length = (int)Math.Min(available, destination.Length);
            if (length > 0) _data.AsSpan((int)offset, length).CopyTo(destination);
        }
        return 0;
    }

    public int Write(in FuseRequestContext context, ulong node, ulong handle, long offset, ReadOnlySpan<byte> data, uint writeFlags, out uint written)
    {
        written = 0;
        if (offset + data.Length > _data.Length) return FuseErrno.EFBIG;
        lock (_gate)
        {
            data.CopyTo(_data.AsSpan((int)offset));
            _size = Math.Max(_size, offset + data.Length);
        }
        written = (uint)data.Length;
        return 0;
    }

    public int OpenDir(in FuseRequestContext context, ulong node, uint flags, out FuseOpenOut open)
    {
        open = default;
        return node == FuseConstants.RootNodeId ? 0 : FuseErrno.ENOTDIR;
    }

    public int ReadDir(in FuseRequestContext context, ulong node, ulong handle, long offset, ref FuseDirectoryWriter entries)
    {
        // Cookies: 1 after ".", 2 after "..", 3 after "hello".
        for (long i = offset; i < 3; i++)
        {
            ReadOnlySpan<byte> name = i == 0 ? "."u8 : i == 1 ? ".."u8 : FileName;
            ulong target = i == 2 ? FileNode : FuseConstants.RootNodeId;
            if (entries.Plus)
            {
                FuseEntryOut entry = i == 2 ? Entry(target) : default;
                if (i != 2) entry.Attr = Attr(target);
                if (!entries.TryAddPlus(name, in entry, i + 1)) break;
                if (i == 2) Interlocked.Increment(ref _lookups);
            }
            else if (!entries.TryAdd(name, target, i == 2 ? 8u : 4u, i + 1))
            {
                break;
            }
        }
        return 0;
    }

    public int StatFs(in FuseRequestContext context, ulong node, out FuseStatFsOut statfs)
    {
        statfs = new FuseStatFsOut { Blocks = 1024, FreeBlocks = 512, AvailableBlocks = 512, Files = 16, FreeFiles = 14, BlockSize = 4096, FragmentSize = 4096, NameLength = 255 };
        return 0;
    }

    FuseEntryOut Entry(ulong node) => new() { NodeId = node, Generation = 1, EntryValid = 1, AttrValid = 1, Attr = Attr(node) };

    FuseAttr Attr(ulong node) => node == FileNode
        ? new FuseAttr { Ino = FileNode, Mode = 0x81A4, Nlink = 1, Size = (ulong)Interlocked.Read(ref _size), Blocks = 128, BlockSize = 4096 }
        : new FuseAttr { Ino = FuseConstants.RootNodeId, Mode = 0x41ED, Nlink = 2, Size = 4096, BlockSize = 4096 };
}

/// <summary>Requests built as the kernel sends them, for the tests that feed the worker from memory.</summary>
internal static class FuseRequests
{
    static ulong _unique = 100;

    internal static byte[] Build<T>(FuseOpcode opcode, ulong node, in T argument, ReadOnlySpan<byte> tail = default) where T : unmanaged
    {
        int argumentSize = Marshal.SizeOf<T>();
        var bytes = new byte[40 + argumentSize + tail.Length];
        var header = new FuseInHeader { Length = (uint)bytes.Length, Opcode = opcode, Unique = ++_unique, NodeId = node, Uid = 0, Gid = 0, Pid = 1 };
        MemoryMarshal.Write(bytes, in header);
        MemoryMarshal.Write(bytes.AsSpan(40), in argument);
        tail.CopyTo(bytes.AsSpan(40 + argumentSize));
        return bytes;
    }

    internal static byte[] Bare(FuseOpcode opcode, ulong node, ReadOnlySpan<byte> tail = default)
    {
        var bytes = new byte[40 + tail.Length];
        var header = new FuseInHeader { Length = (uint)bytes.Length, Opcode = opcode, Unique = ++_unique, NodeId = node, Pid = 1 };
        MemoryMarshal.Write(bytes, in header);
        tail.CopyTo(bytes.AsSpan(40));
        return bytes;
    }
}

/// <summary>Hands out prepared requests in a cycle, then ENODEV; counts replies and remembers the last one's error.</summary>
internal sealed class MemoryChannel : IFuseChannel
{
    readonly byte[][] _requests;
    long _remaining;
    int _next;
    internal long Replies;
    internal int LastError;
    internal readonly byte[] LastReply = new byte[2 << 20];
    internal int LastReplyLength;

    internal MemoryChannel(byte[][] requests, long count)
    {
        _requests = requests;
        _remaining = count;
    }

    internal void Reset(long count)
    {
        _remaining = count;
        _next = 0;
    }

    public int Receive(Span<byte> buffer, out int length)
    {
        if (_remaining-- <= 0)
        {
            length = 0;
            return FuseErrno.ENODEV;
        }
        byte[] request = _requests[_next];
        _next = (_next + 1) % _requests.Length;
        request.CopyTo(buffer);
        length = request.Length;
        return 0;
    }

    public int Send(ReadOnlySpan<byte> reply)
    {
        Replies++;
        LastError = MemoryMarshal.Read<FuseOutHeader>(reply).Error;
        reply.CopyTo(LastReply);
        LastReplyLength = reply.Length;
        return 0;
    }
}
