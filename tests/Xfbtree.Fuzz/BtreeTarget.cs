using System.Buffers.Binary;
using Xfbtree.Btree;
using Xfbtree.Buffers;
using Xfbtree.Xfs.Trees;

namespace Xfbtree.Fuzz;

/// <summary>
/// Target <c>btree</c>: a small set of blocks forming a tree of any XFS tree type, walked, looked up, range-queried
/// and scrubbed through the engine.
/// <para>Input layout (big-endian):</para>
/// <code>
/// [0] tree kind (mod 9): rmapbt, rmapbt long form (in-memory layout), bnobt, cntbt, inobt, finobt, refcountbt,
///     bmbt rooted in a block, bmbt rooted in an inode fork
/// [1] flags: bits 0-1 block size 512 &lt;&lt; n; bit 2 raw (no header fix-up); bit 3 records bounded by an AG length;
///     bit 4 mutation phase; bit 5 sparse inode records
/// [2] root height (block-rooted trees)      [3] root pointer (block number; blocks are numbered from 1)
/// [4] number of chunks (mod 33), then each chunk: u16 length + bytes, zero-padded (or cut) to the block size.
///     Chunk i is block i+1; for the inode-rooted bmbt chunk 0 is the fork (bmdr) image and chunk i is block i.
/// the rest: query keys, consumed in pairs (low, high) of the tree's key size.
/// </code>
/// Unless raw, every block gets the tree's magic, its own blkno, the harness uuid and owner, so mutations land on
/// the fields that matter (levels, numrecs, siblings, pointers, keys, records). Blocks carry no CRC (as in memory).
/// <para>Oracles: <see cref="CorruptionException"/> is the expected outcome of damage; anything else escaping is a
/// finding. The checker must never throw. When it finds the tree clean, every cursor operation must succeed and
/// match an independent reference walk of the raw blocks (forward/backward walks, counts, block visits, LE/EQ/GE
/// lookups, range and overlapped queries), and the optional mutation phase (delete a shuffled subset, re-insert it)
/// must keep the checker clean and the records equal to the model. Walks are bounded by blocks x maxrecs; going past
/// the bound is a hang. Every step must leave no block held.</para>
/// </summary>
public static class BtreeTarget
{
    public const int HeaderLength = 5;
    public const int MaxChunks = 32;
    /// <summary>Largest inode fork image accepted (a 512-byte v5 inode's literal area).</summary>
    public const int MaxForkLength = 336;
    public const long Owner = 5;
    public const uint AgLength = 1_000_000;
    internal static readonly byte[] Uuid = [0x58, 0x46, 0x42, 0x54, 0x2D, 0x66, 0x75, 0x7A, 0x7A, 0x2D, 0x75, 0x75, 0x69, 0x64, 0x21, 0x01];

    /// <summary>Tree kinds selected by byte 0.</summary>
    public enum Kind : byte { Rmapbt, RmapbtLong, Bnobt, Cntbt, Inobt, Finobt, Refcountbt, Bmbt, BmbtInodeRoot }
    public const int KindCount = 9;

    /// <summary>Flag bits of byte 1 (above the two block-size bits).</summary>
    [Flags]
    public enum Options : byte { None = 0, Raw = 4, AgBounded = 8, Mutate = 16, Sparse = 32 }

