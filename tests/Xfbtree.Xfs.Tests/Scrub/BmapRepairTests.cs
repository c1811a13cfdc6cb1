using System.Globalization;
using Xfbtree.Xfs.Online;
using Xfbtree.Xfs.Scrub;
using Xfbtree.Xfs.Tests.Online;
using Xfbtree.Xfs.Tests.Repair;
using Xfbtree.Xfs.Tests.Trees;
using Xfbtree.Xfs.Write;
using Xunit.Abstractions;

namespace Xfbtree.Xfs.Tests.Scrub;

/// <summary>
/// Block maps rebuilt from the rmapbt (<see cref="OnlineBmapRepair"/>), on an image the kernel populated with real
/// data (<see cref="KernelPopulatedImage"/>): each kind of damage to a data fork bmbt (leaf and root), a reflinked
/// file's bmbt, an extents-format fork, a directory's bmbt and an attr fork is found (<c>bmap: damaged</c>, exit 1),
/// repaired by <c>xfbtree scrub --repair</c> (offline) and by the online scrub on an open engine while two writers
/// work in other files, then the image checks clean, <c>xfs_repair -n</c> exits 0, and the kernel mounts it and reads
/// every file with the content it had before the damage (the damaged file's included: only its map was rebuilt).
/// </summary>
public sealed class BmapRepairTests(ITestOutputHelper output)
{
    /// <summary>xfs_db navigation to a leaf of a file's data fork bmbt (the inode root's child <paramref name="n"/>).</summary>
    private static string[] Leaf(ulong ino, int n) => [$"inode {ino}", $"addr u3.bmbt.ptrs[{n}]"];

    private static string Write(string image, string[] nav, string field, string value)
    {
        string outp = KernelPopulatedImage.Db(image, true, [.. nav, $"write -d {field} {value}"]);
        Assert.DoesNotContain("not found", outp, StringComparison.Ordinal);
        return $"{string.Join("; ", nav)}: {field} = {value}";
    }

    private static string Num(long v) => v.ToString(CultureInfo.InvariantCulture);

    /// <summary>Each kind: the file it damages and how.</summary>
    private static readonly (string Name, string Path, Func<string, ulong, string> Apply)[] Kinds =
    [
        ("leaf-magic", "/frag", (img, ino) => Write(img, Leaf(ino, 2), "magic", "0")),
        ("leaf-crc", "/frag", (img, ino) => KernelPopulatedImage.Db(img, true, [.. Leaf(ino, 2), "crc -i"])),
        ("leaf-level", "/frag", (img, ino) => Write(img, Leaf(ino, 2), "level", "1")),
        ("leaf-numrecs", "/frag", (img, ino) => Write(img, Leaf(ino, 2), "numrecs", Num(KernelPopulatedImage.Field(img, Leaf(ino, 2), "numrecs") - 1))),
        // One more record than written in the leaf that is not full: the stale bytes after its last record read as a
        // record mapping blocks the file maps already ("mapped twice by inode N" on the rmapbt line: the fork's damage,
        // not the rmapbt's; the fork repair waited for the rmapbt's repair, which waited for it, before).
        ("short-leaf-numrecs-up", "/frag", (img, ino) =>
        {
            int leaf = Enumerable.Range(1, 5).MinBy(n => KernelPopulatedImage.Field(img, Leaf(ino, n), "numrecs"));
            return Write(img, Leaf(ino, leaf), "numrecs", Num(KernelPopulatedImage.Field(img, Leaf(ino, leaf), "numrecs") + 1));
        }),
        ("leaf-leftsib", "/frag", (img, ino) => Write(img, Leaf(ino, 2), "leftsib", Num(KernelPopulatedImage.Field(img, [$"inode {ino}"], "u3.bmbt.ptrs[3]")))),
        ("leaf-rightsib", "/frag", (img, ino) => Write(img, Leaf(ino, 2), "rightsib", Num(KernelPopulatedImage.Field(img, [$"inode {ino}"], "u3.bmbt.ptrs[2]")))),
        ("leaf-owner", "/frag", (img, ino) => Write(img, Leaf(ino, 2), "owner", Num((long)ino + 1))),
        ("leaf-blkno", "/frag", (img, ino) => Write(img, Leaf(ino, 2), "bno", Num(KernelPopulatedImage.Field(img, Leaf(ino, 2), "bno") + 8))),
        ("leaf-rec-overlap", "/frag", (img, ino) => Write(img, Leaf(ino, 2), "recs[3].startoff", Num(KernelPopulatedImage.Field(img, Leaf(ino, 2), "recs[2].startoff")))),
        ("root-key", "/frag", (img, ino) => Write(img, [$"inode {ino}"], "u3.bmbt.keys[3].startoff", Num(KernelPopulatedImage.Field(img, [$"inode {ino}"], "u3.bmbt.keys[3].startoff") - 2))),
        ("root-ptr", "/frag", (img, ino) => Write(img, [$"inode {ino}"], "u3.bmbt.ptrs[3]", Num(KernelPopulatedImage.Field(img, [$"inode {ino}"], "u3.bmbt.ptrs[2]")))),
        ("clone-leaf-crc", "/frag.clone", (img, ino) => KernelPopulatedImage.Db(img, true, [.. Leaf(ino, 1), "crc -i"])),
        ("extents-startblock", "/unw", (img, ino) => Write(img, [$"inode {ino}"], "u3.bmx[1].startblock", "4503599627370000")),
        ("extents-overlap", "/unw", (img, ino) => Write(img, [$"inode {ino}"], "u3.bmx[2].startoff", "0")),
        ("dir-bmbt-crc", "/node", (img, ino) => KernelPopulatedImage.Db(img, true, [.. Leaf(ino, 1), "crc -i"])),
        ("attr-extent", "/attrs", (img, ino) => Write(img, [$"inode {ino}"], "a.bmx[0].startblock", "4503599627370000")),
    ];

