using System.Diagnostics;
using Xfbtree.Cli;
using Xfbtree.Xfs.Tests.Repair;
using Xfbtree.Xfs.Tests.Trees;
using Xfbtree.Xfs.Write;
using Xunit.Abstractions;
using static Xfbtree.Xfs.Tests.Write.WriteEngineTestSupport;

namespace Xfbtree.Xfs.Tests.Write;

/// <summary>
/// What the commands say about an image a writer left with a pending journal (a crash, a kill) or one a writer holds
/// right now: the rmap commands refuse with exit 2 and name <c>xfbtree recover IMAGE</c> (they used to report the
/// image DAMAGED, NEEDSREPAIR set, and send the user to xfs_repair, which lost the journal's transactions), io and
/// stress say they replayed it, <c>recover</c> replays and closes cleanly; a check of an image in use says so
/// (exit 2) instead of reporting differences that are not there.
/// </summary>
public sealed class WritePendingJournalCliTests(ITestOutputHelper output) : IDisposable
{
    private readonly RepairScratch scratch = new();

    public void Dispose() => scratch.Dispose();

    /// <summary>Runs the tool's command tree in process: (exit code, stdout, stderr).</summary>
    private (int Rc, string Stdout, string Stderr) Xfbtree(params string[] args)
    {
        var stdout = new StringWriter { NewLine = "\n" };
        var stderr = new StringWriter { NewLine = "\n" };
        var environment = new CommandEnvironment(stdout, stderr, Progress: false);
        var root = CommandLineHost.CreateRoot();
        root.Add(RmapCommand.Create(environment));
        root.Add(IoCommand.Create(environment));
        root.Add(StressCommand.Create(environment));
        root.Add(RecoverCommand.Create(environment));
        root.Add(ScrubCommand.Create(environment));
        int rc = CommandLineHost.Invoke(root, args, environment);
        output.WriteLine($"xfbtree {string.Join(' ', args)}: exit {rc}\n{stdout}{stderr}");
        return (rc, stdout.ToString(), stderr.ToString());
    }

    /// <summary>A fresh-4ag copy left as a crashed writer leaves it: two committed operations in the journal,
    /// NEEDSREPAIR set (the engine disposed without its clean close, which is what a kill leaves on disk).</summary>
    private string ImageWithPendingJournal(string name = "pending.img")
    {
        string image = scratch.Copy(TreeFixtures.Image("fresh-4ag"), name);
        var fs = XfsFileSystem.Open(image, Fast with { CheckpointBytes = long.MaxValue });
        fs.Create("/kept");
        fs.Write("/kept", 0, new byte[] { 1, 2, 3 });
        fs.Dispose(); // no Close: the journal and NEEDSREPAIR stay
        Assert.True(File.Exists(image + ".xfbtree-journal") && NeedsRepair(image), "the setup left no pending journal");
        return image;
    }

    [Theory]
    [InlineData("check")]
    [InlineData("dump")]
    [InlineData("dump --source ondisk")]
    [InlineData("repair")]
    [InlineData("repair -n")]
    public void RmapCommandsWithAPendingJournalOfferTheRecoveryFirst(string command)
    {
        string image = ImageWithPendingJournal();
        string[] words = command.Split(' ');
        var (rc, stdout, stderr) = Xfbtree(["rmap", words[0], image, .. words[1..]]);
        Assert.Equal(CommandLineHost.ExitUnusable, rc);
        Assert.Equal("", stdout);
        Assert.Equal($"xfbtree: {image}: a write-engine journal is pending ({image}.xfbtree-journal: 2 committed transactions): the last xfbtree writer did not close the image cleanly, " +
                     $"so it is marked NEEDSREPAIR and its last writes may be incomplete; run 'xfbtree recover {image}' to replay the journal first (xfs_repair would discard it)\n", stderr);
        Assert.True(File.Exists(image + ".xfbtree-journal") && NeedsRepair(image), "the refusal changed the image or the journal");
    }

    [Fact]
    public void ScrubWithAPendingJournalOffersTheRecoveryFirst()
    {
        string image = ImageWithPendingJournal();
        var (rc, stdout, stderr) = Xfbtree("scrub", image);
        Assert.Equal(CommandLineHost.ExitUnusable, rc);
        Assert.Equal("", stdout);
        Assert.Contains($"a write-engine journal is pending ({image}.xfbtree-journal: 2 committed transactions)", stderr, StringComparison.Ordinal);
        Assert.Contains($"run 'xfbtree recover {image}' to replay the journal first", stderr, StringComparison.Ordinal);
        Assert.True(File.Exists(image + ".xfbtree-journal") && NeedsRepair(image), "the refusal changed the image or the journal");
    }

    [Fact]
    public void RecoverReplaysTheJournalOfAKilledWriterAndClosesCleanly()
    {
        string image = scratch.Copy(TreeFixtures.Image("fresh-4ag"), "killed.img");
        KillStressChild(image);
        Assert.True(File.Exists(image + ".xfbtree-journal") && NeedsRepair(image), "the killed child left no pending journal");
        var pending = Xfs.Write.Engine.WriteEngine.FindPendingJournal(image);
        Assert.NotNull(pending);
        Assert.True(pending.Transactions > 0, "the killed child committed nothing");

        var refused = Xfbtree("rmap", "check", image);
        Assert.Equal(CommandLineHost.ExitUnusable, refused.Rc);
        Assert.Contains($"run 'xfbtree recover {image}'", refused.Stderr, StringComparison.Ordinal);

        var (rc, stdout, stderr) = Xfbtree("recover", image);
        Assert.Equal(CommandLineHost.ExitClean, rc);
        Assert.Equal("", stderr);
        Assert.Equal($"recover: {image}: replayed {pending.Transactions} committed transaction{(pending.Transactions == 1 ? "" : "s")} ({pending.Bytes} bytes) " +
                     $"from {image}.xfbtree-journal; closed cleanly (NEEDSREPAIR cleared, journal removed)\n", stdout);
        Assert.False(File.Exists(image + ".xfbtree-journal"), "the journal is still there");
        Assert.False(NeedsRepair(image), "NEEDSREPAIR is still set");
        AssertOraclesClean(image, "after recover");

        var again = Xfbtree("recover", image);
        Assert.Equal((CommandLineHost.ExitClean, $"recover: {image}: no pending journal, nothing to do\n"), (again.Rc, again.Stdout));
    }

