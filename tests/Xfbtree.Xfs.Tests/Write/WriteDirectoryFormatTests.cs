using System.Diagnostics;
using System.Text;
using Xfbtree.Xfs.Directories;
using Xfbtree.Xfs.Tests.Repair;
using Xfbtree.Xfs.Tests.Trees;
using Xfbtree.Xfs.Write;
using Xfbtree.Xfs.Write.Engine;
using Xfbtree.Xfs.Write.Files;
using Xfbtree.Xfs.Write.Namespace;
using Xunit.Abstractions;

namespace Xfbtree.Xfs.Tests.Write;

/// <summary>
/// Directories of every format edited by the engine, in both directions: shortform → block → leaf → node and back
/// down to shortform, on directories the engine grew and on directories the kernel grew (an image made here with
/// mkfs.xfs and a loop mount, cached per test run), with 4 KiB and 8 KiB directory blocks and 1 KiB filesystem
/// blocks, hash collisions, entry replacement, resumable reads, and randomized add/remove runs. Every check
/// point: xfs_repair -n exit 0, xfbtree rmap check exit 0, and the kernel listing exactly the model's names with
/// their inode numbers and file types.
/// </summary>
public sealed class WriteDirectoryFormatTests(ITestOutputHelper output)
{
    static bool Long => Environment.GetEnvironmentVariable("XFBTREE_LONG_TESTS") == "1";

    /// <summary>One model entry: inode and the kernel's find %y letter.</summary>
    readonly record struct Want(ulong Ino, char Type);

    /// <summary>An engine open on an image, with the directory editor reachable.</summary>
    sealed class Session : IDisposable
    {
        public Session(string image)
        {
            Image = image;
            Engine = WriteEngine.Open(image, WriteEngineTestSupport.Fast);
            Ops = new NamespaceOperations(Engine, new FileOperations(Engine));
            Attributes = new Xfbtree.Xfs.Write.Attributes.AttributeOperations(Engine);
            Reader = new DirectoryReader(Engine.Image);
        }

        public string Image { get; }
        public WriteEngine Engine { get; }
        public NamespaceOperations Ops { get; }
        public Xfbtree.Xfs.Write.Attributes.AttributeOperations Attributes { get; }
        public DirectoryReader Reader { get; }

        public T Edit<T>(string dir, Func<DirectoryEditor, T> body)
        {
            ulong ino = Ops.Lookup(dir);
            return Engine.Execute($"edit {dir}", tx => Body(tx, ino, dir, body));
        }

        T Body<T>(WriteTransaction tx, ulong ino, string dir, Func<DirectoryEditor, T> body)
        {
            var inode = Engine.GetInode(ino);
            tx.LockInodes(inode);
            return body(new DirectoryEditor(tx, inode, Reader, dir));
        }

        public DirectoryLayout Layout(string dir) => Edit(dir, e => e.Layout);

        public void Dispose() => Engine.Dispose();
    }

    // ------------------------------------------------------------------ oracles

    void AssertClean(string image, string when)
    {
        var repair = RepairTools.XfsRepairCheck(image);
        Assert.True(repair.ExitCode == 0, $"{when}: xfs_repair -n: {repair}");
        var check = RepairTools.Xfbtree("rmap", "check", image);
        Assert.True(check.ExitCode == 0, $"{when}: xfbtree rmap check: {check}");
    }

    /// <summary>Lists directories through a mounted kernel: readdir names, inode numbers and d_type letters
    /// (f d l p s c b), each name also looked up (lstat, the kernel's hashed lookup) and checked to give the same
    /// inode and type; mismatches are printed as "MISMATCH" lines.</summary>
    const string ListScript = """
import os, stat, sys
def letter(m):
    return 'd' if stat.S_ISDIR(m) else 'l' if stat.S_ISLNK(m) else 'f' if stat.S_ISREG(m) else 'p' if stat.S_ISFIFO(m) else 's' if stat.S_ISSOCK(m) else 'c' if stat.S_ISCHR(m) else 'b'
root = sys.argv[1]
out = []
for d in sys.argv[2:]:
    with os.scandir(root + d) as it:
        for e in it:
            t = 'd' if e.is_dir(follow_symlinks=False) else 'l' if e.is_symlink() else 'f' if e.is_file(follow_symlinks=False) else None
            st = os.lstat(e.path)
            lt = letter(st.st_mode)
            if t is not None and t != lt: out.append('MISMATCH type %s/%s %s %s' % (d, e.name, t, lt))
            if st.st_ino != e.inode(): out.append('MISMATCH ino %s/%s %d %d' % (d, e.name, e.inode(), st.st_ino))
            out.append('%s/%s %d %s' % (d, e.name, e.inode(), lt))
    for n in os.listxattr(root + d, follow_symlinks=False):
        out.append('XATTR %s %s %s' % (d, n, os.getxattr(root + d, n, follow_symlinks=False).hex()))
sys.stdout.write('\n'.join(out) + '\n')
""";

    /// <summary>The kernel's listing of the given directories (read-only loop mount): "dir/name ino type" lines.</summary>
    static SortedSet<string> KernelListing(string image, string scratch, IEnumerable<string> dirs)
    {
        RepairSafetyTests.RequireRoot();
        string mnt = Directory.CreateDirectory(Path.Combine(scratch, "mnt-ro")).FullName;
        string script = Path.Combine(scratch, "list.py");
        File.WriteAllText(script, ListScript);
        WriteNamespaceOperationTests.FreshUuid(image);
        TreeFixtures.Run("/bin/mount", ["-o", "ro,loop,nouuid", image, mnt]);
        string listing;
        try
        {
            listing = TreeFixtures.Run("/usr/bin/python3", [script, mnt, .. dirs]);
        }
        finally
        {
            TreeFixtures.Run("/bin/umount", [mnt]);
        }
        var lines = listing.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        var bad = lines.Where(l => l.StartsWith("MISMATCH", StringComparison.Ordinal)).Take(5).ToList();
        Assert.True(bad.Count == 0, "the kernel's lookup disagrees with its readdir: " + string.Join("; ", bad));
        return new SortedSet<string>(lines, StringComparer.Ordinal);
    }

