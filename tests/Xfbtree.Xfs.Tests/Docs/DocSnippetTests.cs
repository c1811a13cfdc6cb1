using System.Globalization;
using System.Reflection;
using System.Text;
using System.Text.RegularExpressions;
using Xfbtree.Xfs.Tests.Repair;
using Xfbtree.Xfs.Tests.Scan;
using Xfbtree.Xfs.Tests.Trees;

namespace Xfbtree.Xfs.Tests.Docs;

/// <summary>
/// Every C# block of README.md and docs/*.md compiles against the libraries as built for this test run, runs, and
/// prints what its <c>// prints: TEXT</c> comments say (in order; <c>...</c> stands for any text). One generated
/// project holds every block, each in its own namespace behind one entry point, so the whole set builds once. The
/// blocks run in a folder where <c>fs.img</c> and <c>image.img</c> are copies of a fresh 4-AG image.
/// </summary>
public sealed partial class DocSnippetTests
{
    /// <summary>The libraries a user references (with their dependencies), as this test run loads them.</summary>
    static readonly string[] LibraryAssemblies = ["Xfbtree.Core", "Xfbtree.Xfs", "Xfbtree.Native", "Tmds.LibC", "System.IO.Hashing"];

    sealed record Snippet(string Document, int Line, string Code)
    {
        public override string ToString() => $"{Document}:{Line}";
    }

    [Fact]
    public void EveryCSharpBlockOfTheDocsCompilesRunsAndPrintsWhatItSays()
    {
        string repo = RepairKernelTests.RepoRoot();
        var snippets = Extract(repo);
        // README (quick start, typed map), btree.md (disk tree, typed map), buffers.md, online-repair.md at least.
        Assert.True(snippets.Count >= 6, $"found only {snippets.Count} C# blocks: {string.Join(", ", snippets)}");

        string temp = Directory.CreateTempSubdirectory("xfbtree-doc-snippets-").FullName;
        try
        {
            string project = Path.Combine(temp, "snippets");
            Directory.CreateDirectory(project);
            Generate(project, snippets);
            string output = Path.Combine(temp, "bin");
            ToolResult build = RepairTools.Exec("dotnet", ["build", project, "-c", "Release", "-o", output, "--nologo", "-v", "q"]);
            Assert.True(build.ExitCode == 0, $"the docs' C# blocks do not compile:\n{build.Stdout}\n{build.Stderr}");

            string work = Path.Combine(temp, "work");
            Directory.CreateDirectory(work);
            var failures = new List<string>();
            for (int i = 0; i < snippets.Count; i++)
            {
                foreach (string name in (string[])["fs.img", "image.img"])
                    File.Copy(TreeFixtures.Image("fresh-4ag"), Path.Combine(work, name), overwrite: true);
                var psiArgs = new[] { Path.Combine(output, "Snippets.dll"), i.ToString(CultureInfo.InvariantCulture) };
                ToolResult run = RepairTools.Exec("dotnet", psiArgs, workingDirectory: work);
                string? mismatch = run.ExitCode != 0 ? $"exit {run.ExitCode}: {run.Stderr}" : Mismatch(ExpectedOutput(snippets[i].Code), run.Stdout);
                if (mismatch is not null) failures.Add($"{snippets[i]}: {mismatch}");
            }
            Assert.True(failures.Count == 0, string.Join("\n", failures));
        }
        finally
        {
            Directory.Delete(temp, recursive: true);
        }
    }

    static List<Snippet> Extract(string repo)
    {
        var documents = new List<string> { Path.Combine(repo, "README.md") };
        documents.AddRange(Directory.GetFiles(Path.Combine(repo, "docs"), "*.md").Order(StringComparer.Ordinal));
        var snippets = new List<Snippet>();
        foreach (string document in documents)
        {
            string[] lines = File.ReadAllLines(document);
            for (int i = 0; i < lines.Length; i++)
            {
                string fence = lines[i].Trim();
                if (!fence.StartsWith("```", StringComparison.Ordinal)) continue;
                string language = fence[3..].Trim().ToLowerInvariant();
                int end = Array.FindIndex(lines, i + 1, l => l.Trim() == "```");
                Assert.True(end > i, $"{document}:{i + 1}: a code block is never closed");
                if (language is "csharp" or "cs" or "c#")
                    snippets.Add(new Snippet(Path.GetRelativePath(repo, document), i + 2, string.Join('\n', lines[(i + 1)..end])));
                i = end;
            }
        }
        return snippets;
    }

