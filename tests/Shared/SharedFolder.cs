namespace Xfbtree.TestSupport;

/// <summary>
/// Where the test data lives, compiled into every test project: $XFBTREE_SHARED when set (a folder holding
/// <c>fixtures/</c>), else the repository's own <c>tests/</c> folder (REPO found from the test binaries upwards),
/// whose <c>fixtures/</c> the repository carries. No machine-specific path: a missing folder is a loud failure.
/// </summary>
internal static class SharedFolder
{
    public static string Dir { get; } = Locate();

    public static string Fixtures => Path.Combine(Dir, "fixtures");

    static string Locate()
    {
        if (Environment.GetEnvironmentVariable("XFBTREE_SHARED") is { Length: > 0 } env)
        {
            if (!Directory.Exists(Path.Combine(env, "fixtures")))
                throw new DirectoryNotFoundException($"XFBTREE_SHARED={env} has no fixtures/ folder");
            return env;
        }
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            if (File.Exists(Path.Combine(dir.FullName, "Xfbtree.sln")))
            {
                string tests = Path.Combine(dir.FullName, "tests");
                if (Directory.Exists(Path.Combine(tests, "fixtures"))) return tests;
                throw new DirectoryNotFoundException($"{tests}/fixtures is missing from the repository");
            }
        }
        throw new DirectoryNotFoundException($"the repository (Xfbtree.sln) was not found above {AppContext.BaseDirectory}; set XFBTREE_SHARED");
    }
}
