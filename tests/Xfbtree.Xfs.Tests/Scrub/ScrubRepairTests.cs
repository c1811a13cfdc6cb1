using System.Globalization;
using Xfbtree.Xfs.Format;
using Xfbtree.Xfs.Online;
using Xfbtree.Xfs.Tests.Online;
using Xfbtree.Xfs.Tests.Repair;
using Xfbtree.Xfs.Tests.Trees;
using Xfbtree.Xfs.Tests.Write;
using Xfbtree.Xfs.Write;
using Xfbtree.Xfs.Write.Engine;
using Xfbtree.Cli.Stress;
using Xunit.Abstractions;

namespace Xfbtree.Xfs.Tests.Scrub;

/// <summary>
/// <c>xfbtree scrub --repair</c> on the corruption matrix (geom-bs1k AG 1, the kinds of <see cref="ScrubCorruptor"/>:
/// 56 in the suite, all 79 with XFBTREE_LONG_TESTS=1): the damage is reported, repaired through
/// the write engine, the image checks clean again, NEEDSREPAIR is cleared, xfs_repair -n agrees, and the kernel mounts
/// it, reads every file, writes and deletes files (the first kind of each tree in the suite, every kind in long mode).
/// </summary>
public sealed class ScrubRepairMatrixTests(ITestOutputHelper output)
{
    private const string Fixture = "geom-bs1k";
    private const uint Ag = 1;

    private static bool Long => Environment.GetEnvironmentVariable("XFBTREE_LONG_TESTS") == "1";

    /// <summary>Kinds the suite repairs (record fields, a leaf CRC, a node or root pointer, the header counters: each
    /// reaches the rebuild through a different finding); XFBTREE_LONG_TESTS=1 repairs every kind.</summary>
    private static readonly HashSet<string> SuiteKinds =
    [
        "rec-blockcount", "rec-startblock", "rec-refcount", "rec-freecount", "rec-free", "rec-startino", "leaf-crc", "node-ptr", "root-ptr",
        "agf-freeblks", "agf-btreeblks", "agf-longest", "agf-cntlevel", "agf-refcount-blocks", "agf-refcount-level",
        "agi-count", "agi-level", "agi-freecount", "agi-free-level", "agf-flcount", "agf-fllast", "agfl-entry",
        "nlink-dir-high", "nlink-file-high", "nlink-file-zero", "nlink-zero-on-list",
        // The AGI unlinked lists: the AGI rebuild relinks them from the inodes with nlink 0 (and the link count repair
        // takes an inode it gives links back off its list).
        "unlinked-linked-head", "unlinked-wrong-bucket", "unlinked-free-head", "unlinked-stale-next", "unlinked-cycle", "unlinked-leaked",
        // Directory entries: a wrong file type set from the inode's mode, an entry naming a free inode removed.
        "dirent-ftype", "dirent-free",
        // Every AG header and secondary superblock kind: each is a different way into the header rebuilds.
        "agf-magic", "agf-crc", "agf-bnoroot", "agf-cntroot", "agf-rmaproot", "agf-refcountroot", "agf-bnolevel", "agf-rmaplevel",
        "agf-rmapblocks", "agf-length", "agf-flfirst", "agfl-magic", "agfl-crc", "agi-magic", "agi-crc", "agi-length",
        "sb-magic", "sb-crc", "sb-agblocks", "sb-inoalignmt",
    ];

    /// <summary>Header kinds the kernel reads after in the suite (one per header: a sector that does not verify, or a
    /// secondary superblock field); every kind with XFBTREE_LONG_TESTS=1.</summary>
    private static readonly HashSet<string> SuiteKernelKinds = ["agf-magic", "agfl-crc", "agi-crc", "sb-agblocks", "unlinked-cycle"];

    public static IEnumerable<object[]> Cases() => ScrubCorruptor.Kinds.Where(k => Long || SuiteKinds.Contains(k.Name))
        .Select(k => new object[] { k.Tree, k.Name });

