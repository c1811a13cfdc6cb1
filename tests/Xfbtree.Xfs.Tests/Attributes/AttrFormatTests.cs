using System.Buffers.Binary;
using Xfbtree.Xfs.Attributes;
using Xfbtree.Xfs.Tests.Repair;
using Xfbtree.Xfs.Tests.Trees;
using Xfbtree.Xfs.Tests.Write;
using Xfbtree.Xfs.Write;

namespace Xfbtree.Xfs.Tests.Attributes;

/// <summary>
/// The attribute format code alone (leaf, node, remote and shortform round trips; damaged structures refused with a
/// reason) and the engine meeting a damaged leaf on disk (Corrupt, nothing changed, the engine still usable).
/// </summary>
public sealed class AttrFormatTests
{
    static readonly byte[] Uuid = Enumerable.Range(1, 16).Select(i => (byte)i).ToArray();

    static List<AttrEntry> Entries(int count, int blockSize)
    {
        var rng = new Random(count);
        var list = new List<AttrEntry>();
        for (int i = 0; i < count; i++)
        {
            var value = new byte[i % 7 == 3 ? blockSize : rng.Next(0, 60)];
            rng.NextBytes(value);
            var e = new AttrEntry((byte)(i % 3 == 1 ? AttrFormat.FlagRoot : i % 3 == 2 ? AttrFormat.FlagSecure : 0), System.Text.Encoding.ASCII.GetBytes($"name{i}"), value);
            if (!AttrFormat.IsLocalInLeaf(e.Name.Length, e.ValueLength, blockSize)) e.RemoteBlock = (uint)(100 + i);
            list.Add(e);
        }
        return list;
    }

    [Theory]
    [InlineData(1024)]
    [InlineData(4096)]
    [InlineData(65536)]
    public void LeafRoundTripsAndDamageIsRefused(int blockSize)
    {
        var leaves = AttrTreeLayout.PackLeaves(Entries(40, blockSize), blockSize);
        var block = new byte[blockSize];
        AttrBlocks.FormatLeaf(block, leaves[0], 4242, 77, Uuid, 5, 0, 0);
        var parsed = AttrBlocks.ParseLeaf(block, 4242, 77, Uuid);
        Assert.Equal(5u, parsed.Forw);
        Assert.Equal(leaves[0].Count, parsed.Entries.Count);
        for (int i = 0; i < parsed.Entries.Count; i++)
        {
            var a = leaves[0][i];
            var b = parsed.Entries[i];
            Assert.True(a.Name.AsSpan().SequenceEqual(b.Name));
            Assert.Equal(a.Flags, b.Flags);
            Assert.Equal(a.ValueLength, b.ValueLength);
            if (b.Value is null) Assert.Equal(a.RemoteBlock, b.RemoteBlock);
            else Assert.True(a.Value.AsSpan().SequenceEqual(b.Value));
        }
        // usedbytes and the free map describe the compacted block.
        int used = BinaryPrimitives.ReadUInt16BigEndian(block.AsSpan(58));
        Assert.Equal(leaves[0].Sum(e => AttrBlocks.LeafBytes(e, blockSize) - AttrFormat.LeafEntrySize), used);

        void Refused(Action<byte[]> damage, string why)
        {
            var copy = (byte[])block.Clone();
            damage(copy);
            var e = Record.Exception(() => AttrBlocks.ParseLeaf(copy, 4242, 77, Uuid));
            Assert.True(e is AttrFormatException, $"damaged {why}: {(e is null ? "accepted" : e.GetType().Name)}");
        }
        Refused(b => BinaryPrimitives.WriteInt64BigEndian(b.AsSpan(16), 1), "blkno");
        Refused(b => BinaryPrimitives.WriteUInt64BigEndian(b.AsSpan(48), 78), "owner");
        Refused(b => b[40] ^= 1, "uuid");
        Refused(b => BinaryPrimitives.WriteUInt16BigEndian(b.AsSpan(56), 60000), "count");
        Refused(b => BinaryPrimitives.WriteUInt16BigEndian(b.AsSpan(60), 10), "firstused");
        Refused(b => BinaryPrimitives.WriteUInt32BigEndian(b.AsSpan(80), 0xFFFFFFFF), "hash order / hash");
        Refused(b => BinaryPrimitives.WriteUInt16BigEndian(b.AsSpan(84), 8), "name offset below firstused");
        Assert.Throws<AttrFormatException>(() => AttrBlocks.ParseLeaf(block, 4242, 77, new byte[16]));
    }

