using System.Buffers.Binary;
using System.Diagnostics;
using Xunit.Abstractions;
using Xfbtree.Buffers;
using Xfbtree.Xfs.Format;
using Xfbtree.Xfs.Tests.Repair;
using Xfbtree.Xfs.Tests.Trees;
using Xfbtree.Xfs.Write;
using Xfbtree.Xfs.Write.Engine;
using static Xfbtree.Xfs.Tests.Write.WriteEngineTestSupport;

namespace Xfbtree.Xfs.Tests.Write;

/// <summary>
/// Crash safety of the redo journal: the engine stops at its k-th write (image or journal) for many k, in
/// process (every later write refused, then the engine dropped: what a kill -9 leaves, since the page cache
/// survives it) and for real in a child test host killed by SIGKILL. Reopening replays the journal; the state
/// must then be exactly the state after some number m of committed transactions (each wholly present or absent,
/// m at least the number that returned), the invariants hold, and after a clean close xfs_repair -n exits 0.
/// </summary>
public sealed class WriteJournalCrashTests(ITestOutputHelper output)
{
    static readonly bool Long = Environment.GetEnvironmentVariable("XFBTREE_LONG_TESTS") == "1";
    const string ChildImageVariable = "XFBTREE_TEST_WRITE_CRASH_IMAGE";
    const string ChildWriteVariable = "XFBTREE_TEST_WRITE_CRASH_AT";
    const int Transactions = 6;
    const int AtimeOffset = 32;

    /// <summary>The deterministic workload: transaction j reshapes the trees (net zero) and stamps j into the root inode.</summary>
    static int RunWorkload(WriteEngine engine, Action<int>? committed = null)
    {
        var rnd = new Random(77);
        ulong root = engine.Image.Superblock.RootIno;
        int done = 0;
        for (int j = 1; j <= Transactions; j++)
        {
            int count = j % 2 == 0 ? 120 : 15;
            engine.Execute($"crash workload {j}", tx =>
            {
                IncoreInode inode = engine.GetInode(root);
                tx.LockInodes(inode);
                BinaryPrimitives.WriteUInt64BigEndian(inode.Core.AsSpan(AtimeOffset), (ulong)j);
                tx.LogInode(inode);
                WriteSpaceAllocationTests.NetZeroTransaction(tx, rnd, count);
            });
            done = j;
            committed?.Invoke(j);
        }
        return done;
    }

    /// <summary>What identifies a state: the stamp in the root inode and every AGF and AGFL sector.</summary>
    static (ulong Stamp, string Headers) Fingerprint(WriteEngine engine)
    {
        var sb = new System.Text.StringBuilder();
        for (uint a = 0; a < engine.Geometry.AgCount; a++)
        {
            foreach (var kind in new[] { AgHeaderKind.Agf, AgHeaderKind.Agfl })
            {
                BlockBuffer b = engine.Image.ReadHeaderBuffer(kind, a);
                try { sb.Append(Convert.ToHexString(b.Span)); }
                finally { engine.Image.Cache.Release(b); }
            }
        }
        ulong stamp = BinaryPrimitives.ReadUInt64BigEndian(engine.GetInode(engine.Image.Superblock.RootIno).Core.AsSpan(AtimeOffset));
        return (stamp, sb.ToString());
    }

    sealed record Reference(List<string> States, int OpenWrites, int TotalWrites, ulong InitialStamp);

    static Reference BuildReference(RepairScratch scratch, string original)
    {
        string image = scratch.Copy(original, "reference.img");
        var counter = new WriteFaultInjector(int.MaxValue, () => { });
        var states = new List<string>();
        int openWrites;
        ulong initial;
        using (var engine = WriteEngine.Open(image, Fast with { Faults = counter }))
        {
            openWrites = counter.Writes;
            var (stamp, headers) = Fingerprint(engine);
            initial = stamp;
            states.Add(headers);
            RunWorkload(engine, j =>
            {
                var (s, h) = Fingerprint(engine);
                Assert.Equal((ulong)j, s);
                states.Add(h);
            });
            engine.Close();
        }
        AssertOraclesClean(image, "reference run");
        File.Delete(image);
        return new Reference(states, openWrites, counter.Writes, initial);
    }

