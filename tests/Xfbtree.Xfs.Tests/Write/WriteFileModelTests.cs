using Xfbtree.Xfs.Tests.Repair;
using Xfbtree.Xfs.Write;
using Xfbtree.Xfs.Write.Engine;
using Xfbtree.Xfs.Write.Files;

namespace Xfbtree.Xfs.Tests.Write;

/// <summary>
/// Randomized operations (write, fallocate, punch, truncate, same-file reflink, unshare) on two files from two
/// threads at once, each against a byte model of its file; the engine, xfs_repair, the rmap check and (once) the
/// kernel must agree with the models. XFBTREE_LONG_TESTS=1 runs more seeds and operations.
/// </summary>
public sealed class WriteFileModelTests
{
    static bool Long => Environment.GetEnvironmentVariable("XFBTREE_LONG_TESTS") == "1";

    public static TheoryData<string, int, bool> Cases()
    {
        var data = new TheoryData<string, int, bool> { { "aged-small", 1, false }, { "geom-bs1k", 2, false }, { "geom-nrext64", 3, false }, { "geom-bs1k", 4, true },
            { "aged-small-normap", 5, false }, { "geom-bs1k-normap", 6, true } };
        if (Long)
        {
            for (int seed = 10; seed < 20; seed++) data.Add(seed % 2 == 0 ? "aged-small" : "geom-bs1k", seed, seed % 3 == 0);
        }
        return data;
    }

    /// <param name="nearFull">Fill the filesystem first (a third file preallocated until NoSpace, then 96 blocks given
    /// back): operations then fail with NoSpace now and then, and a failed operation must change nothing.</param>
    [Theory]
    [MemberData(nameof(Cases))]
    public void TwoThreadsOnTwoFilesMatchTheirModels(string fixture, int seed, bool nearFull)
    {
        int ops = Long ? 1500 : nearFull ? 800 : 250;
        using var scratch = new RepairScratch();
        string image = scratch.CopyFixture(fixture);
        var manifest = WriteFileHarness.Manifest(fixture);
        var targets = new[] { manifest["prealloc"], manifest["fragmented"] };
        var models = targets.Select(_ => new FileModel()).ToArray();
        var stats = new RunStats();
        using (var engine = WriteEngine.Open(image, WriteFileHarness.Options))
        {
            var files = new FileOperations(engine);
            int bs = engine.Geometry.BlockSize;
            if (nearFull)
            {
                foreach (var t in targets) files.Truncate(t.Ino, 0);
                Fill(files, manifest["frag_clone"].Ino, bs);
            }
            var errors = new Exception?[targets.Length];
            var threads = new Thread[targets.Length];
            for (int t = 0; t < targets.Length; t++)
            {
                int index = t;
                threads[t] = new Thread(() =>
                {
                    try { RunOne(engine, files, targets[index].Ino, models[index], new Random(seed * 100 + index), ops, bs, stats); }
                    catch (Exception e) { errors[index] = e; }
                });
                threads[t].Start();
            }
            foreach (var th in threads) th.Join();
            foreach (var e in errors) if (e is not null) throw new InvalidOperationException($"thread failed: {e}", e);
            // The run covered what it claims: forks in btree format and back, and (near full) refused operations.
            if (nearFull)
            {
                Assert.True(stats.NoSpace > 0, "no operation met NoSpace");
            }
            else
            {
                Assert.True(stats.BtreeSeen > 0, "no fork reached btree format");
                Assert.True(stats.BackToExtents > 0, "no fork went back from btree to extents format");
            }
            for (int t = 0; t < targets.Length; t++) WriteFileHarness.AssertContent(files, targets[t].Ino, models[t], $"file {t}");
            engine.Close();
        }
        WriteFileHarness.AssertClean(image);
        using (var engine = WriteEngine.Open(image, WriteFileHarness.Options))
        {
            var files = new FileOperations(engine);
            for (int t = 0; t < targets.Length; t++) WriteFileHarness.AssertContent(files, targets[t].Ino, models[t], $"file {t} after reopen");
            engine.Close();
        }
        if (seed == 1) WriteFileHarness.AssertKernelReads(image, targets.Select((f, i) => (f.Path, models[i])));
    }

