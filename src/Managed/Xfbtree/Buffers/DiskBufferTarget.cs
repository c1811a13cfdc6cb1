using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;
using Xfbtree.Native;

namespace Xfbtree.Buffers;

/// <summary>An XFS image file or block device read with pread and written with pwrite.</summary>
/// <remarks>
/// <para>Buffers live in page-aligned native memory owned by the cache. Reads that come back short (past the
/// end of the image) are <see cref="BufferIOException"/>s naming the address, never zero filled. Writes never
/// extend the target. On Linux the target uses pread/pwrite/fsync through Tmds.LibC, opens block devices
/// <c>O_EXCL</c> (a mounted device is refused with an <see cref="IOException"/> that says so) and, with
/// <see cref="DiskTargetOptions.Direct"/>, sends 4 KiB-aligned requests through an <c>O_DIRECT</c> descriptor;
/// elsewhere it uses <see cref="RandomAccess"/>.</para>
/// <para>Fault injection exists for tests only and cannot be switched on from outside the process: internal
/// hooks (<see cref="FaultHook"/>, <see cref="WriteInterceptor"/>), reachable only from the test assemblies; a
/// target that code under test opens itself is handed to the test through an internal option of that code.</para>
/// </remarks>
public sealed unsafe class DiskBufferTarget : BufferTarget
{
    /// <summary>Alignment of buffer memory (and of requests sent through O_DIRECT).</summary>
    public const int MemoryAlignment = 4096;

    private readonly DiskIo io;
    private readonly long sizeBytes;
    private long successfulWrites;

    private DiskBufferTarget(string path, DiskIo io, bool readOnly, bool blockDevice, long sizeBytes)
    {
        Name = path;
        this.io = io;
        IsReadOnly = readOnly;
        IsBlockDevice = blockDevice;
        this.sizeBytes = sizeBytes;
    }

