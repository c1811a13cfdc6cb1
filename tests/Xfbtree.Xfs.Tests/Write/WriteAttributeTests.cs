using System.Text;
using Xfbtree.Xfs.Attributes;
using Xfbtree.Xfs.Tests.Repair;
using Xfbtree.Xfs.Tests.Trees;
using Xfbtree.Xfs.Write;
using Xfbtree.Xfs.Write.Attributes;
using Xfbtree.Xfs.Write.Engine;
using Xunit.Abstractions;

namespace Xfbtree.Xfs.Tests.Write;

/// <summary>Models and oracles shared by the extended-attribute tests (two classes, so xunit runs them in parallel).</summary>
public abstract class WriteAttributeTestBase(ITestOutputHelper output)
{
    /// <summary>Test output.</summary>
    protected ITestOutputHelper Output { get; } = output;

    /// <summary>The model: per path, full name -> value.</summary>
    internal sealed class Model
    {
        public readonly Dictionary<string, SortedDictionary<string, byte[]>> Files = new(StringComparer.Ordinal);

        public SortedDictionary<string, byte[]> Of(string path)
        {
            lock (Files)
            {
                if (!Files.TryGetValue(path, out var d)) Files[path] = d = new SortedDictionary<string, byte[]>(StringComparer.Ordinal);
                return d;
            }
        }
    }

    internal static readonly string[] Prefixes = ["user.", "trusted.", "security."];

    internal static byte[] Value(Random rng, int length)
    {
        var v = new byte[length];
        rng.NextBytes(v);
        return v;
    }

    /// <summary>A value length drawn so that runs cross every form: tiny, leaf-local, remote, and now and then 64 KiB.</summary>
    internal static int DrawLength(Random rng) => rng.Next(100) switch
    {
        < 45 => rng.Next(0, 40),
        < 80 => rng.Next(40, 400),
        < 97 => rng.Next(400, 9000),
        _ => rng.Next(9000, AttrFormat.MaxValueLength + 1),
    };

    internal static void Set(XfsFileSystem fs, Model model, string path, string name, byte[] value)
    {
        fs.SetXattr(fs.Lookup(path), name, value);
        model.Of(path)[name] = value;
    }

    internal static void Remove(XfsFileSystem fs, Model model, string path, string name)
    {
        fs.RemoveXattr(fs.Lookup(path), name);
        model.Of(path).Remove(name);
    }

    /// <summary>The engine reads back exactly the model (names, namespaces, values).</summary>
    internal static void AssertEngineMatches(XfsFileSystem fs, Model model, string when)
    {
        foreach (var (path, expected) in model.Files)
        {
            var got = fs.Attributes.ReadAll(fs.Lookup(path)).ToDictionary(a => a.Name.FullName, a => a.Value, StringComparer.Ordinal);
            Assert.True(got.Count == expected.Count, $"{when}: {path} has {got.Count} attributes, the model {expected.Count}");
            foreach (var (name, value) in expected)
            {
                Assert.True(got.TryGetValue(name, out var v), $"{when}: {path} lacks {name}");
                Assert.True(v.AsSpan().SequenceEqual(value), $"{when}: {path} {name}: {v.Length} bytes differ from the model's {value.Length}");
            }
        }
    }

    /// <summary>Every attribute of <paramref name="paths"/> as the kernel reads them (getfattr, hex).</summary>
    internal static Dictionary<string, Dictionary<string, byte[]>> KernelAttributes(string mnt, IEnumerable<string> paths)
    {
        Assert.True(File.Exists("/usr/bin/getfattr"), "getfattr (package attr) is missing: the kernel oracle cannot run (scripts/ensure-tools.sh installs it)");
        var result = new Dictionary<string, Dictionary<string, byte[]>>(StringComparer.Ordinal);
        foreach (string path in paths)
        {
            var res = RepairTools.Exec("/usr/bin/getfattr", ["-h", "-d", "-m", "-", "-e", "hex", "--absolute-names", mnt + path]);
            Assert.True(res.ExitCode == 0, $"getfattr {path}: {res}");
            var attrs = new Dictionary<string, byte[]>(StringComparer.Ordinal);
            foreach (string line in res.Stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries))
            {
                if (line.StartsWith('#')) continue;
                int eq = line.IndexOf('=', StringComparison.Ordinal);
                if (eq < 0) { attrs[line] = []; continue; }
                string hex = line[(eq + 1)..];
                Assert.StartsWith("0x", hex, StringComparison.Ordinal);
                attrs[line[..eq]] = Convert.FromHexString(hex[2..]);
            }
            result[path] = attrs;
        }
        return result;
    }

    /// <summary>Mounts read-only (nouuid), compares every model path's attributes with getfattr, unmounts; the
    /// kernel log must hold no XFS error for the device.</summary>
    internal void AssertKernelMatches(string image, string scratchDir, Model model, string when)
    {
        RepairSafetyTests.RequireRoot();
        string mnt = Directory.CreateDirectory(Path.Combine(scratchDir, "mnt")).FullName;
        string marker = $"xfbtree-xattr-{Environment.ProcessId}-{Guid.NewGuid():N}";
        KernelLog.Mark(marker);
        WriteNamespaceOperationTests.FreshUuid(image);
        TreeFixtures.Run("/bin/mount", ["-o", "ro,loop,nouuid", image, mnt]);
        string device;
        Dictionary<string, Dictionary<string, byte[]>> kernel;
        try
        {
            device = Path.GetFileName(TreeFixtures.Run("/usr/bin/findmnt", ["-n", "-o", "SOURCE", mnt]).Trim());
            kernel = KernelAttributes(mnt, model.Files.Keys);
        }
        finally
        {
            TreeFixtures.Run("/bin/umount", [mnt]);
        }
        int compared = 0;
        foreach (var (path, expected) in model.Files)
        {
            var got = kernel[path];
            // SELinux or other LSMs may label files the kernel mounts; the model's namespaces are compared in full.
            Assert.True(got.Count == expected.Count, $"{when}: the kernel sees {got.Count} attributes on {path} ({string.Join(", ", got.Keys)}), the model {expected.Count}");
            foreach (var (name, value) in expected)
            {
                Assert.True(got.TryGetValue(name, out var v), $"{when}: the kernel does not see {name} on {path}");
                Assert.True(v.AsSpan().SequenceEqual(value), $"{when}: the kernel reads {v.Length} bytes for {path} {name}, the model has {value.Length}");
                compared++;
            }
        }
        KernelOracle.AssertKernelLogClean(marker, device, Output);
        Output.WriteLine($"{when}: the kernel read back {compared} attributes on {model.Files.Count} inodes");
    }

    internal void AssertAllOracles(string image, string scratchDir, Model model, string when)
    {
        WriteEngineTestSupport.AssertOraclesClean(image, when);
        AssertKernelMatches(image, scratchDir, model, when);
    }

}

