using System.Text.Json;
using System.Text.RegularExpressions;
using Xfbtree.Xfs.Tests.Repair;
using Xunit.Abstractions;

namespace Xfbtree.Xfs.Tests.Mount;

/// <summary>A fuse fact that also runs programs as another user (setpriv): skipped with the reason where it is missing.</summary>
public sealed class FuseUsersFactAttribute : FactAttribute
{
    public FuseUsersFactAttribute()
    {
        if (new FuseFactAttribute().Skip is { } skip) Skip = skip;
        else if (!File.Exists(MountUsers.Setpriv)) Skip = "setpriv (util-linux) is not installed: programs cannot be run as another user";
    }
}

/// <summary>The non-root mount: needs fusermount3 (Debian package fuse3) and setpriv; skipped with the reason otherwise.</summary>
public sealed class FusermountFactAttribute : FactAttribute
{
    public FusermountFactAttribute()
    {
        if (new FuseUsersFactAttribute().Skip is { } skip) Skip = skip;
        else if (!File.Exists("/usr/bin/fusermount3") && !File.Exists("/bin/fusermount3")) Skip = "fusermount3 is not installed (Debian package fuse3): the non-root mount cannot be tested";
        else if (!OperatingSystem.IsLinux() || !OpenToOthers("/dev/fuse"))
            Skip = "/dev/fuse is not open to other users here (its mode is not 0666): fusermount3 cannot mount for a user";
    }

    [System.Runtime.Versioning.SupportedOSPlatform("linux")]
    static bool OpenToOthers(string path) =>
        (File.GetUnixFileMode(path) & (UnixFileMode.OtherRead | UnixFileMode.OtherWrite)) == (UnixFileMode.OtherRead | UnixFileMode.OtherWrite);
}

/// <summary>Programs run as another user through setpriv (the tests run as root).</summary>
internal static class MountUsers
{
    public const string Setpriv = "/usr/bin/setpriv";
    public const uint Nobody = 65534;

    /// <summary>setpriv's options to become <paramref name="uid"/> (same gid, no supplementary groups), HOME in /tmp.</summary>
    public static string[] As(uint uid) => [Setpriv, $"--reuid={uid}", $"--regid={uid}", "--clear-groups", "env", "HOME=/tmp", "DOTNET_CLI_TELEMETRY_OPTOUT=1"];

    public static ToolResult Run(uint uid, string file, params string[] args) => RepairTools.Exec(As(uid)[0], As(uid).Skip(1).Append(file).Concat(args));

    public static ToolResult Xfbtree(uint uid, params string[] args) =>
        Run(uid, "dotnet", [Path.Combine(AppContext.BaseDirectory, "xfbtree.dll"), .. args]);
}

/// <summary>
/// The online half of `xfbtree mount`: the repair and health channel (`xfbtree health DIR`, `xfbtree rmap repair
/// --online DIR`), who may use it, an rmap btree damaged before the mount found while it serves a workload, marked
/// sick, repaired online, the workload none the wiser; then the outside witnesses.
/// </summary>
public sealed class MountOnlineRepairTests(ITestOutputHelper output)
{
    static readonly Regex RepairLine = new(@"^online-repair repairs=(\d+) applied=(\d+) ignored=(\d+) mismatches=(\d+)$", RegexOptions.Multiline);