    /// <summary>Runs one input. Throws on a finding; returns how it ended otherwise.</summary>
    public static FuzzOutcome Run(ReadOnlySpan<byte> input)
    {
        if (input.Length < HeaderLength) return FuzzOutcome.Ok;
        var r = new FuzzReader(input);
        var kind = (Kind)(r.U8() % KindCount);
        byte flags = r.U8();
        int blockSize = 512 << (flags & 3);
        var opts = (Options)(flags & 0xFC);
        int height = r.U8();
        long rootPtr = r.U8();
        int chunks = r.U8() % (MaxChunks + 1);
        byte[]? fork = null;
        var blocks = new List<byte[]>();
        for (int i = 0; i < chunks; i++)
        {
            int len = r.U16();
            var bytes = r.Bytes(len);
            if (kind == Kind.BmbtInodeRoot && i == 0)
            {
                fork = new byte[Math.Clamp(bytes.Length, 4 + 16, MaxForkLength)];
                bytes[..Math.Min(bytes.Length, fork.Length)].CopyTo(fork);
                continue;
            }
            var block = new byte[blockSize];
            bytes[..Math.Min(bytes.Length, blockSize)].CopyTo(block);
            blocks.Add(block);
        }
        if (kind == Kind.BmbtInodeRoot && fork == null) fork = new byte[4 + 16];
        var setup = new Setup(blockSize, opts, height, rootPtr, blocks, fork, r.Rest.ToArray());
        uint ag = (opts & Options.AgBounded) != 0 ? AgLength : 0;
        bool sparse = (opts & Options.Sparse) != 0;
        return kind switch
        {
            Kind.Rmapbt => new Harness<RmapbtOps>(new RmapbtOps(false, ag), setup).Run(),
            Kind.RmapbtLong => new Harness<RmapbtOps>(new RmapbtOps(true, ag), setup).Run(),
            Kind.Bnobt => new Harness<BnobtOps>(new BnobtOps(ag), setup).Run(),
            Kind.Cntbt => new Harness<CntbtOps>(new CntbtOps(ag), setup).Run(),
            Kind.Inobt => new Harness<InobtOps>(new InobtOps(false, sparse), setup).Run(),
            Kind.Finobt => new Harness<InobtOps>(new InobtOps(true, sparse), setup).Run(),
            Kind.Refcountbt => new Harness<RefcountbtOps>(default, setup).Run(),
            _ => new Harness<BmbtOps>(default, setup).Run(),
        };
    }

    /// <summary>Encodes an input (used by the seed maker); trailing zero bytes of each block chunk are trimmed.</summary>
    public static byte[] Encode(Kind kind, int blockSizeLog, Options options, int height, int rootPtr, IReadOnlyList<byte[]> chunks, ReadOnlySpan<byte> keys)
    {
        if (chunks.Count > MaxChunks) throw new ArgumentException($"at most {MaxChunks} chunks", nameof(chunks));
        var o = new List<byte> { (byte)kind, (byte)((int)options | (blockSizeLog & 3)), (byte)height, (byte)rootPtr, (byte)chunks.Count };
        for (int i = 0; i < chunks.Count; i++)
        {
            var c = chunks[i];
            int len = c.Length;
            bool isFork = kind == Kind.BmbtInodeRoot && i == 0; // the fork's length sets its maxrecs: keep it
            while (!isFork && len > 0 && c[len - 1] == 0) len--;
            FuzzBytes.U16(o, len);
            o.AddRange(c.AsSpan(0, len).ToArray());
        }
        o.AddRange(keys.ToArray());
        return o.ToArray();
    }

    internal sealed record Setup(int BlockSize, Options Options, int Height, long RootPointer, List<byte[]> Blocks, byte[]? Fork, byte[] Keys);

    /// <summary>Stamps the identity fields the verifier checks, so mutations reach the structure.</summary>
    internal static void FixHeader(Span<byte> b, bool longForm, uint magic, long daddr)
    {
        BinaryPrimitives.WriteUInt32BigEndian(b, magic);
        BinaryPrimitives.WriteInt64BigEndian(b[(longForm ? 24 : 16)..], daddr);
        Uuid.CopyTo(b.Slice(longForm ? 40 : 32, 16));
        if (longForm) BinaryPrimitives.WriteInt64BigEndian(b[56..], Owner);
        else BinaryPrimitives.WriteUInt32BigEndian(b[48..], (uint)Owner);
    }

    sealed class Harness<TOps> where TOps : struct, IBtreeOps
    {
        readonly TOps _ops;
        readonly Setup _setup;
        readonly BtreeGeometry _geo;
        readonly FuzzBlockStore _store;
        readonly Btree<TOps> _tree;
        readonly int _ks;
        readonly bool _inodeRoot;
        bool _corruption;
        bool _clean;
        List<byte[]> _model = new();