/// <summary>Every attr-fork form grown and shrunk on four fixtures (see <see cref="WriteAttributeTests"/>).</summary>
public sealed class WriteAttributeFormTests(ITestOutputHelper output) : WriteAttributeTestBase(output)
{
    public static TheoryData<string> Fixtures => new() { "aged-small", "geom-bs1k", "geom-nrext64", "fresh-4ag", "aged-small-normap" };

    /// <summary>
    /// Several inodes grow through shortform, leaf and node forms (every namespace, remote values up to 64 KiB),
    /// are judged, then shrink back through node, leaf and shortform to nothing (one inode is unlinked with its
    /// node-format fork), and are judged again.
    /// </summary>
    [Theory]
    [MemberData(nameof(Fixtures))]
    public void GrowAndShrinkThroughEveryForm(string fixture)
    {
        using var scratch = new RepairScratch();
        string image = scratch.CopyFixture(fixture);
        var model = new Model();
        var rng = new Random(fixture.GetHashCode(StringComparison.Ordinal) & 0x7fffffff);
        string top = "/xattr-test";
        var paths = new[] { top + "/small", top + "/leafy", top + "/nodey", top + "/dir", top + "/doomed" };
        var targets = new Dictionary<string, int> { [paths[0]] = 6, [paths[1]] = 25, [paths[2]] = 220, [paths[3]] = 60, [paths[4]] = 150 };
        int bs;
        using (var fs = XfsFileSystem.Open(image, WriteEngineTestSupport.Fast))
        {
            bs = fs.Engine.Geometry.BlockSize;
            fs.Mkdir(top);
            foreach (string p in paths) { if (p.EndsWith("/dir", StringComparison.Ordinal)) fs.Mkdir(p); else fs.Create(p); }
            foreach (var (path, n) in targets)
            {
                for (int i = 0; i < n; i++)
                {
                    string name = Prefixes[i % 3] + $"a{i}-{new string('n', rng.Next(0, path == paths[0] ? 8 : 60))}";
                    Set(fs, model, path, name, Value(rng, path == paths[0] ? rng.Next(0, 30) : DrawLength(rng)));
                }
            }
            Assert.Equal("shortform", fs.Attributes.DescribeForm(fs.Lookup(paths[0])));
            // Replace some values in place and with other sizes (local <-> remote).
            foreach (string path in paths)
            {
                if (path == paths[0]) continue;
                foreach (string name in model.Of(path).Keys.Where((_, i) => i % 4 == 0).ToList()) Set(fs, model, path, name, Value(rng, DrawLength(rng)));
            }
            Set(fs, model, paths[2], "user.max", Value(rng, AttrFormat.MaxValueLength));
            Set(fs, model, paths[2], "user.empty", []);
            Assert.Equal("node", fs.Attributes.DescribeForm(fs.Lookup(paths[2])));
            Assert.Contains(fs.Attributes.DescribeForm(fs.Lookup(paths[1])), new[] { "leaf", "node" });
            AssertEngineMatches(fs, model, "grown");
            WriteEngineTestSupport.AssertInvariants(fs.Engine, "grown");
            fs.Close();
        }
        AssertAllOracles(image, scratch.Directory, model, $"{fixture} grown");

        using (var fs = XfsFileSystem.Open(image, WriteEngineTestSupport.Fast))
        {
            // The engine reads what it wrote after a reopen; then shrink: node -> leaf -> shortform -> none.
            AssertEngineMatches(fs, model, "reopened");
            fs.Unlink(paths[4]);
            model.Files.Remove(paths[4]);
            var formsSeen = new List<string>();
            foreach (string path in paths[..4])
            {
                // Largest values first, so the survivors are small enough for shortform.
                var names = model.Of(path).OrderByDescending(a => a.Value.Length).Select(a => a.Key).ToList();
                int keep = path == paths[0] ? 0 : path == paths[2] ? 3 : 2;
                foreach (string name in names.Take(names.Count - keep))
                {
                    Remove(fs, model, path, name);
                    if (path != paths[2]) continue;
                    string form = fs.Attributes.DescribeForm(fs.Lookup(path));
                    if (formsSeen.Count == 0 || formsSeen[^1] != form) formsSeen.Add(form);
                }
            }
            // The big fork went down through every form (node -> leaf -> shortform) as entries left.
            Output.WriteLine($"{fixture}: forms while shrinking: {string.Join(" -> ", formsSeen)}");
            Assert.Equal(new[] { "node", "leaf", "shortform" }, formsSeen);
            Assert.Equal("none", fs.Attributes.DescribeForm(fs.Lookup(paths[0])));
            AssertEngineMatches(fs, model, "shrunk");
            WriteEngineTestSupport.AssertInvariants(fs.Engine, "shrunk");
            fs.Close();
        }
        AssertAllOracles(image, scratch.Directory, model, $"{fixture} shrunk");
        Output.WriteLine($"{fixture}: block size {bs}");
    }

}

/// <summary>
/// Extended attributes through the write engine on copies of real images: shortform -> leaf -> node and back, local
/// and remote values, the three namespaces, the syscalls' errors, kernel round trips and threaded model runs. Each
/// state is judged after a clean close by xfs_repair -n, xfbtree rmap check and the kernel (getfattr on a read-only
/// loop mount must list exactly the model's attributes).
/// </summary>
public sealed class WriteAttributeTests(ITestOutputHelper output) : WriteAttributeTestBase(output)
{
    /// <summary>Paths of the fixture's feature files, from its info file ("name ino N ... path").</summary>
    static Dictionary<string, string> FeaturePaths(string fixture)
    {
        var result = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (string line in File.ReadLines(Path.Combine(TreeFixtures.FixtureDir, TreeFixtures.BaseName(fixture) + ".info.txt")))
        {
            var words = line.Split(' ', StringSplitOptions.RemoveEmptyEntries);
            if (words.Length >= 4 && words[1] == "ino" && words[^1].StartsWith("feat/", StringComparison.Ordinal)) result[words[0]] = "/" + words[^1];
        }
        return result;
    }

