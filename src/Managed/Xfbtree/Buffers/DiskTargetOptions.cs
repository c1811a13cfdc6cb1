namespace Xfbtree.Buffers;

/// <summary>Options for opening an image file or block device.</summary>
public sealed record DiskTargetOptions
{
    /// <summary>Open read-only (the default).</summary>
    public bool ReadOnly { get; init; } = true;
    /// <summary>Use O_DIRECT when alignment allows.</summary>
    public bool Direct { get; init; }
    /// <summary>Use the portable BCL path (RandomAccess) even on Linux; tests use it to cover that path.</summary>
    internal bool ForcePortable { get; init; }
}