    [FuseFact]
    public void DamagedRmapbt_FoundWhileMounted_IsRepairedOnline_AndTheWorkloadSeesNoError()
    {
        using var scratch = new RepairScratch();
        string image = scratch.CopyFixture("fresh-4ag");
        // AG 0 holds the root directory, so the workload's first data allocation needs its rmapbt: a single leaf here,
        // whose CRC is made wrong (a verifier failure at the first read).
        var corrupt = RepairTools.Corrupt(image, "leaf-crc", seed: 1, ag: 0);
        Assert.True(corrupt.ExitCode == 0, corrupt.ToString());
        Assert.Equal(1, RepairTools.Xfbtree("rmap", "check", image, "--ag", "0").ExitCode);
        string source = MountWorkloads.MakeSourceTree(Path.Combine(scratch.Directory, "source"), seed: 21, files: 300);
        string archive = MountWorkloads.Tar(scratch.Directory, source);
        string mnt = Directory.CreateDirectory(Path.Combine(scratch.Directory, "mnt")).FullName;
        byte[] first = MountWorkloads.RandomBytes(5, 300_000);
        // The rotation's first turn (AG 0) comes one period after the mount; the workload's first write needs AG 0's
        // rmapbt at once, so it finds the damage well before the rotation could rebuild AG 0 unseen.
        using (var mount = MountedImage.Start(image, mnt, "--online-repair-every", "3", "--threads", "3"))
        {
            // The first write allocates in AG 0 and trips over the damage: the AG is marked sick, repaired at once, and
            // the write runs again; the program sees a normal write.
            using (var f = new FileStream(Path.Combine(mnt, "first.bin"), FileMode.CreateNew))
            {
                f.Write(first);
                f.Flush(flushToDisk: true);
            }
            MountWorkloads.Run("/bin/tar", "xf", archive, "-C", mnt);
            Assert.True(mount.WaitForLog("AG 0 is sick: ", 1, TimeSpan.FromMinutes(1)), $"the damage was not found:\n{mount.Stderr}");
            Assert.True(mount.WaitForLog("AG 0 rmapbt rebuilt", 1, TimeSpan.FromMinutes(2)), $"AG 0 was not rebuilt:\n{mount.Stderr}");
            Assert.Contains("the AG is healthy again", mount.Stderr, StringComparison.Ordinal);
            MountWitnesses.AssertSameTree(source, Path.Combine(mnt, "source"));
            Assert.Equal(first, File.ReadAllBytes(Path.Combine(mnt, "first.bin")));

            var health = RepairTools.Xfbtree("health", mnt);
            output.WriteLine(health.Stdout);
            Assert.True(health.ExitCode == 0, health.ToString());
            Assert.Matches(@"(?m)^AG 0: repaired at \S+Z \(sick since \S+Z: .*bad CRC.*\)", health.Stdout);
            Assert.Matches(@"(?m)^health healthy=3 sick=0 repaired=1$", health.Stdout);
            var json = RepairTools.Xfbtree("health", mnt, "--json");
            Assert.True(json.ExitCode == 0, json.ToString());
            using (var doc = JsonDocument.Parse(json.Stdout))
            {
                Assert.False(string.IsNullOrEmpty(doc.RootElement.GetProperty("version").GetString()));
                var ags = doc.RootElement.GetProperty("ags");
                Assert.Equal(4, ags.GetArrayLength());
                Assert.Equal("repaired", ags[0].GetProperty("state").GetString());
                Assert.Equal("healthy", ags[1].GetProperty("state").GetString());
                Assert.Equal(0, doc.RootElement.GetProperty("sick").GetInt32());
            }

            // Asked through the channel while requests are served: every AG, each verified with commits paused.
            var copy = new Thread(() => MountWorkloads.Run("/bin/cp", "-r", source, Path.Combine(mnt, "copy")));
            copy.Start();
            var repair = RepairTools.Xfbtree("rmap", "repair", "--online", mnt, "--verify");
            copy.Join();
            output.WriteLine(repair.Stdout);
            Assert.True(repair.ExitCode == 0, repair.ToString());
            var line = RepairLine.Match(repair.Stdout);
            Assert.True(line.Success && line.Groups[1].Value == "4" && line.Groups[4].Value == "0", repair.ToString());
            Assert.Equal(4, Regex.Count(repair.Stdout, "verified: same as a scan with commits paused"));
            var one = RepairTools.Xfbtree("rmap", "repair", "--online", mnt, "--ag", "2");
            Assert.True(one.ExitCode == 0 && RepairLine.Match(one.Stdout).Groups[1].Value == "1", one.ToString());
            var missing = RepairTools.Xfbtree("rmap", "repair", "--online", mnt, "--ag", "9");
            Assert.True(missing.ExitCode == 2 && missing.Stderr.Contains("AG 9 does not exist", StringComparison.Ordinal), missing.ToString());
            MountWitnesses.AssertSameTree(source, Path.Combine(mnt, "copy"));

            var (code, stdout, stderr) = mount.Unmount();
            Assert.True(code == 0, $"exit {code}\n{stdout}\n{stderr}");
            Assert.Matches(@"online-repair repairs=([1-9]\d*) applied=\d+ ignored=\d+ failed=0", stdout);
            output.WriteLine(stderr);
        }
        MountWitnesses.AssertClean(image);
        MountWitnesses.WithKernelMount(scratch, image, kernel =>
        {
            MountWitnesses.AssertSameTree(source, Path.Combine(kernel, "source"));
            MountWitnesses.AssertSameTree(source, Path.Combine(kernel, "copy"));
            Assert.Equal(first, File.ReadAllBytes(Path.Combine(kernel, "first.bin")));
        });
    }

