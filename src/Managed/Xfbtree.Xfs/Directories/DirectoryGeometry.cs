using Xfbtree.Xfs.Format;

namespace Xfbtree.Xfs.Directories;

/// <summary>
/// Sizes and address arithmetic of one filesystem's directories (the kernel's xfs_da_geometry): the directory
/// block size (one or several filesystem blocks), the three address spaces (data from 0, leaf and da btree from
/// 32 GiB, free index from 64 GiB), data pointers (byte address in the directory / 8) and the capacities of
/// leaf, node and free-index blocks.
/// </summary>
internal sealed class DirectoryGeometry
{
    /// <summary>Geometry of the filesystem a superblock describes.</summary>
    public DirectoryGeometry(Superblock sb)
    {
        FsBlockSize = (int)sb.BlockSize;
        FsBlockLog = sb.BlockLog;
        FsbsPerBlock = 1 << sb.DirBlockLog;
        BlockSize = FsBlockSize * FsbsPerBlock;
        HasFtype = (sb.FeaturesIncompat & Superblock.IncompatFtype) != 0;
    }

    /// <summary>Filesystem block size in bytes.</summary>
    public int FsBlockSize { get; }
    /// <summary>log2 of the filesystem block size.</summary>
    public int FsBlockLog { get; }
    /// <summary>Filesystem blocks per directory block.</summary>
    public int FsbsPerBlock { get; }
    /// <summary>Directory block size in bytes.</summary>
    public int BlockSize { get; }
    /// <summary>Entries carry a file type byte.</summary>
    public bool HasFtype { get; }

    /// <summary>File block (fs blocks) where the leaf / da btree space starts: the da btree root lives here.</summary>
    public ulong LeafFileBlock => (ulong)(DirectoryFormat.LeafOffsetBytes >> FsBlockLog);
    /// <summary>File block where the free-index space starts.</summary>
    public ulong FreeFileBlock => (ulong)(DirectoryFormat.FreeOffsetBytes >> FsBlockLog);
    /// <summary>Directory block number of the first free-index block.</summary>
    public uint FreeFirstDb => (uint)(DirectoryFormat.FreeOffsetBytes / BlockSize);

    /// <summary>First file block of directory block <paramref name="db"/>.</summary>
    public ulong FileBlockOfDb(uint db) => (ulong)db * (ulong)FsbsPerBlock;
    /// <summary>Directory block holding file block <paramref name="fileBlock"/>.</summary>
    public uint DbOfFileBlock(ulong fileBlock) => (uint)(fileBlock / (ulong)FsbsPerBlock);
    /// <summary>Data pointer of the entry at byte <paramref name="offset"/> of data block <paramref name="db"/>.</summary>
    public uint DataPtr(uint db, int offset) => (uint)((((ulong)db * (ulong)BlockSize) + (ulong)offset) >> 3);
    /// <summary>Data block a data pointer names.</summary>
    public uint DbOfPtr(uint ptr) => (uint)(((ulong)ptr << 3) / (ulong)BlockSize);
    /// <summary>Byte offset inside its data block of the entry a data pointer names.</summary>
    public int OffsetOfPtr(uint ptr) => (int)(((ulong)ptr << 3) % (ulong)BlockSize);

    /// <summary>Largest free region a data block can have (everything after its header).</summary>
    public int DataFreeMax => BlockSize - DirectoryFormat.DataHeaderSize;
    /// <summary>Entries of a leaf-n block or a da node block.</summary>
    public int HashBlockMaxEntries => (BlockSize - DirectoryFormat.DaHeaderSize) / 8;
    /// <summary>Leaf entries a leaf1 block holds next to a best-free table of <paramref name="bestCount"/> slots.</summary>
    public int Leaf1MaxEntries(int bestCount) => (BlockSize - DirectoryFormat.DaHeaderSize - 4 - (2 * bestCount)) / 8;
    /// <summary>Best-free slots of one free-index block.</summary>
    public int FreeMaxBests => (BlockSize - DirectoryFormat.DaHeaderSize) / 2;
}
