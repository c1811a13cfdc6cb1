using Xfbtree.Btree;

namespace Xfbtree.Xfs.Trees;

/// <summary>An rmap operation that does not fit the tree's records (would overlap, is not mapped, ...). The tree is unchanged.</summary>
internal sealed class RmapOperationException(string message) : InvalidOperationException(message);

/// <summary>
/// The rmap record operations a live hook and a repair need, on any rmapbt (the on-disk AG tree or an in-memory
/// xfbtree; same ops, same engine): map (insert, merging with physically and logically contiguous neighbours
/// under XFS's rules), unmap (delete, trim or split), convert (flip the unwritten state of a sub-range, splitting
/// and re-merging), each in a non-shared form (no other mapping may overlap: what XFS uses for metadata owners,
/// attr forks, bmbt blocks and non-reflink filesystems) and a shared form (reflink: several owners, or one owner
/// at several offsets, may map the same blocks). Preconditions are checked before anything changes.
/// Records passed in use <see cref="RmapRecord.RawOffset"/> for the offset and its flag bits.
/// </summary>
internal sealed class RmapEditor
{
    readonly BtreeCursor<RmapbtOps> _cur;
    readonly byte[] _record = new byte[RmapbtOps.RecordLength];
    readonly byte[] _key = new byte[RmapbtOps.KeyLength];
    readonly byte[] _key2 = new byte[RmapbtOps.KeyLength];

    public RmapEditor(Btree<RmapbtOps> tree) { Tree = tree; _cur = tree.CreateCursor(); }

    /// <summary>The tree edited.</summary>
    public Btree<RmapbtOps> Tree { get; }
    /// <summary>The cursor used (release it before another cursor of the tree writes).</summary>
    public BtreeCursor<RmapbtOps> Cursor => _cur;

    const ulong FlagMask = RmapbtOps.AttrForkFlag | RmapbtOps.BmbtBlockFlag | RmapbtOps.UnwrittenFlag;
    const ulong ForkMask = RmapbtOps.AttrForkFlag | RmapbtOps.BmbtBlockFlag;

    static bool HasLogicalOffset(in RmapRecord r) => !RmapbtOps.IsSpecialOwner(r.Owner) && !r.IsBmbtBlock;
    static ulong End(in RmapRecord r) => (ulong)r.StartBlock + r.BlockCount;

    /// <summary>True when <paramref name="left"/> immediately followed by <paramref name="right"/> must be one record.</summary>
    public static bool Mergeable(in RmapRecord left, in RmapRecord right)
    {
        if (left.Owner != right.Owner || (left.RawOffset & FlagMask) != (right.RawOffset & FlagMask)) return false;
        if (End(left) != right.StartBlock) return false;
        if ((ulong)left.BlockCount + right.BlockCount > uint.MaxValue) return false;
        return !HasLogicalOffset(left) || left.Offset + left.BlockCount == right.Offset;
    }

    static void Validate(in RmapRecord r)
    {
        var ops = new RmapbtOps(false);
        Span<byte> b = stackalloc byte[RmapbtOps.RecordLength];
        r.Write(b);
        if (ops.ValidateRecord(b) is { } why) throw new ArgumentException($"invalid rmap {r}: {why}");
    }

    // ------------------------------------------------------------------ public operations

    /// <summary>Maps blocks no other record maps (non-shared), merging with contiguous neighbours.</summary>
    public void Map(RmapRecord r) => MapCore(r, shared: false);
    /// <summary>Maps blocks that other owners (or other offsets) may also map (reflink), merging with contiguous neighbours.</summary>
    public void MapShared(RmapRecord r) => MapCore(r, shared: true);
    /// <summary>Removes a mapping that lies inside one record (trimming or splitting it); non-shared lookup.</summary>
    public void Unmap(RmapRecord r) => UnmapCore(r, shared: false);
    /// <summary>Removes a mapping that lies inside one record, among overlapping (reflinked) records.</summary>
    public void UnmapShared(RmapRecord r) => UnmapCore(r, shared: true);
    /// <summary>Sets the unwritten state of a mapped range to that of <paramref name="r"/> (splitting and re-merging); non-shared.</summary>
    public void Convert(RmapRecord r) => ConvertCore(r, shared: false);
    /// <summary>Sets the unwritten state of a mapped range among overlapping (reflinked) records.</summary>
    public void ConvertShared(RmapRecord r) => ConvertCore(r, shared: true);

