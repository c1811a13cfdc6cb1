using Xfbtree.Xfs.Tests.Repair;
using Xfbtree.Xfs.Write;
using Xfbtree.Xfs.Write.Engine;
using Xfbtree.Xfs.Write.Files;
using Xunit.Abstractions;
using static Xfbtree.Xfs.Tests.Write.WriteEngineTestSupport;

namespace Xfbtree.Xfs.Tests.Write;

/// <summary>
/// Operations over large ranges split into bounded transactions: the largest journal record of an unshare stays
/// one step of data whatever the range (a transaction holds its data and blocks in memory until its commit, so this
/// bounds its memory too); punch, truncate, reflink and fallocate commit one record per step of mappings (steps
/// made small through the engine's internal option to see them). Each result is checked: content against a model,
/// the engine's invariants, xfs_repair -n and rmap check.
/// </summary>
public sealed class WriteFileBoundedStepsTests(ITestOutputHelper output)
{
    [Fact]
    public void UnshareOfALargeRangeCommitsBoundedRecords()
    {
        using var scratch = new RepairScratch();
        string image = scratch.CopyFixture("fresh-4ag");
        const int megabytes = 24;
        var model = new FileModel();
        using (var fs = XfsFileSystem.Open(image, WriteFileHarness.Options))
        {
            fs.Create("/a");
            fs.Create("/b");
            for (int i = 0; i < megabytes; i++)
            {
                var piece = new byte[1 << 20];
                new Random(i).NextBytes(piece);
                fs.Write("/a", (long)i << 20, piece);
                model.Write((long)i << 20, piece);
            }
            fs.Reflink("/a", 0, "/b", 0, (long)megabytes << 20);
            fs.Close();
        }
        using (var fs = XfsFileSystem.Open(image, WriteFileHarness.Options))
        {
            long before = fs.Engine.CommittedRecords;
            fs.Unshare("/b", 0, (long)megabytes << 20);
            long records = fs.Engine.CommittedRecords - before, largest = fs.Engine.LargestRecordBytes;
            output.WriteLine($"unshare of {megabytes} MiB: {records} records, largest {largest} bytes");
            Assert.True(largest <= FileOperations.UnshareStepBytes + (256 << 10), $"the largest record of the unshare is {largest} bytes");
            Assert.True(records >= megabytes, $"{records} records for {megabytes} MiB");
            WriteFileHarness.AssertContent(fs.Files, fs.Namespace.Lookup("/a"), model, "/a after unshare");
            WriteFileHarness.AssertContent(fs.Files, fs.Namespace.Lookup("/b"), model, "/b after unshare");
            AssertNothingShared(fs);
            AssertInvariants(fs.Engine, "after the unshare");
            fs.Close();
        }
        WriteFileHarness.AssertClean(image);
    }

    /// <summary>A file of 40 one-block extents (every other block written); with steps of 4 mappings each range
    /// operation commits at least 10 records and leaves the right content.</summary>
    [Fact]
    public void PunchTruncateReflinkAndFallocateGoInStepsOfBoundedMappings()
    {
        using var scratch = new RepairScratch();
        string image = scratch.CopyFixture("fresh-4ag");
        var options = WriteFileHarness.Options with { StepPieces = 4 };
        using var fs = XfsFileSystem.Open(image, options);
        int bs = fs.Engine.Geometry.BlockSize;
        const int extents = 40;
        FileModel Fragmented(string path)
        {
            var m = new FileModel();
            fs.Create(path);
            for (int i = 0; i < extents; i++)
            {
                var block = new byte[bs];
                new Random(i + path.Length).NextBytes(block);
                fs.Write(path, 2L * i * bs, block);
                m.Write(2L * i * bs, block);
            }
            return m;
        }
        long Records(Action action)
        {
            long before = fs.Engine.CommittedRecords;
            action();
            return fs.Engine.CommittedRecords - before;
        }
        void Check(string path, FileModel m, string what)
        {
            WriteFileHarness.AssertContent(fs.Files, fs.Namespace.Lookup(path), m, what);
            AssertInvariants(fs.Engine, what);
        }

        var punched = Fragmented("/punch");
        long r = Records(() => fs.PunchHole("/punch", bs / 2, (2L * extents - 1) * bs));
        punched.Zero(bs / 2, (2L * extents - 1) * bs);
        output.WriteLine($"punch: {r} records");
        Assert.True(r >= extents / 4, $"punch of {extents} extents in steps of 4: {r} records");
        Check("/punch", punched, "punch");
        Assert.Equal(1UL, (ulong)fs.Stat("/punch").DataExtents); // the first block keeps its first half

        var truncated = Fragmented("/trunc");
        r = Records(() => fs.Truncate("/trunc", bs + 100));
        truncated.Resize(bs + 100);
        output.WriteLine($"truncate: {r} records");
        Assert.True(r >= extents / 4, $"truncate of {extents} extents in steps of 4: {r} records");
        Check("/trunc", truncated, "truncate");

        var source = Fragmented("/src");
        var destination = Fragmented("/dst"); // its own mappings are replaced, in the same steps
        long length = source.Size;
        r = Records(() => fs.Reflink("/src", 0, "/dst", 0, length));
        destination.CopyFrom(source, 0, 0, source.Size);
        output.WriteLine($"reflink: {r} records");
        Assert.True(r >= extents / 4, $"reflink of {extents} extents in steps of 4: {r} records");
        Check("/dst", destination, "reflink");
        Check("/src", source, "reflink source");

        var fallocated = Fragmented("/falloc");
        r = Records(() => fs.Fallocate("/falloc", 0, length + 10 * bs));
        fallocated.Extend(length + 10 * bs);
        output.WriteLine($"fallocate: {r} records");
        Assert.True(r >= extents / 4, $"fallocate over {extents} holes in steps of 4: {r} records");
        Check("/falloc", fallocated, "fallocate");
        fs.Close();
        WriteFileHarness.AssertClean(image);
    }

