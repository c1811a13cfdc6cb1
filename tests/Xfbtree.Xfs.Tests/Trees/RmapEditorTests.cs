using System.Buffers.Binary;
using CsCheck;
using Microsoft.Win32.SafeHandles;
using Xfbtree.Btree;
using Xfbtree.Buffers;
using Xfbtree.InMemory;
using Xfbtree.Storage;
using Xfbtree.Xfs.Trees;
using Xunit.Abstractions;

namespace Xfbtree.Xfs.Tests.Trees;

/// <summary>One rmap operation of a model run (readable when CsCheck shrinks a failure).</summary>
public sealed record RmapStep(string Op, uint Start, uint Len, ulong Owner, ulong RawOffset)
{
    public RmapRecord Record => new(Start, Len, Owner, RawOffset);
    public override string ToString()
    {
        string owner = RmapbtOps.IsSpecialOwner(Owner) ? $"own{(long)Owner}" : $"ino{Owner}";
        string flags = ((RawOffset >> 63) & 1) == 1 ? "A" : "";
        flags += ((RawOffset >> 62) & 1) == 1 ? "B" : "";
        flags += ((RawOffset >> 61) & 1) == 1 ? "U" : "";
        return $"{Op}({Start}+{Len} {owner} off {RawOffset & RmapbtOps.OffsetMask}{(flags.Length > 0 ? " " + flags : "")})";
    }
}

/// <summary>
/// Per-block interval model of an rmap: a set of facts (block, owner, fork, bmbt flag, logical offset) with an
/// unwritten attribute. Expected records are the maximal runs of facts under XFS's merge rule.
/// </summary>
internal sealed class RmapModel
{
    readonly Dictionary<(uint B, ulong Owner, ulong Fork, ulong Logical), bool> _facts = new();
    readonly Dictionary<uint, int> _perBlock = new();
    readonly HashSet<uint> _special = new();

    static ulong Fork(ulong raw) => raw & (RmapbtOps.AttrForkFlag | RmapbtOps.BmbtBlockFlag);
    static bool Logical(ulong owner, ulong raw) => !RmapbtOps.IsSpecialOwner(owner) && (raw & RmapbtOps.BmbtBlockFlag) == 0;
    static ulong LogicalAt(RmapRecord r, uint b) => Logical(r.Owner, r.RawOffset) ? r.Offset + (b - r.StartBlock) : 0;
    (uint, ulong, ulong, ulong) Id(RmapRecord r, uint b) => (b, r.Owner, Fork(r.RawOffset), LogicalAt(r, b));

    /// <summary>Applies a step; false when its precondition fails (the tree must then throw and stay unchanged).</summary>
    public bool Apply(RmapStep s)
    {
        var r = s.Record;
        switch (s.Op)
        {
            case "map":
                for (uint b = r.StartBlock; b < r.StartBlock + r.BlockCount; b++)
                    if (_perBlock.GetValueOrDefault(b) > 0) return false;
                break;
            case "mapShared":
                for (uint b = r.StartBlock; b < r.StartBlock + r.BlockCount; b++)
                    if (_facts.ContainsKey(Id(r, b)) || _special.Contains(b)) return false;
                break;
            default: // unmap / convert (shared or not): every block mapped the same way, one unwritten state
                {
                    bool? state = null;
                    for (uint b = r.StartBlock; b < r.StartBlock + r.BlockCount; b++)
                    {
                        if (!_facts.TryGetValue(Id(r, b), out bool u)) return false;
                        if (state.HasValue && state != u) return false;
                        state = u;
                    }
                    if (!s.Op.StartsWith("unmap", StringComparison.Ordinal) || s.Op.EndsWith("Shared", StringComparison.Ordinal)) break;
                    // Non-shared unmap/convert find the record by an LE lookup: a record of another owner covering the
                    // first block wins, which only happens when blocks are shared; the model mirrors the non-shared world.
                    break;
                }
        }
        for (uint b = r.StartBlock; b < r.StartBlock + r.BlockCount; b++)
        {
            var id = Id(r, b);
            if (s.Op.StartsWith("map", StringComparison.Ordinal))
            {
                _facts[id] = r.IsUnwritten;
                _perBlock[b] = _perBlock.GetValueOrDefault(b) + 1;
                if (RmapbtOps.IsSpecialOwner(r.Owner)) _special.Add(b);
            }
            else if (s.Op.StartsWith("unmap", StringComparison.Ordinal))
            {
                _facts.Remove(id);
                _perBlock[b]--;
                if (RmapbtOps.IsSpecialOwner(r.Owner)) _special.Remove(b);
            }
            else _facts[id] = r.IsUnwritten;
        }
        return true;
    }

