using System.Buffers.Binary;
using System.Globalization;
using Xfbtree.Xfs.Format;
using Xfbtree.Xfs.Tests.Repair;
using Xfbtree.Xfs.Tests.Trees;
using Xfbtree.Xfs.Write;
using Xfbtree.Xfs.Write.Engine;
using Xunit.Abstractions;

namespace Xfbtree.Xfs.Tests.Write;

/// <summary>
/// Inode allocation on an AG whose free space the kernel fragmented so that no aligned full chunk fits: with
/// sparse inodes (`-i sparse=1`, the mkfs default) the engine allocates cluster-sized pieces as the kernel does;
/// without them it reports ENOSPC once the full chunks are used up. Oracles: the engine stops only where a kernel
/// rule stops it (the inode share sb_imax_pct, or no free extent passing the space rule for a piece or chunk), and
/// creates at least as many inodes as the kernel on a copy (the kernel's own count varies from run to run by its
/// placement: it leaves 1-3 block fragments beside its pieces); each run ends with `xfs_repair -n` 0, `rmap check`
/// 0 and the kernel listing every name the engine made.
/// </summary>
public sealed class WriteInodeSparseChunkTests(ITestOutputHelper output)
{
    /// <summary>Directories and files per directory of the create sequence: every directory stays shortform (two-character
    /// names), so creates take no directory blocks and the count depends only on inode allocation.</summary>
    const int Fan = 32;

    /// <summary>Top-level directories: the root outgrows shortform (one directory block, for engine and kernel alike).</summary>
    const int TopFan = 64;

    /// <summary>Creates after the 32 KiB files are removed: their 797 inodes, full chunks in the few free extents that
    /// now hold one, then pieces into holes.</summary>
    const int RefillCreates = 8192;

    /// <summary>Kernel: 28 KiB and 32 KiB files in turn until ENOSPC, then the 28 KiB ones removed: free space left in
    /// 7-block holes (4 KiB blocks), where no 8-block chunk fits at any alignment but one 4-block piece aligned to 4
    /// always does (the space rule wants the longest extent to hold length + alignment - 1 = 7 blocks). What the
    /// kernel's reserves kept free at the end is one longer extent, which takes full chunks first.</summary>
    const string FragmentScript = """
import os, sys, errno
mnt = sys.argv[1]
os.mkdir(mnt + '/frag')
small, big = 28 << 10, 32 << 10
smalls = []
i = 0
try:
    while True:
        for size, keep in ((small, False), (big, True)):
            p = '%s/frag/%s%d' % (mnt, 'k' if keep else 's', i)
            i += 1
            fd = os.open(p, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            if not keep: smalls.append(p)
            try:
                os.write(fd, b'\x5a' * size)
                os.fsync(fd)
            finally:
                os.close(fd)
except OSError as e:
    if e.errno != errno.ENOSPC: raise
for p in smalls: os.unlink(p)
os.sync()
print(len(smalls))
""";

    /// <summary>Kernel: the create sequence until the first ENOSPC; prints "ENOSPC n" or "DONE n".</summary>
    const string CreateScript = """
import os, sys, errno
mnt, top, fan = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
n = 0
try:
    for a in range(top):
        pa = '%s/%d' % (mnt, a); os.mkdir(pa); n += 1
        for b in range(fan):
            pb = '%s/%d' % (pa, b); os.mkdir(pb); n += 1
            for f in range(fan):
                os.close(os.open('%s/%d' % (pb, f), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)); n += 1
except OSError as e:
    if e.errno != errno.ENOSPC: raise
    print('ENOSPC %d' % n); sys.exit(0)
print('DONE %d' % n)
""";

    [Fact]
    public void SparseChunksCreateAsManyInodesAsTheKernelOnAFragmentedAg()
    {
        // maxpct=100: inodes may take every block, so the run ends where no piece fits any more.
        var (engine, kernel, sparseRecords) = FragmentAndCreate("sparse1", ["-i", "sparse=1,maxpct=100"], fillHoles: true);
        Assert.True(sparseRecords > 0, "the engine made no sparse inode record: the AG was not fragmented enough to test them");
        Assert.True(engine >= kernel, $"the engine created {engine} inodes where the kernel created {kernel}");
    }

