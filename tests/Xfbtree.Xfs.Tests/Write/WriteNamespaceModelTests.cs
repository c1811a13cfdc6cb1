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
        TreeFixtures.Run("/bin/mount", ["-o", "ro,loop", image, mnt]);
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
}
