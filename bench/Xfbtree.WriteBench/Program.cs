using System.Diagnostics;
using System.Globalization;
using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;
using Xfbtree.Xfs.Write;
using Xfbtree.Xfs.Write.Engine;

// The write engine against the Linux kernel on the same image, in one run (root: the kernel side is a loop mount).
// Three copies of one fresh mkfs.xfs image (or of --image): the engine with a journal fsync per operation (its
// crash-safe default), the engine without it, and the kernel (buffered, with a syncfs at the end of each phase
// counted in its time, so both sides have their changes on disk when the clock stops). The same operations in the
// same order on each: creates (64 per directory), allocating 4 KiB writes (one into each new file), reflinks (4 KiB
// of each file into one target file, FICLONERANGE on the kernel side), punches (the 4 KiB of each file).
// Usage: dotnet run -c Release --project bench/Xfbtree.WriteBench -- [--ops N] [--image IMAGE] [--only engine|engine-nosync|kernel]
[DllImport("libc", SetLastError = true)]
static extern int fallocate(int fd, int mode, long offset, long length);
[DllImport("libc", SetLastError = true)]
static extern int ioctl(int fd, ulong request, ref FileCloneRange range);
[DllImport("libc", SetLastError = true)]
static extern int syncfs(int fd);

int ops = 2000;
string? sourceImage = null;
string only = "";
for (int i = 0; i < args.Length; i++)
{
    switch (args[i])
    {
        case "--ops": ops = int.Parse(args[++i], CultureInfo.InvariantCulture); break;
        case "--image": sourceImage = args[++i]; break;
        case "--only": only = args[++i]; break;
        default: Console.Error.WriteLine($"unknown argument {args[i]}"); return 2;
    }
}

string work = Directory.CreateTempSubdirectory("xfbtree-writebench-").FullName;
try
{
    string pristine = Path.Combine(work, "pristine.img");
    if (sourceImage is null)
    {
        using (var file = File.Create(pristine)) file.SetLength(1L << 30);
        Run("mkfs.xfs", "-q", "-f", "-m", "crc=1,rmapbt=1,reflink=1,finobt=1", "-d", "agcount=4", pristine);
    }
    else
    {
        Run("cp", "--sparse=always", sourceImage, pristine);
    }
    var phases = new[] { "create", "write 4k", "reflink 4k", "punch 4k" };
    var results = new Dictionary<string, double[]>();
    // Warm-up on a throw-away copy: without it the JIT (tiered compilation) takes half the engine's CPU time.
    if (only is "" or "engine" or "engine-nosync") Engine(Copy(pristine, "warm-up.img"), sync: false, count: Math.Min(ops, 500));
    if (only is "" or "engine")
    {
        results["engine sync"] = Engine(Copy(pristine, "engine-sync.img"), sync: true, count: ops);
    }
    if (only is "" or "engine" or "engine-nosync") results["engine nosync"] = Engine(Copy(pristine, "engine-nosync.img"), sync: false, count: ops);
    if (only is "" or "kernel") results["kernel"] = Kernel(Copy(pristine, "kernel.img"));

    Console.WriteLine($"ops per phase: {ops}; image: {(sourceImage ?? "fresh mkfs.xfs 1 GiB, 4 AGs, rmapbt+reflink")}");
    Console.Write($"{"operation",-12}");
    foreach (string side in results.Keys) Console.Write($"{side + " ops/s",22}");
    if (results.ContainsKey("kernel") && results.ContainsKey("engine sync")) Console.Write($"{"sync/kernel",14}{"nosync/kernel",15}");
    Console.WriteLine();
    for (int p = 0; p < phases.Length; p++)
    {
        Console.Write($"{phases[p],-12}");
        foreach (var side in results.Values) Console.Write(string.Create(CultureInfo.InvariantCulture, $"{side[p],22:F0}"));
        if (results.TryGetValue("kernel", out var k) && results.TryGetValue("engine sync", out var es))
        {
            Console.Write(string.Create(CultureInfo.InvariantCulture, $"{es[p] / k[p],14:F3}{results["engine nosync"][p] / k[p],15:F3}"));
        }
        Console.WriteLine();
    }
    return 0;
}
finally
{
    Directory.Delete(work, recursive: true);
}

string Copy(string from, string name)
{
    string to = Path.Combine(work, name);
    Run("cp", "--sparse=always", from, to);
    return to;
}

string DirOf(int i) => $"/bench/d{i / 64}";
string FileOf(int i) => $"{DirOf(i)}/f{i}";

