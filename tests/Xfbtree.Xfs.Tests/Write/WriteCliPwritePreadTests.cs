using Xfbtree.Cli;
using Xfbtree.Xfs.Tests.Repair;
using Xfbtree.Xfs.Write;
using Xfbtree.Xfs.Write.Engine;
using Xfbtree.Cli.Stress;
using Xunit.Abstractions;

namespace Xfbtree.Xfs.Tests.Write;

/// <summary>
/// pwrite's whole-or-nothing space check and its short-count report; pread of holes and unwritten extents in work
/// proportional to the data (counted in data blocks read, not timed), capped at EOF, and its CRC-64 digest.
/// </summary>
public sealed class WriteCliPwritePreadTests(ITestOutputHelper output)
{
    [Fact]
    public void PwriteLargerThanTheFreeSpaceWritesNothingAndSaysSo()
    {
        using var scratch = new RepairScratch();
        string image = Path.Combine(scratch.Directory, "small.img");
        RepairTools.MkfsSmall(image, 64L << 20, "-m", "rmapbt=1,reflink=1");
        var run = RepairTools.Xfbtree("io", image, "-c", "create /f", "-c", "pwrite /f 0 100m", "-c", "create /never");
        output.WriteLine(run.ToString());
        Assert.True(run.ExitCode == 1, run.ToString());
        Assert.StartsWith("xfbtree: io: pwrite /f 0 100m: nothing written: ", run.Stderr, StringComparison.Ordinal);
        Assert.Contains("(ENOSPC)", run.Stderr, StringComparison.Ordinal);
        var stat = RepairTools.Xfbtree("io", image, "-c", "stat /f");
        Assert.True(stat.ExitCode == 0, stat.ToString());
        Assert.Contains("size = 0", stat.Stdout, StringComparison.Ordinal);
        Assert.Contains("blocks = 0", stat.Stdout, StringComparison.Ordinal);
        WriteOracles.AssertImageClean(image, output);
    }

    [Fact]
    public void PwriteThatFailsAfterSomePiecesReportsExactlyWhatWasWritten()
    {
        using var scratch = new RepairScratch();
        string probeImage = scratch.CopyFixture("fresh-4ag");
        string image = scratch.Copy(probeImage, "crash.img");
        const long length = 3L * IoCommand.WritePiece;
        var pwrite = IoOperation.Parse($"pwrite /f 0 {length}");

        // Count the writes of the create and of the first piece on one copy...
        var counter = new WriteFaultInjector(int.MaxValue, () => { });
        int afterFirstPiece;
        using (var fs = XfsFileSystem.Open(probeImage, new WriteEngineOptions { SyncCommits = false, Faults = counter }))
        {
            fs.Create("/f");
            fs.Write("/f", 0, new byte[IoCommand.WritePiece]);
            afterFirstPiece = counter.Writes;
        }

        // ...then fail the first write of the second piece on the other.
        var faults = new WriteFaultInjector(afterFirstPiece + 1, () => { });
        var fs2 = XfsFileSystem.Open(image, new WriteEngineOptions { SyncCommits = false, Faults = faults });
        try
        {
            fs2.Create("/f");
            var e = Assert.Throws<XfsWriteException>(() => pwrite.Run(fs2, TextWriter.Null));
            output.WriteLine(e.Message);
            Assert.True(faults.Crashed, "the fault point was not reached");
            Assert.Equal(WriteErrorKind.Io, e.Kind);
            Assert.StartsWith($"short write: {IoCommand.WritePiece} of {length} bytes written at offset 0 (bytes [0, {IoCommand.WritePiece}) are in the file, the rest is not): ", e.Message, StringComparison.Ordinal);
        }
        finally
        {
            fs2.Dispose(); // a crash: the next open replays the journal
        }
        var stat = RepairTools.Xfbtree("io", image, "-c", "stat /f");
        Assert.True(stat.ExitCode == 0, stat.ToString());
        Assert.Contains($"size = {IoCommand.WritePiece}", stat.Stdout, StringComparison.Ordinal);
        WriteOracles.AssertImageClean(image, output);
    }

