using System.Buffers.Binary;
using Xfbtree.TestSupport;
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
        TreeFixtures.Run("/bin/mount", ["-o", "loop,nouuid", image, mnt]);
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
    /// Crashes the repair right after its k-th write, for k over every write of the repair, under two models: a
    /// process kill (every write made survives in the page cache) and a power loss (only writes covered by a completed
    /// fsync survive; <see cref="CrashAfterWrites"/> holds the others back and drops them at the crash). Each result
    /// must be the untouched image, or carry NEEDSREPAIR (the kernel refuses it) and become clean with xfs_repair, or
    /// be the finished repair. Never a mountable, inconsistent image. A run that reports success must also survive a
    /// power loss right after it: success means durable.
    /// </summary>
    [Theory]
    [InlineData(CrashModel.ProcessKill)]
    [InlineData(CrashModel.PowerLoss)]
    public void RepairCrashAtAnyWriteLeavesAnUntouchedOrUnmountableImage(CrashModel model)
    {
        using var scratch = new RepairScratch();
        string damaged = scratch.CopyFixture("aged-small");
        Assert.Equal(0, RepairTools.Corrupt(damaged, "rec-owner").ExitCode);

        // The whole repair once, with the power cut right after it: how many writes there are, and that success is durable.
        string whole = scratch.Copy(damaged, "whole.img");
        var full = RepairWithCrash(whole, new CrashAfterWrites(0, model), out Scan.CliResult fullRun);
        Assert.True(fullRun.ExitCode == 0, $"uncrashed repair: {fullRun}");
        Assert.Equal(0, full.Lost);
        Assert.Equal(Outcome.Finished, Classify(damaged, whole, fullRun, full, "no crash"));
        int total = full.Writes;
        Assert.True(total >= 8, $"the repair made only {total} writes");

        // The first and last writes, three inside the long tree-writing phase, and the writes on either side of
        // every barrier (sync) of the run: where a wrong write order would show. (Every k costs a repair and an xfs_repair; the suite must stay fast.)
        var ks = new SortedSet<int> { 1, 2, total / 4, total / 2, 3 * total / 4, total - 1, total };
        foreach (int w in full.SyncPoints) { ks.Add(w); ks.Add(w + 1); }
        ks.RemoveWhere(k => k < 1 || k > total);
        var counts = new Dictionary<Outcome, int>();
        foreach (int k in ks)
        {
            string image = scratch.Copy(damaged, $"crash-{k}.img");
            var crash = RepairWithCrash(image, new CrashAfterWrites(k, model), out Scan.CliResult r);
            Assert.True(crash.Crashed, $"k={k}: the crash point was never reached ({crash.Writes} writes)");
            Assert.True(r.ExitCode != 0, $"k={k}: a crashed repair reported success: {r}");
            Outcome o = Classify(damaged, image, r, crash, $"k={k}");
            counts[o] = counts.GetValueOrDefault(o) + 1;
            File.Delete(image);
        }
        output.WriteLine($"{model}: {total} writes, {ks.Count} crash points: " + string.Join(", ", counts.Select(c => $"{c.Key} {c.Value}")));
        Assert.True(full.SyncPoints.Count >= 4, $"the repair synced {full.SyncPoints.Count} times; its protocol has four barriers");
        Assert.True(counts.GetValueOrDefault(Outcome.NeedsRepair) >= 4, "too few crash points fell inside the write phase");
        if (model == CrashModel.PowerLoss)
            Assert.True(counts.GetValueOrDefault(Outcome.Untouched) >= 1, "a power loss before the first sync must leave the image untouched");
    }

    enum Outcome { Untouched, NeedsRepair, Finished }

    static CrashAfterWrites RepairWithCrash(string image, CrashAfterWrites crash, out Scan.CliResult result)
    {
        result = Scan.XfsCli.Run(["repair", image], configureWritableTarget: t => t.WriteInterceptor = crash);
        crash.PowerOff();
        return crash;
    }

    static Outcome Classify(string damaged, string image, Scan.CliResult run, CrashAfterWrites crash, string what)
    {
        if (RepairTools.DifferingRanges(damaged, image, 4096).Count == 0) return Outcome.Untouched;
        if (NeedsRepairSet(image))
        {
            ToolResult fix = RepairTools.XfsRepair(image);
            Assert.True(fix.ExitCode == 0, $"{what}: xfs_repair: {fix}");
            Assert.True(RepairTools.XfsRepairCheck(image).ExitCode == 0, $"{what}: not clean after xfs_repair");
            return Outcome.NeedsRepair;
        }
        // Changed and mountable: only the complete repair may look like this.
        ToolResult witness = RepairTools.XfsRepairCheck(image);
        Assert.True(witness.ExitCode == 0, $"{what}: the image changed without NEEDSREPAIR but is not clean ({crash.Writes} writes, {crash.Syncs} syncs; run: {run}): {witness}");
        var check = Scan.XfsCli.Run("check", image);
        Assert.True(check.ExitCode == 0, $"{what}: the image changed without NEEDSREPAIR but its rmapbt is not clean: {check}");
        return Outcome.Finished;
    }

    static bool NeedsRepairSet(string image)
    {
        using var f = File.OpenHandle(image);
        var sb = new byte[512];
        RandomAccess.Read(f, sb, 0);
        return (BinaryPrimitives.ReadUInt32BigEndian(sb.AsSpan(216)) & 0x10) != 0;
    }
}