    /// <summary>A punch whose write fails in a middle step says exactly which file blocks its earlier steps
    /// unmapped, and after the journal replay the file holds exactly that (the failing step's record is replayed
    /// too when it was complete, and the message says so).</summary>
    [Fact]
    public void ASplitOperationThatFailsPartWaySaysWhatItsStepsDid()
    {
        using var scratch = new RepairScratch();
        string probe = scratch.CopyFixture("fresh-4ag");
        string image = scratch.Copy(probe, "faulted.img");
        const int extents = 40;
        int bs = 0;
        void Fragmented(XfsFileSystem fs)
        {
            bs = fs.Engine.Geometry.BlockSize;
            fs.Create("/f");
            for (int i = 0; i < extents; i++) fs.Write("/f", 2L * i * bs, new byte[] { 7 });
        }

        // The writes of the whole punch, counted on one copy; the fault goes half way through them on the other.
        var counter = new WriteFaultInjector(int.MaxValue, () => { });
        int before, after;
        using (var fs = XfsFileSystem.Open(probe, WriteFileHarness.Options with { StepPieces = 4, Faults = counter }))
        {
            Fragmented(fs);
            before = counter.Writes;
            fs.PunchHole("/f", 0, 2L * extents * bs);
            after = counter.Writes;
        }
        var faults = new WriteFaultInjector(before + (after - before) / 2, () => { });
        XfsWriteException failure;
        var fs2 = XfsFileSystem.Open(image, WriteFileHarness.Options with { StepPieces = 4, Faults = faults });
        try
        {
            Fragmented(fs2);
            failure = Assert.Throws<XfsWriteException>(() => fs2.PunchHole("/f", 0, 2L * extents * bs));
        }
        finally
        {
            fs2.Dispose(); // a crash: the next open replays the journal
        }
        output.WriteLine(failure.Message);
        var m = System.Text.RegularExpressions.Regex.Match(failure.Message,
            @"^punch stopped part way \(the partial blocks at the ends are zeroed; file blocks \[0, (\d+)\) unmapped, from \d+ on not(; the failing step's journal record is complete, so the next open also applies that step)?\): ");
        Assert.True(m.Success, failure.Message);
        ulong unmapped = ulong.Parse(m.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture);
        Assert.InRange(unmapped, 1UL, 2UL * extents - 2);
        using (var fs = XfsFileSystem.Open(image, WriteFileHarness.Options))
        {
            ulong left = (ulong)fs.Stat("/f").DataExtents;
            ulong expected = (ulong)extents - (unmapped + 1) / 2;
            if (m.Groups[2].Success) Assert.InRange(left, expected - 4, expected - 1); // the failing step of 4 mappings replayed
            else Assert.Equal(expected, left);
            AssertInvariants(fs.Engine, "after the replay");
            fs.Close();
        }
        WriteFileHarness.AssertClean(image);
    }

    static void AssertNothingShared(XfsFileSystem fs)
    {
        var geo = fs.Engine.Geometry;
        fs.Engine.Execute("probe", tx =>
        {
            for (uint agno = 0; agno < geo.AgCount; agno++)
            {
                tx.LockAg(agno);
                Assert.False(tx.IsShared(agno, 0, geo.AgLength(agno)), $"AG {agno} still has shared blocks");
            }
        });
    }
}
