using System.Diagnostics;

namespace Xfbtree.Btree;

// Batched point lookups: several keys descend the tree together, one level at a time, so the cache misses of
// one key's next block overlap with the searches of the others (software pipelining), instead of each lookup
// waiting for its own chain of dependent misses.
public sealed unsafe partial class BtreeCursor<TOps>
{
    /// <summary>Keys descending together: enough to cover a miss with the searches of the others, few enough to stay in L1.</summary>
    const int BatchWidth = 32;

    /// <summary>
    /// Looks up every key of <paramref name="keys"/> (<c>count * KeySize</c> bytes) for an equal record; copies each
    /// one found into <paramref name="records"/> (slot i of <c>RecordSize</c> bytes) and sets <paramref name="found"/>[i].
    /// Returns how many were found. Same checks as <see cref="Lookup"/> on every block entered (level, numrecs);
    /// the cursor is unpositioned afterwards. Trees rooted in an inode fork are looked up one key at a time.
    /// </summary>
    public int LookupEqualBatch(ReadOnlySpan<byte> keys, Span<byte> records, Span<bool> found)
    {
        if (keys.Length % _keySize != 0) throw new ArgumentException($"keys must be a multiple of {_keySize} bytes", nameof(keys));
        int count = keys.Length / _keySize;
        if (records.Length < count * _recordSize) throw new ArgumentException($"records must hold {count} records of {_recordSize} bytes", nameof(records));
        if (found.Length < count) throw new ArgumentException($"found must hold {count} flags", nameof(found));
        ReleaseBlocks();
        BeginOperation();
        int hits = 0;
        if (_imageLevel >= 0)
        {
            for (int i = 0; i < count; i++)
            {
                found[i] = LookupCore(keys.Slice(i * _keySize, _keySize), BtreeLookup.Equal, out _);
                if (found[i]) { Current.CopyTo(records.Slice(i * _recordSize, _recordSize)); hits++; }
            }
            ReleaseBlocks();
            return hits;
        }
        // Per key of a group: the block it is in at this level and its search state. With direct-memory blocks each
        // level runs in two passes over the group, so that every miss of one pass overlaps with the work on the other
        // keys: pass 1 enters the block (header and samples were prefetched one level up) and compares the samples,
        // prefetching the segment; pass 2 searches the segment and prefetches the child's header and samples. Blocks
        // of a buffer cache are held only while one key is searched (two keys may share a block, and a cache hold can
        // be exclusive), so there both passes run back to back per key.
        bool pipelined = _store.PathsMayStayHeld;
        var state = new BatchState(stackalloc long[BatchWidth], stackalloc long[BatchWidth], stackalloc int[BatchWidth],
                                   stackalloc int[BatchWidth], stackalloc int[BatchWidth], stackalloc int[BatchWidth]);
        for (int start = 0; start < count; start += BatchWidth)
        {
            int width = Math.Min(BatchWidth, count - start);
            state.Pointers[..width].Fill(_rootPointer);
            for (int level = _height - 1; level >= 0; level--)
            {
                bool leaf = level == 0;
                for (int j = 0; j < width; j++)
                {
                    var key = keys.Slice((start + j) * _keySize, _keySize);
                    long ptr = state.Pointers[j];
                    if (!_store.IsValidPointer(ptr)) Corrupt(ptr, $"pointer {ptr} at level {level + 1} out of range");
                    var block = _store.Read(ptr, _verifier);
                    try
                    {
                        var b = SpanOf(block);
                        CheckEnteredBlock(level, b, ptr);
                        int n = NumRecords(b);
                        state.Blocks[j] = (long)block.Data;
                        state.Counts[j] = n;
                        byte* childPointers = leaf ? null : block.Data + _headerSize + _nodeMaxRecords * _keySlotSize;
                        state.SampleHits[j] = SampleSegment(block.Data + _headerSize, childPointers, n, leaf, key, out state.Los[j], out state.His[j]);
                        if (!pipelined) hits += FinishBatchKey(ref state, j, start + j, level, key, records, found);
                    }
                    finally { _store.Release(block); }
                }
                // Direct-memory blocks stay valid between the passes: nothing is written, and a live block never moves.
                if (pipelined)
                    for (int j = 0; j < width; j++) hits += FinishBatchKey(ref state, j, start + j, level, keys.Slice((start + j) * _keySize, _keySize), records, found);
            }
        }
        return hits;
    }

    /// <summary>Search state of the keys of one batch group (stack memory).</summary>
    ref struct BatchState(Span<long> pointers, Span<long> blocks, Span<int> counts, Span<int> los, Span<int> his, Span<int> sampleHits)
    {
        public Span<long> Pointers = pointers;     // the block each key goes to at the current level
        public Span<long> Blocks = blocks;         // its address (byte*)
        public Span<int> Counts = counts;          // its numrecs
        public Span<int> Los = los;                // the segment of the lower bound after the samples
        public Span<int> His = his;
        public Span<int> SampleHits = sampleHits;  // index of a sample equal to the key, or -1
    }

    /// <summary>Pass 2 of a batch key at one level: the segment search, then the child (prefetched) or the record found; returns 1 for a hit.</summary>
    int FinishBatchKey(ref BatchState state, int j, int i, int level, ReadOnlySpan<byte> key, Span<byte> records, Span<bool> found)
    {
        bool leaf = level == 0;
        byte* data = (byte*)state.Blocks[j];
        int n = state.Counts[j];
        bool eq = state.SampleHits[j] >= 0;
        int at = eq ? state.SampleHits[j] : SearchSegment(data + _headerSize, state.Los[j], state.His[j], leaf, key, out eq);
        if (!leaf)
        {
            if (!eq && --at < 0) at = 0;
            var b = new ReadOnlySpan<byte>(data, _blockSize);
            long child = BtreeHeader.ReadPointer(b[(_headerSize + _nodeMaxRecords * _keySlotSize + at * _pointerSize)..], _longPointers);
            state.Pointers[j] = child;
            PrefetchSearchStart(_store.PeekAddressForPrefetch(child), level - 1);
            return 0;
        }
        found[i] = eq && at < n;
        if (!found[i]) return 0;
        new ReadOnlySpan<byte>(data + _headerSize + (long)at * _recordSize, _recordSize).CopyTo(records.Slice(i * _recordSize, _recordSize));
        return 1;
    }
}
