namespace Xfbtree.Xfs.Repair;

/// <summary>
/// Finds out whether an image file is in use by the kernel. A mounted image file is always reached through a
/// loop device, so a loop device whose backing file is this file means "in use" (mounted, or set up to be).
/// Block devices are refused by the O_EXCL open of the disk target instead.
/// </summary>
public static class ImageUseCheck
{
    /// <summary>The loop devices (e.g. "/dev/loop3") backed by <paramref name="imagePath"/>; empty when none or not on Linux.</summary>
    public static IReadOnlyList<string> LoopDevicesBacking(string imagePath)
    {
        var found = new List<string>();
        if (!OperatingSystem.IsLinux() || !Directory.Exists("/sys/block"))
        {
            return found;
        }
        string target = Canonical(imagePath);
        foreach (string dir in Directory.EnumerateDirectories("/sys/block", "loop*"))
        {
            string backing = Path.Combine(dir, "loop", "backing_file");
            string text;
            try
            {
                if (!File.Exists(backing))
                {
                    continue;
                }
                text = File.ReadAllText(backing).Trim();
            }
            catch (IOException)
            {
                continue;
            }
            catch (UnauthorizedAccessException)
            {
                continue;
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

    static string Canonical(string path)
    {
        try
        {
            var info = new FileInfo(Path.GetFullPath(path));
            FileSystemInfo? resolved = info.LinkTarget is null ? null : info.ResolveLinkTarget(returnFinalTarget: true);
            return resolved?.FullName ?? info.FullName;
        }
        catch (IOException)
        {
            return Path.GetFullPath(path);
        }
    }
}
