using System.Globalization;
using Xfbtree.Xfs.Tests.Repair;
using Xfbtree.Xfs.Tests.Trees;
using Xfbtree.Xfs.Tests.Write;

namespace Xfbtree.Xfs.Tests.Scrub;

/// <summary>
/// An image the kernel populated (4 KiB blocks, 4 AGs, 512-byte inodes, reflink, rmapbt; made once per test process,
/// copied by each test) with real file data, for the fork and directory repairs: <c>/frag</c> (1,190 one-block
/// extents: a data fork bmbt of five leaves), its reflinked copy <c>/frag.clone</c> (one block rewritten: shared and
/// own extents), <c>/unw</c> (extents format, written and unwritten extents), <c>/small</c>, <c>/attrs</c> (60
/// attributes with remote values: an attr fork in extents format), and directories in each format: <c>/sf</c>
/// (shortform), <c>/block</c> (with a subdirectory), <c>/leaf</c>, <c>/node</c> (whose data fork is a bmbt). The
/// manifest holds the SHA-256 of every regular file and every path, as the kernel read them.
/// </summary>
internal static class KernelPopulatedImage
{
    private const string Populate = """
        set -e
        cd "$1"
        cmds=(); for i in $(seq 0 599); do cmds+=(-c "pwrite -q -S $((i%256)) $((i*8192)) 4096"); done
        xfs_io -f "${cmds[@]}" frag
        xfs_io -f -c "pwrite -q -S 7 0 40k" small
        xfs_io -f -c "falloc 0 1m" -c "pwrite -q -S 3 0 4k" -c "pwrite -q -S 4 512k 8k" unw
        cp --reflink=always frag frag.clone
        xfs_io -c "pwrite -q -S 9 16k 4k" frag.clone
        touch attrs
        v=$(head -c 1500 /dev/zero | tr '\0' x)
        for i in $(seq 1 60); do setfattr -n user.a$i -v "$v$i" attrs; done
        mkdir sf block leaf node
        for i in 1 2 3; do echo "sf $i" > sf/f$i; done
        for i in $(seq 1 30); do echo "block $i" > block/file$i; done
        mkdir block/sub; echo hi > block/sub/x
        for i in $(seq 1 300); do echo "leaf $i" > leaf/a-longer-file-name-$i; done
        for i in $(seq 1 2500); do echo "node $i" > node/an-even-longer-file-name-for-node-dirs-$i; done
        sync
        """;

    /// <summary>The image (shared: copy it before changing it).</summary>
    public static string Image => TreeFixtures.Generated("kernel-populated", Build);

    private static void Build(string image)
    {
        KernelOracle.RequireRootAndTools();
        TreeFixtures.Run("/usr/bin/truncate", ["-s", "512M", image]);
        TreeFixtures.Run(TreeFixtures.Tool("mkfs.xfs"), ["-q", "-f", "-m", "rmapbt=1,reflink=1", "-i", "size=512", "-d", "agcount=4", image]);
        string mnt = Directory.CreateTempSubdirectory("xfbtree-populate-").FullName;
        TreeFixtures.Run("/bin/mount", ["-o", "loop", image, mnt]);
        try
        {
            TreeFixtures.Run("/bin/bash", ["-c", Populate, "populate", mnt]);
            File.WriteAllText(image + ".manifest", ReadTree(mnt));
        }
        finally
        {
            TreeFixtures.Run("/bin/umount", [mnt]);
            Directory.Delete(mnt);
        }
    }

    /// <summary>"PATH\tSHA256" of every regular file and "PATH\tdir" of every directory under the mount, sorted.</summary>
    public static string ReadTree(string mnt)
    {
        var lines = new List<string>();
        foreach (string path in Directory.EnumerateFileSystemEntries(mnt, "*", SearchOption.AllDirectories))
        {
            string rel = path[mnt.Length..];
            if (Directory.Exists(path))
            {
                lines.Add($"{rel}\tdir");
                continue;
            }
            using var stream = File.OpenRead(path);
            lines.Add($"{rel}\t{Convert.ToHexStringLower(System.Security.Cryptography.SHA256.HashData(stream))}");
        }
        lines.Sort(StringComparer.Ordinal);
        return string.Join('\n', lines) + "\n";
    }