    [Theory]
    [MemberData(nameof(Cases))]
    public void RepairFixesEveryKindOfDamage(string tree, string name)
    {
        var kind = ScrubCorruptor.Kinds.Single(k => k.Tree == tree && k.Name == name);
        using var scratch = new RepairScratch();
        string image = scratch.CopyFixture(Fixture);
        output.WriteLine(ScrubCorruptor.Apply(image, kind, Ag));
        var (rc, stdout, stderr) = ScrubCli.Run(image, "--repair");
        output.WriteLine(stdout + stderr);
        if (kind.Finding == "nlinks")
        {
            Assert.Contains("nlinks: damaged", stdout, StringComparison.Ordinal);
            Assert.Contains("repair: nlinks: repaired", stdout, StringComparison.Ordinal);
        }
        else
        {
            Assert.Contains($"AG {Ag} {kind.Finding}: damaged", stdout, StringComparison.Ordinal);
            Assert.Matches($@"repair: AG {Ag} [A-Za-z+]+: repaired", stdout);
        }
        Assert.DoesNotContain("not repaired", stdout, StringComparison.Ordinal);
        Assert.True(rc == 0, $"scrub --repair must leave the image clean: exit {rc}");
        Assert.Contains("result after repair: clean", stdout, StringComparison.Ordinal);
        Assert.False(WriteEngineTestSupport.NeedsRepair(image), "NEEDSREPAIR must be cleared after the repair");
        var witness = RepairTools.XfsRepairCheck(image);
        Assert.True(witness.ExitCode == 0, $"xfs_repair -n after the repair: {witness}");
        if (Long || SuiteKernelKinds.Contains(name) || ScrubCorruptor.Kinds.First(k => k.Tree == tree).Name == name)
        {
            KernelOracle.RequireRootAndTools();
            KernelOracle.AssertKernelWorkloadAndRepair(image, output, $"the image repaired after {tree} {name}");
        }
    }

    [Fact]
    public void JsonReportCarriesTheRepairsAndTheCheckAfterThem()
    {
        using var scratch = new RepairScratch();
        string image = scratch.CopyFixture(Fixture);
        ScrubCorruptor.Apply(image, ScrubCorruptor.Kinds.First(k => k.Tree == "cntbt"), Ag);
        var (rc, stdout, _) = ScrubCli.Run(image, "--repair", "--json");
        Assert.Equal(0, rc);
        using var doc = System.Text.Json.JsonDocument.Parse(stdout);
        var root = doc.RootElement;
        Assert.Equal(Xfbtree.Cli.CommandLineHost.Version, root.GetProperty("version").GetString());
        Assert.True(root.GetProperty("damaged").GetBoolean());
        var repair = Assert.Single(root.GetProperty("repairs").EnumerateArray());
        Assert.Equal("bnobt+cntbt", repair.GetProperty("repair").GetString());
        Assert.Equal((int)Ag, repair.GetProperty("ag").GetInt32());
        Assert.True(repair.GetProperty("repaired").GetBoolean());
        Assert.True(root.GetProperty("afterRepair").GetProperty("clean").GetBoolean());
        Assert.Contains(root.GetProperty("afterRepair").GetProperty("structures").EnumerateArray(), s => s.GetProperty("structure").GetString() == "cntbt");
    }

    [Fact]
    public void OneAgRepairLeavesTheOtherAgsAlone()
    {
        using var scratch = new RepairScratch();
        string image = scratch.CopyFixture(Fixture);
        var kind = ScrubCorruptor.Kinds.First(k => k.Tree == "bnobt");
        ScrubCorruptor.Apply(image, kind, 1);
        ScrubCorruptor.Apply(image, kind, 2);
        var (rc, stdout, _) = ScrubCli.Run(image, "--ag", "1", "--repair");
        output.WriteLine(stdout);
        Assert.Equal(0, rc);
        Assert.Contains("repair: AG 1 bnobt+cntbt: repaired", stdout, StringComparison.Ordinal);
        Assert.DoesNotContain("AG 2", stdout, StringComparison.Ordinal);
        var after = ScrubCli.Run(image);
        Assert.Equal(1, after.ExitCode);
        Assert.Contains("AG 2 bnobt: damaged", after.Stdout, StringComparison.Ordinal);
        Assert.DoesNotContain("AG 1 bnobt: damaged", after.Stdout, StringComparison.Ordinal);
    }

