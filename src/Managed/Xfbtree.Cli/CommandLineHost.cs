using System.Buffers;
using System.CommandLine;
using System.CommandLine.Help;
using System.CommandLine.Invocation;
using System.Reflection;
using System.Text;
using System.Text.Json;

namespace Xfbtree.Cli;

/// <summary>Where a command writes: report output, one-line errors, and whether to draw a progress line.</summary>
/// <param name="Stdout">Report / TSV output (help and --version go here too).</param>
/// <param name="Stderr">One-line errors and, when <paramref name="Progress"/>, the progress line.</param>
/// <param name="Progress">Draw a progress line on <paramref name="Stderr"/> (the tool passes "stderr is a terminal").</param>
internal sealed record CommandEnvironment(TextWriter Stdout, TextWriter Stderr, bool Progress)
{
    /// <summary>
    /// For the fuzz harness: exceptions that are not input problems (anything but the format, I/O and corruption
    /// reports) escape with their stack trace instead of becoming the one-line "internal error" (exit 2).
    /// </summary>
    public bool RethrowInternalErrors { get; init; }

    /// <summary>For crash tests: called with the image's disk target when a command opens it for writing.</summary>
    public Action<Xfbtree.Buffers.DiskBufferTarget>? ConfigureWritableTarget { get; init; }
}

/// <summary>
/// The command tree's root and the one place that turns a command line into an exit code. Each top-level command
/// lives in its own file with a <c>static Command Create(CommandEnvironment)</c> and is added to the root with one
/// line in <c>Program.Main</c>. Conventions every command shares: exit 0 success or clean, 1 damage found, 2 could
/// not do it (usage errors included), stated in every command's --help; a usage error is exactly one line on stderr;
/// every error line starts with <see cref="ErrorPrefix"/>; a command that reports takes <c>--json</c> and then writes
/// one JSON document (with <c>version</c>) to stdout, an error object when it could not do its work.
/// </summary>
internal static class CommandLineHost
{
    public const int ExitClean = 0, ExitDamaged = 1, ExitUnusable = 2;

    /// <summary>The prefix of every error line the tool writes (as xfsprogs' tools start theirs with their name).</summary>
    public const string ErrorPrefix = "xfbtree: ";

    /// <summary>How the exit codes read in every command's --help.</summary>
    public const string ExitCodesHelp = "Exit 0 clean or done, 1 damage found or an operation failed, 2 could not run (usage error, unusable image).";

    /// <summary>The tool's version (the repository's one version; no source revision).</summary>
    public static string Version { get; } = ReadVersion();

    static string ReadVersion()
    {
        string? informational = typeof(CommandLineHost).Assembly.GetCustomAttribute<AssemblyInformationalVersionAttribute>()?.InformationalVersion;
        return informational?.Split('+')[0] ?? "unknown";
    }

    /// <summary>
    /// The root command <c>xfbtree</c> with <c>--help</c>/<c>-h</c> (on every command), <c>--version</c>/<c>-V</c>, and
    /// <c>--progress</c>/<c>--no-progress</c> (on every command) to force or suppress the progress line, which is
    /// otherwise drawn only when stderr is a terminal.
    /// </summary>
    public static Command CreateRoot()
    {
        // Not RootCommand: its name would be the host executable's (testhost when run in process).
        var root = new Command("xfbtree", "Reads, checks and repairs the reverse-mapping btrees of XFS v5 images. " + ExitCodesHelp)
        {
            new HelpOption { Recursive = true },
            new VersionOption("--version", "-V"),
            new Option<bool>(ProgressOption) { Description = "Draw a progress line on stderr even when it is not a terminal.", Recursive = true },
            new Option<bool>(NoProgressOption) { Description = "Never draw a progress line.", Recursive = true },
        };
        return root;
    }

    const string ProgressOption = "--progress", NoProgressOption = "--no-progress";

    /// <summary>The environment a parsed command runs in: <paramref name="environment"/> with its progress choice
    /// overridden by <c>--progress</c> or <c>--no-progress</c> when given.</summary>
    public static CommandEnvironment For(ParseResult parse, CommandEnvironment environment)
    {
        ArgumentNullException.ThrowIfNull(parse);
        ArgumentNullException.ThrowIfNull(environment);
        if (parse.GetValue<bool>(NoProgressOption)) return environment with { Progress = false };
        if (parse.GetValue<bool>(ProgressOption)) return environment with { Progress = true };
        return environment;
    }

    /// <summary>Writes one error line: <see cref="ErrorPrefix"/>, then <paramref name="message"/> on one line.</summary>
    /// <summary>"PATH: MESSAGE", unless the message (an engine's, which names the image itself) already starts so.</summary>
    public static string AboutImage(string path, string message)
        => message.StartsWith(path + ": ", StringComparison.Ordinal) ? message : $"{path}: {message}";