    /// <summary>Maximal records in rmapbt key order.</summary>
    public List<RmapRecord> Records()
    {
        var runs = new List<RmapRecord>();
        foreach (var g in _facts.GroupBy(f => (f.Key.Owner, f.Key.Fork, U: f.Value)))
        {
            RmapRecord? cur = null;
            foreach (var f in g.OrderBy(f => f.Key.B).ThenBy(f => f.Key.Logical))
            {
                ulong raw = g.Key.Fork | (g.Key.U ? RmapbtOps.UnwrittenFlag : 0) | f.Key.Logical;
                var one = new RmapRecord(f.Key.B, 1, g.Key.Owner, raw);
                if (cur is { } c && RmapEditor.Mergeable(c, one)) cur = c with { BlockCount = c.BlockCount + 1 };
                else
                {
                    if (cur is { } done) runs.Add(done);
                    cur = one;
                }
            }
            if (cur is { } last) runs.Add(last);
        }
        // A run can only continue a run that ended on the previous block; facts sorted by block then logical
        // offset may interleave two runs of the same owner (a file sharing blocks with itself), so merge again.
        runs = MergeRuns(runs);
        return runs.OrderBy(r => r.StartBlock).ThenBy(r => r.Owner).ThenBy(r => r.RawOffset & ~RmapbtOps.UnwrittenFlag).ToList();
    }

    static List<RmapRecord> MergeRuns(List<RmapRecord> runs)
    {
        var byStart = runs.OrderBy(r => r.StartBlock).ToList();
        var result = new List<RmapRecord>();
        var open = new List<RmapRecord>();
        foreach (var r in byStart)
        {
            int i = open.FindIndex(o => RmapEditor.Mergeable(o, r));
            if (i >= 0) open[i] = open[i] with { BlockCount = open[i].BlockCount + r.BlockCount };
            else open.Add(r);
        }
        result.AddRange(open);
        return result;
    }
}

/// <summary>
/// Model-based tests of the rmap record operations (map/unmap/convert, shared and non-shared) on an in-memory
/// rmapbt (xfbtree) and on an on-disk-format rmapbt (short-form, CRC'd blocks in an image file), against the
/// per-block interval model; the structure checker runs after every step.
/// </summary>
public sealed class RmapEditorTests(ITestOutputHelper output)
{
    static readonly bool Long = Environment.GetEnvironmentVariable("XFBTREE_LONG_TESTS") == "1";
    const ulong OwnAg = 0xFFFFFFFFFFFFFFFB, OwnInodes = 0xFFFFFFFFFFFFFFF9;

    static Gen<RmapStep> NonSharedSteps => Gen.Select(Gen.Int[0, 5], Gen.UInt[0, 1500], Gen.UInt[1, 12], Gen.Int[0, 5], Gen.UInt[0, 40], Gen.Int[0, 7],
        (op, start, len, who, off, fl) =>
        {
            ulong owner = who switch { 0 => OwnAg, 1 => OwnInodes, _ => 128 + (ulong)(who - 2) };
            ulong raw = 0;
            if (!RmapbtOps.IsSpecialOwner(owner))
            {
                bool bmbt = fl == 6;
                raw = bmbt ? RmapbtOps.BmbtBlockFlag : (ulong)(off % 3 == 0 ? start : off);
                if (fl == 5) raw |= RmapbtOps.AttrForkFlag;
                if (!bmbt && fl is 1 or 2) raw |= RmapbtOps.UnwrittenFlag;
            }
            string name = op switch { 0 or 1 or 2 => "map", 3 => "unmap", _ => "convert" };
            if (name == "convert" && RmapbtOps.IsSpecialOwner(owner)) name = "unmap";
            if (name == "convert" && (raw & RmapbtOps.BmbtBlockFlag) != 0) name = "unmap";
            return new RmapStep(name, start, len, owner, raw);
        });

