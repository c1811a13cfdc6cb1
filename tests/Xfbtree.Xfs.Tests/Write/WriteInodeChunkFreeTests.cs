using System.Globalization;
using System.Text;
using Xfbtree.Xfs.Format;
using Xfbtree.Xfs.Tests.Repair;
using Xfbtree.Xfs.Tests.Trees;
using Xfbtree.Xfs.Write;
using Xfbtree.Xfs.Write.Engine;
using Xfbtree.Xfs.Write.Namespace;
using Xunit.Abstractions;

namespace Xfbtree.Xfs.Tests.Write;

/// <summary>
/// Wholly free inode chunks are freed with their last inode, as the kernel does by default (`noikeep`): the engine
/// creates many files, a copy of the image goes to the kernel, then the engine and the kernel remove the same files
/// and must end with the same inode btrees (every record equal, AG by AG) and the same AGI counts; `xfs_repair -n`,
/// `xfbtree rmap check` and `xfbtree scrub` clean. On 64 KiB blocks (128 inodes a block) both keep the chunks.
/// A handle to an inode of a freed chunk stays stale when a new chunk reuses its number.
/// </summary>
public sealed class WriteInodeChunkFreeTests(ITestOutputHelper output)
{
    const string RemoveAllScript = """
import os, sys
top = sys.argv[1] + '/' + sys.argv[2]
for name in os.listdir(top):
    os.unlink(top + '/' + name)
os.rmdir(top)
os.sync()
""";

    [Theory]
    [InlineData("fresh-4ag", 700)]
    [InlineData("geom-bs1k", 700)]
    public void RemovingEveryFileFreesItsChunksAsTheKernelDoes(string fixture, int files)
    {
        KernelOracle.RequireRootAndTools();
        using var scratch = new RepairScratch();
        string image = scratch.CopyFixture(fixture);
        var before = InodeBtrees(image);
        CreateFiles(image, "/c", files);
        var created = InodeBtrees(image);
        Assert.True(created.Count > before.Count, $"{fixture}: {files} creates made no new inode chunk: nothing to free");
        string kernelImage = scratch.Copy(image, "kernel.img");

        long freed;
        using (var fs = XfsFileSystem.Open(image, WriteEngineTestSupport.Fast))
        {
            foreach (var entry in fs.List("/c")) fs.Unlink("/c/" + entry.Name);
            fs.Rmdir("/c");
            freed = fs.Namespace.ChunksFreed;
            WriteEngineTestSupport.AssertInvariants(fs.Engine, "after the removals");
            fs.Close();
        }
        AssertAllClean(image, fixture);
        KernelRun(scratch, kernelImage, RemoveAllScript, "c");
        var engineAfter = InodeBtrees(image);
        var kernelAfter = InodeBtrees(kernelImage);
        output.WriteLine($"{fixture}: inobt records {before.Count} -> {created.Count} after {files} creates -> engine {engineAfter.Count}, kernel {kernelAfter.Count} after the removals; the engine freed {freed} chunks");
        Assert.Equal(kernelAfter, engineAfter);
        Assert.Equal(before, engineAfter);
        Assert.Equal(created.Count(r => !r.Finobt) - before.Count(r => !r.Finobt), freed);
        Assert.Equal(AgiCounts(kernelImage), AgiCounts(image));
    }

    /// <summary>64 KiB blocks hold 128 inodes: a chunk shares its block with another, so neither the kernel nor the
    /// engine frees it (an image made by mkfs here).</summary>
    [Fact]
    public void SixtyFourKilobyteBlocksKeepTheirChunks()
    {
        KernelOracle.RequireRootAndTools();
        using var scratch = new RepairScratch();
        string image = Path.Combine(scratch.Directory, "bs64k.img");
        TreeFixtures.Run("/usr/bin/truncate", ["-s", "2G", image]);
        TreeFixtures.Run(TreeFixtures.Tool("mkfs.xfs"), ["-q", "-f", "-b", "size=65536", "-m", "crc=1,rmapbt=1,reflink=1,finobt=1", image]);
        CreateFiles(image, "/c", 300);
        var created = InodeBtrees(image);
        string kernelImage = scratch.Copy(image, "kernel.img");
        using (var fs = XfsFileSystem.Open(image, WriteEngineTestSupport.Fast))
        {
            foreach (var entry in fs.List("/c")) fs.Unlink("/c/" + entry.Name);
            fs.Rmdir("/c");
            Assert.Equal(0, fs.Namespace.ChunksFreed);
            fs.Close();
        }
        AssertAllClean(image, "64 KiB blocks");
        KernelRun(scratch, kernelImage, RemoveAllScript, "c");
        var engineAfter = InodeBtrees(image);
        Assert.Equal(created.Where(r => !r.Finobt).Select(r => r.StartIno), engineAfter.Where(r => !r.Finobt).Select(r => r.StartIno));
        Assert.Equal(InodeBtrees(kernelImage), engineAfter);
        Assert.Equal(AgiCounts(kernelImage), AgiCounts(image));
    }

