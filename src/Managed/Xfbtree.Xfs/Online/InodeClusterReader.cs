using Xfbtree.Buffers;
using Xfbtree.Xfs.Format;
using Xfbtree.Xfs.Write.Engine;

namespace Xfbtree.Xfs.Online;

/// <summary>
/// Reads inode cores in inode order straight from their cluster buffers, each block once with a shared buffer lock
/// (kept until the next block is needed or the reader is disposed), for the online rebuilds that look at every
/// allocated core of a chunk. A core is returned only when it is an inode core of that number: anything else ends the
/// rebuild (its caller says why that inode matters and what to do).
/// </summary>
internal sealed class InodeClusterReader(WriteEngine engine, uint agno) : IDisposable
{
    private readonly int inodeSize = engine.Geometry.InodeSize;
    private BlockBuffer? buffer;
    private long bufferDaddr = -1;

    /// <summary>The core of <paramref name="ino"/>, valid until the next call or <see cref="Dispose"/>; when the
    /// slot holds no core of that number, an <see cref="OnlineRepairException"/> saying "inode N <paramref name="what"/>
    /// (magic, di_ino); <paramref name="consequence"/>".</summary>
    public Dinode Core(ulong ino, string what, string consequence)
    {
        var (daddr, offset) = engine.InodeLocation(ino);
        if (daddr != bufferDaddr)
        {
            Release();
            buffer = engine.Image.Cache.Read(engine.Disk, daddr, engine.Geometry.BasicBlocksPerBlock, null, BufferLockMode.Shared);
            bufferDaddr = daddr;
        }
        var core = new Dinode(buffer!.Span.Slice(offset, inodeSize));
        if (core.Magic != Dinode.MagicValue || core.Ino != ino)
        {
            throw new OnlineRepairException($"AG {agno}: inode {ino} {what} (magic 0x{core.Magic:x4}, di_ino {core.Ino}); {consequence}");
        }
        return core;
    }

    public void Dispose() => Release();

    private void Release()
    {
        if (buffer is not null)
        {
            engine.Image.Cache.Release(buffer);
            buffer = null;
            bufferDaddr = -1;
        }
    }
}
