using System.Text.RegularExpressions;
using Xfbtree.Xfs.Tests.Repair;
using Xfbtree.Xfs.Tests.Trees;
using Xfbtree.Xfs.Write;
using Xfbtree.Xfs.Write.Namespace;
using Xunit.Abstractions;

namespace Xfbtree.Xfs.Tests.Write;

/// <summary>
/// Open-but-unlinked inodes: a held inode survives the removal of its last name on the AGI unlinked list (hashed
/// buckets and di_next_unlinked, as XFS keeps them), stays usable through its handle, and is freed at the last
/// release (taken off the middle of a bucket's chain as well as its head); a crash leaves it on the list and the
/// next open frees it, as the kernel's log recovery does. Judged by xfs_db (the AGI buckets), xfs_repair -n and
/// xfbtree rmap check.
/// </summary>
public sealed class WriteNamespaceUnlinkedTests(ITestOutputHelper output)
{
    /// <summary>The non-empty AGI unlinked buckets of every AG, as xfs_db prints them ("bucket:agino").</summary>
    static List<string> UnlinkedBuckets(string image, uint agCount)
    {
        var result = new List<string>();
        for (uint ag = 0; ag < agCount; ag++)
        {
            string text = TreeFixtures.XfsDb(image, $"agi {ag}", "print unlinked");
            foreach (Match m in Regex.Matches(text, @"(\d+):(\d+)")) result.Add($"AG {ag} {m.Value}");
        }
        return result;
    }

    static (List<InodeAttributes> Files, uint AgCount) HoldAndUnlink(XfsFileSystem fs, int count)
    {
        var ns = fs.Namespace;
        ns.Mkdir("/u");
        var files = new List<InodeAttributes>();
        for (int i = 0; i < count; i++)
        {
            ns.Create($"/u/f{i}");
            if (i % 3 == 0) fs.Write($"/u/f{i}", 0, new byte[9000]);
            files.Add(fs.GetAttr($"/u/f{i}"));
        }
        foreach (var f in files) ns.Acquire(f.Handle);
        for (int i = 0; i < count; i++) ns.Unlink($"/u/f{i}");
        return (files, fs.Engine.Geometry.AgCount);
    }

    [Theory]
    [InlineData("fresh-4ag")]
    [InlineData("geom-bs1k")]
    public void AHeldInodeOutlivesItsLastNameUntilTheLastRelease(string fixture)
    {
        using var scratch = new RepairScratch();
        string image = scratch.CopyFixture(fixture);
        using (var fs = XfsFileSystem.Open(image, WriteEngineTestSupport.Fast))
        {
            var ns = fs.Namespace;
            // 130 consecutive inodes: agino and agino + 64 share a bucket, so releases take inodes off the middle too.
            var (files, _) = HoldAndUnlink(fs, 130);
            Assert.Empty(fs.List("/u"));
            foreach (var f in files)
            {
                var a = ns.GetAttr(f.Handle);
                Assert.Equal(0u, a.Links);
                fs.Files.Write(f.Handle, 100, new byte[] { 7, 7 });
                var back = new byte[2];
                Assert.Equal(2, fs.Files.Read(f.Handle, 100, back));
                Assert.Equal(new byte[] { 7, 7 }, back);
            }
            ns.Acquire(files[5].Handle); // a second reference: the first release keeps it
            var order = files.Where((_, i) => i % 2 == 0).Concat(files.Where((_, i) => i % 2 == 1).Reverse()).ToList();
            foreach (var f in order) ns.Release(f.Handle);
            Assert.Equal(0u, ns.GetAttr(files[5].Handle).Links);
            ns.Release(files[5].Handle);
            foreach (var f in files) Assert.Equal(WriteErrorKind.Stale, Assert.Throws<XfsWriteException>(() => ns.GetAttr(f.Handle)).Kind);
            Assert.Equal(WriteErrorKind.Stale, Assert.Throws<XfsWriteException>(() => ns.Release(files[0].Handle)).Kind);
            fs.Close();
        }
        Assert.Empty(UnlinkedBuckets(image, 4));
        WriteEngineTestSupport.AssertOraclesClean(image, fixture);
    }

    [Fact]
    public void ACleanCloseFreesInodesStillHeld()
    {
        using var scratch = new RepairScratch();
        string image = scratch.CopyFixture("fresh-4ag");
        using (var fs = XfsFileSystem.Open(image, WriteEngineTestSupport.Fast))
        {
            HoldAndUnlink(fs, 20);
            fs.Close();
        }
        Assert.Empty(UnlinkedBuckets(image, 4));
        WriteEngineTestSupport.AssertOraclesClean(image, "close with held inodes");
    }

    [Fact]
    public void AfterACrashOpeningTheImageFreesTheUnlinkedInodes()
    {
        using var scratch = new RepairScratch();
        string image = scratch.CopyFixture("fresh-4ag");
        uint agCount;
        using (var fs = XfsFileSystem.Open(image, WriteEngineTestSupport.Fast))
        {
            (_, agCount) = HoldAndUnlink(fs, 70);
            fs.Engine.Checkpoint();
            // The lists are read from the image file below: a checkpoint puts the committed blocks there (they are
            // pinned in memory until one). Then Dispose without Close: as a crash, the held inodes stay on the
            // unlinked lists (and NEEDSREPAIR on).
        }
        var left = UnlinkedBuckets(image, agCount);
        output.WriteLine($"after the crash: {left.Count} non-empty buckets: {string.Join(", ", left.Take(8))}");
        Assert.Equal(64, left.Count);
        using (var fs = XfsFileSystem.Open(image, WriteEngineTestSupport.Fast))
        {
            Assert.Equal(70, fs.RecoveredUnlinkedInodes);
            fs.Close();
        }
        Assert.Empty(UnlinkedBuckets(image, agCount));
        WriteEngineTestSupport.AssertOraclesClean(image, "recovered unlinked inodes");
        using (var fs = XfsFileSystem.Open(image, WriteEngineTestSupport.Fast))
        {
            Assert.Equal(0, fs.RecoveredUnlinkedInodes);
            Assert.Empty(fs.List("/u"));
            fs.Close();
        }
    }
}
