using Xfbtree.Cli;
using Xfbtree.Xfs.Tests.Repair;
using Xunit.Abstractions;

namespace Xfbtree.Xfs.Tests.Write;

/// <summary>xfbtree io's namespace commands (rename, link, symlink, readlink, rmdir, mknod, chmod, chown, utimes):
/// what they print, one errno line and exit 1 for each refusal with nothing changed, usage errors before the image
/// is opened, and a clean image after (xfs_repair -n, rmap check).</summary>
public sealed class WriteCliPosixTests(ITestOutputHelper output)
{
    [Fact]
    public void NamespaceCommandsWorkAndRefusalsNameTheErrno()
    {
        using var scratch = new RepairScratch();
        string image = scratch.CopyFixture("fresh-4ag");
        var run = RepairTools.Xfbtree("io", image,
            "-c", "mkdir /d", "-c", "mkdir /e", "-c", "create /d/f", "-c", "pwrite /d/f 0 100", "-c", "rename /d/f /d/g",
            "-c", "link /d/g /e/h", "-c", "symlink '../e/h' /d/s", "-c", "readlink /d/s", "-c", "mknod /d/c chr 1 3",
            "-c", "mknod /d/b blk 8 1", "-c", "mknod /d/p fifo", "-c", "mknod /d/k sock", "-c", "chmod 4750 /d/g",
            "-c", "chown 12:34 /d/g", "-c", "utimes /d/g 100.5 -20", "-c", "mkdir /d/x", "-c", "rename /d/x /e/x --noreplace",
            "-c", "rename /e/x /d/p --exchange", "-c", "rmdir /d/p", "-c", "stat /d/g", "-c", "stat /d/b", "-c", "ls /d", "-c", "ls /e", "-c", "mkdir /d/inner");
        Assert.True(run.ExitCode == 0, run.ToString());
        output.WriteLine(run.Stdout);
        Assert.Contains("\n../e/h\n", run.Stdout, StringComparison.Ordinal);
        Assert.Contains("mode = 0750", run.Stdout, StringComparison.Ordinal); // chown cleared set-user-ID
        Assert.Contains("uid = 12\ngid = 34", run.Stdout, StringComparison.Ordinal);
        Assert.Contains("atime_ns = 100.500000000\nmtime_ns = -20.000000000", run.Stdout, StringComparison.Ordinal);
        Assert.Contains("links = 2", run.Stdout, StringComparison.Ordinal);
        Assert.Contains("rdev = 8:1", run.Stdout, StringComparison.Ordinal);
        Assert.Matches(@"(?m)\tfifo\tx$", run.Stdout); // exchanged with the directory, which rmdir then removed
        Assert.DoesNotMatch(@"(?m)\tp$", run.Stdout);

        // In process (the command-line host is exercised above): every refusal, then the listing is unchanged.
        string[] listingCommands = ["ls /", "ls /d", "ls /e", "stat /d/g"];
        string listing = Io(image, listingCommands).Stdout;
        foreach (var (command, errno) in new[]
                 {
                     ("rmdir /d", "ENOTEMPTY"), ("rmdir /d/g", "ENOTDIR"), ("unlink /nothing", "ENOENT"), ("rename /d /d/c/x", "ENOTDIR"),
                     ("rename /d /e/p/y", "ENOENT"), ("rename /e /e/p/z", "ENOENT"), ("mkdir /d/inner", "EEXIST"),
                     ("rename /d /d/inner/y", "EINVAL"), ("rename /d/g /e/h --noreplace", "EEXIST"), ("rename /d/g /e", "EISDIR"),
                     ("rename /d/inner /d/g", "ENOTDIR"), ("link /d /dl", "EPERM"), ("readlink /d/g", "EINVAL"),
                     ("create /" + new string('n', 256), "ENAMETOOLONG"), ("symlink " + new string('t', 1025) + " /long", "ENAMETOOLONG"),
                     ("mknod /big chr 512 0", "EINVAL"), ("chmod 644 /missing", "ENOENT"), ("utimes /missing 1 1", "ENOENT"),
                     ("rename /d/. /x", "EBUSY"), ("pwrite /d/s 0 1", "ELOOP"), ("truncate /d/c 0", "EINVAL"),
                 })
        {
            var (rc, stdout, stderr) = Io(image, command);
            Assert.True(rc == 1, $"{command}: exit {rc}\n{stdout}{stderr}");
            Assert.Equal(1, stderr.Count(c => c == '\n'));
            Assert.StartsWith($"xfbtree: io: {command}: ", stderr, StringComparison.Ordinal);
            Assert.EndsWith($"({errno})\n", stderr, StringComparison.Ordinal);
            Assert.Equal(listing, Io(image, listingCommands).Stdout);
        }
        foreach (string bad in new[] { "chmod 8 /d", "chmod 17777 /d", "chown 1 /d", "chown x:1 /d", "utimes /d 1.x 2", "mknod /z chr 1",
                                       "mknod /z dev 1 2", "rename /a /b --exchange --noreplace", "link /a /b --noreplace" })
        {
            var usage = Io(image, bad);
            Assert.True(usage.Rc == 2, $"{bad}: exit {usage.Rc}\n{usage.Stderr}");
        }
        WriteOracles.AssertImageClean(image, output);
    }

    static (int Rc, string Stdout, string Stderr) Io(string image, params string[] commands)
    {
        using var stdout = new StringWriter();
        using var stderr = new StringWriter();
        int rc = IoCommand.Execute(image, commands, new CommandEnvironment(stdout, stderr, Progress: false));
        return (rc, stdout.ToString(), stderr.ToString());
    }
}