    [Fact]
    public void NodeAndRemoteRoundTrip()
    {
        var block = new byte[4096];
        var items = new List<(uint, uint)> { (10, 3), (10, 4), (99, 7) };
        AttrBlocks.FormatNode(block, 1, items, 800, 9, Uuid, 0, 0, 0);
        var node = AttrBlocks.ParseNode(block, 800, 9, Uuid);
        Assert.Equal(1, node.Level);
        Assert.Equal(items, node.Entries);
        BinaryPrimitives.WriteUInt32BigEndian(block.AsSpan(64), 100);
        Assert.Throws<AttrFormatException>(() => AttrBlocks.ParseNode(block, 800, 9, Uuid));

        var value = new byte[9000];
        new Random(3).NextBytes(value);
        int blocks = AttrFormat.RemoteBlocks(value.Length, 4096);
        Assert.Equal(3, blocks);
        var got = new byte[value.Length];
        for (int i = 0; i < blocks; i++)
        {
            AttrBlocks.FormatRemote(block, value, i, 1000 + i * 8, 9, Uuid);
            int offset = i * (4096 - 56), bytes = Math.Min(4096 - 56, value.Length - offset);
            Assert.Null(AttrBlocks.CheckRemote(block, offset, bytes, 1000 + i * 8, 9, Uuid));
            Assert.NotNull(AttrBlocks.CheckRemote(block, offset, bytes, 1000 + i * 8 + 1, 9, Uuid));
            Assert.Equal(ulong.MaxValue, BinaryPrimitives.ReadUInt64BigEndian(block.AsSpan(48)));
            block.AsSpan(56, bytes).CopyTo(got.AsSpan(offset));
        }
        Assert.Equal(value, got);
    }

    [Fact]
    public void ShortformRoundTripsAndDamageIsRefused()
    {
        var entries = new List<AttrEntry> { new(0, "a"u8.ToArray(), "1"u8.ToArray()), new(AttrFormat.FlagSecure, "selinux"u8.ToArray(), "label"u8.ToArray()) };
        var fork = new byte[64];
        ShortformAttributes.Write(fork, entries);
        var parsed = ShortformAttributes.Parse(fork);
        Assert.Equal(2, parsed.Count);
        Assert.Equal("label"u8.ToArray(), parsed[1].Value);
        fork[2] = 3; // count larger than the entries
        Assert.Throws<AttrFormatException>(() => ShortformAttributes.Parse(fork));
        fork[2] = 2;
        BinaryPrimitives.WriteUInt16BigEndian(fork, 200); // totsize beyond the fork
        Assert.Throws<AttrFormatException>(() => ShortformAttributes.Parse(fork));
    }

    [Fact]
    public void NamesSplitAsTheSyscallsDo()
    {
        var n = XattrName.Parse("security.selinux"u8, out var p);
        Assert.Equal(XattrNameProblem.None, p);
        Assert.Equal(XattrNamespace.Security, n.Namespace);
        Assert.Equal("selinux"u8.ToArray(), n.Name);
        Assert.Equal("security.selinux", n.FullName);
        XattrName.Parse("user."u8, out p);
        Assert.Equal(XattrNameProblem.EmptySuffix, p);
        XattrName.Parse("system.posix_acl_access"u8, out p);
        Assert.Equal(XattrNameProblem.UnsupportedNamespace, p);
        XattrName.Parse(new byte[256], out p);
        Assert.Equal(XattrNameProblem.BadLength, p);
    }

