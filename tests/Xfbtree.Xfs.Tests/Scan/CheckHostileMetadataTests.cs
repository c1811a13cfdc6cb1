using System.Buffers.Binary;
using Xfbtree.Buffers;
using Xfbtree.Xfs.Format;
using Xfbtree.Xfs.Scan;
using Xfbtree.Xfs.Tests.Repair;
using Xfbtree.Xfs.Tests.Trees;
using Xunit.Abstractions;

namespace Xfbtree.Xfs.Tests.Scan;

/// <summary>
/// Hostile metadata that passes every CRC: random bytes of AG headers, btree blocks (bnobt, cntbt, inobt, finobt,
/// refcountbt, rmapbt), inode clusters and bmbt blocks are changed and the CRC recomputed, so the damage reaches the
/// field checks behind the verifiers. `check` and both dumps must end with 0, 1 or 2 and never an internal error;
/// where the damage is certain (a changed rmapbt record), every case must be reported.
/// </summary>
public sealed class CheckHostileMetadataTests(ITestOutputHelper output)
{
    [Fact]
    public void CheckSurvivesCrcValidRandomDamage()
    {
        int rounds = Environment.GetEnvironmentVariable("XFBTREE_LONG_TESTS") == "1" ? 300 : 30;
        string pristine = TreeFixtures.Image("aged-small");
        // Targets: (byte offset, length, CRC offset) of metadata structures of every AG.
        var targets = new List<(long Offset, int Length, int CrcOffset)>();
        using (var image = XfsImage.Open(pristine))
        {
            var geo = image.Geometry;
            using var scan = RmapScanner.Scan(image);
            foreach (var ag in scan.Ags)
            {
                uint a = ag.AgNumber;
                targets.Add((geo.AgHeaderDaddr(a, 0) * 512, geo.SectorSize, Superblock.CrcOffset));
                targets.Add((geo.AgHeaderDaddr(a, 1) * 512, geo.SectorSize, Agf.CrcOffset));
                targets.Add((geo.AgHeaderDaddr(a, 2) * 512, geo.SectorSize, Agi.CrcOffset));
                targets.Add((geo.AgHeaderDaddr(a, 3) * 512, geo.SectorSize, Agfl.CrcOffset));
                foreach (uint b in ag.BnobtBlocks.Concat(ag.CntbtBlocks).Concat(ag.RmapbtBlocks).Take(40))
                    targets.Add((geo.AgBlockToByte(a, b), geo.BlockSize, 52));
                targets.Add((geo.AgBlockToByte(a, ag.Agi!.Root), geo.BlockSize, 52));
                targets.Add((geo.AgBlockToByte(a, ag.Agf!.RefcountRoot), geo.BlockSize, 52));
            }
            // Inodes with btree forks (manifest) and their bmbt blocks.
            foreach (ulong ino in new ulong[] { 1573048, 542508, 1573051, 12585, 512872, 25543, 542517 })
            {
                targets.Add((geo.InodeByteOffset(geo.InoToAgno(ino), geo.InoToAgino(ino)), geo.InodeSize, Dinode.CrcOffset));
                var inode = new byte[geo.InodeSize];
                using var fh = File.OpenHandle(pristine);
                RandomAccess.Read(fh, inode, geo.InodeByteOffset(geo.InoToAgno(ino), geo.InoToAgino(ino)));
                var d = new Dinode(inode);
                foreach (bool attr in new[] { false, true })
                {
                    if (d.FormatOf(attr) != ForkFormat.Btree) continue;
                    var fork = d.Fork(attr);
                    int max = Dinode.BmbtRootMaxRecords(fork.Length);
                    ulong child = BinaryPrimitives.ReadUInt64BigEndian(fork[(4 + max * 8)..]);
                    targets.Add((geo.AgBlockToByte(geo.FsbToAgno(child), geo.FsbToAgbno(child)), geo.BlockSize, 64));
                }
            }
        }
        output.WriteLine($"{targets.Count} structures");
        using var scratch = new RepairScratch();
        var rng = new Random(20261130);
        var codes = new int[3];
        for (int round = 0; round < rounds; round++)
        {
            string img = scratch.Copy(pristine, "hostile.img");
            using (var fh = File.OpenHandle(img, FileMode.Open, FileAccess.ReadWrite))
            {
                int structures = rng.Next(1, 4);
                for (int s = 0; s < structures; s++)
                {
                    var (off, len, crc) = targets[rng.Next(targets.Count)];
                    var buf = new byte[len];
                    RandomAccess.Read(fh, buf, off);
                    int flips = rng.Next(1, 6);
                    for (int f = 0; f < flips; f++)
                    {
                        // Mostly header-ish bytes (where the decisions are), sometimes anywhere.
                        int at = rng.Next(4) == 0 ? rng.Next(len) : rng.Next(Math.Min(len, 256));
                        if (at >= crc && at < crc + 4) continue;
                        buf[at] = (byte)rng.Next(256);
                    }
                    XfsCrc.Update(buf, crc);
                    RandomAccess.Write(fh, buf, off);
                }
            }
            foreach (var args in new[] { new[] { "check", img, "--force" }, ["dump", img, "--force"], ["dump", img, "--source", "ondisk", "--force"] })
            {
                var r = XfsCli.Run(args);
                Assert.True(r.ExitCode is 0 or 1 or 2, r.ToString());
                Assert.True(!r.Stderr.Contains("internal error", StringComparison.Ordinal), $"round {round} {args[0]}: {r.Stderr}");
                if (args[0] == "check") codes[r.ExitCode]++;
            }
        }
        output.WriteLine($"check exit codes over {rounds} rounds: 0: {codes[0]}, 1: {codes[1]}, 2: {codes[2]}");
        // Random bytes may land where nothing decides anything, so no rate is required here; the next test is the
        // one where the damage is certain.
    }

