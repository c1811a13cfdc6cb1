using System.Collections.Concurrent;
using Xfbtree.Cli;
using Xfbtree.Xfs.Write;
using Xfbtree.Xfs.Write.Namespace;
using Xfbtree.Cli.Stress;

namespace Xfbtree.Xfs.Tests.Write;

/// <summary>
/// The stress harness itself, without the engine: the file-contents model against a flat byte array, the io command
/// parser, and the runner on an in-memory stand-in filesystem (correct, out of space at random, or with a planted
/// bug the verification must catch), the op log and its replay.
/// </summary>
public sealed class WriteStressHarnessTests
{
    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    public void WriteStressFileContentsMatchAFlatArray(int seed)
    {
        var random = new Random(seed);
        var model = new FileContents();
        var flat = new byte[300_000];
        long size = 0;
        for (int step = 0; step < 3000; step++)
        {
            long offset = random.NextInt64(flat.Length - 70_000);
            int length = random.Next(1, 70_000);
            switch (random.Next(5))
            {
                case 0:
                    var data = new byte[length];
                    StressData.Fill(data, random.Next());
                    if (random.Next(4) == 0) Array.Clear(data);
                    model.Write(offset, data);
                    data.CopyTo(flat, offset);
                    size = Math.Max(size, offset + length);
                    break;
                case 1:
                    model.Zero(offset, length);
                    Array.Clear(flat, (int)offset, length);
                    break;
                case 2:
                    long newSize = random.NextInt64(flat.Length);
                    model.SetSize(newSize);
                    if (newSize < size) Array.Clear(flat, (int)newSize, (int)(size - newSize));
                    size = newSize;
                    break;
                case 3:
                    var source = model.Clone();
                    long from = random.NextInt64(flat.Length - length);
                    model.CopyFrom(source, from, offset, length);
                    var copied = new byte[length];
                    Array.Copy(flat, from, copied, 0, (int)Math.Max(0, Math.Min(length, size - from)));
                    copied.CopyTo(flat, offset);
                    size = Math.Max(size, offset + length);
                    break;
                default:
                    model.ExtendTo(offset + length);
                    size = Math.Max(size, offset + length);
                    break;
            }
            Assert.Equal(size, model.Size);
            var read = new byte[80_000];
            long at = random.NextInt64(flat.Length);
            int n = model.Read(at, read);
            Assert.Equal((int)Math.Clamp(size - at, 0, read.Length), n);
            Assert.True(read.AsSpan(0, n).SequenceEqual(flat.AsSpan((int)at, n)), $"step {step}: read at {at} differs");
        }
        var whole = new byte[size];
        Assert.Equal((int)size, model.Read(0, whole));
        Assert.Equal(Convert.ToHexStringLower(System.Security.Cryptography.SHA256.HashData(whole)), model.Sha256Hex());
        Assert.True(model.ChunkBytes <= (size / FileContents.ChunkSize + 1) * FileContents.ChunkSize);
    }

    [Theory]
    [InlineData("4096", 4096)]
    [InlineData("4k", 4096)]
    [InlineData("4K", 4096)]
    [InlineData("3m", 3L << 20)]
    [InlineData("2g", 2L << 30)]
    [InlineData("1t", 1L << 40)]
    [InlineData("0x1000", 4096)]
    [InlineData("0", 0)]
    public void WriteCliSizesTakeSuffixes(string text, long expected) => Assert.Equal(expected, IoOperation.ParseSize(text));

    [Theory]
    [InlineData("")]
    [InlineData("-1")]
    [InlineData("4q")]
    [InlineData("k")]
    [InlineData("1.5m")]
    [InlineData("99999999999999999999")]
    [InlineData("9999999999999g")]
    public void WriteCliBadSizesAreRefused(string text) => Assert.Throws<FormatException>(() => IoOperation.ParseSize(text));

    [Fact]
    public void WriteCliCommandsParse()
    {
        var w = IoOperation.Parse("pwrite /a/b 4k 1m");
        Assert.Equal(("pwrite", "/a/b", 4096L, 1L << 20, (byte)0xcd), (w.Name, w.Paths[0], w.Numbers[0], w.Numbers[1], w.Fill));
        Assert.Equal((byte)0x41, IoOperation.Parse("pwrite -S 0x41 /f 0 1").Fill);
        Assert.Equal((byte)7, IoOperation.Parse("pwrite /f 0 1 -S 7").Fill);
        var r = IoOperation.Parse("reflink /s 0 '/d x' 8k 4k");
        Assert.Equal(["/s", "/d x"], r.Paths);
        Assert.Equal([0L, 8192L, 4096L], r.Numbers);
        Assert.Equal("/dir", IoOperation.Parse("  ls   /dir ").Paths[0]);
        foreach (string bad in new[]
                 {
                     "", "frob /a", "pwrite /a 0", "pwrite a 0 1", "pwrite /a 0 1 -S 256", "pwrite /a 0 1 -S", "pread /a 0 1 -S 1",
                     "truncate /a", "reflink /a 0 /b 0", "create", "create /a /b", "ls '/a", "pwrite /a 9223372036854775807 2",
                 })
        {
            Assert.Throws<FormatException>(() => IoOperation.Parse(bad));
        }
    }

