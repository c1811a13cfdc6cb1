using System.Buffers.Binary;
using System.Runtime.CompilerServices;

namespace Xfbtree.Btree;

// Batched concurrent lookups: many lookups in flight at once. Each key is a small state machine that advances one step
// per turn; a ring of keys is served round robin and refilled as keys finish, so while one key waits for the memory it
// asked for, the others work. A step ends by prefetching what the key's next step reads:
//   stage 0 (the child's table entry has arrived): note the block's version and address, prefetch its header and samples;
//   stage 1 (header and samples have arrived): check level and numrecs, compare the samples, prefetch the segment left;
//   stage 2 (segment has arrived): search it; in a node, prefetch the child's table entry (back to stage 0), in a leaf,
//           copy the record and validate every version the key noted (as a single lookup does).
// Compared with walking a group of keys level by level in lock step, no key waits for the slowest of its group, and
// the ring never drains between groups.
public sealed unsafe partial class BtreeCursor<TOps>
{
    /// <summary>
    /// Keys in flight: about the misses a core keeps outstanding, each key having one at a time (16 to 32 measured
    /// within noise of each other at 10 M records; 8 and 48 lower).
    /// </summary>
    const int RingWidth = 24;

    /// <summary>
    /// Levels from here up take all three stages in one turn: a tree of millions of records has a handful of blocks
    /// there, always in cache, so a turn per stage would only cost bookkeeping (measured: ~5 % more lookups per CPU second).
    /// </summary>
    const int CachedLevels = 2;

    /// <summary>One key of the ring: where it is in its descent (stack memory of the batch call).</summary>
    struct RingKey
    {
        public int Key;          // index in the batch; -1: the slot is free
        public int Stage;        // 0, 1, 2 as in the notes above
        public int Level;        // level expected of Pointer; -1 for the root (read from its header)
        public int Depth;        // blocks noted (pointers and versions of the slot)
        public int Count;        // numrecs of the block entered
        public int Lo, Hi;       // the segment left by the samples
        public int SampleHit;    // a sample equal to the key, or -1
        public long Pointer;     // the block to enter (stage 0) or entered
        public long Root;        // the root the key started from
        public byte* Data;       // the entered block's memory
        public bool Ahead;       // the block's header and samples were prefetched with its table entry (DirectBlockBase)
        public long* Pointers;   // the blocks noted (stack memory of the batch call, VisitedCapacity entries)
        public long* Versions;   // their versions
        public long Prefix;      // the key's sign-flipped prefix (Prefixed)
        public bool Prefixed;    // the key searches the blocks' sidecars (BtreeCursor.Sidecar.cs)
    }

    /// <summary>The outcome of one step of a ring key.</summary>
    enum RingStep { Continue, Found, NotFound, LookAlone }

    /// <summary>
    /// <see cref="LookupEqualBatch"/> made safe for concurrent readers and one writer: up to <see cref="RingWidth"/>
    /// keys in flight (see the notes above), each noting its blocks' versions and validating them when it reaches its
    /// leaf; a key whose blocks changed, were being changed or looked wrong is looked up again on its own
    /// (<see cref="LookupConcurrent"/>, which waits for the writer, retries, and reports damage). Every record returned
    /// was in the tree at some moment during the call.
    /// </summary>
    internal int LookupEqualBatchConcurrent(ReadOnlySpan<byte> keys, Span<byte> records, Span<bool> found)
    {
        if (keys.Length % _keySize != 0) throw new ArgumentException($"keys must be a multiple of {_keySize} bytes", nameof(keys));
        int count = keys.Length / _keySize;
        if (records.Length < count * _recordSize) throw new ArgumentException($"records must hold {count} records of {_recordSize} bytes", nameof(records));
        if (found.Length < count) throw new ArgumentException($"found must hold {count} flags", nameof(found));
        var t = OptimisticTable();
        int visited = VisitedCapacity;
        int width = Math.Min(RingWidth, count);
        RingKey* ring = stackalloc RingKey[RingWidth];
        long* pointers = stackalloc long[RingWidth * visited];
        long* versions = stackalloc long[RingWidth * visited];
        int next = 0, active = 0, hits = 0;
        bool prefixed = SidecarsUsable;
        // Raw pointers inside the loop: a turn is a few dozen instructions, and slicing four spans per turn was a
        // noticeable part of them. Every offset is below count * size, checked above.
        fixed (byte* keyBase = keys)
        fixed (byte* recordBase = records)
        {
            for (int s = 0; s < width; s++)
            {
                StartRingKey(ref ring[s], next++, pointers + s * visited, versions + s * visited, keyBase, prefixed);
                active++;
            }
            while (active > 0)
            {
                for (int s = 0; s < width; s++)
                {
                    ref RingKey k = ref ring[s];
                    if (k.Key < 0) continue;
                    int i = k.Key;
                    byte* key = keyBase + (long)i * _keySize;
                    byte* record = recordBase + (long)i * _recordSize;
                    var step = AdvanceRingKey(ref k, t, key, visited, record);
                    if (step == RingStep.Continue) continue;
                    if (step == RingStep.LookAlone)
                        step = LookupConcurrent(new ReadOnlySpan<byte>(key, _keySize), ConcurrentSeek.Equal, new Span<byte>(record, _recordSize)) ? RingStep.Found : RingStep.NotFound;
                    found[i] = step == RingStep.Found;
                    if (step == RingStep.Found) hits++;
                    if (next < count) StartRingKey(ref k, next++, k.Pointers, k.Versions, keyBase, prefixed);
                    else
                    {
                        k.Key = -1;
                        active--;
                    }
                }
            }
        }
        return hits;
    }

