using Xfbtree.Xfs.Format;

namespace Xfbtree.Xfs.Repair;

/// <summary>
/// Finds out whether an image file is in use by the kernel. A mounted image file is always reached through a
/// loop device, so a loop device whose backing file is this file means "in use" (mounted, or set up to be).
/// Block devices are refused by the O_EXCL open of the disk target instead. Fails closed: when the loop devices
/// cannot be listed or one of their backing files cannot be read, the answer is an exception, never "not in use".
/// </summary>
internal static class ImageUseCheck
{
    const string SysBlock = "/sys/block";

    /// <summary>The loop devices (e.g. "/dev/loop3") backed by <paramref name="imagePath"/>; empty when none.</summary>
    /// <exception cref="XfsFormatException">Not Linux, or sysfs cannot be read: whether the image is in use is unknown.</exception>
    public static IReadOnlyList<string> LoopDevicesBacking(string imagePath) => LoopDevicesBacking(imagePath, SysBlock);

    /// <summary>Same, reading the block devices from <paramref name="sysBlock"/> (tests give a fake sysfs).</summary>
    internal static IReadOnlyList<string> LoopDevicesBacking(string imagePath, string sysBlock)
        => LoopDevicesBacking(imagePath, sysBlock, File.ReadAllText);

    /// <summary>Same, reading each backing_file through <paramref name="readAttribute"/> (tests detach a device mid-read).</summary>
    internal static IReadOnlyList<string> LoopDevicesBacking(string imagePath, string sysBlock, Func<string, string> readAttribute)
    {
        ArgumentNullException.ThrowIfNull(imagePath);
        if (!OperatingSystem.IsLinux())
        {
            throw Unknown(imagePath, "loop devices can only be checked on Linux");
        }
        var found = new List<string>();
        string target = Canonical(imagePath);
        IEnumerable<string> loops;
        try
        {
            loops = Directory.GetDirectories(sysBlock, "loop*");
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw Unknown(imagePath, $"{sysBlock} cannot be read ({e.Message})");
        }
        foreach (string dir in loops)
        {
            string backing = Path.Combine(dir, "loop", "backing_file");
            string text;
            try
            {
                // A loop device without a backing file is not set up: the kernel shows no "loop" attributes then.
                if (!Path.Exists(backing))
                {
                    continue;
                }
                text = readAttribute(backing).Trim();
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                // Another process detached the device while we listed it: the kernel removes the loop/ attributes
                // (a read of the open file then fails with ENODEV, or the file is gone). A device no longer set up
                // backs nothing. Any other failure leaves the answer unknown.
                if (!Path.Exists(backing))
                {
                    continue;
                }
                throw Unknown(imagePath, $"{backing} cannot be read ({e.Message})");
            }
            if (text.EndsWith(" (deleted)", StringComparison.Ordinal) || text.Length == 0)
            {
                continue;
            }
            // The kernel shows the backing file by its absolute path (d_path), so canonical paths compare.
            if (string.Equals(Canonical(text), target, StringComparison.Ordinal))
            {
                found.Add("/dev/" + Path.GetFileName(dir));
            }
        }
        return found;
    }

    static XfsFormatException Unknown(string imagePath, string why)
        => new($"{imagePath}: cannot tell whether the image is in use (mounted through a loop device): {why}; refusing to write");

    static string Canonical(string path)
    {
        try
        {
            return RealPath(path);
        }
        catch (IOException)
        {
            return Path.GetFullPath(path);
        }
    }

    /// <summary>
    /// Who holds the image for writing, in words, or null when nobody does: a loop device backing it (mounted or
    /// attached), or another xfbtree writer's lock (io, stress, a repair). Reading an image that is being written
    /// compares a moving target: a check would report differences that are not there.
    /// </summary>
    /// <exception cref="XfsFormatException">Whether it is in use cannot be told (not Linux, sysfs unreadable).</exception>
    /// <exception cref="Xfbtree.Native.NativeCallException">The image cannot be opened to ask about its lock.</exception>
    public static string? InUseBy(string imagePath)
    {
        ArgumentNullException.ThrowIfNull(imagePath);
        if (!File.Exists(imagePath))
        {
            return null; // the caller's open reports a missing file or a directory in its own words
        }
        IReadOnlyList<string> loops = LoopDevicesBacking(imagePath);
        if (loops.Count > 0)
        {
            return $"through {string.Join(", ", loops)}: mounted or attached";
        }
        if (OperatingSystem.IsLinux() && Xfbtree.Native.ImageFileLock.IsHeldByAWriter(imagePath))
        {
            return "another xfbtree writer (io, stress or a repair) holds it";
        }
        return null;
    }

    /// <summary>
    /// realpath(3): the absolute path of <paramref name="path"/> with every symbolic link resolved, in the directory
    /// components as well as the last one, so that every name of one file gives one string. Throws IOException on a
    /// link loop (more than 40 links, as the kernel's ELOOP).
    /// </summary>
    public static string RealPath(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        int links = 0;
        return Resolve(Path.GetFullPath(path), ref links);
    }

    static string Resolve(string full, ref int links)
    {
        string root = Path.GetPathRoot(full) ?? "/";
        string current = root;
        foreach (string part in full[root.Length..].Split(Path.DirectorySeparatorChar, StringSplitOptions.RemoveEmptyEntries))
        {
            string next = Path.Combine(current, part);
            var info = new FileInfo(next);
            if (info.LinkTarget is { } target)
            {
                if (++links > 40)
                {
                    throw new IOException($"{full}: too many levels of symbolic links");
                }
                // A relative target is relative to the link's directory, which is already resolved.
                next = Resolve(Path.GetFullPath(target, current), ref links);
            }
            current = next;
        }
        return current;
    }
}
