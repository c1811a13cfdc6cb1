using System.Globalization;
using Xfbtree.Xfs.Tests.Repair;
using Xfbtree.Xfs.Tests.Trees;
using Xfbtree.Xfs.Write;
using Xfbtree.Xfs.Write.Engine;
using Xunit.Abstractions;

namespace Xfbtree.Xfs.Tests.Write;

/// <summary>
/// An image filled to NoSpace by the engine must mount as cleanly as one filled by the kernel: no "Per-AG reservation
/// ... failed", no "ENOSPC reserving per-AG metadata pool", no "Reserve blocks depleted" (the kernel takes its per-AG
/// pools out of the free-block counter at mount, after setting aside blocks per AG). Root and loop mounts; the kernel
/// fill of a second copy is measured beside it and both are printed per AG.
/// </summary>
public sealed class WriteSpaceKernelReservationTests(ITestOutputHelper output)
{
    public static TheoryData<string, string> Geometries() => new()
    {
        { "4k-4ag", "-m rmapbt=1,reflink=1" },
        { "1k-4ag", "-b size=1024 -m rmapbt=1,reflink=1" },
        { "4k-1ag", "-d agcount=1 -m rmapbt=1,reflink=1" },
        // mkfs.xfs's defaults: no rmapbt, so no RMAPBT pool and a shorter free list (more space the engine may use).
        { "4k-4ag-normap", "-m reflink=1" },
        { "1k-1ag-normap", "-b size=1024 -d agcount=1" },
    };

    [Theory]
    [MemberData(nameof(Geometries))]
    public void AnImageFilledByTheEngineMountsWithoutAReservationWarning(string name, string mkfsOptions)
    {
        KernelOracle.RequireRootAndTools();
        using var scratch = new RepairScratch();
        string image = Path.Combine(scratch.Directory, name + ".img");
        RepairTools.MkfsSmall(image, 64L << 20, mkfsOptions.Split(' '));
        string kernelImage = scratch.Copy(image, "kernel.img");

        long written = FillThroughTheEngine(image);
        WriteEngineTestSupport.AssertOraclesClean(image, "after the engine's fill");
        string engineFree = FreePerAg(image);

        string marker = $"xfbtree-reservation-{Environment.ProcessId}-{name}-{Guid.NewGuid():N}";
        string mnt = Directory.CreateDirectory(Path.Combine(scratch.Directory, "mnt")).FullName;
        KernelLog.Mark(marker);
        TreeFixtures.Run("/bin/mount", ["-o", "loop,nouuid", image, mnt]);
        string device;
        try
        {
            device = Path.GetFileName(TreeFixtures.Run("/usr/bin/findmnt", ["-n", "-o", "SOURCE", mnt]).Trim());
        }
        finally
        {
            TreeFixtures.Run("/bin/umount", [mnt]);
        }
        string log = TreeFixtures.Run("/bin/dmesg", []);
        int start = log.LastIndexOf(marker, StringComparison.Ordinal);
        Assert.True(start >= 0, "our marker is not in the kernel log: cannot tell what the kernel said");
        var ours = log[start..].Split('\n').Where(l => l.Contains($"XFS ({device})", StringComparison.Ordinal)).ToList();
        output.WriteLine(string.Join('\n', ours));
        Assert.Contains(ours, l => l.Contains("Ending clean mount", StringComparison.Ordinal));
        Assert.DoesNotContain(ours, l => l.Contains("reservation", StringComparison.OrdinalIgnoreCase)
                                         || l.Contains("ENOSPC", StringComparison.Ordinal)
                                         || l.Contains("depleted", StringComparison.OrdinalIgnoreCase)
                                         || l.Contains("reserve", StringComparison.OrdinalIgnoreCase));
        KernelOracle.AssertKernelLogClean(marker, device);

        long kernelWritten = FillThroughTheKernel(scratch, kernelImage);
        output.WriteLine($"{name}: engine wrote {written} bytes, free+flcount per AG after: {engineFree}");
        output.WriteLine($"{name}: kernel wrote {kernelWritten} bytes, free+flcount per AG after: {FreePerAg(kernelImage)}");
    }

    /// <summary>Files of 1 MiB, then 64 KiB, then one block, until NoSpace each time; the bytes written.</summary>
    static long FillThroughTheEngine(string image)
    {
        long written = 0;
        using var fs = XfsFileSystem.Open(image, new WriteEngineOptions { SyncCommits = false });
        int bs = fs.Engine.Geometry.BlockSize;
        int file = 0;
        foreach (int piece in new[] { 1 << 20, 64 << 10, bs })
        {
            string path = $"/fill{file++}";
            fs.Create(path);
            var data = new byte[piece];
            data.AsSpan().Fill(0x5a);
            for (long offset = 0; ; offset += piece)
            {
                try
                {
                    fs.Write(path, offset, data);
                    written += piece;
                }
                catch (XfsWriteException e) when (e.Kind == WriteErrorKind.NoSpace)
                {
                    break;
                }
            }
        }
        fs.Close();
        return written;
    }

    static long FillThroughTheKernel(RepairScratch scratch, string image)
    {
        string mnt = Directory.CreateDirectory(Path.Combine(scratch.Directory, "kmnt")).FullName;
        TreeFixtures.Run("/bin/mount", ["-o", "loop,nouuid", image, mnt]);
        long written = 0;
        try
        {
            var data = new byte[64 << 10];
            data.AsSpan().Fill(0x5a);
            using var stream = new FileStream(Path.Combine(mnt, "fill"), FileMode.CreateNew);
            try
            {
                while (true)
                {
                    stream.Write(data);
                    stream.Flush(flushToDisk: true);
                    written += data.Length;
                }
            }
            catch (IOException)
            {
                // ENOSPC: the kernel's fill ends here.
            }
        }
        finally
        {
            TreeFixtures.Run("/bin/umount", [mnt]);
        }
        return written;
    }

    static string FreePerAg(string image)
    {
        using var img = XfsImage.Open(image, WriteEngineTestSupport.EitherRmapbt);
        var parts = new List<string>();
        for (uint agno = 0; agno < img.Geometry.AgCount; agno++)
        {
            var agf = img.ReadAgf(agno);
            parts.Add(string.Create(CultureInfo.InvariantCulture, $"AG {agno}: {agf.FreeBlocks}+{agf.FlCount}"));
        }
        return string.Join(", ", parts);
    }
}
