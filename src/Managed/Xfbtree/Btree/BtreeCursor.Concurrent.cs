using System.Buffers.Binary;
using System.Runtime.CompilerServices;
using Xfbtree.Buffers;

namespace Xfbtree.Btree;

/// <summary>Which record a concurrent lookup returns.</summary>
internal enum ConcurrentSeek
{
    /// <summary>The record with the key.</summary>
    Equal,
    /// <summary>The last record whose key is at most the key.</summary>
    LessOrEqual,
    /// <summary>The first record whose key is at least the key.</summary>
    GreaterOrEqual,
    /// <summary>The last record whose key is below the key.</summary>
    Less,
    /// <summary>The first record whose key is above the key.</summary>
    Greater,
    /// <summary>The first record (the key is ignored).</summary>
    First,
    /// <summary>The last record (the key is ignored).</summary>
    Last,
}

/// <summary>
/// Where a concurrent scan stands: the leaf of the record returned last, the leaf's version when it was read, and what
/// was read of it (its memory and record count); the store, to check the version in its current table.
/// </summary>
internal unsafe struct ConcurrentScanPosition
{
    internal InMemory.XfbtreeBlockStore? Store;
    internal long Pointer;
    internal long Version;
    internal byte* Page;
    internal int Index;
    internal int Count;
    internal bool Positioned;
}

// Optimistic reads for in-memory trees (stores with an OptimisticBlockTable): any number of threads may call these on
// ONE cursor at once, and at the same time as one writer working through the tree's write operations, because they
// touch no mutable field of the cursor (only readonly geometry, the ops and the locals of the call) and write nothing
// shared. Protocol (XfbtreeBlockStore's remarks): note each block's version before reading it (an odd version: a write
// is changing it, wait for it and start again), read, then accept the result only if every version noted is unchanged
// and the root is the same; otherwise start again. Every value read from a block is bounds-checked before use (level,
// numrecs against maxrecs, pointers against the table), because a block may change or be freed and reused while it is
// read; a check that fails on a read that validates (nothing changed) is corruption.
public sealed unsafe partial class BtreeCursor<TOps>
{
    /// <summary>
    /// Test hook of the concurrent reads: called with the level of every block a reader enters (after its version was
    /// noted, before its entries are read; for the root, once its level field was read), and with -1 just before the
    /// reader validates what it read. Lets tests stop a
    /// reader at an exact point while a writer splits or joins blocks (no sleeps). Null in production (one load per block).
    /// </summary>
    internal Action<int>? ConcurrentReadHook;

    int VisitedCapacity => _geometry.MaxLevels + 2;

    /// <summary>The state of one optimistic read attempt: the sequence at its start and every block version it noted.</summary>
    ref struct ReadAttempt(Span<long> pointers, Span<long> versions)
    {
        public long Root;
        public long Limit;
        public BlockSlot* Table;
        public readonly Span<long> Pointers = pointers;
        public readonly Span<long> Versions = versions;
        public int Count;
        public long FailedPointer;
        public long FailedVersion;   // odd: the block was being changed (wait for it); else a check failed
        public string? Failure;
    }