    /// <summary>
    /// Forks the kernel aged: the engine reads the kernel's attributes exactly (a btree-format attr fork with
    /// hundreds of remote values, a remote value), then edits them and adds attributes beside data forks of every
    /// kind: a btree data fork (the fork offset moves, the root is laid out again, and the attr fork goes away and
    /// comes back), a node directory, a new shortform directory (inline data), a symlink (trusted only: user.* is
    /// EPERM); the kernel then reads exactly the model.
    /// </summary>
    [Theory]
    [InlineData("aged-small")]
    [InlineData("geom-bs1k")]
    public void KernelAgedForksAreReadAndEdited(string fixture)
    {
        RepairSafetyTests.RequireRoot();
        using var scratch = new RepairScratch();
        string image = scratch.CopyFixture(fixture);
        var feat = FeaturePaths(fixture);
        string many = feat["many_attrs"], remote = feat["remote_attr"], frag = feat["fragmented"], bigdir = feat["bigdir"], link = feat["long_symlink"];
        var model = new Model();
        // The kernel's view first.
        string mnt = Directory.CreateDirectory(Path.Combine(scratch.Directory, "ro")).FullName;
        WriteNamespaceOperationTests.FreshUuid(image);
        TreeFixtures.Run("/bin/mount", ["-o", "ro,loop,nouuid", image, mnt]);
        try
        {
            foreach (var (path, attrs) in KernelAttributes(mnt, [many, remote, frag, bigdir, link]))
            {
                foreach (var (name, value) in attrs) model.Of(path)[name] = value;
            }
        }
        finally
        {
            TreeFixtures.Run("/bin/umount", [mnt]);
        }
        Assert.True(model.Of(many).Count > 100, $"{many} has only {model.Of(many).Count} attributes");
        var rng = new Random(7);
        using (var fs = XfsFileSystem.Open(image, WriteEngineTestSupport.Fast))
        {
            AssertEngineMatches(fs, model, "the kernel's attributes");
            Assert.Equal("node", fs.Attributes.DescribeForm(fs.Lookup(many)));
            var names = model.Of(many).Keys.ToList();
            for (int i = 0; i < names.Count; i++)
            {
                if (i % 2 == 0) Remove(fs, model, many, names[i]);
                else if (i % 5 == 1) Set(fs, model, many, names[i], Value(rng, DrawLength(rng)));
            }
            for (int i = 0; i < 20; i++) Set(fs, model, many, $"{Prefixes[i % 3]}engine{i}", Value(rng, DrawLength(rng)));
            for (int i = 0; i < 3; i++) Set(fs, model, remote, $"user.more{i}", Value(rng, 3000));

            // Beside a btree data fork: grow to leaf, remove everything (the fork goes), come back as shortform.
            for (int i = 0; i < 30; i++) Set(fs, model, frag, $"user.f{i}", Value(rng, 100));
            foreach (string name in model.Of(frag).Keys.ToList()) Remove(fs, model, frag, name);
            // The kernel keeps an empty shortform fork beside a btree data fork.
            Assert.Equal("shortform", fs.Attributes.DescribeForm(fs.Lookup(frag)));
            Set(fs, model, frag, "security.selinux", "system_u:object_r:user_home_t:s0"u8.ToArray());
            Set(fs, model, frag, "user.back", "again"u8.ToArray());
            Assert.Equal("shortform", fs.Attributes.DescribeForm(fs.Lookup(frag)));

            for (int i = 0; i < 10; i++) Set(fs, model, bigdir, $"trusted.d{i}", Value(rng, 50));

            // A shortform directory (inline data fork) with attributes growing beside it and shrinking back.
            string sfdir = "/xattr-aged-dir";
            fs.Mkdir(sfdir);
            for (int i = 0; i < 5; i++) fs.Create($"{sfdir}/e{i}");
            for (int i = 0; i < 50; i++) Set(fs, model, sfdir, $"user.s{i}", Value(rng, 30));
            foreach (string name in model.Of(sfdir).Keys.Take(45).ToList()) Remove(fs, model, sfdir, name);
            fs.Create($"{sfdir}/after");

            // The kernel's btree-format attr fork (bmbt blocks and all) released down to a shortform list.
            string copy = "/xattr-aged-copy";
            fs.Create(copy);
            foreach (var (name, value) in model.Of(many).ToList()) Set(fs, model, copy, name, value);
            foreach (string name in model.Of(many).Keys.ToList()) Remove(fs, model, many, name);
            Assert.Equal("none", fs.Attributes.DescribeForm(fs.Lookup(many)));
            Set(fs, model, many, "user.small", "s"u8.ToArray());
            Assert.Equal("shortform", fs.Attributes.DescribeForm(fs.Lookup(many)));

            var e = Assert.Throws<XfsWriteException>(() => fs.SetXattr(fs.Lookup(link), "user.nope", "x"u8));
            Assert.Equal(WriteErrorKind.NotPermitted, e.Kind);
            Set(fs, model, link, "trusted.link", "t"u8.ToArray());
            AssertEngineMatches(fs, model, "after the edits");
            WriteEngineTestSupport.AssertInvariants(fs.Engine, "after the edits");
            fs.Close();
        }
        AssertAllOracles(image, scratch.Directory, model, $"{fixture} aged forks edited");
    }

