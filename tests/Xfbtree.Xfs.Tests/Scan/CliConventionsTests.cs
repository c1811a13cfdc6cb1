using System.Text.Json;
using Xfbtree.Cli;
using Xfbtree.Xfs.Tests.Repair;
using Xfbtree.Xfs.Tests.Trees;

namespace Xfbtree.Xfs.Tests.Scan;

/// <summary>
/// The command line as xfsprogs users expect it (the built tool run as a process): -V beside --version; --json on
/// every command that reports, each document carrying the tool's version, and an error object on stdout when the
/// image cannot be used; one error prefix; --progress / --no-progress; exit codes in every --help; counts in the
/// right number.
/// </summary>
public sealed class CliConventionsTests
{
    static readonly string[][] Commands = [[], ["rmap"], ["rmap", "dump"], ["rmap", "check"], ["rmap", "repair"], ["io"], ["stress"], ["recover"], ["scrub"], ["mount"]];

    [Fact]
    public void ShortVersionOptionPrintsTheVersion()
    {
        var longForm = RepairTools.Xfbtree("--version");
        var shortForm = RepairTools.Xfbtree("-V");
        Assert.True(shortForm.ExitCode == 0, shortForm.ToString());
        Assert.Equal(longForm.Stdout, shortForm.Stdout);
        Assert.StartsWith(CommandLineHost.Version, shortForm.Stdout, StringComparison.Ordinal);
    }

    [Fact]
    public void EveryCommandsHelpStatesTheExitCodes()
    {
        foreach (string[] command in Commands)
        {
            var help = RepairTools.Xfbtree([.. command, "--help"]);
            Assert.True(help.ExitCode == 0, help.ToString());
            string text = string.Join(' ', help.Stdout.Split((char[])[' ', '\n'], StringSplitOptions.RemoveEmptyEntries));
            Assert.True(text.Contains("Exit 0", StringComparison.Ordinal) && text.Contains(" 2 ", StringComparison.Ordinal),
                        $"xfbtree {string.Join(' ', command)} --help does not state the exit codes:\n{help.Stdout}");
            Assert.Contains("--progress", help.Stdout, StringComparison.Ordinal);
        }
        foreach (string[] command in (string[][])[["rmap", "check"], ["rmap", "repair"], ["io"], ["stress"], ["scrub"]])
            Assert.Contains("--json", RepairTools.Xfbtree([.. command, "--help"]).Stdout, StringComparison.Ordinal);
    }

    [Fact]
    public void EveryReportingCommandWritesOneJsonDocumentWithTheVersion()
    {
        using var scratch = new RepairScratch();
        string image = scratch.CopyFixture("fresh-4ag");

        var check = RepairTools.Xfbtree("rmap", "check", image, "--json");
        AssertDocument(check, "rmap check", 0).RootElement.GetProperty("clean").GetBoolean().ShouldBe(true);

        var scrub = RepairTools.Xfbtree("scrub", image, "--json");
        AssertDocument(scrub, "scrub", 0).RootElement.GetProperty("clean").GetBoolean().ShouldBe(true);

        var repair = RepairTools.Xfbtree("rmap", "repair", image, "-n", "--json");
        var repairDoc = AssertDocument(repair, "rmap repair", 0);
        Assert.Contains(repairDoc.RootElement.GetProperty("report").EnumerateArray(), l => l.GetString()!.StartsWith("nothing to repair", StringComparison.Ordinal));

        var io = RepairTools.Xfbtree("io", image, "-c", "create /json-made", "-c", "pwrite /json-made 0 4096", "-c", "stat /json-made", "--json");
        var ops = AssertDocument(io, "io", 0).RootElement.GetProperty("operations").EnumerateArray().ToList();
        Assert.Equal(3, ops.Count);
        Assert.All(ops, o => Assert.True(o.GetProperty("ok").GetBoolean()));
        Assert.Contains(ops[2].GetProperty("output").EnumerateArray(), l => l.GetString() == "size = 4096");

        var failing = RepairTools.Xfbtree("io", image, "-c", "create /json-made", "-c", "stat /json-made", "--json");
        var failed = AssertDocument(failing, "io", 1).RootElement;
        Assert.False(failed.GetProperty("operations")[0].GetProperty("ok").GetBoolean());
        Assert.Equal(1, failed.GetProperty("notRun").GetInt32());
        Assert.StartsWith("xfbtree: io: create /json-made: ", failing.Stderr, StringComparison.Ordinal);

        var stress = RepairTools.Xfbtree("stress", image, "--ops", "40", "--threads", "1", "--no-sync", "--json");
        var stressDoc = AssertDocument(stress, "stress", 0).RootElement;
        Assert.Equal(40, stressDoc.GetProperty("ops").GetInt64());
        Assert.True(stressDoc.GetProperty("verify").GetProperty("ok").GetBoolean());
    }

