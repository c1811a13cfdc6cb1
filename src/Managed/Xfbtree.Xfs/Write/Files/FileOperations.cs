using Xfbtree.Xfs.Write.Engine;

namespace Xfbtree.Xfs.Write.Files;

/// <summary>
/// Regular-file data operations on inode numbers, each one transaction. OWNER: write-files.
/// Fork mapping in extents and btree format (with the kernel's conversions both ways), rmap and refcount
/// updates through the transaction, reflink and copy-on-write.
/// </summary>
public sealed class FileOperations
{
    public FileOperations(WriteEngine engine) => Engine = engine;

    public WriteEngine Engine { get; }

    /// <summary>Writes <paramref name="data"/> at <paramref name="offset"/> (allocating holes, converting unwritten
    /// ranges, copying shared blocks on write); extends the size.</summary>
    public void Write(ulong ino, long offset, ReadOnlySpan<byte> data) => throw new NotImplementedException("write-files");

    /// <summary>Reads up to <paramref name="buffer"/>.Length bytes at <paramref name="offset"/> (holes and unwritten
    /// ranges read as zeros; stops at EOF). Returns the bytes read.</summary>
    public int Read(ulong ino, long offset, Span<byte> buffer) => throw new NotImplementedException("write-files");

    /// <summary>Preallocates unwritten extents over the holes of the range, as fallocate(2) with mode 0:
    /// the size grows to cover the range.</summary>
    public void Fallocate(ulong ino, long offset, long length) => throw new NotImplementedException("write-files");

    /// <summary>Unmaps and frees the whole blocks of the range, zeroing partial blocks at its ends.</summary>
    public void PunchHole(ulong ino, long offset, long length) => throw new NotImplementedException("write-files");

    /// <summary>Sets the size: shrinking frees the blocks past the new EOF, growing leaves a hole.</summary>
    public void Truncate(ulong ino, long size) => throw new NotImplementedException("write-files");

    /// <summary>Shares the blocks of src [srcOffset, +length) into dst at dstOffset (block-aligned; length may end at
    /// src EOF). dst's old mapping of the range is removed first. Sets the reflink flag on both.</summary>
    public void Reflink(ulong srcIno, long srcOffset, ulong dstIno, long dstOffset, long length) => throw new NotImplementedException("write-files");

    /// <summary>Gives the range private copies of its shared blocks.</summary>
    public void Unshare(ulong ino, long offset, long length) => throw new NotImplementedException("write-files");

    /// <summary>Frees every block of both forks (data, attr, bmbt blocks) of a locked inode inside
    /// <paramref name="tx"/> (unlink). Leaves the forks empty in extents format.</summary>
    public void FreeAllBlocks(WriteTransaction tx, IncoreInode inode) => throw new NotImplementedException("write-files");
}
