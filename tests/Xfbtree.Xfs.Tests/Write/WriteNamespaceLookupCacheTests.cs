using System.Diagnostics;
using System.Globalization;
using Xfbtree.Xfs.Tests.Repair;
using Xfbtree.Xfs.Tests.Trees;
using Xfbtree.Xfs.Write;
using Xfbtree.Xfs.Write.Engine;
using Xfbtree.Xfs.Write.Namespace;
using Xunit.Abstractions;

namespace Xfbtree.Xfs.Tests.Write;

/// <summary>
/// The directory lookup cache answers repeated path walks without reading directory blocks, and never answers
/// with what a directory held before a change: add, remove, rename (both directories and the moved one's '..'),
/// a directory removed and its inode reused. Also measures what the walk costs with and without it.
/// </summary>
public sealed class WriteNamespaceLookupCacheTests(ITestOutputHelper output)
{
    [Fact]
    public void CachedLookupsFollowEveryChangeOfTheirDirectory()
    {
        using var scratch = new RepairScratch();
        string image = scratch.Copy(TreeFixtures.Image("fresh-4ag"), "lookups.img");
        using var fs = XfsFileSystem.Open(image, WriteEngineTestSupport.Fast);
        var cache = fs.Namespace.LookupCache!;
        fs.Mkdir("/a");
        fs.Mkdir("/a/b");
        fs.Mkdir("/a/b/c");
        ulong f = fs.Create("/a/b/c/f");
        Assert.Equal(f, fs.Namespace.Lookup("/a/b/c/f"));
        long hits = cache.Hits;
        Assert.Equal(f, fs.Namespace.Lookup("/a/b/c/f"));
        Assert.Equal(hits + 4, cache.Hits);

        // Rename of a directory: the old path is gone, the new one found, '..' of the moved directory follows.
        fs.Namespace.Rename("/a/b", "/x");
        Assert.Equal(WriteErrorKind.NotFound, Assert.Throws<XfsWriteException>(() => fs.Namespace.Lookup("/a/b/c/f")).Kind);
        Assert.Equal(f, fs.Namespace.Lookup("/x/c/f"));
        Assert.Equal(fs.Namespace.Lookup("/x"), fs.Namespace.Lookup("/x/c/.."));
        Assert.Equal(fs.Namespace.Lookup("/"), fs.Namespace.Lookup("/x/.."));

        // Remove and add again: the new inode, never the cached old one.
        fs.Unlink("/x/c/f");
        Assert.Equal(WriteErrorKind.NotFound, Assert.Throws<XfsWriteException>(() => fs.Namespace.Lookup("/x/c/f")).Kind);
        fs.Mkdir("/x/c/f");
        ulong again = fs.Namespace.Lookup("/x/c/f");
        Assert.Equal(InodeType.Directory, fs.Stat("/x/c/f").Type);

        // A directory removed: lookups in it by inode find nothing cached, and its inode reused as a file is not a directory.
        ulong c = fs.Namespace.Lookup("/x/c");
        Assert.Equal(again, fs.Namespace.Lookup(c, "f"u8).Ino);
        fs.Namespace.Rmdir("/x/c/f");
        fs.Namespace.Rmdir("/x/c");
        var gone = Assert.Throws<XfsWriteException>(() => fs.Namespace.Lookup(c, "f"u8));
        output.WriteLine($"lookup in a removed directory: {gone.ErrnoName}: {gone.Message}");
        fs.Close();
        WriteEngineTestSupport.AssertOraclesClean(image, "after cached lookups");
    }

    /// <summary>What a path walk costs: stats and 4 KiB writes of a file six directories deep, with the cache and
    /// without it (printed; timings on a shared machine are not asserted).</summary>
    [Fact]
    public void MeasureTheWalkWithAndWithoutTheCache()
    {
        using var scratch = new RepairScratch();
        string image = scratch.Copy(TreeFixtures.Image("fresh-4ag"), "walk.img");
        const string deep = "/d1/d2/d3/d4/d5/d6";
        const int stats = 5_000;
        var results = new List<string>();
        foreach (bool cached in new[] { false, true })
        {
            using var fs = XfsFileSystem.Open(image, WriteEngineTestSupport.Fast with { LookupCacheSlots = cached ? 16384 : 0 });
            string path = "";
            foreach (string part in deep.Split('/', StringSplitOptions.RemoveEmptyEntries))
            {
                path += "/" + part;
                if (!Exists(fs, path)) fs.Mkdir(path);
                for (int i = 0; i < 40; i++)
                {
                    if (!Exists(fs, $"{path}/n{i}")) fs.Create($"{path}/n{i}");
                }
            }
            for (int i = 0; i < 500; i++) fs.GetAttr(deep + "/n7");
            var watch = Stopwatch.StartNew();
            for (int i = 0; i < stats; i++) fs.GetAttr(deep + "/n7");
            watch.Stop();
            var block = new byte[4096];
            const int writes = 500;
            var writeWatch = Stopwatch.StartNew();
            for (int i = 0; i < writes; i++) fs.Write(deep + "/n7", (i % 16) * 4096L, block);
            writeWatch.Stop();
            results.Add(string.Create(CultureInfo.InvariantCulture,
                $"{(cached ? "cached" : "uncached")}: {watch.Elapsed.TotalMicroseconds / stats:F1} us per stat, {writeWatch.Elapsed.TotalMicroseconds / writes:F1} us per 4 KiB write (no fsync), of a 7-component path"));
            if (cached) Assert.True(fs.Namespace.LookupCache!.Hits >= (long)stats * 7, "the walk did not use the cache");
            fs.Close();
        }
        foreach (string line in results) output.WriteLine(line);
    }

    static bool Exists(XfsFileSystem fs, string path)
    {
        try
        {
            fs.Namespace.Lookup(path);
            return true;
        }
        catch (XfsWriteException e) when (e.Kind == WriteErrorKind.NotFound)
        {
            return false;
        }
    }
}
