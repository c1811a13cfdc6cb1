using System.CommandLine;
using Xfbtree.Xfs.Write;
using Xfbtree.Xfs.Write.Engine;

namespace Xfbtree.Cli;

/// <summary>
/// <c>xfbtree recover IMAGE</c>: replays the write engine's pending journal (left by a run that did not close
/// cleanly: a crash, a kill) into the image and closes it cleanly (NEEDSREPAIR cleared, journal removed), so the
/// committed operations are kept and every other tool sees a clean image. Exit 0 recovered (or nothing to recover),
/// 2 could not (in use, the journal refused, I/O).
/// </summary>
internal static class RecoverCommand
{
    /// <summary>The <c>recover</c> command.</summary>
    public static Command Create(CommandEnvironment environment)
    {
        ArgumentNullException.ThrowIfNull(environment);
        var image = new Argument<string>("IMAGE") { Description = "The XFS v5 image file whose engine journal is pending." };
        var command = new Command("recover", "Replay the journal a crashed xfbtree writer (io, stress) left beside the image and close it cleanly. " +
                                             "Exit 0 recovered or nothing to do, 2 could not recover.") { image };
        command.SetAction(p => Execute(p.GetRequiredValue(image), environment));
        return command;
    }

    /// <summary>Runs <c>xfbtree recover IMAGE</c>; the exit code.</summary>
    public static int Execute(string imagePath, CommandEnvironment environment)
    {
        ArgumentNullException.ThrowIfNull(imagePath);
        ArgumentNullException.ThrowIfNull(environment);
        var (stdout, stderr) = (environment.Stdout, environment.Stderr);
        PendingJournal? pending;
        try
        {
            if (Xfbtree.Xfs.Repair.ImageUseCheck.InUseBy(imagePath) is { } inUse)
            {
                stderr.WriteLine($"xfbtree: recover: {imagePath}: the image is in use ({inUse}); let that writer finish first");
                return CommandLineHost.ExitUnusable;
            }
            pending = WriteEngine.FindPendingJournal(imagePath);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or XfsWriteException or Xfbtree.Xfs.Format.XfsFormatException)
        {
            stderr.WriteLine($"xfbtree: recover: {imagePath}: {e.Message}");
            return CommandLineHost.ExitUnusable;
        }
        if (pending is null)
        {
            stdout.WriteLine($"recover: {imagePath}: no pending journal, nothing to do");
            return CommandLineHost.ExitClean;
        }
        try
        {
            using var fs = XfsFileSystem.Open(imagePath);
            int replayed = fs.Engine.RecordsReplayed;
            fs.Close();
            stdout.WriteLine($"recover: {imagePath}: replayed {replayed} committed transaction{(replayed == 1 ? "" : "s")} " +
                             $"({CommandLineHost.Count(pending.Bytes, "byte")}) from {pending.Path}; closed cleanly (NEEDSREPAIR cleared, journal removed)");
            return CommandLineHost.ExitClean;
        }
        catch (XfsWriteException e)
        {
            stderr.WriteLine($"xfbtree: recover: {imagePath}: {e.Message} ({e.Kind})");
            return CommandLineHost.ExitUnusable;
        }
    }
}