    sealed class RunStats
    {
        public int BtreeSeen, BackToExtents, NoSpace;
    }

    static void Fill(FileOperations files, ulong ino, int bs)
    {
        files.Truncate(ino, 0);
        long offset = 0;
        for (long chunk = 64L << 20; chunk >= bs;)
        {
            try
            {
                files.Fallocate(ino, offset, chunk);
                offset += chunk;
            }
            catch (XfsWriteException e) when (e.Kind == WriteErrorKind.NoSpace)
            {
                chunk /= 2;
            }
        }
        files.Truncate(ino, Math.Max(0, offset - 96L * bs));
    }

    static Xfbtree.Xfs.Format.ForkFormat Format(WriteEngine engine, ulong ino)
    {
        var inode = engine.GetInode(ino);
        using (engine.LockInodeForRead(inode)) return (Xfbtree.Xfs.Format.ForkFormat)inode.Core[5];
    }

    static void RunOne(WriteEngine engine, FileOperations files, ulong ino, FileModel model, Random rng, int ops, int bs, RunStats stats)
    {
        const long Span = 2L << 20;
        files.Truncate(ino, 0);
        model.Resize(0);
        bool wasBtree = false;
        for (int i = 0; i < ops; i++)
        {
            try
            {
                Step(files, ino, model, rng, bs, Span);
            }
            catch (XfsWriteException e) when (e.Kind == WriteErrorKind.NoSpace)
            {
                Interlocked.Increment(ref stats.NoSpace);
            }
            bool btree = Format(engine, ino) == Xfbtree.Xfs.Format.ForkFormat.Btree;
            if (btree && !wasBtree) Interlocked.Increment(ref stats.BtreeSeen);
            if (!btree && wasBtree) Interlocked.Increment(ref stats.BackToExtents);
            wasBtree = btree;
            if (i % 50 == 49) WriteFileHarness.AssertContent(files, ino, model, $"inode {ino} after {i + 1} operations");
        }
    }

    static void Step(FileOperations files, ulong ino, FileModel model, Random rng, int bs, long span)
    {
        {
            long off = rng.Next(4) == 0 ? rng.NextInt64(span / bs) * bs : rng.NextInt64(span);
            long len = rng.Next(3) == 0 ? rng.Next(1, 4) * bs : rng.Next(1, 3 * bs);
            switch (rng.Next(10))
            {
                case 0 or 1 or 2 or 3:
                    WriteFileOperationTests.Apply(files, model, ino, WriteFileOperationTests.Op.Write(off, WriteFileHarness.Pattern((int)len, rng.Next())));
                    break;
                case 4:
                    WriteFileOperationTests.Apply(files, model, ino, WriteFileOperationTests.Op.Fallocate(off, len));
                    break;
                case 5:
                    WriteFileOperationTests.Apply(files, model, ino, WriteFileOperationTests.Op.Punch(off, len));
                    break;
                case 6:
                    WriteFileOperationTests.Apply(files, model, ino, WriteFileOperationTests.Op.Truncate(rng.NextInt64(span)));
                    break;
                case 7 or 8:
                {
                    // Same-file reflink of whole blocks inside the file, ranges apart.
                    long blocks = model.Size / bs;
                    if (blocks < 2) break;
                    long n = rng.NextInt64(1, Math.Min(16, blocks) + 1);
                    long src = rng.NextInt64(0, blocks - n + 1) * bs;
                    long dst = rng.NextInt64(0, span / bs) * bs;
                    if (src < dst + n * bs && dst < src + n * bs) break;
                    files.Reflink(ino, src, ino, dst, n * bs);
                    model.CopyFrom(model, src, dst, n * bs);
                    break;
                }
                default:
                    WriteFileOperationTests.Apply(files, model, ino, WriteFileOperationTests.Op.Unshare(off, len));
                    break;
            }
        }
    }
}
