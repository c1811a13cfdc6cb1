using System.IO.MemoryMappedFiles;
using System.Runtime.InteropServices;
using BenchmarkDotNet.Attributes;
using BenchmarkDotNet.Configs;
using Xfbtree.Storage;

namespace Xfbtree.Benchmarks.Storage;

/// <summary>
/// Xfile store/load/pin throughput against a managed byte[] and a BCL MemoryMappedFile (raw view pointer).
/// Working set: 16,384 pages (64 MiB), all committed/touched in setup, so this measures the steady state.
/// Each invocation does 1,024 operations at pseudo-random page offsets (same sequence for every target).
/// </summary>
[MemoryDiagnoser]
[GroupBenchmarksBy(BenchmarkLogicalGroupRule.ByCategory)]
[CategoriesColumn]
public unsafe class XfileThroughputBenchmarks
{
    private const int Operations = 1024;
    private const int Pages = 16384;
    private const int PageSize = 4096;
    private const int SmallRecord = 64;

    private readonly long[] offsets = new long[Operations];
    private readonly byte[] page = new byte[PageSize];
    private byte[] managed = [];
    private MemoryMappedFile? map;
    private MemoryMappedViewAccessor? view;
    private byte* mapBase;
    private Xfile? xfile;

    /// <summary>Backend of the xfile rows.</summary>
    [Params(XfileBackendKind.Memfd, XfileBackendKind.Portable)]
    public XfileBackendKind Backend { get; set; }

    [GlobalSetup]
    public void Setup()
    {
        var random = new Random(42);
        for (int i = 0; i < Operations; i++)
        {
            offsets[i] = (long)random.Next(Pages) * PageSize;
        }
        random.NextBytes(page);

        managed = new byte[Pages * PageSize];
        managed.AsSpan().Fill(1);

        map = MemoryMappedFile.CreateNew(null, (long)Pages * PageSize);
        view = map.CreateViewAccessor(0, (long)Pages * PageSize);
        byte* pointer = null;
        view.SafeMemoryMappedViewHandle.AcquirePointer(ref pointer);
        mapBase = pointer + view.PointerOffset;
        new Span<byte>(mapBase, Pages * PageSize).Fill(1);

        xfile = Xfile.Create(new XfileOptions { Backend = Backend, MaxSize = 1L << 30, Name = "xfbtree-bench" });
        for (long offset = 0; offset < (long)Pages * PageSize; offset += PageSize)
        {
            xfile.Store(offset, page);
            xfile.UnpinPage(offset + 0 * (long)xfile.PinPage(offset)); // creates the pin counters too
        }
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        xfile?.Dispose();
        if (view is not null)
        {
            view.SafeMemoryMappedViewHandle.ReleasePointer();
            view.Dispose();
        }
        map?.Dispose();
    }

    // ---- 4 KiB page copies ----

    [Benchmark(Baseline = true, OperationsPerInvoke = Operations), BenchmarkCategory("Store4K")]
    public void ByteArray_Store4K()
    {
        foreach (long offset in offsets)
        {
            page.CopyTo(managed.AsSpan((int)offset, PageSize));
        }
    }

    [Benchmark(OperationsPerInvoke = Operations), BenchmarkCategory("Store4K")]
    public void MemoryMappedFile_Store4K()
    {
        foreach (long offset in offsets)
        {
            page.CopyTo(new Span<byte>(mapBase + offset, PageSize));
        }
    }

    [Benchmark(OperationsPerInvoke = Operations), BenchmarkCategory("Store4K")]
    public void Xfile_Store4K()
    {
        foreach (long offset in offsets)
        {
            xfile!.Store(offset, page);
        }
    }

    [Benchmark(Baseline = true, OperationsPerInvoke = Operations), BenchmarkCategory("Load4K")]
    public void ByteArray_Load4K()
    {
        foreach (long offset in offsets)
        {
            managed.AsSpan((int)offset, PageSize).CopyTo(page);
        }
    }

