using Xfbtree.Xfs.Trees;

namespace Xfbtree.Xfs.Write.Engine;

/// <summary>What happened to an rmap record (upstream's xfs_rmap_intent types, folded).</summary>
internal enum RmapUpdateKind
{
    /// <summary>A mapping was added (merging is the tree's business, the update carries the mapping as given).</summary>
    Map,
    /// <summary>A mapping was removed.</summary>
    Unmap,
    /// <summary>The unwritten state of a mapped range changed to the state the record carries.</summary>
    Convert,
}

/// <summary>
/// One rmap change of an AG as the write engine made it to the on-disk rmapbt: file mappings (owner = inode),
/// bmbt blocks, AG metadata owners (OWN_AG for free-list moves, OWN_INOBT, OWN_INODES, OWN_REFC, ...).
/// <see cref="Shared"/> says the _shared variant was used (reflink inode).
/// </summary>
internal readonly record struct RmapUpdate(RmapUpdateKind Kind, uint AgNumber, RmapRecord Record, bool Shared);

/// <summary>An observer of an AG's rmap changes (online repair's live hook). Called synchronously, with the AG
/// lock held and, for file mappings, the owner inode's lock held. An exception thrown here is caught by the
/// engine, never fails the writer, and is reported to the observer through <see cref="IEngineHook{TUpdate}.OnHookFailed"/>.</summary>
internal interface IRmapHook : IEngineHook<RmapUpdate>
{
    void OnRmapUpdate(in RmapUpdate update);

    void IEngineHook<RmapUpdate>.OnUpdate(in RmapUpdate update) => OnRmapUpdate(update);
}
