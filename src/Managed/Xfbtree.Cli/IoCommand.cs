using System.CommandLine;
using System.Globalization;
using Xfbtree.Xfs.Write;
using Xfbtree.Xfs.Write.Attributes;
using Xfbtree.Xfs.Write.Engine;
using Xfbtree.Xfs.Write.Namespace;

namespace Xfbtree.Cli;

/// <summary>
/// <c>xfbtree io IMAGE -c "CMD ARGS" [-c ...]</c>: changes an unmounted image through the write engine, in the spirit
/// of xfs_io. Every command line is parsed before the image is opened (a malformed one is a usage error, exit 2);
/// the commands then run in order, each one engine operation (pwrite and pread in 1 MiB pieces); the first failure
/// stops the run with exit 1 and one line. Either way the engine is closed cleanly, so the image is consistent.
/// </summary>
internal static class IoCommand
{
    /// <summary>Largest piece of a pwrite that is one engine operation (one transaction).</summary>
    public const int WritePiece = 1 << 20;

    public static Command Create(CommandEnvironment environment)
    {
        ArgumentNullException.ThrowIfNull(environment);
        var image = new Argument<string>("IMAGE") { Description = "The XFS v5 image file (unmounted)." };
        var commands = new Option<string[]>("-c")
        {
            Description = "A command, run in order (repeat -c): pwrite PATH OFFSET LENGTH [-S BYTE] | pread PATH OFFSET LENGTH | " +
                          "falloc [-k] PATH OFFSET LENGTH | fpunch PATH OFFSET LENGTH | fcollapse PATH OFFSET LENGTH | finsert PATH OFFSET LENGTH | " +
                          "truncate PATH SIZE | reflink SRC SRCOFF DST DSTOFF LENGTH | " +
                          "unshare PATH OFFSET LENGTH | create PATH | mkdir PATH | unlink PATH | rmdir PATH | stat PATH | ls PATH | " +
                          "rename SRC DST [--noreplace|--exchange|--whiteout] | link SRC DST | symlink TARGET PATH | readlink PATH | " +
                          "mknod PATH fifo|sock|chr MAJ MIN|blk MAJ MIN | chmod MODE PATH (octal) | chown UID:GID PATH | " +
                          "utimes PATH ATIME MTIME (seconds[.nanoseconds] since the epoch, 'now' or 'omit') | " +
                          "setxattr PATH NAME VALUE | getxattr PATH NAME | listxattr PATH | removexattr PATH NAME. " +
                          "Sizes in bytes, optional k/m/g/t suffix (powers of 1024) or 0x prefix.",
            HelpName = "CMD ARGS",
            Required = true,
            Arity = ArgumentArity.OneOrMore,
        };
        var json = RmapCommand.Json();
        var command = new Command("io", "Change an unmounted XFS image as the kernel would: write, read, allocate, punch, " +
                                        "truncate, reflink, create, remove, rename, link, symlink, mknod, chmod, chown, utimes. " +
                                        "Exit 0 done, 1 a command failed (one line naming the errno; that command changed " +
                                        "nothing and the image stays consistent), 2 usage error or unusable image.") { image, commands, json };
        command.SetAction(p => Execute(p.GetRequiredValue(image), p.GetRequiredValue(commands), CommandLineHost.For(p, environment), p.GetValue(json)));
        return command;
    }

