namespace Xfbtree.Buffers;

/// <summary>Detected metadata corruption: names the block type, its address and the failed check.</summary>
public class CorruptionException : Exception
{
    public CorruptionException(string blockType, long daddr, string check)
        : base($"corrupt {blockType} at daddr {daddr}: {check}")
    { BlockType = blockType; Daddr = daddr; Check = check; }
    public string BlockType { get; }
    public long Daddr { get; }
    public string Check { get; }
}

/// <summary>An I/O failure on a target, naming the address.</summary>
public class BufferIOException : IOException
{
    public BufferIOException(string target, long daddr, int lengthBB, string message, Exception? inner = null)
        : base($"{target}: I/O error at daddr {daddr} (+{lengthBB} BB): {message}", inner)
    { TargetName = target; Daddr = daddr; LengthBB = lengthBB; }
    public string TargetName { get; }
    public long Daddr { get; }
    public int LengthBB { get; }
}
