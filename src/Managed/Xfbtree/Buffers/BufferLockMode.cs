namespace Xfbtree.Buffers;

/// <summary>How a buffer is locked while held.</summary>
public enum BufferLockMode
{
    /// <summary>Several readers.</summary>
    Shared,
    /// <summary>One writer.</summary>
    Exclusive,
}
