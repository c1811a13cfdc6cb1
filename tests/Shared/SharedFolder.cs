namespace Xfbtree.TestSupport;

/// <summary>
/// The shared folder beside the repository (fixtures, corruption tool), compiled into every test project:
/// $XFBTREE_SHARED, else REPO/../shared (REPO found from the test binaries upwards), else /work/shared.
/// </summary>
internal static class SharedFolder
{
    public static string Dir { get; } = Locate();

    public static string Fixtures => Path.Combine(Dir, "fixtures");

    static string Locate()
    {
        if (Environment.GetEnvironmentVariable("XFBTREE_SHARED") is { Length: > 0 } env) return env;
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            if (File.Exists(Path.Combine(dir.FullName, "Xfbtree.sln")))
            {
                string beside = Path.Combine(dir.FullName, "..", "shared");
                if (Directory.Exists(Path.Combine(beside, "fixtures"))) return Path.GetFullPath(beside);
                break;
            }
        }
        return "/work/shared";
    }
}
