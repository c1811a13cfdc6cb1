using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using Xfbtree.Storage;

namespace Xfbtree.Btree;

/// <summary>
/// Order-preserving 64-bit prefixes of a tree's keys (the typed maps' comparers that implement
/// <c>IRecordKeyPrefix</c>): for keys a and b, a &lt;= b implies Prefix(a) &lt;= Prefix(b) (as unsigned numbers).
/// Searches then compare integers and call the comparer only where prefixes are equal.
/// </summary>
internal abstract unsafe class BtreeKeyPrefixer
{
    /// <summary>The prefix of the key at <paramref name="key"/> (KeySize bytes).</summary>
    internal abstract ulong KeyPrefix(byte* key);

    /// <summary>
    /// Writes the prefixes of the entries at 0, step, 2 step, ... (<paramref name="count"/> of them; entries
    /// <paramref name="stride"/> bytes apart, each starting with its key) into <paramref name="destination"/> as
    /// sign-flipped numbers (prefix ^ 2^63, so that signed compares order them as unsigned); returns false when they are
    /// not in ascending order (the prefix function is not order-preserving).
    /// </summary>
    internal abstract bool SamplePrefixes(byte* entries, int stride, int step, int count, long* destination);
}

/// <summary>
/// A sidecar beside every block of an in-memory tree: a compact, searchable copy of the block's key prefixes, kept in
/// memory of its own (its own xfile, so the XFS block format is untouched), at a fixed place per block
/// (<c>base + block * <see cref="Stride"/></c>, so a reader prefetches it together with the block's table entry).
/// </summary>
/// <remarks>
/// Layout of one sidecar (<see cref="Stride"/> bytes): the version of the block it describes (8 bytes), the block's
/// numrecs (2), level (2) and the number of samples (4), then up to <see cref="MaxSamples"/> sign-flipped prefixes
/// (see <see cref="BtreeKeyPrefixer.SamplePrefixes"/>) of the entries at 0, step, 2 step, ... (step = maxrecs / 60,
/// rounded up: 3 for 4 KiB blocks of 24-byte records), padded with <see cref="long.MaxValue"/> to whole vectors.
/// <para>
/// The writer rebuilds the sidecar of every block a write operation stamped, at the end of the operation, while the
/// block's version is still odd, and writes into it the even version the block is about to get
/// (<c>XfbtreeBlockStore.EndWriteOperation</c>). A reader uses a sidecar only when its version is the version it
/// noted for the block, and validates that version at the end as for everything else it reads: a sidecar whose block
/// changed since is rejected exactly like the block. A block stamped outside a write operation, or whose sidecar could
/// not be built, keeps a sidecar of another version, and readers search the block itself.
/// </para>
/// </remarks>
internal sealed unsafe class BtreeSidecars : IDisposable
{
    /// <summary>Bytes per block (one eighth of a 4 KiB block: ~3.6 bytes per 24-byte record at the usual fill).</summary>
    internal const int Stride = 512;
    /// <summary>Bytes before the samples.</summary>
    internal const int HeaderBytes = 16;
    /// <summary>Most samples (a multiple of the widest vector's lanes, within the stride).</summary>
    internal const int MaxSamples = 60;

    readonly Xfile _memory;
    readonly byte* _base;
    readonly long _maxBlocks;
    readonly int _headerSize, _recordSize, _keySlotSize, _leafMaxRecords, _nodeMaxRecords;
    long _reservedBlocks;             // blocks whose sidecar pages are committed
    int _broken;                      // the prefixes were found out of order: readers stop using sidecars

    /// <summary>The prefix function.</summary>
    internal readonly BtreeKeyPrefixer Prefixer;
    /// <summary>Leaves have sidecars too (else only nodes: a leaf changes on almost every write).</summary>
    internal readonly bool LeafSamples = true;
    /// <summary>Entries between two samples of a leaf / a node.</summary>
    internal readonly int LeafStep, NodeStep;

    internal BtreeSidecars(BtreeKeyPrefixer prefixer, BtreeGeometry geometry, long maxBlocks, XfileHugePages hugePages)
    {
        Prefixer = prefixer;
        _maxBlocks = maxBlocks;
        _headerSize = geometry.HeaderSize;
        _recordSize = geometry.RecordSize;
        _keySlotSize = geometry.KeySlotSize;
        _leafMaxRecords = geometry.LeafMaxRecords;
        _nodeMaxRecords = geometry.NodeMaxRecords;
        LeafStep = Math.Max(1, (_leafMaxRecords + MaxSamples - 1) / MaxSamples);
        NodeStep = Math.Max(1, (_nodeMaxRecords + MaxSamples - 1) / MaxSamples);
        _memory = Xfile.Create(new XfileOptions { MaxSize = Math.Max(1, maxBlocks) * Stride, HugePages = hugePages, Name = "xfbtree-sidecars" });
        _base = _memory.ContiguousBase;
        if (_base == null)
        {
            _memory.Dispose();
            throw new PlatformNotSupportedException("block sidecars need an xfile that is one mapping");
        }
    }

    /// <summary>The sidecar of block <paramref name="block"/> (any block below the store's capacity; reads of one never reserved see zeros).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal byte* At(long block) => _base + block * Stride;

    /// <summary>True until the prefixes were found out of order (then no reader uses a sidecar again).</summary>
    internal bool Usable => Volatile.Read(ref _broken) == 0;

    /// <summary>Blocks whose sidecar pages are committed.</summary>
    internal long ReservedBlocks => _reservedBlocks;

