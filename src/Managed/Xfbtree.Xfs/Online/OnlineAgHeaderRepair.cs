using System.Buffers.Binary;
using Xfbtree.Btree;
using Xfbtree.Buffers;
using Xfbtree.Xfs.Format;
using Xfbtree.Xfs.Repair;
using Xfbtree.Xfs.Trees;
using Xfbtree.Xfs.Write;
using Xfbtree.Xfs.Write.Engine;

namespace Xfbtree.Xfs.Online;

/// <summary>
/// Rebuilds the AG headers that do not verify or whose fields are wrong, each in ONE engine transaction holding the
/// AG lock (upstream's xrep_agf, xrep_agfl, xrep_agi and xrep_superblock in fs/xfs/scrub/agheader_repair.c):
/// <list type="bullet">
/// <item>AGF: every field rewritten from the trees found and walked. The btree roots are found through the rmapbt
/// (the bnobt and cntbt among its OWN_AG blocks, the refcountbt among its OWN_REFC blocks); the rmapbt's own root
/// is the old AGF's when that tree verifies whole, else found by a scan of the AG's blocks for rmapbt blocks that
/// verify (magic, CRC, blkno, owner AG, metadata UUID). Then the free list is rebuilt from it
/// (<see cref="OnlineAgflRepair"/>), which sets flfirst, fllast and flcount.</item>
/// <item>AGI: the inobt and finobt roots found among the rmapbt's OWN_INOBT blocks, the counters from the inobt; the
/// unlinked lists rebuilt from the allocated inodes with nlink 0 (<see cref="OnlineUnlinkedListRepair"/>).</item>
/// <item>A secondary superblock: a copy of the primary (NEEDSREPAIR and the log-incompat word cleared).</item>
/// </list>
/// A root is taken only when exactly one tree qualifies: a root block that verifies and has no siblings, whose whole
/// tree the engine's checker walks clean, every block of it owned as the rmapbt says (and no block shared with a tree
/// already chosen). A header field that points at such a tree is taken first (a wrong level is not a wrong root);
/// otherwise every candidate is walked; a candidate inside another's tree is not a root; when several remain the
/// free-space trees are told apart by the free space the rmapbt implies, and anything still ambiguous is refused
/// (<see cref="OnlineRepairException"/>: nothing changed).
/// </summary>
internal static class OnlineAgHeaderRepair
{
    /// <summary>Candidate roots walked at most per tree (each is a whole tree walk).</summary>
    public const int MaxCandidateRoots = 64;