    /// <summary>
    /// Sparse chunks are freed piece by piece (only their allocated blocks; holes stay free space that was never
    /// theirs): the engine fragments a one-AG image into 7-block holes (28 KiB and 32 KiB files in turn, the 28 KiB
    /// ones removed), creates until sparse pieces were made, then removes those files, as the kernel does on a copy.
    /// </summary>
    [Fact]
    public void SparseChunksAreFreedPieceByPiece()
    {
        KernelOracle.RequireRootAndTools();
        using var scratch = new RepairScratch();
        string image = Path.Combine(scratch.Directory, "sparse.img");
        RepairTools.MkfsSmall(image, 64L << 20, ["-d", "agcount=1", "-m", "rmapbt=1,reflink=1,finobt=1", "-i", "sparse=1,maxpct=100"]);
        int sparseMade;
        using (var fs = XfsFileSystem.Open(image, WriteEngineTestSupport.Fast))
        {
            fs.Mkdir("/frag");
            var small = new byte[28 << 10];
            var big = new byte[32 << 10];
            Array.Fill(small, (byte)0x5a);
            Array.Fill(big, (byte)0xa5);
            int n = 0;
            try
            {
                while (true)
                {
                    fs.Create($"/frag/s{n}");
                    fs.Write($"/frag/s{n}", 0, small);
                    fs.Create($"/frag/k{n}");
                    fs.Write($"/frag/k{n}", 0, big);
                    n++;
                }
            }
            catch (XfsWriteException e) when (e.Kind == WriteErrorKind.NoSpace)
            {
                output.WriteLine($"fragmenting: {n} pairs, then {e.Message}");
            }
            foreach (var entry in fs.List("/frag").Where(e => e.Name.StartsWith('s'))) fs.Unlink("/frag/" + entry.Name);
            output.WriteLine($"free extents after the removals: {FreeExtentShape(fs.Engine)}");
            fs.Mkdir("/c");
            int made = 0;
            for (; made < 20000 && fs.Namespace.SparsePieces.Elsewhere < 8; made++) fs.Create($"/c/{made}");
            sparseMade = (int)fs.Namespace.SparsePieces.Elsewhere;
            output.WriteLine($"{made} creates made {sparseMade} sparse pieces");
            fs.Close();
        }
        var created = InodeBtrees(image);
        int sparseRecords = created.Count(r => r.HoleMask != 0);
        Assert.True(sparseMade > 0 && sparseRecords > 0, $"no sparse inode piece was made ({sparseMade} pieces, {sparseRecords} sparse records): the AG was not fragmented enough to test");
        string kernelImage = scratch.Copy(image, "kernel.img");
        long freed;
        using (var fs = XfsFileSystem.Open(image, WriteEngineTestSupport.Fast))
        {
            foreach (var entry in fs.List("/c")) fs.Unlink("/c/" + entry.Name);
            fs.Rmdir("/c");
            freed = fs.Namespace.ChunksFreed;
            WriteEngineTestSupport.AssertInvariants(fs.Engine, "after the removals");
            fs.Close();
        }
        AssertAllClean(image, "sparse");
        KernelRun(scratch, kernelImage, RemoveAllScript, "c");
        var engineAfter = InodeBtrees(image);
        output.WriteLine($"sparse records {sparseRecords} of {created.Count} -> {engineAfter.Count(r => r.HoleMask != 0)} of {engineAfter.Count}; {freed} chunks freed");
        Assert.True(engineAfter.Count(r => r.HoleMask != 0) < sparseRecords, "no sparse chunk was freed");
        Assert.Equal(InodeBtrees(kernelImage), engineAfter);
        Assert.Equal(AgiCounts(kernelImage), AgiCounts(image));
        Assert.Equal(FreeExtents(kernelImage), FreeExtents(image));
    }

