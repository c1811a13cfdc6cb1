using System.CommandLine;
using System.Globalization;
using System.Runtime.Versioning;
using Xfbtree.Cli.Mount;

namespace Xfbtree.Cli;

/// <summary>
/// <c>xfbtree health DIR [--json]</c>: the health of each AG of the image a running <c>xfbtree mount</c> serves on
/// DIR, asked through the mount's control channel (not statfs): healthy, sick (with the reason and since when) or
/// repaired (found sick while mounted and rebuilt online since). Exit 0 no AG sick, 1 an AG is sick, 2 could not ask
/// (not an xfbtree mount, the server gone, not root nor the mount's owner).
/// </summary>
[SupportedOSPlatform("linux")]
internal static class HealthCommand
{
    /// <summary>Version of the JSON report's shape.</summary>
    public const int JsonVersion = 1;

    public static Command Create(CommandEnvironment environment)
    {
        ArgumentNullException.ThrowIfNull(environment);
        var dir = new Argument<string>("DIR") { Description = "Where xfbtree mount serves the image (or any directory in it)." };
        var json = new Option<bool>("--json") { Description = "Write the report as one JSON document (with a version field)." };
        var command = new Command("health", "Per-AG health of a running xfbtree: mount: healthy, sick (why, since when) or repaired online (when). " +
                                            "Only root and the mount's owner may ask. Exit 0 nothing sick, 1 an AG is sick, 2 could not ask.") { dir, json };
        command.SetAction(p => Execute(p.GetRequiredValue(dir), p.GetValue(json), environment));
        return command;
    }

    static int Execute(string directory, bool json, CommandEnvironment environment)
    {
        var (stdout, stderr) = (environment.Stdout, environment.Stderr);
        int Fail(string message)
        {
            stderr.WriteLine($"xfbtree: health: {message}");
            if (json) CommandLineHost.WriteJsonError(stdout, "health", null, message, CommandLineHost.ExitUnusable);
            return CommandLineHost.ExitUnusable;
        }
        if (MountControlClient.Ask(directory, MountControlOperation.Info, 0, 0, out var info, out string image) is { } refusal) return Fail(refusal);
        var ags = new List<(MountControlHeader Health, string? Reason)>();
        for (uint agno = 0; agno < info.AgCount; agno++)
        {
            if (MountControlClient.Ask(directory, MountControlOperation.Health, agno, 0, out var health, out string reason) is { } failure) return Fail(failure);
            ags.Add((health, reason.Length == 0 ? null : reason));
        }
        int sick = ags.Count(a => a.Health.State == MountAgState.Sick);
        int repaired = ags.Count(a => a.Health.State == MountAgState.Repaired);
        int rc = sick > 0 ? CommandLineHost.ExitDamaged : CommandLineHost.ExitClean;
        if (json)
        {
            CommandLineHost.WriteJson(stdout, "health", j =>
            {
                j.WriteNumber("reportVersion", JsonVersion);
                j.WriteString("mount", directory);
                j.WriteString("image", image);
                j.WriteNumber("agCount", info.AgCount);
                if (info.RepairEveryMs > 0) j.WriteNumber("onlineRepairEverySeconds", info.RepairEveryMs / 1000.0);
                else j.WriteNull("onlineRepairEverySeconds");
                j.WriteStartArray("ags");
                foreach (var (h, reason) in ags)
                {
                    j.WriteStartObject();
                    j.WriteNumber("ag", h.Ag);
                    j.WriteString("state", StateName(h.State));
                    if (reason is null) j.WriteNull("reason"); else j.WriteString("reason", reason);
                    WriteTime(j, "sickSince", h.SickSinceMs);
                    WriteTime(j, "repairedAt", h.RepairedAtMs);
                    WriteTime(j, "lastRebuilt", h.LastRebuiltMs);
                    j.WriteNumber("onlineRepairs", h.Repairs);
                    j.WriteNumber("failedRepairs", h.FailedRepairs);
                    j.WriteEndObject();
                }
                j.WriteEndArray();
                j.WriteNumber("sick", sick);
                j.WriteNumber("repaired", repaired);
                j.WriteNumber("exitCode", rc);
            });
            return rc;
        }
        stdout.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"{directory}: {image}, {CommandLineHost.Count(info.AgCount, "AG")}, {(info.RepairEveryMs > 0 ? $"online repair every {info.RepairEveryMs / 1000.0:0.###} s" : "no online repair rotation")}"));
        foreach (var (h, reason) in ags)
        {
            string line = h.State switch
            {
                MountAgState.Sick => $"AG {h.Ag}: sick since {Time(h.SickSinceMs)}: {reason}",
                MountAgState.Repaired => $"AG {h.Ag}: repaired at {Time(h.RepairedAtMs)} (sick since {Time(h.SickSinceMs)}: {reason})",
                _ => $"AG {h.Ag}: healthy",
            };
            if (h.Repairs > 0) line += string.Create(CultureInfo.InvariantCulture, $"; rebuilt online {CommandLineHost.Count(h.Repairs, "time")}, last at {Time(h.LastRebuiltMs)}");
            if (h.FailedRepairs > 0) line += string.Create(CultureInfo.InvariantCulture, $"; {h.FailedRepairs} failed cleanly");
            stdout.WriteLine(line);
        }
        stdout.WriteLine(string.Create(CultureInfo.InvariantCulture, $"health healthy={info.AgCount - sick - repaired} sick={sick} repaired={repaired}"));
        return rc;
    }

    static string StateName(MountAgState state) => state switch
    {
        MountAgState.Sick => "sick",
        MountAgState.Repaired => "repaired",
        _ => "healthy",
    };

    static string Time(long unixMs) => MountControl.Time(unixMs) is { } t ? MountControlClient.Format(t) : "-";

    static void WriteTime(System.Text.Json.Utf8JsonWriter j, string name, long unixMs)
    {
        if (MountControl.Time(unixMs) is { } t) j.WriteString(name, MountControlClient.Format(t));
        else j.WriteNull(name);
    }
}