    /// <summary>Starts <c>xfbtree stress</c> as a child, lets it commit for a moment after its first line, SIGKILLs it.</summary>
    private static void KillStressChild(string image)
    {
        string dll = Path.Combine(AppContext.BaseDirectory, "xfbtree.dll");
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (string a in new[] { dll, "stress", image, "--ops", "1000000", "--threads", "1", "--seed", "9" })
        {
            psi.ArgumentList.Add(a);
        }
        using var child = ChildProcesses.Start(psi);
        var stderr = child.StandardError.ReadToEndAsync();
        string? first = child.StandardOutput.ReadLine();
        if (first is null || !first.StartsWith("stress: ", StringComparison.Ordinal))
        {
            // Only here may a message wait for the child's stderr: it has ended (or is ended now). Built eagerly as
            // an assertion's message, stderr.Result blocks until the child ends on its own, a million operations later.
            child.Kill();
            child.WaitForExit();
            Assert.Fail($"the stress child did not start: '{first}' {stderr.Result}");
        }
        // Kill once the journal holds committed work (a condition, not a delay): a million operations take minutes, so
        // the child is mid-run then. Deadline: a child that commits nothing in a minute is a failure of its own.
        string journal = image + ".xfbtree-journal";
        var deadline = Stopwatch.StartNew();
        while (!child.HasExited && !(File.Exists(journal) && new FileInfo(journal).Length > 256 * 1024) && deadline.Elapsed < TimeSpan.FromMinutes(1))
        {
            Thread.Sleep(20);
        }
        if (child.HasExited)
        {
            Assert.Fail($"the stress child ended before the kill: {stderr.Result}");
        }
        child.Kill(); // SIGKILL on Linux
        child.WaitForExit();
    }

    [Fact]
    public void IoAndStressSayTheyReplayedThePendingJournal()
    {
        string image = ImageWithPendingJournal("io.img");
        var io = Xfbtree("io", image, "-c", "ls /");
        Assert.Equal(CommandLineHost.ExitClean, io.Rc);
        Assert.Equal($"xfbtree: io: {image}: a write-engine journal was pending ({image}.xfbtree-journal): replayed 2 committed transactions first, as 'xfbtree recover {image}' does\n", io.Stderr);
        Assert.Contains("kept", io.Stdout, StringComparison.Ordinal);
        Assert.False(File.Exists(image + ".xfbtree-journal"));

        string second = ImageWithPendingJournal("stress.img");
        var stress = Xfbtree("stress", second, "--ops", "20", "--threads", "1", "--no-sync");
        Assert.Equal(CommandLineHost.ExitClean, stress.Rc);
        Assert.StartsWith($"xfbtree: stress: {second}: a write-engine journal was pending ({second}.xfbtree-journal): replayed 2 committed transactions first", stress.Stderr, StringComparison.Ordinal);
    }

    [Fact]
    public void RmapCheckOfAnImageAWriterHoldsSaysItIsInUse()
    {
        string image = scratch.Copy(TreeFixtures.Image("fresh-4ag"), "held.img");
        using (var fs = XfsFileSystem.Open(image, Fast))
        {
            fs.Create("/busy");
            foreach (string[] args in new[] { new[] { "rmap", "check", image }, ["rmap", "dump", image], ["recover", image], ["scrub", image] })
            {
                var (rc, stdout, stderr) = Xfbtree(args);
                Assert.Equal(CommandLineHost.ExitUnusable, rc);
                Assert.Equal("", stdout);
                Assert.Contains($"{image}: the image is in use (another xfbtree writer (io, stress or a repair) holds it)", stderr, StringComparison.Ordinal);
                Assert.DoesNotContain("pending", stderr, StringComparison.Ordinal);
            }
            fs.Close();
        }
        Assert.Equal(CommandLineHost.ExitClean, Xfbtree("rmap", "check", image).Rc);
        // What the write engine wrote (a new file: inode, directory entry, counters) scrubs clean.
        Assert.Equal(CommandLineHost.ExitClean, Xfbtree("scrub", image).Rc);
    }

    [Fact]
    public void RmapCheckOfALoopAttachedImageSaysItIsInUse()
    {
        KernelOracle.RequireRootAndTools();
        string image = scratch.Copy(TreeFixtures.Image("fresh-4ag"), "loop.img");
        string device = TreeFixtures.Run("/sbin/losetup", ["--find", "--show", image]).Trim();
        try
        {
            var (rc, stdout, stderr) = Xfbtree("rmap", "check", image);
            Assert.Equal(CommandLineHost.ExitUnusable, rc);
            Assert.Equal("", stdout);
            Assert.Contains($"{image}: the image is in use (through {device}: mounted or attached)", stderr, StringComparison.Ordinal);
        }
        finally
        {
            TreeFixtures.Run("/sbin/losetup", ["-d", device]);
        }
        Assert.Equal(CommandLineHost.ExitClean, Xfbtree("rmap", "check", image).Rc);
    }
}
