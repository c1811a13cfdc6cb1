using Xfbtree.Native;
using Xfbtree.Xfs.Format;

namespace Xfbtree.Xfs.Repair;

/// <summary>
/// What must hold before an offline repair may write (docs/xfs-format.md §8.4), each failure a one-line
/// <see cref="XfsFormatException"/>: the image is not attached to a loop device (mounted or about to be),
/// the file is writable, the log is clean, no log-incompatible feature is set, NEEDSREPAIR is not already set.
/// Block devices are refused while mounted by the exclusive open of the disk target.
/// </summary>
internal static class RmapRepairPreconditions
{
    /// <summary>
    /// The exclusive writer lock on the image (<see cref="ImageFileLock"/>): another xfbtree writer holding it is a
    /// one-line refusal, and so is a file that cannot be opened to lock it.
    /// </summary>
    public static ImageFileLock LockForWriting(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        // The same words as XfsImage.Open for the two plain mistakes; every other failure to lock refuses too.
        if (Directory.Exists(path)) throw new XfsFormatException($"{path}: is a directory, not an XFS image");
        if (!File.Exists(path)) throw new XfsFormatException($"{path}: no such file");
        if (!OperatingSystem.IsLinux()) throw new XfsFormatException($"{path}: writing needs Linux (the image lock is a Linux flock)");
        ImageFileLock? held;
        try
        {
            held = ImageFileLock.TryAcquireExclusive(path);
        }
        catch (NativeCallException e)
        {
            throw new XfsFormatException($"{path}: cannot lock the image for writing: {e.Message}");
        }
        return held ?? throw new XfsFormatException($"{path}: another xfbtree process is writing this image (it holds the image's lock); wait for it to finish");
    }

    /// <summary>Checks what can be checked before the image is opened. <paramref name="readOnlyAdvice"/> ends the
    /// refusal of a read-only file: what the calling command offers instead (rmap repair: its dry run).</summary>
    public static void BeforeOpen(string path, bool willWrite, string readOnlyAdvice = "make it writable or use -n")
    {
        ArgumentNullException.ThrowIfNull(path);
        if (!File.Exists(path))
        {
            return; // XfsImage.Open reports missing files and directories in its own words.
        }
        IReadOnlyList<string> loops = ImageUseCheck.LoopDevicesBacking(path);
        if (loops.Count > 0)
        {
            throw new XfsFormatException($"{path}: in use through {string.Join(", ", loops)} (mounted or attached); unmount and detach it first");
        }
        if (willWrite && !OperatingSystem.IsWindows())
        {
            UnixFileMode mode = File.GetUnixFileMode(path);
            const UnixFileMode anyWrite = UnixFileMode.UserWrite | UnixFileMode.GroupWrite | UnixFileMode.OtherWrite;
            // Root may write a 0444 file; a read-only file is still the owner's "do not touch", so honour it.
            if ((mode & anyWrite) == 0)
            {
                throw new XfsFormatException($"{path}: the image file is read-only; {readOnlyAdvice}");
            }
        }
    }

    /// <summary>Checks the opened image: feature and log state.</summary>
    public static void AfterOpen(XfsImage image)
    {
        ArgumentNullException.ThrowIfNull(image);
        Superblock sb = image.Superblock;
        if (sb.NeedsRepair)
        {
            throw new XfsFormatException($"{image.Path}: the filesystem is marked NEEDSREPAIR (an earlier repair stopped halfway); run xfs_repair");
        }
        if (sb.FeaturesLogIncompat != 0)
        {
            throw new XfsFormatException($"{image.Path}: the log holds log-incompatible items (features_log_incompat 0x{sb.FeaturesLogIncompat:x}); mount and unmount the filesystem, or run xfs_repair");
        }
        LogInspection log = image.InspectLog();
        if (log.State != LogState.Clean)
        {
            throw new XfsFormatException(log.State == LogState.Dirty
                ? $"{image.Path}: the log is dirty ({log.Detail}); mount and unmount the filesystem to replay it first"
                : $"{image.Path}: cannot tell whether the log is clean ({log.Detail}); refusing to write");
        }
    }
}
