namespace Xfbtree.Xfs.Format;

/// <summary>
/// rmap owners (docs/xfs-format.md §7). Special owners have bit 63 set and are shown as small negative numbers;
/// every other owner is an inode number.
/// </summary>
public static class RmapOwner
{
    /// <summary>-1: never on disk.</summary>
    public const ulong Null = 0xFFFFFFFFFFFFFFFF;
    /// <summary>-2: never on disk.</summary>
    public const ulong Unknown = 0xFFFFFFFFFFFFFFFE;
    /// <summary>-3: AG headers (SB/AGF/AGI/AGFL sectors).</summary>
    public const ulong Fs = 0xFFFFFFFFFFFFFFFD;
    /// <summary>-4: internal log.</summary>
    public const ulong Log = 0xFFFFFFFFFFFFFFFC;
    /// <summary>-5: bnobt, cntbt, rmapbt blocks and AGFL blocks.</summary>
    public const ulong Ag = 0xFFFFFFFFFFFFFFFB;
    /// <summary>-6: inobt and finobt blocks.</summary>
    public const ulong Inobt = 0xFFFFFFFFFFFFFFFA;
    /// <summary>-7: inode chunk blocks (allocated parts only).</summary>
    public const ulong Inodes = 0xFFFFFFFFFFFFFFF9;
    /// <summary>-8: refcountbt blocks.</summary>
    public const ulong Refc = 0xFFFFFFFFFFFFFFF8;
    /// <summary>-9: CoW staging extents.</summary>
    public const ulong Cow = 0xFFFFFFFFFFFFFFF7;
    /// <summary>-10: guard value; legal special owners lie in (Min, Fs].</summary>
    public const ulong Min = 0xFFFFFFFFFFFFFFF6;

    /// <summary>True for owners with bit 63 set.</summary>
    public static bool IsSpecial(ulong owner) => (owner & (1UL << 63)) != 0;

    /// <summary>The symbolic name used in the fixtures' truth.tsv: XFS_RMAP_OWN_* or "inode".</summary>
    public static string Name(ulong owner) => owner switch
    {
        Null => "XFS_RMAP_OWN_NULL",
        Unknown => "XFS_RMAP_OWN_UNKNOWN",
        Fs => "XFS_RMAP_OWN_FS",
        Log => "XFS_RMAP_OWN_LOG",
        Ag => "XFS_RMAP_OWN_AG",
        Inobt => "XFS_RMAP_OWN_INOBT",
        Inodes => "XFS_RMAP_OWN_INODES",
        Refc => "XFS_RMAP_OWN_REFC",
        Cow => "XFS_RMAP_OWN_COW",
        _ when IsSpecial(owner) => "special",
        _ => "inode",
    };
}
