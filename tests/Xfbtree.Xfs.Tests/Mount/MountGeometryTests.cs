using System.Globalization;
using Xfbtree.Xfs.Tests.Repair;
using Xunit.Abstractions;

namespace Xfbtree.Xfs.Tests.Mount;

/// <summary>
/// `xfbtree mount` on geometries the fixtures do not have, made by mkfs.xfs in the test: the model-based exerciser
/// with online repair (where the filesystem has an rmapbt to rebuild from), then the witnesses (xfs_repair -n, rmap
/// check, scrub, the kernel reading the tree back where it can mount the geometry); and a small filesystem filled to ENOSPC, where statfs must agree with the kernel's.
/// </summary>
public sealed class MountGeometryTests(ITestOutputHelper output)
{
    /// <summary>(name, image size, mkfs options), about 5 s each. The longer sweep with fsx, fsstress and pjdfstest
    /// is bench/hostile-geometries.sh.</summary>
    static readonly (string Name, long Size, string[] Mkfs)[] All =
    [
        // No sparse inodes, 512-byte inodes: sb_inoalignmt is half a chunk, so chunks start at odd multiples of 32
        // inodes (scrub called that damage).
        ("unsparse", 512L << 20, ["-i", "sparse=0", "-m", "rmapbt=1,reflink=1"]),
        // 64 KiB blocks: more inodes per block than a chunk; this kernel cannot mount them (page size 4 KiB).
        ("bs64k", 512L << 20, ["-b", "size=65536", "-m", "rmapbt=1,reflink=1"]),
        ("bs1k-dir64k", 256L << 20, ["-b", "size=1024", "-n", "size=65536", "-m", "rmapbt=1,reflink=1"]),
        ("ag1-inode2k", 256L << 20, ["-d", "agcount=1", "-i", "size=2048", "-m", "rmapbt=1,reflink=1"]),
        ("ag32-nofinobt", 2L << 30, ["-d", "agcount=32", "-m", "rmapbt=1,reflink=0,finobt=0"]),
        // mkfs.xfs's defaults: reflink, finobt, sparse inodes, but no rmapbt. No online rebuild exists without the
        // rmapbt: the mount says so once and serves on; the witnesses are xfs_repair -n, the scrub and the kernel.
        ("mkfs-default", 512L << 20, []),
    ];

    public static IEnumerable<object[]> Geometries() => All.Select(g => new object[] { g.Name });

    [FuseTheory]
    [MemberData(nameof(Geometries))]
    public void ModelBasedExerciser_OnGeometry_LeavesAnImageEveryWitnessCallsClean(string name)
    {
        var (_, size, mkfs) = All.Single(g => g.Name == name);
        using var scratch = new RepairScratch();
        string image = Path.Combine(scratch.Directory, $"{name}.img");
        RepairTools.MkfsSmall(image, size, mkfs);
        bool rotates = Write.WriteEngineTestSupport.HasRmapbt(image);
        string mnt = Directory.CreateDirectory(Path.Combine(scratch.Directory, "mnt")).FullName;
        const int Threads = 3, OpsPerThread = 120;
        var models = new Dictionary<string, byte[]>[Threads];
        long checkedReads = 0;
        using (var mount = MountedImage.Start(image, mnt, "--online-repair-every", "0.3", "--threads", "4"))
        {
            // Enough inodes for several chunks, with file data between them (so later chunks start wherever the
            // alignment allows), before the threads' random operations.
            var many = new Dictionary<string, byte[]>();
            for (int i = 0; i < 400; i++)
            {
                string dir = Directory.CreateDirectory(Path.Combine(mnt, $"many{i % 4}")).FullName;
                byte[] bytes = new byte[i % 50 == 0 ? 1 << 20 : i % 7 * 300];
                new Random(i).NextBytes(bytes);
                File.WriteAllBytes(Path.Combine(dir, $"f{i}"), bytes);
                many[$"many{i % 4}/f{i}"] = bytes;
            }
            var workers = Enumerable.Range(0, Threads).Select(t => new Thread(() => models[t] = MountTests.Exercise(mnt, t, OpsPerThread, ref checkedReads))).ToArray();
            foreach (var w in workers) w.Start();
            foreach (var w in workers) w.Join();
            foreach (var model in models.Append(many)) MountTests.AssertModel(mnt, model);
            models = [.. models, many];
            if (rotates)
                Assert.True(mount.WaitForLog("online repair: AG", 1, TimeSpan.FromMinutes(2)), $"no online repair finished:\n{mount.Stderr}");
            var (code, stdout, stderr) = mount.Unmount();
            Assert.True(code == 0, $"exit {code}\n{stdout}\n{stderr}");
            if (!rotates)
            {
                // Said once, at the start; no repair was tried (none failed) while the threads ran.
                Assert.Equal(1, MountedImage.Count(stderr, "--online-repair-every: the filesystem has no reverse-mapping btree, so no rotation runs"));
                Assert.DoesNotContain("online repair of AG", stderr, StringComparison.Ordinal);
                Assert.Contains("online-repair repairs=0 applied=0 ignored=0 failed=0", stdout, StringComparison.Ordinal);
            }
        }
        output.WriteLine($"{name}: {Threads} threads x {OpsPerThread} operations, {checkedReads} reads checked, {models.Sum(m => m.Count)} files at the end");
        Assert.True(checkedReads > Threads * 5, $"only {checkedReads} reads were checked");
        MountWitnesses.AssertClean(image);
        if (BlockSize(image) > Environment.SystemPageSize)
        {
            output.WriteLine($"kernel read-back not possible: {BlockSize(image)}-byte blocks exceed this kernel's page size; xfs_repair -n and scrub are the witnesses");
            return;
        }
        MountWitnesses.WithKernelMount(scratch, image, kernel =>
        {
            foreach (var model in models) MountTests.AssertModel(kernel, model);
        });
    }

