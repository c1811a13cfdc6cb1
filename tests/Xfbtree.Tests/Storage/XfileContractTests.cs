using Xfbtree.Native;
using Xfbtree.Storage;

namespace Xfbtree.Tests.Storage;

/// <summary>
/// The xfile contract, run once per backend by the subclasses below. Every test creates its own xfile(s)
/// and disposes them, so classes can run in parallel.
/// </summary>
public abstract unsafe class XfileContractTests
{
    private const long GiB = 1L << 30;

    /// <summary>Options selecting the backend under test (MaxSize is set per test).</summary>
    protected abstract XfileOptions BaseOptions { get; }

    /// <summary>The kind the xfile must report.</summary>
    protected abstract XfileBackendKind ExpectedKind { get; }

    /// <summary>True when BytesUsed comes from the OS (fstat), false when it is the xfile's own accounting.</summary>
    protected virtual bool ReportsRealAllocation => true;

    protected Xfile CreateXfile(long maxSize, long? commitLimit = null) =>
        Xfile.Create(BaseOptions with { MaxSize = maxSize, CommitLimit = commitLimit });

    [Fact]
    public void Create_ReportsBackendPageSizeAndRoundedMaxSize()
    {
        using Xfile xfile = CreateXfile(10_000);
        Assert.Equal(ExpectedKind, xfile.Backend);
        Assert.Equal(Environment.SystemPageSize, xfile.PageSize);
        Assert.Equal(0, xfile.MaxSize % xfile.PageSize);
        Assert.True(xfile.MaxSize >= 10_000 && xfile.MaxSize < 10_000 + xfile.PageSize);
        Assert.Equal(0, xfile.BytesUsed);
    }

    [Fact]
    public void SixtyFourGiB_ScatteredWrites_CostOnlyTouchedPages()
    {
        using Xfile xfile = CreateXfile(64 * GiB);
        var random = new Random(20261124);
        var offsets = new HashSet<long>();
        byte[] payload = new byte[100];
        while (offsets.Count < 300)
        {
            // Page-interior offsets so each write touches exactly one page.
            long page = random.NextInt64(xfile.MaxSize / xfile.PageSize);
            long offset = page * xfile.PageSize + random.Next(xfile.PageSize - payload.Length);
            if (offsets.Any(o => o / xfile.PageSize == page))
            {
                continue;
            }
            offsets.Add(offset);
            random.NextBytes(payload);
            payload[0] = (byte)(page | 1);
            xfile.Store(offset, payload);
        }
        long touched = offsets.Count * (long)xfile.PageSize;
        long used = xfile.BytesUsed;
        Assert.True(used <= touched + 256 * 1024, $"BytesUsed {used} for {touched} bytes of touched pages");
        if (ReportsRealAllocation)
        {
            Assert.True(used >= touched, $"BytesUsed {used} below touched {touched}");
        }
        Assert.Equal(touched, xfile.CommittedBytes);

        byte[] back = new byte[100];
        foreach (long offset in offsets)
        {
            xfile.Load(offset, back);
            Assert.Equal((byte)((offset / xfile.PageSize) | 1), back[0]);
        }
    }

    [Fact]
    public void Holes_ReadAsZeros_AndAllocateNothing()
    {
        using Xfile xfile = CreateXfile(1 * GiB);
        byte[] buffer = new byte[3 * xfile.PageSize + 17];
        Array.Fill(buffer, (byte)0xAA);
        xfile.Load(12345, buffer);
        Assert.All(buffer, b => Assert.Equal(0, b));
        Assert.Equal(0, xfile.BytesUsed);

        // A write in the middle of a page: the rest of that page and neighbouring holes still read as zeros.
        xfile.Store(5 * xfile.PageSize + 100, new byte[] { 1, 2, 3 });
        long usedAfterStore = xfile.BytesUsed;
        Array.Fill(buffer, (byte)0xAA);
        xfile.Load(4 * xfile.PageSize, buffer);
        for (int i = 0; i < buffer.Length; i++)
        {
            int expected = i == xfile.PageSize + 100 ? 1 : i == xfile.PageSize + 101 ? 2 : i == xfile.PageSize + 102 ? 3 : 0;
            Assert.Equal(expected, buffer[i]);
        }
        Assert.Equal(usedAfterStore, xfile.BytesUsed);
        Assert.False(xfile.IsCommitted(4 * xfile.PageSize));
        Assert.True(xfile.IsCommitted(5 * xfile.PageSize));
    }