    /// <summary>Visits every record overlapping blocks [<paramref name="first"/>, <paramref name="last"/>] (all owners).</summary>
    public void QueryBlocks<TVisitor>(uint first, uint last, ref TVisitor visitor) where TVisitor : IBtreeRecordVisitor, allows ref struct
    {
        Span<byte> lo = stackalloc byte[RmapbtOps.KeyLength];
        Span<byte> hi = stackalloc byte[RmapbtOps.KeyLength];
        RmapRecord.WriteKey(lo, first, 0, 0);
        RmapRecord.WriteKey(hi, last, ulong.MaxValue, ulong.MaxValue);
        _cur.Query(lo, hi, ref visitor);
    }

    // ------------------------------------------------------------------ core

    void MapCore(RmapRecord r, bool shared)
    {
        Validate(r);
        // Conflicts: non-shared mappings own their blocks; shared ones must not repeat an existing mapping.
        var conflict = new ConflictFinder(r, anyOwner: !shared);
        QueryBlocks(r.StartBlock, (uint)(End(r) - 1), ref conflict);
        if (conflict.Found) throw new RmapOperationException($"map {r}: overlaps {conflict.Hit}");

        RmapRecord left = default, right = default;
        bool haveLeft = false, haveRight = false;
        if (r.StartBlock > 0)
        {
            var finder = new NeighbourFinder(r, leftSide: true);
            QueryBlocks(r.StartBlock - 1, r.StartBlock - 1, ref finder);
            if (finder.Found) { left = finder.Hit; haveLeft = true; }
        }
        if (End(r) <= uint.MaxValue)
        {
            var finder = new NeighbourFinder(r, leftSide: false);
            QueryBlocks((uint)End(r), (uint)End(r), ref finder);
            if (finder.Found) { right = finder.Hit; haveRight = true; }
        }
        if (haveLeft && haveRight && (ulong)left.BlockCount + r.BlockCount + right.BlockCount > uint.MaxValue) haveRight = false;

        if (haveLeft && haveRight)
        {
            DeleteExact(right);
            Replace(left, left with { BlockCount = left.BlockCount + r.BlockCount + right.BlockCount });
        }
        else if (haveLeft)
        {
            Replace(left, left with { BlockCount = left.BlockCount + r.BlockCount });
        }
        else if (haveRight)
        {
            DeleteExact(right);
            InsertExact(r with { BlockCount = r.BlockCount + right.BlockCount });
        }
        else
        {
            InsertExact(r);
        }
    }

    void UnmapCore(RmapRecord r, bool shared)
    {
        Validate(r);
        var rec = FindCovering(r, shared) ?? throw new RmapOperationException($"unmap {r}: not mapped by a single record");
        DeleteExact(rec);
        InsertPieces(rec, r);
    }

    void ConvertCore(RmapRecord r, bool shared)
    {
        Validate(r);
        var rec = FindCovering(r, shared) ?? throw new RmapOperationException($"convert {r}: not mapped by a single record");
        if (rec.IsUnwritten == r.IsUnwritten) return;
        DeleteExact(rec);
        InsertPieces(rec, r);
        ulong offset = HasLogicalOffset(rec) ? rec.Offset + (r.StartBlock - rec.StartBlock) : 0;
        var middle = new RmapRecord(r.StartBlock, r.BlockCount, rec.Owner, (rec.RawOffset & ForkMask) | (r.RawOffset & RmapbtOps.UnwrittenFlag) | offset);
        MapCore(middle, shared);
    }

    /// <summary>Re-inserts the parts of <paramref name="rec"/> outside <paramref name="cut"/> (they keep rec's flags).</summary>
    void InsertPieces(in RmapRecord rec, in RmapRecord cut)
    {
        if (rec.StartBlock < cut.StartBlock)
            InsertExact(rec with { BlockCount = cut.StartBlock - rec.StartBlock });
        if (End(cut) < End(rec))
        {
            ulong skip = End(cut) - rec.StartBlock;
            ulong raw = HasLogicalOffset(rec) ? (rec.RawOffset & FlagMask) | (rec.Offset + skip) : rec.RawOffset;
            InsertExact(new RmapRecord((uint)End(cut), (uint)(End(rec) - End(cut)), rec.Owner, raw));
        }
    }