    [Fact]
    public void DamageNoRepairCanFixIsReportedNotRepairedWithExit1()
    {
        // An AGF with a bad CRC whose rmapbt root does not verify either: the AGF rebuild finds the trees through the
        // rmapbt, and no block of the AG qualifies as its root, so it refuses with one line (nothing changed) and the
        // later repairs of that AG, the rmapbt's included, are skipped.
        using var scratch = new RepairScratch();
        string image = scratch.CopyFixture(Fixture);
        RepairTools.Exec(TreeFixtures.Tool("xfs_db"), ["-x", "-c", $"agf {Ag}", "-c", "addr rmaproot", "-c", "crc -i", image]);
        RepairTools.Exec(TreeFixtures.Tool("xfs_db"), ["-x", "-c", $"agf {Ag}", "-c", "crc -i", image]);
        byte[] before = File.ReadAllBytes(image);
        var (rc, stdout, stderr) = ScrubCli.Run(image, "--repair");
        output.WriteLine(stdout + stderr);
        Assert.Equal(1, rc);
        Assert.Contains($"AG {Ag} AGF: damaged", stdout, StringComparison.Ordinal);
        Assert.Contains($"repair: AG {Ag} AGF: not repaired: AG {Ag}: no rmapbt root found", stdout, StringComparison.Ordinal);
        Assert.Contains($"repair: AG {Ag} bnobt+cntbt: not repaired: an earlier repair of this AG failed", stdout, StringComparison.Ordinal);
        Assert.Contains($"repair: AG {Ag} rmapbt: not repaired: an earlier repair of this AG failed", stdout, StringComparison.Ordinal);
        Assert.Contains("result after repair: DAMAGED", stdout, StringComparison.Ordinal);
        Assert.False(WriteEngineTestSupport.NeedsRepair(image), "the engine's clean close clears NEEDSREPAIR even when a repair failed");
        // The refusal changed nothing in AG 1 (the engine's open and close write the primary superblock only).
        var geo = ReadGeometry(image);
        long agStart = (long)Ag * geo.AgBytes, agEnd = agStart + geo.AgBytes;
        Assert.True(before.AsSpan((int)agStart, (int)(agEnd - agStart)).SequenceEqual(File.ReadAllBytes(image).AsSpan((int)agStart, (int)(agEnd - agStart))),
            "a refused header repair must not write the AG");
    }

    private static (long AgBytes, int BlockSize) ReadGeometry(string image)
    {
        using var view = XfsImage.Open(image);
        return ((long)view.Geometry.AgBlocks * view.Geometry.BlockSize, view.Geometry.BlockSize);
    }

    /// <summary>
    /// The AGF's rmapbt root is found by a scan of the AG when the AGF names a block that is not one, and a stale
    /// copy of the tree left in the AG (the same blocks' contents, a second qualifying rmapbt) makes the choice
    /// ambiguous: the repair refuses rather than guess.
    /// </summary>
    [Fact]
    public void TwoQualifyingRmapbtRootsAreRefused()
    {
        using var scratch = new RepairScratch();
        string image = scratch.CopyFixture("fresh-4ag");
        var db = TreeFixtures.Tool("xfs_db");
        // fresh-4ag's AG 1 rmapbt is one leaf: copy it into the first AGFL block (OWN_AG, as a stale root freed to the
        // free list would be) with its address field rewritten, so that both verify, walk clean and own their blocks;
        // then break the AGF.
        long root = long.Parse(RepairTools.Exec(db, ["-r", "-c", "agf 1", "-c", "print rmaproot", image]).Stdout.Split('=')[1].Trim(), System.Globalization.CultureInfo.InvariantCulture);
        var geoInfo = ReadGeometry(image);
        long freeBlock = FirstFreeListBlock(image, 1);
        byte[] block = new byte[geoInfo.BlockSize];
        using (var f = new FileStream(image, FileMode.Open, FileAccess.ReadWrite))
        {
            f.Position = geoInfo.AgBytes + root * geoInfo.BlockSize;
            f.ReadExactly(block);
            long daddr = (geoInfo.AgBytes + freeBlock * geoInfo.BlockSize) / 512;
            System.Buffers.Binary.BinaryPrimitives.WriteInt64BigEndian(block.AsSpan(16), daddr);
            Xfbtree.Buffers.XfsCrc.Update(block, 52);
            f.Position = geoInfo.AgBytes + freeBlock * geoInfo.BlockSize;
            f.Write(block);
        }
        RepairTools.Exec(db, ["-x", "-c", "agf 1", "-c", "write -d magicnum 0x12345678", image]);
        var (rc, stdout, stderr) = ScrubCli.Run(image, "--repair");
        output.WriteLine(stdout + stderr);
        Assert.Equal(1, rc);
        Assert.Contains("repair: AG 1 AGF: not repaired: AG 1: 2 rmapbt trees qualify", stdout, StringComparison.Ordinal);
        Assert.Contains("the choice is ambiguous", stdout, StringComparison.Ordinal);
    }