    /// <summary>
    /// A new attr fork beside a data fork of more extents than fit next to it: the data fork becomes a btree (as
    /// xfs_bmap_add_attrfork converts it); removing the attribute removes the fork again. Judged by the oracles
    /// with the file's data read back by the kernel.
    /// </summary>
    [Fact]
    public void NewForkBesideManyExtentsConvertsTheDataFork()
    {
        using var scratch = new RepairScratch();
        string image = scratch.CopyFixture("fresh-4ag");
        var model = new Model();
        using (var fs = XfsFileSystem.Open(image, WriteEngineTestSupport.Fast))
        {
            int bs = fs.Engine.Geometry.BlockSize;
            int literal = fs.Engine.Geometry.InodeSize - 176;
            ulong ino = fs.Create("/xattr-extents");
            int extents = literal / 16 - 4;
            var block = new byte[bs];
            for (int i = 0; i < extents; i++)
            {
                block.AsSpan().Fill((byte)(i + 1));
                fs.Write("/xattr-extents", (long)i * 2 * bs, block);
            }
            Assert.Equal("extents", fs.Stat("/xattr-extents").DataForkFormat);
            // An attribute too big to leave room for the extents beside it.
            Set(fs, model, "/xattr-extents", "user.wide", new byte[literal - extents * 16 + 40]);
            Assert.Equal("btree", fs.Stat("/xattr-extents").DataForkFormat);
            Assert.Equal("shortform", fs.Attributes.DescribeForm(ino));
            WriteEngineTestSupport.AssertInvariants(fs.Engine, "converted");
            for (int i = 0; i < extents; i++)
            {
                Assert.Equal(bs, fs.Read("/xattr-extents", (long)i * 2 * bs, block));
                Assert.True(block.All(b => b == (byte)(i + 1)), $"block {i * 2} lost its data");
            }
            fs.Close();
        }
        AssertAllOracles(image, scratch.Directory, model, "data fork converted");
        using (var fs = XfsFileSystem.Open(image, WriteEngineTestSupport.Fast))
        {
            Remove(fs, model, "/xattr-extents", "user.wide");
            // The kernel keeps an empty shortform fork beside a btree data fork.
            Assert.Equal("shortform", fs.Attributes.DescribeForm(fs.Lookup("/xattr-extents")));
            Assert.Equal(0, fs.ListXattr(fs.Lookup("/xattr-extents"), []));

            // A btree data fork without an attr fork: the root is laid out again in the smaller data fork.
            int bs = fs.Engine.Geometry.BlockSize;
            ulong ino = fs.Create("/xattr-btree");
            var block = new byte[bs];
            int extents = (fs.Engine.Geometry.InodeSize - 176) / 16 + 8;
            for (int i = 0; i < extents; i++)
            {
                block.AsSpan().Fill((byte)(i + 7));
                fs.Write("/xattr-btree", (long)i * 2 * bs, block);
            }
            Assert.Equal("btree", fs.Stat("/xattr-btree").DataForkFormat);
            Assert.Equal("none", fs.Attributes.DescribeForm(ino));
            Set(fs, model, "/xattr-btree", "user.first", "1"u8.ToArray());
            Assert.Equal("shortform", fs.Attributes.DescribeForm(ino));
            for (int i = 0; i < 40; i++) Set(fs, model, "/xattr-btree", $"trusted.n{i}", new byte[60]);
            Assert.Equal("leaf", fs.Attributes.DescribeForm(ino));
            // More data after the fork moved: the data btree keeps working in its smaller root.
            for (int i = extents; i < extents + 40; i++)
            {
                block.AsSpan().Fill((byte)(i + 7));
                fs.Write("/xattr-btree", (long)i * 2 * bs, block);
            }
            for (int i = 0; i < extents + 40; i++)
            {
                Assert.Equal(bs, fs.Read("/xattr-btree", (long)i * 2 * bs, block));
                Assert.True(block.All(b => b == (byte)(i + 7)), $"block {i * 2} lost its data");
            }
            WriteEngineTestSupport.AssertInvariants(fs.Engine, "btree data beside attributes");
            fs.Close();
        }
        AssertAllOracles(image, scratch.Directory, model, "attr fork removed beside the btree");
    }

    /// <summary>
    /// Fills a new directory at <paramref name="path"/> with files until it turns into a block directory, then
    /// removes the last one: the directory is shortform again with less than one more entry of room in the inode.
    /// Returns the names it holds.
    /// </summary>
    static List<string> FillShortformDirectory(XfsFileSystem fs, string path)
    {
        fs.Mkdir(path);
        var names = new List<string>();
        for (int i = 0; i < 1000; i++)
        {
            string name = $"entry-{i:D4}";
            fs.Create($"{path}/{name}");
            if (fs.Stat(path).DataForkFormat != "local")
            {
                fs.Unlink($"{path}/{name}");
                Assert.Equal("local", fs.Stat(path).DataForkFormat);
                return names;
            }
            names.Add(name);
        }
        throw new InvalidOperationException($"{path} never left shortform");
    }

    /// <summary>An inline symlink target as long as the data fork holds.</summary>
    static string LongInlineTarget(XfsFileSystem fs) => "/" + new string('t', fs.Engine.Geometry.InodeSize - 176 - 1);

    /// <summary>The inode fields a new attr fork sets, as xfs_db prints them, for comparing two images.</summary>
    static string ForkFields(string image, string path)
    {
        var res = RepairTools.Exec(TreeFixtures.Tool("xfs_db"), ["-r", "-c", $"path {path}", "-c", "print core.forkoff core.format core.aformat core.nextents core.nblocks core.size", image]);
        Assert.True(res.ExitCode == 0 && res.Stdout.Contains("core.forkoff", StringComparison.Ordinal), $"xfs_db {path}: {res}");
        return res.Stdout.Trim().ReplaceLineEndings(", ");
    }