    [Fact]
    public void NextCommittedOffset_SkipsHoles()
    {
        using Xfile xfile = CreateXfile(4 * GiB);
        int pageSize = xfile.PageSize;
        Assert.Equal(-1, xfile.NextCommittedOffset(0));
        xfile.Store(3 * GiB + 5 * pageSize + 7, new byte[] { 1 });
        xfile.Store(10L * pageSize, new byte[] { 1 });
        Assert.Equal(10L * pageSize, xfile.NextCommittedOffset(0));
        Assert.Equal(10L * pageSize, xfile.NextCommittedOffset(10L * pageSize + 100));
        Assert.Equal(3 * GiB + 5 * pageSize, xfile.NextCommittedOffset(11L * pageSize));
        Assert.Equal(-1, xfile.NextCommittedOffset(3 * GiB + 6 * pageSize));
        Assert.Equal(-1, xfile.NextCommittedOffset(xfile.MaxSize));
        Assert.Throws<ArgumentOutOfRangeException>(() => xfile.NextCommittedOffset(xfile.MaxSize + 1));
    }

    [Fact]
    public void StoreLoad_RoundTripAcrossPageBoundaries()
    {
        using Xfile xfile = CreateXfile(64L << 20);
        byte[] data = new byte[5 * xfile.PageSize + 333];
        new Random(7).NextBytes(data);
        long position = 3 * xfile.PageSize - 111;
        xfile.Store(position, data);
        byte[] back = new byte[data.Length];
        xfile.Load(position, back);
        Assert.Equal(data, back);
        // Overwrite a slice that straddles a boundary.
        byte[] patch = Enumerable.Repeat((byte)0x5C, 300).ToArray();
        xfile.Store(position + xfile.PageSize - 150, patch);
        patch.CopyTo(data, xfile.PageSize - 150);
        xfile.Load(position, back);
        Assert.Equal(data, back);
    }

    [Fact]
    public void Discard_MakesBytesUsedDrop_AndPagesReadZero()
    {
        using Xfile xfile = CreateXfile(1 * GiB);
        int pageSize = xfile.PageSize;
        byte[] data = new byte[64 * pageSize];
        new Random(3).NextBytes(data);
        xfile.Store(0, data);
        long before = xfile.BytesUsed;
        Assert.True(before >= data.Length);

        // Discard pages 8..39 plus half a page on each side: the half pages are zeroed, not freed.
        xfile.Discard(8 * pageSize - pageSize / 2, 32 * pageSize + pageSize);
        long after = xfile.BytesUsed;
        Assert.True(after <= before - 32L * pageSize, $"BytesUsed {before} -> {after}");
        Assert.Equal(32L * pageSize, xfile.CommittedBytes);

        byte[] back = new byte[data.Length];
        xfile.Load(0, back);
        for (int i = 0; i < back.Length; i++)
        {
            bool discarded = i >= 8 * pageSize - pageSize / 2 && i < 40 * pageSize + pageSize / 2;
            Assert.Equal(discarded ? 0 : data[i], back[i]);
        }

        // Discarded pages can be used again, and start from zeros.
        xfile.Store(20L * pageSize + 5, new byte[] { 9 });
        xfile.Load(20L * pageSize, back.AsSpan(0, pageSize));
        for (int i = 0; i < pageSize; i++)
        {
            Assert.Equal(i == 5 ? 9 : 0, back[i]);
        }

        // Discarding the whole (mostly empty) xfile is cheap and frees everything.
        xfile.Discard(0, xfile.MaxSize);
        Assert.Equal(0, xfile.CommittedBytes);
        Assert.True(xfile.BytesUsed <= (ReportsRealAllocation ? 64 * 1024 : 0));
    }