    /// <summary>The block in the first active slot of an AG's free list (xfs_db).</summary>
    private static long FirstFreeListBlock(string image, uint ag)
    {
        var db = TreeFixtures.Tool("xfs_db");
        string first = RepairTools.Exec(db, ["-r", "-c", $"agf {ag}", "-c", "print flfirst", image]).Stdout.Split('=')[1].Trim();
        string outp = RepairTools.Exec(db, ["-r", "-c", $"agfl {ag}", "-c", $"print bno[{first}]", image]).Stdout;
        return long.Parse(outp.Split('=')[1].Trim(), System.Globalization.CultureInfo.InvariantCulture);
    }

    /// <summary>The library's own entry point, without the tool: scrub, repair what it found, scrub clean.</summary>
    [Fact]
    public void TheLibraryRepairsWhatItsScrubFound()
    {
        using var scratch = new RepairScratch();
        string image = scratch.CopyFixture(Fixture);
        ScrubCorruptor.Apply(image, ScrubCorruptor.Kinds.First(k => k.Tree == "cntbt"), Ag);
        Xfbtree.Xfs.Scrub.ScrubReport findings;
        using (var view = XfsImage.Open(image))
        {
            findings = Xfbtree.Xfs.Scrub.Scrubber.Run(view);
        }
        Assert.Contains(findings.Findings, f => f.Verdict == Xfbtree.Xfs.Scrub.ScrubVerdict.Damaged && f.AgNumber == Ag);
        var outcomes = Xfbtree.Xfs.Scrub.Scrubber.Repair(image, findings);
        foreach (var outcome in outcomes) output.WriteLine(outcome.ToString());
        Assert.Contains(outcomes, o => o.Repaired && o.AgNumber == Ag && o.Name.Contains("cntbt", StringComparison.Ordinal));
        using (var view = XfsImage.Open(image))
        {
            var after = Xfbtree.Xfs.Scrub.Scrubber.Run(view);
            Assert.DoesNotContain(after.Findings, f => f.Verdict == Xfbtree.Xfs.Scrub.ScrubVerdict.Damaged);
        }
        var witness = RepairTools.XfsRepairCheck(image);
        Assert.True(witness.ExitCode == 0, $"xfs_repair -n after the repair: {witness}");
    }

    [Fact]
    public void RepairOfACleanImageChangesNothing()
    {
        using var scratch = new RepairScratch();
        string image = scratch.CopyFixture("fresh-4ag");
        byte[] before = File.ReadAllBytes(image);
        var (rc, stdout, _) = ScrubCli.Run(image, "--repair");
        Assert.Equal(0, rc);
        Assert.DoesNotContain("repair:", stdout, StringComparison.Ordinal);
        Assert.True(before.AsSpan().SequenceEqual(File.ReadAllBytes(image)), "a clean image must not be written");
    }
}

/// <summary>Every fixture (every geometry: 1 KiB blocks, 4 KiB sectors, 32 AGs, nrext64, aged images) survives a
/// rebuild of every per-AG tree of every AG: the image scrubs clean and xfs_repair -n agrees.</summary>
public sealed class ScrubRepairGeometryTests(ITestOutputHelper output)
{
    /// <summary>Every fixture but aged-medium (15 s) in the suite; all with XFBTREE_LONG_TESTS=1.</summary>
    public static IEnumerable<object[]> Fixtures() => ScrubFixtureTests.Fixtures()
        .Where(f => Environment.GetEnvironmentVariable("XFBTREE_LONG_TESTS") == "1" || (string)f[0] != "aged-medium");