    /// <summary>
    /// A handle to an inode of a freed chunk answers ESTALE, and its number ENOENT (the blocks are free: nothing is
    /// read from them), also once a new chunk at the same place reuses the number: the new inode's generation is
    /// above every generation the freed chunk had (a random one, as a new chunk elsewhere gets, could match).
    /// </summary>
    [Fact]
    public void HandlesToAFreedChunkStayStaleWhenItsInodesAreReused()
    {
        using var scratch = new RepairScratch();
        string image = scratch.CopyFixture("fresh-4ag");
        using var fs = XfsFileSystem.Open(image, WriteEngineTestSupport.Fast);
        var ops = fs.Namespace;
        fs.Mkdir("/g");
        var handles = new List<InodeHandle>();
        for (int i = 0; i < 256; i++)
        {
            fs.Create($"/g/{i}");
            var a = fs.GetAttr($"/g/{i}");
            handles.Add(new InodeHandle(a.Ino, a.Generation));
        }
        for (int i = 0; i < 256; i++) fs.Unlink($"/g/{i}");
        Assert.True(ops.ChunksFreed > 0, "no chunk was freed");
        var last = handles[^1];
        GC.Collect();
        GC.WaitForPendingFinalizers();
        Assert.Equal(WriteErrorKind.Stale, Assert.Throws<XfsWriteException>(() => ops.GetAttr(last)).Kind);
        Assert.Equal(WriteErrorKind.NotFound, Assert.Throws<XfsWriteException>(() => ops.GetAttr(last.Ino)).Kind);

        var stale = handles.ToDictionary(h => h.Ino, h => h.Generation);
        int reused = 0;
        for (int i = 0; i < 256; i++)
        {
            fs.Create($"/g/n{i}");
            var a = fs.GetAttr($"/g/n{i}");
            if (!stale.TryGetValue(a.Ino, out uint old)) continue;
            reused++;
            Assert.True(a.Generation > old && a.Generation <= old + 2,
                $"inode {a.Ino} reused at generation {a.Generation}; the freed chunk had {old} in use, {old + 1} after the free");
            Assert.Equal(WriteErrorKind.Stale, Assert.Throws<XfsWriteException>(() => ops.GetAttr(new InodeHandle(a.Ino, old))).Kind);
        }
        output.WriteLine($"{ops.ChunksFreed} chunks freed, {reused} inode numbers of freed chunks reused");
        Assert.True(reused >= 64, $"only {reused} inode numbers of the freed chunks were reused");
        fs.Close();
        WriteEngineTestSupport.AssertOraclesClean(image, "after the reuse");
    }

    /// <summary>
    /// A crash (the k-th image or journal write never happens) in the transactions that free chunks, and around them:
    /// the reopened image holds exactly the removals that returned, or one more; the invariants hold and
    /// `xfs_repair -n` and `rmap check` are clean (a chunk half freed would show as an inobt record without its
    /// blocks, OWN_INODES without a record, or counts that disagree).
    /// </summary>
    [Fact]
    public void ACrashWhileAChunkIsFreedLeavesItWhollyFreedOrWhollyThere()
    {
        using var scratch = new RepairScratch();
        string original = scratch.CopyFixture("fresh-4ag");
        CreateFiles(original, "/c", 200);
        // Reference run: the writes each removal makes, and which removals freed a chunk.
        var counter = new WriteFaultInjector(int.MaxValue, () => { });
        var freeingWrites = new List<(int First, int Last)>();
        string reference = scratch.Copy(original, "reference.img");
        using (var fs = XfsFileSystem.Open(reference, WriteEngineTestSupport.Fast with { Faults = counter }))
        {
            for (int i = 0; i < 200; i++)
            {
                int before = counter.Writes;
                long chunks = fs.Namespace.ChunksFreed;
                fs.Unlink($"/c/f{i}");
                if (fs.Namespace.ChunksFreed != chunks) freeingWrites.Add((before + 1, counter.Writes));
            }
            fs.Close();
        }
        Assert.True(freeingWrites.Count >= 2, $"only {freeingWrites.Count} removals freed a chunk");
        var ks = new SortedSet<int>();
        foreach (var (first, last) in freeingWrites.Take(2))
            for (int k = first; k <= last; k++) ks.Add(k);
        int inFlight = 0;
        foreach (int k in ks)
        {
            string image = scratch.Copy(original, $"crash-{k}.img");
            var faults = new WriteFaultInjector(k, () => { });
            int returned = 0;
            XfsFileSystem? fs = null;
            try
            {
                fs = XfsFileSystem.Open(image, WriteEngineTestSupport.Fast with { Faults = faults });
                for (int i = 0; i < 200; i++)
                {
                    fs.Unlink($"/c/f{i}");
                    returned = i + 1;
                }
                fs.Close();
            }
            catch (Exception e) when (faults.Crashed && (e is SimulatedCrashException || e.InnerException is SimulatedCrashException || e is XfsWriteException))
            {
            }
            finally
            {
                fs?.Dispose();
            }
            Assert.True(faults.Crashed, $"k={k}: the crash point was never reached ({faults.Writes} writes)");
            using (var again = XfsFileSystem.Open(image, WriteEngineTestSupport.Fast))
            {
                int left = again.List("/c").Count;
                Assert.True(left == 200 - returned || left == 199 - returned, $"k={k}: {returned} removals returned, {left} files left");
                if (left == 199 - returned) inFlight++;
                WriteEngineTestSupport.AssertInvariants(again.Engine, $"k={k}");
                again.Close();
            }
            WriteEngineTestSupport.AssertOraclesClean(image, $"k={k}");
            File.Delete(image);
        }
        output.WriteLine($"{freeingWrites.Count} removals freed a chunk; {ks.Count} crash points in the first two of them; the removal in flight had reached the image {inFlight} times");
    }