    /// <summary>Rebuilds the AGF and then the AGFL of AG <paramref name="agno"/>.</summary>
    public static AgRebuildResult RepairAgf(WriteEngine engine, uint agno)
    {
        XfsGeometry geo = engine.Geometry;
        return AgRebuild.RunLocked(engine, agno, "AGF", "find the AGF's btrees with", null, (tx, _) =>
        {
            var probe = new AgProbe(engine, tx, agno);
            Agf? old = probe.OldAgf();
            RmapFound rmap = probe.FindRmapbt(old?.RmapRoot);
            var taken = new AgBlockBitmap(probe.AgLength);
            taken.UnionWith(rmap.Tree.Blocks);
            var freeSpacePool = new AgBlockBitmap(probe.AgLength);
            freeSpacePool.UnionWith(rmap.OwnAg);
            foreach (var (start, length) in AgRebuild.Runs(rmap.Tree.Blocks))
            {
                freeSpacePool.Clear(start, length);
            }
            uint len = probe.AgLength;
            TreeFound bno = probe.Find("bnobt", new BnobtOps(len), BnobtOps.MagicValue, XfsTreeLimits.MaxLevels(geo, AgfTree.Bnobt),
                XfsTreeLimits.MaxRecords(geo, AgfTree.Bnobt), old?.BnoRoot, freeSpacePool, rmap.OwnAg, taken, t => probe.HoldsFreeSpace(t, rmap.Used));
            taken.UnionWith(bno.Blocks);
            TreeFound cnt = probe.Find("cntbt", new CntbtOps(len), CntbtOps.MagicValue, XfsTreeLimits.MaxLevels(geo, AgfTree.Cntbt),
                XfsTreeLimits.MaxRecords(geo, AgfTree.Cntbt), old?.CntRoot, freeSpacePool, rmap.OwnAg, taken, t => probe.HoldsFreeSpace(t, rmap.Used));
            TreeFound? refc = null;
            if (geo.Superblock.HasReflink)
            {
                refc = probe.Find("refcountbt", new RefcountbtOps(), RefcountbtOps.MagicValue, XfsTreeLimits.MaxLevels(geo, AgfTree.Refcountbt),
                    XfsTreeLimits.MaxRecords(geo, AgfTree.Refcountbt), old?.RefcountRoot, rmap.OwnRefc, rmap.OwnRefc, null, null);
            }
            var (freeBlocks, longest) = probe.FreeSpaceTotals(bno);
            byte[] s = new byte[geo.SectorSize];
            void Put(int offset, uint value) => BinaryPrimitives.WriteUInt32BigEndian(s.AsSpan(offset), value);
            Put(0, Agf.MagicValue);
            Put(4, 1);   // XFS_AGF_VERSION
            Put(8, agno);
            Put(12, len);
            Put(Agf.OffsetRoots, bno.Root);
            Put(Agf.OffsetRoots + 4, cnt.Root);
            Put(Agf.OffsetRmapRoot, rmap.Tree.Root);
            Put(Agf.OffsetLevels, (uint)bno.Height);
            Put(Agf.OffsetLevels + 4, (uint)cnt.Height);
            Put(Agf.OffsetRmapLevel, (uint)rmap.Tree.Height);
            // An empty free list here; the AGFL rebuild below fills it and sets these three.
            Put(Agf.OffsetFlFirst, 0);
            Put(Agf.OffsetFlLast, (uint)geo.AgflSlots - 1);
            Put(Agf.OffsetFlCount, 0);
            Put(Agf.OffsetFreeBlocks, freeBlocks);
            Put(Agf.OffsetLongest, longest);
            Put(Agf.OffsetBtreeBlocks, checked((uint)(bno.BlockCount - 1 + cnt.BlockCount - 1 + rmap.Tree.BlockCount - 1)));
            geo.MetaUuid.CopyTo(s.AsSpan(64, 16));
            Put(Agf.OffsetRmapBlocks, checked((uint)rmap.Tree.BlockCount));
            if (refc is { } r)
            {
                Put(Agf.OffsetRefcountBlocks, checked((uint)r.BlockCount));
                Put(Agf.OffsetRefcountRoot, r.Root);
                Put(Agf.OffsetRefcountLevel, (uint)r.Height);
            }
            BlockBuffer buffer = tx.GetNewAgHeader(AgHeaderKind.Agf, agno);
            s.CopyTo(buffer.Span);
            XfsCrc.Update(buffer.Span[..geo.SectorSize], Agf.CrcOffset);
            tx.LogBuffer(buffer, 0, geo.SectorSize);
            AgRebuildResult list = OnlineAgflRepair.RebuildIn(engine, tx, agno);
            return new AgRebuildResult(agno, "AGF", list.Records, 0, list.OldBlocksReaped, TimeSpan.Zero)
            {
                Found = $"bnobt root {bno.Root} ({bno.How}), cntbt root {cnt.Root} ({cnt.How}), rmapbt root {rmap.Tree.Root} ({rmap.Tree.How})"
                    + (refc is { } f ? $", refcountbt root {f.Root} ({f.How})" : "") + $"; {freeBlocks} free blocks, AGFL {list.Records} blocks",
            };
        });
    }

