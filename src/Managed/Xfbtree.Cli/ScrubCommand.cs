using System.CommandLine;
using System.Globalization;
using System.Text.Json;
using Xfbtree.Buffers;
using Xfbtree.Xfs;
using Xfbtree.Xfs.Format;
using Xfbtree.Xfs.Repair;
using Xfbtree.Xfs.Scrub;

namespace Xfbtree.Cli;

/// <summary>
/// <c>xfbtree scrub IMAGE [--repair] [--ag N] [--json] [--force]</c>: checks every piece of AG metadata and every link
/// count of an unmounted image against independent sources of truth (<see cref="Scrubber"/>); with <c>--repair</c>,
/// rebuilds what is damaged through the write engine (<see cref="ScrubRepairs"/>) and checks again. One line per
/// structure checked and a summary; exit 0 clean (or every damage repaired), 1 damage found (and not repaired), 2
/// could not check (bad input, image in use, pending journal, dirty log, or a check that could not run).
/// </summary>
internal static class ScrubCommand
{

    /// <summary>The <c>scrub</c> command.</summary>
    public static Command Create(CommandEnvironment environment)
    {
        ArgumentNullException.ThrowIfNull(environment);
        var image = new Argument<string>("TARGET") { Description = "The XFS image file (or block device), not in use; or the directory of a running xfbtree mount, checked online." };
        var ag = new Option<uint?>("--ag")
        {
            Description = "Only this allocation group (the superblock counters and link counts need the whole image and are then skipped).",
            HelpName = "N",
            CustomParser = r =>
            {
                string v = r.Tokens.Count > 0 ? r.Tokens[0].Value : "";
                if (uint.TryParse(v, NumberStyles.None, CultureInfo.InvariantCulture, out uint n)) return n;
                r.AddError($"--ag: '{v}' is not an AG number");
                return null;
            },
        };
        var json = RmapCommand.Json();
        var force = new Option<bool>("--force") { Description = "Go on although the log is dirty or its state is unknown (results may be stale)." };
        var cpuShare = RmapCommand.CpuShare();
        var repair = new Option<bool>("--repair") { Description = "Rebuild every damaged structure in place through the write engine (NEEDSREPAIR set meanwhile; a damaged primary superblock is first restored from a secondary), then check again." };
        var command = new Command("scrub", "Check the free-space, inode, rmap and refcount btrees, the AG headers, the superblock counters and every link count " +
                                           "of an unmounted image, or online of a running xfbtree mount (TARGET = its directory; root or the mount's owner), " +
                                           "and with --repair rebuild what is damaged. " + CommandLineHost.ExitCodesHelp)
            { image, repair, ag, json, force, cpuShare };
        command.SetAction(p => Execute(p.GetRequiredValue(image), p.GetValue(ag), p.GetValue(json), p.GetValue(force), p.GetValue(repair), environment, p.GetValue(cpuShare)));
        return command;
    }

    /// <summary>Runs <c>xfbtree scrub ARGS</c> (ARGS without the leading "scrub") in process, through the tool's own parser.</summary>
    public static int Run(string[] args, TextWriter stdout, TextWriter stderr)
    {
        ArgumentNullException.ThrowIfNull(args);
        var environment = new CommandEnvironment(stdout ?? throw new ArgumentNullException(nameof(stdout)),
                                                 stderr ?? throw new ArgumentNullException(nameof(stderr)), false);
        var root = CommandLineHost.CreateRoot();
        root.Add(Create(environment));
        return CommandLineHost.Invoke(root, ["scrub", .. args], environment);
    }

