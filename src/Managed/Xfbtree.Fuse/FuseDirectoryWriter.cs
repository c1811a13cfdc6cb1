using System.Runtime.InteropServices;

namespace Xfbtree.Fuse;

/// <summary>
/// Appends READDIR entries (struct fuse_dirent) or READDIRPLUS entries (struct fuse_direntplus) to the reply in
/// place, each padded to 8 bytes. The size the kernel asked for bounds it: an entry that does not fit is refused
/// and the file system stops there (the kernel comes back with that entry's offset).
/// </summary>
internal ref struct FuseDirectoryWriter
{
    const int DirentSize = 24;
    const int EntryOutSize = 128;

    readonly Span<byte> _buffer;
    int _used;

    internal FuseDirectoryWriter(Span<byte> buffer, bool plus)
    {
        _buffer = buffer;
        Plus = plus;
        _used = 0;
    }

    /// <summary>READDIRPLUS: every entry carries its attributes (<see cref="TryAddPlus"/>); otherwise <see cref="TryAdd"/>.</summary>
    public bool Plus { get; }

    /// <summary>Bytes written so far.</summary>
    public readonly int Length => _used;

    /// <summary>Bytes still free: an entry takes 24 (READDIR) or 152 (READDIRPLUS) bytes plus its name, padded to 8.</summary>
    public readonly int Remaining => _buffer.Length - _used;

    /// <summary>True when no entry was written yet.</summary>
    public readonly bool IsEmpty => _used == 0;

    /// <summary>Adds a plain entry. <paramref name="nextOffset"/> is the cookie that continues after it; type is the DT_ value.</summary>
    public bool TryAdd(ReadOnlySpan<byte> name, ulong ino, uint type, long nextOffset)
    {
        int size = Align8(DirentSize + name.Length);
        if (Plus || _used + size > _buffer.Length)
        {
            return false;
        }
        WriteDirent(_buffer.Slice(_used, size), name, ino, type, nextOffset);
        _used += size;
        return true;
    }

    /// <summary>
    /// Adds an entry with its lookup reply. A nonzero <see cref="FuseEntryOut.NodeId"/> gives the kernel one lookup
    /// reference (except for "." and "..", which it skips): count it only when this returns true.
    /// </summary>
    public bool TryAddPlus(ReadOnlySpan<byte> name, in FuseEntryOut entry, long nextOffset)
    {
        int size = Align8(EntryOutSize + DirentSize + name.Length);
        if (!Plus || _used + size > _buffer.Length)
        {
            return false;
        }
        Span<byte> target = _buffer.Slice(_used, size);
        MemoryMarshal.Write(target, in entry);
        WriteDirent(target[EntryOutSize..], name, entry.Attr.Ino, (entry.Attr.Mode >> 12) & 0xF, nextOffset);
        _used += size;
        return true;
    }

    static void WriteDirent(Span<byte> target, ReadOnlySpan<byte> name, ulong ino, uint type, long nextOffset)
    {
        var dirent = new FuseDirent { Ino = ino, Offset = (ulong)nextOffset, NameLength = (uint)name.Length, Type = type };
        MemoryMarshal.Write(target, in dirent);
        name.CopyTo(target[DirentSize..]);
        target[(DirentSize + name.Length)..].Clear();
    }

    static int Align8(int n) => (n + 7) & ~7;
}
