using System.Diagnostics;
using Xunit.Abstractions;

namespace Xfbtree.Tests.Fuzz;

/// <summary>
/// The CI fuzz smoke, inside the suite so its result is in the totals: every target under afl++ for a short
/// bounded time through scripts/fuzz.sh (Release build instrumented once per source state), failing on any crash
/// or hang afl++ records. Long campaigns: scripts/fuzz.sh TARGET SECONDS [Debug] (docs/fuzzing.md).
/// </summary>
public sealed class FuzzSmokeTests(ITestOutputHelper output)
{
    /// <summary>Seconds per target: $XFBTREE_FUZZ_SECONDS, default 60.</summary>
    static int SecondsPerTarget => int.TryParse(Environment.GetEnvironmentVariable("XFBTREE_FUZZ_SECONDS"), out int s) && s > 0 ? s : 60;

    [Theory]
    [InlineData("btree")]
    [InlineData("orderedmap")]
    [InlineData("reader")]
    public async Task FuzzSmokeFindsNothing(string target)
    {
        string repo = RepoRoot();
        var psi = new ProcessStartInfo(Path.Combine(repo, "scripts", "fuzz.sh")) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false, WorkingDirectory = repo };
        psi.ArgumentList.Add(target);
        psi.ArgumentList.Add(SecondsPerTarget.ToString(System.Globalization.CultureInfo.InvariantCulture));
        psi.ArgumentList.Add("Release");
        using var p = Process.Start(psi)!;
        var stdoutTask = p.StandardOutput.ReadToEndAsync();
        var stderrTask = p.StandardError.ReadToEndAsync();
        using var timeout = new CancellationTokenSource(TimeSpan.FromMinutes(15));
        await p.WaitForExitAsync(timeout.Token);
        string stdout = await stdoutTask, stderr = await stderrTask;
        output.WriteLine(stdout);
        output.WriteLine(stderr);
        Assert.True(p.ExitCode == 0, $"scripts/fuzz.sh {target} exited {p.ExitCode} (1 = afl++ found crashes or hangs, 2 = setup failed):\n{stdout}\n{stderr}");
        Assert.Contains($"fuzz {target} (Release)", stdout, StringComparison.Ordinal);
    }

    static string RepoRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            if (File.Exists(Path.Combine(dir.FullName, "Xfbtree.sln"))) return dir.FullName;
        }
        throw new DirectoryNotFoundException("repository root (Xfbtree.sln) not found above the test binaries");
    }
}
