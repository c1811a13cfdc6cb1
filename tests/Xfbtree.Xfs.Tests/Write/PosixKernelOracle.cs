using System.Globalization;
using System.Text;
using Xfbtree.Xfs.Tests.Repair;
using Xfbtree.Xfs.Tests.Trees;
using Xfbtree.Xfs.Write.Namespace;

namespace Xfbtree.Xfs.Tests.Write;

/// <summary>
/// What stat(1) shows about every path under a directory, from the engine (before close) and from the kernel (a
/// read-only loop mount with nouuid, so atime stays): type, permissions, owner, link count, size, mtime, atime and
/// ctime to the nanosecond, device numbers and symlink targets. The two listings must be equal line for line.
/// </summary>
internal static class PosixKernelOracle
{
    /// <summary>The engine's view of the subtree under <paramref name="top"/> (absolute, not "/"), one line per path.</summary>
    internal static SortedSet<string> EngineView(NamespaceOperations ops, string top)
    {
        var lines = new SortedSet<string>(StringComparer.Ordinal);
        var todo = new Stack<(ulong Ino, string Rel)>();
        todo.Push((ops.Resolve(top).Ino, ""));
        while (todo.Count > 0)
        {
            var (dir, rel) = todo.Pop();
            var children = new List<(string Name, ulong Ino)>();
            ops.ReadDirectory(dir, 0, (name, ino, type, next) =>
            {
                if (!(name.Length == 1 && name[0] == '.') && !(name.Length == 2 && name[0] == '.' && name[1] == '.'))
                    children.Add((Encoding.UTF8.GetString(name), ino));
                return true;
            });
            foreach (var (name, ino) in children)
            {
                string path = rel.Length == 0 ? name : rel + "/" + name;
                var a = ops.GetAttr(ino);
                string target = a.Type == InodeType.Symlink ? Encoding.UTF8.GetString(ops.ReadLink(ino)) : "";
                lines.Add(Line(path, a, target));
                if (a.Type == InodeType.Directory) todo.Push((ino, path));
            }
        }
        return lines;
    }

    static string TypeName(InodeAttributes a) => a.Type switch
    {
        InodeType.RegularFile => a.Size == 0 ? "regular empty file" : "regular file",
        InodeType.Directory => "directory",
        InodeType.Symlink => "symbolic link",
        InodeType.Fifo => "fifo",
        InodeType.Socket => "socket",
        InodeType.CharDevice => "character special file",
        InodeType.BlockDevice => "block special file",
        _ => "unknown",
    };

    static string Time(InodeTime t) => $"{t.Seconds}.{t.Nanoseconds:D9}";

    static string Line(string path, InodeAttributes a, string target)
        => string.Join('|', path, TypeName(a), Convert.ToString(a.Permissions, 8), a.Uid.ToString(CultureInfo.InvariantCulture),
            a.Gid.ToString(CultureInfo.InvariantCulture), a.Links.ToString(CultureInfo.InvariantCulture), a.Size.ToString(CultureInfo.InvariantCulture),
            Time(a.Mtime), Time(a.Atime), Time(a.Ctime), $"{a.RdevMajor:x}:{a.RdevMinor:x}", target);

    /// <summary>The kernel's view of the same subtree (the image must be closed cleanly).</summary>
    internal static SortedSet<string> KernelView(string image, string scratchDir, string top)
    {
        KernelOracle.RequireRootAndTools();
        string mnt = Directory.CreateDirectory(Path.Combine(scratchDir, "mnt-posix")).FullName;
        WriteNamespaceOperationTests.FreshUuid(image);
        TreeFixtures.Run("/bin/mount", ["-o", "ro,loop,nouuid", image, mnt]);
        string stats, links;
        try
        {
            string root = mnt + top;
            stats = TreeFixtures.Run("/usr/bin/find", [root, "-mindepth", "1", "-exec", "stat", "-c", "%n|%F|%a|%u|%g|%h|%s|%.9Y|%.9X|%.9Z|%t:%T", "{}", "+"]);
            links = TreeFixtures.Run("/usr/bin/find", [root, "-mindepth", "1", "-type", "l", "-printf", "%P|%l\n"]);
        }
        finally
        {
            TreeFixtures.Run("/bin/umount", [mnt]);
        }
        var targets = links.Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(l => l.Split('|', 2)).ToDictionary(p => p[0], p => p[1], StringComparer.Ordinal);
        var result = new SortedSet<string>(StringComparer.Ordinal);
        string prefix = mnt + top + "/";
        foreach (string line in stats.Split('\n', StringSplitOptions.RemoveEmptyEntries))
        {
            Assert.StartsWith(prefix, line, StringComparison.Ordinal);
            string rel = line[prefix.Length..line.IndexOf('|', StringComparison.Ordinal)];
            result.Add(line[prefix.Length..] + "|" + (targets.TryGetValue(rel, out var t) ? t : ""));
        }
        return result;
    }

    /// <summary>Engine view (taken before close) equals the kernel view.</summary>
    internal static void AssertKernelAgrees(SortedSet<string> engine, string image, string scratchDir, string top)
    {
        var kernel = KernelView(image, scratchDir, top);
        var onlyEngine = engine.Except(kernel).ToList();
        var onlyKernel = kernel.Except(engine).ToList();
        Assert.True(onlyEngine.Count == 0 && onlyKernel.Count == 0,
            $"engine and kernel disagree\nengine only:\n{string.Join('\n', onlyEngine)}\nkernel only:\n{string.Join('\n', onlyKernel)}");
    }
}
