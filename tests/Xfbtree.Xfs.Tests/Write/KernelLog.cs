using System.Collections.Concurrent;
using System.Globalization;
using Xfbtree.Xfs.Tests.Repair;

namespace Xfbtree.Xfs.Tests.Write;

/// <summary>
/// The kernel log by sequence number (scripts/kernel-log.sh reads /dev/kmsg), so that another program clearing the
/// log (dmesg -C) while a test runs changes nothing. Fails closed: a log that cannot be written or read, or whose
/// records since the mark were overwritten, fails the test.
/// </summary>
internal static class KernelLog
{
    static readonly ConcurrentDictionary<string, long> Marks = new(StringComparer.Ordinal);

    static string Script => Path.Combine(RepairKernelTests.RepoRoot(), "scripts", "kernel-log.sh");

    /// <summary>Writes <paramref name="marker"/> to the kernel log and returns the sequence number of its record.</summary>
    internal static long Mark(string marker)
    {
        ToolResult mark = RepairTools.Exec(Script, ["mark", marker]);
        Assert.True(mark.ExitCode == 0, $"the kernel log cannot be marked, so it cannot be checked: {mark}");
        long seq = long.Parse(mark.Stdout.Trim(), CultureInfo.InvariantCulture);
        Marks[marker] = seq;
        return seq;
    }

    /// <summary>The messages logged from <paramref name="marker"/>'s record on (marked with <see cref="Mark"/>).</summary>
    internal static List<string> Since(string marker)
    {
        Assert.True(Marks.TryGetValue(marker, out long seq), $"{marker} was never written with KernelLog.Mark");
        ToolResult since = RepairTools.Exec(Script, ["since", seq.ToString(CultureInfo.InvariantCulture)]);
        Assert.True(since.ExitCode == 0, $"the kernel log since {marker} cannot be read, so it cannot be checked: {since}");
        var messages = since.Stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(l => l[(l.IndexOf('\t', StringComparison.Ordinal) + 1)..]).ToList();
        Assert.True(messages.Count > 0 && messages[0] == marker, $"the kernel log since record {seq} does not start with {marker}");
        return messages;
    }

    /// <summary>The messages of loop device <paramref name="device"/> since <paramref name="marker"/>.</summary>
    internal static List<string> DeviceMessagesSince(string marker, string device) =>
        Since(marker).Where(l => l.Contains($"XFS ({device})", StringComparison.Ordinal)).ToList();
}