    /// <summary>Runs a Python script against the image mounted read-write by the kernel (loop, nouuid).</summary>
    static void KernelRun(string image, string scratch, string python, params string[] args)
    {
        RepairSafetyTests.RequireRoot();
        string mnt = Directory.CreateDirectory(Path.Combine(scratch, "mnt-rw")).FullName;
        string script = Path.Combine(scratch, "edit.py");
        File.WriteAllText(script, python);
        WriteNamespaceOperationTests.FreshUuid(image);
        TreeFixtures.Run("/bin/mount", ["-o", "loop,nouuid", image, mnt]);
        try
        {
            TreeFixtures.Run("/usr/bin/python3", [script, mnt, .. args]);
        }
        finally
        {
            TreeFixtures.Run("/bin/umount", [mnt]);
        }
    }

    /// <summary>The extended attributes of the model's directories themselves: directory → full name → value in hex.</summary>
    readonly Dictionary<string, SortedDictionary<string, string>> _dirXattrs = new(StringComparer.Ordinal);

    /// <summary>A model read back from the kernel's listing (the directories' attributes into <see cref="_dirXattrs"/>).</summary>
    Dictionary<string, Dictionary<string, Want>> ModelFrom(SortedSet<string> listing, IEnumerable<string> dirs)
    {
        var model = dirs.ToDictionary(d => d, _ => new Dictionary<string, Want>(StringComparer.Ordinal));
        _dirXattrs.Clear();
        foreach (var line in listing)
        {
            if (line.StartsWith("XATTR ", StringComparison.Ordinal))
            {
                var f = line.Split(' ');
                if (!_dirXattrs.TryGetValue(f[1], out var named)) _dirXattrs[f[1]] = named = new(StringComparer.Ordinal);
                named[f[2]] = f.Length > 3 ? f[3] : "";
                continue;
            }
            int a = line.LastIndexOf(' '), b = line.LastIndexOf(' ', a - 1), slash = line.LastIndexOf('/', b - 1);
            model[line[..slash]][line[(slash + 1)..b]] = new Want(ulong.Parse(line.AsSpan(b + 1, a - b - 1), System.Globalization.CultureInfo.InvariantCulture), line[^1]);
        }
        return model;
    }

    SortedSet<string> ModelListing(Dictionary<string, Dictionary<string, Want>> model)
    {
        var result = new SortedSet<string>(StringComparer.Ordinal);
        foreach (var (dir, entries) in model)
            foreach (var (name, want) in entries) result.Add($"{dir}/{name} {want.Ino} {want.Type}");
        foreach (var (dir, named) in _dirXattrs)
            foreach (var (name, hex) in named) result.Add($"XATTR {dir} {name} {hex}");
        return result;
    }

    void AssertKernelAgrees(string image, string scratch, Dictionary<string, Dictionary<string, Want>> model, string when)
    {
        AssertClean(image, when);
        var kernel = KernelListing(image, scratch, model.Keys);
        var want = ModelListing(model);
        var missing = want.Except(kernel).Take(5).ToList();
        var extra = kernel.Except(want).Take(5).ToList();
        Assert.True(missing.Count == 0 && extra.Count == 0,
            $"{when}: kernel and model differ; missing {string.Join(", ", missing)}; extra {string.Join(", ", extra)}");
        output.WriteLine($"{when}: clean, kernel lists the model's {want.Count} entries");
    }

    static byte[] B(string s) => Encoding.UTF8.GetBytes(s);

    static string MakeImage(string dir, string name, params string[] mkfsOptions)
    {
        string image = Path.Combine(dir, name);
        TreeFixtures.Run("/usr/bin/truncate", ["-s", "1G", image]);
        TreeFixtures.Run(TreeFixtures.Tool("mkfs.xfs"), ["-q", "-f", "-m", "crc=1,rmapbt=1,reflink=1,finobt=1", .. mkfsOptions, image]);
        return image;
    }

    // ------------------------------------------------------------------ engine-grown directories

