using System.CommandLine;
using System.Globalization;
using System.Runtime.InteropServices;
using System.Runtime.Versioning;
using Xfbtree.Cli.Mount;
using Xfbtree.Fuse;
using Xfbtree.Native;
using Xfbtree.Xfs.Online;
using Xfbtree.Xfs.Write;
using Xfbtree.Xfs.Write.Engine;

namespace Xfbtree.Cli;

/// <summary>
/// <c>xfbtree mount IMAGE DIR [--threads N] [--sync] [--allow-other] [--read-only] [--write-through | --writeback-cache] [--noatime] [--online-repair-every SECONDS] [--repair-cpu-share SHARE]</c>:
/// serves the image through FUSE until <c>umount DIR</c>, SIGINT or SIGTERM, then closes it cleanly. Prints
/// <c>mounted IMAGE on DIR</c> once the kernel accepted the mount. Exit 0 after a clean close, 1 when the close
/// failed, 2 when the mount was refused (one line saying why).
/// </summary>
[SupportedOSPlatform("linux")]
internal static class MountCommand
{
    public static Command Create(CommandEnvironment environment)
    {
        ArgumentNullException.ThrowIfNull(environment);
        var image = new Argument<string>("IMAGE") { Description = "The XFS v5 image file (unmounted, clean log); it is changed." };
        var dir = new Argument<string>("DIR") { Description = "An empty directory to mount on." };
        var threads = new Option<int>("--threads") { Description = "Worker threads serving requests.", HelpName = "N", DefaultValueFactory = _ => Math.Clamp(Environment.ProcessorCount, 2, 8) };
        var sync = new Option<bool>("--sync") { Description = "Every operation is durable when it returns (the journal is fsynced at each commit, commits in flight share fsyncs)." };
        var allowOther = new Option<bool>("--allow-other") { Description = "Other users may use the mount; the kernel checks permissions (default_permissions)." };
        var readOnly = new Option<bool>("--read-only") { Description = "Mount read-only." };
        var writeback = new Option<bool>("--writeback-cache") { Description = "Use the kernel's writeback cache (faster on small files and small writes): a write error (no space, corruption) then shows at close or fsync instead of at write(2), and a program that fills the image may never see one from write(2). Declined (write-through, with a log line) with --sync, --read-only, or an image whose free space at mount is under twice the kernel's dirty limit for the mount." };
        var writeThrough = new Option<bool>("--write-through") { Description = "The default: every write(2) reaches the server before it returns (no writeback cache), so a write error (no space, corruption) shows at the write itself, as on the kernel's XFS." };
        var noAtime = new Option<bool>("--noatime") { Description = "Reads never change access times (default: relatime, as the kernel mounts: a read sets atime when it is not newer than mtime or ctime, or is a day old)." };
        var repairEvery = new Option<double?>("--online-repair-every") { Description = "Rebuild the rmap btree of one AG after another, online, every SECONDS while requests are served.", HelpName = "SECONDS" };
        var cpuShare = new Option<double>("--repair-cpu-share") { Description = "The share of one CPU the mount's online repairs and scrubs (the rotation's, and those asked by 'xfbtree scrub DIR' and 'xfbtree rmap repair --online DIR') may use while requests are served: more than 0, at most 1 (not paced).", HelpName = "SHARE", DefaultValueFactory = _ => MountRequest.DefaultRepairCpuShare };
        var command = new Command("mount", "Serves an XFS image as a file system (FUSE) until umount DIR, SIGINT or SIGTERM; " +
                                           "prints 'mounted IMAGE on DIR' when usable. Exit 0 clean close, 1 close failed, 2 refused.")
        {
            image, dir, threads, sync, allowOther, readOnly, writeback, writeThrough, noAtime, repairEvery, cpuShare,
        };
        command.SetAction(p => Execute(new MountRequest
        {
            Image = p.GetRequiredValue(image),
            Directory = p.GetRequiredValue(dir),
            Threads = p.GetValue(threads),
            Sync = p.GetValue(sync),
            AllowOther = p.GetValue(allowOther),
            ReadOnly = p.GetValue(readOnly),
            WritebackCache = p.GetValue(writeback),
            WriteThrough = p.GetValue(writeThrough),
            NoAtime = p.GetValue(noAtime),
            OnlineRepairEvery = p.GetValue(repairEvery) is { } s ? TimeSpan.FromSeconds(s) : null,
            RepairCpuShare = p.GetValue(cpuShare),
        }, environment));
        return command;
    }