    private static bool Long => Environment.GetEnvironmentVariable("XFBTREE_LONG_TESTS") == "1";

    /// <summary>The kinds the suite runs (one per way into the repair: a bmbt leaf, a record, shared extents, an
    /// extent list, a directory, an attr fork); every kind with XFBTREE_LONG_TESTS=1.</summary>
    private static readonly HashSet<string> SuiteKinds =
    [
        "leaf-crc", "leaf-rec-overlap", "clone-leaf-crc", "extents-startblock", "dir-bmbt-crc", "attr-extent",
    ];

    public static IEnumerable<object[]> Cases() => Kinds.Where(k => Long || SuiteKinds.Contains(k.Name)).Select(k => new object[] { k.Name });

    /// <summary>The online variants: in the suite a bmbt leaf, shared extents and a directory; with
    /// XFBTREE_LONG_TESTS=1 one per way into the repair (a record, an extent list and an attr fork too).</summary>
    public static IEnumerable<object[]> OnlineCases() =>
        new[] { "leaf-crc", "leaf-rec-overlap", "clone-leaf-crc", "extents-startblock", "dir-bmbt-crc", "attr-extent" }
            .Where(k => Long || k is "leaf-crc" or "clone-leaf-crc" or "dir-bmbt-crc").Select(k => new object[] { k });