    /// <summary>
    /// The engine grows a directory from shortform through block and leaf into node format (several leaves and a
    /// node root), replaces entries, then removes everything in a random order back down to shortform; the kernel
    /// and xfs_repair judge each stage.
    /// </summary>
    [Theory]
    [InlineData("4k", 1500)]
    [InlineData("1k-blocks", 1500)]
    [InlineData("8k-dirblocks", 2500)]
    public void EngineGrowsAndShrinksADirectoryThroughEveryFormat(string geometry, int count)
    {
        RepairSafetyTests.RequireRoot();
        using var scratch = new RepairScratch();
        string image = geometry switch
        {
            "1k-blocks" => MakeImage(scratch.Directory, "d.img", "-b", "size=1024"),
            "8k-dirblocks" => MakeImage(scratch.Directory, "d.img", "-n", "size=8192"),
            _ => MakeImage(scratch.Directory, "d.img"),
        };
        var model = new Dictionary<string, Dictionary<string, Want>> { ["/grow"] = new() };
        var entries = model["/grow"];
        var layouts = new List<DirectoryLayout>();
        var sw = Stopwatch.StartNew();
        ulong sub;
        using (var s = new Session(image))
        {
            s.Ops.Mkdir("/grow");
            sub = s.Ops.Mkdir("/grow/subdir");
            entries["subdir"] = new Want(sub, 'd');
            for (int i = 0; i < count; i++)
            {
                string name = $"entry-{i:D5}-{new string((char)('a' + i % 26), i % 13)}";
                entries[name] = new Want(s.Ops.Create("/grow/" + name), 'f');
                var layout = s.Layout("/grow");
                if (layouts.Count == 0 || layouts[^1] != layout) layouts.Add(layout);
            }
            output.WriteLine($"grown: {string.Join(" -> ", layouts)} in {sw.ElapsedMilliseconds} ms");
            Assert.Equal([DirectoryLayout.Shortform, DirectoryLayout.Block, DirectoryLayout.Leaf, DirectoryLayout.Node], layouts);
            s.Engine.Close();
        }
        AssertKernelAgrees(image, scratch.Directory, model, $"{geometry}: grown to node");

        var rng = new Random(7);
        // The survivors are in data block 0 (created first): as in the kernel, a leaf directory only goes back to
        // block form once every other data block has emptied and been freed.
        string first = entries.Keys.Single(n => n.StartsWith("entry-00000", StringComparison.Ordinal));
        // Entries made while the directory was in block form (the first 40) are in data block 0 and go last, so
        // the shrink passes through block form before shortform.
        static int Index(string n) => int.Parse(n.AsSpan(6, 5), System.Globalization.CultureInfo.InvariantCulture);
        var order = entries.Keys.Where(n => n != "subdir" && n != first).OrderBy(n => Index(n) < 40).ThenBy(_ => rng.Next()).Prepend(first).ToList();
        layouts.Clear();
        using (var s = new Session(image))
        {
            // Swaps keep link counts: a file entry and the subdirectory trade inodes, then trade back half of them.
            var (a, bname) = (order[0], "subdir");
            var wa = entries[a];
            s.Edit("/grow", e => { e.Replace(B(a), sub, DirectoryFormat.FtDirectory, DateTimeOffset.UtcNow); return 0; });
            s.Edit("/grow", e => { e.Replace(B(bname), wa.Ino, DirectoryFormat.FtRegular, DateTimeOffset.UtcNow); return 0; });
            entries[a] = new Want(sub, 'd');
            entries[bname] = wa;
            int removeUntil = order.Count / 2;
            for (int i = 1; i < order.Count; i++)
            {
                if (i == removeUntil)
                {
                    s.Engine.Close();
                    break;
                }
                s.Ops.Unlink("/grow/" + order[i]);
                entries.Remove(order[i]);
            }
        }
        AssertKernelAgrees(image, scratch.Directory, model, $"{geometry}: half removed");
        using (var s = new Session(image))
        {
            for (int i = order.Count / 2; i < order.Count; i++)
            {
                s.Ops.Unlink("/grow/" + order[i]);
                entries.Remove(order[i]);
                var layout = s.Layout("/grow");
                if (layouts.Count == 0 || layouts[^1] != layout) layouts.Add(layout);
            }
            output.WriteLine($"shrunk: {string.Join(" -> ", layouts)}");
            Assert.Equal([DirectoryLayout.Node, DirectoryLayout.Leaf, DirectoryLayout.Block, DirectoryLayout.Shortform], layouts);
            Assert.Equal(2, entries.Count);
            s.Engine.Close();
        }
        AssertKernelAgrees(image, scratch.Directory, model, $"{geometry}: back to shortform");
        output.WriteLine($"total {sw.ElapsedMilliseconds} ms");
    }

    // ------------------------------------------------------------------ kernel-grown directories

    const string BuildScript = """
import os, stat, sys
root = sys.argv[1]
def name(i): return 'k%06d%s' % (i, 'x' * (i % 17))
for spec in sys.argv[2:]:
    d, n = spec.split(':'); n = int(n)
    p = root + '/' + d
    os.mkdir(p)
    for i in range(n):
        f = p + '/' + name(i); m = i % 50
        if m == 0: os.mkdir(f)
        elif m == 1: os.symlink('target', f)
        elif m == 2: os.mknod(f, 0o644 | stat.S_IFIFO)
        else: os.mknod(f, 0o644 | stat.S_IFREG)
    # Removals leave stale leaf entries, unused regions and (in big directories) freed data blocks behind.
    for i in range(3, n, 7):
        f = p + '/' + name(i)
        if i % 50 == 0: os.rmdir(f)
        else: os.unlink(f)
""";

    /// <summary>The directories each kernel-grown image holds ("name:entries before the kernel's removals").</summary>
    static string[] KernelSpec(string kind) => kind == "8k"
        ? ["leaf8k:700", "node8k:3000"]
        : Long ? ["leaf:300", "node3k:3000", "node20k:20000", "node50k:50000"] : ["leaf:300", "node3k:3000", "node20k:20000"];

    /// <summary>An image whose directories the kernel grew to leaf and node format, generated once per test process
    /// and cached beside the restored fixtures (<see cref="TreeFixtures.Generated"/>).</summary>
    static string KernelImage(string kind) => TreeFixtures.Generated($"kernel-dirs-{kind}{(Long ? "-long" : "")}", image =>
    {
        string work = Directory.CreateTempSubdirectory("xfbtree-dirimage-").FullName;
        try
        {
            MakeImage(Path.GetDirectoryName(image)!, Path.GetFileName(image), kind == "8k" ? new[] { "-n", "size=8192" } : Array.Empty<string>());
            KernelRun(image, work, BuildScript, KernelSpec(kind));
        }
        finally
        {
            Directory.Delete(work, recursive: true);
        }
    });

    static List<string> Dirs(string kind) => KernelSpec(kind).Select(s => "/" + s[..s.IndexOf(':', StringComparison.Ordinal)]).ToList();

    static char TypeLetter(byte ftype) => ftype switch
    {
        DirectoryFormat.FtDirectory => 'd',
        DirectoryFormat.FtSymlink => 'l',
        DirectoryFormat.FtFifo => 'p',
        DirectoryFormat.FtSocket => 's',
        DirectoryFormat.FtCharDevice => 'c',
        DirectoryFormat.FtBlockDevice => 'b',
        _ => 'f',
    };

    static byte FileType(char letter) => letter switch
    {
        'd' => DirectoryFormat.FtDirectory,
        'l' => DirectoryFormat.FtSymlink,
        'p' => DirectoryFormat.FtFifo,
        's' => DirectoryFormat.FtSocket,
        'c' => DirectoryFormat.FtCharDevice,
        'b' => DirectoryFormat.FtBlockDevice,
        _ => DirectoryFormat.FtRegular,
    };