    /// <summary>Mounts, serves until the kernel ends the session, closes; the exit code.</summary>
    public static int Execute(MountRequest request, CommandEnvironment environment)
    {
        ArgumentNullException.ThrowIfNull(request);
        ArgumentNullException.ThrowIfNull(environment);
        var stderr = environment.Stderr;
        string? refusal = request switch
        {
            { Threads: < 1 or > 64 } => $"--threads {request.Threads}: must be 1..64",
            { WritebackCache: true, WriteThrough: true } => "--writeback-cache and --write-through exclude each other",
            { OnlineRepairEvery: { } t } when t <= TimeSpan.Zero || t > TimeSpan.FromDays(1) => "--online-repair-every: must be more than 0 seconds and at most a day",
            _ when RmapCommand.CpuShareRefusal(request.RepairCpuShare, "--repair-cpu-share") is { } bad => bad,
            _ => null,
        };
        if (refusal is null)
        {
            if (!Directory.Exists(request.Directory)) refusal = $"{request.Directory}: not a directory";
            else if (Directory.EnumerateFileSystemEntries(request.Directory).Any()) refusal = $"{request.Directory}: not an empty directory";
            else if (!File.Exists("/dev/fuse")) refusal = "no /dev/fuse: this kernel has no FUSE device (load the module: modprobe fuse)";
        }
        if (refusal is not null)
        {
            stderr.WriteLine($"xfbtree: mount: {refusal}");
            return CommandLineHost.ExitUnusable;
        }

        XfsFileSystem fs;
        try
        {
            fs = XfsFileSystem.Open(request.Image, new WriteEngineOptions
            {
                SyncCommits = request.Sync,
                // relatime as the kernel's default mount; a read-only mount never writes access times.
                AccessTimes = request.NoAtime || request.ReadOnly ? AccessTimeUpdates.None : AccessTimeUpdates.Relatime,
            });
        }
        catch (Exception e) when (e is XfsWriteException or IOException or UnauthorizedAccessException)
        {
            stderr.WriteLine($"xfbtree: mount: {CommandLineHost.AboutImage(request.Image, e.Message).ReplaceLineEndings(" ")}");
            return CommandLineHost.ExitUnusable;
        }

        var log = new Action<string>(line => { lock (stderr) { stderr.WriteLine(line); stderr.Flush(); } });
        using var repairs = new MountRepairs(fs.Engine, request.OnlineRepairEvery, log, request.Directory, request.RepairCpuShare);
        uint owner = Tmds.Linux.LibC.geteuid(); // the mount's owner: root with mount(2), the user through fusermount3
        var control = new MountControlServer(repairs, request.Image, owner, request.ReadOnly, log);
        var adapter = new XfsFuseFileSystem(fs, request.ReadOnly, log) { Control = control };
        FuseSession session;
        try
        {
            session = FuseSession.Mount(request.Directory, new FuseMountOptions
            {
                Source = Path.GetFullPath(request.Image),
                AllowOther = request.AllowOther,
                ReadOnly = request.ReadOnly,
                RootMode = adapter.RootMode,
            });
        }
        catch (FuseMountException e)
        {
            fs.Close();
            fs.Dispose();
            stderr.WriteLine($"xfbtree: mount: {e.Message}");
            return CommandLineHost.ExitUnusable;
        }

        repairs.KernelCachesStale = () =>
        {
            int e = adapter.InvalidateKernelCaches(session.InvalidateAttributes, session.InvalidateAllNames);
            if (e != 0)
                log($"xfbtree: mount: the kernel could not be told to look its cached names up again ({NativeErrors.Describe(e)}): names an online repair moved may show as before for up to an hour");
        };
        string? writeThroughBecause = WriteThroughReason(request, adapter.FreeBytes, session.DirtyLimitBytes() ?? KernelDirtyThresholdBytes());
        if (writeThroughBecause is not null && request.WritebackCache)
            log($"xfbtree: mount: writeback cache off, every write(2) goes to the image before it returns: {writeThroughBecause}");
        var server = new FuseServer(adapter, new FuseServerOptions
        {
            Threads = request.Threads,
            Log = log,
            KillPrivileges = true,
            ZeroMessageOpenDir = true, // OpenDir only checks the node is a directory; ReadDir needs no handle
            WritebackCache = writeThroughBecause is null,
        });
        JournalFlusher? flusher = null;
        void Unmount(PosixSignalContext context)
        {
            context.Cancel = true; // end through the unmount: the server then sees ENODEV and closes cleanly
            session.Unmount();
        }
        using var sigint = PosixSignalRegistration.Create(PosixSignal.SIGINT, Unmount);
        using var sigterm = PosixSignalRegistration.Create(PosixSignal.SIGTERM, Unmount);
        bool serverFailed = false;
        try
        {
            server.Run(session, () =>
            {
                // Sequential reads as READ requests of up to max_write instead of the bdi's default 128 KiB window
                // (root only: a user mount keeps the default, which works the same, in smaller requests).
                if (owner == 0 && session.SetReadahead(server.Options.MaxWrite / 1024) is { } why)
                    log($"xfbtree: mount: readahead stays at the kernel's default: {why}");
                environment.Stdout.WriteLine($"mounted {request.Image} on {request.Directory}");
                environment.Stdout.Flush();
                // Without --sync: committed operations durable within JournalFlusher.Interval (plus one fsync).
                if (!request.Sync) flusher = new JournalFlusher(fs.Engine, TimeProvider.System, line => log($"xfbtree: mount: {line}"));
                repairs.Start();
            });
        }
        catch (Exception e) when (e is IOException or InvalidOperationException or ObjectDisposedException)
        {
            // The session failed; the image is still closed cleanly below.
            serverFailed = true;
            log($"xfbtree: mount: serving {request.Directory} failed: {e.Message}");
        }
        finally
        {
            repairs.Stop();
            flusher?.Dispose(); // waits for a tick in progress
            session.Dispose();
        }
        repairs.WriteReport(environment.Stdout);
        try
        {
            fs.Close();
        }
        catch (Exception e) when (e is XfsWriteException or IOException)
        {
            stderr.WriteLine($"xfbtree: mount: {request.Image}: close failed: {e.Message}");
            fs.Dispose();
            return CommandLineHost.ExitDamaged;
        }
        fs.Dispose();
        if (serverFailed) return CommandLineHost.ExitDamaged;
        if (server.DeviceFailure != 0)
        {
            stderr.WriteLine($"xfbtree: mount: the FUSE device failed: {Xfbtree.Native.NativeErrors.Describe(server.DeviceFailure)}");
            return CommandLineHost.ExitDamaged;
        }
        environment.Stdout.Flush();
        return CommandLineHost.ExitClean;
    }

