using System.Buffers.Binary;
using Xfbtree.Xfs.Tests.Trees;
using Xunit.Abstractions;

namespace Xfbtree.Xfs.Tests.Repair;

/// <summary>Repair of undamaged images, refusals, and crash safety (a hard stop after the k-th metadata write).</summary>
public sealed class RepairSafetyTests(ITestOutputHelper output)
{
    public static TheoryData<string> Fixtures() => new(TreeFixtures.All.Where(f => f != "aged-medium"));

    [Theory]
    [MemberData(nameof(Fixtures))]
    public void RepairOfAnUndamagedImageChangesNothing(string fixture)
    {
        using var scratch = new RepairScratch();
        string image = scratch.CopyFixture(fixture);
        ToolResult repair = RepairTools.Xfbtree("rmap", "repair", image);
        Assert.True(repair.ExitCode == 0, repair.ToString());
        Assert.Empty(RepairTools.DifferingRanges(TreeFixtures.Image(fixture), image, 4096));
        Assert.Equal(0, RepairTools.XfsRepairCheck(image).ExitCode);
    }

    [Fact]
    public void RepairDryRunReportsAndWritesNothing()
    {
        using var scratch = new RepairScratch();
        string image = scratch.CopyFixture("aged-small");
        Assert.Equal(0, RepairTools.Corrupt(image, "leaf-zero").ExitCode);
        string before = scratch.Copy(image, "before.img");
        ToolResult dry = RepairTools.Xfbtree("rmap", "repair", image, "-n");
        output.WriteLine(dry.ToString());
        Assert.Equal(1, dry.ExitCode);
        Assert.Contains("AG 0", dry.Stdout, StringComparison.Ordinal);
        Assert.Empty(RepairTools.DifferingRanges(before, image, 4096));
    }

    [Fact]
    [System.Runtime.Versioning.UnsupportedOSPlatform("windows")]
    public void RepairRefusesReadOnlyFile()
    {
        using var scratch = new RepairScratch();
        string image = scratch.CopyFixture("fresh-4ag");
        Assert.Equal(0, RepairTools.Corrupt(image, "rec-owner").ExitCode);
        File.SetUnixFileMode(image, UnixFileMode.UserRead | UnixFileMode.GroupRead | UnixFileMode.OtherRead);
        AssertRefused(scratch, image, "read-only");
    }

    [Fact]
    public void RepairRefusesV4AndNoRmapbtFilesystems()
    {
        using var scratch = new RepairScratch();
        foreach (var (name, options, cause) in new[] { ("v4.img", "crc=0", "v4"), ("normap.img", "crc=1,rmapbt=0", "rmap") })
        {
            string image = Path.Combine(scratch.Directory, name);
            TreeFixtures.Run("/usr/bin/truncate", ["-s", "300M", image]);
            TreeFixtures.Run(TreeFixtures.Tool("mkfs.xfs"), ["-q", "-f", "-m", options, image]);
            AssertRefused(scratch, image, cause);
        }
    }

    [Fact]
    public void RepairRefusesAMountedImageAndADirtyLog()
    {
        RequireRoot();
        using var scratch = new RepairScratch();
        string image = scratch.CopyFixture("fresh-4ag");
        string mnt = Directory.CreateDirectory(Path.Combine(scratch.Directory, "mnt")).FullName;
        string dirty;
        TreeFixtures.Run("/bin/mount", ["-o", "loop", image, mnt]);
        try
        {
            File.WriteAllText(Path.Combine(mnt, "file"), "data");
            AssertRefused(scratch, image, "in use", compareWithCopy: false);
            // Force the new transactions into the on-disk log and copy the image while it is still mounted: the
            // copy's log ends with them, not with an unmount record. (No forced shutdown: its kernel message
            // would confuse other tests watching the kernel log.)
            TreeFixtures.Run("/bin/sync", ["-f", mnt]);
            dirty = scratch.Copy(image, "dirty.img");
        }
        finally
        {
            TreeFixtures.Run("/bin/umount", [mnt]);
        }
        AssertRefused(scratch, dirty, "log");
    }

