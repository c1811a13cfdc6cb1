using Xfbtree.Buffers;

namespace Xfbtree.Btree;

/// <summary>Result of a structure check.</summary>
public sealed class BtreeCheckReport
{
    internal BtreeCheckReport(string tree) => Tree = tree;
    /// <summary>Tree name.</summary>
    public string Tree { get; }
    /// <summary>Every violation found (capped at <see cref="MaxViolations"/>).</summary>
    public List<string> Violations { get; } = new();
    /// <summary>Cap on reported violations (the walk itself continues).</summary>
    public const int MaxViolations = 1000;
    /// <summary>Violations found, including those past the cap.</summary>
    public long ViolationCount { get; internal set; }
    /// <summary>Leaf records seen.</summary>
    public long Records { get; internal set; }
    /// <summary>Blocks visited.</summary>
    public long Blocks { get; internal set; }
    /// <summary>Blocks per level, leaves first.</summary>
    public long[] BlocksPerLevel { get; internal set; } = [];
    /// <summary>Height from the root location.</summary>
    public int Height { get; internal set; }
    /// <summary>True when nothing was wrong.</summary>
    public bool IsClean => ViolationCount == 0;

    internal void Add(string violation)
    {
        ViolationCount++;
        if (Violations.Count < MaxViolations) Violations.Add(violation);
    }

    /// <inheritdoc/>
    public override string ToString()
        => IsClean ? $"{Tree}: clean, {Records} records in {Blocks} blocks, height {Height}"
                   : $"{Tree}: {ViolationCount} violations: {string.Join("; ", Violations.Take(20))}";
}

/// <summary>
/// Scrub: walks a whole tree depth first and reports every violation: key order within and across blocks,
/// parent low keys equal to the child's low key, parent high keys equal to the subtree maximum, sibling
/// pointers consistent per level, equal leaf depth (levels), numrecs within bounds (minrecs except the root),
/// magic/owner/CRC/blkno (via the verifier), no block visited twice, and record validity per ops.
/// A block that cannot be read is reported and its subtree skipped; work is bounded by the blocks visited.
/// </summary>
internal sealed unsafe class BtreeChecker<TOps> where TOps : struct, IBtreeOps
{
    readonly Btree<TOps> _tree;
    readonly TOps _ops;
    readonly BtreeGeometry _geo;
    readonly BtreeCheckReport _report;
    readonly HashSet<long> _visited = new();
    readonly long _maxBlocks;
    long[] _prevBlock = [];
    long[] _prevRight = [];
    long[] _blocksPerLevel = [];
    readonly byte[] _lastRecord;
    bool _haveLastRecord;
    int _height;

    readonly BtreeRecordCallback? _onRecord;

    public BtreeChecker(Btree<TOps> tree, long maxBlocks, BtreeRecordCallback? onRecord = null)
    {
        _onRecord = onRecord;
        _tree = tree;
        _ops = tree.Ops;
        _geo = tree.Geometry;
        _report = new BtreeCheckReport(tree.Name);
        _maxBlocks = maxBlocks;
        _lastRecord = new byte[_geo.RecordSize];
    }

    public BtreeCheckReport Run()
    {
        _height = _tree.Root.Height;
        _report.Height = _height;
        if (_height < 1 || _height > _geo.MaxLevels)
        {
            _report.Add($"height {_height} outside 1..{_geo.MaxLevels}");
            return _report;
        }
        if (_tree.Root.IsImage && _height < 2)
        {
            _report.Add("inode fork btree root at level 0");
            return _report;
        }
        _prevBlock = new long[_height];
        _prevRight = new long[_height];
        _blocksPerLevel = new long[_height];
        Array.Fill(_prevBlock, BtreeHeader.NullPointer);
        Array.Fill(_prevRight, BtreeHeader.NullPointer);
        CheckBlock(_height - 1, _tree.Root.Pointer, default, default, hasParent: false);
        for (int l = 0; l < _height; l++)
            if (_prevRight[l] != BtreeHeader.NullPointer)
                _report.Add($"level {l}: last block {_prevBlock[l]} has right sibling {_prevRight[l]}");
        _report.BlocksPerLevel = _blocksPerLevel;
        return _report;
    }

    string Where(int level, long ptr) => $"level {level} block {ptr}";

