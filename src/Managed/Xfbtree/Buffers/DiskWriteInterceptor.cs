namespace Xfbtree.Buffers;

/// <summary>
/// Test-only: stands between a <see cref="DiskBufferTarget"/> and its file, so a test can model a crash (which
/// writes reached the disk, which were lost). Reached only through internals (the test assemblies); nothing in
/// the environment or on the command line can install one.
/// </summary>
internal abstract class DiskWriteInterceptor
{
    /// <summary>One write of the target at byte <paramref name="offset"/>; pass it to <paramref name="file"/> now, later, or never.</summary>
    public abstract void Write(ReadOnlySpan<byte> bytes, long offset, DiskBufferTarget.DiskPassThrough file);

    /// <summary>One fsync of the target.</summary>
    public abstract void Sync(DiskBufferTarget.DiskPassThrough file);

    /// <summary>After a read from the file: lets writes that are held back (not yet in the file) show, as the page cache would.</summary>
    public virtual void AfterRead(Span<byte> bytes, long offset) { }
}
