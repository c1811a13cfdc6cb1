using System.Text;
using System.Text.Json;
using Xfbtree.Xfs.Scrub;

namespace Xfbtree.Cli.Mount;

/// <summary>
/// The text of the scrub control messages: the findings, wrong link counts and repair outcomes in the JSON of
/// <c>xfbtree scrub --json</c> (<see cref="ScrubCommand.WriteStructures"/>, <see cref="ScrubCommand.WriteRepairs"/>),
/// written by the mount and read back by the tool into the objects the offline scrub makes, so both print and report
/// them with one code. A reply must fit its message: problems, texts and link counts are cut (totals stay exact)
/// until it does.
/// </summary>
internal static class ScrubWire
{
    /// <summary>Caps tried in turn: problems per finding, characters per text, wrong link counts.</summary>
    static readonly (int Problems, int Text, int Links)[] Caps = [(int.MaxValue, int.MaxValue, int.MaxValue), (2, 400, 200), (1, 200, 50), (1, 100, 0)];

    /// <summary>The findings (and, for the filesystem-wide reply, the wrong link counts) in at most <paramref name="room"/> bytes.</summary>
    public static string Findings(IReadOnlyList<ScrubFinding> findings, IReadOnlyList<LinkCountMismatch> mismatches, long mismatchTotal, int room)
    {
        var report = new ScrubReport(findings, mismatches, mismatchTotal, TimeSpan.Zero, TimeSpan.Zero);
        return Fit(room, (w, c) => ScrubCommand.WriteStructures(w, report, c.Problems, c.Text, c.Links));
    }

    /// <summary>The repair outcomes in at most <paramref name="room"/> bytes.</summary>
    public static string Outcomes(IReadOnlyList<ScrubRepairOutcome> outcomes, int room) =>
        Fit(room, (w, c) => ScrubCommand.WriteRepairs(w, outcomes, c.Text));

    /// <summary>Reads a findings reply back.</summary>
    public static (List<ScrubFinding> Findings, List<LinkCountMismatch> Mismatches, long MismatchTotal) ReadFindings(string text)
    {
        using var doc = JsonDocument.Parse(text);
        var findings = new List<ScrubFinding>();
        foreach (JsonElement e in doc.RootElement.GetProperty("structures").EnumerateArray())
        {
            var f = ScrubFinding.Restore(e.GetProperty("structure").GetString() ?? "", Ag(e),
                Strings(e.GetProperty("problems")), e.GetProperty("problemTotal").GetInt64(), Strings(e.GetProperty("notChecked")));
            f.Note = e.TryGetProperty("note", out JsonElement note) ? note.GetString() : null;
            f.Elapsed = TimeSpan.FromSeconds(e.GetProperty("seconds").GetDouble());
            if (e.TryGetProperty("agLockSeconds", out JsonElement held)) f.AgLockHeld = TimeSpan.FromSeconds(held.GetDouble());
            findings.Add(f);
        }
        var mismatches = doc.RootElement.GetProperty("nlinkMismatches").EnumerateArray()
            .Select(m => new LinkCountMismatch(m.GetProperty("ino").GetUInt64(), m.GetProperty("nlink").GetUInt32(), m.GetProperty("counted").GetInt64())).ToList();
        return (findings, mismatches, doc.RootElement.GetProperty("nlinkMismatchTotal").GetInt64());
    }

    /// <summary>Reads a repair reply back.</summary>
    public static List<ScrubRepairOutcome> ReadOutcomes(string text)
    {
        using var doc = JsonDocument.Parse(text);
        return doc.RootElement.GetProperty("repairs").EnumerateArray().Select(r => new ScrubRepairOutcome(r.GetProperty("repair").GetString() ?? "", Ag(r),
            r.GetProperty("repaired").GetBoolean(), r.GetProperty("detail").GetString() ?? "", TimeSpan.FromSeconds(r.GetProperty("seconds").GetDouble()))).ToList();
    }

    static uint? Ag(JsonElement e) => e.GetProperty("ag") is { ValueKind: not JsonValueKind.Null } ag ? ag.GetUInt32() : null;

    static List<string> Strings(JsonElement array) => array.EnumerateArray().Select(s => s.GetString() ?? "").ToList();

    /// <summary>One JSON object written by <paramref name="body"/> with the first caps that make it fit.</summary>
    static string Fit(int room, Action<Utf8JsonWriter, (int Problems, int Text, int Links)> body)
    {
        string text = "";
        foreach (var caps in Caps)
        {
            using var stream = new MemoryStream();
            using (var w = new Utf8JsonWriter(stream))
            {
                w.WriteStartObject();
                body(w, caps);
                w.WriteEndObject();
            }
            text = Encoding.UTF8.GetString(stream.ToArray());
            if (Encoding.UTF8.GetByteCount(text) <= room) break;
        }
        return text;
    }
}
