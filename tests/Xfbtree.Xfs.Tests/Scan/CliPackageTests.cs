using System.IO.Compression;
using System.Reflection;
using System.Xml.Linq;
using Xfbtree.Xfs.Tests.Repair;
using Xfbtree.Xfs.Tests.Trees;

namespace Xfbtree.Xfs.Tests.Scan;

/// <summary>
/// The packages as a user gets them: dotnet pack of Xfbtree.Native, Xfbtree.Core, Xfbtree.Xfs and the tool into a
/// temporary folder (each with its symbol package, license, readme and repository metadata, all at the repository's
/// one version), the tool installed from it into a temporary tool path (no other package source) and run on a
/// fixture, and a small console program that references Xfbtree.Core and Xfbtree.Xfs as packages from that folder
/// built and run. Any failing step fails loudly.
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
            string version = RepositoryVersion(repo);
            string[] packageIds = ["Xfbtree.Core", "Xfbtree.Native", "Xfbtree.Tool", "Xfbtree.Xfs"];
            var files = Directory.GetFiles(packages).Select(Path.GetFileName).Order(StringComparer.Ordinal).ToList();
            Assert.Equal(packageIds.SelectMany(id => new[] { $"{id}.{version}.nupkg", $"{id}.{version}.snupkg" }), files);
            foreach (string id in packageIds) AssertMetadata(Path.Combine(packages, $"{id}.{version}.nupkg"), id);

            // Each library package depends only on packages in this folder or on public ones it names with a version.
            var ours = new HashSet<string>(["Xfbtree.Core", "Xfbtree.Native", "Xfbtree.Xfs"], StringComparer.Ordinal);
            foreach (string nupkg in Directory.GetFiles(packages, "Xfbtree.*.nupkg").Where(p => !p.Contains("Tool", StringComparison.Ordinal)))
            {
                foreach (var (id, dependencyVersion) in Dependencies(nupkg))
                {
                    Assert.False(string.IsNullOrEmpty(dependencyVersion), $"{Path.GetFileName(nupkg)}: dependency {id} has no version");
                    if (id.StartsWith("Xfbtree", StringComparison.Ordinal)) Assert.Contains(id, ours);
                }
            }

            string config = Path.Combine(temp, "nuget.config");
            File.WriteAllText(config, $"""
                <?xml version="1.0" encoding="utf-8"?>
                <configuration><packageSources><clear /><add key="local" value="{packages}" /></packageSources></configuration>
                """);
            string tools = Path.Combine(temp, "tools");
            ToolResult install = RepairTools.Exec("dotnet", ["tool", "install", "Xfbtree.Tool", "--tool-path", tools, "--configfile", config, "--version", version]);
            Assert.True(install.ExitCode == 0, $"dotnet tool install: {install}");

            string xfbtree = Path.Combine(tools, "xfbtree");
            Assert.True(File.Exists(xfbtree), $"the installed tool has no {xfbtree}");
            ToolResult check = RepairTools.Exec(xfbtree, ["rmap", "check", TreeFixtures.Image("fresh-4ag")]);
            Assert.True(check.ExitCode == 0, $"installed xfbtree rmap check: {check}");
            Assert.Contains("result: clean", check.Stdout, StringComparison.Ordinal);
            ToolResult versionRun = RepairTools.Exec(xfbtree, ["--version"]);
            Assert.True(versionRun.ExitCode == 0 && versionRun.Stdout.StartsWith(version, StringComparison.Ordinal), versionRun.ToString());

            BuildAndRunConsumer(temp, packages, version);
        }
        finally
        {
            Directory.Delete(temp, recursive: true);
        }
    }

    /// <summary>
    /// A console program as a user writes it: PackageReferences to Xfbtree.Core and Xfbtree.Xfs resolved from the
    /// packed folder (public dependencies from the machine's package cache, used as an offline feed), restored into
    /// a private packages folder so that no earlier build's copy of these packages is used.
    /// </summary>
    static void BuildAndRunConsumer(string temp, string packages, string version)
    {
        string project = Path.Combine(temp, "consumer");
        Directory.CreateDirectory(project);
        string cache = Environment.GetEnvironmentVariable("NUGET_PACKAGES")
            ?? Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".nuget", "packages");
        File.WriteAllText(Path.Combine(project, "nuget.config"), $"""
            <?xml version="1.0" encoding="utf-8"?>
            <configuration>
              <packageSources><clear /><add key="packed" value="{packages}" /><add key="cache" value="{cache}" /></packageSources>
              <config><add key="globalPackagesFolder" value="{Path.Combine(temp, "restored")}" /></config>
            </configuration>
            """);
        File.WriteAllText(Path.Combine(project, "Consumer.csproj"), $"""
            <Project Sdk="Microsoft.NET.Sdk">
              <PropertyGroup>
                <OutputType>Exe</OutputType>
                <TargetFramework>net10.0</TargetFramework>
                <ImplicitUsings>enable</ImplicitUsings>
                <Nullable>enable</Nullable>
                <TreatWarningsAsErrors>true</TreatWarningsAsErrors>
              </PropertyGroup>
              <ItemGroup>
                <PackageReference Include="Xfbtree.Core" Version="{version}" />
                <PackageReference Include="Xfbtree.Xfs" Version="{version}" />
              </ItemGroup>
            </Project>
            """);
        File.WriteAllText(Path.Combine(project, "Program.cs"), """
            using Xfbtree.InMemory;
            using Xfbtree.Xfs;
            using Xfbtree.Xfs.Check;
            using Xfbtree.Xfs.Scan;

            using (var map = new ShmemBTree<(long Key, long Value), ByKey>())
            {
                for (long k = 0; k < 1000; k++) map.Insert((k, k * k));
                Console.WriteLine(map.TryFind((31, 0), out var found) ? $"map: 31 -> {found.Value}" : "map: 31 missing");
            }

            using var image = XfsImage.Open(args[0]);
            using var scan = RmapScanner.Scan(image);
            var report = RmapChecker.Check(image, scan);
            Console.WriteLine($"image: {image.Geometry.AgCount} AGs, {(report.IsClean ? "clean" : "damaged")}");

            readonly struct ByKey : IRecordComparer<(long Key, long Value)>
            {
                public int Compare(in (long Key, long Value) x, in (long Key, long Value) y) => x.Key.CompareTo(y.Key);
            }
            """);
        string output = Path.Combine(temp, "consumer-bin");
        ToolResult build = RepairTools.Exec("dotnet", ["build", project, "-c", "Release", "-o", output, "--nologo"]);
        Assert.True(build.ExitCode == 0, $"dotnet build of a program that references the packages: {build}");
        ToolResult run = RepairTools.Exec("dotnet", [Path.Combine(output, "Consumer.dll"), TreeFixtures.Image("fresh-4ag")]);
        Assert.True(run.ExitCode == 0, $"the program that references the packages: {run}");
        Assert.Equal("map: 31 -> 961\nimage: 4 AGs, clean\n", run.Stdout);
    }

    /// <summary>The one version of every package, as Directory.Build.props sets it.</summary>
    static string RepositoryVersion(string repo)
    {
        var props = XDocument.Load(Path.Combine(repo, "Directory.Build.props"));
        string? version = props.Descendants().SingleOrDefault(e => e.Name.LocalName == "Version")?.Value;
        Assert.False(string.IsNullOrWhiteSpace(version), "Directory.Build.props sets no Version");
        return version!;
    }

    /// <summary>What nuget.org and an auditor read from a package: real metadata, the license, the readme inside.</summary>
    static void AssertMetadata(string nupkg, string id)
    {
        using var zip = ZipFile.OpenRead(nupkg);
        var names = zip.Entries.Select(e => e.FullName).ToHashSet(StringComparer.Ordinal);
        Assert.Contains("README.md", names);
        Assert.Contains("LICENSE", names);
        XDocument doc;
        using (var stream = zip.Entries.Single(e => e.FullName.EndsWith(".nuspec", StringComparison.Ordinal)).Open()) doc = XDocument.Load(stream);
        string? Field(string name) => doc.Descendants().FirstOrDefault(e => e.Name.LocalName == name)?.Value;
        var license = doc.Descendants().Single(e => e.Name.LocalName == "license");
        Assert.Equal(("expression", "MIT"), ((string?)license.Attribute("type"), license.Value));
        Assert.Equal("README.md", Field("readme"));
        Assert.Equal("The Xfbtree authors", Field("authors"));
        string? description = Field("description");
        Assert.False(string.IsNullOrWhiteSpace(description) || description == "Package Description", $"{id}: no real description");
        Assert.False(string.IsNullOrWhiteSpace(Field("projectUrl")), $"{id}: no project URL");
        Assert.False(string.IsNullOrWhiteSpace(Field("tags")), $"{id}: no tags");
        var repository = doc.Descendants().Single(e => e.Name.LocalName == "repository");
        Assert.StartsWith("https://", (string?)repository.Attribute("url") ?? "", StringComparison.Ordinal);
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