    /// <summary>
    /// True when sidecar <paramref name="sc"/> holds what <see cref="Rebuild"/> would write for the block at
    /// <paramref name="page"/> now (its numrecs, level, sample count, samples and padding); <paramref name="scratch"/>
    /// holds <see cref="MaxSamples"/> longs. For tests and the fuzz target.
    /// </summary>
    internal bool Describes(byte* sc, byte* page, long* scratch)
    {
        int level = System.Buffers.Binary.BinaryPrimitives.ReadUInt16BigEndian(new ReadOnlySpan<byte>(page + 4, 2));
        int n = System.Buffers.Binary.BinaryPrimitives.ReadUInt16BigEndian(new ReadOnlySpan<byte>(page + 6, 2));
        bool leaf = level == 0;
        int step = leaf ? LeafStep : NodeStep;
        int count = (n + step - 1) / step;
        if (*(ushort*)(sc + 8) != n || *(ushort*)(sc + 10) != level || *(int*)(sc + 12) != count || count > MaxSamples) return false;
        if (count > 0) Prefixer.SamplePrefixes(page + _headerSize, leaf ? _recordSize : _keySlotSize, step, count, scratch);
        long* samples = (long*)(sc + HeaderBytes);
        for (int i = 0; i < count; i++)
            if (samples[i] != scratch[i]) return false;
        for (int i = count; i < ((count + 3) & ~3); i++)
            if (samples[i] != long.MaxValue) return false;
        return true;
    }

    /// <summary>Bytes of a block's header (entries start there).</summary>
    internal int HeaderSize => _headerSize;

    /// <summary>Native bytes the sidecars hold (committed pages).</summary>
    internal long CommittedBytes => _memory.CommittedBytes;

    /// <summary>Commits the sidecars of blocks below <paramref name="blocks"/> (the writer, as it commits block pages ahead).</summary>
    internal void Reserve(long blocks)
    {
        blocks = Math.Min(blocks, _maxBlocks);
        if (blocks <= _reservedBlocks) return;
        _memory.Reserve(_reservedBlocks * Stride, (blocks - _reservedBlocks) * Stride);
        _reservedBlocks = blocks;
    }

    /// <summary>
    /// The writer, at the end of a write operation, for a block it stamped (its version still odd): rebuilds the
    /// block's sidecar from the block at <paramref name="page"/> and gives it <paramref name="version"/>, the version the
    /// block gets next. A block it cannot describe (no sidecar page, a header out of bounds) keeps an invalid sidecar.
    /// Returns false when the prefixes were out of order (the comparer's prefix is not order-preserving).
    /// </summary>
    internal bool Rebuild(long block, byte* page, long version, long previousVersion, int entriesFrom)
    {
        if ((ulong)block >= (ulong)_reservedBlocks) return true;
        byte* sc = At(block);
        int level = System.Buffers.Binary.BinaryPrimitives.ReadUInt16BigEndian(new ReadOnlySpan<byte>(page + 4, 2));
        int n = System.Buffers.Binary.BinaryPrimitives.ReadUInt16BigEndian(new ReadOnlySpan<byte>(page + 6, 2));
        bool leaf = level == 0;
        if (n > (leaf ? _leafMaxRecords : _nodeMaxRecords))
        {
            *(long*)sc = 0;
            return true;
        }
        int step = leaf ? LeafStep : NodeStep;
        int stride = leaf ? _recordSize : _keySlotSize;
        int count = (n + step - 1) / step;
        long* samples = (long*)(sc + HeaderBytes);
        // The samples of entries before the first one changed are kept when the sidecar described the block as it was
        // before this operation (an insert or delete moves only the entries after its position).
        int first = 0;
        if (*(long*)sc == previousVersion && *(ushort*)(sc + 10) == level && entriesFrom >= _headerSize)
        {
            long firstEntry = (entriesFrom - (long)_headerSize) / stride;
            first = (int)Math.Min(count, (firstEntry + step - 1) / step);
        }
        bool ordered = count == first || Prefixer.SamplePrefixes(page + _headerSize + (long)first * step * stride, stride, step, count - first, samples + first);
        int padded = (count + 3) & ~3;
        for (int i = count; i < padded; i++) samples[i] = long.MaxValue;
        *(ushort*)(sc + 8) = (ushort)n;
        *(ushort*)(sc + 10) = (ushort)level;
        *(int*)(sc + 12) = count;
        if (!ordered)
        {
            *(long*)sc = 0;
            Volatile.Write(ref _broken, 1);
            return false;
        }
        *(long*)sc = version;
        return true;
    }

    /// <summary>
    /// Counts the samples below (<paramref name="below"/>) and at most (<paramref name="atMost"/>) the sign-flipped
    /// prefix <paramref name="flipped"/>, over <paramref name="count"/> samples (padded to whole vectors of 4).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static void Count(long* samples, int count, long flipped, out int below, out int atMost)
    {
        int padded = (count + 3) & ~3;
        if (Vector256.IsHardwareAccelerated)
        {
            var k = Vector256.Create(flipped);
            var lt = Vector256<long>.Zero;
            var gt = Vector256<long>.Zero;
            for (int i = 0; i < padded; i += 4)
            {
                var v = Vector256.Load(samples + i);
                lt += Vector256.GreaterThan(k, v);  // lanes of -1 where the sample is below the key
                gt += Vector256.GreaterThan(v, k);  // where it is above
            }
            below = (int)-Vector256.Sum(lt);
            atMost = Math.Min(count, padded + (int)Vector256.Sum(gt));
            return;
        }
        int l = 0, g = 0;
        for (int i = 0; i < padded; i++)
        {
            long s = samples[i];
            l += s < flipped ? 1 : 0;
            g += s > flipped ? 1 : 0;
        }
        below = l;
        atMost = Math.Min(count, padded - g);
    }

    public void Dispose() => _memory.Dispose();
}