    [Fact]
    public void WithoutSparseInodesTheEngineRunsOutWhereTheKernelDoes()
    {
        var (engine, kernel, sparseRecords) = FragmentAndCreate("sparse0", ["-i", "sparse=0"], fillHoles: false);
        Assert.Equal(0, sparseRecords);
        Assert.True(engine >= kernel, $"the engine created {engine} inodes where the kernel created {kernel}");
    }

    /// <summary>The record of a piece, merges and holes (the shared decoder's rules).</summary>
    [Fact]
    public void SparseRecordsMergeAndReportTheirHoles()
    {
        var upper = InobtRecord.ForSparsePiece(64 + 32, 32);
        Assert.Equal(64u, upper.StartIno);
        Assert.Equal((ushort)0x00FF, upper.HoleMask);
        Assert.Equal(32u, upper.Count);
        Assert.Equal(32u, upper.FreeCount);
        Assert.True(upper.CountsConsistent);
        Assert.Equal(0, upper.NextHolePiece(32));
        Assert.Equal(-1, upper.NextHolePiece(32, 1));
        var lowerUsed = InobtRecord.ForSparsePiece(64, 32) with { Free = ~1UL, FreeCount = 31 };
        Assert.True(lowerUsed.CanMerge(upper));
        var merged = lowerUsed.Merge(upper);
        Assert.Equal(new InobtRecord(64, 0, 64, 63, ~1UL), merged);
        Assert.True(merged.CountsConsistent);
        Assert.False(merged.CanMerge(upper));
        Assert.False(upper.CanMerge(upper));
        Assert.Throws<ArgumentException>(() => InobtRecord.ForSparsePiece(62, 4));
        Assert.Throws<ArgumentException>(() => InobtRecord.ForSparsePiece(48, 32));
    }

