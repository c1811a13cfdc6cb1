using Xfbtree.Xfs.Directories;
using Xfbtree.Xfs.Online;
using Xfbtree.Xfs.Scrub;
using Xfbtree.Xfs.Tests.Online;
using Xfbtree.Xfs.Tests.Repair;
using Xfbtree.Xfs.Write;
using Xfbtree.Xfs.Write.Engine;
using Xfbtree.Xfs.Write.Namespace;
using Xunit.Abstractions;

namespace Xfbtree.Xfs.Tests.Scrub;

/// <summary>
/// Damage to the shape of the directory tree and its orphans, made through the write engine on fresh-4ag (rmapbt=1):
/// a cycle of directories the root does not reach, a directory with a second parent, a directory whose '..' disagrees
/// with the only directory naming it, a '/lost+found' that is a regular file, and an in-use inode with nlink 0 on no
/// unlinked list that no directory names. Each is found by the offline scrub (one line per problem), repaired by
/// <c>scrub --repair</c> (the wrong entry removed, what it named moved to /lost+found, as xfs_repair's phase 6 does),
/// then <c>xfs_repair -n</c> exits 0 and the kernel mounts, reads and writes the image; and all of them at once
/// online, found and repaired beside two namespace writers.
/// </summary>
public sealed class ScrubDirectoryTreeTests(ITestOutputHelper output)
{
    /// <summary>The damage kinds, with the line the offline scrub must print for each.</summary>
    public static IEnumerable<object[]> Kinds() => new[] { "cycle", "second-parent", "dotdot-disagrees", "lost+found-file", "orphan-nlink0" }.Select(k => new object[] { k });

    /// <summary>What <see cref="Damage"/> made: the inode that must end in /lost+found (0: none) and the words the
    /// scrub's nlinks line must hold.</summary>
    internal readonly record struct TreeDamage(ulong Adopted, string Expect);

    /// <summary>Makes one kind of damage in the root of <paramref name="fs"/> (names prefixed by <paramref name="tag"/>).</summary>
    internal static TreeDamage Damage(XfsFileSystem fs, string kind, string tag = "")
    {
        switch (kind)
        {
            case "cycle":
            {
                // /a/b, then a unnamed by the root, named by b, its '..' pointed at b: a ring a -> b -> a with every
                // link count consistent (the root lost a's '..', b gained it).
                ulong a = fs.Mkdir($"/{tag}a");
                ulong b = fs.Mkdir($"/{tag}a/b");
                uint rootLinks = fs.Stat("/").Links;
                OnlineLinkCountTests.RemoveEntryOnly(fs, "/", $"{tag}a");
                AddEntryOnly(fs, b, "loop", a, DirectoryFormat.FtDirectory);
                SetDotDot(fs, a, b);
                OnlineLinkCountTests.SetNlink(fs, b, 3);
                OnlineLinkCountTests.SetNlink(fs, fs.Namespace.RootIno, rootLinks - 1);
                return new TreeDamage(Math.Min(a, b), $"name each other in a cycle the root does not reach");
            }
            case "second-parent":
            {
                ulong p1 = fs.Mkdir($"/{tag}p1");
                ulong c = fs.Mkdir($"/{tag}p1/c");
                ulong p2 = fs.Mkdir($"/{tag}p2");
                AddEntryOnly(fs, p2, "c2", c, DirectoryFormat.FtDirectory);
                OnlineLinkCountTests.SetNlink(fs, c, 3);
                return new TreeDamage(0, $"names directory {c}, whose '..' names {p1}");
            }
            case "dotdot-disagrees":
            {
                ulong q1 = fs.Mkdir($"/{tag}q1");
                ulong c = fs.Mkdir($"/{tag}q1/c");
                ulong q2 = fs.Mkdir($"/{tag}q2");
                OnlineLinkCountTests.RemoveEntryOnly(fs, $"/{tag}q1", "c");
                AddEntryOnly(fs, q2, "c", c, DirectoryFormat.FtDirectory);
                return new TreeDamage(c, $"names directory {c}, whose '..' names {q1}");
            }
            case "lost+found-file":
            {
                ulong f = fs.Create("/lost+found");
                fs.Write("/lost+found", 0, OnlineTestSupport.Pattern(3000, 5));
                return new TreeDamage(f, $"'/lost+found' names inode {f}, which is not a directory");
            }
            case "orphan-nlink0":
            {
                ulong o = fs.Create($"/{tag}orphan");
                fs.Write($"/{tag}orphan", 0, OnlineTestSupport.Pattern(3000, 5));
                OnlineLinkCountTests.RemoveEntryOnly(fs, "/", $"{tag}orphan");
                OnlineLinkCountTests.SetNlink(fs, o, 0);
                return new TreeDamage(o, $"inode {o} is in use with nlink 0, on no unlinked list, and no directory names it");
            }
            default:
                throw new ArgumentOutOfRangeException(nameof(kind), kind, "no such damage");
        }
    }

