namespace Xfbtree.Xfs.Scan;

/// <summary>Damage found while computing the expected rmap set: where (AG header, tree, inode) and what.</summary>
/// <param name="AgNumber">AG the damaged structure belongs to.</param>
/// <param name="Where">e.g. "AGF", "inobt", "inode 1234 data fork".</param>
/// <param name="What">The failed check.</param>
public readonly record struct ScanProblem(uint AgNumber, string Where, string What)
{
    /// <summary>"AG n: where: what", the form the tool prints.</summary>
    public override string ToString() => $"AG {AgNumber}: {Where}: {What}";
}

/// <summary>A bounded, thread-safe list of problems with an exact total.</summary>
public sealed class ProblemList
{
    readonly Lock _lock = new();
    readonly List<ScanProblem> _kept = new();

    internal ProblemList(int limit = 200) => Limit = limit;

    /// <summary>Most problems kept; the rest are only counted.</summary>
    public int Limit { get; }
    /// <summary>Every problem reported, including those not kept.</summary>
    public long Total { get; private set; }

    internal void Add(ScanProblem problem)
    {
        lock (_lock)
        {
            Total++;
            if (_kept.Count < Limit) _kept.Add(problem);
        }
    }

    internal void Add(uint agno, string where, string what) => Add(new ScanProblem(agno, where, what));

    /// <summary>A snapshot of the kept problems.</summary>
    public IReadOnlyList<ScanProblem> Items
    {
        get { lock (_lock) return _kept.ToArray(); }
    }
}