    /// <summary>The engine's own reading of every model directory equals the model (names, inodes, file types, and
    /// the directory's own extended attributes).</summary>
    void AssertEngineAgrees(Session s, Dictionary<string, Dictionary<string, Want>> model, string when)
    {
        foreach (var (dir, entries) in model)
        {
            var ours = s.Edit(dir, e => e.ReadAll().Entries).ToDictionary(e => DirectoryFormat.Show(e.Name), e => new Want(e.Ino, TypeLetter(e.FileType)));
            Assert.True(ours.Count == entries.Count && ours.All(kv => entries.TryGetValue(kv.Key, out var w) && w == kv.Value),
                $"{when}: the engine reads {ours.Count} entries in {dir}, the model holds {entries.Count}");
            var attributes = s.Attributes.ReadAll(s.Ops.Lookup(dir)).ToDictionary(a => a.Name.FullName, a => Convert.ToHexStringLower(a.Value), StringComparer.Ordinal);
            var want = _dirXattrs.GetValueOrDefault(dir) ?? new SortedDictionary<string, string>(StringComparer.Ordinal);
            Assert.True(attributes.Count == want.Count && attributes.All(kv => want.TryGetValue(kv.Key, out var v) && v == kv.Value),
                $"{when}: the engine reads attributes {string.Join(", ", attributes.Keys)} on {dir}, the model holds {string.Join(", ", want.Keys)}");
        }
    }

    /// <summary>Moves a name (rename(2) through the engine) and follows it in the model.</summary>
    static void Move(Session s, Dictionary<string, Dictionary<string, Want>> model, string fromDir, string name, string toDir, string newName)
    {
        s.Ops.Rename($"{fromDir}/{name}", $"{toDir}/{newName}");
        model[toDir].Add(newName, model[fromDir][name]);
        model[fromDir].Remove(name);
    }

    /// <summary>
    /// Namespace operations through the engine on the kernel-grown directories: per directory, 20 files renamed out
    /// to /outside and 10 renamed in from it, 20 files given a second name in the next directory and half of them
    /// then unlinked by their first name, 10 directories made and 5 removed, one moved to the next directory (its
    /// '..' and both link counts), and attributes on the directory itself (a small user one, a remote-sized trusted
    /// one).
    /// </summary>
    void EngineNamespaceRound(Session s, Dictionary<string, Dictionary<string, Want>> model, List<string> big, Random rng, string tag)
    {
        foreach (var (d, k) in big.Select((d, k) => (d, k)))
        {
            string other = big[(k + 1) % big.Count], short_ = d[1..];
            var entries = model[d];
            var files = entries.Where(kv => kv.Value.Type == 'f').Select(kv => kv.Key).OrderBy(_ => rng.Next()).ToList();
            for (int i = 0; i < Math.Min(20, files.Count); i++) Move(s, model, d, files[i], "/outside", $"{tag}-out-{short_}-{i}");
            var comeIn = model["/outside"].Where(kv => kv.Value.Type == 'f').Select(kv => kv.Key).OrderBy(_ => rng.Next()).Take(10).ToList();
            for (int i = 0; i < comeIn.Count; i++) Move(s, model, "/outside", comeIn[i], d, $"{tag}-in-{i}");
            var linked = files.Skip(20).Take(20).ToList();
            for (int i = 0; i < linked.Count; i++)
            {
                s.Ops.Link($"{d}/{linked[i]}", $"{other}/{tag}-ln-{short_}-{i}");
                model[other].Add($"{tag}-ln-{short_}-{i}", entries[linked[i]]);
            }
            for (int i = 0; i < linked.Count; i += 2) Remove(s, d, entries, linked[i]);
            for (int i = 0; i < 10; i++) entries.Add($"{tag}-dir-{i}", new Want(s.Ops.Mkdir($"{d}/{tag}-dir-{i}"), 'd'));
            for (int i = 0; i < 10; i += 2)
            {
                s.Ops.Rmdir($"{d}/{tag}-dir-{i}");
                entries.Remove($"{tag}-dir-{i}");
            }
            Move(s, model, d, $"{tag}-dir-1", other, $"{tag}-dirmoved-{short_}");
            ulong ino = s.Ops.Lookup(d);
            var small = Encoding.UTF8.GetBytes($"{tag} small");
            var large = Enumerable.Repeat((byte)'E', 3000).ToArray();
            s.Attributes.Set(ino, B($"user.{tag}"), small);
            s.Attributes.Set(ino, B($"trusted.{tag}-big"), large);
            if (!_dirXattrs.TryGetValue(d, out var named)) _dirXattrs[d] = named = new(StringComparer.Ordinal);
            named[$"user.{tag}"] = Convert.ToHexStringLower(small);
            named[$"trusted.{tag}-big"] = Convert.ToHexStringLower(large);
        }
    }

    /// <summary>The kernel's round on the same directories (argv: mount, tag, directories; /outside beside them):
    /// every third name goes, 200 new names, and the namespace operations of <see cref="EngineNamespaceRound"/>
    /// done by the kernel.</summary>
    const string KernelEdits = """
import os, sys
root, tag, big = sys.argv[1], sys.argv[2], sys.argv[3:]
def plain(f): return os.path.isfile(f) and not os.path.islink(f)
for k, d in enumerate(big):
    p = root + d
    other = big[(k + 1) % len(big)]
    short = d[1:]
    names = sorted(os.listdir(p))
    for n in names[::3]:
        f = p + '/' + n
        if os.path.isdir(f) and not os.path.islink(f): os.rmdir(f)
        else: os.unlink(f)
    for i in range(200): open(p + '/%s-%04d' % (tag, i), 'w').close()
    files = [n for n in sorted(os.listdir(p)) if plain(p + '/' + n)]
    for i, n in enumerate(files[:20]): os.rename(p + '/' + n, root + '/outside/%s-out-%s-%d' % (tag, short, i))
    outside = [n for n in sorted(os.listdir(root + '/outside')) if plain(root + '/outside/' + n)]
    for i, n in enumerate(outside[:10]): os.rename(root + '/outside/' + n, p + '/%s-in-%d' % (tag, i))
    for i, n in enumerate(files[20:40]): os.link(p + '/' + n, root + other + '/%s-ln-%s-%d' % (tag, short, i))
    for n in files[20:40:2]: os.unlink(p + '/' + n)
    for i in range(10): os.mkdir(p + '/%s-dir-%d' % (tag, i))
    for i in range(0, 10, 2): os.rmdir(p + '/%s-dir-%d' % (tag, i))
    os.rename(p + '/%s-dir-1' % tag, root + other + '/%s-dirmoved-%s' % (tag, short))
    os.setxattr(p, 'user.' + tag, b'kernel small'); os.setxattr(p, 'trusted.' + tag + '-big', b'K' * 3000)
""";

