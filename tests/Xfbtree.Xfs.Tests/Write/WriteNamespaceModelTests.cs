using Xfbtree.Xfs.Tests.Repair;
using Xfbtree.Xfs.Tests.Trees;
using Xfbtree.Xfs.Write;
using Xfbtree.Xfs.Write.Engine;
using Xfbtree.Xfs.Write.Files;
using Xfbtree.Xfs.Write.Namespace;
using Xunit.Abstractions;

namespace Xfbtree.Xfs.Tests.Write;

/// <summary>
/// Random create / mkdir / unlink sequences against a model of the tree, from two threads at once (each in its
/// own subtree, plus both in one shared directory), checked against the model during the run (every answer,
/// listings), then the engine's invariants, and after a clean close xfs_repair -n, rmap check and the kernel.
/// XFBTREE_LONG_TESTS=1 runs many more operations.
/// </summary>
public sealed class WriteNamespaceModelTests(ITestOutputHelper output)
{
    static readonly bool Long = Environment.GetEnvironmentVariable("XFBTREE_LONG_TESTS") == "1";

    /// <summary>One thread's subtree: path → is directory.</summary>
    sealed class Model
    {
        public SortedDictionary<string, bool> Nodes { get; } = new(StringComparer.Ordinal);

        public IEnumerable<string> Children(string dir)
        {
            string prefix = dir + "/";
            return Nodes.Keys.Where(p => p.StartsWith(prefix, StringComparison.Ordinal) && !p[prefix.Length..].Contains('/', StringComparison.Ordinal));
        }
    }

    static string RandomName(Random rnd)
    {
        const string alphabet = "abcdefghijklmnopqrstuvwxyz0123456789-_.ABC";
        int len = rnd.Next(4) == 0 ? rnd.Next(20, 60) : rnd.Next(1, 12);
        var chars = new char[len];
        for (int i = 0; i < len; i++) chars[i] = alphabet[rnd.Next(alphabet.Length)];
        string n = new(chars);
        return n is "." or ".." ? "dot" : n;
    }

    void RunThread(NamespaceOperations ops, string top, Model model, int seed, int count, string shared, List<string> sharedNames)
    {
        var rnd = new Random(seed);
        model.Nodes[top] = true;
        ops.Mkdir(top);
        for (int step = 0; step < count; step++)
        {
            var dirs = model.Nodes.Where(kv => kv.Value).Select(kv => kv.Key).ToList();
            string dir = dirs[rnd.Next(dirs.Count)];
            int op = rnd.Next(10);
            try
            {
                if (op < 4 || model.Nodes.Count < 3)
                {
                    string path = dir + "/" + RandomName(rnd);
                    if (model.Nodes.ContainsKey(path)) { Expect(WriteErrorKind.Exists, () => ops.Create(path)); continue; }
                    if (!TryOrFull(() => ops.Create(path))) continue;
                    model.Nodes[path] = false;
                }
                else if (op < 6)
                {
                    string path = dir + "/" + RandomName(rnd);
                    if (model.Nodes.ContainsKey(path)) { Expect(WriteErrorKind.Exists, () => ops.Mkdir(path)); continue; }
                    if (!TryOrFull(() => ops.Mkdir(path))) continue;
                    model.Nodes[path] = true;
                }
                else if (op < 9)
                {
                    var victims = model.Nodes.Keys.Where(p => p != top).ToList();
                    if (victims.Count == 0) continue;
                    string path = victims[rnd.Next(victims.Count)];
                    if (model.Nodes[path] && model.Children(path).Any()) { Expect(WriteErrorKind.NotEmpty, () => ops.Unlink(path)); continue; }
                    ops.Unlink(path);
                    model.Nodes.Remove(path);
                }
                else
                {
                    string missing = dir + "/missing-" + step;
                    Expect(WriteErrorKind.NotFound, () => ops.Unlink(missing));
                    var listed = ops.List(dir).Select(e => dir + "/" + e.Name).Order(StringComparer.Ordinal).ToList();
                    Assert.Equal(model.Children(dir).Order(StringComparer.Ordinal).ToList(), listed);
                }
                if (step % 25 == 0)
                {
                    string name = $"{top[1..]}-{step}";
                    ops.Create(shared + "/" + name);
                    lock (sharedNames) sharedNames.Add(name);
                }
            }
            catch (Exception e) when (e is not Xunit.Sdk.XunitException)
            {
                throw new InvalidOperationException($"{top} step {step}: {e.Message}", e);
            }
        }
    }