    /// <summary>Rebuilds the AGI of AG <paramref name="agno"/> (its AGF must verify: the rmapbt is found through it).</summary>
    public static AgRebuildResult RepairAgi(WriteEngine engine, uint agno, AgRebuildTestHooks? hooks = null)
    {
        XfsGeometry geo = engine.Geometry;
        return AgRebuild.RunLocked(engine, agno, "AGI", "find the inode btrees with", hooks, (tx, _) =>
        {
            var probe = new AgProbe(engine, tx, agno);
            Agf agf = Agf.Parse(tx.ReadAgHeader(AgHeaderKind.Agf, agno).Span, geo, agno);
            if (!agf.TreeRootUsable(AgfTree.Rmapbt, geo))
            {
                throw new OnlineRepairException($"AG {agno}: the AGF's rmapbt root is unusable; repair the AGF first");
            }
            RmapFound rmap = probe.FindRmapbt(agf.RmapRoot, scanWhenBad: false);
            Agi? old = probe.OldAgi();
            bool sparse = geo.Superblock.HasSparseInodes;
            int maxLevels = XfsTreeLimits.MaxInobtLevels(geo);
            long maxRecords = XfsTreeLimits.MaxInobtRecords(geo);
            TreeFound inobt = probe.Find("inobt", new InobtOps(false, sparse), InobtOps.InobtMagic, maxLevels, maxRecords, old?.Root, rmap.OwnInobt, rmap.OwnInobt, null, null);
            TreeFound? finobt = null;
            if (geo.Superblock.HasFinobt)
            {
                finobt = probe.Find("finobt", new InobtOps(true, sparse), InobtOps.FinobtMagic, maxLevels, maxRecords, old?.FreeRoot, rmap.OwnInobt, rmap.OwnInobt, inobt.Blocks, null);
            }
            List<InobtRecord> records = probe.InobtRecords(inobt, sparse);
            long count = 0, freeCount = 0;
            foreach (InobtRecord r in records)
            {
                count += r.Count;
                freeCount += r.FreeCount;
            }
            // The unlinked lists, rebuilt from the allocated inodes with nlink 0 (inodes held open after their last
            // unlink included: every change to those lists and to an nlink reaching 0 holds this AG's lock).
            uint[] heads = OnlineUnlinkedListRepair.Rebuild(engine, tx, agno, records, out UnlinkedRebuild lists);
            byte[] s = new byte[geo.SectorSize];
            void Put(int offset, uint value) => BinaryPrimitives.WriteUInt32BigEndian(s.AsSpan(offset), value);
            Put(0, Agi.MagicValue);
            Put(4, 1);   // XFS_AGI_VERSION
            Put(8, agno);
            Put(Agi.LengthOffset, probe.AgLength);
            Put(Agi.CountOffset, checked((uint)count));
            Put(Agi.RootOffset, inobt.Root);
            Put(Agi.LevelOffset, (uint)inobt.Height);
            Put(Agi.FreeCountOffset, checked((uint)freeCount));
            Put(Agi.NewInoOffset, Agi.NullAgino);   // a hint; upstream's rebuild resets it too
            Put(Agi.NewInoOffset + 4, Agi.NullAgino);   // agi_dirino, unused
            for (int b = 0; b < Agi.UnlinkedBuckets; b++)
            {
                Put(Agi.UnlinkedOffset + 4 * b, heads[b]);
            }
            geo.MetaUuid.CopyTo(s.AsSpan(296, 16));
            if (finobt is { } f)
            {
                Put(Agi.FreeRootOffset, f.Root);
                Put(Agi.FreeLevelOffset, (uint)f.Height);
            }
            if (geo.Superblock.HasInobtCounts)
            {
                Put(Agi.InobtBlocksOffset, checked((uint)inobt.BlockCount));
                Put(Agi.FinobtBlocksOffset, checked((uint)(finobt?.BlockCount ?? 0)));
            }
            BlockBuffer buffer = tx.GetNewAgHeader(AgHeaderKind.Agi, agno);
            s.CopyTo(buffer.Span);
            XfsCrc.Update(buffer.Span[..geo.SectorSize], Agi.CrcOffset);
            tx.LogBuffer(buffer, 0, geo.SectorSize);
            hooks?.AfterSwitch?.Invoke(agno);
            return new AgRebuildResult(agno, "AGI", 0, 0, 0, TimeSpan.Zero)
            {
                Found = $"inobt root {inobt.Root} ({inobt.How})" + (finobt is { } g ? $", finobt root {g.Root} ({g.How})" : "") + $"; {count} inodes, {freeCount} free; {lists}",
            };
        });
    }