    /// <summary>Adds an entry without touching the inode it names (no link counted, no '..' changed).</summary>
    internal static void AddEntryOnly(XfsFileSystem fs, ulong dirIno, string name, ulong ino, byte fileType)
    {
        IncoreInode dir = fs.Engine.GetInode(dirIno);
        var reader = new DirectoryReader(fs.Engine.Image);
        fs.Engine.Execute("test: add an entry only", tx =>
        {
            tx.LockInodes(dir);
            new DirectoryEditor(tx, dir, reader, $"directory {dirIno}").Add(System.Text.Encoding.UTF8.GetBytes(name), ino, fileType, DateTimeOffset.UtcNow);
            tx.LogInode(dir);
        });
    }

    /// <summary>Points a directory's '..' elsewhere, nothing else changed.</summary>
    internal static void SetDotDot(XfsFileSystem fs, ulong dirIno, ulong parent)
    {
        IncoreInode dir = fs.Engine.GetInode(dirIno);
        var reader = new DirectoryReader(fs.Engine.Image);
        fs.Engine.Execute("test: point '..' elsewhere", tx =>
        {
            tx.LockInodes(dir);
            new DirectoryEditor(tx, dir, reader, $"directory {dirIno}").Replace([(byte)'.', (byte)'.'], parent, DirectoryFormat.FtDirectory, DateTimeOffset.UtcNow);
            tx.LogInode(dir);
        });
    }

    /// <summary>Offline: found (exit 1, the kind's line), what xfs_repair -n says of it logged, repaired by
    /// <c>scrub --repair</c> (exit 0), then xfs_repair -n 0, the adopted inode in /lost+found, and the kernel.</summary>
    [Theory]
    [MemberData(nameof(Kinds))]
    public void TreeDamageFoundRepairedAndAcceptedByXfsRepairAndTheKernel(string kind)
    {
        using var scratch = new RepairScratch();
        string image = scratch.CopyFixture("fresh-4ag");
        TreeDamage damage;
        using (var fs = XfsFileSystem.Open(image, OnlineTestSupport.Fast))
        {
            damage = Damage(fs, kind);
            fs.Close();
        }
        var check = ScrubCli.Run(image);
        output.WriteLine(check.Stdout + check.Stderr);
        Assert.Equal(1, check.ExitCode);
        Assert.Contains("nlinks: damaged", check.Stdout, StringComparison.Ordinal);
        Assert.Contains(damage.Expect, check.Stdout, StringComparison.Ordinal);
        ToolResult theirs = RepairTools.XfsRepairCheck(scratch.Copy(image, "xfs_repair-n.img"));
        output.WriteLine($"xfs_repair -n of the damage: exit {theirs.ExitCode}\n{string.Join("\n", (theirs.Stdout + theirs.Stderr).Split('\n').Where(l => !l.StartsWith("        -", StringComparison.Ordinal) && !l.StartsWith("Phase", StringComparison.Ordinal)))}");

        var (rc, stdout, stderr) = ScrubCli.Run(image, "--repair");
        output.WriteLine(stdout + stderr);
        Assert.Contains("repair: nlinks: repaired", stdout, StringComparison.Ordinal);
        Assert.True(rc == 0, $"scrub --repair must leave the image clean: exit {rc}");
        ToolResult witness = RepairTools.XfsRepairCheck(image);
        Assert.True(witness.ExitCode == 0, $"xfs_repair -n after the repair: {witness}");
        if (damage.Adopted != 0)
        {
            using var fs = XfsFileSystem.Open(image, OnlineTestSupport.Fast);
            Assert.Equal(InodeType.Directory, fs.Namespace.Resolve("/lost+found").Type);
            Assert.Equal(damage.Adopted, fs.Namespace.Resolve($"/lost+found/{damage.Adopted}").Ino);
            fs.Close();
        }
        RepairSafetyTests.RequireRoot();
        ToolResult workload = RepairTools.Exec(Path.Combine(RepairKernelTests.RepoRoot(), "scripts", "kernel-workload.sh"), [image]);
        output.WriteLine(workload.Stdout + workload.Stderr);
        Assert.True(workload.ExitCode == 0, $"kernel workload on the repaired image: {workload}");
    }