    /// <summary>
    /// Damage that is certain: one field (startblock, blockcount or owner) of one record of an rmapbt leaf changes
    /// its lowest bit and the CRC is fixed, so only the comparison with the scanned metadata can see it. Every round
    /// must be reported (exit 1) with that AG named.
    /// </summary>
    [Fact]
    public void CheckDetectsEveryCrcValidRmapbtRecordChange()
    {
        const int rounds = 12;
        string pristine = TreeFixtures.Image("aged-small");
        var leaves = new List<(uint Ag, long Offset)>();
        int blockSize;
        using (var image = XfsImage.Open(pristine))
        {
            var geo = image.Geometry;
            blockSize = geo.BlockSize;
            using var scan = RmapScanner.Scan(image);
            using var fh = File.OpenHandle(pristine);
            var header = new byte[8];
            foreach (var ag in scan.Ags)
                foreach (uint b in ag.RmapbtBlocks)
                {
                    long at = geo.AgBlockToByte(ag.AgNumber, b);
                    RandomAccess.Read(fh, header, at);
                    if (BinaryPrimitives.ReadUInt16BigEndian(header.AsSpan(4)) == 0) leaves.Add((ag.AgNumber, at));
                }
        }
        Assert.True(leaves.Count >= 4, $"only {leaves.Count} rmapbt leaves");
        using var scratch = new RepairScratch();
        var rng = new Random(20261202);
        int detected = 0;
        for (int round = 0; round < rounds; round++)
        {
            string img = scratch.Copy(pristine, "certain.img");
            var (ag, offset) = leaves[rng.Next(leaves.Count)];
            string what;
            using (var fh = File.OpenHandle(img, FileMode.Open, FileAccess.ReadWrite))
            {
                var block = new byte[blockSize];
                RandomAccess.Read(fh, block, offset);
                int records = BinaryPrimitives.ReadUInt16BigEndian(block.AsSpan(6));
                Assert.True(records > 0, $"empty rmapbt leaf at byte {offset}");
                int record = rng.Next(records);
                // Short-form v5 header: 56 bytes; record: startblock (4), blockcount (4), owner (8), offset (8).
                (int field, string name) = rng.Next(3) switch { 0 => (0, "startblock"), 1 => (4, "blockcount"), _ => (15, "owner") };
                block[56 + record * 24 + field + (field == 15 ? 0 : 3)] ^= 1;
                XfsCrc.Update(block, 52);
                RandomAccess.Write(fh, block, offset);
                what = $"round {round}: AG {ag} leaf at byte {offset}, record {record} of {records}, {name}";
            }
            var r = XfsCli.Run("check", img);
            Assert.True(r.ExitCode == 1, $"{what}: {r}");
            Assert.Contains($"AG {ag}: DAMAGED", r.Stdout, StringComparison.Ordinal);
            detected++;
        }
        Assert.Equal(rounds, detected);
    }
}
