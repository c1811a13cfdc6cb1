using System.Globalization;
using System.Text;
using Xfbtree.Xfs.Tests.Repair;
using Xfbtree.Xfs.Tests.Trees;
using Xfbtree.Xfs.Write;
using Xfbtree.Xfs.Write.Files;
using Xfbtree.Xfs.Write.Namespace;
using Xunit.Abstractions;

namespace Xfbtree.Xfs.Tests.Write;

/// <summary>
/// POSIX details the kernel applies, played by the kernel (a loop mount of a fresh image, in /k) and by the engine (in
/// /e of the same image) and compared line for line: a write or truncate by a caller without CAP_FSETID clears
/// set-user-ID and set-group-ID (the latter only with group-execute), root's keep them; chown clears them on
/// anything but a directory; a new inode in a set-group-ID directory takes its group and a new directory its bit;
/// and which of atime, mtime and ctime every namespace, attribute and data operation changes on the inodes it
/// touches (the kernel mounted noatime, the engine's read policy). Then xfs_repair -n and rmap check.
/// </summary>
public sealed class WritePosixDetailsTests(ITestOutputHelper output)
{
    const long Old = 1_000_000_000;

    /// <summary>The kernel's side: the same scenario in Python, printing the same lines.</summary>
    const string KernelScript = """
import os, sys, stat
root = sys.argv[1] + '/k'
os.umask(0)
out = []
def as_user(p, fn, gid=0):
    # Opened by root (the scratch folder is not open to others); written or truncated by uid 1000, whose
    # credentials at that moment are what the kernel's file_remove_privs looks at.
    fd = os.open(p, os.O_WRONLY | os.O_APPEND)
    pid = os.fork()
    if pid == 0:
        try:
            os.setgroups([]); os.setgid(gid); os.setuid(1000); fn(fd); os._exit(0)
        except BaseException as e:
            sys.stderr.write(repr(e) + '\n'); os._exit(1)
    _, st = os.waitpid(pid, 0)
    os.close(fd)
    assert st == 0, 'child failed'
def show(tag, p):
    s = os.lstat(p)
    out.append('%s %s %o %d:%d' % (tag, p[len(root):], stat.S_IMODE(s.st_mode), s.st_uid, s.st_gid))
def mkfile(p, mode):
    os.close(os.open(p, os.O_CREAT | os.O_WRONLY, 0o644))
    with open(p, 'wb') as f: f.write(b'0123456789')
    os.chmod(p, mode)
os.mkdir(root, 0o755)
# Privileges on write and truncate.
# uid 1000 in the files' group (gid 0): FUSE's contract for a caller without CAP_FSETID.
for name, mode in [('w1', 0o6777), ('w2', 0o6767), ('w3', 0o6777), ('t1', 0o6777), ('t2', 0o6767), ('t3', 0o6777), ('w4', 0o6767)]:
    mkfile(root + '/' + name, mode)
def append(p):
    with open(p, 'ab') as f: f.write(b'x')
as_user(root + '/w1', lambda fd: os.write(fd, b'x')); as_user(root + '/w2', lambda fd: os.write(fd, b'x')); append(root + '/w3')
as_user(root + '/t1', lambda fd: os.ftruncate(fd, 3)); as_user(root + '/t2', lambda fd: os.ftruncate(fd, 3)); os.truncate(root + '/t3', 3)
for name in ['w1', 'w2', 'w3', 't1', 't2', 't3']: show('priv', root + '/' + name)
# A caller outside the file's group loses set-group-ID even without group-execute (kernel only; see the docs).
as_user(root + '/w4', lambda fd: os.write(fd, b'x'), gid=1000); show('outside-group', root + '/w4')
# chown.
for name, mode in [('c1', 0o6777), ('c2', 0o6767), ('c4', 0o6777)]: mkfile(root + '/' + name, mode)
os.mkdir(root + '/c3', 0o755); os.chmod(root + '/c3', 0o6777)
os.chown(root + '/c1', 5, 6); os.chown(root + '/c2', 5, 6); os.chown(root + '/c3', 5, 6); os.chown(root + '/c4', 5, -1)
for name in ['c1', 'c2', 'c3', 'c4']: show('chown', root + '/' + name)
# A set-group-ID directory.
os.mkdir(root + '/g', 0o755); os.chown(root + '/g', 0, 77); os.chmod(root + '/g', 0o2775)
mkfile(root + '/g/f', 0o644); os.mkdir(root + '/g/d', 0o755); os.symlink('target', root + '/g/l'); os.mknod(root + '/g/p', 0o644 | stat.S_IFIFO)
os.mkdir(root + '/g/d/deeper', 0o700)
for name in ['g', 'g/f', 'g/d', 'g/l', 'g/p', 'g/d/deeper']: show('sgid', root + '/' + name)
# Times: which of atime, mtime, ctime each operation changes.
os.mkdir(root + '/a', 0o755); os.mkdir(root + '/b', 0o755)
mkfile(root + '/a/f', 0o644); mkfile(root + '/b/victim', 0o644); os.link(root + '/b/victim', root + '/a/victim2')
probe = root + '/probe'
mkfile(probe, 0o644)
def times(op, involved, fn):
    involved = [root + '/' + p for p in involved]
    last = 0
    for p in involved:
        os.utime(p, ns=(OLD * 10**9, OLD * 10**9), follow_symlinks=False)
        last = max(last, os.lstat(p).st_ctime_ns)
    # Wait until the kernel's clock has moved past the ctimes just set (no sleep: a probe's ctime shows it).
    while True:
        os.chmod(probe, 0o644)
        if os.lstat(probe).st_ctime_ns > last: break
    before = {p: os.lstat(p) for p in involved}
    fn()
    for p in involved:
        try: s = os.lstat(p)
        except FileNotFoundError: continue
        b = before[p]
        letters = ('a' if s.st_atime_ns != b.st_atime_ns else '') + ('m' if s.st_mtime_ns != b.st_mtime_ns else '') + ('c' if s.st_ctime_ns != b.st_ctime_ns else '')
        out.append('times %s %s %s' % (op, p[len(root):], letters or '-'))
OLD = 1000000000
def read(p):
    with open(p, 'rb') as f: f.read()
times('create', ['a'], lambda: mkfile(root + '/a/new', 0o644))
times('mkdir', ['a'], lambda: os.mkdir(root + '/a/d', 0o755))
times('symlink', ['a'], lambda: os.symlink('t', root + '/a/s'))
times('mknod', ['a'], lambda: os.mknod(root + '/a/p', 0o644 | stat.S_IFIFO))
times('link', ['a', 'b', 'a/f'], lambda: os.link(root + '/a/f', root + '/b/f2'))
times('unlink-one-of-two', ['b', 'a/f', 'b/f2'], lambda: os.unlink(root + '/b/f2'))
times('rename-same-dir', ['a', 'a/f'], lambda: os.rename(root + '/a/f', root + '/a/g'))
times('rename-across', ['a', 'b', 'a/g'], lambda: os.rename(root + '/a/g', root + '/b/g'))
times('rename-dir-across', ['a', 'b', 'a/d'], lambda: os.rename(root + '/a/d', root + '/b/d'))
times('rename-over', ['b', 'a', 'b/g', 'a/victim2'], lambda: os.rename(root + '/b/g', root + '/b/victim'))
times('setxattr', ['b/victim'], lambda: os.setxattr(root + '/b/victim', 'user.x', b'1'))
times('removexattr', ['b/victim'], lambda: os.removexattr(root + '/b/victim', 'user.x'))
times('chmod', ['b/victim'], lambda: os.chmod(root + '/b/victim', 0o600))
times('write', ['b/victim'], lambda: append(root + '/b/victim'))
times('truncate', ['b/victim'], lambda: os.truncate(root + '/b/victim', 1))
times('read', ['b/victim'], lambda: read(root + '/b/victim'))
times('readdir', ['b'], lambda: os.listdir(root + '/b'))
times('rmdir', ['b', 'b/d'], lambda: os.rmdir(root + '/b/d'))
times('unlink-last', ['b', 'a/victim2'], lambda: os.unlink(root + '/a/victim2'))
sys.stdout.write('\n'.join(out) + '\n')
""";

