using Xfbtree.Cli;
using Xfbtree.Xfs.Tests.Repair;
using Xfbtree.Xfs.Tests.Trees;
using Xfbtree.Xfs.Write;
using Xfbtree.Cli.Stress;
using Xunit.Abstractions;

namespace Xfbtree.Xfs.Tests.Write;

/// <summary>
/// The randomized model test on the real engine: <c>xfbtree stress</c> (in process, exactly what the tool runs) over
/// several seeds with two or more threads on fixtures of several geometries (plus two reproducible one-thread runs); each run verifies every model file and
/// directory against a fresh open of the image, then xfs_repair -n and <c>xfbtree rmap check</c> must be clean.
/// Also near ENOSPC (most of the space preallocated first) and with a sick AG.
/// </summary>
public sealed class WriteStressFixtureTests(ITestOutputHelper output)
{
    public static readonly TheoryData<string, int, int> Runs = new()
    {
        { "aged-small", 1, 2 }, { "aged-small", 2, 3 },
        { "geom-bs1k", 3, 2 }, { "geom-bs1k", 4, 2 },
        { "geom-nrext64", 5, 2 }, { "geom-nrext64", 6, 3 },
        { "fresh-4ag", 7, 2 }, { "fresh-4ag", 8, 4 },
        { "aged-small-normap", 11, 2 }, { "geom-bs1k-normap", 12, 3 },
        // One thread replays exactly (same seed, same image, same run): these two must end with btree forks.
        { "aged-small", 9, 1 }, { "geom-nrext64", 10, 1 },
    };

    [Theory]
    [MemberData(nameof(Runs))]
    public void WriteStressKeepsImageEqualToModel(string fixture, int seed, int threads)
    {
        using var scratch = new RepairScratch();
        string image = scratch.CopyFixture(fixture);
        var (rc, stdout, stderr) = StressInProcess(new StressRequest { Image = image, Ops = 600, Threads = threads, Seed = seed });
        output.WriteLine(stdout + stderr);
        Assert.True(rc == 0, $"stress exit {rc}\n{stdout}\n{stderr}");
        Assert.Contains("verify: ", stdout, StringComparison.Ordinal);
        Assert.Contains(": ok", stdout, StringComparison.Ordinal);
        // The run reached shared extents; the reproducible one-thread runs also end with btree data forks (with more
        // threads the end state varies from run to run, and forks may have shrunk back to extent lists).
        Assert.Matches(threads == 1 ? @"data forks: .*\d+ btree.*; [1-9]\d* with the reflink flag" : @"data forks: .*; [1-9]\d* with the reflink flag", stdout);
        WriteOracles.AssertImageClean(image, output);
    }

    [Fact]
    public void WriteStressNearEnospcChangesNothingOnNoSpace()
    {
        using var scratch = new RepairScratch();
        string image = scratch.CopyFixture("fresh-4ag");
        // Preallocate files of 8 MiB, then 1 MiB, then 640 KiB until the engine says NoSpace each time: less than
        // 640 KiB is left outside the per-AG reservations, and the fill files are too big for the model (512 KiB
        // files), so the stress runs into ENOSPC again and again, living on the space its own unlinks, punches and
        // truncates give back.
        foreach (string size in new[] { "8m", "1m", "640k" })
        {
            var args = new List<string> { "io", image };
            for (int i = 0; i < 200; i++) args.AddRange(["-c", $"create /fill{size}{i}", "-c", $"falloc /fill{size}{i} 0 {size}"]);
            var filled = RepairTools.Xfbtree(args.ToArray());
            Assert.True(filled.ExitCode == 1 && filled.Stderr.Contains("(ENOSPC)", StringComparison.Ordinal), filled.ToString());
        }
        WriteOracles.AssertImageClean(image, output);

        var (rc, stdout, stderr) = StressInProcess(new StressRequest { Image = image, Ops = 800, Threads = 2, Seed = 21, MaxFileSize = 512 << 10 });
        output.WriteLine(stdout + stderr);
        Assert.True(rc == 0, $"stress exit {rc}\n{stdout}\n{stderr}");
        var noSpace = System.Text.RegularExpressions.Regex.Matches(stdout, @"NoSpace (\d+)").Sum(m => int.Parse(m.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture));
        Assert.True(noSpace >= 20, $"only {noSpace} operations met ENOSPC");
        WriteOracles.AssertImageClean(image, output);
    }

    [Fact]
    public void WriteStressWithASickAgKeepsTheOtherAgsWorking()
    {
        using var scratch = new RepairScratch();
        string image = scratch.CopyFixture("aged-small");
        string FreeInAg1() => string.Join(' ', TreeFixtures.XfsDb(image, "agf 1", "p freeblks", "p longest", "p flcount").Split('\n', StringSplitOptions.RemoveEmptyEntries));
        string before = FreeInAg1();
        StressModel model;
        StressResult result;
        using (var fs = XfsFileSystem.Open(image))
        {
            var target = new XfsStressTarget(fs);
            model = StressModel.Load(target, 31);
            fs.Engine.Ag(1).MarkSick("test: AG 1 declared sick");
            result = new StressRunner(target, model, new StressOptions { Ops = 600, Threads = 2, Seed = 31 }).Run();
            fs.Close();
        }
        var counts = new StringWriter();
        result.WriteCounts(counts);
        output.WriteLine(counts.ToString());
        Assert.True(result.Problems.Count == 0, string.Join('\n', result.Problems));
        Assert.True(result.Succeeded(StressOpKind.Write) > 0, "no write succeeded outside the sick AG");
        Assert.True(result.FailedTotal(WriteErrorKind.Corrupt) > 0, "no operation met the sick AG");
        // Nothing allocated in or freed into the sick AG: its free space and free list are as they were.
        Assert.Equal(before, FreeInAg1());
        using (var reopened = XfsFileSystem.Open(image))
        {
            Assert.Empty(model.Verify(new XfsStressTarget(reopened)));
            reopened.Close();
        }
        WriteOracles.AssertImageClean(image, output);
    }

    internal static (int ExitCode, string Stdout, string Stderr) StressInProcess(StressRequest request)
    {
        var stdout = new StringWriter { NewLine = "\n" };
        var stderr = new StringWriter { NewLine = "\n" };
        int rc = StressCommand.Execute(request, new CommandEnvironment(stdout, stderr, Progress: false));
        return (rc, stdout.ToString(), stderr.ToString());
    }
}