    /// <summary>Rewrites the secondary superblock of AG <paramref name="agno"/> (1 and up) as a copy of the primary.</summary>
    public static string RepairSecondarySuperblock(WriteEngine engine, uint agno)
    {
        ArgumentNullException.ThrowIfNull(engine);
        if (agno == 0)
        {
            throw new OnlineRepairException("AG 0 holds the primary superblock, which is never rewritten from a copy");
        }
        _ = engine.Ag(agno);
        XfsGeometry geo = engine.Geometry;
        engine.Execute($"scrub repair AG {agno} superblock", tx =>
        {
            tx.LockAgForRepair(agno);
            // The engine's in-core primary (read and verified at open, NEEDSREPAIR set; the copy clears it), not the
            // sector on disk, which may be damaged behind the engine's back. Geometry and features never change while
            // the engine runs; the counters, which may lag, are not compared on secondaries.
            byte[] primary = engine.PrimarySuperblockInCore;
            if (Superblock.Parse(primary) is not { Magic: Superblock.MagicValue, CrcValid: true })
            {
                throw new OnlineRepairException("the engine's in-core primary superblock does not verify");
            }
            BlockBuffer buffer = tx.GetNewBuffer(geo.AgHeaderDaddr(agno, 0), geo.SectorBasicBlocks, new SecondarySuperblockVerifier(geo.SectorSize));
            SecondarySuperblock.FormatFromPrimary(primary, buffer.Span[..geo.SectorSize]);
            tx.LogBuffer(buffer, 0, geo.SectorSize);
        });
        return "copied from the primary superblock";
    }

    /// <summary>True when the AG header sector on disk verifies (magic, CRC, AG number, metadata UUID).</summary>
    public static bool HeaderVerifies(WriteEngine engine, uint agno, AgHeaderKind kind)
    {
        ArgumentNullException.ThrowIfNull(engine);
        XfsGeometry geo = engine.Geometry;
        byte[] sector = new byte[geo.SectorSize];
        long daddr = geo.AgHeaderDaddr(agno, (int)kind);
        engine.WriteBackCommitted(); // a raw read of the image file: every commit in place first
        WriteEngine.ReadRaw(engine.Disk, daddr, sector);
        try
        {
            engine.Ag(agno).Verifiers[(int)kind]!.Verify(sector, daddr);
            return true;
        }
        catch (CorruptionException)
        {
            return false;
        }
    }

    /// <summary>
    /// True when the AG header verifies and the rebuilds of the trees it describes can work from it: every tree but the
    /// rmapbt is rebuilt from the rmapbt (and the inode cores) whatever the header says of it, so an AGI that verifies
    /// will do, and an AGF that verifies will do when its rmapbt root names an rmapbt block at the AGF's rmap level.
    /// </summary>
    public static bool TreeRebuildsCanUse(WriteEngine engine, uint agno, AgHeaderKind kind)
    {
        ArgumentNullException.ThrowIfNull(engine);
        if (!HeaderVerifies(engine, agno, kind)) return false;
        if (kind != AgHeaderKind.Agf) return true;
        XfsGeometry geo = engine.Geometry;
        byte[] sector = new byte[geo.SectorSize];
        engine.WriteBackCommitted(); // a raw read of the image file: every commit in place first
        WriteEngine.ReadRaw(engine.Disk, geo.AgHeaderDaddr(agno, (int)kind), sector);
        var agf = Agf.Parse(sector, geo, agno);
        if (!agf.TreeRootUsable(AgfTree.Rmapbt, geo)) return false;
        byte[] block = new byte[geo.BlockSize];
        WriteEngine.ReadRaw(engine.Disk, geo.AgBlockToDaddr(agno, agf.RmapRoot), block);
        return BinaryPrimitives.ReadUInt32BigEndian(block) == RmapbtOps.MagicValue && BinaryPrimitives.ReadUInt16BigEndian(block.AsSpan(4)) + 1u == agf.RmapLevel;
    }

    /// <summary>A tree found: root, height, its blocks and how it was found.</summary>
    internal sealed record TreeFound(uint Root, int Height, AgBlockBitmap Blocks, long BlockCount, string How);