    /// <summary>Every kind at once on an open engine: the online check finds each (the tree problems confirmed under
    /// the rename lock, the orphan as a wrong count) and repairs them while two writers run every namespace operation
    /// (directories renamed across directories included) in their own subtrees; a second check is clean, then the
    /// offline scrub, xfs_repair -n and the kernel agree.</summary>
    [Fact]
    public void TreeDamageFoundAndRepairedOnlineBesideWriters()
    {
        using var scratch = new RepairScratch();
        string image = scratch.CopyFixture("fresh-4ag");
        var fs = XfsFileSystem.Open(image, OnlineTestSupport.Fast);
        var damages = Kinds().Select(k => Damage(fs, (string)k[0], "s-")).ToList();
        OnlineLinkCountResult r;
        using (var writers = new NamespaceWriters(fs, seed: 5, threads: 2))
        {
            try
            {
                r = OnlineLinkCounts.Run(fs, new OnlineLinkCountOptions { Repair = true });
            }
            finally
            {
                writers.Stop();
            }
            writers.AssertHealthy();
            output.WriteLine($"writers ran {writers.Operations} operations");
        }
        output.WriteLine($"tree problems {r.TreeProblemTotal} [{string.Join("; ", r.TreeProblems)}], repaired {r.TreeRepaired}; wrong counts {r.MismatchTotal} "
            + $"[{string.Join(", ", r.Mismatches)}], repaired {r.Repaired}, adopted {r.Adopted} [{string.Join("; ", r.AdoptedAs)}]; not repaired [{string.Join("; ", r.NotRepaired)}]");
        Assert.Equal(4, r.TreeProblemTotal); // the cycle, the second parent, the '..', the lost+found file
        foreach (var d in damages.Where(d => !d.Expect.StartsWith("inode", StringComparison.Ordinal)))
        {
            Assert.Contains(r.TreeProblems, t => t.Contains(d.Expect, StringComparison.Ordinal));
        }
        Assert.True(r.IsClean, $"not repaired: {string.Join("; ", r.NotRepaired)}");
        foreach (var d in damages.Where(d => d.Adopted != 0))
        {
            Assert.Equal(d.Adopted, fs.Namespace.Resolve($"/lost+found/{d.Adopted}").Ino);
        }
        OnlineLinkCountResult again = OnlineLinkCounts.Run(fs, new OnlineLinkCountOptions());
        Assert.True(again.MismatchTotal == 0 && again.TreeProblemTotal == 0 && again.EntryProblemTotal == 0,
            $"a second check: {again.MismatchTotal} wrong counts, tree [{string.Join("; ", again.TreeProblems)}]");
        fs.Close();
        fs.Dispose();
        var check = ScrubCli.Run(image);
        Assert.True(check.ExitCode == 0, $"offline scrub after the online repair: {check.Stdout}");
        ToolResult witness = RepairTools.XfsRepairCheck(image);
        Assert.True(witness.ExitCode == 0, $"xfs_repair -n after the online repair: {witness}");
        RepairSafetyTests.RequireRoot();
        ToolResult workload = RepairTools.Exec(Path.Combine(RepairKernelTests.RepoRoot(), "scripts", "kernel-workload.sh"), [image]);
        Assert.True(workload.ExitCode == 0, $"kernel workload on the repaired image: {workload}");
    }

    /// <summary>A healthy image beside writers that move directories across directories: no tree problem is ever
    /// reported (what the scan sees mid-rename is confirmed under the rename lock, and is not there).</summary>
    [Fact]
    public void HealthyTreeBesideDirectoryRenamesIsNeverDamaged()
    {
        using var scratch = new RepairScratch();
        string image = scratch.CopyFixture("aged-small");
        var fs = XfsFileSystem.Open(image, OnlineTestSupport.Fast);
        int checks = 0;
        using (var writers = new NamespaceWriters(fs, seed: 9, threads: 2))
        {
            try
            {
                for (; checks < 4; checks++)
                {
                    OnlineLinkCountResult r = OnlineLinkCounts.Run(fs, new OnlineLinkCountOptions());
                    Assert.True(r.MismatchTotal == 0 && r.TreeProblemTotal == 0 && r.Damage.Count == 0,
                        $"check {checks} of a healthy image: {r.MismatchTotal} wrong counts [{string.Join(", ", r.Mismatches)}], tree [{string.Join("; ", r.TreeProblems)}], damage [{string.Join("; ", r.Damage)}]");
                }
            }
            finally
            {
                writers.Stop();
            }
            writers.AssertHealthy();
            output.WriteLine($"{checks} checks beside {writers.Operations} writer operations");
        }
        fs.Close();
        fs.Dispose();
        ToolResult witness = RepairTools.XfsRepairCheck(image);
        Assert.True(witness.ExitCode == 0, $"xfs_repair -n: {witness}");
    }
}