        public Harness(TOps ops, Setup setup)
        {
            _ops = ops;
            _setup = setup;
            _geo = BtreeGeometry.For(ops, setup.BlockSize);
            _ks = _geo.KeySize;
            bool lf = _geo.LongPointers;
            if ((setup.Options & Options.Raw) == 0)
                for (int i = 0; i < setup.Blocks.Count; i++)
                    FixHeader(setup.Blocks[i], lf, ops.Magic, (i + 1L) * (setup.BlockSize / 512));
            _store = new FuzzBlockStore(setup.BlockSize, setup.Blocks);
            _inodeRoot = setup.Fork != null;
            BtreeRoot root = _inodeRoot
                ? new BtreeInodeRoot(_geo, ops.Magic, setup.Fork)
                : new BtreeRootValue(setup.RootPointer, setup.Height);
            _tree = new Btree<TOps>(ops, _store, root, Uuid, Owner);
        }

        /// <summary>Most records any walk can legally produce: every block a full leaf. More is a hang.</summary>
        long WalkBound => (long)(_store.BlockSlots + 1) * _geo.LeafMaxRecords;

        public FuzzOutcome Run()
        {
            var report = _tree.Check(maxBlocks: _store.BlockSlots + 1);
            _store.AssertNoHolds("the checker");
            _clean = report.IsClean;
            _corruption = !_clean;
            FuzzTargets.Log?.Invoke($"checker: {report}");
            if (_clean)
            {
                _model = ReferenceWalk();
                if (_model.Count != report.Records) throw new FuzzFindingException($"checker counted {report.Records} records, reference walk {_model.Count}");
            }
            Step("forward walk", ForwardWalk);
            Step("backward walk", BackwardWalk);
            Step("count", Count);
            Step("block visit", () => VisitBlocks(report.Blocks));
            var keys = QueryKeys();
            Step("lookups", () => Lookups(keys));
            Step("queries", () => Queries(keys));
            if (_clean && !_inodeRoot && (_setup.Options & Options.Mutate) != 0 && _model.Count > 0)
                Step("mutation", Mutate);
            return _corruption ? FuzzOutcome.CorruptionReported : FuzzOutcome.Ok;
        }

        void Step(string name, Action step)
        {
            try { step(); }
            catch (CorruptionException e)
            {
                if (_clean) throw new FuzzFindingException($"{name}: corruption reported on a tree the checker passed: {e.Message}", e);
                FuzzTargets.Log?.Invoke($"{name}: {e.Message}");
                _corruption = true;
            }
            _store.AssertNoHolds(name);
        }

        // ------------------------------------------------------------ reference walk (raw bytes, not the engine)

        List<byte[]> ReferenceWalk()
        {
            var into = new List<byte[]>();
            if (_inodeRoot)
            {
                var f = _setup.Fork!;
                int slotPtr = _geo.KeySlotSize + _geo.PointerSize;
                int max = (f.Length - 4) / slotPtr;
                int level = BinaryPrimitives.ReadUInt16BigEndian(f);
                int n = BinaryPrimitives.ReadUInt16BigEndian(f.AsSpan(2));
                for (int i = 0; i < n; i++)
                {
                    long child = BinaryPrimitives.ReadInt64BigEndian(f.AsSpan(4 + max * _geo.KeySlotSize + i * _geo.PointerSize));
                    WalkBlock(child, level - 1, into);
                }
            }
            else WalkBlock(_setup.RootPointer, _setup.Height - 1, into);
            return into;
        }