    [FuseFact]
    public void WithoutTheRotation_ASickAgStaysSickInHealth_UntilRmapRepairOnline()
    {
        using var scratch = new RepairScratch();
        string image = scratch.CopyFixture("fresh-4ag");
        var corrupt = RepairTools.Corrupt(image, "leaf-crc", seed: 1, ag: 0);
        Assert.True(corrupt.ExitCode == 0, corrupt.ToString());
        string mnt = Directory.CreateDirectory(Path.Combine(scratch.Directory, "mnt")).FullName;
        byte[] data = MountWorkloads.RandomBytes(6, 200_000);
        using (var mount = MountedImage.Start(image, mnt))
        {
            // No rotation: the write that finds the damage fails as the kernel's XFS fails it (EFSCORRUPTED). With the
            // writeback cache (--writeback-cache) the program sees it at fsync (or close), not at write(2). Checked from
            // python: a .NET FileStream's Flush(true) and Dispose returned here without reporting it.
            var failed = RepairTools.Exec("/usr/bin/env", ["python3", "-c", """
                import errno, os, sys
                fd = os.open(sys.argv[1], os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o644)
                try:
                    os.write(fd, os.urandom(200000))
                    os.fsync(fd)
                    print("none")
                except OSError as e:
                    print(errno.errorcode[e.errno])
                os.close(fd)
                """, Path.Combine(mnt, "a.bin")]);
            Assert.True(failed.ExitCode == 0 && failed.Stdout == "EUCLEAN\n", failed.ToString());
            Assert.True(mount.WaitForLog("AG 0 is sick: ", 1, TimeSpan.FromMinutes(1)), mount.Stderr);
            Assert.Contains("xfbtree rmap repair --online", mount.Stderr, StringComparison.Ordinal);
            var sick = RepairTools.Xfbtree("health", mnt);
            Assert.True(sick.ExitCode == 1, sick.ToString());
            Assert.Matches(@"(?m)^AG 0: sick since \S+Z: .*bad CRC", sick.Stdout);
            Assert.Matches(@"(?m)^health healthy=3 sick=1 repaired=0$", sick.Stdout);

            var repair = RepairTools.Xfbtree("rmap", "repair", "--online", mnt, "--ag", "0", "--verify");
            Assert.True(repair.ExitCode == 0, repair.ToString());
            Assert.Matches(@"(?m)^online-repair repairs=1 applied=\d+ ignored=\d+ mismatches=0$", repair.Stdout);
            var healed = RepairTools.Xfbtree("health", mnt);
            Assert.True(healed.ExitCode == 0, healed.ToString());
            Assert.Matches(@"(?m)^AG 0: repaired at ", healed.Stdout);

            File.WriteAllBytes(Path.Combine(mnt, "a.bin"), data);
            var (code, stdout, stderr) = mount.Unmount();
            Assert.True(code == 0, $"exit {code}\n{stdout}\n{stderr}");
            Assert.Matches(@"online-repair repairs=1 applied=\d+ ignored=\d+ failed=0", stdout);
        }
        MountWitnesses.AssertClean(image);
        MountWitnesses.WithKernelMount(scratch, image, kernel => Assert.Equal(data, File.ReadAllBytes(Path.Combine(kernel, "a.bin"))));
    }