    [Theory]
    [MemberData(nameof(Fixtures))]
    public void RebuildingEveryTreeOfEveryAgLeavesTheImageClean(string fixture)
    {
        using var scratch = new RepairScratch();
        string image = scratch.CopyFixture(fixture);
        long repairs = 0, records = 0;
        using (var engine = WriteEngine.Open(image, OnlineTestSupport.Fast))
        {
            for (uint agno = 0; agno < engine.Geometry.AgCount; agno++)
            {
                var done = new List<AgRebuildResult> { OnlineFreeSpaceRepair.Run(engine, agno), OnlineInodeBtreeRepair.Run(engine, agno) };
                if (engine.Geometry.Superblock.HasReflink) done.Add(OnlineRefcountRepair.Run(engine, agno));
                repairs += done.Count;
                records += done.Sum(d => d.Records);
            }
            WriteEngineTestSupport.AssertInvariants(engine, fixture);
            engine.Close();
        }
        output.WriteLine($"{fixture}: {repairs} rebuilds, {records} records");
        var (rc, stdout, _) = ScrubCli.Run(image);
        Assert.True(rc == 0, $"{fixture} after rebuilding every tree:\n{stdout}");
        var witness = RepairTools.XfsRepairCheck(image);
        Assert.True(witness.ExitCode == 0, $"xfs_repair -n: {witness}");
    }
}

/// <summary>
/// A filesystem without sparse inodes whose chunks are aligned to less than a chunk: mkfs sets sb_inoalignmt to the
/// inode cluster (4 blocks of 512-byte inodes, 32 inodes) while a chunk is 8 blocks, so chunks start at odd multiples
/// of 32 inodes, as the kernel and xfs_repair accept. Scrub must call them clean, and the online inobt rebuild must
/// cut the chunks from the OWN_INODES runs where they start (it cut them at 64-inode boundaries and refused).
/// </summary>
public sealed class ScrubRepairUnsparseAlignmentTests(ITestOutputHelper output)
{
    [Fact]
    public void ChunksAlignedToHalfAChunk_ScrubClean_AndTheInodeBtreesRebuildTheSame()
    {
        using var scratch = new RepairScratch();
        string image = Path.Combine(scratch.Directory, "unsparse.img");
        RepairTools.MkfsSmall(image, 64L << 20, "-i", "sparse=0", "-m", "rmapbt=1,finobt=1");
        using (var fs = XfsFileSystem.Open(image, OnlineTestSupport.Fast))
        {
            Assert.False(fs.Engine.Geometry.Superblock.HasSparseInodes);
            for (int i = 0; i < 400; i++)
            {
                fs.Namespace.Create($"/f{i}");
                if (i % 50 == 0) fs.Write($"/f{i}", 0, new byte[300 << 10]);   // data between chunks moves the next one
            }
            fs.Close();
        }
        var before = InodeBtrees(image);
        int odd = before.Count(r => r.StartIno % 64 != 0);
        output.WriteLine($"{before.Count} inobt and finobt records, {odd} starting at an odd multiple of 32 inodes");
        Assert.True(odd > 0, "precondition: no chunk starts off a 64-inode boundary, the case is not exercised");
        var (rc, stdout, _) = ScrubCli.Run(image);
        Assert.True(rc == 0, $"scrub of the engine's chunks:\n{stdout}");

        using (var engine = WriteEngine.Open(image, OnlineTestSupport.Fast))
        {
            for (uint agno = 0; agno < engine.Geometry.AgCount; agno++) output.WriteLine(OnlineInodeBtreeRepair.Run(engine, agno).ToString());
            engine.Close();
        }
        Assert.Equal(before, InodeBtrees(image));
        (rc, stdout, _) = ScrubCli.Run(image);
        Assert.True(rc == 0, $"scrub after the rebuilds:\n{stdout}");
        var witness = RepairTools.XfsRepairCheck(image);
        Assert.True(witness.ExitCode == 0, $"xfs_repair -n: {witness}");
    }