    /// <summary>
    /// A block is a small program: using directives, then top-level statements, then type declarations. Each becomes
    /// a namespace with its statements in <c>Entry.Run</c> and its types beside it; #line keeps errors pointing at
    /// the document.
    /// </summary>
    static void Generate(string project, List<Snippet> snippets)
    {
        string references = string.Concat(LibraryAssemblies.Select(a =>
            $"""    <Reference Include="{a}"><HintPath>{Assembly.Load(a).Location}</HintPath></Reference>{"\n"}"""));
        File.WriteAllText(Path.Combine(project, "Snippets.csproj"), $"""
            <Project Sdk="Microsoft.NET.Sdk">
              <PropertyGroup>
                <OutputType>Exe</OutputType>
                <TargetFramework>net10.0</TargetFramework>
                <ImplicitUsings>enable</ImplicitUsings>
                <Nullable>enable</Nullable>
                <TreatWarningsAsErrors>true</TreatWarningsAsErrors>
              </PropertyGroup>
              <ItemGroup>
            {references}  </ItemGroup>
            </Project>
            """);
        var main = new StringBuilder("switch (args[0])\n{\n");
        for (int i = 0; i < snippets.Count; i++)
        {
            var (usings, statements, types) = Split(snippets[i]);
            string path = Path.GetFullPath(Path.Combine(RepairKernelTests.RepoRoot(), snippets[i].Document));
            var file = new StringBuilder();
            foreach (var (line, text) in usings) file.Append(CultureInfo.InvariantCulture, $"#line {line} \"{path}\"\n{text}\n");
            file.Append(CultureInfo.InvariantCulture, $"#line default\nnamespace DocSnippet{i};\nstatic class Entry\n{{\n    public static void Run()\n    {{\n");
            foreach (var (line, text) in statements) file.Append(CultureInfo.InvariantCulture, $"#line {line} \"{path}\"\n{text}\n");
            file.Append("#line default\n    }\n}\n");
            foreach (var (line, text) in types) file.Append(CultureInfo.InvariantCulture, $"#line {line} \"{path}\"\n{text}\n");
            File.WriteAllText(Path.Combine(project, $"Snippet{i}.cs"), file.ToString());
            main.Append(CultureInfo.InvariantCulture, $"    case \"{i}\": DocSnippet{i}.Entry.Run(); break;\n");
        }
        main.Append("    default: return 2;\n}\nreturn 0;\n");
        File.WriteAllText(Path.Combine(project, "Program.cs"), main.ToString());
    }

    static (List<(int, string)> Usings, List<(int, string)> Statements, List<(int, string)> Types) Split(Snippet snippet)
    {
        List<(int, string)> usings = [], statements = [], types = [];
        string[] lines = snippet.Code.Split('\n');
        bool inTypes = false;
        for (int i = 0; i < lines.Length; i++)
        {
            string line = lines[i];
            int number = snippet.Line + i;
            if (inTypes || TypeStart().IsMatch(line))
            {
                inTypes = true;
                types.Add((number, line));
            }
            else if (statements.Count == 0 && UsingDirective().IsMatch(line)) usings.Add((number, line));
            else if (statements.Count == 0 && string.IsNullOrWhiteSpace(line)) continue;
            else statements.Add((number, line));
        }
        return (usings, statements, types);
    }

    static List<string> ExpectedOutput(string code) =>
        code.Split('\n').Select(l => Prints().Match(l)).Where(m => m.Success).Select(m => m.Groups[1].Value.TrimEnd()).ToList();

    /// <summary>Null when the output is the expected lines (each <c>...</c> matches any text), else what differs.</summary>
    static string? Mismatch(List<string> expected, string stdout)
    {
        var actual = stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(l => l.TrimEnd('\r')).ToList();
        bool same = actual.Count == expected.Count && expected.Zip(actual).All(p =>
            Regex.IsMatch(p.Second, "^" + string.Join(".*", p.First.Split("...").Select(Regex.Escape)) + "$", RegexOptions.None, TimeSpan.FromSeconds(1)));
        return same ? null : $"printed\n{string.Join('\n', actual)}\nbut the block says it prints\n{string.Join('\n', expected)}";
    }

    [GeneratedRegex(@"^using\s+(static\s+)?[A-Za-z_][\w.]*(\s*=\s*[\w.<>, ]+)?;\s*$")]
    private static partial Regex UsingDirective();

    [GeneratedRegex(@"^(\[|((public|internal|readonly|sealed|static|abstract|unsafe|partial|ref|file)\s+)*(struct|class|record|interface|enum)\b)")]
    private static partial Regex TypeStart();

    [GeneratedRegex(@"//\s*prints:\s*(.*)$")]
    private static partial Regex Prints();
}
