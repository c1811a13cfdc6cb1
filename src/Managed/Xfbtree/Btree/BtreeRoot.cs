namespace Xfbtree.Btree;

/// <summary>
/// Where a tree's root lives: an AG header field pair (caller-provided), an in-memory head, a staging fake
/// root, or an inode fork (bmdr). The engine reads <see cref="Pointer"/>/<see cref="Height"/> at the start of
/// each operation and calls <see cref="Set"/> when the root moves (new root, root collapse).
/// </summary>
public abstract class BtreeRoot
{
    /// <summary>Root block pointer (ignored for inode roots).</summary>
    public abstract long Pointer { get; }
    /// <summary>Number of levels (1 = the root is a leaf).</summary>
    public abstract int Height { get; }
    /// <summary>Moves the root.</summary>
    public abstract void Set(long pointer, int height);
    /// <summary>True when the root block is not a block of the store but an image held by this object (inode fork root).</summary>
    public virtual bool IsImage => false;
}

/// <summary>
/// A root held in memory: an in-memory tree's head, a staging fake root, or a copy of AG header fields.
/// <see cref="Changed"/> lets the owner write the new root back (e.g. into the AGF) when it moves.
/// </summary>
public sealed class BtreeRootValue : BtreeRoot
{
    PaddedLong _pointer;             // alone on its cache line (see PaddedLong)
    int _height;

    /// <summary>A root kept in memory: <paramref name="pointer"/> and <paramref name="height"/>.</summary>
    public BtreeRootValue(long pointer, int height) { _pointer.Value = pointer; _height = height; }
    /// <inheritdoc />
    public override long Pointer => _pointer.Value;
    /// <inheritdoc />
    public override int Height => _height;
    /// <summary>The pointer, read with acquire semantics (concurrent readers of in-memory trees).</summary>
    internal long PointerVolatile => Volatile.Read(ref _pointer.Value);
    /// <summary>Blocks in the tree, when tracked (bulk loading fills it).</summary>
    public long BlockCount { get; set; }
    /// <summary>Called after every move with the new pointer and height.</summary>
    public Action<long, int>? Changed { get; set; }
    /// <inheritdoc />
    public override void Set(long pointer, int height)
    {
        _height = height;
        Volatile.Write(ref _pointer.Value, pointer);
        Changed?.Invoke(pointer, height);
    }
}

/// <summary>
/// A long on a cache line of its own (a line of padding on each side): for a value that concurrent readers load on
/// every call while a writer changes fields next to it (the root pointer of an in-memory tree), or that the writer
/// changes on every write next to fields readers load (a typed map's record count). On a shared line each write would
/// cost a reader running on the other core a cache miss.
/// </summary>
[System.Runtime.InteropServices.StructLayout(System.Runtime.InteropServices.LayoutKind.Explicit, Size = 136)]
internal struct PaddedLong
{
    [System.Runtime.InteropServices.FieldOffset(64)] internal long Value;
}

/// <summary>
/// A root stored inside an inode fork (the bmbt's bmdr: level u16, numrecs u16, keys, then pointers at
/// <c>4 + maxrecs*keyslot</c> where maxrecs is that of the fork's size). The engine works on an image of it laid
/// out as a node block of the tree with <see cref="MaxRecords"/> key slots, and modifies it like any node:
/// inserts while it has room, key updates, deletes; a full root grows the tree by moving its entries into a new
/// child block (XFS's new_iroot), and a root left with one child whose entries fit pulls them up and frees the
/// child (kill_iroot), never below level 1 (the bmap layer converts a btree fork back to extents itself).
/// After every operation that changed the image the engine calls <see cref="BtreeRoot.Set"/> (when the height
/// moved) or raises <see cref="Changed"/> directly; the owner then copies the image into the fork with
/// <see cref="WriteTo"/>. A fork root is a node (level 1 or more): the cursor and the checker report a level-0
/// fork root as corruption. A zeroed fork gives an unformatted image that <see cref="Btree{TOps}.CreateEmpty"/>
/// formats as a level-1 root over one empty leaf.
/// </summary>
public sealed unsafe class BtreeInodeRoot : BtreeRoot, IDisposable
{
    readonly byte[] _image;

    /// <summary>Builds the image from the raw fork bytes (<paramref name="fork"/> is the whole fork area).</summary>
    public BtreeInodeRoot(BtreeGeometry geometry, uint magic, ReadOnlySpan<byte> fork)
    {
        ArgumentNullException.ThrowIfNull(geometry);
        if (fork.Length < 4 + geometry.KeySlotSize + geometry.PointerSize) throw new ArgumentException("fork too small for a btree root", nameof(fork));
        Geometry = geometry;
        MaxRecords = MaxRecordsForFork(geometry, fork.Length);
        int level = System.Buffers.Binary.BinaryPrimitives.ReadUInt16BigEndian(fork);
        int n = System.Buffers.Binary.BinaryPrimitives.ReadUInt16BigEndian(fork[2..]);
        _image = GC.AllocateArray<byte>(Math.Max(geometry.BlockSize, geometry.HeaderSize + MaxRecords * (geometry.KeySlotSize + geometry.PointerSize)), pinned: true);
        BtreeHeader.Initialize(_image, geometry.LongPointers, magic, level, 0, new byte[16], 0);
        // Copy at most MaxRecords entries: numrecs is checked against MaxRecords by the cursor before use.
        int copy = Math.Min(n, MaxRecords);
        BtreeHeader.SetNumRecords(_image, n);
        fork.Slice(4, copy * geometry.KeySlotSize).CopyTo(_image.AsSpan(geometry.HeaderSize));
        fork.Slice(4 + MaxRecords * geometry.KeySlotSize, copy * geometry.PointerSize).CopyTo(_image.AsSpan(geometry.PointerOffset(0, MaxRecords)));
    }