    OptimisticBlockTable OptimisticTable()
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (!_store.TryGetOptimisticTable(out var table)) throw new NotSupportedException($"{_tree.Name}: concurrent reads need an in-memory block store");
        if (_rootValue is null) throw new NotSupportedException($"{_tree.Name}: concurrent reads need a root held in memory");
        return table;
    }

    long RootPointer => _rootValue!.PointerVolatile;

    void BeginAttempt(ref ReadAttempt a, in OptimisticBlockTable t)
    {
        a.Root = RootPointer;
        a.Table = t.Table;
        a.Limit = Math.Min(a.Table[-1].Version, t.Highest);
        a.Count = 0;
        a.Failure = null;
        a.FailedVersion = 0;
    }

    /// <summary>Notes the version of block <paramref name="ptr"/> and returns its memory; null (the attempt failed) when it names no block or was changed by a write operation that overlaps this read.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    byte* EnterOptimistic(ref ReadAttempt a, long ptr, int expectedLevel)
    {
        if ((ulong)ptr >= (ulong)a.Limit || a.Count >= a.Pointers.Length) return Fail(ref a, ptr, "pointer outside the block table");
        ref BlockSlot slot = ref a.Table[ptr];
        long version = Volatile.Read(ref slot.Version);
        nint page = Volatile.Read(ref slot.Page);
        if ((version & 1) != 0)
        {
            a.FailedVersion = version;
            return Fail(ref a, ptr, "block being changed");
        }
        if (page <= 0) return Fail(ref a, ptr, "pointer to a free block");
        a.Pointers[a.Count] = ptr;
        a.Versions[a.Count++] = version;
        if (expectedLevel >= 0) ConcurrentReadHook?.Invoke(expectedLevel);
        return (byte*)page;
    }

    static byte* Fail(ref ReadAttempt a, long ptr, string why)
    {
        a.FailedPointer = ptr;
        a.Failure = why;
        return null;
    }

    /// <summary>
    /// True when what the attempt read is a state the tree had: every block version it noted is unchanged, and the
    /// root is the block it started from. (The reads of the blocks happen before these loads: x64 keeps loads in order,
    /// and the versions are read with acquire semantics.)
    /// </summary>
    bool Validate(ref ReadAttempt a, in OptimisticBlockTable t)
    {
        var table = t.Table;
        for (int i = 0; i < a.Count; i++)
            if (Volatile.Read(ref table[a.Pointers[i]].Version) != a.Versions[i]) return false;
        return RootPointer == a.Root;
    }

    /// <summary>Waits until block <paramref name="ptr"/>'s version is no longer <paramref name="changing"/> (the write changing it ended).</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    static void WaitForBlock(in OptimisticBlockTable t, long ptr, long changing)
    {
        var spin = default(SpinWait);
        while (Volatile.Read(ref t.Table[ptr].Version) == changing) spin.SpinOnce(sleep1Threshold: -1);
    }

    /// <summary>
    /// After a failed attempt: waits for the write changing the block the attempt met, if that was the failure; a check
    /// that failed on blocks that are all unchanged is damage (throws <see cref="CorruptionException"/>).
    /// </summary>
    void AfterFailedAttempt(ref ReadAttempt a, in OptimisticBlockTable t)
    {
        if ((a.FailedVersion & 1) != 0)
        {
            WaitForBlock(t, a.FailedPointer, a.FailedVersion);
            return;
        }
        // A pointer past the table as it was when the attempt started may name a block allocated since: look again.
        if ((ulong)a.FailedPointer >= (ulong)a.Limit && (ulong)a.FailedPointer < (ulong)Math.Min(t.Table[-1].Version, t.Highest)) return;
        if (a.Failure is { } failure && Validate(ref a, t)) Corrupt(a.FailedPointer, failure);
    }

    /// <summary>
    /// A lookup that is safe while other threads read and one thread writes (see the notes above): copies the record
    /// chosen by <paramref name="how"/> into <paramref name="record"/> and returns true, or returns false when there is
    /// none. The record was in the tree at some moment during the call.
    /// </summary>
    internal bool LookupConcurrent(ReadOnlySpan<byte> key, ConcurrentSeek how, Span<byte> record)
    {
        var scan = default(ConcurrentScanPosition);
        return SeekConcurrent(key, how, record, ref scan);
    }

    /// <summary>As <see cref="LookupConcurrent"/>, and leaves <paramref name="position"/> on the record found (for a scan).</summary>
    internal bool SeekConcurrent(ReadOnlySpan<byte> key, ConcurrentSeek how, Span<byte> record, ref ConcurrentScanPosition position)
    {
        if (how is not (ConcurrentSeek.First or ConcurrentSeek.Last) && key.Length < _keySize) throw new ArgumentException($"key must be {_keySize} bytes", nameof(key));
        if (record.Length < _recordSize) throw new ArgumentException($"record must hold {_recordSize} bytes", nameof(record));
        var t = OptimisticTable();
        int visited = VisitedCapacity;
        var a = new ReadAttempt(stackalloc long[visited], stackalloc long[visited]);
        bool usePrefix = how is not (ConcurrentSeek.First or ConcurrentSeek.Last) && SidecarsUsable;
        long prefix = 0;
        if (usePrefix)
        {
            fixed (byte* k = key) prefix = FlippedKeyPrefix(k);
        }
        while (true)
        {
            BeginAttempt(ref a, t);
            int result = TrySeekOnce(ref a, key, how, record, ref position, usePrefix, prefix);
            ConcurrentReadHook?.Invoke(-1);
            if (result >= 0 && Validate(ref a, t))
            {
                position.Positioned = result == 1;
                position.Store = t.Store;
                return result == 1;
            }
            AfterFailedAttempt(ref a, t);
        }
    }

    /// <summary>One attempt of <see cref="SeekConcurrent"/>: 1 found, 0 none, -1 the attempt failed (see <see cref="ReadAttempt.Failure"/>).</summary>
    int TrySeekOnce(ref ReadAttempt a, ReadOnlySpan<byte> key, ConcurrentSeek how, Span<byte> record, ref ConcurrentScanPosition position, bool usePrefix, long prefix)
    {
        long ptr = a.Root;
        int level = -1;
        byte* b;
        while (true)
        {
            b = EnterOptimistic(ref a, ptr, level);
            if (b == null) return -1;
            int lev = BinaryPrimitives.ReadUInt16BigEndian(new ReadOnlySpan<byte>(b + 4, 2));
            if (level < 0 ? lev >= _geometry.MaxLevels : lev != level) { Fail(ref a, ptr, "unexpected block level"); return -1; }
            if (level < 0) ConcurrentReadHook?.Invoke(lev); // the root: its level is known only now
            level = lev;
            int n = BinaryPrimitives.ReadUInt16BigEndian(new ReadOnlySpan<byte>(b + 6, 2));
            if (n > (level == 0 ? _leafMaxRecords : _nodeMaxRecords)) { Fail(ref a, ptr, "numrecs above maxrecs"); return -1; }
            if (level == 0) return FinishSeekInLeaf(ref a, b, ptr, n, key, how, record, ref position, usePrefix, prefix);
            if (n == 0) { Fail(ref a, ptr, "empty node"); return -1; }
            int at;
            if (how == ConcurrentSeek.First) at = 0;
            else if (how == ConcurrentSeek.Last) at = n - 1;
            else
            {
                at = LowerBoundPrefixed(b, ptr, a.Versions[a.Count - 1], level, n, usePrefix, prefix, key, out bool eq);
                // The child to follow: the last slot whose key is at most the key (below it, for Less); slot 0 when none.
                if (!eq || how == ConcurrentSeek.Less) at--;
                if (at < 0) at = 0;
            }
            ptr = BinaryPrimitives.ReadInt64BigEndian(new ReadOnlySpan<byte>(b + _headerSize + _nodeMaxRecords * _keySlotSize + (long)at * _pointerSize, 8));
            if ((ulong)ptr < (ulong)a.Limit)
            {
                if (usePrefix && _directBase != null && HasSidecar(level - 1))
                {
                    // The child's table entry, header and sidecar at once (addresses known from its number).
                    Prefetch((byte*)(a.Table + ptr));
                    Prefetch(_directBase + ptr * _blockSize);
                    PrefetchSidecar(ptr, level - 1);
                }
                else if (_directBase != null)
                {
                    // The child's header and samples at once, beside its table entry (read first by EnterOptimistic):
                    // one round trip to memory for both instead of one after the other.
                    Prefetch((byte*)(a.Table + ptr));
                    PrefetchSearchStart(_directBase + ptr * _blockSize, level - 1);
                }
                else PrefetchSearchStart((byte*)Math.Max(0, a.Table[ptr].Page), level - 1);
            }
            level--;
        }
    }

    int FinishSeekInLeaf(ref ReadAttempt a, byte* b, long ptr, int n, ReadOnlySpan<byte> key, ConcurrentSeek how, Span<byte> record, ref ConcurrentScanPosition position, bool usePrefix, long prefix)
    {
        int at;
        if (how is ConcurrentSeek.First or ConcurrentSeek.Last)
        {
            if (n == 0) return 0; // the empty root leaf (other blocks are never empty)
            at = how == ConcurrentSeek.First ? 0 : n - 1;
        }
        else
        {
            bool eq = false;
            int lb = n == 0 ? 0 : LowerBoundPrefixed(b, ptr, a.Versions[a.Count - 1], 0, n, usePrefix && _leafSidecars, prefix, key, out eq);
            switch (how)
            {
                case ConcurrentSeek.Equal:
                    if (!eq) return 0;
                    at = lb;
                    break;
                case ConcurrentSeek.GreaterOrEqual: at = lb; break;
                case ConcurrentSeek.Greater: at = eq ? lb + 1 : lb; break;
                case ConcurrentSeek.LessOrEqual: at = eq ? lb : lb - 1; break;
                default: at = lb - 1; break; // Less
            }
        }
        if (at >= n || at < 0)
        {
            // Past this leaf's end: the neighbour's first (last) record, through the sibling pointer.
            bool forward = at >= n;
            long sibling = forward ? ReadLongAt(b, 16) : ReadLongAt(b, 8);
            if (sibling == BtreeHeader.NullPointer) return 0;
            byte* s = EnterOptimistic(ref a, sibling, 0);
            if (s == null) return -1;
            int sn = BinaryPrimitives.ReadUInt16BigEndian(new ReadOnlySpan<byte>(s + 6, 2));
            if (BinaryPrimitives.ReadUInt16BigEndian(new ReadOnlySpan<byte>(s + 4, 2)) != 0 || sn == 0 || sn > _leafMaxRecords) { Fail(ref a, sibling, "sibling leaf level or numrecs"); return -1; }
            b = s;
            ptr = sibling;
            n = sn;
            at = forward ? 0 : sn - 1;
        }
        new ReadOnlySpan<byte>(b + _headerSize + (long)at * _recordSize, _recordSize).CopyTo(record);
        position.Pointer = ptr;
        position.Version = a.Versions[a.Count - 1];
        position.Page = b;
        position.Index = at;
        position.Count = n;
        return 1;
    }

    static long ReadLongAt(byte* b, int offset) => BinaryPrimitives.ReadInt64BigEndian(new ReadOnlySpan<byte>(b + offset, 8));

    /// <summary>
    /// The next (<paramref name="forward"/>) or previous record of a scan positioned by <see cref="SeekConcurrent"/>:
    /// copied into <paramref name="record"/>; false at the end. Each record is checked against concurrent writes; when
    /// the leaf changed, the scan continues after (before) <paramref name="last"/>, the record it returned last, by a
    /// new lookup, so no record present during the whole scan is missed and none is returned twice.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal bool StepConcurrent(ref ConcurrentScanPosition p, bool forward, ReadOnlySpan<byte> last, Span<byte> record)
    {
        if (!p.Positioned) return false;
        int next = forward ? p.Index + 1 : p.Index - 1;
        if ((uint)next < (uint)p.Count && record.Length >= _recordSize)
        {
            // Within the leaf: a copy and one read of the write sequence while no write runs.
            Unsafe.CopyBlockUnaligned(ref record[0], ref *(p.Page + _headerSize + (long)next * _recordSize), (uint)_recordSize);
            if (Volatile.Read(ref p.Store!.CurrentTable[p.Pointer].Version) == p.Version)
            {
                p.Index = next;
                return true;
            }
        }
        return StepConcurrentSlow(ref p, forward, last, record);
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    bool StepConcurrentSlow(ref ConcurrentScanPosition p, bool forward, ReadOnlySpan<byte> last, Span<byte> record)
    {
        if (record.Length < _recordSize) throw new ArgumentException($"record must hold {_recordSize} bytes", nameof(record));
        var t = OptimisticTable();
        int next = forward ? p.Index + 1 : p.Index - 1;
        if (next >= 0 && next < p.Count)
        {
            new ReadOnlySpan<byte>(p.Page + _headerSize + (long)next * _recordSize, _recordSize).CopyTo(record);
            if (LeafStillCurrent(ref p, t))
            {
                p.Index = next;
                return true;
            }
            return Reseek(ref p, forward, last, record);
        }
        long sibling = forward ? ReadLongAt(p.Page, 16) : ReadLongAt(p.Page, 8);
        if (!LeafStillCurrent(ref p, t)) return Reseek(ref p, forward, last, record);
        if (sibling == BtreeHeader.NullPointer)
        {
            p.Positioned = false;
            return false;
        }
        // Enter the sibling, then check the leaf again (coupling): the sibling was the leaf's neighbour when its version was noted.
        var table = t.Table;
        long limit = Math.Min(table[-1].Version, t.Highest);
        if ((ulong)sibling >= (ulong)limit) return SiblingFailed(ref p, t, forward, last, record, sibling, 0);
        long version = Volatile.Read(ref table[sibling].Version);
        nint page = Volatile.Read(ref table[sibling].Page);
        if (page <= 0 || (version & 1) != 0) return SiblingFailed(ref p, t, forward, last, record, sibling, version);
        ConcurrentReadHook?.Invoke(0);
        byte* s = (byte*)page;
        int sn = BinaryPrimitives.ReadUInt16BigEndian(new ReadOnlySpan<byte>(s + 6, 2));
        if (BinaryPrimitives.ReadUInt16BigEndian(new ReadOnlySpan<byte>(s + 4, 2)) != 0 || sn == 0 || sn > _leafMaxRecords)
        {
            // Garbage is corruption only when both blocks are still as read (the sibling pointer was current).
            if (LeafStillCurrent(ref p, t) && Volatile.Read(ref t.Table[sibling].Version) == version) Corrupt(sibling, "sibling of a leaf is not a leaf with records");
            return Reseek(ref p, forward, last, record);
        }
        int at = forward ? 0 : sn - 1;
        new ReadOnlySpan<byte>(s + _headerSize + (long)at * _recordSize, _recordSize).CopyTo(record);
        if (!LeafStillCurrent(ref p, t)) return Reseek(ref p, forward, last, record);
        var moved = new ConcurrentScanPosition { Store = t.Store, Pointer = sibling, Version = version, Page = s, Index = at, Count = sn, Positioned = true };
        if (!LeafStillCurrent(ref moved, t)) return Reseek(ref p, forward, last, record);
        p = moved;
        return true;
    }

    /// <summary>
    /// Copies the records of the scan's leaf from its position to the leaf's end (<paramref name="forward"/>) or start
    /// into <paramref name="buffer"/> (at least a block), checked as one; leaves the position on the last of them and
    /// returns how many, or -1 when a write touched the leaf (the caller continues after the record it had last).
    /// </summary>
    internal int CopyLeafRest(ref ConcurrentScanPosition p, bool forward, Span<byte> buffer)
    {
        if (!p.Positioned) return 0;
        int from = p.Index, count = forward ? p.Count - p.Index : p.Index + 1;
        if (count <= 0) return 0;
        int first = forward ? from : 0;
        new ReadOnlySpan<byte>(p.Page + _headerSize + (long)first * _recordSize, count * _recordSize).CopyTo(buffer);
        if (!LeafStillCurrent(ref p, OptimisticTable())) return -1;
        p.Index = forward ? p.Count - 1 : 0;
        return count;
    }

    bool SiblingFailed(ref ConcurrentScanPosition p, in OptimisticBlockTable t, bool forward, ReadOnlySpan<byte> last, Span<byte> record, long sibling, long version)
    {
        if ((version & 1) != 0) WaitForBlock(t, sibling, version);
        else if (LeafStillCurrent(ref p, t)) Corrupt(sibling, "sibling pointer of a leaf names no block");
        return Reseek(ref p, forward, last, record);
    }

    /// <summary>True when the scan's leaf is as it was read (its version did not move).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static bool LeafStillCurrent(ref ConcurrentScanPosition p, in OptimisticBlockTable t)
        => Volatile.Read(ref t.Table[p.Pointer].Version) == p.Version;

    bool Reseek(ref ConcurrentScanPosition p, bool forward, ReadOnlySpan<byte> last, Span<byte> record)
    {
        Span<byte> key = stackalloc byte[BtreeGeometry.MaxKeySize];
        key = key[.._keySize];
        _ops.GetKey(last, key);
        p = default;
        return SeekConcurrent(key, forward ? ConcurrentSeek.Greater : ConcurrentSeek.Less, record, ref p);
    }
}
