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
            Reader = new DirectoryReader(Engine.Image);
        }

        public string Image { get; }
        public WriteEngine Engine { get; }
        public NamespaceOperations Ops { get; }
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

    /// <summary>The kernel's listing of the given directories (read-only loop mount): "dir/name ino type" lines.</summary>
    static SortedSet<string> KernelListing(string image, string scratch, IEnumerable<string> dirs)
    {
        RepairSafetyTests.RequireRoot();
        string mnt = Directory.CreateDirectory(Path.Combine(scratch, "mnt-ro")).FullName;
        WriteNamespaceOperationTests.FreshUuid(image);
        TreeFixtures.Run("/bin/mount", ["-o", "ro,loop,nouuid", image, mnt]);
        var result = new SortedSet<string>(StringComparer.Ordinal);
        try
        {
            foreach (string dir in dirs)
            {
                string listing = TreeFixtures.Run("/usr/bin/find", [mnt + dir, "-mindepth", "1", "-maxdepth", "1", "-printf", "%f %i %y\\n"]);
                foreach (var line in listing.Split('\n', StringSplitOptions.RemoveEmptyEntries)) result.Add(dir + "/" + line);
            }
        }
        finally
        {
            TreeFixtures.Run("/bin/umount", [mnt]);
        }
        return result;
    }

    static SortedSet<string> ModelListing(Dictionary<string, Dictionary<string, Want>> model)
    {
        var result = new SortedSet<string>(StringComparer.Ordinal);
        foreach (var (dir, entries) in model)
            foreach (var (name, want) in entries) result.Add($"{dir}/{name} {want.Ino} {want.Type}");
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
}