    /// <summary>Reopens a crashed image and checks it is one of the reference states; returns m.</summary>
    int Recover(string image, Reference reference, int returned, string what, bool oracle)
    {
        using var engine = WriteEngine.Open(image, Fast);
        var (stamp, headers) = Fingerprint(engine);
        int m = stamp == reference.InitialStamp ? 0 : (int)stamp;
        Assert.InRange(m, 0, Transactions);
        Assert.True(m >= returned, $"{what}: transaction {returned} returned but the reopened image shows only {m}");
        Assert.True(m <= returned + 1, $"{what}: the image shows {m} transactions, only {returned} returned and one was in flight");
        Assert.True(reference.States[m] == headers, $"{what}: the AG headers are not those after exactly {m} transactions (a torn transaction)");
        AssertInvariants(engine, what);
        engine.Close();
        if (oracle)
        {
            AssertOraclesClean(image, what);
        }
        return m;
    }

    [Fact]
    public void WriteJournal_CrashAtManyWritesLeavesWholeTransactions()
    {
        using var scratch = new RepairScratch();
        string original = scratch.CopyFixture("fresh-4ag");
        Reference reference = BuildReference(scratch, original);
        int total = reference.TotalWrites;
        var ks = new SortedSet<int>();
        if (Long)
        {
            for (int k = 1; k <= total + 1; k++) ks.Add(k);
        }
        else
        {
            for (int k = 1; k <= 4; k++) ks.Add(k);
            for (int k = total - 3; k <= total + 1; k++) ks.Add(k);
            var rnd = new Random(9);
            while (ks.Count < 22) ks.Add(rnd.Next(1, total + 1));
        }
        var outcomes = new Dictionary<int, int>();
        int replayedSomething = 0, index = 0;
        foreach (int k in ks)
        {
            string image = scratch.Copy(original, $"crash-{k}.img");
            var faults = new WriteFaultInjector(k, () => { });
            int returned = 0;
            WriteEngine? engine = null;
            try
            {
                engine = WriteEngine.Open(image, Fast with { Faults = faults });
                returned = RunWorkload(engine, j => returned = j);
                engine.Close();
            }
            catch (Exception e) when (faults.Crashed && (e is SimulatedCrashException || e.InnerException is SimulatedCrashException || e is XfsWriteException))
            {
            }
            finally
            {
                engine?.Dispose();
            }
            Assert.True(faults.Crashed || k > total, $"k={k}: the crash point was never reached ({faults.Writes} writes)");
            bool journalLeft = File.Exists(image + ".xfbtree-journal") && new FileInfo(image + ".xfbtree-journal").Length > 64;
            if (journalLeft) replayedSomething++;
            int m = Recover(image, reference, returned, $"k={k}", oracle: Long || index++ % 10 == 0 || k > total - 2);
            outcomes[m] = outcomes.GetValueOrDefault(m) + 1;
            File.Delete(image);
        }
        output.WriteLine($"{total} writes in the reference run ({reference.OpenWrites} at open); {ks.Count} crash points; " +
            $"journal with records left behind {replayedSomething} times; committed transactions found: {string.Join(", ", outcomes.OrderBy(o => o.Key).Select(o => $"{o.Key}:{o.Value}x"))}");
        Assert.True(replayedSomething > 0, "no crash point left a journal to replay");
        Assert.True(outcomes.Count >= 4, "the crash points did not spread over the transactions");
    }

