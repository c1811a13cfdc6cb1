using System.Text;
using Xfbtree.Xfs.Tests.Repair;
using Xfbtree.Xfs.Tests.Trees;
using Xfbtree.Xfs.Write;
using Xfbtree.Xfs.Write.Engine;
using Xfbtree.Xfs.Write.Namespace;
using Xunit.Abstractions;

namespace Xfbtree.Xfs.Tests.Write;

/// <summary>
/// Access times under the kernel's default `relatime`: files, directories and symlinks are given times around the
/// rule's edges (atime older or newer than mtime, than ctime, more or less than a day old), then the same reads,
/// readdirs and readlinks run on the kernel (a loop mount with its default options, relatime) and on the engine with
/// <see cref="AccessTimeUpdates.Relatime"/>; which of them changed atime must be the same, step by step. With
/// <see cref="AccessTimeUpdates.None"/> nothing changes. Steady state: a read that changes nothing takes no
/// transaction (no journal record).
/// </summary>
public sealed class WriteAccessTimeTests(ITestOutputHelper output)
{
    /// <summary>The steps, each "NAME changed|same": what one read-like call did to the atime of what it read.</summary>
    internal const string StepsScript = """
import os, sys, time
m = sys.argv[1] + '/at'
def at(p): return os.stat(p, follow_symlinks=False).st_atime_ns
def step(name, path, op):
    before = at(path)
    op()
    print('%s %s' % (name, 'changed' if at(path) != before else 'same'), flush=True)
def read(p, n=4096):
    fd = os.open(p, os.O_RDONLY)
    try: os.read(fd, n)
    finally: os.close(fd)
def append(p):
    fd = os.open(p, os.O_WRONLY | os.O_APPEND)
    try: os.write(fd, b'more')
    finally: os.close(fd)
step('read-new', m + '/new', lambda: read(m + '/new'))
step('read-new-again', m + '/new', lambda: read(m + '/new'))
step('read-day-old', m + '/old', lambda: read(m + '/old'))
step('read-recent', m + '/recent', lambda: read(m + '/recent'))
step('read-mtime-newer', m + '/mnewer', lambda: read(m + '/mnewer'))
step('read-ctime-newer', m + '/cnewer', lambda: read(m + '/cnewer'))
step('read-at-eof', m + '/empty', lambda: read(m + '/empty'))
step('read-zero-bytes', m + '/zero', lambda: read(m + '/zero', 0))
step('readdir', m + '/dir', lambda: os.listdir(m + '/dir'))
step('readdir-again', m + '/dir', lambda: os.listdir(m + '/dir'))
step('readdir-recent', m + '/dirold', lambda: os.listdir(m + '/dirold'))
step('readlink', m + '/link', lambda: os.readlink(m + '/link'))
step('readlink-recent', m + '/linkold', lambda: os.readlink(m + '/linkold'))
step('write', m + '/new', lambda: append(m + '/new'))
step('read-after-write', m + '/new', lambda: read(m + '/new'))
step('read-cached', m + '/recent', lambda: read(m + '/recent'))
step('utime-mtime', m + '/recent', lambda: os.utime(m + '/recent', ns=(at(m + '/recent'), time.time_ns())))
step('read-after-utime', m + '/recent', lambda: read(m + '/recent'))
""";

    /// <summary>What the engine is expected to find for each step, in order (the kernel decides: the test compares).</summary>
    internal static readonly string[] StepNames =
    [
        "read-new", "read-new-again", "read-day-old", "read-recent", "read-mtime-newer", "read-ctime-newer", "read-at-eof",
        "read-zero-bytes", "readdir", "readdir-again", "readdir-recent", "readlink", "readlink-recent", "write", "read-after-write", "read-cached", "utime-mtime", "read-after-utime",
    ];