    static int Execute(string path, uint? onlyAg, bool json, bool force, bool repair, CommandEnvironment environment, double? cpuShare = null)
    {
        var (stdout, stderr) = (environment.Stdout, environment.Stderr);
        bool mounted = IsMountDirectory(path);
        string? bad = RmapCommand.CpuShareRefusal(cpuShare)
            ?? (cpuShare is not null && !mounted ? "--cpu-share is for the online scrub of a mount (TARGET = its directory)" : null);
        if (bad is not null)
        {
            CommandLineHost.Error(stderr, bad);
            if (json) CommandLineHost.WriteJsonError(stdout, "scrub", path, bad, CommandLineHost.ExitUnusable);
            return CommandLineHost.ExitUnusable;
        }
        if (mounted)
        {
            if (force)
            {
                CommandLineHost.Error(stderr, "--force is for images: a running mount's log is the mount's own");
                return CommandLineHost.ExitUnusable;
            }
            if (!OperatingSystem.IsLinux())
            {
                CommandLineHost.Error(stderr, "the online scrub of a mount needs Linux (xfbtree mount)");
                return CommandLineHost.ExitUnusable;
            }
            return Mount.OnlineScrubClient.Run(path, onlyAg, json, repair, environment, cpuShare);
        }
        // One line on stderr always; with --json also the error object on stdout (a report consumer reads only stdout).
        int Fail(TextWriter stderr, string message, int rc = CommandLineHost.ExitUnusable)
        {
            CommandLineHost.Error(stderr, message);
            if (json) CommandLineHost.WriteJsonError(stdout, "scrub", path, message, rc);
            return rc;
        }
        try
        {
            // The same notices as the rmap commands: an image being written, or a pending write-engine journal.
            if (ImageStateNotices.InUse(path) is { } holder) return Fail(stderr, ImageStateNotices.InUseRefusal(path, holder));
            if (ImageStateNotices.Pending(path) is { } pending) return Fail(stderr, ImageStateNotices.PendingRefusal(path, pending));
            var options = new ScrubOptions { OnlyAg = onlyAg };
            // A primary superblock that does not verify: nothing opens the image. With --repair it is restored from a
            // secondary first (xfs_repair's way), then checked and repaired as any image.
            ScrubRepairOutcome? primaryRepair = null;
            ScrubFinding? primaryDamaged = null;
            if (repair && PrimarySuperblockRepair.Damage(path) is { } sbDamage)
            {
                primaryDamaged = ScrubReport.DamagedPrimarySuperblock(sbDamage);
                var clock = System.Diagnostics.Stopwatch.StartNew();
                try
                {
                    primaryRepair = new ScrubRepairOutcome("primary superblock", null, true, $"{PrimarySuperblockRepair.Restore(path)} (it was damaged: {sbDamage})", clock.Elapsed);
                }
                catch (XfsFormatException e) when (e is not XfsUnsupportedException)
                {
                    return Fail(stderr, $"{path}: the primary superblock is damaged ({sbDamage}) and cannot be restored: {e.Message}", CommandLineHost.ExitDamaged);
                }
            }
            // Without --repair, a primary that verifies but that the secondaries outvote (or whose root inode is no
            // directory) is reported as damaged on a line of its own; a primary that does not verify stops the open below.
            string? primaryDamage = repair ? null : PrimarySuperblockRepair.Damage(path);
            ScrubReport report;
            bool needsRepair;
            XfsImage opened;
            try
            {
                opened = XfsImage.Open(path, new XfsImageOptions { AllowMissingRmapbt = true });
            }
            catch (XfsUnsupportedException) when (primaryDamage is not null)
            {
                // Feature bits this tool does not know, which the secondaries do not carry: damage (xfs_repair -n says
                // 1 too), not a newer filesystem; --repair restores the primary from them.
                return Fail(stderr, $"{path}: the primary superblock is damaged: {primaryDamage}; `xfbtree scrub --repair` restores it from the secondaries", CommandLineHost.ExitDamaged);
            }
            using (var image = opened)
            {
                if (onlyAg is { } a && a >= image.Geometry.AgCount) return Fail(stderr, $"AG {a} does not exist (the filesystem has {CommandLineHost.Count(image.Geometry.AgCount, "AG")})");
                if (!force)
                {
                    var log = image.InspectLog();
                    if (log.State == LogState.Dirty) return Fail(stderr, $"{path}: the log is dirty ({log.Detail}): mount and unmount the filesystem to replay it, or use --force");
                    if (log.State == LogState.Unknown) return Fail(stderr, $"{path}: cannot tell whether the log is clean ({log.Detail}); use --force to go on");
                }
                report = Scrubber.Run(image, options);
                if (primaryDamage is not null) report = report.WithPrimarySuperblock(ScrubReport.DamagedPrimarySuperblock(primaryDamage));
                needsRepair = image.Superblock.NeedsRepair;
            }
            int rc = ExitCode(report, needsRepair);
            RepairPass? repaired = null;
            if (primaryRepair is not null) repaired = new RepairPass([primaryRepair], report, needsRepair, null, primaryRepair.Elapsed);
            if (repair && report.IsDamaged)
            {
                var rest = RepairAndRecheck(path, report, options, stderr);
                repaired = primaryRepair is null ? rest : rest with { Outcomes = [primaryRepair, .. rest.Outcomes], Elapsed = rest.Elapsed + primaryRepair.Elapsed };
                rc = repaired.Final is { } final ? ExitCode(final, repaired.NeedsRepair) : CommandLineHost.ExitDamaged;
            }
            // The restored primary is damage the check found: the report (its verdict, damaged, its first line) says it.
            ScrubReport shown = primaryDamaged is null ? report : report.WithPrimarySuperblock(primaryDamaged);
            if (json) WriteJson(stdout, path, shown, needsRepair, rc, repaired);
            else WriteText(stdout, shown, needsRepair, repaired);
            stdout.Flush();
            return rc;
        }
        catch (XfsFormatException e) { return Fail(stderr, e.Message); }
        catch (BufferIOException e) { return Fail(stderr, e.Message); }
        catch (IOException e) { return Fail(stderr, "I/O error: " + e.Message); }
        catch (UnauthorizedAccessException e) { return Fail(stderr, e.Message); }
        catch (CorruptionException e) { return Fail(stderr, e.Message, CommandLineHost.ExitDamaged); }
        catch (OutOfMemoryException) { return Fail(stderr, "out of memory"); }
#pragma warning disable CA1031 // last line of defence: one line, never a stack trace
        catch (Exception e) when (!environment.RethrowInternalErrors) { return Fail(stderr, $"internal error: {e.GetType().Name}: {e.Message}"); }
#pragma warning restore CA1031
    }