    /// <summary>The record that maps all of <paramref name="r"/> (same owner, fork, bmbt flag and logical offset), if any.</summary>
    RmapRecord? FindCovering(in RmapRecord r, bool shared)
    {
        if (!shared)
        {
            // Non-shared records do not overlap: the record covering r's first block is the last one starting at or before it.
            RmapRecord.WriteKey(_key, r.StartBlock, r.Owner, r.RawOffset);
            if (!_cur.Lookup(_key, BtreeLookup.LessOrEqual)) return null;
            var c = RmapRecord.Read(_cur.Current);
            return Covers(c, r) ? c : null;
        }
        var finder = new CoveringFinder(r);
        QueryBlocks(r.StartBlock, r.StartBlock, ref finder);
        return finder.Found ? finder.Hit : null;
    }

    static bool Covers(in RmapRecord c, in RmapRecord r)
    {
        if (c.Owner != r.Owner || (c.RawOffset & ForkMask) != (r.RawOffset & ForkMask)) return false;
        if (c.StartBlock > r.StartBlock || End(c) < End(r)) return false;
        return !HasLogicalOffset(c) || c.Offset + (r.StartBlock - c.StartBlock) == r.Offset;
    }

    void DeleteExact(in RmapRecord r)
    {
        r.WriteKey(_key);
        if (!_cur.Lookup(_key, BtreeLookup.Equal)) throw new InvalidOperationException($"rmap record {r} vanished");
        _cur.Delete();
    }

    void InsertExact(in RmapRecord r)
    {
        r.Write(_record);
        if (!_cur.Insert(_record)) throw new RmapOperationException($"a record with the key of {r} exists");
    }

    /// <summary>Changes a record in place when its key stays, else deletes and re-inserts it (keys order records).</summary>
    void Replace(in RmapRecord old, in RmapRecord updated)
    {
        old.WriteKey(_key);
        updated.WriteKey(_key2);
        if (_key.AsSpan().SequenceEqual(_key2))
        {
            if (!_cur.Lookup(_key, BtreeLookup.Equal)) throw new InvalidOperationException($"rmap record {old} vanished");
            updated.Write(_record);
            _cur.Update(_record);
            return;
        }
        DeleteExact(old);
        InsertExact(updated);
    }

    // ------------------------------------------------------------------ visitors (structs: no allocation)

    struct ConflictFinder(RmapRecord r, bool anyOwner) : IBtreeRecordVisitor
    {
        public bool Found;
        public RmapRecord Hit;
        public bool Visit(ReadOnlySpan<byte> record)
        {
            var q = RmapRecord.Read(record);
            // Non-shared: anything overlapping conflicts. Shared: special owners own their blocks, and the same
            // owner may not map the same block at the same logical offset twice.
            bool conflict = anyOwner
                || RmapbtOps.IsSpecialOwner(q.Owner)
                || (q.Owner == r.Owner && (q.RawOffset & ForkMask) == (r.RawOffset & ForkMask)
                    && (!HasLogicalOffset(q) || (long)q.Offset - q.StartBlock == (long)r.Offset - r.StartBlock));
            if (!conflict) return true;
            Found = true;
            Hit = q;
            return false;
        }
    }

    struct NeighbourFinder(RmapRecord r, bool leftSide) : IBtreeRecordVisitor
    {
        public bool Found;
        public RmapRecord Hit;
        public bool Visit(ReadOnlySpan<byte> record)
        {
            var q = RmapRecord.Read(record);
            bool ok = leftSide ? Mergeable(q, r) : Mergeable(r, q);
            if (!ok) return true;
            Found = true;
            Hit = q;
            return false;
        }
    }

    struct CoveringFinder(RmapRecord r) : IBtreeRecordVisitor
    {
        public bool Found;
        public RmapRecord Hit;
        public bool Visit(ReadOnlySpan<byte> record)
        {
            var q = RmapRecord.Read(record);
            if (!Covers(q, r)) return true;
            Found = true;
            Hit = q;
            return false;
        }
    }
}