    [Fact]
    public void RelatimeChangesTheAtimesTheKernelChanges()
    {
        KernelOracle.RequireRootAndTools();
        using var scratch = new RepairScratch();
        string image = scratch.CopyFixture("fresh-4ag");
        Prepare(image);
        string kernelImage = scratch.Copy(image, "kernel.img");
        string kernel = KernelSteps(scratch, kernelImage);
        output.WriteLine("kernel (relatime):\n" + kernel);
        Assert.Contains("read-new changed", kernel, StringComparison.Ordinal);
        Assert.Contains("read-recent same", kernel, StringComparison.Ordinal);

        string engine;
        long recordsDuringRepeats;
        using (var fs = XfsFileSystem.Open(image, WriteEngineTestSupport.Fast with { AccessTimes = AccessTimeUpdates.Relatime }))
        {
            engine = EngineSteps(fs);
            // Steady state: read what was just read, a thousand times: no transaction, no journal record.
            long before = fs.Engine.CommittedRecords;
            var buffer = new byte[4096];
            for (int i = 0; i < 1000; i++)
            {
                fs.Read("/at/new", 0, buffer);
                fs.List("/at/dir");
                fs.ReadLink("/at/link");
            }
            recordsDuringRepeats = fs.Engine.CommittedRecords - before;
            fs.Close();
        }
        output.WriteLine("engine (relatime):\n" + engine);
        Assert.Equal(kernel, engine);
        Assert.Equal(0, recordsDuringRepeats);
        WriteEngineTestSupport.AssertOraclesClean(image, "after the relatime reads");
    }

    [Fact]
    public void NoatimeChangesNoAtime()
    {
        using var scratch = new RepairScratch();
        string image = scratch.CopyFixture("fresh-4ag");
        Prepare(image);
        using var fs = XfsFileSystem.Open(image, WriteEngineTestSupport.Fast);
        string engine = EngineSteps(fs);
        output.WriteLine(engine);
        foreach (string name in StepNames) Assert.Contains($"{name} same", engine, StringComparison.Ordinal);
        fs.Close();
    }

    /// <summary>Makes /at with its files, directories and symlinks, and their times, through the engine.</summary>
    internal static void Prepare(string image)
    {
        using var fs = XfsFileSystem.Open(image, WriteEngineTestSupport.Fast);
        var ops = fs.Namespace;
        var now = DateTimeOffset.UtcNow;
        InodeTime Ago(TimeSpan t) => InodeTime.FromDateTimeOffset(now - t);
        var hour = TimeSpan.FromHours(1);
        void Times(string path, TimeSpan atime, TimeSpan mtime, TimeSpan ctime)
            => ops.SetAttr(fs.GetAttr(path).Handle, new SetAttrRequest(SetAttrMask.Atime | SetAttrMask.Mtime | SetAttrMask.Ctime,
                Atime: Ago(atime), Mtime: Ago(mtime), Ctime: Ago(ctime)));
        fs.Mkdir("/at");
        foreach (string f in new[] { "new", "old", "recent", "mnewer", "cnewer" })
        {
            fs.Create($"/at/{f}");
            fs.Write($"/at/{f}", 0, Encoding.ASCII.GetBytes($"contents of {f}\n"));
        }
        fs.Create("/at/empty");
        fs.Create("/at/zero");
        fs.Write("/at/zero", 0, "z"u8);
        fs.Mkdir("/at/dir");
        fs.Create("/at/dir/a");
        fs.Mkdir("/at/dirold");
        fs.Create("/at/dirold/a");
        fs.Symlink("new", "/at/link");
        fs.Symlink("old", "/at/linkold");
        Times("/at/new", TimeSpan.Zero, TimeSpan.Zero, TimeSpan.Zero);
        Times("/at/old", TimeSpan.FromDays(2), TimeSpan.FromDays(3), TimeSpan.FromDays(3));
        Times("/at/recent", hour, 2 * hour, 2 * hour);
        Times("/at/mnewer", 2 * hour, hour, 3 * hour);
        Times("/at/cnewer", 2 * hour, 3 * hour, hour);
        Times("/at/empty", hour, hour, hour);
        Times("/at/zero", 2 * hour, hour, hour);
        Times("/at/dir", 2 * hour, hour, hour);
        Times("/at/dirold", hour, 2 * hour, 2 * hour);
        Times("/at/link", 2 * hour, 2 * hour, 2 * hour);
        Times("/at/linkold", hour, 2 * hour, 2 * hour);
        fs.Close();
    }