    private string Damage(RepairScratch scratch, string kind)
    {
        var k = Kinds.Single(x => x.Name == kind);
        string image = scratch.Copy(KernelPopulatedImage.Image, "bmap.img");
        ulong ino = KernelPopulatedImage.Ino(image, k.Path);
        output.WriteLine($"{kind}: {k.Path} (inode {ino}): {k.Apply(image, ino)}");
        return image;
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void DamagedForkIsFoundAndRebuiltOfflineWithEveryFileIntact(string kind)
    {
        using var scratch = new RepairScratch();
        var manifest = KernelPopulatedImage.Manifest();
        string image = Damage(scratch, kind);
        var (rc, stdout, _) = ScrubCli.Run(image);
        output.WriteLine(stdout);
        Assert.Equal(1, rc);
        Assert.Contains("bmap: damaged", stdout, StringComparison.Ordinal);
        (rc, stdout, string stderr) = ScrubCli.Run(image, "--repair");
        output.WriteLine(stdout + stderr);
        Assert.Contains("repair: bmap: repaired", stdout, StringComparison.Ordinal);
        Assert.DoesNotContain("not repaired", stdout, StringComparison.Ordinal);
        Assert.True(rc == 0, $"scrub --repair must leave the image clean: exit {rc}");
        Assert.Contains("result after repair: clean", stdout, StringComparison.Ordinal);
        var witness = RepairTools.XfsRepairCheck(image);
        Assert.True(witness.ExitCode == 0, $"xfs_repair -n after the repair: {witness}");
        KernelPopulatedImage.AssertKernelReads(image, manifest);
        Assert.Equal(0, RepairTools.XfsRepairCheck(image).ExitCode);
    }

    [Theory]
    [MemberData(nameof(OnlineCases))]
    public void DamagedForkIsRebuiltOnlineBesideWriters(string kind)
    {
        using var scratch = new RepairScratch();
        var manifest = KernelPopulatedImage.Manifest();
        string image = Damage(scratch, kind);
        Dictionary<string, string> written = BackgroundWriters.RepairOnlineBesideWriters(image, BmapScrubber.Structure, output);
        foreach (var (path, sha) in written) manifest[path] = sha;
        KernelPopulatedImage.AssertKernelReads(image, manifest);
    }

    [Fact]
    public void AHealthyPopulatedImageHasNoDamagedForkOfflineOrOnline()
    {
        using var scratch = new RepairScratch();
        string image = scratch.Copy(KernelPopulatedImage.Image, "healthy.img");
        var (rc, stdout, _) = ScrubCli.Run(image);
        output.WriteLine(stdout);
        Assert.Equal(0, rc);
        Assert.Contains("bmap: clean", stdout, StringComparison.Ordinal);
        using XfsFileSystem fs = XfsFileSystem.Open(image, OnlineTestSupport.Fast);
        ScrubReport online = OnlineScrubber.Run(fs.Engine);
        Assert.True(online.IsClean, string.Join("\n", online.Findings.Where(f => f.Verdict != ScrubVerdict.Clean)));
        fs.Close();
    }

    [Fact]
    public void AWriterOfTheFileWaitsForTheRepairAndWritesIntoTheRebuiltFork()
    {
        using var scratch = new RepairScratch();
        var manifest = KernelPopulatedImage.Manifest();
        string image = Damage(scratch, "leaf-crc");
        ulong ino = KernelPopulatedImage.Ino(image, "/frag");
        byte[] data = new byte[4096];
        Array.Fill(data, (byte)0x5a);
        using (XfsFileSystem fs = XfsFileSystem.Open(image, OnlineTestSupport.Fast))
        {
            Thread? writer = null;
            Exception? writerError = null;
            using var writerDone = new ManualResetEventSlim();
            bool waited = false;
            var hooks = new OnlineBmapRepairTestHooks
            {
                AfterInodeLock = _ =>
                {
                    // The writer of the same file starts while the repair holds the inode: it must wait for the commit.
                    writer = new Thread(() =>
                    {
                        try { fs.Write("/frag", 8192L * 700, data); }
                        catch (Exception e) { writerError = e; }
                        finally { writerDone.Set(); }
                    });
                    writer.Start();
                    var inode = fs.Engine.GetInode(ino);
                    SpinWait.SpinUntil(() => inode.Lock.Waiters > 0 || writerDone.IsSet, TimeSpan.FromSeconds(60));
                    waited = inode.Lock.Waiters > 0;
                },
            };
            OnlineBmapRepairResult r = OnlineBmapRepair.Run(fs.Engine, ino, attrFork: false, hooks);
            output.WriteLine(r.ToString());
            Assert.True(waited, "a writer of the file under repair went on without waiting for the inode lock");
            Assert.Equal(1190, r.Mappings);
            writer!.Join();
            Assert.Null(writerError);
            ScrubReport again = OnlineScrubber.Run(fs.Engine);
            Assert.True(again.IsClean, string.Join("\n", again.Findings.Where(f => f.Verdict != ScrubVerdict.Clean)));
            fs.Close();
        }
        Assert.Equal(0, RepairTools.XfsRepairCheck(image).ExitCode);
        // The write landed in a hole of the rebuilt map; every other byte is as the kernel wrote it.
        var seen = KernelPopulatedImage.AssertKernelReads(image, manifest.Where(e => e.Key != "/frag").ToDictionary(e => e.Key, e => e.Value));
        Assert.NotEqual(manifest["/frag"], seen["/frag"]);
    }

    [Fact]
    public void AFreeOrUnmappedForkIsRefusedWithNothingChanged()
    {
        using var scratch = new RepairScratch();
        string image = scratch.Copy(KernelPopulatedImage.Image, "refuse.img");
        ulong sf = KernelPopulatedImage.Ino(image, "/sf");
        byte[] before = File.ReadAllBytes(image);
        using (XfsFileSystem fs = XfsFileSystem.Open(image, OnlineTestSupport.Fast))
        {
            var e = Assert.Throws<OnlineRepairException>(() => OnlineBmapRepair.Run(fs.Engine, sf, attrFork: false));
            Assert.Contains("maps no blocks", e.Message, StringComparison.Ordinal);
            fs.Close();
        }
        Assert.Equal(0, RepairTools.XfsRepairCheck(image).ExitCode);
    }
}

/// <summary>Writer threads beside an online check: each creates, writes, rewrites and removes files of its own
/// directory until stopped, remembering what its files hold; any error fails the test (the run started with damage
/// only in files the writers never touch).</summary>
internal sealed class BackgroundWriters : IDisposable
{
    /// <summary>
    /// Opens <paramref name="image"/> with two writers running, scrubs online (the structure must be found damaged),
    /// repairs online (it must be repaired, nothing refused), scrubs again (clean), stops the writers (no error), closes,
    /// and checks with `xfs_repair -n`; returns what the writers' files hold, for the caller's kernel read-back.
    /// </summary>
    public static Dictionary<string, string> RepairOnlineBesideWriters(string image, string structure, ITestOutputHelper output)
    {
        var written = new Dictionary<string, string>(StringComparer.Ordinal);
        using (XfsFileSystem fs = XfsFileSystem.Open(image, OnlineTestSupport.Fast))
        {
            using var writers = new BackgroundWriters(fs, 2);
            ScrubReport found = OnlineScrubber.Run(fs.Engine);
            foreach (ScrubFinding f in found.Findings.Where(f => f.Verdict != ScrubVerdict.Clean)) output.WriteLine(f.ToString());
            Assert.Contains(found.Findings, f => f.Structure == structure && f.Verdict == ScrubVerdict.Damaged);
            IReadOnlyList<ScrubRepairOutcome> repairs = OnlineScrubber.Repair(fs.Engine, found);
            foreach (ScrubRepairOutcome r in repairs) output.WriteLine("repair: " + r);
            Assert.Contains(repairs, r => r.Repaired && r.Name == structure);
            Assert.DoesNotContain(repairs, r => !r.Repaired);
            ScrubReport again = OnlineScrubber.Run(fs.Engine);
            Assert.True(again.IsClean, "after the online repair: " + string.Join("\n", again.Findings.Where(f => f.Verdict != ScrubVerdict.Clean)));
            writers.StopAndAssertNoErrors(output, written);
            fs.Close();
        }
        var witness = RepairTools.XfsRepairCheck(image);
        Assert.True(witness.ExitCode == 0, $"xfs_repair -n after the online repair: {witness}");
        return written;
    }

