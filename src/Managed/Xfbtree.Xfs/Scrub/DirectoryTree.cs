using Xfbtree.Xfs.Directories;

namespace Xfbtree.Xfs.Scrub;

/// <summary>One directory entry naming a directory: <paramref name="Parent"/> holds it, <paramref name="Child"/> is the
/// directory it names; <paramref name="Name"/> when the caller kept it (the online repair removes entries by name).</summary>
internal readonly record struct DirectoryEdge(ulong Parent, ulong Child, byte[]? Name);

/// <summary>What is wrong with the shape of the directory tree.</summary>
internal enum DirectoryTreeProblemKind
{
    /// <summary>A directory names a directory whose '..' names another one (a second parent, or a wrong '..').</summary>
    DotDotDisagrees,
    /// <summary>The directory its '..' names holds a second entry naming it.</summary>
    SecondName,
    /// <summary>An entry names the root, whose only parent is itself.</summary>
    NamesRoot,
    /// <summary>Directories each named by the one its '..' names, in a ring the root does not reach.</summary>
    Cycle,
}

/// <summary>
/// One problem of the directory tree. For an entry (<see cref="DirectoryTreeProblemKind.DotDotDisagrees"/>,
/// <see cref="DirectoryTreeProblemKind.SecondName"/>, <see cref="DirectoryTreeProblemKind.NamesRoot"/>):
/// <see cref="Parent"/> holds the entry named <see cref="Name"/> that names <see cref="Dir"/>, whose '..' names
/// <see cref="DotDot"/>; the repair removes that entry (xfs_repair's phase 6 junks it). For a cycle: <see cref="Dir"/>
/// is its lowest directory, named by <see cref="Parent"/> (its '..'), and <see cref="Cycle"/> lists the ring from it;
/// the repair removes the entry naming <see cref="Dir"/>, which then goes to /lost+found with what hangs below it.
/// </summary>
internal sealed record DirectoryTreeProblem(DirectoryTreeProblemKind Kind, ulong Dir, ulong Parent, byte[]? Name, ulong DotDot, IReadOnlyList<ulong>? Cycle = null)
{
    /// <summary>The report line.</summary>
    public override string ToString()
    {
        string holder = Name is null ? $"directory {Parent}" : $"directory {Parent} entry '{DirectoryFormat.Show(Name)}'";
        return Kind switch
        {
            DirectoryTreeProblemKind.DotDotDisagrees => $"{holder} names directory {Dir}, whose '..' names {DotDot}: a second parent or a wrong '..' (the entry is removed, as xfs_repair does)",
            DirectoryTreeProblemKind.SecondName => $"{holder} names directory {Dir} a second time (a directory has one name)",
            DirectoryTreeProblemKind.NamesRoot => $"{holder} names the root directory {Dir}",
            _ => $"directories {string.Join(", ", Cycle ?? [])} name each other in a cycle the root does not reach (directory {Dir} is named by {Parent}; it goes to /lost+found)",
        };
    }
}

/// <summary>
/// The shape of the directory tree from what a directory scan read (offline and online alike; upstream's dirtree
/// check, and xfs_repair's phase 6 connectivity, without parent pointers): every directory but the root must be
/// named by exactly one entry, held by the directory its '..' names, and following '..' from any directory must reach
/// the root. Source of truth: the entries and the '..' of every directory. An entry whose directory disagrees with
/// the named directory's '..' is the entry's fault (xfs_repair junks it: the '..' is what the directory says of
/// itself); a directory whose accepted parents form a ring is a cycle. Memory: the '..' of each directory and one
/// edge per entry naming a directory.
/// </summary>
internal static class DirectoryTree
{
    /// <summary>The problems of the tree rooted at <paramref name="root"/>: <paramref name="dotDot"/> holds the '..' of
    /// every directory read, <paramref name="edges"/> the entries naming directories (an edge whose parent or child
    /// was not read is left out: its counts are judged elsewhere). Sorted by directory.</summary>
    public static List<DirectoryTreeProblem> Analyze(ulong root, IReadOnlyDictionary<ulong, ulong> dotDot, IReadOnlyList<DirectoryEdge> edges)
    {
        var problems = new List<DirectoryTreeProblem>();
        // The accepted entry of each directory: the first one held by the directory its '..' names.
        var parentOf = new Dictionary<ulong, ulong>();
        var acceptedName = new Dictionary<ulong, byte[]?>();
        foreach (var e in edges)
        {
            if (!dotDot.TryGetValue(e.Child, out ulong up) || !dotDot.ContainsKey(e.Parent)) continue;
            if (e.Child == root)
            {
                problems.Add(new DirectoryTreeProblem(DirectoryTreeProblemKind.NamesRoot, e.Child, e.Parent, e.Name, up));
                continue;
            }
            if (up != e.Parent)
            {
                problems.Add(new DirectoryTreeProblem(DirectoryTreeProblemKind.DotDotDisagrees, e.Child, e.Parent, e.Name, up));
                continue;
            }
            if (!parentOf.TryAdd(e.Child, e.Parent))
            {
                problems.Add(new DirectoryTreeProblem(DirectoryTreeProblemKind.SecondName, e.Child, e.Parent, e.Name, up));
                continue;
            }
            acceptedName[e.Child] = e.Name;
        }
        // Rings of the accepted-parent map (each directory has at most one): those are the cycles the root does not
        // reach (the root has no accepted parent, so no ring holds it). Walk each unvisited directory up, marking the
        // path; meeting the path again closes a ring.
        var state = new Dictionary<ulong, int>();   // 1: on the current path, 2: done
        var path = new List<ulong>();
        foreach (ulong start in parentOf.Keys.Order())
        {
            if (state.ContainsKey(start)) continue;
            path.Clear();
            ulong cur = start;
            while (true)
            {
                if (state.TryGetValue(cur, out int s))
                {
                    if (s == 1)
                    {
                        int at = path.IndexOf(cur);
                        var ring = path.GetRange(at, path.Count - at);
                        ulong head = ring.Min();
                        int h = ring.IndexOf(head);
                        var ordered = ring.Skip(h).Concat(ring.Take(h)).ToArray();
                        problems.Add(new DirectoryTreeProblem(DirectoryTreeProblemKind.Cycle, head, parentOf[head], acceptedName[head], dotDot[head], ordered));
                    }
                    break;
                }
                state[cur] = 1;
                path.Add(cur);
                if (!parentOf.TryGetValue(cur, out ulong next)) break;
                cur = next;
            }
            foreach (ulong p in path) state[p] = 2;
        }
        problems.Sort((a, b) => a.Dir != b.Dir ? a.Dir.CompareTo(b.Dir) : a.Parent.CompareTo(b.Parent));
        return problems;
    }
}