    /// <summary>Swaps the inodes of two entries of one type in one directory (link counts stay).</summary>
    static void Swap(Session s, string dir, Dictionary<string, Want> entries, string a, string b)
    {
        var (wa, wb) = (entries[a], entries[b]);
        s.Edit(dir, e =>
        {
            e.Replace(B(a), wb.Ino, FileType(wb.Type), DateTimeOffset.UtcNow);
            e.Replace(B(b), wa.Ino, FileType(wa.Type), DateTimeOffset.UtcNow);
            return 0;
        });
        (entries[a], entries[b]) = (wb, wa);
    }

    static void Remove(Session s, string dir, Dictionary<string, Want> entries, string name)
    {
        s.Ops.Unlink(dir + "/" + name);
        entries.Remove(name);
    }

    static void AddFile(Session s, string dir, Dictionary<string, Want> entries, string name)
        => entries[name] = new Want(s.Ops.Create(dir + "/" + name), 'f');

    /// <summary>
    /// Leaf and node directories the kernel grew (with its own stale entries and freed blocks) edited by the
    /// engine: the leaf directory grows into node format, a 3,000-entry node directory shrinks through leaf and
    /// block to shortform, the big one takes adds, removes and replacements; then the kernel edits the same
    /// directories and the engine edits them again. Each round: xfs_repair -n, rmap check, kernel listing and
    /// lookups equal to the model.
    /// </summary>
    [Theory]
    [InlineData("4k")]
    [InlineData("8k")]
    public void KernelGrownDirectoriesEditedInEveryFormatAndRoundTripped(string kind)
    {
        RepairSafetyTests.RequireRoot();
        using var scratch = new RepairScratch();
        var sw = Stopwatch.StartNew();
        string image = scratch.Copy(KernelImage(kind), "k.img");
        output.WriteLine($"kernel image ready in {sw.ElapsedMilliseconds} ms");
        var dirs = Dirs(kind);
        var model = ModelFrom(KernelListing(image, scratch.Directory, dirs), dirs);
        string leafDir = dirs[0], shrinkDir = dirs[1];
        var rng = new Random(kind == "8k" ? 8 : 4);
        using (var s = new Session(image))
        {
            Assert.Equal(DirectoryLayout.Leaf, s.Layout(leafDir));
            foreach (var d in dirs.Skip(1)) Assert.Equal(DirectoryLayout.Node, s.Layout(d));
            AssertEngineAgrees(s, model, "as the kernel made them");

            // Leaf → node.
            for (int i = 0; i < (kind == "8k" ? 800 : 400); i++) AddFile(s, leafDir, model[leafDir], $"engine-{i:D4}");
            Assert.Equal(DirectoryLayout.Node, s.Layout(leafDir));

            // Node → leaf → block → shortform: everything but the first names (in data block 0) goes, then most of those.
            var shrink = model[shrinkDir];
            var layouts = new List<DirectoryLayout> { s.Layout(shrinkDir) };
            var early = shrink.Keys.Where(n => string.CompareOrdinal(n, "k000020") < 0).ToList();
            foreach (var n in shrink.Keys.Except(early).OrderBy(_ => rng.Next()).Concat(early.OrderBy(_ => rng.Next()).Skip(4)).ToList())
            {
                Remove(s, shrinkDir, shrink, n);
                var l = s.Layout(shrinkDir);
                if (l != layouts[^1]) layouts.Add(l);
            }
            output.WriteLine($"{shrinkDir}: {string.Join(" -> ", layouts)}");
            Assert.Equal([DirectoryLayout.Node, DirectoryLayout.Leaf, DirectoryLayout.Block, DirectoryLayout.Shortform], layouts);

            // The rest: adds, removes, replacements.
            foreach (var d in dirs.Skip(2))
            {
                var entries = model[d];
                for (int i = 0; i < 300; i++) AddFile(s, d, entries, $"engine-{i:D4}-{new string('y', i % 23)}");
                foreach (var n in entries.Keys.OrderBy(_ => rng.Next()).Take(entries.Count / 10).ToList()) Remove(s, d, entries, n);
                var files = entries.Where(kv => kv.Value.Type == 'f').Select(kv => kv.Key).OrderBy(_ => rng.Next()).Take(40).ToList();
                for (int i = 0; i + 1 < files.Count; i += 2) Swap(s, d, entries, files[i], files[i + 1]);
            }
            s.Ops.Mkdir("/outside");
            model["/outside"] = new Dictionary<string, Want>(StringComparer.Ordinal);
            EngineNamespaceRound(s, model, dirs, rng, "e0");
            AssertEngineAgrees(s, model, "after the engine's edits");
            s.Engine.Close();
        }
        var all = dirs.Append("/outside").ToList();
        AssertKernelAgrees(image, scratch.Directory, model, $"{kind}: engine edits of kernel-grown directories");

        // Round trips: the kernel edits what the engine made (and its own names), the engine edits what the kernel
        // made, each judged by xfs_repair -n, rmap check and the kernel's listing (the engine's reading too).
        for (int round = 1; round <= (Long ? 4 : 2); round++)
        {
            string ktag = $"kernel{round}";
            KernelRun(image, scratch.Directory, KernelEdits, [ktag, .. dirs]);
            AssertClean(image, $"{kind}: after the kernel's edits (round {round})");
            model = ModelFrom(KernelListing(image, scratch.Directory, all), all);
            using (var s = new Session(image))
            {
                AssertEngineAgrees(s, model, $"after the kernel's edits (round {round})");
                foreach (var d in dirs)
                {
                    var entries = model[d];
                    foreach (var n in entries.Keys.Where(n => n.StartsWith(ktag + "-0", StringComparison.Ordinal)).OrderBy(_ => rng.Next()).Take(150).ToList()) Remove(s, d, entries, n);
                    for (int i = 0; i < 100; i++) AddFile(s, d, entries, $"again{round}-{i:D3}");
                }
                EngineNamespaceRound(s, model, dirs, rng, $"e{round}");
                AssertEngineAgrees(s, model, $"after the engine's edits (round {round})");
                s.Engine.Close();
            }
            AssertKernelAgrees(image, scratch.Directory, model, $"{kind}: engine edits after the kernel's (round {round})");
        }
        output.WriteLine($"total {sw.ElapsedMilliseconds} ms");
    }

