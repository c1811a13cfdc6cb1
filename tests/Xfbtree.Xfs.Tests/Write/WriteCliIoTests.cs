using System.Security.Cryptography;
using System.Text.RegularExpressions;
using Xfbtree.Xfs.Tests.Repair;
using Xfbtree.Cli.Stress;
using Xunit.Abstractions;

namespace Xfbtree.Xfs.Tests.Write;

/// <summary>
/// <c>xfbtree io</c> as a user runs it (the built tool as a process) on private copies of fixtures of several
/// geometries: every command, then xfs_repair -n and <c>xfbtree rmap check</c> must be clean and a second run must
/// read back what the first wrote (hashes computed independently with the contents model); failures are one line
/// with exit 1 and stop the run, usage errors exit 2 before the image is touched.
/// </summary>
public sealed partial class WriteCliIoTests(ITestOutputHelper output)
{
    public static readonly TheoryData<string> Geometries = new() { "aged-small", "geom-bs1k", "geom-nrext64", "fresh-4ag" };

    [Theory]
    [MemberData(nameof(Geometries))]
    public void WriteCliEveryCommandLeavesAConsistentImage(string fixture)
    {
        using var scratch = new RepairScratch();
        string image = scratch.CopyFixture(fixture);
        var run = RepairTools.Xfbtree("io", image,
            "-c", "mkdir /wt",
            "-c", "create /wt/a",
            "-c", "pwrite /wt/a 0 64k",
            "-c", "pwrite -S 0x41 /wt/a 100k 5000",
            "-c", "pread /wt/a 0 200k",
            "-c", "falloc /wt/a 1m 256k",
            "-c", "fpunch /wt/a 8k 16k",
            "-c", "create /wt/b",
            "-c", "reflink /wt/a 0 /wt/b 0 64k",
            "-c", "pwrite -S 7 /wt/b 4k 1",
            "-c", "unshare /wt/b 0 64k",
            "-c", "truncate /wt/a 90000",
            "-c", "create /wt/c",
            "-c", "pwrite /wt/c 0 12k",
            "-c", "unlink /wt/c",
            "-c", "mkdir /wt/d",
            "-c", "unlink /wt/d",
            "-c", "stat /wt/a",
            "-c", "ls /wt");
        output.WriteLine(run.ToString());
        Assert.True(run.ExitCode == 0, run.ToString());
        Assert.Equal("", run.Stderr);

        // The same operations on the contents model give the expected bytes.
        var a = new FileContents();
        Fill(a, 0, 64 << 10, 0xcd);
        Fill(a, 100 << 10, 5000, 0x41);
        string firstRead = Crc(a, 0, 200 << 10);
        a.ExtendTo((1 << 20) + (256 << 10));
        a.Zero(8 << 10, 16 << 10);
        var b = new FileContents();
        b.CopyFrom(a, 0, 0, 64 << 10);
        Fill(b, 4096, 1, 7);
        a.SetSize(90000);

        Assert.Contains("wrote 65536/65536 bytes at offset 0", run.Stdout, StringComparison.Ordinal);
        Assert.Contains($"read {100 * 1024 + 5000}/{200 << 10} bytes at offset 0 crc64 {firstRead}", run.Stdout, StringComparison.Ordinal);
        Assert.Matches(@"(?m)^/wt/a: inode \d+$", run.Stdout);
        Assert.Contains("size = 90000", run.Stdout, StringComparison.Ordinal);
        Assert.Contains("type = file", run.Stdout, StringComparison.Ordinal);
        var listed = LsLine().Matches(run.Stdout).Select(m => m.Groups[2].Value + ":" + m.Groups[1].Value).Order(StringComparer.Ordinal).ToList();
        Assert.Equal(["a:file", "b:file"], listed);

        WriteOracles.AssertImageClean(image, output);

        // Read back in a second run: what the image holds after a clean close and a fresh open.
        var back = RepairTools.Xfbtree("io", image, "-c", "pread /wt/a 0 1m", "-c", "pread /wt/b 0 1m", "-c", "stat /wt/b", "-c", "ls /");
        Assert.True(back.ExitCode == 0, back.ToString());
        Assert.Contains($"read 90000/{1 << 20} bytes at offset 0 crc64 {Crc(a, 0, 1 << 20)}", back.Stdout, StringComparison.Ordinal);
        Assert.Contains($"read 65536/{1 << 20} bytes at offset 0 crc64 {Crc(b, 0, 1 << 20)}", back.Stdout, StringComparison.Ordinal);
        Assert.Contains("size = 65536", back.Stdout, StringComparison.Ordinal);
        Assert.Matches(@"(?m)^\d+\tdir\twt$", back.Stdout);
    }