    [Benchmark(OperationsPerInvoke = Operations), BenchmarkCategory("Load4K")]
    public void MemoryMappedFile_Load4K()
    {
        foreach (long offset in offsets)
        {
            new ReadOnlySpan<byte>(mapBase + offset, PageSize).CopyTo(page);
        }
    }

    [Benchmark(OperationsPerInvoke = Operations), BenchmarkCategory("Load4K")]
    public void Xfile_Load4K()
    {
        foreach (long offset in offsets)
        {
            xfile!.Load(offset, page);
        }
    }

    // ---- 64-byte records: per-call overhead dominates ----

    [Benchmark(Baseline = true, OperationsPerInvoke = Operations), BenchmarkCategory("Store64")]
    public void ByteArray_Store64()
    {
        ReadOnlySpan<byte> record = page.AsSpan(0, SmallRecord);
        foreach (long offset in offsets)
        {
            record.CopyTo(managed.AsSpan((int)offset + 128, SmallRecord));
        }
    }

    [Benchmark(OperationsPerInvoke = Operations), BenchmarkCategory("Store64")]
    public void MemoryMappedFile_Store64()
    {
        ReadOnlySpan<byte> record = page.AsSpan(0, SmallRecord);
        foreach (long offset in offsets)
        {
            record.CopyTo(new Span<byte>(mapBase + offset + 128, SmallRecord));
        }
    }

    [Benchmark(OperationsPerInvoke = Operations), BenchmarkCategory("Store64")]
    public void Xfile_Store64()
    {
        ReadOnlySpan<byte> record = page.AsSpan(0, SmallRecord);
        foreach (long offset in offsets)
        {
            xfile!.Store(offset + 128, record);
        }
    }

    [Benchmark(Baseline = true, OperationsPerInvoke = Operations), BenchmarkCategory("Load64")]
    public void ByteArray_Load64()
    {
        Span<byte> record = page.AsSpan(0, SmallRecord);
        foreach (long offset in offsets)
        {
            managed.AsSpan((int)offset + 128, SmallRecord).CopyTo(record);
        }
    }

    [Benchmark(OperationsPerInvoke = Operations), BenchmarkCategory("Load64")]
    public void MemoryMappedFile_Load64()
    {
        Span<byte> record = page.AsSpan(0, SmallRecord);
        foreach (long offset in offsets)
        {
            new ReadOnlySpan<byte>(mapBase + offset + 128, SmallRecord).CopyTo(record);
        }
    }

    [Benchmark(OperationsPerInvoke = Operations), BenchmarkCategory("Load64")]
    public void Xfile_Load64()
    {
        Span<byte> record = page.AsSpan(0, SmallRecord);
        foreach (long offset in offsets)
        {
            xfile!.Load(offset + 128, record);
        }
    }

    // ---- Pin a committed page, touch one byte, unpin (the buffer cache's access pattern) ----

    [Benchmark(Baseline = true, OperationsPerInvoke = Operations), BenchmarkCategory("Pin")]
    public int ByteArray_Pin()
    {
        int sum = 0;
        foreach (long offset in offsets)
        {
            fixed (byte* frame = &managed[offset])
            {
                sum += frame[7];
            }
        }
        return sum;
    }

    [Benchmark(OperationsPerInvoke = Operations), BenchmarkCategory("Pin")]
    public int MemoryMappedFile_Pin()
    {
        int sum = 0;
        SafeHandle handle = view!.SafeMemoryMappedViewHandle;
        foreach (long offset in offsets)
        {
            // The BCL's own lease: AddRef/Release on the view handle around the pointer use.
            bool added = false;
            handle.DangerousAddRef(ref added);
            sum += mapBase[offset + 7];
            handle.DangerousRelease();
        }
        return sum;
    }

    [Benchmark(OperationsPerInvoke = Operations), BenchmarkCategory("Pin")]
    public int Xfile_Pin()
    {
        int sum = 0;
        Xfile file = xfile!;
        foreach (long offset in offsets)
        {
            byte* frame = file.PinPage(offset);
            sum += frame[7];
            file.UnpinPage(offset);
        }
        return sum;
    }
}
