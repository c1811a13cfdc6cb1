using System.CommandLine;
using System.CommandLine.Help;
using System.CommandLine.Invocation;

namespace Xfbtree.Cli;

/// <summary>Where a command writes: report output, one-line errors, and whether to draw a progress line.</summary>
/// <param name="Stdout">Report / TSV output (help and --version go here too).</param>
/// <param name="Stderr">One-line errors and, when <paramref name="Progress"/>, the progress line.</param>
/// <param name="Progress">Draw a progress line on <paramref name="Stderr"/> (the tool passes "stderr is a terminal").</param>
public sealed record CommandEnvironment(TextWriter Stdout, TextWriter Stderr, bool Progress);

/// <summary>
/// The command tree's root and the one place that turns a command line into an exit code. Each top-level command
/// lives in its own file with a <c>static Command Create(CommandEnvironment)</c> and is added to the root with one
/// line in <c>Program.Main</c>. Conventions every command shares: exit 0 success or clean, 1 damage found, 2 could
/// not do it (usage errors included); a usage error is exactly one line on stderr.
/// </summary>
public static class CommandLineHost
{
    public const int ExitClean = 0, ExitDamaged = 1, ExitUnusable = 2;

    /// <summary>The root command <c>xfbtree</c> with <c>--help</c> (on every command) and <c>--version</c>.</summary>
    public static Command CreateRoot()
    {
        // Not RootCommand: its name would be the host executable's (testhost when run in process).
        var root = new Command("xfbtree", "Reads, checks and repairs the reverse-mapping btrees of XFS v5 images.")
        {
            new HelpOption { Recursive = true },
            new VersionOption(),
        };
        return root;
    }

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
        if (parse.Action == null)
        {
            environment.Stderr.WriteLine($"{CommandPath(parse)}: missing command (see '{CommandPath(parse)} --help')");
            return ExitUnusable;
        }
        // The commands catch what they expect themselves; anything else must surface, not become a parser message.
        return parse.Invoke(new InvocationConfiguration { Output = environment.Stdout, Error = environment.Stderr, EnableDefaultExceptionHandler = false });
    }

    /// <summary>One line: "xfbtree TOP: message (see 'xfbtree TOP SUB --help')".</summary>
    static string UsageError(ParseResult parse)
    {
        // An unknown word explains more than the "required command was not provided" it also causes.
        string message = parse.UnmatchedTokens.Count > 0 ? $"unrecognized command or argument '{parse.UnmatchedTokens[0]}'"
                       : parse.Errors.Count > 0 ? parse.Errors[0].Message : "invalid command line";
        if (message.Length > 1 && char.IsUpper(message[0]) && char.IsLower(message[1])) message = char.ToLowerInvariant(message[0]) + message[1..];
        var names = CommandNames(parse);
        string top = string.Join(' ', names.Take(2));
        string full = string.Join(' ', names);
        return $"{top}: {message.ReplaceLineEndings(" ").TrimEnd('.')} (see '{full} --help')";
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
