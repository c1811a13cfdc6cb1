using Xfbtree.Xfs.Tests.Repair;
using Xfbtree.Xfs.Write;
using Xfbtree.Xfs.Write.Engine;
using Xfbtree.Xfs.Write.Files;
using Xunit.Abstractions;
using static Xfbtree.Xfs.Tests.Write.WriteEngineTestSupport;

namespace Xfbtree.Xfs.Tests.Write;

/// <summary>
/// A truncate down sets the size first and frees the blocks past it in bounded steps: a crash between the steps
/// leaves written blocks, with their old data, past the new EOF. Whatever later grows the size over them (a write
/// far past EOF, a truncate up, fallocate, a reflink that extends, insert range) must show zeros there, as the
/// kernel zeroes the whole gap [old EOF, new offset). Judged through the engine, a read-only kernel mount,
/// xfs_repair -n and the rmap check.
/// </summary>
public sealed class WriteFilePastEofCrashTests(ITestOutputHelper output)
{
    const int Extents = 40;
    const long CutBlocks = 10;

    sealed class SimulatedCrash() : Exception("simulated crash between two steps");

    [Theory]
    [InlineData("write", false)]
    [InlineData("write", true)]
    [InlineData("truncate", false)]
    [InlineData("truncate", true)]
    [InlineData("fallocate", false)]
    [InlineData("reflink", false)]
    [InlineData("insert", false)]
    public void GrowingOverBlocksACrashedTruncateLeftPastEof_ShowsZeros(string grow, bool shared)
    {
        using var scratch = new RepairScratch();
        string image = scratch.CopyFixture("fresh-4ag");
        var (model, copy, bs, _) = CrashTruncateAfterItsFirstStep(image, shared);

        int insertSteps = 0;
        var options = WriteFileHarness.Options with
        {
            StepPieces = 4,
            StepCommitted = op =>
            {
                // An insert stops (as a crash would) after its first step: the size has grown, nothing below EOF moved.
                if (op == "insert range" && ++insertSteps == 1) throw new SimulatedCrash();
            },
        };
        using (var fs = XfsFileSystem.Open(image, options))
        {
            switch (grow)
            {
                case "write":
                    var data = WriteFileHarness.Pattern(300, 7);
                    fs.Write("/f", 100L * bs + 7, data);
                    model.Write(100L * bs + 7, data);
                    break;
                case "truncate":
                    fs.Truncate("/f", 100L * bs + 3);
                    model.Resize(100L * bs + 3);
                    break;
                case "fallocate":
                    fs.Fallocate("/f", 50L * bs, 50L * bs);
                    model.Resize(100L * bs);
                    break;
                case "reflink":
                    Assert.True(fs.Engine.Geometry.Superblock.HasReflink, "fresh-4ag has the reflink feature");
                    fs.Create("/s");
                    var source = WriteFileHarness.Pattern(4 * bs, 9);
                    fs.Write("/s", 0, source);
                    fs.Reflink("/s", 0, "/f", 100L * bs, 4L * bs);
                    model.Write(100L * bs, source);
                    break;
                case "insert":
                    Assert.Throws<SimulatedCrash>(() => fs.InsertRange("/f", 0, 40L * bs));
                    // Nothing below the old EOF moved yet: the old bytes, then zeros up to the new size.
                    model.Resize(CutBlocks * bs + 40L * bs);
                    break;
                default:
                    throw new ArgumentException(grow);
            }
            AssertReads(fs, "/f", model);
            if (copy is not null) AssertReads(fs, "/c", copy);
            AssertInvariants(fs.Engine, $"after the {grow}");
            fs.Close();
        }
        using (var fs = XfsFileSystem.Open(image, WriteFileHarness.Options))
        {
            AssertReads(fs, "/f", model);
            fs.Close();
        }
        AssertOraclesClean(image, $"after the {grow}");
        var files = new List<(string, FileModel)> { ("f", model) };
        if (copy is not null) files.Add(("c", copy));
        WriteFileHarness.AssertKernelReads(image, files);
    }