    /// <summary>Fragments a 64 MiB one-AG image through the kernel, creates until NoSpace through the engine and on a
    /// copy through the kernel. With <paramref name="fillHoles"/>, the engine then removes the kernel's 32 KiB files
    /// (freeing the blocks beside its pieces, in free extents too short for a full chunk) and creates again: pieces
    /// now go into the holes of its sparse records, which merge into full ones.</summary>
    (long Engine, long Kernel, int SparseRecords) FragmentAndCreate(string name, string[] inodeOptions, bool fillHoles)
    {
        KernelOracle.RequireRootAndTools();
        using var scratch = new RepairScratch();
        string image = Path.Combine(scratch.Directory, name + ".img");
        RepairTools.MkfsSmall(image, 64L << 20, ["-d", "agcount=1", "-m", "rmapbt=1,reflink=1,finobt=1", .. inodeOptions]);
        string removed = KernelRun(scratch, image, FragmentScript).Trim();
        output.WriteLine($"{name}: the kernel removed {removed} small files; free extents: {FreeExtentShape(image)}");
        string kernelImage = scratch.Copy(image, "kernel.img");

        long engineCount = 0, reserved;
        XfsWriteException? stop = null;
        using (var fs = XfsFileSystem.Open(image, WriteEngineTestSupport.Fast))
        {
            try
            {
                for (int a = 0; a < TopFan; a++)
                {
                    fs.Mkdir($"/{a}");
                    engineCount++;
                    for (int b = 0; b < Fan; b++)
                    {
                        fs.Mkdir($"/{a}/{b}");
                        engineCount++;
                        for (int f = 0; f < Fan; f++)
                        {
                            fs.Create($"/{a}/{b}/{f}");
                            engineCount++;
                        }
                    }
                }
            }
            catch (XfsWriteException e) when (e.Kind == WriteErrorKind.NoSpace)
            {
                stop = e;
            }
            WriteEngineTestSupport.AssertInvariants(fs.Engine, "after the creates");
            reserved = fs.Engine.Ag(0).PublishedReserve(AllocationPurpose.InodeChunk);
            fs.Close();
        }
        Assert.True(stop is not null, $"{name}: {engineCount} creates never ran out of inodes: the AG was not filled enough to test");
        output.WriteLine($"{name}: the engine stopped after {engineCount} creates: {stop!.Message}");
        var (sparseRecords, fullRecords) = RecordCounts(image);
        AssertStoppedByAKernelRule(image, stop, reserved);
        WriteEngineTestSupport.AssertOraclesClean(image, $"{name} after the engine's creates");
        if (fillHoles)
        {
            uint longestAfterRemoval, fullChunkNeeds;
            (long IntoHoles, long Elsewhere) pieces;
            long refilled = 0;
            using (var fs = XfsFileSystem.Open(image, WriteEngineTestSupport.Fast))
            {
                foreach (var entry in fs.List("/frag").Where(e => e.Name.StartsWith('k')))
                {
                    fs.Unlink("/frag/" + entry.Name);
                }
                longestAfterRemoval = fs.Engine.Ag(0).Longest;
                fullChunkNeeds = (uint)fs.Engine.Geometry.InodeChunkBlocks + fs.Engine.Geometry.Superblock.InodeAlignment - 1;
                // The freed inodes first, then new pieces: enough of them to fill holes (bounded, for the suite's time).
                for (; refilled < RefillCreates; refilled++)
                {
                    fs.Create($"/frag/r{refilled}");
                }
                pieces = fs.Namespace.SparsePieces;
                WriteEngineTestSupport.AssertInvariants(fs.Engine, "after refilling");
                fs.Close();
            }
            var (sparseAfter, fullAfter) = RecordCounts(image);
            output.WriteLine($"{name}: after removing the 32 KiB files (longest free extent {longestAfterRemoval} blocks) the engine created {refilled} more: sparse records {sparseRecords} -> {sparseAfter}, full {fullRecords} -> {fullAfter}");
            output.WriteLine($"{name}: refill pieces: {pieces.IntoHoles} into holes of existing records, {pieces.Elsewhere} elsewhere");
            Assert.True(pieces.IntoHoles > 0, "no piece went into a hole of an existing sparse record");
            // Chunks are never freed, so a sparse record can only leave by being completed: a piece put into its hole.
            Assert.True(sparseAfter < sparseRecords, $"no sparse record was completed by filling its hole (free extents up to {longestAfterRemoval} blocks, a full chunk needs {fullChunkNeeds})");
            WriteEngineTestSupport.AssertOraclesClean(image, $"{name} after filling holes");
        }

        string kernelSays = KernelRun(scratch, kernelImage, CreateScript, TopFan.ToString(CultureInfo.InvariantCulture), Fan.ToString(CultureInfo.InvariantCulture)).Trim();
        output.WriteLine($"{name}: kernel: {kernelSays}; engine: {engineCount} ({sparseRecords} sparse inobt records)");
        Assert.StartsWith("ENOSPC ", kernelSays, StringComparison.Ordinal);
        long kernelCount = long.Parse(kernelSays["ENOSPC ".Length..], CultureInfo.InvariantCulture);

        // The kernel reads back every name the engine made.
        string listed = KernelRun(scratch, image, "import os, sys\nprint(sum(len(d) + len(f) for _, d, f in os.walk(sys.argv[1])) - sum(1 for _ in os.scandir(sys.argv[1] + '/frag')) - 1)\n").Trim();
        Assert.Equal(engineCount.ToString(CultureInfo.InvariantCulture), listed);
        return (engineCount, kernelCount, sparseRecords);
    }

