using System.Globalization;

namespace Xfbtree.Storage;

/// <summary>
/// The kernel's transparent huge page switches (/sys/kernel/mm/transparent_hugepage/enabled and shmem_enabled)
/// and the tmpfs mounts' <c>huge=</c> options; null where a file is missing (no THP support).
/// </summary>
internal sealed record TransparentHugePageSettings(string? Enabled, string? ShmemEnabled, IReadOnlyList<(string MountPoint, string FsType, string Options)> Mounts)
{
    private const string SysDirectory = "/sys/kernel/mm/transparent_hugepage/";

    /// <summary>Reads the live settings.</summary>
    public static TransparentHugePageSettings Read() =>
        new(Selected(ReadOrNull(SysDirectory + "enabled")), Selected(ReadOrNull(SysDirectory + "shmem_enabled")), ReadMounts());

    /// <summary>The bracketed choice of a sysfs switch ("always [madvise] never" gives "madvise"), or null.</summary>
    public static string? Selected(string? content)
    {
        if (content is null)
        {
            return null;
        }
        int open = content.IndexOf('[', StringComparison.Ordinal);
        int close = open < 0 ? -1 : content.IndexOf(']', open);
        return close > open ? content[(open + 1)..close] : null;
    }

    /// <summary>Anonymous THP can be had through MADV_HUGEPAGE.</summary>
    public bool AnonymousAvailable => Enabled is "always" or "madvise";

    /// <summary>shmem THP (memfd, MAP_SHARED anonymous) can be had, with MADV_HUGEPAGE for "advise".</summary>
    public bool ShmemAvailable => ShmemEnabled is "always" or "within_size" or "advise" or "force";

    /// <summary>The tmpfs mount holding <paramref name="directory"/> and its huge= option: null when it is not tmpfs.</summary>
    public string? TmpfsHugeOption(string directory)
    {
        string path;
        try
        {
            path = Path.GetFullPath(directory).TrimEnd('/') + "/";
        }
        catch (ArgumentException)
        {
            return null;
        }
        (string MountPoint, string FsType, string Options)? best = null;
        foreach (var mount in Mounts)
        {
            string point = mount.MountPoint.TrimEnd('/') + "/";
            if (path.StartsWith(point, StringComparison.Ordinal) && (best is null || point.Length > best.Value.MountPoint.TrimEnd('/').Length + 1))
            {
                best = mount;
            }
        }
        if (best is not { FsType: "tmpfs" } tmpfs)
        {
            return null;
        }
        string? huge = tmpfs.Options.Split(',').FirstOrDefault(o => o.StartsWith("huge=", StringComparison.Ordinal));
        return huge is null ? "never" : huge[5..];
    }

    private static string? ReadOrNull(string path)
    {
        try
        {
            return File.ReadAllText(path);
        }
        catch (IOException)
        {
            return null;
        }
        catch (UnauthorizedAccessException)
        {
            return null;
        }
    }

    private static List<(string, string, string)> ReadMounts()
    {
        var mounts = new List<(string, string, string)>();
        string? text = ReadOrNull("/proc/self/mounts");
        if (text is null)
        {
            return mounts;
        }
        foreach (string line in text.Split('\n', StringSplitOptions.RemoveEmptyEntries))
        {
            string[] fields = line.Split(' ');
            if (fields.Length >= 4)
            {
                // Spaces in mount points are octal-escaped (\040).
                mounts.Add((fields[1].Replace("\\040", " ", StringComparison.Ordinal), fields[2], fields[3]));
            }
        }
        return mounts;
    }
}

/// <summary>The backend and huge-page mode an xfile gets, and why.</summary>
internal readonly record struct XfileHugePagePlan(XfileBackendKind Backend, XfileHugePageMode Mode, string Description);

/// <summary>Decides <see cref="XfileOptions.HugePages"/> against the system's settings (pure: tests feed it settings).</summary>
internal static class XfileHugePagePolicy
{
    /// <summary>
    /// The plan for <paramref name="options"/>; <paramref name="settings"/> null = not Linux.
    /// Throws <see cref="NotSupportedException"/> for <see cref="XfileHugePages.Required"/> when no huge pages are possible.
    /// </summary>
    public static XfileHugePagePlan Plan(XfileOptions options, TransparentHugePageSettings? settings)
    {
        XfileBackendKind backend = options.Backend;
        if (options.HugePages == XfileHugePages.Off)
        {
            return new(backend, XfileHugePageMode.None, "off (not requested)");
        }
        if (settings is null)
        {
            return Unavailable(options, backend, "transparent huge pages need Linux");
        }
        string system = string.Create(CultureInfo.InvariantCulture,
            $"enabled={settings.Enabled ?? "absent"}, shmem_enabled={settings.ShmemEnabled ?? "absent"}");
        string? directory = options.Directory;
        switch (backend)
        {
            case XfileBackendKind.Portable:
                return Unavailable(options, backend, "the portable backend cannot ask for huge pages");
            case XfileBackendKind.Anonymous:
                return settings.AnonymousAvailable
                    ? new(backend, XfileHugePageMode.AnonymousThp, $"anonymous THP (MADV_HUGEPAGE; {system})")
                    : Unavailable(options, backend, $"anonymous THP is off ({system})");
            case XfileBackendKind.Memfd:
                return settings.ShmemAvailable
                    ? new(backend, XfileHugePageMode.ShmemThp, $"shmem THP on memfd (MADV_HUGEPAGE; {system})")
                    : Unavailable(options, backend, $"memfd needs shmem huge pages ({system}); use Backend Auto or Anonymous");
            case XfileBackendKind.TmpFile:
                return TmpFilePlan(options, settings, directory ?? "/dev/shm", system);
            default:
                if (directory is not null)
                {
                    return TmpFilePlan(options, settings, directory, system) with { Backend = XfileBackendKind.Auto };
                }
                if (settings.ShmemAvailable)
                {
                    return new(XfileBackendKind.Memfd, XfileHugePageMode.ShmemThp, $"shmem THP on memfd (MADV_HUGEPAGE; {system})");
                }
                if (settings.AnonymousAvailable)
                {
                    return new(XfileBackendKind.Anonymous, XfileHugePageMode.AnonymousThp,
                        $"anonymous THP (MADV_HUGEPAGE on a private anonymous mapping, as shmem huge pages are off; {system})");
                }
                return Unavailable(options, backend, $"transparent huge pages are off ({system})");
        }
    }