    /// <summary>Every inobt and finobt record of every AG.</summary>
    static List<(uint Ag, bool Finobt, uint StartIno, uint FreeCount, ulong Free)> InodeBtrees(string image)
    {
        using var img = XfsImage.Open(image);
        var result = new List<(uint, bool, uint, uint, ulong)>();
        for (uint ag = 0; ag < img.Geometry.AgCount; ag++)
        {
            var agi = img.ReadAgi(ag);
            foreach (bool finobt in new[] { false, true })
            {
                if (finobt && !img.Superblock.HasFinobt) continue;
                using var cur = img.OpenInobt(agi, finobt ? AgiTree.Finobt : AgiTree.Inobt).CreateCursor();
                for (bool ok = cur.MoveFirst(); ok && cur.HasRecord; ok = cur.Increment())
                {
                    var r = InobtRecord.Read(cur.Current, img.Superblock.HasSparseInodes);
                    result.Add((ag, finobt, r.StartIno, r.FreeCount, r.Free));
                }
            }
        }
        return result;
    }
}

/// <summary>
/// A crash in the commit of a repair (the engine's fault injector: the write that does not happen) leaves the old
/// structure (crash at the journal record: the damage is still there, nothing else) or the new one (crash after
/// the record: the journal replays it at the next open, the image checks clean), never a mix.
/// </summary>
public sealed class ScrubRepairCrashTests(ITestOutputHelper output)
{
    private const uint Ag = 1;

    public static IEnumerable<object[]> Trees() => new[] { "bnobt", "inobt", "refcountbt" }.Select(t => new object[] { t });

    private static AgRebuildResult Repair(string tree, WriteEngine engine) => tree switch
    {
        "bnobt" => OnlineFreeSpaceRepair.Run(engine, Ag),
        "inobt" => OnlineInodeBtreeRepair.Run(engine, Ag),
        _ => OnlineRefcountRepair.Run(engine, Ag),
    };

    private static HashSet<string> DamagedSubjects(string stdout) =>
        stdout.Split('\n').Where(l => l.Contains(": damaged", StringComparison.Ordinal)).Select(l => l[..l.IndexOf(": damaged", StringComparison.Ordinal)]).ToHashSet();

    [Theory]
    [MemberData(nameof(Trees))]
    public void CrashBeforeTheSwitchLeavesTheOldTreeAndAfterItTheNew(string tree)
    {
        var kind = ScrubCorruptor.Kinds.First(k => k.Tree == tree);
        using var scratch = new RepairScratch();
        string damaged = scratch.CopyFixture("geom-bs1k");
        output.WriteLine(ScrubCorruptor.Apply(damaged, kind, Ag));
        var original = ScrubCli.Run(damaged);
        Assert.Equal(1, original.ExitCode);
        HashSet<string> oldDamage = DamagedSubjects(original.Stdout);
        Assert.Contains($"AG {Ag} {tree}", oldDamage);

        // How many writes the repair's commit makes (the journal record; its blocks stay pinned in memory until a
        // checkpoint, so past the last write comes a crash after the record: the engine dropped without a close).
        string probe = scratch.Copy(damaged, "probe.img");
        var counter = new WriteFaultInjector(int.MaxValue, () => { });
        int before, after;
        using (var engine = WriteEngine.Open(probe, new WriteEngineOptions { Faults = counter }))
        {
            before = counter.Writes;
            Repair(tree, engine);
            after = counter.Writes;
            engine.Close();
        }
        // At least the journal record (one write: body and trailer go out together).
        Assert.True(after - before >= 1, $"the repair made {after - before} writes");
        int[] crashPoints = new[] { before + 1, before + 2, (before + after) / 2 + 1, after, after + 1 }.Distinct().ToArray();
        foreach (int k in crashPoints)
        {
            string image = scratch.Copy(damaged, $"crash-{k}.img");
            var faults = new WriteFaultInjector(k, () => { });
            var engine = WriteEngine.Open(image, new WriteEngineOptions { Faults = faults });
            try
            {
                Repair(tree, engine);
                if (k <= after) Assert.Fail($"write {k} was to crash the repair");
                output.WriteLine($"write {k}: the repair committed, the engine is dropped without a close");
            }
            catch (Exception e) when (faults.Crashed)
            {
                output.WriteLine($"write {k}: crashed ({e.GetType().Name})");
            }
            finally
            {
                engine.Dispose();
            }
            using (var reopened = WriteEngine.Open(image))
            {
                output.WriteLine($"write {k}: {reopened.RecordsReplayed} journal records replayed");
                reopened.Close();
            }
            var (rc, stdout, _) = ScrubCli.Run(image);
            bool isOld = rc == 1 && DamagedSubjects(stdout).SetEquals(oldDamage);
            bool isNew = rc == 0;
            if (k == before + 1) Assert.True(isOld, $"a crash at the journal record must leave the old tree: exit {rc}\n{stdout}");
            else if (k == after + 1) Assert.True(isNew, $"a crash after the journal record must leave the new tree: exit {rc}\n{stdout}");
            else Assert.True(isOld || isNew, $"write {k}: neither the old nor the new tree: exit {rc}\n{stdout}");
            File.Delete(image);
        }
    }
}

