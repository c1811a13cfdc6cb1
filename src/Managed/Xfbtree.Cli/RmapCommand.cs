using System.CommandLine;
using System.CommandLine.Parsing;
using System.Globalization;

namespace Xfbtree.Cli;

/// <summary>
/// <c>xfbtree rmap dump|check|repair</c>: the command-line shape of <see cref="RmapCommands"/> (which does the work).
/// </summary>
internal static class RmapCommand
{
    /// <summary>The <c>rmap</c> command with its three subcommands.</summary>
    public static Command Create(CommandEnvironment environment)
    {
        ArgumentNullException.ThrowIfNull(environment);
        var rmap = new Command("rmap", "Dump, check or repair the reverse-mapping (rmap) btrees of an XFS v5 image. " + CommandLineHost.ExitCodesHelp);
        rmap.Add(Dump(environment));
        rmap.Add(Check(environment));
        rmap.Add(Repair(environment));
        return rmap;
    }

    static Argument<string> Image() => new("IMAGE") { Description = "The XFS image file (or block device)." };

    static Option<uint?> Ag() => new("--ag")
    {
        Description = "Only this allocation group.",
        HelpName = "N",
        CustomParser = r =>
        {
            string v = r.Tokens.Count > 0 ? r.Tokens[0].Value : "";
            if (uint.TryParse(v, NumberStyles.None, CultureInfo.InvariantCulture, out uint ag)) return ag;
            r.AddError($"--ag: '{v}' is not an AG number");
            return null;
        },
    };

    static Option<bool> Force() => new("--force")
    {
        Description = "Go on although the log is dirty or its state is unknown (results may be stale).",
    };

    static Command Dump(CommandEnvironment environment)
    {
        var image = Image();
        var ag = Ag();
        var force = Force();
        var source = new Option<string>("--source")
        {
            Description = "expected: the records the scan of all metadata implies; ondisk: the records in the on-disk rmap btrees.",
            HelpName = "expected|ondisk",
            DefaultValueFactory = _ => "expected",
            CustomParser = r =>
            {
                string v = r.Tokens.Count > 0 ? r.Tokens[0].Value : "";
                if (v is "expected" or "ondisk") return v;
                r.AddError($"--source: '{v}' is neither expected nor ondisk");
                return null;
            },
        };
        var command = new Command("dump", "Print rmap records as TSV in the fixtures' truth.tsv format. " +
                                          "Exit 0 done, 1 metadata problems found (reported on stderr), 2 could not read the image.") { image, source, ag, force };
        command.SetAction(p => RmapCommands.Execute(new RmapRequest
        {
            Command = "dump",
            Image = p.GetRequiredValue(image),
            Source = p.GetValue(source) ?? "expected",
            Ag = p.GetValue(ag),
            Force = p.GetValue(force),
        }, CommandLineHost.For(p, environment)));
        return command;
    }

    static Command Check(CommandEnvironment environment)
    {
        var image = Image();
        var ag = Ag();
        var force = Force();
        var json = Json();
        var command = new Command("check", "Compare the on-disk rmap btrees with the records implied by all other metadata. " +
                                           "Exit 0 clean, 1 damaged, 2 could not check.") { image, ag, json, force };
        command.SetAction(p => RmapCommands.Execute(new RmapRequest
        {
            Command = "check",
            Image = p.GetRequiredValue(image),
            Ag = p.GetValue(ag),
            Json = p.GetValue(json),
            Force = p.GetValue(force),
        }, CommandLineHost.For(p, environment)));
        return command;
    }

    /// <summary>--json: the report as one JSON document on stdout (with the tool's version; an error object when the
    /// image cannot be used).</summary>
    /// <summary><c>--cpu-share SHARE</c> of a request to a mount (<c>scrub DIR</c>, <c>rmap repair --online DIR</c>).</summary>
    internal static Option<double?> CpuShare() => new("--cpu-share")
    {
        Description = "The share of one CPU the mount may use for this request's checks and repairs (more than 0, at most 1 = not paced); default: the mount's --repair-cpu-share.",
        HelpName = "SHARE",
    };