    /// <summary>Fixed-size steps of a hidden backlog: more written extents past EOF than a step takes are hidden in
    /// steps of their own before the growing write, which then commits once.</summary>
    [Fact]
    public void ABacklogLargerThanAStep_IsHiddenInStepsBeforeTheWrite()
    {
        using var scratch = new RepairScratch();
        string image = scratch.CopyFixture("fresh-4ag");
        var (model, _, bs, blocks) = CrashTruncateAfterItsFirstStep(image, shared: false);
        using (var fs = XfsFileSystem.Open(image, WriteFileHarness.Options with { StepPieces = 4 }))
        {
            long records = fs.Engine.CommittedRecords;
            fs.Write("/f", 200L * bs, [1]);
            model.Write(200L * bs, [1]);
            long steps = fs.Engine.CommittedRecords - records;
            output.WriteLine($"{steps} transactions for the write over {Extents - 4 - CutBlocks / 2} written extents past EOF");
            // 31 written extents past EOF, more than a step: they are hidden in 8 steps of at most 4, then the write.
            Assert.Equal(9, steps);
            AssertReads(fs, "/f", model);
            // The hidden blocks stay allocated (unwritten): nothing was freed, nothing allocated but the new block.
            Assert.Equal(blocks + 1, fs.Stat("/f").Blocks);
            AssertInvariants(fs.Engine, "after the write");
            fs.Close();
        }
        AssertOraclesClean(image, "after the write");
    }

    /// <summary>A file of <see cref="Extents"/> one-block extents (block 2i holds byte i + 1) truncated to
    /// <see cref="CutBlocks"/> blocks, stopped after the truncate's first step committed (steps of 4 mappings): the
    /// size is cut, blocks 10 to 16 are freed, 18 to 78 still hold their data past EOF. With
    /// <paramref name="shared"/> the file was reflinked whole to /c first, so those blocks are shared.</summary>
    (FileModel File, FileModel? Copy, int BlockSize, long Blocks) CrashTruncateAfterItsFirstStep(string image, bool shared)
    {
        var model = new FileModel();
        FileModel? copy = null;
        int truncateSteps = 0;
        var options = WriteFileHarness.Options with
        {
            StepPieces = 4,
            StepCommitted = op =>
            {
                if (op == "truncate" && ++truncateSteps == 1) throw new SimulatedCrash();
            },
        };
        int bs;
        long blocks;
        using (var fs = XfsFileSystem.Open(image, options))
        {
            bs = fs.Engine.Geometry.BlockSize;
            fs.Create("/f");
            for (int i = 0; i < Extents; i++)
            {
                var block = new byte[bs];
                Array.Fill(block, (byte)(i + 1));
                fs.Write("/f", 2L * i * bs, block);
                model.Write(2L * i * bs, block);
            }
            if (shared)
            {
                Assert.True(fs.Engine.Geometry.Superblock.HasReflink, "fresh-4ag has the reflink feature");
                fs.Create("/c");
                fs.Reflink("/f", 0, "/c", 0, model.Size);
                copy = new FileModel();
                copy.Write(0, model.Data);
            }
            long before = fs.Stat("/f").Blocks;
            Assert.Throws<SimulatedCrash>(() => fs.Truncate("/f", CutBlocks * bs));
            model.Resize(CutBlocks * bs);
            Assert.Equal(model.Size, fs.Stat("/f").Size);
            // The bad state itself: written blocks with old data remain past the new EOF.
            blocks = fs.Stat("/f").Blocks;
            Assert.Equal(before - 4, blocks);
            fs.Close();
        }
        AssertOraclesClean(image, "after the truncate stopped part way");
        return (model, copy, bs, blocks);
    }

    static void AssertReads(XfsFileSystem fs, string path, FileModel model)
    {
        Assert.Equal(model.Size, fs.Stat(path).Size);
        var data = new byte[model.Size];
        Assert.Equal(data.Length, fs.Read(path, 0, data));
        int differs = CommonPrefix(data, model.Data);
        Assert.True(differs < 0, $"{path}: byte {differs} reads {(differs >= 0 ? data[differs] : 0)}, expected {(differs >= 0 ? model.Data[differs] : 0)}");
    }

    static int CommonPrefix(byte[] a, byte[] b)
    {
        int n = a.AsSpan().CommonPrefixLength(b);
        return n == a.Length ? -1 : n;
    }
}