    /// <summary>A directory (a mount to check online), or a path the kernel refuses to stat for this user: a FUSE
    /// mount without allow_other keeps everyone but its owner out, and asking it gives the clear refusal.</summary>
    static bool IsMountDirectory(string path)
    {
        if (Directory.Exists(path)) return true;
        try
        {
            File.GetAttributes(path);
            return false;
        }
        catch (UnauthorizedAccessException)
        {
            return true;
        }
        catch (IOException)
        {
            return false;
        }
    }

    internal static int ExitCode(ScrubReport report, bool needsRepair) =>
        report.IsDamaged || needsRepair ? CommandLineHost.ExitDamaged : report.IsClean ? CommandLineHost.ExitClean : CommandLineHost.ExitUnusable;

    /// <summary>What <c>--repair</c> did: the repairs, and the check of the closed image after them (null when the
    /// engine could not open the image: <see cref="Refusal"/> says why).</summary>
    internal sealed record RepairPass(IReadOnlyList<ScrubRepairOutcome> Outcomes, ScrubReport? Final, bool NeedsRepair, string? Refusal, TimeSpan Elapsed);

    static RepairPass RepairAndRecheck(string path, ScrubReport report, ScrubOptions options, TextWriter stderr)
    {
        var clock = System.Diagnostics.Stopwatch.StartNew();
        List<ScrubRepairOutcome> outcomes;
        try
        {
            outcomes = ScrubRepairs.RepairImage(path, report, options);
        }
        catch (Xfbtree.Xfs.Write.XfsWriteException e)
        {
            stderr.WriteLine("xfbtree: cannot repair: " + e.Message.ReplaceLineEndings(" "));
            return new RepairPass([], null, false, e.Message, clock.Elapsed);
        }
        using var image = XfsImage.Open(path, new XfsImageOptions { AllowMissingRmapbt = true });
        return new RepairPass(outcomes, Scrubber.Run(image, options), image.Superblock.NeedsRepair, null, clock.Elapsed);
    }

    static void WriteText(TextWriter o, ScrubReport report, bool needsRepair, RepairPass? repaired)
    {
        WriteTextReport(o, report, needsRepair);
        if (repaired is not null) WriteRepairText(o, repaired, "the write engine could not open the image");
    }