    /// <summary>The rmapbt found and the owners the AG header repairs need from it.</summary>
    internal sealed record RmapFound(TreeFound Tree, AgBlockBitmap OwnAg, AgBlockBitmap OwnRefc, AgBlockBitmap OwnInobt, AgBlockBitmap Used);

    /// <summary>One AG under a repair's lock: raw block reads (the scan for candidate roots) and checked tree walks
    /// through the transaction.</summary>
    private sealed class AgProbe
    {
        private readonly WriteEngine engine;
        private readonly WriteTransaction tx;
        private readonly XfsGeometry geo;
        private readonly uint agno;
        private readonly int blockSize;

        public AgProbe(WriteEngine engine, WriteTransaction tx, uint agno)
        {
            this.engine = engine;
            this.tx = tx;
            this.agno = agno;
            geo = engine.Geometry;
            blockSize = geo.BlockSize;
            AgLength = geo.AgLength(agno);
            // The probe reads the image file (raw blocks, candidate roots): every commit in place first; the AG lock
            // the caller holds keeps this AG's blocks as they are while it probes.
            engine.WriteBackCommitted();
        }

        public uint AgLength { get; }

        private void ReadBlocks(uint agbno, Span<byte> into) => WriteEngine.ReadRaw(engine.Disk, geo.AgBlockToDaddr(agno, agbno), into);

        private byte[] ReadSector(AgHeaderKind kind)
        {
            byte[] s = new byte[geo.SectorSize];
            WriteEngine.ReadRaw(engine.Disk, geo.AgHeaderDaddr(agno, (int)kind), s);
            return s;
        }

        /// <summary>The AGF sector as it is on disk, for its fields as hints, when its magic is right (its CRC may not be).</summary>
        public Agf? OldAgf()
        {
            byte[] s = ReadSector(AgHeaderKind.Agf);
            return BinaryPrimitives.ReadUInt32BigEndian(s) == Agf.MagicValue ? Agf.Parse(s, geo, agno) : null;
        }

        /// <summary>The AGI sector as it is on disk, as <see cref="OldAgf"/>.</summary>
        public Agi? OldAgi()
        {
            byte[] s = ReadSector(AgHeaderKind.Agi);
            return BinaryPrimitives.ReadUInt32BigEndian(s) == Agi.MagicValue ? Agi.Parse(s, geo, agno) : null;
        }

        /// <summary>
        /// Height of a block that may be the root of a tree of <paramref name="magic"/>: it verifies as a short-form v5
        /// block of this AG at this address (magic, CRC, blkno, metadata UUID, owner) and has no siblings; -1 otherwise.
        /// </summary>
        private int RootHeight(ReadOnlySpan<byte> block, uint magic, uint agbno, int maxLevels)
        {
            if (BinaryPrimitives.ReadUInt32BigEndian(block) != magic) return -1;
            if (!XfsCrc.Verify(block, 52)) return -1;
            if (BinaryPrimitives.ReadUInt64BigEndian(block[16..]) != (ulong)geo.AgBlockToDaddr(agno, agbno)) return -1;
            if (!block.Slice(32, 16).SequenceEqual(geo.MetaUuid)) return -1;
            if (BinaryPrimitives.ReadUInt32BigEndian(block[48..]) != agno) return -1;
            if (BinaryPrimitives.ReadUInt32BigEndian(block[8..]) != NullAgBlock || BinaryPrimitives.ReadUInt32BigEndian(block[12..]) != NullAgBlock) return -1;
            int height = BinaryPrimitives.ReadUInt16BigEndian(block[4..]) + 1;
            return height <= maxLevels ? height : -1;
        }

        private const uint NullAgBlock = 0xFFFFFFFF;

