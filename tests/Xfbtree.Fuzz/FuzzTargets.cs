using Xfbtree.Buffers;

namespace Xfbtree.Fuzz;

/// <summary>The fuzz targets by name, and the replay mode shared by the command line and the regression tests.</summary>
public static class FuzzTargets
{
    /// <summary>Inputs larger than this are cut (afl++ keeps inputs far smaller).</summary>
    public const int MaxInputLength = 1 << 20;

    /// <summary>Target names.</summary>
    public static IReadOnlyList<string> Names { get; } = ["btree", "reader", "orderedmap"];

    /// <summary>Runs one input through a target. Throws on a finding; returns the outcome otherwise.</summary>
    public static FuzzOutcome Run(string target, ReadOnlySpan<byte> input)
    {
        if (input.Length > MaxInputLength) input = input[..MaxInputLength];
        return target switch
        {
            "btree" => BtreeTarget.Run(input),
            "orderedmap" => OrderedMapTarget.Run(input),
            "reader" => ReaderTarget.Run(input),
            _ => throw new ArgumentException($"unknown fuzz target '{target}' (one of: {string.Join(", ", Names)})", nameof(target)),
        };
    }

    /// <summary>
    /// Runs one input on a worker thread with a wall-clock limit: past it the input counts as a hang (a finding).
    /// The worker is abandoned, not killed (.NET cannot abort threads), so a replay stops at the first hang.
    /// </summary>
    public static FuzzOutcome RunWithTimeout(string target, byte[] input, TimeSpan limit)
    {
        FuzzOutcome outcome = FuzzOutcome.Ok;
        Exception? error = null;
        var worker = new Thread(() =>
        {
            try { outcome = Run(target, input); }
            catch (Exception e) { error = e; }
        }, 16 << 20) { IsBackground = true, Name = $"fuzz-{target}" };
        worker.Start();
        if (!worker.Join(limit)) throw new FuzzFindingException($"{target}: no result after {limit.TotalSeconds:0} s (hang)");
        if (error != null) System.Runtime.ExceptionServices.ExceptionDispatchInfo.Capture(error).Throw();
        return outcome;
    }

    /// <summary>Every input file under the given files/directories (recursively), sorted by path; dot-files skipped.</summary>
    public static List<string> InputFiles(IEnumerable<string> paths)
    {
        var files = new List<string>();
        foreach (var p in paths)
        {
            if (Directory.Exists(p)) files.AddRange(Directory.EnumerateFiles(p, "*", SearchOption.AllDirectories).Where(f => !Path.GetFileName(f).StartsWith('.')));
            else if (File.Exists(p)) files.Add(p);
            else throw new FileNotFoundException($"no such input file or directory: {p}");
        }
        files.Sort(StringComparer.Ordinal);
        return files;
    }

    /// <summary>Diagnostics sink for replays (checker reports, corruption messages); null = silent.</summary>
    public static Action<string>? Log { get; set; }

    /// <summary>True for the exceptions a harness treats as the expected outcome of damaged input.</summary>
    public static bool IsExpected(Exception e) => e is CorruptionException;
}