        void WalkBlock(long ptr, int level, List<byte[]> into)
        {
            var b = _store.Raw(ptr) ?? throw new FuzzFindingException($"checker passed a tree with a dangling pointer {ptr}");
            int n = BinaryPrimitives.ReadUInt16BigEndian(b.AsSpan(6));
            int hdr = _geo.HeaderSize;
            if (level == 0)
            {
                for (int i = 0; i < n; i++) into.Add(b.AsSpan(hdr + i * _geo.RecordSize, _geo.RecordSize).ToArray());
                if (into.Count > WalkBound) throw new FuzzFindingException("reference walk past its bound on a checked tree");
                return;
            }
            int ptrBase = hdr + _geo.NodeMaxRecords * _geo.KeySlotSize;
            for (int i = 0; i < n; i++)
            {
                var at = b.AsSpan(ptrBase + i * _geo.PointerSize);
                long child = _geo.LongPointers ? BinaryPrimitives.ReadInt64BigEndian(at) : BinaryPrimitives.ReadUInt32BigEndian(at);
                WalkBlock(child, level - 1, into);
            }
        }

        // ------------------------------------------------------------ walks

        void Guard(long count, string what)
        {
            if (count > WalkBound) throw new FuzzFindingException($"{what}: more than {WalkBound} records from {_store.BlockSlots} blocks (endless walk)");
        }

        void ForwardWalk()
        {
            using var c = _tree.CreateCursor();
            var got = new List<byte[]>();
            if (c.MoveFirst())
            {
                do
                {
                    got.Add(c.Current.ToArray());
                    Guard(got.Count, "forward walk");
                }
                while (c.Increment());
            }
            if (c.HasRecord) throw new FuzzFindingException("cursor still on a record after the walk ended");
            if (_clean) ExpectSame(_model, got, "forward walk");
        }

        void BackwardWalk()
        {
            using var c = _tree.CreateCursor();
            var got = new List<byte[]>();
            if (c.MoveLast())
            {
                do
                {
                    got.Add(c.Current.ToArray());
                    Guard(got.Count, "backward walk");
                }
                while (c.Decrement());
            }
            got.Reverse();
            if (_clean) ExpectSame(_model, got, "backward walk");
        }

        void Count()
        {
            using var c = _tree.CreateCursor();
            long n = c.CountRecords();
            if (n < 0) throw new FuzzFindingException($"negative record count {n}");
            Guard(n, "count");
            if (_clean && n != _model.Count) throw new FuzzFindingException($"CountRecords {n}, model {_model.Count}");
        }

        struct BlockCounter : IBtreeBlockVisitor
        {
            public long Blocks;
            public int BlockSize;
            public void Visit(int level, long pointer, ReadOnlySpan<byte> block)
            {
                if (block.Length < BlockSize) throw new FuzzFindingException($"visited block {pointer} is {block.Length} bytes");
                Blocks++;
            }
        }

        void VisitBlocks(long checkerBlocks)
        {
            using var c = _tree.CreateCursor();
            var v = new BlockCounter { BlockSize = _geo.BlockSize };
            long n = c.VisitBlocks(ref v);
            if (n != v.Blocks) throw new FuzzFindingException($"VisitBlocks returned {n}, visited {v.Blocks}");
            if (n > _store.BlockSlots * (long)_geo.MaxLevels + 1) throw new FuzzFindingException($"VisitBlocks visited {n} blocks of {_store.BlockSlots} (endless walk)");
            if (_clean && n != checkerBlocks) throw new FuzzFindingException($"VisitBlocks {n}, checker {checkerBlocks}");
        }

        // ------------------------------------------------------------ lookups and queries

        List<byte[]> QueryKeys()
        {
            var keys = new List<byte[]> { new byte[_ks], Enumerable.Repeat((byte)0xFF, _ks).ToArray() };
            var tail = _setup.Keys;
            for (int off = 0; off + _ks <= tail.Length && keys.Count < 10; off += _ks) keys.Add(tail.AsSpan(off, _ks).ToArray());
            if (_model.Count > 0)
            {
                foreach (int i in new[] { 0, _model.Count / 2, _model.Count - 1 })
                {
                    keys.Add(Key(_model[i]));
                    keys.Add(HighKey(_model[i]));
                }
            }
            return keys;
        }

        byte[] Key(ReadOnlySpan<byte> rec) { var k = new byte[_ks]; _ops.GetKey(rec, k); return k; }
        byte[] HighKey(ReadOnlySpan<byte> rec) { var k = new byte[_ks]; _ops.GetHighKey(rec, k); return k; }

