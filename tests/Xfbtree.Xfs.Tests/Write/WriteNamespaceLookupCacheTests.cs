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

    /// <summary>
    /// A name a directory does not hold is cached too (FUSE asks for every name before creating it; builds probe
    /// paths): the second miss reads no directory block, and the miss never outlives a change of the directory: a
    /// create, link, rename into it, and, after the name's removal, the miss is back. Through the path walk and
    /// through <see cref="NamespaceOperations.TryLookup"/> (no exception for a miss).
    /// </summary>
    [Fact]
    public void CachedMissesFollowEveryChangeOfTheirDirectory()
    {
        using var scratch = new RepairScratch();
        string image = scratch.Copy(TreeFixtures.Image("fresh-4ag"), "misses.img");
        using var fs = XfsFileSystem.Open(image, WriteEngineTestSupport.Fast);
        var names = fs.Namespace;
        var cache = names.LookupCache!;
        fs.Mkdir("/d");
        ulong d = names.Lookup("/d");
        Assert.False(names.TryLookup(d, "n"u8, out _));
        long hits = cache.Hits, misses = cache.Misses;
        Assert.False(names.TryLookup(d, "n"u8, out _));
        Assert.Equal(WriteErrorKind.NotFound, Assert.Throws<XfsWriteException>(() => names.Lookup("/d/n")).Kind);
        Assert.Equal(hits + 1 + 2, cache.Hits); // TryLookup: one; the path walk: "d" and the miss of "n"
        Assert.Equal(misses, cache.Misses);

        ulong n = fs.Create("/d/n");
        Assert.True(names.TryLookup(d, "n"u8, out var found));
        Assert.Equal(n, found.Ino);
        Assert.Equal(n, names.Lookup("/d/n"));

        fs.Unlink("/d/n");
        Assert.False(names.TryLookup(d, "n"u8, out _));
        Assert.False(names.TryLookup(d, "n"u8, out _));
        ulong other = fs.Create("/other");
        names.Link("/other", "/d/n");
        Assert.True(names.TryLookup(d, "n"u8, out found));
        Assert.Equal(other, found.Ino);

        Assert.False(names.TryLookup(d, "m"u8, out _));
        Assert.False(names.TryLookup(d, "m"u8, out _));
        names.Rename("/other", "/d/m");
        Assert.True(names.TryLookup(d, "m"u8, out found));
        Assert.Equal(other, found.Ino);
        Assert.Equal(WriteErrorKind.NotFound, Assert.Throws<XfsWriteException>(() => names.Lookup("/other")).Kind);

        // A bad name is still the error it always was, not a miss.
        Assert.Equal(WriteErrorKind.InvalidArgument, Assert.Throws<XfsWriteException>(() => names.TryLookup(d, "a/b"u8, out _)).Kind);
        fs.Close();
        WriteEngineTestSupport.AssertOraclesClean(image, "after cached misses");
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