    /// <summary>A leaf damaged on disk (xfs_db writes a bad firstused with a good CRC): every call on the inode is
    /// Corrupt with one line, nothing changes, other inodes keep working, the engine closes cleanly.</summary>
    [Fact]
    public void DamagedLeafOnDiskIsCorruptNotACrash()
    {
        using var scratch = new RepairScratch();
        string image = scratch.CopyFixture("fresh-4ag");
        ulong ino;
        using (var fs = XfsFileSystem.Open(image, WriteEngineTestSupport.Fast))
        {
            ino = fs.Create("/damaged");
            for (int i = 0; i < 30; i++) fs.SetXattr(ino, $"user.n{i}", new byte[100]);
            Assert.Equal("leaf", fs.Attributes.DescribeForm(ino));
            fs.Close();
        }
        TreeFixtures.Run(TreeFixtures.Tool("xfs_db"), ["-x", "-c", $"inode {ino}", "-c", "ablock 0", "-c", "write -d hdr.firstused 10", image]);
        using (var fs = XfsFileSystem.Open(image, WriteEngineTestSupport.Fast))
        {
            foreach (Action call in new Action[]
            {
                () => fs.GetXattr(ino, "user.n1", new byte[200]),
                () => fs.SetXattr(ino, "user.new", "x"u8),
                () => fs.RemoveXattr(ino, "user.n2"),
                () => fs.ListXattr(ino, []),
            })
            {
                var e = Assert.Throws<XfsWriteException>(call);
                Assert.Equal(WriteErrorKind.Corrupt, e.Kind);
                Assert.DoesNotContain("\n", e.Message, StringComparison.Ordinal);
            }
            ulong other = fs.Create("/healthy");
            fs.SetXattr(other, "user.ok", "1"u8);
            Assert.Equal(1, fs.GetXattr(other, "user.ok", new byte[4]));
            fs.Unlink("/healthy");
            fs.Close();
        }
        // The damaged leaf is as xfs_db left it: the engine changed nothing there.
        var damagedLeaf = TreeFixtures.XfsDb(image, $"inode {ino}", "ablock 0", "print hdr.firstused");
        Assert.Contains("= 10", damagedLeaf, StringComparison.Ordinal);
    }

    /// <summary>
    /// Random removes and adds on one leaf through <see cref="AttrLeafEditor"/> (compactions included): after each
    /// the block parses back to the model's entries in hash order, usedbytes is the sum of the name entries,
    /// firstused the lowest of them, and no free-map region overlaps the entry table or a name entry.
    /// </summary>
    [Theory]
    [InlineData(1024, 1)]
    [InlineData(4096, 2)]
    [InlineData(65536, 3)]
    public void LeafEditorKeepsTheHeaderTrue(int blockSize, int seed)
    {
        var rng = new Random(seed);
        var model = new List<AttrEntry>();
        var block = new byte[blockSize];
        var scratch = new byte[blockSize];
        AttrBlocks.FormatLeaf(block, model, 4242, 77, Uuid, 0, 0, 0);
        int adds = 0, full = 0, removes = 0, compactions = 0;
        int steps = blockSize == 65536 ? 500 : 3000;
        for (int step = 0; step < steps; step++)
        {
            if (model.Count > 0 && rng.Next(100) < 45)
            {
                int at = rng.Next(model.Count);
                AttrLeafEditor.Remove(block, at);
                model.RemoveAt(at);
                removes++;
            }
            else
            {
                var value = new byte[rng.Next(10) == 0 ? blockSize : rng.Next(0, blockSize / 16)];
                rng.NextBytes(value);
                var e = new AttrEntry((byte)(step % 3 == 1 ? AttrFormat.FlagRoot : 0), System.Text.Encoding.ASCII.GetBytes($"e{step}-{rng.Next()}"), value);
                if (!AttrFormat.IsLocalInLeaf(e.Name.Length, e.ValueLength, blockSize)) e.RemoteBlock = (uint)(1000 + step);
                var copy = (byte[])block.Clone();
                int at = AttrLeafEditor.InsertIndex(block, e.Hash);
                bool holesBefore = block[AttrFormat.OffHoles] != 0;
                if (AttrLeafEditor.TryAdd(block, at, e, scratch))
                {
                    model.Insert(at, e);
                    adds++;
                    if (holesBefore && block[AttrFormat.OffHoles] == 0) compactions++;
                }
                else
                {
                    // Not even a compacted block holds it: the free bytes really are too few.
                    int free = blockSize - AttrFormat.LeafHeaderSize - model.Sum(x => AttrBlocks.LeafBytes(x, blockSize));
                    Assert.True(free < AttrBlocks.LeafBytes(e, blockSize), $"step {step}: {free} free bytes and the entry of {AttrBlocks.LeafBytes(e, blockSize)} was refused");
                    copy.CopyTo(block, 0);
                    full++;
                }
            }
            var parsed = AttrBlocks.ParseLeaf(block, 4242, 77, Uuid);
            Assert.Null(AttrLeafEditor.CheckFreeMap(block));
            Assert.Equal(model.Count, parsed.Entries.Count);
            for (int i = 0; i < model.Count; i++)
            {
                Assert.True(model[i].Name.AsSpan().SequenceEqual(parsed.Entries[i].Name), $"step {step}: entry {i}");
                Assert.Equal(model[i].ValueLength, parsed.Entries[i].ValueLength);
                if (parsed.Entries[i].Value is { } v) Assert.True(model[i].Value.AsSpan().SequenceEqual(v));
                else Assert.Equal(model[i].RemoteBlock, parsed.Entries[i].RemoteBlock);
            }
            // The bytes in use: the header, the table, every name entry; free-map regions must avoid them all.
            var inUse = new bool[blockSize];
            int tableEnd = AttrFormat.LeafHeaderSize + model.Count * AttrFormat.LeafEntrySize;
            for (int b = 0; b < tableEnd; b++) inUse[b] = true;
            int used = 0, first = blockSize;
            for (int i = 0; i < model.Count; i++)
            {
                int nameIdx = BinaryPrimitives.ReadUInt16BigEndian(block.AsSpan(AttrFormat.LeafHeaderSize + i * AttrFormat.LeafEntrySize + 4));
                int size = AttrLeafEditor.NameEntrySize(block, i);
                used += size;
                first = Math.Min(first, nameIdx);
                for (int b = nameIdx; b < nameIdx + size; b++)
                {
                    Assert.False(inUse[b], $"step {step}: name entry {i} overlaps other bytes in use at {b}");
                    inUse[b] = true;
                }
            }
            Assert.Equal(used, BinaryPrimitives.ReadUInt16BigEndian(block.AsSpan(AttrFormat.OffUsedBytes)));
            int storedFirst = BinaryPrimitives.ReadUInt16BigEndian(block.AsSpan(AttrFormat.OffFirstUsed));
            Assert.Equal(first, storedFirst == 0 && blockSize == 65536 ? 65536 : storedFirst);
            for (int slot = 0; slot < AttrLeafEditor.FreeMapSlots; slot++)
            {
                int fb = BinaryPrimitives.ReadUInt16BigEndian(block.AsSpan(AttrFormat.OffFreeMap + slot * 4));
                int fs = BinaryPrimitives.ReadUInt16BigEndian(block.AsSpan(AttrFormat.OffFreeMap + slot * 4 + 2));
                for (int b = fb; b < fb + fs; b++) Assert.False(inUse[b], $"step {step}: free map slot {slot} ({fb}+{fs}) covers byte {b} in use");
            }
        }
        Assert.True(adds > 100 && removes > 100 && full > 0 && compactions > 0, $"adds {adds}, removes {removes}, refusals {full}, compactions {compactions}: the run did not cover every path");
    }