    [Fact]
    public void Crc64MatchesItsCheckValueAndZeroRunsEqualMaterialisedZeros()
    {
        var check = new Crc64();
        check.Append("123456789"u8);
        Assert.Equal(0x995DC9BBDF1939FAUL, check.Value);
        var rnd = new Random(5);
        // Against a bit-by-bit reference (the definition), at every alignment of the 8-byte fast path.
        for (int length = 0; length < 70; length++)
        {
            var bytes = new byte[length];
            rnd.NextBytes(bytes);
            ulong reference = ulong.MaxValue;
            foreach (byte b in bytes)
            {
                reference ^= b;
                for (int bit = 0; bit < 8; bit++) reference = (reference & 1) != 0 ? (reference >> 1) ^ 0xC96C5795D7870F42UL : reference >> 1;
            }
            var split = new Crc64();
            int cut = length / 3;
            split.Append(bytes.AsSpan(0, cut));
            split.Append(bytes.AsSpan(cut));
            Assert.Equal(~reference, split.Value);
        }
        foreach (long zeros in new long[] { 0, 1, 7, 8, 63, 64, 4096, 65537, 1 << 20, 3_000_001 })
        {
            var prefix = new byte[rnd.Next(0, 100)];
            rnd.NextBytes(prefix);
            var fast = new Crc64();
            fast.Append(prefix);
            fast.AppendZeros(zeros);
            fast.Append(prefix);
            var slow = new Crc64();
            slow.Append(prefix);
            slow.Append(new byte[zeros]);
            slow.Append(prefix);
            Assert.True(fast.Value == slow.Value, $"{zeros} zeros: {fast.Value:x16} vs {slow.Value:x16}");
            Assert.Equal(slow.Length, fast.Length);
        }
    }

    /// <summary>An 8 TiB sparse file with two written blocks and an unwritten extent: pread of the whole file (and
    /// of 2^63 - 1 bytes, capped at EOF) reads only the written blocks; the CRC equals the model's on a small file
    /// where every byte can be materialised.</summary>
    [Fact]
    public void PreadOfAHugeSparseFileReadsOnlyItsDataBlocks()
    {
        using var scratch = new RepairScratch();
        string image = scratch.CopyFixture("fresh-4ag");
        using var fs = XfsFileSystem.Open(image, new WriteEngineOptions { SyncCommits = false });
        int bs = fs.Engine.Geometry.BlockSize;
        fs.Create("/sparse");
        fs.Truncate("/sparse", 8L << 40);
        fs.Write("/sparse", 4L << 40, new byte[] { 1, 2, 3 });
        fs.Write("/sparse", (6L << 40) + bs - 2, new byte[] { 9, 9, 9, 9 }); // two blocks
        fs.Fallocate("/sparse", 5L << 40, 1 << 20);

        long before = fs.Engine.DataBlocksRead;
        var whole = IoOperation.Parse("pread /sparse 0 9223372036854775807");
        var text = new StringWriter();
        whole.Run(fs, text);
        long read = fs.Engine.DataBlocksRead - before;
        output.WriteLine($"{text.ToString().Trim()}; {read} data blocks read");
        Assert.StartsWith($"read {8L << 40}/9223372036854775807 bytes at offset 0 crc64 ", text.ToString(), StringComparison.Ordinal);
        Assert.Equal(3, read);

        // The same layout scaled down to 64 MiB: the digest equals the model's, byte by byte.
        fs.Create("/small");
        fs.Truncate("/small", 64L << 20);
        fs.Write("/small", 32L << 20, new byte[] { 1, 2, 3 });
        fs.Write("/small", (48L << 20) + bs - 2, new byte[] { 9, 9, 9, 9 });
        fs.Fallocate("/small", 40L << 20, 1 << 20);
        var model = new FileContents();
        model.ExtendTo(64L << 20);
        model.Write(32L << 20, new byte[] { 1, 2, 3 });
        model.Write((48L << 20) + bs - 2, new byte[] { 9, 9, 9, 9 });
        text = new StringWriter();
        IoOperation.Parse("pread /small 0 100m").Run(fs, text);
        Assert.Equal($"read {64L << 20}/{100L << 20} bytes at offset 0 crc64 {WriteCliIoTests.Crc(model, 0, 64 << 20)}", text.ToString().Trim());
        text = new StringWriter();
        IoOperation.Parse($"pread /small {(48L << 20) + bs - 3} 6").Run(fs, text);
        Assert.Equal($"read 6/6 bytes at offset {(48L << 20) + bs - 3} crc64 {WriteCliIoTests.Crc(model, (48L << 20) + bs - 3, 6)}", text.ToString().Trim());
        fs.Close();
    }
}