    [Fact]
    public void Discard_OfPinnedPage_Throws_AndChangesNothing()
    {
        using Xfile xfile = CreateXfile(16L << 20);
        int pageSize = xfile.PageSize;
        xfile.Store(0, Enumerable.Repeat((byte)7, 4 * pageSize).ToArray());
        byte* pinned = xfile.PinPage(2L * pageSize);
        Assert.Throws<InvalidOperationException>(() => xfile.Discard(0, 4L * pageSize));
        Assert.Throws<InvalidOperationException>(() => xfile.Discard(2L * pageSize + 10, 1));
        Assert.Equal(7, pinned[0]);
        byte[] back = new byte[4 * pageSize];
        xfile.Load(0, back);
        Assert.All(back, b => Assert.Equal(7, b));
        xfile.UnpinPage(2L * pageSize);
        xfile.Discard(0, 4L * pageSize);
        xfile.Load(0, back);
        Assert.All(back, b => Assert.Equal(0, b));
    }

    [Fact]
    public void PinnedSpan_AndLoadStore_SeeEachOthersWrites()
    {
        using Xfile xfile = CreateXfile(16L << 20);
        int pageSize = xfile.PageSize;
        long pageOffset = 3L * pageSize;
        Span<byte> span = xfile.PinPageSpan(pageOffset);
        Assert.Equal(pageSize, span.Length);
        Assert.True(xfile.IsCommitted(pageOffset));
        Assert.All(span.ToArray(), b => Assert.Equal(0, b));

        span[10] = 42;
        byte[] one = new byte[1];
        xfile.Load(pageOffset + 10, one);
        Assert.Equal(42, one[0]);

        xfile.Store(pageOffset + 20, new byte[] { 43 });
        Assert.Equal(43, span[20]);

        // A second pin of the same page returns the same address.
        byte* again = xfile.PinPage(pageOffset);
        fixed (byte* first = span)
        {
            Assert.True(first == again);
        }
        Assert.Equal(2, xfile.PinCount(pageOffset));
        xfile.UnpinPage(pageOffset);
        xfile.UnpinPage(pageOffset);
        Assert.Equal(0, xfile.PinCount(pageOffset));
        Assert.Throws<InvalidOperationException>(() => xfile.UnpinPage(pageOffset));
    }

    [Fact]
    public void PinAddresses_AreStable_AcrossGrowth()
    {
        using Xfile xfile = CreateXfile(4 * GiB);
        byte* first = xfile.PinPage(0);
        first[0] = 1;
        // Touch pages far away (other views on the portable backend) and pin again.
        for (long offset = 256L << 20; offset < xfile.MaxSize; offset += 512L << 20)
        {
            xfile.Store(offset, new byte[] { 2 });
        }
        byte* second = xfile.PinPage(0);
        Assert.True(first == second);
        Assert.Equal(1, second[0]);
        xfile.UnpinPage(0);
        xfile.UnpinPage(0);
    }

    [Fact]
    public void OutOfRangeAccess_Throws()
    {
        using Xfile xfile = CreateXfile(1L << 20);
        long max = xfile.MaxSize;
        byte[] two = new byte[2];
        Assert.Throws<ArgumentOutOfRangeException>(() => xfile.Load(-1, two));
        Assert.Throws<ArgumentOutOfRangeException>(() => xfile.Load(max - 1, two));
        Assert.Throws<ArgumentOutOfRangeException>(() => xfile.Load(long.MaxValue, two));
        Assert.Throws<ArgumentOutOfRangeException>(() => xfile.Store(max, two));
        Assert.Throws<ArgumentOutOfRangeException>(() => xfile.Store(long.MaxValue - 1, two));
        Assert.Throws<ArgumentOutOfRangeException>(() => xfile.PinPage(max));
        Assert.Throws<ArgumentOutOfRangeException>(() => xfile.PinPage(-xfile.PageSize));
        Assert.Throws<ArgumentOutOfRangeException>(() => xfile.PinPage(1));
        Assert.Throws<ArgumentOutOfRangeException>(() => xfile.UnpinPage(max));
        Assert.Throws<ArgumentOutOfRangeException>(() => xfile.Discard(0, max + 1));
        Assert.Throws<ArgumentOutOfRangeException>(() => xfile.Discard(-1, 1));
        Assert.Throws<ArgumentOutOfRangeException>(() => xfile.Discard(1, -1));
        // The last byte and an empty access at the end are fine.
        xfile.Store(max - 1, two.AsSpan(0, 1));
        xfile.Load(max, Span<byte>.Empty);
        Assert.Equal(xfile.PageSize, xfile.CommittedBytes);
    }