    /// <summary>
    /// A chown through FUSE by a caller without CAP_FSETID comes as SETATTR of the ids with FATTR_KILL_SUIDGID, for
    /// every type but a directory: a fifo, a device or a socket loses set-user-ID and set-group-ID (with
    /// group-execute) as a regular file does (pjdfstest chown/00.t; the kernel's XFS passes it). A directory keeps both.
    /// </summary>
    [Fact]
    public void KillOnChownReachesEveryTypeButDirectories()
    {
        using var scratch = new RepairScratch();
        string image = scratch.CopyFixture("fresh-4ag");
        using (var fs = XfsFileSystem.Open(image, WriteEngineTestSupport.Fast))
        {
            var ns = fs.Namespace;
            var made = new List<(string Name, InodeAttributes Node)>
            {
                ("file", ns.Create(ns.RootIno, "file"u8, 0x1A4, 0, 0)),
                ("dir", ns.Mkdir(ns.RootIno, "dir"u8, 0x1ED, 0, 0)),
                ("fifo", ns.Mknod(ns.RootIno, "fifo"u8, 0x1000 | 0x1A4, 0, 0, 0)),
                ("char", ns.Mknod(ns.RootIno, "char"u8, 0x2000 | 0x1A4, DeviceNumbers.MakeDev(1, 3), 0, 0)),
                ("block", ns.Mknod(ns.RootIno, "block"u8, 0x6000 | 0x1A4, DeviceNumbers.MakeDev(7, 0), 0, 0)),
                ("socket", ns.Mknod(ns.RootIno, "socket"u8, 0xC000 | 0x1A4, 0, 0, 0)),
            };
            foreach (var (name, node) in made)
            {
                ns.SetAttr(node.Handle, new SetAttrRequest(SetAttrMask.Mode, Mode: 0xD6D)); // 06555
                var after = ns.SetAttr(node.Handle, new SetAttrRequest(SetAttrMask.Uid | SetAttrMask.Gid | SetAttrMask.KillSuidGid, Uid: 65534, Gid: 65532));
                int expected = name == "dir" ? 0xD6D : 0x16D; // 06555 stays on a directory; 0555 elsewhere
                Assert.True(expected == after.Permissions, $"{name}: mode {Convert.ToString(after.Permissions, 8)}, expected {Convert.ToString(expected, 8)}");
                Assert.Equal((65534u, 65532u), (after.Uid, after.Gid));
            }
            fs.Close();
        }
        WriteEngineTestSupport.AssertOraclesClean(image, "fresh-4ag");
    }

