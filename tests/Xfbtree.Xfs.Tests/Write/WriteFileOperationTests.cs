using System.Text.Json;
using Xfbtree.Xfs.Format;
using Xfbtree.Xfs.Tests.Repair;
using Xfbtree.Xfs.Tests.Trees;
using Xfbtree.Xfs.Write;
using Xfbtree.Xfs.Write.Engine;
using Xfbtree.Xfs.Write.Files;

namespace Xfbtree.Xfs.Tests.Write;

/// <summary>A notable file of a fixture (from its manifest).</summary>
internal readonly record struct FixtureFile(ulong Ino, string Path);

/// <summary>The expected content of one file: its bytes (the size is the length).</summary>
internal sealed class FileModel
{
    public byte[] Data = [];

    public long Size => Data.LongLength;

    public void Resize(long size)
    {
        var d = Data;
        Array.Resize(ref d, checked((int)size));
        Data = d;
    }

    public void Write(long offset, byte[] bytes)
    {
        if (offset + bytes.Length > Size) Resize(offset + bytes.Length);
        bytes.CopyTo(Data, offset);
    }

    public void Zero(long offset, long length)
    {
        long end = Math.Min(Size, offset + length);
        if (end > offset) Array.Clear(Data, (int)offset, (int)(end - offset));
    }

    public void Extend(long end)
    {
        if (end > Size) Resize(end);
    }

    public void CopyFrom(FileModel src, long srcOffset, long dstOffset, long length)
    {
        var bytes = src.Data.AsSpan((int)srcOffset, (int)length).ToArray();
        Write(dstOffset, bytes);
    }
}

/// <summary>Shared pieces of the write-files tests: fixture files, engine opening, oracles (xfs_repair, rmap check, kernel).</summary>
internal static class WriteFileHarness
{
    public static readonly WriteEngineOptions Options = new() { SyncCommits = false, CheckLoggedRanges = true, CheckWriteAhead = true };

    public static Dictionary<string, FixtureFile> Manifest(string fixture)
    {
        string path = Path.Combine(TreeFixtures.FixtureDir, TreeFixtures.BaseName(fixture) + ".manifest.json");
        using var doc = JsonDocument.Parse(File.ReadAllText(path));
        var result = new Dictionary<string, FixtureFile>();
        foreach (var f in doc.RootElement.GetProperty("files").EnumerateObject())
            result[f.Name] = new FixtureFile(f.Value.GetProperty("ino").GetUInt64(), f.Value.GetProperty("path").GetString()!);
        return result;
    }

    /// <summary>Reads the whole file through the engine and compares it with the model.</summary>
    public static void AssertContent(FileOperations files, ulong ino, FileModel model, string what)
    {
        var buf = new byte[model.Size + 100];
        int n = files.Read(ino, 0, buf);
        Assert.True(n == model.Size, $"{what}: read {n} bytes, model has {model.Size}");
        int diff = FirstDifference(buf.AsSpan(0, n), model.Data);
        Assert.True(diff < 0, $"{what}: first difference at byte {diff}");
        // An unaligned read in the middle too.
        if (model.Size > 10)
        {
            long off = model.Size / 3 + 1;
            var part = new byte[Math.Min(9000, model.Size - off)];
            Assert.Equal(part.Length, files.Read(ino, off, part));
            Assert.True(part.AsSpan().SequenceEqual(model.Data.AsSpan((int)off, part.Length)), $"{what}: unaligned read differs");
        }
        Assert.Equal(0, files.Read(ino, model.Size, new byte[10]));
    }

    static int FirstDifference(ReadOnlySpan<byte> a, ReadOnlySpan<byte> b)
    {
        int n = Math.Min(a.Length, b.Length);
        for (int i = 0; i < n; i++) if (a[i] != b[i]) return i;
        return a.Length == b.Length ? -1 : n;
    }

    /// <summary>xfs_repair -n and xfbtree rmap check must both exit 0.</summary>
    public static void AssertClean(string image)
    {
        WriteEngineTestSupport.AssertOraclesClean(image, "after the engine closed");
    }

