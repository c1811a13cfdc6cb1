using System.Diagnostics;
using Xunit.Abstractions;
using Xfbtree.Xfs.Tests.Repair;
using Xfbtree.Xfs.Trees;
using Xfbtree.Xfs.Write.Engine;
using static Xfbtree.Xfs.Tests.Write.WriteEngineTestSupport;

namespace Xfbtree.Xfs.Tests.Write;

/// <summary>Small transactions per second (allocate + map, then unmap + free), with and without fsync per commit; correctness checked after.</summary>
public sealed class WriteEngineThroughputTests(ITestOutputHelper output)
{
    [Theory]
    [InlineData(false, 200)]
    [InlineData(true, 30)]
    public void WriteEngine_SmallTransactionsPerSecond(bool sync, int pairs)
    {
        using var scratch = new RepairScratch();
        string image = scratch.CopyFixture("aged-small");
        using (var engine = WriteEngine.Open(image, Fast with { SyncCommits = sync }))
        {
            var rnd = new Random(1);
            using var self = Process.GetCurrentProcess();
            TimeSpan cpu0 = self.TotalProcessorTime;
            var watch = Stopwatch.StartNew();
            for (int i = 0; i < pairs; i++)
            {
                uint agno = (uint)rnd.Next((int)engine.Geometry.AgCount);
                ulong owner = (1UL << 40) + (ulong)i;
                AllocatedExtent e = engine.Execute("alloc", tx =>
                {
                    AllocatedExtent x = tx.Allocate(new AllocationRequest(engine.Geometry.AgbToFsb(agno, (uint)rnd.Next(16, 60000)), 1, 1, AllocationPurpose.FileData));
                    tx.RmapMap(x.AgNumber, new RmapRecord(x.AgBlock, 1, owner, 0), shared: false);
                    return x;
                });
                engine.Execute("free", tx =>
                {
                    tx.RmapUnmap(e.AgNumber, new RmapRecord(e.AgBlock, 1, owner, 0), shared: false);
                    tx.Free(e.AgNumber, e.AgBlock, 1);
                });
            }
            double perSecond = 2 * pairs / watch.Elapsed.TotalSeconds;
            self.Refresh();
            double cpuPerTx = (self.TotalProcessorTime - cpu0).TotalMilliseconds / (2 * pairs);
            var stats = engine.Image.Cache.Statistics;
            output.WriteLine($"aged-small, fsync per commit {sync}: {2 * pairs} transactions in {watch.Elapsed.TotalMilliseconds:F0} ms = {perSecond:F0}/s ({cpuPerTx:F2} ms CPU each, whole process, load average {File.ReadAllText("/proc/loadavg").Split(' ')[0]}); cache hits {stats.Hits}, misses {stats.Misses}, writes {stats.Writes}");
            AssertInvariants(engine, "after the throughput run");
            engine.Close();
        }
    }
}
