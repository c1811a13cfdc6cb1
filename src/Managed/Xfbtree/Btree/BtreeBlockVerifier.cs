using Xfbtree.Buffers;

namespace Xfbtree.Btree;

/// <summary>
/// Context-free checks of one btree block, run when a block is read from its target: magic, CRC (on disk),
/// blkno = the block's own address, uuid, owner, level below maxlevels, numrecs within maxrecs, sibling
/// pointers in range and not self-referential. The cursor adds the context checks (expected level,
/// non-empty non-root blocks, sibling agreement) every time it enters a block.
/// </summary>
public sealed class BtreeBlockVerifier : IBufferVerifier
{
    readonly byte[] _uuid;

    /// <summary>Checks blocks of a tree named <paramref name="name"/> with magic <paramref name="magic"/>: header fields, UUID, owner (when <paramref name="checkOwner"/>) and CRC (when the store checks CRCs).</summary>
    public BtreeBlockVerifier(string name, uint magic, BtreeGeometry geometry, BtreeBlockStore store, ReadOnlySpan<byte> uuid, long owner, bool checkOwner = true)
    {
        Name = name;
        Magic = magic;
        Geometry = geometry;
        Store = store;
        _uuid = uuid.ToArray();
        Owner = owner;
        CheckOwner = checkOwner;
        if (_uuid.Length != 16) throw new ArgumentException("uuid must be 16 bytes", nameof(uuid));
    }

    /// <summary>The tree's name in messages.</summary>
    public string Name { get; }
    /// <summary>The magic number every block must carry.</summary>
    public uint Magic { get; }
    /// <summary>The tree's block geometry (bounds for level and numrecs).</summary>
    public BtreeGeometry Geometry { get; }
    /// <summary>The store whose pointers the sibling checks use.</summary>
    public BtreeBlockStore Store { get; }
    /// <summary>The owner every block header must name.</summary>
    public long Owner { get; }
    /// <summary>Whether the owner field is checked.</summary>
    public bool CheckOwner { get; }
    /// <summary>Metadata UUID stamped in every block.</summary>
    public ReadOnlySpan<byte> Uuid => _uuid;

    /// <summary>Throws <see cref="CorruptionException"/> when the block fails a check.</summary>
    public void Verify(ReadOnlySpan<byte> block, long daddr)
    {
        bool lf = Geometry.LongPointers;
        if (block.Length < Geometry.BlockSize) throw new CorruptionException(Name, daddr, "short block");
        block = block[..Geometry.BlockSize];
        if (BtreeHeader.Magic(block) != Magic) throw new CorruptionException(Name, daddr, $"bad magic 0x{BtreeHeader.Magic(block):x8}");
        if (Store.ChecksCrc && !XfsCrc.Verify(block, Geometry.CrcOffset)) throw new CorruptionException(Name, daddr, "bad CRC");
        if (BtreeHeader.BlockNumber(block, lf) != daddr) throw new CorruptionException(Name, daddr, $"blkno {BtreeHeader.BlockNumber(block, lf)} is not the block's address");
        if (!BtreeHeader.Uuid(block, lf).SequenceEqual(_uuid)) throw new CorruptionException(Name, daddr, "uuid mismatch");
        if (CheckOwner && BtreeHeader.Owner(block, lf) != Owner) throw new CorruptionException(Name, daddr, $"owner {BtreeHeader.Owner(block, lf)}, expected {Owner}");
        int level = BtreeHeader.Level(block);
        if (level >= Geometry.MaxLevels) throw new CorruptionException(Name, daddr, $"level {level} >= maxlevels {Geometry.MaxLevels}");
        int n = BtreeHeader.NumRecords(block);
        if (n > Geometry.MaxRecords(level)) throw new CorruptionException(Name, daddr, $"numrecs {n} > maxrecs {Geometry.MaxRecords(level)}");
        CheckSibling(BtreeHeader.LeftSibling(block, lf), daddr, "left");
        CheckSibling(BtreeHeader.RightSibling(block, lf), daddr, "right");
    }

    void CheckSibling(long sibling, long daddr, string which)
    {
        if (sibling == BtreeHeader.NullPointer) return;
        if (!Store.IsValidPointer(sibling)) throw new CorruptionException(Name, daddr, $"{which} sibling {sibling} out of range");
        if (Store.PointerToDaddr(sibling) == daddr) throw new CorruptionException(Name, daddr, $"{which} sibling points to itself");
    }

    /// <summary>Recomputes the CRC of an on-disk block before it is written (no-op in memory).</summary>
    public void Finish(Span<byte> block)
    {
        if (Store.ChecksCrc) XfsCrc.Update(block[..Geometry.BlockSize], Geometry.CrcOffset);
    }

    void IBufferVerifier.VerifyRead(BlockBuffer buffer) => Verify(buffer.Span, buffer.Daddr);

    void IBufferVerifier.PrepareWrite(BlockBuffer buffer)
    {
        // Structure check before the write (catches engine bugs and memory corruption), then the CRC.
        var span = buffer.Span;
        Finish(span);
        Verify(span, buffer.Daddr);
    }
}