    [Fact]
    public void Dispose_Twice_IsSafe_AndUseAfterDisposeThrows()
    {
        Xfile xfile = CreateXfile(1L << 20);
        xfile.Store(0, new byte[] { 1 });
        xfile.Dispose();
        xfile.Dispose();
        Assert.Throws<ObjectDisposedException>(() => xfile.Load(0, new byte[1]));
        Assert.Throws<ObjectDisposedException>(() => xfile.Store(0, new byte[1]));
        Assert.Throws<ObjectDisposedException>(() => xfile.PinPage(0));
        Assert.Throws<ObjectDisposedException>(() => xfile.Discard(0, 1));
        Assert.Throws<ObjectDisposedException>(() => xfile.BytesUsed);
    }

    [Fact]
    public void PinnedPointer_StaysValidAcrossDispose_UntilUnpinned()
    {
        Xfile xfile = CreateXfile(1L << 20);
        byte* page = xfile.PinPage(0);
        xfile.Dispose();
        page[100] = 5; // still mapped: the pin holds the lease
        Assert.Equal(5, page[100]);
        xfile.UnpinPage(0);
        Assert.Throws<InvalidOperationException>(() => xfile.UnpinPage(0));
    }

    [Fact]
    public void CommitLimit_BecomesXfileFullException_AndXfileStaysUsable()
    {
        using Xfile xfile = CreateXfile(1 * GiB, commitLimit: 8L * Environment.SystemPageSize);
        int pageSize = xfile.PageSize;
        xfile.Store(0, new byte[8 * pageSize]);
        Assert.Throws<XfileFullException>(() => xfile.Store(100L * pageSize, new byte[1]));
        Assert.Throws<XfileFullException>(() => xfile.PinPage(200L * pageSize));
        Assert.Equal(8L * pageSize, xfile.CommittedBytes);
        // Freeing pages makes room again.
        xfile.Discard(0, pageSize);
        xfile.Store(100L * pageSize, new byte[] { 1 });
    }

    private const int PrivatePages = 32768;

    [Fact]
    public void ConcurrentStoresLoadsAndPins_FromSeveralThreads_AreConsistent()
    {
        using Xfile xfile = CreateXfile(256L << 20);
        int pageSize = xfile.PageSize;
        const int threads = 4;
        const int sharedPages = 64;
        // XFBTREE_LONG_TESTS=1 turns this into a stress run.
        int rounds = Environment.GetEnvironmentVariable("XFBTREE_LONG_TESTS") == "1" ? 20_000 : 200;
        int slot = pageSize / threads;
        using var start = new Barrier(threads);
        var failures = new System.Collections.Concurrent.ConcurrentQueue<string>();

        void Worker(int id)
        {
            var random = new Random(id);
            byte[] mine = new byte[slot];
            byte[] back = new byte[slot];
            start.SignalAndWait();
            for (int round = 0; round < rounds; round++)
            {
                // 1. Every thread writes its own slot of the same (initially uncommitted) pages: first commits
                //    race, and no thread's bytes may be lost to another thread's commit.
                int page = random.Next(sharedPages);
                long position = (long)page * pageSize + (long)id * slot;
                Array.Fill(mine, (byte)(id * 50 + (round % 50)));
                xfile.Store(position, mine);
                xfile.Load(position, back);
                if (!back.AsSpan().SequenceEqual(mine))
                {
                    failures.Enqueue($"thread {id} round {round}: store/load mismatch on page {page}");
                }

                // 2. Pin a shared page, write our slot through the pointer, read it back with Load.
                long pinOffset = (long)random.Next(sharedPages) * pageSize;
                byte* frame = xfile.PinPage(pinOffset);
                byte value = (byte)(id * 50 + 49);
                new Span<byte>(frame + id * slot, slot).Fill(value);
                xfile.Load(pinOffset + (long)id * slot, back);
                if (Array.Exists(back, b => b != value))
                {
                    failures.Enqueue($"thread {id} round {round}: pinned write not visible to Load");
                }
                xfile.UnpinPage(pinOffset);

                // 3. Private pages far away: commit + read back under contention on the commit lock.
                long privateOffset = (128L << 20) + ((long)id * rounds + round) % PrivatePages * pageSize;
                xfile.Store(privateOffset, mine.AsSpan(0, 8));
            }
        }

        Thread[] workers = Enumerable.Range(0, threads).Select(i => new Thread(() => Worker(i))).ToArray();
        foreach (Thread worker in workers)
        {
            worker.Start();
        }
        foreach (Thread worker in workers)
        {
            worker.Join();
        }
        Assert.Empty(failures);
        for (long page = 0; page < sharedPages; page++)
        {
            Assert.Equal(0, xfile.PinCount(page * pageSize));
        }
        Assert.Equal((long)sharedPages * pageSize + Math.Min((long)threads * rounds, PrivatePages) * pageSize,
            xfile.CommittedBytes, (double)sharedPages * pageSize);
    }
}

