using Xfbtree.Xfs.Tests.Repair;
using Xfbtree.Xfs.Write;
using Xfbtree.Xfs.Write.Engine;
using Xfbtree.Xfs.Write.Namespace;
using Xunit.Abstractions;

namespace Xfbtree.Xfs.Tests.Write;

/// <summary>
/// The space of an unlinked inode comes back when its last reference goes (a mount's FORGET), in a transaction of
/// its own. An allocation that meets NoSpace while such a free is in flight waits for it and runs once more, as the
/// kernel flushes its deferred inode inactivation before it answers ENOSPC. The free is held at its start by a test
/// hook until the allocation says it waits (no sleeps): before the engine waited, the write and the create failed.
/// </summary>
public sealed class WriteDeferredFreeSpaceTests(ITestOutputHelper output)
{
    /// <summary>The free of the held inode waits at its start until the engine says an allocation waits for it.</summary>
    sealed class HeldFree : IDisposable
    {
        public ulong Ino;
        public readonly ManualResetEventSlim Started = new();
        public readonly ManualResetEventSlim AllocationWaits = new();
        public int Waits;

        public void OnFreeStarting(ulong ino)
        {
            if (ino != Volatile.Read(ref Ino)) return;
            Started.Set();
            AllocationWaits.Wait();
        }

        public void OnWaiting(string operation)
        {
            Interlocked.Increment(ref Waits);
            AllocationWaits.Set();
        }

        public void Dispose()
        {
            Started.Dispose();
            AllocationWaits.Dispose();
        }
    }

    /// <summary>Fills every block data may still take (unwritten preallocation: 16 MiB, 64 KiB, then one block at a time).</summary>
    static void Fill(XfsFileSystem fs, string path)
    {
        fs.Create(path);
        long at = 0;
        foreach (long piece in new long[] { 16 << 20, 64 << 10, fs.Engine.Geometry.BlockSize })
        {
            while (true)
            {
                try
                {
                    fs.Fallocate(path, at, piece);
                    at += piece;
                }
                catch (XfsWriteException e) when (e.Kind == WriteErrorKind.NoSpace)
                {
                    at = fs.Stat(path).Size;
                    break;
                }
            }
        }
    }

    /// <summary>Runs <paramref name="allocation"/> while the free of <paramref name="victim"/> (held, unlinked,
    /// <paramref name="bytes"/> of data) is in flight; the free is let go when the allocation waits for it, or when
    /// the allocation returned. The allocation's failure, if any.</summary>
    static XfsWriteException? WhileFreeInFlight(XfsFileSystem fs, HeldFree hook, InodeAttributes victim, Action allocation)
    {
        Volatile.Write(ref hook.Ino, victim.Handle.Ino);
        hook.Started.Reset();
        hook.AllocationWaits.Reset();
        var free = new Thread(() => fs.Namespace.Release(victim.Handle)) { IsBackground = true, Name = "deferred free" };
        free.Start();
        XfsWriteException? failure = null;
        try
        {
            hook.Started.Wait();
            try
            {
                allocation();
            }
            catch (XfsWriteException e)
            {
                failure = e;
            }
        }
        finally
        {
            hook.AllocationWaits.Set();
            free.Join();
        }
        Assert.Throws<XfsWriteException>(() => fs.Namespace.GetAttr(victim.Handle)); // freed
        return failure;
    }

    static InodeAttributes HeldAndUnlinked(XfsFileSystem fs, string path, int bytes)
    {
        fs.Create(path);
        if (bytes > 0) fs.Write(path, 0, new byte[bytes]);
        var a = fs.GetAttr(path);
        fs.Namespace.Acquire(a.Handle);
        fs.Unlink(path);
        return a;
    }

    [Fact]
    public void AnAllocationMeetingNoSpaceWaitsForTheFreeInFlight()
    {
        using var scratch = new RepairScratch();
        string image = Path.Combine(scratch.Directory, "full.img");
        RepairTools.MkfsSmall(image, 64L << 20, "-m", "crc=1,rmapbt=1,reflink=1");
        using var hook = new HeldFree();
        var options = WriteEngineTestSupport.Fast with { DeferredFreeStarting = hook.OnFreeStarting, WaitingForDeferredFrees = hook.OnWaiting };
        using (var fs = XfsFileSystem.Open(image, options))
        {
            const int megabyte = 1 << 20;
            fs.Create("/w");
            var big = HeldAndUnlinked(fs, "/big", 4 * megabyte);
            var empty = HeldAndUnlinked(fs, "/empty", 0);
            var second = HeldAndUnlinked(fs, "/second", megabyte);
            Fill(fs, "/filler");

            // Nothing in flight: NoSpace at once, no wait.
            var none = Assert.Throws<XfsWriteException>(() => fs.Write("/w", 0, new byte[megabyte]));
            Assert.Equal(WriteErrorKind.NoSpace, none.Kind);
            Assert.Equal(0, hook.Waits);

            // A free in flight that gives back too little: one wait, one more attempt, then NoSpace.
            var little = WhileFreeInFlight(fs, hook, empty, () => fs.Write("/w", 0, new byte[megabyte]));
            Assert.True(little is { Kind: WriteErrorKind.NoSpace }, $"a write beside the free of an empty file: {little?.Message ?? "succeeded"}");
            Assert.Equal(1, hook.Waits);

            // The free of 4 MiB in flight: the write waits for it and succeeds.
            var write = WhileFreeInFlight(fs, hook, big, () => fs.Write("/w", 0, new byte[megabyte]));
            Assert.True(write is null, $"a write beside the free of 4 MiB: {write?.Message}");
            Assert.Equal(2, hook.Waits);
            Assert.Equal(megabyte, fs.Stat("/w").Size);

            // Take the rest of the space and every free inode, then a create beside the free of 1 MiB succeeds.
            Fill(fs, "/filler2");
            int created = 0;
            while (true)
            {
                try
                {
                    fs.Create($"/n{created}");
                    created++;
                }
                catch (XfsWriteException e) when (e.Kind == WriteErrorKind.NoSpace)
                {
                    break;
                }
            }
            output.WriteLine($"{created} files created before NoSpace");
            var create = WhileFreeInFlight(fs, hook, second, () => fs.Create("/after"));
            Assert.True(create is null, $"a create beside the free of 1 MiB: {create?.Message}");
            Assert.Equal(3, hook.Waits);
            WriteEngineTestSupport.AssertInvariants(fs.Engine, "after the frees");
            fs.Close();
        }
        WriteEngineTestSupport.AssertOraclesClean(image, "after the frees");
    }
}