        /// <summary>Blocks of <paramref name="pool"/> that may be roots of a tree of <paramref name="magic"/>, read in 1 MiB runs.</summary>
        private List<(uint Agbno, int Height)> ScanForRoots(AgBlockBitmap pool, uint magic, int maxLevels)
        {
            var found = new List<(uint, int)>();
            int perRead = Math.Max(1, (1 << 20) / blockSize);
            byte[] chunk = new byte[perRead * blockSize];
            for (uint from = geo.FirstFreeBlock; from < AgLength && pool.NextExtent(from, out uint start, out uint length); from = start + length)
            {
                for (uint b = start; b < start + length;)
                {
                    int n = (int)Math.Min(perRead, start + length - b);
                    ReadBlocks(b, chunk.AsSpan(0, n * blockSize));
                    for (int i = 0; i < n; i++)
                    {
                        int h = RootHeight(chunk.AsSpan(i * blockSize, blockSize), magic, b + (uint)i, maxLevels);
                        if (h > 0) found.Add((b + (uint)i, h));
                    }
                    b += (uint)n;
                }
            }
            return found;
        }

        /// <summary>
        /// The tree rooted at <paramref name="root"/> when it qualifies: the root verifies and has no siblings, the
        /// checker walks the tree clean, every block is in <paramref name="owned"/> (when given) and none in
        /// <paramref name="taken"/>. Null otherwise, with the reason.
        /// </summary>
        private TreeFound? Qualify<TOps>(TOps ops, uint magic, int maxLevels, long maxRecords, uint root, AgBlockBitmap? owned, AgBlockBitmap? taken, string how, out string why)
            where TOps : struct, IBtreeOps
        {
            why = "";
            if (root < geo.FirstFreeBlock || root >= AgLength)
            {
                why = $"block {root} is outside the AG";
                return null;
            }
            byte[] block = new byte[blockSize];
            ReadBlocks(root, block);
            int height = RootHeight(block, magic, root, maxLevels);
            if (height < 0)
            {
                why = $"block {root} is not a root block of this tree (magic, CRC, address, owner, UUID or siblings)";
                return null;
            }
            var tree = Open(ops, root, height, maxRecords);
            try
            {
                BtreeCheckReport report = tree.Check(AgLength);
                if (!report.IsClean)
                {
                    why = $"the tree at block {root} does not walk clean ({report.Violations.FirstOrDefault()})";
                    return null;
                }
                var blocks = new AgBlockBitmap(AgLength);
                long count = AgRebuild.MarkTreeBlocks(tree, blocks);
                foreach (var (s, l) in AgRebuild.Runs(blocks))
                {
                    if (taken is not null && taken.AnySet(s, l))
                    {
                        why = $"the tree at block {root} shares blocks with a tree already found";
                        return null;
                    }
                    if (owned is not null)
                    {
                        for (uint b = s; b < s + l; b++)
                        {
                            if (!owned.IsSet(b))
                            {
                                why = $"the tree at block {root} holds block {b}, which the rmapbt does not give to it";
                                return null;
                            }
                        }
                    }
                }
                return new TreeFound(root, height, blocks, count, how);
            }
            catch (CorruptionException e)
            {
                why = $"the tree at block {root} does not read: {e.Message}";
                return null;
            }
        }

        private Btree<TOps> Open<TOps>(TOps ops, uint root, int height, long maxRecords) where TOps : struct, IBtreeOps
            => new(ops, tx.AgStore(agno, null, null), new BtreeRootValue(root, height), geo.MetaUuid, agno, maxRecords);

        /// <summary>
        /// Finds the one tree of <paramref name="magic"/> (see the class summary): the header's root when it qualifies,
        /// else the single qualifying candidate of <paramref name="pool"/> that is no block of another candidate's
        /// tree, with <paramref name="tiebreak"/> deciding between several. Throws when there is none or the choice is
        /// ambiguous.
        /// </summary>
        public TreeFound Find<TOps>(string name, TOps ops, uint magic, int maxLevels, long maxRecords, uint? hint, AgBlockBitmap pool,
            AgBlockBitmap owned, AgBlockBitmap? taken, Func<Btree<TOps>, bool>? tiebreak) where TOps : struct, IBtreeOps
        {
            string hintWhy = "the header does not name it";
            if (hint is { } h && Qualify(ops, magic, maxLevels, maxRecords, h, owned, taken, "as the header said", out hintWhy) is { } fromHeader)
            {
                return fromHeader;
            }
            List<TreeFound> candidates = Candidates(name, ops, magic, maxLevels, maxRecords, pool, owned, taken);
            if (candidates.Count > 1 && tiebreak is not null)
            {
                candidates = candidates.Where(c => tiebreak(Open(ops, c.Root, c.Height, maxRecords))).ToList();
            }
            return candidates.Count switch
            {
                1 => candidates[0],
                0 => throw new OnlineRepairException($"AG {agno}: no {name} root found (the header's: {hintWhy}; no block the rmapbt owns qualifies)"),
                _ => throw new OnlineRepairException($"AG {agno}: {candidates.Count} {name} trees qualify as the root (blocks {string.Join(", ", candidates.Take(4).Select(c => c.Root))}); the choice is ambiguous"),
            };
        }