    /// <summary>The inode's raw fields after the engine closed (read through the read-only path).</summary>
    public static (ForkFormat Format, ulong Extents, ulong NBlocks, long Size, ulong Flags2) Stat(string image, ulong ino)
    {
        using var xfs = XfsImage.Open(image, WriteEngineTestSupport.EitherRmapbt);
        var geo = xfs.Geometry;
        var bytes = new byte[geo.InodeSize];
        using (var h = File.OpenHandle(image))
            Assert.Equal(bytes.Length, RandomAccess.Read(h, bytes, geo.InodeByteOffset(geo.InoToAgno(ino), geo.InoToAgino(ino))));
        var d = new Dinode(bytes);
        Assert.Null(d.Verify(xfs.Geometry, ino));
        return (d.Format, d.DataExtents, d.NBlocks, (long)d.Size, d.Flags2);
    }

    /// <summary>
    /// The kernel as the second oracle: loop-mounts the image read-only, compares each file with its model, unmounts.
    /// </summary>
    public static void AssertKernelReads(string image, IEnumerable<(string Path, FileModel Model)> files)
    {
        string mnt = Directory.CreateTempSubdirectory("xfbtree-wf-mnt-").FullName;
        // nouuid: other tests (in this process or others) may have a copy of the same fixture mounted.
        var mount = RepairTools.Exec("/bin/mount", ["-o", "ro,loop,nouuid", image, mnt]);
        Assert.True(mount.ExitCode == 0, $"mount: {mount}");
        try
        {
            foreach (var (path, model) in files)
            {
                byte[] got = File.ReadAllBytes(Path.Combine(mnt, path));
                Assert.True(got.Length == model.Size, $"kernel: {path} has {got.Length} bytes, model {model.Size}");
                Assert.True(got.AsSpan().SequenceEqual(model.Data), $"kernel: {path} differs from the model");
            }
        }
        finally
        {
            var umount = RepairTools.Exec("/bin/umount", [mnt]);
            try { Directory.Delete(mnt); } catch (IOException) { }
            Assert.True(umount.ExitCode == 0, $"umount: {umount}");
        }
    }

    /// <summary>scripts/kernel-workload.sh: the kernel mounts the image read-write, deletes a third of the files
    /// (freeing shared and btree-mapped blocks the engine wrote), writes and reflinks new ones, unmounts; no XFS
    /// error in the kernel log and xfs_repair -n clean afterwards.</summary>
    public static void AssertKernelWorkload(string image)
    {
        // A fresh sb_uuid (metadata keeps the old one through meta_uuid): the script mounts without nouuid, and
        // another copy of the same fixture may be mounted by a parallel test.
        var uuid = RepairTools.Exec(TreeFixtures.Tool("xfs_admin"), ["-U", "generate", image]);
        Assert.True(uuid.ExitCode == 0, $"xfs_admin -U generate: {uuid}");
        var workload = RepairTools.Exec(Path.Combine(RepairKernelTests.RepoRoot(), "scripts", "kernel-workload.sh"), [image]);
        Assert.True(workload.ExitCode == 0, $"kernel workload: {workload}");
    }

    public static byte[] Pattern(int length, int seed)
    {
        var b = new byte[length];
        new Random(seed).NextBytes(b);
        return b;
    }
}

/// <summary>Every file operation on real fixtures of three geometries, checked by the engine, xfs_repair, the rmap
/// check and the kernel.</summary>
public sealed class WriteFileOperationTests
{
    /// <summary>The fixtures of the operation tests; "-normap" ones are the same filesystems without an rmapbt
    /// (mkfs.xfs's default), which the engine writes without any rmap record.</summary>
    public static TheoryData<string> Fixtures => new() { "aged-small", "geom-bs1k", "geom-nrext64", "aged-small-normap", "geom-bs1k-normap" };

