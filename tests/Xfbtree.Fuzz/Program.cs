using SharpFuzz;

namespace Xfbtree.Fuzz;

/// <summary>
/// <code>
/// Xfbtree.Fuzz TARGET                 afl++ mode: SharpFuzz fork-server loop, one input per run on stdin
///                                     (outside afl-fuzz: runs stdin once, a finding ends with a stack trace)
/// Xfbtree.Fuzz TARGET PATH...         replays files and directories of inputs in-process; exit 1 on any finding
/// Xfbtree.Fuzz make-seeds DIR         writes the seed corpora DIR/TARGET/* (btree and orderedmap)
/// </code>
/// TARGET is btree, reader or orderedmap; see docs/fuzzing.md.
/// </summary>
internal static class Program
{
    static int Main(string[] args)
    {
        if (args.Length == 0)
        {
            Console.Error.WriteLine("usage: Xfbtree.Fuzz TARGET [PATH...] | make-seeds DIR   (TARGET: " + string.Join(", ", FuzzTargets.Names) + ")");
            return 2;
        }
        if (args[0] == "make-seeds")
        {
            if (args.Length != 2) { Console.Error.WriteLine("usage: Xfbtree.Fuzz make-seeds DIR"); return 2; }
            foreach (var (path, bytes) in SeedCorpus.Write(args[1])) Console.WriteLine($"{bytes,7} {path}");
            return 0;
        }
        string target = args[0];
        if (!FuzzTargets.Names.Contains(target)) { Console.Error.WriteLine($"unknown target '{target}'"); return 2; }
        if (args.Length > 1)
        {
            EnsureCoverageMap();
            if (Verbose) FuzzTargets.Log = m => Console.WriteLine("  " + m);
            return Replay(target, args[1..]);
        }
        // No warm-up here: the instrumented assemblies write to SharpFuzz's coverage map, which exists only once
        // Fuzzer.Run has attached afl's shared memory.
        Fuzzer.Run(stream =>
        {
            using var ms = new MemoryStream();
            stream.CopyTo(ms);
            FuzzTargets.Run(target, ms.GetBuffer().AsSpan(0, (int)ms.Length));
        });
        return 0;
    }

    /// <summary>
    /// An instrumented build writes every edge into SharpFuzz's coverage map, which only exists under afl-fuzz: give a
    /// replay in such a build a scratch map so that it does not write through a null pointer.
    /// </summary>
    static unsafe void EnsureCoverageMap()
    {
        if (SharpFuzz.Common.Trace.SharedMem == null)
            SharpFuzz.Common.Trace.SharedMem = (byte*)System.Runtime.InteropServices.NativeMemory.AllocZeroed(1 << 16);
    }

    static readonly bool Verbose = Environment.GetEnvironmentVariable("XFBTREE_FUZZ_VERBOSE") == "1";

    static int Replay(string target, string[] paths)
    {
        int ok = 0, corrupt = 0, findings = 0;
        if (int.TryParse(Environment.GetEnvironmentVariable("XFBTREE_FUZZ_REPEAT"), out int repeat) && repeat > 0)
        {
            // Timing aid: runs every input `repeat` times in this thread and prints the mean time per run.
            foreach (var file in FuzzTargets.InputFiles(paths))
            {
                var bytes = File.ReadAllBytes(file);
                FuzzTargets.Run(target, bytes);
                var sw = System.Diagnostics.Stopwatch.StartNew();
                for (int i = 0; i < repeat; i++) FuzzTargets.Run(target, bytes);
                Console.WriteLine($"{sw.Elapsed.TotalMicroseconds / repeat,10:0.0} us  {file}");
            }
            return 0;
        }
        foreach (var file in FuzzTargets.InputFiles(paths))
        {
            try
            {
                var outcome = FuzzTargets.RunWithTimeout(target, File.ReadAllBytes(file), TimeSpan.FromSeconds(30));
                if (outcome == FuzzOutcome.Ok) ok++; else corrupt++;
                if (Verbose) Console.WriteLine($"{outcome,-18} {file}");
            }
            catch (Exception e)
            {
                findings++;
                Console.WriteLine($"FINDING {file}: {e.GetType().Name}: {e.Message}");
                Console.WriteLine(e.StackTrace);
                if (e is FuzzFindingException { Message: var m } && m.Contains("(hang)", StringComparison.Ordinal)) break;
            }
        }
        Console.WriteLine($"{target}: {ok + corrupt + findings} inputs: {ok} ok, {corrupt} corruption reported, {findings} findings");
        return findings == 0 ? 0 : 1;
    }
}
