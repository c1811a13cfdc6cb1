using System.IO.MemoryMappedFiles;
using System.Numerics;

namespace Xfbtree.Storage;

/// <summary>
/// BCL memory-mapped files, the only backend off Linux (and selectable on Linux for the contract tests).
/// Without a directory: an anonymous map (pagefile-backed section on Windows, memfd on Linux .NET 10).
/// With a directory: a delete-on-close file there, whose pages are committed by writing zeros through the
/// file handle, so a full file system surfaces as an IOException rather than a fault.
/// The BCL can neither punch holes nor report allocation, so Discard only forgets pages and
/// <see cref="AllocatedBytes"/> is unknown (the xfile reports its committed-page count instead).
/// Views are created lazily per 256 MiB chunk and never unmapped before disposal, so addresses are stable
/// and a 1 TiB xfile needs at most 4096 mappings.
/// </summary>
internal sealed unsafe class PortableXfileBackend : XfileBackend
{
    private const int ChunkShift = 28;

    private readonly MemoryMappedFile map;
    private readonly FileStream? file;
    private readonly MemoryMappedViewAccessor?[] views;
    private readonly nint[] chunkBases;
    private readonly Lock viewLock = new();
    private readonly int chunkShift;
    private int released;

    private PortableXfileBackend(MemoryMappedFile map, FileStream? file, long maxSize, int pageShift, string description)
        : base(maxSize, pageShift)
    {
        this.map = map;
        this.file = file;
        Description = description;
        // Small xfiles use one view of their whole size.
        chunkShift = maxSize <= 1L << ChunkShift ? 64 - BitOperations.LeadingZeroCount((ulong)maxSize - 1) : ChunkShift;
        long chunks = (maxSize + (1L << chunkShift) - 1) >> chunkShift;
        views = new MemoryMappedViewAccessor?[chunks];
        chunkBases = new nint[chunks];
    }

    public override XfileBackendKind Kind => XfileBackendKind.Portable;

    public override string Description { get; }

    public override long? AllocatedBytes => null;

    public static PortableXfileBackend Create(XfileOptions options, long maxSize, int pageShift)
    {
        if (options.Directory is null)
        {
            // DelayAllocatePages = SEC_RESERVE on Windows: nothing is charged until a view is created.
            var anonymous = MemoryMappedFile.CreateNew(null, maxSize, MemoryMappedFileAccess.ReadWrite,
                MemoryMappedFileOptions.DelayAllocatePages, HandleInheritability.None);
            return new PortableXfileBackend(anonymous, null, maxSize, pageShift, "BCL MemoryMappedFile (anonymous)");
        }

        string path = Path.Combine(options.Directory, ".xfbtree-xfile-" + Guid.NewGuid().ToString("N"));
        var stream = new FileStream(path, FileMode.CreateNew, FileAccess.ReadWrite, FileShare.None, bufferSize: 0,
            FileOptions.DeleteOnClose);
        try
        {
            stream.SetLength(maxSize);
            var mapped = MemoryMappedFile.CreateFromFile(stream, null, maxSize, MemoryMappedFileAccess.ReadWrite,
                HandleInheritability.None, leaveOpen: true);
            return new PortableXfileBackend(mapped, stream, maxSize, pageShift, "BCL MemoryMappedFile on " + path);
        }
        catch
        {
            stream.Dispose();
            throw;
        }
    }

    public override byte* PageAddress(long page)
    {
        long offset = page << PageShift;
        long chunk = offset >> chunkShift;
        nint chunkBase = Volatile.Read(ref chunkBases[chunk]);
        if (chunkBase == 0)
        {
            chunkBase = MapChunk(chunk);
        }
        return (byte*)chunkBase + (offset & ((1L << chunkShift) - 1));
    }

    public override void Commit(long first, long count)
    {
        long offset = first << PageShift;
        long length = count << PageShift;
        if (file is not null)
        {
            // Writing allocates the blocks now (ENOSPC -> IOException here, not a SIGBUS later); the pages are
            // already zero because uncommitted pages are never touched and discarded pages get zeroed below.
            ReadOnlySpan<byte> zeros = ZeroBlock.Span;
            for (long done = 0; done < length; done += zeros.Length)
            {
                RandomAccess.Write(file.SafeFileHandle, zeros[..(int)Math.Min(zeros.Length, length - done)], offset + done);
            }
            return;
        }
        // Anonymous map: the OS allocates on first touch; zero explicitly because a page discarded earlier still
        // holds its old bytes (the BCL cannot free it).
        for (long page = first; page < first + count; page++)
        {
            new Span<byte>(PageAddress(page), 1 << PageShift).Clear();
        }
    }

    public override void Release(long first, long count)
    {
        if (file is not null)
        {
            // Zero now so a later commit (which writes zeros through the handle anyway) and the map agree.
            for (long page = first; page < first + count; page++)
            {
                new Span<byte>(PageAddress(page), 1 << PageShift).Clear();
            }
        }
        // Anonymous map: Commit zeroes the page if it is ever used again.
    }

    public override void ReleaseResources()
    {
        if (Interlocked.Exchange(ref released, 1) != 0)
        {
            return;
        }
        lock (viewLock)
        {
            for (int i = 0; i < views.Length; i++)
            {
                if (views[i] is { } view)
                {
                    view.SafeMemoryMappedViewHandle.ReleasePointer();
                    view.Dispose();
                    views[i] = null;
                    chunkBases[i] = 0;
                }
            }
        }
        map.Dispose();
        file?.Dispose();
    }

    private nint MapChunk(long chunk)
    {
        lock (viewLock)
        {
            nint existing = chunkBases[chunk];
            if (existing != 0)
            {
                return existing;
            }
            ObjectDisposedException.ThrowIf(released != 0, this);
            long start = chunk << chunkShift;
            long size = Math.Min(1L << chunkShift, MaxSize - start);
            MemoryMappedViewAccessor view = map.CreateViewAccessor(start, size, MemoryMappedFileAccess.ReadWrite);
            byte* pointer = null;
            view.SafeMemoryMappedViewHandle.AcquirePointer(ref pointer);
            nint chunkBase = (nint)(pointer + view.PointerOffset);
            views[chunk] = view;
            Volatile.Write(ref chunkBases[chunk], chunkBase);
            return chunkBase;
        }
    }

    private static class ZeroBlock
    {
        private static readonly byte[] Zeros = new byte[64 * 1024];
        public static ReadOnlySpan<byte> Span => Zeros;
    }
}
