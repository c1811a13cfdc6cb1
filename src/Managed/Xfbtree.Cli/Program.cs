namespace Xfbtree.Cli;

internal static class Program
{
    const string Usage = "usage: xfbtree rmap dump|check|repair IMAGE [options]   (xfbtree rmap --help for details)";

    private static int Main(string[] args)
    {
        var stdout = new StreamWriter(Console.OpenStandardOutput(), new System.Text.UTF8Encoding(false), 1 << 16) { AutoFlush = false };
        var stderr = Console.Error;
        try
        {
            if (args.Length == 0 || args[0] is "-h" or "--help")
            {
                (args.Length == 0 ? stderr : stdout).WriteLine(Usage);
                return args.Length == 0 ? RmapCommands.ExitUnusable : RmapCommands.ExitClean;
            }
            if (args[0] != "rmap")
            {
                stderr.WriteLine($"xfbtree: unknown command '{args[0]}'");
                stderr.WriteLine(Usage);
                return RmapCommands.ExitUnusable;
            }
            return RmapCommands.Run(args[1..], stdout, stderr, progress: !Console.IsErrorRedirected);
        }
        finally
        {
            try { stdout.Flush(); } catch (IOException) { }
        }
    }
}