    /// <summary>Runs the commands on the image; the exit code. With <paramref name="json"/> the output is one JSON
    /// document: every command with its output lines and, for the one that failed, its error.</summary>
    public static int Execute(string imagePath, IReadOnlyList<string> commandLines, CommandEnvironment environment, bool json = false)
    {
        ArgumentNullException.ThrowIfNull(imagePath);
        ArgumentNullException.ThrowIfNull(commandLines);
        ArgumentNullException.ThrowIfNull(environment);
        var stdout = environment.Stdout;
        var stderr = environment.Stderr;
        var operations = new List<IoOperation>();
        foreach (string line in commandLines)
        {
            try { operations.Add(IoOperation.Parse(line)); }
            catch (FormatException e)
            {
                CommandLineHost.Error(stderr, $"io: -c '{line}': {e.Message} (see 'xfbtree io --help')");
                return CommandLineHost.ExitUnusable;
            }
        }

        XfsFileSystem fs;
        PendingJournal? pending = ImageStateNotices.Pending(imagePath);
        try { fs = XfsFileSystem.Open(imagePath); }
        catch (Exception e) when (e is XfsWriteException or IOException or UnauthorizedAccessException)
        {
            CommandLineHost.Error(stderr, $"io: {CommandLineHost.AboutImage(imagePath, e.Message)}");
            if (json) CommandLineHost.WriteJsonError(stdout, "io", imagePath, e.Message, CommandLineHost.ExitUnusable);
            return CommandLineHost.ExitUnusable;
        }
        if (pending is not null)
        {
            stderr.WriteLine($"xfbtree: io: {ImageStateNotices.Replayed(imagePath, pending, fs.Engine.RecordsReplayed)}");
        }

        int rc = CommandLineHost.ExitClean;
        var results = new List<(string Command, string Output, string? Error)>();
        string? closeError = null;
        try
        {
            foreach (var operation in operations)
            {
                // With --json each command's lines are collected for its entry in the document.
                var output = json ? new StringWriter { NewLine = "\n" } : stdout;
                try
                {
                    operation.Run(fs, output);
                    if (json) results.Add((operation.Text, output.ToString()!, null));
                }
                catch (Exception e) when (e is not OutOfMemoryException)
                {
                    string why = e is XfsWriteException w ? $"{w.Message} ({w.ErrnoName})" : $"internal error: {e.GetType().Name}: {e.Message}";
                    stdout.Flush();
                    CommandLineHost.Error(stderr, $"io: {operation.Text}: {why}");
                    if (json) results.Add((operation.Text, output.ToString()!, why));
                    rc = CommandLineHost.ExitDamaged;
                    break;
                }
            }
            try { fs.Close(); }
            catch (Exception e) when (e is XfsWriteException or IOException)
            {
                closeError = $"close failed: {e.Message}";
                CommandLineHost.Error(stderr, $"io: {imagePath}: {closeError}");
                rc = CommandLineHost.ExitDamaged;
            }
        }
        finally
        {
            fs.Dispose();
        }
        if (json)
        {
            CommandLineHost.WriteJson(stdout, "io", j =>
            {
                j.WriteString("image", imagePath);
                j.WriteNumber("exitCode", rc);
                j.WriteStartArray("operations");
                foreach (var (text, output, error) in results)
                {
                    j.WriteStartObject();
                    j.WriteString("command", text);
                    j.WriteBoolean("ok", error is null);
                    j.WriteStartArray("output");
                    foreach (string line in output.Split('\n', StringSplitOptions.RemoveEmptyEntries)) j.WriteStringValue(line);
                    j.WriteEndArray();
                    if (error is not null) j.WriteString("error", error);
                    j.WriteEndObject();
                }
                j.WriteEndArray();
                j.WriteNumber("notRun", operations.Count - results.Count);
                if (closeError is not null) j.WriteString("closeError", closeError);
            });
        }
        return rc;
    }

}

