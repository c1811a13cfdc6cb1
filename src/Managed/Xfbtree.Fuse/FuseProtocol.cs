using System.Runtime.InteropServices;

namespace Xfbtree.Fuse;

// The kernel's FUSE wire format (include/uapi/linux/fuse.h), as unmanaged structs read and written in place in the
// workers' pinned buffers. Field names follow the header; every struct is little-endian and naturally aligned,
// so LayoutKind.Sequential gives the kernel's layout (sizes are checked by FuseProtocolLayoutTests).

/// <summary>Request opcodes.</summary>
internal enum FuseOpcode : uint
{
    Lookup = 1,
    Forget = 2,
    GetAttr = 3,
    SetAttr = 4,
    ReadLink = 5,
    Symlink = 6,
    MkNod = 8,
    MkDir = 9,
    Unlink = 10,
    RmDir = 11,
    Rename = 12,
    Link = 13,
    Open = 14,
    Read = 15,
    Write = 16,
    StatFs = 17,
    Release = 18,
    Fsync = 20,
    SetXattr = 21,
    GetXattr = 22,
    ListXattr = 23,
    RemoveXattr = 24,
    Flush = 25,
    Init = 26,
    OpenDir = 27,
    ReadDir = 28,
    ReleaseDir = 29,
    FsyncDir = 30,
    GetLk = 31,
    SetLk = 32,
    SetLkW = 33,
    Access = 34,
    Create = 35,
    Interrupt = 36,
    Bmap = 37,
    Destroy = 38,
    Ioctl = 39,
    Poll = 40,
    NotifyReply = 41,
    BatchForget = 42,
    Fallocate = 43,
    ReadDirPlus = 44,
    Rename2 = 45,
    Lseek = 46,
    CopyFileRange = 47,
    SetupMapping = 48,
    RemoveMapping = 49,
    SyncFs = 50,
    TmpFile = 51,
    Statx = 52,
    CopyFileRange64 = 53,
}

/// <summary>Flags and constants of the protocol that servers need.</summary>
internal static class FuseConstants
{
    public const uint KernelVersion = 7;
    /// <summary>The minor version this server speaks (the kernel uses the lower of its own and ours).</summary>
    public const uint ServerMinorVersion = 34;
    /// <summary>The oldest kernel minor version accepted (big writes, parallel dirops, max_pages, readdirplus, copy_file_range).</summary>
    public const uint OldestKernelMinor = 31;
    public const ulong RootNodeId = 1;
    public const int NameMax = 255;

    // INIT flags.
    public const uint InitAsyncRead = 1 << 0;
    public const uint InitPosixLocks = 1 << 1;
    public const uint InitAtomicOTrunc = 1 << 3;
    public const uint InitExportSupport = 1 << 4;
    public const uint InitBigWrites = 1 << 5;
    public const uint InitDontMask = 1 << 6;
    public const uint InitFlockLocks = 1 << 10;
    public const uint InitAutoInvalData = 1 << 12;
    public const uint InitDoReaddirplus = 1 << 13;
    public const uint InitReaddirplusAuto = 1 << 14;
    public const uint InitAsyncDio = 1 << 15;
    public const uint InitWritebackCache = 1 << 16;
    public const uint InitParallelDirops = 1 << 18;
    public const uint InitHandleKillpriv = 1 << 19;
    public const uint InitMaxPages = 1 << 22;
    public const uint InitCacheSymlinks = 1 << 23;
    /// <summary>Kernel capability (not answered): an OPENDIR answered ENOSYS means "opened", and the kernel sends no more OPENDIR or RELEASEDIR.</summary>
    public const uint InitNoOpendirSupport = 1 << 24;
    public const uint InitHandleKillprivV2 = 1 << 28;
    public const uint InitInitExt = 1u << 30;

    // SETATTR valid bits.
    public const uint SetAttrMode = 1 << 0;
    public const uint SetAttrUid = 1 << 1;
    public const uint SetAttrGid = 1 << 2;
    public const uint SetAttrSize = 1 << 3;
    public const uint SetAttrAtime = 1 << 4;
    public const uint SetAttrMtime = 1 << 5;
    public const uint SetAttrFh = 1 << 6;
    public const uint SetAttrAtimeNow = 1 << 7;
    public const uint SetAttrMtimeNow = 1 << 8;
    public const uint SetAttrLockOwner = 1 << 9;
    public const uint SetAttrCtime = 1 << 10;
    public const uint SetAttrKillSuidGid = 1 << 11;

    /// <summary>WRITE flag (with HANDLE_KILLPRIV_V2): clear set-user-ID, set-group-ID and capabilities first.</summary>
    public const uint WriteKillSuidGid = 1 << 2;

    /// <summary>OPEN open_flags bit (with HANDLE_KILLPRIV_V2, on O_TRUNC): clear them with the truncate.</summary>
    public const uint OpenKillSuidGid = 1 << 0;

    // OPEN reply flags.
    public const uint OpenDirectIo = 1 << 0;
    public const uint OpenKeepCache = 1 << 1;
    public const uint OpenCacheDir = 1 << 3;

