namespace Xfbtree.Xfs.Online;

/// <summary>The structures an online repair rotation (<c>xfbtree stress --online-repair --structures</c>) works on.</summary>
[Flags]
internal enum OnlineRepairStructures
{
    /// <summary>None.</summary>
    None = 0,
    /// <summary>The rmap btree of each AG (<see cref="OnlineRmapRepair"/>).</summary>
    Rmapbt = 1,
    /// <summary>The free-space btree by block of each AG.</summary>
    Bnobt = 2,
    /// <summary>The free-space btree by size of each AG.</summary>
    Cntbt = 4,
    /// <summary>The inode btree of each AG.</summary>
    Inobt = 8,
    /// <summary>The free inode btree of each AG.</summary>
    Finobt = 16,
    /// <summary>The reference count btree of each AG.</summary>
    Refcountbt = 32,
    /// <summary>Every inode's link count (<see cref="OnlineLinkCounts"/>).</summary>
    Nlinks = 64,
    /// <summary>All of them.</summary>
    All = Rmapbt | Bnobt | Cntbt | Inobt | Finobt | Refcountbt | Nlinks,
    /// <summary>Those whose online rebuild takes the rmapbt as its source of truth (every one but the link counts):
    /// refused on a filesystem without an rmapbt.</summary>
    NeedRmapbt = Rmapbt | Bnobt | Cntbt | Inobt | Finobt | Refcountbt,
}

/// <summary>Names and parsing of <see cref="OnlineRepairStructures"/>.</summary>
internal static class OnlineRepairStructureNames
{
    private static readonly (string Name, OnlineRepairStructures Value)[] Names =
    [
        ("rmapbt", OnlineRepairStructures.Rmapbt), ("bnobt", OnlineRepairStructures.Bnobt), ("cntbt", OnlineRepairStructures.Cntbt),
        ("inobt", OnlineRepairStructures.Inobt), ("finobt", OnlineRepairStructures.Finobt), ("refcountbt", OnlineRepairStructures.Refcountbt),
        ("nlinks", OnlineRepairStructures.Nlinks),
    ];

    /// <summary>"rmapbt,bnobt,cntbt,inobt,finobt,refcountbt,nlinks".</summary>
    public static string Known => string.Join(",", Names.Select(n => n.Name));

    /// <summary>Parses a comma-separated list of names (case-sensitive, as the command line spells them). Throws
    /// <see cref="FormatException"/> naming the first unknown or empty name, or an empty list.</summary>
    public static OnlineRepairStructures Parse(string list)
    {
        ArgumentNullException.ThrowIfNull(list);
        var result = OnlineRepairStructures.None;
        foreach (string part in list.Split(','))
        {
            string name = part.Trim();
            if (name.Length == 0)
            {
                throw new FormatException($"'{list}': an empty name (known: {Known})");
            }
            int i = Array.FindIndex(Names, n => n.Name == name);
            if (i < 0)
            {
                throw new FormatException($"unknown structure '{name}' (known: {Known})");
            }
            result |= Names[i].Value;
        }
        return result;
    }

    /// <summary>The names of the structures in <paramref name="set"/>, in the canonical order, comma-separated.</summary>
    public static string Format(OnlineRepairStructures set)
        => string.Join(",", Names.Where(n => (set & n.Value) != 0).Select(n => n.Name));
}
