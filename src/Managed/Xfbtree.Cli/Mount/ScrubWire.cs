using System.Text;
using System.Text.Json;
using Xfbtree.Xfs.Scrub;

namespace Xfbtree.Cli.Mount;

/// <summary>
/// The text of the scrub control messages: findings, wrong link counts and repair outcomes as compact JSON, written
/// by the mount and read back by the tool into the same objects the offline scrub makes, so both print and report
/// them with one code. A reply must fit its message: problems are cut (their total stays exact) until it does.
/// </summary>
internal static class ScrubWire
{
    /// <summary>The findings (and, for the filesystem-wide reply, the wrong link counts) in at most <paramref name="room"/> bytes.</summary>
    public static string Findings(IReadOnlyList<ScrubFinding> findings, IReadOnlyList<LinkCountMismatch> mismatches, long mismatchTotal, int room)
    {
        string text = "";
        // Fewer problems per finding, then shorter ones, then fewer link counts, until the reply fits.
        foreach (var (problems, length, links) in new[] { (int.MaxValue, int.MaxValue, int.MaxValue), (2, 400, 200), (1, 200, 50), (1, 100, 0) })
        {
            text = Write(w =>
            {
                w.WriteStartArray("findings");
                foreach (ScrubFinding f in findings)
                {
                    w.WriteStartObject();
                    w.WriteString("structure", f.Structure);
                    if (f.AgNumber is { } ag) w.WriteNumber("ag", ag); else w.WriteNull("ag");
                    w.WriteNumber("problemTotal", f.ProblemTotal);
                    w.WriteStartArray("problems");
                    foreach (string p in f.Problems.Take(problems)) w.WriteStringValue(Cut(p, length));
                    w.WriteEndArray();
                    w.WriteStartArray("notChecked");
                    foreach (string s in f.Skipped) w.WriteStringValue(Cut(s, length));
                    w.WriteEndArray();
                    if (f.Note is { } note) w.WriteString("note", note);
                    w.WriteNumber("seconds", f.Elapsed.TotalSeconds);
                    if (f.AgLockHeld is { } held) w.WriteNumber("agLockSeconds", held.TotalSeconds);
                    w.WriteEndObject();
                }
                w.WriteEndArray();
                w.WriteNumber("nlinkMismatchTotal", mismatchTotal);
                w.WriteStartArray("nlinkMismatches");
                foreach (LinkCountMismatch m in mismatches.Take(links))
                {
                    w.WriteStartArray();
                    w.WriteNumberValue(m.Ino);
                    w.WriteNumberValue(m.NLink);
                    w.WriteNumberValue(m.Counted);
                    w.WriteEndArray();
                }
                w.WriteEndArray();
            });
            if (Encoding.UTF8.GetByteCount(text) <= room) break;
        }
        return text;
    }

    /// <summary>Reads a findings reply back.</summary>
    public static (List<ScrubFinding> Findings, List<LinkCountMismatch> Mismatches, long MismatchTotal) ReadFindings(string text)
    {
        using var doc = JsonDocument.Parse(text);
        var findings = new List<ScrubFinding>();
        foreach (JsonElement e in doc.RootElement.GetProperty("findings").EnumerateArray())
        {
            JsonElement ag = e.GetProperty("ag");
            var problems = e.GetProperty("problems").EnumerateArray().Select(p => p.GetString() ?? "").ToList();
            var f = ScrubFinding.Restore(e.GetProperty("structure").GetString() ?? "", ag.ValueKind == JsonValueKind.Null ? null : ag.GetUInt32(),
                problems, e.GetProperty("problemTotal").GetInt64(), e.GetProperty("notChecked").EnumerateArray().Select(s => s.GetString() ?? ""));
            f.Note = e.TryGetProperty("note", out JsonElement note) ? note.GetString() : null;
            f.Elapsed = TimeSpan.FromSeconds(e.GetProperty("seconds").GetDouble());
            if (e.TryGetProperty("agLockSeconds", out JsonElement held)) f.AgLockHeld = TimeSpan.FromSeconds(held.GetDouble());
            findings.Add(f);
        }
        var mismatches = doc.RootElement.GetProperty("nlinkMismatches").EnumerateArray()
            .Select(m => new LinkCountMismatch(m[0].GetUInt64(), m[1].GetUInt32(), m[2].GetInt64())).ToList();
        return (findings, mismatches, doc.RootElement.GetProperty("nlinkMismatchTotal").GetInt64());
    }

    /// <summary>The repair outcomes in at most <paramref name="room"/> bytes (details cut until they fit).</summary>
    public static string Outcomes(IReadOnlyList<ScrubRepairOutcome> outcomes, int room)
    {
        string text = "";
        foreach (int length in new[] { int.MaxValue, 300, 120, 40 })
        {
            text = Write(w =>
            {
                w.WriteStartArray("repairs");
                foreach (ScrubRepairOutcome r in outcomes)
                {
                    w.WriteStartObject();
                    w.WriteString("repair", r.Name);
                    if (r.AgNumber is { } ag) w.WriteNumber("ag", ag); else w.WriteNull("ag");
                    w.WriteBoolean("repaired", r.Repaired);
                    w.WriteString("detail", Cut(r.Detail, length));
                    w.WriteNumber("seconds", r.Elapsed.TotalSeconds);
                    w.WriteEndObject();
                }
                w.WriteEndArray();
            });
            if (Encoding.UTF8.GetByteCount(text) <= room) break;
        }
        return text;
    }

    /// <summary>Reads a repair reply back.</summary>
    public static List<ScrubRepairOutcome> ReadOutcomes(string text)
    {
        using var doc = JsonDocument.Parse(text);
        return doc.RootElement.GetProperty("repairs").EnumerateArray().Select(r =>
        {
            JsonElement ag = r.GetProperty("ag");
            return new ScrubRepairOutcome(r.GetProperty("repair").GetString() ?? "", ag.ValueKind == JsonValueKind.Null ? null : ag.GetUInt32(),
                r.GetProperty("repaired").GetBoolean(), r.GetProperty("detail").GetString() ?? "", TimeSpan.FromSeconds(r.GetProperty("seconds").GetDouble()));
        }).ToList();
    }

    static string Cut(string s, int length) => s.Length <= length ? s : s[..length] + "...";

    static string Write(Action<Utf8JsonWriter> body)
    {
        using var stream = new MemoryStream();
        using (var w = new Utf8JsonWriter(stream))
        {
            w.WriteStartObject();
            body(w);
            w.WriteEndObject();
        }
        return Encoding.UTF8.GetString(stream.ToArray());
    }
}
