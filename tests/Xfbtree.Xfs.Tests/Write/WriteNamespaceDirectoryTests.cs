using System.Buffers.Binary;
using System.Text;
using Xfbtree.Xfs.Directories;
using Xfbtree.Xfs.Tests.Trees;
using Xfbtree.Xfs.Write;
using Xfbtree.Xfs.Write.Namespace;
using Xunit.Abstractions;

namespace Xfbtree.Xfs.Tests.Write;

/// <summary>
/// Directory formats in memory (shortform and block editing, the da hash) and read-only directory access to real
/// kernel-written images of every format, with xfs_db as the oracle.
/// </summary>
public sealed class WriteNamespaceDirectoryTests(ITestOutputHelper output)
{
    static byte[] B(string s) => Encoding.UTF8.GetBytes(s);

    [Theory]
    [InlineData("a", 0x61u)]
    [InlineData("ab", 0x30e2u)]
    [InlineData("abc", 0x187163u)]
    [InlineData("abcd", 0xc38b1e4u)]
    [InlineData("hello_world.txt", 0x9ccf6d5eu)]
    [InlineData(".", 0x2eu)]
    [InlineData("..", 0x172eu)]
    public void HashMatchesValuesPrintedByXfsDb(string name, uint expected)
        => Assert.Equal(expected, DirectoryFormat.HashName(B(name)));

    [Fact]
    public void HashMatchesXfsDbOnRandomNames()
    {
        var rnd = new Random(12);
        const string alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-";
        var names = Enumerable.Range(0, 40).Select(_ => new string(Enumerable.Range(0, rnd.Next(1, 40)).Select(_ => alphabet[rnd.Next(alphabet.Length)]).ToArray())).ToList();
        string output = TreeFixtures.XfsDb(TreeFixtures.Image("fresh-4ag"), names.Select(n => "hash " + n).ToArray());
        var printed = output.Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(l => Convert.ToUInt32(l.Trim(), 16)).ToList();
        Assert.Equal(names.Count, printed.Count);
        for (int i = 0; i < names.Count; i++) Assert.Equal(printed[i], DirectoryFormat.HashName(B(names[i])));
    }

    [Fact]
    public void ShortformAddUsesKernelOffsetsAndRoundTrips()
    {
        var sf = new ShortformDirectory(128, hasFtype: true, dirBlockSize: 4096);
        Assert.Equal(96, sf.FirstOffset);
        Assert.Equal(ShortformAddResult.Added, sf.TryAdd(B("a"), 131, DirectoryFormat.FtRegular, 336));
        Assert.Equal(ShortformAddResult.Added, sf.TryAdd(B("bbbbbbbbbb"), 132, DirectoryFormat.FtDirectory, 336));
        Assert.Equal(ShortformAddResult.Added, sf.TryAdd(B("c"), 133, DirectoryFormat.FtRegular, 336));
        // "a": 8+1+1+1+2 = 13 -> 16; "bbbbbbbbbb": 8+1+10+1+2 = 22 -> 24.
        Assert.Equal(new[] { 96, 112, 136 }, sf.Entries.Select(e => e.Offset));
        Assert.True(sf.Remove(B("a")));
        // The end still fits the block form, so the kernel appends ("easy") instead of reusing the hole at 96.
        Assert.Equal(ShortformAddResult.Added, sf.TryAdd(B("d"), 134, DirectoryFormat.FtRegular, 336));
        Assert.Equal(new[] { 112, 136, 152 }, sf.Entries.Select(e => e.Offset));
        var bytes = sf.Serialize();
        Assert.Equal(sf.Size, bytes.Length);
        Assert.Equal(6 + (8 + 10) + (8 + 1) + (8 + 1), bytes.Length);
        Assert.Equal(3, bytes[0]);
        Assert.Equal(0, bytes[1]);
        var back = ShortformDirectory.Parse(bytes, bytes.Length, true, 4096, "test");
        Assert.Equal(128UL, back.Parent);
        Assert.Equal(sf.Entries.Select(e => (DirectoryFormat.Show(e.Name), e.Ino, e.FileType, e.Offset)),
            back.Entries.Select(e => (DirectoryFormat.Show(e.Name), e.Ino, e.FileType, e.Offset)));
    }