        private List<TreeFound> Candidates<TOps>(string name, TOps ops, uint magic, int maxLevels, long maxRecords, AgBlockBitmap pool,
            AgBlockBitmap? owned, AgBlockBitmap? taken) where TOps : struct, IBtreeOps
        {
            var roots = ScanForRoots(pool, magic, maxLevels);
            if (roots.Count > MaxCandidateRoots)
            {
                throw new OnlineRepairException($"AG {agno}: {roots.Count} blocks could be {name} roots (more than {MaxCandidateRoots} are not walked); the choice is ambiguous");
            }
            var qualified = new List<TreeFound>();
            foreach (var (root, _) in roots)
            {
                if (Qualify(ops, magic, maxLevels, maxRecords, root, owned, taken, "found by a scan", out _) is { } t) qualified.Add(t);
            }
            // A block of another qualifying tree is a subtree of it (a root with a single child), not a root.
            return qualified.Where(c => !qualified.Any(o => !ReferenceEquals(o, c) && o.Blocks.IsSet(c.Root))).ToList();
        }

        /// <summary>
        /// The rmapbt: the tree at <paramref name="hint"/> (the AGF's root) when it qualifies and every block of it is
        /// OWN_AG in its own records; else (with <paramref name="scanWhenBad"/>) the one such tree a scan of every block
        /// of the AG finds. Its records give the owners the other trees are found among.
        /// </summary>
        public RmapFound FindRmapbt(uint? hint, bool scanWhenBad = true)
        {
            var ops = new RmapbtOps(false, AgLength);
            int maxLevels = XfsTreeLimits.MaxLevels(geo, AgfTree.Rmapbt);
            long maxRecords = XfsTreeLimits.MaxRecords(geo, AgfTree.Rmapbt);
            string hintWhy = "the AGF does not name it";
            if (hint is { } h && Qualify(ops, RmapbtOps.MagicValue, maxLevels, maxRecords, h, null, null, "as the AGF said", out hintWhy) is { } fromAgf)
            {
                RmapFound? found = Owners(fromAgf, ops, maxRecords, out hintWhy);
                if (found is not null) return found;
            }
            if (!scanWhenBad)
            {
                throw new OnlineRepairException($"AG {agno}: the AGF's rmapbt does not qualify ({hintWhy}); repair the AGF first");
            }
            var whole = new AgBlockBitmap(AgLength);
            whole.Set(geo.FirstFreeBlock, AgLength - geo.FirstFreeBlock);
            var results = new List<RmapFound>();
            foreach (TreeFound t in Candidates("rmapbt", ops, RmapbtOps.MagicValue, maxLevels, maxRecords, whole, null, null))
            {
                if (Owners(t, ops, maxRecords, out _) is { } r) results.Add(r);
            }
            return results.Count switch
            {
                1 => results[0],
                0 => throw new OnlineRepairException($"AG {agno}: no rmapbt root found (the AGF's: {hintWhy}; a scan of the AG's {AgLength} blocks found no rmapbt that walks clean and owns its blocks)"),
                _ => throw new OnlineRepairException($"AG {agno}: {results.Count} rmapbt trees qualify (roots {string.Join(", ", results.Take(4).Select(r => r.Tree.Root))}); the choice is ambiguous"),
            };
        }

