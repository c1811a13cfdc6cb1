using System.Text.RegularExpressions;
using Xfbtree.Xfs.Tests.Repair;

namespace Xfbtree.Xfs.Tests.Docs;

/// <summary>
/// The repository's docs and comments cite only the repository: no document outside it (a shared folder of notes),
/// nothing about how the work was organised (issue numbers, briefs), and every <c>docs/NAME.md</c> and
/// <c>docs/xfs-format.md §N</c> they cite exists.
/// </summary>
public sealed partial class DocCitationTests
{
    static readonly string[] Extensions = [".md", ".cs", ".sh", ".csproj", ".props", ".targets", ".json"];

    [Fact]
    public void DocsAndSourcesCiteOnlyTheRepository()
    {
        string repo = RepairKernelTests.RepoRoot();
        var problems = new List<string>();
        int files = 0;
        foreach (string file in Files(repo))
        {
            files++;
            string relative = Path.GetRelativePath(repo, file);
            string[] lines = File.ReadAllLines(file);
            for (int i = 0; i < lines.Length; i++)
            {
                foreach (Match m in Forbidden().Matches(lines[i]))
                {
                    problems.Add($"{relative}:{i + 1}: cites \"{m.Value}\"");
                }
                foreach (Match m in DocReference().Matches(lines[i]))
                {
                    string doc = m.Groups["doc"].Value;
                    if (!File.Exists(Path.Combine(repo, "docs", doc))) problems.Add($"{relative}:{i + 1}: docs/{doc} does not exist");
                }
                foreach (Match m in FormatSection().Matches(lines[i]))
                {
                    if (!FormatSections(repo).Contains(m.Groups["section"].Value)) problems.Add($"{relative}:{i + 1}: docs/xfs-format.md has no §{m.Groups["section"].Value}");
                }
            }
        }
        Assert.True(files > 100, $"only {files} files were read: is {repo} the repository?");
        Assert.True(problems.Count == 0, string.Join("\n", problems));
    }

    /// <summary>The repository's own text files: docs, sources, scripts, project files (not build output or data).</summary>
    static IEnumerable<string> Files(string repo)
    {
        var options = new EnumerationOptions { RecurseSubdirectories = true, IgnoreInaccessible = true };
        return Directory.EnumerateFiles(repo, "*", options).Where(f =>
        {
            string relative = Path.GetRelativePath(repo, f).Replace('\\', '/');
            if (!Extensions.Contains(Path.GetExtension(f), StringComparer.Ordinal)) return false;
            string[] parts = relative.Split('/');
            return !parts.Any(p => p is "bin" or "obj" or "artifacts" or ".git" or "node_modules" || p.StartsWith('.'))
                && !relative.StartsWith("tests/fixtures/", StringComparison.Ordinal)
                && !relative.Contains("/corpus/", StringComparison.Ordinal) && !relative.Contains("/regressions/", StringComparison.Ordinal)
                && !relative.StartsWith("bench/results/", StringComparison.Ordinal);
        });
    }

    static HashSet<string>? formatSections;

    static HashSet<string> FormatSections(string repo) => formatSections ??= File.ReadAllLines(Path.Combine(repo, "docs", "xfs-format.md"))
        .Select(l => Heading().Match(l)).Where(m => m.Success).Select(m => m.Groups["section"].Value).ToHashSet(StringComparer.Ordinal);

    // Split so that this file does not match itself; the notes folder is lower case (tests/Shared is the tests' own).
    [GeneratedRegex(@"((?-i:shared" + @"/docs|\.\./shared" + @"\b|/work/" + @"shared)|\bissue\s*#?\d+|\bissues\s+\d+|\bthe\s+brief\b)", RegexOptions.IgnoreCase)]
    private static partial Regex Forbidden();

    [GeneratedRegex(@"docs/(?<doc>[a-z0-9-]+\.md)")]
    private static partial Regex DocReference();

    [GeneratedRegex(@"docs/xfs-format\.md,? §(?<section>\d+(\.\d+)?)")]
    private static partial Regex FormatSection();

    [GeneratedRegex(@"^##+ (?<section>\d+(\.\d+)?)\.? ")]
    private static partial Regex Heading();
}
