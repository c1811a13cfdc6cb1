using System.Diagnostics;

namespace Xfbtree.Btree;

// Batched point lookups: several keys descend the tree together, one level at a time, so the cache misses of
// one key's next block overlap with the searches of the others (software pipelining), instead of each lookup
// waiting for its own chain of dependent misses.
public sealed unsafe partial class BtreeCursor<TOps>
{
    /// <summary>Keys descending together: enough to cover a miss with the searches of the others, few enough to stay in L1.</summary>
    const int BatchWidth = 8;

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
        Span<long> pointers = stackalloc long[BatchWidth];
        for (int start = 0; start < count; start += BatchWidth)
        {
            int width = Math.Min(BatchWidth, count - start);
            pointers[..width].Fill(_rootPointer);
            for (int level = _height - 1; level >= 0; level--)
            {
                for (int j = 0; j < width; j++)
                {
                    int i = start + j;
                    var key = keys.Slice(i * _keySize, _keySize);
                    long ptr = pointers[j];
                    if (!_store.IsValidPointer(ptr)) Corrupt(ptr, $"pointer {ptr} at level {level + 1} out of range");
                    var block = _store.Read(ptr, _verifier);
                    try
                    {
                        var b = SpanOf(block);
                        CheckEnteredBlock(level, b, ptr);
                        int n = NumRecords(b);
                        if (level > 0)
                        {
                            byte* childPointers = block.Data + _headerSize + _nodeMaxRecords * _keySlotSize;
                            int slot = LowerBound(block.Data + _headerSize, childPointers, n, leaf: false, key, out bool eq);
                            if (!eq && --slot < 0) slot = 0;
                            long child = BtreeHeader.ReadPointer(b[(_headerSize + _nodeMaxRecords * _keySlotSize + slot * _pointerSize)..], _longPointers);
                            pointers[j] = child;
                            PrefetchSearchStart(_store.PeekAddressForPrefetch(child), level - 1);
                        }
                        else
                        {
                            int at = LowerBound(block.Data + _headerSize, null, n, leaf: true, key, out bool eq);
                            if (!eq) at = -1;
                            found[i] = at >= 0;
                            if (at >= 0)
                            {
                                RecordAt(b, at).CopyTo(records.Slice(i * _recordSize, _recordSize));
                                hits++;
                            }
                        }
                    }
                    finally { _store.Release(block); }
                }
            }
        }
        return hits;
    }
}