    /// <summary>FSYNC flag: fdatasync.</summary>
    public const uint FsyncDataOnly = 1 << 0;

    /// <summary>GETATTR flag: fh is valid.</summary>
    public const uint GetAttrFh = 1 << 0;

    // fallocate(2) modes.
    public const uint FallocKeepSize = 0x01;
    public const uint FallocPunchHole = 0x02;
    public const uint FallocZeroRange = 0x10;
    public const uint FallocCollapseRange = 0x08;
    public const uint FallocInsertRange = 0x20;

    // lseek whence.
    public const uint SeekData = 3;
    public const uint SeekHole = 4;

    // fuse_ioctl_in.flags.
    public const uint IoctlCompat = 1 << 0;
    public const uint IoctlUnrestricted = 1 << 1;
    public const uint Ioctl32Bit = 1 << 3;
    public const uint IoctlDir = 1 << 4;
}

/// <summary>struct fuse_in_header (40 bytes): starts every request.</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct FuseInHeader
{
    public uint Length;
    public FuseOpcode Opcode;
    public ulong Unique;
    public ulong NodeId;
    public uint Uid;
    public uint Gid;
    public uint Pid;
    public ushort TotalExtLength;
    public ushort Padding;
}

/// <summary>struct fuse_out_header (16 bytes): starts every reply. Error is a negative errno or 0.</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct FuseOutHeader
{
    public uint Length;
    public int Error;
    public ulong Unique;
}

/// <summary>struct fuse_attr (88 bytes).</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct FuseAttr
{
    public ulong Ino;
    public ulong Size;
    public ulong Blocks;
    public ulong Atime;
    public ulong Mtime;
    public ulong Ctime;
    public uint AtimeNsec;
    public uint MtimeNsec;
    public uint CtimeNsec;
    public uint Mode;
    public uint Nlink;
    public uint Uid;
    public uint Gid;
    public uint Rdev;
    public uint BlockSize;
    public uint Flags;
}

/// <summary>struct fuse_entry_out (128 bytes): the reply to LOOKUP, MKNOD, MKDIR, SYMLINK, LINK, CREATE.</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct FuseEntryOut
{
    public ulong NodeId;
    public ulong Generation;
    public ulong EntryValid;
    public ulong AttrValid;
    public uint EntryValidNsec;
    public uint AttrValidNsec;
    public FuseAttr Attr;
}

/// <summary>struct fuse_attr_out (104 bytes).</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct FuseAttrOut
{
    public ulong AttrValid;
    public uint AttrValidNsec;
    public uint Dummy;
    public FuseAttr Attr;
}

[StructLayout(LayoutKind.Sequential)]
internal struct FuseForgetIn
{
    public ulong Nlookup;
}

[StructLayout(LayoutKind.Sequential)]
internal struct FuseForgetOne
{
    public ulong NodeId;
    public ulong Nlookup;
}

[StructLayout(LayoutKind.Sequential)]
internal struct FuseBatchForgetIn
{
    public uint Count;
    public uint Dummy;
}

[StructLayout(LayoutKind.Sequential)]
internal struct FuseGetAttrIn
{
    public uint GetAttrFlags;
    public uint Dummy;
    public ulong Fh;
}

[StructLayout(LayoutKind.Sequential)]
internal struct FuseMkNodIn
{
    public uint Mode;
    public uint Rdev;
    public uint Umask;
    public uint Padding;
}

[StructLayout(LayoutKind.Sequential)]
internal struct FuseMkDirIn
{
    public uint Mode;
    public uint Umask;
}

[StructLayout(LayoutKind.Sequential)]
internal struct FuseRenameIn
{
    public ulong NewDir;
}

[StructLayout(LayoutKind.Sequential)]
internal struct FuseRename2In
{
    public ulong NewDir;
    public uint Flags;
    public uint Padding;
}

[StructLayout(LayoutKind.Sequential)]
internal struct FuseLinkIn
{
    public ulong OldNodeId;
}

/// <summary>struct fuse_setattr_in (88 bytes).</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct FuseSetAttrIn
{
    public uint Valid;
    public uint Padding;
    public ulong Fh;
    public ulong Size;
    public ulong LockOwner;
    public ulong Atime;
    public ulong Mtime;
    public ulong Ctime;
    public uint AtimeNsec;
    public uint MtimeNsec;
    public uint CtimeNsec;
    public uint Mode;
    public uint Unused4;
    public uint Uid;
    public uint Gid;
    public uint Unused5;
}

[StructLayout(LayoutKind.Sequential)]
internal struct FuseOpenIn
{
    public uint Flags;
    public uint OpenFlags;
}

[StructLayout(LayoutKind.Sequential)]
internal struct FuseCreateIn
{
    public uint Flags;
    public uint Mode;
    public uint Umask;
    public uint OpenFlags;
}