public sealed class XfileMemfdContractTests : XfileContractTests
{
    protected override XfileOptions BaseOptions => new() { Backend = XfileBackendKind.Memfd, Name = "xfbtree-test" };
    protected override XfileBackendKind ExpectedKind => XfileBackendKind.Memfd;

    [Fact]
    public void Memfd_IsNamedInProcFd()
    {
        using Xfile xfile = CreateXfile(1L << 20);
        Assert.Equal("memfd:xfbtree-test", xfile.BackingDescription);
        bool found = Directory.EnumerateFileSystemEntries("/proc/self/fd")
            .Select(link => { try { return new FileInfo(link).LinkTarget; } catch (IOException) { return null; } })
            .Any(target => target is not null && target.StartsWith("/memfd:xfbtree-test", StringComparison.Ordinal));
        Assert.True(found, "memfd not visible in /proc/self/fd");
    }
}

public sealed class XfileTmpFileShmContractTests : XfileContractTests
{
    protected override XfileOptions BaseOptions => new() { Backend = XfileBackendKind.TmpFile, Directory = "/dev/shm" };
    protected override XfileBackendKind ExpectedKind => XfileBackendKind.TmpFile;

    [Fact]
    public void TmpFile_UsesOTmpFile_InDevShm()
    {
        using Xfile xfile = CreateXfile(1L << 20);
        Assert.Equal("O_TMPFILE in /dev/shm", xfile.BackingDescription);
    }
}

public sealed class XfileTmpFileDiskContractTests : XfileContractTests, IDisposable
{
    private readonly string directory = XfileTestDirectories.CreateDiskDirectory();

    protected override XfileOptions BaseOptions => new() { Backend = XfileBackendKind.TmpFile, Directory = directory };
    protected override XfileBackendKind ExpectedKind => XfileBackendKind.TmpFile;

    [Fact]
    public void TmpFile_OnDisk_UsesOTmpFile_AndLeavesNoName()
    {
        using Xfile xfile = CreateXfile(1L << 20);
        Assert.Equal("O_TMPFILE in " + directory, xfile.BackingDescription);
        Assert.Empty(Directory.EnumerateFileSystemEntries(directory));
    }

    public void Dispose() => Directory.Delete(directory, recursive: true);
}

public sealed class XfilePortableContractTests : XfileContractTests
{
    protected override XfileOptions BaseOptions => new() { Backend = XfileBackendKind.Portable };
    protected override XfileBackendKind ExpectedKind => XfileBackendKind.Portable;
    protected override bool ReportsRealAllocation => false;
}

public sealed class XfilePortableOnDiskContractTests : XfileContractTests, IDisposable
{
    private readonly string directory = XfileTestDirectories.CreateDiskDirectory();

    protected override XfileOptions BaseOptions => new() { Backend = XfileBackendKind.Portable, Directory = directory };
    protected override XfileBackendKind ExpectedKind => XfileBackendKind.Portable;
    protected override bool ReportsRealAllocation => false;

    public void Dispose() => Directory.Delete(directory, recursive: true);
}

internal static class XfileTestDirectories
{
    /// <summary>A fresh directory on a disk file system (not tmpfs): $TMPDIR, else /tmp, else /var/tmp.</summary>
    public static string CreateDiskDirectory()
    {
        string root = Path.GetTempPath();
        string path = Path.Combine(root, "xfbtree-xfile-test-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(path);
        return path;
    }
}
