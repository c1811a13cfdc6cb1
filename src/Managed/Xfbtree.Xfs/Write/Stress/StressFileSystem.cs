using Xfbtree.Xfs.Write.Namespace;

namespace Xfbtree.Xfs.Write.Stress;

/// <summary>
/// What the stress workload drives: the write engine's facade by path (<see cref="XfsStressTarget"/>), or a
/// stand-in in tests of the harness itself. Failures are <see cref="XfsWriteException"/>s.
/// </summary>
public interface IStressTarget
{
    /// <summary>The filesystem block size (reflink ranges are block-aligned).</summary>
    int BlockSize { get; }

    void Write(string path, long offset, ReadOnlySpan<byte> data);

    int Read(string path, long offset, Span<byte> buffer);

    void Fallocate(string path, long offset, long length);

    void PunchHole(string path, long offset, long length);

    void Truncate(string path, long size);

    void Reflink(string source, long sourceOffset, string destination, long destinationOffset, long length);

    void Unshare(string path, long offset, long length);

    void Create(string path);

    void Mkdir(string path);

    void Unlink(string path);

    IReadOnlyList<DirectoryEntry> List(string path);

    InodeStat Stat(string path);

    /// <summary>The AGs marked sick right now, with the reason (a target that has no AGs has none).</summary>
    IReadOnlyList<(uint Ag, string Reason)> SickAgs() => [];
}

/// <summary>The write engine as a stress target.</summary>
public sealed class XfsStressTarget(XfsFileSystem fileSystem) : IStressTarget
{
    public int BlockSize { get; } = fileSystem.Engine.Geometry.BlockSize;

    public void Write(string path, long offset, ReadOnlySpan<byte> data) => fileSystem.Write(path, offset, data);

    public int Read(string path, long offset, Span<byte> buffer) => fileSystem.Read(path, offset, buffer);

    public void Fallocate(string path, long offset, long length) => fileSystem.Fallocate(path, offset, length);

    public void PunchHole(string path, long offset, long length) => fileSystem.PunchHole(path, offset, length);

    public void Truncate(string path, long size) => fileSystem.Truncate(path, size);

    public void Reflink(string source, long sourceOffset, string destination, long destinationOffset, long length)
        => fileSystem.Reflink(source, sourceOffset, destination, destinationOffset, length);

    public void Unshare(string path, long offset, long length) => fileSystem.Unshare(path, offset, length);

    public void Create(string path) => fileSystem.Create(path);

    public void Mkdir(string path) => fileSystem.Mkdir(path);

    public void Unlink(string path) => fileSystem.Unlink(path);

    public IReadOnlyList<DirectoryEntry> List(string path) => fileSystem.List(path);

    public InodeStat Stat(string path) => fileSystem.Stat(path);

    /// <inheritdoc/>
    public IReadOnlyList<(uint Ag, string Reason)> SickAgs()
    {
        var sick = new List<(uint, string)>();
        for (uint agno = 0; agno < fileSystem.Engine.Geometry.AgCount; agno++)
        {
            if (fileSystem.Engine.Ag(agno).SickReason is { } reason) sick.Add((agno, reason));
        }
        return sick;
    }
}