        void Lookups(List<byte[]> keys)
        {
            using var c = _tree.CreateCursor();
            foreach (var key in keys)
            {
                foreach (var mode in new[] { BtreeLookup.LessOrEqual, BtreeLookup.Equal, BtreeLookup.GreaterOrEqual })
                {
                    bool found = c.Lookup(key, mode);
                    if (found && !c.HasRecord) throw new FuzzFindingException($"{mode} lookup found a record but the cursor is not on one");
                    byte[]? cur = found ? c.Current.ToArray() : null;
                    if (_clean)
                    {
                        int want = Expected(key, mode);
                        if (found != (want >= 0)) throw new FuzzFindingException($"{mode} lookup of {FuzzBytes.Hex(key)}: found={found}, model index {want}");
                        if (found) ExpectRecord(_model[want], cur!, $"{mode} lookup of {FuzzBytes.Hex(key)}");
                    }
                    if (mode == BtreeLookup.Equal && !found) continue;
                    // Step around the position: the cursor is positioned even when nothing matched (LE: before
                    // the first record, GE: past the last).
                    int pos = found ? Expected(key, mode) : mode == BtreeLookup.LessOrEqual ? -1 : _model.Count;
                    bool next = c.Increment();
                    if (_clean)
                    {
                        if (next != (pos + 1 < _model.Count)) throw new FuzzFindingException($"increment after {mode} lookup of {FuzzBytes.Hex(key)}: {next}, model position {pos} of {_model.Count}");
                        if (next) ExpectRecord(_model[pos + 1], c.Current.ToArray(), "increment after lookup");
                    }
                    if (next)
                    {
                        bool back = c.Decrement();
                        if (_clean && back != (pos >= 0)) throw new FuzzFindingException($"decrement back after {mode} lookup: {back}, model position {pos}");
                        if (_clean && back) ExpectRecord(_model[pos], c.Current.ToArray(), "decrement back after lookup");
                    }
                }
            }
        }

        /// <summary>Model index of the record a lookup must land on, or -1.</summary>
        int Expected(ReadOnlySpan<byte> key, BtreeLookup mode)
        {
            int lo = 0, hi = _model.Count; // first index with record >= key
            while (lo < hi)
            {
                int mid = (lo + hi) >>> 1;
                if (_ops.CompareRecordToKey(_model[mid], key) < 0) lo = mid + 1; else hi = mid;
            }
            bool eq = lo < _model.Count && _ops.CompareRecordToKey(_model[lo], key) == 0;
            return mode switch
            {
                BtreeLookup.Equal => eq ? lo : -1,
                BtreeLookup.GreaterOrEqual => lo < _model.Count ? lo : -1,
                _ => eq ? lo : lo - 1,
            };
        }

        struct Collector : IBtreeRecordVisitor
        {
            public List<byte[]> Into;
            public long Bound;
            public int StopAfter;
            public bool Visit(ReadOnlySpan<byte> record)
            {
                Into.Add(record.ToArray());
                if (Into.Count > Bound) throw new FuzzFindingException($"query visited more than {Bound} records (endless walk)");
                return Into.Count != StopAfter;
            }
        }

        void Queries(List<byte[]> keys)
        {
            using var c = _tree.CreateCursor();
            var pairs = new List<(byte[] Low, byte[] High)>();
            for (int i = 0; i + 1 < keys.Count; i++) pairs.Add((keys[i], keys[i + 1]));
            foreach (var (low, high) in pairs)
            {
                var v = new Collector { Into = new List<byte[]>(), Bound = WalkBound, StopAfter = -1 };
                bool completed = c.Query(low, high, ref v);
                if (!completed) throw new FuzzFindingException("query reported a stop the visitor never asked for");
                if (_clean)
                {
                    var want = _model.Where(rec => Overlaps(rec, low, high)).ToList();
                    ExpectSame(want, v.Into, $"query [{FuzzBytes.Hex(low)}, {FuzzBytes.Hex(high)}]");
                    bool any = c.HasRecords(low, high);
                    if (any != (want.Count > 0)) throw new FuzzFindingException($"HasRecords {any}, model {want.Count} records");
                    if (want.Count > 1)
                    {
                        var stop = new Collector { Into = new List<byte[]>(), Bound = WalkBound, StopAfter = 1 };
                        if (c.Query(low, high, ref stop)) throw new FuzzFindingException("query ignored the visitor's stop");
                        if (stop.Into.Count != 1) throw new FuzzFindingException($"query went on after the stop ({stop.Into.Count} records)");
                    }
                }
            }
        }