    [Theory]
    [InlineData("rmap", "check")]
    [InlineData("rmap", "repair")]
    [InlineData("io")]
    [InlineData("stress")]
    [InlineData("scrub")]
    public void JsonErrorObjectWhenTheImageCannotBeUsed(params string[] command)
    {
        string missing = "/nonexistent-xfbtree-dir/image.img";
        string[] args = command[0] == "io" ? ["io", missing, "-c", "stat /", "--json"] : [.. command, missing, "--json"];
        var r = RepairTools.Xfbtree(args);
        var doc = AssertDocument(r, string.Join(' ', command), 2).RootElement;
        Assert.Contains("image.img", doc.GetProperty("error").GetString(), StringComparison.Ordinal);
        Assert.Equal(missing, doc.GetProperty("image").GetString());
        Assert.True(r.Stderr.StartsWith(CommandLineHost.ErrorPrefix, StringComparison.Ordinal) && r.Stderr.Count(c => c == '\n') == 1, r.ToString());
    }

    [Fact]
    public void EveryErrorLineHasTheOnePrefix()
    {
        string img = TreeFixtures.Image("fresh-4ag");
        foreach (string[] args in (string[][])[["frobnicate"], ["rmap", "check"], ["rmap", "check", img, "--ag", "9"],
                                               ["io", img, "-c", "frobnicate /x"], ["stress", img, "--threads", "0"],
                                               ["stress", "/nonexistent-xfbtree-image"], ["io", "/nonexistent-xfbtree-image", "-c", "stat /"]])
        {
            var r = RepairTools.Xfbtree(args);
            Assert.True(r.ExitCode == 2, r.ToString());
            Assert.True(r.Stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries).All(l => l.StartsWith(CommandLineHost.ErrorPrefix, StringComparison.Ordinal)),
                        $"xfbtree {string.Join(' ', args)}: {r}");
        }
    }

    [Fact]
    public void ProgressIsForcedOrSuppressedOnRequest()
    {
        string img = TreeFixtures.Image("fresh-4ag");
        // Redirected stderr: no progress unless asked for.
        Assert.DoesNotContain("\x1b[K", RepairTools.Xfbtree("rmap", "check", img).Stderr, StringComparison.Ordinal);
        var forced = RepairTools.Xfbtree("rmap", "check", img, "--progress");
        Assert.True(forced.ExitCode == 0, forced.ToString());
        Assert.Contains("\x1b[K", forced.Stderr, StringComparison.Ordinal);
        Assert.Contains("xfbtree: ", forced.Stderr, StringComparison.Ordinal);
        var suppressed = RepairTools.Xfbtree("--no-progress", "rmap", "check", img);
        Assert.True(suppressed.ExitCode == 0 && suppressed.Stderr.Length == 0, suppressed.ToString());
        var both = RepairTools.Xfbtree("rmap", "check", img, "--progress", "--no-progress");
        Assert.True(both.ExitCode == 2 && both.Stderr.Contains("contradict", StringComparison.Ordinal), both.ToString());
    }

    [Fact]
    public void CountsAreInTheRightNumber()
    {
        // A fresh 4-AG image: every rmapbt is one leaf block.
        var check = RepairTools.Xfbtree("rmap", "check", TreeFixtures.Image("fresh-4ag"));
        Assert.Contains(" in 1 block)", check.Stdout, StringComparison.Ordinal);
        Assert.DoesNotContain(" 1 blocks", check.Stdout, StringComparison.Ordinal);

        using var scratch = new RepairScratch();
        var stress = RepairTools.Xfbtree("stress", scratch.CopyFixture("fresh-4ag"), "--ops", "1", "--threads", "1", "--no-sync");
        Assert.True(stress.ExitCode == 0, stress.ToString());
        Assert.Contains("running 1 op on 1 thread,", stress.Stdout, StringComparison.Ordinal);
        Assert.Contains("(1 thread, seed", stress.Stdout, StringComparison.Ordinal);
        Assert.Equal("1 thread", CommandLineHost.Count(1, "thread"));
        Assert.Equal("0 threads", CommandLineHost.Count(0, "thread"));
        Assert.Equal("2 directories", CommandLineHost.Count(2, "directory", "directories"));
    }

    /// <summary>stdout is exactly one JSON document with the tool's version and the command; the exit code matches.</summary>
    static JsonDocument AssertDocument(ToolResult r, string command, int exitCode)
    {
        Assert.True(r.ExitCode == exitCode, $"wanted exit {exitCode}: {r}");
        JsonDocument doc;
        try { doc = JsonDocument.Parse(r.Stdout); }
        catch (JsonException e) { throw new Xunit.Sdk.XunitException($"stdout is not one JSON document ({e.Message}): {r}"); }
        Assert.Equal(CommandLineHost.Version, doc.RootElement.GetProperty("version").GetString());
        Assert.Equal(command, doc.RootElement.GetProperty("command").GetString());
        Assert.Equal(exitCode, doc.RootElement.GetProperty("exitCode").GetInt32());
        return doc;
    }
}

file static class BoolAssert
{
    public static void ShouldBe(this bool actual, bool expected) => Assert.Equal(expected, actual);
}