    /// <summary>
    /// Null when the mount uses the kernel's writeback cache, otherwise why not. Write-through is the default: with
    /// the cache write(2) returns once the bytes are in the page cache, so a write's errors move to the file's close
    /// or fsync (as NFS does), and on a full image write(2) keeps succeeding while writeback fails (an unbounded
    /// writer such as dd never ends, sizes grow past the data kept). Only --writeback-cache asks for it, and even
    /// then it is declined where a promise would break or running out of space is likely: --sync (every write(2)
    /// durable when it returns), --read-only, and an image whose free space at mount is under twice what the
    /// kernel may hold dirty for this mount (<paramref name="dirtyLimitBytes"/>: its dirty pages plus as many
    /// again under writeback).
    /// </summary>
    internal static string? WriteThroughReason(MountRequest request, ulong freeBytes, long dirtyLimitBytes)
    {
        if (request.ReadOnly) return "--read-only";
        if (request.Sync) return "--sync";
        if (request.WriteThrough) return "--write-through";
        if (!request.WritebackCache) return "the default (--writeback-cache asks for the cache)";
        ulong bound = 2 * (ulong)Math.Max(0, dirtyLimitBytes);
        return freeBytes < bound
            ? $"{freeBytes >> 20} MiB free, under the {bound >> 20} MiB the kernel may hold dirty for this mount (twice its dirty limit)"
            : null;
    }

    /// <summary>
    /// The kernel's global dirty threshold (vm.dirty_bytes, else vm.dirty_ratio of MemTotal): an upper bound of any one
    /// mount's dirty data, for a kernel whose bdi does not show its own limit. 1 GiB when neither can be read.
    /// </summary>
    static long KernelDirtyThresholdBytes()
    {
        try
        {
            long bytes = long.Parse(File.ReadAllText("/proc/sys/vm/dirty_bytes").Trim(), CultureInfo.InvariantCulture);
            if (bytes > 0) return bytes;
            long ratio = long.Parse(File.ReadAllText("/proc/sys/vm/dirty_ratio").Trim(), CultureInfo.InvariantCulture);
            foreach (string line in File.ReadLines("/proc/meminfo"))
            {
                // "MemTotal:       24683772 kB"
                if (!line.StartsWith("MemTotal:", StringComparison.Ordinal)) continue;
                long kib = long.Parse(line.AsSpan(9).Trim().TrimEnd("kB").Trim(), CultureInfo.InvariantCulture);
                return kib * 1024 / 100 * ratio;
            }
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or FormatException or OverflowException)
        {
        }
        return 1L << 30;
    }
}

/// <summary>One parsed <c>xfbtree mount</c> command line.</summary>
internal sealed class MountRequest
{
    public required string Image { get; init; }
    public required string Directory { get; init; }
    public int Threads { get; init; } = 2;
    public bool Sync { get; init; }
    public bool AllowOther { get; init; }
    public bool ReadOnly { get; init; }
    /// <summary>--writeback-cache: the kernel's writeback cache, unless --sync, --read-only or a nearly full image declines it.</summary>
    public bool WritebackCache { get; init; }
    /// <summary>--write-through: no writeback cache (the default; accepted to say so).</summary>
    public bool WriteThrough { get; init; }
    public bool NoAtime { get; init; }
    public TimeSpan? OnlineRepairEvery { get; init; }

    /// <summary>The default pace of the mount's repairs and scrubs: docs/mount.md says how it was chosen.</summary>
    public const double DefaultRepairCpuShare = 0.25;

    public double RepairCpuShare { get; init; } = DefaultRepairCpuShare;
}