/// <summary>
/// The scrub repairs while the engine serves writers: a writer to the AG under repair waits for the repair's
/// transaction, then works on the new trees (deterministic); and the model-checked stress workload (two writer
/// threads, reflink included) runs while every AG's bnobt+cntbt, inobt+finobt and refcountbt are rebuilt in rotation,
/// each repair verified by the scrub of that AG with commits paused (0 lost or extra records, counters right), the
/// model verified at the end. 50 seeds of 40 operations by default, 1,000 of 120 with XFBTREE_LONG_TESTS=1.
/// </summary>
public sealed class ScrubRepairUnderWritersTests(ITestOutputHelper output)
{
    private static bool Long => Environment.GetEnvironmentVariable("XFBTREE_LONG_TESTS") == "1";

    [Fact]
    public void AWriterToTheAgUnderRepairWaitsForItThenUsesTheNewTrees()
    {
        using var scratch = new RepairScratch();
        string image = scratch.CopyFixture("fresh-4ag");
        using var fs = XfsFileSystem.Open(image, OnlineTestSupport.Fast);
        ulong ino = fs.Create("/scrub-writer");
        uint agno = fs.Engine.Geometry.InoToAgno(ino);
        byte[] data = OnlineTestSupport.Pattern(256 << 10, 7);
        Thread? writer = null;
        Exception? writerError = null;
        using var writerDone = new ManualResetEventSlim();
        bool waited = false, doneBeforeCommit = true;
        var hooks = new AgRebuildTestHooks
        {
            AfterLock = ag =>
            {
                writer = new Thread(() =>
                {
                    try { fs.Write("/scrub-writer", 0, data); }
                    catch (Exception e) { writerError = e; }
                    finally { writerDone.Set(); }
                });
                writer.Start();
                SpinWait.SpinUntil(() => fs.Engine.Ag(ag).Lock.Waiters > 0 || writerDone.IsSet, TimeSpan.FromSeconds(60));
                waited = fs.Engine.Ag(ag).Lock.Waiters > 0;
            },
            AfterSwitch = _ => doneBeforeCommit = writerDone.IsSet,
        };
        AgRebuildResult result = OnlineFreeSpaceRepair.Run(fs.Engine, agno, hooks);
        output.WriteLine(result.ToString());
        Assert.NotNull(writer);
        Assert.True(writer.Join(TimeSpan.FromSeconds(60)), "the writer never finished");
        Assert.Null(writerError);
        Assert.True(waited, "the writer did not wait for the AG lock the repair held");
        Assert.False(doneBeforeCommit, "the writer finished before the repair committed");
        Assert.Equal(agno, OnlineTestSupport.FirstDataAg(fs.Engine, ino));
        var back = new byte[data.Length];
        Assert.Equal(data.Length, fs.Read("/scrub-writer", 0, back));
        Assert.True(back.AsSpan().SequenceEqual(data));
        WriteEngineTestSupport.AssertInvariants(fs.Engine, "after the repair and the writer");
        fs.Close();
        var (rc, stdout, _) = ScrubCli.Run(image);
        Assert.True(rc == 0, stdout);
        WriteEngineTestSupport.AssertOraclesClean(image, "after the repair and the writer");
    }

