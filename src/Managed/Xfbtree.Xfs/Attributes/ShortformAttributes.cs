using System.Buffers.Binary;

namespace Xfbtree.Xfs.Attributes;

/// <summary>
/// The shortform attribute list kept in a LOCAL attr fork (xfs_attr_shortform): header totsize u16 (header
/// included), count u8, pad u8; then packed entries namelen u8, valuelen u8, flags u8, name, value.
/// </summary>
internal static class ShortformAttributes
{
    /// <summary>Bytes the list takes for <paramref name="entries"/>.</summary>
    public static int Size(IReadOnlyList<AttrEntry> entries)
    {
        ArgumentNullException.ThrowIfNull(entries);
        int size = AttrFormat.ShortformHeaderSize;
        foreach (var e in entries) size += AttrFormat.ShortformEntrySize(e.Name.Length, e.ValueLength);
        return size;
    }

    /// <summary>True when every entry may live in a shortform list (names and values below 255 bytes, values in hand).</summary>
    public static bool AllEligible(IReadOnlyList<AttrEntry> entries)
    {
        ArgumentNullException.ThrowIfNull(entries);
        if (entries.Count > byte.MaxValue) return false;
        foreach (var e in entries)
        {
            if (e.Name.Length >= AttrFormat.ShortformLengthLimit || e.ValueLength >= AttrFormat.ShortformLengthLimit || e.Value is null) return false;
        }
        return true;
    }

    /// <summary>Parses and checks the list in <paramref name="fork"/> (the attr fork area); throws
    /// <see cref="AttrFormatException"/> when it is not a valid list (xfs_attr_shortform_verify).</summary>
    public static List<AttrEntry> Parse(ReadOnlySpan<byte> fork)
    {
        if (fork.Length < AttrFormat.ShortformHeaderSize) throw new AttrFormatException("shortform attribute fork smaller than its header");
        int total = BinaryPrimitives.ReadUInt16BigEndian(fork);
        int count = fork[2];
        if (total < AttrFormat.ShortformHeaderSize || total > fork.Length)
            throw new AttrFormatException($"shortform attribute list of {total} bytes in a fork of {fork.Length}");
        var list = new List<AttrEntry>(count);
        int p = AttrFormat.ShortformHeaderSize;
        for (int i = 0; i < count; i++)
        {
            if (p + AttrFormat.ShortformEntryOverhead > total) throw new AttrFormatException($"shortform entry {i} runs past the list's size");
            int nameLength = fork[p], valueLength = fork[p + 1];
            byte flags = fork[p + 2];
            int size = AttrFormat.ShortformEntrySize(nameLength, valueLength);
            if (nameLength == 0) throw new AttrFormatException($"shortform entry {i} has an empty name");
            if (p + size > total) throw new AttrFormatException($"shortform entry {i} runs past the list's size");
            if ((flags & ~AttrFormat.NamespaceMask) != 0 || System.Numerics.BitOperations.PopCount((uint)(flags & AttrFormat.NamespaceMask)) > 1)
                throw new AttrFormatException($"shortform entry {i} has flags 0x{flags:x2}");
            var name = fork.Slice(p + 3, nameLength).ToArray();
            var value = fork.Slice(p + 3 + nameLength, valueLength).ToArray();
            list.Add(new AttrEntry(flags, name, value));
            p += size;
        }
        if (p != total) throw new AttrFormatException($"shortform list counts {total} bytes but its {count} entries take {p}");
        return list;
    }

    /// <summary>Writes the list into <paramref name="fork"/> (cleared first); every entry must be eligible.</summary>
    public static void Write(Span<byte> fork, IReadOnlyList<AttrEntry> entries)
    {
        ArgumentNullException.ThrowIfNull(entries);
        int total = Size(entries);
        if (total > fork.Length) throw new ArgumentException($"shortform list of {total} bytes does not fit a fork of {fork.Length}", nameof(entries));
        fork.Clear();
        BinaryPrimitives.WriteUInt16BigEndian(fork, (ushort)total);
        fork[2] = (byte)entries.Count;
        int p = AttrFormat.ShortformHeaderSize;
        foreach (var e in entries)
        {
            fork[p] = (byte)e.Name.Length;
            fork[p + 1] = (byte)e.ValueLength;
            fork[p + 2] = (byte)(e.Flags & AttrFormat.NamespaceMask);
            e.Name.CopyTo(fork[(p + 3)..]);
            e.Value!.CopyTo(fork[(p + 3 + e.Name.Length)..]);
            p += AttrFormat.ShortformEntrySize(e.Name.Length, e.ValueLength);
        }
    }
}

/// <summary>An attr fork structure that breaks the on-disk rules; the message says which.</summary>
/// <param name="message">What rule the structure breaks.</param>
internal sealed class AttrFormatException(string message) : Exception(message);