    private readonly XfsFileSystem fs;
    private readonly List<Thread> threads = new();
    private readonly List<string> errors = new();
    private readonly Dictionary<string, string> contents = new(StringComparer.Ordinal);
    private volatile bool stop;
    private long operations;

    public BackgroundWriters(XfsFileSystem fs, int count)
    {
        this.fs = fs;
        for (int t = 0; t < count; t++)
        {
            string dir = $"/writer{t}";
            fs.Mkdir(dir);
            var thread = new Thread(() => Work(dir)) { IsBackground = true };
            threads.Add(thread);
            thread.Start();
        }
    }

    private void Work(string dir)
    {
        var rng = new Random(dir.Length * 7919 + dir[^1]);
        var exists = new HashSet<string>(StringComparer.Ordinal);
        int n = 0;
        try
        {
            while (!stop || n < 20)
            {
                string path = $"{dir}/f{rng.Next(16)}";
                byte[] data = new byte[4096 * (1 + rng.Next(8))];
                rng.NextBytes(data);
                if (exists.Contains(path) && rng.Next(4) == 0)
                {
                    fs.Unlink(path);
                    exists.Remove(path);
                    lock (contents) contents.Remove(path);
                }
                else
                {
                    if (exists.Add(path)) fs.Create(path);
                    fs.Truncate(path, 0);
                    fs.Write(path, 0, data);
                    lock (contents) contents[path] = Convert.ToHexStringLower(System.Security.Cryptography.SHA256.HashData(data));
                }
                n++;
                Interlocked.Increment(ref operations);
            }
        }
        catch (Exception e)
        {
            lock (errors) errors.Add($"{dir} op {n}: {e.GetType().Name}: {e.Message}");
        }
    }

    /// <summary>Stops the writers; fails on any error; adds their files' contents to <paramref name="written"/>.</summary>
    public void StopAndAssertNoErrors(ITestOutputHelper output, Dictionary<string, string> written)
    {
        Stop();
        output.WriteLine($"writers: {Interlocked.Read(ref operations)} operations beside the check and repair");
        Assert.True(errors.Count == 0, "a writer failed beside the online repair: " + string.Join("; ", errors));
        foreach (var (path, sha) in contents) written[path] = sha;
    }

    private void Stop()
    {
        stop = true;
        foreach (Thread t in threads) t.Join();
    }

    public void Dispose() => Stop();
}
