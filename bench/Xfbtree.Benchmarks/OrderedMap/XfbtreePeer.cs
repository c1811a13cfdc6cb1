namespace Xfbtree.Benchmarks.OrderedMap;

/// <summary>
/// Xfbtree's typed ordered map on an xfile.
/// TODO(issue 5): wire to the typed ordered-map API (ShmemBTree&lt;TRecord&gt; in src/Managed/Xfbtree/InMemory) once
/// it is on main; until then the Xfbtree column is reported as unavailable and the ratio lines print n/a.
/// </summary>
public static class XfbtreePeer
{
    /// <summary>Creates the peer for <paramref name="expectedRecords"/> records.</summary>
    public static IOrderedMapPeer TryCreate(int expectedRecords) =>
        throw new NotSupportedException("the Xfbtree typed ordered map (ShmemBTree<TRecord>) is not on main yet");

    /// <summary>False until the typed map exists.</summary>
    public static bool IsAvailable(out string? why)
    {
        why = "TODO: typed ordered map (ShmemBTree<TRecord>, src/Managed/Xfbtree/InMemory) not on main yet; Xfbtree column not measured";
        return false;
    }
}
