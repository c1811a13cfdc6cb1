using Xfbtree.Storage;
using Xfbtree.Tests.Support;

namespace Xfbtree.Tests.Storage;

/// <summary>Backend-independent behaviour: defaults, option validation, zero-allocation hot paths.</summary>
public sealed unsafe class XfileBehaviourTests
{
    [Fact]
    public void Default_IsOneTebibyteMemfd_UsableAtBothEnds()
    {
        using Xfile xfile = Xfile.Create();
        Assert.Equal(1L << 40, xfile.MaxSize);
        Assert.Equal(OperatingSystem.IsLinux() ? XfileBackendKind.Memfd : XfileBackendKind.Portable, xfile.Backend);
        xfile.Store(xfile.MaxSize - 1, [0xEE]);
        xfile.Store(0, [0xDD]);
        byte[] one = new byte[1];
        xfile.Load(xfile.MaxSize - 1, one);
        Assert.Equal(0xEE, one[0]);
        Assert.Equal(2L * xfile.PageSize, xfile.BytesUsed);
    }

    [Fact]
    public void Reserve_CommitsTheWholeRangeOnce_ClampedToMaxSize()
    {
        using Xfile xfile = Xfile.Create(new XfileOptions { MaxSize = 64L * 4096, CommitLimit = 64L * 4096 });
        long page = xfile.PageSize;
        xfile.Reserve(2 * page + 1, 3 * page);
        Assert.False(xfile.IsCommitted(page));
        Assert.True(xfile.IsCommitted(2 * page) && xfile.IsCommitted(4 * page) && xfile.IsCommitted(5 * page));
        Assert.False(xfile.IsCommitted(6 * page));
        xfile.Reserve(xfile.MaxSize - page, 100 * page); // clamped, not an error
        Assert.True(xfile.IsCommitted(xfile.MaxSize - page));
        Assert.Throws<ArgumentOutOfRangeException>(() => xfile.Reserve(-1, page));
        Assert.Throws<ArgumentOutOfRangeException>(() => xfile.Reserve(xfile.MaxSize + 1, page));
        Assert.Throws<ArgumentOutOfRangeException>(() => xfile.Reserve(0, -1));
    }

    [Fact]
    public void Options_AreValidated()
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => Xfile.Create(new XfileOptions { MaxSize = 0 }));
        Assert.Throws<ArgumentOutOfRangeException>(() => Xfile.Create(new XfileOptions { MaxSize = -5 }));
        Assert.Throws<ArgumentOutOfRangeException>(() => Xfile.Create(new XfileOptions { MaxSize = long.MaxValue }));
        // A name longer than memfd allows is cut, not refused.
        using (Xfile named = Xfile.Create(new XfileOptions { Backend = XfileBackendKind.Memfd, Name = new string('\u00e9', 300), MaxSize = 4096 }))
        {
            Assert.Equal(XfileBackendKind.Memfd, named.Backend);
        }
        Assert.Throws<ArgumentOutOfRangeException>(() => Xfile.Create(new XfileOptions { CommitLimit = -1 }));
        Assert.Throws<ArgumentOutOfRangeException>(() => Xfile.Create(new XfileOptions { MaxSize = Xfile.MaxSupportedSize + 1 }));
        Assert.Throws<ArgumentOutOfRangeException>(() => Xfile.Create(new XfileOptions
        {
            Backend = XfileBackendKind.Portable,
            MaxSize = 1L << 56,
        }));
        Assert.ThrowsAny<IOException>(() => Xfile.Create(new XfileOptions
        {
            Backend = XfileBackendKind.TmpFile,
            Directory = "/nonexistent-xfbtree-dir",
        }));
    }

    [Fact]
    public void HotPaths_OnCommittedPages_AllocateNothing()
    {
        using Xfile xfile = Xfile.Create(new XfileOptions { MaxSize = 64L << 20 });
        int pageSize = xfile.PageSize;
        byte[] buffer = new byte[pageSize];
        xfile.Store(0, new byte[16 * pageSize]);
        // Warm up (JIT, lazily created pin counters).
        for (int i = 0; i < 16; i++)
        {
            xfile.UnpinPage((long)i * pageSize + 0 * xfile.PinPage((long)i * pageSize)[0]);
        }

        long allocated = AllocationProbe.Measure(() =>
        {
            for (int round = 0; round < 1000; round++)
            {
                long offset = (long)(round % 16) * pageSize;
                byte* frame = xfile.PinPage(offset);
                frame[1] = (byte)round;
                xfile.UnpinPage(offset);
                xfile.Store(offset + 100, buffer.AsSpan(0, 200));
                xfile.Load(offset, buffer);
                xfile.Load((32L << 20) + offset, buffer); // a hole
            }
        });
        Assert.Equal(0, allocated);
    }
}