    /// <summary>The retired-chunk table: ranges looked up at every chunk start that may overlap them, a partial reuse
    /// (a sparse piece) keeping the rest retired, generations kept at their highest, an off-alignment chunk.</summary>
    [Fact]
    public void RetiredChunksAnswerByRangeAndForgetWhatIsReused()
    {
        var table = new RetiredInodeChunks(alignmentInodes: 64, capacity: 2);
        Assert.False(table.IsRetired(70, out _));
        Assert.Null(table.HighestGeneration(0, 1024));
        table.Retire(64, ulong.MaxValue, 41);
        table.Retire(64, 0xF, 40); // again, lower: the highest stays
        Assert.True(table.IsRetired(64, out uint g) && g == 41);
        Assert.True(table.IsRetired(127, out _));
        Assert.False(table.IsRetired(128, out _));
        Assert.False(table.IsRetired(63, out _));
        Assert.Equal(41u, table.HighestGeneration(96, 8));
        Assert.Null(table.HighestGeneration(128, 64));
        table.Reuse(96, 32); // a sparse piece over the upper half
        Assert.False(table.IsRetired(100, out _));
        Assert.True(table.IsRetired(95, out _));
        Assert.Equal(41u, table.HighestGeneration(64, 64));
        Assert.True(table.HasRoom);
        table.Retire(256, 0xFFFF, 7);
        Assert.False(table.HasRoom);
        table.Reuse(64, 64);
        Assert.False(table.IsRetired(64, out _));
        Assert.Equal(1, table.Count);
        // A chunk off the alignment (an older layout): still found from every inode it had.
        table.Retire(1000, ulong.MaxValue, 9);
        Assert.True(table.IsRetired(1063, out g) && g == 9);
        Assert.False(table.IsRetired(1064, out _));
        Assert.Equal(9u, table.HighestGeneration(1024, 64));
    }

    /// <summary>Past <c>RetiredInodeChunkCapacity</c> an AG keeps its empty chunks (as ikeep) rather than lose the
    /// handle guarantee.</summary>
    [Fact]
    public void PastTheRetiredCapacityChunksAreKept()
    {
        using var scratch = new RepairScratch();
        string image = scratch.CopyFixture("fresh-4ag");
        using (var fs = XfsFileSystem.Open(image, WriteEngineTestSupport.Fast with { RetiredInodeChunkCapacity = 1 }))
        {
            fs.Mkdir("/k");
            for (int i = 0; i < 400; i++) fs.Create($"/k/{i}");
            for (int i = 0; i < 400; i++) fs.Unlink($"/k/{i}");
            Assert.Equal(1, fs.Namespace.ChunksFreed);
            fs.Close();
        }
        WriteEngineTestSupport.AssertOraclesClean(image, "capacity 1");
    }

    /// <summary>With KeepEmptyInodeChunks (ikeep) nothing is freed.</summary>
    [Fact]
    public void KeepEmptyInodeChunksKeepsThem()
    {
        using var scratch = new RepairScratch();
        string image = scratch.CopyFixture("fresh-4ag");
        using (var fs = XfsFileSystem.Open(image, WriteEngineTestSupport.Fast with { KeepEmptyInodeChunks = true }))
        {
            fs.Mkdir("/k");
            for (int i = 0; i < 200; i++) fs.Create($"/k/{i}");
            for (int i = 0; i < 200; i++) fs.Unlink($"/k/{i}");
            Assert.Equal(0, fs.Namespace.ChunksFreed);
            fs.Close();
        }
        WriteEngineTestSupport.AssertOraclesClean(image, "ikeep");
    }

