using System.Diagnostics;
using Xfbtree.Xfs.Tests.Repair;
using Xunit.Abstractions;

namespace Xfbtree.Xfs.Tests.Mount;

/// <summary>
/// kill -9 of the mount's server while real programs run on it, with online repair on: a SQLite database under an
/// insert load, git committing with core.fsync, tar extracting a tree. After each kill `umount DIR` clears the
/// disconnected mount and the next mount replays the journal; everything the programs had made durable (a finished
/// SQLite transaction, a finished git commit, a file tar had finished writing) is there, the programs' own checks
/// pass (PRAGMA integrity_check, git fsck), and after a clean unmount xfs_repair -n and rmap check are clean. One
/// kill per program in the suite, seven each (21) with XFBTREE_LONG_TESTS=1.
/// </summary>
public sealed class MountCrashTests(ITestOutputHelper output)
{
    static readonly int Rounds = Environment.GetEnvironmentVariable("XFBTREE_LONG_TESTS") == "1" ? 7 : 1;

    /// <summary>Runs <paramref name="step"/> (returns false when it failed: the server is gone) until the main thread kills the server.</summary>
    sealed class Workload
    {
        readonly SemaphoreSlim _enough = new(0);
        int _done;
        Thread? _thread;

        public int Done => Volatile.Read(ref _done);

        public void Start(Func<int, bool> step, int killAfter)
        {
            _thread = new Thread(() =>
            {
                for (int i = 0; ; i++)
                {
                    if (!step(i)) return;
                    if (Interlocked.Increment(ref _done) == killAfter) _enough.Release();
                }
            });
            _thread.Start();
        }

        public bool WaitForEnough() => _enough.Wait(TimeSpan.FromMinutes(3));

        public void Join() => _thread!.Join();
    }

    void KillRounds(string name, Action<RepairScratch, string, string, int, Random> round)
    {
        using var scratch = new RepairScratch();
        string image = scratch.CopyFixture("fresh-4ag");
        string mnt = Directory.CreateDirectory(Path.Combine(scratch.Directory, "mnt")).FullName;
        var random = new Random(name.Length * 31 + Rounds);
        for (int r = 0; r < Rounds; r++)
        {
            round(scratch, image, mnt, r, random);
        }
        MountWitnesses.AssertClean(image);
        output.WriteLine($"{name}: {Rounds} kills, image clean");
    }

    [FuseFact]
    public void KillMinus9_DuringSqliteInserts_KeepsEveryCommittedTransaction()
    {
        if (!File.Exists("/usr/bin/sqlite3")) Assert.Fail("sqlite3 is not installed (Debian package sqlite3): this test cannot run");
        const int Rows = 40;
        int committed = 0;
        KillRounds("sqlite", (scratch, image, mnt, round, random) =>
        {
            string db = Path.Combine(mnt, "db.sqlite");
            var workload = new Workload();
            using (var mount = MountedImage.Start(image, mnt, "--online-repair-every", "1"))
            {
                if (round == 0) MountWorkloads.Run("/usr/bin/sqlite3", db, "create table t(a integer primary key, txn integer, b text);");
                int killAfter = random.Next(3, 15), before = committed;
                // One sqlite3 process per transaction: its exit 0 means COMMIT returned (SQLite fsyncs its journal and the database).
                workload.Start(i =>
                {
                    int txn = before + i;
                    string sql = "begin;" + string.Concat(Enumerable.Range(0, Rows).Select(j => $"insert into t(txn, b) values({txn}, '{new string((char)('a' + j % 26), 50 + j * 13)}');")) + "commit;";
                    var r = RepairTools.Exec("/usr/bin/sqlite3", [db, sql]);
                    if (r.ExitCode != 0) return false;
                    Interlocked.Exchange(ref committed, txn + 1);
                    return true;
                }, killAfter);
                Assert.True(workload.WaitForEnough(), $"sqlite did not commit {killAfter} transactions:\n{mount.Stderr}");
                mount.Kill();
                workload.Join(); // the program fails on the disconnected mount and ends
                mount.UnmountAfterKill();
            }
            Assert.True(File.Exists(image + ".xfbtree-journal"), "the killed server left no journal to replay");
            using (var mount = MountedImage.Start(image, mnt))
            {
                // Opening the database rolls back a transaction in flight (its hot journal); every committed one stays.
                string result = MountWorkloads.Run("/usr/bin/sqlite3", db, "pragma integrity_check; select count(*), count(distinct txn), max(txn) from t;");
                string[] lines = result.Trim().Split('\n');
                Assert.Equal("ok", lines[0]);
                string[] counts = lines[1].Split('|');
                int rows = int.Parse(counts[0], System.Globalization.CultureInfo.InvariantCulture);
                int txns = int.Parse(counts[1], System.Globalization.CultureInfo.InvariantCulture);
                // The transaction in flight at the kill may have committed before its process noticed the server was gone.
                Assert.True(rows == txns * Rows && (txns == committed || txns == committed + 1), $"round {round}: {rows} rows in {txns} transactions, {committed} committed");
                committed = txns;
                var (code, stdout, stderr) = mount.Unmount();
                Assert.True(code == 0, $"exit {code}\n{stdout}\n{stderr}");
            }
            output.WriteLine($"round {round}: {committed} transactions committed and present");
        });
    }

