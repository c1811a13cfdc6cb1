using Xfbtree.Xfs.Write;
using Attributes = Xfbtree.Xfs.Write.Attributes;
using Xfbtree.Xfs.Write.Namespace;
using Namespace = Xfbtree.Xfs.Write.Namespace;

namespace Xfbtree.Cli.Stress;

/// <summary>The inode behind one or more names of the model: what a rename carries along and what hard links
/// share (permission bits, owner, link count, extended attributes, and the model lock).</summary>
internal sealed class ModelInode(int id)
{
    /// <summary>Lock order: model locks are taken in ascending inode id (the id of the inode's first node).</summary>
    public int Id { get; } = id;

    /// <summary>The model lock: held around the engine call and the model update, so model order is engine order
    /// for every name of the inode.</summary>
    public Lock Gate { get; } = new();

    public int Mode { get; set; }

    public uint Uid { get; set; }

    public uint Gid { get; set; }

    /// <summary>Names the inode has (regular files: hard links; everything else 1).</summary>
    public int Links { get; set; } = 1;

    /// <summary>Extended attributes by full name ("user.x"), values as set.</summary>
    public SortedDictionary<string, byte[]> Xattrs { get; } = new(StringComparer.Ordinal);

    public ModelInode CloneState(int id)
    {
        var copy = new ModelInode(id) { Mode = Mode, Uid = Uid, Gid = Gid, Links = Links };
        foreach (var (name, value) in Xattrs) copy.Xattrs.Add(name, value);
        return copy;
    }
}

/// <summary>A name the stress model knows. A node's path never changes: a rename makes a new node at the new path
/// (for the same <see cref="ModelInode"/>) and retires the old one.</summary>
internal abstract class ModelNode
{
    private protected ModelNode(int id, string path, ModelDirectory? parent, ModelInode? inode = null)
    {
        Id = id;
        Path = path;
        Parent = parent;
        Inode = inode ?? new ModelInode(id);
    }

    /// <summary>Creation order.</summary>
    public int Id { get; }

    public string Path { get; }

    public string Name => Path == "/" ? "/" : Path[(Path.LastIndexOf('/') + 1)..];

    public ModelDirectory? Parent { get; }

    /// <summary>False once unlinked; a thread that locked a node it picked earlier checks this first.</summary>
    public bool Alive { get; internal set; } = true;

    /// <summary>The inode this name reaches (shared by hard links).</summary>
    internal ModelInode Inode { get; }

    /// <summary>The model lock of the inode (see <see cref="ModelInode.Gate"/>).</summary>
    internal Lock Gate => Inode.Gate;

    /// <summary>Position in the model's pick list (-1: not pickable).</summary>
    internal int Slot { get; set; } = -1;

    /// <summary>Permission bits (mode &amp; 07777) the model expects.</summary>
    public int Mode { get => Inode.Mode; internal set => Inode.Mode = value; }

    /// <summary>Owner the model expects.</summary>
    public uint Uid { get => Inode.Uid; internal set => Inode.Uid = value; }

    /// <summary>Group the model expects.</summary>
    public uint Gid { get => Inode.Gid; internal set => Inode.Gid = value; }

    /// <summary>Link count the model expects of a file, symlink or special file (hard links of a file count).</summary>
    public int Links => Inode.Links;

    /// <summary>The manifest's XATTRS column for this node's attributes (see <see cref="StressModel.XattrDigest"/>).</summary>
    public string XattrDigest => StressModel.XattrDigest(Inode.Xattrs.Select(a => (a.Key, a.Value)));

    internal void CopyAttributesFrom(ModelNode other)
    {
        Mode = other.Mode;
        Uid = other.Uid;
        Gid = other.Gid;
    }
}

/// <summary>A symbolic link or special file the workload made: its type, target or device number.</summary>
internal sealed class ModelLeaf : ModelNode
{
    internal ModelLeaf(int id, string path, ModelDirectory? parent, InodeType type, string target, ulong rdev, ModelInode? inode = null) : base(id, path, parent, inode)
    {
        Type = type;
        Target = target;
        Rdev = rdev;
    }

    /// <summary>Symlink, fifo, socket, character or block device.</summary>
    public InodeType Type { get; }

    /// <summary>A symlink's target ("" otherwise).</summary>
    public string Target { get; }

    /// <summary>A device's Linux dev_t (0 otherwise).</summary>
    public ulong Rdev { get; }
}

