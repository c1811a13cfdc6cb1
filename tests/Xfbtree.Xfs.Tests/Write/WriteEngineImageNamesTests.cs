using Xfbtree.Xfs.Tests.Repair;
using Xfbtree.Xfs.Write;
using Xfbtree.Xfs.Write.Engine;
using Xunit.Abstractions;
using static Xfbtree.Xfs.Tests.Write.WriteEngineTestSupport;

namespace Xfbtree.Xfs.Tests.Write;

/// <summary>
/// How an image is named and what its refusals advise: the journal follows the file, not the name it was opened by
/// (a symlink, a symlinked directory); a read-only image is refused with advice the write engine's commands can
/// follow; the small geometries mkfs makes with its test-only override are accepted by our own checks and, with the
/// rule for single-AG filesystems, by xfs_repair -n.
/// </summary>
public sealed class WriteEngineImageNamesTests(ITestOutputHelper output)
{
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void AJournalLeftByACrashThroughASymlinkIsFoundByTheRealName(bool linkTheDirectory)
    {
        using var scratch = new RepairScratch();
        string image = scratch.CopyFixture("fresh-4ag");
        string link;
        if (linkTheDirectory)
        {
            string linkDir = Path.Combine(scratch.Directory, "linked-dir");
            Directory.CreateSymbolicLink(linkDir, scratch.Directory);
            link = Path.Combine(linkDir, Path.GetFileName(image));
        }
        else
        {
            link = Path.Combine(scratch.Directory, "by-link.img");
            File.CreateSymbolicLink(link, Path.GetFileName(image)); // a relative target
        }
        Assert.Equal(WriteEngine.DefaultJournalPath(image), WriteEngine.DefaultJournalPath(link));

        // A crash while opened through the link: Dispose without Close leaves NEEDSREPAIR and the journal.
        var fs = XfsFileSystem.Open(link, Fast);
        fs.Create("/made-through-the-link");
        fs.Dispose();
        Assert.True(NeedsRepair(image));
        Assert.True(File.Exists(image + ".xfbtree-journal"), "the journal is not beside the real file");

        using (var real = XfsFileSystem.Open(image, Fast))
        {
            Assert.Contains(real.List("/"), e => e.Name == "made-through-the-link");
            real.Close();
        }
        Assert.False(File.Exists(image + ".xfbtree-journal"));
        AssertOraclesClean(image, "after the replay by the real name");
    }

    [Fact]
    [System.Runtime.Versioning.UnsupportedOSPlatform("windows")]
    public void AReadOnlyImageIsRefusedWithAdviceTheCommandCanFollow()
    {
        using var scratch = new RepairScratch();
        string image = scratch.CopyFixture("fresh-4ag");
        File.SetUnixFileMode(image, UnixFileMode.UserRead | UnixFileMode.GroupRead | UnixFileMode.OtherRead);
        foreach (string[] args in new[] { new[] { "io", image, "-c", "ls /" }, new[] { "stress", image, "--ops", "1" } })
        {
            var run = RepairTools.Xfbtree(args);
            output.WriteLine(run.ToString());
            Assert.True(run.ExitCode == 2, run.ToString());
            Assert.Contains("read-only", run.Stderr, StringComparison.Ordinal);
            // Neither io nor stress has -n. As a word: the scratch path may hold "-n" ("xfbtree-repair-neORpE").
            Assert.DoesNotMatch(@"(^|\s)-n\b", run.Stderr);
            Assert.Contains("chmod u+w", run.Stderr, StringComparison.Ordinal);
        }
        var repair = RepairTools.Xfbtree("rmap", "repair", image);
        Assert.True(repair.ExitCode == 2, repair.ToString());
        Assert.Contains("use -n", repair.Stderr, StringComparison.Ordinal); // rmap repair does have a dry run
    }

    /// <summary>Geometries only mkfs's test-only override makes (below 300 MB, one AG): rmap check, a write and a
    /// read through the engine, then xfs_repair -n (with force_geometry for one AG) and rmap check again.</summary>
    [Theory]
    [InlineData("16m", "-d agcount=1")]
    [InlineData("17m", "-d agcount=1 -b size=1024")]
    [InlineData("32m", "-d agcount=2")]
    [InlineData("160m", "-d agcount=1 -b size=65536")]
    public void SmallGeometriesMkfsAcceptsAreAccepted(string size, string options)
    {
        using var scratch = new RepairScratch();
        string image = Path.Combine(scratch.Directory, "small.img");
        long bytes = long.Parse(size[..^1], System.Globalization.CultureInfo.InvariantCulture) << 20;
        RepairTools.MkfsSmall(image, bytes, ["-m", "rmapbt=1,reflink=1", .. options.Split(' ')]);
        var check = RepairTools.Xfbtree("rmap", "check", image);
        Assert.True(check.ExitCode == 0, check.ToString());
        var io = RepairTools.Xfbtree("io", image, "-c", "create /x", "-c", "pwrite /x 0 64k", "-c", "pread /x 0 64k");
        output.WriteLine(io.ToString());
        Assert.True(io.ExitCode == 0, io.ToString());
        Assert.Contains("read 65536/65536 bytes", io.Stdout, StringComparison.Ordinal);
        AssertOraclesClean(image, $"mkfs {options} on {size}");
    }
}
