using System.Globalization;
using System.Runtime.Versioning;

namespace Xfbtree.Cli.Mount;

/// <summary>
/// <c>xfbtree rmap repair --online DIR [--ag N] [--verify]</c>: asks the mount serving DIR to rebuild the rmap
/// btree of one AG or of each in turn while it serves requests, one control request per AG (each returns when that
/// AG is done, so the lines are the mount's progress), and ends with
/// <c>online-repair repairs=N applied=A ignored=I mismatches=M</c>. With <c>--verify</c> the mount compares each
/// new tree with an offline scan made while its commits are paused. Exit 0 done and clean, 1 a mismatch, a failed
/// repair or a sick AG left, 2 could not ask (or the filesystem has no rmapbt: nothing can be rebuilt online).
/// </summary>
[SupportedOSPlatform("linux")]
internal static class OnlineRepairClient
{
    public static int Run(string directory, uint? onlyAg, bool verify, CommandEnvironment environment, double? cpuShare = null)
    {
        var (stdout, stderr) = (environment.Stdout, environment.Stderr);
        if (MountControlClient.Ask(directory, MountControlOperation.Info, 0, 0, out var info, out string image) is { } refusal)
        {
            stderr.WriteLine($"xfbtree: rmap repair: {refusal}");
            return CommandLineHost.ExitUnusable;
        }
        if (onlyAg is { } wanted && wanted >= info.AgCount)
        {
            stderr.WriteLine($"xfbtree: rmap repair: AG {wanted} does not exist (the filesystem has {CommandLineHost.Count(info.AgCount, "AG")})");
            return CommandLineHost.ExitUnusable;
        }
        uint first = onlyAg ?? 0, last = onlyAg ?? info.AgCount - 1;
        string header = string.Create(CultureInfo.InvariantCulture,
            $"online repair of {image} through {directory}: {(onlyAg is null ? $"AG 0-{last}" : $"AG {first}")}{(verify ? ", each verified with commits paused" : "")}");
        long repairs = 0, applied = 0, ignored = 0, mismatches = 0, failures = 0, sickLeft = 0;
        for (uint agno = first; agno <= last; agno++)
        {
            if (MountControlClient.Ask(directory, MountControlOperation.Repair, agno, (verify ? MountControl.FlagVerify : 0) | MountControl.CpuShareFlags(cpuShare), out var r, out string text) is { } failure)
            {
                stderr.WriteLine($"xfbtree: rmap repair: {failure}");
                return CommandLineHost.ExitUnusable;
            }
            if (agno == first)
            {
                if (r.Error == Fuse.FuseErrno.EOPNOTSUPP)
                {
                    // The filesystem has no rmapbt: refused as a whole, one line (the mount says why).
                    stderr.WriteLine($"xfbtree: rmap repair: {directory}: {text}");
                    return CommandLineHost.ExitUnusable;
                }
                stdout.WriteLine(header);
            }
            if (r.Error != 0)
            {
                failures++;
                stdout.WriteLine($"AG {agno}: online repair failed: {text}");
            }
            else
            {
                repairs++;
                applied += r.Applied;
                ignored += r.Ignored;
                string line = string.Create(CultureInfo.InvariantCulture,
                    $"AG {agno}: rmapbt rebuilt online: {r.Records} records, {r.Applied} live updates applied, {r.Ignored} ignored, {r.ElapsedUs / 1000.0:0.#} ms");
                if (r.Verified != 0)
                {
                    long m = r.Missing + r.Extra + 2 * r.Different + r.Structure;
                    mismatches += m;
                    line += m == 0 ? "; verified: same as a scan with commits paused"
                        : string.Create(CultureInfo.InvariantCulture, $"; MISMATCH: missing {r.Missing}, extra {r.Extra}, different {r.Different}, structure {r.Structure}: {text}");
                }
                stdout.WriteLine(line);
            }
            if (r.State == MountAgState.Sick)
            {
                sickLeft++;
                stdout.WriteLine($"AG {agno}: still sick");
            }
            stdout.Flush();
        }
        stdout.WriteLine(string.Create(CultureInfo.InvariantCulture, $"online-repair repairs={repairs} applied={applied} ignored={ignored} mismatches={mismatches}"));
        stdout.Flush();
        return mismatches > 0 || failures > 0 || sickLeft > 0 ? CommandLineHost.ExitDamaged : CommandLineHost.ExitClean;
    }
}
