using System.Globalization;
using System.Text;
using Xfbtree.Xfs.Write;
using Attributes = Xfbtree.Xfs.Write.Attributes;
using Namespace = Xfbtree.Xfs.Write.Namespace;

namespace Xfbtree.Cli.Stress;

/// <summary>The operations of the stress workload; the last two expect a specific failure.</summary>
internal enum StressOpKind
{
    Write, Read, Fallocate, PunchHole, Truncate, Reflink, Unshare, Create, Mkdir, Unlink, Rmdir, Stat, List,
    /// <summary>Create of a name that exists: must fail with Exists.</summary>
    CreateExisting,
    /// <summary>Unlink of a directory with entries: must fail with NotEmpty.</summary>
    RmdirNotEmpty,
    /// <summary>rename of a file (Path2 the destination; Length the <see cref="Namespace.RenameFlags"/>): to a new
    /// name, over another file, or exchanged with it, in the same or another directory.</summary>
    Rename,
    /// <summary>symlink: Path the link, Path2 the target.</summary>
    Symlink,
    /// <summary>mknod: Offset the mode (type and permissions), Offset2 the Linux dev_t.</summary>
    Mknod,
    /// <summary>chmod: Offset the permission bits.</summary>
    Chmod,
    /// <summary>chown: Offset the uid, Offset2 the gid.</summary>
    Chown,
    /// <summary>utimes: Offset the atime seconds, Offset2 the mtime seconds, Length the nanoseconds of both.</summary>
    Utimes,
    /// <summary>link: Path an existing file, Path2 its new name.</summary>
    Link,
    /// <summary>link onto a name that exists (Path2): must fail with Exists.</summary>
    LinkExisting,
    /// <summary>setxattr: Path2 the full name, Offset the <see cref="Attributes.XattrSetFlags"/>, the value
    /// <see cref="StressData"/> of Length bytes from DataSeed.</summary>
    SetXattr,
    /// <summary>removexattr: Path2 the full name of an attribute that exists.</summary>
    RemoveXattr,
    /// <summary>removexattr of a name that does not exist (Path2): must fail with NoData.</summary>
    RemoveXattrMissing,
    /// <summary>fallocate FALLOC_FL_COLLAPSE_RANGE: Offset and Length block-aligned, the range below EOF.</summary>
    CollapseRange,
    /// <summary>fallocate FALLOC_FL_INSERT_RANGE: Offset and Length block-aligned, Offset below EOF.</summary>
    InsertRange,
}

/// <summary>
/// One operation with every parameter fixed (data is <see cref="StressData"/> of <see cref="DataSeed"/>), so that an
/// op log line replays it exactly: <c>KIND PATH PATH2 OFFSET OFFSET2 LENGTH SEED</c>, tab-separated.
/// </summary>
internal sealed record StressOp(StressOpKind Kind, string Path, string Path2 = "", long Offset = 0, long Offset2 = 0, long Length = 0, int DataSeed = 0)
{
    /// <summary>The error the operation must end with, or null when it must succeed.</summary>
    public WriteErrorKind? ExpectedError => Kind switch
    {
        StressOpKind.CreateExisting => WriteErrorKind.Exists,
        StressOpKind.RmdirNotEmpty => WriteErrorKind.NotEmpty,
        StressOpKind.LinkExisting => WriteErrorKind.Exists,
        StressOpKind.RemoveXattrMissing => WriteErrorKind.NoData,
        _ => null,
    };

    /// <summary>True for operations that change nothing when they succeed.</summary>
    public bool IsReadOnly => Kind is StressOpKind.Read or StressOpKind.Stat or StressOpKind.List
        or StressOpKind.CreateExisting or StressOpKind.RmdirNotEmpty or StressOpKind.LinkExisting or StressOpKind.RemoveXattrMissing;

    /// <summary>The op as the tab-separated fields of an op log line.</summary>
    public string ToLogFields()
        => string.Join('\t', Kind.ToString(), Path, Path2, Offset.ToString(CultureInfo.InvariantCulture),
            Offset2.ToString(CultureInfo.InvariantCulture), Length.ToString(CultureInfo.InvariantCulture),
            DataSeed.ToString(CultureInfo.InvariantCulture));

    public static StressOp ParseLogFields(IReadOnlyList<string> fields)
    {
        ArgumentNullException.ThrowIfNull(fields);
        if (fields.Count != 7) throw new FormatException($"an op needs 7 fields, got {fields.Count}");
        if (!Enum.TryParse(fields[0], out StressOpKind kind) || !Enum.IsDefined(kind)) throw new FormatException($"unknown op kind '{fields[0]}'");
        return new StressOp(kind, fields[1], fields[2], ParseLong(fields[3]), ParseLong(fields[4]), ParseLong(fields[5]),
            int.Parse(fields[6], NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture));
    }

    static long ParseLong(string s) => long.Parse(s, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture);