    /// <summary>The engine's NoSpace must be one the kernel's rules give: the next chunk would pass sb_imax_pct of the
    /// data blocks (maxicount), or no free extent passes the space rule (longest extent at least length + alignment
    /// - 1) for a full chunk nor, with sparse inodes, for a cluster-sized piece, or the AG's free blocks are within
    /// <paramref name="reserved"/> (what an inode chunk must leave) of that length.</summary>
    static void AssertStoppedByAKernelRule(string image, XfsWriteException stop, long reserved)
    {
        using var img = XfsImage.Open(image);
        var sb = img.Superblock;
        var geo = img.Geometry;
        ulong chunkBlocks = (ulong)geo.InodeChunkBlocks;
        ulong maxInodes = (sb.DataBlocks * sb.InodeMaxPercent / 100 / chunkBlocks * chunkBlocks) << geo.InodesPerBlockLog;
        ulong icount = img.ReadAgi(0).Count;
        if (stop.Message.Contains("% of the data blocks", StringComparison.Ordinal))
        {
            Assert.True(icount + InobtRecord.InodesPerChunk > maxInodes, $"NoSpace for the inode share with {icount} of {maxInodes} inodes");
            return;
        }
        var agf = img.ReadAgf(0);
        // The blocks an inode chunk must leave in the AG: the per-AG pools and the share of the kernel's global
        // reserves (the engine's figure, which WriteSpaceKernelReservationTests holds against the kernel's mounts).
        // xfs_alloc_longest_free_extent takes what the reservations lack outside the longest extent from it: with
        // free blocks less the reservations under the length the space rule wants, no piece may be taken anywhere.
        long available = (long)agf.FreeBlocks - reserved;
        ulong pieceOrChunk = sb.HasSparseInodes ? 2UL * sb.SparseInodeAlignment - 1 : chunkBlocks + Math.Max(1u, sb.InodeAlignment) - 1;
        if (available < (long)pieceOrChunk) return;
        uint longest = agf.Longest;
        ulong fullNeeds = chunkBlocks + Math.Max(1u, sb.InodeAlignment) - 1;
        Assert.True(longest < fullNeeds, $"NoSpace with a free extent of {longest} blocks ({agf.FreeBlocks} free), where a chunk needs {fullNeeds}");
        if (sb.HasSparseInodes)
        {
            ulong pieceNeeds = 2UL * sb.SparseInodeAlignment - 1;
            Assert.True(longest < pieceNeeds, $"NoSpace with a free extent of {longest} blocks ({agf.FreeBlocks} free), where a sparse piece needs {pieceNeeds}");
        }
    }

    /// <summary>Runs a Python script on the image mounted read-write by the kernel (loop, nouuid); its stdout.</summary>
    static string KernelRun(RepairScratch scratch, string image, string python, params string[] args)
    {
        string mnt = Directory.CreateDirectory(Path.Combine(scratch.Directory, "mnt")).FullName;
        string script = Path.Combine(scratch.Directory, "run.py");
        File.WriteAllText(script, python);
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

    /// <summary>Inobt records of AG 0 with holes, and without (each checked for counts that agree with its masks).</summary>
    static (int Sparse, int Full) RecordCounts(string image)
    {
        using var img = XfsImage.Open(image);
        var inobt = img.OpenInobt(img.ReadAgi(0), AgiTree.Inobt);
        int sparse = 0, full = 0;
        using var cur = inobt.CreateCursor();
        for (bool ok = cur.MoveFirst(); ok && cur.HasRecord; ok = cur.Increment())
        {
            var rec = InobtRecord.Read(cur.Current, img.Superblock.HasSparseInodes);
            Assert.True(rec.CountsConsistent, $"inobt record {rec} counts disagree with its masks");
            if (rec.HoleMask != 0) sparse++;
            else full++;
        }
        return (sparse, full);
    }

    /// <summary>"N extents, longest L, S of 7 blocks, K of 8 blocks or more" for AG 0 (what the fragmentation left).</summary>
    static string FreeExtentShape(string image)
    {
        using var img = XfsImage.Open(image);
        var agf = img.ReadAgf(0);
        var bnobt = img.OpenBnobt(agf);
        int extents = 0, eightOrMore = 0, sevens = 0;
        uint longest = 0;
        using var cur = bnobt.CreateCursor();
        for (bool ok = cur.MoveFirst(); ok && cur.HasRecord; ok = cur.Increment())
        {
            uint len = BinaryPrimitives.ReadUInt32BigEndian(cur.Current[4..]);
            extents++;
            longest = Math.Max(longest, len);
            if (len >= 8) eightOrMore++;
            if (len == 7) sevens++;
        }
        return string.Create(CultureInfo.InvariantCulture, $"{extents} extents, longest {longest}, {sevens} of 7 blocks, {eightOrMore} of 8 blocks or more, freeblks {agf.FreeBlocks}");
    }
}
