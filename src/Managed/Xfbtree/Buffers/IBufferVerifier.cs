namespace Xfbtree.Buffers;

/// <summary>Read and write verification for one block type (magic, CRC, structure).</summary>
/// <remarks>
/// The cache runs <see cref="VerifyRead"/> once per read from the target (a cache miss, or a re-read after a
/// cancelled transaction) and when a cached clean buffer is first read with another verifier;
/// <see cref="PrepareWrite"/> runs before every write (flush, commit) and, on xfile targets, at commit as the
/// structure check (upstream's xmbuf_finalize). Both are called with the buffer locked exclusively.
/// </remarks>
public interface IBufferVerifier
{
    /// <summary>Block type name used in corruption messages, e.g. "rmapbt block".</summary>
    string Name { get; }
    /// <summary>Checks a freshly read buffer; throws <see cref="CorruptionException"/> on failure.</summary>
    void VerifyRead(BlockBuffer buffer);
    /// <summary>Prepares a buffer for writing (recompute CRC); may throw <see cref="CorruptionException"/>.</summary>
    void PrepareWrite(BlockBuffer buffer);
}