    /// <summary>
    /// Reads go straight into the caller's buffer run by run, with only unaligned edge blocks through scratch:
    /// reads of every alignment (inside one block, across block and run boundaries, over holes and unwritten
    /// extents, up to and past EOF) must return the model's bytes.
    /// </summary>
    [Theory]
    [InlineData("aged-small")]
    [InlineData("geom-bs1k")]
    public void ReadsOfEveryAlignmentMatchTheModel(string fixture)
    {
        using var scratch = new RepairScratch();
        string image = scratch.CopyFixture(fixture);
        var a = WriteFileHarness.Manifest(fixture)["prealloc"];
        var model = new FileModel();
        using var engine = WriteEngine.Open(image, WriteFileHarness.Options);
        var files = new FileOperations(engine);
        int bs = engine.Geometry.BlockSize;
        files.Truncate(a.Ino, 0);
        // Several runs (writes at separate offsets allocate separately), a hole, an unwritten stretch with a
        // written block inside it, and an unaligned EOF.
        Apply(files, model, a.Ino, Op.Write(0, WriteFileHarness.Pattern(5 * bs + 3, 11)));
        Apply(files, model, a.Ino, Op.Write(9L * bs + 1, WriteFileHarness.Pattern(4 * bs, 12)));
        Apply(files, model, a.Ino, Op.Fallocate(16L * bs, 6L * bs));
        Apply(files, model, a.Ino, Op.Write(18L * bs + 5, WriteFileHarness.Pattern(bs - 9, 13)));
        Apply(files, model, a.Ino, Op.Write(24L * bs, WriteFileHarness.Pattern(3 * bs + 77, 14)));
        Apply(files, model, a.Ino, Op.Write(2L * bs + 10, WriteFileHarness.Pattern(2 * bs, 15))); // overwrite across runs
        var rng = new Random(7);
        int checkedReads = 0;
        for (int i = 0; i < 600; i++)
        {
            long offset = i % 3 == 0 ? rng.NextInt64(model.Size / bs + 1) * bs : rng.NextInt64(model.Size + 2);
            int length = rng.Next(4) switch { 0 => rng.Next(1, bs), 1 => rng.Next(1, 3) * bs, _ => rng.Next(1, 8 * bs) };
            var buffer = new byte[length];
            rng.NextBytes(buffer); // stale bytes must be overwritten, zeros included
            int n = files.Read(a.Ino, offset, buffer);
            int expected = (int)Math.Clamp(model.Size - offset, 0, length);
            Assert.True(n == expected, $"read of {length} at {offset}: {n} bytes, expected {expected}");
            Assert.True(buffer.AsSpan(0, n).SequenceEqual(model.Data.AsSpan((int)Math.Min(offset, model.Size), n)), $"read of {length} at {offset} differs from the model");
            checkedReads++;
        }
        Assert.Equal(600, checkedReads);
        engine.Close();
    }

    [Theory]
    [MemberData(nameof(Fixtures))]
    public void EveryOperationLeavesACleanImageThatReadsBackAsWritten(string fixture)
    {
        using var scratch = new RepairScratch();
        string image = scratch.CopyFixture(fixture);
        var manifest = WriteFileHarness.Manifest(fixture);
        var a = manifest["prealloc"];
        var b = manifest["fragmented"];
        var c = manifest["frag_clone"];
        var models = new Dictionary<ulong, FileModel> { [a.Ino] = new(), [b.Ino] = new(), [c.Ino] = new() };
        int bs;
        using (var engine = WriteEngine.Open(image, WriteFileHarness.Options))
        {
            var files = new FileOperations(engine);
            bs = engine.Geometry.BlockSize;
            // Existing content: fixture data reads as zeros (metadumps carry no file data).
            foreach (var (ino, model) in models) model.Resize(ReadSize(files, ino));
            WriteFileHarness.AssertContent(files, b.Ino, models[b.Ino], "fragmented before");

            // a: truncate to 0, then writes (aligned, unaligned, past EOF), fallocate, write into unwritten, punch, truncate.
            files.Truncate(a.Ino, 0);
            models[a.Ino].Resize(0);
            Apply(files, models[a.Ino], a.Ino, Op.Write(0, WriteFileHarness.Pattern(3 * bs, 1)));
            Apply(files, models[a.Ino], a.Ino, Op.Write(bs / 2, WriteFileHarness.Pattern(bs, 2)));
            Apply(files, models[a.Ino], a.Ino, Op.Write(10L * bs + 7, WriteFileHarness.Pattern(2 * bs + 5, 3)));
            Apply(files, models[a.Ino], a.Ino, Op.Fallocate(20L * bs, 8L * bs));
            Apply(files, models[a.Ino], a.Ino, Op.Write(22L * bs + 100, WriteFileHarness.Pattern(bs, 4)));
            Apply(files, models[a.Ino], a.Ino, Op.Punch(bs + 5, 2L * bs));
            Apply(files, models[a.Ino], a.Ino, Op.Truncate(25L * bs + 33));
            Apply(files, models[a.Ino], a.Ino, Op.Write(30L * bs, WriteFileHarness.Pattern(100, 5)));
            Apply(files, models[a.Ino], a.Ino, Op.Truncate(40L * bs));
            Apply(files, models[a.Ino], a.Ino, Op.Truncate(12L * bs + 1));
            WriteFileHarness.AssertContent(files, a.Ino, models[a.Ino], "a");

            // b (btree format, shares blocks with c): CoW writes, punch, reflink from a, unshare.
            long bSize = models[b.Ino].Size;
            Apply(files, models[b.Ino], b.Ino, Op.Write(bs * 3 + 1, WriteFileHarness.Pattern(5 * bs, 6)));
            Apply(files, models[b.Ino], b.Ino, Op.Punch(bSize / 2, 4L * bs + 3));
            Apply(files, models[b.Ino], b.Ino, Op.Write(bSize + 2L * bs, WriteFileHarness.Pattern(bs, 7)));
            files.Reflink(a.Ino, 0, b.Ino, 8L * bs, 4L * bs);
            models[b.Ino].CopyFrom(models[a.Ino], 0, 8L * bs, 4L * bs);
            files.Reflink(b.Ino, 8L * bs, c.Ino, 0, 4L * bs);
            models[c.Ino].CopyFrom(models[b.Ino], 8L * bs, 0, 4L * bs);
            Apply(files, models[a.Ino], a.Ino, Op.Write(bs + 9, WriteFileHarness.Pattern(10, 8))); // CoW in a
            Apply(files, models[c.Ino], c.Ino, Op.Unshare(0, 2L * bs));
            Apply(files, models[c.Ino], c.Ino, Op.Write(0, WriteFileHarness.Pattern(3 * bs, 9)));
            Apply(files, models[b.Ino], b.Ino, Op.Truncate(9L * bs));
            foreach (var (ino, model) in models) WriteFileHarness.AssertContent(files, ino, model, $"inode {ino} before close");
            engine.Close();
        }
        WriteFileHarness.AssertClean(image);
        using (var engine = WriteEngine.Open(image, WriteFileHarness.Options))
        {
            var files = new FileOperations(engine);
            foreach (var (ino, model) in models) WriteFileHarness.AssertContent(files, ino, model, $"inode {ino} after reopen");
            engine.Close();
        }
        var statA = WriteFileHarness.Stat(image, a.Ino);
        Assert.Equal(models[a.Ino].Size, statA.Size);
        Assert.NotEqual(0UL, statA.Flags2 & Dinode.Flag2Reflink);
        WriteFileHarness.AssertKernelReads(image, [(a.Path, models[a.Ino]), (b.Path, models[b.Ino]), (c.Path, models[c.Ino])]);
    }

