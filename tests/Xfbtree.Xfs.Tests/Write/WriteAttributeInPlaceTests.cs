using System.Text;
using Xfbtree.Xfs.Format;
using Xfbtree.Xfs.Tests.Repair;
using Xfbtree.Xfs.Tests.Trees;
using Xfbtree.Xfs.Write;
using Xunit.Abstractions;

namespace Xfbtree.Xfs.Tests.Write;

/// <summary>
/// Changes that stay inside one leaf block are made in place (docs/attributes.md, "Writing a change"): on forks the
/// engine built and on forks the kernel grew (holes, fragmented free maps), each judged by xfs_repair -n, rmap check
/// and the kernel reading every name and value back; a change to a fork of thousands of attributes journals a
/// handful of blocks, not the fork.
/// </summary>
public sealed class WriteAttributeInPlaceTests(ITestOutputHelper output) : WriteAttributeTestBase(output)
{
    static uint HashOf(string fullName) => DaHash.HashName(Encoding.UTF8.GetBytes(fullName[(fullName.IndexOf('.', StringComparison.Ordinal) + 1)..]));

    /// <summary>
    /// An engine-built node fork of 2,500 attributes: removes (the largest hash first, so keys change up to the
    /// root) and replaces (local to remote and back) are all made in place, each journal record a few blocks while
    /// the fork has dozens; inserts are made in place where their leaf has room. Then all oracles.
    /// </summary>
    [Fact]
    public void EngineNodeForkIsChangedInPlace()
    {
        using var scratch = new RepairScratch();
        string image = scratch.CopyFixture("fresh-4ag");
        var model = new Model();
        var rng = new Random(71);
        const string path = "/inplace-node";
        using (var fs = XfsFileSystem.Open(image, WriteEngineTestSupport.Fast))
        {
            fs.Create(path);
            for (int i = 0; i < 2500; i++) Set(fs, model, path, $"{Prefixes[i % 3]}n{i:D5}", Value(rng, 40));
            Assert.Equal("node", fs.Attributes.DescribeForm(fs.Lookup(path)));
            fs.Close();
        }
        using (var fs = XfsFileSystem.Open(image, WriteEngineTestSupport.Fast))
        {
            var ops = fs.Attributes;
            int bs = fs.Engine.Geometry.BlockSize;
            var names = model.Of(path).Keys.ToList();
            string largest = names.OrderBy(HashOf).Last();
            long before = ops.InPlaceChanges;
            Remove(fs, model, path, largest);
            Assert.True(ops.InPlaceChanges == before + 1, "the removal of the largest hash was not made in place");
            names.Remove(largest);
            for (int i = 0; i < 300; i++)
            {
                string n = names[rng.Next(names.Count)];
                names.Remove(n);
                Remove(fs, model, path, n);
            }
            Assert.True(ops.InPlaceChanges == before + 301, $"{ops.InPlaceChanges - before} of 301 removals were made in place");
            for (int i = 0; i < 100; i++)
            {
                string n = names[rng.Next(names.Count)];
                Set(fs, model, path, n, Value(rng, i % 2 == 0 ? 5000 + i : 7));
                Set(fs, model, path, n, Value(rng, 30));
            }
            Assert.True(ops.InPlaceChanges == before + 501, $"{ops.InPlaceChanges - before - 301} of 200 replaces were made in place");
            long record = fs.Engine.LargestRecordBytes;
            Output.WriteLine($"largest journal record of 501 in-place changes: {record} bytes ({record / bs} blocks of {bs})");
            Assert.True(record <= 16 * bs, $"an in-place change journaled {record} bytes; the fork has more than 60 blocks");
            long beforeInserts = ops.InPlaceChanges;
            for (int i = 0; i < 200; i++) Set(fs, model, path, $"user.new{i}", Value(rng, rng.Next(0, 60)));
            Output.WriteLine($"{ops.InPlaceChanges - beforeInserts} of 200 inserts made in place");
            Assert.True(ops.InPlaceChanges - beforeInserts >= 150, "fewer than 150 of 200 inserts were made in place: rewritten leaves keep no room");
            AssertEngineMatches(fs, model, "engine node fork changed in place");
            AssertGetsFromOneLeaf(fs, model, path);
            fs.Close();
        }
        AssertAllOracles(image, scratch.Directory, model, "engine node fork changed in place");
    }

