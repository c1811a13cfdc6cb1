using Xfbtree.Xfs.Format;

namespace Xfbtree.Xfs.Attributes;

/// <summary>
/// One extended attribute as an attr fork stores it: namespace flags, the name without its prefix, and the value,
/// either held here (<see cref="Value"/>) or, for a value in remote blocks not read yet, only its place
/// (<see cref="RemoteBlock"/>, <see cref="ValueLength"/>).
/// </summary>
internal sealed class AttrEntry
{
    /// <summary>A new entry with its value in hand.</summary>
    public AttrEntry(byte flags, byte[] name, byte[] value)
    {
        ArgumentNullException.ThrowIfNull(name);
        ArgumentNullException.ThrowIfNull(value);
        Flags = flags;
        Name = name;
        Value = value;
        ValueLength = value.Length;
        Hash = DaHash.HashName(name);
    }

    /// <summary>An entry read from a leaf whose value lies in remote blocks from logical block <paramref name="remoteBlock"/> on.</summary>
    public AttrEntry(byte flags, byte[] name, uint remoteBlock, int valueLength)
    {
        ArgumentNullException.ThrowIfNull(name);
        Flags = flags;
        Name = name;
        RemoteBlock = remoteBlock;
        ValueLength = valueLength;
        Hash = DaHash.HashName(name);
    }

    /// <summary>Namespace flags (<see cref="AttrFormat.FlagRoot"/>, <see cref="AttrFormat.FlagSecure"/>), plus
    /// <see cref="AttrFormat.FlagIncomplete"/> when read so; never <see cref="AttrFormat.FlagLocal"/>.</summary>
    public byte Flags { get; }

    /// <summary>The name as stored (no namespace prefix).</summary>
    public byte[] Name { get; }

    /// <summary>The value, or null while a remote value has not been read.</summary>
    public byte[]? Value { get; internal set; }

    /// <summary>Bytes of the value.</summary>
    public int ValueLength { get; }

    /// <summary>First logical attr-fork block of the remote value as the leaf names it; 0 when none is assigned.</summary>
    public uint RemoteBlock { get; internal set; }

    /// <summary>The da name hash of <see cref="Name"/>.</summary>
    public uint Hash { get; }

    /// <summary>True when the entry names the same attribute (namespace and name).</summary>
    public bool Matches(byte namespaceFlags, ReadOnlySpan<byte> name)
        => (Flags & AttrFormat.NamespaceMask) == (namespaceFlags & AttrFormat.NamespaceMask) && Name.AsSpan().SequenceEqual(name);

    /// <inheritdoc/>
    public override string ToString() => $"{XattrName.NamespaceOf(Flags)} '{System.Text.Encoding.UTF8.GetString(Name)}' ({ValueLength} bytes{(RemoteBlock != 0 ? $", remote at {RemoteBlock}" : "")})";
}
