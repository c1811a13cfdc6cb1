namespace Xfbtree.Cli;

internal static class Program
{
    private static int Main(string[] args)
    {
        var stdout = new StreamWriter(Console.OpenStandardOutput(), new System.Text.UTF8Encoding(false), 1 << 16) { AutoFlush = false };
        var environment = new CommandEnvironment(stdout, Console.Error, Progress: !Console.IsErrorRedirected);
        try
        {
            var root = CommandLineHost.CreateRoot();
            // One line per top-level command; each lives in its own file.
            root.Add(RmapCommand.Create(environment));
            root.Add(IoCommand.Create(environment));
            root.Add(StressCommand.Create(environment));
            root.Add(RecoverCommand.Create(environment));
            root.Add(ScrubCommand.Create(environment));
            if (OperatingSystem.IsLinux()) root.Add(MountCommand.Create(environment));
            if (OperatingSystem.IsLinux()) root.Add(HealthCommand.Create(environment));
            return CommandLineHost.Invoke(root, args, environment);
        }
        finally
        {
            try { stdout.Flush(); } catch (IOException) { }
        }
    }
}
