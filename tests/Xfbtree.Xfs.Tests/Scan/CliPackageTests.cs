using System.IO.Compression;
using System.Reflection;
using System.Xml.Linq;
using Xfbtree.Xfs.Tests.Repair;
using Xfbtree.Xfs.Tests.Trees;

namespace Xfbtree.Xfs.Tests.Scan;

/// <summary>
/// The packages as a user gets them: dotnet pack of Xfbtree.Native, Xfbtree.Core, Xfbtree.Xfs and the tool into a
/// temporary folder, the library packages' dependencies resolvable from that folder, and the tool installed from it
/// into a temporary tool path (no other package source), then run on a fixture. Any failing step fails loudly.
/// </summary>
public sealed class CliPackageTests
{
    static readonly string[] Projects = ["src/Native/Xfbtree.Native", "src/Managed/Xfbtree", "src/Managed/Xfbtree.Xfs", "src/Managed/Xfbtree.Cli"];

    [Fact]
    public void CliPackagesInstallAndTheInstalledToolChecksAFixture()
    {
        string repo = RepairKernelTests.RepoRoot();
        string configuration = typeof(CliPackageTests).Assembly.GetCustomAttribute<AssemblyConfigurationAttribute>()?.Configuration ?? "Release";
        string temp = Directory.CreateTempSubdirectory("xfbtree-pack-").FullName;
        try
        {
            string packages = Path.Combine(temp, "packages");
            foreach (string project in Projects)
            {
                // --no-build: the test run has just built these projects in this configuration.
                ToolResult pack = RepairTools.Exec("dotnet", ["pack", Path.Combine(repo, project), "-c", configuration, "--no-build", "-o", packages, "--nologo"]);
                Assert.True(pack.ExitCode == 0, $"dotnet pack {project}: {pack}");
            }
            var ids = Directory.GetFiles(packages, "*.nupkg").Select(Path.GetFileName).Order(StringComparer.Ordinal).ToList();
            Assert.Equal(["Xfbtree.Core.1.0.0.nupkg", "Xfbtree.Native.1.0.0.nupkg", "Xfbtree.Tool.1.0.0.nupkg", "Xfbtree.Xfs.1.0.0.nupkg"], ids);

            // Each library package depends only on packages in this folder or on public ones it names with a version.
            var ours = new HashSet<string>(["Xfbtree.Core", "Xfbtree.Native", "Xfbtree.Xfs"], StringComparer.Ordinal);
            foreach (string nupkg in Directory.GetFiles(packages, "Xfbtree.*.nupkg").Where(p => !p.Contains("Tool", StringComparison.Ordinal)))
            {
                foreach (var (id, version) in Dependencies(nupkg))
                {
                    Assert.False(string.IsNullOrEmpty(version), $"{Path.GetFileName(nupkg)}: dependency {id} has no version");
                    if (id.StartsWith("Xfbtree", StringComparison.Ordinal)) Assert.Contains(id, ours);
                }
            }

            string config = Path.Combine(temp, "nuget.config");
            File.WriteAllText(config, $"""
                <?xml version="1.0" encoding="utf-8"?>
                <configuration><packageSources><clear /><add key="local" value="{packages}" /></packageSources></configuration>
                """);
            string tools = Path.Combine(temp, "tools");
            ToolResult install = RepairTools.Exec("dotnet", ["tool", "install", "Xfbtree.Tool", "--tool-path", tools, "--configfile", config, "--version", "1.0.0"]);
            Assert.True(install.ExitCode == 0, $"dotnet tool install: {install}");

            string xfbtree = Path.Combine(tools, "xfbtree");
            Assert.True(File.Exists(xfbtree), $"the installed tool has no {xfbtree}");
            ToolResult check = RepairTools.Exec(xfbtree, ["rmap", "check", TreeFixtures.Image("fresh-4ag")]);
            Assert.True(check.ExitCode == 0, $"installed xfbtree rmap check: {check}");
            Assert.Contains("result: clean", check.Stdout, StringComparison.Ordinal);
            ToolResult versionRun = RepairTools.Exec(xfbtree, ["--version"]);
            Assert.True(versionRun.ExitCode == 0 && versionRun.Stdout.StartsWith("1.0.0", StringComparison.Ordinal), versionRun.ToString());
        }
        finally
        {
            Directory.Delete(temp, recursive: true);
        }
    }

    static IEnumerable<(string Id, string? Version)> Dependencies(string nupkg)
    {
        using var zip = ZipFile.OpenRead(nupkg);
        var entry = zip.Entries.Single(e => e.FullName.EndsWith(".nuspec", StringComparison.Ordinal));
        using var stream = entry.Open();
        var doc = XDocument.Load(stream);
        return doc.Descendants().Where(e => e.Name.LocalName == "dependency")
            .Select(e => ((string)e.Attribute("id")!, (string?)e.Attribute("version"))).ToList();
    }
}
