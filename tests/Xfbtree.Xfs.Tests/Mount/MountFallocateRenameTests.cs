using Xfbtree.Xfs.Tests.Repair;

namespace Xfbtree.Xfs.Tests.Mount;

/// <summary>
/// fallocate and renameat2 through `xfbtree mount` with real programs (xfs_io, fallocate(1), python's renameat2):
/// KEEP_SIZE past EOF, zero range with KEEP_SIZE, RENAME_WHITEOUT beside EXCHANGE and NOREPLACE; then the image is
/// clean and the kernel reads the same sizes, blocks and whiteouts.
/// </summary>
public sealed class MountFallocateRenameTests
{
    [FuseFact]
    public void KeepSizePreallocation_ZeroRange_AndWhiteoutRenames_AsTheKernelsXfsDoesThem()
    {
        using var scratch = new RepairScratch();
        string image = scratch.CopyFixture("fresh-4ag");
        string mnt = Directory.CreateDirectory(Path.Combine(scratch.Directory, "mnt")).FullName;
        string file = Path.Combine(mnt, "prealloc");
        string blocksPrealloc, blocksZeroed;
        using (var mount = MountedImage.Start(image, mnt))
        {
            // KEEP_SIZE past EOF (was EOPNOTSUPP): the size stays, st_blocks counts the unwritten blocks.
            Run("/usr/sbin/xfs_io", "-f", "-c", "pwrite -S 0x61 0 10000", "-c", "falloc -k 8192 1m", file);
            Assert.Equal("10000", Stat(file, "%s"));
            blocksPrealloc = Stat(file, "%b");
            Assert.Equal(((8192 + (1 << 20)) / 512).ToString(System.Globalization.CultureInfo.InvariantCulture), blocksPrealloc);
            // A write into the preallocation past EOF: the gap reads as zeros, no block is added.
            Run("/usr/sbin/xfs_io", "-c", "pwrite -S 0x62 500000 100", file);
            Assert.Equal("500100", Stat(file, "%s"));
            Assert.Equal(blocksPrealloc, Stat(file, "%b"));
            // Zero range with KEEP_SIZE reaching past EOF (fallocate -z -n), then a truncate to the same size frees
            // the blocks past EOF as the kernel's XFS does.
            Run("/usr/bin/fallocate", "-z", "-n", "-o", "4096", "-l", "2m", file);
            Assert.Equal("500100", Stat(file, "%s"));
            Run("/usr/sbin/xfs_io", "-c", "truncate 500100", file);
            blocksZeroed = Stat(file, "%b");
            Assert.Equal((((500100 + 4095) / 4096) * 8).ToString(System.Globalization.CultureInfo.InvariantCulture), blocksZeroed);
            var bytes = File.ReadAllBytes(file);
            Assert.Equal(500100, bytes.Length);
            Assert.True(bytes.AsSpan(0, 4096).IndexOfAnyExcept((byte)0x61) < 0 && bytes.AsSpan(4096).IndexOfAnyExcept((byte)0) < 0, "zero range content");
            // Collapse and insert never reach a FUSE server: the kernel's FUSE module refuses them itself.
            var collapse = RepairTools.Exec("/usr/sbin/xfs_io", ["-c", "fcollapse 0 4096", file]);
            Assert.Contains("Operation not supported", collapse.Stdout + collapse.Stderr, StringComparison.Ordinal);

            // renameat2: WHITEOUT (was EINVAL), EXCHANGE and NOREPLACE.
            Directory.CreateDirectory(Path.Combine(mnt, "w"));
            File.WriteAllText(Path.Combine(mnt, "w", "a"), "a\n");
            File.WriteAllText(Path.Combine(mnt, "w", "b"), "b\n");
            File.WriteAllText(Path.Combine(mnt, "w", "c"), "c\n");
            string script = """
                import ctypes, errno, os, sys
                libc = ctypes.CDLL(None, use_errno=True)
                def rename2(a, b, flags):
                    r = libc.renameat2(-100, a.encode(), -100, b.encode(), flags)
                    return 0 if r == 0 else ctypes.get_errno()
                os.chdir(sys.argv[1])
                print(rename2("a", "a2", 4), rename2("b", "c", 4), rename2("a2", "c", 1), rename2("a2", "c", 2), rename2("a2", "x", 6))
                """;
            Assert.Equal($"0 0 {Errno("EEXIST")} 0 {Errno("EINVAL")}\n", Run("/usr/bin/env", "python3", "-c", script, Path.Combine(mnt, "w")));
            Assert.Equal("character special file 0:0 0 1", Stat(Path.Combine(mnt, "w", "a"), "%F %t:%T %a %h"));
            Assert.Equal("character special file 0:0 0 1", Stat(Path.Combine(mnt, "w", "b"), "%F %t:%T %a %h"));
            Assert.Equal("a\n", File.ReadAllText(Path.Combine(mnt, "w", "c"))); // exchanged with a2
            Assert.Equal("b\n", File.ReadAllText(Path.Combine(mnt, "w", "a2")));
            var (code, stdout, stderr) = mount.Unmount();
            Assert.True(code == 0, $"exit {code}\n{stdout}\n{stderr}");
        }
        MountWitnesses.AssertClean(image);
        MountWitnesses.WithKernelMount(scratch, image, kernel =>
        {
            Assert.Equal($"500100 {blocksZeroed}", Stat(Path.Combine(kernel, "prealloc"), "%s %b"));
            Assert.Equal("character special file 0:0 0 1", Stat(Path.Combine(kernel, "w", "a"), "%F %t:%T %a %h"));
            Assert.Equal("character special file 0:0 0 1", Stat(Path.Combine(kernel, "w", "b"), "%F %t:%T %a %h"));
            Assert.Equal("a\n", File.ReadAllText(Path.Combine(kernel, "w", "c")));
        });
    }

    static string Errno(string name) => name switch { "EEXIST" => "17", "EINVAL" => "22", _ => throw new ArgumentException(name) };

    static string Stat(string path, string format) => Run("/usr/bin/stat", "-c", format, path).TrimEnd('\n');

    static string Run(string file, params string[] args)
    {
        var r = RepairTools.Exec(file, args);
        Assert.True(r.ExitCode == 0, $"{file} {string.Join(' ', args)}: {r}");
        return r.Stdout;
    }
}
