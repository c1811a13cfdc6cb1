using System.Globalization;
using System.Text.RegularExpressions;
using Xfbtree.Xfs.Scan;

namespace Xfbtree.Xfs.Scrub;

/// <summary>
/// Block maps (the data and attr fork mappings of every inode: extent lists and bmbts), filesystem-wide. Offline the
/// scan walks every fork to compute the expected rmap set and reports what does not verify (a bmbt block's CRC,
/// magic, owner, blkno, level, numrecs, siblings, keys; an extent outside the filesystem or overlapping another; a
/// record count other than the inode's); those problems are the rmapbt line's too (what the expected set could not
/// include), and this line names the forks, one per problem, in the form the fork repair is asked by
/// (<c>inode N data fork bmbt: what</c>). Online, <see cref="Online.OnlineBmapCheck"/> makes the same checks.
/// The source of truth of the repair is the rmapbt (docs/scrub.md, "Block maps and directories").
/// </summary>
internal static partial class BmapScrubber
{
    /// <summary>The structure's name in the report.</summary>
    public const string Structure = "bmap";

    /// <summary>The finding from the damage the offline scan met in forks.</summary>
    public static ScrubFinding FromScan(RmapScanResult scan, ScrubOptions options)
    {
        var f = new ScrubFinding(Structure, null, options.ProblemLimit);
        long forks = 0;
        foreach (AgScanResult ag in scan.Ags)
        {
            foreach (ScanProblem p in ag.Problems.Items)
            {
                if (!ForkPattern().IsMatch(p.Where)) continue;
                f.Damage($"{p.Where}: {p.What}");
                forks++;
            }
        }
        long unkept = scan.Ags.Sum(a => a.Problems.Total - a.Problems.Items.Count);
        if (unkept > 0) f.Note = $"{forks} fork problems among the scan's kept problems; {unkept} more scan problems not kept (check again after the repair)";
        else f.Note = "every fork the scan walked";
        return f;
    }

    /// <summary>The fork a problem line of this finding names: true with the inode and the fork.</summary>
    public static bool TryParseFork(string problem, out ulong ino, out bool attrFork)
    {
        Match m = ForkPattern().Match(problem);
        ino = 0;
        attrFork = false;
        if (!m.Success || !ulong.TryParse(m.Groups[1].Value, NumberStyles.None, CultureInfo.InvariantCulture, out ino)) return false;
        attrFork = m.Groups[2].Value == "attr";
        return true;
    }

    [GeneratedRegex(@"^inode (\d+) (data|attr) fork( bmbt)?(:|$)")]
    private static partial Regex ForkPattern();
}
