using System.Runtime.InteropServices;
using Xfbtree.InMemory;
using Xfbtree.Storage;
using Xunit.Abstractions;
using Xfbtree.Tests.Support;

namespace Xfbtree.Tests.Storage;

/// <summary>The xfile contract on the anonymous backend (huge pages off, so Rss counts exactly the touched pages).</summary>
public sealed class XfileAnonymousContractTests : XfileContractTests
{
    protected override XfileOptions BaseOptions => new() { Backend = XfileBackendKind.Anonymous };
    protected override XfileBackendKind ExpectedKind => XfileBackendKind.Anonymous;
}

/// <summary>
/// Huge pages: the option's policy against given kernel settings (every branch, whatever this machine has), the live
/// system (what this machine can give, Required where it cannot), the smaps measure, discard on THP memory, and the
/// block store's chunked commit (fewer commits, commit limit still enforced, bytes accounted).
/// </summary>
public sealed unsafe class XfileHugePageTests(ITestOutputHelper output)
{
    static readonly (string, string, string)[] DiskAndShm = [("/", "ext4", "rw,relatime"), ("/dev/shm", "tmpfs", "rw,nosuid,nodev"), ("/mnt/huge", "tmpfs", "rw,huge=within_size")];

    static TransparentHugePageSettings Settings(string enabled, string shmem) =>
        new(TransparentHugePageSettings.Selected(enabled), TransparentHugePageSettings.Selected(shmem), DiskAndShm);

    const string AnonMadvise = "always [madvise] never";
    const string AnonNever = "always madvise [never]";
    const string ShmemNever = "always within_size advise [never] deny force";
    const string ShmemAdvise = "always within_size [advise] never deny force";
    const string ShmemDeny = "always within_size advise never [deny] force";

    [Fact]
    public void Selected_ReadsTheBracketedChoice()
    {
        Assert.Equal("madvise", TransparentHugePageSettings.Selected(AnonMadvise + "\n"));
        Assert.Equal("never", TransparentHugePageSettings.Selected(ShmemNever));
        Assert.Null(TransparentHugePageSettings.Selected("garbage"));
        Assert.Null(TransparentHugePageSettings.Selected(null));
    }

    [Fact]
    public void Policy_Off_KeepsTheBackend_AndAsksForNothing()
    {
        foreach (var kind in Enum.GetValues<XfileBackendKind>())
        {
            var plan = XfileHugePagePolicy.Plan(new XfileOptions { Backend = kind }, Settings(AnonMadvise, ShmemAdvise));
            Assert.Equal(kind, plan.Backend);
            Assert.Equal(XfileHugePageMode.None, plan.Mode);
        }
    }

    [Fact]
    public void Policy_Auto_PrefersShmemThp_ThenAnonymousThp_ThenNone()
    {
        var preferred = new XfileOptions { HugePages = XfileHugePages.Preferred };
        var shmem = XfileHugePagePolicy.Plan(preferred, Settings(AnonMadvise, ShmemAdvise));
        Assert.Equal((XfileBackendKind.Memfd, XfileHugePageMode.ShmemThp), (shmem.Backend, shmem.Mode));
        // This machine's case: shmem huge pages never, anonymous madvise.
        var anonymous = XfileHugePagePolicy.Plan(preferred, Settings(AnonMadvise, ShmemNever));
        Assert.Equal((XfileBackendKind.Anonymous, XfileHugePageMode.AnonymousThp), (anonymous.Backend, anonymous.Mode));
        Assert.Contains("anonymous THP", anonymous.Description);
        Assert.Contains("shmem_enabled=never", anonymous.Description);
        var none = XfileHugePagePolicy.Plan(preferred, Settings(AnonNever, ShmemNever));
        Assert.Equal((XfileBackendKind.Auto, XfileHugePageMode.None), (none.Backend, none.Mode));
        Assert.StartsWith("none: ", none.Description);
        var notLinux = XfileHugePagePolicy.Plan(preferred, settings: null);
        Assert.Equal(XfileHugePageMode.None, notLinux.Mode);
    }

