using System.Diagnostics;
using Xfbtree.Cli;
using Xfbtree.Xfs.Tests.Repair;
using Xfbtree.Xfs.Tests.Trees;
using Xunit.Abstractions;

namespace Xfbtree.Xfs.Tests.Mount;

/// <summary>
/// `xfbtree mount` end to end: real programs and system calls on the mounted image, the rmap btrees rebuilt online
/// meanwhile, then unmount and the outside witnesses (xfs_repair -n, rmap check, the kernel reading the same tree).
/// </summary>
public sealed class MountTests(ITestOutputHelper output)
{
    const string OnlineRepairLine = "online repair: AG";

    [FuseFact]
    public void RealProgramsAndSystemCalls_WithOnlineRepair_LeaveACleanImageTheKernelReads()
    {
        using var scratch = new RepairScratch();
        string image = scratch.CopyFixture("fresh-4ag");
        string source = MakeSourceTree(Path.Combine(scratch.Directory, "source"), seed: 7);
        string mnt = Directory.CreateDirectory(Path.Combine(scratch.Directory, "mnt")).FullName;
        using var mount = MountedImage.Start(image, mnt, "--online-repair-every", "0.2", "--threads", "3");

        // Real programs: cp -r, tar (owners, modes and times kept; tar --compare checks them), git, sqlite3.
        Run("/bin/cp", "-r", source, Path.Combine(mnt, "copy"));
        MountWitnesses.AssertSameTree(source, Path.Combine(mnt, "copy"));
        string archive = Path.Combine(scratch.Directory, "source.tar");
        Run("/bin/tar", "cf", archive, "-C", scratch.Directory, "source");
        Directory.CreateDirectory(Path.Combine(mnt, "untar"));
        Run("/bin/tar", "xf", archive, "-C", Path.Combine(mnt, "untar"));
        Run("/bin/tar", "df", archive, "-C", Path.Combine(mnt, "untar"));
        MountWitnesses.AssertSameTree(source, Path.Combine(mnt, "untar", "source"));
        if (File.Exists("/usr/bin/git"))
        {
            string repo = Path.Combine(mnt, "repo");
            Run("/usr/bin/git", "init", "-q", repo);
            for (int i = 0; i < 5; i++)
            {
                File.WriteAllText(Path.Combine(repo, $"f{i}"), $"content {i}\n");
                Run("/usr/bin/git", "-C", repo, "add", $"f{i}");
                Run("/usr/bin/git", "-C", repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", $"commit {i}");
            }
            File.Move(Path.Combine(repo, "f0"), Path.Combine(repo, "moved"));
            Run("/usr/bin/git", "-C", repo, "add", "-A");
            Run("/usr/bin/git", "-C", repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "rename");
            Run("/usr/bin/git", "-C", repo, "gc", "-q");
            Run("/usr/bin/git", "-C", repo, "fsck", "--strict");
            Assert.Equal("6\n", Run("/usr/bin/git", "-C", repo, "rev-list", "--count", "HEAD"));
        }
        else
        {
            output.WriteLine("git is not installed: the repository part did not run");
        }
        if (File.Exists("/usr/bin/sqlite3"))
        {
            string sql = "create table t(a integer primary key, b text);" + string.Concat(Enumerable.Range(0, 20).Select(i =>
                "begin;" + string.Concat(Enumerable.Range(0, 50).Select(j => $"insert into t(b) values('row {i} {j} {new string('x', j * 7)}');")) + "commit;"))
                + "select count(*) from t; pragma integrity_check;";
            string script = Path.Combine(scratch.Directory, "load.sql");
            File.WriteAllText(script, sql);
            string result = Run("/usr/bin/sqlite3", Path.Combine(mnt, "db.sqlite"), $".read {script}");
            Assert.Equal("1000\nok\n", result);
        }
        else
        {
            output.WriteLine("sqlite3 is not installed: the database part did not run");
        }

        // System calls from here: overwrite inside, extend with a hole, truncate, fsync, unlink, rmdir, statfs.
        string file = Path.Combine(mnt, "sys.bin");
        byte[] model = RandomBytes(3, 200_000);
        File.WriteAllBytes(file, model);
        using (var stream = new FileStream(file, FileMode.Open, FileAccess.ReadWrite))
        {
            byte[] patch = RandomBytes(4, 5_000);
            stream.Position = 12_345;
            stream.Write(patch);
            patch.CopyTo(model, 12_345);
            stream.Position = 400_000;
            stream.Write(patch);
            Array.Resize(ref model, 405_000);
            patch.CopyTo(model, 400_000);
            stream.SetLength(300_000);
            Array.Resize(ref model, 300_000);
            stream.Flush(flushToDisk: true);
        }
        Assert.Equal(model, File.ReadAllBytes(file));
        Directory.CreateDirectory(Path.Combine(mnt, "gone", "deeper"));
        File.WriteAllText(Path.Combine(mnt, "gone", "deeper", "f"), "x");
        Assert.Throws<IOException>(() => Directory.Delete(Path.Combine(mnt, "gone"), recursive: false));
        Directory.Delete(Path.Combine(mnt, "gone"), recursive: true);
        Assert.False(Directory.Exists(Path.Combine(mnt, "gone")));
        // An open file outlives its last name (held on the AGI unlinked list until the close), and a directory
        // grows past one block (leaf and node formats).
        string doomed = Path.Combine(mnt, "doomed");
        using (var stream = new FileStream(doomed, FileMode.CreateNew, FileAccess.ReadWrite))
        {
            stream.Write(RandomBytes(9, 100_000));
            File.Delete(doomed);
            Assert.False(File.Exists(doomed));
            stream.Position = 50_000;
            stream.Write(RandomBytes(10, 1000));
            stream.Position = 0;
            byte[] back = new byte[100_000];
            stream.ReadExactly(back);
            byte[] expected = RandomBytes(9, 100_000);
            RandomBytes(10, 1000).CopyTo(expected, 50_000);
            Assert.Equal(expected, back);
        }
        string wide = Directory.CreateDirectory(Path.Combine(mnt, "wide")).FullName;
        for (int i = 0; i < 600; i++) File.WriteAllText(Path.Combine(wide, $"entry-with-a-longish-name-{i:D4}"), i.ToString(System.Globalization.CultureInfo.InvariantCulture));
        Assert.Equal(600, Directory.GetFiles(wide).Length);
        for (int i = 0; i < 600; i += 3) File.Delete(Path.Combine(wide, $"entry-with-a-longish-name-{i:D4}"));
        Assert.Equal(400, Directory.GetFiles(wide).Length);

        // Links, special files and extended attributes.
        File.CreateSymbolicLink(Path.Combine(mnt, "link"), "sys.bin");
        Assert.Equal(model, File.ReadAllBytes(Path.Combine(mnt, "link")));
        Run("/bin/ln", Path.Combine(mnt, "sys.bin"), Path.Combine(mnt, "hard"));
        Assert.Equal("2\n", Run("/usr/bin/stat", "-c", "%h", Path.Combine(mnt, "hard")));
        Run("/usr/bin/mkfifo", Path.Combine(mnt, "fifo"));
        Run("/usr/bin/touch", "-d", "2001-02-03 04:05:06.123456789", Path.Combine(mnt, "hard"));
        Run("/bin/chmod", "640", Path.Combine(mnt, "hard"));
        Assert.Equal("2001-02-03 04:05:06.123456789 +0000 640\n", Run("/usr/bin/stat", "-c", "%y %a", Path.Combine(mnt, "sys.bin")));
        if (File.Exists("/usr/bin/setfattr"))
        {
            Run("/usr/bin/setfattr", "-n", "user.colour", "-v", "blue", Path.Combine(mnt, "sys.bin"));
            Assert.Equal("blue", Run("/usr/bin/getfattr", "--only-values", "-n", "user.colour", Path.Combine(mnt, "sys.bin")));
        }
        var drive = new DriveInfo(mnt);
        Assert.True(drive.TotalSize > 400L << 20 && drive.AvailableFreeSpace > 0 && drive.AvailableFreeSpace < drive.TotalSize);

        // At least two AGs rebuilt online while this was served.
        Assert.True(mount.WaitForLog(OnlineRepairLine, 2, TimeSpan.FromMinutes(2)), $"no online repair finished:\n{mount.Stderr}");
        var (code, stdout, stderr) = mount.Unmount();
        Assert.True(code == 0, $"exit {code}\n{stdout}\n{stderr}");
        Assert.Matches(@"online-repair repairs=([1-9]\d*) applied=\d+ ignored=\d+ failed=0", stdout);
        output.WriteLine(stdout.Trim());

        MountWitnesses.AssertClean(image);
        MountWitnesses.WithKernelMount(scratch, image, kernel =>
        {
            MountWitnesses.AssertSameTree(source, Path.Combine(kernel, "copy"));
            MountWitnesses.AssertSameTree(source, Path.Combine(kernel, "untar", "source"));
            Run("/bin/tar", "df", archive, "-C", Path.Combine(kernel, "untar"));
            if (File.Exists("/usr/bin/git")) Run("/usr/bin/git", "-C", Path.Combine(kernel, "repo"), "fsck", "--strict");
            Assert.Equal(model, File.ReadAllBytes(Path.Combine(kernel, "sys.bin")));
            Assert.Equal(model, File.ReadAllBytes(Path.Combine(kernel, "link")));
            Assert.Equal("2 640 fifo\n", Run("/usr/bin/stat", "-c", "%h %a", Path.Combine(kernel, "hard")).TrimEnd() + " " + Run("/usr/bin/stat", "-c", "%F", Path.Combine(kernel, "fifo")));
            Assert.False(Directory.Exists(Path.Combine(kernel, "gone")));
            Assert.False(File.Exists(Path.Combine(kernel, "doomed")));
            Assert.Equal(400, Directory.GetFiles(Path.Combine(kernel, "wide")).Length);
            Assert.Equal("1", File.ReadAllText(Path.Combine(kernel, "wide", "entry-with-a-longish-name-0001")));
            if (File.Exists("/usr/bin/sqlite3")) Assert.Equal("1000\nok\n", Run("/usr/bin/sqlite3", "-readonly", Path.Combine(kernel, "db.sqlite"), "select count(*) from t; pragma integrity_check;"));
        });
    }

    [FuseFact]
    public void ModelBasedExerciser_ThreadsAndProcesses_AgreeWithTheKernelAfterwards()
    {
        using var scratch = new RepairScratch();
        string image = scratch.CopyFixture("fresh-4ag");
        string source = MakeSourceTree(Path.Combine(scratch.Directory, "source"), seed: 11);
        string mnt = Directory.CreateDirectory(Path.Combine(scratch.Directory, "mnt")).FullName;
        const int Threads = 3, OpsPerThread = 250;
        var models = new Dictionary<string, byte[]>[Threads];
        long checkedReads = 0;
        using (var mount = MountedImage.Start(image, mnt, "--online-repair-every", "0.3", "--threads", "4"))
        {
            // Two processes copy a tree while the threads run their random operations, each in its own directory.
            var copies = Enumerable.Range(0, 2).Select(i => ChildProcesses.Start(new ProcessStartInfo("/bin/cp", ["-r", source, Path.Combine(mnt, $"cp{i}")]))).ToArray();
            var workers = Enumerable.Range(0, Threads).Select(t => new Thread(() => models[t] = Exercise(mnt, t, OpsPerThread, ref checkedReads))).ToArray();
            foreach (var w in workers) w.Start();
            foreach (var w in workers) w.Join();
            foreach (var c in copies)
            {
                c.WaitForExit();
                Assert.Equal(0, c.ExitCode);
            }
            for (int i = 0; i < 2; i++) MountWitnesses.AssertSameTree(source, Path.Combine(mnt, $"cp{i}"));
            foreach (var model in models) AssertModel(mnt, model);
            Assert.True(mount.WaitForLog(OnlineRepairLine, 1, TimeSpan.FromMinutes(2)), $"no online repair finished:\n{mount.Stderr}");
            var (code, stdout, stderr) = mount.Unmount();
            Assert.True(code == 0, $"exit {code}\n{stdout}\n{stderr}");
        }
        output.WriteLine($"{Threads} threads x {OpsPerThread} operations, {checkedReads} reads checked against the model, {models.Sum(m => m.Count)} files at the end");
        Assert.True(checkedReads > Threads * 20, $"only {checkedReads} reads were checked");
        MountWitnesses.AssertClean(image);
        MountWitnesses.WithKernelMount(scratch, image, kernel =>
        {
            foreach (var model in models) AssertModel(kernel, model);
            for (int i = 0; i < 2; i++) MountWitnesses.AssertSameTree(source, Path.Combine(kernel, $"cp{i}"));
        });
    }

    [FuseFact]
    public void KillMinus9_ThenUmount_TheNextMountReplaysTheJournalAndLosesNothingReplied()
    {
        using var scratch = new RepairScratch();
        string image = scratch.CopyFixture("fresh-4ag");
        string mnt = Directory.CreateDirectory(Path.Combine(scratch.Directory, "mnt")).FullName;
        var written = new List<(string Name, byte[] Bytes)>();
        using (var mount = MountedImage.Start(image, mnt))
        {
            Directory.CreateDirectory(Path.Combine(mnt, "d"));
            for (int i = 0; i < 40; i++)
            {
                byte[] bytes = RandomBytes(100 + i, 1000 + i * 3000);
                string name = Path.Combine("d", $"f{i}");
                using (var stream = new FileStream(Path.Combine(mnt, name), FileMode.CreateNew))
                {
                    stream.Write(bytes);
                    // Every fifth file fsynced; the others only replied to (a process kill keeps them too).
                    if (i % 5 == 0) stream.Flush(flushToDisk: true);
                }
                written.Add((name, bytes));
            }
            mount.KillAndUnmount();
        }
        // The image was left open: NEEDSREPAIR set and a journal beside it; the next mount replays it.
        Assert.True(File.Exists(image + ".xfbtree-journal"), "the killed server left no journal");
        using (var mount = MountedImage.Start(image, mnt))
        {
            foreach (var (name, bytes) in written) Assert.Equal(bytes, File.ReadAllBytes(Path.Combine(mnt, name)));
            var (code, stdout, stderr) = mount.Unmount();
            Assert.True(code == 0, $"exit {code}\n{stdout}\n{stderr}");
        }
        Assert.False(File.Exists(image + ".xfbtree-journal"), "a clean close removes the journal");
        MountWitnesses.AssertClean(image);
        MountWitnesses.WithKernelMount(scratch, image, kernel =>
        {
            foreach (var (name, bytes) in written) Assert.Equal(bytes, File.ReadAllBytes(Path.Combine(kernel, name)));
        });
    }

    [FuseFact]
    public void KillMinus9_DuringWrites_KeepsEveryRepliedFileAndTheImageClean()
    {
        // The suite kills twice; XFBTREE_LONG_TESTS=1 twenty times.
        int rounds = Environment.GetEnvironmentVariable("XFBTREE_LONG_TESTS") == "1" ? 20 : 2;
        using var scratch = new RepairScratch();
        string image = scratch.CopyFixture("fresh-4ag");
        string mnt = Directory.CreateDirectory(Path.Combine(scratch.Directory, "mnt")).FullName;
        var random = new Random(5);
        var done = new List<(string Name, byte[] Bytes)>();
        for (int round = 0; round < rounds; round++)
        {
            int killAfter = random.Next(5, 40);
            string? inFlight = null;
            byte[]? inFlightBytes = null;
            using (var mount = MountedImage.Start(image, mnt))
            {
                // Every file replied to before this round must have survived the previous kills.
                foreach (var (name, bytes) in done) Assert.Equal(bytes, File.ReadAllBytes(Path.Combine(mnt, name)));
                Directory.CreateDirectory(Path.Combine(mnt, $"r{round}"));
                using var enough = new SemaphoreSlim(0);
                var writer = new Thread(() =>
                {
                    for (int i = 0; ; i++)
                    {
                        string name = Path.Combine($"r{round}", $"f{i}");
                        byte[] bytes = RandomBytes(round * 1000 + i, 500 + i * 997 % 120_000);
                        lock (done) (inFlight, inFlightBytes) = (name, bytes);
                        // Written by cp, which checks close's result: with the writeback cache (--writeback-cache) the data
                        // reaches the server at close, and a close that failed means "not replied" (.NET's own
                        // FileStream ignores close's result, so File.WriteAllBytes would count a lost file as done).
                        string source = Path.Combine(scratch.Directory, "source.bin");
                        File.WriteAllBytes(source, bytes);
                        if (RepairTools.Exec("/bin/cp", [source, Path.Combine(mnt, name)]).ExitCode != 0)
                        {
                            return; // the server is gone
                        }
                        lock (done)
                        {
                            done.Add((name, bytes));
                            inFlight = null;
                        }
                        if (i + 1 == killAfter) enough.Release();
                    }
                });
                writer.Start();
                Assert.True(enough.Wait(TimeSpan.FromMinutes(2)), "the writer did not get going");
                mount.Kill(); // the writer is mid-write or between writes
                writer.Join(); // its cp fails on the dead connection and closes its file: only then is DIR not busy
                mount.UnmountAfterKill();
            }
            if (inFlight is not null)
            {
                // The write in flight at the kill is all there, or not there, or an empty file (created, not written).
                using var mount = MountedImage.Start(image, mnt);
                string path = Path.Combine(mnt, inFlight);
                if (File.Exists(path))
                {
                    byte[] found = File.ReadAllBytes(path);
                    Assert.True(found.Length == 0 || found.AsSpan().SequenceEqual(inFlightBytes), $"{inFlight}: {found.Length} bytes, neither empty nor the whole write");
                }
                mount.Unmount();
            }
        }
        using (var mount = MountedImage.Start(image, mnt))
        {
            foreach (var (name, bytes) in done) Assert.Equal(bytes, File.ReadAllBytes(Path.Combine(mnt, name)));
            var (code, stdout, stderr) = mount.Unmount();
            Assert.True(code == 0, $"exit {code}\n{stdout}\n{stderr}");
        }
        output.WriteLine($"{rounds} kills, {done.Count} replied files checked after each");
        MountWitnesses.AssertClean(image);
    }

    /// <summary>
    /// With the kernel's writeback cache (--writeback-cache), write(2) returns once the bytes are in the kernel's page
    /// cache: the size and times a program sees must still be the POSIX ones (an explicit utimens is not undone by
    /// the later writeback), and a kill -9 of the server must lose nothing an fsync returned for.
    /// </summary>
    [FuseFact]
    public void WritebackCache_SizesAndTimesHold_AndKillMinus9LosesNothingFsynced()
    {
        using var scratch = new RepairScratch();
        string image = scratch.CopyFixture("fresh-4ag");
        string mnt = Directory.CreateDirectory(Path.Combine(scratch.Directory, "mnt")).FullName;
        byte[] synced = RandomBytes(21, 100_000), unsynced = RandomBytes(22, 50_000), stamped = RandomBytes(23, 30_000);
        string dated = Path.Combine(mnt, "dated"), open = Path.Combine(mnt, "open");
        using (var mount = MountedImage.Start(image, mnt, "--writeback-cache"))
        {
            // Written, then stamped while its pages may still be dirty, then closed: the stamp stays.
            using (var stream = new FileStream(dated, FileMode.CreateNew, FileAccess.Write))
            {
                stream.Write(stamped);
                File.SetLastWriteTimeUtc(dated, new DateTime(2001, 2, 3, 4, 5, 6, DateTimeKind.Utc));
            }
            Assert.Equal("30000 981173106\n", Run("/usr/bin/stat", "-c", "%s %Y", dated));
            // Kept open across the kill: the fsynced first part must survive, the rest may or may not.
            var stream2 = new FileStream(open, FileMode.CreateNew, FileAccess.Write);
            stream2.Write(synced);
            stream2.Flush(flushToDisk: true);
            long before = new FileInfo(open).LastWriteTimeUtc.Ticks;
            stream2.Write(unsynced);
            stream2.Flush(flushToDisk: false);
            Assert.Equal(150_000L, new FileInfo(open).Length); // the size a program sees includes cached writes
            Assert.True(new FileInfo(open).LastWriteTimeUtc.Ticks >= before);
            mount.Signal(Tmds.Linux.LibC.SIGKILL);
            Assert.True(mount.WaitForExit(TimeSpan.FromSeconds(60)).ExitCode != 0);
            try
            {
                stream2.Dispose(); // the server is gone: the close fails, and the descriptor no longer holds the mount
            }
            catch (IOException)
            {
            }
            Run("/bin/umount", mnt);
        }
        using (var mount = MountedImage.Start(image, mnt))
        {
            byte[] found = File.ReadAllBytes(open);
            Assert.True(found.Length is 100_000 or 150_000, $"{found.Length} bytes after the kill");
            Assert.Equal(synced, found.AsSpan(0, 100_000).ToArray());
            if (found.Length == 150_000) Assert.Equal(unsynced, found.AsSpan(100_000).ToArray());
            Assert.Equal(stamped, File.ReadAllBytes(dated));
            Assert.Equal("30000 981173106\n", Run("/usr/bin/stat", "-c", "%s %Y", dated));
            var (code, stdout, stderr) = mount.Unmount();
            Assert.True(code == 0, $"exit {code}\n{stdout}\n{stderr}");
        }
        MountWitnesses.AssertClean(image);
        MountWitnesses.WithKernelMount(scratch, image, kernel =>
            Assert.Equal("30000 981173106\n", Run("/usr/bin/stat", "-c", "%s %Y", Path.Combine(kernel, "dated"))));
    }

    /// <summary>
    /// Fills the mount with fallocate (after creating the target, so its inode exists), then writes 16 MiB of
    /// data to the target: prints where the first error showed ("write:ENOSPC", "fsync:ENOSPC", "close:ENOSPC" or
    /// "none") and how many MiB the filler got. HOW is "close" (write then close) or "fsync" (write, fsync, close).
    /// </summary>
    const string FillThenWriteScript = """
        import errno, os, sys
        mnt, how = sys.argv[1], sys.argv[2]
        target = os.open(os.path.join(mnt, "target-" + how), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        filler = os.open(os.path.join(mnt, "filler-" + how), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        filled = 0
        for chunk in (16 << 20, 1 << 20, 64 << 10):
            while True:
                try:
                    os.posix_fallocate(filler, filled, chunk)
                except OSError as e:
                    if e.errno != errno.ENOSPC: raise
                    break
                filled += chunk
        os.close(filler)
        data = os.urandom(16 << 20)
        first = "none"
        try:
            done = 0
            while done < len(data):
                done += os.write(target, data[done:])
        except OSError as e:
            first = "write:" + errno.errorcode[e.errno]
        if first == "none" and how == "fsync":
            try:
                os.fsync(target)
            except OSError as e:
                first = "fsync:" + errno.errorcode[e.errno]
        try:
            os.close(target)
        except OSError as e:
            if first == "none": first = "close:" + errno.errorcode[e.errno]
        print(first, filled >> 20)
        """;

    static string FillThenWrite(string mnt, string how)
    {
        string result = Run("/usr/bin/env", "python3", "-c", FillThenWriteScript, mnt, how).Trim();
        return result.Split(' ')[0];
    }

    /// <summary>
    /// --writeback-cache on an image with room: write(2) returns once the bytes are in the kernel's cache, so running
    /// out of space shows at close or fsync (as on NFS), and never silently: a program that checks close or fsync
    /// sees ENOSPC. Afterwards, with room again, writes work and the image is clean.
    /// </summary>
    [FuseFact]
    public void WritebackCache_NoSpaceShowsAtCloseOrFsync_NeverSilently()
    {
        using var scratch = new RepairScratch();
        string image = scratch.CopyFixture("fresh-4ag");
        string mnt = Directory.CreateDirectory(Path.Combine(scratch.Directory, "mnt")).FullName;
        byte[] later = RandomBytes(31, 3 << 20);
        using (var mount = MountedImage.Start(image, mnt, "--writeback-cache"))
        {
            Assert.Equal("close:ENOSPC", FillThenWrite(mnt, "close"));
            File.Delete(Path.Combine(mnt, "filler-close"));
            Assert.Equal("fsync:ENOSPC", FillThenWrite(mnt, "fsync"));
            File.Delete(Path.Combine(mnt, "filler-fsync"));
            File.WriteAllBytes(Path.Combine(mnt, "later"), later);
            Assert.DoesNotContain("writeback cache off", mount.Stderr, StringComparison.Ordinal);
            var (code, stdout, stderr) = mount.Unmount();
            Assert.True(code == 0, $"exit {code}\n{stdout}\n{stderr}");
        }
        MountWitnesses.AssertClean(image);
        MountWitnesses.WithKernelMount(scratch, image, kernel => Assert.Equal(later, File.ReadAllBytes(Path.Combine(kernel, "later"))));
    }

    /// <summary>
    /// Write-through (the default, --write-through, and --writeback-cache on an image nearly full at mount): running
    /// out of space shows at the write(2) itself, as on the kernel's XFS.
    /// </summary>
    [FuseFact]
    public void WriteThrough_Default_NoSpaceShowsAtTheWrite_AndANearlyFullImageDeclinesTheWritebackCache()
    {
        using var scratch = new RepairScratch();
        string image = scratch.CopyFixture("fresh-4ag");
        string mnt = Directory.CreateDirectory(Path.Combine(scratch.Directory, "mnt")).FullName;
        using (var mount = MountedImage.Start(image, mnt))
        {
            Assert.Equal("write:ENOSPC", FillThenWrite(mnt, "close"));
            var (code, stdout, stderr) = mount.Unmount();
            Assert.True(code == 0, $"exit {code}\n{stdout}\n{stderr}");
            Assert.DoesNotContain("writeback cache off", stderr, StringComparison.Ordinal); // nothing declined: none asked for
        }
        using (var mount = MountedImage.Start(image, mnt, "--write-through"))
        {
            Assert.Equal("write:ENOSPC", FillThenWrite(mnt, "fsync"));
            var (code, stdout, stderr) = mount.Unmount();
            Assert.True(code == 0, $"exit {code}\n{stdout}\n{stderr}");
        }
        using (var mount = MountedImage.Start(image, mnt, "--writeback-cache"))
        {
            Assert.True(mount.WaitForLog("writeback cache off", 1, TimeSpan.FromSeconds(30)), mount.Stderr);
            Assert.Equal("write:ENOSPC", FillThenWrite(mnt, "nearly-full"));
            var (code, stdout, stderr) = mount.Unmount();
            Assert.True(code == 0, $"exit {code}\n{stdout}\n{stderr}");
        }
        MountWitnesses.AssertClean(image);
    }

    /// <summary>
    /// Fills the mount with fallocate, then writes 1 MiB of zeros again and again to a new file as
    /// <c>dd if=/dev/zero of=F bs=1M</c> does, at most MAX times so that it always ends: prints where it stopped
    /// ("write:ENOSPC" or "none"), the writes done, the bytes write(2) accepted and the file's size after the close.
    /// </summary>
    const string UnboundedWriterScript = """
        import errno, os, sys
        mnt, most = sys.argv[1], int(sys.argv[2])
        filler = os.open(os.path.join(mnt, "filler"), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        filled = 0
        for chunk in (16 << 20, 1 << 20, 64 << 10, 4 << 10):
            while True:
                try:
                    os.posix_fallocate(filler, filled, chunk)
                except OSError as e:
                    if e.errno != errno.ENOSPC: raise
                    break
                filled += chunk
        os.close(filler)
        target = os.path.join(mnt, "dd")
        fd = os.open(target, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        block = bytes(1 << 20)
        stop, writes, accepted = "none", 0, 0
        while writes < most:
            writes += 1
            try:
                accepted += os.write(fd, block)
            except OSError as e:
                stop = "write:" + errno.errorcode[e.errno]
                break
        try:
            os.close(fd)
        except OSError:
            pass
        print(stop, writes, accepted, os.stat(target).st_size)
        """;

    /// <summary>
    /// A default mount of a full image ends an unbounded writer (dd's loop) with ENOSPC from write(2), and the file
    /// holds exactly what write(2) accepted. With the writeback cache the kernel kept accepting such writes into its
    /// page cache, dropped them when writeback failed and grew the file's size past its data: dd never ended.
    /// The loop is bounded (256 writes of 1 MiB) so that a mount that never says ENOSPC fails here instead of hanging.
    /// </summary>
    [FuseFact]
    public void Default_UnboundedWriterOnAFullImage_GetsNoSpaceFromWrite()
    {
        using var scratch = new RepairScratch();
        string image = scratch.CopyFixture("fresh-4ag");
        string mnt = Directory.CreateDirectory(Path.Combine(scratch.Directory, "mnt")).FullName;
        using (var mount = MountedImage.Start(image, mnt))
        {
            string[] result = Run("/usr/bin/env", "python3", "-c", UnboundedWriterScript, mnt, "256").Trim().Split(' ');
            output.WriteLine($"stopped at {result[0]} after {result[1]} writes, {result[2]} bytes accepted, size {result[3]}");
            Assert.Equal("write:ENOSPC", result[0]);
            Assert.True(int.Parse(result[1], System.Globalization.CultureInfo.InvariantCulture) <= 2, $"{result[1]} writes before ENOSPC on a full image");
            Assert.Equal(result[2], result[3]); // the size is what write(2) accepted, not more
            var (code, stdout, stderr) = mount.Unmount();
            Assert.True(code == 0, $"exit {code}\n{stdout}\n{stderr}");
        }
        MountWitnesses.AssertClean(image);
    }

    [Fact]
    [System.Runtime.Versioning.SupportedOSPlatform("linux")]
    public void WriteThroughReason_WriteThroughUnlessTheWritebackCacheIsAskedForAndTheImageHasRoom()
    {
        const long dirtyLimit = 48L << 20;
        static MountRequest Request(bool sync = false, bool readOnly = false, bool writeThrough = false, bool writeback = false) =>
            new() { Image = "i", Directory = "d", Sync = sync, ReadOnly = readOnly, WriteThrough = writeThrough, WritebackCache = writeback };
        Assert.Contains("the default", MountCommand.WriteThroughReason(Request(), 1UL << 40, dirtyLimit), StringComparison.Ordinal);
        Assert.Null(MountCommand.WriteThroughReason(Request(writeback: true), 1UL << 30, dirtyLimit));
        Assert.Null(MountCommand.WriteThroughReason(Request(writeback: true), 96UL << 20, dirtyLimit)); // exactly twice the limit
        Assert.Contains("95 MiB free", MountCommand.WriteThroughReason(Request(writeback: true), 95UL << 20, dirtyLimit), StringComparison.Ordinal);
        Assert.Contains("1 MiB free", MountCommand.WriteThroughReason(Request(writeback: true), 1UL << 20, dirtyLimit), StringComparison.Ordinal);
        Assert.Equal("--sync", MountCommand.WriteThroughReason(Request(sync: true, writeback: true), 1UL << 30, dirtyLimit));
        Assert.Equal("--read-only", MountCommand.WriteThroughReason(Request(readOnly: true, writeback: true), 1UL << 30, dirtyLimit));
        Assert.Equal("--read-only", MountCommand.WriteThroughReason(Request(readOnly: true), 1UL << 30, dirtyLimit));
        Assert.Equal("--write-through", MountCommand.WriteThroughReason(Request(writeThrough: true), 1UL << 30, dirtyLimit));
    }

    /// <summary>
    /// The mount negotiates HANDLE_KILLPRIV_V2 (the kernel then stops asking for security.capability before every
    /// write), so clearing set-user-ID and set-group-ID is the server's job: on a write and a truncate by a caller
    /// without CAP_FSETID, and on every chown of a non-directory, as the kernel's own file systems do.
    /// </summary>
    [FuseFact]
    public void SetIdBits_ClearedOnWriteTruncateAndChown_AsTheKernelDoes()
    {
        using var scratch = new RepairScratch();
        string image = scratch.CopyFixture("fresh-4ag");
        string mnt = Directory.CreateDirectory(Path.Combine(scratch.Directory, "mnt")).FullName;
        using var mount = MountedImage.Start(image, mnt, "--allow-other");
        foreach (string name in new[] { "written", "truncated", "chowned", "root-written" })
        {
            File.WriteAllText(Path.Combine(mnt, name), "content\n");
            Run("/bin/chmod", name == "chowned" ? "6755" : "6777", Path.Combine(mnt, name));
        }
        Assert.Equal("6777\n", Run("/usr/bin/stat", "-c", "%a", Path.Combine(mnt, "written")));
        // As nobody, from inside the mount (the scratch directory above it may not be searchable for nobody).
        AsNobody(mnt, "printf more >> written");
        AsNobody(mnt, "truncate -s 3 truncated");
        Run("/bin/chown", "1:1", Path.Combine(mnt, "chowned"));
        Run("/bin/sh", "-c", $"printf more >> '{Path.Combine(mnt, "root-written")}'"); // root keeps them (CAP_FSETID)
        // Read through the kernel's attribute cache: a mode cleared by the server must not be shown stale.
        Assert.Equal("777 content\nmore", Run("/usr/bin/stat", "-c", "%a", Path.Combine(mnt, "written")).TrimEnd('\n') + " " + File.ReadAllText(Path.Combine(mnt, "written")));
        Assert.Equal("777 3\n", Run("/usr/bin/stat", "-c", "%a %s", Path.Combine(mnt, "truncated")));
        Assert.Equal("755 1:1\n", Run("/usr/bin/stat", "-c", "%a %u:%g", Path.Combine(mnt, "chowned")));
        Assert.Equal("6777\n", Run("/usr/bin/stat", "-c", "%a", Path.Combine(mnt, "root-written")));
        var (code, stdout, stderr) = mount.Unmount();
        Assert.True(code == 0, $"exit {code}\n{stdout}\n{stderr}");
        MountWitnesses.AssertClean(image);
        MountWitnesses.WithKernelMount(scratch, image, kernel =>
            Assert.Equal("777 755 6777\n", Run("/usr/bin/stat", "-c", "%a", Path.Combine(kernel, "written")).TrimEnd('\n') + " "
                + Run("/usr/bin/stat", "-c", "%a", Path.Combine(kernel, "chowned")).TrimEnd('\n') + " " + Run("/usr/bin/stat", "-c", "%a", Path.Combine(kernel, "root-written"))));
    }

    static void AsNobody(string directory, string command)
    {
        var start = new ProcessStartInfo("/usr/bin/setpriv", ["--reuid=65534", "--regid=65534", "--clear-groups", "/bin/sh", "-c", command])
        {
            WorkingDirectory = directory,
            RedirectStandardError = true,
            RedirectStandardOutput = true,
        };
        using var process = ChildProcesses.Start(start);
        string stderr = process.StandardError.ReadToEnd();
        process.StandardOutput.ReadToEnd();
        Assert.True(process.WaitForExit(TimeSpan.FromMinutes(2)), $"{command}: did not finish");
        Assert.True(process.ExitCode == 0, $"as nobody: {command}: exit {process.ExitCode}: {stderr}");
    }

    [FuseFact]
    public void Sigterm_UnmountsAndClosesCleanly()
    {
        using var scratch = new RepairScratch();
        string image = scratch.CopyFixture("fresh-4ag");
        string mnt = Directory.CreateDirectory(Path.Combine(scratch.Directory, "mnt")).FullName;
        using var mount = MountedImage.Start(image, mnt, "--sync");
        File.WriteAllText(Path.Combine(mnt, "hello"), "hello\n");
        mount.Signal(Tmds.Linux.LibC.SIGTERM);
        var (code, stdout, stderr) = mount.WaitForExit(TimeSpan.FromSeconds(120));
        Assert.True(code == 0, $"exit {code}\n{stdout}\n{stderr}");
        Assert.Equal($"mounted {image} on {mnt}\n", stdout);
        Assert.DoesNotContain($" {mnt} ", File.ReadAllText("/proc/self/mounts"), StringComparison.Ordinal);
        MountWitnesses.AssertClean(image);
        MountWitnesses.WithKernelMount(scratch, image, kernel => Assert.Equal("hello\n", File.ReadAllText(Path.Combine(kernel, "hello"))));
    }

    [FuseFact]
    public void Refusals_AreOneLineAndExit2()
    {
        using var scratch = new RepairScratch();
        string image = scratch.CopyFixture("fresh-4ag");
        string mnt = Directory.CreateDirectory(Path.Combine(scratch.Directory, "mnt")).FullName;
        string full = Directory.CreateDirectory(Path.Combine(scratch.Directory, "full")).FullName;
        File.WriteAllText(Path.Combine(full, "x"), "");

        AssertRefused(RepairTools.Xfbtree("mount", image, full), "not an empty directory");
        AssertRefused(RepairTools.Xfbtree("mount", image, Path.Combine(scratch.Directory, "missing")), "not a directory");
        AssertRefused(RepairTools.Xfbtree("mount", image, mnt, "--write-through", "--writeback-cache"), "exclude each other");
        AssertRefused(RepairTools.Xfbtree("mount", Path.Combine(scratch.Directory, "no.img"), mnt), "no.img");
        string second = Directory.CreateDirectory(Path.Combine(scratch.Directory, "mnt2")).FullName;
        using (var mount = MountedImage.Start(image, mnt))
        {
            // The same image a second time: the first mount's writer lock refuses it.
            AssertRefused(RepairTools.Xfbtree("mount", image, second), image);
            mount.Unmount();
        }
        // Loop-attached: the kernel could mount it behind our back.
        string loop = TreeFixtures.Run("/sbin/losetup", ["-f", "--show", image]).Trim();
        try
        {
            AssertRefused(RepairTools.Xfbtree("mount", image, mnt), image);
        }
        finally
        {
            TreeFixtures.Run("/sbin/losetup", ["-d", loop]);
        }
        MountWitnesses.AssertClean(image);
    }

    static void AssertRefused(ToolResult r, string mention)
    {
        Assert.True(r.ExitCode == 2, r.ToString());
        Assert.Equal("", r.Stdout);
        string line = r.Stderr.TrimEnd('\n');
        Assert.DoesNotContain('\n', line);
        Assert.StartsWith("xfbtree: mount: ", line, StringComparison.Ordinal);
        Assert.Contains(mention, line, StringComparison.Ordinal);
    }

    /// <summary>Random create / write / overwrite / truncate / read-check / unlink / mkdir in one thread's directory.</summary>
    internal static Dictionary<string, byte[]> Exercise(string root, int thread, int ops, ref long checkedReads)
    {
        var random = new Random(1000 + thread);
        string dir = Directory.CreateDirectory(Path.Combine(root, $"t{thread}")).FullName;
        var model = new Dictionary<string, byte[]>();
        var dirs = new List<string> { dir };
        for (int op = 0; op < ops; op++)
        {
            string[] files = model.Keys.ToArray();
            int kind = random.Next(files.Length == 0 ? 2 : 9);
            switch (kind)
            {
                case 0:
                case 1:
                {
                    string parent = dirs[random.Next(dirs.Count)];
                    string path = Path.Combine(parent, $"f{op}");
                    byte[] bytes = new byte[random.Next(0, 3) == 0 ? random.Next(0, 100) : random.Next(0, 300_000)];
                    random.NextBytes(bytes);
                    File.WriteAllBytes(path, bytes);
                    model[path] = bytes;
                    if (random.Next(8) == 0 && dirs.Count < 6) dirs.Add(Directory.CreateDirectory(Path.Combine(parent, $"d{op}")).FullName);
                    break;
                }
                case 2:
                case 3:
                {
                    string path = files[random.Next(files.Length)];
                    byte[] old = model[path];
                    long at = random.Next(0, old.Length + 70_000);
                    byte[] patch = new byte[random.Next(1, 60_000)];
                    random.NextBytes(patch);
                    using (var stream = new FileStream(path, FileMode.Open, FileAccess.Write))
                    {
                        stream.Position = at;
                        stream.Write(patch);
                    }
                    byte[] updated = new byte[Math.Max(old.Length, at + patch.Length)];
                    old.CopyTo(updated, 0);
                    patch.CopyTo(updated, at);
                    model[path] = updated;
                    break;
                }
                case 4:
                {
                    string path = files[random.Next(files.Length)];
                    int size = random.Next(0, model[path].Length + 10_000);
                    using (var stream = new FileStream(path, FileMode.Open, FileAccess.Write)) stream.SetLength(size);
                    byte[] updated = new byte[size];
                    Array.Copy(model[path], updated, Math.Min(size, model[path].Length));
                    model[path] = updated;
                    break;
                }
                case 5:
                {
                    string path = files[random.Next(files.Length)];
                    byte[] actual = File.ReadAllBytes(path);
                    if (!actual.AsSpan().SequenceEqual(model[path])) throw new InvalidOperationException($"{path}: read {actual.Length} bytes that differ from the model's {model[path].Length}");
                    Interlocked.Increment(ref checkedReads);
                    break;
                }
                case 6:
                {
                    // rename(2), within the thread's directories, sometimes over another file of the model.
                    string path = files[random.Next(files.Length)];
                    string target = random.Next(3) == 0 ? files[random.Next(files.Length)] : Path.Combine(dirs[random.Next(dirs.Count)], $"r{op}");
                    File.Move(path, target, overwrite: true);
                    byte[] bytes = model[path];
                    model.Remove(path);
                    model[target] = bytes;
                    if (path != target && File.Exists(path)) throw new InvalidOperationException($"{path} is still there after rename");
                    break;
                }
                case 7:
                {
                    // fallocate through xfs_io: KEEP_SIZE preallocation (past EOF too: the bytes stay), zero range
                    // with KEEP_SIZE and punch hole (the bytes below EOF become zeros; the size stays).
                    string path = files[random.Next(files.Length)];
                    byte[] old = model[path];
                    long at = random.Next(0, old.Length + 70_000), length = random.Next(1, 200_000);
                    string command = random.Next(3) switch { 0 => "falloc -k", 1 => "fzero -k", _ => "fpunch" };
                    var io = RepairTools.Exec("/usr/sbin/xfs_io", ["-c", $"{command} {at} {length}", path]);
                    if (io.ExitCode != 0 || io.Stderr.Length > 0 || io.Stdout.Length > 0) throw new InvalidOperationException($"xfs_io {command} {at} {length} {path}: {io}");
                    if (command != "falloc -k" && at < old.Length) Array.Clear(old, (int)at, (int)Math.Min(length, old.Length - at));
                    break;
                }
                default:
                {
                    string path = files[random.Next(files.Length)];
                    File.Delete(path);
                    model.Remove(path);
                    if (File.Exists(path)) throw new InvalidOperationException($"{path} is still there after unlink");
                    break;
                }
            }
        }
        // Paths relative to the mount, so the kernel mount can be compared too.
        return model.ToDictionary(kv => Path.GetRelativePath(root, kv.Key), kv => kv.Value);
    }

    internal static void AssertModel(string root, Dictionary<string, byte[]> model)
    {
        foreach (var (path, bytes) in model)
        {
            byte[] actual = File.ReadAllBytes(Path.Combine(root, path));
            Assert.True(actual.AsSpan().SequenceEqual(bytes), $"{path}: {actual.Length} bytes differ from the model's {bytes.Length}");
        }
    }

    /// <summary>A tree of nested directories (at most 30 entries each) and files of 0 to 300 KB, the same for a seed.</summary>
    static string MakeSourceTree(string root, int seed)
    {
        var random = new Random(seed);
        Directory.CreateDirectory(root);
        var dirs = new List<string> { root };
        for (int d = 0; d < 6; d++) dirs.Add(Directory.CreateDirectory(Path.Combine(dirs[random.Next(dirs.Count)], $"dir{d}")).FullName);
        for (int f = 0; f < 60; f++)
        {
            byte[] bytes = RandomBytes(seed * 1000 + f, f % 7 == 0 ? random.Next(0, 64) : random.Next(0, 300_000));
            File.WriteAllBytes(Path.Combine(dirs[random.Next(dirs.Count)], $"file{f}.bin"), bytes);
        }
        File.WriteAllText(Path.Combine(root, "empty"), "");
        return root;
    }

    static byte[] RandomBytes(int seed, int length)
    {
        var bytes = new byte[length];
        new Random(seed).NextBytes(bytes);
        return bytes;
    }

    static string Run(string file, params string[] args)
    {
        var r = RepairTools.Exec(file, args);
        Assert.True(r.ExitCode == 0, $"{file} {string.Join(' ', args)}: {r}");
        return r.Stdout;
    }
}