    [Fact]
    public void WriteCliFirstFailureStopsWithOneLineAndTheImageStaysConsistent()
    {
        using var scratch = new RepairScratch();
        string image = scratch.CopyFixture("fresh-4ag");
        var run = RepairTools.Xfbtree("io", image, "-c", "create /x", "-c", "pwrite /x 0 8k", "-c", "create /x", "-c", "create /y");
        Assert.True(run.ExitCode == 1, run.ToString());
        Assert.Equal(1, run.Stderr.Count(c => c == '\n'));
        Assert.StartsWith("xfbtree: io: create /x: ", run.Stderr, StringComparison.Ordinal);
        Assert.Contains("(EEXIST)", run.Stderr, StringComparison.Ordinal);
        WriteOracles.AssertImageClean(image, output);
        var ls = RepairTools.Xfbtree("io", image, "-c", "ls /", "-c", "stat /x");
        Assert.True(ls.ExitCode == 0, ls.ToString());
        Assert.Matches(@"(?m)\tx$", ls.Stdout);
        Assert.DoesNotMatch(@"(?m)\ty$", ls.Stdout);
        Assert.Contains("size = 8192", ls.Stdout, StringComparison.Ordinal);

        foreach (var (command, kind) in new[]
                 {
                     ("pwrite /missing 0 1", "(ENOENT)"), ("unlink /", "(EISDIR)"), ("ls /x", "(ENOTDIR)"),
                     ("pwrite /x/y 0 1", "(ENOTDIR)"), ("mkdir /x", "(EEXIST)"),
                 })
        {
            var failed = RepairTools.Xfbtree("io", image, "-c", "stat /x", "-c", command, "-c", "create /never");
            Assert.True(failed.ExitCode == 1, $"{command}: {failed}");
            Assert.Equal(1, failed.Stderr.Count(c => c == '\n'));
            Assert.StartsWith($"xfbtree: io: {command}: ", failed.Stderr, StringComparison.Ordinal);
            Assert.Contains(kind, failed.Stderr, StringComparison.Ordinal);
        }
        WriteOracles.AssertImageClean(image, output);
        Assert.DoesNotMatch(@"(?m)\tnever$", RepairTools.Xfbtree("io", image, "-c", "ls /").Stdout);
    }

    [Fact]
    public void WriteCliUsageErrorsExitTwoBeforeTheImageIsOpened()
    {
        using var scratch = new RepairScratch();
        string image = scratch.CopyFixture("fresh-4ag");
        byte[] before = HashFile(image);
        foreach (var args in new[]
                 {
                     new[] { "io", image }, ["io", image, "-c", "frob /a"], ["io", image, "-c", "create /a", "-c", "pwrite /a 0"],
                     ["io", image, "-c", "pwrite /a 0 1 -S 300"], ["io", image, "-c", "truncate /a 1q"], ["io", image, "-c", "create a"],
                     ["io", "-c", "create /a"], ["stress", image, "--threads", "0"], ["stress", image, "--ops", "-5"],
                     ["stress", image, "--max-file-size", "12x"], ["stress", image, "--bogus"],
                 })
        {
            var r = RepairTools.Xfbtree(args);
            string what = $"xfbtree {string.Join(' ', args)}: {r}";
            Assert.True(r.ExitCode == 2, what);
            Assert.True(r.Stderr.EndsWith('\n') && r.Stderr.Count(c => c == '\n') == 1, what);
            Assert.StartsWith("xfbtree", r.Stderr, StringComparison.Ordinal);
            Assert.Equal("", r.Stdout);
        }
        Assert.Equal(before, HashFile(image));

        var missing = RepairTools.Xfbtree("io", Path.Combine(scratch.Directory, "no-such.img"), "-c", "ls /");
        Assert.True(missing.ExitCode == 2, missing.ToString());
        Assert.Equal(1, missing.Stderr.Count(c => c == '\n'));
    }

    [Fact]
    public void WriteCliHelpNamesTheCommands()
    {
        var io = RepairTools.Xfbtree("io", "--help");
        Assert.True(io.ExitCode == 0, io.ToString());
        foreach (string word in new[] { "pwrite", "pread", "falloc", "fpunch", "truncate", "reflink", "unshare", "create", "mkdir", "unlink", "stat", "ls" })
        {
            Assert.Contains(word, io.Stdout, StringComparison.Ordinal);
        }
        var stress = RepairTools.Xfbtree("stress", "--help");
        Assert.True(stress.ExitCode == 0, stress.ToString());
        foreach (string option in new[] { "--ops", "--threads", "--seed", "--manifest" }) Assert.Contains(option, stress.Stdout, StringComparison.Ordinal);
    }

    static byte[] HashFile(string path)
    {
        using var stream = File.OpenRead(path);
        return SHA256.HashData(stream);
    }

    static void Fill(FileContents contents, long offset, int length, byte value)
    {
        var data = new byte[length];
        data.AsSpan().Fill(value);
        contents.Write(offset, data);
    }

    /// <summary>CRC-64/XZ of the model's bytes, every byte materialised (the byte path, not the zero-run path).</summary>
    internal static string Crc(FileContents contents, long offset, int length)
    {
        var buffer = new byte[length];
        int n = contents.Read(offset, buffer);
        var crc = new Cli.Crc64();
        crc.Append(buffer.AsSpan(0, n));
        return crc.Value.ToString("x16", System.Globalization.CultureInfo.InvariantCulture);
    }

    [GeneratedRegex(@"(?m)^\d+\t(\w+)\t(\S+)$")]
    private static partial Regex LsLine();
}

/// <summary>The oracles every write test ends with.</summary>
internal static class WriteOracles
{
    /// <summary>xfs_repair -n and <c>xfbtree rmap check</c> both exit 0 on <paramref name="image"/>.</summary>
    public static void AssertImageClean(string image, ITestOutputHelper? output = null)
    {
        if (!WriteEngineTestSupport.HasRmapbt(image))
        {
            WriteEngineTestSupport.AssertOraclesClean(image, "without an rmapbt"); // xfs_repair -n and the scrub
            return;
        }
        var repair = RepairTools.XfsRepairCheck(image);
        Assert.True(repair.ExitCode == 0, $"xfs_repair -n: {repair}");
        var check = RepairTools.Xfbtree("rmap", "check", image);
        output?.WriteLine(check.Stdout);
        Assert.True(check.ExitCode == 0, $"xfbtree rmap check: {check}");
    }
}