    /// <summary>A leaf whose free map the kernel's verifier refuses (an unaligned region), written by xfs_db with a
    /// good CRC: reads and in-place changes alike are Corrupt and change nothing.</summary>
    [Fact]
    public void LeafWithBadFreeMapIsCorrupt()
    {
        using var scratch = new RepairScratch();
        string image = scratch.CopyFixture("fresh-4ag");
        ulong ino;
        using (var fs = XfsFileSystem.Open(image, WriteEngineTestSupport.Fast))
        {
            ino = fs.Create("/bad-freemap");
            for (int i = 0; i < 30; i++) fs.SetXattr(ino, $"user.n{i}", new byte[100]);
            Assert.Equal("leaf", fs.Attributes.DescribeForm(ino));
            fs.Close();
        }
        TreeFixtures.Run(TreeFixtures.Tool("xfs_db"), ["-x", "-c", $"inode {ino}", "-c", "ablock 0", "-c", "write -d hdr.freemap[0].base 322", image]);
        using (var fs = XfsFileSystem.Open(image, WriteEngineTestSupport.Fast))
        {
            foreach (Action call in new Action[]
            {
                () => fs.GetXattr(ino, "user.n1", new byte[200]),
                () => fs.SetXattr(ino, "user.new", "x"u8),
                () => fs.SetXattr(ino, "user.n3", "y"u8),
                () => fs.RemoveXattr(ino, "user.n2"),
            })
            {
                var e = Assert.Throws<XfsWriteException>(call);
                Assert.Equal(WriteErrorKind.Corrupt, e.Kind);
                Assert.Contains("free map", e.Message, StringComparison.Ordinal);
            }
            fs.Close();
        }
        Assert.Contains("= 322", TreeFixtures.XfsDb(image, $"inode {ino}", "ablock 0", "print hdr.freemap[0].base"), StringComparison.Ordinal);
    }
}