/// <summary>A regular file whose bytes the model tracks.</summary>
internal sealed class ModelFile : ModelNode
{
    internal ModelFile(int id, string path, ModelDirectory? parent, FileContents contents, ModelInode? inode = null) : base(id, path, parent, inode)
        => Contents = contents;

    public FileContents Contents { get; }
}

/// <summary>A directory whose entries the model tracks.</summary>
internal sealed class ModelDirectory : ModelNode
{
    internal ModelDirectory(int id, string path, ModelDirectory? parent, ModelInode? inode = null) : base(id, path, parent, inode) { }

    public SortedDictionary<string, ModelNode> Children { get; } = new(StringComparer.Ordinal);

    /// <summary>Set when the engine refused to add or remove a name here (a directory format it does not write):
    /// the workload then mostly leaves the directory's entries alone.</summary>
    public bool NamesFrozen { get; internal set; }

    public string ChildPath(string name) => Path == "/" ? "/" + name : Path + "/" + name;
}

/// <summary>An entry that exists but that the workload leaves alone (too big, hard-linked, not a file, an
/// unsupported directory format): only its name is checked.</summary>
internal sealed class ForeignEntry : ModelNode
{
    internal ForeignEntry(int id, string path, ModelDirectory? parent, InodeType type) : base(id, path, parent) => Type = type;

    public InodeType Type { get; }
}

/// <summary>Bounds of the stress model (memory stays below roughly MaxFiles x MaxFileSize).</summary>
internal sealed record StressModelOptions
{
    /// <summary>Largest file the workload makes or adopts from the image.</summary>
    public long MaxFileSize { get; init; } = 1L << 20;
    /// <summary>Existing regular files adopted from the image (read through the engine at load).</summary>
    public int MaxInitialFiles { get; init; } = 48;
    /// <summary>Files alive at once; beyond it creates turn into unlinks.</summary>
    public int MaxFiles { get; init; } = 160;
    /// <summary>Directories the workload may add to those of the image; beyond it mkdirs turn into rmdirs.</summary>
    public int MaxDirectories { get; init; } = 48;
    /// <summary>Directory listings during the load (bounds the walk on huge images).</summary>
    public int MaxDirectoriesWalked { get; init; } = 2000;
}

/// <summary>
/// The expected state of the image as the stress workload changed it: the namespace (every name in the directories
/// it walked) and the bytes of every file it adopted or created. Index updates are thread-safe; a node's own state
/// changes only under its model lock (<see cref="StressRunner"/>), or single-threaded when an op log is replayed.
/// </summary>
internal sealed class StressModel
{
    readonly Lock _sync = new();
    readonly Dictionary<string, ModelNode> _byPath = new(StringComparer.Ordinal);
    readonly List<ModelFile> _files = new();
    readonly List<ModelDirectory> _directories = new();
    readonly List<ModelLeaf> _leaves = new();
    int _nextId;

    StressModel(StressModelOptions options)
    {
        Options = options;
        Root = new ModelDirectory(_nextId++, "/", null) { Mode = 0x1ED };
        Index(Root);
    }

    public StressModelOptions Options { get; }

    public ModelDirectory Root { get; }

    public int FileCount { get { lock (_sync) return _files.Count; } }

    public int DirectoryCount { get { lock (_sync) return _directories.Count; } }

    /// <summary>Directories the image had when the model was loaded.</summary>
    public int InitialDirectoryCount { get; private set; } = 1;

    public IReadOnlyList<ModelFile> Files { get { lock (_sync) return _files.ToList(); } }

    public IReadOnlyList<ModelDirectory> Directories { get { lock (_sync) return _directories.ToList(); } }

    /// <summary>Symlinks and special files the workload made.</summary>
    public IReadOnlyList<ModelLeaf> Leaves { get { lock (_sync) return _leaves.ToList(); } }

    /// <summary>How many symlinks and special files the model holds.</summary>
    public int LeafCount { get { lock (_sync) return _leaves.Count; } }

    public ModelNode? Find(string path)
    {
        lock (_sync) return _byPath.GetValueOrDefault(path);
    }

    /// <summary>An empty model: only the root directory, known to be empty.</summary>
    public static StressModel Empty(StressModelOptions? options = null) => new(options ?? new StressModelOptions());