    /// <summary>The manifest as path -> SHA-256 (or "dir").</summary>
    public static Dictionary<string, string> Manifest()
    {
        _ = Image;
        return ParseTree(File.ReadAllText(Image + ".manifest"));
    }

    public static Dictionary<string, string> ParseTree(string text) => text.Split('\n', StringSplitOptions.RemoveEmptyEntries)
        .Select(l => l.Split('\t')).ToDictionary(f => f[0], f => f[1], StringComparer.Ordinal);

    /// <summary>The inode number of a path of the image (xfs_db's path lookup).</summary>
    public static ulong Ino(string image, string path)
    {
        string outp = Db(image, false, [$"path {path}", "inode"]);
        var m = System.Text.RegularExpressions.Regex.Match(outp, @"current inode number is (\d+)");
        if (!m.Success) throw new InvalidOperationException($"xfs_db found no inode at {path}: {outp}");
        return ulong.Parse(m.Groups[1].Value, CultureInfo.InvariantCulture);
    }

    /// <summary>Runs xfs_db commands (expert mode when <paramref name="write"/>); returns what it printed.</summary>
    public static string Db(string image, bool write, IEnumerable<string> commands)
    {
        var args = new List<string> { write ? "-x" : "-r" };
        foreach (string c in commands)
        {
            args.Add("-c");
            args.Add(c);
        }
        args.Add(image);
        ToolResult r = RepairTools.Exec(TreeFixtures.Tool("xfs_db"), args);
        return r.Stdout + r.Stderr;
    }

    /// <summary>A number xfs_db prints for a field ("field = 12"; "null" is -1).</summary>
    public static long Field(string image, IEnumerable<string> nav, string field)
    {
        string outp = Db(image, false, [.. nav, $"print {field}"]);
        var m = System.Text.RegularExpressions.Regex.Match(outp, @"= (\S+)");
        if (!m.Success) throw new InvalidOperationException($"xfs_db printed no {field}: {outp}");
        string v = m.Groups[1].Value;
        return v == "null" ? -1 : v.StartsWith("0x", StringComparison.Ordinal) ? long.Parse(v[2..], NumberStyles.HexNumber, CultureInfo.InvariantCulture) : long.Parse(v, CultureInfo.InvariantCulture);
    }

    /// <summary>
    /// Mounts <paramref name="image"/> with the kernel (nouuid), reads every path: each of <paramref name="expected"/>
    /// must be there with the same content, unless <paramref name="mayBeMissing"/> says so; writes a file; unmounts.
    /// Returns the tree the kernel showed.
    /// </summary>
    public static Dictionary<string, string> AssertKernelReads(string image, Dictionary<string, string> expected, Func<string, bool>? mayBeMissing = null)
    {
        KernelOracle.RequireRootAndTools();
        string mnt = Directory.CreateTempSubdirectory("xfbtree-kernel-").FullName;
        TreeFixtures.Run("/bin/mount", ["-o", "loop,nouuid", image, mnt]);
        Dictionary<string, string> seen;
        try
        {
            seen = ParseTree(ReadTree(mnt));
            foreach (var (path, content) in expected)
            {
                if (!seen.TryGetValue(path, out string? got))
                {
                    Assert.True(mayBeMissing?.Invoke(path) == true, $"{path} is gone after the repair");
                    continue;
                }
                Assert.True(got == content, $"{path}: the kernel reads {got}, before the damage it read {content}");
            }
            File.WriteAllText(Path.Combine(mnt, "written-after-repair"), "the kernel writes the repaired image\n");
        }
        finally
        {
            TreeFixtures.Run("/bin/umount", [mnt]);
            Directory.Delete(mnt);
        }
        return seen;
    }
}