    [Fact]
    public void Policy_Required_ThrowsWhereImpossible()
    {
        var required = new XfileOptions { HugePages = XfileHugePages.Required };
        var e = Assert.Throws<NotSupportedException>(() => XfileHugePagePolicy.Plan(required, Settings(AnonNever, ShmemNever)));
        Assert.Contains("required", e.Message);
        Assert.Throws<NotSupportedException>(() => XfileHugePagePolicy.Plan(required with { Backend = XfileBackendKind.Memfd }, Settings(AnonMadvise, ShmemNever)));
        Assert.Throws<NotSupportedException>(() => XfileHugePagePolicy.Plan(required with { Backend = XfileBackendKind.Portable }, Settings(AnonMadvise, ShmemAdvise)));
        Assert.Throws<NotSupportedException>(() => XfileHugePagePolicy.Plan(required with { Backend = XfileBackendKind.Anonymous }, Settings(AnonNever, ShmemAdvise)));
        Assert.Throws<NotSupportedException>(() => XfileHugePagePolicy.Plan(required, settings: null));
        // A disk directory has no huge pages; a tmpfs one needs huge= (or shmem_enabled=force), and deny beats it.
        Assert.Throws<NotSupportedException>(() => XfileHugePagePolicy.Plan(required with { Directory = "/tmp" }, Settings(AnonMadvise, ShmemAdvise)));
        Assert.Throws<NotSupportedException>(() => XfileHugePagePolicy.Plan(required with { Backend = XfileBackendKind.TmpFile, Directory = "/dev/shm" }, Settings(AnonMadvise, ShmemAdvise)));
        var huge = XfileHugePagePolicy.Plan(required with { Backend = XfileBackendKind.TmpFile, Directory = "/mnt/huge/x" }, Settings(AnonMadvise, ShmemNever));
        Assert.Equal((XfileBackendKind.TmpFile, XfileHugePageMode.ShmemThp), (huge.Backend, huge.Mode));
        Assert.Throws<NotSupportedException>(() => XfileHugePagePolicy.Plan(required with { Backend = XfileBackendKind.TmpFile, Directory = "/mnt/huge" }, Settings(AnonMadvise, ShmemDeny)));
        var forced = XfileHugePagePolicy.Plan(required with { Backend = XfileBackendKind.TmpFile, Directory = "/dev/shm" }, Settings(AnonMadvise, "always within_size advise never deny [force]"));
        Assert.Equal(XfileHugePageMode.ShmemThp, forced.Mode);
        // Works where possible.
        Assert.Equal(XfileHugePageMode.AnonymousThp, XfileHugePagePolicy.Plan(required, Settings(AnonMadvise, ShmemNever)).Mode);
        Assert.Equal(XfileHugePageMode.ShmemThp, XfileHugePagePolicy.Plan(required with { Backend = XfileBackendKind.Memfd }, Settings(AnonNever, ShmemAdvise)).Mode);
    }

    [Fact]
    public void Smaps_SumsTheMappingsInsideTheRange()
    {
        const string sample = """
            7f0000000000-7f0000400000 rw-p 00000000 00:00 0
            Size:               4096 kB
            Rss:                4096 kB
            AnonHugePages:      4096 kB
            ShmemPmdMapped:        0 kB
            FilePmdMapped:         0 kB
            7f0000400000-7f0000800000 rw-p 00000000 00:00 0
            Rss:                  12 kB
            AnonHugePages:         0 kB
            7f0000800000-7f0000a00000 rw-s 00000000 00:01 1234                       /memfd:x (deleted)
            Rss:                2048 kB
            ShmemPmdMapped:     2048 kB
            7f1000000000-7f1000200000 rw-p 00000000 00:00 0
            Rss:                2048 kB
            AnonHugePages:      2048 kB
            VmFlags: rd wr mr mw me ac
            """;
        var usage = XfileSmaps.Parse(sample, 0x7f0000000000, 0x7f0000a00000);
        Assert.True(usage.Available);
        Assert.Equal((4096L + 12 + 2048) * 1024, usage.ResidentBytes);
        Assert.Equal(4096L * 1024, usage.AnonHugePagesBytes);
        Assert.Equal(2048L * 1024, usage.ShmemPmdMappedBytes);
        Assert.Equal(6144L * 1024, usage.HugePageBytes);
    }

    static bool AnonymousThpOnThisMachine()
    {
        var live = TransparentHugePageSettings.Read();
        return OperatingSystem.IsLinux() && live.AnonymousAvailable;
    }

