using System.Globalization;
using System.Security.Cryptography;
using Xfbtree.Xfs.Tests.Repair;
using Xfbtree.Xfs.Tests.Trees;
using Xunit.Abstractions;

namespace Xfbtree.Xfs.Tests.Write;

/// <summary>
/// The kernel as the oracle, shared by the kernel-oracle tests (root, loop devices): mount an image and compare every
/// manifest file (size and SHA-256) with what the kernel reads; scripts/kernel-workload.sh and xfs_repair -n; no XFS
/// corruption or shutdown line for our loop device in the kernel log (read by sequence number from /dev/kmsg,
/// <see cref="KernelLog"/>). A missing tool or privilege, or a kernel log that cannot be read, fails the test.
/// </summary>
internal static class KernelOracle
{
    /// <summary>Root and the mount tools are required: a missing one fails.</summary>
    internal static void RequireRootAndTools()
    {
        RepairSafetyTests.RequireRoot();
        foreach (string tool in new[] { "/bin/mount", "/bin/umount", "/usr/bin/findmnt" })
        {
            Assert.True(File.Exists(tool), $"{tool} is missing: the kernel oracle cannot run");
        }
    }

    /// <summary>Writes <paramref name="marker"/> to the kernel log, mounts <paramref name="image"/> with
    /// <paramref name="mountOptions"/>, compares every line of a version 2 manifest (`PATH TYPE MODE UID GID NLINK SIZE
    /// CONTENT XATTRS`; the header and other '#' lines skipped) with what the kernel shows: type, permission bits,
    /// owner, link count, size (not for directories), the content (a file's bytes by SHA-256, a symlink's target,
    /// a device's numbers) and the extended attributes (getfattr -h -d -m - of every path, digested as the manifest's
    /// XATTRS column), unmounts. Returns the loop device, the number of regular files compared and their bytes.</summary>
    internal static (string Device, int Compared, long Bytes) MountAndCompareManifest(RepairScratch scratch, string image,
        List<string[]> expected, string marker, string mountOptions)
    {
        string mnt = Directory.CreateDirectory(Path.Combine(scratch.Directory, "mnt")).FullName;
        KernelLog.Mark(marker);
        TreeFixtures.Run("/bin/mount", ["-o", mountOptions, image, mnt]);
        string device;
        int compared = 0;
        long bytes = 0;
        try
        {
            device = Path.GetFileName(TreeFixtures.Run("/usr/bin/findmnt", ["-n", "-o", "SOURCE", mnt]).Trim());
            // One stat(1) over the whole tree: PATH|TYPE|MODE|UID|GID|NLINK|SIZE|MAJ|MIN (hex device numbers).
            var kernel = TreeFixtures.Run("/usr/bin/find", [mnt, "-exec", "stat", "-c", "%n|%F|%a|%u|%g|%h|%s|%t|%T", "{}", "+"])
                .Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(l => l.Split('|'))
                .ToDictionary(f => f[0] == mnt ? "/" : f[0][mnt.Length..], f => f, StringComparer.Ordinal);
            var xattrs = KernelXattrs(mnt);
            foreach (var fields in expected)
            {
                if (fields[0].StartsWith('#')) continue;
                Assert.True(fields.Length == 9, $"manifest line '{string.Join('\t', fields)}' is not PATH TYPE MODE UID GID NLINK SIZE CONTENT XATTRS");
                string rel = fields[0];
                Assert.True(kernel.TryGetValue(rel, out var k), $"{rel} is in the manifest but the kernel does not see it");
                string type = k[1] switch
                {
                    "regular file" or "regular empty file" => "f",
                    "directory" => "d",
                    "symbolic link" => "l",
                    "fifo" => "p",
                    "socket" => "s",
                    "character special file" => "c",
                    "block special file" => "b",
                    _ => k[1],
                };
                string what = $"{rel}: the kernel shows type {type} mode {k[2]} owner {k[3]}:{k[4]} links {k[5]} size {k[6]}, the model";
                Assert.True(type == fields[1], $"{what} has type {fields[1]}");
                Assert.True(k[2] == fields[2], $"{what} has mode {fields[2]}");
                Assert.True(k[3] == fields[3] && k[4] == fields[4], $"{what} has owner {fields[3]}:{fields[4]}");
                Assert.True(k[5] == fields[5], $"{what} has {fields[5]} links");
                if (fields[6] != "-") Assert.True(k[6] == fields[6], $"{what} has size {fields[6]}");
                var attributes = xattrs.GetValueOrDefault(rel) ?? [];
                string digest = Xfbtree.Cli.Stress.StressModel.XattrDigest(attributes);
                Assert.True(digest == fields[8],
                    $"{rel}: the kernel shows extended attributes {string.Join(", ", attributes.Select(a => $"{a.Name} ({a.Value.Length} bytes)"))} (digest {digest}), the model's digest is {fields[8]}");
                string path = Path.Combine(mnt, rel.TrimStart('/'));
                switch (type)
                {
                    case "f":
                    {
                        using var stream = File.OpenRead(path);
                        string sha = Convert.ToHexStringLower(SHA256.HashData(stream));
                        Assert.True(sha == fields[7], $"{rel}: the kernel reads sha256 {sha}, the model has {fields[7]}");
                        compared++;
                        bytes += stream.Length;
                        break;
                    }
                    case "l":
                        Assert.True(new FileInfo(path).LinkTarget == fields[7], $"{rel}: the kernel's symlink target differs from the model's");
                        break;
                    case "c" or "b":
                        string numbers = $"{Convert.ToUInt32(k[7], 16)}:{Convert.ToUInt32(k[8], 16)}";
                        Assert.True(numbers == fields[7], $"{rel}: the kernel shows device {numbers}, the model {fields[7]}");
                        break;
                }
            }
        }
        finally
        {
            TreeFixtures.Run("/bin/umount", [mnt]);
        }
        return (device, compared, bytes);
    }