    private static XfileHugePagePlan TmpFilePlan(XfileOptions options, TransparentHugePageSettings settings, string directory, string system)
    {
        string? huge = settings.TmpfsHugeOption(directory);
        if (huge is null)
        {
            return Unavailable(options, XfileBackendKind.TmpFile, $"{directory} is not tmpfs: its page cache has no huge pages for writable files");
        }
        bool possible = settings.ShmemEnabled == "force" || (settings.ShmemEnabled != "deny" && huge is "always" or "within_size" or "advise");
        return possible
            ? new(XfileBackendKind.TmpFile, XfileHugePageMode.ShmemThp, $"shmem THP on tmpfs {directory} (huge={huge}, MADV_HUGEPAGE; {system})")
            : Unavailable(options, XfileBackendKind.TmpFile, $"tmpfs {directory} is mounted huge={huge} ({system})");
    }

    private static XfileHugePagePlan Unavailable(XfileOptions options, XfileBackendKind backend, string why)
    {
        if (options.HugePages == XfileHugePages.Required)
        {
            throw new NotSupportedException($"xfile huge pages are required but not possible: {why}");
        }
        return new(backend, XfileHugePageMode.None, "none: " + why);
    }
}

/// <summary>Sums /proc/self/smaps fields over the mappings inside an address range.</summary>
internal static class XfileSmaps
{
    /// <summary>Rss and huge-page fields of every smaps entry overlapping [start, start+length).</summary>
    public static XfileMemoryUsage Measure(nint start, long length)
    {
        string text;
        try
        {
            text = File.ReadAllText("/proc/self/smaps");
        }
        catch (IOException)
        {
            return default;
        }
        catch (UnauthorizedAccessException)
        {
            return default;
        }
        return Parse(text, (ulong)start, (ulong)start + (ulong)length);
    }

    /// <summary>Parses smaps text (tests feed it samples).</summary>
    public static XfileMemoryUsage Parse(string text, ulong start, ulong end)
    {
        long rss = 0, anonHuge = 0, shmemPmd = 0, filePmd = 0;
        bool inside = false;
        foreach (ReadOnlySpan<char> raw in text.AsSpan().EnumerateLines())
        {
            ReadOnlySpan<char> line = raw;
            int dash = line.IndexOf('-');
            int space = line.IndexOf(' ');
            if (dash > 0 && space > dash && IsHex(line[..dash]))
            {
                // A mapping header: "start-end perms offset dev inode path".
                ulong low = ulong.Parse(line[..dash], NumberStyles.HexNumber, CultureInfo.InvariantCulture);
                ulong high = ulong.Parse(line[(dash + 1)..space], NumberStyles.HexNumber, CultureInfo.InvariantCulture);
                inside = low < end && high > start;
                continue;
            }
            if (!inside)
            {
                continue;
            }
            if (Field(line, "Rss:") is { } r)
            {
                rss += r;
            }
            else if (Field(line, "AnonHugePages:") is { } a)
            {
                anonHuge += a;
            }
            else if (Field(line, "ShmemPmdMapped:") is { } s)
            {
                shmemPmd += s;
            }
            else if (Field(line, "FilePmdMapped:") is { } f)
            {
                filePmd += f;
            }
        }
        return new XfileMemoryUsage(rss, anonHuge, shmemPmd, filePmd, Available: true);
    }

    private static bool IsHex(ReadOnlySpan<char> text)
    {
        foreach (char c in text)
        {
            if (!char.IsAsciiHexDigit(c))
            {
                return false;
            }
        }
        return !text.IsEmpty;
    }

    /// <summary>"Name:   123 kB" gives 123 * 1024 bytes.</summary>
    private static long? Field(ReadOnlySpan<char> line, string name)
    {
        if (!line.StartsWith(name, StringComparison.Ordinal))
        {
            return null;
        }
        ReadOnlySpan<char> value = line[name.Length..].Trim();
        if (value.EndsWith(" kB", StringComparison.Ordinal))
        {
            value = value[..^3];
        }
        return long.TryParse(value, NumberStyles.None, CultureInfo.InvariantCulture, out long kib) ? kib * 1024 : null;
    }
}