    [Fact]
    [System.Runtime.Versioning.SupportedOSPlatform("linux")]
    public void RepairRefusesWhileAnotherWriterHoldsTheImage()
    {
        using var scratch = new RepairScratch();
        string image = scratch.CopyFixture("fresh-4ag");
        Assert.Equal(0, RepairTools.Corrupt(image, "rec-owner").ExitCode);
        using (Xfbtree.Native.ImageFileLock? held = Xfbtree.Native.ImageFileLock.TryAcquireExclusive(image))
        {
            Assert.NotNull(held);
            AssertRefused(scratch, image, "another xfbtree process is writing this image");
        }
        // The lock is the only thing that stopped it: released, the same repair runs and fixes the image.
        ToolResult r = RepairTools.Xfbtree("rmap", "repair", image);
        Assert.True(r.ExitCode == 0, r.ToString());
        Assert.Equal(0, RepairTools.XfsRepairCheck(image).ExitCode);
    }

    static void AssertRefused(RepairScratch scratch, string image, string cause, bool compareWithCopy = true)
    {
        string? before = compareWithCopy ? scratch.Copy(image, Path.GetFileName(image) + ".before") : null;
        ToolResult r = RepairTools.Xfbtree("rmap", "repair", image);
        Assert.True(r.ExitCode == 2, $"expected exit 2 ({cause}): {r}");
        string message = r.Stderr.Trim();
        Assert.DoesNotContain("\n", message, StringComparison.Ordinal);
        Assert.DoesNotContain("   at ", message, StringComparison.Ordinal);
        Assert.Contains(cause, message, StringComparison.OrdinalIgnoreCase);
        if (before is not null)
        {
            Assert.Empty(RepairTools.DifferingRanges(before, image, 4096));
        }
    }

    internal static void RequireRoot()
    {
        if (Environment.UserName != "root")
        {
            throw new InvalidOperationException("this test needs root (loop mounts); run the suite as root");
        }
    }

    /// <summary>
    /// Stops the repair process hard (SIGKILL, no flush) right after its k-th write, for many k. Each result must be
    /// the untouched image, or carry NEEDSREPAIR (the kernel refuses it) and become clean with xfs_repair, or be the
    /// finished repair. Never a mountable, inconsistent image.
    /// </summary>
    [Fact]
    public void RepairCrashAtAnyWriteLeavesAnUntouchedOrUnmountableImage()
    {
        using var scratch = new RepairScratch();
        string damaged = scratch.CopyFixture("aged-small");
        Assert.Equal(0, RepairTools.Corrupt(damaged, "rec-owner").ExitCode);
        int[] ks = [1, 2, 3, 5, 9, 17, 33, 49, 53, 55, 56, 57, 58, 59, 60, 61, 62, 64, 70, 100, 1000];
        int finished = 0, needsRepair = 0, untouched = 0;
        foreach (int k in ks)
        {
            string image = scratch.Copy(damaged, $"crash-{k}.img");
            var env = new Dictionary<string, string> { ["XFBTREE_FAULT_CRASH_AFTER_WRITES"] = k.ToString(System.Globalization.CultureInfo.InvariantCulture) };
            ToolResult r = RepairTools.Xfbtree(env, "rmap", "repair", image);
            if (RepairTools.DifferingRanges(damaged, image, 4096).Count == 0)
            {
                untouched++;
            }
            else if (NeedsRepairSet(image))
            {
                needsRepair++;
                Assert.True(r.ExitCode != 0, $"k={k}: the process reported success but left NEEDSREPAIR set");
                ToolResult fix = RepairTools.XfsRepair(image);
                Assert.True(fix.ExitCode == 0, $"k={k}: xfs_repair: {fix}");
                Assert.True(RepairTools.XfsRepairCheck(image).ExitCode == 0, $"k={k}: not clean after xfs_repair");
            }
            else
            {
                finished++;
                Assert.True(r.ExitCode == 0, $"k={k}: the image changed without NEEDSREPAIR but the repair did not finish: {r}");
                Assert.True(RepairTools.XfsRepairCheck(image).ExitCode == 0, $"k={k}: finished repair is not clean");
            }
            File.Delete(image);
        }
        output.WriteLine($"k values {ks.Length}: untouched {untouched}, NEEDSREPAIR {needsRepair}, finished {finished}");
        Assert.True(needsRepair >= 5, "too few crash points fell inside the write phase");
        Assert.True(finished >= 1, "the largest k must let the repair finish");
    }

    static bool NeedsRepairSet(string image)
    {
        using var f = File.OpenHandle(image);
        var sb = new byte[512];
        RandomAccess.Read(f, sb, 0);
        return (BinaryPrimitives.ReadUInt32BigEndian(sb.AsSpan(216)) & 0x10) != 0;
    }
}