    public override string ToString() => Kind switch
    {
        StressOpKind.Write => $"write {Path} {Offset} {Length}",
        StressOpKind.Read => $"read {Path} {Offset} {Length}",
        StressOpKind.Fallocate => $"falloc{(Offset2 != 0 ? " -k" : "")} {Path} {Offset} {Length}",
        StressOpKind.CollapseRange => $"fcollapse {Path} {Offset} {Length}",
        StressOpKind.InsertRange => $"finsert {Path} {Offset} {Length}",
        StressOpKind.PunchHole => $"fpunch {Path} {Offset} {Length}",
        StressOpKind.Truncate => $"truncate {Path} {Length}",
        StressOpKind.Reflink => $"reflink {Path} {Offset} {Path2} {Offset2} {Length}",
        StressOpKind.Unshare => $"unshare {Path} {Offset} {Length}",
        StressOpKind.Rename => $"rename {Path} {Path2}{(((Namespace.RenameFlags)Length & Namespace.RenameFlags.Exchange) != 0 ? " --exchange" : "")}{(((Namespace.RenameFlags)Length & Namespace.RenameFlags.NoReplace) != 0 ? " --noreplace" : "")}{(((Namespace.RenameFlags)Length & Namespace.RenameFlags.Whiteout) != 0 ? " --whiteout" : "")}",
        StressOpKind.Symlink => $"symlink ({Path2.Length} bytes) {Path}",
        StressOpKind.Mknod => $"mknod {Path} 0{Convert.ToString(Offset, 8)} {Namespace.DeviceNumbers.Major((ulong)Offset2)}:{Namespace.DeviceNumbers.Minor((ulong)Offset2)}",
        StressOpKind.Chmod => $"chmod {Convert.ToString(Offset, 8)} {Path}",
        StressOpKind.Chown => $"chown {Offset}:{Offset2} {Path}",
        StressOpKind.Utimes => $"utimes {Path} {Offset}.{Length:D9} {Offset2}.{Length:D9}",
        StressOpKind.Link or StressOpKind.LinkExisting => $"link {Path} {Path2}",
        StressOpKind.SetXattr => $"setxattr {Path} {Path2} ({Length} bytes{((Attributes.XattrSetFlags)Offset == Attributes.XattrSetFlags.None ? "" : ", " + ((Attributes.XattrSetFlags)Offset).ToString().ToLowerInvariant())})",
        StressOpKind.RemoveXattr or StressOpKind.RemoveXattrMissing => $"removexattr {Path} {Path2}",
        _ => $"{Kind.ToString().ToLowerInvariant()} {Path}",
    };
}

/// <summary>How an operation ended, as the op log records it.</summary>
internal readonly record struct StressOutcome(bool Committed, WriteErrorKind? Error)
{
    public static readonly StressOutcome Success = new(true, null);

    public static StressOutcome Failed(WriteErrorKind kind) => new(false, kind);

    public override string ToString() => Committed ? "committed" : $"failed {Error}";
}

/// <summary>Receives each operation before it runs and its outcome after it returned (the crash test's witness).</summary>
internal interface IStressOpLog
{
    void Started(long index, StressOp op);

    void Finished(long index, StressOutcome outcome);
}

/// <summary>
/// The durable op log: <c>op I start FIELDS</c> before operation I runs and <c>op I committed</c> /
/// <c>op I failed KIND</c> after it returned, each line on stable storage (O_DSYNC) before the operation proceeds.
/// A kill leaves at most a torn last line, which <see cref="Read"/> ignores.
/// </summary>
internal sealed class StressOpLogFile : IStressOpLog, IDisposable
{
    readonly FileStream _stream;
    readonly Lock _gate = new();

    public StressOpLogFile(string path)
        => _stream = new FileStream(path, FileMode.Create, FileAccess.Write, FileShare.Read, bufferSize: 1, FileOptions.WriteThrough);

    public void Started(long index, StressOp op) => Append($"op {index} start\t{op.ToLogFields()}\n");

    public void Finished(long index, StressOutcome outcome) => Append($"op {index} {outcome}\n");

    void Append(string line)
    {
        byte[] bytes = Encoding.UTF8.GetBytes(line);
        lock (_gate) _stream.Write(bytes);
    }

    public void Dispose() => _stream.Dispose();

    /// <summary>One logged operation: what it was and, when the log says so, how it ended.</summary>
    public sealed record Entry(long Index, StressOp Op, StressOutcome? Outcome);

    /// <summary>The complete lines of a log, in order of the operations' start.</summary>
    public static List<Entry> Read(string path)
    {
        string text = File.ReadAllText(path);
        int end = text.LastIndexOf('\n');
        var entries = new List<Entry>();
        var byIndex = new Dictionary<long, int>();
        foreach (string line in text[..(end + 1)].Split('\n', StringSplitOptions.RemoveEmptyEntries))
        {
            string[] head = line.Split('\t', 2);
            string[] words = head[0].Split(' ');
            if (words.Length < 3 || words[0] != "op") throw new FormatException($"bad op log line '{line}'");
            long index = long.Parse(words[1], CultureInfo.InvariantCulture);
            if (words[2] == "start")
            {
                if (head.Length != 2) throw new FormatException($"bad op log line '{line}'");
                byIndex[index] = entries.Count;
                entries.Add(new Entry(index, StressOp.ParseLogFields(head[1].Split('\t')), null));
                continue;
            }
            if (!byIndex.TryGetValue(index, out int at)) throw new FormatException($"op {index} ends before it starts");
            StressOutcome outcome = words[2] == "committed"
                ? StressOutcome.Success
                : words.Length == 4 && words[2] == "failed" && Enum.TryParse(words[3], out WriteErrorKind kind)
                    ? StressOutcome.Failed(kind)
                    : throw new FormatException($"bad op log line '{line}'");
            entries[at] = entries[at] with { Outcome = outcome };
        }
        return entries;
    }
}