    /// <summary>Opens a target; block devices are opened O_EXCL so a mounted device is refused.</summary>
    /// <exception cref="FileNotFoundException">The path does not exist.</exception>
    /// <exception cref="IOException">The device is in use (mounted), or the OS refused to open it.</exception>
    public static DiskBufferTarget Open(string path, DiskTargetOptions? options = null)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        options ??= new DiskTargetOptions();
        if (!File.Exists(path))
        {
            throw new FileNotFoundException($"{path}: no such image file or device", path);
        }
        DiskIo io;
        bool blockDevice = false;
        if (OperatingSystem.IsLinux() && !options.ForcePortable)
        {
            io = LinuxDiskIo.Open(path, !options.ReadOnly, options.Direct, out blockDevice);
        }
        else
        {
            io = PortableDiskIo.Open(path, !options.ReadOnly);
        }
        long size;
        try
        {
            size = io.Size();
        }
        catch
        {
            io.Dispose();
            throw;
        }
        return new DiskBufferTarget(path, io, options.ReadOnly, blockDevice, size);
    }

    /// <inheritdoc />
    public override string Name { get; }
    /// <inheritdoc />
    public override bool IsReadOnly { get; }
    /// <inheritdoc />
    public override bool IsInMemory => false;
    /// <inheritdoc />
    public override long SizeInBasicBlocks => sizeBytes / 512;
    /// <summary>Size in bytes at open time.</summary>
    public long SizeInBytes => sizeBytes;
    /// <summary>True for a block device (opened O_EXCL).</summary>
    public bool IsBlockDevice { get; }
    /// <summary>True when aligned requests bypass the page cache (O_DIRECT was asked for and the file system accepted it).</summary>
    public bool IsDirect => io.IsDirect;
    /// <summary>Successful writes so far.</summary>
    public long WriteCount => Interlocked.Read(ref successfulWrites);

    /// <summary>Test-only: stands between this target and the file for writes, syncs and reads (crash models); null: none.</summary>
    internal DiskWriteInterceptor? WriteInterceptor { get; set; }

    /// <summary>Test-only fault injection, asked before every read and write (null: none).</summary>
    internal DiskFaultHook? FaultHook { get; set; }

    /// <summary>fsync: every write that returned before this call is durable when it returns (a write-ordering barrier).</summary>
    /// <exception cref="IOException">The OS reported a write-back error.</exception>
    public void Sync()
    {
        try
        {
            if (WriteInterceptor is { } interceptor)
            {
                interceptor.Sync(new DiskPassThrough(io));
            }
            else
            {
                io.Sync();
            }
        }
        catch (IOException e) when (e is not BufferIOException)
        {
            throw new IOException($"{Name}: sync failed: {e.Message}", e);
        }
    }

    /// <summary>fdatasync: as <see cref="Sync"/> for the data written before this call (the file's times may lag).</summary>
    /// <exception cref="IOException">The OS reported a write-back error.</exception>
    public void SyncData()
    {
        try
        {
            if (WriteInterceptor is { } interceptor)
            {
                interceptor.Sync(new DiskPassThrough(io));
            }
            else
            {
                io.SyncData();
            }
        }
        catch (IOException e) when (e is not BufferIOException)
        {
            throw new IOException($"{Name}: sync failed: {e.Message}", e);
        }
    }

    /// <summary>Turns the OS's readahead off for this target's reads (POSIX_FADV_RANDOM; Linux only, else no-op): for a
    /// reader whose reads are not sequential, on a sparse file where readahead would fill page after page of holes
    /// with zeros.</summary>
    public void AdviseRandomAccess() => io.AdviseRandomAccess();

    /// <summary>Drops this file's clean pages from the OS page cache (cold-read measurements; Linux only, else no-op).</summary>
    public void DropOsCache() => io.DropPageCache();

    internal override void SyncForFlush() => Sync();

    internal override byte* AttachMemory(long daddr, int lengthBB) =>
        (byte*)NativeMemory.AlignedAlloc((nuint)(lengthBB * 512), MemoryAlignment);

    internal override void DetachMemory(byte* data, long daddr, int lengthBB) => NativeMemory.AlignedFree(data);

    /// <summary>Reads whole 512-byte sectors into a span (uncached I/O for callers outside the cache, such as file
    /// data of the write engine); the span's length must be a multiple of 512.</summary>
    internal void ReadSectors(long daddr, Span<byte> destination)
    {
        if (destination.Length % 512 != 0)
        {
            throw new ArgumentException($"read of {destination.Length} bytes: not whole sectors", nameof(destination));
        }
        fixed (byte* p = destination)
        {
            ReadInto(p, daddr, destination.Length / 512);
        }
    }

    /// <summary>Writes whole 512-byte sectors from a span (see <see cref="ReadSectors"/>).</summary>
    internal void WriteSectors(long daddr, ReadOnlySpan<byte> source)
    {
        if (source.Length % 512 != 0)
        {
            throw new ArgumentException($"write of {source.Length} bytes: not whole sectors", nameof(source));
        }
        fixed (byte* p = source)
        {
            WriteFrom(p, daddr, source.Length / 512);
        }
    }

    internal override void ReadInto(byte* data, long daddr, int lengthBB)
    {
        int length = lengthBB * 512;
        int got;
        int transfer = length;
        if (FaultHook is { } hook)
        {
            DiskFault fault = hook(write: false, daddr, lengthBB);
            if (fault.Errno != 0)
            {
                var e = NativeErrors.Create("pread", fault.Errno, $"offset {daddr * 512} (injected)");
                throw new BufferIOException(Name, daddr, lengthBB, e.Message, e);
            }
            if (fault.TransferBytes >= 0)
            {
                transfer = Math.Min(length, fault.TransferBytes);
            }
        }
        try
        {
            got = io.Read(data, transfer, daddr * 512);
        }
        catch (IOException e)
        {
            throw new BufferIOException(Name, daddr, lengthBB, e.Message, e);
        }
        if (got != length)
        {
            throw new BufferIOException(Name, daddr, lengthBB,
                $"short read: {got} of {length} bytes (the target is {sizeBytes} bytes long); not zero filled");
        }
        WriteInterceptor?.AfterRead(new Span<byte>(data, length), daddr * 512);
    }

    internal override void WriteFrom(byte* data, long daddr, int lengthBB)
    {
        int length = lengthBB * 512;
        if (IsReadOnly)
        {
            throw new BufferIOException(Name, daddr, lengthBB, "the target is open read-only");
        }
        if (daddr * 512 + length > sizeBytes)
        {
            throw new BufferIOException(Name, daddr, lengthBB, $"write beyond the end of the target ({sizeBytes} bytes); targets are never extended");
        }
        if (FaultHook is { } hook)
        {
            DiskFault fault = hook(write: true, daddr, lengthBB);
            if (fault.Errno != 0)
            {
                var e = NativeErrors.Create("pwrite", fault.Errno, $"offset {daddr * 512} (injected)");
                throw new BufferIOException(Name, daddr, lengthBB, e.Message, e);
            }
        }
        try
        {
            if (WriteInterceptor is { } interceptor)
            {
                interceptor.Write(new ReadOnlySpan<byte>(data, length), daddr * 512, new DiskPassThrough(io));
            }
            else
            {
                io.Write(data, length, daddr * 512);
            }
        }
        catch (IOException e) when (e is not BufferIOException)
        {
            throw new BufferIOException(Name, daddr, lengthBB, e.Message, e);
        }
        Interlocked.Increment(ref successfulWrites);
    }

    /// <inheritdoc />
    protected override void Dispose(bool disposing)
    {
        if (disposing)
        {
            io.Dispose();
        }
        base.Dispose(disposing);
    }

    /// <summary>Test-only: decides the fate of one request (see <see cref="FaultHook"/>).</summary>
    internal delegate DiskFault DiskFaultHook(bool write, long daddr, int lengthBB);

    /// <summary>An injected fault: an errno for the call, or (reads) how many bytes the read returns before end of file.</summary>
    internal readonly record struct DiskFault(int Errno, int TransferBytes = -1)
    {
        public static DiskFault None => new(0);
        public static DiskFault Error(int errno) => new(errno);
        public static DiskFault Short(int bytes) => new(0, bytes);
    }

    /// <summary>Test-only: the file itself, for a <see cref="DiskWriteInterceptor"/> that decides when bytes reach it.</summary>
    internal readonly struct DiskPassThrough
    {
        private readonly DiskIo io;

        internal DiskPassThrough(DiskIo io) => this.io = io;

        /// <summary>pwrite of <paramref name="bytes"/> at byte <paramref name="offset"/>.</summary>
        public void Write(ReadOnlySpan<byte> bytes, long offset)
        {
            fixed (byte* p = bytes)
            {
                io.Write(p, bytes.Length, offset);
            }
        }

        /// <summary>fsync.</summary>
        public void Sync() => io.Sync();
    }

    /// <summary>How a disk target moves bytes: Linux syscalls or the BCL.</summary>
    internal abstract class DiskIo : IDisposable
    {
        public abstract bool IsDirect { get; }
        public abstract long Size();
        /// <summary>Reads until full or end of file; returns the bytes read.</summary>
        public abstract int Read(byte* data, int length, long offset);
        public abstract void Write(byte* data, int length, long offset);
        public abstract void Sync();
        public virtual void SyncData() => Sync();
        public virtual void AdviseRandomAccess() { }
        public virtual void DropPageCache() { }
        public abstract void Dispose();
    }

    [System.Runtime.Versioning.SupportedOSPlatform("linux")]
    private sealed class LinuxDiskIo : DiskIo
    {
        private readonly SafeFdHandle fd;
        private readonly SafeFdHandle? directFd;

        private LinuxDiskIo(SafeFdHandle fd, SafeFdHandle? directFd)
        {
            this.fd = fd;
            this.directFd = directFd;
        }

        public static LinuxDiskIo Open(string path, bool writable, bool direct, out bool blockDevice)
        {
            blockDevice = LinuxDevices.IsBlockDevice(path);
            SafeFdHandle fd;
            try
            {
                fd = LinuxDevices.Open(path, writable, exclusive: blockDevice, direct: false);
            }
            catch (NativeCallException e) when (blockDevice && e.ErrorNumber == NativeErrors.EBUSY)
            {
                throw new IOException($"{path} is in use (mounted, or claimed exclusively by another program); refusing to open it", e);
            }
            SafeFdHandle? directFd = null;
            if (direct)
            {
                try
                {
                    // A second descriptor; on a block device the exclusive claim is already ours, so no O_EXCL.
                    directFd = LinuxDevices.Open(path, writable, exclusive: false, direct: true);
                }
                catch (NativeCallException e) when (e.ErrorNumber == NativeErrors.EINVAL)
                {
                    directFd = null; // the file system does not do O_DIRECT (tmpfs): buffered I/O it is
                }
                catch
                {
                    fd.Dispose();
                    throw;
                }
            }
            return new LinuxDiskIo(fd, directFd);
        }

        public override bool IsDirect => directFd is not null;

        public override long Size() => LinuxDevices.Size(fd);

        private SafeFdHandle For(byte* data, int length, long offset) =>
            directFd is not null && ((nuint)data | (nuint)length | (nuint)offset) % MemoryAlignment == 0 ? directFd : fd;

        public override int Read(byte* data, int length, long offset) =>
            LinuxFiles.ReadAt(For(data, length, offset), new Span<byte>(data, length), offset);

        public override void Write(byte* data, int length, long offset) =>
            LinuxFiles.WriteAt(For(data, length, offset), new ReadOnlySpan<byte>(data, length), offset);

        public override void Sync() => LinuxDevices.Sync(fd, dataOnly: false);

        public override void SyncData() => LinuxDevices.Sync(fd, dataOnly: true);

        public override void DropPageCache() => LinuxDevices.DropPageCache(fd);

        public override void AdviseRandomAccess() => LinuxDevices.AdviseRandomAccess(fd);

        public override void Dispose()
        {
            directFd?.Dispose();
            fd.Dispose();
        }
    }

    private sealed class PortableDiskIo : DiskIo
    {
        private readonly FileStream stream;

        private PortableDiskIo(FileStream stream) => this.stream = stream;

        public static PortableDiskIo Open(string path, bool writable) =>
            new(new FileStream(path, new FileStreamOptions
            {
                Mode = FileMode.Open,
                Access = writable ? FileAccess.ReadWrite : FileAccess.Read,
                Share = writable ? FileShare.Read : FileShare.ReadWrite,
                BufferSize = 0,
            }));

        private SafeFileHandle Handle => stream.SafeFileHandle;

        public override bool IsDirect => false;

        public override long Size() => RandomAccess.GetLength(Handle);

        public override int Read(byte* data, int length, long offset)
        {
            int total = 0;
            while (total < length)
            {
                int n = RandomAccess.Read(Handle, new Span<byte>(data + total, length - total), offset + total);
                if (n == 0)
                {
                    break;
                }
                total += n;
            }
            return total;
        }

        public override void Write(byte* data, int length, long offset) =>
            RandomAccess.Write(Handle, new ReadOnlySpan<byte>(data, length), offset);

        public override void Sync() => stream.Flush(flushToDisk: true);

        public override void Dispose() => stream.Dispose();
    }
}