    /// <summary>
    /// Walks the image's namespace through <paramref name="target"/> and adopts up to MaxInitialFiles single-link
    /// regular files no larger than MaxFileSize, chosen with <paramref name="seed"/> (the same image and seed give
    /// the same model), reading their bytes. Every other entry becomes a <see cref="ForeignEntry"/>.
    /// </summary>
    public static StressModel Load(IStressTarget target, int seed, StressModelOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(target);
        var model = new StressModel(options ?? new StressModelOptions());
        var regular = new List<(ModelDirectory Parent, string Name)>();
        var pending = new Queue<ModelDirectory>();
        pending.Enqueue(model.Root);
        int walked = 0;
        while (pending.TryDequeue(out var directory))
        {
            IReadOnlyList<DirectoryEntry> entries;
            if (walked++ >= model.Options.MaxDirectoriesWalked && directory != model.Root)
            {
                model.MakeForeign(directory, InodeType.Directory);
                continue;
            }
            try { entries = target.List(directory.Path); }
            catch (XfsWriteException e) when (directory != model.Root && e.Kind is WriteErrorKind.NotSupported or WriteErrorKind.Corrupt)
            {
                model.MakeForeign(directory, InodeType.Directory);
                continue;
            }
            foreach (var entry in entries.OrderBy(e => e.Name, StringComparer.Ordinal))
            {
                string path = directory.ChildPath(entry.Name);
                bool plainName = entry.Name.AsSpan().IndexOfAny('\t', '\n', '/') < 0 && entry.Name.Length > 0;
                if (plainName && entry.Type == InodeType.Directory)
                {
                    var child = new ModelDirectory(model._nextId++, path, directory);
                    model.Attach(child);
                    pending.Enqueue(child);
                }
                else if (plainName && entry.Type == InodeType.RegularFile)
                {
                    regular.Add((directory, entry.Name));
                }
                else
                {
                    model.Attach(new ForeignEntry(model._nextId++, path, directory, entry.Type));
                }
            }
        }

        var random = new Random(seed);
        random.Shuffle(System.Runtime.InteropServices.CollectionsMarshal.AsSpan(regular));
        var buffer = new byte[1 << 20];
        int adopted = 0;
        foreach (var (parent, name) in regular)
        {
            string path = parent.ChildPath(name);
            if (adopted < model.Options.MaxInitialFiles && model.Adopt(target, parent, path, buffer)) adopted++;
            else model.Attach(new ForeignEntry(model._nextId++, path, parent, InodeType.RegularFile));
        }
        model.InitialDirectoryCount = model.DirectoryCount;
        foreach (var directory in model.Directories) model.LoadAttributes(target, directory);
        return model;
    }

    void LoadAttributes(IStressTarget target, ModelNode node)
    {
        var a = target.GetAttr(node.Path);
        node.Mode = a.Permissions;
        node.Uid = a.Uid;
        node.Gid = a.Gid;
        foreach (var (name, value) in target.ListXattrs(node.Path)) node.Inode.Xattrs[name] = value;
    }

    bool Adopt(IStressTarget target, ModelDirectory parent, string path, byte[] buffer)
    {
        InodeStat stat = target.Stat(path);
        if (stat.Type != InodeType.RegularFile || stat.Links != 1 || stat.Size > Options.MaxFileSize) return false;
        var contents = new FileContents();
        for (long offset = 0; offset < stat.Size;)
        {
            int n = target.Read(path, offset, buffer.AsSpan(0, (int)Math.Min(buffer.Length, stat.Size - offset)));
            if (n <= 0) throw new XfsWriteException(WriteErrorKind.Io, $"{path}: read {offset} of {stat.Size} bytes, then EOF");
            contents.Write(offset, buffer.AsSpan(0, n));
            offset += n;
        }
        contents.SetSize(stat.Size);
        var file = new ModelFile(_nextId++, path, parent, contents);
        LoadAttributes(target, file);
        Attach(file);
        return true;
    }

    void MakeForeign(ModelDirectory directory, InodeType type)
    {
        lock (_sync)
        {
            Unindex(directory);
            directory.Alive = false;
            var parent = directory.Parent!;
            parent.Children.Remove(directory.Name);
        }
        Attach(new ForeignEntry(_nextId++, directory.Path, directory.Parent, type));
    }

    /// <summary>Up to <paramref name="max"/> files of <paramref name="directory"/>, read under the model's lock (every
    /// change of a directory's children holds it); a peek that the caller re-checks under the directory's lock.</summary>
    internal List<ModelFile> PeekFiles(ModelDirectory directory, int max)
    {
        ArgumentNullException.ThrowIfNull(directory);
        lock (_sync)
        {
            var files = new List<ModelFile>(max);
            foreach (var child in directory.Children.Values)
            {
                if (child is not ModelFile file) continue;
                files.Add(file);
                if (files.Count == max) break;
            }
            return files;
        }
    }

