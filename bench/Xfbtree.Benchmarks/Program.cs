using BenchmarkDotNet.Running;

namespace Xfbtree.Benchmarks;

internal static class Program
{
    private static void Main(string[] args)
    {
        // --quick / --ordered-map: the single-pass ordered-map suite; everything else goes to BenchmarkDotNet.
        if (LargerThanRam.LargerThanRamBenchmark.TryRun(args) || LargerThanRam.HugePageAb.TryRun(args) || OrderedMap.OrderedMapSuite.TryRun(args))
        {
            return;
        }
        BenchmarkSwitcher.FromAssembly(typeof(Program).Assembly).Run(args);
    }
}