    public static void Error(TextWriter stderr, string message)
    {
        ArgumentNullException.ThrowIfNull(stderr);
        ArgumentNullException.ThrowIfNull(message);
        stderr.WriteLine(ErrorPrefix + message.ReplaceLineEndings(" "));
    }

    /// <summary>"1 block", "2 blocks": <paramref name="count"/> and the noun in the right number.</summary>
    public static string Count(long count, string singular, string? plural = null) =>
        string.Create(System.Globalization.CultureInfo.InvariantCulture, $"{count} {(count == 1 ? singular : plural ?? singular + "s")}");

    /// <summary>
    /// Writes one JSON document to <paramref name="stdout"/>: an object that starts with <c>version</c> (the tool's)
    /// and <c>command</c>, then what <paramref name="body"/> writes.
    /// </summary>
    public static void WriteJson(TextWriter stdout, string command, Action<Utf8JsonWriter> body)
    {
        ArgumentNullException.ThrowIfNull(stdout);
        ArgumentNullException.ThrowIfNull(body);
        var buffer = new ArrayBufferWriter<byte>();
        using (var j = new Utf8JsonWriter(buffer, new JsonWriterOptions { Indented = true }))
        {
            j.WriteStartObject();
            j.WriteString("version", Version);
            j.WriteString("command", command);
            body(j);
            j.WriteEndObject();
        }
        stdout.Write(Encoding.UTF8.GetString(buffer.WrittenSpan));
        stdout.Write('\n');
        stdout.Flush();
    }

    /// <summary>The JSON document of a run that could not do its work (<c>--json</c> was asked): the error line's
    /// message and the exit code, so that a program reading stdout learns why.</summary>
    public static void WriteJsonError(TextWriter stdout, string command, string? image, string message, int exitCode) =>
        WriteJson(stdout, command, j =>
        {
            if (image is not null) j.WriteString("image", image);
            j.WriteString("error", message.ReplaceLineEndings(" "));
            j.WriteNumber("exitCode", exitCode);
        });

    /// <summary>Parses <paramref name="args"/> against <paramref name="root"/> and runs the chosen command.</summary>
    public static int Invoke(Command root, IReadOnlyList<string> args, CommandEnvironment environment)
    {
        ArgumentNullException.ThrowIfNull(root);
        ArgumentNullException.ThrowIfNull(args);
        ArgumentNullException.ThrowIfNull(environment);
        // No response files: an image path that starts with '@' is a path, not a list of arguments.
        var parse = root.Parse(args, new ParserConfiguration { ResponseFileTokenReplacer = null });
        if (parse.Action is ParseErrorAction || (parse.Action == null && parse.Errors.Count > 0))
        {
            environment.Stderr.WriteLine(UsageError(parse));
            return ExitUnusable;
        }
        if (parse.GetValue<bool>(ProgressOption) && parse.GetValue<bool>(NoProgressOption))
        {
            string names = string.Join(' ', CommandNames(parse));
            Error(environment.Stderr, $"{ProgressOption} and {NoProgressOption} contradict each other (see '{names} --help')");
            return ExitUnusable;
        }
        if (parse.Action == null)
        {
            string path = CommandPath(parse);
            Error(environment.Stderr, $"{(path == "xfbtree" ? "" : path["xfbtree ".Length..] + ": ")}missing command (see '{path} --help')");
            return ExitUnusable;
        }
        // The commands catch what they expect themselves; anything else must surface, not become a parser message.
        return parse.Invoke(new InvocationConfiguration { Output = environment.Stdout, Error = environment.Stderr, EnableDefaultExceptionHandler = false });
    }

    /// <summary>One line: "xfbtree: TOP: message (see 'xfbtree TOP SUB --help')".</summary>
    static string UsageError(ParseResult parse)
    {
        // An unknown word explains more than the "required command was not provided" it also causes.
        string message = parse.UnmatchedTokens.Count > 0 ? $"unrecognized command or argument '{parse.UnmatchedTokens[0]}'"
                       : parse.Errors.Count > 0 ? parse.Errors[0].Message : "invalid command line";
        if (message.Length > 1 && char.IsUpper(message[0]) && char.IsLower(message[1])) message = char.ToLowerInvariant(message[0]) + message[1..];
        var names = CommandNames(parse);
        string top = names.Count > 1 ? names[1] + ": " : "";
        string full = string.Join(' ', names);
        return $"{ErrorPrefix}{top}{message.ReplaceLineEndings(" ").TrimEnd('.')} (see '{full} --help')";
    }

    static string CommandPath(ParseResult parse) => string.Join(' ', CommandNames(parse));

    static List<string> CommandNames(ParseResult parse)
    {
        var names = new List<string>();
        for (System.CommandLine.Parsing.SymbolResult? r = parse.CommandResult; r != null; r = r.Parent)
            if (r is System.CommandLine.Parsing.CommandResult c) names.Add(c.Command.Name);
        names.Reverse();
        return names;
    }
}
