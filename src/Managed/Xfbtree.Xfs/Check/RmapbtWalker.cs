using Xfbtree.Btree;
using Xfbtree.Buffers;
using Xfbtree.Xfs.Trees;

namespace Xfbtree.Xfs.Check;

/// <summary>Receives the leaf records of a walk, in tree order.</summary>
internal interface IRmapRecordSink
{
    void Record(in RmapRecord record);
}

/// <summary>
/// Tolerant depth-first walk of an on-disk rmapbt: every block is read once through the store's verifier, its level
/// checked against its parent's, and leaf records handed over left to right. A block that cannot be read, has the
/// wrong level, or is reached twice is reported and its subtree skipped, so one bad leaf costs only its own records.
/// Bounded: each block of the AG is entered at most once.
/// </summary>
internal static class RmapbtWalker
{
    /// <summary>Walks the tree; returns the problems met (empty when every block was read).</summary>
    public static List<string> Walk<TSink>(Btree<RmapbtOps> tree, ref TSink sink, out long blocks) where TSink : IRmapRecordSink, allows ref struct
    {
        ArgumentNullException.ThrowIfNull(tree);
        var problems = new List<string>();
        var geo = tree.Geometry;
        var store = tree.Store;
        blocks = 0;
        int height = tree.Root.Height;
        if (height < 1 || height > geo.MaxLevels) { problems.Add($"height {height} outside 1..{geo.MaxLevels}"); return problems; }
        var visited = new HashSet<long>();
        var stack = new Stack<(long Ptr, int Level)>();
        stack.Push((tree.Root.Pointer, height - 1));
        var children = new List<long>();
        while (stack.Count > 0)
        {
            var (ptr, level) = stack.Pop();
            if (!store.IsValidPointer(ptr)) { problems.Add($"level {level} pointer {ptr} outside the AG"); continue; }
            if (!visited.Add(ptr)) { problems.Add($"block {ptr} reached twice (cycle or cross-link)"); continue; }
            BtreeBlockRef block;
            try { block = store.Read(ptr, tree.Verifier); }
            catch (CorruptionException e) { problems.Add($"block {ptr}: {e.Message}"); continue; }
            blocks++;
            try
            {
                ReadOnlySpan<byte> b;
                unsafe { b = new ReadOnlySpan<byte>(block.Data, geo.BlockSize); }
                int lev = BtreeHeader.Level(b);
                if (lev != level) { problems.Add($"block {ptr}: level {lev}, expected {level}"); continue; }
                int n = BtreeHeader.NumRecords(b);
                if (level == 0)
                {
                    for (int i = 0; i < n; i++) sink.Record(RmapRecord.Read(b.Slice(geo.RecordOffset(i), geo.RecordSize)));
                    continue;
                }
                children.Clear();
                for (int i = 0; i < n; i++) children.Add(BtreeHeader.ReadPointer(b[geo.PointerOffset(i, geo.NodeMaxRecords)..], geo.LongPointers));
                for (int i = children.Count - 1; i >= 0; i--) stack.Push((children[i], level - 1));
            }
            finally { store.Release(block); }
        }
        return problems;
    }
}
