using Xfbtree.Xfs.Tests.Repair;
using Xfbtree.Xfs.Write.Engine;
using static Xfbtree.Xfs.Tests.Write.WriteEngineTestSupport;

namespace Xfbtree.Xfs.Tests.Write;

/// <summary>Locks: different AGs in parallel, ordered restart, many threads.</summary>
public sealed class WriteEngineConcurrencyTests
{
    static readonly TimeSpan Patience = TimeSpan.FromSeconds(60);

    /// <summary>
    /// Two transactions in different AGs both reach a barrier while each holds its AG lock: with any global lock
    /// around operations the second could never get there and the barrier would time out.
    /// </summary>
    [Fact]
    public void WriteEngine_TransactionsInDifferentAgsRunInParallel()
    {
        using var scratch = new RepairScratch();
        string image = scratch.CopyFixture("fresh-4ag");
        using (var engine = WriteEngine.Open(image, Fast))
        {
            using var barrier = new Barrier(2);
            bool[] met = new bool[2];
            void Worker(int i)
            {
                uint agno = (uint)(i + 1);
                engine.Execute($"worker {i}", tx =>
                {
                    tx.LockAg(agno);
                    AllocatedExtent e = tx.Allocate(new AllocationRequest(engine.Geometry.AgbToFsb(agno, 100), 4, 4, AllocationPurpose.FileData, OnlyAg: agno));
                    met[i] = barrier.SignalAndWait(Patience);
                    tx.Free(e.AgNumber, e.AgBlock, e.Length);
                });
            }
            var threads = new[] { new Thread(() => Worker(0)), new Thread(() => Worker(1)) };
            foreach (var t in threads) t.Start();
            foreach (var t in threads) Assert.True(t.Join(Patience), "a worker hung");
            Assert.True(met[0] && met[1], "the two transactions did not hold their AG locks at the same time");
            AssertInvariants(engine, "after the parallel pair");
            engine.Close();
        }
        AssertOraclesClean(image, "parallel pair");
    }

    /// <summary>
    /// A holds AG 2 and asks for AG 1, which B holds: A's try fails, A is cancelled and restarted with AG 1 taken
    /// first (so it waits for B in lock order instead of deadlocking), and both commit.
    /// </summary>
    [Fact]
    public void WriteEngine_LowerAgOutOfOrderRestartsWithThatAgFirst()
    {
        using var scratch = new RepairScratch();
        string image = scratch.CopyFixture("fresh-4ag");
        using (var engine = WriteEngine.Open(image, Fast))
        {
            using var bHolds1 = new ManualResetEventSlim();
            using var aRestarted = new ManualResetEventSlim();
            int attemptsA = 0;
            Exception? failure = null;
            var a = new Thread(() =>
            {
                try
                {
                    engine.Execute("A", tx =>
                    {
                        int attempt = Interlocked.Increment(ref attemptsA);
                        if (attempt == 2)
                        {
                            aRestarted.Set();
                        }
                        tx.LockAg(2);
                        if (attempt == 1)
                        {
                            Assert.True(bHolds1.Wait(Patience));
                        }
                        tx.LockAg(1); // out of order: restarts the first time
                        Assert.True(tx.HoldsAg(1) && tx.HoldsAg(2));
                        AllocatedExtent e = tx.Allocate(new AllocationRequest(engine.Geometry.AgbToFsb(1, 200), 2, 2, AllocationPurpose.FileData, OnlyAg: 1));
                        tx.Free(e.AgNumber, e.AgBlock, e.Length);
                    });
                }
                catch (Exception e)
                {
                    failure = e;
                }
            });
            var b = new Thread(() =>
            {
                try
                {
                    engine.Execute("B", tx =>
                    {
                        tx.LockAg(1);
                        bHolds1.Set();
                        Assert.True(aRestarted.Wait(Patience), "A did not restart");
                    });
                }
                catch (Exception e)
                {
                    failure = e;
                }
            });
            a.Start();
            b.Start();
            Assert.True(a.Join(Patience) && b.Join(Patience), "deadlock");
            Assert.Null(failure);
            Assert.Equal(2, attemptsA);
            AssertInvariants(engine, "after the restart");
            engine.Close();
        }
        AssertOraclesClean(image, "restart");
    }

    [Fact]
    public void WriteEngine_ManyThreadsOverAllAgsKeepTheInvariants()
    {
        using var scratch = new RepairScratch();
        string image = scratch.CopyFixture("aged-small");
        using (var engine = WriteEngine.Open(image, Fast))
        {
            const int Threads = 4;
            var errors = new System.Collections.Concurrent.ConcurrentQueue<Exception>();
            var threads = Enumerable.Range(0, Threads).Select(i => new Thread(() =>
            {
                var rnd = new Random(100 + i);
                try
                {
                    for (int t = 0; t < 15; t++)
                    {
                        engine.Execute($"thread {i} tx {t}", tx => WriteSpaceAllocationTests.NetZeroTransaction(tx, rnd, rnd.Next(1, 30)));
                    }
                }
                catch (Exception e)
                {
                    errors.Enqueue(e);
                }
            })).ToArray();
            foreach (var th in threads) th.Start();
            foreach (var th in threads) Assert.True(th.Join(TimeSpan.FromMinutes(5)), "a thread hung");
            Assert.True(errors.IsEmpty, string.Join("\n\n", errors));
            AssertInvariants(engine, "after the threads");
            engine.Close();
        }
        AssertOraclesClean(image, "many threads");
    }
}