    /// <summary>
    /// A new attr fork beside inline data that leaves it no room: a shortform directory that nearly fills the
    /// literal area becomes a block directory, and an inline symlink of the longest inline target moves to a remote
    /// block, in the setxattr's transaction (as xfs_bmap_add_attrfork_local), then the attribute goes in shortform.
    /// The kernel, given the same image and the same setxattr calls, ends with the same fork offsets and formats.
    /// The names, the target and the attributes read back in the engine, with xfs_repair -n, rmap check, scrub and
    /// the kernel (ls, readlink, getfattr) judging the image.
    /// </summary>
    [Fact]
    public void NewForkBesideFullInlineDataMovesTheDataOut()
    {
        RepairSafetyTests.RequireRoot();
        using var scratch = new RepairScratch();
        string image = scratch.CopyFixture("fresh-4ag");
        var model = new Model();
        List<string> names;
        string target;
        // A value too large to fit beside the directory's entries: xfs_attr_shortform_bytesfit finds no offset for it.
        var dirValue = Value(new Random(3), 48);
        var linkValue = Value(new Random(5), 20);
        using (var fs = XfsFileSystem.Open(image, WriteEngineTestSupport.Fast))
        {
            int literal = fs.Engine.Geometry.InodeSize - 176;
            names = FillShortformDirectory(fs, "/sfdir");
            long size = fs.Stat("/sfdir").Size;
            Output.WriteLine($"shortform directory of {names.Count} entries, {size} of {literal} bytes");
            Assert.True(size > literal - 4 - 3 - "a".Length - dirValue.Length, "the directory leaves room for the attribute");
            target = LongInlineTarget(fs);
            fs.Symlink(target, "/longlink");
            Assert.Equal("local", fs.Stat("/longlink").DataForkFormat);
            fs.Close();
        }

        // The kernel makes the same calls on a copy.
        string kernelImage = scratch.Copy(image, "kernel.img");
        WriteNamespaceOperationTests.FreshUuid(kernelImage);
        string kmnt = Directory.CreateDirectory(Path.Combine(scratch.Directory, "mnt-kernel")).FullName;
        TreeFixtures.Run("/bin/mount", ["-o", "loop,nouuid", kernelImage, kmnt]);
        try
        {
            foreach (var (path, name, value) in new[] { ("/sfdir", "user.a", dirValue), ("/longlink", "trusted.t", linkValue) })
            {
                var res = RepairTools.Exec("/usr/bin/setfattr", ["-h", "-n", name, "-v", "0x" + Convert.ToHexString(value), kmnt + path]);
                Assert.True(res.ExitCode == 0, $"kernel setfattr {path}: {res}");
            }
        }
        finally
        {
            TreeFixtures.Run("/bin/umount", [kmnt]);
        }

        using (var fs = XfsFileSystem.Open(image, WriteEngineTestSupport.Fast))
        {
            Set(fs, model, "/sfdir", "user.a", dirValue);
            Assert.Equal("extents", fs.Stat("/sfdir").DataForkFormat);
            Assert.Equal("shortform", fs.Attributes.DescribeForm(fs.Lookup("/sfdir")));
            Assert.Equal(names, fs.List("/sfdir").Select(e => e.Name).Where(n => n is not ("." or "..")).Order(StringComparer.Ordinal).ToList());
            Set(fs, model, "/longlink", "trusted.t", linkValue);
            Assert.Equal("extents", fs.Stat("/longlink").DataForkFormat);
            Assert.Equal("shortform", fs.Attributes.DescribeForm(fs.Lookup("/longlink")));
            Assert.Equal(target, fs.ReadLink("/longlink"));
            fs.Close();
        }
        foreach (string path in new[] { "/sfdir", "/longlink" })
        {
            string engine = ForkFields(image, path), kernel = ForkFields(kernelImage, path);
            Output.WriteLine($"{path}: {engine}");
            Assert.True(engine == kernel, $"{path}: the engine leaves {engine}, the kernel {kernel}");
        }

        using (var fs = XfsFileSystem.Open(image, WriteEngineTestSupport.Fast))
        {
            // The directory keeps working in its block, the fork beside it too.
            fs.Create("/sfdir/after");
            names.Add("after");
            Set(fs, model, "/sfdir", "trusted.b", Value(new Random(4), 30));
            WriteEngineTestSupport.AssertInvariants(fs.Engine, "inline data moved out");
            AssertEngineMatches(fs, model, "inline data moved out");
            fs.Close();
        }
        var scrub = RepairTools.Xfbtree("scrub", image);
        Assert.True(scrub.ExitCode == 0, $"xfbtree scrub: {scrub}");
        AssertAllOracles(image, scratch.Directory, model, "inline data moved out");

        string mnt = Directory.CreateDirectory(Path.Combine(scratch.Directory, "mnt-ls")).FullName;
        TreeFixtures.Run("/bin/mount", ["-o", "ro,loop,nouuid", image, mnt]);
        List<string> listed;
        string kernelTarget;
        try
        {
            listed = Directory.GetFileSystemEntries(Path.Combine(mnt, "sfdir")).Select(p => Path.GetFileName(p)!).Order(StringComparer.Ordinal).ToList();
            kernelTarget = new FileInfo(Path.Combine(mnt, "longlink")).LinkTarget ?? "";
        }
        finally
        {
            TreeFixtures.Run("/bin/umount", [mnt]);
        }
        Assert.Equal(names.Order(StringComparer.Ordinal).ToList(), listed);
        Assert.Equal(target, kernelTarget);
    }

    /// <summary>
    /// A crash at every write of the setxattr that moves a shortform directory out of the inode: the reopened image
    /// holds the directory and its attribute either as before or as after, never between; oracles judge each.
    /// </summary>
    [Fact]
    public void CrashWhileMovingInlineDataOutLeavesWholeOperations()
    {
        using var scratch = new RepairScratch();
        string original = scratch.CopyFixture("fresh-4ag");
        List<string> names;
        string target;
        using (var fs = XfsFileSystem.Open(original, WriteEngineTestSupport.Fast))
        {
            names = FillShortformDirectory(fs, "/sfdir");
            target = LongInlineTarget(fs);
            fs.Symlink(target, "/longlink");
            fs.Close();
        }
        var value = Value(new Random(6), 48);
        void Workload(XfsFileSystem fs)
        {
            fs.SetXattr(fs.Lookup("/sfdir"), "user.a", value);
            fs.SetXattr(fs.Lookup("/longlink"), "trusted.t", value);
            fs.Close();
        }
        string reference = scratch.Copy(original, "reference.img");
        var counter = new WriteFaultInjector(int.MaxValue, () => { });
        using (var fs = XfsFileSystem.Open(reference, WriteEngineTestSupport.Fast with { Faults = counter })) Workload(fs);
        int total = counter.Writes;
        Assert.True(total > 0, "the workload wrote nothing");
        int checkedPoints = 0, applied = 0;
        for (int k = 1; k <= total; k++)
        {
            string image = scratch.Copy(original, $"crash-{k}.img");
            var faults = new WriteFaultInjector(k, () => { });
            XfsFileSystem? fs = null;
            try
            {
                fs = XfsFileSystem.Open(image, WriteEngineTestSupport.Fast with { Faults = faults });
                Workload(fs);
            }
            catch (Exception e) when (faults.Crashed && (e is SimulatedCrashException || e.InnerException is SimulatedCrashException || e is XfsWriteException))
            {
            }
            finally
            {
                fs?.Dispose();
            }
            Assert.True(faults.Crashed, $"k={k}: the crash point was never reached ({faults.Writes} writes)");
            using (var again = XfsFileSystem.Open(image, WriteEngineTestSupport.Fast))
            {
                foreach (var (path, name) in new[] { ("/sfdir", "user.a"), ("/longlink", "trusted.t") })
                {
                    var attrs = again.Attributes.ReadAll(again.Lookup(path));
                    bool set = attrs.Count == 1 && attrs[0].Name.FullName == name && attrs[0].Value.AsSpan().SequenceEqual(value);
                    Assert.True(set || attrs.Count == 0, $"k={k}: {path} has {attrs.Count} attributes, neither none nor the one set");
                    string format = again.Stat(path).DataForkFormat;
                    Assert.True(set ? format == "extents" : format == "local", $"k={k}: {path} is {format} with the attribute {(set ? "set" : "absent")}");
                    if (set) applied++;
                }
                Assert.Equal(names, again.List("/sfdir").Select(e => e.Name).Where(n => n is not ("." or "..")).Order(StringComparer.Ordinal).ToList());
                Assert.Equal(target, again.ReadLink("/longlink"));
                WriteEngineTestSupport.AssertInvariants(again.Engine, $"k={k}");
                again.Close();
            }
            WriteEngineTestSupport.AssertOraclesClean(image, $"k={k}");
            checkedPoints++;
            File.Delete(image);
        }
        Output.WriteLine($"{total} writes in the reference run; {checkedPoints} crash points judged; the attribute had reached the image {applied} times");
    }

