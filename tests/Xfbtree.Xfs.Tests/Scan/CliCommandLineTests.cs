using Xfbtree.Xfs.Tests.Repair;
using Xfbtree.Xfs.Tests.Trees;

namespace Xfbtree.Xfs.Tests.Scan;

/// <summary>
/// The tool's command line as a user meets it (the built xfbtree.dll run as a process): --help on every command,
/// --version, and a usage error is exit 2 with exactly one line on stderr and nothing on stdout.
/// </summary>
public sealed class CliCommandLineTests
{
    [Theory]
    [InlineData("--help")]
    [InlineData("rmap", "--help")]
    [InlineData("rmap", "dump", "--help")]
    [InlineData("rmap", "check", "--help")]
    [InlineData("rmap", "repair", "-h")]
    public void CliHelpOnEveryCommand(params string[] args)
    {
        var r = RepairTools.Xfbtree(args);
        Assert.True(r.ExitCode == 0, r.ToString());
        Assert.Contains("Usage:", r.Stdout, StringComparison.Ordinal);
        Assert.Contains("xfbtree " + string.Join(' ', args.Where(a => !a.StartsWith('-'))), r.Stdout, StringComparison.Ordinal);
        Assert.Equal("", r.Stderr);
    }

    [Fact]
    public void CliHelpNamesEveryOption()
    {
        Assert.All(new[] { "--source", "--ag", "--force" }, o => Assert.Contains(o, RepairTools.Xfbtree("rmap", "dump", "--help").Stdout, StringComparison.Ordinal));
        Assert.All(new[] { "--ag", "--json", "--force" }, o => Assert.Contains(o, RepairTools.Xfbtree("rmap", "check", "--help").Stdout, StringComparison.Ordinal));
        Assert.All(new[] { "--ag", "-n" }, o => Assert.Contains(o, RepairTools.Xfbtree("rmap", "repair", "--help").Stdout, StringComparison.Ordinal));
    }

    [Fact]
    public void CliVersion()
    {
        var r = RepairTools.Xfbtree("--version");
        Assert.True(r.ExitCode == 0, r.ToString());
        Assert.Matches(@"^\d+\.\d+\.\d+", r.Stdout);
    }

    [Fact]
    public void CliUsageErrorIsExitTwoAndOneLine()
    {
        string img = TreeFixtures.Image("fresh-4ag");
        foreach (var args in new[]
                 {
                     Array.Empty<string>(), ["frobnicate"], ["rmap"], ["rmap", "frobnicate", img], ["rmap", "check"],
                     ["rmap", "check", img, "--bogus"], ["rmap", "check", img, "--ag"], ["rmap", "check", img, "--ag", "-1"],
                     ["rmap", "check", img, "--ag", "x"], ["rmap", "dump", img, "--source", "both"], ["rmap", "check", img, img],
                     ["rmap", "repair", img, "--force"], ["rmap", "check", img, "-n"], ["rmap", "dump", img, "--json"],
                 })
        {
            var r = RepairTools.Xfbtree(args);
            string what = $"xfbtree {string.Join(' ', args)}: {r}";
            Assert.True(r.ExitCode == 2, what);
            Assert.True(r.Stderr.EndsWith('\n') && r.Stderr.Count(c => c == '\n') == 1, what);
            Assert.StartsWith("xfbtree: ", r.Stderr, StringComparison.Ordinal);
            Assert.Contains("--help", r.Stderr, StringComparison.Ordinal);
            Assert.Equal("", r.Stdout);
        }
    }

    [Fact]
    public void CliImagePathStartingWithAtIsAPathNotAResponseFile()
    {
        var r = RepairTools.Xfbtree("rmap", "check", "@/nonexistent-xfbtree-image");
        Assert.True(r.ExitCode == 2, r.ToString());
        Assert.Contains("@/nonexistent-xfbtree-image", r.Stderr, StringComparison.Ordinal);
    }
}
