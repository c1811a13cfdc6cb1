using Xfbtree.Buffers;
using Xfbtree.Xfs.Format;

namespace Xfbtree.Xfs.Repair;

/// <summary>
/// Commits prepared AG rebuilds with xfs_repair's crash-safety protocol (docs/xfs-format.md §8.4):
/// <list type="number">
/// <item>set NEEDSREPAIR in the primary superblock, write it, sync: from now on a crash leaves an image the
/// kernel refuses to mount until xfs_repair ran;</item>
/// <item>write every new tree block and the new AGFLs, sync (nothing points at the new blocks yet);</item>
/// <item>write the AGFs, sync;</item>
/// <item>set sb_fdblocks when it changed and clear NEEDSREPAIR in one superblock write, sync.</item>
/// </list>
/// A crash before step 1 completes leaves the image untouched.
/// </summary>
internal static class RmapRepairWriter
{
    /// <summary>Writes the rebuilds. <paramref name="progress"/> receives one line per stage.</summary>
    public static void Commit(XfsImage image, IReadOnlyList<AgRmapbtRebuild> rebuilds, Action<string>? progress = null)
    {
        ArgumentNullException.ThrowIfNull(image);
        ArgumentNullException.ThrowIfNull(rebuilds);
        if (rebuilds.Count == 0)
        {
            return;
        }
        if (image.Target is not DiskBufferTarget disk || disk.IsReadOnly)
        {
            throw new InvalidOperationException("the image was opened read-only");
        }

        progress?.Invoke("marking the filesystem NEEDSREPAIR while metadata is rewritten");
        UpdateSuperblock(image, sb => AgHeaderEditor.SetNeedsRepair(sb, on: true));
        Barrier(image, disk);

        foreach (AgRmapbtRebuild rebuild in rebuilds)
        {
            progress?.Invoke($"AG {rebuild.AgNumber}: writing {rebuild.Plan.NewTreeBlocks.Count} rmapbt blocks ({rebuild.Plan.RecordCount} records) and the free list");
            rebuild.WriteTreeAndAgfl();
        }
        Barrier(image, disk);

        foreach (AgRmapbtRebuild rebuild in rebuilds)
        {
            rebuild.WriteAgf();
        }
        progress?.Invoke("switching the AGFs to the new trees");
        Barrier(image, disk);

        long delta = 0;
        foreach (AgRmapbtRebuild rebuild in rebuilds)
        {
            delta += rebuild.NewFreeShare - rebuild.OldFreeShare;
        }
        progress?.Invoke(delta == 0 ? "clearing NEEDSREPAIR" : $"clearing NEEDSREPAIR; free blocks {(delta > 0 ? "+" : "")}{delta}");
        UpdateSuperblock(image, sb =>
        {
            if (delta != 0)
            {
                AgHeaderEditor.SetFreeDataBlocks(sb, (ulong)((long)AgHeaderEditor.FreeDataBlocks(sb) + delta));
            }
            AgHeaderEditor.SetNeedsRepair(sb, on: false);
        });
        Barrier(image, disk);
    }

    static void Barrier(XfsImage image, DiskBufferTarget disk)
    {
        image.Cache.Flush(image.Target);
        disk.Sync();
    }

    delegate void SectorEdit(Span<byte> sector);

    static void UpdateSuperblock(XfsImage image, SectorEdit edit)
    {
        int sectorSize = image.Geometry.SectorSize;
        BlockBuffer buffer = image.Cache.Read(image.Target, 0, image.Geometry.SectorBasicBlocks, new MagicCrcVerifier("superblock", Superblock.MagicValue, Superblock.CrcOffset, sectorSize), BufferLockMode.Exclusive);
        try
        {
            edit(buffer.Span[..sectorSize]);
            buffer.MarkDirty();
        }
        finally
        {
            image.Cache.Release(buffer);
        }
    }
}