        bool Overlaps(byte[] rec, byte[] low, byte[] high)
        {
            if (_ops.CompareKeys(low, high) > 0) return false;
            return _ops.CompareKeys(Key(rec), high) <= 0 && _ops.CompareKeys(HighKey(rec), low) >= 0;
        }

        // ------------------------------------------------------------ mutation phase (clean block-rooted trees)

        void Mutate()
        {
            var rng = new FuzzRng(_setup.Keys.AsSpan());
            var order = Enumerable.Range(0, _model.Count).ToList();
            rng.Shuffle(order);
            int deletions = 1 + rng.Below(_model.Count);
            var removed = new List<byte[]>();
            using (var c = _tree.CreateCursor())
            {
                for (int i = 0; i < deletions; i++)
                {
                    var rec = _model[order[i]];
                    var key = Key(rec);
                    if (!c.Lookup(key, BtreeLookup.Equal)) throw new FuzzFindingException($"record {FuzzBytes.Hex(rec)} not found before its delete");
                    ExpectRecord(rec, c.Current.ToArray(), "lookup before delete");
                    c.Delete();
                    if (c.Lookup(key, BtreeLookup.Equal)) throw new FuzzFindingException($"record {FuzzBytes.Hex(rec)} still found after its delete");
                    removed.Add(rec);
                }
                c.Release();
            }
            _store.AssertNoHolds("deletes");
            var remaining = new HashSet<int>(order.Skip(deletions));
            var expect = _model.Where((_, i) => remaining.Contains(i)).ToList();
            CheckAgainst(expect, "after deletes");
            rng.Shuffle(removed);
            using (var c = _tree.CreateCursor())
            {
                foreach (var rec in removed)
                {
                    if (!c.Insert(rec)) throw new FuzzFindingException($"re-insert of {FuzzBytes.Hex(rec)} refused");
                }
                if (c.Insert(removed[0])) throw new FuzzFindingException("insert of an existing key accepted");
                c.Release();
            }
            _store.AssertNoHolds("inserts");
            CheckAgainst(_model, "after re-inserts");
        }

        void CheckAgainst(List<byte[]> expect, string when)
        {
            var report = _tree.Check(maxBlocks: _store.BlockSlots + 1);
            if (!report.IsClean) throw new FuzzFindingException($"{when}: the engine broke a clean tree: {report}");
            if (report.Records != expect.Count) throw new FuzzFindingException($"{when}: {report.Records} records, model {expect.Count}");
            using var c = _tree.CreateCursor();
            var got = new List<byte[]>();
            if (c.MoveFirst())
                do
                {
                    got.Add(c.Current.ToArray());
                    Guard(got.Count, when);
                }
                while (c.Increment());
            ExpectSame(expect, got, when);
        }

        // ------------------------------------------------------------ comparisons

        static void ExpectRecord(byte[] want, byte[] got, string what)
        {
            if (!want.AsSpan().SequenceEqual(got)) throw new FuzzFindingException($"{what}: got {FuzzBytes.Hex(got)}, model {FuzzBytes.Hex(want)}");
        }

        static void ExpectSame(List<byte[]> want, List<byte[]> got, string what)
        {
            if (want.Count != got.Count) throw new FuzzFindingException($"{what}: {got.Count} records, model {want.Count}");
            for (int i = 0; i < want.Count; i++)
                if (!want[i].AsSpan().SequenceEqual(got[i])) throw new FuzzFindingException($"{what}: record {i} is {FuzzBytes.Hex(got[i])}, model {FuzzBytes.Hex(want[i])}");
        }
    }
}