    [FuseFact]
    public void KillMinus9_DuringGitCommits_KeepsEveryFinishedCommit()
    {
        if (!File.Exists("/usr/bin/git")) Assert.Fail("git is not installed: this test cannot run");
        int finished = 0;
        KillRounds("git", (scratch, image, mnt, round, random) =>
        {
            string repo = Path.Combine(mnt, "repo");
            string[] git = ["-C", repo, "-c", "core.fsync=all", "-c", "core.fsyncMethod=fsync", "-c", "user.name=t", "-c", "user.email=t@t"];
            var workload = new Workload();
            using (var mount = MountedImage.Start(image, mnt, "--online-repair-every", "1"))
            {
                if (round == 0) MountWorkloads.Run("/usr/bin/git", "init", "-q", repo);
                int killAfter = random.Next(2, 8), before = finished;
                workload.Start(i =>
                {
                    int n = before + i;
                    try
                    {
                        File.WriteAllText(Path.Combine(repo, $"f{n % 7}"), $"commit {n}\n" + new string('x', n * 37 % 5000));
                    }
                    catch (IOException)
                    {
                        return false;
                    }
                    if (RepairTools.Exec("/usr/bin/git", [.. git, "add", "-A"]).ExitCode != 0) return false;
                    if (RepairTools.Exec("/usr/bin/git", [.. git, "commit", "-qm", $"c{n}"]).ExitCode != 0) return false;
                    Interlocked.Exchange(ref finished, n + 1);
                    return true;
                }, killAfter);
                Assert.True(workload.WaitForEnough(), $"git did not commit {killAfter} times:\n{mount.Stderr}");
                mount.Kill();
                workload.Join(); // the program fails on the disconnected mount and ends
                mount.UnmountAfterKill();
            }
            Assert.True(File.Exists(image + ".xfbtree-journal"), "the killed server left no journal to replay");
            using (var mount = MountedImage.Start(image, mnt))
            {
                // A commit in flight may leave its lock files: git refuses to work until they are gone, as after any crash.
                foreach (string lockFile in new[] { Path.Combine(repo, ".git", "index.lock"), Path.Combine(repo, ".git", "HEAD.lock") }) File.Delete(lockFile);
                foreach (string lockFile in Directory.EnumerateFiles(Path.Combine(repo, ".git", "refs"), "*.lock", SearchOption.AllDirectories)) File.Delete(lockFile);
                var fsck = RepairTools.Exec("/usr/bin/git", ["-C", repo, "fsck", "--strict", "--no-dangling"]);
                Assert.True(fsck.ExitCode == 0, $"round {round}: git fsck: {fsck}");
                string[] subjects = MountWorkloads.Run("/usr/bin/git", "-C", repo, "log", "--format=%s").Split('\n', StringSplitOptions.RemoveEmptyEntries);
                // Every finished commit is in the history; the one in flight may be too.
                int head = subjects.Length;
                Assert.True(head == finished || head == finished + 1, $"round {round}: {head} commits in the history, {finished} finished");
                for (int n = 0; n < finished; n++) Assert.Contains($"c{n}", subjects);
                finished = head;
                var (code, stdout, stderr) = mount.Unmount();
                Assert.True(code == 0, $"exit {code}\n{stdout}\n{stderr}");
            }
            output.WriteLine($"round {round}: {finished} commits present, fsck clean");
        });
    }

    [FuseFact]
    public void KillMinus9_DuringUntar_KeepsEveryFileTarFinished()
    {
        using var sources = new RepairScratch();
        string source = MountWorkloads.MakeSourceTree(Path.Combine(sources.Directory, "source"), seed: 33, files: 400);
        string archive = MountWorkloads.Tar(sources.Directory, source);
        KillRounds("untar", (scratch, image, mnt, round, random) =>
        {
            string target = Path.Combine(mnt, $"r{round}");
            var names = new List<string>();
            using (var mount = MountedImage.Start(image, mnt, "--online-repair-every", "1"))
            {
                Directory.CreateDirectory(target);
                int killAfter = random.Next(20, 300);
                // tar names each member (-v) before it extracts it: once it names member k, members before k are written.
                var psi = new ProcessStartInfo("/bin/tar") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
                foreach (string a in new[] { "xvf", archive, "-C", target }) psi.ArgumentList.Add(a);
                using var tar = ChildProcesses.Start(psi);
                var errors = tar.StandardError.ReadToEndAsync();
                while (names.Count < killAfter && tar.StandardOutput.ReadLine() is { } line) names.Add(line);
                mount.Kill();
                tar.StandardOutput.ReadToEnd();
                tar.WaitForExit();
                _ = errors.Result;
                mount.UnmountAfterKill();
                Assert.True(names.Count >= Math.Min(killAfter, 2), $"tar named only {names.Count} members");
            }
            Assert.True(File.Exists(image + ".xfbtree-journal"), "the killed server left no journal to replay");
            using (var mount = MountedImage.Start(image, mnt))
            {
                // Every member before the last one named was extracted whole before the kill.
                int checkedFiles = 0;
                foreach (string member in names.Take(names.Count - 1))
                {
                    string inSource = Path.Combine(Path.GetDirectoryName(source)!, member.TrimEnd('/'));
                    string onMount = Path.Combine(target, member.TrimEnd('/'));
                    if (Directory.Exists(inSource))
                    {
                        Assert.True(Directory.Exists(onMount), $"round {round}: directory {member} is gone");
                        continue;
                    }
                    Assert.True(File.Exists(onMount), $"round {round}: {member} is gone");
                    Assert.True(File.ReadAllBytes(inSource).AsSpan().SequenceEqual(File.ReadAllBytes(onMount)), $"round {round}: {member} differs");
                    checkedFiles++;
                }
                output.WriteLine($"round {round}: {names.Count} members named, {checkedFiles} finished files checked");
                var (code, stdout, stderr) = mount.Unmount();
                Assert.True(code == 0, $"exit {code}\n{stdout}\n{stderr}");
            }
        });
    }
}