    static Gen<RmapStep> SharedSteps => Gen.Select(Gen.Int[0, 6], Gen.UInt[0, 1000], Gen.UInt[1, 12], Gen.Int[0, 4], Gen.UInt[0, 30], Gen.Int[0, 3],
        (op, start, len, who, off, fl) =>
        {
            if (who == 0)
                return new RmapStep(op % 2 == 0 ? "map" : "unmap", start, len, OwnAg, 0); // metadata: non-shared
            ulong owner = 128 + (ulong)who;
            ulong raw = (off % 2 == 0 ? start : off) | (fl == 1 ? RmapbtOps.UnwrittenFlag : 0);
            string name = op switch { 0 or 1 or 2 => "mapShared", 3 or 4 => "unmapShared", _ => "convertShared" };
            return new RmapStep(name, start, len, owner, raw);
        });

    [Fact]
    public void RmapNonSharedOperationsMatchIntervalModelInXfbtree()
        => Run(NonSharedSteps, InMemoryTree, "non-shared, xfbtree");

    [Fact]
    public void RmapSharedOperationsMatchIntervalModelInXfbtree()
        => Run(SharedSteps, InMemoryTree, "shared, xfbtree");

    [Fact]
    public void RmapNonSharedOperationsMatchIntervalModelOnDiskFormat()
        => Run(NonSharedSteps, DiskTree, "non-shared, on-disk format");

    [Fact]
    public void RmapSharedOperationsMatchIntervalModelOnDiskFormat()
        => Run(SharedSteps, DiskTree, "shared, on-disk format");

    void Run(Gen<RmapStep> steps, Func<(Btree<RmapbtOps> Tree, IDisposable Owner)> factory, string what)
    {
        int maxRecords = 0, maxHeight = 0;
        long accepted = 0, rejected = 0;
        steps.Array[1, 700].Sample(seq =>
        {
            var (tree, owner) = factory();
            using var _ = owner;
            var editor = new RmapEditor(tree);
            var model = new RmapModel();
            foreach (var step in seq)
            {
                var s = Retarget(step, model);
                bool valid = model.Apply(s);
                try
                {
                    switch (s.Op)
                    {
                        case "map": editor.Map(s.Record); break;
                        case "mapShared": editor.MapShared(s.Record); break;
                        case "unmap": editor.Unmap(s.Record); break;
                        case "unmapShared": editor.UnmapShared(s.Record); break;
                        case "convert": editor.Convert(s.Record); break;
                        case "convertShared": editor.ConvertShared(s.Record); break;
                    }
                    if (!valid) throw new InvalidOperationException($"{s}: accepted, but the model says the precondition fails");
                    accepted++;
                }
                catch (RmapOperationException) when (!valid)
                {
                    rejected++;
                }
                editor.Cursor.Release();
                var report = tree.Check();
                if (!report.IsClean) throw new InvalidOperationException($"after {s}: {report}");
                var expected = model.Records();
                var actual = new RecordList();
                using (var c = tree.CreateCursor()) c.QueryAll(ref actual);
                var got = (actual.Records ?? new()).Select(r => RmapRecord.Read(r)).ToList();
                if (!expected.SequenceEqual(got))
                    throw new InvalidOperationException($"after {s}: expected [{string.Join(", ", expected)}] got [{string.Join(", ", got)}]");
                maxRecords = Math.Max(maxRecords, got.Count);
                maxHeight = Math.Max(maxHeight, tree.Root.Height);
            }
        }, iter: Long ? 600 : 40, threads: 1, print: s => string.Join(" ", s.Select(x => x.ToString())));
        output.WriteLine($"{what}: {accepted} operations applied, {rejected} rejected as the model predicted; max {maxRecords} records, max height {maxHeight}");
    }

    /// <summary>Most unmap/convert steps are aimed at a sub-range of an existing record (else they would nearly always be rejected).</summary>
    static RmapStep Retarget(RmapStep s, RmapModel model)
    {
        if (s.Op.StartsWith("map", StringComparison.Ordinal) || s.Start % 5 == 0) return s;
        var recs = model.Records();
        if (recs.Count == 0) return s;
        var rec = recs[(int)(s.Start % (uint)recs.Count)];
        if (s.Op.EndsWith("Shared", StringComparison.Ordinal) == RmapbtOps.IsSpecialOwner(rec.Owner)) return s;
        uint skip = rec.BlockCount > 1 ? s.Len % rec.BlockCount : 0;
        uint len = Math.Max(1, Math.Min(rec.BlockCount - skip, s.Len));
        bool logical = !RmapbtOps.IsSpecialOwner(rec.Owner) && !rec.IsBmbtBlock;
        ulong raw = (rec.RawOffset & ~RmapbtOps.OffsetMask) | (logical ? rec.Offset + skip : 0);
        if (s.Op.StartsWith("convert", StringComparison.Ordinal)) raw ^= RmapbtOps.UnwrittenFlag;
        if (s.Op.StartsWith("convert", StringComparison.Ordinal) && (RmapbtOps.IsSpecialOwner(rec.Owner) || rec.IsBmbtBlock)) return s;
        return s with { Start = rec.StartBlock + skip, Len = len, Owner = rec.Owner, RawOffset = raw };
    }