    [Fact]
    public void WriteJournal_TornTailAndDamagedRecordsStopTheReplay()
    {
        using var scratch = new RepairScratch();
        string original = scratch.CopyFixture("fresh-4ag");
        string image = scratch.Copy(original, "three.img");
        ulong root;
        using (var engine = WriteEngine.Open(image, Fast with { CheckpointBytes = long.MaxValue }))
        {
            root = engine.Image.Superblock.RootIno;
            var rnd = new Random(4);
            for (int j = 1; j <= 3; j++)
            {
                engine.Execute("stamp", tx =>
                {
                    IncoreInode inode = engine.GetInode(root);
                    tx.LockInodes(inode);
                    BinaryPrimitives.WriteUInt64BigEndian(inode.Core.AsSpan(AtimeOffset), (ulong)j);
                    tx.LogInode(inode);
                    WriteSpaceAllocationTests.NetZeroTransaction(tx, rnd, 40);
                });
            }
            // Dispose without Close: the journal keeps three records, NEEDSREPAIR stays.
        }
        Assert.True(NeedsRepair(image));
        byte[] journal = File.ReadAllBytes(image + ".xfbtree-journal");
        // Record boundaries: each record is a 24-byte header, its payload, an 8-byte trailer.
        var ends = new List<int>();
        for (int at = 64; at < journal.Length;)
        {
            long payload = BinaryPrimitives.ReadInt64LittleEndian(journal.AsSpan(at + 16));
            at += 24 + (int)payload + 8;
            ends.Add(at);
        }
        Assert.Equal(3, ends.Count);
        Assert.Equal(journal.Length, ends[^1]);
        // The original image plus the journal torn one byte before its end: two records replay, the third is ignored.
        foreach (var (name, bytes, expect) in new[]
        {
            ("torn", journal[..^1], 2),
            ("no-trailer", journal[..(ends[2] - 8)], 2),
            ("damaged-second", Damaged(journal, ends[0] + 40), 1),
            ("all", journal, 3),
        })
        {
            string copy = scratch.Copy(original, name + ".img");
            // The original image as the crashed engine left it: NEEDSREPAIR set, the journal beside it.
            SetNeedsRepair(copy);
            File.WriteAllBytes(copy + ".xfbtree-journal", bytes);
            using (var engine = WriteEngine.Open(copy, Fast))
            {
                Assert.Equal(expect, engine.RecordsReplayed);
                Assert.Equal((ulong)expect, BinaryPrimitives.ReadUInt64BigEndian(engine.GetInode(root).Core.AsSpan(AtimeOffset)));
                AssertInvariants(engine, name);
                engine.Close();
            }
            AssertOraclesClean(copy, name);
        }
        // Records but no NEEDSREPAIR: someone (xfs_repair) changed the image since the crash; the stale journal is refused.
        string repaired = scratch.Copy(original, "repaired.img");
        File.WriteAllBytes(repaired + ".xfbtree-journal", journal);
        XfsWriteException stale = OpenFails(repaired);
        Assert.Equal(WriteErrorKind.NotSupported, stale.Kind);
        Assert.Contains("stale journal", stale.Message, StringComparison.Ordinal);
        // A journal of another filesystem is refused, not replayed.
        string foreign = scratch.Copy(original, "foreign.img");
        byte[] other = (byte[])journal.Clone();
        other[20] ^= 0xFF;
        BinaryPrimitives.WriteUInt32LittleEndian(other.AsSpan(60), XfsCrc.Crc32C(other.AsSpan(0, 60)));
        File.WriteAllBytes(foreign + ".xfbtree-journal", other);
        XfsWriteException e = OpenFails(foreign);
        Assert.Equal(WriteErrorKind.NotSupported, e.Kind);
        Assert.Contains("another filesystem", e.Message, StringComparison.Ordinal);
    }

    static void SetNeedsRepair(string image)
    {
        uint incompat = IncompatViaXfsDb(image);
        TreeFixtures.Run(TreeFixtures.Tool("xfs_db"), ["-x", "-c", "sb 0", "-c", $"write features_incompat {incompat | 0x10}", image]);
    }