    // ------------------------------------------------------------------ hash collisions

    /// <summary>
    /// 2^(chunks-1) names of 4 * chunks bytes with one XFS name hash. The hash folds a name in 4-byte chunks,
    /// rotating the running value left by 7 bits per byte: flipping bit 4 of a chunk's last byte flips bit 4 of the
    /// hash, which the next chunk's rotation by 28 moves to bit 0, where flipping bit 0 of that chunk's last byte
    /// cancels it. Every such pair of flips keeps the hash; the last bytes stay in 'a', 'q', '`', 'p'.
    /// </summary>
    internal static List<string> CollidingNames(int chunks, string tag)
    {
        var names = new List<string>();
        for (int mask = 0; mask < 1 << (chunks - 1); mask++)
        {
            var sb = new StringBuilder();
            for (int k = 0; k < chunks; k++)
            {
                int last = 0x61;
                if ((mask >> k & 1) != 0) last ^= 0x10;
                if (k > 0 && (mask >> (k - 1) & 1) != 0) last ^= 0x01;
                sb.Append(tag[k % tag.Length]).Append((char)('0' + k % 10)).Append('z').Append((char)last);
            }
            names.Add(sb.ToString());
        }
        return names;
    }

    [Fact]
    public void CollidingNamesAreTheSameHash()
    {
        var names = CollidingNames(10, "hc");
        Assert.Equal(512, names.Distinct().Count());
        uint hash = DirectoryFormat.HashName(B(names[0]));
        Assert.All(names, n => Assert.Equal(hash, DirectoryFormat.HashName(B(n))));
    }

    /// <summary>
    /// 512 names of one hash (a run of equal hashes longer than a 4 KiB leaf's half, so splits cut through it)
    /// among 700 others in a node directory: every one is found, half are removed, the kernel lists and looks up
    /// the rest; then the kernel adds and removes colliding names and the engine removes all of them.
    /// </summary>
    [Fact]
    public void HashCollisionsInANodeDirectory()
    {
        RepairSafetyTests.RequireRoot();
        using var scratch = new RepairScratch();
        string image = MakeImage(scratch.Directory, "c.img");
        var colliding = CollidingNames(10, "hc");
        var model = new Dictionary<string, Dictionary<string, Want>> { ["/c"] = new(StringComparer.Ordinal) };
        var entries = model["/c"];
        using (var s = new Session(image))
        {
            s.Ops.Mkdir("/c");
            for (int i = 0; i < 700; i++)
            {
                AddFile(s, "/c", entries, $"plain-{i:D4}");
                if (i % 2 == 0 && i / 2 < colliding.Count) AddFile(s, "/c", entries, colliding[i / 2]);
            }
            for (int i = 350; i < colliding.Count; i++) AddFile(s, "/c", entries, colliding[i]);
            Assert.Equal(DirectoryLayout.Node, s.Layout("/c"));
            s.Edit("/c", e =>
            {
                foreach (var n in colliding) Assert.Equal(entries[n].Ino, e.Find(B(n))?.Ino);
                Assert.Null(e.Find(B(CollidingNames(11, "hc")[5])));
                return 0;
            });
            foreach (var n in colliding.Where((_, i) => i % 2 == 1)) Remove(s, "/c", entries, n);
            s.Engine.Close();
        }
        AssertKernelAgrees(image, scratch.Directory, model, "collisions: engine-made");
        const string KernelCollide = """
import os, sys
root, names = sys.argv[1], sys.argv[2:]
for n in names[:40]: open(root + '/c/' + n, 'w').close()
for n in names[40:]: os.unlink(root + '/c/' + n)
""";
        var fresh = CollidingNames(11, "hc").Where(n => !entries.ContainsKey(n)).Take(40).ToList();
        var gone = colliding.Where(entries.ContainsKey).Take(30).ToList();
        KernelRun(image, scratch.Directory, KernelCollide, [.. fresh, .. gone]);
        model = ModelFrom(KernelListing(image, scratch.Directory, ["/c"]), ["/c"]);
        entries = model["/c"];
        using (var s = new Session(image))
        {
            var allColliding = new HashSet<string>(colliding.Concat(CollidingNames(11, "hc")));
            int removed = 0;
            foreach (var n in entries.Keys.Where(allColliding.Contains).ToList())
            {
                Remove(s, "/c", entries, n);
                removed++;
            }
            Assert.Equal(256 - 30 + 40, removed);
            s.Engine.Close();
        }
        AssertKernelAgrees(image, scratch.Directory, model, "collisions: the engine removed the kernel's and its own");
    }

    // ------------------------------------------------------------------ randomized model runs

