using Xfbtree.Xfs.Online;
using Xfbtree.Xfs.Tests.Repair;
using Xfbtree.Xfs.Tests.Write;
using Xfbtree.Xfs.Write;
using Xfbtree.Xfs.Write.Engine;
using Xfbtree.Cli.Stress;
using Xunit.Abstractions;

namespace Xfbtree.Xfs.Tests.Online;

/// <summary>
/// A damaged rmapbt found while the engine runs (a corruption kind of the tests' own injector, RmapCorruptor, applied before the
/// start): the online check finds it and marks the AG sick, the stress workload goes on and avoids the AG, an online
/// repair rebuilds it meanwhile, the AG is healthy again; at the end the offline oracles (xfbtree rmap check,
/// xfs_repair -n) are clean and every model file is intact. Five kinds by default, all with XFBTREE_LONG_TESTS=1.
/// </summary>
public sealed class OnlineRmapDamageTests(ITestOutputHelper output)
{
    private const uint DamagedAg = 1;
    private static readonly bool Long = Environment.GetEnvironmentVariable("XFBTREE_LONG_TESTS") == "1";
    private static readonly string[] DefaultKinds = ["rec-extra", "rec-missing", "leaf-crc", "node-ptr", "agf-root"];

    public static TheoryData<string> Kinds()
    {
        var data = new TheoryData<string>();
        foreach (string kind in Long ? RepairTools.AllCorruptionKinds : DefaultKinds)
        {
            data.Add(kind);
        }
        return data;
    }

    /// <summary>The repair as the stress run's background job: once, while the workers run.</summary>
    private sealed class RepairOnce(WriteEngine engine, uint agno) : IStressBackground
    {
        public OnlineRmapRepairResult? Result { get; private set; }

        public bool SickDuringRepair { get; private set; }

        public void Run(Func<bool> workloadDone)
        {
            SickDuringRepair = engine.Ag(agno).IsSick;
            Result = OnlineRmapRepair.Run(engine, agno);
        }
    }

    [Theory]
    [MemberData(nameof(Kinds))]
    public void OnlineRepairRebuildsADamagedRmapbtUnderLoad(string kind)
    {
        using var scratch = new RepairScratch();
        string image = scratch.CopyFixture("aged-small");
        ToolResult corrupt = RepairTools.Corrupt(image, kind, seed: 1, ag: (int)DamagedAg);
        Assert.True(corrupt.ExitCode == 0, $"RmapCorruptor {kind}: {corrupt}");

        using (var fs = XfsFileSystem.Open(image, OnlineTestSupport.Fast))
        {
            EngineAg ag = fs.Engine.Ag(DamagedAg);
            // The online check (scrub) finds the damage; the AG is sick from then on (or already, from the open).
            OnlineRepairVerdict before = OnlineRepairOracle.Verify(fs.Engine, DamagedAg);
            Assert.False(before.IsClean, $"{kind}: the online check found nothing");
            ag.MarkSick($"rmapbt damaged: {before.Detail}");

            var target = new XfsStressTarget(fs);
            StressModel model = StressModel.Load(target, 7, new StressModelOptions { MaxFileSize = 256 << 10 });
            var repair = new RepairOnce(fs.Engine, DamagedAg);
            StressResult result = new StressRunner(target, model, new StressOptions { Ops = 150, Threads = 2, Seed = 7, Background = repair }).Run();
            output.WriteLine($"{kind}: {repair.Result}; {result.Total} ops, corrupt failures {result.FailedTotal(WriteErrorKind.Corrupt)}");
            Assert.True(result.Problems.Count == 0, $"{kind}: {string.Join("; ", result.Problems)}");
            Assert.True(repair.SickDuringRepair, $"{kind}: the AG was not sick when the repair started");
            Assert.NotNull(repair.Result);
            Assert.False(ag.IsSick, $"{kind}: the AG is still sick after the repair ({ag.SickReason})");

            OnlineRepairVerdict after = OnlineRepairOracle.Verify(fs.Engine, DamagedAg);
            Assert.True(after.IsClean, $"{kind}: after the online repair: missing {after.Missing} extra {after.Extra} different {after.Different} structure {after.Structure}: {after.Detail}");
            List<string> problems = model.Verify(target);
            Assert.True(problems.Count == 0, $"{kind}: {string.Join("; ", problems)}");
            // More writes after the repair keep the new tree right.
            fs.Mkdir("/after-repair");
            fs.Create("/after-repair/f");
            fs.Write("/after-repair/f", 0, OnlineTestSupport.Pattern(1 << 20, 3));
            Assert.True(OnlineRepairOracle.Verify(fs.Engine, DamagedAg).IsClean, $"{kind}: after more writes");
            fs.Close();
        }
        WriteEngineTestSupport.AssertOraclesClean(image, $"{kind}: after close");
    }
}