    [Fact]
    public void Live_Preferred_SaysWhatItGot_AndMeasuresHugePages()
    {
        using var xfile = Xfile.Create(new XfileOptions { MaxSize = 1L << 30, HugePages = XfileHugePages.Preferred });
        output.WriteLine($"{xfile.Backend}, {xfile.BackingDescription}: {xfile.HugePageMode} - {xfile.HugePageDescription}");
        var live = TransparentHugePageSettings.Read();
        if (live.ShmemAvailable)
        {
            Assert.Equal(XfileHugePageMode.ShmemThp, xfile.HugePageMode);
            return;
        }
        if (!AnonymousThpOnThisMachine())
        {
            Assert.Equal(XfileHugePageMode.None, xfile.HugePageMode);
            return;
        }
        Assert.Equal(XfileBackendKind.Anonymous, xfile.Backend);
        Assert.Equal(XfileHugePageMode.AnonymousThp, xfile.HugePageMode);
        Assert.Equal(0, xfile.MeasureMemory().ResidentBytes);
        xfile.Reserve(0, 16L << 20);
        xfile.Store(5L << 20, [1, 2, 3]);
        var usage = xfile.MeasureMemory();
        output.WriteLine($"after 16 MiB: resident {usage.ResidentBytes >> 10} KiB, AnonHugePages {usage.AnonHugePagesBytes >> 10} KiB");
        Assert.True(usage.Available);
        Assert.Equal(16L << 20, usage.ResidentBytes);
        // Faulted in by MADV_POPULATE_WRITE on a 2 MiB aligned, MADV_HUGEPAGE range with 20 GiB free: huge pages.
        Assert.True(usage.AnonHugePagesBytes >= 8L << 20, $"only {usage.AnonHugePagesBytes} bytes in huge pages");
        Assert.Equal(usage.ResidentBytes, xfile.BytesUsed);

        // Discard = MADV_DONTNEED: memory returned (the huge page is split), the range reads as zeros.
        xfile.Discard(4L << 20, 4L << 20);
        var afterDiscard = xfile.MeasureMemory();
        Assert.Equal(12L << 20, afterDiscard.ResidentBytes);
        var back = new byte[3];
        xfile.Load(5L << 20, back);
        Assert.Equal(new byte[3], back);
        Assert.False(xfile.IsCommitted(5L << 20));
        xfile.Store(5L << 20, [9]);
        xfile.Load(5L << 20, back);
        Assert.Equal(new byte[] { 9, 0, 0 }, back);
    }

    [Fact]
    public void Live_Required_ThrowsOrWorks_AsTheSystemAllows()
    {
        var live = TransparentHugePageSettings.Read();
        // memfd: only with shmem huge pages (never on the development machines).
        var memfd = new XfileOptions { Backend = XfileBackendKind.Memfd, MaxSize = 1L << 30, HugePages = XfileHugePages.Required };
        if (live.ShmemAvailable)
        {
            using var x = Xfile.Create(memfd);
            Assert.Equal(XfileHugePageMode.ShmemThp, x.HugePageMode);
        }
        else
        {
            var e = Assert.Throws<NotSupportedException>(() => Xfile.Create(memfd));
            output.WriteLine(e.Message);
        }
        // A disk directory never has them.
        Assert.Throws<NotSupportedException>(() => Xfile.Create(new XfileOptions { Backend = XfileBackendKind.TmpFile, Directory = Path.GetTempPath(), HugePages = XfileHugePages.Required }));
        var anonymous = new XfileOptions { Backend = XfileBackendKind.Anonymous, MaxSize = 1L << 30, HugePages = XfileHugePages.Required };
        if (AnonymousThpOnThisMachine())
        {
            using var x = Xfile.Create(anonymous);
            Assert.Equal(XfileHugePageMode.AnonymousThp, x.HugePageMode);
        }
        else
        {
            Assert.Throws<NotSupportedException>(() => Xfile.Create(anonymous));
        }
    }

    [SkippableFact]
    public void Anonymous_CommitLimit_HoldsWithHugePages()
    {
        Skip.IfNot(AnonymousThpOnThisMachine(), "no anonymous transparent huge pages on this machine (transparent_hugepage/enabled is never)");
        using var xfile = Xfile.Create(new XfileOptions { Backend = XfileBackendKind.Anonymous, MaxSize = 1L << 30, HugePages = XfileHugePages.Required, CommitLimit = 1L << 20 });
        xfile.Reserve(0, 1L << 20);
        Assert.Throws<XfileFullException>(() => xfile.Store(4L << 20, [1]));
        Assert.Equal(1L << 20, xfile.CommittedBytes);
        xfile.Discard(0, 4096);
        xfile.Store(4L << 20, [1]);
    }

    [StructLayout(LayoutKind.Sequential)]
    readonly record struct Rec(ulong Key, ulong Value, ulong Pad);

    readonly struct RecOrder : IRecordComparer<Rec>
    {
        public int Compare(in Rec x, in Rec y) => x.Key.CompareTo(y.Key);
    }