[StructLayout(LayoutKind.Sequential)]
internal struct FuseOpenOut
{
    public ulong Fh;
    public uint OpenFlags;
    public int BackingId;
}

[StructLayout(LayoutKind.Sequential)]
internal struct FuseReleaseIn
{
    public ulong Fh;
    public uint Flags;
    public uint ReleaseFlags;
    public ulong LockOwner;
}

[StructLayout(LayoutKind.Sequential)]
internal struct FuseFlushIn
{
    public ulong Fh;
    public uint Unused;
    public uint Padding;
    public ulong LockOwner;
}

[StructLayout(LayoutKind.Sequential)]
internal struct FuseReadIn
{
    public ulong Fh;
    public ulong Offset;
    public uint Size;
    public uint ReadFlags;
    public ulong LockOwner;
    public uint Flags;
    public uint Padding;
}

[StructLayout(LayoutKind.Sequential)]
internal struct FuseWriteIn
{
    public ulong Fh;
    public ulong Offset;
    public uint Size;
    public uint WriteFlags;
    public ulong LockOwner;
    public uint Flags;
    public uint Padding;
}

[StructLayout(LayoutKind.Sequential)]
internal struct FuseWriteOut
{
    public uint Size;
    public uint Padding;
}

/// <summary>struct fuse_kstatfs (80 bytes), the whole of fuse_statfs_out.</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct FuseStatFsOut
{
    public ulong Blocks;
    public ulong FreeBlocks;
    public ulong AvailableBlocks;
    public ulong Files;
    public ulong FreeFiles;
    public uint BlockSize;
    public uint NameLength;
    public uint FragmentSize;
    public uint Padding;
    public uint Spare0, Spare1, Spare2, Spare3, Spare4, Spare5;
}

[StructLayout(LayoutKind.Sequential)]
internal struct FuseFsyncIn
{
    public ulong Fh;
    public uint FsyncFlags;
    public uint Padding;
}

/// <summary>struct fuse_setxattr_in in its old 8-byte form (FUSE_SETXATTR_EXT is not negotiated).</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct FuseSetXattrIn
{
    public uint Size;
    public uint Flags;
}

[StructLayout(LayoutKind.Sequential)]
internal struct FuseGetXattrIn
{
    public uint Size;
    public uint Padding;
}

[StructLayout(LayoutKind.Sequential)]
internal struct FuseGetXattrOut
{
    public uint Size;
    public uint Padding;
}

[StructLayout(LayoutKind.Sequential)]
internal struct FuseAccessIn
{
    public uint Mask;
    public uint Padding;
}

/// <summary>struct fuse_init_in (64 bytes with flags2 and the unused words).</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct FuseInitIn
{
    public uint Major;
    public uint Minor;
    public uint MaxReadahead;
    public uint Flags;
}

/// <summary>struct fuse_init_out (64 bytes).</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct FuseInitOut
{
    public uint Major;
    public uint Minor;
    public uint MaxReadahead;
    public uint Flags;
    public ushort MaxBackground;
    public ushort CongestionThreshold;
    public uint MaxWrite;
    public uint TimeGranularity;
    public ushort MaxPages;
    public ushort MapAlignment;
    public uint Flags2;
    public uint MaxStackDepth;
    public ushort RequestTimeout;
    public ushort Unused0, Unused1, Unused2, Unused3, Unused4, Unused5, Unused6, Unused7, Unused8, Unused9, Unused10;
}

[StructLayout(LayoutKind.Sequential)]
internal struct FuseInterruptIn
{
    public ulong Unique;
}

[StructLayout(LayoutKind.Sequential)]
internal struct FuseFallocateIn
{
    public ulong Fh;
    public ulong Offset;
    public ulong Length;
    public uint Mode;
    public uint Padding;
}

[StructLayout(LayoutKind.Sequential)]
internal struct FuseLseekIn
{
    public ulong Fh;
    public ulong Offset;
    public uint Whence;
    public uint Padding;
}

[StructLayout(LayoutKind.Sequential)]
internal struct FuseLseekOut
{
    public ulong Offset;
}

[StructLayout(LayoutKind.Sequential)]
internal struct FuseCopyFileRangeIn
{
    public ulong FhIn;
    public ulong OffsetIn;
    public ulong NodeIdOut;
    public ulong FhOut;
    public ulong OffsetOut;
    public ulong Length;
    public ulong Flags;
}

/// <summary>struct fuse_ioctl_in (32 bytes); the input data (in_size bytes) follows.</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct FuseIoctlIn
{
    public ulong Fh;
    public uint Flags;
    public uint Command;
    public ulong Argument;
    public uint InSize;
    public uint OutSize;
}

/// <summary>struct fuse_ioctl_out (16 bytes); the output data follows.</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct FuseIoctlOut
{
    public int Result;
    public uint Flags;
    public uint InIovs;
    public uint OutIovs;
}

/// <summary>struct fuse_dirent without its name (24 bytes).</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct FuseDirent
{
    public ulong Ino;
    public ulong Offset;
    public uint NameLength;
    public uint Type;
}
