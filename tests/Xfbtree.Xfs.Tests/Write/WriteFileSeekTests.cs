using Xfbtree.Xfs.Tests.Repair;
using Xfbtree.Xfs.Write;

namespace Xfbtree.Xfs.Tests.Write;

/// <summary>SEEK_DATA / SEEK_HOLE from the extent map (what lseek through `xfbtree mount` answers), and the journal's
/// group sync callable from many threads at once.</summary>
public sealed class WriteFileSeekTests
{
    [Fact]
    public void Seek_FindsWrittenExtentsAndHoles_UnwrittenCountsAsHole()
    {
        using var scratch = new RepairScratch();
        string image = scratch.CopyFixture("fresh-4ag");
        using var fs = XfsFileSystem.Open(image, WriteFileHarness.Options);
        ulong ino = fs.Create("/sparse");
        const int Bs = 4096;
        // [0, 2 blocks) written, [2, 5) hole, [5, 6) written, [6, 8) unwritten (fallocate), EOF at 8 blocks + 100.
        fs.Write("/sparse", 0, new byte[2 * Bs].AsSpan());
        fs.Write("/sparse", 5 * Bs, new byte[Bs].AsSpan());
        fs.Fallocate("/sparse", 6 * Bs, 2 * Bs + 100);
        long size = 8 * Bs + 100;
        Assert.Equal(size, fs.Stat("/sparse").Size);

        Assert.Equal(0, fs.Files.Seek(ino, 0, data: true));
        Assert.Equal(100, fs.Files.Seek(ino, 100, data: true));
        Assert.Equal(2 * Bs, fs.Files.Seek(ino, 0, data: false));
        Assert.Equal(5 * Bs, fs.Files.Seek(ino, 2 * Bs, data: true));
        Assert.Equal(3 * Bs, fs.Files.Seek(ino, 3 * Bs, data: false));
        Assert.Equal(6 * Bs, fs.Files.Seek(ino, 5 * Bs, data: false));
        Assert.Equal(-1, fs.Files.Seek(ino, 6 * Bs, data: true)); // only unwritten extents up to EOF
        Assert.Equal(6 * Bs + 7, fs.Files.Seek(ino, 6 * Bs + 7, data: false));
        Assert.Equal(-1, fs.Files.Seek(ino, size, data: false)); // at EOF: ENXIO
        Assert.Equal(-1, fs.Files.Seek(ino, size + 5, data: true));

        // A file written to its end: the only hole is EOF.
        ulong full = fs.Create("/full");
        fs.Write("/full", 0, new byte[3 * Bs + 10].AsSpan());
        Assert.Equal(3 * Bs + 10, fs.Files.Seek(full, 0, data: false));
        Assert.Equal(Bs, fs.Files.Seek(full, Bs, data: true));

        // Group sync from several threads while commits go on: every call returns, nothing breaks.
        var threads = Enumerable.Range(0, 4).Select(t => new Thread(() =>
        {
            for (int i = 0; i < 20; i++)
            {
                fs.Write("/full", (long)(t * 20 + i) * 512, new byte[512].AsSpan());
                fs.Engine.SyncJournal();
            }
        })).ToArray();
        foreach (var t in threads) t.Start();
        foreach (var t in threads) t.Join();
        fs.Close();
        var check = RepairTools.XfsRepairCheck(image);
        Assert.True(check.ExitCode == 0, check.ToString());
    }
}
