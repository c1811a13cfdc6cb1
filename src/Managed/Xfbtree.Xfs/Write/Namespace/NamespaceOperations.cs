using Xfbtree.Xfs.Write.Engine;
using Xfbtree.Xfs.Write.Files;

namespace Xfbtree.Xfs.Write.Namespace;

/// <summary>One entry of a directory listing.</summary>
public readonly record struct DirectoryEntry(string Name, ulong Ino, InodeType Type);

/// <summary>What an inode is.</summary>
public enum InodeType { Unknown, RegularFile, Directory, Symlink, CharDevice, BlockDevice, Fifo, Socket }

/// <summary>What stat shows.</summary>
public readonly record struct InodeStat(
    ulong Ino, InodeType Type, ushort Mode, uint Links, long Size, long Blocks, ulong DataExtents,
    string DataForkFormat, bool Reflink, DateTimeOffset ModifiedAt);

/// <summary>
/// Paths, directories and inode life: lookup, create, mkdir, unlink, list, stat. OWNER: write-namespace.
/// Shortform and block directories (others are refused naming their format); inode allocation from a free
/// inode or a new chunk (inobt, finobt, OWN_INODES); inode free.
/// </summary>
public sealed class NamespaceOperations
{
    public NamespaceOperations(WriteEngine engine, FileOperations files)
    {
        Engine = engine;
        Files = files;
    }

    public WriteEngine Engine { get; }

    public FileOperations Files { get; }

    /// <summary>The inode an absolute path names ("/" = root). Throws NotFound / NotDirectory / InvalidArgument.</summary>
    public ulong Lookup(string path) => throw new NotImplementedException("write-namespace");

    /// <summary>Creates an empty regular file; returns its inode number. Throws Exists.</summary>
    public ulong Create(string path, ushort permissions = 0x1A4) => throw new NotImplementedException("write-namespace");

    /// <summary>Creates an empty directory; returns its inode number.</summary>
    public ulong Mkdir(string path, ushort permissions = 0x1ED) => throw new NotImplementedException("write-namespace");

    /// <summary>Removes a name: a regular file (its blocks and inode are freed when it was the last link) or an
    /// empty directory.</summary>
    public void Unlink(string path) => throw new NotImplementedException("write-namespace");

    /// <summary>Entries of a directory, "." and ".." excluded, in directory order.</summary>
    public IReadOnlyList<DirectoryEntry> List(string path) => throw new NotImplementedException("write-namespace");

    public InodeStat Stat(string path) => throw new NotImplementedException("write-namespace");
}
