using System.Diagnostics;
using Xfbtree.Xfs.Tests.Repair;
using Xfbtree.Xfs.Tests.Trees;

namespace Xfbtree.Xfs.Tests.Mount;

/// <summary>A fact that needs root and /dev/fuse: reported skipped with the reason where either is missing.</summary>
public sealed class FuseFactAttribute : FactAttribute
{
    public FuseFactAttribute()
    {
        if (!File.Exists("/dev/fuse")) Skip = "no /dev/fuse on this machine: the xfbtree mount tests cannot run";
        else if (Environment.UserName != "root") Skip = "the xfbtree mount tests mount with mount(2) and loop devices: they need root";
    }
}

/// <summary>A theory that needs root and /dev/fuse: reported skipped with the reason where either is missing.</summary>
public sealed class FuseTheoryAttribute : TheoryAttribute
{
    public FuseTheoryAttribute()
    {
        Skip = new FuseFactAttribute().Skip;
    }
}

/// <summary>
/// `xfbtree mount IMAGE DIR` as a child process (the built xfbtree.dll): started, waited for until it prints its
/// "mounted" line, used through real system calls, then unmounted (or killed). Dispose never leaves a mount or a
/// process behind.
/// </summary>
internal sealed class MountedImage : IDisposable
{
    readonly Process _process;
    readonly TaskCompletionSource<bool> _mounted = new(TaskCreationOptions.RunContinuationsAsynchronously);
    readonly System.Text.StringBuilder _stdout = new(), _stderr = new();
    bool _ended;

    MountedImage(string image, string directory, Process process)
    {
        Image = image;
        Directory = directory;
        _process = process;
    }

    public string Image { get; }

    public string Directory { get; }

    public int Pid => _process.Id;

    public string Stdout
    {
        get { lock (_stdout) return _stdout.ToString(); }
    }

    public string Stderr
    {
        get { lock (_stderr) return _stderr.ToString(); }
    }

    /// <summary>Starts the mount and waits for its "mounted" line; throws with its output when it ends first.</summary>
    public static MountedImage Start(string image, string directory, params string[] options)
    {
        var result = StartRaw(image, directory, options);
        if (!result.WaitMounted(TimeSpan.FromSeconds(120)))
        {
            var (code, stdout, stderr) = result.WaitForExit(TimeSpan.FromSeconds(30));
            result.Dispose();
            throw new InvalidOperationException($"xfbtree mount did not mount: exit {code}\nstdout:\n{stdout}\nstderr:\n{stderr}");
        }
        return result;
    }

    /// <summary>Starts the command without waiting (refusal tests).</summary>
    public static MountedImage StartRaw(string image, string directory, params string[] options) => StartVia([], image, directory, options);

