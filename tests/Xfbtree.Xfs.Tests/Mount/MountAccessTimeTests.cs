using Xfbtree.Xfs.Tests.Repair;
using Xfbtree.Xfs.Tests.Trees;
using Xfbtree.Xfs.Tests.Write;
using Xunit.Abstractions;

namespace Xfbtree.Xfs.Tests.Mount;

/// <summary>
/// A program that checks relatime sees through `xfbtree mount` what it sees on the kernel: the same reads, readdirs
/// and readlinks (<see cref="WriteAccessTimeTests.StepsScript"/>) on a copy mounted by the kernel (relatime, its
/// default) and through the mount change the same atimes; with `--noatime` none changes. One known difference is
/// pinned: a read at end of file the kernel's FUSE client answers itself (it knows the size) and never sends, so
/// the engine cannot set atime for it, where the kernel's XFS does.
/// </summary>
public sealed class MountAccessTimeTests(ITestOutputHelper output)
{
    [FuseFact]
    public void TheMountsRelatimeMatchesTheKernelsAndNoatimeChangesNothing()
    {
        using var scratch = new RepairScratch();
        string image = scratch.CopyFixture("fresh-4ag");
        WriteAccessTimeTests.Prepare(image);
        string noatimeImage = scratch.Copy(image, "noatime.img");
        string kernel = WriteAccessTimeTests.KernelSteps(scratch, scratch.Copy(image, "kernel.img"));
        output.WriteLine("kernel:\n" + kernel);

        string script = Path.Combine(scratch.Directory, "mount-steps.py");
        File.WriteAllText(script, WriteAccessTimeTests.StepsScript);
        string relatime = RunThroughMount(scratch, image, "mnt-relatime", script);
        output.WriteLine("xfbtree mount:\n" + relatime);
        Assert.Contains("read-at-eof changed", kernel, StringComparison.Ordinal);
        Assert.Contains("read-at-eof same", relatime, StringComparison.Ordinal);
        Assert.Equal(kernel.Replace("read-at-eof changed", "read-at-eof same", StringComparison.Ordinal), relatime);
        MountWitnesses.AssertClean(image);

        string noatime = RunThroughMount(scratch, noatimeImage, "mnt-noatime", script, "--noatime");
        output.WriteLine("xfbtree mount --noatime:\n" + noatime);
        foreach (string name in WriteAccessTimeTests.StepNames.Where(n => n is not ("write" or "utime-mtime")))
            Assert.Contains($"{name} same", noatime, StringComparison.Ordinal);
        MountWitnesses.AssertClean(noatimeImage);
    }

    static string RunThroughMount(RepairScratch scratch, string image, string name, string script, params string[] options)
    {
        string mnt = Directory.CreateDirectory(Path.Combine(scratch.Directory, name)).FullName;
        using var mount = MountedImage.Start(image, mnt, options);
        string result;
        try
        {
            result = TreeFixtures.Run("/usr/bin/python3", [script, mnt]);
        }
        finally
        {
            var (code, _, stderr) = mount.Unmount();
            Assert.True(code == 0, $"xfbtree mount exit {code}: {stderr}");
        }
        return result;
    }
}