    void Attach(ModelNode node)
    {
        lock (_sync)
        {
            node.Parent!.Children.Add(node.Name, node);
            Index(node);
        }
    }

    void Index(ModelNode node)
    {
        _byPath.Add(node.Path, node);
        switch (node)
        {
            case ModelFile f: f.Slot = _files.Count; _files.Add(f); break;
            case ModelDirectory d: d.Slot = _directories.Count; _directories.Add(d); break;
            case ModelLeaf l: l.Slot = _leaves.Count; _leaves.Add(l); break;
        }
    }

    void Unindex(ModelNode node)
    {
        _byPath.Remove(node.Path);
        switch (node)
        {
            case ModelFile f: RemoveSlot(_files, f); break;
            case ModelDirectory d: RemoveSlot(_directories, d); break;
            case ModelLeaf l: RemoveSlot(_leaves, l); break;
        }
    }

    static void RemoveSlot<T>(List<T> list, T node) where T : ModelNode
    {
        int slot = node.Slot;
        var last = list[^1];
        list[slot] = last;
        last.Slot = slot;
        list.RemoveAt(list.Count - 1);
        node.Slot = -1;
    }

    /// <summary>A random live file, or null. Half of the picks go to a few "hot" files (the first slots; unlinks pick
    /// without that preference), so that
    /// some files take hundreds of small writes and punches and their forks grow into btrees.</summary>
    public ModelFile? PickFile(Random random, bool preferHot = true)
    {
        ArgumentNullException.ThrowIfNull(random);
        lock (_sync)
        {
            if (_files.Count == 0) return null;
            return _files[preferHot && random.Next(2) == 0 ? random.Next(Math.Min(4, _files.Count)) : random.Next(_files.Count)];
        }
    }

    /// <summary>A random symlink or special file the workload made, or null.</summary>
    public ModelLeaf? PickLeaf(Random random)
    {
        ArgumentNullException.ThrowIfNull(random);
        lock (_sync) return _leaves.Count == 0 ? null : _leaves[random.Next(_leaves.Count)];
    }

    /// <summary>A random live directory (the root included).</summary>
    public ModelDirectory PickDirectory(Random random)
    {
        ArgumentNullException.ThrowIfNull(random);
        lock (_sync) return _directories[random.Next(_directories.Count)];
    }