    void StartRingKey(ref RingKey k, int key, long* pointers, long* versions, byte* keyBase, bool prefixed)
    {
        k.Prefixed = prefixed;
        if (prefixed) k.Prefix = FlippedKeyPrefix(keyBase + (long)key * _keySize);
        k.Pointers = pointers;
        k.Versions = versions;
        k.Key = key;
        k.Stage = 0;
        k.Level = -1;
        k.Depth = 0;
        k.Root = RootPointer;
        k.Pointer = k.Root;
        k.Ahead = false;
    }

    /// <summary>
    /// Stage 1 of a ring key through its block's sidecar, when the sidecar describes the version noted (plain loads after
    /// that volatile one stay after it on x64): the block's header is not needed, only the segment the samples leave,
    /// which is prefetched. 1: done (the segment is in the key); 0: the sidecar is of another version (search the
    /// block); -1: a value out of bounds (look the key up alone). Not inlined: the ring step stays small enough for the
    /// JIT to inline the comparer into its searches.
    /// </summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    int RingSidecarStage(ref RingKey k, long version)
    {
        byte* sc = SidecarOf(k.Pointer);
        if (*(long*)sc != version) return 0;
        int level = *(ushort*)(sc + 10);
        if (k.Level < 0) k.Level = level;
        ConcurrentReadHook?.Invoke(k.Level);
        int n = *(ushort*)(sc + 8);
        bool leaf = level == 0;
        if (level != k.Level || level >= _geometry.MaxLevels || n > (leaf ? _leafMaxRecords : _nodeMaxRecords) || (n == 0 && !leaf)
            || !SidecarSegment(sc, n, leaf, k.Prefix, out k.Lo, out k.Hi)) return -1;
        k.Count = n;
        k.SampleHit = -1;
        int stride = leaf ? _recordSize : _keySlotSize;
        byte* entries = k.Data + _headerSize;
        PrefetchLines(entries + (long)k.Lo * stride, (k.Hi - k.Lo) * stride);
        if (!leaf) PrefetchLines(entries + _nodeMaxRecords * _keySlotSize + (long)Math.Max(0, k.Lo - 1) * _pointerSize, (k.Hi - k.Lo + 2) * _pointerSize);
        return 1;
    }