    [Theory]
    [InlineData(1, 1)]
    [InlineData(2, 2)]
    [InlineData(3, 4)]
    public void WriteStressRunnerOnAStandInKeepsModelAndImageEqual(int seed, int threads)
    {
        var fake = FakeTarget.Populated(seed);
        var model = StressModel.Load(fake, seed, new StressModelOptions { MaxFileSize = 256 << 10, MaxInitialFiles = 6 });
        Assert.Equal(6, model.FileCount);
        Assert.Equal(3, model.DirectoryCount);
        Assert.IsType<ForeignEntry>(model.Find("/old/big"));
        Assert.IsType<ForeignEntry>(model.Find("/old/socket"));
        var result = new StressRunner(fake, model, new StressOptions { Ops = 4000, Threads = threads, Seed = seed }).Run();
        Assert.True(result.Problems.Count == 0, string.Join('\n', result.Problems));
        Assert.Equal(4000, result.Total);
        foreach (StressOpKind kind in Enum.GetValues<StressOpKind>())
        {
            Assert.True(result.Succeeded(kind) > 0, $"{kind} never succeeded");
        }
        Assert.Empty(model.Verify(fake));
        Assert.True(fake.MaxFileSize <= 256 << 10);
    }

    [Fact]
    public void WriteStressRunnerLeavesTheModelAloneWhenTheTargetIsOutOfSpace()
    {
        var fake = FakeTarget.Populated(5);
        fake.NoSpaceOneIn = 5;
        var model = StressModel.Load(fake, 5);
        var result = new StressRunner(fake, model, new StressOptions { Ops = 3000, Threads = 3, Seed = 5 }).Run();
        Assert.True(result.Problems.Count == 0, string.Join('\n', result.Problems));
        Assert.True(result.FailedTotal(WriteErrorKind.NoSpace) > 300, $"{result.FailedTotal(WriteErrorKind.NoSpace)} NoSpace outcomes");
        Assert.Empty(model.Verify(fake));
    }

    [Theory]
    [InlineData(FakeBug.WriteOneByteOff)]
    [InlineData(FakeBug.PunchForgetsLastByte)]
    [InlineData(FakeBug.ReflinkCopiesOneBlockShort)]
    [InlineData(FakeBug.TruncateKeepsTail)]
    [InlineData(FakeBug.UnlinkLeavesName)]
    [InlineData(FakeBug.CreateExistingSucceeds)]
    [InlineData(FakeBug.LinkCopiesTheFile)]
    [InlineData(FakeBug.UnlinkDropsEveryName)]
    [InlineData(FakeBug.SetXattrDropsLastByte)]
    [InlineData(FakeBug.RemoveXattrKeepsIt)]
    public void WriteStressRunnerCatchesAPlantedBug(FakeBug bug)
    {
        var fake = FakeTarget.Populated(7);
        var model = StressModel.Load(fake, 7);
        fake.Bug = bug;
        var result = new StressRunner(fake, model, new StressOptions { Ops = 3000, Threads = 2, Seed = 7 }).Run();
        var found = result.Problems.Concat(model.Verify(fake)).ToList();
        Assert.True(found.Count > 0, $"{bug} went unnoticed");
    }

    /// <summary>A run that starts healthy fails on the first Corrupt outcome (the write verifier's "corrupt
    /// rmapbt" under healthy writers went by as an allowed outcome), and names it.</summary>
    [Fact]
    public void WriteStressCorruptOutcomeOnAHealthyStartIsAProblem()
    {
        var fake = FakeTarget.Populated(3);
        var model = StressModel.Load(fake, 3);
        fake.CorruptOneIn = 50;
        var result = new StressRunner(fake, model, new StressOptions { Ops = 500, Threads = 2, Seed = 3 }).Run();
        Assert.True(result.FailedTotal(WriteErrorKind.Corrupt) > 0, "no Corrupt outcome was injected");
        Assert.Contains(result.Problems, p => p.Contains("Corrupt on a run that started healthy", StringComparison.Ordinal));
        Assert.Contains(result.Problems, p => p.Contains("AG 0 was healthy at the start and is marked sick", StringComparison.Ordinal));
        Assert.StartsWith("health: FAILED: healthy at the start", result.HealthLine(), StringComparison.Ordinal);
    }