    [Fact]
    public void PrivilegesSetGroupIdDirectoriesAndTimesAsTheKernel()
    {
        RepairSafetyTests.RequireRoot();
        KernelOracle.RequireRootAndTools();
        using var scratch = new RepairScratch();
        string image = Path.Combine(scratch.Directory, "posix.img");
        TreeFixtures.Run("/usr/bin/truncate", ["-s", "512M", image]);
        TreeFixtures.Run(TreeFixtures.Tool("mkfs.xfs"), ["-q", "-f", "-m", "crc=1,rmapbt=1,reflink=1,finobt=1", image]);

        // The kernel plays its part in /k (noatime: the engine updates no atime on reads, see docs/write-engine.md).
        string mnt = Directory.CreateDirectory(Path.Combine(scratch.Directory, "mnt")).FullName;
        string script = Path.Combine(scratch.Directory, "posix.py");
        File.WriteAllText(script, KernelScript);
        TreeFixtures.Run("/bin/mount", ["-o", "loop,noatime", image, mnt]);
        string kernelText;
        try
        {
            kernelText = TreeFixtures.Run("/usr/bin/python3", [script, mnt]);
        }
        finally
        {
            TreeFixtures.Run("/bin/umount", [mnt]);
        }

        List<string> engine;
        using (var fs = XfsFileSystem.Open(image))
        {
            engine = EngineScenario(fs);
            fs.Close();
        }
        var repair = RepairTools.XfsRepairCheck(image);
        Assert.True(repair.ExitCode == 0, $"xfs_repair -n: {repair}");
        var check = RepairTools.Xfbtree("rmap", "check", image);
        Assert.True(check.ExitCode == 0, $"xfbtree rmap check: {check}");

        var kernel = kernelText.Split('\n', StringSplitOptions.RemoveEmptyEntries).ToList();
        output.WriteLine(string.Join('\n', kernel));
        // The kernel (since set-group-ID stopped marking mandatory locking) also drops set-group-ID without
        // group-execute when the writer is outside the file's group; FUSE's kill flag does not say that, and the
        // engine does what the flag says (docs/write-engine.md).
        Assert.Contains("outside-group /w4 767 0:0", kernel);
        kernel.RemoveAll(l => l.StartsWith("outside-group ", StringComparison.Ordinal));
        Assert.Equal(kernel.Count, engine.Count);
        var differ = kernel.Zip(engine).Where(p => p.First != p.Second).Select(p => $"kernel: {p.First}\nengine: {p.Second}").ToList();
        Assert.True(differ.Count == 0, "the engine and the kernel differ:\n" + string.Join('\n', differ));
        // What the kernel showed is what the rules say (the comparison alone would pass on two equal mistakes).
        Assert.Contains("priv /w1 777 0:0", kernel);
        Assert.Contains("priv /w2 2767 0:0", kernel);
        Assert.Contains("priv /w3 6777 0:0", kernel);
        Assert.Contains("sgid /g/d 2755 0:77", kernel);
        Assert.Contains("times link /a/f c", kernel);
        Assert.Contains("times read /b/victim -", kernel);
    }