    /// <summary>
    /// A 20 MiB filesystem (one AG) filled by dd until ENOSPC, through the mount and through the kernel on a copy:
    /// both take the same bytes, and statfs agrees with the kernel's before (within a few blocks) and after (about
    /// nothing available). The mount reported the AGF counters, 15 % of the filesystem free, while every write
    /// failed with ENOSPC.
    /// </summary>
    /// <remarks>Also on mkfs.xfs's defaults (no rmapbt): no RMAPBT reservation pool and a shorter free list, so the
    /// kernel leaves more space available than with an rmapbt, and the mount must leave the same.</remarks>
    [FuseTheory]
    [InlineData("rmapbt=1,reflink=1")]
    [InlineData("mkfs-default")]
    public void TinyFilesystem_FilledToEnospc_StatfsAgreesWithTheKernel(string features)
    {
        using var scratch = new RepairScratch();
        string image = Path.Combine(scratch.Directory, "tiny.img"), copy = Path.Combine(scratch.Directory, "kernel.img");
        RepairTools.MkfsSmall(image, 20L << 20, features == "mkfs-default" ? [] : ["-m", features]);
        File.Copy(image, copy);
        string mnt = Directory.CreateDirectory(Path.Combine(scratch.Directory, "mnt")).FullName;

        // In KiB.
        (long Blocks, long Available) kernelFresh = default, kernelFull = default;
        long kernelBytes = 0;
        MountWitnesses.WithKernelMount(scratch, copy, kernel =>
        {
            kernelFresh = StatFs(kernel);
            kernelBytes = FillUntilEnospc(Path.Combine(kernel, "fill"));
            kernelFull = StatFs(kernel);
        }, readOnly: false);
        (long Blocks, long Available) fresh, full;
        long bytes;
        using (var mount = MountedImage.Start(image, mnt, "--online-repair-every", "1"))
        {
            fresh = StatFs(mnt);
            bytes = FillUntilEnospc(Path.Combine(mnt, "fill"));
            full = StatFs(mnt);
            var (code, stdout, stderr) = mount.Unmount();
            Assert.True(code == 0, $"exit {code}\n{stdout}\n{stderr}");
        }
        output.WriteLine($"kernel: {kernelFresh} then {kernelBytes} bytes written, {kernelFull}; mount: {fresh} then {bytes} bytes, {full}");
        Assert.Equal(kernelFresh.Blocks, fresh.Blocks);
        long tolerance = Math.Max(64, kernelFresh.Blocks / 100);   // KiB
        Assert.True(Math.Abs(kernelFresh.Available - fresh.Available) <= tolerance, $"available at the start: kernel {kernelFresh.Available}, mount {fresh.Available} KiB");
        Assert.True(Math.Abs(kernelBytes - bytes) <= tolerance * 1024, $"dd took {kernelBytes} bytes on the kernel, {bytes} on the mount");
        Assert.True(full.Available <= tolerance, $"available after ENOSPC: {full.Available} KiB (kernel {kernelFull.Available})");
        MountWitnesses.AssertClean(image);
    }

    /// <summary>Writes 64 KiB blocks until the write fails; that failure must be ENOSPC. Returns the bytes written.</summary>
    static long FillUntilEnospc(string path)
    {
        var r = RepairTools.Exec("/bin/dd", ["if=/dev/zero", $"of={path}", "bs=64k"]);
        Assert.True(r.ExitCode != 0 && r.Stderr.Contains("No space left on device", StringComparison.Ordinal), $"dd until the filesystem is full: {r}");
        return new FileInfo(path).Length;
    }

    static (long Blocks, long Available) StatFs(string path)
    {
        var r = RepairTools.Exec("/usr/bin/stat", ["-f", "-c", "%b %a %S", path]);
        Assert.True(r.ExitCode == 0, $"stat -f {path}: {r}");
        string[] f = r.Stdout.Trim().Split(' ');
        long scale = long.Parse(f[2], CultureInfo.InvariantCulture) / 1024;
        return (long.Parse(f[0], CultureInfo.InvariantCulture) * scale, long.Parse(f[1], CultureInfo.InvariantCulture) * scale);
    }

    static int BlockSize(string image)
    {
        Span<byte> sb = stackalloc byte[8];
        using (var f = File.OpenRead(image))
        {
            f.Position = 4;
            f.ReadExactly(sb[..4]);
        }
        return (int)System.Buffers.Binary.BinaryPrimitives.ReadUInt32BigEndian(sb);
    }
}