    /// <summary>Key/pointer slots of a bmdr root in a fork of <paramref name="forkBytes"/> bytes: (forksize - 4) / (keyslot + ptrsize).</summary>
    public static int MaxRecordsForFork(BtreeGeometry geometry, int forkBytes)
    {
        ArgumentNullException.ThrowIfNull(geometry);
        return Math.Max(0, forkBytes - 4) / (geometry.KeySlotSize + geometry.PointerSize);
    }

    /// <summary>The geometry of the in-inode root block.</summary>
    public BtreeGeometry Geometry { get; }
    /// <summary>Key/pointer slots of the in-inode root: (forksize - 4) / (keysize + ptrsize).</summary>
    public int MaxRecords { get; }
    /// <summary>Level of the root (the image's current level; at construction, the level stored in the fork).</summary>
    public int Level => BtreeHeader.Level(_image);
    /// <summary>numrecs of the root (the image's current count; at construction, numrecs stored in the fork).</summary>
    public int NumRecords => BtreeHeader.NumRecords(_image);
    /// <inheritdoc />
    public override long Pointer => BtreeHeader.NullPointer;
    /// <summary>Levels of the tree: the root's level + 1.</summary>
    public override int Height => Level + 1;
    /// <inheritdoc />
    public override bool IsImage => true;

    /// <summary>
    /// Called after every engine operation that changed the image (entries, keys, level); copy it into the fork
    /// with <see cref="WriteTo"/>. Raised also when the engine reports a new height through <see cref="Set"/>.
    /// </summary>
    public Action<BtreeInodeRoot>? Changed { get; set; }

    /// <summary>
    /// Reports a height change. The engine changes the image's level itself (new_iroot, kill_iroot), so
    /// <paramref name="height"/> must equal <see cref="Height"/> and <paramref name="pointer"/> must be null;
    /// raises <see cref="Changed"/>.
    /// </summary>
    public override void Set(long pointer, int height)
    {
        if (pointer != BtreeHeader.NullPointer) throw new ArgumentException("an inode root has no block pointer", nameof(pointer));
        if (height != Height) throw new InvalidOperationException($"height {height} reported for an inode root image of height {Height}");
        Changed?.Invoke(this);
    }

    internal void RaiseChanged() => Changed?.Invoke(this);

    /// <summary>Bytes a bmdr root with the current entries needs in the fork (4 + numrecs * (keyslot + ptrsize)).</summary>
    public int RequiredForkBytes => 4 + NumRecords * (Geometry.KeySlotSize + Geometry.PointerSize);

    /// <summary>
    /// Writes the root into <paramref name="fork"/> (the whole fork area) in bmdr layout: level, numrecs, keys, and
    /// the pointers at <c>4 + maxrecs*keyslot</c> where maxrecs is that of THIS fork's size (which may differ from
    /// the one the image was built from). Unused slots are zeroed. Throws when the entries do not fit.
    /// </summary>
    public void WriteTo(Span<byte> fork)
    {
        int max = MaxRecordsForFork(Geometry, fork.Length);
        int n = NumRecords;
        if (n > max || n > MaxRecords) throw new ArgumentException($"{n} root entries do not fit a fork of {fork.Length} bytes (maxrecs {max})", nameof(fork));
        fork.Clear();
        System.Buffers.Binary.BinaryPrimitives.WriteUInt16BigEndian(fork, checked((ushort)Level));
        System.Buffers.Binary.BinaryPrimitives.WriteUInt16BigEndian(fork[2..], checked((ushort)n));
        _image.AsSpan(Geometry.HeaderSize, n * Geometry.KeySlotSize).CopyTo(fork[4..]);
        _image.AsSpan(Geometry.PointerOffset(0, MaxRecords), n * Geometry.PointerSize).CopyTo(fork[(4 + max * Geometry.KeySlotSize)..]);
    }

    /// <summary>SAFETY: pinned image memory, valid for the object's lifetime.</summary>
    internal byte* ImageData { get { fixed (byte* p = _image) return p; } }
    /// <summary>Bytes of the pinned image (at least a block, and at least the node layout of <see cref="MaxRecords"/> slots).</summary>
    internal int ImageLength => _image.Length;
    /// <summary>The image as a span (engine-internal: the cursor's root-level view).</summary>
    internal Span<byte> Image => _image;
    /// <inheritdoc />
    public void Dispose() { }
}
