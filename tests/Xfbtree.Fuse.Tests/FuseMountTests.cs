using System.Diagnostics;

namespace Xfbtree.Fuse.Tests;

/// <summary>A fact that needs root and /dev/fuse: reported skipped, with the reason, where they are missing.</summary>
public sealed class FuseFactAttribute : FactAttribute
{
    public FuseFactAttribute()
    {
        if (WhyNot() is { } reason) Skip = reason;
    }

    public static string? WhyNot()
    {
        if (!OperatingSystem.IsLinux()) return "FUSE tests need Linux";
        if (!File.Exists("/dev/fuse")) return "no /dev/fuse on this machine: the FUSE mount tests cannot run";
        if (Environment.UserName != "root") return "the FUSE mount tests mount with mount(2) and need root";
        return null;
    }
}

/// <summary>The protocol layer against the real kernel: mount the in-memory file system, use it, unmount.</summary>
public sealed class FuseMountTests
{
    [FuseFact]
    public void MemoryFileSystem_MountsServesAndEndsAtUnmount()
    {
        string dir = Directory.CreateTempSubdirectory("xfbtree-fuse-").FullName;
        var fs = new MemoryFileSystem();
        var server = new FuseServer(fs, new FuseServerOptions { Threads = 2 });
        using var initialized = new ManualResetEventSlim();
        Exception? serverFailure = null;
        FuseSession? session = null;
        Thread? thread = null;
        try
        {
            session = FuseSession.Mount(dir, new FuseMountOptions { Source = "memory" });
            var mounted = session;
            thread = new Thread(() =>
            {
                try { server.Run(mounted, initialized.Set); }
                catch (Exception ex) { serverFailure = ex; initialized.Set(); }
            }) { IsBackground = true };
            thread.Start();
            Assert.True(initialized.Wait(TimeSpan.FromSeconds(30)), "INIT was not answered");
            Assert.Null(serverFailure);

            Assert.Equal(["hello"], Directory.GetFileSystemEntries(dir).Select(Path.GetFileName));
            string file = Path.Combine(dir, "hello");
            Assert.Equal("hello, fuse\n", File.ReadAllText(file));
            using (var stream = new FileStream(file, FileMode.Open, FileAccess.Write))
            {
                stream.Position = 7;
                stream.Write("kernel\n"u8);
            }
            Assert.Equal("hello, kernel\n", File.ReadAllText(file));
            Assert.Equal(14, new FileInfo(file).Length);
            Assert.False(File.Exists(Path.Combine(dir, "absent")));
            var drive = new DriveInfo(dir);
            Assert.Equal(512L * 4096, drive.AvailableFreeSpace);
            string mounts = File.ReadAllText("/proc/self/mounts");
            Assert.Contains($"memory {dir} fuse.xfbtree", mounts, StringComparison.Ordinal);
        }
        finally
        {
            session?.Unmount();
            if (thread is not null) Assert.True(thread.Join(TimeSpan.FromSeconds(30)), "the server did not end after the unmount");
            session?.Dispose();
            Directory.Delete(dir);
        }
        Assert.Null(serverFailure);
        Assert.Equal(0, server.DeviceFailure);
        Assert.Equal(1, fs.Destroyed);
        Assert.True(server.RequestsServed > 5);
    }

    [FuseFact]
    public void SessionEndedByUmount_DoesNotDetachWhatIsMountedThereNext()
    {
        string dir = Directory.CreateTempSubdirectory("xfbtree-fuse-").FullName;
        var server = new FuseServer(new MemoryFileSystem(), new FuseServerOptions { Threads = 1 });
        using var initialized = new ManualResetEventSlim();
        var session = FuseSession.Mount(dir, new FuseMountOptions { Source = "memory" });
        bool tmpfsMounted = false;
        try
        {
            var thread = new Thread(() => server.Run(session, initialized.Set)) { IsBackground = true };
            thread.Start();
            Assert.True(initialized.Wait(TimeSpan.FromSeconds(30)), "INIT was not answered");
            Assert.Equal(0, Exec("/bin/umount", dir)); // the user unmounts
            Assert.True(thread.Join(TimeSpan.FromSeconds(30)), "the server did not end after the unmount");
            // Someone mounts something else on the directory before the server's cleanup runs.
            Assert.Equal(0, Exec("/bin/mount", "-t", "tmpfs", "xfbtree-test-tmpfs", dir));
            tmpfsMounted = true;
            session.Dispose();
            Assert.Contains($"xfbtree-test-tmpfs {dir} tmpfs", File.ReadAllText("/proc/self/mounts"), StringComparison.Ordinal);
        }
        finally
        {
            session.Dispose();
            if (tmpfsMounted) Exec("/bin/umount", dir);
            Directory.Delete(dir);
        }
    }

    static int Exec(string file, params string[] args)
    {
        var psi = new ProcessStartInfo(file) { UseShellExecute = false, RedirectStandardError = true };
        foreach (string a in args) psi.ArgumentList.Add(a);
        using var p = Process.Start(psi)!;
        p.StandardError.ReadToEnd();
        p.WaitForExit();
        return p.ExitCode;
    }

    [FuseFact]
    public void Mount_OnAMissingDirectory_IsRefusedWithOneLine()
    {
        var ex = Assert.Throws<FuseMountException>(() => FuseSession.Mount("/nonexistent/xfbtree-mnt", new FuseMountOptions { Source = "x" }));
        Assert.Contains("is not a directory", ex.Message, StringComparison.Ordinal);
    }
}