    /// <summary>
    /// Randomized add/remove (files and directories, colliding names in the pool) against a model, growing then
    /// shrinking: after every step the engine's lookup of a few pool names agrees with the model, at the end the
    /// engine's and the kernel's listings equal it.
    /// </summary>
    [Theory]
    [InlineData(1, "4k")]
    [InlineData(2, "1k-blocks")]
    [InlineData(3, "8k-dirblocks")]
    public void RandomizedAddRemoveAgainstAModel(int seed, string geometry)
    {
        RepairSafetyTests.RequireRoot();
        using var scratch = new RepairScratch();
        string image = geometry switch
        {
            "1k-blocks" => MakeImage(scratch.Directory, "r.img", "-b", "size=1024"),
            "8k-dirblocks" => MakeImage(scratch.Directory, "r.img", "-n", "size=8192"),
            _ => MakeImage(scratch.Directory, "r.img"),
        };
        var rng = new Random(seed);
        var pool = Enumerable.Range(0, 2500).Select(i => $"r{i:D4}{new string('q', rng.Next(0, 30))}").Concat(CollidingNames(8, "rc")).ToList();
        var model = new Dictionary<string, Dictionary<string, Want>> { ["/r"] = new(StringComparer.Ordinal) };
        var entries = model["/r"];
        int steps = Long ? 20000 : 3500, lookups = 0, peak = 0;
        var seen = new HashSet<DirectoryLayout>();
        using (var s = new Session(image))
        {
            s.Ops.Mkdir("/r");
            for (int step = 0; step < steps; step++)
            {
                bool grow = step < steps / 2 ? rng.Next(100) < 85 : rng.Next(100) < 15;
                string name = pool[rng.Next(pool.Count)];
                for (int t = 0; t < 8 && grow && entries.ContainsKey(name); t++) name = pool[rng.Next(pool.Count)];
                if (grow && !entries.ContainsKey(name))
                {
                    if (rng.Next(20) == 0) entries[name] = new Want(s.Ops.Mkdir("/r/" + name), 'd');
                    else AddFile(s, "/r", entries, name);
                }
                else if (!grow && entries.Count > 0)
                {
                    var victim = entries.Keys.ElementAt(rng.Next(entries.Count));
                    Remove(s, "/r", entries, victim);
                }
                peak = Math.Max(peak, entries.Count);
                if (step % 25 == 0)
                {
                    seen.Add(s.Layout("/r"));
                    var probe = Enumerable.Range(0, 4).Select(_ => pool[rng.Next(pool.Count)]).ToList();
                    s.Edit("/r", e =>
                    {
                        foreach (var p in probe) Assert.Equal(entries.TryGetValue(p, out var w) ? w.Ino : null, e.Find(B(p))?.Ino);
                        return 0;
                    });
                    lookups += probe.Count;
                }
            }
            AssertEngineAgrees(s, model, $"seed {seed}");
            s.Engine.Close();
        }
        output.WriteLine($"seed {seed} {geometry}: {steps} steps (peak {peak} entries), {lookups} lookups checked, layouts seen {string.Join(", ", seen)}, {entries.Count} entries at the end");
        Assert.Contains(DirectoryLayout.Node, seen);
        AssertKernelAgrees(image, scratch.Directory, model, $"seed {seed}");
    }

    /// <summary>
    /// A small directory walked up and down across the shortform/block boundary with names of random length, so
    /// that shortform directories inherit high offsets from the block form and an add must convert them back.
    /// A shortform directory whose last entry ends just below the block form's leaf area converts into a block
    /// with no room for the new entry's leaf slot: the kernel then grows that block into leaf form
    /// (xfs_dir2_block_addname), and so must the engine, instead of failing the add.
    /// </summary>
    [Theory]
    [InlineData(11)]
    [InlineData(12)]
    [InlineData(13)]
    public void SmallDirectoryCrossingTheShortformBoundaryAgainstAModel(int seed)
    {
        RepairSafetyTests.RequireRoot();
        using var scratch = new RepairScratch();
        string image = MakeImage(scratch.Directory, "b.img");
        var rng = new Random(seed);
        var pool = Enumerable.Range(0, 400).Select(i => $"b{i:D3}{new string('z', rng.Next(0, 120))}").ToList();
        var model = new Dictionary<string, Dictionary<string, Want>> { ["/b"] = new(StringComparer.Ordinal) };
        var entries = model["/b"];
        int steps = Long ? 30000 : 4000, conversionsToShortform = 0;
        var seen = new HashSet<DirectoryLayout>();
        using (var s = new Session(image))
        {
            s.Ops.Mkdir("/b");
            var last = DirectoryLayout.Shortform;
            for (int step = 0; step < steps; step++)
            {
                // Waves between about 2 and 40 entries: block form with up to a few KiB of names, then back
                // down to a handful that fit the inode.
                bool grow = (step / 60) % 2 == 0 ? rng.Next(100) < 80 : rng.Next(100) < 20;
                string name = pool[rng.Next(pool.Count)];
                if (grow && !entries.ContainsKey(name)) AddFile(s, "/b", entries, name);
                else if (!grow && entries.Count > 0) Remove(s, "/b", entries, entries.Keys.ElementAt(rng.Next(entries.Count)));
                var layout = s.Layout("/b");
                if (layout == DirectoryLayout.Shortform && last != DirectoryLayout.Shortform) conversionsToShortform++;
                seen.Add(layout);
                last = layout;
            }
            AssertEngineAgrees(s, model, $"seed {seed}");
            s.Engine.Close();
        }
        output.WriteLine($"seed {seed}: {steps} steps, {conversionsToShortform} conversions back to shortform, layouts seen {string.Join(", ", seen)}");
        Assert.True(conversionsToShortform >= 10, $"only {conversionsToShortform} conversions back to shortform: the walk does not cross the boundary");
        AssertClean(image, $"seed {seed}");
        AssertKernelAgrees(image, scratch.Directory, model, $"seed {seed}");
    }

    // ------------------------------------------------------------------ resumable reads

    /// <summary>
    /// A directory read in chunks by cookie while entries are removed and added between chunks, in node and then
    /// leaf format: every entry present from start to end is returned exactly once, cookies strictly increase,
    /// and an entry's cookie does not change.
    /// </summary>
    [Fact]
    public void ReadsResumeByCookieWhileEntriesComeAndGo()
    {
        using var scratch = new RepairScratch();
        string image = scratch.CopyFixture("fresh-4ag");
        using var s = new Session(image);
        s.Ops.Mkdir("/rd");
        var names = Enumerable.Range(0, 1200).Select(i => $"cookie-{i:D5}").ToList();
        foreach (var n in names) s.Ops.Create("/rd/" + n);
        Assert.Equal(DirectoryLayout.Node, s.Layout("/rd"));
        var rng = new Random(11);
        foreach (int size in new[] { 1200, 60 })
        {
            while (names.Count > size)
            {
                int k = rng.Next(names.Count);
                s.Ops.Unlink("/rd/" + names[k]);
                names.RemoveAt(k);
            }
            var firstCookies = s.Edit("/rd", e => e.ReadFrom(0, int.MaxValue)).ToDictionary(e => DirectoryFormat.Show(e.Name), e => e.Cookie);
            var stable = new HashSet<string>(names);
            var returned = new List<DirectoryCookieEntry>();
            ulong cookie = 0;
            int added = 0;
            while (true)
            {
                var chunk = s.Edit("/rd", e => e.ReadFrom(cookie, 50));
                if (chunk.Count == 0) break;
                returned.AddRange(chunk);
                cookie = chunk[^1].Cookie + 1;
                for (int i = 0; i < 3 && names.Count > 10; i++)
                {
                    int k = rng.Next(names.Count);
                    stable.Remove(names[k]);
                    s.Ops.Unlink("/rd/" + names[k]);
                    names.RemoveAt(k);
                }
                string extra = $"late-{size}-{added++:D4}";
                s.Ops.Create("/rd/" + extra);
                names.Add(extra);
            }
            for (int i = 1; i < returned.Count; i++) Assert.True(returned[i].Cookie > returned[i - 1].Cookie, "cookies must increase");
            var got = returned.Select(e => DirectoryFormat.Show(e.Name)).ToList();
            Assert.Equal(got.Count, got.Distinct().Count());
            Assert.Contains(".", got);
            Assert.Contains("..", got);
            foreach (var n in stable)
            {
                Assert.Contains(n, got);
                Assert.Equal(firstCookies[n], returned.First(e => DirectoryFormat.Show(e.Name) == n).Cookie);
            }
            output.WriteLine($"{stable.Count} stable entries returned once each among {returned.Count}, layout {s.Layout("/rd")}");
        }
        s.Engine.Close();
        AssertClean(image, "after the resumable reads");
    }