    static void Expect(WriteErrorKind kind, Action a)
    {
        var e = Assert.Throws<XfsWriteException>(a);
        Assert.True(e.Kind == kind, $"expected {kind}, got {e.Kind}: {e.Message}");
    }

    /// <summary>Runs <paramref name="a"/>; false when it was refused because a block directory is full (nothing changed).</summary>
    static bool TryOrFull(Action a)
    {
        try { a(); return true; }
        catch (XfsWriteException e) when (e.Kind == WriteErrorKind.NotSupported && e.Message.Contains("leaf format", StringComparison.Ordinal)) { return false; }
    }

    [Theory]
    [InlineData("fresh-4ag", 1)]
    [InlineData("geom-bs1k", 2)]
    [InlineData("aged-small", 3)]
    [InlineData("fresh-4ag-normap", 4)]
    public void TwoThreadsMatchTheModelAndLeaveAConsistentImage(string fixture, int seed)
    {
        using var scratch = new RepairScratch();
        string image = scratch.CopyFixture(fixture);
        int count = Long ? 3000 : 250;
        var models = new[] { new Model(), new Model() };
        var sharedNames = new List<string>();
        using (var engine = WriteEngine.Open(image, WriteEngineTestSupport.Fast))
        {
            var ops = new NamespaceOperations(engine, new FileOperations(engine));
            ops.Mkdir("/shared");
            var errors = new Exception?[2];
            var threads = Enumerable.Range(0, 2).Select(t => new Thread(() =>
            {
                try { RunThread(ops, $"/t{t}", models[t], seed * 10 + t, count, "/shared", sharedNames); }
                catch (Exception e) { errors[t] = e; }
            })).ToArray();
            foreach (var th in threads) th.Start();
            foreach (var th in threads) th.Join();
            foreach (var e in errors) if (e != null) throw new InvalidOperationException("a worker failed", e);
            Assert.Equal(sharedNames.Order(StringComparer.Ordinal), ops.List("/shared").Select(e => e.Name).Order(StringComparer.Ordinal));
            WriteEngineTestSupport.AssertInvariants(engine, $"{fixture} after {count} operations per thread");
            engine.Close();
        }
        WriteEngineTestSupport.AssertOraclesClean(image, fixture);

        // The kernel sees exactly the model.
        RepairSafetyTests.RequireRoot();
        string mnt = Directory.CreateDirectory(Path.Combine(scratch.Directory, "mnt")).FullName;
        // Copies of one fixture (other tests, other engineers) may be mounted at the same time: a fresh sb_uuid
        // (the metadata UUID stays) keeps mounts without nouuid elsewhere from clashing with this one.
        WriteNamespaceOperationTests.FreshUuid(image);
        TreeFixtures.Run("/bin/mount", ["-o", "ro,loop,nouuid", image, mnt]);
        string listing;
        try
        {
            listing = TreeFixtures.Run("/usr/bin/find", [mnt + "/t0", mnt + "/t1", mnt + "/shared", "-printf", "/%P %y\n"]);
        }
        finally
        {
            TreeFixtures.Run("/bin/umount", [mnt]);
        }
        var kernel = listing.Split('\n', StringSplitOptions.RemoveEmptyEntries).Where(l => l != "/ d").Select(l => l).ToList();
        output.WriteLine($"{fixture}: kernel lists {kernel.Count} entries; model {models.Sum(m => m.Nodes.Count)} + {sharedNames.Count} shared");
        // find prints paths relative to each start point: rebuild the expected lines the same way.
        var expected = new List<string>();
        foreach (var (m, top) in models.Zip(new[] { "/t0", "/t1" }))
            expected.AddRange(m.Nodes.Where(kv => kv.Key != top).Select(kv => kv.Key[top.Length..] + (kv.Value ? " d" : " f")));
        expected.AddRange(sharedNames.Select(n => "/" + n + " f"));
        Assert.Equal(expected.Order(StringComparer.Ordinal), kernel.Order(StringComparer.Ordinal));
    }

