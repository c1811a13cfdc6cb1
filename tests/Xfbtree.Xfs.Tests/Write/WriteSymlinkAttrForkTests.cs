using Xfbtree.Xfs.Tests.Repair;
using Xfbtree.Xfs.Tests.Trees;
using Xfbtree.Xfs.Write;
using Xunit.Abstractions;

namespace Xfbtree.Xfs.Tests.Write;

/// <summary>
/// Symlinks beside attribute forks that come and go. A new attr fork can push an inline target out to a remote
/// block (xfs_bmap_add_attrfork_local); when the fork goes again, or grows the data fork back, a target that fits
/// the data fork must be inline again: xfs_repair before 6.10 calls an extents-format symlink whose size fits the
/// data fork "mismatch between format (2) and size". Targets of every length around the inline limit and the default
/// fork offset, on 512- and 1024-byte inodes (v5's smallest inode is 512 bytes), through shortform, leaf and remote
/// attribute values; then xfs_repair -n, rmap check, the engine and the kernel read every target back.
/// </summary>
public sealed class WriteSymlinkAttrForkTests(ITestOutputHelper output)
{
    const int InodeCoreBytes = 176;

    public static TheoryData<int> InodeSizes => new() { 512, 1024 };

    [Theory]
    [MemberData(nameof(InodeSizes))]
    public void TargetsThatFitComeBackInlineWhenTheForkGoes(int inodeSize)
    {
        RepairSafetyTests.RequireRoot();
        using var scratch = new RepairScratch();
        string image = Path.Combine(scratch.Directory, $"links-{inodeSize}.img");
        RepairTools.MkfsSmall(image, 64L << 20, "-m", "crc=1,rmapbt=1,reflink=1", "-i", $"size={inodeSize}");
        int literal = inodeSize - InodeCoreBytes;
        // The default fork offset of a 512-byte or larger inode is 96 bytes (xfs_default_attroffset, rounded down
        // to 8): targets longer than that move out for a fork that the shortform sizing cannot place.
        int[] lengths = [1, 95, 96, 97, 104, literal / 2, literal - 40, literal - 32, literal - 9, literal - 8, literal - 1, literal, literal + 1];
        var random = new Random(inodeSize);
        byte[] Value(int n)
        {
            var v = new byte[n];
            random.NextBytes(v);
            return v;
        }
        // Each scenario: the attributes set in order, then the ones removed in order (the fork goes with the last).
        var scenarios = new (string Name, (string Attr, int Bytes)[] Set, string[] Remove)[]
        {
            ("small", [("trusted.a", 8)], ["trusted.a"]),
            ("shortform", [("trusted.a", 60)], ["trusted.a"]),
            ("leaf", [("trusted.a", 2000)], ["trusted.a"]),
            ("remote", [("trusted.a", 9000)], ["trusted.a"]),
            ("two", [("trusted.a", 40), ("security.b", 120)], ["security.b", "trusted.a"]),
            ("shrink", [("trusted.a", 10), ("trusted.b", 3000)], ["trusted.b"]),
            ("kept", [("trusted.a", 200)], []),
        };
        var targets = new Dictionary<string, string>(StringComparer.Ordinal);
        var wrongFormats = new List<string>();
        using (var fs = XfsFileSystem.Open(image, WriteEngineTestSupport.Fast))
        {
            foreach (int length in lengths)
            {
                foreach (var (name, set, remove) in scenarios)
                {
                    string path = $"/l{length}-{name}";
                    string target = "/" + new string((char)('a' + length % 26), length - 1);
                    fs.Symlink(target, path);
                    targets[path] = target;
                    ulong ino = fs.Lookup(path);
                    foreach (var (attr, bytes) in set) fs.SetXattr(ino, attr, Value(bytes));
                    foreach (string attr in remove) fs.RemoveXattr(ino, attr);
                    var stat = fs.Stat(path);
                    Assert.True(fs.ReadLink(path) == target, $"{path}: the engine reads another target");
                    bool attrsLeft = set.Length > remove.Length;
                    string expected = length <= literal ? "local" : "extents";
                    if (!attrsLeft && stat.DataForkFormat != expected)
                    {
                        wrongFormats.Add($"{path}: a {length}-byte target without attributes in a {literal}-byte literal area is {stat.DataForkFormat}, not {expected}");
                    }
                }
            }
            WriteEngineTestSupport.AssertInvariants(fs.Engine, "symlinks beside attr forks");
            fs.Close();
        }
        // xfs_repair first: it is the judge of the format; the engine's own view of each link after.
        WriteEngineTestSupport.AssertOraclesClean(image, $"{inodeSize}-byte inodes");
        AssertKernelReadsTargets(image, scratch.Directory, targets);
        Assert.True(wrongFormats.Count == 0, string.Join('\n', wrongFormats));
    }

    void AssertKernelReadsTargets(string image, string scratchDir, Dictionary<string, string> targets)
    {
        string mnt = Directory.CreateDirectory(Path.Combine(scratchDir, "mnt")).FullName;
        string marker = $"xfbtree-symlink-{Environment.ProcessId}-{Guid.NewGuid():N}";
        KernelLog.Mark(marker);
        WriteNamespaceOperationTests.FreshUuid(image);
        TreeFixtures.Run("/bin/mount", ["-o", "ro,loop,nouuid", image, mnt]);
        string device;
        var kernel = new Dictionary<string, string>(StringComparer.Ordinal);
        try
        {
            device = Path.GetFileName(TreeFixtures.Run("/usr/bin/findmnt", ["-n", "-o", "SOURCE", mnt]).Trim());
            foreach (string path in targets.Keys) kernel[path] = new FileInfo(mnt + path).LinkTarget ?? "";
        }
        finally
        {
            TreeFixtures.Run("/bin/umount", [mnt]);
        }
        foreach (var (path, target) in targets)
        {
            Assert.True(kernel[path] == target, $"{path}: the kernel reads a {kernel[path].Length}-byte target, the engine wrote {target.Length} bytes");
        }
        KernelOracle.AssertKernelLogClean(marker, device, output);
        output.WriteLine($"the kernel read back {targets.Count} targets");
    }
}