    // ------------------------------------------------------------------ directory blocks in pieces

    /// <summary>A hard link made with the editor (the inode gains a link in the same transaction).</summary>
    static void Link(Session s, string dir, ulong ino, string name, bool add)
    {
        ulong dirIno = s.Ops.Lookup(dir);
        s.Engine.Execute($"link {dir}/{name}", tx =>
        {
            var d = s.Engine.GetInode(dirIno);
            var f = s.Engine.GetInode(ino);
            tx.LockInodes(d, f);
            var editor = new DirectoryEditor(tx, d, s.Reader, dir);
            if (add) editor.Add(B(name), ino, DirectoryFormat.FtRegular, DateTimeOffset.UtcNow);
            else editor.Remove(B(name), DateTimeOffset.UtcNow);
            InodeCore.SetNlink(f.Core, InodeCore.Nlink(f.Core) + (add ? 1u : uint.MaxValue));
            tx.LogInode(f);
        });
    }

    /// <summary>
    /// With 1 KiB filesystem blocks, 8 KiB directory blocks and free space cut into single blocks, every new
    /// directory block is mapped by several extents (the fork turns into a bmbt): the engine writes and reads
    /// them in pieces, removes half the entries again, and the kernel reads the result.
    /// </summary>
    [Fact]
    public void DirectoryBlocksInSeveralPiecesOnFragmentedFreeSpace()
    {
        RepairSafetyTests.RequireRoot();
        using var scratch = new RepairScratch();
        string image = MakeImage(scratch.Directory, "f.img", "-b", "size=1024", "-n", "size=8192", "-d", "agcount=2,size=320m");
        var model = new Dictionary<string, Dictionary<string, Want>> { ["/grow"] = new(StringComparer.Ordinal), ["/hold"] = new(StringComparer.Ordinal) };
        using (var s = new Session(image))
        {
            var files = new FileOperations(s.Engine);
            s.Ops.Mkdir("/hold");
            for (int i = 0; i < 1200; i++) AddFile(s, "/hold", model["/hold"], $"held-{i:D4}-{new string('w', i % 19)}");
            s.Ops.Mkdir("/grow");
            var held = model["/hold"].ToList();
            int n = 0;
            while (s.Layout("/grow") != DirectoryLayout.Block)
            {
                Link(s, "/grow", held[n].Value.Ino, held[n].Key, add: true);
                model["/grow"][held[n].Key] = held[n].Value;
                n++;
            }
            // Free space right after the directory's first block, cut into single blocks: the allocator's near
            // search from there finds only one-block pieces for the next directory blocks.
            ulong frag = s.Ops.Create("/frag");
            const int Pieces = 3000;
            files.Fallocate(frag, 0, Pieces * 1024L);
            for (int i = 0; i < Pieces; i += 2) files.PunchHole(frag, i * 1024L, 1024);
            for (; n < 1100; n++)
            {
                Link(s, "/grow", held[n].Value.Ino, held[n].Key, add: true);
                model["/grow"][held[n].Key] = held[n].Value;
            }
            Assert.Equal(DirectoryLayout.Node, s.Layout("/grow"));
            var stat = s.Ops.Stat("/grow");
            output.WriteLine($"/grow: {stat.DataExtents} extents for {stat.Blocks} blocks, fork {stat.DataForkFormat}");
            Assert.True(stat.DataExtents * 4 > (ulong)stat.Blocks, "directory blocks were expected in pieces");
            Assert.Equal("btree", stat.DataForkFormat);
            AssertEngineAgrees(s, model, "fragmented");
            foreach (var name in model["/grow"].Keys.Where((_, i) => i % 2 == 0).ToList())
            {
                Link(s, "/grow", model["/grow"][name].Ino, name, add: false);
                model["/grow"].Remove(name);
            }
            AssertEngineAgrees(s, model, "fragmented, half unlinked");
            s.Engine.Close();
        }
        AssertKernelAgrees(image, scratch.Directory, model, "directory blocks in pieces");
    }

    /// <summary>ASCII case-insensitive names hash differently: directory changes are refused with one clear line
    /// and change nothing; reading still works.</summary>
    [Fact]
    public void AsciiCaseInsensitiveDirectoriesAreRefused()
    {
        using var scratch = new RepairScratch();
        string image = MakeImage(scratch.Directory, "ci.img", "-n", "version=ci");
        using (var s = new Session(image))
        {
            var e = Assert.Throws<XfsWriteException>(() => s.Ops.Mkdir("/d"));
            output.WriteLine(e.Message);
            Assert.Equal(WriteErrorKind.NotSupported, e.Kind);
            Assert.Equal("directory '/': the filesystem has ASCII case-insensitive names, which the engine does not modify (adding an entry)", e.Message);
            Assert.Empty(s.Ops.List("/"));
            s.Engine.Close();
        }
        AssertClean(image, "after the refusal");
    }
}