    [Fact]
    public void ShortformWideInodeNumbersSwitchToEightBytesAndBack()
    {
        var sf = new ShortformDirectory(128, true, 4096);
        sf.TryAdd(B("x"), 200, DirectoryFormat.FtRegular, 336);
        sf.TryAdd(B("big"), 0x1_0000_0005, DirectoryFormat.FtRegular, 336);
        var wide = sf.Serialize();
        Assert.Equal(1, wide[1]);
        Assert.Equal(2 + 8 + (3 + 1 + 1 + 8) + (3 + 3 + 1 + 8), wide.Length);
        var parsed = ShortformDirectory.Parse(wide, wide.Length, true, 4096, "test");
        Assert.Equal(0x1_0000_0005UL, parsed.Find(B("big"))!.Ino);
        Assert.True(parsed.Remove(B("big")));
        var narrow = parsed.Serialize();
        Assert.Equal(0, narrow[1]);
        Assert.Equal(2 + 4 + 3 + 1 + 1 + 4, narrow.Length);
    }

    [Fact]
    public void ShortformRefusesWhatOnlyTheBlockFormHolds()
    {
        var sf = new ShortformDirectory(128, true, 4096);
        int added = 0;
        while (sf.TryAdd(B($"file{added:D4}"), 200 + (ulong)added, DirectoryFormat.FtRegular, 336) == ShortformAddResult.Added) added++;
        // 6 + n * (3 + 8 + 1 + 4) <= 336 -> 20 entries of 16 bytes.
        Assert.Equal(20, added);
        Assert.True(sf.Size <= 336);

        // Offsets: with a 1 KiB directory block the block form runs out before a big fork does.
        var small = new ShortformDirectory(128, true, 1024);
        int n = 0;
        while (small.TryAdd(B($"name-{n:D10}"), 300 + (ulong)n, DirectoryFormat.FtRegular, 4000) == ShortformAddResult.Added) n++;
        int last = small.Entries[^1].Offset + DirectoryFormat.DataEntrySize(15, true);
        Assert.True(last + (n + 2) * 8 + 8 <= 1024);
        Assert.True(last + DirectoryFormat.DataEntrySize(15, true) + (n + 3) * 8 + 8 > 1024);
        // A hole lets a name in once the end is full: two 32-byte entries gone leave 64 bytes at 96 for a
        // 56-byte entry that the end (over 992 bytes used before) cannot take.
        Assert.True(small.Remove(B("name-0000000000")));
        Assert.True(small.Remove(B("name-0000000001")));
        var longName = B(new string('L', 40));
        Assert.Equal(ShortformAddResult.Added, small.TryAdd(longName, 999, DirectoryFormat.FtRegular, 4000));
        Assert.Equal(96, small.Find(longName)!.Offset);
    }

    /// <summary>
    /// Random adds and removes (names of 1-40 bytes, a fork big enough that only the block form limits): after every
    /// add the directory must still parse, i.e. its last offset plus one leaf entry per entry, '.' and '..' and the
    /// block tail fit one directory block, as xfs_dir2_sf_verify asks. A hole that fits the name is not enough: the
    /// leaf entry the new name adds must fit too (xfs_dir2_sf_addname_pick); otherwise the kernel converts to the block
    /// form first. A writer beside an online check once hit a directory written past that limit.
    /// </summary>
    [Theory]
    [InlineData(1024, 1)]
    [InlineData(1024, 2)]
    [InlineData(1024, 3)]
    [InlineData(4096, 4)]
    public void ShortformAddsAlwaysLeaveTheBlockFormRoom(int blockSize, int seed)
    {
        var random = new Random(seed);
        var sf = new ShortformDirectory(128, true, blockSize);
        int added = 0, refused = 0, removed = 0;
        for (int op = 0; op < 4000; op++)
        {
            if (sf.Entries.Count > 0 && random.Next(3) == 0)
            {
                Assert.True(sf.Remove(sf.Entries[random.Next(sf.Entries.Count)].Name));
                removed++;
                continue;
            }
            var name = B((op + new string('n', 40))[..(1 + random.Next(40))]);
            if (sf.Find(name) is not null) continue;
            if (sf.TryAdd(name, 200 + (ulong)op, DirectoryFormat.FtRegular, 4000) != ShortformAddResult.Added)
            {
                refused++;
                continue;
            }
            added++;
            var bytes = sf.Serialize();
            ShortformDirectory.Parse(bytes, bytes.Length, true, blockSize, $"after add {op}");
        }
        output.WriteLine($"{blockSize}-byte blocks, seed {seed}: {added} added, {refused} refused, {removed} removed");
        Assert.True(refused > 0 && added > 100, "the run never reached the block form's limit");
    }