    /// <summary>Two threads create and unlink the same few names as fast as they can: every answer is success,
    /// Exists or NotFound, the names that remain are the ones the last successful operations left, and the image
    /// is consistent afterwards (this exercises the re-check under the locks and its restart).</summary>
    [Fact]
    public void RacingCreateAndUnlinkOfTheSameNamesStayConsistent()
    {
        using var scratch = new RepairScratch();
        string image = scratch.CopyFixture("fresh-4ag");
        int rounds = Long ? 5000 : 400;
        var counts = new int[2, 3];
        using (var engine = WriteEngine.Open(image, WriteEngineTestSupport.Fast))
        {
            var ops = new NamespaceOperations(engine, new FileOperations(engine));
            ops.Mkdir("/race");
            var errors = new Exception?[2];
            var threads = Enumerable.Range(0, 2).Select(t => new Thread(() =>
            {
                var rnd = new Random(100 + t);
                try
                {
                    for (int i = 0; i < rounds; i++)
                    {
                        string path = $"/race/n{rnd.Next(3)}";
                        try
                        {
                            if (rnd.Next(2) == 0) ops.Create(path); else ops.Unlink(path);
                            counts[t, 0]++;
                        }
                        catch (XfsWriteException e) when (e.Kind == WriteErrorKind.Exists) { counts[t, 1]++; }
                        catch (XfsWriteException e) when (e.Kind == WriteErrorKind.NotFound) { counts[t, 2]++; }
                    }
                }
                catch (Exception e) { errors[t] = e; }
            })).ToArray();
            var sw = System.Diagnostics.Stopwatch.StartNew();
            foreach (var th in threads) th.Start();
            foreach (var th in threads) th.Join();
            sw.Stop();
            foreach (var e in errors) if (e != null) throw new InvalidOperationException("a worker failed", e);
            output.WriteLine($"{2 * rounds} racing operations in {sw.ElapsedMilliseconds} ms: ok {counts[0, 0] + counts[1, 0]}, exists {counts[0, 1] + counts[1, 1]}, not found {counts[0, 2] + counts[1, 2]}");
            Assert.True(counts[0, 0] + counts[1, 0] > rounds / 4);
            var left = ops.List("/race").Select(e => e.Name).ToList();
            Assert.Equal(left.Distinct().Count(), left.Count);
            WriteEngineTestSupport.AssertInvariants(engine, "after the race");
            engine.Close();
        }
        WriteEngineTestSupport.AssertOraclesClean(image, "race");
    }

    /// <summary>Creates per second through the engine (no fsync per commit), for the report.</summary>
    [Fact]
    public void CreateThroughputIsReported()
    {
        using var scratch = new RepairScratch();
        string image = scratch.CopyFixture("fresh-4ag");
        using var engine = WriteEngine.Open(image, WriteEngineTestSupport.Fast);
        var ops = new NamespaceOperations(engine, new FileOperations(engine));
        int dirs = 10, per = 60;
        // Warm up (JIT tiers) on the same paths: shortform, conversion, block directory, unlink.
        ops.Mkdir("/warm");
        for (int i = 0; i < 60; i++) ops.Create($"/warm/file{i}");
        for (int i = 0; i < 60; i++) ops.Unlink($"/warm/file{i}");
        var sw = System.Diagnostics.Stopwatch.StartNew();
        for (int d = 0; d < dirs; d++)
        {
            ops.Mkdir($"/p{d}");
            for (int i = 0; i < per; i++) ops.Create($"/p{d}/file{i}");
        }
        double createRate = dirs * (per + 1) / sw.Elapsed.TotalSeconds;
        sw.Restart();
        for (int d = 0; d < dirs; d++)
            for (int i = 0; i < per; i++) ops.Unlink($"/p{d}/file{i}");
        double unlinkRate = dirs * per / sw.Elapsed.TotalSeconds;
        output.WriteLine($"creates/s {createRate:F0}, unlinks/s {unlinkRate:F0} (fresh-4ag, SyncCommits off, one thread)");
        Assert.Equal(dirs, ops.List("/").Count(e => e.Name.StartsWith('p')));
        engine.Close();
    }
}
