namespace Xfbtree.Buffers;

/// <summary>Detected metadata corruption: names the block type, its address and the failed check.</summary>
public class CorruptionException : Exception
{
    /// <summary>A block of type <paramref name="blockType"/> at <paramref name="daddr"/> failed <paramref name="check"/>.</summary>
    public CorruptionException(string blockType, long daddr, string check)
        : base($"corrupt {blockType} at daddr {daddr}: {check}")
    { BlockType = blockType; Daddr = daddr; Check = check; }
    /// <summary>What the block should have been (e.g. "rmapbt", "AGF").</summary>
    public string BlockType { get; }
    /// <summary>Disk address (512-byte units) of the damaged block.</summary>
    public long Daddr { get; }
    /// <summary>The check that failed.</summary>
    public string Check { get; }
}

/// <summary>An I/O failure on a target, naming the address.</summary>
public class BufferIOException : IOException
{
    /// <summary>Reading or writing <paramref name="lengthBB"/> basic blocks at <paramref name="daddr"/> of <paramref name="target"/> failed.</summary>
    public BufferIOException(string target, long daddr, int lengthBB, string message, Exception? inner = null)
        : base($"{target}: I/O error at daddr {daddr} (+{lengthBB} BB): {message}", inner)
    { TargetName = target; Daddr = daddr; LengthBB = lengthBB; }
    /// <summary>The target (image path or xfile name) of the failed request.</summary>
    public string TargetName { get; }
    /// <summary>Disk address (512-byte units) of the failed request.</summary>
    public long Daddr { get; }
    /// <summary>Length of the failed request in 512-byte basic blocks.</summary>
    public int LengthBB { get; }
}