    internal static long ReadSize(FileOperations files, ulong ino)
    {
        // The size is where reading stops: probe with a large buffer in steps.
        long total = 0;
        var buf = new byte[1 << 20];
        while (true)
        {
            int n = files.Read(ino, total, buf);
            total += n;
            if (n < buf.Length) return total;
        }
    }

    internal abstract record Op
    {
        public static Op Write(long offset, byte[] data) => new WriteOp(offset, data);
        public static Op Fallocate(long offset, long length) => new FallocateOp(offset, length);
        public static Op Punch(long offset, long length) => new PunchOp(offset, length);
        public static Op Truncate(long size) => new TruncateOp(size);
        public static Op Unshare(long offset, long length) => new UnshareOp(offset, length);
    }

    internal sealed record WriteOp(long Offset, byte[] Data) : Op;
    internal sealed record FallocateOp(long Offset, long Length) : Op;
    internal sealed record PunchOp(long Offset, long Length) : Op;
    internal sealed record TruncateOp(long Size) : Op;
    internal sealed record UnshareOp(long Offset, long Length) : Op;

    /// <summary>Applies an operation to the engine and to the model.</summary>
    internal static void Apply(FileOperations files, FileModel model, ulong ino, Op op)
    {
        switch (op)
        {
            case WriteOp w:
                files.Write(ino, w.Offset, w.Data);
                model.Write(w.Offset, w.Data);
                break;
            case FallocateOp f:
                files.Fallocate(ino, f.Offset, f.Length);
                model.Extend(f.Offset + f.Length);
                break;
            case PunchOp p:
                files.PunchHole(ino, p.Offset, p.Length);
                model.Zero(p.Offset, p.Length);
                break;
            case TruncateOp t:
                files.Truncate(ino, t.Size);
                model.Resize(t.Size);
                break;
            case UnshareOp u:
                files.Unshare(ino, u.Offset, u.Length);
                break;
            default:
                throw new ArgumentException($"unknown op {op}", nameof(op));
        }
    }
}