    /// <summary>The repair lines, the final check's lines that are not clean and the result after repair.</summary>
    internal static void WriteRepairText(TextWriter o, RepairPass repaired, string refusedBecause)
    {
        foreach (var r in repaired.Outcomes) o.WriteLine("repair: " + r);
        if (repaired.Final is not { } final)
        {
            o.WriteLine($"result after repair: NOT REPAIRED ({refusedBecause}: {repaired.Refusal})");
            return;
        }
        o.WriteLine("after repair:");
        foreach (var f in final.Findings.Where(f => f.Verdict != ScrubVerdict.Clean)) o.WriteLine(f.ToString());
        foreach (var m in final.LinkMismatches) o.WriteLine(m.ToString());
        string secs = repaired.Elapsed.TotalSeconds.ToString("0.00", CultureInfo.InvariantCulture);
        int done = repaired.Outcomes.Count(r => r.Repaired);
        if (final.IsDamaged || repaired.NeedsRepair)
            o.WriteLine($"result after repair: DAMAGED ({final.DamagedCount} of {final.Findings.Count} structures still damaged, {CommandLineHost.Count(done, "repair")} made; {secs} s)");
        else if (!final.IsClean)
            o.WriteLine($"result after repair: INCOMPLETE ({final.Findings.Count(f => f.Verdict == ScrubVerdict.NotChecked)} structures could not be checked, {CommandLineHost.Count(done, "repair")} made; {secs} s)");
        else
            o.WriteLine($"result after repair: clean ({CommandLineHost.Count(done, "repair")} made, {CommandLineHost.Count(final.Findings.Count, "structure")} checked; {secs} s)");
    }

    static void WriteTextReport(TextWriter o, ScrubReport report, bool needsRepair)
    {
        foreach (var f in report.Findings) WriteFindingLines(o, f, report.LinkMismatches, report.LinkMismatchTotal);
        WriteSummary(o, report, needsRepair);
    }

    /// <summary>One finding's line, and after the nlinks line the wrong link counts.</summary>
    internal static void WriteFindingLines(TextWriter o, ScrubFinding f, IReadOnlyList<LinkCountMismatch> mismatches, long mismatchTotal)
    {
        o.WriteLine(f.ToString());
        if (f.Structure == "nlinks")
        {
            foreach (var m in mismatches) o.WriteLine(m.ToString());
            if (mismatchTotal > mismatches.Count) o.WriteLine($"... and {mismatchTotal - mismatches.Count} more inodes with a wrong link count");
        }
    }

    /// <summary>The summary line of a check.</summary>
    internal static void WriteSummary(TextWriter o, ScrubReport report, bool needsRepair)
    {
        if (needsRepair) o.WriteLine("superblock: NEEDSREPAIR is set (an earlier repair did not finish)");
        int damaged = report.DamagedCount;
        int unchecked_ = report.Findings.Count(f => f.Verdict == ScrubVerdict.NotChecked);
        string secs = report.Elapsed.TotalSeconds.ToString("0.00", CultureInfo.InvariantCulture);
        if (report.IsDamaged || needsRepair)
            o.WriteLine($"result: DAMAGED ({damaged} of {CommandLineHost.Count(report.Findings.Count, "structure")} damaged, {CommandLineHost.Count(report.LinkMismatchTotal, "wrong link count")}{(needsRepair ? ", NEEDSREPAIR set" : "")}; {secs} s)");
        else if (!report.IsClean)
            o.WriteLine($"result: INCOMPLETE ({unchecked_} of {CommandLineHost.Count(report.Findings.Count, "structure")} could not be checked; {secs} s)");
        else
            o.WriteLine($"result: clean ({CommandLineHost.Count(report.Findings.Count, "structure")} checked; {secs} s)");
    }

