using System.Diagnostics;
using System.Runtime.Versioning;
using Xfbtree.Xfs.Scrub;

namespace Xfbtree.Cli.Mount;

/// <summary>
/// <c>xfbtree scrub DIR [--repair] [--ag N] [--json]</c> on a running mount: one control request per AG (each
/// returns when that AG is checked, so the text lines are the mount's progress) and one for the filesystem-wide
/// structures; the lines, the summary, the exit codes and the JSON are the offline scrub's (<see cref="ScrubCommand"/>),
/// the JSON adding <c>mount</c> and, per structure, <c>agLockSeconds</c>. With <c>--repair</c> the mount checks and
/// repairs online (one request), then the tool checks again.
/// </summary>
[SupportedOSPlatform("linux")]
internal static class OnlineScrubClient
{
    public static int Run(string directory, uint? onlyAg, bool json, bool repair, CommandEnvironment environment, double? cpuShare = null)
    {
        var (stdout, stderr) = (environment.Stdout, environment.Stderr);
        string image = directory;
        int Fail(string message)
        {
            CommandLineHost.Error(stderr, message);
            if (json) CommandLineHost.WriteJsonError(stdout, "scrub", image, message, CommandLineHost.ExitUnusable);
            return CommandLineHost.ExitUnusable;
        }
        if (MountControlClient.Ask(directory, MountControlOperation.Info, 0, 0, out var info, out string served) is { } refusal) return Fail(refusal);
        image = served;
        if (onlyAg is { } wanted && wanted >= info.AgCount) return Fail($"AG {wanted} does not exist (the filesystem has {CommandLineHost.Count(info.AgCount, "AG")})");

        // Text lines go out as each AG's reply arrives; the summary needs them all.
        var first = Check(directory, info.AgCount, onlyAg, MountControl.CpuShareFlags(cpuShare), json ? null : stdout, out string? failure);
        if (first is null) return Fail(failure!);
        int rc = ScrubCommand.ExitCode(first, needsRepair: false);
        ScrubCommand.RepairPass? repaired = null;
        if (repair && first.IsDamaged)
        {
            var clock = Stopwatch.StartNew();
            if (MountControlClient.Ask(directory, MountControlOperation.ScrubRepair, onlyAg ?? MountControl.AllAgs, MountControl.CpuShareFlags(cpuShare), out var r, out string text) is { } lost) return Fail(lost);
            if (r.Error != 0)
            {
                repaired = new ScrubCommand.RepairPass([], null, false, text, clock.Elapsed);
                rc = CommandLineHost.ExitDamaged;
            }
            else
            {
                List<ScrubRepairOutcome> outcomes = ScrubWire.ReadOutcomes(text);
                ScrubReport? final = Check(directory, info.AgCount, onlyAg, MountControl.CpuShareFlags(cpuShare), null, out failure);
                if (final is null) return Fail(failure!);
                repaired = new ScrubCommand.RepairPass(outcomes, final, false, null, clock.Elapsed);
                rc = ScrubCommand.ExitCode(final, needsRepair: false);
            }
        }
        if (json)
        {
            ScrubCommand.WriteJson(stdout, image, first, needsRepair: false, rc, repaired, mount: directory);
        }
        else
        {
            ScrubCommand.WriteSummary(stdout, first, needsRepair: false);
            if (repaired is not null) ScrubCommand.WriteRepairText(stdout, repaired, "the mount could not repair");
        }
        stdout.Flush();
        return rc;
    }

    /// <summary>Every AG (or one) and, for the whole filesystem, the filesystem-wide structures; each finding's lines
    /// written to <paramref name="lines"/> as they arrive. Null and why when the mount could not be asked or failed.</summary>
    static ScrubReport? Check(string directory, uint agCount, uint? onlyAg, uint flags, TextWriter? lines, out string? failure)
    {
        var clock = Stopwatch.StartNew();
        var findings = new List<ScrubFinding>();
        List<LinkCountMismatch> mismatches = [];
        long mismatchTotal = 0;
        TimeSpan scans = TimeSpan.Zero;
        bool Ask(MountControlOperation operation, uint ag, out string? why)
        {
            why = MountControlClient.Ask(directory, operation, ag, flags, out var reply, out string text);
            if (why is null && reply.Error != 0) why = $"{directory}: the mount could not check: {text}";
            if (why is not null) return false;
            var (found, wrong, total) = ScrubWire.ReadFindings(text);
            foreach (ScrubFinding f in found)
            {
                findings.Add(f);
                if (f.Structure is "rmapbt" or "nlinks") scans += f.Elapsed;
                if (lines is not null) ScrubCommand.WriteFindingLines(lines, f, wrong, total);
            }
            lines?.Flush();
            if (operation == MountControlOperation.ScrubFilesystem) (mismatches, mismatchTotal) = (wrong, total);
            return true;
        }
        for (uint agno = onlyAg ?? 0; agno < (onlyAg + 1 ?? agCount); agno++)
        {
            if (!Ask(MountControlOperation.ScrubAg, agno, out failure)) return null;
        }
        if (onlyAg is null && !Ask(MountControlOperation.ScrubFilesystem, 0, out failure)) return null;
        failure = null;
        return new ScrubReport(findings, mismatches, mismatchTotal, clock.Elapsed, scans);
    }
}