    /// <summary>
    /// Applies a successful operation to the model. The caller holds the model locks of the nodes involved (the
    /// runner) or is the only thread (replay).
    /// </summary>
    public void Apply(StressOp op)
    {
        ArgumentNullException.ThrowIfNull(op);
        switch (op.Kind)
        {
            case StressOpKind.Write:
                var data = new byte[op.Length];
                StressData.Fill(data, op.DataSeed);
                FileAt(op.Path).Contents.Write(op.Offset, data);
                break;
            case StressOpKind.Fallocate:
                // KEEP_SIZE (Offset2 = 1): blocks past EOF, no byte and no size changes.
                if (op.Offset2 == 0) FileAt(op.Path).Contents.ExtendTo(op.Offset + op.Length);
                break;
            case StressOpKind.CollapseRange:
                FileAt(op.Path).Contents.Collapse(op.Offset, op.Length);
                break;
            case StressOpKind.InsertRange:
                FileAt(op.Path).Contents.Insert(op.Offset, op.Length);
                break;
            case StressOpKind.PunchHole:
                var punched = FileAt(op.Path).Contents;
                if (op.Offset < punched.Size) punched.Zero(op.Offset, Math.Min(op.Length, punched.Size - op.Offset));
                break;
            case StressOpKind.Truncate:
                FileAt(op.Path).Contents.SetSize(op.Length);
                break;
            case StressOpKind.Reflink:
                FileAt(op.Path2).Contents.CopyFrom(FileAt(op.Path).Contents, op.Offset, op.Offset2, op.Length);
                break;
            case StressOpKind.Create:
                Attach(Inherit(new ModelFile(Interlocked.Increment(ref _nextId), op.Path, ParentOf(op.Path), new FileContents()) { Mode = 0x1A4 }));
                break;
            case StressOpKind.Mkdir:
                Attach(Inherit(new ModelDirectory(Interlocked.Increment(ref _nextId), op.Path, ParentOf(op.Path)) { Mode = 0x1ED }));
                break;
            case StressOpKind.Symlink:
                Attach(Inherit(new ModelLeaf(Interlocked.Increment(ref _nextId), op.Path, ParentOf(op.Path), InodeType.Symlink, op.Path2, 0) { Mode = 0x1FF }));
                break;
            case StressOpKind.Mknod:
                Attach(Inherit(new ModelLeaf(Interlocked.Increment(ref _nextId), op.Path, ParentOf(op.Path), DirectoryTypeOfMode((int)op.Offset),
                    "", (op.Offset & 0xF000) is 0x2000 or 0x6000 ? (ulong)op.Offset2 : 0) { Mode = (int)op.Offset & 0xFFF }));
                break;
            case StressOpKind.Chmod:
                NodeAt(op.Path).Mode = (int)op.Offset & 0xFFF;
                break;
            case StressOpKind.Chown:
            {
                var owned = NodeAt(op.Path);
                owned.Uid = (uint)op.Offset;
                owned.Gid = (uint)op.Offset2;
                if (owned is not ModelDirectory)
                {
                    // chown(2) clears set-user-ID, and set-group-ID when group-execute is set.
                    int mode = owned.Mode & ~0x800;
                    if ((mode & 0x8) != 0) mode &= ~0x400;
                    owned.Mode = mode;
                }
                break;
            }
            case StressOpKind.Rename:
                ApplyRename(op);
                break;
            case StressOpKind.Link:
            {
                var existing = FileAt(op.Path);
                Attach(new ModelFile(Interlocked.Increment(ref _nextId), op.Path2, ParentOf(op.Path2), existing.Contents, existing.Inode));
                existing.Inode.Links++;
                break;
            }
            case StressOpKind.SetXattr:
            {
                var value = new byte[op.Length];
                StressData.Fill(value, op.DataSeed);
                NodeAt(op.Path).Inode.Xattrs[op.Path2] = value;
                break;
            }
            case StressOpKind.RemoveXattr:
                if (!NodeAt(op.Path).Inode.Xattrs.Remove(op.Path2)) throw new InvalidOperationException($"model: {op.Path} has no attribute {op.Path2}");
                break;
            case StressOpKind.Unlink:
            case StressOpKind.Rmdir:
                var node = Find(op.Path) ?? throw new InvalidOperationException($"model: {op.Path} does not exist");
                Retire(node);
                node.Inode.Links--;
                break;
            case StressOpKind.Utimes:
            case StressOpKind.Unshare:
            case StressOpKind.Read:
            case StressOpKind.Stat:
            case StressOpKind.List:
            case StressOpKind.CreateExisting:
            case StressOpKind.RmdirNotEmpty:
            case StressOpKind.LinkExisting:
            case StressOpKind.RemoveXattrMissing:
                break;
            default:
                throw new ArgumentOutOfRangeException(nameof(op), op.Kind, "unknown op");
        }
    }

    /// <summary>A new inode in a set-group-ID directory takes the directory's group, and a new directory its
    /// set-group-ID bit (System V semantics, as the kernel's inode_init_owner).</summary>
    static T Inherit<T>(T node) where T : ModelNode
    {
        var parent = node.Parent!;
        if ((parent.Mode & 0x400) != 0)
        {
            node.Gid = parent.Gid;
            if (node is ModelDirectory) node.Mode |= 0x400;
        }
        return node;
    }

    ModelFile FileAt(string path) => Find(path) as ModelFile ?? throw new InvalidOperationException($"model: {path} is not a file it knows");

    ModelNode NodeAt(string path) => Find(path) is { } n and not ForeignEntry ? n : throw new InvalidOperationException($"model: {path} is not a node it knows");

    static InodeType DirectoryTypeOfMode(int mode) => (mode & 0xF000) switch
    {
        0x1000 => InodeType.Fifo,
        0xC000 => InodeType.Socket,
        0x2000 => InodeType.CharDevice,
        0x6000 => InodeType.BlockDevice,
        _ => throw new InvalidOperationException($"model: mknod mode 0{Convert.ToString(mode, 8)}"),
    };

