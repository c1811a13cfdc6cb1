using System.Diagnostics;
using Xfbtree.Btree;
using Xfbtree.Xfs.Format;
using Xfbtree.Xfs.Tests.Trees;

namespace Xfbtree.Xfs.Tests.Repair;

/// <summary>
/// Runs the real `xfbtree` command (the built xfbtree.dll next to the tests) and the real xfsprogs on private
/// copies of restored fixtures. Every copy lives in a per-test scratch directory removed on dispose.
/// </summary>
internal sealed class RepairScratch : IDisposable
{
    public RepairScratch()
    {
        Directory = System.IO.Directory.CreateTempSubdirectory("xfbtree-repair-").FullName;
    }

    public string Directory { get; }

    /// <summary>A sparse private copy of a restored fixture (or of any image).</summary>
    public string Copy(string source, string name)
    {
        string destination = Path.Combine(Directory, name);
        TreeFixtures.Run("/bin/cp", ["--sparse=always", source, destination]);
        return destination;
    }

    public string CopyFixture(string fixture) => Copy(TreeFixtures.Image(fixture), fixture + ".img");

    public void Dispose()
    {
        try { System.IO.Directory.Delete(Directory, recursive: true); }
        catch (IOException) { }
        catch (UnauthorizedAccessException) { }
    }
}

internal readonly record struct ToolResult(int ExitCode, string Stdout, string Stderr)
{
    public override string ToString() => $"exit {ExitCode}\nstdout:\n{Trim(Stdout)}\nstderr:\n{Trim(Stderr)}";
    static string Trim(string s) => s.Length > 4000 ? s[..4000] + "..." : s;
}

internal static class RepairTools
{
    /// <summary>Runs a program and returns its exit code and output (never throws on a non-zero exit).</summary>
    public static ToolResult Exec(string file, IEnumerable<string> args, IDictionary<string, string>? environment = null, int timeoutSeconds = 600, string? workingDirectory = null)
    {
        var psi = new ProcessStartInfo(file) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        if (workingDirectory is not null) psi.WorkingDirectory = workingDirectory;
        foreach (string a in args) psi.ArgumentList.Add(a);
        if (environment is not null)
        {
            foreach (var (k, v) in environment) psi.Environment[k] = v;
        }
        using var p = ChildProcesses.Start(psi);
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        if (!p.WaitForExit(timeoutSeconds * 1000))
        {
            p.Kill(entireProcessTree: true);
            throw new TimeoutException($"{file} {string.Join(' ', args)} did not finish in {timeoutSeconds} s");
        }
        p.WaitForExit();
        return new ToolResult(p.ExitCode, stdout.Result, stderr.Result);
    }

    /// <summary>The xfbtree command as built for this test run.</summary>
    public static ToolResult Xfbtree(IDictionary<string, string>? environment, params string[] args)
    {
        string dll = Path.Combine(AppContext.BaseDirectory, "xfbtree.dll");
        if (!File.Exists(dll)) throw new FileNotFoundException("xfbtree.dll is not next to the tests; build the solution", dll);
        return Exec("dotnet", new[] { dll }.Concat(args), environment);
    }

    public static ToolResult Xfbtree(params string[] args) => Xfbtree(null, args);

    /// <summary>xfs_repair -n; with <c>-o force_geometry</c> on a single-AG filesystem, which mkfs makes when asked
    /// (agcount=1, or its test-only small-filesystem override) but which xfs_repair refuses to check without it (it
    /// cannot confirm the geometry against a secondary superblock).</summary>
    public static ToolResult XfsRepairCheck(string image)
        => Exec(TreeFixtures.Tool("xfs_repair"), SingleAg(image) ? ["-n", "-o", "force_geometry", image] : ["-n", image]);

    /// <summary>True when the primary superblock says agcount 1.</summary>
    public static bool SingleAg(string image)
    {
        Span<byte> sb = stackalloc byte[512];
        using (var f = File.OpenRead(image))
        {
            if (f.Read(sb) < 512) return false;
        }
        return System.Buffers.Binary.BinaryPrimitives.ReadUInt32BigEndian(sb[88..]) == 1;
    }