    void CheckBlock(int level, long ptr, ReadOnlySpan<byte> parentLow, ReadOnlySpan<byte> parentHigh, bool hasParent)
    {
        bool isRoot = !hasParent;
        bool image = isRoot && _tree.Root.IsImage;
        var store = _tree.Store;
        BtreeBlockRef block;
        int maxRecs = _geo.MaxRecords(level);
        ReadOnlySpan<byte> b;
        if (image)
        {
            var root = (BtreeInodeRoot)_tree.Root;
            maxRecs = root.MaxRecords;
            block = default;
            int imageBytes = Math.Max(_geo.BlockSize, _geo.PointerOffset(maxRecs, maxRecs));
            System.Diagnostics.Debug.Assert(root.ImageLength >= imageBytes, "inode root image shorter than its view");
            b = new ReadOnlySpan<byte>(root.ImageData, imageBytes);
        }
        else
        {
            if (!store.IsValidPointer(ptr)) { _report.Add($"{Where(level, ptr)}: pointer out of range"); return; }
            if (!_visited.Add(ptr)) { _report.Add($"{Where(level, ptr)}: block reached twice (cycle or cross-link)"); return; }
            if (_visited.Count > _maxBlocks) { _report.Add($"more than {_maxBlocks} blocks: walk stopped"); return; }
            try { block = store.Read(ptr, _tree.Verifier); }
            catch (CorruptionException e) { _report.Add($"{Where(level, ptr)}: {e.Message}"); return; }
            System.Diagnostics.Debug.Assert(!block.IsNull, "store returned a null block");
            b = new ReadOnlySpan<byte>(block.Data, _geo.BlockSize);
        }
        try
        {
            _report.Blocks++;
            _blocksPerLevel[level]++;
            int lev = BtreeHeader.Level(b);
            if (lev != level) { _report.Add($"{Where(level, ptr)}: level field {lev}"); return; }
            int n = BtreeHeader.NumRecords(b);
            if (n > maxRecs) { _report.Add($"{Where(level, ptr)}: numrecs {n} > maxrecs {maxRecs}"); return; }
            // The only child of an inode-fork root may be short: it holds what did not fit in the inode.
            bool onlyChildOfInodeRoot = level == _height - 2 && _tree.Root is BtreeInodeRoot { NumRecords: 1 };
            if (!isRoot && !onlyChildOfInodeRoot && n < _geo.MinRecords(level)) _report.Add($"{Where(level, ptr)}: numrecs {n} < minrecs {_geo.MinRecords(level)}");
            if (isRoot && level > 0 && n < 1) { _report.Add($"{Where(level, ptr)}: empty root node"); return; }
            if (!image)
            {
                bool lf = _geo.LongPointers;
                long left = BtreeHeader.LeftSibling(b, lf), right = BtreeHeader.RightSibling(b, lf);
                if (left != _prevBlock[level]) _report.Add($"{Where(level, ptr)}: left sibling {left}, expected {_prevBlock[level]}");
                if (_prevBlock[level] != BtreeHeader.NullPointer && _prevRight[level] != ptr)
                    _report.Add($"level {level} block {_prevBlock[level]}: right sibling {_prevRight[level]}, expected {ptr}");
                _prevBlock[level] = ptr;
                _prevRight[level] = right;
            }
            int ks = _geo.KeySize;
            Span<byte> scratch = stackalloc byte[3 * BtreeGeometry.MaxKeySize];
            var low = scratch[..ks];
            var high = scratch.Slice(BtreeGeometry.MaxKeySize, ks);
            var tmp = scratch.Slice(2 * BtreeGeometry.MaxKeySize, ks);
            if (level == 0)
            {
                for (int i = 0; i < n; i++)
                {
                    var rec = b.Slice(_geo.RecordOffset(i), _geo.RecordSize);
                    string? why = _ops.ValidateRecord(rec);
                    if (why != null) _report.Add($"{Where(level, ptr)} record {i}: {why}");
                    if (_haveLastRecord && !_ops.RecordsInOrder(_lastRecord, rec)) _report.Add($"{Where(level, ptr)} record {i}: out of order");
                    rec.CopyTo(_lastRecord);
                    _onRecord?.Invoke(rec);
                    _haveLastRecord = true;
                }
                _report.Records += n;
            }
            else
            {
                var childMax = _geo.PointerOffset(0, maxRecs);
                for (int i = 0; i < n; i++)
                {
                    var k = b.Slice(_geo.KeyOffset(i), ks);
                    if (i > 0 && _ops.CompareKeys(b.Slice(_geo.KeyOffset(i - 1), ks), k) >= 0) _report.Add($"{Where(level, ptr)} key {i}: not above key {i - 1}");
                    var hk = _geo.Overlapping ? b.Slice(_geo.KeyOffset(i) + ks, ks) : default;
                    if (_geo.Overlapping && _ops.CompareKeys(hk, k) < 0) _report.Add($"{Where(level, ptr)} key {i}: high key below low key");
                    long child = BtreeHeader.ReadPointer(b[(childMax + i * _geo.PointerSize)..], _geo.LongPointers);
                    CheckBlock(level - 1, child, k, hk, hasParent: true);
                }
            }
            if (hasParent && n > 0)
            {
                BtreeKeys.ComputeBlockKeys(_ops, _geo, b, level, low, high, tmp);
                if (_ops.CompareKeys(low, parentLow) != 0) _report.Add($"{Where(level, ptr)}: parent low key differs from the block's first key");
                if (_geo.Overlapping && _ops.CompareKeys(high, parentHigh) != 0) _report.Add($"{Where(level, ptr)}: parent high key differs from the subtree maximum");
            }
        }
        finally
        {
            if (!image) store.Release(block);
        }
    }
}