    [FuseUsersFact]
    public void ControlChannel_RefusesEveryoneButRootAndTheOwner()
    {
        using var scratch = new RepairScratch();
        // The scratch directory is 0700: open it so another user can reach the mount point itself.
        MountWorkloads.Run("/bin/chmod", "755", scratch.Directory);
        string image = scratch.CopyFixture("fresh-4ag");
        string mnt = Directory.CreateDirectory(Path.Combine(scratch.Directory, "mnt")).FullName;
        foreach (bool allowOther in new[] { false, true })
        {
            using var mount = allowOther ? MountedImage.Start(image, mnt, "--allow-other") : MountedImage.Start(image, mnt);
            var root = RepairTools.Xfbtree("health", mnt);
            Assert.True(root.ExitCode == 0, root.ToString());
            var stat = MountUsers.Run(MountUsers.Nobody, "/usr/bin/stat", "-c", "%U", mnt);
            if (allowOther)
            {
                // The kernel lets the user in (allow_other): the refusal must come from the mount's server.
                Assert.True(stat.ExitCode == 0, $"nobody cannot stat the allow_other mount: {stat}");
            }
            else
            {
                Assert.True(stat.ExitCode != 0 && stat.Stderr.Contains("Permission denied", StringComparison.Ordinal), $"nobody could use the mount without allow_other: {stat}");
            }
            foreach (string[] args in new[] { new[] { "health", mnt }, ["rmap", "repair", "--online", mnt], ["rmap", "repair", "--online", mnt, "--ag", "0", "--verify"], ["scrub", mnt, "--repair"] })
            {
                var refused = MountUsers.Xfbtree(MountUsers.Nobody, args);
                Assert.True(refused.ExitCode == 2, $"{string.Join(' ', args)} as nobody (allow_other {allowOther}): {refused}");
                Assert.Contains("permission denied: only root and the owner of the mount", refused.Stderr, StringComparison.Ordinal);
                Assert.DoesNotContain("online-repair repairs=", refused.Stdout, StringComparison.Ordinal);
            }
            if (allowOther)
            {
                Assert.True(mount.WaitForLog("refused a control request from uid 65534", 4, TimeSpan.FromSeconds(30)), mount.Stderr);
            }
            var (code, stdout, stderr) = mount.Unmount();
            Assert.True(code == 0, $"exit {code}\n{stdout}\n{stderr}");
            // Nothing was rebuilt for the refused requests.
            Assert.DoesNotContain("rmapbt rebuilt", stderr, StringComparison.Ordinal);
        }
        var notMount = RepairTools.Xfbtree("health", scratch.Directory);
        Assert.True(notMount.ExitCode == 2 && notMount.Stderr.Contains("not an xfbtree mount", StringComparison.Ordinal), notMount.ToString());
        MountWitnesses.AssertClean(image);
    }