    /// <summary>mkfs.xfs with the environment of its test-only override (TEST_DIR, TEST_DEV, QA_CHECK_FS), which
    /// lets it make filesystems below 300 MB, as xfstests does; the image file is created at <paramref name="size"/>.</summary>
    public static void MkfsSmall(string image, long size, params string[] options)
    {
        using (var f = File.Create(image)) f.SetLength(size);
        var env = new Dictionary<string, string>
        {
            ["TEST_DIR"] = Path.GetDirectoryName(image)!, ["TEST_DEV"] = image, ["QA_CHECK_FS"] = "1",
        };
        var run = Exec(TreeFixtures.Tool("mkfs.xfs"), new[] { "-q", "-f" }.Concat(options).Append(image), env);
        if (run.ExitCode != 0) throw new InvalidOperationException($"mkfs.xfs {string.Join(' ', options)}: {run}");
    }

    public static ToolResult XfsRepair(string image) => Exec(TreeFixtures.Tool("xfs_repair"), [image]);

    /// <summary>
    /// Damages the rmapbt of AG <paramref name="ag"/> with <see cref="RmapCorruptor"/> (in process): exit 0 and what
    /// changed on stdout, or exit 1 and why the kind cannot apply on stderr (the image then is unchanged).
    /// </summary>
    public static ToolResult Corrupt(string image, string kind, int seed = 1, int ag = 0)
    {
        try
        {
            return new ToolResult(0, RmapCorruptor.Apply(image, kind, seed, (uint)ag) + "\n", "");
        }
        catch (InvalidOperationException e)
        {
            return new ToolResult(1, "", e.Message + "\n");
        }
    }

    /// <summary>The 19 kinds the check and repair matrices run; a check test asserts it equals what the injector offers.</summary>
    public static readonly IReadOnlyList<string> AllCorruptionKinds =
    [
        "rec-startblock", "rec-blockcount", "rec-owner", "rec-offset", "rec-flags", "rec-missing", "rec-extra",
        "rec-extra-free", "rec-swap", "leaf-zero", "leaf-crc", "leaf-magic", "leaf-numrecs", "leaf-sibling",
        "node-key", "node-ptr", "agf-root", "agf-level", "agf-blocks",
    ];

    public static IReadOnlyList<string> CorruptionKinds() => RmapCorruptor.Kinds.Select(k => k.Kind).ToList();

    /// <summary>
    /// Byte ranges [start, end) of the two files that differ, at <paramref name="granularity"/>. Only the data
    /// segments of either file are read (SEEK_DATA/SEEK_HOLE): restored metadumps are mostly holes.
    /// </summary>
    public static List<(long Start, long End)> DifferingRanges(string a, string b, int granularity)
    {
        using var fa = File.OpenHandle(a);
        using var fb = File.OpenHandle(b);
        long length = Math.Max(RandomAccess.GetLength(fa), RandomAccess.GetLength(fb));
        var segments = DataSegments(fa, length);
        segments.AddRange(DataSegments(fb, length));
        segments.Sort();
        var result = new List<(long, long)>();
        const int chunk = 1 << 20;
        var ba = new byte[chunk];
        var bb = new byte[chunk];
        long done = 0;
        foreach (var (segStart, segEnd) in segments)
        {
            long from = Math.Max(segStart / granularity * granularity, done);
            for (long off = from; off < segEnd; off += chunk)
            {
                int want = (int)Math.Min(chunk, length - off);
                if (want <= 0) break;
                done = off + want;
                int na = ReadFully(fa, ba.AsSpan(0, want), off), nb = ReadFully(fb, bb.AsSpan(0, want), off);
                Array.Clear(ba, na, want - na);
                Array.Clear(bb, nb, want - nb);
                if (ba.AsSpan(0, want).SequenceEqual(bb.AsSpan(0, want))) continue;
                for (int g = 0; g < want; g += granularity)
                {
                    int n = Math.Min(granularity, want - g);
                    if (!ba.AsSpan(g, n).SequenceEqual(bb.AsSpan(g, n)))
                    {
                        result.Add((off + g, off + g + n));
                    }
                }
            }
        }
        return result;
    }

    const int SeekData = 3, SeekHole = 4, ENXIO = 6;

    [System.Runtime.InteropServices.DllImport("libc", SetLastError = true)]
    static extern long lseek(int fd, long offset, int whence);