    /// <summary>The steps of <see cref="StepsScript"/> through the engine's API.</summary>
    static string EngineSteps(XfsFileSystem fs)
    {
        var text = new StringBuilder();
        long At(string p) { var t = fs.GetAttr(p).Atime; return t.Seconds * 1_000_000_000L + t.Nanoseconds; }
        void Step(string name, string path, Action op)
        {
            long before = At(path);
            op();
            text.Append(name).Append(At(path) != before ? " changed" : " same").Append('\n');
        }
        var buffer = new byte[4096];
        Step("read-new", "/at/new", () => fs.Read("/at/new", 0, buffer));
        Step("read-new-again", "/at/new", () => fs.Read("/at/new", 0, buffer));
        Step("read-day-old", "/at/old", () => fs.Read("/at/old", 0, buffer));
        Step("read-recent", "/at/recent", () => fs.Read("/at/recent", 0, buffer));
        Step("read-mtime-newer", "/at/mnewer", () => fs.Read("/at/mnewer", 0, buffer));
        Step("read-ctime-newer", "/at/cnewer", () => fs.Read("/at/cnewer", 0, buffer));
        Step("read-at-eof", "/at/empty", () => fs.Read("/at/empty", 0, buffer));
        Step("read-zero-bytes", "/at/zero", () => fs.Read("/at/zero", 0, Span<byte>.Empty));
        Step("readdir", "/at/dir", () => fs.List("/at/dir"));
        Step("readdir-again", "/at/dir", () => fs.List("/at/dir"));
        Step("readdir-recent", "/at/dirold", () => fs.List("/at/dirold"));
        Step("readlink", "/at/link", () => fs.ReadLink("/at/link"));
        Step("readlink-recent", "/at/linkold", () => fs.ReadLink("/at/linkold"));
        Step("write", "/at/new", () => fs.Write("/at/new", fs.GetAttr("/at/new").Size, "more"u8));
        Step("read-after-write", "/at/new", () => fs.Read("/at/new", 0, buffer));
        Step("read-cached", "/at/recent", () => fs.Read("/at/recent", 0, buffer));
        Step("utime-mtime", "/at/recent", () => fs.SetTimes("/at/recent", fs.GetAttr("/at/recent").Atime, InodeTime.Now));
        Step("read-after-utime", "/at/recent", () => fs.Read("/at/recent", 0, buffer));
        return text.ToString();
    }

    /// <summary>The steps run by the kernel on a loop mount with its default options (relatime).</summary>
    internal static string KernelSteps(RepairScratch scratch, string image)
    {
        string mnt = Directory.CreateDirectory(Path.Combine(scratch.Directory, "mnt")).FullName;
        string script = Path.Combine(scratch.Directory, "steps.py");
        File.WriteAllText(script, StepsScript);
        WriteNamespaceOperationTests.FreshUuid(image);
        TreeFixtures.Run("/bin/mount", ["-o", "loop,nouuid", image, mnt]);
        try
        {
            string options = TreeFixtures.Run("/usr/bin/findmnt", ["-n", "-o", "OPTIONS", mnt]);
            Assert.Contains("relatime", options, StringComparison.Ordinal);
            return TreeFixtures.Run("/usr/bin/python3", [script, mnt]);
        }
        finally
        {
            TreeFixtures.Run("/bin/umount", [mnt]);
        }
    }
}