    /// <summary>An AG that turns sick with no Corrupt outcome (a background job found it) fails a healthy run too.</summary>
    [Fact]
    public void WriteStressAgSickAtTheEndOfAHealthyStartIsAProblem()
    {
        var fake = FakeTarget.Populated(4);
        var model = StressModel.Load(fake, 4);
        var result = new StressRunner(fake, model, new StressOptions { Ops = 200, Threads = 1, Seed = 4, Background = new MarkSickLater(fake) }).Run();
        Assert.Equal(0, result.FailedTotal(WriteErrorKind.Corrupt));
        Assert.Equal(["AG 2 was healthy at the start and is marked sick: found by the background job"], result.Problems);
    }

    private sealed class MarkSickLater(FakeTarget fake) : IStressBackground
    {
        public void Run(Func<bool> workloadDone) => fake.Sick.TryAdd(2, "found by the background job");
    }

    /// <summary>A run that starts from damage may see Corrupt, but only for the damaged AG while it is sick.</summary>
    [Fact]
    public void WriteStressCorruptOutcomeIsAllowedOnlyForTheAgDamagedAtTheStart()
    {
        var fake = FakeTarget.Populated(5);
        var model = StressModel.Load(fake, 5);
        fake.Sick.TryAdd(1, "damaged before the run");
        fake.CorruptOneIn = 50;
        fake.CorruptAg = 1;
        var allowed = new StressRunner(fake, model, new StressOptions { Ops = 500, Threads = 2, Seed = 5 }).Run();
        Assert.True(allowed.FailedTotal(WriteErrorKind.Corrupt) > 0, "no Corrupt outcome was injected");
        Assert.True(allowed.Problems.Count == 0, string.Join('\n', allowed.Problems));
        Assert.StartsWith("health: damaged at the start: AG 1;", allowed.HealthLine(), StringComparison.Ordinal);

        fake.CorruptAg = 3; // another AG found corrupt: not explained by the starting damage
        var other = new StressRunner(fake, model, new StressOptions { Ops = 500, Threads = 2, Seed = 6 }).Run();
        Assert.Contains(other.Problems, p => p.Contains("Corrupt in AG 3, which was not a damaged AG still sick", StringComparison.Ordinal));

        var healed = FakeTarget.Populated(6);
        var healedModel = StressModel.Load(healed, 6);
        healed.Sick.TryAdd(1, "damaged before the run");
        var repair = new RepairThenCorrupt(healed);
        var afterRepair = new StressRunner(healed, healedModel, new StressOptions { Ops = 300, Threads = 1, Seed = 6, Background = repair }).Run();
        Assert.Contains(afterRepair.Problems, p => p.Contains("Corrupt in AG 1, which was not a damaged AG still sick", StringComparison.Ordinal));
    }

    /// <summary>Repairs AG 1 before the workload's first operation (which waits for it: on a busy machine this
    /// thread may otherwise start after the last one); corruption in AG 1 is injected only after that.</summary>
    private sealed class RepairThenCorrupt : IStressBackground
    {
        readonly FakeTarget _fake;

        public RepairThenCorrupt(FakeTarget fake)
        {
            _fake = fake;
            fake.OperationsWaitFor = new ManualResetEventSlim(false);
        }

        public void Run(Func<bool> workloadDone)
        {
            _fake.Sick.TryRemove(1, out _);
            _fake.CorruptAg = 1;
            _fake.CorruptOneIn = 20;
            _fake.OperationsWaitFor!.Set();
        }
    }

