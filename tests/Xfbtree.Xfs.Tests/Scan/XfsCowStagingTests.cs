using Xfbtree.Xfs.Tests.Repair;
using Xfbtree.Xfs.Tests.Trees;
using Xunit.Abstractions;

namespace Xfbtree.Xfs.Tests.Scan;

/// <summary>
/// OWN_COW: the fixtures were unmounted cleanly, so they hold no CoW staging extents. This test makes some with the
/// kernel (loop mount as root: a reflinked copy with a 1 MiB CoW extent size hint, small overwrites), copies the
/// image while the filesystem is frozen (the log is then not clean, hence --force), and checks that the computed
/// set, OWN_COW records included, equals the on-disk rmapbt.
/// </summary>
public sealed class XfsCowStagingTests(ITestOutputHelper output)
{
    [Fact]
    public void XfsCowStagingExtentsOfAFrozenCopyAreExpected()
    {
        using var scratch = new RepairScratch();
        string live = scratch.CopyFixture("fresh-4ag");
        string mnt = Directory.CreateDirectory(Path.Combine(scratch.Directory, "mnt")).FullName;
        string frozen = Path.Combine(scratch.Directory, "frozen.img");
        string xfsIo = TreeFixtures.Tool("xfs_io");
        TreeFixtures.Run(TreeFixtures.Tool("mount"), ["-o", "loop,nouuid", live, mnt]);
        try
        {
            TreeFixtures.Run(xfsIo, ["-f", "-c", "pwrite -b 1m 0 8m", Path.Combine(mnt, "a")]);
            TreeFixtures.Run("/bin/cp", ["--reflink=always", Path.Combine(mnt, "a"), Path.Combine(mnt, "b")]);
            TreeFixtures.Run(xfsIo, ["-c", "cowextsize 1m", "-c", "pwrite 4096 4096", "-c", "pwrite 2m 8192", Path.Combine(mnt, "b")]);
            TreeFixtures.Run("/bin/sync", []);
            TreeFixtures.Run(TreeFixtures.Tool("xfs_freeze"), ["-f", mnt]);
            try { TreeFixtures.Run("/bin/cp", ["--sparse=always", live, frozen]); }
            finally { TreeFixtures.Run(TreeFixtures.Tool("xfs_freeze"), ["-u", mnt]); }
        }
        finally { TreeFixtures.Run(TreeFixtures.Tool("umount"), [mnt]); }

        var check = XfsCli.Run("check", frozen, "--force");
        output.WriteLine(check.Stdout);
        Assert.True(check.ExitCode == 0, check.ToString());
        var expected = XfsCli.Run("dump", frozen, "--force");
        var ondisk = XfsCli.Run("dump", frozen, "--source", "ondisk", "--force");
        Assert.Equal(0, expected.ExitCode);
        Assert.True(ondisk.Stdout == expected.Stdout, XfsCli.FirstDifference(ondisk.Stdout, expected.Stdout));
        int cow = expected.Stdout.Split('\n').Count(l => l.Contains("\tXFS_RMAP_OWN_COW\t", StringComparison.Ordinal));
        output.WriteLine($"{cow} OWN_COW records");
        Assert.True(cow > 0, "the frozen copy should hold CoW staging extents");
        int fsmapCow = TreeFixtures.XfsDb(frozen, "fsmap").Split('\n').Count(l => l.Contains("owner -9", StringComparison.Ordinal));
        Assert.Equal(fsmapCow, cow);
    }
}