    /// <summary>The syscalls' errors, each leaving the attributes as they were.</summary>
    [Fact]
    public void ErrorsAreTheKernelsAndChangeNothing()
    {
        using var scratch = new RepairScratch();
        string image = scratch.CopyFixture("fresh-4ag");
        var model = new Model();
        using (var fs = XfsFileSystem.Open(image, WriteEngineTestSupport.Fast))
        {
            ulong ino = fs.Create("/xattr-errors");
            Set(fs, model, "/xattr-errors", "user.here", "v"u8.ToArray());
            void Fails(WriteErrorKind kind, Action a)
            {
                var e = Assert.Throws<XfsWriteException>(a);
                Assert.Equal(kind, e.Kind);
                Assert.DoesNotContain("\n", e.Message, StringComparison.Ordinal);
            }
            Fails(WriteErrorKind.Exists, () => fs.SetXattr(ino, "user.here", "x"u8, XattrSetFlags.Create));
            Fails(WriteErrorKind.NoData, () => fs.SetXattr(ino, "user.absent", "x"u8, XattrSetFlags.Replace));
            Fails(WriteErrorKind.NoData, () => fs.GetXattr(ino, "user.absent", new byte[10]));
            Fails(WriteErrorKind.NoData, () => fs.RemoveXattr(ino, "trusted.here"));
            Fails(WriteErrorKind.TooBig, () => fs.SetXattr(ino, "user.big", new byte[AttrFormat.MaxValueLength + 1]));
            Fails(WriteErrorKind.OutOfRange, () => fs.SetXattr(ino, "user." + new string('n', 251), "x"u8));
            Fails(WriteErrorKind.OutOfRange, () => fs.SetXattr(ino, "", "x"u8));
            Set(fs, model, "/xattr-errors", "security.two", "ab"u8.ToArray());
            Fails(WriteErrorKind.OutOfRange, () => fs.GetXattr(ino, "security.two", new byte[1]));
            Fails(WriteErrorKind.InvalidArgument, () => fs.SetXattr(ino, "user.", "x"u8));
            Fails(WriteErrorKind.NotSupported, () => fs.SetXattr(ino, "system.posix_acl_access", "x"u8));
            Fails(WriteErrorKind.NotSupported, () => fs.SetXattr(ino, "nonamespace", "x"u8));
            Fails(WriteErrorKind.InvalidArgument, () => fs.SetXattr(ino, "user.x", "x"u8, XattrSetFlags.Create | XattrSetFlags.Replace));
            // A name of exactly 255 bytes is fine; XATTR_CREATE and XATTR_REPLACE work when they apply.
            Set(fs, model, "/xattr-errors", "user." + new string('n', 250), "long"u8.ToArray());
            fs.SetXattr(ino, "trusted.new", "t"u8, XattrSetFlags.Create);
            model.Of("/xattr-errors")["trusted.new"] = "t"u8.ToArray();
            fs.SetXattr(ino, "user.here", "w"u8, XattrSetFlags.Replace);
            model.Of("/xattr-errors")["user.here"] = "w"u8.ToArray();
            Assert.Equal(1, fs.GetXattr(ino, "user.here", []));
            var small = new byte[3];
            Assert.Equal(1, fs.GetXattr(ino, "user.here", small));
            int size = fs.ListXattr(ino, []);
            var list = new byte[size];
            Assert.Equal(size, fs.ListXattr(ino, list));
            var names = Encoding.UTF8.GetString(list).Split('\0', StringSplitOptions.RemoveEmptyEntries).ToHashSet();
            Assert.True(names.SetEquals(model.Of("/xattr-errors").Keys), string.Join(",", names));
            Fails(WriteErrorKind.OutOfRange, () => fs.ListXattr(ino, new byte[size - 1]));
            AssertEngineMatches(fs, model, "after the errors");
            fs.Close();
        }
        AssertAllOracles(image, scratch.Directory, model, "errors");
    }