    // ------------------------------------------------------------------ helpers

    static string FreeExtentShape(WriteEngine engine)
    {
        var lengths = new SortedDictionary<uint, int>();
        var bnobt = engine.Image.OpenBnobt(engine.Image.ReadAgf(0));
        using var cur = bnobt.CreateCursor();
        for (bool ok = cur.MoveFirst(); ok && cur.HasRecord; ok = cur.Increment())
        {
            uint len = System.Buffers.Binary.BinaryPrimitives.ReadUInt32BigEndian(cur.Current[4..]);
            lengths[len] = lengths.GetValueOrDefault(len) + 1;
        }
        return string.Join(", ", lengths.Select(kv => $"{kv.Value}x{kv.Key}"));
    }

    static void CreateFiles(string image, string dir, int files)
    {
        using var fs = XfsFileSystem.Open(image, WriteEngineTestSupport.Fast);
        fs.Mkdir(dir);
        for (int i = 0; i < files; i++) fs.Create($"{dir}/f{i}");
        fs.Close();
    }

    void AssertAllClean(string image, string when)
    {
        WriteEngineTestSupport.AssertOraclesClean(image, when);
        var scrub = RepairTools.Xfbtree("scrub", image);
        Assert.True(scrub.ExitCode == 0, $"{when}: xfbtree scrub: {scrub}");
    }

    /// <summary>Every inobt and finobt record of every AG, as (AG, tree, record).</summary>
    static List<(uint Ag, bool Finobt, uint StartIno, ushort HoleMask, uint Count, uint FreeCount, ulong Free)> InodeBtrees(string image)
    {
        using var img = XfsImage.Open(image);
        var result = new List<(uint, bool, uint, ushort, uint, uint, ulong)>();
        for (uint ag = 0; ag < img.Geometry.AgCount; ag++)
        {
            var agi = img.ReadAgi(ag);
            foreach (bool finobt in new[] { false, true })
            {
                if (finobt && !img.Superblock.HasFinobt) continue;
                var tree = img.OpenInobt(agi, finobt ? AgiTree.Finobt : AgiTree.Inobt);
                using var cur = tree.CreateCursor();
                for (bool ok = cur.MoveFirst(); ok && cur.HasRecord; ok = cur.Increment())
                {
                    var r = InobtRecord.Read(cur.Current, img.Superblock.HasSparseInodes);
                    result.Add((ag, finobt, r.StartIno, r.HoleMask, r.Count, r.FreeCount, r.Free));
                }
            }
        }
        return result;
    }

    /// <summary>agi_count and agi_freecount of every AG.</summary>
    static List<(uint Count, uint FreeCount)> AgiCounts(string image)
    {
        using var img = XfsImage.Open(image);
        var result = new List<(uint, uint)>();
        for (uint ag = 0; ag < img.Geometry.AgCount; ag++)
        {
            var agi = img.ReadAgi(ag);
            result.Add((agi.Count, agi.FreeCount));
        }
        return result;
    }

    /// <summary>The free extents of every AG (bnobt order).</summary>
    static string FreeExtents(string image)
    {
        using var img = XfsImage.Open(image);
        var text = new StringBuilder();
        for (uint ag = 0; ag < img.Geometry.AgCount; ag++)
        {
            var bnobt = img.OpenBnobt(img.ReadAgf(ag));
            using var cur = bnobt.CreateCursor();
            for (bool ok = cur.MoveFirst(); ok && cur.HasRecord; ok = cur.Increment())
            {
                var r = cur.Current;
                text.Append(CultureInfo.InvariantCulture, $"{ag}:{System.Buffers.Binary.BinaryPrimitives.ReadUInt32BigEndian(r)}+{System.Buffers.Binary.BinaryPrimitives.ReadUInt32BigEndian(r[4..])} ");
            }
        }
        return text.ToString();
    }

    static string KernelRun(RepairScratch scratch, string image, string python, params string[] args)
    {
        string mnt = Directory.CreateDirectory(Path.Combine(scratch.Directory, "mnt")).FullName;
        string script = Path.Combine(scratch.Directory, "run.py");
        File.WriteAllText(script, python);
        WriteNamespaceOperationTests.FreshUuid(image);
        TreeFixtures.Run("/bin/mount", ["-o", "loop,nouuid", image, mnt]);
        try
        {
            return TreeFixtures.Run("/usr/bin/python3", [script, mnt, .. args]);
        }
        finally
        {
            TreeFixtures.Run("/bin/umount", [mnt]);
        }
    }
}