    static (Btree<RmapbtOps>, IDisposable) InMemoryTree()
    {
        var xfile = Xfile.Create(new XfileOptions { MaxSize = 1L << 30, Name = "rmap-test" });
        var tree = new Xfbtree<RmapbtOps>(new RmapbtOps(longPointers: true), xfile, owner: 0);
        return (tree.Tree, new Disposer(tree, xfile));
    }

    static (Btree<RmapbtOps>, IDisposable) DiskTree()
    {
        // 1 KiB blocks: rmapbt leaves hold 40 records and nodes 22 entries, so short runs reach height 2-3.
        var store = new ScratchImageStore(1024, agBlocks: 4096);
        var tree = new Btree<RmapbtOps>(new RmapbtOps(longPointers: false, agLength: 4096), store, new BtreeRootValue(BtreeHeader.NullPointer, 1), new byte[16], 0);
        tree.CreateEmpty();
        return (tree, store);
    }

    sealed class Disposer(IDisposable a, IDisposable b) : IDisposable
    {
        public void Dispose() { a.Dispose(); b.Dispose(); }
    }
}

/// <summary>
/// Test-only writable disk target: one AG in a sparse temp file; blocks are read with pread, CRC32C- and
/// structure-verified, and written back (CRC recomputed) with pwrite when released dirty. Blocks are
/// allocated from a free list.
/// </summary>
internal sealed unsafe class ScratchImageStore : BtreeBlockStore, IDisposable
{
    readonly string _path = Path.Combine(Path.GetTempPath(), $"xfbtree-scratch-{Guid.NewGuid():N}.img");
    readonly SafeFileHandle _file;
    readonly Dictionary<long, (byte[] Data, int Holds, bool Dirty, BtreeBlockVerifier? V)> _held = new();
    readonly SortedSet<long> _free = new();
    readonly uint _agBlocks;

    public ScratchImageStore(int blockSize, uint agBlocks)
    {
        BlockSize = blockSize;
        _agBlocks = agBlocks;
        _file = File.OpenHandle(_path, FileMode.CreateNew, FileAccess.ReadWrite, FileShare.None, FileOptions.DeleteOnClose);
        RandomAccess.SetLength(_file, (long)agBlocks * blockSize);
        for (long b = 8; b < agBlocks; b++) _free.Add(b);
    }

    public override int BlockSize { get; }
    public override bool ChecksCrc => false; // checked here with the test CRC until the shared XfsCrc lands
    public override long PointerToDaddr(long pointer) => pointer * (BlockSize / 512);
    public override bool IsValidPointer(long pointer) => pointer >= 1 && pointer < _agBlocks;

    public override BtreeBlockRef Read(long pointer, BtreeBlockVerifier verifier)
    {
        if (!_held.TryGetValue(pointer, out var e))
        {
            var data = GC.AllocateArray<byte>(BlockSize, pinned: true);
            RandomAccess.Read(_file, data, pointer * BlockSize);
            int crcOff = verifier.Geometry.CrcOffset;
            if (BinaryPrimitives.ReadUInt32LittleEndian(data.AsSpan(crcOff)) != Crc32C.Compute(data, crcOff))
                throw new CorruptionException(verifier.Name, PointerToDaddr(pointer), "bad CRC");
            verifier.Verify(data, PointerToDaddr(pointer));
            e = (data, 0, false, verifier);
        }
        _held[pointer] = (e.Data, e.Holds + 1, e.Dirty, verifier);
        fixed (byte* p = e.Data) return new BtreeBlockRef(null, p, pointer);
    }

    public override BtreeBlockRef GetNew(long pointer, BtreeBlockVerifier verifier)
    {
        var data = _held.TryGetValue(pointer, out var e) ? e.Data : GC.AllocateArray<byte>(BlockSize, pinned: true);
        _held[pointer] = (data, e.Holds + 1, true, verifier);
        fixed (byte* p = data) return new BtreeBlockRef(null, p, pointer);
    }

