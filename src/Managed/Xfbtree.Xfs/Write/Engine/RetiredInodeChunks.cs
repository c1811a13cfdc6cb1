namespace Xfbtree.Xfs.Write.Engine;

/// <summary>
/// One AG's inode chunks freed since the engine opened and not (wholly) allocated again: for each, the inodes it had
/// and the highest generation any of them reached. Two guarantees rest on it. A handle (inode number, generation)
/// made before the chunk was freed never reaches an inode later allocated at the same number: a new chunk or piece
/// over a retired range starts its inodes one above that highest generation, not at a random one. And an inode
/// number of a retired range is answered as free (a cache miss there reads no block, since the blocks may hold
/// anything now). Changed only by committed transactions, under the AG lock; read without it.
/// Bounded: at <see cref="Capacity"/> entries no further chunk is freed (it stays allocated, as with ikeep).
/// </summary>
internal sealed class RetiredInodeChunks
{
    private readonly Dictionary<uint, (ulong Inodes, uint Generation)> entries = new();
    private readonly Lock gate = new();
    private uint step; // under gate

    /// <param name="alignmentInodes">Inodes between two possible chunk starts (sb_inoalignmt in inodes, at least 1):
    /// a range is looked up at the chunk starts that may overlap it.</param>
    /// <param name="capacity">Entries held at most.</param>
    public RetiredInodeChunks(uint alignmentInodes, int capacity)
    {
        step = Math.Clamp(alignmentInodes, 1u, 64u);
        Capacity = capacity;
    }

    public int Capacity { get; }

    public int Count
    {
        get
        {
            lock (gate)
            {
                return entries.Count;
            }
        }
    }

    /// <summary>True while another chunk may be retired.</summary>
    public bool HasRoom => Count < Capacity;

    /// <summary>Records the chunk at <paramref name="startAgino"/> as freed: <paramref name="inodes"/> the bits of the
    /// 64 inodes it had (holes clear), <paramref name="generation"/> the highest generation they reached.</summary>
    public void Retire(uint startAgino, ulong inodes, uint generation)
    {
        lock (gate)
        {
            if (startAgino % step != 0)
            {
                step = 1; // a chunk off the alignment (not one the engine or the kernel makes): look at every start
            }
            if (entries.TryGetValue(startAgino, out var old))
            {
                inodes |= old.Inodes;
                generation = Math.Max(generation, old.Generation);
            }
            entries[startAgino] = (inodes, generation);
        }
    }

    /// <summary>The highest generation of the retired inodes in [<paramref name="firstAgino"/>, + <paramref name="count"/>),
    /// or null when none is retired.</summary>
    public uint? HighestGeneration(uint firstAgino, uint count)
    {
        uint? highest = null;
        lock (gate)
        {
            for (uint start = FirstCandidate(firstAgino); start < firstAgino + count; start += step)
            {
                if (entries.TryGetValue(start, out var e) && (e.Inodes & Overlap(start, firstAgino, count)) != 0)
                {
                    highest = highest is uint h ? Math.Max(h, e.Generation) : e.Generation;
                }
            }
        }
        return highest;
    }

    /// <summary>The inodes [<paramref name="firstAgino"/>, + <paramref name="count"/>) are in a chunk again: they stop
    /// being retired (an entry with nothing left goes).</summary>
    public void Reuse(uint firstAgino, uint count)
    {
        lock (gate)
        {
            for (uint start = FirstCandidate(firstAgino); start < firstAgino + count; start += step)
            {
                if (!entries.TryGetValue(start, out var e))
                {
                    continue;
                }
                ulong left = e.Inodes & ~Overlap(start, firstAgino, count);
                if (left == 0)
                {
                    entries.Remove(start);
                }
                else
                {
                    entries[start] = (left, e.Generation);
                }
            }
        }
    }

    /// <summary>True when inode <paramref name="agino"/> lies in a retired chunk; <paramref name="generation"/> is then
    /// the highest generation that chunk's inodes reached.</summary>
    public bool IsRetired(uint agino, out uint generation)
    {
        generation = 0;
        lock (gate)
        {
            if (entries.Count == 0)
            {
                return false;
            }
            for (uint start = FirstCandidate(agino); start <= agino; start += step)
            {
                if (entries.TryGetValue(start, out var e) && (e.Inodes & Overlap(start, agino, 1)) != 0)
                {
                    generation = e.Generation;
                    return true;
                }
            }
        }
        return false;
    }

    /// <summary>The lowest chunk start (a multiple of the alignment) whose 64 inodes may reach <paramref name="agino"/>.</summary>
    private uint FirstCandidate(uint agino)
    {
        uint lowest = agino >= 63 ? agino - 63 : 0;
        return (lowest + step - 1) / step * step;
    }

    /// <summary>The bits of the chunk at <paramref name="start"/> that [<paramref name="first"/>, + <paramref name="count"/>) covers.</summary>
    private static ulong Overlap(uint start, uint first, uint count)
    {
        long from = Math.Max(0L, (long)first - start);
        long to = Math.Min(64L, (long)first + count - start);
        if (to <= from)
        {
            return 0;
        }
        ulong width = to - from == 64 ? ulong.MaxValue : (1UL << (int)(to - from)) - 1;
        return width << (int)from;
    }
}