    /// <summary>
    /// The kernel sets attributes (setfattr: shortform, leaf and node forks with remote values), the engine reads
    /// them exactly, edits them (removes, replaces, adds), and the kernel reads the engine's result; twice over.
    /// </summary>
    [Fact]
    public void RoundTripWithTheKernel()
    {
        RepairSafetyTests.RequireRoot();
        Assert.True(File.Exists("/usr/bin/setfattr"), "setfattr (package attr) is missing: the round trip cannot run");
        using var scratch = new RepairScratch();
        string image = scratch.CopyFixture("fresh-4ag");
        var model = new Model();
        var rng = new Random(20);
        string mnt = Directory.CreateDirectory(Path.Combine(scratch.Directory, "rw")).FullName;
        var paths = new[] { "/rt-sf", "/rt-leaf", "/rt-node" };
        var counts = new[] { 4, 30, 300 };
        for (int round = 0; round < 2; round++)
        {
            // The kernel's turn.
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
                        int len = f == 0 ? rng.Next(1, 30) : i % 50 == 7 ? 5000 : rng.Next(1, 120);
                        string text = new string((char)('a' + i % 26), len);
                        script.Append($"setfattr -n {name} -v '{text}' '{p}'\n");
                        model.Of(paths[f])[name] = Encoding.ASCII.GetBytes(text);
                    }
                }
                File.WriteAllText(Path.Combine(scratch.Directory, "k.sh"), script.ToString());
                TreeFixtures.Run("/bin/sh", [Path.Combine(scratch.Directory, "k.sh")]);
            }
            finally
            {
                TreeFixtures.Run("/bin/umount", [mnt]);
            }
            WriteEngineTestSupport.AssertOraclesClean(image, $"round {round}: the kernel's attributes");
            // The engine's turn: read exactly, then edit.
            using (var fs = XfsFileSystem.Open(image, WriteEngineTestSupport.Fast))
            {
                AssertEngineMatches(fs, model, $"round {round}: the engine reads the kernel's attributes");
                if (round == 0)
                {
                    Assert.Equal("shortform", fs.Attributes.DescribeForm(fs.Lookup(paths[0])));
                    Assert.Equal("leaf", fs.Attributes.DescribeForm(fs.Lookup(paths[1])));
                    Assert.Equal("node", fs.Attributes.DescribeForm(fs.Lookup(paths[2])));
                }
                foreach (string path in paths)
                {
                    var names = model.Of(path).Keys.ToList();
                    for (int i = 0; i < names.Count; i++)
                    {
                        if (i % 3 == 0) Remove(fs, model, path, names[i]);
                        else if (i % 5 == 1) Set(fs, model, path, names[i], Value(rng, DrawLength(rng)));
                    }
                    for (int i = 0; i < 10; i++) Set(fs, model, path, $"{Prefixes[i % 3]}e{round}-{i}", Value(rng, DrawLength(rng)));
                }
                fs.Close();
            }
            AssertAllOracles(image, scratch.Directory, model, $"round {round}: the engine's edits");
        }
    }

    /// <summary>
    /// Randomized model runs: 2-4 threads, each owning its inodes, draw set (plain, XATTR_CREATE, XATTR_REPLACE),
    /// remove and get with expected outcomes from the model; the engine and then the oracles must agree.
    /// </summary>
    [Theory]
    [InlineData(1, 2)]
    [InlineData(2, 4)]
    public void RandomizedThreadsAgreeWithTheModel(int seed, int threads)
    {
        using var scratch = new RepairScratch();
        string image = scratch.CopyFixture(seed % 2 == 0 ? "geom-bs1k" : "aged-small");
        var model = new Model();
        int opsPerThread = 150;
        long checkedOps = 0;
        using (var fs = XfsFileSystem.Open(image, WriteEngineTestSupport.Fast))
        {
            fs.Mkdir("/xattr-rand");
            var owned = new List<string>[threads];
            for (int t = 0; t < threads; t++)
            {
                owned[t] = new List<string>();
                for (int k = 0; k < 2; k++)
                {
                    string p = $"/xattr-rand/t{t}-{k}";
                    fs.Create(p);
                    owned[t].Add(p);
                    model.Of(p);
                }
            }
            // One inode all threads change at once, each under names of its own (kept in a model per thread).
            const string shared = "/xattr-rand/shared";
            fs.Create(shared);
            model.Of(shared);
            var sharedModels = Enumerable.Range(0, threads).Select(_ => new SortedDictionary<string, byte[]>(StringComparer.Ordinal)).ToArray();
            var failures = new List<string>();
            var workers = Enumerable.Range(0, threads).Select(t => new Thread(() =>
            {
                var rng = new Random(seed * 1000 + t);
                try
                {
                    for (int i = 0; i < opsPerThread; i++)
                    {
                        bool onShared = rng.Next(4) == 0;
                        string path = onShared ? shared : owned[t][rng.Next(owned[t].Count)];
                        var attrs = onShared ? sharedModels[t] : model.Of(path);
                        ulong ino = fs.Lookup(path);
                        string name = $"{Prefixes[rng.Next(3)]}{(onShared ? $"t{t}-" : "")}r{rng.Next(60)}";
                        bool exists = attrs.ContainsKey(name);
                        int op = rng.Next(10);
                        if (op < 5)
                        {
                            var flags = rng.Next(4) switch { 0 => XattrSetFlags.Create, 1 => XattrSetFlags.Replace, _ => XattrSetFlags.None };
                            var value = Value(rng, DrawLength(rng) % 12000);
                            var expected = flags == XattrSetFlags.Create && exists ? WriteErrorKind.Exists
                                : flags == XattrSetFlags.Replace && !exists ? WriteErrorKind.NoData : (WriteErrorKind?)null;
                            Outcome(() => fs.SetXattr(ino, name, value, flags), expected, $"set {name} {flags}");
                            if (expected is null) attrs[name] = value;
                        }
                        else if (op < 8)
                        {
                            Outcome(() => fs.RemoveXattr(ino, name), exists ? null : WriteErrorKind.NoData, $"remove {name}");
                            attrs.Remove(name);
                        }
                        else
                        {
                            byte[]? got = null;
                            Outcome(() => got = fs.Attributes.GetValue(ino, Encoding.UTF8.GetBytes(name)), exists ? null : WriteErrorKind.NoData, $"get {name}");
                            if (exists && !got!.AsSpan().SequenceEqual(attrs[name])) throw new InvalidOperationException($"get {name} on {path}: value differs");
                        }
                        Interlocked.Increment(ref checkedOps);
                    }
                }
                catch (Exception e)
                {
                    lock (failures) failures.Add($"thread {t}: {e}");
                }
            })).ToList();
            workers.ForEach(w => w.Start());
            workers.ForEach(w => w.Join());
            Assert.True(failures.Count == 0, string.Join("\n", failures));
            foreach (var m in sharedModels)
            {
                foreach (var (name, value) in m) model.Of(shared)[name] = value;
            }
            AssertEngineMatches(fs, model, "after the threads");
            WriteEngineTestSupport.AssertInvariants(fs.Engine, "after the threads");
            fs.Close();
        }
        Assert.Equal(threads * opsPerThread, checkedOps);
        Output.WriteLine($"seed {seed}: {checkedOps} operations checked against the model by {threads} threads");
        AssertAllOracles(image, scratch.Directory, model, $"seed {seed}");
    }

    static void Outcome(Action action, WriteErrorKind? expected, string what)
    {
        try
        {
            action();
        }
        catch (XfsWriteException e) when (expected == e.Kind)
        {
            return;
        }
        if (expected is { } k) throw new InvalidOperationException($"{what}: expected {k}, it succeeded");
    }

    /// <summary>A deterministic xattr workload on one file crossing every form; returns the operations that returned.</summary>
    static int XattrWorkload(XfsFileSystem fs, Action<int> afterEach)
    {
        var rng = new Random(33);
        ulong ino = fs.Create("/xattr-crash");
        int done = 0;
        afterEach(++done);
        for (int i = 0; i < 60; i++)
        {
            fs.SetXattr(ino, $"{Prefixes[i % 3]}c{i}", Value(rng, i % 9 == 4 ? 3000 + i : 20 + i * 3));
            afterEach(++done);
        }
        for (int i = 0; i < 60; i += 2)
        {
            fs.RemoveXattr(ino, $"{Prefixes[i % 3]}c{i}");
            afterEach(++done);
        }
        return done;
    }

    /// <summary>
    /// A crash (the k-th image or journal write never happens) in the middle of xattr operations: the reopened image
    /// (the journal replayed) holds the attributes after exactly the operations that returned, or one more (the one in
    /// flight); invariants hold and, for some crash points, xfs_repair -n and rmap check are clean.
    /// </summary>
    [Fact]
    public void CrashInTheMiddleLeavesWholeOperations()
    {
        using var scratch = new RepairScratch();
        string original = scratch.CopyFixture("fresh-4ag");
        // Reference: the digest after each operation and the number of writes.
        string reference = scratch.Copy(original, "reference.img");
        var counter = new WriteFaultInjector(int.MaxValue, () => { });
        var states = new List<string> { "none" };
        int total;
        using (var fs = XfsFileSystem.Open(reference, WriteEngineTestSupport.Fast with { Faults = counter }))
        {
            XattrWorkload(fs, _ => states.Add(fs.XattrDigest(fs.Lookup("/xattr-crash"))));
            // The crash points fall in in-place changes too, not only in whole-fork rewrites.
            Assert.True(fs.Attributes.InPlaceChanges > 0, "the workload made no change in place");
            Output.WriteLine($"{fs.Attributes.InPlaceChanges} of the workload's changes were made in place");
            fs.Close();
        }
        total = counter.Writes;
        var ks = new SortedSet<int> { 1, total / 2, total - 1, total };
        var rnd = new Random(5);
        while (ks.Count < 8) ks.Add(rnd.Next(1, total));
        int oracleRuns = 0, inFlightApplied = 0;
        foreach (int k in ks)
        {
            string image = scratch.Copy(original, $"crash-{k}.img");
            var faults = new WriteFaultInjector(k, () => { });
            int returned = 0;
            XfsFileSystem? fs = null;
            try
            {
                fs = XfsFileSystem.Open(image, WriteEngineTestSupport.Fast with { Faults = faults });
                XattrWorkload(fs, j => returned = j);
                fs.Close();
            }
            catch (Exception e) when (faults.Crashed && (e is SimulatedCrashException || e.InnerException is SimulatedCrashException || e is XfsWriteException))
            {
            }
            finally
            {
                fs?.Dispose();
            }
            Assert.True(faults.Crashed, $"k={k}: the crash point was never reached ({faults.Writes} writes)");
            using (var again = XfsFileSystem.Open(image, WriteEngineTestSupport.Fast))
            {
                string state;
                try { state = again.XattrDigest(again.Lookup("/xattr-crash")); }
                catch (XfsWriteException e) when (e.Kind == WriteErrorKind.NotFound) { state = "none"; }
                bool exact = state == states[returned];
                bool oneMore = returned + 1 < states.Count && state == states[returned + 1];
                Assert.True(exact || oneMore, $"k={k}: after {returned} returned operations the file's attributes match neither that state nor the next");
                if (!exact) inFlightApplied++;
                WriteEngineTestSupport.AssertInvariants(again.Engine, $"k={k}");
                again.Close();
            }
            if (k == total / 2 || k == total - 1 || k == ks.Min)
            {
                WriteEngineTestSupport.AssertOraclesClean(image, $"k={k}");
                oracleRuns++;
            }
            File.Delete(image);
        }
        Output.WriteLine($"{total} writes in the reference run; {ks.Count} crash points; the operation in flight had reached the image {inFlightApplied} times; oracles run {oracleRuns} times");
    }

    /// <summary>The manifest digest: sorted "name=value" lines, "-" for none, independent of the fork's order.</summary>
    [Fact]
    public void DigestIsOfSortedLines()
    {
        Assert.Equal("-", AttributeOperations.DigestOf([]));
        var a = (new XattrName(XattrNamespace.User, "a"u8.ToArray()), "1"u8.ToArray());
        var b = (new XattrName(XattrNamespace.Trusted, "b"u8.ToArray()), "2"u8.ToArray());
        string expected = Convert.ToHexStringLower(System.Security.Cryptography.SHA256.HashData("trusted.b=2\nuser.a=1\n"u8));
        Assert.Equal(expected, AttributeOperations.DigestOf([a, b]));
        Assert.Equal(expected, AttributeOperations.DigestOf([b, a]));
    }

    /// <summary>The CLI: setxattr/getxattr/listxattr/removexattr, one-line errors with the errno name and exit 1.</summary>
    [Fact]
    public void IoCommandsAndErrnoLines()
    {
        using var scratch = new RepairScratch();
        string image = scratch.CopyFixture("fresh-4ag");
        var ok = RepairTools.Xfbtree("io", image, "-c", "create /cli-x", "-c", "setxattr /cli-x user.a hello", "-c", "getxattr /cli-x user.a", "-c", "listxattr /cli-x");
        Assert.True(ok.ExitCode == 0, ok.ToString());
        Assert.Contains("user.a=\"hello\"", ok.Stdout, StringComparison.Ordinal);
        var missing = RepairTools.Xfbtree("io", image, "-c", "removexattr /cli-x user.b");
        Assert.True(missing.ExitCode == 1 && missing.Stderr.Contains("ENODATA", StringComparison.Ordinal) && missing.Stderr.Trim().Split('\n').Length == 1, missing.ToString());
        var ns = RepairTools.Xfbtree("io", image, "-c", "setxattr /cli-x system.x v");
        Assert.True(ns.ExitCode == 1 && ns.Stderr.Contains("EOPNOTSUPP", StringComparison.Ordinal), ns.ToString());
        var rm = RepairTools.Xfbtree("io", image, "-c", "removexattr /cli-x user.a", "-c", "listxattr /cli-x");
        Assert.True(rm.ExitCode == 0 && !rm.Stdout.Contains("user.a", StringComparison.Ordinal), rm.ToString());
        WriteEngineTestSupport.AssertOraclesClean(image, "cli");
    }
}