    [Theory]
    [InlineData(XfileBackendKind.Memfd, XfileHugePages.Off)]
    [InlineData(XfileBackendKind.Anonymous, XfileHugePages.Off)]
    [InlineData(XfileBackendKind.Auto, XfileHugePages.Preferred)]
    public void BlockStore_CommitsAheadInChunks_AndAccountsForThem(XfileBackendKind kind, XfileHugePages huge)
    {
        var options = new ShmemBTreeOptions { XfileOptions = new XfileOptions { Backend = kind, HugePages = huge, MaxSize = 1L << 32 } };
        using var map = new ShmemBTree<Rec, RecOrder>(options: options);
        var rnd = new Random(7);
        for (int i = 0; i < 300_000; i++) map.Insert(new Rec((ulong)rnd.NextInt64(), (ulong)i, 0));
        var tree = map.Count;
        long live = map.MemoryBytes;
        long used = map.XfileBytesUsed;
        output.WriteLine($"{kind}/{huge}: {tree} records, tree holds {live >> 10} KiB, xfile {used >> 10} KiB");
        // The tree's bytes are its blocks plus at most one 2 MiB chunk committed ahead; the xfile holds exactly those
        // (the block table is native memory elsewhere).
        Assert.True(live >= 300_000L * 24);
        if (huge == XfileHugePages.Off)
        {
            Assert.Equal(live, used);
        }
        Assert.Empty(map.CheckStructure());
    }

    [Fact]
    public void BlockStore_CommitAhead_StaysWithinTheCommitLimit_AndFailsCleanly()
    {
        const long limit = 3L << 20;   // not a multiple of the 2 MiB chunk
        using var xfile = Xfile.Create(new XfileOptions { MaxSize = 1L << 32, CommitLimit = limit });
        using var map = new ShmemBTree<Rec, RecOrder>(options: new ShmemBTreeOptions { Xfile = xfile });
        long inserted = 0;
        var full = Assert.Throws<XfileFullException>((Action)(() =>
        {
            for (ulong k = 0; ; k++)
            {
                map.Insert(new Rec(k * 7919 % 1_000_003, k, 0));
                inserted++;
            }
        }));
        output.WriteLine($"{inserted} records before: {full.Message}; committed {xfile.CommittedBytes}");
        Assert.Equal(limit, xfile.CommittedBytes);          // every page up to the limit was usable, none beyond
        Assert.Equal(limit, map.MemoryBytes);
        Assert.True(inserted > 60_000, $"only {inserted} records in {limit} bytes");
        // The limit is the xfile's: Discard makes room, and a fresh tree on the freed pages works again.
    }

    [Fact]
    public void BlockStore_ReleasesCommittedAheadPages_OnDispose()
    {
        using var xfile = Xfile.Create(new XfileOptions { MaxSize = 1L << 32 });
        var map = new ShmemBTree<Rec, RecOrder>(options: new ShmemBTreeOptions { Xfile = xfile });
        for (ulong k = 0; k < 100_000; k++) map.Insert(new Rec(k, k, 0));
        Assert.True(xfile.CommittedBytes > map.MemoryBytes - 1);
        map.Dispose();
        Assert.Equal(0, xfile.CommittedBytes);
        Assert.Equal(0, xfile.BytesUsed);
    }

    [Fact]
    public void HugePageMap_GrowthAllocatesNothing()
    {
        var keys = new Rec[200_000];
        var rnd = new Random(3);
        for (int i = 0; i < keys.Length; i++) keys[i] = new Rec((ulong)rnd.NextInt64(), 1, 0);
        var options = new ShmemBTreeOptions { XfileOptions = new XfileOptions { HugePages = XfileHugePages.Preferred } };
        using (var warm = new ShmemBTree<Rec, RecOrder>(options: options))
        {
            for (int i = 0; i < 2000; i++) warm.Insert(keys[i]);
            for (int i = 0; i < 2000; i++) warm.Remove(keys[i]);
        }
        long grownTo = 0;
        long allocated = AllocationProbe.Measure(() =>
        {
            using var map = new ShmemBTree<Rec, RecOrder>(options: options); // a fresh map each attempt: growth is measured
            long before = GC.GetAllocatedBytesForCurrentThread();
            foreach (var k in keys) map.Insert(k);
            for (int i = 0; i < keys.Length; i += 2) map.Remove(keys[i]);
            foreach (var k in keys) map.Insert(k);
            long bytes = GC.GetAllocatedBytesForCurrentThread() - before;
            grownTo = map.MemoryBytes;
            return bytes;
        });
        Assert.True(grownTo > 4L << 20);
        Assert.Equal(0, allocated);
    }
}