    [FusermountFact]
    public void NonRootMount_ThroughFusermount3_ServesItsOwnerAndRefusesOthers()
    {
        using var scratch = new RepairScratch();
        MountWorkloads.Run("/bin/chmod", "755", scratch.Directory);
        // The user's own directory: the image, its journal beside it, the mount point.
        string home = Directory.CreateDirectory(Path.Combine(scratch.Directory, "user")).FullName;
        string image = scratch.Copy(scratch.CopyFixture("fresh-4ag"), Path.Combine("user", "img"));
        string mnt = Directory.CreateDirectory(Path.Combine(home, "mnt")).FullName;
        MountWorkloads.Run("/bin/chown", "-R", $"{MountUsers.Nobody}:{MountUsers.Nobody}", home);
        // The file system's root directory becomes the user's (mkfs made it root's), through a root mount.
        using (var rootMount = MountedImage.Start(image, mnt))
        {
            MountWorkloads.Run("/bin/chown", $"{MountUsers.Nobody}:{MountUsers.Nobody}", mnt);
            Assert.Equal(0, rootMount.Unmount().ExitCode);
        }
        using (var mount = MountedImage.StartVia(MountUsers.As(MountUsers.Nobody), image, mnt, "--online-repair-every", "0.5"))
        {
            if (!mount.WaitMounted(TimeSpan.FromSeconds(120)))
            {
                var (c, o, e) = mount.WaitForExit(TimeSpan.FromSeconds(30));
                Assert.Fail($"the mount as nobody through fusermount3 did not come up: exit {c}\n{o}\n{e}");
            }
            Assert.Contains($" {mnt} fuse.xfbtree ", File.ReadAllText("/proc/self/mounts"), StringComparison.Ordinal);
            var write = MountUsers.Run(MountUsers.Nobody, "/bin/sh", "-c", $"head -c 150000 /dev/zero > {mnt}/zeros && mkdir {mnt}/d && echo hello > {mnt}/d/h");
            Assert.True(write.ExitCode == 0, write.ToString());
            var health = MountUsers.Xfbtree(MountUsers.Nobody, "health", mnt);
            Assert.True(health.ExitCode == 0, health.ToString());
            var repair = MountUsers.Xfbtree(MountUsers.Nobody, "rmap", "repair", "--online", mnt, "--verify");
            Assert.True(repair.ExitCode == 0, repair.ToString());
            Assert.Matches(@"(?m)^online-repair repairs=4 applied=\d+ ignored=\d+ mismatches=0$", repair.Stdout);
            // Another user: the kernel refuses (no allow_other); root too, by the kernel's rule for a user's mount.
            var other = MountUsers.Xfbtree(65533, "health", mnt);
            Assert.True(other.ExitCode == 2 && other.Stderr.Contains("permission denied", StringComparison.Ordinal), other.ToString());
            var asRoot = RepairTools.Xfbtree("health", mnt);
            output.WriteLine($"root asking a user's mount (no allow_other): exit {asRoot.ExitCode} {asRoot.Stderr.Trim()}");
            var unmount = MountUsers.Run(MountUsers.Nobody, "fusermount3", "-u", mnt);
            Assert.True(unmount.ExitCode == 0, unmount.ToString());
            var (code, stdout, stderr) = mount.WaitForExit(TimeSpan.FromSeconds(120));
            Assert.True(code == 0, $"exit {code}\n{stdout}\n{stderr}");
        }
        Assert.DoesNotContain($" {mnt} ", File.ReadAllText("/proc/self/mounts"), StringComparison.Ordinal);
        MountWitnesses.AssertClean(image);
        MountWitnesses.WithKernelMount(scratch, image, kernel =>
        {
            Assert.Equal("hello\n", File.ReadAllText(Path.Combine(kernel, "d", "h")));
            Assert.Equal(150_000, new FileInfo(Path.Combine(kernel, "zeros")).Length);
        });
    }
}

/// <summary>Source trees, archives and programs for the mount's workloads.</summary>
internal static class MountWorkloads
{
    /// <summary>Nested directories and files of 0 to 200 KB, the same for a seed.</summary>
    public static string MakeSourceTree(string root, int seed, int files)
    {
        var random = new Random(seed);
        Directory.CreateDirectory(root);
        var dirs = new List<string> { root };
        for (int d = 0; d < files / 20 + 1; d++) dirs.Add(Directory.CreateDirectory(Path.Combine(dirs[random.Next(dirs.Count)], $"dir{d}")).FullName);
        for (int f = 0; f < files; f++)
        {
            byte[] bytes = RandomBytes(seed * 10_000 + f, f % 5 == 0 ? random.Next(0, 100) : random.Next(0, 200_000));
            File.WriteAllBytes(Path.Combine(dirs[random.Next(dirs.Count)], $"file{f}.bin"), bytes);
        }
        return root;
    }

    /// <summary>A tar archive of <paramref name="source"/> (its last path component at the top).</summary>
    public static string Tar(string scratch, string source)
    {
        string archive = Path.Combine(scratch, Path.GetFileName(source) + ".tar");
        Run("/bin/tar", "cf", archive, "-C", Path.GetDirectoryName(source)!, Path.GetFileName(source));
        return archive;
    }

    public static byte[] RandomBytes(int seed, int length)
    {
        var bytes = new byte[length];
        new Random(seed).NextBytes(bytes);
        return bytes;
    }

    public static string Run(string file, params string[] args)
    {
        var r = RepairTools.Exec(file, args);
        Assert.True(r.ExitCode == 0, $"{file} {string.Join(' ', args)}: {r}");
        return r.Stdout;
    }
}