    [Fact]
    public void ShortformParseRejectsDamage()
    {
        var sf = new ShortformDirectory(128, true, 4096);
        sf.TryAdd(B("a"), 131, DirectoryFormat.FtRegular, 336);
        sf.TryAdd(B("b"), 132, DirectoryFormat.FtRegular, 336);
        var good = sf.Serialize();
        var bad = (byte[])good.Clone();
        bad[0] = 5; // count beyond the data
        Assert.Equal(WriteErrorKind.Corrupt, Assert.Throws<XfsWriteException>(() => ShortformDirectory.Parse(bad, bad.Length, true, 4096, "d")).Kind);
        bad = (byte[])good.Clone();
        BinaryPrimitives.WriteUInt16BigEndian(bad.AsSpan(6 + 1 + 1 + 1 + 1 + 4 + 1), 50); // second offset below the first
        Assert.Equal(WriteErrorKind.Corrupt, Assert.Throws<XfsWriteException>(() => ShortformDirectory.Parse(bad, bad.Length, true, 4096, "d")).Kind);
        bad = (byte[])good.Clone();
        bad[1] = 1; // i8count that disagrees
        Assert.Throws<XfsWriteException>(() => ShortformDirectory.Parse(bad, bad.Length, true, 4096, "d"));
        Assert.Throws<XfsWriteException>(() => ShortformDirectory.Parse(good, good.Length + 1, true, 4096, "d"));
    }

    static byte[] Materialize(BlockDirectory d)
    {
        var block = new byte[d.BlockSize];
        BinaryPrimitives.WriteUInt32BigEndian(block, DirectoryFormat.BlockMagic);
        d.WriteBody(block);
        return block;
    }

    [Fact]
    public void BlockFromShortformKeepsOffsetsAndSortsTheLeafByHash()
    {
        var sf = new ShortformDirectory(128, true, 4096);
        for (int i = 0; i < 10; i++) sf.TryAdd(B($"entry{i}"), 500 + (ulong)i, DirectoryFormat.FtRegular, 336);
        sf.Remove(B("entry3"));
        var block = BlockDirectory.FromShortform(sf, 777, 4096, true);
        var bytes = Materialize(block);
        var back = BlockDirectory.Parse(bytes, true, "test");
        Assert.Equal(11, back.Entries.Count);
        Assert.Equal((64, 777UL), (back.Entries[0].Offset, back.Entries[0].Ino));
        Assert.Equal((80, 128UL), (back.Entries[1].Offset, back.Entries[1].Ino));
        foreach (var e in sf.Entries) Assert.Equal(e.Offset, back.Find(e.Name)!.Offset);
        var hashes = back.Leaf.Select(l => l.Hash).ToList();
        Assert.Equal(hashes.Order(), hashes);
        Assert.Equal(11u, BinaryPrimitives.ReadUInt32BigEndian(bytes.AsSpan(4088)));
        Assert.Equal(0u, BinaryPrimitives.ReadUInt32BigEndian(bytes.AsSpan(4092)));
        // bestfree[0]: the big region from the last entry to the leaf; [1]: the 24-byte hole left by entry3.
        int leafStart = 4096 - 8 - 11 * 8;
        var lastEntry = back.Entries[^1];
        int tailFree = leafStart - (lastEntry.Offset + DirectoryFormat.DataEntrySize(lastEntry.Name.Length, true));
        Assert.Equal(tailFree, BinaryPrimitives.ReadUInt16BigEndian(bytes.AsSpan(50)));
        Assert.Equal(24, BinaryPrimitives.ReadUInt16BigEndian(bytes.AsSpan(54)));
        Assert.Equal(0, BinaryPrimitives.ReadUInt16BigEndian(bytes.AsSpan(58)));
    }