    /// <summary>
    /// The AG header rebuilds (AGF with its AGFL, AGI) run online: each AG's headers rewritten in rotation, one locked
    /// transaction each, while two stress writers (reflink included) run; each rebuild is verified by the scrub of that
    /// AG with commits paused, and the stress model, the engine's invariants and (first seed) the offline oracles
    /// agree at the end. 50 seeds of 40 operations in the suite, 1,000 of 120 with XFBTREE_LONG_TESTS=1.
    /// </summary>
    [Fact]
    public void HeaderRebuildsRacingTwoWritersLoseNothing()
    {
        var (seeds, ops, repairs, verified, _) = RotationSeeds(["AGF", "AGI"], "headers", (rotation, agCount) =>
        {
            Assert.Equal(0, rotation.NoRoom);
            return 2 * agCount;
        });
        output.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"{seeds} seeds, {ops} ops, {repairs} header rebuilds verified by {verified} scrubs, 0 problems"));
    }

    [Fact]
    public void RepairsRacingTwoWritersLoseNoRecordForEverySeed()
    {
        var (seeds, ops, repairs, verified, noRoom) = RotationSeeds(AgTreeRepairRotation.All, "race",
            (rotation, agCount) => 3 * agCount - rotation.NoRoom);
        output.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"{seeds} seeds, {ops} ops, {repairs} repairs verified by {verified} scrubs, {noRoom} without room, 0 problems"));
    }

    /// <summary>
    /// One seed after another on a copy of geom-bs1k: two stress writers run while <paramref name="structures"/> are
    /// rebuilt in every AG in rotation, each rebuild verified by the scrub of its AG with commits paused; the model,
    /// the engine's invariants and (first seed) the offline scrub and oracles agree at the end. Every seed rotates
    /// through every AG at least once however short its workload, so many short seeds draw more interleavings than a
    /// few long ones: 50 seeds of 40 operations in the suite, 1,000 of 120 with XFBTREE_LONG_TESTS=1.
    /// <paramref name="minimumRepairs"/> checks a seed's rotation and says how many rebuilds it must have made.
    /// </summary>
    private (int Seeds, long Ops, long Repairs, long Verified, long NoRoom) RotationSeeds(
        IReadOnlyList<string> structures, string name, Func<AgTreeRepairRotation, long, long> minimumRepairs)
    {
        int seeds = Long ? 1000 : 50;
        int opsPerSeed = Long ? 120 : 40;
        long repairs = 0, verified = 0, ops = 0, noRoom = 0;
        var clock = System.Diagnostics.Stopwatch.StartNew();
        using var scratch = new RepairScratch();
        string baseImage = scratch.CopyFixture("geom-bs1k");
        for (int seed = 1; seed <= seeds; seed++)
        {
            string image = scratch.Copy(baseImage, $"{name}-{seed}.img");
            List<string> problems;
            AgTreeRepairRotation rotation;
            StressResult result;
            long agCount;
            using (var fs = XfsFileSystem.Open(image, OnlineTestSupport.Fast))
            {
                agCount = fs.Engine.Geometry.AgCount;
                var target = new XfsStressTarget(fs);
                StressModel model = StressModel.Load(target, seed, new StressModelOptions { MaxFileSize = 256 << 10 });
                rotation = new AgTreeRepairRotation(fs.Engine, structures);
                result = new StressRunner(target, model, new StressOptions { Ops = opsPerSeed, Threads = 2, Seed = seed, Background = rotation }).Run();
                problems = result.Problems.ToList();
                problems.AddRange(model.Verify(target));
                problems.AddRange(Xfbtree.Xfs.Write.Space.WriteInvariants.Check(fs.Engine).Select(i => "invariant: " + i));
                fs.Close();
            }
            Assert.True(problems.Count == 0, $"seed {seed}: {string.Join("; ", problems)}");
            Assert.Equal(0, rotation.Problems);
            long minimum = minimumRepairs(rotation, agCount);
            Assert.True(rotation.Repairs >= minimum, $"seed {seed}: only {rotation.Repairs} rebuilds, at least {minimum} expected");
            repairs += rotation.Repairs;
            verified += rotation.Verified;
            noRoom += rotation.NoRoom;
            ops += result.Total;
            if (seed == 1)
            {
                var (rc, stdout, _) = ScrubCli.Run(image);
                Assert.True(rc == 0, $"seed {seed}: scrub after the run: {stdout}");
                WriteEngineTestSupport.AssertOraclesClean(image, $"seed {seed}");
            }
            File.Delete(image);
        }
        output.WriteLine(string.Create(CultureInfo.InvariantCulture, $"{clock.Elapsed.TotalSeconds:F1} s"));
        Assert.True(verified == repairs && repairs > 0, $"{repairs} rebuilds, {verified} verified");
        return (seeds, ops, repairs, verified, noRoom);
    }
}
