namespace Xfbtree.Xfs.Write.Files;

/// <summary>
/// Receives a file range from <see cref="FileOperations.ReadInto"/> in file order: the bytes of written extents,
/// and holes and unwritten extents as lengths of zeros (never materialised, so a sparse range costs work in
/// proportion to its extents, not its length).
/// </summary>
public interface IFileReadSink
{
    /// <summary>Bytes of written data at <paramref name="fileOffset"/>; the span is valid only during the call.</summary>
    void Data(long fileOffset, ReadOnlySpan<byte> bytes);

    /// <summary><paramref name="length"/> bytes that read as zeros (a hole or an unwritten extent) at <paramref name="fileOffset"/>.</summary>
    void Zeros(long fileOffset, long length);
}