    /// <summary>A file renamed: new nodes for the same inodes at the destination (and, exchanged, at the source);
    /// the old nodes retired, and a replaced file's inode loses the link.</summary>
    void ApplyRename(StressOp op)
    {
        var source = FileAt(op.Path);
        var replaced = Find(op.Path2);
        var flags = (Namespace.RenameFlags)op.Length;
        bool exchange = flags == Namespace.RenameFlags.Exchange;
        Retire(source);
        if (replaced is not null)
        {
            Retire(replaced);
            if (!exchange) replaced.Inode.Links--;
        }
        Attach(new ModelFile(Interlocked.Increment(ref _nextId), op.Path2, ParentOf(op.Path2), source.Contents, source.Inode));
        if (exchange)
        {
            var other = (ModelFile)replaced!;
            Attach(new ModelFile(Interlocked.Increment(ref _nextId), op.Path, ParentOf(op.Path), other.Contents, other.Inode));
        }
        else if ((flags & Namespace.RenameFlags.Whiteout) != 0)
        {
            // The source name now names a whiteout: a character device 0:0, mode 0, owned 0:0 (the path API's owner)
            // or with the group of a set-group-ID destination directory, where the kernel makes it.
            var into = ParentOf(op.Path2);
            Attach(new ModelLeaf(Interlocked.Increment(ref _nextId), op.Path, ParentOf(op.Path), InodeType.CharDevice, "", 0)
            {
                Mode = 0,
                Gid = (into.Mode & 0x400) != 0 ? into.Gid : 0,
            });
        }
    }

    void Retire(ModelNode node)
    {
        lock (_sync)
        {
            node.Parent!.Children.Remove(node.Name);
            Unindex(node);
            node.Alive = false;
        }
    }

    ModelDirectory ParentOf(string path)
    {
        int slash = path.LastIndexOf('/');
        string parent = slash <= 0 ? "/" : path[..slash];
        return Find(parent) as ModelDirectory ?? throw new InvalidOperationException($"model: {parent} is not a directory it knows");
    }

    /// <summary>A deep copy (node ids and paths kept), for the crash test's "after op k+1" alternative.</summary>
    public StressModel Clone()
    {
        var copy = new StressModel(Options) { InitialDirectoryCount = InitialDirectoryCount };
        copy.Root.CopyAttributesFrom(Root);
        foreach (var (name, value) in Root.Inode.Xattrs) copy.Root.Inode.Xattrs.Add(name, value);
        copy._nextId = _nextId;
        // Hard links stay shared: one copied inode (and one copy of the contents) per inode of this model.
        var inodes = new Dictionary<ModelInode, (ModelInode Inode, FileContents? Contents)>();
        var pending = new Queue<(ModelDirectory From, ModelDirectory To)>();
        pending.Enqueue((Root, copy.Root));
        while (pending.TryDequeue(out var pair))
        {
            foreach (var child in pair.From.Children.Values)
            {
                if (!inodes.TryGetValue(child.Inode, out var shared))
                {
                    shared = (child.Inode.CloneState(child.Inode.Id), (child as ModelFile)?.Contents.Clone());
                    inodes.Add(child.Inode, shared);
                }
                ModelNode clone = child switch
                {
                    ModelFile f => new ModelFile(f.Id, f.Path, pair.To, shared.Contents!, shared.Inode),
                    ModelDirectory d => new ModelDirectory(d.Id, d.Path, pair.To, shared.Inode),
                    ModelLeaf l => new ModelLeaf(l.Id, l.Path, pair.To, l.Type, l.Target, l.Rdev, shared.Inode),
                    ForeignEntry x => new ForeignEntry(x.Id, x.Path, pair.To, x.Type),
                    _ => throw new InvalidOperationException("unknown node"),
                };
                if (clone is ForeignEntry) clone.CopyAttributesFrom(child);
                copy.Attach(clone);
                if (child is ModelDirectory from) pending.Enqueue((from, (ModelDirectory)clone));
            }
        }
        return copy;
    }

