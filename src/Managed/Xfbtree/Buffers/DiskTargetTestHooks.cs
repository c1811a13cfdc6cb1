using System.Collections.Concurrent;

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

/// <summary>
/// Test-only: configures the disk targets that code under test opens by itself (e.g. <c>XfsImage.Open</c> inside
/// a repair). A test registers a path; every writable target opened on that path is passed to the callback.
/// </summary>
internal static class DiskTargetTestHooks
{
    static readonly ConcurrentDictionary<string, Action<DiskBufferTarget>> ByPath = new(StringComparer.Ordinal);

    /// <summary>Calls <paramref name="configure"/> for each writable target opened on <paramref name="path"/> until the result is disposed.</summary>
    public static IDisposable Register(string path, Action<DiskBufferTarget> configure)
    {
        string key = Path.GetFullPath(path);
        if (!ByPath.TryAdd(key, configure))
        {
            throw new InvalidOperationException($"{key}: a test hook is already registered");
        }
        return new Registration(key);
    }

    internal static void Opened(DiskBufferTarget target)
    {
        if (ByPath.IsEmpty || target.IsReadOnly)
        {
            return;
        }
        if (ByPath.TryGetValue(Path.GetFullPath(target.Name), out var configure))
        {
            configure(target);
        }
    }

    sealed class Registration(string key) : IDisposable
    {
        public void Dispose() => ByPath.TryRemove(key, out _);
    }
}
