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
    long _pointer;
    int _height;

    public BtreeRootValue(long pointer, int height) { _pointer = pointer; _height = height; }
    public override long Pointer => _pointer;
    public override int Height => _height;
    /// <summary>Blocks in the tree, when tracked (bulk loading fills it).</summary>
    public long BlockCount { get; set; }
    /// <summary>Called after every move with the new pointer and height.</summary>
    public Action<long, int>? Changed { get; set; }
    public override void Set(long pointer, int height)
    {
        _pointer = pointer;
        _height = height;
        Changed?.Invoke(pointer, height);
    }
}

/// <summary>
/// A root stored inside an inode fork (the bmbt's bmdr: level, numrecs, keys, then pointers at
/// <c>4 + maxrecs*keysize</c>). The engine sees an image of it laid out as a node block of the tree with
/// <see cref="MaxRecords"/> key slots. Read-only: the engine refuses to split or collapse it. A fork root is a node
/// (level 1 or more): the cursor and the checker report a level-0 fork root as corruption.
/// </summary>
public sealed unsafe class BtreeInodeRoot : BtreeRoot, IDisposable
{
    readonly byte[] _image;

    /// <summary>Builds the image from the raw fork bytes (<paramref name="fork"/> is the whole fork area).</summary>
    public BtreeInodeRoot(BtreeGeometry geometry, uint magic, ReadOnlySpan<byte> fork)
    {
        if (fork.Length < 4 + geometry.KeySlotSize + geometry.PointerSize) throw new ArgumentException("fork too small for a btree root", nameof(fork));
        Geometry = geometry;
        MaxRecords = (fork.Length - 4) / (geometry.KeySlotSize + geometry.PointerSize);
        int level = System.Buffers.Binary.BinaryPrimitives.ReadUInt16BigEndian(fork);
        int n = System.Buffers.Binary.BinaryPrimitives.ReadUInt16BigEndian(fork[2..]);
        Height = level + 1;
        Level = level;
        NumRecords = n;
        _image = GC.AllocateArray<byte>(Math.Max(geometry.BlockSize, geometry.HeaderSize + MaxRecords * (geometry.KeySlotSize + geometry.PointerSize)), pinned: true);
        BtreeHeader.Initialize(_image, geometry.LongPointers, magic, level, 0, new byte[16], 0);
        // Copy at most MaxRecords entries: numrecs is checked against MaxRecords by the cursor before use.
        int copy = Math.Min(n, MaxRecords);
        BtreeHeader.SetNumRecords(_image, n);
        fork.Slice(4, copy * geometry.KeySlotSize).CopyTo(_image.AsSpan(geometry.HeaderSize));
        fork.Slice(4 + MaxRecords * geometry.KeySlotSize, copy * geometry.PointerSize).CopyTo(_image.AsSpan(geometry.PointerOffset(0, MaxRecords)));
    }

    public BtreeGeometry Geometry { get; }
    /// <summary>Key/pointer slots of the in-inode root: (forksize - 4) / (keysize + ptrsize).</summary>
    public int MaxRecords { get; }
    /// <summary>Level stored in the fork.</summary>
    public int Level { get; }
    /// <summary>numrecs stored in the fork.</summary>
    public int NumRecords { get; }
    public override long Pointer => BtreeHeader.NullPointer;
    public override int Height { get; }
    public override bool IsImage => true;
    public override void Set(long pointer, int height) => throw new NotSupportedException("inode-rooted trees are read-only in this engine");
    /// <summary>SAFETY: pinned image memory, valid for the object's lifetime.</summary>
    internal byte* ImageData { get { fixed (byte* p = _image) return p; } }
    /// <summary>Bytes of the pinned image (at least a block, and at least the node layout of <see cref="MaxRecords"/> slots).</summary>
    internal int ImageLength => _image.Length;
    public void Dispose() { }
}