    /// <summary>
    /// Every extended attribute the kernel shows under <paramref name="mnt"/>, by path relative to it ("/" for the
    /// mount point): one <c>getfattr -R -P -h -d -m - -e hex --absolute-names</c> over the tree (every namespace,
    /// symlinks' own attributes, values in hex), parsed from its "# file: PATH" blocks of "name=0xHEX" lines.
    /// </summary>
    internal static Dictionary<string, List<(string Name, byte[] Value)>> KernelXattrs(string mnt)
    {
        Assert.True(File.Exists("/usr/bin/getfattr"), "/usr/bin/getfattr is missing (package attr): the kernel's extended attributes cannot be read");
        string dump = TreeFixtures.Run("/usr/bin/getfattr", ["-R", "-P", "-h", "-d", "-m", "-", "-e", "hex", "--absolute-names", mnt]);
        var result = new Dictionary<string, List<(string, byte[])>>(StringComparer.Ordinal);
        List<(string, byte[])>? current = null;
        foreach (string line in dump.Split('\n'))
        {
            if (line.StartsWith("# file: ", StringComparison.Ordinal))
            {
                string path = Unescape(line["# file: ".Length..]);
                Assert.StartsWith(mnt, path, StringComparison.Ordinal);
                string rel = path.Length == mnt.Length ? "/" : path[mnt.Length..];
                result[rel] = current = [];
            }
            else if (line.Length > 0)
            {
                Assert.True(current is not null, $"getfattr printed '{line}' before any '# file:' line");
                int eq = line.IndexOf('=', StringComparison.Ordinal);
                string name = Unescape(eq < 0 ? line : line[..eq]);
                string value = eq < 0 ? "" : line[(eq + 1)..];
                Assert.True(value.Length == 0 || value.StartsWith("0x", StringComparison.Ordinal), $"getfattr -e hex printed '{line}'");
                current.Add((name, value.Length == 0 ? [] : Convert.FromHexString(value.AsSpan(2))));
            }
        }
        return result;
    }

    /// <summary>getfattr's quoting of names and paths: a backslash and three octal digits per special byte.</summary>
    static string Unescape(string quoted)
    {
        if (!quoted.Contains('\\', StringComparison.Ordinal)) return quoted;
        var bytes = new List<byte>();
        var raw = System.Text.Encoding.UTF8.GetBytes(quoted);
        for (int i = 0; i < raw.Length; i++)
        {
            if (raw[i] == (byte)'\\' && i + 3 < raw.Length && raw[i + 1] is >= (byte)'0' and <= (byte)'7')
            {
                bytes.Add((byte)((raw[i + 1] - '0') * 64 + (raw[i + 2] - '0') * 8 + (raw[i + 3] - '0')));
                i += 3;
            }
            else
            {
                bytes.Add(raw[i]);
            }
        }
        return System.Text.Encoding.UTF8.GetString(bytes.ToArray());
    }

    /// <summary>scripts/kernel-workload.sh on the image, then xfs_repair -n; both must exit 0.</summary>
    internal static void AssertKernelWorkloadAndRepair(string image, ITestOutputHelper output, string workloadWhat)
    {
        var workload = RepairTools.Exec(Path.Combine(RepairKernelTests.RepoRoot(), "scripts", "kernel-workload.sh"), [image]);
        output.WriteLine(workload.Stdout + workload.Stderr);
        Assert.True(workload.ExitCode == 0, $"kernel workload on {workloadWhat}: {workload}");
        var repair = RepairTools.XfsRepairCheck(image);
        Assert.True(repair.ExitCode == 0, $"xfs_repair -n: {repair}");
    }

    /// <summary>The kernel log lines for <paramref name="device"/> after <paramref name="marker"/>: none may tell of
    /// corruption, shutdown, an internal error or a metadata I/O error; written to <paramref name="print"/> first when
    /// given.</summary>
    internal static void AssertKernelLogClean(string marker, string device, ITestOutputHelper? print = null)
    {
        var ours = KernelLog.DeviceMessagesSince(marker, device);
        print?.WriteLine(string.Join('\n', ours));
        Assert.DoesNotContain(ours, l => l.Contains("corrupt", StringComparison.OrdinalIgnoreCase)
                                         || l.Contains("shutdown", StringComparison.OrdinalIgnoreCase)
                                         || l.Contains("shut down", StringComparison.OrdinalIgnoreCase)
                                         || l.Contains("Internal error", StringComparison.Ordinal)
                                         || l.Contains("metadata I/O error", StringComparison.Ordinal));
    }
}