    [Fact]
    public void BlockAddRemoveUntilFullKeepsTheBlockValid()
    {
        var sf = new ShortformDirectory(128, true, 4096);
        var block = BlockDirectory.FromShortform(sf, 777, 4096, true);
        var names = new List<string>();
        for (int i = 0; ; i++)
        {
            string n = $"file-number-{i:D5}";
            if (!block.TryAdd(B(n), 1000 + (ulong)i, DirectoryFormat.FtRegular)) break;
            names.Add(n);
            if (i % 17 == 0) BlockDirectory.Parse(Materialize(block), true, "test");
        }
        // 4096 - 64 header - 8 tail - 32 (. and ..) - 16 (their leaf entries) over (32 + 8) per name -> 99.
        Assert.Equal(99, names.Count);
        foreach (var n in names.Where((_, i) => i % 3 == 0)) Assert.True(block.Remove(B(n)));
        var parsed = BlockDirectory.Parse(Materialize(block), true, "test");
        Assert.Equal(33, parsed.Stale);
        Assert.False(block.Remove(B("not-there")));
        Assert.False(block.Remove(B("..")));
        // Adding compacts the stale leaf entries away.
        Assert.True(block.TryAdd(B("again"), 5000, DirectoryFormat.FtRegular));
        parsed = BlockDirectory.Parse(Materialize(block), true, "test");
        Assert.Equal(0, parsed.Stale);
        Assert.Equal(2 + 99 - 33 + 1, parsed.Entries.Count);
        Assert.Equal(5000UL, parsed.Find(B("again"))!.Ino);
    }

    /// <summary>Every directory of an aged image (shortform, block, leaf and node formats) lists as xfs_db lists it.</summary>
    [Theory]
    [InlineData("aged-small")]
    [InlineData("geom-bs1k")]
    public void ListingsOfKernelWrittenDirectoriesMatchXfsDb(string fixture)
    {
        string image = TreeFixtures.Image(fixture);
        using var img = XfsImage.Open(image);
        var walker = new PathWalker(img, new ImageNamespaceSource(img));
        var dirs = new List<string> { "/" };
        var layouts = new HashSet<DirectoryLayout>();
        var ours = new Dictionary<string, List<(string, ulong)>>();
        for (int i = 0; i < dirs.Count && dirs.Count < 400; i++)
        {
            ulong ino = walker.Lookup(dirs[i]);
            var source = new ImageNamespaceSource(img);
            var core = source.ReadInode(ino);
            var (_, entries, layout) = walker.Reader.ReadAll(ino, core, source.ReadBlocks, dirs[i]);
            layouts.Add(layout);
            ours[dirs[i]] = entries.Select(e => (DirectoryFormat.Show(e.Name), e.Ino)).OrderBy(t => t.Item1, StringComparer.Ordinal).ToList();
            foreach (var e in entries)
                if (e.FileType == DirectoryFormat.FtDirectory) dirs.Add((dirs[i] == "/" ? "" : dirs[i]) + "/" + DirectoryFormat.Show(e.Name));
        }
        if (fixture == "aged-small")
            Assert.Superset(new HashSet<DirectoryLayout> { DirectoryLayout.Shortform, DirectoryLayout.Block, DirectoryLayout.Node }, layouts);
        var checkedDirs = ours.Keys.Take(60).Append("/feat/bigdir").Where(ours.ContainsKey).Distinct().ToList();
        if (fixture == "aged-small") Assert.Contains("/feat/bigdir", checkedDirs);
        string output = TreeFixtures.XfsDb(image, checkedDirs.Select(d => $"ls {d}").ToArray());
        var theirs = ParseXfsDbLs(output);
        foreach (var d in checkedDirs)
        {
            Assert.True(theirs.ContainsKey(d), $"xfs_db listed no {d}");
            Assert.Equal(theirs[d].OrderBy(t => t.Item1, StringComparer.Ordinal), ours[d]);
        }
    }

    static Dictionary<string, List<(string, ulong)>> ParseXfsDbLs(string output)
    {
        var result = new Dictionary<string, List<(string, ulong)>>();
        List<(string, ulong)>? current = null;
        foreach (var line in output.Split('\n'))
        {
            if (line.EndsWith(':'))
            {
                string dir = line[..^1];
                current = result[dir.Length > 1 ? dir.TrimEnd('/') : dir] = new();
                continue;
            }
            var cols = line.Split(' ', 6, StringSplitOptions.RemoveEmptyEntries);
            if (cols.Length < 6 || current == null) continue;
            string rest = line.Trim();
            // offset ino type hash namelen name (good)
            var parts = rest.Split(' ', StringSplitOptions.RemoveEmptyEntries);
            int namelen = int.Parse(parts[4], System.Globalization.CultureInfo.InvariantCulture);
            int at = rest.IndexOf(' ' + parts[4] + ' ', rest.IndexOf(parts[3], StringComparison.Ordinal), StringComparison.Ordinal) + parts[4].Length + 2;
            string name = rest.Substring(at, namelen);
            if (name is "." or "..") continue;
            current.Add((name, ulong.Parse(parts[1], System.Globalization.CultureInfo.InvariantCulture)));
        }
        return result;
    }
}
