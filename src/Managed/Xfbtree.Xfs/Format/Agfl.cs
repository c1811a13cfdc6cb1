using System.Buffers.Binary;

namespace Xfbtree.Xfs.Format;

/// <summary>
/// The AG free list (docs/xfs-format.md §3.3): a circular list of agbnos in sector 3 after a 36-byte header, live from
/// flfirst to fllast (wrapping) with flcount entries, as the AGF says. Blocks on it are OWN_AG.
/// </summary>
internal sealed class Agfl
{
    public const uint MagicValue = 0x5841464C; // "XAFL"
    public const int CrcOffset = 32;
    public const int HeaderSize = 36;
    public const uint NullAgBlock = 0xFFFFFFFF;

    /// <summary>Live entries in list order (only entries that lie inside the AG; see <see cref="Problems"/>).</summary>
    public IReadOnlyList<uint> Blocks { get; private init; } = [];
    /// <summary>Every slot as stored (NULLAGBLOCK in unused ones).</summary>
    public IReadOnlyList<uint> Slots { get; private init; } = [];
    /// <summary>List/entry violations: inconsistent fl* counters, entries outside the AG, duplicates.</summary>
    public IReadOnlyList<string> Problems { get; private init; } = [];

    /// <summary>Parses a verified AGFL sector, taking the live range from <paramref name="agf"/>.</summary>
    public static Agfl Parse(ReadOnlySpan<byte> s, XfsGeometry geo, Agf agf)
    {
        ArgumentNullException.ThrowIfNull(geo);
        ArgumentNullException.ThrowIfNull(agf);
        int n = geo.AgflSlots;
        if (s.Length < HeaderSize + 4 * n) throw new ArgumentException("AGFL sector too short", nameof(s));
        var slots = new uint[n];
        for (int i = 0; i < n; i++) slots[i] = BinaryPrimitives.ReadUInt32BigEndian(s[(HeaderSize + 4 * i)..]);
        var problems = new List<string>();
        var blocks = new List<uint>();
        uint agLen = geo.AgLength(agf.AgNumber);
        if (!agf.FreeListConsistent(n))
        {
            problems.Add($"AGF free list counters inconsistent (flfirst {agf.FlFirst}, fllast {agf.FlLast}, flcount {agf.FlCount}, {n} slots)");
        }
        else if (agf.FlCount > 0)
        {
            var seen = new HashSet<uint>();
            for (uint k = 0, i = agf.FlFirst; k < agf.FlCount; k++, i = (i + 1) % (uint)n)
            {
                uint b = slots[i];
                if (b < geo.FirstFreeBlock || b >= agLen) { problems.Add($"AGFL slot {i}: block {b} outside the AG"); continue; }
                if (!seen.Add(b)) { problems.Add($"AGFL slot {i}: block {b} listed twice"); continue; }
                blocks.Add(b);
            }
        }
        return new Agfl { Blocks = blocks, Slots = slots, Problems = problems };
    }
}
