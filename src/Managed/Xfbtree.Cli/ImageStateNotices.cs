using Xfbtree.Xfs.Format;
using Xfbtree.Xfs.Repair;
using Xfbtree.Xfs.Write.Engine;

namespace Xfbtree.Cli;

/// <summary>
/// What every command says first about an image it cannot take as it is: in use by a writer (a loop device, another
/// xfbtree writer), or left with a pending write-engine journal by a writer that did not close it cleanly. The
/// journal's committed transactions belong in the image: the way out is <c>xfbtree recover IMAGE</c> (never
/// xfs_repair, which would clear NEEDSREPAIR and leave the journal stale, its transactions lost).
/// </summary>
internal static class ImageStateNotices
{
    /// <summary>Who holds the image for writing, or null (also when that cannot be told: the caller only reads).</summary>
    public static string? InUse(string imagePath)
    {
        try
        {
            return ImageUseCheck.InUseBy(imagePath);
        }
        catch (XfsFormatException)
        {
            return null;
        }
    }

    /// <summary>The refusal of a reading command on an image in use (exit 2).</summary>
    public static string InUseRefusal(string imagePath, string holder)
        => $"{imagePath}: the image is in use ({holder}); its contents change under a reader, so the results would not be true: run this when the writer has finished";

    /// <summary>The pending journal, or null (also when the files cannot be read: the command's own open reports that).</summary>
    public static PendingJournal? Pending(string imagePath)
    {
        try
        {
            return File.Exists(imagePath) ? WriteEngine.FindPendingJournal(imagePath) : null;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return null;
        }
    }

    /// <summary>The refusal of a command that does not replay the journal itself (exit 2).</summary>
    public static string PendingRefusal(string imagePath, PendingJournal pending)
        => $"{imagePath}: a write-engine journal is pending ({pending.Path}: {Transactions(pending.Transactions)}): the last xfbtree writer did not close the image cleanly, " +
           $"so it is marked NEEDSREPAIR and its last writes may be incomplete; run 'xfbtree recover {imagePath}' to replay the journal first (xfs_repair would discard it)";

    /// <summary>What io and stress say after their open replayed the journal.</summary>
    public static string Replayed(string imagePath, PendingJournal pending, int replayed)
        => $"{imagePath}: a write-engine journal was pending ({pending.Path}): replayed {Transactions(replayed)} first, as 'xfbtree recover {imagePath}' does";

    private static string Transactions(int n) => n == 1 ? "1 committed transaction" : $"{n} committed transactions";
}
