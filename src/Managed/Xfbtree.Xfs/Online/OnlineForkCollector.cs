using Xfbtree.Btree;
using Xfbtree.Buffers;
using Xfbtree.Xfs.Format;
using Xfbtree.Xfs.Trees;

namespace Xfbtree.Xfs.Online;

/// <summary>One rmap a scan found, and whether it goes into the shadow tree with the shared (reflink) variant.</summary>
internal readonly record struct ScannedRmap(RmapRecord Record, bool Shared);

/// <summary>
/// The rmaps of one locked inode that fall into one AG: both forks (extents and bmbt format), every extent of the
/// data and attr fork in the AG, and every bmbt block below the inode root in the AG (BMBT flag). The bmbt is
/// read through the engine's buffer cache (verified); adjacent mappings are merged by the shadow tree's
/// <see cref="RmapEditor"/>, not here. Damage throws <see cref="CorruptionException"/>.
/// </summary>
internal sealed class OnlineForkCollector
{
    private readonly XfsImage image;
    private readonly XfsGeometry geo;
    private readonly uint agno;
    private readonly bool reflink;
    private readonly List<ScannedRmap> found = new();
    private readonly HashSet<long> seen = new();
    private ulong ino;
    private bool attr;

    public OnlineForkCollector(XfsImage image, uint agno)
    {
        this.image = image;
        geo = image.Geometry;
        this.agno = agno;
        reflink = geo.Superblock.HasReflink;
    }

    /// <summary>The rmaps of <paramref name="inode"/> (a whole dinode, held under its lock) in this AG.</summary>
    public IReadOnlyList<ScannedRmap> Collect(ulong inodeNumber, ReadOnlySpan<byte> inode)
    {
        found.Clear();
        ino = inodeNumber;
        var d = new Dinode(inode);
        if (d.IsFree)
        {
            return found;
        }
        if (d.Verify(geo, inodeNumber) is { } why)
        {
            throw new CorruptionException("inode", geo.AgBlockToDaddr(geo.InoToAgno(inodeNumber), geo.AginoToAgbno(geo.InoToAgino(inodeNumber))), $"inode {inodeNumber}: {why}");
        }
        for (int f = 0; f < 2; f++)
        {
            attr = f == 1;
            if (attr && !d.HasAttrFork)
            {
                continue;
            }
            ForkFormat format = d.FormatOf(attr);
            ReadOnlySpan<byte> fork = d.Fork(attr);
            if (format == ForkFormat.Extents)
            {
                ulong n = d.ExtentsOf(attr);
                for (int i = 0; i < (int)n; i++)
                {
                    AddExtent(BmbtExtent.Read(fork[(i * Dinode.ExtentSize)..]));
                }
            }
            else if (format == ForkFormat.Btree)
            {
                seen.Clear();
                Btree<BmbtOps> tree = image.OpenBmbt(inodeNumber, fork);
                using BtreeCursor<BmbtOps> cur = tree.CreateCursor();
                var visitor = new BmbtVisitor { Collector = this, RootLevel = tree.Root.Height - 1 };
                cur.VisitBlocks(ref visitor);
            }
        }
        return found;
    }

    private void AddExtent(in BmbtExtent e)
    {
        if (e.Validate(geo) is { } why)
        {
            throw new CorruptionException("bmbt", 0, $"inode {ino} {(attr ? "attr" : "data")} fork: {why}");
        }
        if (geo.FsbToAgno(e.StartBlock) != agno)
        {
            return;
        }
        ulong raw = e.StartOffset | (attr ? RmapbtOps.AttrForkFlag : 0) | (e.Unwritten ? RmapbtOps.UnwrittenFlag : 0);
        // upstream's map_raw: plain data-fork mappings may be shared (reflink); everything else owns its blocks.
        found.Add(new ScannedRmap(new RmapRecord(geo.FsbToAgbno(e.StartBlock), e.BlockCount, ino, raw), Shared: reflink && !attr));
    }

    private void OnBlock(int level, long pointer, ReadOnlySpan<byte> block, int rootLevel)
    {
        if (level == rootLevel)
        {
            return; // the root lives in the inode
        }
        if (!seen.Add(pointer))
        {
            throw new CorruptionException("bmbt", pointer, $"inode {ino}: bmbt block {pointer} reached twice");
        }
        if (geo.FsbToAgno((ulong)pointer) == agno)
        {
            ulong flags = RmapbtOps.BmbtBlockFlag | (attr ? RmapbtOps.AttrForkFlag : 0);
            found.Add(new ScannedRmap(new RmapRecord(geo.FsbToAgbno((ulong)pointer), 1, ino, flags), Shared: false));
        }
        if (level != 0)
        {
            return;
        }
        int n = BtreeHeader.NumRecords(block); // verified against maxrecs when the block was read
        for (int i = 0; i < n; i++)
        {
            AddExtent(BmbtExtent.Read(block[(BtreeGeometry.LongHeaderSize + i * 16)..]));
        }
    }

    private struct BmbtVisitor : IBtreeBlockVisitor
    {
        public OnlineForkCollector Collector;
        public int RootLevel;

        public readonly void Visit(int level, long pointer, ReadOnlySpan<byte> block) => Collector.OnBlock(level, pointer, block, RootLevel);
    }
}