        /// <summary>The owners of <paramref name="tree"/>'s records, when its own blocks are OWN_AG in them.</summary>
        private RmapFound? Owners(TreeFound tree, RmapbtOps ops, long maxRecords, out string why)
        {
            why = "";
            var ownAg = new AgBlockBitmap(AgLength);
            var ownRefc = new AgBlockBitmap(AgLength);
            var ownInobt = new AgBlockBitmap(AgLength);
            var used = new AgBlockBitmap(AgLength);
            using (BtreeCursor<RmapbtOps> cur = Open(ops, tree.Root, tree.Height, maxRecords).CreateCursor())
            {
                for (bool ok = cur.MoveFirst(); ok; ok = cur.Increment())
                {
                    var r = RmapRecord.Read(cur.Current);
                    if (r.BlockCount == 0 || (ulong)r.StartBlock + r.BlockCount > AgLength)
                    {
                        why = $"record {r} lies outside the AG";
                        return null;
                    }
                    used.Set(r.StartBlock, r.BlockCount);
                    switch (r.Owner)
                    {
                        case RmapOwner.Ag: ownAg.Set(r.StartBlock, r.BlockCount); break;
                        case RmapOwner.Refc: ownRefc.Set(r.StartBlock, r.BlockCount); break;
                        case RmapOwner.Inobt: ownInobt.Set(r.StartBlock, r.BlockCount); break;
                    }
                }
            }
            foreach (var (s, l) in AgRebuild.Runs(tree.Blocks))
            {
                for (uint b = s; b < s + l; b++)
                {
                    if (!ownAg.IsSet(b))
                    {
                        why = $"its block {b} is not OWN_AG in its own records";
                        return null;
                    }
                }
            }
            return new RmapFound(tree, ownAg, ownRefc, ownInobt, used);
        }

        /// <summary>True when the free-space tree's records are exactly the AG's blocks in no rmap record, one extent each.</summary>
        public bool HoldsFreeSpace<TOps>(Btree<TOps> tree, AgBlockBitmap used) where TOps : struct, IBtreeOps
        {
            var records = new AgBlockBitmap(AgLength);
            long count = 0;
            using (BtreeCursor<TOps> cur = tree.CreateCursor())
            {
                for (bool ok = cur.MoveFirst(); ok; ok = cur.Increment())
                {
                    uint start = AllocRecord.StartBlock(cur.Current), length = AllocRecord.BlockCount(cur.Current);
                    if (length == 0 || (ulong)start + length > AgLength || records.AnySet(start, length) || used.AnySet(start, length)) return false;
                    records.Set(start, length);
                    count++;
                }
            }
            AgBlockBitmap free = used.Complement();
            return AgRebuild.Runs(free).Count == count && records.CountSet() == free.CountSet();
        }

        /// <summary>agf_freeblks and agf_longest from the bnobt's records.</summary>
        public (uint Free, uint Longest) FreeSpaceTotals(TreeFound bno)
        {
            long free = 0;
            uint longest = 0;
            using BtreeCursor<BnobtOps> cur = Open(new BnobtOps(AgLength), bno.Root, bno.Height, XfsTreeLimits.MaxRecords(geo, AgfTree.Bnobt)).CreateCursor();
            for (bool ok = cur.MoveFirst(); ok; ok = cur.Increment())
            {
                uint length = AllocRecord.BlockCount(cur.Current);
                free += length;
                longest = Math.Max(longest, length);
            }
            return (checked((uint)free), longest);
        }

        /// <summary>The found inobt's records, in order (agi_count and agi_freecount are their sums, as upstream counts them).</summary>
        public List<InobtRecord> InobtRecords(TreeFound inobt, bool sparse)
        {
            var records = new List<InobtRecord>();
            using BtreeCursor<InobtOps> cur = Open(new InobtOps(false, sparse), inobt.Root, inobt.Height, XfsTreeLimits.MaxInobtRecords(geo)).CreateCursor();
            for (bool ok = cur.MoveFirst(); ok; ok = cur.Increment())
            {
                records.Add(InobtRecord.Read(cur.Current, sparse));
            }
            return records;
        }
    }
}
