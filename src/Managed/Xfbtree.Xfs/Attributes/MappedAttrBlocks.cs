using Xfbtree.Buffers;
using Xfbtree.Xfs.Format;

namespace Xfbtree.Xfs.Attributes;

/// <summary>
/// The blocks of one attr fork whose mapping was read (its extent records in file offset order, <see cref="Map"/>),
/// read through a buffer cache with the attr verifier (magic and CRC): the block source of
/// <see cref="AttrForkChecker.CheckTree"/> for the offline scan and the online inode check, which read the mapping
/// outside any transaction. One per reader; <see cref="Map"/> is refilled for each inode.
/// </summary>
internal sealed class MappedAttrBlocks
{
    readonly BufferCache _cache;
    readonly BufferTarget _target;
    readonly XfsGeometry _geo;

    public MappedAttrBlocks(BufferCache cache, BufferTarget target, XfsGeometry geo)
    {
        _cache = cache;
        _target = target;
        _geo = geo;
        Source = Read;
    }

    /// <summary>The fork's extents, in file offset order.</summary>
    public List<BmbtExtent> Map { get; } = new();

    /// <summary>Reads a logical block of the fork (see <see cref="AttrBlockSource"/>).</summary>
    public AttrBlockSource Source { get; }

    /// <summary>Blocks the fork maps (bounds the checker's walk).</summary>
    public long MappedBlocks
    {
        get
        {
            ulong mapped = 0;
            foreach (var e in Map) mapped += e.BlockCount;
            return (long)Math.Min(mapped, int.MaxValue);
        }
    }

    /// <summary>The first problem of the fork's leaf, node and remote value blocks, or null.</summary>
    public string? Check(ulong ino) => AttrForkChecker.CheckTree(ino, _geo.MetaUuid, _geo.BlockSize, Source, MappedBlocks);

    long Read(uint logical, Span<byte> destination)
    {
        int lo = 0, hi = Map.Count - 1;
        while (lo <= hi)
        {
            int mid = (lo + hi) >>> 1;
            var e = Map[mid];
            if (logical < e.StartOffset) hi = mid - 1;
            else if (logical >= e.StartOffset + e.BlockCount) lo = mid + 1;
            else
            {
                if (e.Unwritten) throw new AttrFormatException($"attr fork block {logical} is unwritten");
                ulong fsbno = e.StartBlock + (logical - e.StartOffset);
                long daddr = _geo.AgBlockToDaddr(_geo.FsbToAgno(fsbno), _geo.FsbToAgbno(fsbno));
                BlockBuffer buf;
                try { buf = _cache.Read(_target, daddr, _geo.BasicBlocksPerBlock, AttrBlockVerifier.Instance, BufferLockMode.Shared); }
                catch (Exception x) when (x is CorruptionException or IOException) { throw new AttrFormatException($"attr fork block {logical}: {x.Message}"); }
                try { buf.Span[..destination.Length].CopyTo(destination); }
                finally { _cache.Release(buf); }
                return daddr;
            }
        }
        throw new AttrFormatException($"attr fork block {logical} is not mapped");
    }
}