double[] Engine(string image, bool sync, int count)
{
    var rates = new double[4];
    var data = new byte[4096];
    data.AsSpan().Fill(0x5a);
    using var fs = XfsFileSystem.Open(image, new WriteEngineOptions { SyncCommits = sync });
    fs.Mkdir("/bench");
    for (int d = 0; d * 64 < count; d++) fs.Mkdir($"/bench/d{d}");
    fs.Create("/bench/target");
    rates[0] = Time(count, () => { for (int i = 0; i < count; i++) fs.Create(FileOf(i)); });
    rates[1] = Time(count, () => { for (int i = 0; i < count; i++) fs.Write(FileOf(i), 0, data); });
    rates[2] = Time(count, () => { for (int i = 0; i < count; i++) fs.Reflink(FileOf(i), 0, "/bench/target", 4096L * i, 4096); });
    rates[3] = Time(count, () => { for (int i = 0; i < count; i++) fs.PunchHole(FileOf(i), 0, 4096); });
    fs.Close();
    Check(image);
    return rates;
}

double[] Kernel(string image)
{
    var rates = new double[4];
    string mnt = Directory.CreateDirectory(Path.Combine(work, "mnt")).FullName;
    Run("mount", "-o", "loop", image, mnt);
    try
    {
        string M(string path) => mnt + path;
        Directory.CreateDirectory(M("/bench"));
        for (int d = 0; d * 64 < ops; d++) Directory.CreateDirectory(M($"/bench/d{d}"));
        File.WriteAllBytes(M("/bench/target"), []);
        using var root = File.OpenHandle(M("/bench/target"), FileMode.Open, FileAccess.Read); // any fd on the fs, for syncfs
        var data = new byte[4096];
        data.AsSpan().Fill(0x5a);
        SyncFs(root);
        rates[0] = Time(ops, () =>
        {
            for (int i = 0; i < ops; i++) File.OpenHandle(M(FileOf(i)), FileMode.CreateNew, FileAccess.Write).Dispose();
            SyncFs(root);
        });
        rates[1] = Time(ops, () =>
        {
            for (int i = 0; i < ops; i++)
            {
                using var h = File.OpenHandle(M(FileOf(i)), FileMode.Open, FileAccess.Write);
                RandomAccess.Write(h, data, 0);
            }
            SyncFs(root);
        });
        rates[2] = Time(ops, () =>
        {
            using var target = File.OpenHandle(M("/bench/target"), FileMode.Open, FileAccess.Write);
            for (int i = 0; i < ops; i++)
            {
                using var h = File.OpenHandle(M(FileOf(i)), FileMode.Open, FileAccess.Read);
                var range = new FileCloneRange { SourceFd = h.DangerousGetHandle(), SourceOffset = 0, SourceLength = 4096, DestinationOffset = 4096UL * (ulong)i };
                if (ioctl((int)target.DangerousGetHandle(), 0x4020940D, ref range) != 0) throw new IOException($"FICLONERANGE: errno {Marshal.GetLastPInvokeError()}");
            }
            SyncFs(root);
        });
        rates[3] = Time(ops, () =>
        {
            for (int i = 0; i < ops; i++)
            {
                using var h = File.OpenHandle(M(FileOf(i)), FileMode.Open, FileAccess.Write);
                // FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE
                if (fallocate((int)h.DangerousGetHandle(), 0x02 | 0x01, 0, 4096) != 0) throw new IOException($"punch: errno {Marshal.GetLastPInvokeError()}");
            }
            SyncFs(root);
        });
    }
    finally
    {
        Run("umount", mnt);
    }
    Check(image);
    return rates;
}

void SyncFs(SafeFileHandle handle)
{
    if (syncfs((int)handle.DangerousGetHandle()) != 0) throw new IOException($"syncfs: errno {Marshal.GetLastPInvokeError()}");
}

static double Time(int count, Action body)
{
    var clock = Stopwatch.StartNew();
    body();
    return count / clock.Elapsed.TotalSeconds;
}

void Check(string image)
{
    var p = Process.Start(new ProcessStartInfo("xfs_repair", ["-n", image]) { RedirectStandardOutput = true, RedirectStandardError = true })!;
    p.StandardOutput.ReadToEnd();
    string err = p.StandardError.ReadToEnd();
    p.WaitForExit();
    if (p.ExitCode != 0) throw new InvalidOperationException($"xfs_repair -n {image} exit {p.ExitCode}: {err}");
}

static void Run(string file, params string[] arguments)
{
    using var p = Process.Start(new ProcessStartInfo(file, arguments) { RedirectStandardError = true })!;
    string err = p.StandardError.ReadToEnd();
    p.WaitForExit();
    if (p.ExitCode != 0) throw new InvalidOperationException($"{file} {string.Join(' ', arguments)}: exit {p.ExitCode}: {err}");
}

[StructLayout(LayoutKind.Sequential)]
struct FileCloneRange
{
    public nint SourceFd;
    public ulong SourceOffset;
    public ulong SourceLength;
    public ulong DestinationOffset;
}