    /// <summary>
    /// Starts the command through <paramref name="launcher"/> (for example setpriv and its options, to run it as
    /// another user) without waiting.
    /// </summary>
    public static MountedImage StartVia(string[] launcher, string image, string directory, params string[] options)
    {
        string dll = Path.Combine(AppContext.BaseDirectory, "xfbtree.dll");
        if (!File.Exists(dll)) throw new FileNotFoundException("xfbtree.dll is not next to the tests; build the solution", dll);
        var psi = new ProcessStartInfo(launcher.Length > 0 ? launcher[0] : "dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (string a in launcher.Skip(1).Concat(launcher.Length > 0 ? ["dotnet"] : []).Concat([dll, "mount", image, directory]).Concat(options)) psi.ArgumentList.Add(a);
        // Every commit of the mount checks that its buffers changed only inside the ranges it logged (the journal
        // holds only those): a change outside them fails the request, and so the test. Every write to the image is
        // checked against the write-ahead rule (its sectors' journal records durable first) the same way.
        psi.Environment["XFBTREE_CHECK_LOGGED_RANGES"] = "1";
        psi.Environment["XFBTREE_CHECK_WRITE_AHEAD"] = "1";
        var process = new Process { StartInfo = psi };
        var mounted = new MountedImage(image, directory, process);
        string expected = $"mounted {image} on {directory}";
        process.OutputDataReceived += (_, e) =>
        {
            if (e.Data is null)
            {
                mounted._mounted.TrySetResult(false);
                return;
            }
            lock (mounted._stdout) mounted._stdout.AppendLine(e.Data);
            if (e.Data == expected) mounted._mounted.TrySetResult(true);
        };
        process.ErrorDataReceived += (_, e) =>
        {
            if (e.Data is null) return;
            lock (mounted._stderr)
            {
                mounted._stderr.AppendLine(e.Data);
                Monitor.PulseAll(mounted._stderr);
            }
        };
        ChildProcesses.Start(process);
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        return mounted;
    }

    /// <summary>True once the "mounted" line came; false when the process ended (or the time ran out) first.</summary>
    public bool WaitMounted(TimeSpan timeout) => _mounted.Task.Wait(timeout) && _mounted.Task.Result;

    /// <summary>Waits until the server's log has <paramref name="count"/> lines containing <paramref name="text"/>.</summary>
    public bool WaitForLog(string text, int count, TimeSpan timeout)
    {
        var deadline = DateTime.UtcNow + timeout;
        lock (_stderr)
        {
            while (Count(_stderr.ToString(), text) < count)
            {
                var left = deadline - DateTime.UtcNow;
                if (left <= TimeSpan.Zero || _process.HasExited) return Count(_stderr.ToString(), text) >= count;
                Monitor.Wait(_stderr, left < TimeSpan.FromSeconds(1) ? left : TimeSpan.FromSeconds(1));
            }
            return true;
        }
    }

    internal static int Count(string haystack, string needle)
    {
        int n = 0;
        for (int at = haystack.IndexOf(needle, StringComparison.Ordinal); at >= 0; at = haystack.IndexOf(needle, at + needle.Length, StringComparison.Ordinal)) n++;
        return n;
    }

    /// <summary>umount DIR, then the server's exit code and output.</summary>
    public (int ExitCode, string Stdout, string Stderr) Unmount()
    {
        var r = RepairTools.Exec("/bin/umount", [Directory]);
        if (r.ExitCode != 0) throw new InvalidOperationException($"umount {Directory}: {r}");
        return WaitForExit(TimeSpan.FromSeconds(120));
    }

    public (int ExitCode, string Stdout, string Stderr) WaitForExit(TimeSpan timeout)
    {
        if (!_process.WaitForExit(timeout))
        {
            throw new TimeoutException($"xfbtree mount did not end within {timeout.TotalSeconds} s\nstdout:\n{Stdout}\nstderr:\n{Stderr}");
        }
        _process.WaitForExit(); // the output readers are done too
        _ended = true;
        return (_process.ExitCode, Stdout, Stderr);
    }

    /// <summary>SIGKILL, then umount DIR (the kernel shows the mount as disconnected until then).</summary>
    public void KillAndUnmount()
    {
        Kill();
        UnmountAfterKill();
    }

    /// <summary>SIGKILL of the server; the mount stays, disconnected, until <see cref="UnmountAfterKill"/>.</summary>
    public void Kill()
    {
        _process.Kill();
        _process.WaitForExit();
        _ended = true;
    }

    /// <summary>umount DIR after <see cref="Kill"/> (the programs that had files open there must have ended).</summary>
    public void UnmountAfterKill()
    {
        var r = RepairTools.Exec("/bin/umount", [Directory]);
        if (r.ExitCode != 0) throw new InvalidOperationException($"umount {Directory} after the kill: {r}");
    }

    public void Signal(int signal)
    {
        if (Tmds.Linux.LibC.kill(_process.Id, signal) != 0)
            throw new InvalidOperationException($"kill({_process.Id}, {signal}) failed: errno {Tmds.Linux.LibC.errno}");
    }

    public void Dispose()
    {
        if (!_ended)
        {
            RepairTools.Exec("/bin/umount", ["-l", Directory]);
            if (!_process.WaitForExit(30_000)) _process.Kill();
            _process.WaitForExit();
        }
        else if (File.ReadAllText("/proc/self/mounts").Contains($" {Directory} ", StringComparison.Ordinal))
        {
            RepairTools.Exec("/bin/umount", ["-l", Directory]);
        }
        _process.Dispose();
    }
}

/// <summary>The outside witnesses after an unmount: xfs_repair -n, xfbtree rmap check, the kernel reading the tree.</summary>
internal static class MountWitnesses
{
    public static void AssertClean(string image)
    {
        var repair = RepairTools.XfsRepairCheck(image);
        Assert.True(repair.ExitCode == 0, $"xfs_repair -n: {repair}");
        var check = RepairTools.Xfbtree("rmap", "check", image);
        if (Write.WriteEngineTestSupport.HasRmapbt(image))
            Assert.True(check.ExitCode == 0, $"xfbtree rmap check: {check}");
        else   // nothing to check; the scrub's scan holds every block in use against the free-space trees
            Assert.True(check.ExitCode == 2 && check.Stderr.Contains("no reverse-mapping btree", StringComparison.Ordinal), $"xfbtree rmap check without an rmapbt: {check}");
        var scrub = RepairTools.Xfbtree("scrub", image, "--no-progress");
        Assert.True(scrub.ExitCode == 0, $"xfbtree scrub: {scrub}");
    }

    /// <summary>Mounts <paramref name="image"/> with the kernel (read-only unless asked, loop, nouuid) and runs
    /// <paramref name="body"/> on it.</summary>
    public static void WithKernelMount(RepairScratch scratch, string image, Action<string> body, bool readOnly = true)
    {
        string mnt = System.IO.Directory.CreateDirectory(Path.Combine(scratch.Directory, "kernel-mnt")).FullName;
        TreeFixtures.Run("/bin/mount", ["-o", readOnly ? "loop,ro,nouuid" : "loop,nouuid", image, mnt]);
        try
        {
            body(mnt);
        }
        finally
        {
            TreeFixtures.Run("/bin/umount", [mnt]);
        }
    }

    /// <summary>diff -r of two trees: exit 0 or the difference in the message.</summary>
    public static void AssertSameTree(string expected, string actual)
    {
        var diff = RepairTools.Exec("/usr/bin/diff", ["-r", expected, actual]);
        Assert.True(diff.ExitCode == 0, $"diff -r {expected} {actual}: {diff}");
    }
}