    /// <summary>
    /// The kernel grows a node fork (2,000 attributes) and a leaf fork and removes some of each (holes, fragmented
    /// free maps); the engine removes, replaces and adds in place; the oracles and the kernel read it; the kernel
    /// edits the engine's result and the engine reads the kernel's.
    /// </summary>
    [Fact]
    public void KernelGrownForksAreChangedInPlace()
    {
        RepairSafetyTests.RequireRoot();
        Assert.True(File.Exists("/usr/bin/setfattr"), "setfattr (package attr) is missing: the kernel cannot grow the forks");
        using var scratch = new RepairScratch();
        string image = scratch.CopyFixture("fresh-4ag");
        var model = new Model();
        var rng = new Random(72);
        string mnt = Directory.CreateDirectory(Path.Combine(scratch.Directory, "rw")).FullName;
        var paths = new[] { "/k-leaf", "/k-node" };
        var counts = new[] { 40, 2000 };
        for (int round = 0; round < 2; round++)
        {
            WriteNamespaceOperationTests.FreshUuid(image);
            TreeFixtures.Run("/bin/mount", ["-o", "loop,nouuid", image, mnt]);
            try
            {
                var script = new StringBuilder();
                for (int f = 0; f < paths.Length; f++)
                {
                    string p = mnt + paths[f];
                    if (round == 0) script.Append($"touch '{p}'\n");
                    for (int i = 0; i < counts[f] / (round + 1); i++)
                    {
                        string name = $"{Prefixes[i % 3]}k{round}-{i}";
                        string text = new((char)('a' + i % 26), i % 97 == 5 ? 4500 : rng.Next(1, 90));
                        script.Append($"setfattr -n {name} -v '{text}' '{p}'\n");
                        model.Of(paths[f])[name] = Encoding.ASCII.GetBytes(text);
                    }
                    // Removals in the middle of the name areas: holes and fragmented free maps.
                    var existing = model.Of(paths[f]).Keys.ToList();
                    for (int i = 3; i < existing.Count; i += 7)
                    {
                        script.Append($"setfattr -x {existing[i]} '{p}'\n");
                        model.Of(paths[f]).Remove(existing[i]);
                    }
                }
                File.WriteAllText(Path.Combine(scratch.Directory, "k.sh"), script.ToString());
                TreeFixtures.Run("/bin/sh", [Path.Combine(scratch.Directory, "k.sh")]);
            }
            finally
            {
                TreeFixtures.Run("/bin/umount", [mnt]);
            }
            WriteEngineTestSupport.AssertOraclesClean(image, $"round {round}: the kernel's forks");
            if (round == 0)
            {
                // The precondition: the kernel's leaf has holes in its name area (removals below firstused).
                ulong leafIno;
                using (var fs = XfsFileSystem.Open(image, WriteEngineTestSupport.Fast))
                {
                    leafIno = fs.Lookup(paths[0]);
                    fs.Close();
                }
                string header = TreeFixtures.XfsDb(image, $"inode {leafIno}", "ablock 0", "print hdr.holes hdr.freemap");
                Output.WriteLine($"the kernel's leaf: {header.Replace('\n', ' ')}");
                Assert.Contains("hdr.holes = 1", header, StringComparison.Ordinal);
            }
            using (var fs = XfsFileSystem.Open(image, WriteEngineTestSupport.Fast))
            {
                AssertEngineMatches(fs, model, $"round {round}: the engine reads the kernel's forks");
                foreach (string path in paths) AssertGetsFromOneLeaf(fs, model, path);
                if (round == 0) Assert.Equal("leaf", fs.Attributes.DescribeForm(fs.Lookup(paths[0])));
                Assert.Equal("node", fs.Attributes.DescribeForm(fs.Lookup(paths[1])));
                foreach (string path in paths)
                {
                    long before = fs.Attributes.InPlaceChanges;
                    var names = model.Of(path).Keys.ToList();
                    int changes = 0;
                    for (int i = 0; i < names.Count && changes < 60; i += 3, changes++)
                    {
                        if (i % 2 == 0) Remove(fs, model, path, names[i]);
                        else
                        {
                            // A replacement no larger in its leaf than the old entry: it must fit where that was.
                            int oldLength = model.Of(path)[names[i]].Length;
                            int length = oldLength > 3000 ? 5000 : i % 5 == 1 && oldLength >= 8 ? 6000 : rng.Next(0, oldLength + 1);
                            Set(fs, model, path, names[i], Value(rng, length));
                        }
                    }
                    long inPlace = fs.Attributes.InPlaceChanges - before;
                    Output.WriteLine($"round {round} {path}: {inPlace} of {changes} removes and replaces in place");
                    Assert.True(inPlace == changes, $"round {round} {path}: only {inPlace} of {changes} removes and replaces were made in place");
                    for (int i = 0; i < 20; i++) Set(fs, model, path, $"{Prefixes[i % 3]}e{round}-{i}", Value(rng, i % 6 == 0 ? 3500 : rng.Next(0, 80)));
                }
                fs.Close();
            }
            AssertAllOracles(image, scratch.Directory, model, $"round {round}: the engine's in-place edits");
        }
    }

    /// <summary>getxattr of every attribute of <paramref name="path"/> (and of a missing name) is answered from the
    /// one leaf that holds its hash, with the model's value.</summary>
    static void AssertGetsFromOneLeaf(XfsFileSystem fs, Model model, string path)
    {
        ulong ino = fs.Lookup(path);
        long before = fs.Attributes.LeafGets;
        foreach (var (name, value) in model.Of(path))
            Assert.True(fs.Attributes.GetValue(ino, Encoding.UTF8.GetBytes(name)).AsSpan().SequenceEqual(value), $"{path} {name}: getxattr differs from the model");
        var missing = Assert.Throws<XfsWriteException>(() => fs.Attributes.GetValue(ino, "user.never-set"u8));
        Assert.Equal(WriteErrorKind.NoData, missing.Kind);
        long fromLeaf = fs.Attributes.LeafGets - before;
        Assert.True(fromLeaf == model.Of(path).Count + 1, $"{path}: {fromLeaf} of {model.Of(path).Count + 1} getxattr calls were answered from one leaf");
    }
}