    public override void Release(in BtreeBlockRef block)
    {
        var e = _held[block.Pointer];
        if (e.Holds > 1) { _held[block.Pointer] = (e.Data, e.Holds - 1, e.Dirty, e.V); return; }
        _held.Remove(block.Pointer);
        if (!e.Dirty) return;
        int crcOff = e.V!.Geometry.CrcOffset;
        BinaryPrimitives.WriteUInt32LittleEndian(e.Data.AsSpan(crcOff), Crc32C.Compute(e.Data, crcOff));
        e.V.Verify(e.Data, PointerToDaddr(block.Pointer));
        RandomAccess.Write(_file, e.Data, block.Pointer * BlockSize);
    }

    public override void MarkDirty(in BtreeBlockRef block)
    {
        var e = _held[block.Pointer];
        _held[block.Pointer] = (e.Data, e.Holds, true, e.V);
    }

    public override void MarkStale(in BtreeBlockRef block)
    {
        var e = _held[block.Pointer];
        _held[block.Pointer] = (e.Data, e.Holds, false, e.V);
    }

    public override long AllocateBlock()
    {
        long b = _free.Min;
        _free.Remove(b);
        return b;
    }

    public override void FreeBlock(long pointer)
    {
        if (_held.ContainsKey(pointer)) throw new InvalidOperationException($"freeing held block {pointer}");
        _free.Add(pointer);
        RandomAccess.Write(_file, new byte[BlockSize], pointer * BlockSize);
    }

    public void Dispose() => _file.Dispose();
}

/// <summary>Repair's last step in miniature: bulk-load an on-disk-format rmapbt from the in-memory shadow rmapbt.</summary>
public sealed class RmapBulkLoadFromXfbtreeTests(ITestOutputHelper output)
{
    [Fact]
    public void RmapOnDiskTreeBulkLoadedFromXfbtreeEqualsIt()
    {
        using var xfile = Xfile.Create(new XfileOptions { MaxSize = 1L << 32 });
        using var shadow = new Xfbtree<RmapbtOps>(new RmapbtOps(longPointers: true), xfile, owner: 0);
        var editor = new RmapEditor(shadow.Tree);
        var rnd = new Random(4);
        const int mapped = 20000;
        for (int i = 0; i < mapped; i++)
        {
            // Random blocks and owners, overlapping freely (shared), but every mapping at its own logical offset
            // (i * 8, at most 7 blocks long): no map repeats an existing one, so every map must succeed, and no two
            // are logically adjacent, so none merge: the tree must hold exactly one record per map.
            uint start = (uint)rnd.Next(0, 60000);
            var r = new RmapRecord(start, (uint)rnd.Next(1, 8), 128 + (ulong)rnd.Next(0, 50), (ulong)i * 8);
            editor.MapShared(r);
        }
        editor.Cursor.Release();
        shadow.Commit();
        long count;
        using (var c = shadow.CreateCursor()) count = c.CountRecords();
        Assert.Equal(mapped, count);

        var store = new ScratchImageStore(4096, agBlocks: 65536);
        using var _ = store;
        var staged = new BtreeRootValue(BtreeHeader.NullPointer, 1);
        var disk = new Btree<RmapbtOps>(new RmapbtOps(longPointers: false, agLength: 65536), store, staged, new byte[16], 0);
        var plan = BtreeBulkLoader.ComputeGeometry(disk.Geometry, count);
        using var src = shadow.CreateCursor();
        var source = new BtreeCursorSource<RmapbtOps>(src);
        BtreeBulkLoader.Load(disk, plan, ref source, store.AllocateBlock);
        var report = disk.Check();
        Assert.True(report.IsClean, report.ToString());
        Assert.Equal(count, report.Records);
        var a = new RecordList();
        var b = new RecordList();
        using (var c = shadow.CreateCursor()) c.QueryAll(ref a);
        using (var c = disk.CreateCursor()) c.QueryAll(ref b);
        Assert.Equal(a.Records.Count, b.Records.Count);
        for (int i = 0; i < a.Records.Count; i++) Assert.True(a.Records[i].AsSpan().SequenceEqual(b.Records[i]));
        output.WriteLine($"{mapped} shared maps -> {count} records; on-disk tree height {plan.Height}, {plan.TotalBlocks} blocks");
    }
}