    /// <summary>
    /// Compares the image with the model: every known directory lists exactly the model's names, every model file
    /// has the model's size and bytes (read back through <paramref name="target"/>). Returns the differences found
    /// (at most <paramref name="limit"/>); empty means equal.
    /// </summary>
    public List<string> Verify(IStressTarget target, int limit = 20)
    {
        ArgumentNullException.ThrowIfNull(target);
        var problems = new List<string>();
        foreach (var directory in Directories.OrderBy(d => d.Id))
        {
            if (problems.Count >= limit) break;
            try
            {
                var names = target.List(directory.Path).Select(e => e.Name).ToHashSet(StringComparer.Ordinal);
                var missing = directory.Children.Keys.Where(n => !names.Contains(n)).Take(3).ToList();
                var extra = names.Where(n => !directory.Children.ContainsKey(n)).Order(StringComparer.Ordinal).Take(3).ToList();
                if (missing.Count > 0) problems.Add($"{directory.Path}: missing entries {string.Join(", ", missing)}");
                if (extra.Count > 0) problems.Add($"{directory.Path}: unexpected entries {string.Join(", ", extra)}");
            }
            catch (XfsWriteException e)
            {
                problems.Add($"{directory.Path}: list failed: {e.Kind}: {e.Message}");
            }
        }
        foreach (var node in Directories.Cast<ModelNode>().Concat(Files).Concat(Leaves).OrderBy(n => n.Id))
        {
            if (problems.Count >= limit) break;
            try
            {
                var a = target.GetAttr(node.Path);
                if (a.Permissions != node.Mode || a.Uid != node.Uid || a.Gid != node.Gid)
                    problems.Add($"{node.Path}: mode 0{Convert.ToString(a.Permissions, 8)} owner {a.Uid}:{a.Gid}, the model has 0{Convert.ToString(node.Mode, 8)} {node.Uid}:{node.Gid}");
                if (node is not ModelDirectory && a.Links != node.Links)
                    problems.Add($"{node.Path}: {a.Links} links, the model has {node.Links}");
                string digest = XattrDigest(target.ListXattrs(node.Path));
                if (digest != node.XattrDigest)
                    problems.Add($"{node.Path}: extended attributes {string.Join(", ", target.ListXattrs(node.Path).Select(x => x.Name))}, the model has {string.Join(", ", node.Inode.Xattrs.Keys)}");
                if (node is ModelLeaf leaf)
                {
                    if (a.Type != leaf.Type) problems.Add($"{leaf.Path}: is {a.Type}, the model has {leaf.Type}");
                    else if (leaf.Type == InodeType.Symlink && target.ReadLink(leaf.Path) != leaf.Target) problems.Add($"{leaf.Path}: the symlink target differs");
                    else if (a.Rdev != leaf.Rdev) problems.Add($"{leaf.Path}: rdev {a.RdevMajor}:{a.RdevMinor}, the model has {DeviceNumbers.Major(leaf.Rdev)}:{DeviceNumbers.Minor(leaf.Rdev)}");
                }
            }
            catch (XfsWriteException e)
            {
                problems.Add($"{node.Path}: stat failed: {e.Kind}: {e.Message}");
            }
        }
        var expected = new byte[1 << 20];
        var actual = new byte[1 << 20];
        foreach (var file in Files.OrderBy(f => f.Id))
        {
            if (problems.Count >= limit) break;
            string? problem;
            try { problem = CompareFile(target, file.Path, file.Contents, expected, actual); }
            catch (XfsWriteException e) { problem = $"{file.Path}: {e.Kind}: {e.Message}"; }
            if (problem is not null) problems.Add(problem);
        }
        return problems;
    }

    /// <summary>Null when the image's file equals <paramref name="contents"/>, else what differs.</summary>
    public static string? CompareFile(IStressTarget target, string path, FileContents contents, byte[] expected, byte[] actual)
    {
        ArgumentNullException.ThrowIfNull(target);
        ArgumentNullException.ThrowIfNull(contents);
        ArgumentNullException.ThrowIfNull(expected);
        ArgumentNullException.ThrowIfNull(actual);
        InodeStat stat = target.Stat(path);
        if (stat.Type != InodeType.RegularFile) return $"{path}: is {stat.Type}, expected a regular file";
        if (stat.Size != contents.Size) return $"{path}: size {stat.Size}, expected {contents.Size}";
        for (long offset = 0; offset <= contents.Size; offset += expected.Length)
        {
            // One read past EOF as well: it must return nothing.
            int want = (int)Math.Min(expected.Length, contents.Size - offset + 1);
            int e = contents.Read(offset, expected.AsSpan(0, want));
            int a = target.Read(path, offset, actual.AsSpan(0, want));
            if (a != e) return $"{path}: read at {offset} returned {a} bytes, expected {e}";
            int differ = expected.AsSpan(0, e).CommonPrefixLength(actual.AsSpan(0, a));
            if (differ < e) return $"{path}: byte {offset + differ} is 0x{actual[differ]:x2}, expected 0x{expected[differ]:x2}";
        }
        return null;
    }

    /// <summary>What the engine reports for the model's files: data fork formats and reflink flags (shows that
    /// the run reached btree forks and shared extents).</summary>
    public string DescribeForks(IStressTarget target)
    {
        ArgumentNullException.ThrowIfNull(target);
        var formats = new SortedDictionary<string, int>(StringComparer.Ordinal);
        int reflinked = 0;
        foreach (var file in Files)
        {
            InodeStat stat = target.Stat(file.Path);
            formats[stat.DataForkFormat] = formats.GetValueOrDefault(stat.DataForkFormat) + 1;
            if (stat.Reflink) reflinked++;
        }
        return string.Join(", ", formats.Select(f => $"{f.Value} {f.Key}")) + $"; {reflinked} with the reflink flag";
    }