    static byte[] Damaged(byte[] journal, int offset)
    {
        byte[] copy = (byte[])journal.Clone();
        copy[offset] ^= 0x5A;
        return copy;
    }

    /// <summary>
    /// The real thing: a child test host runs the workload and is killed by SIGKILL at its k-th write.
    /// </summary>
    [Fact]
    public async Task WriteJournal_KilledChildProcessRecovers()
    {
        using var scratch = new RepairScratch();
        string original = scratch.CopyFixture("fresh-4ag");
        Reference reference = BuildReference(scratch, original);
        int[] ks = Long ? [reference.OpenWrites + 3, reference.TotalWrites / 3, reference.TotalWrites / 2, reference.TotalWrites - 5, reference.TotalWrites - 1]
                        : [reference.TotalWrites / 2];
        foreach (int k in ks)
        {
            string image = scratch.Copy(original, $"child-{k}.img");
            var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
            foreach (var a in new[] { "test", typeof(WriteJournalCrashTests).Assembly.Location, "--filter", $"FullyQualifiedName={typeof(WriteJournalCrashTests).FullName}.{nameof(WriteJournal_FaultInjectorStopsAtTheKthWrite_AndHostsTheCrashChild)}", "--nologo" })
                psi.ArgumentList.Add(a);
            psi.Environment[ChildImageVariable] = image;
            psi.Environment[ChildWriteVariable] = k.ToString(System.Globalization.CultureInfo.InvariantCulture);
            using var p = ChildProcesses.Start(psi);
            var stdout = p.StandardOutput.ReadToEndAsync();
            var stderr = p.StandardError.ReadToEndAsync();
            using (var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(180)))
                await p.WaitForExitAsync(timeout.Token);
            string log = await stdout + await stderr;
            Assert.True(File.Exists(image + ".started"), "the child never ran:\n" + log);
            Assert.False(File.Exists(image + ".survived"), "the child survived its crash point:\n" + log);
            Assert.NotEqual(0, p.ExitCode);
            int returned = File.Exists(image + ".committed") ? int.Parse(File.ReadAllText(image + ".committed"), System.Globalization.CultureInfo.InvariantCulture) : 0;
            int m = Recover(image, reference, returned, $"child k={k}", oracle: true);
            output.WriteLine($"child killed at write {k} of {reference.TotalWrites}: {returned} transactions had returned, {m} found after replay");
        }
    }

    /// <summary>
    /// In a normal run: the fault injector lets exactly k − 1 writes through and refuses every later one. In the
    /// child host of <see cref="WriteJournal_KilledChildProcessRecovers"/> (its variables set): runs the workload
    /// with the default crash action, SIGKILL at the k-th write.
    /// </summary>
    [Fact]
    public void WriteJournal_FaultInjectorStopsAtTheKthWrite_AndHostsTheCrashChild()
    {
        string? image = Environment.GetEnvironmentVariable(ChildImageVariable);
        if (image is null)
        {
            int crashes = 0;
            var faults = new WriteFaultInjector(3, () => crashes++);
            faults.BeforeWrite();
            faults.BeforeWrite();
            Assert.False(faults.Crashed);
            Assert.Throws<SimulatedCrashException>(faults.BeforeWrite);
            Assert.Throws<SimulatedCrashException>(faults.BeforeWrite);
            Assert.True(faults.Crashed);
            Assert.Equal(1, crashes);
            Assert.Equal(3, faults.Writes);
            return;
        }
        int k = int.Parse(Environment.GetEnvironmentVariable(ChildWriteVariable)!, System.Globalization.CultureInfo.InvariantCulture);
        File.WriteAllText(image + ".started", "");
        using var engine = WriteEngine.Open(image, Fast with { Faults = new WriteFaultInjector(k) });
        RunWorkload(engine, j => File.WriteAllText(image + ".committed", j.ToString(System.Globalization.CultureInfo.InvariantCulture)));
        engine.Close();
        File.WriteAllText(image + ".survived", "");
    }
}