    /// <summary>One step of a ring key (see the notes above); <paramref name="record"/> receives the record found.</summary>
    RingStep AdvanceRingKey(ref RingKey k, in OptimisticBlockTable t, byte* keyAt, int visited, byte* record)
    {
        var key = new ReadOnlySpan<byte>(keyAt, _keySize);
        long* pointers = k.Pointers, versions = k.Versions;
        switch (k.Stage)
        {
            case 0:
                {
                    var table = t.Table;
                    long limit = Math.Min(table[-1].Version, t.Highest);
                    long ptr = k.Pointer;
                    if ((ulong)ptr >= (ulong)limit || k.Depth >= visited) return RingStep.LookAlone;
                    long version = Volatile.Read(ref table[ptr].Version);
                    nint page = Volatile.Read(ref table[ptr].Page);
                    if (page <= 0 || (version & 1) != 0) return RingStep.LookAlone;
                    pointers[k.Depth] = ptr;
                    versions[k.Depth++] = version;
                    k.Data = (byte*)page;
                    k.Stage = 1;
                    if (k.Level < 0 || k.Level >= CachedLevels) goto case 1; // the root (its level is read from its header) and the top levels: in cache
                    if (k.Ahead) goto case 1; // asked for in the same turn as the table entry: arrived with it
                    if (k.Prefixed && HasSidecar(k.Level)) PrefetchSidecar(ptr, k.Level);
                    else PrefetchSearchStart(k.Data, k.Level);
                    return RingStep.Continue;
                }
            case 1:
                {
                    byte* data = k.Data;
                    if (k.Prefixed && (k.Level != 0 || _leafSidecars))
                    {
                        int sidecar = RingSidecarStage(ref k, versions[k.Depth - 1]);
                        if (sidecar < 0) return RingStep.LookAlone;
                        if (sidecar > 0)
                        {
                            k.Stage = 2;
                            if (k.Level >= CachedLevels) goto default;
                            return RingStep.Continue;
                        }
                    }
                    int level = BinaryPrimitives.ReadUInt16BigEndian(new ReadOnlySpan<byte>(data + 4, 2));
                    int n = BinaryPrimitives.ReadUInt16BigEndian(new ReadOnlySpan<byte>(data + 6, 2));
                    if (k.Level < 0) k.Level = level;
                    ConcurrentReadHook?.Invoke(k.Level);
                    bool leaf = level == 0;
                    if (level != k.Level || level >= _geometry.MaxLevels || n > (leaf ? _leafMaxRecords : _nodeMaxRecords) || (n == 0 && !leaf)) return RingStep.LookAlone;
                    k.Count = n;
                    if (n == 0)
                    {
                        k.SampleHit = -1;
                        k.Lo = k.Hi = 0;
                    }
                    else k.SampleHit = SampleSegment(data + _headerSize, leaf ? null : data + _headerSize + _nodeMaxRecords * _keySlotSize, n, leaf, key, out k.Lo, out k.Hi);
                    k.Stage = 2;
                    if (level >= CachedLevels) goto default;
                    return RingStep.Continue;
                }
            default:
                {
                    byte* data = k.Data;
                    bool leaf = k.Level == 0;
                    bool eq = k.SampleHit >= 0;
                    int at = eq ? k.SampleHit : SearchSegment(data + _headerSize, k.Lo, k.Hi, leaf, key, out eq);
                    if (!leaf)
                    {
                        if (!eq && --at < 0) at = 0;
                        long child = BinaryPrimitives.ReadInt64BigEndian(new ReadOnlySpan<byte>(data + _headerSize + _nodeMaxRecords * _keySlotSize + (long)at * _pointerSize, 8));
                        k.Pointer = child;
                        k.Level--;
                        k.Stage = 0;
                        var table = t.Table;
                        k.Ahead = false;
                        if ((ulong)child < (ulong)Math.Min(table[-1].Version, t.Highest))
                        {
                            Prefetch((byte*)(table + child));
                            if (k.Prefixed && HasSidecar(k.Level) && k.Level < CachedLevels)
                            {
                                // The sidecar's address is known from the block number too: asked for with the table entry.
                                PrefetchSidecar(child, k.Level);
                                k.Ahead = true;
                            }
                            else if (_directBase != null && k.Level < CachedLevels)
                            {
                                // The block's address is known without its table entry: its header and samples are
                                // asked for now too, and stage 0 goes on to stage 1 in the same turn (the version is
                                // still noted, from the table, before the block is read).
                                PrefetchSearchStart(_directBase + child * _blockSize, k.Level);
                                k.Ahead = true;
                            }
                        }
                        return RingStep.Continue;
                    }
                    bool hit = eq && at < k.Count;
                    if (hit) Unsafe.CopyBlockUnaligned(record, data + _headerSize + (long)at * _recordSize, (uint)_recordSize);
                    // Accept only when every block the key read is as it was noted, and the root is the one it started from.
                    ConcurrentReadHook?.Invoke(-1);
                    var current = t.Table;
                    for (int d = 0; d < k.Depth; d++)
                        if (Volatile.Read(ref current[pointers[d]].Version) != versions[d]) return RingStep.LookAlone;
                    if (RootPointer != k.Root) return RingStep.LookAlone;
                    return hit ? RingStep.Found : RingStep.NotFound;
                }
        }
    }
}