    /// <summary>The first line of a version 2 manifest.</summary>
    public const string ManifestHeader = "# xfbtree manifest v2";

    /// <summary>
    /// Manifest version 2: <see cref="ManifestHeader"/>, then one tab-separated line per path the model knows the
    /// state of (directories, files, symlinks and special files, in path order):
    /// <c>PATH TYPE MODE UID GID NLINK SIZE CONTENT XATTRS</c>. TYPE is f d l p s c b; MODE the octal permission
    /// bits; NLINK the names of a file (hard links count; each name has its own line), 2 + subdirectories for a
    /// directory, 1 otherwise; SIZE the bytes of a file, the target length of a symlink, 0 for a special file and
    /// "-" for a directory (its size depends on its format); CONTENT the sha256 of a file, a symlink's target,
    /// MAJ:MIN of a device, else "-"; XATTRS <see cref="XattrDigest"/> of its user, trusted and security attributes.
    /// </summary>
    public void WriteManifest(TextWriter writer)
    {
        ArgumentNullException.ThrowIfNull(writer);
        writer.Write(ManifestHeader + "\n");
        var nodes = Directories.Cast<ModelNode>().Concat(Files).Concat(Leaves).OrderBy(n => n.Path, StringComparer.Ordinal);
        foreach (var node in nodes)
        {
            string type, nlink = node.Links.ToString(System.Globalization.CultureInfo.InvariantCulture), size, content = "-";
            switch (node)
            {
                case ModelFile f:
                    type = "f";
                    size = f.Contents.Size.ToString(System.Globalization.CultureInfo.InvariantCulture);
                    content = f.Contents.Sha256Hex();
                    break;
                case ModelDirectory d:
                    type = "d";
                    nlink = (2 + d.Children.Values.Count(c => c is ModelDirectory || c is ForeignEntry { Type: InodeType.Directory }))
                        .ToString(System.Globalization.CultureInfo.InvariantCulture);
                    size = "-";
                    break;
                case ModelLeaf l:
                    type = l.Type switch
                    {
                        InodeType.Symlink => "l",
                        InodeType.Fifo => "p",
                        InodeType.Socket => "s",
                        InodeType.CharDevice => "c",
                        _ => "b",
                    };
                    size = l.Type == InodeType.Symlink ? System.Text.Encoding.UTF8.GetByteCount(l.Target).ToString(System.Globalization.CultureInfo.InvariantCulture) : "0";
                    if (l.Type == InodeType.Symlink) content = l.Target;
                    else if (l.Type is InodeType.CharDevice or InodeType.BlockDevice) content = $"{DeviceNumbers.Major(l.Rdev)}:{DeviceNumbers.Minor(l.Rdev)}";
                    break;
                default:
                    continue;
            }
            writer.Write($"{node.Path}\t{type}\t{Convert.ToString(node.Mode, 8)}\t{node.Uid}\t{node.Gid}\t{nlink}\t{size}\t{content}\t{node.XattrDigest}\n");
        }
    }

    /// <summary>
    /// The manifest's XATTRS column: the lowercase hex SHA-256 of one line "name=value\n" per attribute (full name
    /// with its namespace prefix, the raw value bytes), the lines sorted bytewise and concatenated; "-" for none.
    /// The same digest as <see cref="Attributes.AttributeOperations.Digest"/>.
    /// </summary>
    public static string XattrDigest(IEnumerable<(string Name, byte[] Value)> attributes)
    {
        ArgumentNullException.ThrowIfNull(attributes);
        var lines = new List<byte[]>();
        foreach (var (name, value) in attributes)
        {
            int nameBytes = System.Text.Encoding.UTF8.GetByteCount(name);
            var line = new byte[nameBytes + 1 + value.Length + 1];
            System.Text.Encoding.UTF8.GetBytes(name, line);
            line[nameBytes] = (byte)'=';
            value.CopyTo(line, nameBytes + 1);
            line[^1] = (byte)'\n';
            lines.Add(line);
        }
        if (lines.Count == 0) return "-";
        lines.Sort((a, b) => a.AsSpan().SequenceCompareTo(b));
        using var sha = System.Security.Cryptography.IncrementalHash.CreateHash(System.Security.Cryptography.HashAlgorithmName.SHA256);
        foreach (var line in lines) sha.AppendData(line);
        return Convert.ToHexStringLower(sha.GetHashAndReset());
    }
}