    /// <summary>
    /// The data segments of a file; the whole file where SEEK_DATA is not supported. Only ENXIO ("no data past
    /// here") ends the list: any other lseek error throws, so a comparison never passes without comparing.
    /// </summary>
    static List<(long, long)> DataSegments(Microsoft.Win32.SafeHandles.SafeFileHandle h, long length)
    {
        var list = new List<(long, long)>();
        if (!OperatingSystem.IsLinux())
        {
            list.Add((0, length));
            return list;
        }
        int fd = (int)h.DangerousGetHandle();
        long pos = 0;
        while (pos < length)
        {
            long data = lseek(fd, pos, SeekData);
            if (data < 0)
            {
                int errno = System.Runtime.InteropServices.Marshal.GetLastPInvokeError();
                if (errno == ENXIO) break;
                throw new IOException($"lseek(SEEK_DATA, {pos}) failed: errno {errno}");
            }
            long hole = lseek(fd, data, SeekHole);
            if (hole < 0) throw new IOException($"lseek(SEEK_HOLE, {data}) failed: errno {System.Runtime.InteropServices.Marshal.GetLastPInvokeError()}");
            list.Add((data, hole));
            pos = hole;
        }
        return list;
    }

    static int ReadFully(Microsoft.Win32.SafeHandles.SafeFileHandle h, Span<byte> buffer, long offset)
    {
        int total = 0;
        while (total < buffer.Length)
        {
            int n = RandomAccess.Read(h, buffer[total..], offset + total);
            if (n <= 0) break;
            total += n;
        }
        return total;
    }

    /// <summary>
    /// Byte ranges a rebuild of the given AGs' rmapbts may change, derived from the ORIGINAL undamaged image (never from
    /// the repaired one, whose own tree would vouch for itself): the primary superblock sector, each AG's header
    /// sectors, and the blocks the rebuild may take, which are the old rmapbt blocks and the AGFL blocks (the planner
    /// reuses the old tree's blocks and puts the surplus on the AGFL). The damage kinds edit blocks in place, so
    /// the original's tree occupies the same blocks as the damaged one.
    /// </summary>
    public static List<(long Start, long End)> RebuiltMetadata(string original, IEnumerable<uint> agnos)
    {
        using var xfs = XfsImage.Open(original);
        var geo = xfs.Geometry;
        var ranges = new List<(long, long)> { (0, geo.SectorSize) };
        foreach (uint agno in agnos)
        {
            long agStart = geo.AgBlockToByte(agno, 0);
            ranges.Add((agStart, agStart + 4L * geo.SectorSize));
            Agf agf = xfs.ReadAgf(agno);
            foreach (uint b in xfs.ReadAgfl(agno, agf).Blocks)
            {
                ranges.Add((geo.AgBlockToByte(agno, b), geo.AgBlockToByte(agno, b) + geo.BlockSize));
            }
            var collector = new BlockRangeCollector(geo, agno, ranges);
            using var cursor = xfs.OpenRmapbt(agf).CreateCursor();
            cursor.VisitBlocks(ref collector);
        }
        return ranges;
    }

    /// <summary>The AGs a repair's plan names (its "AG N: rebuilding the rmapbt" / "would rebuild" lines).</summary>
    public static List<uint> PlannedAgs(string repairStdout)
    {
        var ags = new List<uint>();
        foreach (string line in repairStdout.Split('\n'))
        {
            var m = System.Text.RegularExpressions.Regex.Match(line, @"^AG (\d+): (rebuilding|would rebuild) the rmapbt");
            if (m.Success) ags.Add(uint.Parse(m.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture));
        }
        return ags;
    }

    struct BlockRangeCollector(XfsGeometry geo, uint agno, List<(long, long)> ranges) : IBtreeBlockVisitor
    {
        public void Visit(int level, long pointer, ReadOnlySpan<byte> block)
            => ranges.Add((geo.AgBlockToByte(agno, (uint)pointer), geo.AgBlockToByte(agno, (uint)pointer) + geo.BlockSize));
    }

    /// <summary>Differing ranges of <paramref name="before"/> and <paramref name="after"/> not inside any allowed range.</summary>
    public static List<(long Start, long End)> ChangesOutside(string before, string after, IReadOnlyList<(long Start, long End)> allowed, int granularity)
    {
        var outside = new List<(long, long)>();
        foreach (var (s, e) in DifferingRanges(before, after, granularity))
        {
            bool covered = false;
            foreach (var (a, b) in allowed)
            {
                if (s >= a && e <= b) { covered = true; break; }
            }
            if (!covered) outside.Add((s, e));
        }
        return outside;
    }
}