    [Fact]
    public void WriteStressOpLogReplaysToTheSameState()
    {
        string dir = Directory.CreateTempSubdirectory("xfbtree-oplog-").FullName;
        try
        {
            var fake = FakeTarget.Populated(11);
            fake.NoSpaceOneIn = 9;
            var model = StressModel.Load(fake, 11);
            var initial = model.Clone();
            string logPath = Path.Combine(dir, "ops.log");
            using (var log = new StressOpLogFile(logPath))
            {
                var result = new StressRunner(fake, model, new StressOptions { Ops = 1500, Threads = 1, Seed = 11, OpLog = log }).Run();
                Assert.Empty(result.Problems);
            }
            var entries = StressOpLogFile.Read(logPath);
            Assert.Equal(1500, entries.Count);
            Assert.Equal(Enumerable.Range(1, 1500).Select(i => (long)i), entries.Select(e => e.Index));
            Assert.All(entries, e => Assert.NotNull(e.Outcome));
            Assert.Contains(entries, e => e.Outcome is { Committed: false, Error: WriteErrorKind.NoSpace });
            foreach (var entry in entries)
            {
                if (entry.Outcome!.Value.Committed) initial.Apply(entry.Op);
            }
            Assert.Empty(initial.Verify(fake));

            // A kill tears the last line: the reader keeps the complete ones.
            string text = File.ReadAllText(logPath);
            File.WriteAllText(logPath, text[..^5]);
            var torn = StressOpLogFile.Read(logPath);
            Assert.Equal(1500, torn.Count);
            Assert.Null(torn[^1].Outcome);
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }

    [Fact]
    public void WriteStressOneThreadReplaysExactly()
    {
        string dir = Directory.CreateTempSubdirectory("xfbtree-replay-").FullName;
        try
        {
            var logs = new List<string>();
            for (int run = 0; run < 2; run++)
            {
                var fake = FakeTarget.Populated(13);
                fake.NoSpaceOneIn = 7;
                var model = StressModel.Load(fake, 13);
                string path = Path.Combine(dir, $"run{run}.log");
                using (var log = new StressOpLogFile(path))
                {
                    Assert.Empty(new StressRunner(fake, model, new StressOptions { Ops = 800, Threads = 1, Seed = 13, OpLog = log }).Run().Problems);
                }
                logs.Add(File.ReadAllText(path));
            }
            Assert.Equal(logs[0], logs[1]);
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }

    [Fact]
    public void WriteStressManifestListsEveryModelFile()
    {
        var fake = FakeTarget.Populated(3);
        var model = StressModel.Load(fake, 3);
        new StressRunner(fake, model, new StressOptions { Ops = 500, Threads = 2, Seed = 3 }).Run();
        var text = new StringWriter();
        model.WriteManifest(text);
        var lines = text.ToString().Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal(StressModel.ManifestHeader, lines[0]);
        var files = lines.Skip(1).Select(l => l.Split('\t')).Where(f => f[1] == "f").ToList();
        Assert.Equal(model.FileCount, files.Count);
        Assert.Equal(model.DirectoryCount, lines.Skip(1).Count(l => l.Split('\t')[1] == "d"));
        foreach (var fields in files)
        {
            Assert.Equal(9, fields.Length);
            Assert.StartsWith("/", fields[0], StringComparison.Ordinal);
            Assert.Equal(Convert.ToString(fake.GetAttr(fields[0]).Permissions, 8), fields[2]);
            Assert.Equal(fake.GetAttr(fields[0]).Links.ToString(System.Globalization.CultureInfo.InvariantCulture), fields[5]);
            var bytes = fake.Contents(fields[0]);
            Assert.Equal(bytes.Length, long.Parse(fields[6], System.Globalization.CultureInfo.InvariantCulture));
            Assert.Equal(Convert.ToHexStringLower(System.Security.Cryptography.SHA256.HashData(bytes)), fields[7]);
            Assert.Equal(StressModel.XattrDigest(fake.ListXattrs(fields[0])), fields[8]);
        }
        // The workload made hard links and set attributes, and the manifest shows them.
        Assert.Contains(files, f => f[5] != "1");
        Assert.Contains(lines.Skip(1), l => l.Split('\t')[8] != "-");
    }

    /// <summary>The XATTRS digest is what the issue defines: sha256 over the sorted "name=value\n" lines.</summary>
    [Fact]
    public void WriteStressXattrDigestIsTheSortedNameValueLines()
    {
        Assert.Equal("-", StressModel.XattrDigest(Array.Empty<(string, byte[])>()));
        var digest = StressModel.XattrDigest([("user.b", "2"u8.ToArray()), ("trusted.a", "1"u8.ToArray())]);
        Assert.Equal(Convert.ToHexStringLower(System.Security.Cryptography.SHA256.HashData("trusted.a=1\nuser.b=2\n"u8)), digest);
        var engine = Xfbtree.Xfs.Write.Attributes.AttributeOperations.DigestOf(
            [(new Xfbtree.Xfs.Attributes.XattrName(Xfbtree.Xfs.Attributes.XattrNamespace.User, "b"u8.ToArray()), "2"u8.ToArray()),
             (new Xfbtree.Xfs.Attributes.XattrName(Xfbtree.Xfs.Attributes.XattrNamespace.Trusted, "a"u8.ToArray()), "1"u8.ToArray())]);
        Assert.Equal(engine, digest);
    }
}

public enum FakeBug
{
    None, WriteOneByteOff, PunchForgetsLastByte, ReflinkCopiesOneBlockShort, TruncateKeepsTail, UnlinkLeavesName, CreateExistingSucceeds,
    /// <summary>A hard link gets a copy of the file: a write through one name is not seen through the other.</summary>
    LinkCopiesTheFile,
    /// <summary>Unlinking one name of a hard-linked file removes all of them.</summary>
    UnlinkDropsEveryName,
    /// <summary>A value longer than 1000 bytes is stored one byte short.</summary>
    SetXattrDropsLastByte,
    /// <summary>removexattr answers success and keeps the attribute.</summary>
    RemoveXattrKeepsIt,
}

/// <summary>
/// An in-memory filesystem with the engine's semantics (one global lock), optionally out of space at random (the
/// operation then changes nothing) or with one planted bug.
/// </summary>
internal sealed class FakeTarget : IStressTarget
{
    readonly Lock _gate = new();
    readonly Dictionary<string, FileContents?> _nodes = new(StringComparer.Ordinal) { ["/"] = null };
    readonly HashSet<string> _foreign = new(StringComparer.Ordinal);
    readonly Random _faults = new(42);
    ulong _nextIno = 128;
    readonly Dictionary<string, ulong> _inos = new(StringComparer.Ordinal) { ["/"] = 128 };
    /// <summary>Symlinks and special files: kept in <see cref="_nodes"/> as null, told apart here.</summary>
    readonly Dictionary<string, (InodeType Type, string Target, ulong Rdev)> _leaves = new(StringComparer.Ordinal);
    /// <summary>Permission bits and owner of every inode that has them set (default 0644 / 0755, 0:0).</summary>
    readonly Dictionary<ulong, (int Mode, uint Uid, uint Gid)> _attributes = new();
    /// <summary>Extended attributes by inode.</summary>
    readonly Dictionary<ulong, SortedDictionary<string, byte[]>> _xattrs = new();

    public int BlockSize => 4096;
    public int NoSpaceOneIn { get; set; }
    /// <summary>One operation in this many fails with Corrupt naming <see cref="CorruptAg"/> (0: never).</summary>
    public int CorruptOneIn { get; set; }
    public uint CorruptAg { get; set; }
    /// <summary>When set, every operation waits for it first (a background job's setup before the workload).</summary>
    public ManualResetEventSlim? OperationsWaitFor { get; set; }
    /// <summary>The stand-in's sick AGs (what <see cref="SickAgs"/> reports).</summary>
    public ConcurrentDictionary<uint, string> Sick { get; } = new();
    public FakeBug Bug { get; set; }
    public long MaxFileSize { get; private set; }

    /// <summary>Some directories, adoptable files with data, a big file and a non-file the model must leave alone.</summary>
    public static FakeTarget Populated(int seed)
    {
        var fake = new FakeTarget();
        var random = new Random(seed);
        fake.Mkdir("/old");
        fake.Mkdir("/old/sub");
        for (int i = 0; i < 12; i++)
        {
            string path = i % 2 == 0 ? $"/old/file{i}" : $"/old/sub/file{i}";
            fake.Create(path);
            var data = new byte[random.Next(1, 100_000)];
            StressData.Fill(data, i);
            fake.Write(path, random.Next(10_000), data);
        }
        fake.Create("/old/big");
        fake.Truncate("/old/big", 64L << 20);
        fake._nodes["/old/socket"] = null;
        fake._foreign.Add("/old/socket");
        fake._inos["/old/socket"] = ++fake._nextIno;
        fake.MaxFileSize = 0;
        return fake;
    }

    public byte[] Contents(string path)
    {
        lock (_gate)
        {
            var c = _nodes[path]!;
            var bytes = new byte[c.Size];
            c.Read(0, bytes);
            return bytes;
        }
    }

    FileContents File(string path)
    {
        if (!_nodes.TryGetValue(path, out var c)) throw new XfsWriteException(WriteErrorKind.NotFound, $"{path}: not found");
        return c ?? throw new XfsWriteException(WriteErrorKind.IsDirectory, $"{path}: not a regular file");
    }

    void MaybeNoSpace()
    {
        OperationsWaitFor?.Wait();
        if (NoSpaceOneIn > 0 && _faults.Next(NoSpaceOneIn) == 0) throw new XfsWriteException(WriteErrorKind.NoSpace, "no space (injected)");
        if (CorruptOneIn > 0 && _faults.Next(CorruptOneIn) == 0)
        {
            Sick.TryAdd(CorruptAg, "corruption injected");
            throw new XfsWriteException(WriteErrorKind.Corrupt, $"AG {CorruptAg} is corrupt (injected); the AG is marked sick") { AgNumber = CorruptAg };
        }
    }

    public IReadOnlyList<(uint Ag, string Reason)> SickAgs() => Sick.OrderBy(p => p.Key).Select(p => (p.Key, p.Value)).ToList();

    void Track(FileContents c) => MaxFileSize = Math.Max(MaxFileSize, c.Size);

    static string Parent(string path) => path.LastIndexOf('/') <= 0 ? "/" : path[..path.LastIndexOf('/')];

    bool IsDirectory(string path) => _nodes.TryGetValue(path, out var c) && c is null && !_foreign.Contains(path) && !_leaves.ContainsKey(path);

    InodeType TypeOf(string path) => _leaves.TryGetValue(path, out var l) ? l.Type
        : _foreign.Contains(path) ? InodeType.Socket : _nodes[path] is null ? InodeType.Directory : InodeType.RegularFile;

    (int Mode, uint Uid, uint Gid) AttributesOf(string path)
        => _attributes.TryGetValue(_inos[path], out var a) ? a : (TypeOf(path) switch { InodeType.Directory => 0x1ED, InodeType.Symlink => 0x1FF, _ => 0x1A4 }, 0u, 0u);

    uint LinksOf(string path)
    {
        ulong ino = _inos[path];
        return (uint)_inos.Values.Count(i => i == ino);
    }

    /// <summary>Forgets the name; the inode's attributes go with its last name.</summary>
    void DropName(string path)
    {
        ulong ino = _inos[path];
        _nodes.Remove(path);
        _inos.Remove(path);
        _leaves.Remove(path);
        if (!_inos.ContainsValue(ino))
        {
            _attributes.Remove(ino);
            _xattrs.Remove(ino);
        }
    }

    public void Link(string existing, string newPath)
    {
        lock (_gate)
        {
            var contents = File(existing);
            Add(newPath, Bug == FakeBug.LinkCopiesTheFile ? contents.Clone() : contents);
            _inos[newPath] = _inos[existing];
        }
    }

    public void SetXattr(string path, string name, ReadOnlySpan<byte> value, Xfbtree.Xfs.Write.Attributes.XattrSetFlags flags)
    {
        lock (_gate)
        {
            if (!_inos.TryGetValue(path, out ulong ino)) throw new XfsWriteException(WriteErrorKind.NotFound, $"{path}: not found");
            if (!_xattrs.TryGetValue(ino, out var attributes)) _xattrs[ino] = attributes = new(StringComparer.Ordinal);
            bool present = attributes.ContainsKey(name);
            if (present && flags == Xfbtree.Xfs.Write.Attributes.XattrSetFlags.Create) throw new XfsWriteException(WriteErrorKind.Exists, $"{path}: {name} exists");
            if (!present && flags == Xfbtree.Xfs.Write.Attributes.XattrSetFlags.Replace) throw new XfsWriteException(WriteErrorKind.NoData, $"{path}: no {name}");
            MaybeNoSpace();
            attributes[name] = Bug == FakeBug.SetXattrDropsLastByte && value.Length > 1000 ? value[..^1].ToArray() : value.ToArray();
        }
    }

    public void RemoveXattr(string path, string name)
    {
        lock (_gate)
        {
            if (!_inos.TryGetValue(path, out ulong ino)) throw new XfsWriteException(WriteErrorKind.NotFound, $"{path}: not found");
            if (!_xattrs.TryGetValue(ino, out var attributes) || !(Bug == FakeBug.RemoveXattrKeepsIt ? attributes.ContainsKey(name) : attributes.Remove(name))) throw new XfsWriteException(WriteErrorKind.NoData, $"{path}: no {name}");
        }
    }

    public IReadOnlyList<(string Name, byte[] Value)> ListXattrs(string path)
    {
        lock (_gate)
        {
            if (!_inos.TryGetValue(path, out ulong ino)) throw new XfsWriteException(WriteErrorKind.NotFound, $"{path}: not found");
            return _xattrs.TryGetValue(ino, out var attributes) ? attributes.Select(a => (a.Key, a.Value)).ToList() : [];
        }
    }

    public InodeAttributes GetAttr(string path)
    {
        lock (_gate)
        {
            if (!_nodes.TryGetValue(path, out var c)) throw new XfsWriteException(WriteErrorKind.NotFound, $"{path}: not found");
            var (mode, uid, gid) = AttributesOf(path);
            var type = TypeOf(path);
            int typeBits = type switch
            {
                InodeType.Directory => 0x4000, InodeType.Symlink => 0xA000, InodeType.Socket => 0xC000, InodeType.Fifo => 0x1000,
                InodeType.CharDevice => 0x2000, InodeType.BlockDevice => 0x6000, _ => 0x8000,
            };
            ulong rdev = _leaves.TryGetValue(path, out var l) ? l.Rdev : 0;
            return new InodeAttributes(_inos[path], 0, (ushort)(typeBits | mode), uid, gid, LinksOf(path), c?.Size ?? 0, 0, BlockSize, rdev, default, default, default, default);
        }
    }

    public void Rename(string source, string destination, RenameFlags flags)
    {
        lock (_gate)
        {
            if (!_nodes.TryGetValue(source, out var moving) || moving is null) throw new XfsWriteException(WriteErrorKind.NotFound, $"{source}: not a file");
            bool exists = _nodes.TryGetValue(destination, out var replaced);
            if (exists && (flags & RenameFlags.NoReplace) != 0) throw new XfsWriteException(WriteErrorKind.Exists, $"{destination}: exists");
            if (!exists && flags == RenameFlags.Exchange) throw new XfsWriteException(WriteErrorKind.NotFound, $"{destination}: not found");
            if (exists && replaced is null) throw new XfsWriteException(WriteErrorKind.IsDirectory, $"{destination}: not a file");
            if (!IsDirectory(Parent(destination))) throw new XfsWriteException(WriteErrorKind.NotFound, $"{Parent(destination)}: no such directory");
            ulong movingIno = _inos[source];
            if (exists && _inos[destination] == movingIno) return; // two names of one inode: nothing happens
            if (flags == RenameFlags.Exchange)
            {
                (_inos[source], _inos[destination]) = (_inos[destination], movingIno);
                (_nodes[source], _nodes[destination]) = (replaced, moving);
                return;
            }
            if (exists) DropName(destination);
            _nodes.Remove(source);
            _inos.Remove(source);
            _nodes[destination] = moving;
            _inos[destination] = movingIno;
            if ((flags & RenameFlags.Whiteout) != 0)
            {
                // The source name becomes a whiteout: a character device 0:0, mode 0, owned 0:0 (the group of a
                // set-group-ID destination directory).
                _nodes[source] = null;
                _inos[source] = ++_nextIno;
                _leaves[source] = (InodeType.CharDevice, "", 0);
                var into = AttributesOf(Parent(destination));
                _attributes[_inos[source]] = (0, 0, (into.Mode & 0x400) != 0 ? into.Gid : 0);
            }
        }
    }

    void AddLeaf(string path, InodeType type, string target, ulong rdev, int mode)
    {
        lock (_gate)
        {
            Add(path, null);
            _leaves[path] = (type, target, rdev);
            _attributes[_inos[path]] = (mode, 0, 0);
            Inherit(path);
        }
    }

    public void Symlink(string target, string path) => AddLeaf(path, InodeType.Symlink, target, 0, 0x1FF);

    public string ReadLink(string path)
    {
        lock (_gate)
        {
            return _leaves.TryGetValue(path, out var l) && l.Type == InodeType.Symlink ? l.Target
                : throw new XfsWriteException(WriteErrorKind.InvalidArgument, $"{path}: not a symlink");
        }
    }

    public void Mknod(string path, int mode, ulong rdev)
    {
        var type = (mode & 0xF000) switch { 0x1000 => InodeType.Fifo, 0xC000 => InodeType.Socket, 0x2000 => InodeType.CharDevice, _ => InodeType.BlockDevice };
        AddLeaf(path, type, "", type is InodeType.CharDevice or InodeType.BlockDevice ? rdev : 0, mode & 0xFFF);
    }

    public void Chmod(string path, int mode)
    {
        lock (_gate)
        {
            if (!_nodes.ContainsKey(path)) throw new XfsWriteException(WriteErrorKind.NotFound, $"{path}: not found");
            var a = AttributesOf(path);
            _attributes[_inos[path]] = (mode & 0xFFF, a.Uid, a.Gid);
        }
    }

    public void Chown(string path, uint uid, uint gid)
    {
        lock (_gate)
        {
            if (!_nodes.ContainsKey(path)) throw new XfsWriteException(WriteErrorKind.NotFound, $"{path}: not found");
            int mode = AttributesOf(path).Mode;
            if (!IsDirectory(path))
            {
                mode &= ~0x800;
                if ((mode & 0x8) != 0) mode &= ~0x400;
            }
            _attributes[_inos[path]] = (mode, uid, gid);
        }
    }

    public void Utimes(string path, InodeTime atime, InodeTime mtime)
    {
        lock (_gate)
        {
            if (!_nodes.ContainsKey(path)) throw new XfsWriteException(WriteErrorKind.NotFound, $"{path}: not found");
        }
    }

    public void Write(string path, long offset, ReadOnlySpan<byte> data)
    {
        lock (_gate)
        {
            var c = File(path);
            MaybeNoSpace();
            if (Bug == FakeBug.WriteOneByteOff && data.Length > 100)
            {
                var copy = data.ToArray();
                copy[50] ^= 1;
                c.Write(offset, copy);
            }
            else
            {
                c.Write(offset, data);
            }
            Track(c);
        }
    }

    public int Read(string path, long offset, Span<byte> buffer)
    {
        lock (_gate) return File(path).Read(offset, buffer);
    }

    public void Fallocate(string path, long offset, long length)
    {
        lock (_gate)
        {
            var c = File(path);
            MaybeNoSpace();
            c.ExtendTo(offset + length);
            Track(c);
        }
    }

    public void Fallocate(string path, long offset, long length, bool keepSize)
    {
        lock (_gate)
        {
            var c = File(path);
            MaybeNoSpace();
            if (!keepSize) c.ExtendTo(offset + length);
            Track(c);
        }
    }

    public void CollapseRange(string path, long offset, long length)
    {
        lock (_gate)
        {
            var c = File(path);
            if (offset % BlockSize != 0 || length % BlockSize != 0 || offset + length >= c.Size)
                throw new XfsWriteException(WriteErrorKind.InvalidArgument, $"{path}: bad collapse range");
            MaybeNoSpace();
            c.Collapse(offset, length);
        }
    }

    public void InsertRange(string path, long offset, long length)
    {
        lock (_gate)
        {
            var c = File(path);
            if (offset % BlockSize != 0 || length % BlockSize != 0 || offset >= c.Size)
                throw new XfsWriteException(WriteErrorKind.InvalidArgument, $"{path}: bad insert range");
            MaybeNoSpace();
            c.Insert(offset, length);
            Track(c);
        }
    }

    public void PunchHole(string path, long offset, long length)
    {
        lock (_gate)
        {
            var c = File(path);
            MaybeNoSpace();
            if (offset >= c.Size) return;
            long n = Math.Min(length, c.Size - offset);
            if (Bug == FakeBug.PunchForgetsLastByte && n > 1) n--;
            c.Zero(offset, n);
        }
    }

    public void Truncate(string path, long size)
    {
        lock (_gate)
        {
            var c = File(path);
            MaybeNoSpace();
            long old = c.Size;
            c.SetSize(size);
            // Growing shows a stale byte where zeros belong (an EOF block tail not zeroed).
            if (Bug == FakeBug.TruncateKeepsTail && size > old) c.Write(old, [0xAA]);
            Track(c);
        }
    }

    public void Reflink(string source, long sourceOffset, string destination, long destinationOffset, long length)
    {
        lock (_gate)
        {
            var s = File(source);
            var d = File(destination);
            if (sourceOffset % 4096 != 0 || destinationOffset % 4096 != 0 || length % 4096 != 0 || sourceOffset + length > s.Size)
            {
                throw new XfsWriteException(WriteErrorKind.InvalidArgument, "reflink: unaligned or past EOF");
            }
            MaybeNoSpace();
            if (Bug == FakeBug.ReflinkCopiesOneBlockShort && length > 4096) length -= 4096;
            d.CopyFrom(s.Clone(), sourceOffset, destinationOffset, length);
            Track(d);
        }
    }

    public void Unshare(string path, long offset, long length)
    {
        lock (_gate)
        {
            File(path);
            MaybeNoSpace();
        }
    }

    void Add(string path, FileContents? contents)
    {
        if (_nodes.ContainsKey(path))
        {
            if (Bug == FakeBug.CreateExistingSucceeds) return;
            throw new XfsWriteException(WriteErrorKind.Exists, $"{path}: exists");
        }
        if (!IsDirectory(Parent(path))) throw new XfsWriteException(WriteErrorKind.NotFound, $"{Parent(path)}: no such directory");
        MaybeNoSpace();
        _nodes[path] = contents;
        _inos[path] = ++_nextIno;
    }

    public void Create(string path)
    {
        lock (_gate)
        {
            Add(path, new FileContents());
            Inherit(path);
        }
    }

    public void Mkdir(string path)
    {
        lock (_gate)
        {
            Add(path, null);
            Inherit(path);
        }
    }

    /// <summary>As the engine: a set-group-ID directory gives a new inode its group, and a new directory its bit.</summary>
    void Inherit(string path)
    {
        var parent = AttributesOf(Parent(path));
        if ((parent.Mode & 0x400) == 0) return;
        var a = AttributesOf(path);
        _attributes[_inos[path]] = (IsDirectory(path) ? a.Mode | 0x400 : a.Mode, a.Uid, parent.Gid);
    }

    public void Unlink(string path)
    {
        lock (_gate)
        {
            if (!_nodes.TryGetValue(path, out var contents)) throw new XfsWriteException(WriteErrorKind.NotFound, $"{path}: not found");
            if (IsDirectory(path) && _nodes.Keys.Any(k => k.StartsWith(path + "/", StringComparison.Ordinal)))
            {
                throw new XfsWriteException(WriteErrorKind.NotEmpty, $"{path}: not empty");
            }
            if (Bug == FakeBug.UnlinkLeavesName) return;
            if (Bug == FakeBug.UnlinkDropsEveryName && contents is not null)
            {
                ulong ino = _inos[path];
                foreach (string name in _inos.Where(p => p.Value == ino).Select(p => p.Key).ToList()) DropName(name);
                return;
            }
            DropName(path);
        }
    }

    public IReadOnlyList<DirectoryEntry> List(string path)
    {
        lock (_gate)
        {
            if (!IsDirectory(path)) throw new XfsWriteException(WriteErrorKind.NotDirectory, $"{path}: not a directory");
            string prefix = path == "/" ? "/" : path + "/";
            return _nodes.Keys
                .Where(k => k != "/" && k.StartsWith(prefix, StringComparison.Ordinal) && k.IndexOf('/', prefix.Length) < 0)
                .Select(k => new DirectoryEntry(k[prefix.Length..], _inos[k], TypeOf(k)))
                .ToList();
        }
    }

    public InodeStat Stat(string path)
    {
        lock (_gate)
        {
            if (!_nodes.TryGetValue(path, out var c)) throw new XfsWriteException(WriteErrorKind.NotFound, $"{path}: not found");
            var type = TypeOf(path);
            ushort mode = (ushort)(AttributesOf(path).Mode | (type == InodeType.Directory ? 0x4000 : type == InodeType.RegularFile ? 0x8000 : 0));
            return new InodeStat(_inos[path], type, mode, LinksOf(path), c?.Size ?? 0, 0, 0, "extents", false, DateTimeOffset.UnixEpoch);
        }
    }
}