/// <summary>One parsed <c>-c</c> command of <c>xfbtree io</c>.</summary>
/// <param name="Name">The command.</param>
/// <param name="Paths">Its paths, in order.</param>
/// <param name="Numbers">Its sizes and numbers, in order.</param>
/// <param name="Fill">pwrite's fill byte.</param>
/// <param name="Text">The command as given.</param>
/// <param name="Words">Its other arguments (symlink target, mode, owner, times, device type), in order.</param>
/// <param name="Flags">rename's flags.</param>
internal sealed record IoOperation(string Name, IReadOnlyList<string> Paths, IReadOnlyList<long> Numbers, byte Fill, string Text,
    IReadOnlyList<string> Words, RenameFlags Flags = RenameFlags.None)
{
    /// <summary>falloc -k: FALLOC_FL_KEEP_SIZE.</summary>
    public bool KeepSize { get; init; }

    /// <summary>The arguments of each command: P = path, N = size, W = a word checked by the command.</summary>
    static readonly Dictionary<string, string> Shapes = new(StringComparer.Ordinal)
    {
        ["pwrite"] = "PNN", ["pread"] = "PNN", ["falloc"] = "PNN", ["fpunch"] = "PNN", ["fcollapse"] = "PNN", ["finsert"] = "PNN", ["truncate"] = "PN",
        ["reflink"] = "PNPNN", ["unshare"] = "PNN", ["create"] = "P", ["mkdir"] = "P", ["unlink"] = "P", ["stat"] = "P",
        ["ls"] = "P", ["rmdir"] = "P", ["rename"] = "PP", ["link"] = "PP", ["symlink"] = "WP", ["readlink"] = "P",
        ["mknod"] = "PW", ["chmod"] = "WP", ["chown"] = "WP", ["utimes"] = "PWW",
        ["setxattr"] = "PSS", ["getxattr"] = "PS", ["listxattr"] = "P", ["removexattr"] = "PS",
    };

    static readonly Dictionary<string, string> Usages = new(StringComparer.Ordinal)
    {
        ["pwrite"] = "pwrite PATH OFFSET LENGTH [-S BYTE]", ["pread"] = "pread PATH OFFSET LENGTH",
        ["falloc"] = "falloc [-k] PATH OFFSET LENGTH", ["fpunch"] = "fpunch PATH OFFSET LENGTH",
        ["fcollapse"] = "fcollapse PATH OFFSET LENGTH", ["finsert"] = "finsert PATH OFFSET LENGTH", ["truncate"] = "truncate PATH SIZE",
        ["reflink"] = "reflink SRC SRCOFF DST DSTOFF LENGTH", ["unshare"] = "unshare PATH OFFSET LENGTH",
        ["create"] = "create PATH", ["mkdir"] = "mkdir PATH", ["unlink"] = "unlink PATH", ["stat"] = "stat PATH", ["ls"] = "ls PATH",
        ["rmdir"] = "rmdir PATH", ["rename"] = "rename SRC DST [--noreplace|--exchange|--whiteout]", ["link"] = "link SRC DST",
        ["symlink"] = "symlink TARGET PATH", ["readlink"] = "readlink PATH", ["mknod"] = "mknod PATH fifo|sock|chr MAJ MIN|blk MAJ MIN",
        ["chmod"] = "chmod MODE PATH", ["chown"] = "chown UID:GID PATH", ["utimes"] = "utimes PATH ATIME MTIME",
        ["setxattr"] = "setxattr PATH NAME VALUE", ["getxattr"] = "getxattr PATH NAME", ["listxattr"] = "listxattr PATH",
        ["removexattr"] = "removexattr PATH NAME",
    };

    /// <summary>Parses "CMD ARGS" (words split on blanks; '...' and "..." quote a word). Throws FormatException.</summary>
    public static IoOperation Parse(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        var words = Split(text);
        if (words.Count == 0) throw new FormatException("empty command");
        string name = words[0];
        if (!Shapes.TryGetValue(name, out string? shape)) throw new FormatException($"unknown command '{name}'");
        var args = words.Skip(1).ToList();
        byte fill = 0xcd;
        int s = args.IndexOf("-S");
        if (s >= 0)
        {
            if (name != "pwrite") throw new FormatException($"-S belongs to pwrite (usage: {Usages[name]})");
            if (s + 1 >= args.Count) throw new FormatException("-S needs a byte value");
            long value = ParseSize(args[s + 1], suffixes: false);
            if (value > 255) throw new FormatException($"-S {args[s + 1]}: a byte is 0..255");
            fill = (byte)value;
            args.RemoveRange(s, 2);
        }
        var flags = RenameFlags.None;
        foreach (var (flag, value) in new[] { ("--noreplace", RenameFlags.NoReplace), ("--exchange", RenameFlags.Exchange), ("--whiteout", RenameFlags.Whiteout) })
        {
            if (!args.Remove(flag)) continue;
            if (name != "rename") throw new FormatException($"{flag} belongs to rename (usage: {Usages[name]})");
            if ((flags | value) == (RenameFlags.NoReplace | RenameFlags.Exchange) || (flags | value) == (RenameFlags.Whiteout | RenameFlags.Exchange))
                throw new FormatException("--exchange excludes --noreplace and --whiteout");
            flags |= value;
        }
        bool keepSize = false;
        if (name == "falloc" && args.Count > 0 && args[0] == "-k")
        {
            // falloc -k PATH ...: the option before the operands, as xfs_io's falloc -k (FALLOC_FL_KEEP_SIZE).
            keepSize = true;
            args.RemoveAt(0);
        }
        if (name == "mknod" && args.Count == 4 && args[1] is "chr" or "blk") shape = "PWNN";
        if (args.Count != shape.Length) throw new FormatException($"{name} takes {shape.Length} argument{(shape.Length == 1 ? "" : "s")} (usage: {Usages[name]})");
        var paths = new List<string>();
        var numbers = new List<long>();
        var texts = new List<string>();
        for (int i = 0; i < shape.Length; i++)
        {
            if (shape[i] == 'S')
            {
                // Names and values of xattr commands ride along with the paths.
                paths.Add(args[i]);
            }
            else if (shape[i] == 'P')
            {
                if (!args[i].StartsWith('/')) throw new FormatException($"'{args[i]}' is not an absolute path inside the filesystem");
                paths.Add(args[i]);
            }
            else if (shape[i] == 'W')
            {
                texts.Add(args[i]);
            }
            else
            {
                numbers.Add(ParseSize(args[i], suffixes: name != "mknod"));
            }
        }
        CheckWords(name, texts, numbers);
        if (shape.EndsWith("NN", StringComparison.Ordinal) && numbers[^2] > long.MaxValue - numbers[^1])
        {
            throw new FormatException($"offset {numbers[^2]} + length {numbers[^1]} is past any file's end");
        }
        return new IoOperation(name, paths, numbers, fill, text.Trim(), texts, flags) { KeepSize = keepSize };
    }

    /// <summary>The word arguments parse (so a bad one is a usage error before the image is opened).</summary>
    static void CheckWords(string name, List<string> words, List<long> numbers)
    {
        switch (name)
        {
            case "mknod":
                if (words[0] is not ("fifo" or "sock" or "chr" or "blk")) throw new FormatException($"mknod type '{words[0]}' is not fifo, sock, chr or blk");
                if (words[0] is "chr" or "blk" && numbers.Count != 2) throw new FormatException($"mknod {words[0]} needs MAJ MIN (usage: {Usages[name]})");
                if (numbers.Count == 2 && (numbers[0] > uint.MaxValue || numbers[1] > uint.MaxValue)) throw new FormatException("device numbers are 32-bit");
                break;
            case "chmod":
                ParseMode(words[0]);
                break;
            case "chown":
                ParseOwner(words[0]);
                break;
            case "utimes":
                ParseTime(words[0]);
                ParseTime(words[1]);
                break;
        }
    }

    /// <summary>An octal mode of at most 07777.</summary>
    public static int ParseMode(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        if (text.Length == 0 || text.Length > 5 || text.Any(c => c is < '0' or > '7')) throw new FormatException($"'{text}' is not an octal mode");
        int mode = Convert.ToInt32(text, 8);
        if (mode > 0xFFF) throw new FormatException($"mode '{text}' is larger than 07777");
        return mode;
    }

    /// <summary>"UID:GID" (either may be empty: unchanged).</summary>
    public static (uint? Uid, uint? Gid) ParseOwner(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        int colon = text.IndexOf(':', StringComparison.Ordinal);
        if (colon < 0) throw new FormatException($"'{text}' is not UID:GID");
        static uint? Id(string part, string text)
        {
            if (part.Length == 0) return null;
            if (!uint.TryParse(part, NumberStyles.None, CultureInfo.InvariantCulture, out uint id) || id == uint.MaxValue)
                throw new FormatException($"'{text}': '{part}' is not a numeric id");
            return id;
        }
        return (Id(text[..colon], text), Id(text[(colon + 1)..], text));
    }

    /// <summary>seconds[.nanoseconds] since the epoch (may be negative), "now" (UTIME_NOW) or "omit" (null).</summary>
    public static InodeTime? ParseTime(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        if (text == "now") return NamespaceOperations.UtimeNow;
        if (text == "omit") return null;
        int dot = text.IndexOf('.', StringComparison.Ordinal);
        string secondsText = dot < 0 ? text : text[..dot];
        string fraction = dot < 0 ? "" : text[(dot + 1)..];
        if (!long.TryParse(secondsText, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out long seconds)
            || fraction.Length > 9 || fraction.Any(c => c is < '0' or > '9') || (dot >= 0 && fraction.Length == 0))
            throw new FormatException($"'{text}' is not seconds[.nanoseconds], 'now' or 'omit'");
        uint nanos = fraction.Length == 0 ? 0 : uint.Parse(fraction.PadRight(9, '0'), CultureInfo.InvariantCulture);
        return new InodeTime(seconds, nanos);
    }

    static List<string> Split(string text)
    {
        var words = new List<string>();
        var word = new System.Text.StringBuilder();
        bool inWord = false;
        char quote = '\0';
        foreach (char c in text)
        {
            if (quote != '\0')
            {
                if (c == quote) quote = '\0';
                else word.Append(c);
            }
            else if (c is '\'' or '"') { quote = c; inWord = true; }
            else if (char.IsWhiteSpace(c))
            {
                if (inWord) { words.Add(word.ToString()); word.Clear(); inWord = false; }
            }
            else { word.Append(c); inWord = true; }
        }
        if (quote != '\0') throw new FormatException($"unterminated {quote} quote");
        if (inWord) words.Add(word.ToString());
        return words;
    }

    /// <summary>A non-negative size: decimal or 0x hex, with an optional k/m/g/t suffix (powers of 1024).</summary>
    public static long ParseSize(string text, bool suffixes = true)
    {
        ArgumentNullException.ThrowIfNull(text);
        string digits = text;
        int shift = 0;
        if (suffixes && digits.Length > 1 && !digits.StartsWith("0x", StringComparison.OrdinalIgnoreCase))
        {
            shift = char.ToLowerInvariant(digits[^1]) switch { 'k' => 10, 'm' => 20, 'g' => 30, 't' => 40, _ => 0 };
            if (shift > 0) digits = digits[..^1];
        }
        bool ok = digits.StartsWith("0x", StringComparison.OrdinalIgnoreCase)
            ? long.TryParse(digits.AsSpan(2), NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture, out long value)
            : long.TryParse(digits, NumberStyles.None, CultureInfo.InvariantCulture, out value);
        if (!ok || value < 0) throw new FormatException($"'{text}' is not a size");
        if (shift > 0 && value > long.MaxValue >> shift) throw new FormatException($"'{text}' is too large");
        return value << shift;
    }

    /// <summary>Runs the command on <paramref name="fs"/>; output (if any) on <paramref name="stdout"/>.</summary>
    public void Run(XfsFileSystem fs, TextWriter stdout)
    {
        ArgumentNullException.ThrowIfNull(fs);
        ArgumentNullException.ThrowIfNull(stdout);
        string path = Paths[0];
        switch (Name)
        {
            case "pwrite":
            {
                // The whole write's space is checked first: when it cannot fit, nothing is written. The write then
                // goes in pieces of WritePiece bytes, one operation each; should a piece still fail (space taken by
                // bmbt growth the check could not foresee, an I/O error), the pieces before it stay written and the
                // error says exactly how many bytes that is, as write(2) reports a short count.
                long offset = Numbers[0], length = Numbers[1];
                try
                {
                    fs.EnsureWriteSpace(path, offset, length);
                }
                catch (XfsWriteException e) when (e.Kind == WriteErrorKind.NoSpace)
                {
                    throw new XfsWriteException(e.Kind, $"nothing written: {e.Message}", e);
                }
                var piece = new byte[(int)Math.Min(length, IoCommand.WritePiece)];
                piece.AsSpan().Fill(Fill);
                long done = 0;
                try
                {
                    while (done < length)
                    {
                        int n = (int)Math.Min(piece.Length, length - done);
                        fs.Write(path, offset + done, piece.AsSpan(0, n));
                        done += n;
                    }
                }
                catch (Exception e) when (e is XfsWriteException or IOException)
                {
                    throw new XfsWriteException(e is XfsWriteException w ? w.Kind : WriteErrorKind.Io, done == 0
                        ? $"nothing written: {e.Message}"
                        : $"short write: {done} of {length} bytes written at offset {offset} (bytes [{offset}, {offset + done}) are in the file, the rest is not): {e.Message}", e);
                }
                stdout.WriteLine($"wrote {length}/{CommandLineHost.Count(length, "byte")} at offset {offset}");
                break;
            }
            case "pread":
            {
                // Holes and unwritten extents reach the CRC as zero lengths (O(log n) each): the work follows the
                // data read, not the range; the range stops at EOF.
                long offset = Numbers[0], length = Numbers[1];
                var crc = new Crc64();
                long done = fs.ReadInto(path, offset, length, crc);
                stdout.WriteLine($"read {done}/{CommandLineHost.Count(length, "byte")} at offset {offset} crc64 {crc.Value:x16}");
                break;
            }
            case "falloc": fs.Fallocate(path, Numbers[0], Numbers[1], KeepSize ? Xfbtree.Xfs.Write.Files.FallocateFlags.KeepSize : Xfbtree.Xfs.Write.Files.FallocateFlags.None); break;
            case "fcollapse": fs.CollapseRange(path, Numbers[0], Numbers[1]); break;
            case "finsert": fs.InsertRange(path, Numbers[0], Numbers[1]); break;
            case "fpunch": fs.PunchHole(path, Numbers[0], Numbers[1]); break;
            case "truncate": fs.Truncate(path, Numbers[0]); break;
            case "reflink": fs.Reflink(path, Numbers[0], Paths[1], Numbers[1], Numbers[2]); break;
            case "unshare": fs.Unshare(path, Numbers[0], Numbers[1]); break;
            case "create": stdout.WriteLine($"{path}: inode {fs.Create(path)}"); break;
            case "rmdir": fs.Rmdir(path); break;
            case "rename": fs.Namespace.Rename(path, Paths[1], Flags); break;
            case "link": fs.Namespace.Link(path, Paths[1]); break;
            case "symlink": stdout.WriteLine($"{path}: inode {fs.Symlink(Words[0], path)}"); break;
            case "readlink": stdout.WriteLine(fs.ReadLink(path)); break;
            case "mknod":
            {
                int type = Words[0] switch { "fifo" => 0x1000, "sock" => 0xC000, "chr" => 0x2000, _ => 0x6000 };
                ulong rdev = Numbers.Count == 2 ? DeviceNumbers.MakeDev((uint)Numbers[0], (uint)Numbers[1]) : 0;
                stdout.WriteLine($"{path}: inode {fs.Mknod(path, type | 0x1A4, rdev)}");
                break;
            }
            case "chmod": fs.Namespace.Chmod(path, ParseMode(Words[0])); break;
            case "chown":
            {
                var (uid, gid) = ParseOwner(Words[0]);
                fs.Namespace.Chown(path, uid, gid);
                break;
            }
            case "utimes": fs.Namespace.Utimes(path, ParseTime(Words[0]), ParseTime(Words[1])); break;
            case "mkdir": stdout.WriteLine($"{path}: inode {fs.Mkdir(path)}"); break;
            case "unlink": fs.Unlink(path); break;
            case "stat": WriteStat(path, fs.Stat(path), fs.GetAttr(path), stdout); break;
            case "ls":
                foreach (var entry in fs.List(path)) stdout.WriteLine($"{entry.Ino}\t{TypeName(entry.Type)}\t{entry.Name}");
                break;
            case "setxattr":
                fs.SetXattr(fs.Lookup(path), Paths[1], System.Text.Encoding.UTF8.GetBytes(Paths[2]));
                break;
            case "getxattr":
            {
                ulong ino = fs.Lookup(path);
                var value = new byte[Math.Max(1, fs.GetXattr(ino, Paths[1], []))];
                int n = fs.GetXattr(ino, Paths[1], value);
                stdout.WriteLine($"{Paths[1]}=\"{ShowValue(value.AsSpan(0, n))}\"");
                break;
            }
            case "listxattr":
                foreach (string name in fs.ListXattrNames(fs.Lookup(path))) stdout.WriteLine(name);
                break;
            case "removexattr": fs.RemoveXattr(fs.Lookup(path), Paths[1]); break;
            default:
                throw new InvalidOperationException($"no runner for '{Name}'");
        }
    }

    /// <summary>A value as getfattr shows text: printable ASCII as is, other bytes as octal escapes.</summary>
    static string ShowValue(ReadOnlySpan<byte> value)
    {
        var sb = new System.Text.StringBuilder(value.Length);
        foreach (byte b in value)
        {
            if (b >= 0x20 && b < 0x7F && b != (byte)'"' && b != (byte)'\\') sb.Append((char)b);
            else sb.Append('\\').Append(Convert.ToString(b, 8).PadLeft(3, '0'));
        }
        return sb.ToString();
    }

    static void WriteStat(string path, InodeStat stat, InodeAttributes attributes, TextWriter stdout)
    {
        stdout.WriteLine($"path = {path}");
        stdout.WriteLine($"ino = {stat.Ino}");
        stdout.WriteLine($"type = {TypeName(stat.Type)}");
        stdout.WriteLine($"mode = 0{Convert.ToString(stat.Mode & 0xFFF, 8)}");
        stdout.WriteLine($"links = {stat.Links}");
        stdout.WriteLine($"size = {stat.Size}");
        stdout.WriteLine($"blocks = {stat.Blocks}");
        stdout.WriteLine($"extents = {stat.DataExtents}");
        stdout.WriteLine($"format = {stat.DataForkFormat}");
        stdout.WriteLine($"reflink = {(stat.Reflink ? 1 : 0)}");
        stdout.WriteLine($"mtime = {stat.ModifiedAt.UtcDateTime.ToString("yyyy-MM-dd'T'HH:mm:ss.fffffff'Z'", CultureInfo.InvariantCulture)}");
        stdout.WriteLine($"uid = {attributes.Uid}");
        stdout.WriteLine($"gid = {attributes.Gid}");
        stdout.WriteLine($"atime_ns = {attributes.Atime}");
        stdout.WriteLine($"mtime_ns = {attributes.Mtime}");
        stdout.WriteLine($"ctime_ns = {attributes.Ctime}");
        stdout.WriteLine($"crtime_ns = {attributes.Crtime}");
        stdout.WriteLine($"generation = {attributes.Generation}");
        if (attributes.Type is InodeType.CharDevice or InodeType.BlockDevice) stdout.WriteLine($"rdev = {attributes.RdevMajor}:{attributes.RdevMinor}");
    }

    static string TypeName(InodeType type) => type switch
    {
        InodeType.RegularFile => "file",
        InodeType.Directory => "dir",
        InodeType.Symlink => "symlink",
        InodeType.CharDevice => "chardev",
        InodeType.BlockDevice => "blockdev",
        InodeType.Fifo => "fifo",
        InodeType.Socket => "socket",
        _ => "unknown",
    };
}
