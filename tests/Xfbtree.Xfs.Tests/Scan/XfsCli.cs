using System.Collections.Concurrent;
using Xfbtree.Cli;
using Xfbtree.Xfs.Tests.Trees;

namespace Xfbtree.Xfs.Tests.Scan;

/// <summary>Result of an in-process <c>xfbtree rmap ...</c> run.</summary>
internal readonly record struct CliResult(int ExitCode, string Stdout, string Stderr)
{
    public override string ToString() => $"exit {ExitCode}\nstdout:\n{Cut(Stdout)}\nstderr:\n{Cut(Stderr)}";
    static string Cut(string s) => s.Length > 3000 ? s[..3000] + "..." : s;
}

/// <summary>
/// Runs the rmap commands in process (RmapCommands.Run, exactly what the tool's Main calls) and caches the results of
/// the expensive read-only runs on the shared restored fixtures, so each fixture is scanned once per command per run.
/// </summary>
internal static class XfsCli
{
    static readonly ConcurrentDictionary<string, Lazy<CliResult>> Cache = new();
    static readonly ConcurrentDictionary<string, Lazy<string>> Truths = new();

    public static CliResult Run(params string[] args) => Run(args, configureWritableTarget: null);

    /// <summary>Runs the command; <paramref name="configureWritableTarget"/> gets the image's disk target when the
    /// command opens it for writing (crash models).</summary>
    public static CliResult Run(string[] args, Action<Xfbtree.Buffers.DiskBufferTarget>? configureWritableTarget)
    {
        var o = new StringWriter { NewLine = "\n" };
        var e = new StringWriter { NewLine = "\n" };
        int rc = RmapCommands.Run(args, new CommandEnvironment(o, e, false) { ConfigureWritableTarget = configureWritableTarget });
        return new CliResult(rc, o.ToString(), e.ToString());
    }

    /// <summary>A cached run on a restored (never modified) fixture image: args are appended after the image.</summary>
    public static CliResult OnFixture(string fixture, string command, params string[] options)
    {
        string key = fixture + "|" + command + "|" + string.Join(' ', options);
        return Cache.GetOrAdd(key, _ => new Lazy<CliResult>(() =>
            Run([command, TreeFixtures.Image(fixture), .. options]))).Value;
    }

    /// <summary>The fixture's truth.tsv, decompressed once.</summary>
    public static string Truth(string fixture)
        => Truths.GetOrAdd(fixture, f => new Lazy<string>(() =>
        {
            TreeFixtures.RequireTool("zstd");
            return TreeFixtures.Sh($"zstd -dc '{Path.Combine(TreeFixtures.FixtureDir, f + ".truth.tsv.zst")}'");
        })).Value;

    /// <summary>Index of the first differing line, or -1.</summary>
    public static string FirstDifference(string expected, string actual)
    {
        var a = expected.Split('\n');
        var b = actual.Split('\n');
        for (int i = 0; i < Math.Max(a.Length, b.Length); i++)
        {
            string x = i < a.Length ? a[i] : "<end>", y = i < b.Length ? b[i] : "<end>";
            if (x != y) return $"line {i + 1}: expected '{x}', got '{y}' ({a.Length} vs {b.Length} lines)";
        }
        return "no difference";
    }
}