    /// <summary>Why a <c>--cpu-share</c> value is refused, or null.</summary>
    internal static string? CpuShareRefusal(double? share, string option = "--cpu-share") => share is { } s and not (> 0 and <= 1)
        ? $"{option} {s.ToString(System.Globalization.CultureInfo.InvariantCulture)}: must be more than 0 and at most 1" : null;

    internal static Option<bool> Json() => new("--json") { Description = "Write the report as one JSON document (with a version field; an error object when the image cannot be used)." };

    static Command Repair(CommandEnvironment environment)
    {
        var image = new Argument<string>("IMAGE") { Description = "The XFS image file (or block device); with --online, the directory an xfbtree mount serves." };
        var ag = Ag();
        var json = Json();
        var dryRun = new Option<bool>("-n") { Description = "Print the repair plan and write nothing." };
        var online = new Option<bool>("--online") { Description = "Ask the running xfbtree mount on DIR to rebuild the rmap btrees while it serves requests (root or the mount's owner)." };
        var verify = new Option<bool>("--verify") { Description = "With --online: compare each new tree with a scan made while the mount's commits are paused." };
        var cpuShare = CpuShare();
        var command = new Command("repair", "Rebuild and commit the rmap btree of every damaged AG (the image must not be in use), or, with --online DIR, " +
                                            "of every AG of a running mount. Exit 0 repaired or clean, 1 damage or a mismatch left, 2 could not repair.") { image, ag, dryRun, json, online, verify, cpuShare };
        command.SetAction(p =>
        {
            if (p.GetValue(online))
            {
                if (p.GetValue(dryRun) || p.GetValue(json))
                {
                    environment.Stderr.WriteLine("xfbtree: rmap repair: -n and --json are for images; --online asks a running mount");
                    return CommandLineHost.ExitUnusable;
                }
                if (!OperatingSystem.IsLinux())
                {
                    environment.Stderr.WriteLine("xfbtree: rmap repair: --online needs Linux (xfbtree mount)");
                    return CommandLineHost.ExitUnusable;
                }
                if (CpuShareRefusal(p.GetValue(cpuShare)) is { } bad)
                {
                    environment.Stderr.WriteLine($"xfbtree: rmap repair: {bad}");
                    return CommandLineHost.ExitUnusable;
                }
                return Mount.OnlineRepairClient.Run(p.GetRequiredValue(image), p.GetValue(ag), p.GetValue(verify), CommandLineHost.For(p, environment), p.GetValue(cpuShare));
            }
            if (p.GetValue(cpuShare) is not null)
            {
                environment.Stderr.WriteLine("xfbtree: rmap repair: --cpu-share needs --online (it paces a mount's repair)");
                return CommandLineHost.ExitUnusable;
            }
            if (p.GetValue(verify))
            {
                environment.Stderr.WriteLine("xfbtree: rmap repair: --verify needs --online (an offline repair always reads its result back)");
                return CommandLineHost.ExitUnusable;
            }
            return RepairOffline(p);
        });
        return command;

        int RepairOffline(ParseResult p) => RmapCommands.Execute(new RmapRequest
        {
            Command = "repair",
            Image = p.GetRequiredValue(image),
            Ag = p.GetValue(ag),
            DryRun = p.GetValue(dryRun),
            Json = p.GetValue(json),
        }, CommandLineHost.For(p, environment));
    }
}

/// <summary>One parsed <c>xfbtree rmap</c> command line.</summary>
internal sealed class RmapRequest
{
    public required string Command { get; init; }
    public required string Image { get; init; }
    public string Source { get; init; } = "expected";
    public uint? Ag { get; init; }
    public bool Json { get; init; }
    public bool Force { get; init; }
    public bool DryRun { get; init; }
}