    /// <summary>The report as one JSON document with the tool's version and the command, as every command writes it.</summary>
    internal static void WriteJson(TextWriter o, string path, ScrubReport report, bool needsRepair, int rc, RepairPass? repaired, string? mount = null) =>
        CommandLineHost.WriteJson(o, "scrub", w =>
        {
            w.WriteString("image", path);
            if (mount is not null) w.WriteString("mount", mount);
            w.WriteBoolean("clean", report.IsClean && !needsRepair);
            w.WriteBoolean("damaged", report.IsDamaged || needsRepair);
            w.WriteNumber("exitCode", rc);
            w.WriteBoolean("needsRepair", needsRepair);
            w.WriteNumber("seconds", report.Elapsed.TotalSeconds);
            w.WriteNumber("scanSeconds", report.ScanElapsed.TotalSeconds);
            WriteStructures(w, report);
            if (repaired is not null)
            {
                WriteRepairs(w, repaired.Outcomes);
                w.WriteStartObject("afterRepair");
                if (repaired.Final is { } final)
                {
                    w.WriteBoolean("clean", final.IsClean && !repaired.NeedsRepair);
                    w.WriteBoolean("damaged", final.IsDamaged || repaired.NeedsRepair);
                    w.WriteNumber("seconds", repaired.Elapsed.TotalSeconds);
                    WriteStructures(w, final);
                }
                else
                {
                    w.WriteBoolean("clean", false);
                    w.WriteBoolean("damaged", true);
                    w.WriteString("refusal", repaired.Refusal);
                }
                w.WriteEndObject();
            }
        });

    /// <summary>The repair outcomes (also the mount's reply to a scrub repair: details cut to <paramref name="textCap"/>).</summary>
    internal static void WriteRepairs(Utf8JsonWriter w, IReadOnlyList<ScrubRepairOutcome> outcomes, int textCap = int.MaxValue)
    {
        w.WriteStartArray("repairs");
        foreach (var r in outcomes)
        {
            w.WriteStartObject();
            w.WriteString("repair", r.Name);
            if (r.AgNumber is { } rag) w.WriteNumber("ag", rag); else w.WriteNull("ag");
            w.WriteBoolean("repaired", r.Repaired);
            w.WriteString("detail", Cut(r.Detail, textCap));
            w.WriteNumber("seconds", r.Elapsed.TotalSeconds);
            w.WriteEndObject();
        }
        w.WriteEndArray();
    }

    static string Cut(string s, int length) => s.Length <= length ? s : s[..length] + "...";

    /// <summary>The findings and the wrong link counts (also the mount's reply to a scrub request, with problems,
    /// texts and link counts cut to the caps so that it fits its message; the totals stay exact).</summary>
    internal static void WriteStructures(Utf8JsonWriter w, ScrubReport report, int problemCap = int.MaxValue, int textCap = int.MaxValue, int mismatchCap = int.MaxValue)
    {
        {
            w.WriteStartArray("structures");
            foreach (var f in report.Findings)
            {
                w.WriteStartObject();
                w.WriteString("structure", f.Structure);
                if (f.AgNumber is { } ag) w.WriteNumber("ag", ag); else w.WriteNull("ag");
                w.WriteString("verdict", f.Verdict switch { ScrubVerdict.Clean => "clean", ScrubVerdict.Damaged => "damaged", _ => "not-checked" });
                w.WriteNumber("problemTotal", f.ProblemTotal);
                w.WriteStartArray("problems");
                foreach (var p in f.Problems.Take(problemCap)) w.WriteStringValue(Cut(p, textCap));
                w.WriteEndArray();
                w.WriteStartArray("notChecked");
                foreach (var s in f.Skipped) w.WriteStringValue(Cut(s, textCap));
                w.WriteEndArray();
                if (f.Note is { } note) w.WriteString("note", note);
                w.WriteString("line", Cut(f.ToString(), textCap));
                w.WriteNumber("seconds", f.Elapsed.TotalSeconds);
                // Online only: how long the check held the AG's lock (writers of that AG waited at most this long).
                if (f.AgLockHeld is { } held) w.WriteNumber("agLockSeconds", held.TotalSeconds);
                w.WriteEndObject();
            }
            w.WriteEndArray();
            w.WriteNumber("nlinkMismatchTotal", report.LinkMismatchTotal);
            w.WriteStartArray("nlinkMismatches");
            foreach (var m in report.LinkMismatches.Take(mismatchCap))
            {
                w.WriteStartObject();
                w.WriteNumber("ino", m.Ino);
                w.WriteNumber("nlink", m.NLink);
                w.WriteNumber("counted", m.Counted);
                w.WriteEndObject();
            }
            w.WriteEndArray();
        }
    }
}
