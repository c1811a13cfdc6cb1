using Xfbtree.Xfs.Tests.Repair;
using Xunit.Abstractions;

namespace Xfbtree.Xfs.Tests.Mount;

/// <summary>
/// A mount of mkfs.xfs's default image (no rmapbt) with the repair rotation asked for: programs write to it; what
/// needs the rmapbt says so instead of failing per AG (the rotation once in the log, `rmap repair --online` one line
/// and exit 2, `health` no rotation); `scrub DIR` checks every structure's own rules and the link counts, has no
/// rmapbt line and says why the comparisons with the rmap are not made; the image unmounts clean for every witness.
/// Before, the mount refused such an image; then, until the rotation learnt it, it logged a failed repair per AG and
/// turn and the scrub blamed "the inode scan with live hooks".
/// </summary>
public sealed class MountWithoutRmapbtTests(ITestOutputHelper output)
{
    [FuseFact]
    public void ServesTheImageAndSaysWhatItCannotRepairOnline()
    {
        using var scratch = new RepairScratch();
        string image = Path.Combine(scratch.Directory, "default.img");
        RepairTools.MkfsSmall(image, 512L << 20);
        Assert.False(Write.WriteEngineTestSupport.HasRmapbt(image));
        string mnt = Directory.CreateDirectory(Path.Combine(scratch.Directory, "mnt")).FullName;
        var files = new Dictionary<string, byte[]>();
        using (var mount = MountedImage.Start(image, mnt, "--online-repair-every", "0.2"))
        {
            for (int i = 0; i < 60; i++)
            {
                string dir = Directory.CreateDirectory(Path.Combine(mnt, $"d{i % 3}")).FullName;
                byte[] bytes = new byte[i * 977];
                new Random(i).NextBytes(bytes);
                File.WriteAllBytes(Path.Combine(dir, $"f{i}"), bytes);
                files[$"d{i % 3}/f{i}"] = bytes;
            }
            var repair = RepairTools.Xfbtree("rmap", "repair", "--online", mnt);
            output.WriteLine(repair.ToString());
            Assert.True(repair.ExitCode == 2, repair.ToString());
            Assert.Contains("no reverse-mapping btree", repair.Stderr, StringComparison.Ordinal);
            Assert.Single(repair.Stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries));
            Assert.Equal("", repair.Stdout);

            var health = RepairTools.Xfbtree("health", mnt);
            output.WriteLine(health.Stdout);
            Assert.True(health.ExitCode == 0, health.ToString());
            Assert.Contains("no online repair rotation", health.Stdout, StringComparison.Ordinal);
            Assert.DoesNotContain("failed", health.Stdout, StringComparison.Ordinal);

            var scrub = RepairTools.Xfbtree("scrub", mnt);
            output.WriteLine(scrub.Stdout + scrub.Stderr);
            Assert.True(scrub.ExitCode == 2, $"the comparisons with the rmap cannot be made online: {scrub}");
            Assert.DoesNotContain("rmapbt:", scrub.Stdout, StringComparison.Ordinal);
            Assert.DoesNotContain("live hooks", scrub.Stdout, StringComparison.Ordinal);
            Assert.Contains("the filesystem has no rmapbt, and a check online has no other record", scrub.Stdout, StringComparison.Ordinal);
            Assert.DoesNotContain(": damaged", scrub.Stdout, StringComparison.Ordinal);
            Assert.Contains("AG 0 inobt: clean", scrub.Stdout, StringComparison.Ordinal);
            Assert.Contains("nlinks: clean", scrub.Stdout, StringComparison.Ordinal);

            foreach (var (path, bytes) in files) Assert.Equal(bytes, File.ReadAllBytes(Path.Combine(mnt, path)));
            var (code, stdout, stderr) = mount.Unmount();
            output.WriteLine(stdout + stderr);
            Assert.True(code == 0, $"exit {code}\n{stdout}\n{stderr}");
            Assert.Equal(1, MountedImage.Count(stderr, "no rotation runs"));
            Assert.DoesNotContain("online repair of AG", stderr, StringComparison.Ordinal);
        }
        MountWitnesses.AssertClean(image);
        MountWitnesses.WithKernelMount(scratch, image, kernel =>
        {
            foreach (var (path, bytes) in files) Assert.Equal(bytes, File.ReadAllBytes(Path.Combine(kernel, path)));
        });
    }
}