    /// <summary>The engine's side of <see cref="KernelScript"/>, through the path API, printing the same lines.</summary>
    static List<string> EngineScenario(XfsFileSystem fs)
    {
        var ns = fs.Namespace;
        const string root = "/e";
        var lines = new List<string>();
        void Show(string tag, string p)
        {
            var a = ns.Resolve(p);
            lines.Add($"{tag} {p[root.Length..]} {Convert.ToString(a.Permissions, 8)} {a.Uid}:{a.Gid}");
        }
        InodeHandle H(string p) => ns.Resolve(p).Handle;
        void MakeFile(string p, int mode)
        {
            fs.Create(p);
            fs.Write(p, 0, "0123456789"u8);
            ns.Chmod(p, mode);
        }
        ns.Mkdir(root);

        foreach (var (name, mode) in new[] { ("w1", 0xDFF), ("w2", 0xDF7), ("w3", 0xDFF), ("t1", 0xDFF), ("t2", 0xDF7), ("t3", 0xDFF) })
            MakeFile($"{root}/{name}", mode);
        // A caller without CAP_FSETID asks for the kill (as FUSE does for it); root does not.
        fs.Files.Write(H($"{root}/w1"), 10, "x"u8, FileWriteFlags.KillSuidGid);
        fs.Files.Write(H($"{root}/w2"), 10, "x"u8, FileWriteFlags.KillSuidGid);
        fs.Files.Write(H($"{root}/w3"), 10, "x"u8);
        ns.SetAttr(H($"{root}/t1"), new SetAttrRequest(SetAttrMask.Size | SetAttrMask.KillSuidGid, Size: 3));
        fs.Files.Truncate(H($"{root}/t2"), 3, FileWriteFlags.KillSuidGid);
        fs.Truncate($"{root}/t3", 3);
        foreach (var name in new[] { "w1", "w2", "w3", "t1", "t2", "t3" }) Show("priv", $"{root}/{name}");

        foreach (var (name, mode) in new[] { ("c1", 0xDFF), ("c2", 0xDF7), ("c4", 0xDFF) }) MakeFile($"{root}/{name}", mode);
        ns.Mkdir($"{root}/c3");
        ns.Chmod($"{root}/c3", 0xDFF);
        ns.Chown($"{root}/c1", 5, 6);
        ns.Chown($"{root}/c2", 5, 6);
        ns.Chown($"{root}/c3", 5, 6);
        ns.Chown($"{root}/c4", 5, null);
        foreach (var name in new[] { "c1", "c2", "c3", "c4" }) Show("chown", $"{root}/{name}");

        ns.Mkdir($"{root}/g");
        ns.Chown($"{root}/g", 0, 77);
        ns.Chmod($"{root}/g", 0x5FD);
        MakeFile($"{root}/g/f", 0x1A4);
        ns.Mkdir($"{root}/g/d");
        fs.Symlink("target", $"{root}/g/l");
        fs.Mknod($"{root}/g/p", 0x1000 | 0x1A4, 0);
        ns.Mkdir($"{root}/g/d/deeper", 0x1C0);
        foreach (var name in new[] { "g", "g/f", "g/d", "g/l", "g/p", "g/d/deeper" }) Show("sgid", $"{root}/{name}");

        ns.Mkdir($"{root}/a");
        ns.Mkdir($"{root}/b");
        MakeFile($"{root}/a/f", 0x1A4);
        MakeFile($"{root}/b/victim", 0x1A4);
        ns.Link($"{root}/b/victim", $"{root}/a/victim2");
        var old = new InodeTime(Old, 0);
        void Times(string op, string[] involved, Action body)
        {
            var paths = involved.Select(p => $"{root}/{p}").ToArray();
            // ctime set old too (the engine lets a caller give it): then "now" differs from it.
            foreach (var p in paths) ns.SetAttr(H(p), new SetAttrRequest(SetAttrMask.Atime | SetAttrMask.Mtime | SetAttrMask.Ctime, Atime: old, Mtime: old, Ctime: old));
            var before = paths.ToDictionary(p => p, p => ns.Resolve(p));
            body();
            foreach (var p in paths)
            {
                InodeAttributes a;
                try { a = ns.Resolve(p); }
                catch (XfsWriteException e) when (e.Kind == WriteErrorKind.NotFound) { continue; }
                var b = before[p];
                string letters = (a.Atime != b.Atime ? "a" : "") + (a.Mtime != b.Mtime ? "m" : "") + (a.Ctime != b.Ctime ? "c" : "");
                lines.Add($"times {op} {p[root.Length..]} {(letters.Length == 0 ? "-" : letters)}");
            }
        }
        var buffer = new byte[64];
        Times("create", ["a"], () => MakeFileNoChmod($"{root}/a/new"));
        Times("mkdir", ["a"], () => ns.Mkdir($"{root}/a/d"));
        Times("symlink", ["a"], () => fs.Symlink("t", $"{root}/a/s"));
        Times("mknod", ["a"], () => fs.Mknod($"{root}/a/p", 0x1000 | 0x1A4, 0));
        Times("link", ["a", "b", "a/f"], () => ns.Link($"{root}/a/f", $"{root}/b/f2"));
        Times("unlink-one-of-two", ["b", "a/f", "b/f2"], () => fs.Unlink($"{root}/b/f2"));
        Times("rename-same-dir", ["a", "a/f"], () => ns.Rename($"{root}/a/f", $"{root}/a/g"));
        Times("rename-across", ["a", "b", "a/g"], () => ns.Rename($"{root}/a/g", $"{root}/b/g"));
        Times("rename-dir-across", ["a", "b", "a/d"], () => ns.Rename($"{root}/a/d", $"{root}/b/d"));
        Times("rename-over", ["b", "a", "b/g", "a/victim2"], () => ns.Rename($"{root}/b/g", $"{root}/b/victim"));
        Times("setxattr", ["b/victim"], () => fs.SetXattr(fs.Lookup($"{root}/b/victim"), "user.x", "1"u8));
        Times("removexattr", ["b/victim"], () => fs.RemoveXattr(fs.Lookup($"{root}/b/victim"), "user.x"));
        Times("chmod", ["b/victim"], () => ns.Chmod($"{root}/b/victim", 0x180));
        Times("write", ["b/victim"], () => fs.Write($"{root}/b/victim", ns.Resolve($"{root}/b/victim").Size, "x"u8));
        Times("truncate", ["b/victim"], () => fs.Truncate($"{root}/b/victim", 1));
        Times("read", ["b/victim"], () => fs.Read($"{root}/b/victim", 0, buffer));
        Times("readdir", ["b"], () => fs.List($"{root}/b"));
        Times("rmdir", ["b", "b/d"], () => fs.Rmdir($"{root}/b/d"));
        Times("unlink-last", ["b", "a/victim2"], () => fs.Unlink($"{root}/a/victim2"));
        return lines;

        void MakeFileNoChmod(string p)
        {
            fs.Create(p);
            fs.Write(p, 0, "0123456789"u8);
        }
    }
}
